-- Starting processes with arguments, defaults and names, then joining them.
-- (Ports "Creating a Process": print_func with a default continent.)
local lmp = require "lmp"

local function print_func(continent)
  continent = continent or "Asia"
  print(string.format("The name of continent is: %s (%s, pid %d)",
    continent, lmp.current_process().name, lmp.current_process().pid))
end

local procs = {lmp.Process(print_func)}
for _, name in ipairs({"America", "Europe", "Africa"}) do
  procs[#procs + 1] = lmp.Process{target = print_func, args = {name}, name = "proc-" .. name}
end
for _, p in ipairs(procs) do p:start() end
for _, p in ipairs(procs) do
  p:join()
  print(string.format("%s exited with %d", p.name, p.exitcode))
end

local lmp = require "lmp"

local tasks, results = lmp.Queue(), lmp.Queue()
local function worker()
  while true do
    local n = tasks:get()
    if not n then break end                   -- the sentinel false
    results:put(n * n)
  end
end

local procs = {}
for i = 1, lmp.cpu_count() do
  procs[i] = lmp.Process{target = worker, name = "squarer-" .. i}
  procs[i]:start()
end
for n = 1, 100 do tasks:put(n) end
for _ = 1, #procs do tasks:put(false) end
local sum = 0
for _ = 1, 100 do sum = sum + results:get() end
for _, p in ipairs(procs) do p:join() end
print(sum)                                    --> 338350

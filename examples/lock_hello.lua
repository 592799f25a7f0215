-- Ten processes print one line each; the Lock keeps the lines whole.
local lmp = require "lmp"

local function f(l, i)
  l:with(function()
    print("hello world", i)
    io.stdout:flush()
  end)
end

local lock = lmp.Lock()
local procs = {}
for num = 0, 9 do
  procs[#procs + 1] = lmp.Process(f, lock, num)
  procs[#procs]:start()
end
for _, p in ipairs(procs) do p:join() end

-- bench/lua/sem.lua -- lmp.Semaphore acquire/release pairs per second.
--   sem_uncontended  one process, N pairs in a row on a Semaphore(1)
-- Median of 5 runs.
-- Usage: lmp bench/lua/sem.lua sem_uncontended
local lmp = require "lmp"
local b = dofile((arg[0]:match("^(.*/)") or "./") .. "common.lua")

local name = arg[1]
if not lmp.Semaphore then
  b.na(name, "pairs/s", "lmp.Semaphore not available yet")
  return
end

local function pairs_(sem, n)
  for _ = 1, n do
    sem:acquire()
    sem:release()
  end
end

local samples, n
if name == "sem_uncontended" then
  n = b.size(1000000, 1000)
  samples = b.solo(lmp.Semaphore(1), pairs_, n)
else
  error("unknown workload " .. tostring(name))
end
b.emit(name, "pairs/s", samples, {pairs = n})

-- bench/lua/lock.lua -- lmp.Lock acquire/release pairs per second.
--   lock_uncontended  one process, N pairs in a row
--   lock_contended    2 child processes doing N pairs each on one Lock,
--                     timed from the go to the last finish; total pairs/s
-- Median of 5 runs.
-- Usage: lmp bench/lua/lock.lua lock_uncontended|lock_contended
local lmp = require "lmp"
local b = dofile((arg[0]:match("^(.*/)") or "./") .. "common.lua")

local name = arg[1]
if not lmp.Lock then
  b.na(name, "pairs/s", "lmp.Lock not available yet")
  return
end

local function pairs_(lock, n)
  for _ = 1, n do
    lock:acquire()
    lock:release()
  end
end

local samples, n
if name == "lock_uncontended" then
  n = b.size(1000000, 1000)
  samples = b.solo(lmp.Lock(), pairs_, n)
elseif name == "lock_contended" then
  n = b.size(200000, 1000)
  samples = b.contended(lmp.Lock, pairs_, n)
else
  error("unknown workload " .. tostring(name))
end
b.emit(name, "pairs/s", samples, {pairs = n})

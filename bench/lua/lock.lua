-- bench/lua/lock.lua -- lmp.Lock acquire/release pairs per second.
--   lock_uncontended  one process, N pairs in a row; beside it, sample for
--                     sample, the same loop on an object shaped like a Lock
--                     whose methods do nothing (a table whose metatable's
--                     __index holds two empty Lua functions): the cost of
--                     the two method calls alone, emitted as floor_pairs_s
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
local extra = {}
if name == "lock_uncontended" then
  n = b.size(1000000, 1000)
  local floor = setmetatable({}, {__index = {acquire = function() end, release = function() end}})
  local floors = {}
  samples = b.solo(lmp.Lock(), pairs_, n, function(i) floors[i] = b.solo1(floor, pairs_, n) end)
  extra.floor_pairs_s = b.median(floors)
elseif name == "lock_contended" then
  n = b.size(200000, 1000)
  samples = b.contended(lmp.Lock, pairs_, n)
else
  error("unknown workload " .. tostring(name))
end
extra.pairs = n
b.emit(name, "pairs/s", samples, extra)

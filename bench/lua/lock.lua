-- bench/lua/lock.lua -- the sync objects' calls per second: lmp.Lock
-- acquire/release pairs, and Semaphore pairs and Event:is_set beside them.
--   lock_uncontended  one process, N pairs in a row; beside it, sample for
--                     sample, the same loop on an object shaped like a Lock
--                     whose methods do nothing (a table whose metatable's
--                     __index holds two empty Lua functions): the cost of
--                     the two method calls alone, emitted as floor_pairs_s
--   lock_contended    2 child processes doing N pairs each on one Lock,
--                     timed from the go to the last finish; total pairs/s
--   lock_semaphore    one process, N sem:acquire(); sem:release() pairs in
--                     a row on a Semaphore(1)
--   lock_event        one process, N e:is_set() in a row on a clear Event
-- Median of 5 runs.
-- Usage: lmp bench/lua/lock.lua lock_uncontended|lock_contended|lock_semaphore|lock_event
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

local function calls(e, n)
  for _ = 1, n do
    e:is_set()
  end
end

local samples, n
local unit, extra = "pairs/s", {}
if name == "lock_uncontended" then
  n = b.size(1000000, 1000)
  local floor = setmetatable({}, {__index = {acquire = function() end, release = function() end}})
  local floors = {}
  samples = b.solo(lmp.Lock(), pairs_, n, function(i) floors[i] = b.solo1(floor, pairs_, n) end)
  extra.floor_pairs_s = b.median(floors)
elseif name == "lock_contended" then
  n = b.size(200000, 1000)
  samples = b.contended(lmp.Lock, pairs_, n)
elseif name == "lock_semaphore" then
  n = b.size(1000000, 1000)
  samples = b.solo(lmp.Semaphore(1), pairs_, n)
elseif name == "lock_event" then
  n = b.size(1000000, 1000)
  samples = b.solo(lmp.Event(), calls, n)
  unit = "calls/s"
else
  error("unknown workload " .. tostring(name))
end
extra[unit == "pairs/s" and "pairs" or "calls"] = n
b.emit(name, unit, samples, extra)

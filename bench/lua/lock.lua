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
  local lock = lmp.Lock()
  pairs_(lock, 1000)
  samples = b.repeat_(5, function()
    local t0 = b.now()
    pairs_(lock, n)
    return n / (b.now() - t0)
  end)
elseif name == "lock_contended" then
  n = b.size(200000, 1000)
  samples = b.repeat_(5, function()
    local lock, go, done = lmp.Lock(), lmp.Queue(), lmp.Queue()
    local procs = {}
    for k = 1, 2 do
      procs[k] = lmp.Process(function()
        go:get()
        pairs_(lock, n)
        done:put(true)
      end)
      procs[k]:start()
    end
    local t0 = b.now()
    go:put(true); go:put(true)
    done:get(); done:get()
    local rate = 2 * n / (b.now() - t0)
    for _, p in ipairs(procs) do p:join() end
    return rate
  end)
else
  error("unknown workload " .. tostring(name))
end
b.emit(name, "pairs/s", samples, {pairs = n})

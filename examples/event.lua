-- Events: one process raises a flag, any number wait for it.  Three
-- workers get ready and block on a start Event; the parent sets it once
-- all of them are ready, so they begin together.  They then work until a
-- stop Event is set.  Waiting with a timeout returns false instead of
-- blocking forever.
--
--   lmp examples/event.lua
local lmp = require "lmp"

local WORKERS = 3
local start, stop = lmp.Event(), lmp.Event()
local ready, done = lmp.Queue(), lmp.Queue()

local function worker(id)
  ready:put(id)
  start:wait()                          -- blocks until the parent sets it
  local steps = 0
  while not stop:is_set() do            -- work in small steps, check the flag
    steps = steps + 1
    lmp.sleep(0.01)
  end
  done:put({id, steps})
end

local procs = {}
for i = 1, WORKERS do
  procs[i] = lmp.Process{target = worker, args = {i}, name = "worker-" .. i}
  procs[i]:start()
end
for _ = 1, WORKERS do ready:get() end
print(string.format("%d workers ready, start is set: %s", WORKERS, start:is_set()))
start:set()
lmp.sleep(0.2)
stop:set()
local results = {}
for _ = 1, WORKERS do
  local r = done:get()
  results[r[1]] = r[2]
end
for i = 1, WORKERS do
  print(string.format("worker %d worked %d steps of 10 ms until stop was set", i, results[i]))
end
for _, p in ipairs(procs) do p:join() end

-- wait(timeout): true once set, false when the time runs out.
local never = lmp.Event()
local t0 = lmp.time()
local ok = never:wait(0.1)
print(string.format("wait(0.1) on an event nobody sets: %s after %.1f s", ok, lmp.time() - t0))
print("wait() on the start event now: " .. tostring(start:wait()))

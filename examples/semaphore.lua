-- A Semaphore lets a fixed number of processes in at a time: here six
-- workers share two "connections".  A shared Value counts who is inside
-- and another records the most there ever were at once.
--
--   lmp examples/semaphore.lua
local lmp = require "lmp"

local WORKERS, SLOTS = 6, 2

local slots = lmp.Semaphore(SLOTS)
local inside, most = lmp.Value("int32", 0), lmp.Value("int32", 0)

local function worker(id)
  slots:with(function()                    -- acquire a slot, release it after
    local now = inside:add(1)
    most:get_lock():with(function() most.value = math.max(most.value, now) end)
    lmp.sleep(0.05)                        -- "use the connection"
    inside:add(-1)
  end)
end

local t0 = lmp.time()
local procs = {}
for i = 1, WORKERS do
  procs[i] = lmp.Process(worker, i)
  procs[i]:start()
end
for _, p in ipairs(procs) do p:join() end
print(string.format("%d workers, %d slots: at most %d inside at once", WORKERS, SLOTS, most.value))
print(string.format("took about %d rounds of 50 ms", math.floor((lmp.time() - t0) / 0.05 + 0.5)))
print("slots free at the end:", slots:get_value())

-- A Condition: wait until something is true, woken by whoever makes it so.
-- Three producers add items to a shared count, each under the condition's
-- lock, and notify; a consumer waits with wait_for until there are ten,
-- without polling.
--
--   lmp examples/condition.lua
local lmp = require "lmp"

local cond = lmp.Condition()              -- with a new RLock inside
local count = lmp.RawValue("int32", 0)    -- guarded by cond's lock, so no lock of its own
local TARGET = 10

local function producer(id, n)
  for _ = 1, n do
    lmp.sleep(0.01 * id)
    cond:with(function()
      count.value = count.value + 1
      cond:notify_all()                   -- wake whoever waits on a predicate
    end)
  end
end

local function consumer(report)
  cond:with(function()
    local ok = cond:wait_for(function() return count.value >= TARGET end, 10)
    report:put({ok, count.value})
  end)
end

local report = lmp.Queue()
local c = lmp.Process(consumer, report)
c:start()
local producers = {}
for id = 1, 3 do
  producers[id] = lmp.Process(producer, id, 4)
  producers[id]:start()
end
local r = report:get()
print(string.format("consumer woke with the predicate %s and count >= %d: %s",
                    tostring(r[1]), TARGET, tostring(r[2] >= TARGET)))
for _, p in ipairs(producers) do p:join() end
c:join()
print("items produced:", count.value)

-- wait with a timeout: false when nobody notifies in time.
cond:acquire()
print("wait(0.1) with nobody notifying:", cond:wait(0.1))
cond:release()

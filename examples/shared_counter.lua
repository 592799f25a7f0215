-- A counter shared by six processes: four add 100 each, two take 100 each,
-- so it should end at 200.  Done three ways: a read-modify-write with no
-- lock (updates can get lost: two processes read the same value and both
-- write it back plus one), the same under the counter's lock, and the
-- atomic add.
--
--   lmp examples/shared_counter.lua
local lmp = require "lmp"

local ROUNDS = 100

local function run(counter, step)
  local procs = {}
  for w = 1, 6 do
    procs[w] = lmp.Process(step, counter, w <= 4 and 1 or -1)
    procs[w]:start()
  end
  for _, p in ipairs(procs) do p:join() end
  return counter.value
end

-- No lock: `counter.value = counter.value + d` is a read and a write.
local unsafe = run(lmp.RawValue("i", 0), function(counter, d)
  for _ = 1, ROUNDS do
    counter.value = counter.value + d
    -- a pause now and then, as a busy machine would make, so the other
    -- processes run in between
    if _ % 10 == 0 then lmp.sleep(0) end
  end
end)

-- The counter's own lock makes the read and the write one step.
local locked = run(lmp.Value("i", 0), function(counter, d)
  local lock = counter:get_lock()
  for _ = 1, ROUNDS do
    lock:acquire()
    counter.value = counter.value + d
    lock:release()
  end
end)

-- Or let the hardware do it: add is atomic.
local atomic = run(lmp.Value("i", 0), function(counter, d)
  for _ = 1, ROUNDS do counter:add(d) end
end)

print(string.format("without a lock: %d (may differ from 200: updates can be lost)", unsafe))
print(string.format("with get_lock(): %d", locked))
print(string.format("with add(): %d", atomic))

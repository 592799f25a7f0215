-- Worker processes take jobs from a JoinableQueue and mark each one done;
-- the parent waits for all of them with join(), then stops the workers.
local lmp = require "lmp"

local jobs, done = lmp.JoinableQueue(), lmp.Queue()

local function worker()
  while true do
    local n = jobs:get()
    if n == nil then jobs:task_done() break end
    done:put(n * n)
    jobs:task_done()
  end
end

local workers = {}
for i = 1, 3 do
  workers[i] = lmp.Process{target = worker, daemon = true}
  workers[i]:start()
end
for n = 1, 20 do jobs:put(n) end
jobs:join()                                   -- every job marked done
local sum = 0
for _ = 1, 20 do sum = sum + done:get() end
print("sum of squares 1..20 =", sum)          --> 2870
for _ = 1, #workers do jobs:put(nil) end
for _, w in ipairs(workers) do w:join() end

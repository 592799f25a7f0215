-- Timeouts everywhere a process can wait, so that nothing hangs.
--
--   async_result = p.apply_async(long_task, (5,))
--   async_result.get(timeout=2)          # raises TimeoutError in Python
--
-- In lmp a wait that runs out of time returns nil, "timeout" (or false),
-- except where Python raises (a future's result), where it raises an
-- lmp.Error of kind "timeout".  Separately, a Pool's task_timeout bounds
-- how long a task may run: past it the worker is killed and replaced, the
-- task fails with kind "timeout", and the pool goes on.
--
--   lmp examples/timeouts.lua
local lmp = require "lmp"

local function long_task(x)
  lmp.sleep(x)
  return x
end

local pool <close> = lmp.Pool{processes = 2, task_timeout = 1}

-- 1. Waiting for a result: the task goes on after the wait gives up.
local res = pool:apply_async(long_task, {0.5})
print("get(0.1):", res:get(0.1))              --> nil timeout
print("get():", res:get())                    --> 0.5

-- 2. A task that runs too long is stopped by task_timeout.
local ok, err = pcall(pool.apply, pool, long_task, 30)
print("task_timeout:", ok, err.kind)          --> false timeout
print("the pool goes on:", pool:apply(long_task, 0))

-- 3. A future's result raises instead of returning nil.
do
  local ex <close> = lmp.Executor(1)
  local fut = ex:submit(long_task, 0.3)
  ok, err = pcall(fut.result, fut, 0.05)
  print("future:result(0.05):", ok, err.kind)   --> false timeout
  print("future:result():", fut:result())       --> 0.3
end

-- 4. Queues, locks and processes.
local q = lmp.Queue()
print("queue get(0.1):", q:get(0.1))          --> nil timeout

-- Two processes taking two locks in opposite orders would wait for each
-- other forever; with timeouts one of them gives up, and the other goes on.
local a, b = lmp.Lock(), lmp.Lock()
local function take_b_then_a(go)              -- the opposite order
  b:acquire()
  go:set()
  local got = a:acquire(2)                    -- gives up after 2 s at most
  if got then a:release() end
  b:release()
end
local go = lmp.Event()
local p = lmp.Process(take_b_then_a, go)
a:acquire()
p:start()
go:wait()
print("lock acquire(0.1) while the other holds it:", b:acquire(0.1))   --> false
a:release()                                   -- back off: the other can finish
p:join()
print("after the other finished:", b:acquire(1))                      --> true
b:release()

local sleeper = lmp.Process(lmp.sleep, 60)
sleeper:start()
print("join(0.1) of a process still running:", sleeper:join(0.1))     --> false
sleeper:terminate()
print("join() after terminate:", sleeper:join(), sleeper.exitcode)    --> true -15

-- CPython's concurrent.futures tests (Lib/test/test_concurrent_futures/),
-- ported to lmp's Executor: each `it` names the test case it ports. The
-- cases check the behaviour, in Lua and with lmp's names; where lmp
-- deliberately differs (docs/lua-api.md) they check lmp's documented
-- behaviour and a comment names the difference. Every case runs under each
-- start method, as CPython runs ProcessPoolExecutor's tests under fork,
-- spawn and forkserver.
--
-- CPython builds futures in each state by hand (util.py's PENDING_FUTURE,
-- RUNNING_FUTURE, ...); lmp's futures come only from an executor, so
-- `states` makes them with a one-worker executor: a task that returned 42,
-- one that failed, one running (held on an Event), one pending behind it
-- and one cancelled. Python's CANCELLED and CANCELLED_AND_NOTIFIED are one
-- state in lmp: a cancelled future is done and its callbacks have run.
local support = dofile("tests/support.lua")
local lmp = require "lmp"

local eventually, raised, range = support.eventually, support.raised, support.range

local function mul(x, y) return x * y end

-- The set of the futures in list, for comparing regardless of order.
local function set(list)
  local s = {}
  for _, f in ipairs(list) do s[f] = true end
  return s
end

-- Whether fn raises an lmp.Error of this kind; the error.
local function raises_kind(kind, fn, ...)
  local err = raised(fn, ...)
  assert.is_true(lmp.is_error(err), tostring(err))
  assert.are.equal(kind, err.kind, tostring(err))
  return err
end

for _, method in ipairs(lmp.get_all_start_methods()) do
  describe("[" .. method .. "]", function()
    local ctx = lmp.get_context(method)
    local ex, aux, gate, S

    -- Futures in each state, from `aux` (one worker, held by `gate`).
    local function states()
      aux = ctx.Executor(1)
      gate = ctx.Event()
      local s = {}
      s.successful = aux:submit(function() return 42 end)
      assert.are.equal(42, s.successful:result(60))
      s.exception = aux:submit(function() error("OSError") end)
      assert.is_not_nil(s.exception:exception(60))
      s.running = aux:submit(function(g) g:wait() end, gate)
      assert.is_true(eventually(function() return s.running:running() end, 60))
      s.pending = aux:submit(function() return "pending" end)
      s.cancelled = aux:submit(function() return "cancelled" end)
      assert.is_true(s.cancelled:cancel())
      return s
    end

    before_each(function()
      ex = ctx.Executor(2)
      S = states()
    end)

    after_each(function()
      gate:set()
      ex:shutdown{wait = false, cancel_futures = true}
      aux:shutdown{wait = false, cancel_futures = true}
    end)

    -- ExecutorTest ---------------------------------------------------------

    it("test_submit (ExecutorTest)", function()
      assert.are.equal(256.0, ex:submit(function(a, b) return a ^ b end, 2, 8):result())
      assert.are.equal(8, ex:submit(math.max, 2, 8):result()) -- a C function, by name
    end)

    it("test_submit_keyword (ExecutorTest)", function()
      -- Lua has no keyword arguments; positional ones keep their nils.
      assert.are.same({1, nil, 3, n = 3}, ex:submit(function(...) return table.pack(...) end, 1, nil, 3):result())
      raised(ex.submit, ex)
      raised(ex.submit, ex, 1)
    end)

    -- The pairs {i, i} for i = 0..n-1, and i^i for each.
    local function pow_args(n)
      local args, want = {}, {}
      for i = 0, n - 1 do
        args[#args + 1] = {i, i}
        want[#want + 1] = i ^ i
      end
      return args, want
    end
    local function pow(t) return t[1] ^ t[2] end

    -- The values of an ex:map loop, checking that i counts 1, 2, ...
    local function values(it)
      local out = {}
      for i, v in it do
        assert.are.equal(#out + 1, i)
        out[i] = v
      end
      return out
    end

    it("test_map (ExecutorTest)", function()
      -- lmp: map takes one list and yields i, v (Python zips iterables, yields v).
      local args, want = pow_args(10)
      assert.are.same(want, values(ex:map(pow, args)))
      assert.are.same(want, values(ex:map(pow, args, {chunksize = 3})))
    end)

    it("test_map_exception (ExecutorTest)", function()
      local got = {}
      local err = raised(function()
        for i, v in ex:map(function(t) return {t[1] // t[2], t[1] % t[2]} end,
                           {{1, 2}, {1, 3}, {1, 0}, {1, 5}}, {chunksize = 1}) do
          got[i] = v
        end
      end)
      assert.are.same({{0, 1}, {0, 1}}, got)
      assert.are.equal("task", err.kind)
      assert.are.equal(3, err.index)
      assert.matches("divide by zero", err.message)
    end)

    it("test_map_timeout (ExecutorTest)", function()
      local hold = ctx.Event()
      local results = {}
      local err = raised(function()
        for i in ex:map(function(x) if type(x) ~= "number" then x:wait() end end, {0, 0, hold}, {chunksize = 1, timeout = 2}) do
          results[#results + 1] = i
        end
      end)
      hold:set()
      assert.are.equal("timeout", err.kind)
      assert.are.same({1, 2}, results)
    end)

    it("test_shutdown_race_issue12456 (ExecutorTest)", function()
      ex:map(tostring, {2, 2, 2})
      ex:shutdown()
    end)

    it("test_max_workers_negative (ExecutorTest)", function()
      for _, number in ipairs({0, -1}) do
        assert.matches("max_workers.? must be a positive integer", raised(ctx.Executor, number))
        assert.matches("max_workers.? must be a positive integer", raised(ctx.Executor, {max_workers = number}))
      end
    end)

    it("test_swallows_falsey_exceptions (ExecutorTest)", function()
      -- Python: exceptions whose bool() or len() is false; Lua's are the
      -- error values false and nil. Either way the future failed.
      for _, v in ipairs({false, "nil"}) do
        if v == "nil" then v = nil end
        local f = ex:submit(function(x) error(x) end, v)
        local err = raises_kind("task", f.result, f, 60)
        assert.are.equal(v, err.value)
        assert.is_true(lmp.is_error(f:exception()))
      end
    end)

    -- ProcessPoolExecutorTest ----------------------------------------------

    it("test_killed_child (ProcessPoolExecutorTest)", function()
      local started = ctx.Event()
      local f = ex:submit(function(e) e:set(); lmp.sleep(30) end, started)
      assert.is_true(started:wait(60))
      assert.is_true(eventually(function() return f:running() end))
      for _, w in ipairs(ex:stats().workers) do
        if w.state == "busy" then support.kill(w.pid, "KILL") end
      end
      -- lmp: the future fails with worker_lost and the executor goes on
      -- (Python's breaks for good with BrokenProcessPool).
      raises_kind("worker_lost", f.result, f, 60)
      assert.are.equal(256, ex:submit(function(a, b) return a << b end, 1, 8):result(60))
    end)

    it("test_map_chunksize (ProcessPoolExecutorTest)", function()
      local args, want = pow_args(40)
      for _, cs in ipairs({6, 50, 40}) do
        assert.are.same(want, values(ex:map(pow, args, {chunksize = cs})))
      end
      raised(ex.map, ex, pow, args, {chunksize = -1})
    end)

    it("test_traceback (ProcessPoolExecutorTest)", function()
      local function failing()
        error("RuntimeError 123") -- some comment
      end
      local line = debug.getinfo(failing, "S").linedefined + 1
      local f = ex:submit(failing)
      local err = raises_kind("task", f.result, f, 60)
      assert.matches("RuntimeError 123", err.message)
      assert.matches("cpython_futures_spec.lua:" .. line, err.traceback)
      assert.matches("cpython_futures_spec.lua:" .. line, tostring(err))
    end)

    it("test_saturation (ProcessPoolExecutorTest)", function()
      local sem = ctx.Semaphore(0)
      local futs = {}
      for i = 1, 15 * 2 do futs[i] = ex:submit(function(s) return s:acquire() end, sem) end
      assert.are.equal(2, #ex:stats().workers)
      sem:release(#futs)
      for _, f in ipairs(futs) do assert.is_true(f:result(60)) end
      assert.are.equal(2, #ex:stats().workers)
    end)

    it("test_max_tasks_per_child (ProcessPoolExecutorTest)", function()
      -- lmp: allowed with fork too (Python refuses it there).
      local e <close> = ctx.Executor{max_workers = 1, max_tasks_per_child = 3}
      local function getpid() return require("lmp").current_process().pid end
      local original_pid = e:submit(getpid):result(60)
      assert.are.equal(original_pid, e:submit(getpid):result(60))
      assert.are.equal(1, #e:stats().workers)
      assert.are.equal(original_pid, e:submit(getpid):result(60))
      local new_pid = e:submit(getpid):result(60)
      assert.are_not.equal(original_pid, new_pid)
      assert.are.equal(1, #e:stats().workers)
    end)

    it("test_max_tasks_early_shutdown (ProcessPoolExecutorTest)", function()
      local e = ctx.Executor{max_workers = 3, max_tasks_per_child = 1}
      local futs = {}
      for i = 1, 6 do futs[i] = e:submit(mul, i, i) end
      e:shutdown()
      for i, f in ipairs(futs) do assert.are.equal(i * i, f:result(0)) end
    end)

    -- test_init ------------------------------------------------------------

    it("test_initializer (InitializerMixin)", function()
      local e <close> = ctx.Executor{max_workers = 2, initializer = function(x) _G.INITIALIZER_STATUS = x end,
                                     initargs = {"initialized"}}
      local futs = {}
      for i = 1, 2 do futs[i] = e:submit(function() return _G.INITIALIZER_STATUS end) end
      for _, f in ipairs(futs) do assert.are.equal("initialized", f:result(60)) end
    end)

    it("test_initializer (FailingInitializerMixin)", function()
      local e = ctx.Executor{max_workers = 2, initializer = function() error("error in initializer") end}
      -- lmp: kind "initializer" (Python: BrokenProcessPool), from submit or
      -- from the result, whichever comes after the executor broke.
      local ok, f = pcall(e.submit, e, function() return 1 end)
      local err = ok and raised(f.result, f, 60) or f
      assert.are.equal("initializer", err.kind)
      assert.matches("error in initializer", err.message)
      raises_kind("initializer", e.submit, e, function() end)
      e:shutdown{wait = false}
    end)

    -- ExecutorDeadlockTest -------------------------------------------------

    it("test_crash_during_func_exec_on_worker (ExecutorDeadlockTest)", function()
      -- A worker killed mid-task (SIGKILL, which sanitizers leave alone).
      local f = ex:submit(function() os.execute("kill -9 " .. require("lmp").current_process().pid) end)
      raises_kind("worker_lost", f.result, f, 60)
    end)

    it("test_exit_during_func_exec_on_worker (ExecutorDeadlockTest)", function()
      -- lmp: os.exit in a task loses its worker (Python raises the
      -- SystemExit in the caller).
      local f = ex:submit(function() os.exit(3) end)
      local err = raises_kind("worker_lost", f.result, f, 60)
      assert.are.equal(3, err.exitcode)
    end)

    it("test_error_during_func_exec_on_worker (ExecutorDeadlockTest)", function()
      local f = ex:submit(function() error("RuntimeError") end)
      raises_kind("task", f.result, f, 60)
    end)

    it("test_error_at_task_pickle (ExecutorDeadlockTest)", function()
      -- lmp: an argument that cannot be sent raises at submit (Python: from result).
      local err = raises_kind("serialize", ex.submit, ex, tostring, coroutine.create(print))
      assert.matches("args%[1%]", err.message)
      assert.are.equal("1", ex:submit(tostring, 1):result(60))
    end)

    it("test_error_during_result_pickle_on_worker (ExecutorDeadlockTest)", function()
      local f = ex:submit(function() return coroutine.create(print) end)
      raises_kind("serialize", f.result, f, 60)
      assert.are.equal(2, ex:submit(mul, 1, 2):result(60))
    end)

    it("test_shutdown_deadlock (ExecutorDeadlockTest)", function()
      local e <close> = ctx.Executor(2)
      local f = e:submit(function()
        local l = require "lmp"
        l.sleep(0.1)
        os.execute("kill -9 " .. l.current_process().pid)
      end)
      e:shutdown{wait = true}
      raises_kind("worker_lost", f.result, f, 60)
    end)

    it("test_shutdown_deadlock_pickle (ExecutorDeadlockTest)", function()
      local e <close> = ctx.Executor(2)
      assert.are.equal(42, e:submit(function(x) return x end, 42):result(60))
      local f = e:submit(function() return coroutine.create(print) end)
      e:shutdown{wait = false}
      raises_kind("serialize", f.result, f, 60)
    end)

    it("test_crash_big_data (ExecutorDeadlockTest)", function()
      local e <close> = ctx.Executor(2)
      local data = ("a"):rep(1024 * 1024)
      local list = {}
      for i = 1, 10 do list[i] = data end
      local err = raised(function()
        for _ in e:map(function() os.execute("kill -9 " .. require("lmp").current_process().pid) end, list) do end
      end)
      assert.are.equal("worker_lost", err.kind)
      e:shutdown{wait = true}
    end)

    -- FutureTests ----------------------------------------------------------

    it("test_done_callback_with_result (FutureTests)", function()
      local callback_result
      local f = ex:submit(function() return 5 end)
      f:add_done_callback(function(fut) callback_result = fut:result() end)
      assert.are.equal(5, f:result(60))
      assert.are.equal(5, callback_result)
    end)

    it("test_done_callback_with_exception (FutureTests)", function()
      local callback_exception
      local f = ex:submit(function() error({"test"}) end)
      f:add_done_callback(function(fut) callback_exception = fut:exception() end)
      f:exception(60)
      assert.are.same({"test"}, callback_exception.value)
    end)

    it("test_done_callback_with_cancel (FutureTests)", function()
      local was_cancelled
      local f = S.pending
      f:add_done_callback(function(fut) was_cancelled = fut:cancelled() end)
      assert.is_true(f:cancel())
      assert.is_true(was_cancelled)
    end)

    -- Runs fn with the records logged to "lmp.executor" collected; the
    -- list of their messages.
    local function logged(fn)
      local msgs = {}
      local log = lmp.get_logger("lmp.executor")
      local h = log:add_handler(function(r) msgs[#msgs + 1] = r.message end)
      local ok, err = pcall(fn)
      log:remove_handler(h)
      assert(ok, err)
      return table.concat(msgs, "\n")
    end

    it("test_done_callback_raises (FutureTests)", function()
      local raising_was_called, fn_was_called = false, false
      local out = logged(function()
        local f = ex:submit(function() return 5 end)
        f:add_done_callback(function() raising_was_called = true; error("doh!") end)
        f:add_done_callback(function() fn_was_called = true end)
        assert.are.equal(5, f:result(60))
      end)
      assert.is_true(raising_was_called)
      assert.is_true(fn_was_called)
      assert.matches("doh!", out)
    end)

    it("test_done_callback_already_successful (FutureTests)", function()
      local callback_result
      S.successful:add_done_callback(function(fut) callback_result = fut:result() end)
      assert.are.equal(42, callback_result)
    end)

    it("test_done_callback_already_failed (FutureTests)", function()
      local callback_exception
      S.exception:add_done_callback(function(fut) callback_exception = fut:exception() end)
      assert.matches("OSError", callback_exception.message)
    end)

    it("test_done_callback_already_cancelled (FutureTests)", function()
      local was_cancelled
      S.cancelled:add_done_callback(function(fut) was_cancelled = fut:cancelled() end)
      assert.is_true(was_cancelled)
    end)

    it("test_done_callback_raises_already_succeeded (FutureTests)", function()
      local out = logged(function()
        S.successful:add_done_callback(function() error("doh!") end)
      end)
      assert.matches("exception calling callback for", out)
      assert.matches("doh!", out)
    end)

    it("test_repr (FutureTests)", function()
      assert.matches("pending", tostring(S.pending))
      assert.matches("running", tostring(S.running))
      assert.matches("cancelled", tostring(S.cancelled))
      assert.matches("failed", tostring(S.exception)) -- Python: finished raised OSError
      assert.matches("finished", tostring(S.successful))
    end)

    it("test_cancel (FutureTests)", function()
      assert.is_true(S.pending:cancel())
      assert.is_true(S.pending:cancelled())
      assert.is_false(S.running:cancel())
      assert.is_true(S.running:running())
      assert.is_true(S.cancelled:cancel())
      assert.is_true(S.cancelled:cancelled())
      assert.is_false(S.exception:cancel())
      assert.is_false(S.exception:cancelled())
      assert.is_false(S.successful:cancel())
      assert.is_false(S.successful:cancelled())
    end)

    it("test_cancelled (FutureTests)", function()
      assert.is_false(S.pending:cancelled())
      assert.is_false(S.running:cancelled())
      assert.is_true(S.cancelled:cancelled())
      assert.is_false(S.exception:cancelled())
      assert.is_false(S.successful:cancelled())
    end)

    it("test_done (FutureTests)", function()
      assert.is_false(S.pending:done())
      assert.is_false(S.running:done())
      assert.is_true(S.cancelled:done())
      assert.is_true(S.exception:done())
      assert.is_true(S.successful:done())
    end)

    it("test_running (FutureTests)", function()
      assert.is_false(S.pending:running())
      assert.is_true(S.running:running())
      assert.is_false(S.cancelled:running())
      assert.is_false(S.exception:running())
      assert.is_false(S.successful:running())
    end)

    it("test_result_with_timeout (FutureTests)", function()
      raises_kind("timeout", S.pending.result, S.pending, 0)
      raises_kind("timeout", S.running.result, S.running, 0)
      raises_kind("cancelled", S.cancelled.result, S.cancelled, 0)
      raises_kind("task", S.exception.result, S.exception, 0)
      assert.are.equal(42, S.successful:result(0))
    end)

    it("test_result_with_success (FutureTests)", function()
      local f1 = ex:submit(function() require("lmp").sleep(0.05); return 42 end)
      assert.are.equal(42, f1:result(60))
    end)

    it("test_exception_with_timeout (FutureTests)", function()
      raises_kind("timeout", S.pending.exception, S.pending, 0)
      raises_kind("timeout", S.running.exception, S.running, 0)
      raises_kind("cancelled", S.cancelled.exception, S.cancelled, 0)
      assert.are.equal("task", S.exception:exception(0).kind)
      assert.is_nil(S.successful:exception(0))
    end)

    it("test_exception_with_success (FutureTests)", function()
      local f1 = ex:submit(function() require("lmp").sleep(0.05); error("OSError") end)
      local e = f1:exception(60)
      assert.is_true(lmp.is_error(e))
      assert.matches("OSError", e.message)
    end)

    -- WaitTests ------------------------------------------------------------

    it("test_20369 (WaitTests)", function()
      local future = ex:submit(mul, 1, 2)
      local done, not_done = lmp.wait({future, future}, {return_when = lmp.ALL_COMPLETED})
      assert.are.same({future}, done)
      assert.are.same({}, not_done)
    end)

    it("test_first_completed (WaitTests)", function()
      -- lmp: a cancelled future is done, so CPython's CANCELLED_FUTURE
      -- (cancelled, not yet notified) is left out here.
      local event = ctx.Event()
      local future1 = ex:submit(mul, 21, 2)
      local future2 = ex:submit(function(e) e:wait() end, event)
      local done, not_done = lmp.wait({future1, future2}, {return_when = lmp.FIRST_COMPLETED})
      assert.are.same({future1}, done)
      assert.are.same({future2}, not_done)
      event:set()
      future2:result(60)
    end)

    it("test_first_completed_some_already_completed (WaitTests)", function()
      local event = ctx.Event()
      local future1 = ex:submit(function(e) e:wait() end, event)
      local finished, pending = lmp.wait({S.cancelled, S.successful, future1}, {return_when = "FIRST_COMPLETED"})
      assert.are.same(set({S.cancelled, S.successful}), set(finished))
      assert.are.same({future1}, pending)
      event:set()
      future1:result(60)
    end)

    it("test_first_exception (WaitTests)", function()
      local event1, event2 = ctx.Event(), ctx.Event()
      local future1 = ex:submit(mul, 2, 21)
      local future2 = ex:submit(function(e) e:wait(); error("this is an exception") end, event1)
      local future3 = ex:submit(function(e) e:wait() end, event2)
      -- Python sets event1 from a thread once future1 has its result; here
      -- future1's done callback does, inside wait.
      future1:add_done_callback(function() event1:set() end)
      local finished, pending = lmp.wait({future1, future2, future3}, {return_when = lmp.FIRST_EXCEPTION})
      assert.are.same({future1, future2}, finished)
      assert.are.same({future3}, pending)
      event2:set()
      future3:result(60)
    end)

    it("test_first_exception_some_already_complete (WaitTests)", function()
      local event = ctx.Event()
      local future1 = ex:submit(function(a, b) return a // b end, 21, 0)
      local future2 = ex:submit(function(e) e:wait() end, event)
      -- lmp: the cancelled future is done (CPython's un-notified one is pending).
      local finished, pending = lmp.wait({S.successful, S.cancelled, future1, future2},
                                         {return_when = lmp.FIRST_EXCEPTION})
      assert.are.same({S.successful, S.cancelled, future1}, finished)
      assert.are.same({future2}, pending)
      event:set()
      future2:result(60)
    end)

    it("test_first_exception_one_already_failed (WaitTests)", function()
      local event = ctx.Event()
      local future1 = ex:submit(function(e) e:wait() end, event)
      local finished, pending = lmp.wait({S.exception, future1}, {return_when = lmp.FIRST_EXCEPTION})
      assert.are.same({S.exception}, finished)
      assert.are.same({future1}, pending)
      event:set()
      future1:result(60)
    end)

    it("test_all_completed (WaitTests)", function()
      local future1 = ex:submit(function(a, b) return a // b end, 2, 0)
      local future2 = ex:submit(mul, 2, 21)
      local all = {S.successful, S.cancelled, S.exception, future1, future2}
      local finished, pending = lmp.wait(all, {return_when = lmp.ALL_COMPLETED})
      assert.are.same(all, finished)
      assert.are.same({}, pending)
    end)

    it("test_timeout (WaitTests)", function()
      local event = ctx.Event()
      local future = ex:submit(function(e) e:wait() end, event)
      local finished, pending = lmp.wait({S.cancelled, S.exception, S.successful, future},
                                         {timeout = 0.05, return_when = lmp.ALL_COMPLETED})
      assert.are.same({S.cancelled, S.exception, S.successful}, finished)
      assert.are.same({future}, pending)
      event:set()
      future:result(60)
    end)

    -- AsCompletedTests -----------------------------------------------------

    it("test_no_timeout (AsCompletedTests)", function()
      local future1, future2 = ex:submit(mul, 2, 21), ex:submit(mul, 7, 6)
      local all = {S.cancelled, S.exception, S.successful, future1, future2}
      local completed = {}
      for f in lmp.as_completed(all) do completed[#completed + 1] = f end
      assert.are.same(set(all), set(completed))
      assert.are.equal(#all, #completed)
    end)

    it("test_future_times_out (AsCompletedTests)", function()
      local already_completed = {S.cancelled, S.exception, S.successful}
      for _, timeout in ipairs({0, 0.1}) do
        local completed_futures = {}
        local err = raised(function()
          for f in lmp.as_completed({S.cancelled, S.exception, S.successful, S.running}, timeout) do
            completed_futures[#completed_futures + 1] = f
          end
        end)
        assert.are.equal("timeout", err.kind)
        assert.are.same(set(already_completed), set(completed_futures))
      end
    end)

    it("test_duplicate_futures (AsCompletedTests)", function()
      local future1 = ex:submit(function() require("lmp").sleep(0.05) end)
      local completed = {}
      for f in lmp.as_completed({future1, future1, future1}) do completed[#completed + 1] = f end
      assert.are.same({future1}, completed)
    end)

    it("test_correct_timeout_exception_msg (AsCompletedTests)", function()
      local err = raised(function()
        for _ in lmp.as_completed({S.cancelled, S.pending, S.running, S.successful}, 0) do end
      end)
      assert.are.equal("timeout", err.kind)
      assert.matches("2 %(of 4%) futures unfinished", err.message)
    end)

    -- ExecutorShutdownTest -------------------------------------------------

    it("test_run_after_shutdown (ExecutorShutdownTest)", function()
      ex:shutdown()
      assert.matches("executor is shut down", raised(ex.submit, ex, mul, 2, 5))
    end)

    it("test_hang_issue12364 (ExecutorShutdownTest)", function()
      local fs = {}
      for i = 1, 20 do fs[i] = ex:submit(lmp.sleep, 0.01) end
      ex:shutdown()
      for _, f in ipairs(fs) do
        assert.is_true(f:done())
        assert.is_nil(f:result(0))
      end
    end)

    it("test_cancel_futures (ExecutorShutdownTest)", function()
      -- The tasks wait on an Event (CPython's sleep 0.1) so that at most the
      -- two workers' are taken when the executor shuts down.
      local event = ctx.Event()
      local fs = {}
      for i = 1, 30 do fs[i] = ex:submit(function(e) e:wait() end, event) end
      assert.is_true(eventually(function() return fs[1]:running() end))
      ex:shutdown{wait = false, cancel_futures = true}
      event:set()
      local cancelled, others = 0, {}
      for _, f in ipairs(fs) do
        if f:cancelled() then cancelled = cancelled + 1 else others[#others + 1] = f end
      end
      assert.is_true(cancelled >= 30 - 2)
      assert.is_true(#others > 0)
      for _, f in ipairs(others) do assert.is_nil(f:exception(60)) end
    end)

    it("test_processes_terminate (ExecutorShutdownTest)", function()
      local sem = ctx.Semaphore(0)
      for _ = 1, 3 do ex:submit(function(s) s:acquire() end, sem) end
      local pids = support.pids(ex)
      assert.are.equal(2, #pids)
      sem:release(3)
      ex:shutdown()
      assert.is_true(support.all_dead(pids))
    end)

    it("test_context_manager_shutdown (ExecutorShutdownTest)", function()
      local pids
      do
        local e <close> = ctx.Executor(5)
        pids = support.pids(e)
        assert.are.same({5, 4, 3, 2, 1, 0, 1, 2, 3, 4},
                        values(e:map(math.abs, {-5, -4, -3, -2, -1, 0, 1, 2, 3, 4})))
      end
      assert.is_true(support.all_dead(pids))
    end)

    it("test_del_shutdown (ExecutorShutdownTest)", function()
      local e = ctx.Executor(5)
      local res = e:map(function(x) return math.abs(x) end, {-5, -4, -3, -2, -1, 0, 1, 2, 3, 4})
      e = nil -- luacheck: ignore
      collectgarbage()
      collectgarbage()
      -- The iteration holds the executor: every result is still computed.
      assert.are.same({5, 4, 3, 2, 1, 0, 1, 2, 3, 4}, values(res))
    end)

    it("test_interpreter_shutdown (ExecutorShutdownTest)", function()
      -- The program ends right after submitting: the work still runs.
      local out, code = support.run(string.format([[
        local lmp = require "lmp"
        local e = lmp.get_context(%q).Executor(2)
        e:submit(function() lmp.sleep(0.2); print("apple") end)
      ]], method))
      assert.are.equal(0, code, out)
      assert.matches("apple", out)
    end)

    it("test_shutdown_no_wait (ExecutorShutdownTest)", function()
      local e = ctx.Executor(5)
      local pids = support.pids(e)
      local res = e:map(function(x) return math.abs(x) end, {-5, -4, -3, -2, -1, 0, 1, 2, 3, 4})
      e:shutdown(false)
      assert.are.same({5, 4, 3, 2, 1, 0, 1, 2, 3, 4}, values(res))
      assert.is_true(support.all_dead(pids))
    end)

    it("test_shutdown_gh_132969_case_1 (ProcessPoolShutdownTest)", function()
      for _, max_workers in ipairs({2, 4}) do -- case_1 and case_2
        local e = ctx.Executor{max_workers = max_workers, max_tasks_per_child = 1}
        local f1 = e:submit(function(n) require("lmp").sleep(0.01 * n); return n end, 1)
        local f2 = e:submit(function() error("failing task") end)
        local f3 = e:submit(function(n) require("lmp").sleep(0.01 * n); return n end, 3)
        local result = 0
        pcall(function()
          result = result + f1:result(60)
          result = result + f2:result(60)
          result = result + f3:result(60)
        end)
        e:shutdown{wait = false}
        assert.are.equal(1, result)
        assert.are.equal(3, f3:result(60))
      end
    end)
  end)
end

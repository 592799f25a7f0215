-- CPython's own multiprocessing tests (Lib/test/_test_multiprocessing.py),
-- ported to lmp: each `it` names the test case it ports. The cases check
-- the behaviour, in Lua and with lmp's names, not CPython's code line by
-- line. Where lmp deliberately differs (docs/lua-api.md), the case checks
-- lmp's documented behaviour and a comment names the difference. Every
-- case that starts processes runs under each start method, as CPython runs
-- the suite under fork, spawn and forkserver.
--
-- Functions run in children reach what they need through upvalues and
-- arguments (a spawned child has none of the parent's globals), and report
-- a failed check by raising, which the parent sees as exit code 1.
local support = dofile("tests/support.lua")
local lmp = require "lmp"

local eventually, raised, range = support.eventually, support.raised, support.range

local function sqr(x) return x * x end
local function mul(a, b) return a * b end

-- Whether list holds v.
local function contains(list, v)
  for _, x in ipairs(list) do
    if x == v then return true end
  end
  return false
end

-- Joins p and asserts it ended with exit code 0.
local function joined(p)
  assert.is_true(p:join(60))
  assert.are.equal(0, p.exitcode)
end

-- An iterator giving 0, 1, ..., total-1 that raises when it reaches `when`
-- (at once for -1): CPython's exception_throwing_generator.
local function say_when(total, when)
  local i = -1
  return function()
    i = i + 1
    if i == when or when == -1 then error("Somebody said when") end
    if i < total then return i end
  end
end

for _, method in ipairs(lmp.get_all_start_methods()) do
  describe("[" .. method .. "]", function()
    local ctx = lmp.get_context(method)
    local function start(fn, ...) return support.spawn_in(ctx, fn, ...) end

    -- _TestProcess ---------------------------------------------------------

    it("test_current (_TestProcess)", function()
      local me = lmp.current_process()
      assert.are.equal("MainProcess", me.name)
      assert.is_true(math.type(me.pid) == "integer" and me.pid > 0)
      assert.is_nil(lmp.parent_process())
    end)

    it("test_args_argument (_TestProcess)", function()
      for _, arg in ipairs({1, "str", {1}, {1, {2}}}) do
        local q = ctx.Queue(1)
        local p = ctx.Process{target = function(queue, a) queue:put(a) end, args = {q, arg}, daemon = true}
        p:start()
        assert.are.same(arg, q:get(30))
        joined(p)
      end
    end)

    it("test_daemon_argument (_TestProcess)", function()
      local noop = function() end
      assert.is_false(ctx.Process(noop).daemon)
      assert.is_true(ctx.Process{target = noop, daemon = true}.daemon)
      assert.is_false(ctx.Process{target = noop, daemon = false}.daemon)
    end)

    it("test_parent_process_attributes (_TestProcess)", function()
      local r, w = ctx.Pipe(false)
      local p = start(function(conn)
        local parent = lmp.parent_process()
        conn:send({parent.pid, parent.name})
      end, w)
      joined(p)
      assert.are.same({lmp.current_process().pid, "MainProcess"}, r:recv(30))
    end)

    it("test_parent_process (_TestProcess)", function()
      local r, w = ctx.Pipe(false)
      local p = start(function(conn)
        local gp = lmp.get_context(method).Process(function(c)
          c:send({lmp.current_process().pid, lmp.parent_process().pid})
          lmp.sleep(300)
        end, conn)
        gp:start()
        lmp.sleep(300)
      end, w)
      local got = r:recv(30)
      assert.are.equal(p.pid, got[2])
      assert.is_true(support.alive(got[1]))
      p:terminate()
      assert.is_true(p:join(30))
      -- lmp: a grandchild dies with its parent (Python's lives on and sees
      -- parent_process().is_alive() turn false).
      assert.is_true(support.all_dead({got[1]}, 30))
    end)

    it("test_process (_TestProcess)", function()
      local q = ctx.Queue(1)
      local p = ctx.Process{target = function(queue, a, b)
        local me = lmp.current_process()
        queue:put({a, b})
        queue:put(me.name)
        queue:put(me.pid)
      end, args = {q, 1, 2}, name = "SomeProcess"}
      p.daemon = true
      assert.is_false(p:is_alive())
      assert.is_true(p.daemon)
      assert.is_false(contains(lmp.active_children(), p))
      assert.is_nil(p.exitcode)
      p:start()
      assert.is_true(contains(lmp.active_children(), p))
      assert.are.same({1, 2}, q:get(30))
      assert.are.equal("SomeProcess", q:get(30))
      assert.are.equal(p.pid, q:get(30))
      joined(p)
      assert.is_false(p:is_alive())
      assert.is_false(contains(lmp.active_children(), p))
    end)

    -- CPython's _kill_process: a child that sets an event and sleeps, then
    -- meth(p); the exit code.
    local function kill_process(meth)
      local e = ctx.Event()
      local p = ctx.Process{target = function(ev) ev:set(); lmp.sleep(100) end, args = {e}, daemon = true}
      p:start()
      assert.is_true(p:is_alive())
      assert.is_true(contains(lmp.active_children(), p))
      assert.is_nil(p.exitcode)
      assert.is_false(p:join(0))
      assert.is_true(p:is_alive())
      -- lmp: a negative timeout is a bad argument (Python treats it as 0).
      assert.matches("non%-negative", raised(p.join, p, -1))
      assert.is_true(e:wait(30))
      meth(p)
      assert.is_true(p:join(30))
      assert.is_false(p:is_alive())
      assert.is_false(contains(lmp.active_children(), p))
      assert.is_true(p:join())
      return p.exitcode
    end

    it("test_terminate (_TestProcess)", function()
      assert.are.equal(-15, kill_process(function(p) p:terminate() end))
    end)

    it("test_kill (_TestProcess)", function()
      assert.are.equal(-9, kill_process(function(p) p:kill() end))
    end)

    it("test_cpu_count (_TestProcess)", function()
      local n = lmp.cpu_count()
      assert.are.equal("integer", math.type(n))
      assert.is_true(n >= 1)
    end)

    it("test_active_children (_TestProcess)", function()
      assert.are.equal("table", type(lmp.active_children()))
      local e = ctx.Event()
      local p = ctx.Process(function(ev) ev:wait() end, e)
      assert.is_false(contains(lmp.active_children(), p))
      p.daemon = true
      p:start()
      assert.is_true(contains(lmp.active_children(), p))
      e:set()
      joined(p)
      assert.is_false(contains(lmp.active_children(), p))
    end)

    it("test_recursion (_TestProcess)", function()
      local r, w = ctx.Pipe(false)
      local function recurse(conn, id)
        conn:send(id)
        if #id < 2 then
          for i = 0, 1 do
            local child = {table.unpack(id)}
            child[#child + 1] = i
            local p = lmp.get_context(method).Process(recurse, conn, child)
            p:start()
            p:join()
            assert(p.exitcode == 0)
          end
        end
      end
      recurse(w, {})
      local result = {}
      while r:poll() do result[#result + 1] = r:recv() end
      assert.are.same({{}, {0}, {0, 0}, {0, 1}, {1}, {1, 0}, {1, 1}}, result)
    end)

    it("test_sentinel (_TestProcess)", function()
      local e = ctx.Event()
      local p = ctx.Process(function(ev) ev:wait(10) end, e)
      -- lmp: before start the sentinel is nil, as the pid is (Python raises).
      assert.is_nil(p.sentinel)
      p:start()
      local s = p.sentinel
      assert.are.equal("integer", math.type(s))
      assert.is_not_nil(io.open("/proc/self/fd/" .. s))
      e:set()
      joined(p)
    end)

    it("test_close (_TestProcess)", function()
      local q = ctx.Queue()
      local p = ctx.Process{target = function(queue) queue:get() end, args = {q}, daemon = true}
      p:start()
      assert.is_true(p:is_alive())
      raised(p.close, p) -- still running: cannot close
      q:put(true)
      joined(p)
      assert.is_false(p:is_alive())
      p:close()
      for _, m in ipairs({"join", "terminate", "is_alive"}) do
        assert.matches("closed lmp.Process", raised(p[m], p))
      end
      for _, field in ipairs({"exitcode", "pid", "sentinel"}) do
        assert.matches("closed lmp.Process", raised(function() return p[field] end))
      end
      p:close() -- again is harmless
    end)

    it("test_many_processes (_TestProcess)", function()
      local n = 10
      local procs = {}
      for i = 1, n do procs[i] = start(lmp.sleep, 0.01) end
      for _, p in ipairs(procs) do joined(p) end
      for i = 1, n do procs[i] = start(lmp.sleep, 100) end
      for _, p in ipairs(procs) do p:terminate() end
      for _, p in ipairs(procs) do
        assert.is_true(p:join(30))
        assert.are.equal(-15, p.exitcode)
      end
    end)

    it("test_sys_exit (_TestProcess)", function()
      -- An uncaught error ends the child with 1 (Python: SystemExit with a
      -- non-integer reason, printed to stderr); os.exit as Lua defines it.
      local path = os.tmpname()
      local p = start(function(file)
        local f = io.open(file, "w"); f:write("ignore this"); f:close()
        error("ignore this")
      end, path)
      assert.is_true(p:join(30))
      assert.are.equal(1, p.exitcode)
      assert.are.equal("ignore this", support.read(path))
      os.remove(path)
      for _, case in ipairs({{{true}, 0}, {{false}, 1}, {{8}, 8}, {{}, 0}}) do
        local c = start(function(...) os.exit(...) end, table.unpack(case[1]))
        assert.is_true(c:join(30))
        assert.are.equal(case[2], c.exitcode)
      end
    end)

    -- _TestQueue -----------------------------------------------------------

    it("test_put (_TestQueue)", function()
      local q = ctx.Queue(6)
      local child_can_start, parent_can_continue = ctx.Event(), ctx.Event()
      local p = start(function(queue, go, done)
        go:wait()
        for _ = 1, 6 do queue:get() end
        done:set()
      end, q, child_can_start, parent_can_continue)
      assert.is_true(q:empty())
      assert.is_false(q:full())
      for i = 1, 5 do assert.is_true(q:put(i)) end
      assert.is_true(q:put_nowait(6))
      assert.is_false(q:empty())
      assert.is_true(q:full())
      -- lmp: a full queue answers nil, "full" (Python raises queue.Full).
      assert.are.same({nil, "full"}, {q:put(7, 0)})
      assert.are.same({nil, "full"}, {q:put_nowait(7)})
      assert.are.same({nil, "full"}, {q:put(7, 0.05)})
      child_can_start:set()
      assert.is_true(parent_can_continue:wait(30))
      assert.is_true(q:empty())
      assert.is_false(q:full())
      joined(p)
    end)

    it("test_get (_TestQueue)", function()
      local q = ctx.Queue()
      local child_can_start, parent_can_continue = ctx.Event(), ctx.Event()
      local p = start(function(queue, go, done)
        go:wait()
        for i = 1, 5 do queue:put(i) end
        done:set()
      end, q, child_can_start, parent_can_continue)
      assert.is_true(q:empty())
      child_can_start:set()
      assert.is_true(parent_can_continue:wait(30))
      assert.is_true(eventually(function() return not q:empty() end))
      assert.are.equal(1, q:get_nowait())
      assert.are.equal(2, q:get(nil))
      assert.are.equal(3, q:get())
      assert.are.equal(4, q:get(1))
      assert.are.equal(5, q:get())
      assert.is_true(q:empty())
      -- lmp: nil, "empty" / nil, "timeout" (Python raises queue.Empty).
      assert.are.same({nil, "empty"}, {q:get_nowait()})
      assert.are.same({nil, "timeout"}, {q:get(0)})
      assert.are.same({nil, "timeout"}, {q:get(0.05)})
      joined(p)
    end)

    it("test_fork (_TestQueue)", function()
      local q = ctx.Queue()
      for i = 0, 9 do q:put(i) end
      local p = start(function(queue) for i = 10, 19 do queue:put(i) end end, q)
      for i = 0, 19 do assert.are.equal(i, q:get(30)) end
      assert.are.same({nil, "timeout"}, {q:get(0)})
      joined(p)
    end)

    it("test_qsize (_TestQueue)", function()
      local q = ctx.Queue()
      assert.are.equal(0, q:qsize())
      q:put(1)
      assert.are.equal(1, q:qsize())
      q:put(5)
      assert.are.equal(2, q:qsize())
      q:get()
      assert.are.equal(1, q:qsize())
      q:get()
      assert.are.equal(0, q:qsize())
    end)

    it("test_task_done (_TestQueue)", function()
      local q = ctx.JoinableQueue()
      local workers = {}
      for i = 1, 3 do
        workers[i] = start(function(queue)
          while queue:get() ~= false do
            lmp.sleep(0.01)
            queue:task_done()
          end
          queue:task_done()
        end, q)
      end
      for i = 1, 10 do q:put(i) end
      assert.is_true(q:join(60))
      for _ = 1, #workers do q:put(false) end
      for _, p in ipairs(workers) do joined(p) end
      assert.is_true(q:join(10))
      raised(q.task_done, q) -- more task_done than puts
    end)

    it("test_timeout (_TestQueue)", function()
      local q = ctx.Queue()
      local t0 = lmp.time()
      assert.are.same({nil, "timeout"}, {q:get(0.2)})
      assert.is_true(lmp.time() - t0 >= 0.1) -- waited, did not return at once
    end)

    it("test_queue_feeder_donot_stop_onexc (_TestQueue)", function()
      -- lmp: a value that cannot be sent raises at put (Python's feeder
      -- thread prints the error); either way the queue goes on working.
      for _, maxsize in ipairs({0, 1}) do
        local q = ctx.Queue(maxsize)
        local err = raised(q.put, q, coroutine.create(print))
        assert.are.equal("serialize", err.kind)
        assert.is_true(q:put(true))
        assert.are.equal(1, q:qsize())
        assert.is_true(q:get(10))
        assert.is_true(q:empty())
      end
    end)

    it("test_closed_queue_empty_exceptions (_TestQueue)", function()
      -- lmp: a closed queue is a state, so empty() still answers.
      for _, make in ipairs({ctx.Queue, ctx.JoinableQueue}) do
        local q = make()
        q:close()
        assert.is_true(q:empty())
        local used = make()
        used:put("foo")
        used:close()
        assert.is_false(used:empty())
      end
    end)

    it("test_closed_queue_put_get_exceptions (_TestQueue)", function()
      -- lmp: put and get on a closed queue answer nil, "closed" (Python
      -- raises ValueError "is closed").
      for _, make in ipairs({ctx.Queue, ctx.JoinableQueue}) do
        local q = make()
        q:close()
        assert.are.same({nil, "closed"}, {q:put("foo")})
        assert.are.same({nil, "closed"}, {q:get()})
      end
    end)

    -- _TestLock ------------------------------------------------------------

    it("test_lock (_TestLock)", function()
      local lock = ctx.Lock()
      assert.is_true(lock:acquire())
      assert.is_true(lock:locked())
      assert.is_false(lock:acquire(0))
      assert.is_nil(lock:release())
      assert.is_false(lock:locked())
      raised(lock.release, lock)
    end)

    -- lmp: the child holds the lock until told to end, since a lock whose
    -- holder ended is free for the next acquire (owner_died); CPython's
    -- child ends holding it.
    local function locked_2processes(lock)
      local e, res, done = ctx.Event(), ctx.Value("b", 0), ctx.Event()
      local p = start(function(l, ev, r, finish)
        l:acquire()
        r.value = l:locked() and 1 or 0
        ev:set()
        finish:wait(30)
      end, lock, e, res, done)
      assert.is_true(e:wait(30))
      assert.is_true(lock:locked())
      assert.are.equal(1, res.value)
      done:set()
      joined(p)
    end

    it("test_lock_locked_2processes (_TestLock)", function()
      locked_2processes(ctx.Lock())
    end)

    it("test_rlock (_TestLock)", function()
      local lock = ctx.RLock()
      assert.is_true(lock:acquire())
      assert.is_true(lock:locked())
      assert.is_true(lock:acquire())
      assert.is_true(lock:acquire())
      assert.is_nil(lock:release())
      assert.is_true(lock:locked())
      assert.is_nil(lock:release())
      assert.is_nil(lock:release())
      assert.is_false(lock:locked())
      raised(lock.release, lock)
    end)

    it("test_rlock_locked_2processes (_TestLock)", function()
      locked_2processes(ctx.RLock())
    end)

    it("test_lock_context (_TestLock)", function()
      -- Python's `with lock:` is lmp's lock:with(fn) or a <close> hold.
      for _, lock in ipairs({ctx.Lock(), ctx.RLock()}) do
        assert.are.equal(42, lock:with(function() return lock:locked() and 42 end))
        assert.is_false(lock:locked())
        do
          assert.is_true(lock:acquire())
          local _ <close> = lock
          assert.is_true(lock:locked())
        end
        assert.is_false(lock:locked())
      end
    end)

    -- _TestSemaphore -------------------------------------------------------

    local function check_semaphore(sem)
      assert.are.equal(2, sem:get_value())
      assert.is_true(sem:acquire())
      assert.are.equal(1, sem:get_value())
      assert.is_true(sem:acquire())
      assert.are.equal(0, sem:get_value())
      assert.is_false(sem:acquire(0))
      assert.are.equal(0, sem:get_value())
      sem:release()
      assert.are.equal(1, sem:get_value())
      sem:release()
      assert.are.equal(2, sem:get_value())
    end

    it("test_semaphore (_TestSemaphore)", function()
      local sem = ctx.Semaphore(2)
      check_semaphore(sem)
      sem:release()
      assert.are.equal(3, sem:get_value())
      sem:release()
      assert.are.equal(4, sem:get_value())
    end)

    it("test_bounded_semaphore (_TestSemaphore)", function()
      local sem = ctx.BoundedSemaphore(2)
      check_semaphore(sem)
      assert.matches("released too many times", raised(sem.release, sem))
      assert.are.equal(2, sem:get_value())
    end)

    it("test_timeout (_TestSemaphore)", function()
      local sem = ctx.Semaphore(0)
      assert.is_false(sem:acquire(0))
      assert.is_false(sem:acquire(0.05))
    end)

    -- _TestCondition -------------------------------------------------------

    -- CPython's _TestCondition.f: wait on cond, with the semaphores telling
    -- the parent when it sleeps and when it woke.
    local function cond_f(cond, sleeping, woken, timeout)
      cond:acquire()
      sleeping:release()
      cond:wait(timeout)
      woken:release()
      cond:release()
    end

    local function value_reaches(sem, n)
      return eventually(function() return sem:get_value() == n end, 30)
    end

    it("test_notify (_TestCondition)", function()
      local cond, sleeping, woken = ctx.Condition(), ctx.Semaphore(0), ctx.Semaphore(0)
      local procs = {start(cond_f, cond, sleeping, woken), start(cond_f, cond, sleeping, woken)}
      sleeping:acquire()
      sleeping:acquire()
      assert.are.equal(0, woken:get_value())
      cond:with(function() cond:notify() end)
      assert.is_true(value_reaches(woken, 1))
      cond:with(function() cond:notify() end)
      assert.is_true(value_reaches(woken, 2))
      for _, p in ipairs(procs) do joined(p) end
    end)

    it("test_notify_all (_TestCondition)", function()
      local cond, sleeping, woken = ctx.Condition(), ctx.Semaphore(0), ctx.Semaphore(0)
      local procs = {}
      for i = 1, 3 do procs[i] = start(cond_f, cond, sleeping, woken, 0.05) end
      for _ = 1, 3 do sleeping:acquire() end
      for _ = 1, 3 do assert.is_true(woken:acquire(30)) end -- they time out
      assert.are.equal(0, woken:get_value())
      for i = 4, 6 do procs[i] = start(cond_f, cond, sleeping, woken) end
      for _ = 1, 3 do sleeping:acquire() end
      assert.are.equal(0, woken:get_value())
      cond:with(function() cond:notify_all() end)
      for _ = 1, 3 do assert.is_true(woken:acquire(30)) end
      assert.are.equal(0, woken:get_value())
      for _, p in ipairs(procs) do joined(p) end
    end)

    it("test_notify_n (_TestCondition)", function()
      local cond, sleeping, woken = ctx.Condition(), ctx.Semaphore(0), ctx.Semaphore(0)
      local procs = {}
      for i = 1, 5 do procs[i] = start(cond_f, cond, sleeping, woken) end
      for _ = 1, 5 do sleeping:acquire() end
      assert.are.equal(0, woken:get_value())
      cond:with(function() cond:notify(2) end)
      assert.is_true(value_reaches(woken, 2))
      cond:with(function() cond:notify(4) end) -- only 3 left to wake
      assert.is_true(value_reaches(woken, 5))
      cond:with(function() cond:notify(3) end) -- nobody waits
      assert.are.equal(5, woken:get_value())
      for _, p in ipairs(procs) do joined(p) end
    end)

    it("test_timeout (_TestCondition)", function()
      local cond = ctx.Condition()
      cond:acquire()
      local res = cond:wait(0.05)
      cond:release()
      assert.is_false(res)
    end)

    it("test_waitfor (_TestCondition)", function()
      local cond, state = ctx.Condition(), ctx.Value("i", -1)
      local p = start(function(c, s)
        c:with(function()
          s.value = 0
          c:notify()
          assert(c:wait_for(function() return s.value == 4 end))
          assert(s.value == 4)
        end)
      end, cond, state)
      cond:with(function()
        assert.is_true(cond:wait_for(function() return state.value == 0 end))
        assert.are.equal(0, state.value)
      end)
      for _ = 1, 4 do
        lmp.sleep(0.01)
        cond:with(function()
          state.value = state.value + 1
          cond:notify()
        end)
      end
      joined(p)
    end)

    it("test_waitfor_timeout (_TestCondition)", function()
      local cond, state = ctx.Condition(), ctx.Value("i", 0)
      local success, sem = ctx.Value("i", 0), ctx.Semaphore(0)
      local p = start(function(c, s, ok, ready)
        ready:release()
        c:with(function()
          local result = c:wait_for(function() return s.value == 4 end, 0.1)
          if not result then ok.value = 1 end
        end)
      end, cond, state, success, sem)
      assert.is_true(sem:acquire(60))
      for _ = 1, 3 do
        lmp.sleep(0.01)
        cond:with(function()
          state.value = state.value + 1
          cond:notify()
        end)
      end
      joined(p)
      assert.are.equal(1, success.value)
    end)

    it("test_wait_result (_TestCondition)", function()
      local c = ctx.Condition()
      c:with(function()
        assert.is_false(c:wait(0))
        assert.is_false(c:wait(0.1))
        local p = start(function(cond) cond:with(function() cond:notify() end) end, c)
        assert.is_true(c:wait(60))
        joined(p)
      end)
    end)

    -- _TestEvent -----------------------------------------------------------

    it("test_event (_TestEvent)", function()
      local event = ctx.Event()
      assert.is_false(event:is_set())
      assert.is_false(event:wait(0))
      assert.is_false(event:wait(0.05))
      event:set()
      assert.is_true(event:is_set())
      assert.is_true(event:wait())
      assert.is_true(event:wait(0.05))
      event:clear()
      assert.is_false(event:is_set())
      local p = start(function(e) lmp.sleep(0.05); e:set() end, event)
      assert.is_true(event:wait())
      joined(p)
    end)

    -- _TestBarrier ---------------------------------------------------------

    local N = 4

    -- CPython's run_threads: f(...) in N processes at once.
    local function run_parties(f, ...)
      local procs = {}
      for i = 1, N do procs[i] = start(f, ...) end
      for _, p in ipairs(procs) do joined(p) end
    end

    -- Whether err is a broken_barrier lmp.Error.
    local function broken(err)
      return lmp.is_error(err) and err.kind == "broken_barrier"
    end

    local function multipass(barrier, results, n)
      local m = barrier.parties
      for i = 0, n - 1 do
        results[1]:append(true)
        assert(#results[2] == i * m)
        barrier:wait()
        results[2]:append(true)
        assert(#results[1] == (i + 1) * m)
        barrier:wait()
      end
      assert(barrier.n_waiting == 0)
      assert(not barrier.broken)
    end

    it("test_barrier (_TestBarrier)", function()
      local barrier = ctx.Barrier(N, nil, 30)
      local results = {lmp.List(), lmp.List()}
      run_parties(multipass, barrier, results, 1)
      assert.are.equal(N, #results[1])
    end)

    it("test_barrier_10 (_TestBarrier)", function()
      local barrier = ctx.Barrier(N, nil, 30)
      local results = {lmp.List(), lmp.List()}
      run_parties(multipass, barrier, results, 10)
      assert.are.equal(10 * N, #results[2])
    end)

    it("test_wait_return (_TestBarrier)", function()
      local barrier, q = ctx.Barrier(N, nil, 30), ctx.Queue()
      run_parties(function(b, queue) queue:put(b:wait()) end, barrier, q)
      local results = {}
      for i = 1, N do results[i] = q:get(10) end
      table.sort(results)
      assert.are.same({0, 1, 2, 3}, results) -- one 0 and every index once
    end)

    it("test_action (_TestBarrier)", function()
      local results = lmp.List()
      local barrier = ctx.Barrier(N, function() results:append(true) end, 30)
      run_parties(function(b, r)
        b:wait()
        assert(#r == 1)
      end, barrier, results)
      assert.are.equal(1, #results)
    end)

    it("test_abort (_TestBarrier)", function()
      local barrier, results1, results2 = ctx.Barrier(N, nil, 30), lmp.List(), lmp.List()
      run_parties(function(b, r1, r2)
        local ok, err = pcall(function()
          local i = b:wait()
          if i == N // 2 then error("RuntimeError") end
          b:wait()
          r1:append(true)
        end)
        if not ok then
          if broken(err) then r2:append(true) else b:abort() end
        end
      end, barrier, results1, results2)
      assert.are.equal(0, #results1)
      assert.are.equal(N - 1, #results2)
      assert.is_true(barrier.broken)
    end)

    it("test_reset (_TestBarrier)", function()
      local barrier = ctx.Barrier(N, nil, 30)
      local r1, r2, r3 = lmp.List(), lmp.List(), lmp.List()
      run_parties(function(b, results1, results2, results3)
        local i = b:wait()
        if i == N // 2 then
          while b.n_waiting < N - 1 do lmp.sleep(0.001) end
          b:reset()
        else
          local ok, err = pcall(b.wait, b)
          if ok then results1:append(true) elseif broken(err) then results2:append(true) end
        end
        b:wait()
        results3:append(true)
      end, barrier, r1, r2, r3)
      assert.are.equal(0, #r1)
      assert.are.equal(N - 1, #r2)
      assert.are.equal(N, #r3)
    end)

    it("test_abort_and_reset (_TestBarrier)", function()
      local barrier, barrier2 = ctx.Barrier(N, nil, 30), ctx.Barrier(N, nil, 30)
      local r1, r2, r3 = lmp.List(), lmp.List(), lmp.List()
      run_parties(function(b, b2, results1, results2, results3)
        local ok, err = pcall(function()
          local i = b:wait()
          if i == N // 2 then error("RuntimeError") end
          b:wait()
          results1:append(true)
        end)
        if not ok then
          if broken(err) then results2:append(true) else b:abort() end
        end
        if b2:wait() == N // 2 then b:reset() end
        b2:wait()
        b:wait()
        results3:append(true)
      end, barrier, barrier2, r1, r2, r3)
      assert.are.equal(0, #r1)
      assert.are.equal(N - 1, #r2)
      assert.are.equal(N, #r3)
    end)

    -- The party at N//2 stays away from the second wait until the others'
    -- timeout broke the barrier (CPython sleeps 1 s against a 0.5 s timeout).
    local function timeout_f(b, results, timeout)
      local i = b:wait(30)
      if i == N // 2 then
        while not b.broken do lmp.sleep(0.005) end
      end
      local ok, err = pcall(b.wait, b, timeout)
      if not ok and broken(err) then results:append(true) end
    end

    it("test_timeout (_TestBarrier)", function()
      local barrier, results = ctx.Barrier(N, nil, 30), lmp.List()
      run_parties(timeout_f, barrier, results, 0.1)
      assert.are.equal(barrier.parties, #results)
    end)

    it("test_default_timeout (_TestBarrier)", function()
      local barrier, results = ctx.Barrier(N, nil, 0.1), lmp.List()
      run_parties(timeout_f, barrier, results, nil)
      assert.are.equal(barrier.parties, #results)
    end)

    it("test_single_thread (_TestBarrier)", function()
      local b = ctx.Barrier(1)
      assert.are.equal(0, b:wait())
      assert.are.equal(0, b:wait())
    end)

    it("test_thousand (_TestBarrier)", function()
      local passes = 50 -- CPython: 1000
      local barrier, lock = ctx.Barrier(N, nil, 30), ctx.Lock()
      local conn, child_conn = ctx.Pipe(false)
      local procs = {}
      for j = 1, N do
        procs[j] = start(function(b, c, l)
          for i = 0, passes - 1 do
            b:wait()
            l:with(function() c:send(i) end)
          end
        end, barrier, child_conn, lock)
      end
      for i = 0, passes - 1 do
        for _ = 1, N do assert.are.equal(i, conn:recv(30)) end
      end
      for _, p in ipairs(procs) do joined(p) end
    end)

    -- _TestValue, _TestArray -----------------------------------------------

    local codes_values = {
      {"i", 4343, 24234}, {"d", 3.625, -4.25}, {"h", -232, 234}, {"q", 2 ^ 33 // 1, 2 ^ 34 // 1},
    }

    local function check_values(make)
      local values = {}
      for i, cv in ipairs(codes_values) do values[i] = make(cv[1], cv[2]) end
      for i, cv in ipairs(codes_values) do assert.are.equal(cv[2], values[i].value) end
      joined(start(function(vs, cvs)
        for i, cv in ipairs(cvs) do vs[i].value = cv[3] end
      end, values, codes_values))
      for i, cv in ipairs(codes_values) do assert.are.equal(cv[3], values[i].value) end
    end

    it("test_value (_TestValue)", function() check_values(ctx.Value) end)

    it("test_rawvalue (_TestValue)", function() check_values(ctx.RawValue) end)

    it("test_getobj_getlock (_TestValue)", function()
      local val1 = ctx.Value("i", 5)
      local lock1 = val1:get_lock()
      assert.is_true(lock1:acquire())
      lock1:release()
      -- lmp: `lock` is a boolean; a Value cannot borrow another lock.
      assert.is_nil(ctx.Value{type = "i", value = 5, lock = false}.get_lock)
      raised(ctx.Value, {type = "i", value = 5, lock = "navalue"})
      assert.is_nil(ctx.RawValue("i", 5).get_lock)
    end)

    local seq = {680, 626, 934, 821, 150, 233, 548, 982, 714, 831}

    local function cumulate(a)
      for i = 2, #a do a[i] = a[i] + a[i - 1] end
    end

    local function check_array(make)
      local arr = make("i", seq)
      local s = {table.unpack(seq)}
      assert.are.equal(#s, #arr)
      assert.are.equal(s[4], arr[4])
      assert.are.same({table.unpack(s, 3, 7)}, arr:totable(3, 7))
      for i, v in ipairs({1, 2, 3, 4}) do arr[4 + i] = v; s[4 + i] = v end
      assert.are.same(s, arr:totable())
      cumulate(s)
      joined(start(cumulate, arr))
      assert.are.same(s, arr:totable())
    end

    it("test_array (_TestArray)", function() check_array(ctx.Array) end)

    it("test_array_from_size (_TestArray)", function()
      for _ = 1, 3 do
        local arr = ctx.Array("i", 10)
        assert.are.equal(10, #arr)
        assert.are.same({0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, arr:totable())
        for i = 1, 10 do arr[i] = i - 1 end
        assert.are.same({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, arr:totable())
      end
    end)

    it("test_rawarray (_TestArray)", function() check_array(ctx.RawArray) end)

    it("test_getobj_getlock_obj (_TestArray)", function()
      local arr1 = ctx.Array("i", range(10))
      assert.is_true(arr1:get_lock():acquire())
      arr1:get_lock():release()
      assert.is_nil(ctx.Array{type = "i", values = range(10), lock = false}.get_lock)
      raised(ctx.Array, {type = "i", values = range(10), lock = "notalock"})
      assert.is_nil(ctx.RawArray("i", range(10)).get_lock)
    end)

    -- _TestContainers (a Manager's objects are lmp's shared containers) -----

    it("test_list (_TestContainers)", function()
      local m <close> = lmp.Manager()
      local a = m:list(range(10))
      assert.are.same(range(10), a:totable())
      local b = m:list()
      assert.are.same({}, b:totable())
      b:extend({0, 1, 2, 3, 4})
      assert.are.same({0, 1, 2, 3, 4}, b:totable())
      assert.are.equal(2, b[3])
      b:extend(b)
      assert.are.same({0, 1, 2, 3, 4, 0, 1, 2, 3, 4}, b:totable())
      local e = m:list({a, b})
      assert.are.same(range(10), e[1]:totable())
      assert.are.same({0, 1, 2, 3, 4, 0, 1, 2, 3, 4}, e[2]:totable())
      local f = m:list({a})
      a:append("hello")
      assert.are.equal("hello", f[1][11])
    end)

    it("test_list_iter (_TestContainers)", function()
      local m <close> = lmp.Manager()
      local a = m:list(range(10))
      local got = {}
      for _, v in ipairs(a) do got[#got + 1] = v end
      assert.are.same(range(10), got)
      a[1] = 100
      for _, v in ipairs(a) do assert.are.equal(100, v); break end
    end)

    it("test_list_proxy_in_list (_TestContainers)", function()
      local m <close> = lmp.Manager()
      local a = m:list({m:list({0, 1, 2}), m:list({0, 1, 2}), m:list({0, 1, 2})})
      a[1][3] = 55
      assert.are.same({0, 1, 55}, a[1]:totable())
      assert.are.same({0, 1, 2}, a[2]:totable())
      assert.are.same({0, 1, 2}, a[3]:totable())
      assert.are.equal(2, a[2]:pop())
      assert.are.equal(2, #a[2])
      assert.are.equal(3, #a[1])
      local b = m:list()
      b:append(b)
      assert.are.equal(1, #b)
    end)

    it("test_dict (_TestContainers)", function()
      local m <close> = lmp.Manager()
      local d = m:dict()
      local expected = {}
      for i = 65, 69 do d[i] = string.char(i); expected[i] = string.char(i) end
      assert.are.same(expected, d:totable())
      assert.are.same({65, 66, 67, 68, 69}, d:keys())
      assert.are.same({"A", "B", "C", "D", "E"}, d:values())
      assert.are.same({{65, "A"}, {66, "B"}, {67, "C"}, {68, "D"}, {69, "E"}}, d:items())
    end)

    it("test_dict_iter (_TestContainers)", function()
      local m <close> = lmp.Manager()
      local d = m:dict()
      for i = 65, 69 do d[i] = string.char(i) end
      local keys = {}
      for k in pairs(d) do keys[#keys + 1] = k end
      assert.are.same({65, 66, 67, 68, 69}, keys)
      -- lmp: pairs runs over a snapshot, so clearing in the loop is safe
      -- (Python raises RuntimeError at the next step).
      local n = 0
      for _ in pairs(d) do d:clear(); n = n + 1 end
      assert.are.equal(5, n)
      assert.are.equal(0, d:len())
    end)

    it("test_dict_proxy_nested (_TestContainers)", function()
      local m <close> = lmp.Manager()
      local pets = m:dict({ferrets = 2, hamsters = 4})
      local supplies = m:dict({water = 10, feed = 3})
      local d = m:dict({pets = pets, supplies = supplies})
      assert.are.equal(10, supplies.water)
      assert.are.equal(10, d:get("supplies").water)
      d:get("supplies").blankets = 5
      assert.are.equal(5, supplies.blankets)
      d:get("supplies").water = 7
      assert.are.equal(7, supplies.water)
      pets, supplies = nil, nil
      collectgarbage()
      assert.are.equal(2, d:get("pets").ferrets)
      d:get("supplies").blankets = 11
      assert.are.equal(11, d:get("supplies").blankets)
      pets, supplies = d:get("pets"), d:get("supplies")
      d:clear()
      assert.are.equal(0, d:len())
      assert.are.equal(10 - 3, supplies.water)
      assert.are.equal(4, pets.hamsters)
      local l = m:list({pets, supplies})
      l[1].marmots = 1
      assert.are.equal(1, pets.marmots)
    end)

    it("test_nested_queue (_TestContainers)", function()
      local m <close> = lmp.Manager()
      local a = m:list({m:Queue()})
      a[1]:put(123)
      assert.are.equal(123, a[1]:get(10))
      local b = m:dict({q = m:Queue()})
      b:get("q"):put(456)
      assert.are.equal(456, b:get("q"):get(10))
    end)

    it("test_namespace (_TestContainers)", function()
      local m <close> = lmp.Manager()
      local n = m:Namespace()
      n.name = "Bob"
      n.job = "Builder"
      n._hidden = "hidden"
      assert.are.same({"Bob", "Builder", "hidden"}, {n.name, n.job, n._hidden})
      assert.matches("name=Bob", tostring(n))
      joined(start(function(ns) ns.job = "Fixer" end, n))
      assert.are.equal("Fixer", n.job)
    end)

    -- _TestPool ------------------------------------------------------------

    describe("a pool of 3", function()
      local pool
      setup(function() pool = ctx.Pool(3) end)
      teardown(function() pool:terminate(); pool:join() end)

      it("test_apply (_TestPool)", function()
        assert.are.equal(25, pool:apply(sqr, 5))
        assert.are.equal(9, pool:apply_async(sqr, {3}):get(30))
      end)

      it("test_map (_TestPool)", function()
        local want = {}
        for i = 1, 100 do want[i] = sqr(i - 1) end
        assert.are.same({table.unpack(want, 1, 10)}, pool:map(sqr, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}))
        local xs = {}
        for i = 1, 100 do xs[i] = i - 1 end
        assert.are.same(want, pool:map(sqr, xs, 20))
      end)

      local function pairs_of(n)
        local t, want = {}, {}
        for i = 0, n - 1 do
          t[#t + 1] = {i, n - 1 - i}
          want[#want + 1] = i * (n - 1 - i)
        end
        return t, want
      end

      it("test_starmap (_TestPool)", function()
        local t, want = pairs_of(10)
        assert.are.same(want, pool:starmap(mul, t))
        t, want = pairs_of(100)
        assert.are.same(want, pool:starmap(mul, t, 20))
      end)

      it("test_starmap_async (_TestPool)", function()
        local t, want = pairs_of(100)
        assert.are.same(want, pool:starmap_async(mul, t):get(30))
      end)

      it("test_map_async (_TestPool)", function()
        assert.are.same({0, 1, 4, 9}, pool:map_async(sqr, {0, 1, 2, 3}):get(30))
      end)

      it("test_map_async_callbacks (_TestPool)", function()
        local call_args = {}
        local function append(x) call_args[#call_args + 1] = x end
        local r = pool:map_async(tonumber, {"1"}, {callback = append, error_callback = append})
        assert.is_true(r:wait(30))
        assert.are.equal(1, #call_args)
        assert.are.same({1}, call_args[1])
        r = pool:map_async(function(s) return math.tointeger(s) + 0 end, {"a"},
                           {callback = append, error_callback = append})
        assert.is_true(r:wait(30))
        assert.are.equal(2, #call_args)
        assert.is_true(lmp.is_error(call_args[2]))
        assert.are.equal("task", call_args[2].kind)
      end)

      it("test_map_unplicklable (_TestPool)", function()
        local co = coroutine.create(print)
        local err = raised(pool.map, pool, sqr, {co, co, co})
        assert.are.equal("serialize", err.kind)
        assert.matches("list%[1%]", err.message)
      end)

      it("test_map_chunksize (_TestPool)", function()
        assert.are.same({}, pool:map_async(sqr, {}, {chunksize = 1}):get(30))
      end)

      it("test_async (_TestPool)", function()
        local res = pool:apply_async(sqr, {7})
        assert.are.equal(49, res:get())
      end)

      it("test_async_timeout (_TestPool)", function()
        local e = ctx.Event()
        local res = pool:apply_async(function(ev) ev:wait(60); return 36 end, {e})
        -- lmp: get answers nil, "timeout" (Python raises TimeoutError).
        assert.are.same({nil, "timeout"}, {res:get(0.05)})
        e:set()
        assert.are.equal(36, res:get(30))
      end)

      it("test_imap (_TestPool)", function()
        -- lmp: imap yields i, v (Python yields v).
        local n = 0
        for i, v in pool:imap(sqr, range(10)) do
          n = n + 1
          assert.are.equal(n, i)
          assert.are.equal(i * i, v)
        end
        assert.are.equal(10, n)
        n = 0
        for i, v in pool:imap(sqr, range(1000), 100) do
          n = n + 1
          assert.are.equal(n, i)
          assert.are.equal(i * i, v)
        end
        assert.are.equal(1000, n)
      end)

      -- The values an imap loop yields before it raises, and the error.
      local function imap_until_error(name, gen, chunksize)
        local got = {}
        local ok, err = pcall(function()
          for _, v in pool[name](pool, sqr, gen, chunksize) do got[#got + 1] = v end
        end)
        assert.is_false(ok)
        assert.matches("Somebody said when", tostring(err))
        return got
      end

      it("test_imap_handle_iterable_exception (_TestPool)", function()
        assert.are.same({}, imap_until_error("imap", say_when(1, -1), 1))
        assert.are.same({}, imap_until_error("imap", say_when(1, -1), 1))
        assert.are.same({0, 1, 4}, imap_until_error("imap", say_when(10, 3), 1))
        -- lmp: the error comes at its place, after every item before it,
        -- whatever the chunksize (Python loses the items of the chunk it is in).
        for _, cs in ipairs({2, 4}) do
          assert.are.same({0, 1, 4, 9, 16, 25, 36}, imap_until_error("imap", say_when(20, 7), cs))
        end
        assert.are.equal(4, pool:apply(sqr, 2)) -- the pool goes on
      end)

      it("test_imap_unordered (_TestPool)", function()
        for _, cs in ipairs({1, 100}) do
          local n = cs == 1 and 10 or 1000
          local got = {}
          for i, v in pool:imap_unordered(sqr, range(n), cs) do
            assert.is_nil(got[i])
            got[i] = v
          end
          for i = 1, n do assert.are.equal(i * i, got[i]) end
        end
      end)

      it("test_imap_unordered_handle_iterable_exception (_TestPool)", function()
        assert.are.same({}, imap_until_error("imap_unordered", say_when(1, -1), 1))
        assert.are.same({}, imap_until_error("imap_unordered", say_when(1, -1), 1))
        for _, case in ipairs({{10, 3, 1}, {20, 7, 2}}) do
          local got = imap_until_error("imap_unordered", say_when(case[1], case[2]), case[3])
          local expected = {}
          for i = 0, case[1] - 1 do expected[i * i] = true end
          for _, v in ipairs(got) do
            assert.is_true(expected[v])
            expected[v] = nil
          end
        end
      end)

      it("test_traceback (_TestPool)", function()
        local function failing()
          error("RuntimeError 123") -- some comment
        end
        local line = debug.getinfo(failing, "S").linedefined + 1
        local err = raised(pool.apply, pool, failing)
        assert.is_true(lmp.is_error(err))
        assert.are.equal("task", err.kind)
        assert.matches("RuntimeError 123", err.message)
        assert.matches("cpython_mp_spec.lua:" .. line, err.traceback)
        assert.matches("cpython_mp_spec.lua:" .. line, tostring(err))
        -- The value raised arrives as it was raised, a number included.
        local num = raised(pool.apply, pool, function() error(123) end)
        assert.are.equal(123, num.value)
        assert.are.equal("integer", math.type(num.value))
        -- An error of the input iterator is the caller's own, not a task's.
        local ok, e2 = pcall(function() for _ in pool:imap(sqr, say_when(1, -1), 1) do end end)
        assert.is_false(ok)
        assert.is_false(lmp.is_error(e2))
      end)

      it("test_wrapped_exception (_TestPool)", function()
        local err = raised(pool.apply, pool, function() error("foo") end)
        assert.are.equal("task", err.kind)
        assert.matches("foo", err.message)
      end)

      it("test_async_error_callback (_TestPoolWorkerErrors)", function()
        local scratchpad
        local res = pool:apply_async(function() error({key = "key"}) end, nil,
                                     {error_callback = function(e) scratchpad = e end})
        local err = raised(res.get, res, 30)
        assert.are.same({key = "key"}, err.value)
        assert.are.equal(err, scratchpad)
      end)

      it("test_unpickleable_result (_TestPoolWorkerErrors)", function()
        for _ = 1, 5 do
          local scratchpad
          local res = pool:apply_async(function() return coroutine.create(print) end, nil,
                                       {error_callback = function(e) scratchpad = e end})
          local err = raised(res.get, res, 30)
          assert.are.equal("serialize", err.kind)
          assert.are.equal(err, scratchpad)
        end
        assert.are.equal(4, pool:apply(sqr, 2))
      end)
    end)

    it("test_make_pool (_TestPool)", function()
      raised(ctx.Pool, -1)
      raised(ctx.Pool, 0)
      local p = ctx.Pool(3)
      assert.are.equal(3, #p:stats().workers)
      p:close()
      p:join()
    end)

    it("test_terminate (_TestPool)", function()
      local p = ctx.Pool(3)
      local result = p:map_async(lmp.sleep, (function()
        local t = {}
        for i = 1, 1000 do t[i] = 60 end
        return t
      end)(), {chunksize = 1})
      assert.is_true(eventually(function() return p:stats().running > 0 end))
      p:terminate()
      p:join()
      assert.are.equal("cancelled", raised(result.get, result).kind)
    end)

    it("test_empty_iterable (_TestPool)", function()
      local p = ctx.Pool(1)
      assert.are.same({}, p:map(sqr, {}))
      for _ in p:imap(sqr, {}) do error("imap yielded") end
      for _ in p:imap_unordered(sqr, {}) do error("imap_unordered yielded") end
      assert.are.same({}, p:map_async(sqr, {}):get(30))
      p:close()
      p:join()
    end)

    it("test_context (_TestPool)", function()
      local L = range(10)
      local expected = {}
      for i, x in ipairs(L) do expected[i] = sqr(x) end
      local outer
      do
        local p <close> = ctx.Pool(2)
        outer = p
        assert.are.same(expected, p:map_async(sqr, L):get(30))
      end
      outer:join()
      raised(outer.map_async, outer, sqr, L)
    end)

    it("test_map_no_failfast (_TestPool)", function()
      local p = ctx.Pool(2)
      local err = raised(p.map, p, function(x)
        if x == 1 then error(("x"):rep(1024 * 1024)) end
        return x
      end, {0, 1})
      assert.are.equal("task", err.kind)
      assert.are.equal(2, err.index)
      p:close()
      p:join()
    end)

    -- _TestPoolWorkerLifetime ----------------------------------------------

    it("test_pool_worker_lifetime (_TestPoolWorkerLifetime)", function()
      local p = ctx.Pool(3, nil, nil, 10) -- processes, initializer, initargs, maxtasksperchild
      assert.are.equal(3, #p:stats().workers)
      local orig = support.pids(p)
      local results = {}
      for i = 1, 100 do results[i] = p:apply_async(sqr, {i}) end
      for i, res in ipairs(results) do assert.are.equal(sqr(i), res:get(60)) end
      assert.is_true(eventually(function() return #support.pids(p) == 3 end))
      local final = support.pids(p)
      for _, pid in ipairs(final) do assert.is_false(contains(orig, pid)) end
      assert.is_true(p:stats().restarts >= 3)
      p:close()
      p:join()
    end)

    it("test_pool_worker_lifetime_early_close (_TestPoolWorkerLifetime)", function()
      local p = ctx.Pool{processes = 3, maxtasksperchild = 1}
      local results = {}
      for i = 1, 6 do results[i] = p:apply_async(function(x) lmp.sleep(0.05); return x * x end, {i}) end
      p:close()
      p:join()
      for i, res in ipairs(results) do assert.are.equal(sqr(i), res:get(0)) end
    end)

    it("test_pool_maxtasksperchild_invalid (_TestPoolWorkerLifetime)", function()
      -- lmp: a numeric string is its number, as everywhere in Lua's C API
      -- (Python refuses "12").
      for _, value in ipairs({0, -1, 0.5}) do
        raised(ctx.Pool, {processes = 3, maxtasksperchild = value})
      end
    end)

    it("test_pool_initializer (TestInitializers)", function()
      local m <close> = lmp.Manager()
      local ns = m:Namespace()
      ns.test = 0
      raised(ctx.Pool, {initializer = 1})
      local p = ctx.Pool{processes = 1, initializer = function(n) n.test = 1 end, initargs = {ns}}
      p:close()
      p:join()
      assert.are.equal(1, ns.test)
    end)

    -- _TestConnection, _TestPoll -------------------------------------------

    local function echo(conn)
      while true do
        local msg = conn:recv_bytes()
        if msg == nil or msg == "SENTINEL" then break end
        conn:send_bytes(msg)
      end
      conn:close()
    end

    it("test_connection (_TestConnection)", function()
      local conn, child_conn = ctx.Pipe()
      local p = ctx.Process{target = echo, args = {child_conn}, daemon = true}
      p:start()
      local seq3 = {1, 2.25, n = 3} -- Python's [1, 2.25, None]
      assert.are.equal("integer", math.type(conn:fileno()))
      assert.is_true(conn:send(seq3))
      assert.are.same(seq3, conn:recv(30))
      local msg = "hello world"
      conn:send_bytes(msg)
      assert.are.equal(msg, conn:recv_bytes(30))
      assert.is_false(conn:poll())
      -- lmp: a negative timeout is a bad argument (Python treats it as 0).
      raised(conn.poll, conn, -1)
      assert.is_false(conn:poll(0.05))
      conn:send_bytes("x")
      assert.is_true(conn:poll(30))
      assert.are.equal("x", conn:recv_bytes())
      local really_big_msg = ("X"):rep(16 * 1024 * 1024)
      conn:send_bytes(really_big_msg)
      assert.are.equal(really_big_msg, conn:recv_bytes(60))
      conn:send_bytes("SENTINEL")
      child_conn:close()
      assert.is_true(conn.readable)
      assert.is_true(conn.writable)
      -- lmp: the end of the pipe is nil, "closed" (Python raises EOFError).
      assert.are.same({nil, "closed"}, {conn:recv(30)})
      assert.are.same({nil, "closed"}, {conn:recv_bytes(30)})
      joined(p)
    end)

    it("test_duplex_false (_TestConnection)", function()
      local reader, writer = ctx.Pipe(false)
      assert.is_true(writer:send(1))
      assert.are.equal(1, reader:recv())
      assert.is_true(reader.readable)
      assert.is_false(reader.writable)
      assert.is_false(writer.readable)
      assert.is_true(writer.writable)
      raised(reader.send, reader, 2)
      raised(writer.recv, writer)
      raised(writer.poll, writer)
    end)

    it("test_spawn_close (_TestConnection)", function()
      local conn, child_conn = ctx.Pipe()
      local p = ctx.Process{target = echo, args = {child_conn}, daemon = true}
      p:start()
      child_conn:close()
      conn:send_bytes("hello")
      assert.are.equal("hello", conn:recv_bytes(30))
      conn:send_bytes("SENTINEL")
      conn:close()
      joined(p)
    end)

    it("test_sendbytes (_TestConnection)", function()
      -- lmp: offsets are 1-based, as in string.sub (Python's msg[5:] is offset 6).
      local msg = "abcdefghijklmnopqrstuvwxyz"
      local a, b = ctx.Pipe()
      a:send_bytes(msg)
      assert.are.equal(msg, b:recv_bytes())
      a:send_bytes(msg, 6)
      assert.are.equal(msg:sub(6), b:recv_bytes())
      a:send_bytes(msg, 8, 8)
      assert.are.equal(msg:sub(8, 15), b:recv_bytes())
      a:send_bytes(msg, 27)
      assert.are.equal("", b:recv_bytes())
      a:send_bytes(msg, 27, 0)
      assert.are.equal("", b:recv_bytes())
      raised(a.send_bytes, a, msg, 28)
      raised(a.send_bytes, a, msg, 23, 5)
      raised(a.send_bytes, a, msg, 27, 1)
      raised(a.send_bytes, a, msg, 0)
      raised(a.send_bytes, a, msg, 5, -1)
    end)

    it("test_empty_string (_TestPoll)", function()
      local a, b = ctx.Pipe()
      assert.is_false(a:poll())
      b:send_bytes("")
      assert.is_true(a:poll())
      assert.is_true(a:poll())
      assert.are.equal("", a:recv_bytes())
    end)

    it("test_strings (_TestPoll)", function()
      local strings = {"hello", "", "a", "b", "", "bye", "", "lop"}
      local a, b = ctx.Pipe()
      local p = start(function(conn, ss)
        for _, s in ipairs(ss) do
          lmp.sleep(0.01)
          conn:send_bytes(s)
        end
        conn:close()
      end, b, strings)
      for _, s in ipairs(strings) do
        assert.is_true(a:poll(30))
        assert.are.equal(s, a:recv_bytes())
      end
      joined(p)
    end)

    it("test_boundaries (_TestPoll)", function()
      local r, w = ctx.Pipe(false)
      local p = start(function(conn) conn:poll(5) end, r)
      local L = {"first", "second"}
      for _, obj in ipairs(L) do w:send_bytes(obj) end
      w:close()
      joined(p)
      assert.is_true(contains(L, r:recv_bytes()))
    end)

    it("test_dont_merge (_TestPoll)", function()
      local a, b = ctx.Pipe()
      assert.is_false(a:poll(0))
      assert.is_false(a:poll(0.05))
      local p = start(function(conn)
        conn:send_bytes("a")
        conn:send_bytes("b")
        conn:send_bytes("cd")
      end, b)
      assert.are.equal("a", a:recv_bytes(30))
      assert.is_true(a:poll(30))
      assert.is_true(a:poll(30))
      assert.are.equal("b", a:recv_bytes())
      assert.is_true(a:poll(30))
      assert.is_true(a:poll(0))
      assert.are.equal("cd", a:recv_bytes())
      joined(p)
    end)

    -- _TestSharedMemory ----------------------------------------------------

    it("test_shared_memory_basics (_TestSharedMemory)", function()
      local name = "test01_tsmb_" .. method
      local sms = ctx.SharedMemory{size = 512, name = name}
      assert.are.equal(name, sms.name)
      assert.is_true(sms.size >= 512)
      sms:write(1, "\42")
      assert.are.equal("\42", sms:read(1, 1))
      local also = ctx.SharedMemory(name)
      assert.are.equal("\42", also:read(1, 1))
      also:close()
      raised(ctx.SharedMemory, {size = -2})
      -- lmp: an existing name answers nil, "exists" and a missing one nil,
      -- "not found" (Python raises FileExistsError / FileNotFoundError).
      assert.are.same({nil, "exists"}, {ctx.SharedMemory{size = 512, name = name}})
      assert.are.same({nil, "not found"}, {ctx.SharedMemory("test01_notthere")})
      local uno = ctx.SharedMemory{size = 5000, name = "test01_dblunlink"}
      local duo = ctx.SharedMemory("test01_dblunlink")
      assert.is_true(duo:unlink())
      duo:close()
      assert.are.same({nil, "not found"}, {uno:unlink()}) -- the second unlink
      uno:close()
      assert.is_true(sms:unlink())
      sms:close()
    end)

    it("test_shared_memory_recreate (_TestSharedMemory)", function()
      local shm1 = ctx.SharedMemory{size = 1, name = "test03_fn"}
      assert.is_true(shm1:unlink())
      local shm2 = ctx.SharedMemory{size = 1, name = "test03_fn"}
      assert.are.equal("test03_fn", shm2.name)
      shm2:unlink()
      shm1:close()
      shm2:close()
    end)

    it("test_invalid_shared_memory_creation (_TestSharedMemory)", function()
      raised(ctx.SharedMemory, {size = -1})
      raised(ctx.SharedMemory, {size = 0})
      raised(ctx.SharedMemory, {})
    end)

    it("test_shared_memory_name_with_embedded_null (_TestSharedMemory)", function()
      local block <close> = ctx.SharedMemory{size = 16}
      -- Python raises ValueError; lmp: a bad argument, never another block.
      assert.matches("NUL", raised(ctx.SharedMemory, block.name .. "\0x"))
    end)

    it("test_shared_memory_pickle_unpickle (_TestSharedMemory)", function()
      local sms = ctx.SharedMemory{size = 512}
      sms:write(1, "pickle")
      local sms2 = lmp.deserialize(lmp.serialize(sms))
      assert.are.equal(sms.name, sms2.name)
      assert.are.equal("pickle", sms2:read(1, 6))
      sms:write(1, "newval")
      assert.are.equal("newval", sms2:read(1, 6))
      sms2:write(1, "oldval")
      assert.are.equal("oldval", sms:read(1, 6))
      sms2:close()
      sms:close()
    end)

    it("test_shared_memory_across_processes (_TestSharedMemory)", function()
      local sms = ctx.SharedMemory{size = 512, name = "test_across_" .. method}
      local function write(block, data)
        local m = type(block) == "string" and lmp.SharedMemory(block) or block
        m:write(1, data)
      end
      joined(start(write, sms.name, "howdy"))
      assert.are.equal("howdy", sms:read(1, 5))
      joined(start(write, sms, "HELLO"))
      assert.are.equal("HELLO", sms:read(1, 5))
      sms:unlink()
      sms:close()
    end)

    -- TestSimpleQueue ------------------------------------------------------

    it("test_empty (TestSimpleQueue)", function()
      local q = ctx.SimpleQueue()
      local child_can_start, parent_can_continue = ctx.Event(), ctx.Event()
      local p = start(function(queue, go, done)
        go:wait()
        queue:put(queue:empty())
        queue:put(queue:empty())
        done:set()
      end, q, child_can_start, parent_can_continue)
      assert.is_true(q:empty())
      child_can_start:set()
      assert.is_true(parent_can_continue:wait(30))
      assert.is_false(q:empty())
      assert.is_true(q:get())
      assert.is_false(q:get())
      assert.is_true(q:empty())
      joined(p)
    end)

    it("test_close (TestSimpleQueue)", function()
      local q = ctx.SimpleQueue()
      q:close()
      q:close() -- closing twice does not fail
    end)

    -- TestSyncManagerTypes: each object a Manager makes, used by a child ----

    describe("TestSyncManagerTypes", function()
      local m
      before_each(function() m = lmp.Manager() end)
      after_each(function() m:shutdown() end)

      -- CPython's run_worker: fn(obj) in a child, which must exit 0.
      local function run_worker(fn, ...) joined(start(fn, ...)) end

      it("test_event (TestSyncManagerTypes)", function()
        local o = m:Event()
        o:set()
        run_worker(function(e) assert(e:is_set()); e:wait(); assert(e:wait(0.001)) end, o)
      end)

      it("test_lock (TestSyncManagerTypes)", function()
        local o = m:Lock()
        run_worker(function(l) assert(l:acquire(0)); assert(not l:acquire(0)); l:release() end, o)
        assert.is_false(o:locked())
      end)

      it("test_rlock (TestSyncManagerTypes)", function()
        run_worker(function(l) l:acquire(); l:acquire(); l:release(); l:release() end, m:RLock())
      end)

      it("test_semaphore (TestSyncManagerTypes)", function()
        local o = m:Semaphore()
        run_worker(function(s) s:acquire(); s:release() end, o)
        assert.are.equal(1, o:get_value())
      end)

      it("test_bounded_semaphore (TestSyncManagerTypes)", function()
        run_worker(function(s)
          s:acquire()
          s:release()
          assert(not pcall(s.release, s))
        end, m:BoundedSemaphore())
      end)

      it("test_condition (TestSyncManagerTypes)", function()
        run_worker(function(c) c:acquire(); c:notify(); c:release() end, m:Condition())
      end)

      it("test_barrier (TestSyncManagerTypes)", function()
        local o = m:Barrier(5)
        run_worker(function(b) assert(b.parties == 5); b:reset() end, o)
      end)

      it("test_queue (TestSyncManagerTypes)", function()
        local o = m:Queue()
        o:put(5)
        o:put(6)
        run_worker(function(q)
          assert(q:qsize() == 2 and not q:full())
          assert(q:get() == 5 and q:get() == 6 and q:empty())
        end, o)
        assert.is_true(o:empty())
      end)

      it("test_joinable_queue (TestSyncManagerTypes)", function()
        local o = m:JoinableQueue()
        o:put(5)
        o:put(6)
        run_worker(function(q)
          assert(q:get() == 5); q:task_done()
          assert(q:get() == 6); q:task_done()
          assert(q:empty())
        end, o)
        assert.is_true(o:join(10))
      end)

      it("test_list (TestSyncManagerTypes)", function()
        local o = m:list()
        o:append(5)
        run_worker(function(l)
          assert(l[1] == 5 and #l == 1)
          l:append(6); l:insert(1, 4)
          assert(l:pop(1) == 4)
          l:clear(); l:append(7)
        end, o)
        assert.are.same({7}, o:totable())
      end)

      it("test_dict (TestSyncManagerTypes)", function()
        local o = m:dict()
        o.foo = 5
        o.bar = 6
        run_worker(function(d)
          assert(d:len() == 2 and d:get("foo") == 5 and d:get("bar") == 6)
          assert(d:pop("foo") == 5 and d:len() == 1)
          d:clear()
        end, o)
        assert.are.equal(0, o:len())
      end)

      it("test_value (TestSyncManagerTypes)", function()
        local o = m:Value("i", 1)
        run_worker(function(v) assert(v.value == 1); v.value = 2 end, o)
        assert.are.equal(2, o.value)
      end)

      it("test_array (TestSyncManagerTypes)", function()
        local o = m:Array("i", {0, 1})
        run_worker(function(a) assert(#a == 2 and a[1] == 0 and a[2] == 1) end, o)
      end)

      it("test_namespace (TestSyncManagerTypes)", function()
        local o = m:Namespace()
        o.x = 0
        o.y = 1
        run_worker(function(ns) assert(ns.x == 0 and ns.y == 1); ns.x = 2 end, o)
        assert.are.equal(2, o.x)
      end)
    end)
  end)
end

-- TestStartMethod ----------------------------------------------------------

describe("TestStartMethod", function()
  it("test_context (TestStartMethod)", function()
    for _, method in ipairs({"fork", "spawn", "forkserver"}) do
      local ctx = lmp.get_context(method)
      assert.are.equal(method, ctx.get_start_method())
      assert.are.equal(ctx, lmp.get_context(method))
    end
    raised(lmp.get_context, "xyz")
  end)

  it("test_set_get (TestStartMethod)", function()
    local out, code = support.run([[
      local old = lmp.get_start_method()
      for _, method in ipairs(lmp.get_all_start_methods()) do
        lmp.set_start_method(method, true)
        assert(lmp.get_start_method() == method)
        assert(lmp.get_context().get_start_method() == method)
        local p = lmp.Process(function() end)
        p:start(); p:join()
        assert(p.exitcode == 0, method)
      end
      assert(not pcall(lmp.set_start_method, "spawn"))
      lmp.set_start_method(nil, true)
      assert(lmp.get_start_method() == old)
      print("ok")
    ]])
    assert.are.equal(0, code, out)
    assert.matches("ok", out)
  end)

  it("test_get_all_start_methods (TestStartMethod)", function()
    local methods = lmp.get_all_start_methods()
    assert.are.same({"fork", "spawn", "forkserver"}, methods)
    assert.are.equal("fork", lmp.get_start_method())
  end)
end)

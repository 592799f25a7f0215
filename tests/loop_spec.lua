-- Pools and executors in event loops: the descriptor protocol (fileno /
-- poll), lmp.await in plain coroutines, lmp.luv on a real libuv loop and
-- lmp.cqueues in a real cqueues controller.  The loops must stay
-- responsive while processes do the CPU work, results and errors must come
-- through await, the loops must end once the pools are closed, and the
-- parent must sleep while it waits: its CPU time (os.clock) stays far below
-- what a loop spinning on the descriptor would burn over the same second.
local lmp = require "lmp"
local uv = require "luv"
local cqueues = require "cqueues"
local socket = require "cqueues.socket"
local lu = require "lmp.luv"
local lc = require "lmp.cqueues"
local support = dofile("tests/support.lua")

-- About half a second of CPU in a worker.
local function cpu_bound(n)
  local t = os.clock()
  local x = 0
  while os.clock() - t < 0.5 do x = x + 1 end
  return n * n
end

-- A spinning parent would use about the wall time of the tasks (over a
-- second here); a sleeping one a few milliseconds.
local CPU_BOUND = 0.3

local function readable(fd)
  return lmp._poll_fds({fd}, 0) > 0
end

describe("pool:fileno() and pool:poll()", function()
  it("the descriptor is readable while results wait, and not once poll() delivered them", function()
    local pool = lmp.Pool(2)
    local fd = pool:fileno()
    local rs = {}
    for i = 1, 4 do rs[i] = pool:apply_async(function(x) lmp.sleep(0.05) return x end, {i}) end
    -- A result may land between poll() and the next look, and a wake may
    -- find its result already taken by the poll before it; what must hold is
    -- that every wake is earned (no spinning) and that the descriptor is
    -- quiet once everything is delivered.
    local wakes, all = 0, false
    repeat
      assert.is_true(lmp._poll_fds({fd}, 5) > 0)
      wakes = wakes + 1
      pool:poll()
      all = true
      for i = 1, 4 do all = all and rs[i]:ready() end
    until all or wakes > 100
    assert.is_false(readable(fd))
    assert.is_true(wakes <= 8, wakes .. " wakes for 4 results")
    pool:close()
    pool:join()
  end)

  it("goes quiet after terminate(), with replies not yet delivered", function()
    local pool = lmp.Pool(2)
    for i = 1, 6 do pool:apply_async(function(x) return x end, {i}) end
    lmp.sleep(0.2)
    pool:terminate()
    pool:poll()
    assert.is_false(readable(pool:fileno()))
  end)

  it("goes quiet after close() once the workers are gone", function()
    local pool = lmp.Pool(2)
    for i = 1, 4 do pool:apply_async(function(x) lmp.sleep(0.02) return x end, {i}) end
    pool:close()
    local wakes = 0
    while lmp._poll_fds({pool:fileno()}, 0.5) > 0 and wakes < 100 do
      wakes = wakes + 1
      pool:poll()
    end
    assert.is_true(wakes < 100)
    pool:join()
  end)

  it("a lost worker and a task timeout wake the descriptor once each", function()
    local pool = lmp.Pool{processes = 1, task_timeout = 0.2}
    local lost = pool:apply_async(function() os.exit(3) end)
    local late = pool:apply_async(function() lmp.sleep(5) end)
    local wakes = 0
    while not (lost:ready() and late:ready()) and wakes < 100 do
      lmp._poll_fds({pool:fileno()}, 5)
      wakes = wakes + 1
      pool:poll()
    end
    assert.is_true(wakes < 100)
    assert.are.equal("worker_lost", select(2, pcall(lost.get, lost)).kind)
    assert.are.equal("timeout", select(2, pcall(late.get, late)).kind)
    assert.is_false(readable(pool:fileno()))
    pool:terminate()
  end)
end)

describe("lmp.await", function()
  it("blocks in the main coroutine", function()
    local pool = lmp.Pool(1)
    assert.are.equal(42, lmp.await(pool:apply_async(function() lmp.sleep(0.05) return 42 end)))
    local ex = lmp.Executor(1)
    assert.are.equal(7, lmp.await(ex:submit(function() return 7 end)))
    ex:shutdown()
    pool:close()
    pool:join()
  end)

  it("yields the result itself from another coroutine, until it is done", function()
    local pool = lmp.Pool(2)
    local ex = lmp.Executor(1)
    local r = pool:apply_async(function() lmp.sleep(0.1) return 20 end)
    local f = ex:submit(function() lmp.sleep(0.1) return 22 end)
    local co = coroutine.create(function() return lmp.await(r) + lmp.await(f) end)
    local ok, y = coroutine.resume(co)
    assert.is_true(ok)
    assert.are.equal(r, y)
    local yielded = {r = 0, f = 0}
    while coroutine.status(co) == "suspended" do
      assert.is_true(y == r or y == f)
      yielded[y == r and "r" or "f"] = yielded[y == r and "r" or "f"] + 1
      lmp._poll_fds({y:pollfd()}, 5)
      ok, y = coroutine.resume(co)
      assert.is_true(ok, tostring(y))
    end
    assert.are.equal(42, y)
    assert.is_true(yielded.r >= 1)
    ex:shutdown()
    pool:close()
    pool:join()
  end)

  it("raises the task's lmp.Error", function()
    local pool = lmp.Pool(1)
    local r = pool:apply_async(function() error("boom") end)
    local co = coroutine.wrap(function() return pcall(lmp.await, r) end)
    local ok, err = co()
    while ok == r do
      lmp._poll_fds({r:pollfd()}, 5)
      ok, err = co()
    end
    assert.is_false(ok)
    assert.is_true(lmp.is_error(err))
    assert.are.equal("task", err.kind)
    pool:close()
    pool:join()
  end)

  it("rejects what is not a result", function()
    assert.has_error(function() lmp.await(3) end,
                     "bad argument #1 to 'await' (lmp.AsyncResult or lmp.Future expected, got number)")
    local pool = lmp.Pool(1)
    assert.has_error(function() lmp.await(pool) end,
                     "bad argument #1 to 'await' (lmp.AsyncResult or lmp.Future expected, got lmp.Pool)")
    pool:terminate()
  end)
end)

describe("lmp.luv", function()
  after_each(function()
    -- nothing of a test may keep the loop alive
    assert.is_false(uv.loop_alive())
  end)

  it("a 10 ms timer keeps firing while coroutines await 4 CPU-bound tasks; the loop ends with the pool", function()
    local pool = lmp.Pool(2)
    lu.attach(pool)
    local ticks, ticks_at_first = 0, nil
    local timer = uv.new_timer()
    timer:start(10, 10, function() ticks = ticks + 1 end)
    local results, done = {}, 0
    local c0, t0 = os.clock(), lmp.time()
    for i = 1, 4 do
      coroutine.wrap(function()
        results[i] = lu.await(pool:apply_async(cpu_bound, {i}))
        ticks_at_first = ticks_at_first or ticks
        done = done + 1
        if done == 4 then
          timer:close()
          pool:close()
        end
      end)()
    end
    uv.run()
    local cpu, wall = os.clock() - c0, lmp.time() - t0
    assert.are.same({1, 4, 9, 16}, results)
    assert.is_true(wall >= 0.9, "the tasks took " .. wall .. " s")
    assert.is_true(ticks_at_first >= 10, "only " .. ticks_at_first .. " ticks before the first result")
    assert.is_true(ticks >= 20, "only " .. ticks .. " ticks in " .. wall .. " s")
    assert.is_true(cpu < CPU_BOUND, "the parent used " .. cpu .. " s of CPU in " .. wall .. " s")
    pool:join()
  end)

  it("the same with an Executor and gather", function()
    local ex = lmp.Executor(2)
    lu.attach(ex)
    local ticks = 0
    local timer = uv.new_timer()
    timer:start(10, 10, function() ticks = ticks + 1 end)
    local values
    local c0, t0 = os.clock(), lmp.time()
    coroutine.wrap(function()
      local fs = {}
      for i = 1, 4 do fs[i] = ex:submit(cpu_bound, i) end
      values = lu.gather(fs)
      timer:close()
      ex:shutdown(false)
    end)()
    uv.run()
    local cpu, wall = os.clock() - c0, lmp.time() - t0
    assert.are.same({n = 4, 1, 4, 9, 16}, values)
    assert.is_true(ticks >= 20, "only " .. ticks .. " ticks in " .. wall .. " s")
    assert.is_true(cpu < CPU_BOUND, "the parent used " .. cpu .. " s of CPU in " .. wall .. " s")
    ex:shutdown()
  end)

  it("callbacks of apply_async run on the loop", function()
    local pool = lmp.Pool(2)
    lu.attach(pool)
    local got = {}
    for i = 1, 3 do
      pool:apply_async(function(x) return x * 10 end, {i}, {callback = function(v)
        got[#got + 1] = v
        if #got == 3 then pool:close() end
      end})
    end
    uv.run()
    table.sort(got)
    assert.are.same({10, 20, 30}, got)
    pool:join()
  end)

  it("task errors and lost workers come through await and gather", function()
    local ex = lmp.Executor(2)
    local pool = lmp.Pool(1)
    local errs = {}
    coroutine.wrap(function()
      local ok, e = pcall(lu.await, ex:submit(function() error("unlucky") end))
      errs.task = not ok and e
      ok, e = pcall(lu.await, pool:apply_async(function() os.exit(3) end))
      errs.lost = not ok and e
      ok, e = pcall(lu.gather, {ex:submit(function() lmp.sleep(5) end), ex:submit(function() error("x") end)})
      errs.gather = not ok and e
      ex:shutdown{wait = false, cancel_futures = true}
      pool:terminate()
    end)()
    uv.run()
    assert.are.equal("task", errs.task.kind)
    assert.matches("unlucky", errs.task.message)
    assert.are.equal("worker_lost", errs.lost.kind)
    assert.are.equal("task", errs.gather.kind)
    ex:shutdown()
  end)

  it("await attaches the pool itself; detach lets the loop end with the pool running", function()
    local pool = lmp.Pool(1)
    local v
    coroutine.wrap(function()
      v = lu.await(pool:apply_async(function() return "ok" end))
      lu.detach(pool)
    end)()
    uv.run()
    assert.are.equal("ok", v)
    lu.attach(pool)
    lu.attach(pool) -- again: a no-op
    lu.detach(pool)
    lu.detach(pool)
    uv.run() -- returns at once: nothing is watched
    assert.is_true(pool:apply_async(function() return 1 end):get() == 1)
    pool:close()
    pool:join()
  end)

  it("terminate() from the loop ends it, and failed awaits see kind cancelled", function()
    local pool = lmp.Pool(1)
    lu.attach(pool)
    local err
    coroutine.wrap(function()
      local ok, e = pcall(lu.await, pool:apply_async(function() lmp.sleep(10) end))
      err = not ok and e
    end)()
    local t = uv.new_timer()
    t:start(50, 0, function()
      t:close()
      pool:terminate()
    end)
    uv.run()
    assert.are.equal("cancelled", err.kind)
  end)

  it("await and gather block in the main coroutine", function()
    local pool = lmp.Pool(1)
    assert.are.equal(3, lu.await(pool:apply_async(function() return 3 end)))
    assert.are.same({n = 2, 1, 2}, lu.gather{pool:apply_async(function() return 1 end),
                                            pool:apply_async(function() return 2 end)})
    pool:close()
    pool:join()
  end)

  it("rejects bad arguments", function()
    assert.has_error(function() lu.attach(3) end,
                     "bad argument #1 to 'attach' (lmp.Pool or lmp.Executor expected, got number)")
    assert.has_error(function() lu.detach({}) end,
                     "bad argument #1 to 'detach' (lmp.Pool or lmp.Executor expected, got table)")
    local pool = lmp.Pool(1)
    assert.has_error(function() lu.attach(pool, 5) end,
                     "bad argument #2 to 'attach' (luv module expected, got number)")
    assert.has_error(function() lu.await(pool) end,
                     "bad argument #1 to 'await' (lmp.AsyncResult or lmp.Future expected, got lmp.Pool)")
    assert.has_error(function() lu.gather(nil) end, "bad argument #1 to 'gather' (table expected, got nil)")
    assert.has_error(function() lu.gather({pool:apply_async(function() end), "x"}) end,
                     "bad argument #1 to 'gather' (lmp.AsyncResult or lmp.Future expected at index 2, got string)")
    pool:terminate()
  end)
end)

describe("lmp.cqueues", function()
  it("results, futures and pools are cqueues pollables", function()
    local pool = lmp.Pool(1)
    local ex = lmp.Executor(1)
    local r = pool:apply_async(function() lmp.sleep(0.05) return 1 end)
    local f = ex:submit(function() lmp.sleep(0.05) return 2 end)
    for _, x in ipairs({pool, ex, r, f}) do
      assert.are.equal("number", type(x:pollfd()))
      assert.are.equal("r", x:events())
    end
    assert.is_nil(r:timeout())
    local cq = cqueues.new()
    local seen
    cq:wrap(function()
      while not f:done() do assert.are.equal(f, cqueues.poll(f)) end
      while not r:ready() do
        assert.are.equal(pool, cqueues.poll(pool))
        pool:poll()
      end
      seen = {r:get(), f:result()}
    end)
    assert(cq:loop())
    assert.are.same({1, 2}, seen)
    assert.are.equal(0, r:timeout())
    assert.are.equal(0, f:timeout())
    ex:shutdown()
    pool:close()
    pool:join()
  end)

  it("a TCP echo on loopback stays responsive while futures are awaited", function()
    local ex = lmp.Executor(2)
    local cq = cqueues.new()
    local srv = socket.listen("127.0.0.1", 0)
    local _, host, port = srv:localname()
    local trips, trips_at_first, finished = 0, nil, false
    cq:wrap(function()
      local con = srv:accept()
      for line in con:lines("*l") do con:write(line, "\n") end
      con:close()
    end)
    cq:wrap(function()
      local c = socket.connect(host, port)
      while not finished do
        c:write("ping ", trips, "\n")
        assert.are.equal("ping " .. trips, c:read("*l"))
        trips = trips + 1
        cqueues.sleep(0.01)
      end
      c:close()
    end)
    local values, gathered
    local c0, t0 = os.clock(), lmp.time()
    cq:wrap(function()
      local fs = {}
      for i = 1, 4 do fs[i] = ex:submit(cpu_bound, i) end
      values = {}
      for i = 1, 4 do
        values[i] = lc.await(fs[i])
        trips_at_first = trips_at_first or trips
      end
      gathered = lc.gather{ex:submit(function() return "a" end), ex:submit(function() return "b" end)}
      finished = true
    end)
    assert(cq:loop())
    local cpu, wall = os.clock() - c0, lmp.time() - t0
    srv:close()
    assert.are.same({1, 4, 9, 16}, values)
    assert.are.same({n = 2, "a", "b"}, gathered)
    assert.is_true(trips_at_first >= 10, "only " .. trips_at_first .. " round trips before the first result")
    assert.is_true(trips >= 20, "only " .. trips .. " round trips in " .. wall .. " s")
    assert.is_true(cpu < CPU_BOUND, "the parent used " .. cpu .. " s of CPU in " .. wall .. " s")
    ex:shutdown()
  end)

  it("a result delivered by another coroutine still wakes its awaiter", function()
    local pool = lmp.Pool(2)
    local cq = cqueues.new()
    local slow = pool:apply_async(function() lmp.sleep(0.2) return "slow" end)
    local got
    cq:wrap(function() got = lc.await(slow) end)
    cq:wrap(function()
      cqueues.sleep(0.05)
      -- blocks the controller and delivers `slow` behind the awaiter's back
      assert.are.equal("slow", slow:get())
    end)
    assert(cq:loop(5))
    assert.are.equal("slow", got)
    pool:close()
    pool:join()
  end)

  it("task errors and lost workers come through await", function()
    local pool = lmp.Pool(1)
    local ex = lmp.Executor(1)
    local cq = cqueues.new()
    local e1, e2
    cq:wrap(function()
      e1 = select(2, pcall(lc.await, ex:submit(function() error("unlucky") end)))
      e2 = select(2, pcall(lc.await, pool:apply_async(function() os.exit(3) end)))
    end)
    assert(cq:loop())
    assert.are.equal("task", e1.kind)
    assert.are.equal("worker_lost", e2.kind)
    ex:shutdown()
    pool:close()
    pool:join()
  end)

  it("blocks outside a controller, and rejects bad arguments", function()
    local pool = lmp.Pool(1)
    assert.are.equal(5, lc.await(pool:apply_async(function() return 5 end)))
    assert.has_error(function() lc.await(nil) end,
                     "bad argument #1 to 'await' (lmp.AsyncResult or lmp.Future expected, got nil)")
    assert.has_error(function() lc.gather({1}) end,
                     "bad argument #1 to 'gather' (lmp.AsyncResult or lmp.Future expected at index 1, got number)")
    pool:close()
    pool:join()
  end)
end)

describe("event loop modules", function()
  it("leak no globals", function()
    assert.are.same({}, support.new_globals())
  end)
end)

local support = dofile("tests/support.lua")
local lmp = require "lmp"

local pids, eventually, all_dead = support.pids, support.eventually, support.all_dead
local raised, range = support.raised, support.range

-- A task that reports its pid on `q`, waits for `e`, and returns `v`.
local function held(e, q, v)
  local l = require "lmp"
  if q then q:put(l.current_process().pid) end
  e:wait(30)
  return v
end

local function square(x) return x * x end

describe("lmp.Executor", function()
  local ex
  before_each(function() ex = lmp.Executor(2) end)
  after_each(function() ex:shutdown{wait = false, cancel_futures = true} end)

  it("is in the module with as_completed, wait and the return_when constants", function()
    assert.is_function(lmp.Executor)
    assert.is_function(lmp.as_completed)
    assert.is_function(lmp.wait)
    assert.are.equal("FIRST_COMPLETED", lmp.FIRST_COMPLETED)
    assert.are.equal("FIRST_EXCEPTION", lmp.FIRST_EXCEPTION)
    assert.are.equal("ALL_COMPLETED", lmp.ALL_COMPLETED)
    local m = require "lmp.executor"
    assert.are.equal(lmp.FIRST_COMPLETED, m.FIRST_COMPLETED)
    assert.is_function(m.Executor)
  end)

  it("submit runs fn(...) in a worker; result returns its first value", function()
    local f = ex:submit(function(a, b) return a + b, "second" end, 2, 3)
    assert.are.equal("lmp.Future", getmetatable(f).__name)
    assert.are.equal(5, f:result())
    assert.are.equal(5, f:result()) -- again: the same value
    local n = ex:submit(function(...) return select("#", ...) .. tostring((select(2, ...))) end, 1, nil, 3, nil)
    assert.are.equal("4nil", n:result())
    assert.is_nil(ex:submit(function() end):result())
    local me = lmp.current_process().pid
    local pid = ex:submit(function() return require("lmp").current_process().pid end):result()
    assert.are_not.equal(me, pid)
    local base = 100
    assert.are.same({101, {k = 2}}, ex:submit(function(x) return {base + x, {k = 2 * x}} end, 1):result())
  end)

  it("takes max_workers positionally or in a table, and defaults to the cpu count", function()
    assert.are.equal(2, #ex:stats().workers)
    local d <close> = lmp.Executor()
    assert.are.equal(lmp.cpu_count(), #d:stats().workers)
    local t <close> = lmp.Executor{max_workers = 1, initializer = function() end, initargs = {},
                                   max_tasks_per_child = 5, task_timeout = 10, start_method = "fork"}
    assert.are.equal(1, #t:stats().workers)
    assert.are.equal(36, t:submit(square, 6):result())
    local ctx = lmp.get_context("fork")
    local c <close> = ctx.Executor(1)
    assert.are.equal(3, c:submit(function() return 3 end):result())
  end)

  it("rejects bad constructor arguments", function()
    assert.matches("bad argument #1 to 'Executor' %(unknown option 'max_worker'%)",
                   raised(lmp.Executor, {max_worker = 2}))
    assert.matches("bad argument #1 to 'Executor' %(max_workers must be a positive integer%)",
                   raised(lmp.Executor, 0))
    assert.matches("bad argument #1 to 'Executor' %(number or table expected, got string%)",
                   raised(lmp.Executor, "2"))
    assert.matches("bad argument #1 to 'Executor' %(field 'max_workers' must be a positive integer%)",
                   raised(lmp.Executor, {max_workers = 1.5}))
    assert.matches("field 'initializer' must be callable", raised(lmp.Executor, {initializer = 1}))
    assert.matches("field 'initargs' must be a table", raised(lmp.Executor, {initargs = 1}))
    assert.matches("field 'max_tasks_per_child' must be a positive integer",
                   raised(lmp.Executor, {max_tasks_per_child = 0}))
    assert.matches("field 'task_timeout' must be a positive number", raised(lmp.Executor, {task_timeout = -1}))
    assert.matches("bad argument #1 to 'Executor' %(unknown start method 'nope'%)",
                   raised(lmp.Executor, {start_method = "nope"}))
    assert.matches("bad argument #2 to 'Executor'", raised(lmp.Executor, 2, 3))
    assert.matches("bad argument #2 to 'Executor'", raised(lmp.Executor, {}, 3))
  end)

  it("rejects bad method arguments, counted from the first after self", function()
    assert.matches("bad argument #1 to 'submit' %(function expected, got nil%)", raised(ex.submit, ex))
    assert.matches("calling 'submit' on bad self", raised(ex.submit, {}, print))
    local f = ex:submit(square, 2)
    assert.matches("bad argument #1 to 'result' %(timeout must be a non%-negative number%)",
                   raised(f.result, f, -1))
    assert.matches("bad argument #1 to 'result' %(number expected, got string%)", raised(f.result, f, "1"))
    assert.matches("bad argument #1 to 'exception' %(number expected, got table%)",
                   raised(f.exception, f, {}))
    assert.matches("calling 'result' on bad self %(lmp.Future expected, got nil%)", raised(f.result))
    assert.matches("calling 'done' on bad self", raised(f.done, ex))
    assert.matches("bad argument #1 to 'add_done_callback' %(function expected, got number%)",
                   raised(f.add_done_callback, f, 1))
    assert.matches("bad argument #1 to 'map' %(function expected, got nil%)", raised(ex.map, ex, nil, {}))
    assert.matches("bad argument #2 to 'map' %(table or function expected, got number%)",
                   raised(ex.map, ex, square, 5))
    assert.matches("bad argument #3 to 'map' %(table expected, got number%)", raised(ex.map, ex, square, {}, 5))
    assert.matches("bad argument #3 to 'map' %(unknown option 'chunk'%)",
                   raised(ex.map, ex, square, {}, {chunk = 1}))
    assert.matches("bad argument #3 to 'map' %(option 'chunksize' must be a positive integer%)",
                   raised(ex.map, ex, square, {}, {chunksize = 0}))
    assert.matches("bad argument #3 to 'map' %(option 'timeout' must be a non%-negative number%)",
                   raised(ex.map, ex, square, {}, {timeout = -1}))
    assert.matches("bad argument #1 to 'shutdown' %(unknown option 'cancel'%)",
                   raised(ex.shutdown, ex, {cancel = true}))
    assert.matches("bad argument #1 to 'shutdown' %(option 'wait' must be a boolean%)",
                   raised(ex.shutdown, ex, {wait = 1}))
    assert.matches("bad argument #1 to 'shutdown' %(table expected, got string%)", raised(ex.shutdown, ex, "x"))
    assert.are.equal(4, f:result()) -- none of this shut it down
  end)

  it("an argument that cannot be sent raises at the call; the executor goes on", function()
    local err = raised(ex.submit, ex, print, 1, io.stdout)
    assert.is_true(lmp.is_error(err))
    assert.are.equal("serialize", err.kind)
    assert.matches("cannot send args%[2%]: userdata", err.message)
    err = raised(ex.map, ex, square, {1, 2, 3, io.stdout, 5}, {chunksize = 2})
    assert.are.equal("serialize", err.kind)
    assert.matches("cannot send list%[4%]", err.message)
    assert.are.equal(9, ex:submit(square, 3):result())
  end)

  it("a number raised by a task arrives as that number", function()
    for _, v in ipairs{123, 2.5, math.mininteger} do
      local err = raised(function() return ex:submit(function() error(v) end):result() end)
      assert.are.equal("task", err.kind)
      assert.are.equal(math.type(v), math.type(err.value))
      assert.are.equal(v, err.value)
      assert.are.equal(tostring(v), err.message)
    end
  end)

  it("a task error is raised by result and returned by exception", function()
    local f = ex:submit(function(x) error({code = x}) end, 7)
    local err = raised(f.result, f)
    assert.is_true(lmp.is_error(err))
    assert.are.equal("task", err.kind)
    assert.are.same({code = 7}, err.value)
    assert.is_number(err.pid)
    assert.matches("traceback", err.traceback)
    assert.are.equal(err, f:exception())
    assert.is_true(f:done())
    assert.is_false(f:cancelled())
    assert.is_false(f:running())
    assert.are.equal("lmp.Future(failed)", tostring(f))
    local g = ex:submit(square, 5)
    assert.is_nil(g:exception())
    assert.are.equal("lmp.Future(finished)", tostring(g))
    local s = ex:submit(function(x) error("plain " .. x, 0) end, "text")
    assert.are.equal("plain text", raised(s.result, s).message)
  end)

  it("result and exception raise kind timeout when the timeout passes first", function()
    local e = lmp.Event()
    local f = ex:submit(held, e, nil, "late")
    local err = raised(f.result, f, 0.05)
    assert.is_true(lmp.is_error(err))
    assert.are.equal("timeout", err.kind)
    assert.is_nil(err.pid)
    assert.are.equal("timeout", raised(f.exception, f, 0).kind)
    assert.is_false(f:done())
    e:set()
    assert.are.equal("late", f:result(30))
    assert.is_nil(f:exception(0))
  end)

  it("done and running follow the task without blocking", function()
    local e, q = lmp.Event(), lmp.Queue()
    local f = ex:submit(held, e, q, 1)
    assert.is_number(q:get(10))
    assert.is_true(eventually(function() return f:running() end))
    assert.is_false(f:done())
    assert.are.equal("lmp.Future(running)", tostring(f))
    assert.is_false(f:cancel()) -- running: too late
    e:set()
    assert.is_true(eventually(function() return f:done() end))
    assert.is_false(f:running())
    assert.is_false(f:cancel()) -- finished: too late too
    assert.is_false(f:cancelled())
    assert.are.equal(1, f:result())
  end)

  it("cancel succeeds only while no worker has the task", function()
    local one <close> = lmp.Executor(1)
    local e, q = lmp.Event(), lmp.Queue()
    local ran = lmp.Queue()
    local first = one:submit(held, e, q, "first")
    assert.is_number(q:get(10))
    local rest = {}
    for i = 1, 8 do rest[i] = one:submit(function(x, r) r:put(x) return x end, i, ran) end
    local last = rest[8]
    local called = {}
    last:add_done_callback(function(f) called[#called + 1] = f end)
    assert.is_false(last:running())
    assert.is_true(last:cancel())
    assert.is_true(last:cancel()) -- still cancelled
    assert.is_true(last:cancelled())
    assert.is_true(last:done())
    assert.are.same({last}, called) -- callbacks run on cancel
    assert.are.equal("lmp.Future(cancelled)", tostring(last))
    assert.are.equal("cancelled", raised(last.result, last).kind)
    assert.are.equal("cancelled", raised(last.exception, last).kind)
    assert.is_false(first:cancel())
    e:set()
    assert.are.equal("first", first:result(30))
    for i = 1, 7 do assert.are.equal(i, rest[i]:result(30)) end
    one:shutdown()
    local seen = support.drained(ran, 0)
    table.sort(seen)
    assert.are.same(range(7), seen) -- the cancelled task never ran
  end)

  it("add_done_callback: in order, with the future, inside lmp calls; at once when done", function()
    local order = {}
    local f = ex:submit(square, 3)
    f:add_done_callback(function(fut) order[#order + 1] = {"a", fut} end)
    f:add_done_callback(function(fut) order[#order + 1] = {"b", fut:result()} end)
    assert.are.same({}, order) -- nothing runs behind the program's back
    assert.are.equal(9, f:result())
    assert.are.same({{"a", f}, {"b", 9}}, order)
    f:add_done_callback(function(fut) order[#order + 1] = {"c", fut} end)
    assert.are.same({"c", f}, order[3]) -- already done: at once
    assert.are.equal(3, #order)
    -- a failed future calls back too
    local g = ex:submit(error, "bad")
    local got
    g:add_done_callback(function(fut) got = fut:exception() end)
    assert.are.equal("task", raised(g.result, g).kind)
    assert.are.equal("task", got.kind)
    -- as_completed and wait deliver callbacks too
    local h = ex:submit(square, 4)
    local hit = false
    h:add_done_callback(function() hit = true end)
    lmp.wait({h})
    assert.is_true(hit)
  end)

  it("a callback that raises is logged and ignored; the others still run", function()
    local log = lmp.get_logger("lmp.executor")
    local recs = {}
    local hd = log:add_handler(function(rec) recs[#recs + 1] = rec end)
    local ran = {}
    local f = ex:submit(square, 2)
    f:add_done_callback(function() error("callback bug") end)
    f:add_done_callback(function() ran[#ran + 1] = "second" end)
    assert.are.equal(4, f:result())
    f:add_done_callback(function() error({}) end) -- done: at once, and still no error here
    log:remove_handler(hd)
    assert.are.same({"second"}, ran)
    assert.are.equal(2, #recs)
    assert.are.equal("ERROR", recs[1].levelname)
    assert.matches("exception calling callback for lmp.Future%(finished%)", recs[1].message)
    assert.matches("callback bug", recs[1].message)
    assert.matches("traceback", recs[1].message)
  end)

  it("fileno and poll delegate to the pool", function()
    local fd = ex:fileno()
    assert.are.equal("integer", math.type(fd))
    assert.are.equal(0, ex:poll())
    local f = ex:submit(square, 3)
    local hit = false
    f:add_done_callback(function() hit = true end)
    assert.is_true(eventually(function() return ex:poll() == 1 end))
    assert.is_true(hit)
    assert.are.equal(9, f:result(0))
    local s = ex:stats()
    assert.is_number(s.done)
    assert.are.equal(2, #s.workers)
    assert.matches("^lmp.Executor%(2 workers, running%)$", tostring(ex))
  end)

  it("leaks no globals", function()
    assert.are.same({}, support.new_globals())
  end)
end)

describe("Executor:map", function()
  local ex
  before_each(function() ex = lmp.Executor(2) end)
  after_each(function() ex:shutdown{wait = false, cancel_futures = true} end)

  local function collect(it, s, c, closer)
    local out = {}
    local close <close> = closer
    for i, v in it, s, c do out[#out + 1] = {i, v} end
    return out
  end

  it("yields (index, value) in order, whatever the chunksize", function()
    local want = {}
    for i = 1, 23 do want[i] = {i, i * i} end
    assert.are.same(want, collect(ex:map(square, range(23))))
    for _, size in ipairs({1, 2, 5, 23, 100}) do
      assert.are.same(want, collect(ex:map(square, range(23), {chunksize = size})))
    end
    assert.are.same({}, collect(ex:map(square, {})))
  end)

  it("keeps nil results and honours a list's n field", function()
    local got = collect(ex:map(function(x) if x % 2 == 0 then return x end end, {1, 2, 3, 4}))
    assert.are.same({{1, nil}, {2, 2}, {3, nil}, {4, 4}}, got)
    got = collect(ex:map(function(x) return x == nil end, {1, nil, n = 2}))
    assert.are.same({{1, false}, {2, true}}, got)
  end)

  it("drains an iterator function at the call", function()
    local i = 0
    local function src()
      i = i + 1
      if i <= 5 then return i end
    end
    local it, s, c, closer = ex:map(square, src)
    assert.are.equal(6, i) -- read to its end already
    assert.are.same({{1, 1}, {2, 4}, {3, 9}, {4, 16}, {5, 25}}, collect(it, s, c, closer))
    assert.are.same({{1, "A"}, {2, "B"}}, collect(ex:map(string.upper, ("a\nb\n"):gmatch("[^\n]+"))))
  end)

  it("raises the first task error when it is reached, after the values before it", function()
    local function five(x)
      if x == 5 then error("five") end
      return x
    end
    local got = {}
    local err = raised(function()
      for i, v in ex:map(five, range(8), {chunksize = 1}) do got[i] = v end
    end)
    assert.are.same(range(4), got)
    assert.are.equal("task", err.kind)
    assert.are.equal(5, err.index)
    assert.matches("five", err.message)
    -- an error fails its chunk: the chunk's values before it are not yielded
    got = {}
    err = raised(function()
      for i, v in ex:map(five, range(8), {chunksize = 3}) do got[i] = v end
    end)
    assert.are.same(range(3), got)
    assert.are.equal(5, err.index)
  end)

  it("timeout counts from the map call and raises kind timeout", function()
    local blocked = lmp.Event()
    local it = ex:map(function(x)
      if type(x) ~= "number" then x:wait(30) end
      return x
    end, {1, blocked}, {timeout = 1.5, chunksize = 1})
    lmp.sleep(1.6) -- the deadline passes before the loop starts
    local t0 = lmp.time()
    local i, v = it()
    assert.are.same({1, 1}, {i, v}) -- done in time: yielded
    local err = raised(it)
    assert.is_true(lmp.time() - t0 < 1, "waited again") -- no fresh timeout at the loop
    assert.is_true(lmp.is_error(err))
    assert.are.equal("timeout", err.kind)
    assert.is_nil(it()) -- over
    blocked:set()
  end)

  it("leaving the loop early cancels the chunks no worker has taken", function()
    local one <close> = lmp.Executor(1)
    for i in one:map(function(x)
      require("lmp").sleep(0.05)
      return x
    end, range(20), {chunksize = 1}) do
      if i == 1 then break end
    end
    -- one worker takes tasks in order: once the probe ran, so did every
    -- chunk that was not cancelled
    assert.is_true(one:submit(function() return true end):result(30))
    local s = one:stats()
    assert.is_true(s.done < 20, "ran " .. s.done .. " tasks")
  end)

  it("map after shutdown raises", function()
    ex:shutdown()
    assert.matches("calling 'map' on bad self %(executor is shut down%)", raised(ex.map, ex, square, {1}))
  end)
end)

describe("Executor:shutdown", function()
  it("waits for the work and the workers; submit afterwards raises", function()
    local ex = lmp.Executor(2)
    local futs = {}
    for i = 1, 6 do futs[i] = ex:submit(function(x) require("lmp").sleep(0.02) return x end, i) end
    local workers = pids(ex)
    ex:shutdown()
    for i = 1, 6 do
      assert.is_true(futs[i]:done())
      assert.are.equal(i, futs[i]:result(0))
    end
    assert.is_true(all_dead(workers))
    assert.matches("calling 'submit' on bad self %(executor is shut down%)", raised(ex.submit, ex, print))
    assert.matches("shut down", tostring(ex))
    ex:shutdown() -- again: nothing to do
    ex:shutdown{wait = false}
  end)

  it("cancel_futures cancels what no worker has taken; the rest completes", function()
    local ex = lmp.Executor(1)
    local e, q = lmp.Event(), lmp.Queue()
    local first = ex:submit(held, e, q, "first")
    assert.is_number(q:get(10))
    local rest, cancelled = {}, {}
    for i = 1, 8 do
      rest[i] = ex:submit(square, i)
      rest[i]:add_done_callback(function(f) if f:cancelled() then cancelled[#cancelled + 1] = i end end)
    end
    local t0 = lmp.time()
    ex:shutdown{wait = false, cancel_futures = true}
    assert.is_true(lmp.time() - t0 < 5)
    assert.is_true(rest[8]:cancelled())
    assert.is_true(#cancelled >= 1)
    for k = 2, #cancelled do assert.is_true(cancelled[k - 1] < cancelled[k]) end -- in submission order
    e:set()
    assert.are.equal("first", first:result(30))
    ex:shutdown() -- now wait
    for i = 1, 8 do
      local f = rest[i]
      assert.is_true(f:done())
      if f:cancelled() then
        assert.are.equal("cancelled", raised(f.result, f).kind)
      else
        assert.are.equal(i * i, f:result())
      end
    end
  end)

  it("shutdown{wait = false} returns at once; results still arrive", function()
    local ex = lmp.Executor(1)
    local e = lmp.Event()
    local f = ex:submit(held, e, nil, "ok")
    local t0 = lmp.time()
    ex:shutdown{wait = false}
    assert.is_true(lmp.time() - t0 < 5)
    assert.is_false(f:done())
    e:set()
    assert.are.equal("ok", f:result(30))
    ex:shutdown()
  end)

  it("<close> shuts down and waits, as Python's with-block does", function()
    local futs
    do
      local ex <close> = lmp.Executor(2)
      futs = {}
      for i = 1, 4 do futs[i] = ex:submit(function(x) require("lmp").sleep(0.05) return x end, i) end
    end
    for i = 1, 4 do
      assert.is_true(futs[i]:done())
      assert.are.equal(i, futs[i]:result(0))
    end
  end)

  it("close() shuts down and waits, then every use raises; close again does nothing", function()
    local ex = lmp.Executor(2)
    local futs = {}
    for i = 1, 4 do futs[i] = ex:submit(function(x) require("lmp").sleep(0.05) return x end, i) end
    local workers = pids(ex)
    ex:close()
    for i = 1, 4 do
      assert.is_true(futs[i]:done())
      assert.are.equal(i, futs[i]:result(0))
    end
    assert.is_true(all_dead(workers))
    ex:close()
    assert.matches("closed", tostring(ex))
    for _, m in ipairs{"submit", "map", "shutdown", "stats", "poll", "fileno"} do
      assert.are.equal("attempt to use a closed lmp.Executor", raised(ex[m], ex, square, {1}), m)
    end
    local line, err = debug.getinfo(1, "l").currentline, raised(function() ex:stats() end)
    assert.are.equal("tests/executor_spec.lua:" .. line .. ": attempt to use a closed lmp.Executor", err)
  end)

  it("garbage collection of an executor never blocks", function()
    local workers, e
    do
      local ex = lmp.Executor(2)
      e = lmp.Event()
      ex:submit(held, e)
      workers = pids(ex)
    end
    local t0 = lmp.time()
    collectgarbage()
    collectgarbage()
    assert.is_true(lmp.time() - t0 < 2)
    e:set()
    assert.is_true(all_dead(workers))
  end)
end)

describe("lmp.as_completed", function()
  local ex
  before_each(function() ex = lmp.Executor(3) end)
  after_each(function() ex:shutdown{wait = false, cancel_futures = true} end)

  it("yields futures as they finish, the ones already done first", function()
    local es, q = {lmp.Event(), lmp.Event(), lmp.Event()}, lmp.Queue()
    local futs = {}
    for i = 1, 3 do futs[i] = ex:submit(held, es[i], q, i) end
    for _ = 1, 3 do assert.is_number(q:get(10)) end -- all three running
    local one <close> = lmp.Executor(1)
    local done = one:submit(square, 4)
    assert.are.equal(16, done:result())
    futs[4] = done
    local seen = {}
    local step = 0
    local release = {3, 1, 2}
    for f in lmp.as_completed(futs, 30) do
      seen[#seen + 1] = f
      step = step + 1
      if release[step] then es[release[step]]:set() end
    end
    assert.are.same({done, futs[3], futs[1], futs[2]}, seen)
  end)

  it("takes a table keyed by future, and yields each future once", function()
    local by = {}
    for i = 1, 5 do by[ex:submit(square, i)] = i end
    local got = {}
    for f in lmp.as_completed(by) do got[by[f]] = f:result() end
    assert.are.same({1, 4, 9, 16, 25}, got)
    local f = ex:submit(square, 2)
    local n = 0
    for _ in lmp.as_completed({f, f, f}) do n = n + 1 end
    assert.are.equal(1, n)
    for _ in lmp.as_completed({}) do error("nothing to yield") end
  end)

  it("raises kind timeout when the timeout passes with futures unfinished", function()
    local e = lmp.Event()
    local a, b = ex:submit(held, e), ex:submit(held, e)
    local c = ex:submit(square, 3)
    c:result()
    local got = {}
    local err = raised(function()
      for f in lmp.as_completed({a, b, c}, 0.2) do got[#got + 1] = f end
    end)
    assert.are.same({c}, got)
    assert.are.equal("timeout", err.kind)
    assert.are.equal("2 (of 3) futures unfinished", err.message)
    e:set()
    assert.is_true(a:result(30) == nil and b:result(30) == nil)
  end)

  it("waits on futures of several executors at once", function()
    local other <close> = lmp.Executor(1)
    local e1, e2, q = lmp.Event(), lmp.Event(), lmp.Queue()
    local f1 = ex:submit(held, e1, q, "one")
    local f2 = other:submit(held, e2, q, "two")
    q:get(10)
    q:get(10)
    local seen = {}
    e2:set()
    for f in lmp.as_completed({f1, f2}, 30) do
      seen[#seen + 1] = f:result()
      e1:set()
    end
    assert.are.same({"two", "one"}, seen)
  end)

  it("rejects bad arguments", function()
    assert.matches("bad argument #1 to 'as_completed' %(table expected, got number%)",
                   raised(lmp.as_completed, 5))
    assert.matches("bad argument #1 to 'as_completed' %(lmp.Future expected at index 2, got number%)",
                   raised(lmp.as_completed, {ex:submit(square, 1), 2}))
    assert.matches("bad argument #1 to 'as_completed' %(lmp.Future expected, got string at key k%)",
                   raised(lmp.as_completed, {k = "v"}))
    assert.matches("bad argument #2 to 'as_completed' %(timeout must be a non%-negative number%)",
                   raised(lmp.as_completed, {}, -1))
  end)
end)

describe("lmp.wait", function()
  local ex
  before_each(function() ex = lmp.Executor(2) end)
  after_each(function() ex:shutdown{wait = false, cancel_futures = true} end)

  it("ALL_COMPLETED (the default) waits for every future", function()
    local futs = {}
    for i = 1, 5 do futs[i] = ex:submit(function(x) require("lmp").sleep(0.01) return x end, i) end
    local done, not_done = lmp.wait(futs)
    assert.are.same(futs, done) -- in the order given
    assert.are.same({}, not_done)
    done, not_done = lmp.wait(futs, {return_when = lmp.ALL_COMPLETED, timeout = 30})
    assert.are.equal(5, #done)
    local d, nd = lmp.wait({})
    assert.are.same({}, d)
    assert.are.same({}, nd)
  end)

  it("FIRST_COMPLETED returns once one is done", function()
    local e = lmp.Event()
    local slow = ex:submit(held, e)
    local quick = ex:submit(square, 2)
    local done, not_done = lmp.wait({slow, quick}, {return_when = lmp.FIRST_COMPLETED})
    assert.are.same({quick}, done)
    assert.are.same({slow}, not_done)
    e:set()
  end)

  it("FIRST_EXCEPTION returns at the first failure, or when all are done", function()
    local e = lmp.Event()
    local slow = ex:submit(held, e)
    local bad = ex:submit(error, "no")
    local done, not_done = lmp.wait({slow, bad}, {return_when = "FIRST_EXCEPTION"})
    assert.are.same({bad}, done)
    assert.are.same({slow}, not_done)
    e:set()
    local ok1, ok2 = ex:submit(square, 1), ex:submit(square, 2)
    done, not_done = lmp.wait({ok1, ok2}, {return_when = lmp.FIRST_EXCEPTION})
    assert.are.equal(2, #done)
    assert.are.same({}, not_done)
  end)

  it("returns what is done when the timeout passes, without raising", function()
    local e = lmp.Event()
    local slow = ex:submit(held, e)
    local quick = ex:submit(square, 3)
    quick:result()
    local done, not_done = lmp.wait({slow, quick}, {timeout = 0.1})
    assert.are.same({quick}, done)
    assert.are.same({slow}, not_done)
    done, not_done = lmp.wait({slow}, 0) -- a number is the timeout; 0 never blocks
    assert.are.same({}, done)
    assert.are.same({slow}, not_done)
    e:set()
  end)

  it("sleeps while it waits instead of spinning", function()
    local e = lmp.Event()
    local a = ex:submit(held, e)
    local other <close> = lmp.Executor(1)
    local b = other:submit(held, e)
    local cpu0 = os.clock()
    local done = lmp.wait({a, b}, {timeout = 1, return_when = lmp.FIRST_COMPLETED})
    local used = os.clock() - cpu0
    assert.are.same({}, done)
    assert.is_true(used < 0.5, string.format("used %.2f s of CPU in 1 s of waiting", used))
    e:set()
  end)

  it("rejects bad arguments", function()
    local f = ex:submit(square, 1)
    assert.matches("bad argument #1 to 'wait' %(table expected, got nil%)", raised(lmp.wait))
    assert.matches("bad argument #2 to 'wait' %(unknown option 'when'%)", raised(lmp.wait, {f}, {when = 1}))
    assert.matches("bad argument #2 to 'wait' %(option 'return_when' must be FIRST_COMPLETED, "
                   .. "FIRST_EXCEPTION or ALL_COMPLETED%)", raised(lmp.wait, {f}, {return_when = "ANY"}))
    assert.matches("bad argument #2 to 'wait' %(option 'timeout' must be a non%-negative number%)",
                   raised(lmp.wait, {f}, {timeout = -2}))
    assert.matches("bad argument #2 to 'wait' %(table expected, got string%)", raised(lmp.wait, {f}, "x"))
  end)
end)

describe("Executor failures", function()
  it("a task out of memory fails its future (never a hang); the executor goes on", function()
    local out, code = support.run_limited([[
      local lmp = require "lmp"
      local ex <close> = lmp.Executor(1)
      local f = ex:submit(dofile("tests/support.lua").memory_hog)
      local ok, err = pcall(f.result, f, 60)
      assert(not ok, "no error")
      assert(err.kind == "worker_lost" or err.kind == "task" and err.message == "not enough memory",
             tostring(err))
      assert(ex:submit(function() return 42 end):result(60) == 42)
      print("executor works")
    ]], "-v 200000")
    if not out then return pending(code) end
    assert.are.equal(0, code, out)
    assert.matches("executor works", out)
  end)

  it("a worker killed mid-task fails that future with worker_lost; the executor goes on", function()
    local ex <close> = lmp.Executor(2)
    local q = lmp.Queue()
    local victim = ex:submit(function(queue)
      local l = require "lmp"
      queue:put(l.current_process().pid)
      l.sleep(30)
    end, q)
    local others = {}
    for i = 1, 10 do others[i] = ex:submit(square, i) end
    local pid = q:get(10)
    os.execute("kill -9 " .. pid)
    local err = raised(victim.result, victim, 30)
    assert.are.equal("worker_lost", err.kind)
    assert.are.equal(pid, err.pid)
    assert.are.equal(err, victim:exception())
    for i = 1, 10 do assert.are.equal(i * i, others[i]:result(30)) end
    -- still usable, with two workers again
    local more = {}
    for i = 1, 4 do more[i] = ex:submit(square, i) end
    local done = lmp.wait(more, {timeout = 30})
    assert.are.equal(4, #done)
    assert.is_true(eventually(function() return #pids(ex) == 2 end))
    for _, p in ipairs(pids(ex)) do assert.are_not.equal(pid, p) end
    local got = {}
    for i, v in ex:map(square, range(6)) do got[i] = v end
    assert.are.same({1, 4, 9, 16, 25, 36}, got)
  end)

  it("os.exit in a task is worker_lost too, seen by as_completed", function()
    local ex <close> = lmp.Executor(1)
    local f = ex:submit(function() os.exit(3) end)
    local g = ex:submit(square, 5)
    local kinds = {}
    for fut in lmp.as_completed({f, g}, 30) do
      local e = fut:exception()
      kinds[#kinds + 1] = e and e.kind or fut:result()
    end
    assert.are.same({"worker_lost", 25}, kinds)
  end)

  it("task_timeout kills a task running too long: kind timeout, with its pid", function()
    local ex <close> = lmp.Executor{max_workers = 1, task_timeout = 0.3}
    local f = ex:submit(function() require("lmp").sleep(30) end)
    local err = raised(f.result, f, 30)
    assert.are.equal("timeout", err.kind)
    assert.is_number(err.pid)
    assert.are.equal(1, ex:submit(function() return 1 end):result(30))
  end)

  it("the initializer runs in each worker before its tasks", function()
    local ex <close> = lmp.Executor{max_workers = 2, initializer = function(a, b) _G.EXEC_INIT = a .. b end,
                                    initargs = {"x", "y"}}
    local got = {}
    for _, v in ex:map(function() return _G.EXEC_INIT end, range(4), {chunksize = 1}) do got[#got + 1] = v end
    assert.are.same({"xy", "xy", "xy", "xy"}, got)
    assert.is_nil(rawget(_G, "EXEC_INIT"))
  end)

  it("a failing initializer is raised with its error", function()
    local ex
    local ok, err = pcall(function()
      ex = lmp.Executor{max_workers = 1, initializer = function() error("no init") end}
      return ex:submit(square, 1):result(30)
    end)
    assert.is_false(ok)
    assert.are.equal("initializer", err.kind)
    assert.matches("no init", err.message)
    if ex then ex:shutdown() end
  end)

  it("max_tasks_per_child recycles the workers", function()
    local ex <close> = lmp.Executor{max_workers = 1, max_tasks_per_child = 2}
    local got = {}
    for i, pid in ex:map(function() return require("lmp").current_process().pid end, range(6), {chunksize = 1}) do
      got[i] = pid
    end
    assert.are.equal(3, support.distinct(got))
    assert.are.equal(got[1], got[2])
    assert.are_not.equal(got[2], got[3])
  end)
end)

describe("Executor cleanup", function()
  it("collected without shutdown, idle or busy, leaves no zombie", function()
    local workers = {}
    for _, busy in ipairs{false, true} do
      local ex = lmp.Executor(2)
      if busy then ex:submit(function() require("lmp").sleep(30) end) end
      ex:submit(function() return 1 end):result(30)
      for _, w in ipairs(ex:stats().workers) do workers[#workers + 1] = w.pid end
      ex = nil
    end
    assert.are.equal(4, #workers)
    collectgarbage()
    collectgarbage()
    for _, pid in ipairs(workers) do assert.is_true(support.reaped(pid), "pid " .. pid) end
  end)

  it("leaves nothing in /dev/shm and no worker behind", function()
    local out, code = support.run([[
      local lmp = require "lmp"
      local ex <close> = lmp.Executor(2)
      local futs = {}
      for i = 1, 20 do futs[i] = ex:submit(function(x) return x * x end, i) end
      local n = 0
      for f in lmp.as_completed(futs) do n = n + f:result() end
      for _, v in ex:map(function(x) return x end, {1, 2, 3}) do n = n + v end
      local pids = {}
      for _, w in ipairs(ex:stats().workers) do pids[#pids + 1] = w.pid end
      print(n, tostring(lmp.Queue()), table.concat(pids, " "))
    ]])
    assert.are.equal(0, code, out)
    assert.matches("^2876\t", out)
    local root, rnd = out:match("/lmp%.(%d+)%.(%x+)%.")
    assert.is_not_nil(root, out)
    local prefix = "lmp." .. root .. "." .. rnd .. "."
    assert.is_true(eventually(function() return #support.shm_entries(prefix) == 0 end, 5))
    local workers = {}
    for pid in out:match("\t[^\t]*\t([%d ]+)"):gmatch("%d+") do workers[#workers + 1] = tonumber(pid) end
    assert.are.equal(2, #workers)
    assert.is_true(all_dead(workers))
  end)

  -- Python's interpreter finishes an executor's work at exit.
  local unfinished = [[
    local lmp = require "lmp"
    local ex = lmp.Executor(2)
    for i = 1, 3 do
      ex:submit(function() lmp.sleep(0.2); io.write("apple ", i, "\n"); io.flush() end)
    end
  ]]

  it("finishes the work of an executor never shut down when the program ends", function()
    local out, code = support.run(unfinished)
    assert.are.equal(0, code, out)
    local seen = {}
    for i in out:gmatch("apple (%d)") do seen[#seen + 1] = tonumber(i) end
    table.sort(seen)
    assert.are.same({1, 2, 3}, seen, out)
  end)

  it("finishes it too when lua5.4 closes the state of a script that requires lmp", function()
    local path = support.tmpfile(unfinished)
    local out, code = support.shell_code(string.format(
      "lua5.4 -e \"package.cpath='%s/?.so;'..package.cpath\" %s", support.build, path))
    os.remove(path)
    assert.are.equal(0, code, out)
    assert.are.equal(3, select(2, out:gsub("apple %d", "")), out)
  end)

  it("does not wait when an executor is collected while the program runs", function()
    local out, code = support.run([[
      local lmp = require "lmp"
      local flag = lmp.Value("i", 0)
      do
        local ex = lmp.Executor(1)
        ex:submit(function() lmp.sleep(1); flag.value = 1 end)
      end
      collectgarbage(); collectgarbage()
      print("after collect", flag.value)
    ]])
    assert.are.equal(0, code, out)
    assert.matches("after collect\t0", out)
  end)

  it("leaks no globals", function()
    assert.are.same({}, support.new_globals())
  end)
end)

local support = dofile("tests/support.lua")
local lmp = require "lmp"

local pids, eventually, all_dead = support.pids, support.eventually, support.all_dead
local raised, range = support.raised, support.range

describe("lmp.Pool", function()
  local pool
  before_each(function() pool = lmp.Pool(2) end)
  after_each(function() pool:terminate() end)

  it("applies a function in a worker and returns its first result", function()
    assert.are.equal(5, pool:apply(function(a, b) return a + b end, 2, 3))
    assert.are.equal("x", pool:apply(function() return "x", "y" end))
    assert.is_nil(pool:apply(function() end))
    local n = pool:apply(function(a, b, c) return select("#", a, b, c) .. tostring(b) end, 1, nil, 3)
    assert.are.equal("3nil", n)
    local me = lmp.current_process().pid
    local pid = pool:apply(function() return require("lmp").current_process().pid end)
    assert.are_not.equal(me, pid)
    local who = pool:apply(function()
      local l = require "lmp"
      return {l.current_process().name, l.parent_process().pid}
    end)
    assert.matches("^PoolWorker%-%d$", who[1])
    assert.are.equal(me, who[2])
    local t = pool:apply(function(x) return {x, {y = x * 2}} end, 21)
    assert.are.same({21, {y = 42}}, t)
  end)

  it("hints at a global defined after the workers started", function()
    local g = "lmp_spec_late_helper"
    rawset(_G, g, function(x) return x end)
    local call = load("return function() return " .. g .. "(1) end")()
    local e = raised(pool.apply, pool, call)
    assert.matches("attempt to call a nil value %(global '" .. g .. "'%) %(hint: .*started before it was "
                   .. "defined.*upvalue", e.message)
    e = raised(pool.map, pool, function(x) return call(x) end, {1, 2})
    assert.matches("hint: ", e.message)
    rawset(_G, g, nil)
    -- a global this process lacks too: no hint
    e = raised(pool.apply, pool, call)
    assert.matches("global '" .. g .. "'%)$", e.message)
  end)

  it("runs closures with their upvalues", function()
    local base, tbl = 100, {k = 5}
    local function helper(x) return x + tbl.k end
    assert.are.equal(106, pool:apply(function(x) return base + helper(x) end, 1))
  end)

  it("defaults to one worker per cpu and takes the table form", function()
    local p <close> = lmp.Pool()
    assert.are.equal(lmp.cpu_count(), #p:stats().workers)
    local q <close> = lmp.Pool{processes = 1, maxtasksperchild = 5, task_timeout = 10,
                               start_method = "fork"}
    assert.are.equal(1, #q:stats().workers)
    assert.matches("^lmp.Pool%(1 processes, running%)$", tostring(q))
    q:close()
    assert.matches("closed", tostring(q))
  end)

  it("apply_async returns an AsyncResult", function()
    local r = pool:apply_async(function(x) require("lmp").sleep(0.2) return x * 2 end, {21})
    assert.is_false(r:ready())
    assert.has_error(function() r:successful() end)
    assert.are.same({nil, "timeout"}, {r:get(0)})
    assert.is_false(r:wait(0.01))
    assert.are.equal(42, r:get(10))
    assert.is_true(r:ready())
    assert.is_true(r:successful())
    assert.is_true(r:wait())
    assert.matches("done", tostring(r))
    local nilres = pool:apply_async(function() return nil end)
    assert.are.same({nil}, {nilres:get()}) -- exactly one value: nil
    assert.are.equal(1, select("#", nilres:get()))
    assert.are.equal(7, pool:apply_async(function() return 7 end):get())
  end)

  it("passes the arguments whole, whatever the list, and makes the same AsyncResult", function()
    local function count(...) return select("#", ...) end
    assert.are.equal(0, pool:apply_async(count):get())
    assert.are.equal(0, pool:apply_async(count, {}):get())
    assert.are.equal(3, pool:apply_async(count, {1, 2, 3}):get())
    assert.are.equal(3, pool:apply_async(count, {n = 3, 1}):get()) -- n counts the trailing nils
    assert.are.equal(0, pool:apply(count))
    assert.are.equal(1, pool:apply(count, nil))
    assert.are.equal(3, pool:apply(count, 1, nil, nil))
    local plain = pool:apply_async(count, {1})
    local with_opts = pool:apply_async(count, {1}, {callback = function() end})
    assert.are.equal(getmetatable(with_opts), getmetatable(plain))
    assert.matches("^lmp.AsyncResult%(", tostring(plain))
    assert.are.equal(1, plain:get())
    assert.are.equal(1, with_opts:get())
    -- what cannot be sent fails the call, whichever way it was made
    local co = coroutine.create(function() end)
    assert.has_error(function() pool:apply_async(count, {co}) end)
    assert.has_error(function() pool:apply(count, co) end)
    assert.are.equal(1, pool:apply(count, 1)) -- and the pool goes on
  end)

  it("runs callbacks only inside lmp calls, in the parent", function()
    local got, errs = {}, {}
    local me = lmp.current_process().pid
    for i = 1, 4 do
      pool:apply_async(function(x)
        if x == 3 then error("three") end
        return x
      end, {i}, {callback = function(v) got[#got + 1] = {v, lmp.current_process().pid} end,
                 error_callback = function(e) errs[#errs + 1] = e end})
    end
    lmp.sleep(0.5) -- every task is done by now, but nobody called into the pool
    assert.are.equal(0, #got)
    assert.are.equal(0, #errs)
    while #got + #errs < 4 do pool:poll() lmp.sleep(0.01) end
    assert.are.equal(3, #got)
    for _, g in ipairs(got) do assert.are.equal(me, g[2]) end
    assert.are.equal(1, #errs)
    assert.are.equal("task", errs[1].kind)
    assert.matches("three", errs[1].message)
  end)

  it("runs callbacks from get, wait and join too", function()
    local seen = {}
    local a = pool:apply_async(function() return 1 end, nil, {callback = function(v) seen[#seen + 1] = v end})
    local b = pool:apply_async(function() return 2 end, nil, {callback = function(v) seen[#seen + 1] = v end})
    a:get()
    b:wait()
    table.sort(seen)
    assert.are.same({1, 2}, seen)
    local c = pool:map_async(function(x) return x end, {1, 2, 3},
                             {callback = function(v) seen.map = v end})
    pool:close()
    pool:join()
    assert.is_true(c:ready())
    assert.are.same({1, 2, 3}, seen.map)
  end)

  it("a get delivers every result that has arrived; their callbacks run in order", function()
    local pool <close> = lmp.Pool(1) -- one worker: replies come in submission order
    local order, rs = {}, {}
    local expected = range(20)
    expected[7] = "task"
    for i = 1, 20 do
      rs[i] = pool:apply_async(function(x)
        if x == 7 then error("seven") end
        return x
      end, {i}, {callback = function(v) order[#order + 1] = v end,
                 error_callback = function(e) order[#order + 1] = e.kind end})
    end
    local m = pool:map_async(function(x) return 2 * x end, {1, 2, 3}, 1)
    assert.is_true(eventually(function() return pool:stats().done + pool:stats().failed == 23 end))
    for i = 1, 20 do assert.is_false(rs[i]:ready()) end -- nothing delivers without a call
    assert.is_false(m:ready())
    assert.are.equal(1, rs[1]:get())
    for i = 1, 20 do assert.is_true(rs[i]:ready()) end
    assert.is_true(m:ready())
    assert.are.same(expected, order)
    assert.are.equal(20, rs[20]:get())
    assert.matches("seven", raised(rs[7].get, rs[7]).message)
    assert.are.same({2, 4, 6}, m:get())
    -- poll counts every result it delivers, however many come at once
    for i = 1, 5 do rs[i] = pool:apply_async(function(x) return x end, {i}) end
    assert.is_true(eventually(function() return pool:stats().done + pool:stats().failed == 28 end))
    assert.are.equal(5, pool:poll())
    for i = 1, 5 do assert.are.equal(i, rs[i]:get()) end
    -- a callback that raises leaves the ones after it queued: a get, even of
    -- a result already settled, runs them first
    local seen = {}
    local a = pool:apply_async(function() return 1 end, nil, {callback = function() error("cb a") end})
    local b = pool:apply_async(function() return 2 end, nil, {callback = function(v) seen[#seen + 1] = v end})
    assert.is_true(eventually(function() return pool:stats().done + pool:stats().failed == 30 end))
    assert.has_error(function() a:get() end, nil)
    assert.is_true(b:ready())
    assert.are.same({}, seen)
    assert.are.equal(2, b:get())
    assert.are.same({2}, seen)
  end)

  it("a callback that raises propagates from the call, and the others still run", function()
    local ran = 0
    pool:apply_async(function() return 1 end, nil, {callback = function() error("cb failed") end})
    local r = pool:apply_async(function() return 2 end, nil, {callback = function() ran = ran + 1 end})
    local err
    for _ = 1, 100 do
      local ok, e = pcall(pool.poll, pool)
      if not ok then err = e break end
      lmp.sleep(0.01)
    end
    assert.matches("cb failed", tostring(err))
    assert.is_true(eventually(function() pool:poll() return ran == 1 end))
    assert.are.equal(2, r:get())
  end)

  it("maps in order, with any chunksize", function()
    local sq = function(x) return x * x end
    assert.are.same({1, 4, 9, 16, 25}, pool:map(sq, {1, 2, 3, 4, 5}))
    assert.are.same({}, pool:map(sq, {}))
    local xs = range(1000)
    local want = {}
    for i = 1, 1000 do want[i] = i * i end
    for _, cs in ipairs({1, 7, 100, 1000, 5000}) do
      assert.are.same(want, pool:map(sq, xs, cs))
      assert.are.same(want, pool:map(sq, xs, {chunksize = cs}))
    end
    -- plain values of every kind, and values the codec carries
    local mixed = {1, 2.5, "s", true, false, 2^63, -7, math.huge}
    assert.are.same(mixed, pool:map(function(x) return x end, mixed))
    local t = pool:map(function(x) return {x} end, {1, 2})
    assert.are.same({{1}, {2}}, t)
    local holes = pool:map(function(x) if x % 2 == 0 then return x end end, range(6))
    assert.are.same({nil, 2, nil, 4, nil, 6}, holes)
    assert.are.equal(3.0, pool:map(function(x) return x end, {3.0})[1])
    assert.are.equal("float", math.type(pool:map(function(x) return x end, {3.0})[1]))
    assert.are.same({1, 2}, pool:map(function(x) return x end, table.pack(1, 2)))
  end)

  it("map_async and starmap", function()
    local r = pool:map_async(function(x) return x + 1 end, {1, 2, 3})
    assert.are.same({2, 3, 4}, r:get(10))
    assert.is_true(r:successful())
    assert.are.same({3, 12, 30}, pool:starmap(function(a, b) return a * b end, {{1, 3}, {3, 4}, {5, 6}}))
    local s = pool:starmap_async(function(a, b, c) return tostring(a) .. tostring(b) .. tostring(c) end,
                                 {{1, nil, 3, n = 3}, {"a", "b"}}, {chunksize = 1})
    assert.are.same({"1nil3", "abnil"}, s:get())
    local cb
    pool:starmap_async(function(a) return a end, {{1}, {2}}, {callback = function(v) cb = v end}):wait()
    assert.are.same({1, 2}, cb)
  end)

  it("serializes the function once per map, and loads it once per worker", function()
    local k = 3
    local f = function(x) return x * k + require("lmp")._pool_counters().fn_loads * 0 end
    local before = lmp._pool_counters().fn_encodes
    local xs = range(10000)
    local out = pool:map(f, xs, 10)
    assert.are.equal(30000, out[10000])
    assert.are.equal(1, lmp._pool_counters().fn_encodes - before)
    -- 1000 chunks went out; each worker decoded the function once
    local loads = pool:map(function() return require("lmp")._pool_counters().fn_loads end, range(200), 1)
    local seen = {}
    for _, n in ipairs(loads) do seen[n] = true end
    for n in pairs(seen) do assert.is_true(n <= 3, "a worker loaded " .. n .. " functions") end
    -- a function whose only upvalue is _ENV is encoded once, however often applied
    local g = function(x) return tostring(x) end
    before = lmp._pool_counters().fn_encodes
    for i = 1, 50 do pool:apply_async(g, {i}) end
    assert.are.equal(1, lmp._pool_counters().fn_encodes - before)
    assert.are.equal("3", pool:apply(g, 3))
  end)

  it("keeps the 64 functions a worker used last loaded, dropping the least recently used", function()
    local p <close> = lmp.Pool(1)
    local fs = {}
    for i = 1, 64 do fs[i] = load("return function() return " .. i .. " end")() end
    local function loads() return require("lmp")._pool_counters().fn_loads end
    for i = 1, 63 do assert.are.equal(i, p:apply(fs[i])) end
    local base = p:apply(loads) -- 63 functions and this one: the cache is full
    p:apply(fs[1])              -- used again: now the most recent
    p:apply(fs[64])             -- a new one takes the slot of fs[2], the least recent
    p:apply(fs[1])
    assert.are.equal(base + 1, p:apply(loads))
    p:apply(fs[2])
    assert.are.equal(base + 2, p:apply(loads))
  end)

  it("imap yields in order and takes a table or an iterator function", function()
    local got = {}
    for i, v in pool:imap(function(x) return x * 10 end, {1, 2, 3, 4}) do got[i] = v end
    assert.are.same({10, 20, 30, 40}, got)
    local n = 0
    local function iter()
      n = n + 1
      if n <= 50 then return n end
    end
    local seq = {}
    for i, v in pool:imap(function(x) return -x end, iter, 4) do
      seq[#seq + 1] = i
      assert.are.equal(-i, v)
    end
    assert.are.same(range(50), seq)
    for _ in pool:imap(function(x) return x end, {}) do error("nothing to yield") end
  end)

  it("imap consumes its iterator lazily", function()
    local pulled = 0
    local function forever()
      pulled = pulled + 1
      return pulled
    end
    local got = 0
    for i, v in pool:imap(function(x) return x end, forever) do
      assert.are.equal(i, v)
      got = got + 1
      if got == 20 then break end
    end
    assert.is_true(pulled < 200, "pulled " .. pulled)
    assert.are.equal(4, pool:apply(function() return 4 end))
  end)

  it("imap_unordered yields every index with its value", function()
    local seen = {}
    for i, v in pool:imap_unordered(function(x)
      if x == 1 then require("lmp").sleep(0.2) end
      return x * 2
    end, range(10)) do
      assert.is_nil(seen[i])
      seen[i] = v
    end
    for i = 1, 10 do assert.are.equal(2 * i, seen[i]) end
  end)

  it("imap raises a failed item in its place and goes on", function()
    local it = pool:imap(function(x)
      if x == 2 then error({code = x}) end
      return x
    end, {1, 2, 3}, 3)
    assert.are.same({1, 1}, {it()})
    local err = raised(it)
    assert.are.equal("task", err.kind)
    assert.are.same({code = 2}, err.value)
    assert.are.equal(2, err.index)
    assert.are.same({3, 3}, {it()})
    assert.is_nil(it())
  end)

  it("shows a remote traceback and the original error value", function()
    local function inner() error("deep trouble") end
    local err = raised(pool.apply, pool, function() inner() end)
    assert.is_true(lmp.is_error(err))
    assert.are.equal("task", err.kind)
    assert.matches("deep trouble", err.message)
    assert.matches("deep trouble", err.value)
    assert.matches("stack traceback", err.traceback)
    assert.matches("inner", err.traceback)
    assert.is_number(err.pid)
    assert.are_not.equal(lmp.current_process().pid, err.pid)
    assert.matches("remote stack traceback", tostring(err))
    -- tables too
    err = raised(pool.apply, pool, function() error({code = 42, msg = "custom"}) end)
    assert.are.same({code = 42, msg = "custom"}, err.value)
    -- a value that cannot cross leaves the message
    err = raised(pool.apply, pool, function() error(setmetatable({}, {__tostring = function() return "odd" end})) end)
    assert.are.equal("odd", err.message)
    err = raised(pool.apply, pool, function() error(coroutine.create(print)) end)
    assert.are.equal("task", err.kind)
    assert.is_nil(err.value)
  end)

  it("a number raised by a task arrives as that number", function()
    for _, v in ipairs{123, 2.5, -0.0} do
      local err = raised(pool.apply, pool, function() error(v) end)
      assert.are.equal("task", err.kind)
      assert.are.equal(math.type(v), math.type(err.value))
      assert.are.equal(v, err.value)
      assert.are.equal(tostring(v), err.message)
    end
    local err = raised(pool.map, pool, function(x) error(x * 10) end, {1})
    assert.are.equal(10, err.value)
  end)

  it("prints a long message and a deep remote traceback whole", function()
    local msg = ("m"):rep(3000)
    local err = raised(pool.apply, pool, function()
      local function a_function_whose_long_name_makes_each_traceback_line_long(n)
        if n == 0 then error(msg, 0) end
        return 1 + a_function_whose_long_name_makes_each_traceback_line_long(n - 1)
      end
      return a_function_whose_long_name_makes_each_traceback_line_long(50)
    end)
    assert.are.equal(msg, err.message)
    assert.is_true(#err.traceback > 1024)
    assert.are.equal("lmp.Error(task, pid " .. err.pid .. "): " .. msg .. "\nremote " .. err.traceback,
      tostring(err))
  end)

  it("map raises the error of the first failing item", function()
    local err = raised(pool.map, pool, function(x)
      if x >= 5 then error("bad " .. x) end
      return x
    end, range(8), 8)
    assert.are.equal("task", err.kind)
    assert.matches("bad 5", err.message)
    assert.are.equal(5, err.index)
    local r = pool:map_async(function(x) error("always") end, {1, 2}, {error_callback = function() end})
    assert.is_false(r:wait(10) and r:successful())
  end)

  it("fails only the task whose result cannot be serialized", function()
    local err = raised(pool.apply, pool, function() return coroutine.create(print) end)
    assert.are.equal("serialize", err.kind)
    assert.matches("cannot send result", err.message)
    local got = {}
    local it = pool:imap(function(x)
      if x == 2 then return io.stdout end
      return x
    end, {1, 2, 3}, 3)
    got[1] = select(2, it())
    err = raised(it)
    got[3] = select(2, it())
    assert.are.same({1, nil, 3}, got)
    assert.are.equal("serialize", err.kind)
    err = raised(pool.map, pool, function(x) return x == 3 and io.stdout or x end, range(4))
    assert.are.equal("serialize", err.kind)
    assert.are.equal(5, pool:apply(function() return 5 end))
    -- an argument that cannot be sent raises right away, naming it
    err = raised(pool.apply_async, pool, function() end, {1, coroutine.create(print)})
    assert.are.equal("serialize", err.kind)
    assert.matches("args%[2%]", err.message)
    err = raised(pool.map, pool, function() end, {1, 2, io.stdout}, 2)
    assert.matches("list%[3%]", err.message)
  end)

  it("an iterator that raises: the error reaches the caller, the pool goes on", function()
    local n = 0
    local function iter()
      n = n + 1
      if n == 5 then error("source broke") end
      return n
    end
    local got = {}
    local ok, err = pcall(function()
      for i, v in pool:imap(function(x) return x end, iter) do got[i] = v end
    end)
    assert.is_false(ok)
    assert.matches("source broke", err)
    assert.are.same({1, 2, 3, 4}, got)
    local ok2, err2 = pcall(function()
      for _ in pool:imap_unordered(function(x) return x end, function() error({tag = "t"}) end) do end
    end)
    assert.is_false(ok2)
    assert.are.same({tag = "t"}, err2)
    assert.are.same({1, 4}, pool:map(function(x) return x * x end, {1, 2}))
  end)

  it("a worker killed mid-task fails that task with worker_lost; the rest complete", function()
    local q = lmp.Queue()
    local slow = pool:apply_async(function(queue)
      local l = require "lmp"
      queue:put(l.current_process().pid)
      l.sleep(30)
    end, {q})
    local others = {}
    for i = 1, 10 do others[i] = pool:apply_async(function(x) return x end, {i}) end
    local pid = q:get(10)
    os.execute("kill -9 " .. pid)
    local err = raised(slow.get, slow, 10)
    assert.are.equal("worker_lost", err.kind)
    assert.are.equal(pid, err.pid)
    assert.are.equal(-9, err.exitcode)
    assert.matches(tostring(pid), err.message)
    for i = 1, 10 do assert.are.equal(i, others[i]:get(10)) end
    -- replaced: the pool still has two workers, none of them the dead one
    assert.is_true(eventually(function() return #pids(pool) == 2 end))
    for _, p in ipairs(pids(pool)) do assert.are_not.equal(pid, p) end
    assert.are.same({1, 4, 9}, pool:map(function(x) return x * x end, {1, 2, 3}))
    assert.is_true(pool:stats().restarts >= 1)
  end)

  it("an idle worker killed is replaced while the program only reads stats()", function()
    assert.is_true(eventually(function() return #pids(pool) == 2 end))
    local victim = pids(pool)[1]
    local before = pool:stats().restarts
    os.execute("kill -9 " .. victim)
    -- no call that waits on the pool: stats() itself notices the death
    assert.is_true(eventually(function()
      local now = pids(pool)
      return #now == 2 and now[1] ~= victim and now[2] ~= victim
    end))
    assert.are.equal(before + 1, pool:stats().restarts)
    assert.are.same({2, 4}, pool:map(function(x) return 2 * x end, {1, 2}))
  end)

  it("workers killed at random under load: every result is its value or worker_lost", function()
    local rs = {}
    for i = 1, 1000 do rs[i] = pool:apply_async(function(x) require("lmp").sleep(0.0005) return x end, {i}) end
    local ok, lost = 0, 0
    for i = 1, 1000 do
      if i % 50 == 0 then
        local ws = pool:stats().workers
        local w = ws[i % #ws + 1]
        if w.pid then os.execute("kill -9 " .. w.pid .. " 2>/dev/null") end
      end
      local good, v = pcall(rs[i].get, rs[i], 30)
      if good then
        assert.are.equal(i, v)
        ok = ok + 1
      else
        assert.are.equal("worker_lost", v.kind)
        lost = lost + 1
      end
    end
    assert.are.equal(1000, ok + lost)
    assert.is_true(ok > 500)
    assert.are.same({2, 3}, pool:map(function(x) return x + 1 end, {1, 2}))
  end)

  it("map raises worker_lost when a worker dies under it, and nothing hangs", function()
    local err = raised(pool.map, pool, function(x)
      if x == 3 then os.exit(3) end
      return x
    end, range(6), 1)
    assert.are.equal("worker_lost", err.kind)
    assert.are.equal(3, err.exitcode)
    assert.are.same({1, 2}, pool:map(function(x) return x end, {1, 2}))
  end)

  it("os.exit inside a task is worker_lost", function()
    local err = raised(pool.apply, pool, function() os.exit(7) end)
    assert.are.equal("worker_lost", err.kind)
    assert.are.equal(7, err.exitcode)
    err = raised(pool.apply, pool, function() os.exit(true, true) end)
    assert.are.equal("worker_lost", err.kind)
    assert.are.equal(0, err.exitcode)
    assert.are.equal(1, pool:apply(function() return 1 end))
  end)

  it("a segfault in a worker is worker_lost", function()
    local err = raised(pool.apply, pool, function()
      os.execute("kill -SEGV " .. require("lmp").current_process().pid)
      require("lmp").sleep(10)
    end)
    assert.are.equal("worker_lost", err.kind)
    if not (os.getenv("LD_PRELOAD") or ""):match("asan") then -- ASan handles SEGV itself
      assert.are.equal(-11, err.exitcode)
      assert.matches("signal 11", err.message)
    end
    assert.are.equal(2, pool:apply(function() return 2 end))
  end)

  it("running out of memory fails the task (or loses the worker), never the pool", function()
    -- Lua has no setrlimit: the task lowers its own address-space limit
    -- with prlimit(1), then allocates until the allocator fails.  (A worker
    -- that cannot even die cleanly, as under ASan, meets the timeout.)
    local guarded <close> = lmp.Pool{processes = 1, task_timeout = 30}
    local err = raised(guarded.apply, guarded, function()
      local pid = require("lmp").current_process().pid
      local f = io.open("/proc/self/status")
      local vm = tonumber(f:read("a"):match("VmSize:%s*(%d+)"))
      f:close()
      assert(os.execute(string.format("prlimit --pid %d --as=%d", pid, (vm + 64 * 1024) * 1024)))
      local t, s = {}, string.rep("x", 1024 * 1024)
      for i = 1, 1e6 do t[i] = s .. i end
    end)
    assert.is_true(err.kind == "task" or err.kind == "worker_lost" or err.kind == "timeout", err.kind)
    if err.kind == "task" then assert.matches("not enough memory", err.message) end
    assert.are.equal(3, guarded:apply(function() return 3 end))
  end)

  it("tasks can make pools and processes of their own", function()
    for _ = 1, 3 do
      local r = pool:apply(function()
        local l = require "lmp"
        local inner = l.Pool(2)
        local x = inner:map(function(v) return v * 2 end, {1, 2, 3})
        inner:close()
        inner:join()
        return table.concat(x, ",")
      end)
      assert.are.equal("2,4,6", r)
    end
    assert.are.equal("from grandchild", pool:apply(function()
      local l = require "lmp"
      local q = l.Queue()
      local p = l.Process(function() q:put("from grandchild") end)
      p:start()
      p:join()
      return q:get(5)
    end))
    -- and a process that inherited this pool can make its own
    local q = lmp.Queue()
    local child = lmp.Process(function()
      local own = lmp.Pool(1)
      q:put(own:apply(function() return "own pool" end))
      own:terminate()
    end)
    child:start()
    assert.are.equal("own pool", q:get(10))
    child:join()
    assert.are.equal(7, pool:apply(function() return 7 end))
  end)

  it("leaks no globals", function()
    assert.are.same({}, support.new_globals())
  end)
end)

describe("lmp.Pool task_timeout", function()
  it("kills a task running too long: kind timeout, the worker is replaced", function()
    local pool <close> = lmp.Pool{processes = 1, task_timeout = 0.3}
    local before = pids(pool)[1]
    local t0 = lmp.time()
    local err = raised(pool.apply, pool, function() require("lmp").sleep(30) end)
    assert.are.equal("timeout", err.kind)
    assert.is_true(lmp.time() - t0 < 10)
    assert.are.equal(before, err.pid)
    assert.is_true(all_dead({before}))
    assert.are.equal(1, pool:apply(function() return 1 end))
    -- the timeout applies to each item of a chunk, not to the chunk
    local out = pool:map(function(x) require("lmp").sleep(0.1) return x end, range(5), 5)
    assert.are.same(range(5), out)
  end)

  it("fails a map whose item runs too long", function()
    local pool <close> = lmp.Pool{processes = 2, task_timeout = 0.2}
    local err = raised(pool.map, pool, function(x)
      if x == 2 then require("lmp").sleep(30) end
      return x
    end, range(4), 1)
    assert.are.equal("timeout", err.kind)
    assert.are.same({1}, pool:map(function(x) return x end, {1}))
  end)

  it("gives back what the tasks it killed had made", function()
    local n = (os.getenv("LMP_STRESS") or "0") ~= "0" and 10 or 3
    local pool <close> = lmp.Pool{processes = 2, task_timeout = 0.2}
    pool:apply(function() return 1 end)
    local prefix = tostring(lmp.Queue()):match("/(lmp%.%d+%.%x+%.)")
    local function count() return support.live_segments(prefix) end
    local before = count()
    for _ = 1, n do
      local err = raised(pool.apply, pool, function()
        local lmp = require "lmp"
        local a = lmp.Array("d", 1000)
        lmp.sleep(30)
        return a
      end)
      assert.are.equal("timeout", err.kind)
    end
    assert.is_true(eventually(function() return count() <= before end, 5),
      table.concat(support.shm_entries(prefix), " "))
  end)
end)

describe("lmp.Pool out of memory", function()
  -- Each call fails (kind "task", "not enough memory", or "worker_lost"),
  -- never waits forever; the pool goes on.  get(60) turns a lost reply into
  -- a failure instead of a hang.
  it("fails apply, map and imap of a task out of memory; the pool goes on", function()
    local out, code = support.run_limited([[
      local lmp = require "lmp"
      local hog = dofile("tests/support.lua").memory_hog
      local function failed(what, ok, err)
        assert(not ok, what .. ": no error, " .. tostring(err))
        assert(err.kind == "worker_lost" or err.kind == "task" and err.message == "not enough memory",
               what .. ": " .. tostring(err))
        print(what, "failed")
      end
      local pool = lmp.Pool(1)
      local r = pool:apply_async(hog)
      failed("apply", pcall(r.get, r, 60))
      r = pool:map_async(function() hog() end, {1, 2})
      failed("map", pcall(r.get, r, 60))
      failed("imap", pcall(function()
        for _ in pool:imap(function() hog() end, {1}) do end
      end))
      assert(pool:apply(function() return 42 end) == 42)
      print("pool works")
    ]], "-v 200000")
    if not out then return pending(code) end
    assert.are.equal(0, code, out)
    assert.matches("apply\tfailed\nmap\tfailed\nimap\tfailed\npool works", out)
  end)
end)

describe("lmp.Pool initializer", function()
  it("runs in each worker before its tasks", function()
    local pool <close> = lmp.Pool{processes = 2, initializer = function(a, b) _G.INIT_VALUE = a + b end,
                                  initargs = {1, 2}}
    assert.are.same({3, 3, 3}, pool:map(function() return _G.INIT_VALUE end, {1, 2, 3}, 1))
    assert.is_nil(rawget(_G, "INIT_VALUE"))
  end)

  it("a failing initializer raises once, with its error and traceback, and forks no more", function()
    local q = lmp.Queue()
    local pool <close> = lmp.Pool{processes = 2, initargs = {q}, initializer = function(queue)
      queue:put(require("lmp").current_process().pid)
      error("cannot initialize")
    end}
    local err = raised(pool.apply, pool, function() return 1 end)
    assert.are.equal("initializer", err.kind)
    assert.matches("cannot initialize", err.message)
    assert.matches("stack traceback", err.traceback)
    assert.is_number(err.pid)
    lmp.sleep(0.5)
    local forks = 0
    while q:get(0) do forks = forks + 1 end
    assert.is_true(forks >= 1 and forks <= 2, forks .. " workers started")
    -- every later call raises the same error
    local again = raised(pool.map, pool, function(x) return x end, {1})
    assert.are.equal(err, again)
    assert.are.equal(err, raised(pool.apply_async, pool, function() end))
    assert.matches("broken", tostring(pool))
    pool:close()
    pool:join()
  end)

  it("an initializer that kills its worker breaks the pool the same way", function()
    local pool <close> = lmp.Pool{processes = 1, initializer = function() os.exit(4) end}
    local err = raised(pool.apply, pool, function() return 1 end)
    assert.are.equal("initializer", err.kind)
    assert.are.equal(4, err.exitcode)
  end)
end)

describe("lmp.Pool lifecycle", function()
  it("says the process limit was reached when it cannot start a worker", function()
    local out, code = support.run_at_process_limit([[
      local pool = lmp.Pool(8)
      print(pool:apply(function() return "started" end))
    ]])
    if not out then return pending("cannot run under a process limit: " .. code) end
    assert.are.equal(1, code, out)
    assert.matches("Pool: cannot start a worker: process limit reached (ulimit -u)", out, 1, true)
  end)

  it("maxtasksperchild recycles workers", function()
    local pool <close> = lmp.Pool{processes = 1, maxtasksperchild = 2}
    local got = pool:map(function() return require("lmp").current_process().pid end, range(6), 1)
    assert.are.equal(3, support.distinct(got))
    assert.are.equal(got[1], got[2])
    assert.are_not.equal(got[2], got[3])
  end)

  it("close stops submissions, join waits for the work", function()
    local pool = lmp.Pool(2)
    local r = pool:map_async(function(x) require("lmp").sleep(0.05) return x end, range(8), {chunksize = 1})
    local err = raised(pool.join, pool)
    assert.matches("still running", err)
    pool:close()
    assert.matches("pool is closed", raised(pool.apply, pool, print))
    assert.matches("pool is closed", raised(pool.map, pool, print, {}))
    local workers = pids(pool)
    pool:join()
    assert.is_true(r:ready())
    assert.are.same(range(8), r:get())
    assert.is_true(all_dead(workers))
    pool:join() -- again: nothing to wait for
    pool:terminate()
  end)

  it("terminate during a running map returns promptly and leaves no process", function()
    local pool = lmp.Pool(2)
    local r = pool:map_async(function(x) require("lmp").sleep(30) return x end, range(20), {chunksize = 1})
    assert.is_true(eventually(function()
      for _, w in ipairs(pool:stats().workers) do
        if w.state ~= "busy" then return false end
      end
      return true
    end))
    local workers = pids(pool)
    local t0 = lmp.time()
    pool:terminate()
    assert.is_true(lmp.time() - t0 < 2)
    for _, pid in ipairs(workers) do assert.is_false(support.alive(pid)) end
    local err = raised(r.get, r)
    assert.are.equal("cancelled", err.kind)
    pool:join()
    assert.matches("terminated", raised(pool.apply, pool, print))
  end)

  it("terminates at the end of a <close> scope", function()
    local workers
    do
      local pool <close> = lmp.Pool(2)
      pool:apply_async(function() require("lmp").sleep(30) end)
      workers = pids(pool)
    end
    for _, pid in ipairs(workers) do assert.is_false(support.alive(pid)) end
  end)

  it("garbage collection of an unclosed pool kills its workers without blocking", function()
    local workers
    do
      local pool = lmp.Pool(2)
      pool:apply_async(function() require("lmp").sleep(30) end)
      workers = pids(pool)
      assert.are.equal(2, #workers)
    end
    local t0 = lmp.time()
    collectgarbage()
    collectgarbage()
    assert.is_true(lmp.time() - t0 < 1)
    assert.is_true(all_dead(workers))
  end)

  it("garbage collection of an unclosed pool leaves no zombie, with no later lmp call", function()
    local workers
    do
      local pool = lmp.Pool(2)
      pool:apply_async(function() require("lmp").sleep(30) end)
      workers = pids(pool)
    end
    collectgarbage()
    collectgarbage()
    for _, pid in ipairs(workers) do assert.is_true(support.reaped(pid), "pid " .. pid) end
  end)

  it("cancel removes a task no worker has seen; running tells what runs", function()
    local pool <close> = lmp.Pool(1)
    local long = pool:apply_async(function() require("lmp").sleep(0.5) return "long" end)
    local queued = {}
    for i = 1, 6 do queued[i] = pool:apply_async(function(x) return x end, {i}) end
    assert.is_true(eventually(function() return long:running() end))
    assert.is_false(long:cancel())
    local last = queued[6]
    assert.is_false(last:running())
    assert.is_true(last:cancel())
    assert.is_true(last:cancel()) -- still cancelled
    assert.is_true(last:cancelled())
    assert.is_true(last:ready())
    local err = raised(last.get, last)
    assert.are.equal("cancelled", err.kind)
    assert.are.equal("long", long:get())
    for i = 1, 5 do assert.are.equal(i, queued[i]:get()) end
    assert.is_false(long:cancelled())
  end)

  -- A Pool(1) whose worker runs "long" until gate is set: what is submitted
  -- meanwhile waits in the ring.
  local function held_pool()
    local pool = lmp.Pool(1)
    local gate = lmp.Event()
    local long = pool:apply_async(function(e) e:wait(30) return "long" end, {gate})
    assert.is_true(eventually(function() return long:running() end))
    return pool, gate, long
  end

  it("cancel takes back a task waiting in the ring; workers skip it", function()
    local pool <close>, gate, long = held_pool()
    local ran = lmp.Queue()
    local rs = {}
    for i = 1, 6 do rs[i] = pool:apply_async(function(x, q) q:put(x) return x end, {i, ran}) end
    assert.is_true(rs[3]:cancel())
    assert.is_true(rs[3]:cancelled())
    gate:set()
    assert.are.equal("long", long:get())
    for _, i in ipairs({1, 2, 4, 5, 6}) do assert.are.equal(i, rs[i]:get()) end
    assert.are.same({1, 2, 4, 5, 6}, support.drained(ran, 0.2)) -- the cancelled task never ran
  end)

  it("cancels a map_async whose chunks wait in the ring, not once one has started", function()
    local pool <close>, gate, long = held_pool()
    local ran = lmp.Queue()
    local m = pool:map_async(function(x) ran:put(x) return x end, range(5), {chunksize = 1})
    assert.is_true(m:cancel())
    assert.is_true(m:cancelled())
    assert.are.equal("cancelled", select(2, pcall(m.get, m)).kind)
    local m2 = pool:map_async(function(x, e) return x end, range(3), {chunksize = 1})
    gate:set()
    assert.are.equal("long", long:get())
    assert.are.same({1, 2, 3}, m2:get())
    assert.is_false(m2:cancel()) -- done
    assert.is_nil(ran:get(0.2)) -- no chunk of the cancelled map ran
    local gate2 = lmp.Event()
    local m3 = pool:map_async(function(x) gate2:wait(30) return x end, range(2), {chunksize = 1})
    assert.is_true(eventually(function() return m3:running() end))
    assert.is_false(m3:cancel()) -- a chunk has started
    gate2:set()
    assert.are.same({1, 2}, m3:get())
  end)

  it("cancel{terminate = true} stops a running task: its worker is killed and replaced", function()
    local pool <close>, gate, long = held_pool()
    local pid = support.pids(pool)[1]
    assert.is_false(long:cancel()) -- running
    local queued = pool:apply_async(function() return "queued" end)
    assert.is_true(long:cancel{terminate = true})
    assert.is_true(long:cancelled())
    assert.is_true(long:cancel{terminate = true}) -- still cancelled
    assert.are.equal("cancelled", select(2, pcall(long.get, long)).kind)
    assert.is_true(support.all_dead({pid}))
    assert.are.equal("queued", queued:get(10)) -- on the worker that replaced it
    assert.are_not.equal(pid, support.pids(pool)[1])
    assert.is_false(queued:cancel{terminate = true}) -- finished
    assert.is_false(queued:cancelled())
    gate:set()
    local m = pool:map_async(function(x) require("lmp").sleep(30) return x end, range(4), {chunksize = 1})
    assert.is_true(eventually(function() return m:running() end))
    assert.is_true(m:cancel{terminate = true})
    assert.are.equal("cancelled", select(2, pcall(m.get, m)).kind)
    assert.are.equal(3, pool:apply(function(x) return x end, 3))
    assert.matches("bad argument #1 to 'cancel' %(table expected, got number%)", raised(m.cancel, m, 5))
    assert.matches("bad argument #1 to 'cancel' %(unknown option 'terminat'%)",
                   raised(m.cancel, m, {terminat = true}))
    assert.matches("bad argument #1 to 'cancel' %(option 'terminate' must be a boolean%)",
                   raised(m.cancel, m, {terminate = 1}))
  end)

  it("workers keep busy while the parent computes without calling lmp", function()
    local pool <close> = lmp.Pool(2)
    local count = lmp.Value("int64", 0)
    local rs = {}
    for i = 1, 300 do
      rs[i] = pool:apply_async(function(c) require("lmp").sleep(0.002) c:add(1) end, {count})
    end
    -- no lmp call on the pool: only what is in the ring can run meanwhile
    local t0 = os.clock()
    while count.value < 300 and os.clock() - t0 < 20 do end
    assert.are.equal(300, count.value) -- all were in the ring already
    for i = 1, 300 do rs[i]:get() end
  end)

  it("fileno is a descriptor, poll delivers what arrived", function()
    local pool <close> = lmp.Pool(1)
    local fd = pool:fileno()
    assert.are.equal("integer", math.type(fd))
    assert.is_true(fd >= 0)
    assert.are.equal(0, pool:poll())
    local r = pool:apply_async(function() return 9 end)
    assert.is_true(eventually(function() return pool:poll() == 1 end))
    assert.is_true(r:ready())
    assert.are.equal(9, r:get())
  end)

  it("stats shows the workers and the counters", function()
    local pool <close> = lmp.Pool(2)
    pool:map(function(x) return x end, range(10), 1)
    local s = pool:stats()
    assert.are.equal(2, #s.workers)
    assert.are.equal(10, s.done)
    assert.are.equal(0, s.failed)
    assert.are.equal(0, s.queued)
    for _, w in ipairs(s.workers) do
      assert.is_number(w.pid)
      assert.is_true(w.state == "idle" or w.state == "starting")
    end
  end)

  it("stats and lmp top read the same counters, current while the owner is away", function()
    local top = require("lmp.core").top -- what lmp top reads
    local me = lmp.current_process().pid
    local known = {}
    for _, e in ipairs(top.pools(me)) do known[e.name] = true end
    local pool <close> = lmp.Pool(2)
    local name
    for _, e in ipairs(top.pools(me)) do
      if not known[e.name] then name = e.name end
    end
    assert.is_not_nil(name)
    local function counts(s)
      return {queued = s.queued, running = s.running, done = s.done, failed = s.failed}
    end
    local r = pool:map_async(function(x) return x end, range(8), 1)
    -- Away from the pool: only the observer's view is read until all is done.
    assert.is_truthy(eventually(function() return top.peek(name).done == 8 end))
    assert.are.same({queued = 0, running = 0, done = 8, failed = 0}, counts(pool:stats()))
    assert.are.same(counts(pool:stats()), counts(top.peek(name)))
    r:get()
    -- Both tasks of a failed map run (the barrier holds each until the
    -- other has started); once the workers are idle nothing is running,
    -- and both failures are counted though only the first was delivered.
    local b = lmp.Barrier(2)
    assert.is_not_nil(raised(pool.map, pool, function() b:wait() error("no") end, range(2), 1))
    assert.is_truthy(eventually(function()
      local ws = top.peek(name).workers
      return ws[1].state == "idle" and ws[2].state == "idle"
    end))
    local s = pool:stats()
    assert.are.same({queued = 0, running = 0, done = 8, failed = 2}, counts(s))
    assert.are.same(counts(s), counts(top.peek(name)))
  end)

  it("leaves nothing in /dev/shm", function()
    local prefix = tostring(lmp.Queue()):match("/(lmp%.%d+%.%x+%.)")
    local before = #support.shm_entries(prefix)
    do
      local pool = lmp.Pool(2)
      pool:map(function(x) return x end, range(100))
      pool:close()
      pool:join()
      local p2 <close> = lmp.Pool(1)
      p2:apply(function() return 1 end)
    end
    collectgarbage()
    collectgarbage()
    assert.is_true(eventually(function() return #support.shm_entries(prefix) <= before end))
    local out, code = support.run([[
      local lmp = require "lmp"
      local pool = lmp.Pool(2)
      print(tostring(lmp.Queue()))
      pool:map(function(x) return x end, {1, 2, 3})
      pcall(pool.apply, pool, function() os.exit(1) end)
      pool:apply_async(function() require("lmp").sleep(30) end)
    ]])
    assert.are.equal(0, code, out)
    local p = out:match("/(lmp%.%d+%.%x+%.)")
    assert.is_not_nil(p, out)
    assert.are.same({}, support.shm_entries(p))
  end)
end)

describe("lmp.Pool progress", function()
  it("draws nothing when stderr is not a terminal", function()
    local out, code = support.run([[
      local lmp = require "lmp"
      local pool <close> = lmp.Pool(2)
      local r = pool:map(function(x) return x end, {1, 2, 3, 4}, {progress = true, chunksize = 1})
      for _ in pool:imap(function(x) return x end, {1, 2}, {progress = true}) do end
      io.write("done ", #r, "\n")
    ]])
    assert.are.equal(0, code)
    assert.are.equal("done 4\n", out)
  end)

  it("draws done/total, rate and ETA on a terminal", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write([[
      local lmp = require "lmp"
      local pool <close> = lmp.Pool(2)
      pool:map(function(x) return x end, {1, 2, 3, 4}, {progress = true, chunksize = 1})
    ]])
    f:close()
    local out = support.shell(string.format("script -qec '%s %s' /dev/null", support.lmp_bin, path))
    os.remove(path)
    assert.matches("4/4 100%%", out)
    assert.matches("ETA", out)
  end)

  it("fits the terminal, follows a resize, starts at 0/N and redraws its clock", function()
    -- One worker: item 1 takes 2 s; item 2 narrows the terminal to 30
    -- columns (the workers share it) and says so.
    local path = support.tmpfile([[
      local lmp = require "lmp"
      local pool <close> = lmp.Pool(1)
      pool:map(function(x)
        if x == 2 then
          os.execute("stty cols 30")
          io.stderr:write("\nRESIZED\n")
        end
        lmp.sleep(x == 1 and 2 or 0.6)
        return x
      end, {1, 2, 3}, {progress = true, chunksize = 1})
      io.stderr:write("IMAP\n")
      for _ in pool:imap(function(x) lmp.sleep(1.5) return x end, {1}, {progress = true}) do end
    ]])
    local out = support.shell(string.format("TERM=dumb script -qfec 'stty cols 40 rows 20; %s %s' /dev/null",
                                            support.lmp_bin, path))
    os.remove(path)
    local before, after = out:match("^(.-)RESIZED(.*)$")
    assert.is_not_nil(before, out)
    local function drawings(s)
      local t = {}
      for piece in s:gmatch("[^\r\n]+") do t[#t + 1] = piece end
      return t
    end
    local first = drawings(before)
    assert.matches("^%[%.+%] 0/3 ", first[1]) -- at once, before anything completes
    local clock
    for _, d in ipairs(first) do
      assert.is_true(#d < 40, d)
      if d:match(" 0/3 ") and d:match(" 0:0[1-9] ETA") then clock = d end
    end
    assert.is_not_nil(clock, before) -- the elapsed time moved while item 1 ran
    local imap
    after, imap = after:match("^(.-)IMAP(.*)$")
    for _, d in ipairs(drawings(after)) do assert.is_true(#d < 30, d) end
    assert.matches("3/3 100%%", after)
    -- imap's bar too
    assert.matches("^%s*0/1 ", drawings(imap)[1])
    assert.matches("0/1 [^\r]* 0:01 ETA", imap)
  end)

  it("formats the bar", function()
    local progress = require "lmp.progress"
    local line = progress.format(50, 200, 2)
    assert.matches("^%[#+%.+%] 50/200  25%% 25%.0/s 0:02 ETA 0:06$", line)
    -- narrower terminals: the bar, then the rate and the clock give way
    assert.are.equal("50/200  25% 25.0/s 0:02 ETA 0:06", progress.format(50, 200, 2, 40))
    assert.are.equal("50/200  25% ETA 0:06", progress.format(50, 200, 2, 22))
    assert.are.equal("50/20", progress.format(50, 200, 2, 6))
    assert.matches("^7 done", progress.format(7, nil, 1))
    local buf = {}
    local stream = {write = function(_, ...) for _, s in ipairs({...}) do buf[#buf + 1] = s end end,
                    flush = function() end}
    local clock = 0
    local bar = progress.new(10, {stream = stream, clock = function() return clock end})
    bar:update(5)
    clock = 1
    bar:update(10)
    bar:finish()
    bar:finish()
    local text = table.concat(buf)
    assert.matches("10/10 100%%", text)
    assert.are.equal("\n", text:sub(-1))
  end)
end)

describe("lmp.Pool arguments", function()
  local pool
  before_each(function() pool = lmp.Pool(1) end)
  after_each(function() pool:terminate() end)

  it("rejects bad constructor arguments", function()
    assert.has_error(function() lmp.Pool(0) end,
      "bad argument #1 to 'Pool' (processes must be a positive integer)")
    assert.has_error(function() lmp.Pool("two") end,
      "bad argument #1 to 'Pool' (number expected, got string)")
    assert.has_error(function() lmp.Pool{proccesses = 2} end,
      "bad argument #1 to 'Pool' (unknown option 'proccesses')")
    assert.has_error(function() lmp.Pool{processes = 1.5} end,
      "bad argument #1 to 'Pool' (field 'processes' must be a positive integer)")
    assert.has_error(function() lmp.Pool{initializer = 3} end,
      "bad argument #1 to 'Pool' (field 'initializer' must be callable)")
    assert.has_error(function() lmp.Pool{task_timeout = -1} end,
      "bad argument #1 to 'Pool' (field 'task_timeout' must be a positive number)")
    assert.has_error(function() lmp.Pool{start_method = 7} end,
      "bad argument #1 to 'Pool' (unknown start method '7')")
    assert.has_error(function() lmp.Pool{start_method = "thread"} end,
      "bad argument #1 to 'Pool' (unknown start method 'thread')")
    assert.has_error(function() lmp.Pool({}, 2) end,
      "bad argument #2 to 'Pool' (no arguments expected after the options table)")
    assert.has_error(function() lmp.Pool(1, 5) end,
      "bad argument #2 to 'Pool' (function expected, got number)")
    -- Limits the core enforces are reported under the name the user called.
    assert.has_error(function() lmp.Pool(5000) end,
      "bad argument #1 to 'Pool' (processes must be at most 4096)")
    assert.has_error(function() lmp.Pool{processes = 5000} end,
      "bad argument #1 to 'Pool' (field 'processes' must be at most 4096)")
    assert.has_error(function() lmp.Pool(1, nil, nil, 2 ^ 40) end,
      "bad argument #4 to 'Pool' (maxtasksperchild must be a positive integer)")
    assert.has_error(function() lmp.Pool{task_timeout = 1e12} end,
      "bad argument #1 to 'Pool' (field 'task_timeout' must be less than 9e9 seconds)")
  end)

  it("checks self in every method of a Pool and an AsyncResult", function()
    local r = pool:apply_async(function() return 1 end)
    assert.are.equal(1, r:get(30))
    for _, m in ipairs({"apply", "apply_async", "map", "map_async", "starmap", "starmap_async",
                        "imap", "imap_unordered", "close", "terminate", "join", "poll", "fileno",
                        "stats"}) do
      assert.has_error(function() pool[m](print, {1}) end,
        "calling '" .. m .. "' on bad self (lmp.Pool expected, got function)")
    end
    for _, m in ipairs({"wait", "get", "ready", "successful", "running", "cancel", "cancelled"}) do
      assert.has_error(function() r[m](pool) end,
        "calling '" .. m .. "' on bad self (lmp.AsyncResult expected, got lmp.Pool)")
    end
  end)

  it("rejects bad method arguments, numbered after self", function()
    assert.has_error(function() pool:apply(42) end,
      "bad argument #1 to 'apply' (function expected, got number)")
    assert.has_error(function() pool:apply_async(print, 5) end,
      "bad argument #2 to 'apply_async' (table expected, got number)")
    assert.has_error(function() pool:apply_async(print, {}, {callbak = print}) end,
      "bad argument #3 to 'apply_async' (unknown option 'callbak')")
    assert.has_error(function() pool:apply_async(print, {}, {callback = 1}) end,
      "bad argument #3 to 'apply_async' (option 'callback' must be callable)")
    assert.has_error(function() pool:map(print, 5) end,
      "bad argument #2 to 'map' (table expected, got number)")
    assert.has_error(function() pool:map(print, {}, 0) end,
      "bad argument #3 to 'map' (chunksize must be a positive integer)")
    assert.has_error(function() pool:map(print, {}, {chunksize = 0}) end,
      "bad argument #3 to 'map' (option 'chunksize' must be a positive integer)")
    assert.has_error(function() pool:map(print, {}, {callback = print}) end,
      "bad argument #3 to 'map' (unknown option 'callback')")
    assert.has_error(function() pool:starmap("f", {}) end,
      "bad argument #1 to 'starmap' (function expected, got string)")
    assert.has_error(function() pool:imap(print, 5) end,
      "bad argument #2 to 'imap' (table or function expected, got number)")
    local r = pool:apply_async(function() return 1 end)
    assert.has_error(function() r:get(-1) end,
      "bad argument #1 to 'get' (timeout must be a non-negative number)")
    assert.has_error(function() r:wait("soon") end,
      "bad argument #1 to 'wait' (number expected, got string)")
    r:get()
    local slow = pool:apply_async(function() require("lmp").sleep(1) end)
    assert.has_error(function() slow:successful() end,
      "calling 'successful' on bad self (result is not ready)")
  end)
end)

describe("lmp.Pool on a small /dev/shm", function()
  for _, method in ipairs({"fork", "spawn", "forkserver"}) do
    it("carries large results past a full /dev/shm, no worker lost (" .. method .. ")", function()
      local why = support.small_shm_unavailable()
      if why then return pending(why) end
      local out, code = support.run_small_shm("2m", string.format([[
        local lmp = require "lmp"
        local pool = lmp.Pool{processes = 2, start_method = %q}
        local r = pool:map(function(i) return string.rep("p", 1 << 20) .. i end,
                           {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20})
        local ok = 0
        for i, v in ipairs(r) do if v == string.rep("p", 1 << 20) .. i then ok = ok + 1 end end
        pool:close(); pool:join()
        print("ok", ok)
      ]], method))
      assert.are.equal(0, code, out)
      assert.matches("ok\t20", out)
      assert.is_nil(out:find("signal", 1, true), out)
    end)
  end
end)

-- ^C at a terminal reaches the root and its workers alike (the pty's
-- process group): the workers ignore it, the root's call raises and stops
-- its work.
local interrupted_pool = [[
local lmp = require "lmp"
local pool = lmp.get_context(arg[1]).Pool(2)
local function pids()
  local t
  for _ = 1, 1000 do -- a replacement may still be starting (spawn, forkserver)
    t = {}
    for _, w in ipairs(pool:stats().workers) do t[#t + 1] = w.pid end
    if #t == 2 then break end
    lmp.sleep(0.01)
  end
  table.sort(t)
  return table.concat(t, " ")
end
local function report(tag, ok, e)
  print(tag, ok, lmp.is_error(e) and "lmp.Error " .. e.kind or tostring(e))
end
local function long(x)
  print("running")
  io.stdout:flush()
  require("lmp").sleep(x)
  return x
end
assert(#pool:map(function(x) return x end, {1, 2}) == 2)
print("pid", lmp.current_process().pid)
print("workers", pids())
print("step map")
report("map", pcall(pool.map, pool, long, {3600}, 1))
print("doubled", table.concat(pool:map(function(x) return 2 * x end, {1, 2, 3}), ","))
print("workers", pids())
print("step apply")
report("apply", pcall(pool.apply, pool, long, 3600))
print("tripled", pool:apply(function(x) return 3 * x end, 7))
print("workers", pids())
print("step imap")
report("imap", pcall(function()
  for _, v in pool:imap(long, {3600, 3600, 3600}) do print(v) end
end))
print("sum", pool:apply(function(a, b) return a + b end, 1, 2))
print("workers", pids())
local q = lmp.Queue()
print("segment", tostring(q))
print("step uncaught")
pool:map(long, {3600, 3600}, 1)
print("not reached")
]]

describe("lmp.Pool and ^C", function()
  local function words(s)
    local t = {}
    for w in s:gmatch("%d+") do t[#t + 1] = tonumber(w) end
    return t
  end

  -- How many of `before` are still in `after`.
  local function kept(before, after)
    local n = 0
    for _, a in ipairs(after) do
      for _, b in ipairs(before) do n = n + (a == b and 1 or 0) end
    end
    return n
  end

  for _, method in ipairs({"fork", "spawn", "forkserver"}) do
    it("stops the interrupted call's tasks and replaces their workers, the others ignore ^C (" .. method .. ")", function()
      local path = support.tmpfile(interrupted_pool)
      local s = support.pty(support.lmp_bin .. " " .. path .. " " .. method)
      s:expect("pid\t")
      local pid = tonumber(s:match("\n", "^(%d+)"))
      s:expect("workers\t")
      local w = words(s:match("\n", "^([%d ]+)"))
      for _, step in ipairs({{"map", "doubled\t2,4,6"}, {"apply", "tripled\t21"}, {"imap", "sum\t3"}}) do
        s:expect("step " .. step[1])
        -- the tasks have started (imap's, on both workers) and the root waits
        s:expect("running")
        if step[1] == "imap" then s:expect("running") end
        assert.is_truthy(support.blocked(pid))
        s:send("\3")
        s:expect(step[1] .. "\tfalse\tlmp.Error interrupted")
        s:expect(step[2])
        s:expect("workers\t")
        local now = words(s:match("\n", "^([%d ]+)"))
        assert.are.equal(2, #now)
        -- The worker that ran the interrupted task was replaced; the idle
        -- one (imap: the chunks took both) ignored ^C and is still there.
        assert.are.equal(step[1] == "imap" and 0 or 1, kept(w, now), step[1])
        w = now
      end
      s:expect("segment\t")
      local seg = s:output():match("(/lmp[^,)]+)", s.seen):sub(2)
      s:expect("step uncaught")
      s:expect("running")
      s:expect("running")
      assert.is_truthy(support.blocked(pid))
      s:send("\3")
      assert.are.equal(130, s:close(), s.transcript)
      assert.matches("lmp%.Error%(interrupted%): interrupted", s.transcript)
      assert.is_nil(s.transcript:find("not reached", 1, true))
      assert.is_truthy(all_dead(w))
      assert.is_false(support.shm_exists(seg))
      os.remove(path)
    end)
  end
end)

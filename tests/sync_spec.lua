local support = dofile("tests/support.lua")
local lmp = require "lmp"

local spawn, raised = support.spawn, support.raised

-- Starts a process that acquires `lock` `times` times (default once), says
-- so and sleeps 30 s; returns the Process once the lock is held.
local function holder(lock, times)
  local q = lmp.Queue()
  local p = spawn(function()
    for _ = 1, times or 1 do lock:acquire() end
    q:put("held")
    lmp.sleep(30)
  end)
  assert.are.equal("held", q:get(10))
  return p
end

-- Starts a process that waits on barrier `b` (with `timeout`) and puts
-- {ok, error kind or error} on `out`; returns the Process once it waits
-- (or after 2 s).
local function barrier_waiter(b, out, timeout)
  local p = spawn(function()
    local ok, err = pcall(b.wait, b, timeout)
    out:put({ok, lmp.is_error(err) and err.kind or err})
  end)
  for _ = 1, 200 do
    if b.n_waiting == 1 then break end
    lmp.sleep(0.01)
  end
  return p
end

-- Gets n values from q (each within 10 s), sorted when they are numbers.
local function collect(q, n)
  local out = {}
  for i = 1, n do
    local v, err = q:get(10)
    assert.is_nil(err)
    out[i] = v
  end
  if type(out[1]) == "number" then table.sort(out) end
  return out
end

local function segname(h)
  return tostring(h):match("%((/?[^)]+)%)"):gsub("^/", "")
end

local function shm_exists(name)
  for _, n in ipairs(support.shm_entries(name)) do
    if n == name then return true end
  end
  return false
end

describe("lmp.Lock", function()
  it("acquires, releases and reports its state", function()
    local l = lmp.Lock()
    assert.is_false(l:locked())
    assert.is_true(l:acquire())
    assert.is_true(l:locked())
    l:release()
    assert.is_false(l:locked())
    assert.is_true(l:acquire(0))
    l:release()
  end)

  it("times out with false while another process holds it", function()
    local l = lmp.Lock()
    local p = holder(l)
    assert.is_true(l:locked())
    assert.is_false(l:acquire(0))
    local t0 = lmp.time()
    assert.is_false(l:acquire(0.1))
    assert.is_true(lmp.time() - t0 >= 0.09)
    local err = raised(l.release, l)
    assert.are.equal("cannot release un-acquired lock (held by process " .. p.pid .. ")", err)
    p:kill()
    p:join(10)
  end)

  it("raises instead of deadlocking when this process acquires it twice", function()
    local l = lmp.Lock()
    l:acquire()
    assert.matches("would deadlock", raised(l.acquire, l))
    assert.is_false(l:acquire(0))
    local t0 = lmp.time()
    assert.is_false(l:acquire(0.05)) -- the timeout is waited out, as in Python
    assert.is_true(lmp.time() - t0 >= 0.045)
    l:release()
    assert.are.equal("release unlocked lock", raised(l.release, l))
  end)

  it("excludes: 4 processes x 10k increments of a shared counter = 40000", function()
    local l = lmp.Lock()
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write("0")
    f:close()
    local function bump()
      local r = assert(io.open(path))
      local n = tonumber(r:read("a"))
      r:close()
      local w = assert(io.open(path, "w"))
      w:write(tostring(n + 1))
      w:close()
    end
    local procs = {}
    for i = 1, 4 do
      procs[i] = spawn(function()
        for _ = 1, 10000 do
          l:acquire()
          bump()
          l:release()
        end
      end)
    end
    for _, p in ipairs(procs) do
      assert.is_true(p:join(120))
      assert.are.equal(0, p.exitcode)
    end
    f = assert(io.open(path))
    local total = tonumber(f:read("a"))
    f:close()
    os.remove(path)
    assert.are.equal(40000, total)
  end)

  it("with(fn, ...) runs fn under the lock and returns its results", function()
    local l = lmp.Lock()
    local a, b, n = l:with(function(x, y)
      assert.is_true(l:locked())
      return x + y, "two", nil
    end, 1, 2)
    assert.are.equal(3, a)
    assert.are.equal("two", b)
    assert.is_nil(n)
    assert.are.equal(3, select("#", l:with(function() return 1, 2, nil end)))
    assert.is_false(l:locked())
  end)

  it("with releases on error and raises the error unchanged", function()
    local l = lmp.Lock()
    local e = {"mine"}
    assert.are.equal(e, raised(l.with, l, function() error(e) end))
    assert.is_false(l:locked())
    local msg = raised(l.with, l, function() error("boom", 0) end)
    assert.are.equal("boom", msg)
    assert.is_false(l:locked())
    -- a callable table is a function too
    local callable = setmetatable({}, {__call = function(_, x) return x * 2 end})
    assert.are.equal(8, l:with(callable, 4))
  end)

  it("as a <close> variable releases the hold this process has", function()
    local l = lmp.Lock()
    do
      l:acquire()
      local _ <close> = l
      assert.is_true(l:locked())
    end
    assert.is_false(l:locked())
    pcall(function()
      l:acquire()
      local _ <close> = l
      error("leaves the scope")
    end)
    assert.is_false(l:locked())
    do
      local l2 <close> = lmp.Lock() -- not held: nothing to do
      assert.is_false(l2:locked())
    end
  end)

  it("is taken over with owner_died when its holder is killed", function()
    local l = lmp.Lock()
    local p = holder(l)
    p:kill()
    assert.is_true(p:join(10))
    local ok, why = l:acquire(5)
    assert.is_true(ok)
    assert.are.equal("owner_died", why)
    l:release()
    ok, why = l:acquire(5)
    assert.is_true(ok)
    assert.is_nil(why)
    l:release()
  end)

  it("is taken over with owner_died by acquire() without a timeout", function()
    for _, make in ipairs({lmp.Lock, lmp.RLock}) do
      local l = make()
      local p = holder(l)
      p:kill()
      assert.is_true(p:join(10))
      assert.are.same({true, "owner_died"}, {l:acquire()})
      l:release()
      assert.are.same({true}, {l:acquire()})
      l:release()
      assert.is_false(l:locked())
    end
  end)

  it("wakes a process already waiting when the holder is killed", function()
    local l, out = lmp.Lock(), lmp.Queue()
    local h = holder(l)
    local waiter = spawn(function() out:put({l:acquire(20)}) end)
    lmp.sleep(0.1)
    h:kill()
    assert.are.same({true, "owner_died"}, out:get(10))
    assert.is_true(waiter:join(10))
  end)

  it("is handed on with owner_died when its holder ends or fails holding it", function()
    local l = lmp.Lock()
    local p = spawn(function() l:acquire() end)
    assert.is_true(p:join(10))
    assert.are.same({true, "owner_died"}, {l:acquire(5)})
    l:release()
    local f = lmp.Process{target = function()
      l:acquire()
      error("failed inside the critical section (expected by the test)")
    end, name = "dies-holding"}
    f:start()
    assert.is_true(f:join(10))
    assert.are.equal(1, f.exitcode)
    assert.are.same({true, "owner_died"}, {l:acquire(5)})
    l:release()
  end)

  it("is handed on with owner_died when a process drops its last handle while holding it", function()
    local control, done = lmp.Queue(), lmp.Queue()
    local p = spawn(function()
      local l = control:get(10)
      l:acquire()
      l = nil -- luacheck: ignore
      collectgarbage()
      collectgarbage()
      done:put("dropped")
      lmp.sleep(30)
    end)
    local l = lmp.Lock()
    control:put(l)
    assert.are.equal("dropped", done:get(10))
    assert.are.same({true, "owner_died"}, {l:acquire(5)})
    l:release()
    p:kill()
    p:join(10)
  end)
end)

describe("lmp.RLock", function()
  it("is recursive for its owner and counts releases", function()
    local r = lmp.RLock()
    assert.is_true(r:acquire())
    assert.is_true(r:acquire(0))
    assert.is_true(r:acquire())
    r:release()
    r:release()
    assert.is_true(r:locked())
    r:release()
    assert.is_false(r:locked())
    assert.are.equal("release unlocked lock", raised(r.release, r))
    assert.are.equal(6, r:with(function() return r:with(function() return 6 end) end))
    assert.is_false(r:locked())
  end)

  it("release by a process that does not own it raises", function()
    local r, out = lmp.RLock(), lmp.Queue()
    r:acquire()
    local p = spawn(function()
      local ok, err = pcall(r.release, r)
      out:put({ok, err, r:acquire(0)})
    end)
    local res = out:get(10)
    assert.is_false(res[1])
    assert.are.equal("cannot release un-acquired lock (held by process "
      .. lmp.current_process().pid .. ")", res[2])
    assert.is_false(res[3])
    assert.is_true(p:join(10))
    r:release()
  end)

  it("is taken over with owner_died, held once, when its owner is killed", function()
    local r = lmp.RLock()
    local p = holder(r, 2)
    p:kill()
    p:join(10)
    assert.are.same({true, "owner_died"}, {r:acquire(5)})
    r:release()
    assert.is_false(r:locked())
  end)
end)

describe("lmp.Semaphore", function()
  it("counts", function()
    local s = lmp.Semaphore(2)
    assert.are.equal(2, s:get_value())
    assert.is_true(s:acquire())
    assert.is_true(s:acquire(0))
    assert.are.equal(0, s:get_value())
    assert.is_false(s:acquire(0))
    local t0 = lmp.time()
    assert.is_false(s:acquire(0.05))
    assert.is_true(lmp.time() - t0 >= 0.045)
    s:release()
    s:release(3) -- a plain Semaphore may go past its initial value
    assert.are.equal(4, s:get_value())
    assert.are.equal(1, lmp.Semaphore():get_value())
    assert.are.equal(0, lmp.Semaphore{value = 0}:get_value())
  end)

  it("blocks a third process until a unit comes back", function()
    local s, q, out = lmp.Semaphore(2), lmp.Queue(), lmp.Queue()
    local holders = {}
    for i = 1, 2 do
      holders[i] = spawn(function()
        s:acquire()
        q:put("in")
        lmp.sleep(0.3)
        s:release()
      end)
    end
    assert.are.same({"in", "in"}, collect(q, 2))
    local p = spawn(function() out:put({s:acquire(0), s:acquire(10)}) end)
    assert.are.same({false, true}, out:get(10))
    for _, h in ipairs(holders) do assert.is_true(h:join(10)) end
    assert.is_true(p:join(10))
    assert.are.equal(1, s:get_value())
  end)

  it("with and <close> give the unit back", function()
    local s = lmp.Semaphore(1)
    assert.are.equal("x", s:with(function()
      assert.are.equal(0, s:get_value())
      return "x"
    end))
    assert.are.equal(1, s:get_value())
    raised(s.with, s, function() error("e") end)
    assert.are.equal(1, s:get_value())
    do
      s:acquire()
      local _ <close> = s
      assert.are.equal(0, s:get_value())
    end
    assert.are.equal(1, s:get_value())
    do
      local _ <close> = s -- nothing taken through this handle: nothing given back
    end
    assert.are.equal(1, s:get_value())
  end)

  it("a waiter killed in its wait does not take a unit from the others", function()
    local s, out = lmp.Semaphore(0), lmp.Queue()
    local dead = spawn(function() s:acquire() end)
    local live = spawn(function() out:put(s:acquire(20)) end)
    lmp.sleep(0.1)
    dead:kill()
    dead:join(10)
    s:release()
    assert.is_true(out:get(10))
    assert.is_true(live:join(10))
    assert.are.equal(0, s:get_value())
  end)
end)

describe("lmp.BoundedSemaphore", function()
  it("raises when released past its initial value", function()
    local b = lmp.BoundedSemaphore(2)
    assert.are.equal("Semaphore released too many times", raised(b.release, b))
    b:acquire()
    assert.are.equal("Semaphore released too many times", raised(b.release, b, 2))
    b:release()
    assert.are.equal(2, b:get_value())
    assert.are.equal("Semaphore released too many times", raised(b.release, b))
    local one = lmp.BoundedSemaphore(1)
    assert.are.equal("Semaphore released too many times",
      raised(one.with, one, function() one:release() end))
    assert.are.equal(1, one:get_value())
  end)
end)

describe("lmp.Event", function()
  it("set, clear, is_set; wait returns true at once when set", function()
    local e = lmp.Event()
    assert.is_false(e:is_set())
    assert.is_false(e:wait(0))
    local t0 = lmp.time()
    assert.is_false(e:wait(0.05))
    assert.is_true(lmp.time() - t0 >= 0.045)
    e:set()
    assert.is_true(e:is_set())
    t0 = lmp.time()
    assert.is_true(e:wait(30))
    assert.is_true(e:wait())
    assert.is_true(lmp.time() - t0 < 5)
    e:clear()
    assert.is_false(e:is_set())
  end)

  it("set in one process wakes the waiters in the others", function()
    local e, out = lmp.Event(), lmp.Queue()
    local procs = {}
    for i = 1, 3 do procs[i] = spawn(function() out:put(e:wait(20)) end) end
    lmp.sleep(0.1)
    spawn(function() e:set() end):join(10)
    assert.are.same({true, true, true}, collect(out, 3))
    for _, p in ipairs(procs) do assert.is_true(p:join(10)) end
  end)
end)

describe("lmp.Condition", function()
  it("wait and notify need the lock", function()
    local c = lmp.Condition()
    assert.are.equal("cannot wait on un-acquired lock", raised(c.wait, c, 0))
    assert.are.equal("cannot notify on un-acquired lock", raised(c.notify, c))
    assert.are.equal("cannot notify on un-acquired lock", raised(c.notify_all, c))
    assert.are.equal("release unlocked lock", raised(c.release, c))
    assert.is_true(c:acquire())
    local t0 = lmp.time()
    assert.is_false(c:wait(0.05))
    assert.is_true(lmp.time() - t0 >= 0.045)
    c:notify() -- nobody waits: nothing happens
    c:notify_all()
    c:release()
  end)

  it("notify(n) wakes at most n waiters", function()
    local c, ready, woke = lmp.Condition(), lmp.Queue(), lmp.Queue()
    local procs = {}
    for i = 1, 4 do
      procs[i] = spawn(function()
        c:acquire()
        ready:put(i)
        woke:put(c:wait(30) and i or -i)
        c:release()
      end)
    end
    collect(ready, 4)
    c:acquire() -- every waiter has let go of the lock: all are waiting
    c:notify(2)
    c:release()
    local first = collect(woke, 2)
    assert.is_true(first[1] > 0 and first[2] > 0)
    local v, err = woke:get(0.3)
    assert.is_nil(v); assert.are.equal("timeout", err)
    c:with(function() c:notify(1) end)
    assert.is_true(woke:get(10) > 0)
    v, err = woke:get(0.2)
    assert.is_nil(v); assert.are.equal("timeout", err)
    c:with(function() c:notify_all() end)
    assert.is_true(woke:get(10) > 0)
    for _, p in ipairs(procs) do assert.is_true(p:join(10)) end
  end)

  it("wait_for returns the predicate's last value", function()
    local c, box = lmp.Condition(lmp.Lock()), lmp.Queue()
    c:acquire()
    assert.is_false(c:wait_for(function() return false end, 0.05))
    assert.is_nil(c:wait_for(function() return nil end, 0))
    assert.are.equal(7, c:wait_for(function() return 7 end))
    local p = spawn(function()
      lmp.sleep(0.1)
      c:with(function()
        box:put("ready")
        c:notify_all()
      end)
    end)
    local calls = 0
    local v = c:wait_for(function()
      calls = calls + 1
      return (box:get_nowait())
    end, 20)
    assert.are.equal("ready", v)
    assert.is_true(calls >= 2)
    c:release()
    assert.is_true(p:join(10))
  end)

  it("waits on an RLock held several times and takes every hold back", function()
    local r = lmp.RLock()
    local c = lmp.Condition{lock = r}
    c:acquire(); c:acquire()
    local p = spawn(function()
      c:acquire()
      c:notify()
      c:release()
    end)
    assert.is_true(c:wait(20))
    c:release()
    assert.is_true(r:locked())
    c:release()
    assert.is_false(r:locked())
    assert.is_true(p:join(10))
  end)

  it("a waiter killed in its wait does not swallow a notify", function()
    local c, ready, woke = lmp.Condition(), lmp.Queue(), lmp.Queue()
    local function waiter()
      c:acquire()
      ready:put(1)
      woke:put(c:wait(30))
      c:release()
    end
    local dead = spawn(waiter)
    ready:get(10)
    local live = spawn(waiter)
    ready:get(10)
    c:acquire()
    c:release()
    dead:kill()
    dead:join(10)
    c:with(function() c:notify() end)
    assert.is_true(woke:get(10))
    assert.is_true(live:join(10))
  end)

  it("takes the lock of a shared Value or Array, and crosses with it", function()
    local v = lmp.Value("int64", 0)
    local c, q = lmp.Condition(v:get_lock()), lmp.Queue()
    local p = spawn(function()
      local c2, v2 = table.unpack(q:get(10)) -- a running process receives them
      for _ = 1, 5 do
        c2:with(function()
          v2.value = v2.value + 1
          c2:notify_all()
        end)
      end
    end)
    q:put({c, v})
    c:acquire()
    assert.are.equal(5, c:wait_for(function() return v.value == 5 and v.value end, 20))
    assert.is_true(v:get_lock():locked()) -- the Condition's lock is the value's
    c:release()
    assert.is_false(v:get_lock():locked())
    assert.is_true(p:join(10))

    local a = lmp.Array("int32", 3)
    local ca = lmp.Condition{lock = a:get_lock()}
    assert.are.equal("cannot wait on un-acquired lock", raised(ca.wait, ca, 0))
    ca:with(function()
      assert.is_true(a:get_lock():locked())
      assert.is_false(ca:wait(0.01))
    end)
    assert.is_false(a:get_lock():locked())
    assert.is_true(lmp.deserialize(lmp.serialize(ca)):acquire(0))
    assert.is_true(a:get_lock():locked())
    ca:release()
  end)
end)

describe("lmp.Barrier", function()
  it("gives distinct indexes 0..parties-1 and runs the action once per generation", function()
    local idx, acts = lmp.Queue(), lmp.Queue()
    local b = lmp.Barrier(3, function() acts:put(lmp.current_process().pid) end)
    assert.are.equal(3, b.parties)
    local procs = {}
    for i = 1, 2 do
      procs[i] = spawn(function()
        for g = 1, 4 do idx:put({g, b:wait(20), lmp.current_process().pid}) end
      end)
    end
    local mine = {}
    for g = 1, 4 do mine[g] = {g, b:wait(20), lmp.current_process().pid} end
    for _, p in ipairs(procs) do assert.is_true(p:join(10)) end
    local per = {{}, {}, {}, {}}
    local last = {}
    local function add(r)
      per[r[1]][#per[r[1]] + 1] = r[2]
      if r[2] == 2 then last[r[1]] = r[3] end
    end
    for _, r in ipairs(mine) do add(r) end
    for _ = 1, 8 do add(idx:get(10)) end
    local runners = {}
    for g = 1, 4 do
      table.sort(per[g])
      assert.are.same({0, 1, 2}, per[g])
      runners[#runners + 1] = acts:get(10)
    end
    assert.is_nil((acts:get(0.1)))
    -- each generation's action ran in the process that arrived last (index 2)
    table.sort(runners)
    table.sort(last)
    assert.are.same(last, runners)
    assert.is_false(b.broken)
    assert.are.equal(0, b.n_waiting)
  end)

  it("abort breaks it for every waiter; reset makes it usable again", function()
    local b, out = lmp.Barrier(3), lmp.Queue()
    local function waiter()
      local ok, err = pcall(b.wait, b, 20)
      out:put({ok, lmp.is_error(err) and err.kind or err})
    end
    local procs = {spawn(waiter), spawn(waiter)}
    for _ = 1, 200 do
      if b.n_waiting == 2 then break end
      lmp.sleep(0.01)
    end
    assert.are.equal(2, b.n_waiting)
    b:abort()
    assert.are.same({{false, "broken_barrier"}, {false, "broken_barrier"}}, collect(out, 2))
    assert.is_true(b.broken)
    local err = raised(b.wait, b)
    assert.is_true(lmp.is_error(err))
    assert.are.equal("broken_barrier", err.kind)
    for _, p in ipairs(procs) do assert.is_true(p:join(10)) end
    b:reset()
    assert.is_false(b.broken)
    procs = {spawn(function() out:put(b:wait(20)) end), spawn(function() out:put(b:wait(20)) end)}
    local i = b:wait(20)
    local all = collect(out, 2)
    all[3] = i
    table.sort(all)
    assert.are.same({0, 1, 2}, all)
    for _, p in ipairs(procs) do assert.is_true(p:join(10)) end
  end)

  it("a timeout breaks it for every waiter", function()
    local b, out = lmp.Barrier(3), lmp.Queue()
    local p = barrier_waiter(b, out)
    local err = raised(b.wait, b, 0.05)
    assert.are.equal("broken_barrier", err.kind)
    assert.are.same({false, "broken_barrier"}, out:get(10))
    assert.is_true(b.broken)
    assert.is_true(p:join(10))
    -- the constructor's timeout is the default
    local b2 = lmp.Barrier{parties = 2, timeout = 0.05}
    assert.are.equal("broken_barrier", raised(b2.wait, b2).kind)
    assert.is_true(b2.broken)
  end)

  it("reset breaks the current waiters only", function()
    local b, out = lmp.Barrier(2), lmp.Queue()
    local p = barrier_waiter(b, out, 20)
    b:reset()
    assert.are.same({false, "broken_barrier"}, out:get(10))
    assert.is_false(b.broken)
    assert.is_true(p:join(10))
    local q = spawn(function() out:put(b:wait(20)) end)
    local both = {b:wait(20), out:get(10)}
    table.sort(both)
    assert.are.same({0, 1}, both)
    assert.is_true(q:join(10))
  end)

  it("an action that fails raises its error in the last process and breaks the barrier", function()
    local boom = {"boom"}
    local b, out = lmp.Barrier(2, function() error(boom) end), lmp.Queue()
    local p = barrier_waiter(b, out, 20)
    assert.are.equal(boom, raised(b.wait, b, 20))
    assert.are.same({false, "broken_barrier"}, out:get(10))
    assert.is_true(b.broken)
    assert.is_true(p:join(10))
  end)

  it("reaches a process started before it existed, action included", function()
    local control, out = lmp.Queue(), lmp.Queue()
    local p = spawn(function()
      local b = control:get(10)
      out:put(b:wait(20))
    end)
    local tag = "ran"
    local b = lmp.Barrier(2, function() out:put(tag) end)
    control:put(b)
    local i = b:wait(20)
    local got = collect(out, 2)
    table.sort(got, function(x, y) return tostring(x) < tostring(y) end)
    assert.are.same({i == 0 and 1 or 0, "ran"}, got)
    assert.is_true(p:join(10))
  end)
end)

describe("sync handles", function()
  it("pass through a Queue to a running process and work on the same object", function()
    local control, out = lmp.Queue(), lmp.Queue()
    local p = spawn(function()
      local t = control:get(10)
      t.lock:acquire()
      t.rlock:acquire(); t.rlock:acquire()
      t.sem:acquire()
      t.cond:acquire()
      t.event:set()
      out:put({t.lock:locked(), t.sem:get_value()})
      t.cond:wait(20)
      t.cond:release()
      t.lock:release()
      t.rlock:release(); t.rlock:release()
    end)
    local t = {lock = lmp.Lock(), rlock = lmp.RLock(), sem = lmp.BoundedSemaphore(3),
               event = lmp.Event(), cond = lmp.Condition(lmp.Lock())}
    control:put(t)
    assert.are.same({true, 2}, out:get(10))
    assert.is_true(t.event:wait(10))
    assert.is_true(t.lock:locked())
    assert.is_true(t.rlock:locked())
    assert.are.equal(2, t.sem:get_value())
    assert.is_true(t.cond:acquire(10)) -- the child waits: the lock is free
    t.cond:notify()
    t.cond:release()
    assert.is_true(p:join(10))
    assert.is_false(t.lock:locked())
    assert.is_false(t.rlock:locked())
    assert.are.equal(2, t.sem:get_value()) -- the child's unit is not given back
  end)

  it("pass as Process arguments", function()
    local out = lmp.Queue()
    local l, e = lmp.Lock(), lmp.Event()
    local p = spawn(function(lock, ev, q)
      q:put(lock:acquire(0))
      ev:wait(10)
      lock:release()
    end, l, e, out)
    assert.is_true(out:get(10))
    assert.is_true(l:locked())
    e:set()
    assert.is_true(p:join(10))
    assert.is_false(l:locked())
  end)

  it("survive serialize/deserialize in one process", function()
    local c = lmp.Condition()
    local c2 = lmp.deserialize(lmp.serialize(c))
    assert.are.equal(tostring(c), tostring(c2))
    c2:acquire()
    assert.is_false(c:wait(0)) -- the same lock, held by this process: no error
    c:release()
    local s = lmp.Semaphore(1)
    lmp.deserialize(lmp.serialize(s)):acquire()
    assert.are.equal(0, s:get_value())
  end)

  it("free their segment when the last handle is collected", function()
    local names = {}
    do
      local objs = {lmp.Lock(), lmp.RLock(), lmp.Semaphore(), lmp.BoundedSemaphore(),
                    lmp.Event(), lmp.Condition(), lmp.Barrier(2, function() end)}
      for i, o in ipairs(objs) do
        names[i] = segname(o)
        assert.is_true(shm_exists(names[i]), tostring(o))
      end
    end
    collectgarbage(); collectgarbage()
    for _, n in ipairs(names) do assert.is_false(shm_exists(n), n) end
  end)

  it("Event and Barrier as <close> variables drop the handle", function()
    local e2, b2
    do
      local e <close> = lmp.Event()
      local b <close> = lmp.Barrier(2)
      e2, b2 = e, b
    end
    assert.matches("closed", tostring(e2))
    assert.are.equal("attempt to use a closed lmp.Event", raised(e2.is_set, e2))
    assert.has_error(function() return b2.parties end, "attempt to use a closed lmp.Barrier")
    local ok, err = pcall(lmp.serialize, e2)
    assert.is_false(ok)
    assert.are.equal("serialize", err.kind)
  end)

  it("close() drops the handle of every kind: every use raises, close again does nothing", function()
    local makers = {
      Lock = lmp.Lock, RLock = lmp.RLock, Semaphore = lmp.Semaphore,
      BoundedSemaphore = lmp.BoundedSemaphore, Event = lmp.Event, Condition = lmp.Condition,
      Barrier = function() return lmp.Barrier(1) end,
      ValueLock = function() return lmp.Value("int64", 0):get_lock() end,
    }
    local probe = {Lock = "acquire", RLock = "acquire", Semaphore = "acquire",
                   BoundedSemaphore = "get_value", Event = "is_set", Condition = "notify",
                   Barrier = "wait", ValueLock = "locked"}
    for kind, make in pairs(makers) do
      local o = make()
      local seg = kind ~= "ValueLock" and segname(o)
      o:close()
      o:close()
      if seg then assert.is_false(shm_exists(seg), kind) end
      assert.matches("closed", tostring(o), kind)
      -- methods are still found, so pcall(o.method, o) catches the error
      assert.are.equal("attempt to use a closed lmp." .. kind, raised(o[probe[kind]], o), kind)
      local ok, err = pcall(lmp.serialize, o)
      assert.is_false(ok)
      assert.are.equal("serialize", err.kind, kind)
    end
    local b = lmp.Barrier(2)
    b:close()
    assert.has_error(function() return b.parties end, "attempt to use a closed lmp.Barrier")
  end)

  it("a Condition whose lock was closed raises instead of using it", function()
    for _, lock in ipairs{lmp.Lock(), lmp.RLock(), lmp.Value("int64", 0):get_lock()} do
      local c = lmp.Condition(lock)
      local name = getmetatable(lock).__name
      lock:close()
      assert.are.equal("attempt to use a closed " .. name, raised(c.acquire, c))
      local ok, err = pcall(lmp.serialize, c)
      assert.is_false(ok)
      assert.is_truthy(lmp.is_error(err) or tostring(err):match("closed"), tostring(err))
    end
  end)

  it("every kind works as a <close> variable", function()
    local l2, e2
    do
      local l <close> = lmp.Lock()
      local r <close> = lmp.RLock()
      local s <close> = lmp.Semaphore(1)
      local bs <close> = lmp.BoundedSemaphore(1)
      local e <close> = lmp.Event()
      local c <close> = lmp.Condition()
      local b <close> = lmp.Barrier(1)
      local v <close> = lmp.Value("int64", 0):get_lock()
      assert.is_true(l:acquire() and r:acquire() and s:acquire() and c:acquire() and v:acquire())
      l2, e2 = l, e
    end
    -- the lock-like kinds released their hold, the others dropped the handle
    assert.is_true(l2:acquire(0))
    assert.are.equal("attempt to use a closed lmp.Event", raised(e2.is_set, e2))
  end)

  it("reject bad arguments", function()
    local l, s, c, b = lmp.Lock(), lmp.Semaphore(), lmp.Condition(), lmp.Barrier(2)
    local r, e = lmp.RLock(), lmp.Event()
    local cases = {
      -- a method given a handle of another kind, or another userdata
      {function() l.acquire(s) end, "bad argument #1 to 'acquire' (lmp.Lock expected, got lmp.Semaphore)"},
      {function() l.release(e) end, "bad argument #1 to 'release' (lmp.Lock expected, got lmp.Event)"},
      {function() r.release(b) end, "bad argument #1 to 'release' (lmp.Lock expected, got lmp.Barrier)"},
      {function() l.locked(c) end, "bad argument #1 to 'locked' (lmp.Lock expected, got lmp.Condition)"},
      {function() l.acquire(io.stdout) end, "bad argument #1 to 'acquire' (lmp.Lock expected, got FILE*)"},
      {function() l.release(lmp.Value("int64", 0)) end,
        "bad argument #1 to 'release' (lmp.Lock expected, got lmp.Value)"},
      {function() l.release() end, "bad argument #1 to 'release' (lmp.Lock expected, got no value)"},
      {function() s.acquire(l) end, "bad argument #1 to 'acquire' (lmp.Semaphore expected, got lmp.Lock)"},
      {function() s.release(r) end, "bad argument #1 to 'release' (lmp.Semaphore expected, got lmp.RLock)"},
      {function() e.is_set(l) end, "bad argument #1 to 'is_set' (lmp.Event expected, got lmp.Lock)"},
      {function() e.is_set("x") end, "bad argument #1 to 'is_set' (lmp.Event expected, got string)"},
      {function() l:acquire("x") end, "bad argument #1 to 'acquire' (number expected, got string)"},
      {function() l:acquire(-1) end,
        "bad argument #1 to 'acquire' (timeout must be a non-negative number)"},
      {function() l:with(5) end, "bad argument #1 to 'with' (function expected, got number)"},
      {function() l.acquire(5) end, "bad argument #1 to 'acquire' (lmp.Lock expected, got number)"},
      {function() lmp.Lock{x = 1} end, "bad argument #1 to 'Lock' (unknown option 'x')"},
      {function() lmp.RLock{1} end, "bad argument #1 to 'RLock' (unknown option 'number')"},
      {function() lmp.Event{set = true} end, "bad argument #1 to 'Event' (unknown option 'set')"},
      {function() lmp.Semaphore(-1) end,
        "bad argument #1 to 'Semaphore' (value must be between 0 and 2147483647)"},
      {function() lmp.Semaphore("x") end,
        "bad argument #1 to 'Semaphore' (number expected, got string)"},
      {function() lmp.BoundedSemaphore(1.5) end,
        "bad argument #1 to 'BoundedSemaphore' (number has no integer representation)"},
      {function() lmp.Semaphore{valu = 1} end,
        "bad argument #1 to 'Semaphore' (unknown option 'valu')"},
      {function() lmp.Semaphore{value = "1"} end,
        "bad argument #1 to 'Semaphore' (field 'value' must be an integer)"},
      {function() s:acquire(false) end,
        "bad argument #1 to 'acquire' (number expected, got boolean)"},
      {function() s:release(0) end,
        "bad argument #1 to 'release' (n must be between 1 and 2147483647)"},
      {function() lmp.Condition(5) end,
        "bad argument #1 to 'Condition' (lmp.Lock, lmp.RLock or lmp.ValueLock expected, got number)"},
      {function() lmp.Condition(s) end,
        "bad argument #1 to 'Condition' (lmp.Lock, lmp.RLock or lmp.ValueLock expected, got lmp.Semaphore)"},
      {function() lmp.Condition{lock = 5} end,
        "bad argument #1 to 'Condition' (field 'lock' must be an lmp.Lock, lmp.RLock or lmp.ValueLock)"},
      {function() lmp.Condition{lok = l} end, "bad argument #1 to 'Condition' (unknown option 'lok')"},
      {function() c:notify(-1) end, "bad argument #1 to 'notify' (n must not be negative)"},
      {function() c:wait("x") end, "bad argument #1 to 'wait' (number expected, got string)"},
      {function() c:wait_for(5) end, "bad argument #1 to 'wait_for' (function expected, got number)"},
      {function() c:wait_for(print, "x") end,
        "bad argument #2 to 'wait_for' (number expected, got string)"},
      {function() lmp.Barrier() end, "bad argument #1 to 'Barrier' (number expected, got no value)"},
      {function() lmp.Barrier(0) end, "bad argument #1 to 'Barrier' (parties must be at least 1)"},
      {function() lmp.Barrier(2, 5) end, "bad argument #2 to 'Barrier' (function expected, got number)"},
      {function() lmp.Barrier(2, nil, -1) end,
        "bad argument #3 to 'Barrier' (timeout must be a non-negative number)"},
      {function() lmp.Barrier{} end,
        "bad argument #1 to 'Barrier' (field 'parties' must be a positive integer)"},
      {function() lmp.Barrier{parties = 2, acton = print} end,
        "bad argument #1 to 'Barrier' (unknown option 'acton')"},
      {function() lmp.Barrier{parties = 2, action = 1} end,
        "bad argument #1 to 'Barrier' (field 'action' must be a function)"},
      {function() lmp.Barrier{parties = 2, timeout = -1} end,
        "bad argument #1 to 'Barrier' (field 'timeout' must be a non-negative number)"},
      {function() b:wait("x") end, "bad argument #1 to 'wait' (number expected, got string)"},
    }
    for _, case in ipairs(cases) do
      assert.has_error(case[1], case[2])
    end
    -- an action that cannot cross processes is refused when the Barrier is made
    local co = coroutine.create(print)
    local ok, err = pcall(lmp.Barrier, 2, function() return co end)
    assert.is_false(ok)
    assert.are.equal("serialize", err.kind)
    assert.matches("^cannot send action", err.message)
  end)

  it("leak no globals", function()
    assert.are.same({}, support.new_globals())
  end)
end)

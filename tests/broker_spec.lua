-- lmp.Pool{broker = ...} and `lmp worker` against a real redis-server,
-- started here on a free loopback port with a temporary directory and
-- stopped at the end.  Skipped, with the reason, when redis-server is
-- missing.
local support = dofile("tests/support.lua")
local lmp = require "lmp"

local SECRET = "spec-secret"

local sh, kill, range = support.shell, support.kill, support.range

local readfile = support.readfile

local harness = dofile("tests/redis.lua")
local redis -- the server of this file's tests (setup)

local function cli(args) return redis:cli(args) end
local function url() return redis:url(0) end
local free_port = harness.free_port

local nqueue = 0
local function new_queue()
  nqueue = nqueue + 1
  return "spec" .. nqueue
end

local shq = harness.shq

-- `lmp worker` serving queue on this file's server (opts as redis.worker's,
-- with url and secret defaulted).
local function start_worker(queue, opts)
  local o = {queue = queue, url = url(), secret = SECRET}
  for k, v in pairs(opts or {}) do o[k] = v end
  if o.url == false then o.url = nil end
  return harness.worker(o)
end

-- The processes under pid: its children, theirs, and so on.
local function descendants(pid)
  local out, todo = {}, {pid}
  while #todo > 0 do
    local p = table.remove(todo)
    for c in sh("cat /proc/" .. p .. "/task/*/children 2>/dev/null"):gmatch("%d+") do
      out[#out + 1] = tonumber(c)
      todo[#todo + 1] = c
    end
  end
  return out
end

-- Waits (up to `secs`, default 10) until process `pid` has ended; whether it has.
local function exited(pid, secs) return support.all_dead({pid}, secs) end

-- Whether descriptor fd turns readable within secs.
local function readable(fd, secs) return lmp._poll_fds({fd}, secs) > 0 end

-- The non-empty lines of a file.
local function lines(path) return support.lines(readfile(path)) end

local function pool(queue, extra) return harness.pool({broker = url(), queue = queue, secret = SECRET}, extra) end

local describe_redis = harness.describer(describe, pending)

describe_redis("lmp.Pool on a Redis broker", function()
  setup(function() redis = harness.server() end)
  teardown(harness.cleanup)

  it("maps over 1k items with 2 workers, with the local Pool's API", function()
    local q = new_queue()
    local w1 = start_worker(q)
    local w2 = start_worker(q)
    local p = pool(q)
    local r = p:map(function(x) return x * x end, range(1000))
    assert.are.equal(1000, #r)
    for i = 1, 1000 do assert.are.equal(i * i, r[i]) end
    -- small chunks spread over both workers
    local who = p:map(function() return require("lmp").parent_process().pid end, range(200), 1)
    local seen = {}
    for _, pid in ipairs(who) do seen[pid] = true end
    assert.is_true(seen[w1] and seen[w2])
    assert.are.equal(5, p:apply(function(a, b) return a + b end, 2, 3))
    local base = 100
    assert.are.equal(107, p:apply(function(x) return base + x end, 7))
    assert.are.same({6, 20}, p:starmap(function(a, b) return a * b end, {{2, 3}, {4, 5}}))
    local got = {}
    for i, v in p:imap(function(x) return x + 1 end, range(20), 3) do got[#got + 1] = i .. "=" .. v end
    assert.are.equal("1=2", got[1])
    assert.are.equal(20, #got)
    local sum = 0
    for _, v in p:imap_unordered(function(x) return x end, range(10)) do sum = sum + v end
    assert.are.equal(55, sum)
    -- callbacks run inside the pool's calls, in order
    local cbs = {}
    local rs = {}
    for i = 1, 50 do
      rs[i] = p:apply_async(function(x) return x * 2 end, {i}, {callback = function(v) cbs[#cbs + 1] = v end})
    end
    for i = 1, 50 do assert.are.equal(i * 2, rs[i]:get(10)) end
    assert.are.equal(50, #cbs)
    local ar = p:map_async(function(x) return -x end, range(10), {callback = function(v) cbs.map = v end})
    assert.is_true(ar:wait(10))
    p:poll()
    assert.are.same(-10, cbs.map[10])
    -- the same error kinds as a local pool
    local ok, e = pcall(p.apply, p, function() error("boom") end)
    assert.is_false(ok)
    assert.are.equal("task", e.kind)
    assert.matches("boom", e.message)
    ok, e = pcall(p.map, p, function(x) if x == 37 then error("bad item") end return x end, range(100), 10)
    assert.is_false(ok)
    assert.are.equal("task", e.kind)
    assert.are.equal(37, e.index)
    ok, e = pcall(p.apply, p, function() end, io.stdout)
    assert.is_false(ok)
    assert.are.equal("serialize", e.kind)
    local eb
    p:apply_async(function() error("x") end, nil, {error_callback = function(err) eb = err end}):wait(10)
    p:poll()
    assert.are.equal("task", eb.kind)
    assert.is_nil(select(1, p:apply_async(function() require("lmp").sleep(5) end):get(0.1)))
    p:terminate()
    kill(w1)
    kill(w2)
    assert.is_true(exited(w1) and exited(w2))
  end)

  it("stats() has the local pool's fields, with the broker's added", function()
    local q = new_queue()
    local w = start_worker(q, {processes = 1})
    local p = pool(q)
    local rs = {}
    for i = 1, 3 do rs[i] = p:apply_async(function(x) return x end, {i}) end
    rs[4] = p:apply_async(function() error("no") end)
    for i = 1, 3 do assert.are.equal(i, rs[i]:get(10)) end
    assert.is_false(rs[4]:wait(10) and rs[4]:successful())
    local s
    -- the worker's counts, as its heartbeat reports them
    assert.is_truthy(support.eventually(function()
      s = p:stats()
      local ws = s.workers[1]
      return #s.workers == 1 and ws.done == 3 and ws.failed == 1 and ws.state == "idle"
    end))
    assert.are.equal(w, s.workers[1].pid)
    assert.are.equal(1, s.workers[1].processes)
    -- every field of a local pool's, of the same type
    local l <close> = lmp.Pool(1)
    local ls = l:stats()
    for k, v in pairs(ls) do assert.are.equal(type(v), type(s[k]), k) end
    for k, v in pairs(ls.workers[1]) do
      if k ~= "task" and k ~= "item" and k ~= "running_for" and k ~= "cpu" and k ~= "rss" then
        assert.are.equal(math.type(v) or type(v), math.type(s.workers[1][k]) or type(s.workers[1][k]), k)
      end
    end
    assert.are.equal(0, s.running)
    assert.are.equal(0, s.queued)
    assert.are.equal(3, s.done)
    assert.are.equal(1, s.failed)
    assert.are.equal(0, s.restarts)
    assert.are.equal(0, s.recycled)
    assert.is_true(s.rate > 0)
    -- and the broker's own
    assert.are.equal(4, s.submitted)
    assert.are.equal(0, s.inflight)
    assert.are.equal(0, s.refused)
    assert.are.equal(0, s.dead)
    assert.are.equal(0, s.delayed)
    assert.are.equal(q, s.queue)
    p:terminate()
    kill(w)
    assert.is_true(exited(w))
  end)

  it("counts waiting, taken and delayed tasks apart, in stats() and --status", function()
    local q = new_queue()
    local p = pool(q)
    -- no worker yet: three tasks waiting, two held
    for _ = 1, 3 do p:apply_async(function() return 1 end) end
    for _ = 1, 2 do p:apply_async(function() return 1 end, nil, {countdown = 60}) end
    p:poll()
    local s = p:stats()
    assert.are.equal(3, s.waiting)
    assert.are.equal(3, s.queued)
    assert.are.equal(2, s.delayed)
    -- a worker takes one long task: it is no longer waiting
    local w = start_worker(q, {processes = 1, args = {"--prefetch", "1"}})
    local long = p:apply_async(function() require("lmp").sleep(30) end)
    p:poll() -- sent
    assert.is_truthy(support.eventually(function()
      s = p:stats()
      return s.waiting == 0 and s.running == 1
    end, 15), "stats: waiting " .. tostring(s.waiting) .. ", running " .. tostring(s.running))
    local out = sh(string.format("%s -e \"os.exit(require('lmp.worker').main({'--status', '%s', '--queue', '%s'}))\"",
                                 support.lmp_bin, url(), q))
    assert.matches("0 waiting, 1 taken, 2 delayed, 0 dead%-lettered, 1 live workers", out)
    p:terminate()
    kill(w, "INT") -- drains (the long task would hold it 30 s) ...
    lmp.sleep(0.3)
    kill(w, "INT") -- ... and stops at once
    assert.is_true(exited(w))
    cli("DEL lmp:{" .. q .. "}:delayed")
    assert.is_false(long:successful())
  end)

  it("gives futures over the broker through lmp.Executor{broker = ...}", function()
    local q = new_queue()
    start_worker(q)
    local ex = lmp.Executor{broker = url(), queue = q, secret = SECRET}
    local futs = {}
    for i = 1, 20 do futs[i] = ex:submit(function(x) return x * 3 end, i) end
    local sum = 0
    for f in lmp.as_completed(futs, 30) do sum = sum + f:result() end
    assert.are.equal(630, sum)
    local bad = ex:submit(function() error("remote") end)
    assert.are.equal("task", bad:exception(30).kind)
    ex:shutdown()
  end)

  it("awaits its results from luv and cqueues coroutines, and with lmp.await", function()
    local uv, cqueues = require "luv", require "cqueues"
    local lu, lc = require "lmp.luv", require "lmp.cqueues"
    local q = new_queue()
    start_worker(q)
    local p = pool(q)
    local ex = lmp.Executor{broker = url(), queue = q, secret = SECRET}
    local got = {}
    lu.attach(p)
    coroutine.wrap(function()
      got.luv = lu.await(p:apply_async(function(x) return x + 1 end, {1}))
      got.gather = lu.gather{ex:submit(function() return "a" end), p:apply_async(function() return "b" end)}
      got.err = select(2, pcall(lu.await, ex:submit(function() error("remote") end))).kind
      lu.detach(ex) -- await attached it; it goes on below
      p:close() -- the loop ends once the pool has delivered everything
    end)()
    uv.run()
    local cq = cqueues.new()
    cq:wrap(function() got.cq = lc.await(ex:submit(function() return 3 end)) end)
    assert(cq:loop(30))
    local r = ex:submit(function() return 4 end)
    local co = coroutine.wrap(function() return lmp.await(r) end)
    local v = co()
    while v == r do
      lmp.sleep(0.01)
      v = co()
    end
    got.await = v
    assert.are.same({luv = 2, gather = {n = 2, "a", "b"}, err = "task", cq = 3, await = 4}, got)
    ex:shutdown()
  end)

  it("wakes event loops through its descriptor, quiet when nothing comes", function()
    local q = new_queue()
    local w = start_worker(q)
    local p = pool(q)
    local fd = p:fileno()
    assert.is_nil(p:_tick()) -- event loops watch the descriptor: no tick
    assert.is_nil(p:timeout())
    assert.are.equal(fd, p:pollfd())
    -- its sockets (and the results connection's) stay out of programs it starts
    assert.is_nil(sh("ls -l /proc/self/fd"):match("socket:"))
    assert.are.equal(0, p:poll())
    assert.is_false(readable(fd, 0.3))
    local r = p:apply_async(function(x) return x * 2 end, {21})
    p:poll() -- sends it (and may deliver it already, under load)
    assert.is_true(readable(fd, 10)) -- its result's token, whoever read the result
    p:poll()
    assert.is_true(r:ready())
    assert.are.equal(42, r:get(0))
    assert.is_false(readable(fd, 0.3))
    p:terminate()
    assert.are.equal(-1, p:fileno())
    assert.is_false(readable(fd, 0.1)) -- still open for a loop that watches it, and quiet
    kill(w)
    assert.is_true(exited(w))
  end)

  it("checks its options", function()
    local ok, e = pcall(lmp.Pool, {broker = url(), secret = "x", proccesses = 2})
    assert.is_false(ok)
    assert.matches("bad argument #1 to 'Pool' %(unknown option 'proccesses'%)", e)
    ok, e = pcall(lmp.Pool, {broker = url(), secret = "x", max_deliveries = 0})
    assert.matches("field 'max_deliveries' must be a positive integer", e)
    local saved = os.getenv("LMP_SECRET")
    if not saved then
      ok, e = pcall(lmp.Pool, {broker = url()})
      assert.matches("shared secret", e)
    end
    -- C reads them up to a NUL byte: "q\0x" would be the queue "q"
    ok, e = pcall(lmp.Pool, {broker = url(), secret = "x", queue = "q\0x"})
    assert.are.equal("bad argument #1 to 'Pool' (field 'queue' contains a NUL byte)", e)
    ok, e = pcall(lmp.Pool, {broker = url() .. "\0junk", secret = "x"})
    assert.are.equal("bad argument #1 to 'Pool' (field 'broker' contains a NUL byte)", e)
    ok, e = pcall(lmp.Pool, {broker = "http://x", secret = "x"})
    assert.matches("unsupported broker URL", tostring(e))
    -- anything without `broker` is still a local pool
    local lp <close> = lmp.Pool{processes = 1}
    assert.are.equal(4, lp:apply(function() return 4 end))
  end)

  it("passes results on unread: a class only the task and the caller know, a chunk's own items", function()
    local q = new_queue()
    local w = start_worker(q)
    local p = pool(q)
    -- the `lmp worker` process never registers spec.Point: it does not read the result
    local Point = {}
    lmp.register("spec.Point", Point)
    local v = p:apply_async(function()
      local mt = {}
      require("lmp").register("spec.Point", mt)
      return setmetatable({x = 7}, mt)
    end):get(30)
    assert.are.equal(Point, getmetatable(v))
    assert.are.equal(7, v.x)
    -- a chunk with a failing item: the others keep their results, as on a local pool
    local got = {}
    local ok, e = pcall(function()
      for i, y in p:imap(function(x) if x == 2 then error("two") end return x * 10 end, {1, 2, 3}, 3) do
        got[i] = y
      end
    end)
    assert.is_false(ok)
    assert.are.equal("task", e.kind)
    assert.matches("two", e.message)
    assert.are.equal(2, e.index)
    assert.are.same({10}, got)
    p:terminate()
    kill(w)
    assert.is_true(exited(w))
  end)

  it("refuses a local lmp object in a task at submit: it cannot reach another machine", function()
    local q = new_queue()
    local p = pool(q)
    local lq, v, d = lmp.Queue(), lmp.Value("i"), lmp.Dict()
    local why = " %(a local object: it cannot reach another machine%)$"
    local function refused(pattern, f, ...)
      local ok, e = pcall(f, ...)
      assert.is_false(ok)
      assert.are.equal("serialize", e.kind)
      assert.matches(pattern .. why, e.message)
    end
    refused("cannot send args%[1%]: lmp.Queue", p.apply, p, function(x) return x end, lq)
    refused("cannot send function<upvalue v>: lmp.Value", p.apply, p, function() return v.value end)
    refused("cannot send args%[1%].t%[1%]: lmp.Dict", p.apply_async, p, print, {{t = {d}}})
    refused("cannot send args%[%d%]: lmp.SharedMemory", p.map, p, print, {1, lmp.SharedMemory(8)})
    local ex = lmp.Executor{broker = url(), queue = q, secret = SECRET}
    refused("cannot send args%[1%]: lmp.Lock", ex.submit, ex, print, lmp.Lock())
    ex:shutdown{wait = false}
    -- nothing was queued; a result holding one is refused by the worker
    local w = start_worker(q)
    assert.are.equal(3, p:apply(function(x) return x end, 3))
    refused("cannot send result%S*: lmp.Queue", p.apply, p, function() return require("lmp").Queue() end)
    p:terminate()
    kill(w)
    assert.is_true(exited(w))
  end)

  it("fails clearly and in time when the broker is unreachable", function()
    local t0 = lmp.time()
    local ok, e = pcall(lmp.Pool, {broker = "redis://127.0.0.1:" .. free_port() .. "/0", secret = "x",
                                   connect_timeout = 1})
    assert.is_false(ok)
    assert.are.equal("broker", e.kind)
    assert.matches("cannot reach the broker", e.message)
    assert.is_true(lmp.time() - t0 < 3)
    local out = sh("env LMP_SECRET=x " .. support.lmp_bin .. " -e \"os.exit(require('lmp.worker').main({'redis://127.0.0.1:"
                   .. free_port() .. "/0'}))\"; echo rc=$?")
    assert.matches("cannot reach the broker", out)
    assert.matches("rc=1", out)
  end)

  it("deletes a result from Redis once collected, while the pool lives on", function()
    local q = new_queue()
    local w = start_worker(q)
    local p = pool(q)
    assert.are.equal(100000, #p:apply(function() return string.rep("x", 100000) end))
    local key = "lmp:{" .. q .. "}:c:" .. p._caller
    assert.is_truthy(support.eventually(function() return cli("XLEN " .. key):match("^0") end, 5),
                     "entries left: " .. cli("XLEN " .. key))
    assert.are.equal(3, p:apply(function() return 3 end)) -- the connection still in step
    p:terminate()
    kill(w)
    assert.is_true(exited(w))
  end)

  it("hands a task to one waiting worker: the others sleep on", function()
    local q = new_queue()
    local ws = {}
    for i = 1, 4 do ws[i] = start_worker(q, {processes = 1}) end
    local p = pool(q)
    for i = 1, 5 do assert.are.equal(i, p:apply(function(x) return x end, i)) end -- all warm
    local function takes() return tonumber(cli("INFO commandstats"):match("cmdstat_eval:calls=(%d+)")) or 0 end
    local before, t0 = takes(), lmp.time()
    local n = 60
    for i = 1, n do assert.are.equal(i, p:apply(function(x) return x end, i)) end
    local secs = lmp.time() - t0
    -- a take per task, plus each idle worker's take that ends empty once a
    -- second; woken all at once, four workers would make four per task
    local bound = n + 4 * 2 * (math.ceil(secs) + 1)
    local made = takes() - before
    assert.is_true(made <= bound, string.format("%d takes for %d tasks in %.2f s (at most %d)", made, n, secs, bound))
    p:terminate()
    for i = 1, 4 do kill(ws[i]) end
    for i = 1, 4 do assert.is_true(exited(ws[i])) end
  end)

  it("completes every task, each result once, when a worker is killed", function()
    local q = new_queue()
    local w1 = start_worker(q)
    local w2 = start_worker(q)
    local p = pool(q, {visibility_timeout = 1})
    local counts, rs = {}, {}
    for i = 1, 300 do
      rs[i] = p:apply_async(function(x) require("lmp").sleep(0.01) return x end, {i},
                            {callback = function(v) counts[v] = (counts[v] or 0) + 1 end})
    end
    assert.are.equal(1, rs[1]:get(10))
    kill(w1, "KILL")
    for i = 1, 300 do assert.are.equal(i, rs[i]:get(30)) end
    p:poll()
    for i = 1, 300 do assert.are.equal(1, counts[i]) end
    p:terminate()
    kill(w2)
    assert.is_true(exited(w2))
  end)

  it("runs a task longer than visibility_timeout once (its lease is renewed)", function()
    local q = new_queue()
    local runs = os.tmpname()
    local w1 = start_worker(q)
    local w2 = start_worker(q)
    local p = pool(q, {visibility_timeout = 1})
    local r = p:apply(function(path)
      local f = io.open(path, "a")
      f:write(require("lmp").current_process().pid, "\n")
      f:close()
      require("lmp").sleep(3.5)
      return "long"
    end, runs)
    assert.are.equal("long", r)
    lmp.sleep(1.5) -- a second run would have started by now
    assert.are.equal(1, #lines(runs))
    os.remove(runs)
    p:terminate()
    kill(w1)
    kill(w2)
    assert.is_true(exited(w1) and exited(w2))
  end)

  it("dead-letters a poison task after max_deliveries", function()
    local q = new_queue()
    local w = start_worker(q, {processes = 1})
    local p = pool(q, {max_deliveries = 3})
    local ok, e = pcall(p.apply, p, function() os.exit(9) end)
    assert.is_false(ok)
    assert.are.equal("dead_letter", e.kind)
    assert.are.equal(3, e.deliveries)
    assert.matches("3 deliveries", e.message)
    assert.matches("1", cli("XLEN lmp:{" .. q .. "}:dead"))
    -- the worker goes on
    assert.are.equal(1, p:apply(function() return 1 end))
    p:terminate()
    kill(w)
    assert.is_true(exited(w))
  end)

  it("fails a task out of memory at once, and the worker goes on", function()
    local sanitizer = os.getenv("LMP_TEST_SANITIZER") or ""
    if sanitizer ~= "" then return pending("ulimit -v cannot hold a " .. sanitizer .. " build") end
    local q = new_queue()
    local w = start_worker(q, {processes = 1, limits = "-v 300000"})
    local p = pool(q)
    local r = p:apply_async(support.memory_hog)
    local ok, e = pcall(r.get, r, 60)
    assert.is_false(ok, tostring(e))
    assert.are.equal("task", e.kind)
    assert.are.equal("not enough memory", e.message)
    assert.are.equal(1, p:apply(function() return 1 end))
    p:terminate()
    kill(w)
    assert.is_true(exited(w))
  end)

  it("dead-letters a task that kills its whole worker, once leases lapse", function()
    local q = new_queue()
    local p = pool(q, {max_deliveries = 2, visibility_timeout = 1})
    local r = p:apply_async(function()
      os.execute("kill -9 " .. require("lmp").parent_process().pid)
      require("lmp").sleep(5)
    end)
    p:poll()
    for _ = 1, 2 do
      local w = start_worker(q, {processes = 1})
      assert.is_true(exited(w, 10)) -- killed by the task
    end
    local w = start_worker(q, {processes = 1})
    local ok, e = pcall(r.get, r, 10)
    assert.is_false(ok)
    assert.are.equal("dead_letter", e.kind)
    assert.are.equal(2, e.deliveries)
    assert.matches("lost with its worker", e.history)
    p:terminate()
    kill(w)
    assert.is_true(exited(w))
  end)

  it("runs nothing on a worker with the wrong secret; the others finish", function()
    local q = new_queue()
    local bad, badlog = start_worker(q, {secret = "wrong"})
    local p = pool(q)
    local r = p:apply_async(function() return require("lmp").parent_process().pid end)
    lmp.sleep(0.3)
    local good = start_worker(q)
    local who = p:map(function() return require("lmp").parent_process().pid end, range(100), 1)
    assert.are.equal(100, #who)
    for _, pid in ipairs(who) do assert.are.equal(good, pid) end
    assert.are.equal(good, r:get(20))
    assert.matches("refusing entry", readfile(badlog))
    p:terminate()
    kill(bad)
    kill(good)
    assert.is_true(exited(bad) and exited(good))
  end)

  it("never runs a forged task injected into the stream", function()
    local q = new_queue()
    local mark = os.tmpname()
    os.remove(mark)
    local w, log = start_worker(q, {args = {"--max-deliveries", "2"}})
    -- a well-formed message signed with another key, and plain garbage
    local forged = require("lmp.core").broker.seal("not-the-secret", "T", "x.1",
      {v = 504, c = "x", t = 1, f = require("lmp.core").broker.encode(function()
        io.open(mark, "w"):close()
      end), a = require("lmp.core").broker.encode({}), n = 0}, "task", q)
    local hex = forged:gsub(".", function(c) return string.format("\\x%02x", c:byte()) end)
    sh(string.format("printf '%s' | redis-cli -p %d -x XADD lmp:{%s} '*' d 0 m", hex, redis.port, q))
    cli("XADD lmp:{" .. q .. "} '*' m garbage d 0")
    local t0 = lmp.time()
    while not cli("XLEN lmp:{" .. q .. "}:dead"):match("^2") and lmp.time() - t0 < 10 do lmp.sleep(0.1) end
    assert.matches("^2", cli("XLEN lmp:{" .. q .. "}:dead"))
    assert.is_nil(io.open(mark))
    assert.matches("bad signature", readfile(log))
    -- and genuine work still runs
    local p = pool(q)
    assert.are.equal(2, p:apply(function() return 2 end))
    p:terminate()
    kill(w)
    assert.is_true(exited(w))
  end)

  it("holds a task with countdown or eta until it is due", function()
    local q = new_queue()
    local w = start_worker(q)
    local p = pool(q)
    local function now() return require("lmp").time() end
    local t0, wall = lmp.time(), os.time()
    local soon = p:apply_async(now, nil, {countdown = 1})
    local at = p:apply_async(now, nil, {eta = wall + 2})
    local at_once = p:apply_async(now)
    assert.is_true(at_once:get(10) - t0 < 1, "a task without a countdown waited")
    assert.is_true(soon:get(10) - t0 >= 0.95, "ran before its countdown")
    -- eta: two whole seconds of the wall clock on, so one to two from now
    assert.is_true(at:get(10) - t0 >= 0.95, "ran before its eta")
    -- a map's chunks are held alike
    local t1 = lmp.time()
    local r = p:map_async(function(x) return {x, require("lmp").time()} end, range(6), {countdown = 0.5, chunksize = 2})
    for i, v in ipairs(r:get(10)) do
      assert.are.equal(i, v[1])
      assert.is_true(v[2] - t1 >= 0.45, "item " .. i .. " ran before its countdown")
    end
    p:terminate()
    kill(w)
    assert.is_true(exited(w))
  end)

  it("keeps a delayed task while no worker runs and across a restart of Redis", function()
    local q = new_queue()
    local p = pool(q)
    local r = p:apply_async(function() return "late" end, nil, {countdown = 0.2})
    p:poll() -- sent
    lmp.sleep(1)
    assert.matches("^1", cli("ZCARD lmp:{" .. q .. "}:delayed"))
    assert.matches("^0", cli("XLEN lmp:{" .. q .. "}"))
    redis:stop()
    assert.is_true(redis:start())
    assert.matches("^1", cli("ZCARD lmp:{" .. q .. "}:delayed"))
    local w = start_worker(q)
    assert.are.equal("late", r:get(20))
    assert.matches("^0", cli("ZCARD lmp:{" .. q .. "}:delayed"))
    p:terminate()
    kill(w)
    assert.is_true(exited(w))
  end)

  it("moves each due task into the queue once, whichever workers promote it", function()
    local q = new_queue()
    local ws = {}
    for i = 1, 3 do ws[i] = start_worker(q) end
    local p = pool(q)
    local mark = os.tmpname()
    local r = p:map_async(function(x)
      local f = io.open(mark, "a")
      f:write(x, "\n")
      f:close()
      return x
    end, range(60), {countdown = 0.5, chunksize = 1})
    assert.are.same(range(60), r:get(30))
    local seen = {}
    for _, l in ipairs(lines(mark)) do seen[#seen + 1] = tonumber(l) end
    os.remove(mark)
    table.sort(seen)
    assert.are.same(range(60), seen)
    p:terminate()
    for _, w in ipairs(ws) do kill(w) end
    for _, w in ipairs(ws) do assert.is_true(exited(w)) end
  end)

  it("checks countdown and eta", function()
    local p = pool(new_queue())
    local f = function() end
    for _, o in ipairs{{countdown = -1}, {countdown = "1"}, {countdown = 0 / 0}, {eta = "soon"}, {eta = math.huge},
                       {countdown = 1, eta = 2}} do
      local ok, e = pcall(p.apply_async, p, f, nil, o)
      assert.is_false(ok)
      assert.matches("bad argument #3 to 'apply_async'", e)
      ok, e = pcall(p.map_async, p, f, {1}, o)
      assert.is_false(ok)
      assert.matches("bad argument #3 to 'map_async'", e)
    end
    -- imap has no countdown; the local pool neither
    assert.has_error(function() p:imap(f, {1}, {countdown = 1}) end)
    p:terminate()
    local lp <close> = lmp.Pool(1)
    local ok, e = pcall(lp.apply_async, lp, f, nil, {countdown = 1})
    assert.is_false(ok)
    assert.matches("unknown option 'countdown'", e)
  end)

  it("completes a run across a redis-server restart", function()
    local q = new_queue()
    local w1 = start_worker(q)
    local w2 = start_worker(q)
    local p = pool(q)
    local restarter = lmp.Process(function()
      lmp.sleep(0.4)
      redis:stop()
      lmp.sleep(0.3)
      os.exit(redis:start() and 0 or 1)
    end)
    restarter:start()
    -- Bounded, so that a result lost across the restart fails the test
    -- instead of hanging it.
    local r = p:map_async(function(x) require("lmp").sleep(0.004) return x + 1 end, range(400), 2):get(120)
    assert.is_true(restarter:join(30))
    assert.are.equal(0, restarter.exitcode)
    assert.are.equal(400, #r)
    for i = 1, 400 do assert.are.equal(i + 1, r[i]) end
    p:terminate()
    kill(w1)
    kill(w2)
    assert.is_true(exited(w1, 15) and exited(w2, 15))
  end)

  it("goes on when the server drops every connection", function()
    local q = new_queue()
    local w = start_worker(q)
    local p = pool(q)
    assert.are.equal(1, p:apply(function() return 1 end))
    for round = 1, 3 do
      cli("CLIENT KILL TYPE normal")
      local big = {}
      for i = 1, 3000 do big[i] = string.rep("x", 100) .. i end
      local r = p:map(function(s) return #s end, big, 10)
      assert.are.equal(3000, #r)
      assert.are.equal(104, r[3000])
    end
    p:terminate()
    kill(w)
    assert.is_true(exited(w))
  end)

  it("drains on SIGTERM and lists live workers with --status", function()
    local q = new_queue()
    local w, log = start_worker(q, {processes = 1, args = {"--prefetch", "1"}})
    local function status()
      return sh(string.format("%s -e \"os.exit(require('lmp.worker').main({'--status', '%s', '--queue', '%s'}))\"",
                              support.lmp_bin, url(), q))
    end
    local st = status()
    local t1 = lmp.time()
    while not st:match("1 live workers") and lmp.time() - t1 < 3 do
      lmp.sleep(0.1)
      st = status()
    end
    assert.matches("1 live workers", st)
    assert.matches(":" .. w .. ":", st)
    local p = pool(q)
    local rs = {}
    for i = 1, 3 do
      rs[i] = p:apply_async(function(x) require("lmp").sleep(1.5) return x end, {i})
    end
    p:poll() -- sends them
    local t0 = lmp.time()
    repeat st = status() until st:match("tasks=") or lmp.time() - t0 > 1
    assert.matches("running=1 .*tasks=" .. p._caller:gsub("%p", "%%%0") .. "%.1", st)
    kill(w, "TERM")
    assert.are.equal(1, rs[1]:get(10))
    assert.is_true(exited(w, 10))
    assert.matches("draining", readfile(log))
    assert.is_nil((rs[2]:get(0.3)))
    local w2 = start_worker(q)
    assert.are.equal(2, rs[2]:get(10))
    assert.are.equal(3, rs[3]:get(10))
    p:terminate()
    kill(w2)
    assert.is_true(exited(w2))
  end)

  it("removes the consumers of workers that stopped or vanished", function()
    local q = new_queue()
    local function consumers() return cli("XINFO CONSUMERS lmp:{" .. q .. "} lmp") end
    local w1 = start_worker(q, {processes = 1})
    local w2 = start_worker(q, {processes = 1})
    local p = pool(q, {visibility_timeout = 1})
    assert.are.same({1, 2, 3, 4}, p:map(function(x) return x end, {1, 2, 3, 4}, 1))
    assert.is_truthy(support.eventually(function()
      local c = consumers()
      return c:find(":" .. w1 .. ":", 1, true) and c:find(":" .. w2 .. ":", 1, true)
    end, 10))
    kill(w1, "KILL")
    assert.is_true(exited(w1))
    -- w2 removes it once it has been idle for 5 s (4 visibility timeouts are less)
    assert.is_true(support.eventually(function() return not consumers():find(":" .. w1 .. ":", 1, true) end, 30))
    assert.matches(":" .. w2 .. ":", consumers(), 1, true)
    assert.are.same({5, 6}, p:map(function(x) return x end, {5, 6}))
    kill(w2, "TERM")
    assert.is_true(exited(w2, 10))
    assert.is_nil(consumers():find(":" .. w2 .. ":", 1, true))
    p:terminate()
  end)

  it("stops at once on a second SIGINT, putting its running tasks back", function()
    local q = new_queue()
    local w, log = start_worker(q, {processes = 1, args = {"--prefetch", "1"}})
    local p = pool(q)
    local r = p:apply_async(function() require("lmp").sleep(2) return require("lmp").parent_process().pid end)
    p:poll()
    lmp.sleep(0.6)
    kill(w, "INT")
    lmp.sleep(0.1)
    kill(w, "INT")
    assert.is_true(exited(w, 5))
    assert.matches("stopping now; 1 running", readfile(log))
    local w2 = start_worker(q)
    assert.are.equal(w2, r:get(10))
    p:terminate()
    kill(w2)
    assert.is_true(exited(w2))
  end)

  it("logs in as an ACL user limited to lmp's keys and the commands docs/lua-api.md lists", function()
    -- the user docs/lua-api.md shows, named lmpuser with password pwA
    local doc = support.read("docs/lua-api.md")
    local acl = doc:match("\n(ACL SETUSER lmp on [^`]-)\n```")
    assert.is_string(acl, "docs/lua-api.md shows no ACL SETUSER")
    acl = acl:gsub("ACL SETUSER lmp on >a%-long%-password", "ACL SETUSER lmpuser on '>pwA'")
             :gsub("~lmp:%*", "'~lmp:*'"):gsub("(%+%w+|%w+)", "'%1'"):gsub("%s+", " ")
    assert.matches("OK", cli(acl))
    local q = new_queue()
    local good = "redis://lmpuser:pw%41@127.0.0.1:" .. redis.port .. "/0" -- %41 is A
    local w = start_worker(q, {url = good})
    local p = lmp.Pool{broker = good, queue = q, secret = SECRET}
    assert.are.same({2, 4, 6}, p:map(function(x) return 2 * x end, {1, 2, 3}))
    -- priorities, held tasks and revoking take no other command
    assert.are.equal(9, p:apply_async(function() return 9 end, nil, {priority = 7}):get(10))
    local held = p:apply_async(function() return "held" end, nil, {countdown = 60})
    assert.is_true(held:cancel())
    local ok, e = pcall(held.get, held, 5)
    assert.is_false(ok)
    assert.are.equal("cancelled", e.kind)
    -- the descriptor announces a result
    local fd = p:fileno()
    local r = p:apply_async(function() return 5 end)
    p:poll()
    assert.is_true(readable(fd, 5))
    p:poll()
    assert.are.equal(5, r:get(5))
    local st = p:stats()
    assert.are.equal(1, #st.workers)
    p:terminate()
    ok, e = pcall(lmp.Pool, {broker = "redis://lmpuser:nope@127.0.0.1:" .. redis.port .. "/0",
                                   queue = q, secret = SECRET})
    assert.is_false(ok)
    assert.are.equal("broker", e.kind)
    assert.matches("AUTH", e.message)
    -- the user cannot touch other keys
    assert.matches("NOPERM", sh("redis-cli -p " .. redis.port .. " --user lmpuser --pass pwA "
                                .. "--no-auth-warning SET other 1"))
    kill(w)
    assert.is_true(exited(w))
  end)

  it("keeps the Redis password off command lines and out of its log", function()
    local pw_url = "redis://:secretpw@127.0.0.1:" .. redis.port .. "/0"
    local file = support.tmpfile(pw_url .. "\n")
    assert.matches("OK", cli("CONFIG SET requirepass secretpw"))
    finally(function() -- (busted keeps one finally per test)
      sh("redis-cli -p " .. redis.port .. " --no-auth-warning -a secretpw CONFIG SET requirepass ''")
      os.remove(file)
    end)
    -- on the command line: the worker and the processes forked from it show it masked
    local q1, q2, q3 = new_queue(), new_queue(), new_queue()
    local w1, log1 = start_worker(q1, {url = pw_url, command = true})
    local p = lmp.Pool{broker = pw_url, queue = q1, secret = SECRET}
    assert.are.same({1, 4, 9}, p:map(function(x) return x * x end, {1, 2, 3}))
    -- what a program may print of the pool shows no password either
    assert.is_nil(p:stats().broker:find("secretpw", 1, true))
    assert.is_nil(tostring(p):find("secretpw", 1, true))
    p:terminate()
    assert.matches("worker%zredis://:x+@127%.0%.0%.1:", readfile("/proc/" .. w1 .. "/cmdline"))
    local under = descendants(w1)
    assert.is_true(#under >= 2, "the worker's pool processes")
    for _, pid in ipairs(under) do
      assert.is_nil(readfile("/proc/" .. pid .. "/cmdline"):find("secretpw", 1, true))
    end
    assert.matches("serving queue " .. q1 .. " at redis://:%*%*%*@127", readfile(log1))
    -- from LMP_BROKER_URL and from --url-file
    local w2, log2 = start_worker(q2, {url = false, command = true, env = "LMP_BROKER_URL=" .. shq(pw_url)})
    local w3, log3 = start_worker(q3, {url = false, command = true, args = {"--url-file", file}})
    for _, q in ipairs({q2, q3}) do
      local pq = lmp.Pool{broker = pw_url, queue = q, secret = SECRET}
      assert.are.same({2, 3}, pq:map(function(x) return x + 1 end, {1, 2}))
      pq:terminate()
    end
    -- errors about the URL show it masked
    local bad = "redis://:secretpw@127.0.0.1:port/0"
    local ok, e = pcall(lmp.Pool, {broker = bad, secret = SECRET})
    assert.is_false(ok)
    assert.matches("bad broker URL 'redis://:***@127.0.0.1:port/0' (bad port)", e.message, 1, true)
    local out = sh("env LMP_SECRET=x " .. support.lmp_bin .. " worker " .. shq(bad) .. "; echo rc=$?")
    assert.matches("bad broker URL 'redis://:***@127.0.0.1:port/0' (bad port)\nrc=1", out, 1, true)
    for _, w in ipairs({w1, w2, w3}) do
      kill(w)
      assert.is_true(exited(w))
    end
    for _, log in ipairs({log1, log2, log3}) do
      assert.matches("stopped", readfile(log))
      assert.is_nil(readfile(log):find("secretpw", 1, true))
    end
  end)

  it("rejects bad command lines", function()
    local out = sh("env LMP_SECRET=x " .. support.lmp_bin .. " -e \"os.exit(require('lmp.worker').main({'--bogus'}))\"; echo rc=$?")
    assert.matches("unknown option %-%-bogus", out)
    assert.matches("rc=2", out)
    out = sh("env -u LMP_SECRET " .. support.lmp_bin .. " -e \"os.exit(require('lmp.worker').main({'" .. url()
             .. "'}))\"; echo rc=$?")
    assert.matches("no shared secret", out)
    assert.matches("rc=2", out)
  end)

  -- The guide's broker samples run as they are, against this server: a
  -- sample that begins "-- with workers serving redis-host" gets two
  -- workers (with the `lmp worker` options after a colon on that line),
  -- the secret "s3cret", and this server for redis-host:6379; it must exit
  -- 0 and print what its "--> " comments show.
  for i, sample in ipairs(support.samples("docs/guide.md")) do
    local first = sample.code:match("^%-%- with workers serving redis%-host([^\n]*)")
    if first then
      it("runs the guide's sample " .. i .. " (" .. sample.title .. ")", function()
        local args = {}
        for word in (first:match("^:(.*)") or ""):gmatch("%S+") do args[#args + 1] = word end
        local queue = "default"
        for k = 1, #args - 1 do if args[k] == "--queue" then queue = args[k + 1] end end
        local ws = {}
        for k = 1, 2 do ws[k] = start_worker(queue, {secret = "s3cret", args = args}) end
        local code = sample.code:gsub("redis://redis%-host:6379", "redis://127.0.0.1:" .. redis.port)
        local ok, err = pcall(support.check_sample, sample.code, code)
        for _, w in ipairs(ws) do kill(w, "KILL") end
        assert(ok, err)
      end)
    end
  end

  it("leaks no globals", function()
    assert.are.same({}, support.new_globals())
  end)
end)

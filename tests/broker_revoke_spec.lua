-- Revoking tasks of lmp.Pool{broker = ...}: res:cancel() and
-- res:cancel{terminate = true} against a real redis-server and `lmp
-- worker`s (tests/redis.lua).  Tasks leave their traces in files: a task
-- that must never run appends to one that must stay empty, and a task
-- that must be running when it is revoked waits for a gate file that the
-- test makes once it has revoked it.
local support = dofile("tests/support.lua")
local lmp = require "lmp"

local SECRET = "spec-secret"
local harness = dofile("tests/redis.lua")
local redis -- this file's server (setup)

local nqueue = 0
local function new_queue()
  nqueue = nqueue + 1
  return "revoke" .. nqueue
end

local function start_worker(queue, opts)
  local o = {queue = queue, url = redis:url(0), secret = SECRET, processes = 1}
  for k, v in pairs(opts or {}) do o[k] = v end
  return harness.worker(o)
end

local function pool(queue)
  return lmp.Pool{broker = redis:url(0), queue = queue, secret = SECRET}
end

local files = {}
local function tmp()
  local path = os.tmpname()
  files[#files + 1] = path
  return path
end

local function lines(path) return support.lines(support.read(path)) end

-- A task that appends its argument to `path`.
local function mark(path)
  return function(x)
    local f = assert(io.open(path, "a"))
    f:write(tostring(x), "\n")
    f:close()
    return x
  end
end

-- A task that appends its argument (or its process's pid) to `path`, then
-- waits (up to a minute) for the file `gate`.
local function gated(path, gate)
  return function(x)
    local l = require "lmp"
    local f = assert(io.open(path, "a"))
    f:write(tostring(x or l.current_process().pid), "\n")
    f:close()
    for _ = 1, 1200 do
      local g = io.open(gate)
      if g then
        g:close()
        return x
      end
      l.sleep(0.05)
    end
    return x
  end
end

local function open_gate()
  local gate = tmp()
  os.remove(gate)
  return gate, function() assert(io.open(gate, "w")):close() end
end

-- Waits until the file at path has n lines.
local function has_lines(path, n)
  assert.is_true(support.eventually(function() return #lines(path) >= n end, 20))
end

local function cancelled_error(res)
  local ok, e = pcall(res.get, res, 20)
  assert.is_false(ok)
  assert.are.equal("cancelled", e.kind)
end

local describe_redis = harness.describer(describe, pending)

describe_redis("revoking tasks of a broker pool", function()
  setup(function() redis = harness.server() end)
  teardown(function()
    harness.cleanup()
    for _, f in ipairs(files) do os.remove(f) end
  end)

  it("cancels a queued task no worker has taken: it never runs, the others do", function()
    local q = new_queue()
    local p = pool(q)
    local trace = tmp()
    local res = p:apply_async(mark(trace), {"revoked"})
    local rest = {}
    for i = 1, 5 do rest[i] = p:apply_async(function(x) return x * 2 end, {i}) end
    p:poll() -- sent
    assert.is_true(res:cancel())
    assert.is_true(res:cancelled())
    assert.is_true(res:ready())
    assert.is_true(res:cancel()) -- still cancelled
    cancelled_error(res)
    start_worker(q)
    for i = 1, 5 do assert.are.equal(2 * i, rest[i]:get(20)) end
    assert.are.same({}, lines(trace))
    assert.are.equal("0", redis:cli("XLEN lmp:{" .. q .. "}"):match("%d+")) -- dropped at take
    local st = p:stats()
    assert.are.equal(0, st.inflight)
    p:close()
    p:join()
  end)

  it("cancels a delayed task: it never runs once due", function()
    local q = new_queue()
    start_worker(q)
    local p = pool(q)
    local trace = tmp()
    local res = p:apply_async(mark(trace), {"revoked"}, {countdown = 1})
    local other = p:apply_async(function() return "due" end, nil, {countdown = 1})
    p:poll()
    assert.is_true(res:cancel())
    cancelled_error(res)
    assert.are.equal("due", other:get(20)) -- due with it, and run
    assert.is_true(support.eventually(function()
      return redis:cli("ZCARD lmp:{" .. q .. "}:delayed"):match("%d+") == "0"
             and redis:cli("XLEN lmp:{" .. q .. "}"):match("%d+") == "0"
    end))
    assert.are.same({}, lines(trace))
    p:terminate()
  end)

  it("a running task is not cancelled and completes; the one behind it is", function()
    local q = new_queue()
    start_worker(q)
    local p = pool(q)
    local trace, behind = tmp(), tmp()
    local gate, open = open_gate()
    local running = p:apply_async(gated(trace, gate), {"ran"})
    local waiting = p:apply_async(mark(behind), {"revoked"})
    p:poll()
    has_lines(trace, 1)
    assert.is_true(waiting:cancel())
    assert.is_false(running:cancel())
    assert.is_false(running:cancelled())
    open()
    assert.are.equal("ran", running:get(20))
    assert.is_false(running:cancelled())
    assert.are.equal("ok", p:apply(function() return "ok" end))
    assert.are.same({}, lines(behind))
    p:terminate()
  end)

  it("cancel{terminate = true} stops a running task and kills its process", function()
    local q = new_queue()
    local wpid = start_worker(q)
    local p = pool(q)
    local trace = tmp()
    local res = p:apply_async(function(path)
      local l = require "lmp"
      local f = assert(io.open(path, "a"))
      f:write(l.current_process().pid, "\n")
      f:close()
      l.sleep(30)
      return "finished"
    end, {trace})
    p:poll()
    has_lines(trace, 1)
    local pid = tonumber(lines(trace)[1])
    assert.is_true(support.alive(pid))
    assert.is_true(res:cancel{terminate = true})
    assert.is_true(res:ready()) -- failed at once
    assert.is_true(res:cancelled())
    cancelled_error(res)
    assert.is_true(support.all_dead({pid}, 20))
    -- the worker goes on, with a new process
    local next_pid = p:apply(function() return require("lmp").current_process().pid end)
    assert.are_not.equal(pid, next_pid)
    assert.is_true(support.alive(wpid))
    assert.are.equal(0, p:stats().inflight)
    p:terminate()
  end)

  it("cancelling a map_async runs none of its chunks not started", function()
    local q = new_queue()
    start_worker(q, {args = {"--prefetch", "3"}})
    local p = pool(q)
    local trace = tmp()
    local gate, open = open_gate()
    local m = p:map_async(gated(trace, gate), support.range(20), {chunksize = 1})
    p:poll()
    has_lines(trace, 1) -- one chunk runs; two more are held by the worker
    assert.is_true(support.eventually(function() return p:stats().queued == 17 end))
    assert.is_true(m:cancel())
    assert.is_true(m:cancelled())
    cancelled_error(m)
    -- the worker sees the revocation within a tick: the chunks it held are
    -- dropped, and so are the others as it takes them; only the running
    -- chunk's entry is left
    assert.is_true(support.eventually(function()
      return redis:cli("XLEN lmp:{" .. q .. "}"):match("%d+") == "1"
    end))
    open()
    -- behind everything the map sent: once it ran, no chunk is left
    assert.are.equal("after", p:apply(function() return "after" end))
    assert.are.same({"1"}, lines(trace))
    p:terminate()
  end)

  it("a task a worker holds but has not started is skipped", function()
    local q = new_queue()
    start_worker(q, {args = {"--prefetch", "2"}})
    local p = pool(q)
    local trace, held = tmp(), tmp()
    local gate, open = open_gate()
    local first = p:apply_async(gated(trace, gate), {"first"})
    local second = p:apply_async(mark(held), {"second"})
    p:poll()
    has_lines(trace, 1)
    assert.is_true(support.eventually(function() return p:stats().queued == 0 end)) -- both taken
    -- whether it started cannot be known here: not cancelled now...
    assert.is_false(second:cancel())
    -- ...but the worker skips it
    cancelled_error(second)
    open()
    assert.are.equal("first", first:get(20))
    assert.are.equal("after", p:apply(function() return "after" end))
    assert.are.same({}, lines(held))
    p:terminate()
  end)

  it("an Executor's futures on a broker are cancelled the same way", function()
    local q = new_queue()
    local ex = lmp.Executor{broker = redis:url(0), queue = q, secret = SECRET}
    local trace = tmp()
    local f = ex:submit(mark(trace), "revoked")
    local g = ex:submit(function() return "ok" end)
    assert.is_true(f:cancel())
    assert.is_true(f:cancelled())
    assert.are.equal("cancelled", support.raised(f.result, f).kind)
    start_worker(q)
    assert.are.equal("ok", g:result(20))
    assert.are.same({}, lines(trace))
    ex:shutdown()
  end)

  it("a cancel the broker never answers fails the result with kind 'broker'", function()
    local srv = harness.server()
    local p = lmp.Pool{broker = srv:url(0), queue = new_queue(), secret = SECRET}
    local res = p:apply_async(function() return 1 end)
    p:poll()
    srv:stop()
    p._conn:patience(0.2) -- give up reconnecting soon
    local e = support.raised(res.cancel, res)
    assert.are.equal("broker", e.kind)
    assert.is_true(res:ready()) -- not left waiting for a result that may never come
    assert.are.equal("broker", support.raised(res.get, res).kind)
    assert.are.equal(0, p._inflight)
    p:terminate()
  end)

  it("a revoked task reclaimed from a vanished worker does not run", function()
    local q = new_queue()
    local p = pool(q)
    local trace = tmp()
    local res = p:apply_async(mark(trace), {"revoked"})
    p:poll()
    -- a worker that took it and vanished: its lease lapses
    local conn = assert(require("lmp.core").broker.open(redis:url(0), q, 5))
    local got = conn:take(1, 1)
    assert.are.equal(1, #got)
    assert.is_false(res:cancel())
    conn:close()
    local wpid, log = start_worker(q, {args = {"--visibility-timeout", "1"}})
    cancelled_error(res)
    assert.matches("reclaimed entry", support.read(log))
    assert.are.same({}, lines(trace))
    assert.is_true(support.alive(wpid))
    p:terminate()
  end)
end)

-- lmp.Pool{broker = ...} across simulated machines (tests/netns.lua): a
-- redis-server in one network namespace, `lmp worker`s in others, the
-- caller in the root namespace, all joined by a bridge.  What a broker owes
-- its callers when machines share it: fair shares, no task held behind a
-- long one, lost work back within the visibility timeout, every failure
-- told to the caller (never a silent hang), nothing left behind in Redis,
-- and no entry run twice or where it was not sent.
--
-- Skipped, with the reason, without redis-server or when namespaces cannot
-- be made (not root, no `ip`, unshare denied).
--
-- The only time bounds are the ones the behaviour states (a visibility
-- timeout plus slack, "within a few seconds"); each says why it is
-- generous.  Other waits are bounded only so that a hang fails the test.
local support = dofile("tests/support.lua")
local netns = dofile("tests/netns.lua")
local lmp = require "lmp"

local SECRET = "spec-secret"
local sh, range = support.shell, support.range

local have_redis = sh("command -v redis-server"):match("%S") ~= nil and sh("command -v redis-cli"):match("%S") ~= nil
local net, why
if have_redis then
  net, why = netns.new(4) -- 1: redis-server; 2, 3, 4: workers A, B, C
else
  why = "redis-server is not installed (apt-get install redis-server)"
end
if not net then io.stderr:write("broker_net_spec: skipped: ", why, "\n") end

local redis -- the server in namespace 1
local DEFAULTS = {appendonly = "no", appendfsync = "everysec", save = ""}

local pools, files = {}, {}
local nqueue = 0
local function new_queue()
  nqueue = nqueue + 1
  return "net" .. nqueue
end

local function pool(queue, extra)
  local o = {broker = redis.url, queue = queue, secret = SECRET}
  for k, v in pairs(extra or {}) do o[k] = v end
  local p = lmp.Pool(o)
  pools[#pools + 1] = p
  return p
end

-- A worker in namespace k (2, 3, 4) whose tasks see LMP_TEST_WORKER = tag.
local function worker(k, queue, tag, opts)
  opts = opts or {}
  return net[k]:worker(redis.url, queue, {processes = opts.processes or 2, args = opts.args, secret = opts.secret,
                                          env = {LMP_TEST_WORKER = tag}})
end

local function tmpname()
  local f = os.tmpname()
  files[#files + 1] = f
  return f
end

-- Tasks: sleep, then say which worker ran them.
local function tagged(x)
  require("lmp").sleep(0.01)
  return os.getenv("LMP_TEST_WORKER")
end

local function tagged_pair(x)
  require("lmp").sleep(0.01)
  return {x, os.getenv("LMP_TEST_WORKER")}
end

local function tagged_pair_20ms(x)
  require("lmp").sleep(0.02)
  return {x, os.getenv("LMP_TEST_WORKER")}
end

local function tally(list)
  local c = {}
  for _, v in ipairs(list) do c[v] = (c[v] or 0) + 1 end
  return c
end

local function show(t)
  local parts = {}
  for k, v in pairs(t) do parts[#parts + 1] = tostring(k) .. "=" .. tostring(v) end
  table.sort(parts)
  return "{" .. table.concat(parts, ", ") .. "}"
end

-- Submit n tasks fn(i) by apply_async, counting each result's deliveries
-- by the index the task returns first (fn returns {i, ...}).
local function submit_counted(p, fn, n)
  local rs, counts, at = {}, {}, {}
  for i = 1, n do
    rs[i] = p:apply_async(fn, {i}, {callback = function(v)
      counts[v[1]] = (counts[v[1]] or 0) + 1
      at[v[1]] = lmp.time()
    end})
  end
  p:poll()
  return rs, counts, at
end

-- Wait until n results have come (the callbacks count them).
local function wait_done(p, counts, n, secs)
  return support.eventually(function()
    p:poll()
    local k = 0
    for _ in pairs(counts) do k = k + 1 end
    return k >= n
  end, secs or 60)
end

-- Every result came, right, once.
local function assert_each_once(p, rs, counts, secs)
  for i = 1, #rs do
    local v = rs[i]:get(secs or 60)
    assert.is_table(v, "no result for task " .. i)
    assert.are.equal(i, v[1])
  end
  p:poll()
  for i = 1, #rs do assert.are.equal(1, counts[i], "task " .. i .. "'s result count") end
end

-- The link of namespace k goes down now and up again after secs, while
-- the caller goes on.
local function cut_for(k, secs)
  net[k]:cut()
  sh(string.format("(sleep %s; ip link set %s up) > /dev/null 2>&1 &", secs, net[k].veth))
end

local function cli(args) return redis:cli(args) end

local function used_memory()
  return tonumber(cli("INFO memory"):match("used_memory:(%d+)"))
end

local function lmp_keys()
  local keys = {}
  for k in sh(string.format("redis-cli -h %s -p %d --scan --pattern 'lmp:*'", redis.addr, redis.port)):gmatch("%S+") do
    keys[k] = true
  end
  return keys
end

local function xlen(key) return tonumber(cli("XLEN " .. key):match("%d+")) or -1 end

-- A Lua script run inside Redis (binary-safe, unlike redis-cli's output).
local function eval(script, key, ...)
  local args = {}
  for i, a in ipairs({...}) do args[i] = "'" .. a .. "'" end
  return cli(string.format("EVAL '%s' 1 %s %s", script, key, table.concat(args, " ")))
end

-- Copy the fields of the first entry of stream KEYS[1] to list ARGV[1].
local CAPTURE = [=[local e = redis.call("XRANGE", KEYS[1], "-", "+", "COUNT", 1)[1]
redis.call("DEL", ARGV[1])
redis.call("RPUSH", ARGV[1], unpack(e[2]))
return e[1]]=]
-- XADD the fields kept in list ARGV[1] to stream KEYS[1].
local REPLAY = [=[return redis.call("XADD", KEYS[1], "*", unpack(redis.call("LRANGE", ARGV[1], 0, -1)))]=]
-- Replace the first entry of stream KEYS[1] by a copy whose m field has
-- its middle byte changed.
local TAMPER = [=[local e = redis.call("XRANGE", KEYS[1], "-", "+", "COUNT", 1)[1]
local f = e[2]
for i = 1, #f, 2 do
  if f[i] == "m" then
    local m = f[i + 1]
    local k = math.floor(#m / 2)
    f[i + 1] = string.sub(m, 1, k - 1) .. string.char((string.byte(m, k) + 1) % 256) .. string.sub(m, k + 1)
  end
end
redis.call("XADD", KEYS[1], "*", unpack(f))
redis.call("XDEL", KEYS[1], e[1])
return e[1]]=]

local function lines_of(path) return #support.lines(support.read(path)) end

-- A task's side effect: a line in `path`.
local function append_line(path)
  local f = io.open(path, "a")
  f:write("ran\n")
  f:close()
  return "done"
end

local describe_net = net and describe or function(name)
  describe(name, function()
    pending(why)
  end)
end

describe_net("lmp.Pool on a Redis broker across machines", function()
  setup(function()
    local err
    redis, err = net:redis(net[1], DEFAULTS)
    assert(redis, err)
  end)

  teardown(function()
    for _, p in ipairs(pools) do pcall(p.terminate, p) end
    net:close()
  end)

  after_each(function()
    for _, p in ipairs(pools) do pcall(p.terminate, p) end
    pools = {}
    net:reset() -- the workers die, every link is up again
    if not redis:running() or redis.opts.appendonly ~= "no" then
      redis:stop("kill")
      sh("rm -rf " .. redis.dir .. "/*")
      assert(redis:start(DEFAULTS))
    end
    cli("FLUSHALL")
    for _, f in ipairs(files) do os.remove(f) end
    files = {}
  end)

  -- a
  it("shares a map fairly: two workers of 4 processes each run >= 40% of 4000 items", function()
    local q = new_queue()
    worker(2, q, "A", {processes = 4})
    worker(3, q, "B", {processes = 4})
    local p = pool(q)
    local c = tally(p:map(tagged, range(4000)))
    assert.is_true((c.A or 0) >= 1600 and (c.B or 0) >= 1600, "items per worker: " .. show(c))
  end)

  -- b
  it("gives a worker that joins a third of the way in >= 20% of a 10,000-item map", function()
    local q = new_queue()
    worker(2, q, "A", {processes = 4})
    worker(3, q, "B", {processes = 4})
    local p = pool(q)
    local c, n = {}, 0
    for _, who in p:imap_unordered(tagged, range(10000)) do
      n = n + 1
      c[who] = (c[who] or 0) + 1
      if n == 3334 then worker(4, q, "C", {processes = 4}) end
    end
    assert.are.equal(10000, n)
    assert.is_true((c.C or 0) >= 2000, "items per worker: " .. show(c))
  end)

  -- c
  it("does not hold short tasks behind a long one while a worker is idle", function()
    local q = new_queue()
    worker(2, q, "A", {processes = 1})
    worker(3, q, "B", {processes = 1})
    local p = pool(q)
    local long = p:apply_async(function() require("lmp").sleep(6) return "long" end)
    local short = {}
    for i = 1, 7 do short[i] = p:apply_async(function(x) require("lmp").sleep(0.01) return x end, {i}) end
    for i = 1, 7 do assert.are.equal(i, short[i]:get(30)) end
    -- every short one done while the long one still runs
    assert.is_false(long:ready(), "a short task waited for the long one to end")
    assert.are.equal("long", long:get(30))
  end)

  -- d
  it("brings a killed worker's tasks back within visibility_timeout while the survivor has a backlog", function()
    local q = new_queue()
    local vt = 3
    local a = worker(2, q, "A", {processes = 4})
    worker(3, q, "B", {processes = 4})
    local p = pool(q, {visibility_timeout = vt})
    -- 3000 tasks of 20 ms: B alone needs about 15 s, far past the check below
    local rs, counts, at = submit_counted(p, tagged_pair_20ms, 3000)
    assert.is_truthy(wait_done(p, counts, 200))
    a:kill("KILL")
    local t_kill = lmp.time()
    -- A's tasks are those still undone once B has run past them: an index
    -- at or below the highest done a second after the kill (B needs far
    -- less than a second to pass what A held)
    while lmp.time() < t_kill + 1 do
      p:poll()
      lmp.sleep(0.05)
    end
    local high, held = 0, 0
    for i in pairs(at) do if i > high then high = i end end
    for i = 1, high do if not counts[i] then held = held + 1 end end
    assert.is_true(held > 0, "the killed worker held no task: the test cannot tell")
    -- each is done by t_kill + vt + slack; 3 s of slack covers the
    -- reclaim's period (vt / 4), a lease renewal and a loaded 2-core machine
    -- (the workers started before the pool: they must have learnt its
    -- visibility_timeout since)
    local deadline = t_kill + vt + 3
    while lmp.time() < deadline do
      p:poll()
      lmp.sleep(0.05)
    end
    p:poll()
    local lost, left = {}, 0
    for i = 1, #rs do
      if not counts[i] then
        left = left + 1
        if i <= high then lost[#lost + 1] = i end
      end
    end
    assert.is_true(left > 0, "the backlog ran out before the check: the test cannot tell")
    assert.are.same({}, lost, string.format("tasks taken before the kill still not done %.1f s after it "
                                            .. "(%d tasks of the backlog left)", lmp.time() - t_kill, left))
    assert_each_once(p, rs, counts, 120)
  end)

  it("logs a worker cut off from Redis and its return; the run completes, each result once", function()
    local q = new_queue()
    local a = worker(2, q, "A", {processes = 2})
    worker(3, q, "B", {processes = 2})
    local p = pool(q, {visibility_timeout = 3})
    local rs, counts = submit_counted(p, tagged_pair, 600)
    assert.is_truthy(wait_done(p, counts, 50))
    -- 8 s: longer than any sensible detection of a dead link
    cut_for(2, 8)
    assert_each_once(p, rs, counts, 60)
    -- the log says "cut off" once it notices, then "back" once it is
    local function cut_at() return a:output():find("cut off", 1, true) end
    support.eventually(function() return cut_at() and a:output():find("back", cut_at(), true) end, 20)
    local log = a:output()
    assert.is_truthy(cut_at(), "the worker did not log that it was cut off:\n" .. log)
    assert.is_truthy(log:find("back", cut_at(), true), "the worker did not log that it was back:\n" .. log)
  end)

  -- e
  it("fails an apply with kind 'dead_letter' when the only worker has another secret", function()
    local q = new_queue()
    worker(2, q, "A", {secret = "wrong"})
    local p = pool(q)
    local r = p:apply_async(function() return 1 end)
    -- a refusal is a few Redis commands: 10 s covers five of them on a
    -- loaded machine many times over
    local ok, e = pcall(r.get, r, 10)
    assert.is_false(ok, "no answer within 10 s")
    assert.are.equal("dead_letter", e.kind, tostring(e))
  end)

  -- The caller's pending work after Redis lost every key: `lose` does it
  -- during a map; the map fails with kind "broker" within 2 visibility
  -- timeouts (+ 2 s of slack for a loaded 2-core machine), saying so.
  local function lost_state(lose)
    local q = new_queue()
    local vt = 2
    worker(2, q, "A", {processes = 2})
    worker(3, q, "B", {processes = 2})
    local p = pool(q, {visibility_timeout = vt})
    local ar = p:map_async(tagged, range(2000), 10)
    assert.is_truthy(support.eventually(function() p:poll() return p:stats().done > 0 end, 30))
    lose()
    local t0 = lmp.time()
    local ok, e = pcall(ar.get, ar, 2 * vt + 2)
    assert.is_false(ok, string.format("no error %.1f s after the broker lost its state%s", lmp.time() - t0,
                                      ar:ready() and " (the map completed)" or ""))
    assert.are.equal("broker", e.kind, tostring(e))
    assert.matches("lost its state", tostring(e.message))
  end

  it("fails the caller's pending results with kind 'broker' after FLUSHALL", function()
    lost_state(function() cli("FLUSHALL") end)
  end)

  it("fails the caller's pending results with kind 'broker' after a restart without persistence", function()
    lost_state(function()
      redis:stop("nosave")
      assert(redis:start{appendonly = "no", save = ""})
    end)
  end)

  it("completes every item once across a crash of a redis-server with appendfsync always", function()
    redis:stop("kill")
    sh("rm -rf " .. redis.dir .. "/*")
    assert(redis:start{appendonly = "yes", appendfsync = "always"})
    local q = new_queue()
    worker(2, q, "A", {processes = 2})
    worker(3, q, "B", {processes = 2})
    local p = pool(q)
    local rs, counts = submit_counted(p, tagged_pair, 600)
    assert.is_truthy(wait_done(p, counts, 100))
    redis:stop("kill")
    assert(redis:start())
    assert_each_once(p, rs, counts, 90)
  end)

  it("dead-letters a tampered entry and fails its caller's result with kind 'dead_letter'", function()
    local q = new_queue()
    local p = pool(q)
    local r = p:apply_async(function() return "untouched" end)
    p:poll() -- sent; no worker yet
    assert.matches("%d+%-%d+", eval(TAMPER, "lmp:{" .. q .. "}"))
    worker(2, q, "A", {processes = 1})
    local ok, e = pcall(r.get, r, 10)
    assert.is_false(ok, "no answer within 10 s")
    assert.are.equal("dead_letter", e.kind, tostring(e))
    assert.are.equal(1, xlen("lmp:{" .. q .. "}:dead"))
  end)

  it("raises an lmp.Error of kind 'broker' from stats() while Redis is unreachable", function()
    local q = new_queue()
    -- in a program of its own, bounded so that a hang fails the test
    local script = support.tmpfile(string.format([[
      local lmp = require "lmp"
      local p = lmp.Pool{broker = %q, queue = %q, secret = %q, connect_timeout = 2}
      assert(p:stats().queue == %q)
      os.execute("ip link set %s down")
      local ok, e = pcall(p.stats, p)
      os.execute("ip link set %s up")
      if ok then
        print("returned fields: queued=" .. tostring(e.queued) .. " workers=" .. #e.workers)
      else
        print("raised kind=" .. tostring(lmp.is_error(e) and e.kind) .. ": " .. tostring(e))
      end
      os.exit(0)
    ]], redis.url, q, SECRET, q, net[1].veth, net[1].veth))
    files[#files + 1] = script
    local out = support.run_file(script, "", "timeout 40")
    assert.matches("raised kind=broker", out)
  end)

  -- f
  it("leaves nothing in Redis once 500 results of 100 KB are collected and the pool is closed", function()
    local q = new_queue()
    worker(2, q, "A", {processes = 2})
    -- the worker's own keys are there before
    assert.is_truthy(support.eventually(function() return next(lmp_keys()) ~= nil end))
    local before, base = lmp_keys(), used_memory()
    local p = pool(q)
    local rs = {}
    for i = 1, 500 do rs[i] = p:apply_async(function() return string.rep("x", 100000) end) end
    for i = 1, 500 do assert.are.equal(100000, #rs[i]:get(60)) end
    p:close()
    p:join()
    p:terminate()
    local mem
    support.eventually(function()
      mem = used_memory()
      return mem <= base * 1.1
    end, 10)
    local left = {}
    for k in pairs(lmp_keys()) do
      if not before[k] then left[#left + 1] = k end
    end
    table.sort(left)
    local listed = table.concat(left, " ", 1, math.min(#left, 12)) .. (#left > 12 and " ..." or "")
    assert.is_true(mem <= base * 1.1, string.format("used_memory %d after, %d before; %d new keys: %s", mem, base,
                                                    #left, listed))
    -- the one key a finished caller keeps (docs/guide.md): the mark that
    -- refuses a replay of its tasks, until they would have expired
    local foreign = {}
    for _, k in ipairs(left) do
      local ours = "lmp:{" .. q .. "}"
      local of_queue = k:find(ours, 1, true) == 1 and k:find(ours .. ":c:", 1, true) ~= 1
      if not of_queue and k ~= ours .. ":c:" .. p._caller .. ":lo" then
        foreign[#foreign + 1] = k
      end
    end
    assert.are.same({}, foreign, "keys left by the caller (all new keys: " .. listed .. ")")
  end)

  it("keeps an uncollected result no longer than result_ttl", function()
    local q = new_queue()
    worker(2, q, "A", {processes = 1})
    assert.is_truthy(support.eventually(function() return next(lmp_keys()) ~= nil end))
    local p = pool(q, {result_ttl = 5})
    local before = lmp_keys()
    p:apply_async(function() return "kept" end)
    p:poll() -- sent, not collected
    assert.is_truthy(support.eventually(function()
      local ws = p:stats().workers
      return #ws == 1 and ws[1].done == 1
    end, 10))
    -- the result's key; the caller's counter and replay records live as long
    -- as its tasks may (Pool option expires), as docs/guide.md says
    local checked, over = {}, {}
    for k in pairs(lmp_keys()) do
      if k == "lmp:{" .. q .. "}:c:" .. p._caller then
        local ttl = tonumber(cli("PTTL " .. k):match("%-?%d+"))
        if ttl ~= -2 then -- -2: gone meanwhile
          checked[#checked + 1] = k .. " " .. ttl
          if ttl < 0 or ttl > 5000 then over[#over + 1] = k .. " " .. ttl end
        end
      end
    end
    assert.is_true(#checked > 0, "the result is in no new key")
    table.sort(over)
    assert.are.same({}, over, "keys (and PTTL) past result_ttl")
  end)

  -- g
  it("runs a replayed entry once, and not at all from another queue's stream", function()
    local q, other = new_queue(), new_queue()
    local path = tmpname()
    local p = pool(q)
    local r = p:apply_async(append_line, {path})
    p:poll() -- sent; no worker yet
    local cap = "netspec:cap:" .. q
    assert.matches("%d+%-%d+", eval(CAPTURE, "lmp:{" .. q .. "}", cap))
    worker(2, q, "A", {processes = 1})
    assert.are.equal("done", r:get(20))
    for _ = 1, 4 do eval(REPLAY, "lmp:{" .. q .. "}", cap) end
    -- the worker runs one process, in order: once the marker is done, the
    -- copies before it have been taken
    assert.are.equal("marker", p:apply(function() return "marker" end))
    support.eventually(function() return xlen("lmp:{" .. q .. "}") == 0 end, 15)
    assert.are.equal(1, lines_of(path), "runs of the task")
    -- the same entry in another queue's stream
    worker(3, other, "B", {processes = 1})
    local po = pool(other)
    eval(REPLAY, "lmp:{" .. other .. "}", cap)
    assert.are.equal("marker", po:apply(function() return "marker" end))
    support.eventually(function() return xlen("lmp:{" .. other .. "}") == 0 end, 15)
    assert.are.equal(1, lines_of(path), "runs of the task")
    cli("DEL " .. cap)
  end)

  -- h
  it("serves an apply at once after 10 junk entries", function()
    local q = new_queue()
    worker(2, q, "A", {processes = 1})
    for _ = 1, 10 do cli("XADD lmp:{" .. q .. "} '*' m garbage d 0") end
    local p = pool(q)
    -- refusing an entry costs a few Redis commands: 5 s is far more than
    -- ten of them take on a loaded machine, and far less than a worker that
    -- backs off after each refusal takes
    local r = p:apply_async(function() return "served" end)
    assert.are.equal("served", (r:get(5)))
  end)

  -- i
  it("completes a map, each result once, across a 5 s cut of a worker's link", function()
    local q = new_queue()
    worker(2, q, "A", {processes = 2})
    worker(3, q, "B", {processes = 2})
    local p = pool(q, {visibility_timeout = 3})
    local seen, n = {}, 0
    for i, v in p:imap_unordered(tagged_pair, range(800), 1) do
      n = n + 1
      assert.are.equal(i, v[1])
      seen[i] = (seen[i] or 0) + 1
      if n == 100 then cut_for(2, 5) end
    end
    assert.are.equal(800, n)
    for i = 1, 800 do assert.are.equal(1, seen[i], "item " .. i) end
  end)

  it("leaks no globals", function()
    assert.are.same({}, support.new_globals())
  end)
end)

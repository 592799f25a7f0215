-- lmp.Pool{broker = "redis+sentinel://..."} and `lmp worker` against a
-- loopback master, its replica and three sentinels (started here on free
-- ports, stopped at the end), a failover under a running map, and the
-- durable option (WAIT for a replica).  Skipped, with the reason, when
-- redis-server is missing.
local support = dofile("tests/support.lua")
local lmp = require "lmp"

local SECRET = "spec-secret"
local harness = dofile("tests/redis.lua")
local free_port = harness.free_port

local readfile = support.readfile

local eventually = support.eventually

-- A master, its replica and three sentinels of it named `name`; the URL
-- lists a port where no sentinel listens first (asked in turn, it is
-- passed over).
local function topology(name)
  local t = {name = name or "mymaster"}
  t.master = harness.server()
  t.replica = harness.server("--replicaof 127.0.0.1 " .. t.master.port)
  local hosts = {"127.0.0.1:" .. free_port()}
  for i = 1, 3 do
    t[i] = harness.sentinel(t.master.port, t.name)
    hosts[#hosts + 1] = "127.0.0.1:" .. t[i].port
  end
  t.hosts = table.concat(hosts, ",")
  t.url = "redis+sentinel://" .. t.hosts .. "/" .. t.name .. "/0"
  -- the replica is in sync, and the sentinels have found each other
  assert(eventually(function() return t.master:cli("INFO replication"):match("slave0:.-state=online") end))
  assert(eventually(function() return t[1]:cli("SENTINEL sentinels " .. t.name):match("127%.0%.0%.1") end))
  return t
end

local function pool(url, queue, extra) return harness.pool({broker = url, queue = queue, secret = SECRET}, extra) end

-- The error lmp.Pool{broker = url} raises.
local function open_error(url, extra)
  local ok, e = pcall(pool, url, "q", extra)
  assert.is_false(ok)
  return e
end

local describe_redis = harness.describer(describe, pending)

describe_redis("lmp.Pool on Redis Sentinel", function()
  local topo
  setup(function() topo = topology() end)
  teardown(harness.cleanup)

  it("maps over redis+sentinel:// with two workers, passing over a sentinel that is down", function()
    for _ = 1, 2 do harness.worker{url = topo.url, queue = "map", secret = SECRET} end
    local p = pool(topo.url, "map")
    local list = support.range(200)
    assert.are.same(list, p:map(function(x) return x end, list))
    assert.are.equal(20, p:apply(function(a, b) return a * b end, 4, 5))
    p:close()
    p:join()
  end)

  it("asks again when the node the sentinels name is not a master", function()
    -- a sentinel told that the replica is the master of "stale"
    local s = harness.sentinel(topo.replica.port, "stale")
    local e = open_error("redis+sentinel://127.0.0.1:" .. s.port .. "/stale/0", {connect_timeout = 1})
    assert.are.equal("broker", e.kind)
    assert.matches("the sentinels named 127%.0%.0%.1:" .. topo.replica.port .. " master of 'stale', but it is a slave",
                   e.message)
  end)

  it("fails clearly at lmp.Pool when no sentinel answers, without showing the password", function()
    local url = string.format("redis+sentinel://:hunter2@127.0.0.1:%d,127.0.0.1:%d/mymaster/0",
                              free_port(), free_port())
    local e = open_error(url, {connect_timeout = 1})
    assert.are.equal("broker", e.kind)
    assert.matches("no sentinel named the master of 'mymaster' %(2 asked; last sentinel 127%.0%.0%.1:%d+: "
                   .. "Connection refused%)", e.message)
    assert.is_nil(tostring(e):find("hunter2", 1, true))
  end)

  it("fails clearly for a master name no sentinel knows", function()
    local e = open_error("redis+sentinel://" .. topo.hosts .. "/nosuch/0")
    assert.are.equal("broker", e.kind)
    assert.matches("no sentinel knows a master named 'nosuch'", e.message)
  end)

  it("refuses malformed redis+sentinel URLs, never showing the password", function()
    local cases = {
      {"redis+sentinel://:pw-secret@/mymaster/0", "no sentinel host"},
      {"redis+sentinel://:pw-secret@127.0.0.1:26379", "no master name"},
      {"redis+sentinel://127.0.0.1:26379/", "no master name"},
      {"redis+sentinel://127.0.0.1,,127.0.0.2/m/0", "no host"},
      {"redis+sentinel://127.0.0.1:99999/m/0", "bad port"},
      {"redis+sentinel://[::1/m/0", "bad IPv6 address"},
      {"redis+sentinel://:pw-secret@127.0.0.1/m/x", "bad database number"},
      {"redis+sentinel://127.0.0.1/m/0?sentinel_password=x", "no options are supported"},
      {"redis+other://:pw-secret@127.0.0.1/m/0", "unsupported broker URL .-supported: redis://.-redis%+sentinel://"},
    }
    for _, c in ipairs(cases) do
      local e = open_error(c[1])
      assert.are.equal("broker", e.kind)
      assert.matches(c[2], e.message)
      assert.is_nil(tostring(e):find("pw-secret", 1, true), c[1])
    end
  end)

  it("durable tasks complete when a replica acknowledges them", function()
    harness.worker{url = topo.url, queue = "durable", secret = SECRET}
    local p = pool(topo.url, "durable", {durable = true})
    local list = support.range(100)
    assert.are.same(list, p:map(function(x) return x end, list))
    local q = pool(topo.url, "durable")
    assert.are.equal(3, q:apply_async(function() return 3 end, nil, {durable = true}):get(30))
    p:close()
    q:close()
  end)

  it("checks the option durable", function()
    local p = pool(topo.url, "durable")
    assert.has_error(function() p:apply_async(print, nil, {durable = "yes"}) end,
                     "bad argument #3 to 'apply_async' (option 'durable' must be a boolean)")
    assert.has_error(function() p:map(print, {1}, {durable = 1}) end,
                     "bad argument #3 to 'map' (option 'durable' must be a boolean)")
    assert.has_error(function() pool(topo.url, "durable", {durable = "yes"}) end,
                     "bad argument #1 to 'Pool' (field 'durable' must be a boolean)")
    p:close()
  end)

  -- The guide's "-- with sentinels" samples run against this topology,
  -- sentinel-1..3 standing for the sentinels' addresses.
  for i, sample in ipairs(support.samples("docs/guide.md")) do
    if sample.code:match("^%-%- with sentinels") then
      it("runs the guide's sample " .. i .. " (" .. sample.title .. ")", function()
        harness.worker{url = topo.url, queue = "default", secret = "s3cret"}
        local code = sample.code
        for k = 1, 3 do code = code:gsub("sentinel%-" .. k .. ":26379", "127.0.0.1:" .. topo[k].port) end
        support.check_sample(sample.code, code)
      end)
    end
  end
end)

describe_redis("a Sentinel failover under a running map", function()
  teardown(harness.cleanup)

  it("completes every item, or fails lost tasks with kind 'broker', and the workers follow", function()
    local topo = topology("failover")
    local logs = {}
    for k = 1, 2 do
      local _, log = harness.worker{url = topo.url, queue = "fo", secret = SECRET}
      logs[k] = log
    end
    local ran = os.tmpname()
    local p = pool(topo.url, "fo", {visibility_timeout = 5})
    local n = 2000
    local res = p:map_async(function(x)
      local f = io.open(ran, "a")
      f:write(x, "\n")
      f:close()
      lmp.sleep(0.005)
      return x * 2
    end, support.range(n))
    assert(eventually(function() return #support.lines(readfile(ran)) >= n // 4 end, 60))
    topo.master:kill()
    local t0 = lmp.time()
    local ok, v = pcall(res.get, res, 300)
    assert(lmp.time() - t0 < 300, "the map did not end")
    if ok then
      local runs = {}
      for x in readfile(ran):gmatch("%d+") do runs[tonumber(x)] = (runs[tonumber(x)] or 0) + 1 end
      for x = 1, n do
        assert.are.equal(2 * x, v[x])
        assert(runs[x] and runs[x] >= 1, "item " .. x .. " never ran")
      end
    else
      assert.are.equal("broker", v.kind, tostring(v))
      assert.matches("lost", v.message)
    end
    -- the replica is the master now, and the workers say they followed
    assert.matches("^master", topo.replica:cli("ROLE"))
    assert(eventually(function()
      return readfile(logs[1]):match("following the broker's failover: its master is now 127%.0%.0%.1:"
                                     .. topo.replica.port)
    end, 30), readfile(logs[1]))
    os.remove(ran)
    p:close()
  end)
end)

describe_redis("durable tasks without a replica", function()
  teardown(harness.cleanup)

  it("fail with kind 'broker'; the others complete; the worker says its results were not replicated", function()
    local srv = harness.server()
    local _, log = harness.worker{url = srv:url(0), queue = "lone", secret = SECRET}
    local p = pool(srv:url(0), "lone", {connect_timeout = 1})
    local durable = p:apply_async(function() return 1 end, nil, {durable = true})
    local plain = p:apply_async(function() return 2 end)
    local ok, e = pcall(durable.get, durable, 30)
    assert.is_false(ok)
    assert.are.equal("broker", e.kind)
    assert.matches("no replica of the broker acknowledged 1 durable tasks within 1 s %(WAIT 1 1000: 0 replicas", e.message)
    assert.are.equal(2, plain:get(30))
    assert(eventually(function() return readfile(log):match("no replica acknowledged the results of durable tasks") end),
           readfile(log))
    local q = pool(srv:url(0), "lone", {connect_timeout = 1, durable = true})
    local ok2, e2 = pcall(q.map, q, function(x) return x end, {1, 2, 3})
    assert.is_false(ok2)
    assert.are.equal("broker", e2.kind)
    p:close()
    q:close()
  end)
end)

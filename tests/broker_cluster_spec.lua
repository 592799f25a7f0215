-- lmp.Pool{broker = "redis+cluster://..."} against a Redis Cluster of
-- three masters started here on loopback ports (redis-server
-- --cluster-enabled yes, joined by redis-cli --cluster create) and stopped
-- at the end.  Skipped, with the reason, when redis-server is missing.
local support = dofile("tests/support.lua")
local harness = dofile("tests/redis.lua")
local lmp = require "lmp"

local SECRET = "spec-secret"
local sh, range = support.shell, support.range

local nodes = {} -- the three masters (harness servers)
local function seeds() return nodes[1].port .. ",127.0.0.1:" .. nodes[2].port end
local function url() return "redis+cluster://127.0.0.1:" .. seeds() .. "/" end

-- The node that serves a key's slot, and the slot.
local function owner(key)
  local slot = tonumber(nodes[1]:cli("CLUSTER KEYSLOT " .. harness.shq(key)):match("%d+"))
  for _, n in ipairs(nodes) do
    for line in n:cli("CLUSTER NODES"):gmatch("[^\n]+") do
      if line:match("myself") then
        for lo, hi in line:gmatch(" (%d+)%-(%d+)") do
          if slot >= tonumber(lo) and slot <= tonumber(hi) then return n, slot end
        end
        for one in line:gmatch(" (%d+)%f[%s%z]") do
          if tonumber(one) == slot and tonumber(one) < 16384 then return n, slot end
        end
      end
    end
  end
end

-- A queue name whose keys live on node n.
local function queue_on(n, base)
  for i = 1, 1000 do
    local q = base .. i
    if owner("lmp:{" .. q .. "}") == n then return q end
  end
end

-- Move a slot from one master to another, keys and all, as
-- `redis-cli --cluster reshard` does.
local function migrate(slot, from, to)
  local idf, idt = from:cli("CLUSTER MYID"):match("%x+"), to:cli("CLUSTER MYID"):match("%x+")
  to:cli("CLUSTER SETSLOT " .. slot .. " IMPORTING " .. idf)
  from:cli("CLUSTER SETSLOT " .. slot .. " MIGRATING " .. idt)
  for _ = 1, 1000 do
    local keys = {}
    for k in from:cli("CLUSTER GETKEYSINSLOT " .. slot .. " 100"):gmatch("[^\n]+") do
      keys[#keys + 1] = harness.shq(k)
    end
    if #keys == 0 then break end
    from:cli("MIGRATE 127.0.0.1 " .. to.port .. " '' 0 5000 REPLACE KEYS " .. table.concat(keys, " "))
  end
  for _, n in ipairs(nodes) do n:cli("CLUSTER SETSLOT " .. slot .. " NODE " .. idt) end
end

local function start_worker(queue, opts)
  local o = {queue = queue, url = url(), secret = SECRET}
  for k, v in pairs(opts or {}) do o[k] = v end
  return harness.worker(o)
end

local function pool(queue, extra) return harness.pool({broker = url(), queue = queue, secret = SECRET}, extra) end

local describe_redis = harness.describer(describe, pending)

describe_redis("lmp.Pool on a Redis Cluster", function()
  setup(function()
    nodes = harness.cluster(3, "--appendonly no")
  end)

  teardown(harness.cleanup)

  it("runs a map on a queue whose keys all live on one master", function()
    local q = queue_on(nodes[3], "c")
    start_worker(q)
    local p = pool(q)
    local r = p:map(function(x) return x * x end, range(500))
    assert.are.equal(500, #r)
    for i = 1, 500 do assert.are.equal(i * i, r[i]) end
    assert.are.equal(7, p:apply(function(a, b) return a + b end, 3, 4))
    assert.are.equal(1, #p:stats().workers)
    -- every key of the queue, the pool's and the worker's, on that master
    assert.matches("lmp:{" .. q .. "}", nodes[3]:cli("--scan --pattern 'lmp:*'"))
    for i = 1, 2 do assert.are.equal("", nodes[i]:cli("--scan --pattern 'lmp:*'")) end
    p:terminate()
  end)

  it("spreads queues over the masters, each served by its workers", function()
    local qa, qb = queue_on(nodes[1], "a"), queue_on(nodes[2], "b")
    start_worker(qa)
    start_worker(qb)
    local pa, pb = pool(qa), pool(qb)
    local ra = pa:map_async(function(x) return "a" .. x end, range(200), 5)
    local rb = pb:map_async(function(x) return "b" .. x end, range(200), 5)
    local a, b = ra:get(30), rb:get(30)
    assert.are.equal("a200", a[200])
    assert.are.equal("b200", b[200])
    assert.matches("lmp:{" .. qa .. "}", nodes[1]:cli("--scan --pattern 'lmp:*'"))
    assert.matches("lmp:{" .. qb .. "}", nodes[2]:cli("--scan --pattern 'lmp:*'"))
    pa:terminate()
    pb:terminate()
  end)

  it("loses nothing when the queue's slot moves to another master in the middle of a map", function()
    local q = queue_on(nodes[1], "r")
    local from, slot = owner("lmp:{" .. q .. "}")
    local to = nodes[2]
    start_worker(q)
    start_worker(q)
    local p = pool(q)
    local n = 1500
    local m = p:map_async(function(x) require("lmp").sleep(0.002) return x * 3 end, range(n), 1)
    -- some done, many waiting: then the slot moves
    assert(support.eventually(function() p:poll() return p:stats().done >= 100 end, 30))
    migrate(slot, from, to)
    assert.are.equal(to, owner("lmp:{" .. q .. "}"))
    local r = m:get(120)
    assert.is_table(r, "the map did not finish")
    assert.are.equal(n, #r)
    for i = 1, n do assert.are.equal(i * 3, r[i]) end
    -- the queue lives on where it went, and the pool goes on there
    local mine = "--scan --pattern 'lmp:{" .. q .. "}*'"
    assert.are.equal("", from:cli(mine))
    assert.matches("lmp:{" .. q .. "}", to:cli(mine))
    assert.are.equal(9, p:apply(function() return 9 end))
    p:terminate()
  end)

  it("finds the cluster through any node the URL names, passing over dead ones", function()
    local q = queue_on(nodes[2], "s")
    local dead = harness.free_port()
    local u = "redis+cluster://127.0.0.1:" .. dead .. ",127.0.0.1:" .. nodes[3].port .. "/"
    start_worker(q, {url = u})
    local p = lmp.Pool{broker = u, queue = q, secret = SECRET}
    assert.are.same({2, 4}, p:map(function(x) return 2 * x end, {1, 2}))
    p:terminate()
  end)

  it("says which URL to use for a cluster node or a standalone server", function()
    local curl = "redis://127.0.0.1:" .. nodes[1].port .. "/0"
    local why = "the broker at 127.0.0.1:" .. nodes[1].port .. " is a Redis Cluster node: name its nodes as "
                .. "redis+cluster://host:port,host:port/"
    local ok, e = pcall(lmp.Pool, {broker = curl, secret = SECRET})
    assert.is_false(ok)
    assert.are.equal("broker", e.kind)
    assert.matches(why, e.message, 1, true)
    -- a worker too, at once (timeout only ends one that would serve the node for ever)
    local out = sh("timeout 60 env LMP_SECRET=x " .. support.lmp_bin .. " worker " .. curl .. "; echo rc=$?")
    assert.matches(why .. "\nrc=1", out, 1, true)
    local plain = harness.server()
    ok, e = pcall(lmp.Pool, {broker = "redis+cluster://127.0.0.1:" .. plain.port .. "/", secret = SECRET})
    assert.is_false(ok)
    assert.matches("is not a Redis Cluster node", e.message)
    plain:close()
    ok, e = pcall(lmp.Pool, {broker = url():gsub("/$", "/1"), secret = SECRET})
    assert.is_false(ok)
    assert.matches("database 0 only", e.message)
    for _, bad in ipairs({"redis+cluster:///", "redis+cluster://127.0.0.1:1,/", "redis+cluster://h:0/"}) do
      ok, e = pcall(lmp.Pool, {broker = bad, secret = SECRET})
      assert.is_false(ok, bad)
      assert.matches("bad broker URL", e.message)
    end
  end)

  it("runs the guide's Redis Cluster sample", function()
    local sample
    for _, x in ipairs(support.samples("docs/guide.md")) do
      if x.code:match("^%-%- with a Redis Cluster") then sample = x.code end
    end
    assert.is_string(sample, "docs/guide.md has no Redis Cluster sample")
    start_worker("mail", {secret = "s3cret"})
    start_worker("thumbs", {secret = "s3cret"})
    local code = sample:gsub("127%.0%.0%.1:7000,127%.0%.0%.1:7001", "127.0.0.1:" .. seeds())
    support.check_sample(sample, code)
  end)

  it("leaks no globals", function()
    assert.are.same({}, support.new_globals())
  end)
end)

-- Priorities ({priority = 0..9}, higher first) and `lmp worker
-- --rate-limit N/s` on a Redis broker started here (tests/redis.lua).
local support = dofile("tests/support.lua")
local lmp = require "lmp"
local harness = dofile("tests/redis.lua")

local SECRET = "prio-secret"
local redis -- this file's server

local nqueue = 0
local function new_queue()
  nqueue = nqueue + 1
  return "prio" .. nqueue
end

local function start_worker(queue, opts)
  local o = {queue = queue, url = redis:url(0), secret = SECRET}
  for k, v in pairs(opts or {}) do o[k] = v end
  return harness.worker(o)
end

local function pool(queue, extra) return harness.pool({broker = redis:url(0), queue = queue, secret = SECRET}, extra) end

-- A task that appends its tag and the time it started to a file.
local function record(tag, path)
  local lmp_ = require "lmp"
  local f = io.open(path, "a")
  f:write(tag, " ", string.format("%.3f", lmp_.time()), "\n")
  f:close()
  return tag
end

-- The tags and times a file of record's lines holds, in order.
local function records(path)
  local tags, times = {}, {}
  for tag, t in io.open(path):read("a"):gmatch("(%S+) (%S+)\n") do
    tags[#tags + 1] = tag
    times[#times + 1] = tonumber(t)
  end
  return tags, times
end

local describe_redis = harness.describer(describe, pending)

describe_redis("priorities and rate limits on a Redis broker", function()
  setup(function() redis = harness.server() end)
  teardown(harness.cleanup)

  it("runs every task of priority 9 before 5 before 0 on one worker", function()
    local q, out = new_queue(), os.tmpname()
    local p = pool(q)
    local rs = {}
    for _ = 1, 20 do rs[#rs + 1] = p:apply_async(record, {"0", out}) end
    for _ = 1, 5 do rs[#rs + 1] = p:apply_async(record, {"9", out}, {priority = 9}) end
    for _ = 1, 5 do rs[#rs + 1] = p:apply_async(record, {"5", out}, {priority = 5}) end
    p:poll() -- sent, before any worker runs
    assert.are.equal(30, p:stats().waiting)
    start_worker(q, {processes = 1, args = {"--prefetch", "1"}})
    for _, r in ipairs(rs) do r:get(30) end
    local tags = records(out)
    local want = {}
    for i = 1, 30 do want[i] = i <= 5 and "9" or i <= 10 and "5" or "0" end
    assert.are.same(want, tags)
    p:terminate()
    os.remove(out)
  end)

  it("takes the pool's priority as the default and a call's over it, in map too", function()
    local q, out = new_queue(), os.tmpname()
    local p = pool(q, {priority = 7})
    local rs = {}
    rs[1] = p:apply_async(record, {"low", out}, {priority = 2})
    rs[2] = p:map_async(function(x) return x end, {1, 2}, {priority = 1})
    rs[3] = p:apply_async(record, {"pool", out})
    p:poll()
    start_worker(q, {processes = 1, args = {"--prefetch", "1"}})
    for _, r in ipairs(rs) do r:get(30) end
    assert.are.same({"pool", "low"}, (records(out)))
    -- the levels went to their own streams
    assert.matches("lmp:{" .. q .. "}:p7", redis:cli("KEYS 'lmp:{" .. q .. "}:p*'"), 1, true)
    assert.matches("lmp:{" .. q .. "}:p1", redis:cli("KEYS 'lmp:{" .. q .. "}:p*'"), 1, true)
    p:terminate()
    os.remove(out)
  end)

  it("refuses priorities that are not integers from 0 to 9", function()
    local p = pool(new_queue())
    local f = function() end
    for _, v in ipairs{10, -1, 2.5, "x", "3", math.huge} do
      local ok, e = pcall(p.apply_async, p, f, nil, {priority = v})
      assert.is_false(ok)
      assert.matches("bad argument #3 to 'apply_async' %(option 'priority' must be an integer from 0 to 9%)", e)
      ok, e = pcall(p.map, p, f, {1}, {priority = v})
      assert.is_false(ok)
      assert.matches("bad argument #3 to 'map'", e)
      ok, e = pcall(p.starmap_async, p, f, {{1}}, {priority = v})
      assert.is_false(ok)
      assert.matches("bad argument #3 to 'starmap_async'", e)
      ok, e = pcall(lmp.Pool, {broker = redis:url(0), secret = SECRET, priority = v})
      assert.is_false(ok)
      assert.matches("bad argument #1 to 'Pool' %(field 'priority' must be an integer from 0 to 9%)", e)
    end
    p:terminate()
    -- a local pool has no priorities
    local lp <close> = lmp.Pool(1)
    local ok, e = pcall(lp.apply_async, lp, f, nil, {priority = 1})
    assert.is_false(ok)
    assert.matches("unknown option 'priority'", e)
  end)

  it("queues a held task at its priority when it is due", function()
    local q, out = new_queue(), os.tmpname()
    local p = pool(q)
    start_worker(q, {processes = 1, args = {"--prefetch", "1"}})
    -- the one process is busy while the others come and the held one is due
    local first = p:apply_async(function(path)
      record("first", path)
      require("lmp").sleep(1)
    end, {out})
    assert.is_truthy(support.eventually(function()
      p:poll()
      return io.open(out):read("a") ~= ""
    end))
    local rs = {}
    for _ = 1, 6 do rs[#rs + 1] = p:apply_async(record, {"0", out}) end
    rs[#rs + 1] = p:apply_async(record, {"8", out}, {priority = 8, countdown = 0.2})
    p:poll()
    first:get(30)
    for _, r in ipairs(rs) do r:get(30) end
    local tags = records(out)
    assert.are.same({"first", "8", "0"}, {tags[1], tags[2], tags[3]})
    p:terminate()
    os.remove(out)
  end)

  it("counts the waiting tasks of every level", function()
    local q = new_queue()
    local p = pool(q)
    for i = 0, 9 do p:apply_async(function() end, nil, {priority = i}) end
    p:poll()
    assert.are.equal(10, p:stats().waiting)
    p:terminate()
  end)

  it("reclaims and completes a priority task whose worker was killed", function()
    local q = new_queue()
    local p = pool(q, {visibility_timeout = 1})
    local w1 = start_worker(q, {processes = 1, args = {"--prefetch", "1"}})
    local mark = os.tmpname()
    os.remove(mark)
    local r = p:apply_async(function(path)
      if not io.open(path) then
        io.open(path, "w"):close()
        require("lmp").sleep(60) -- the first delivery hangs until its worker is killed
      end
      return "done"
    end, {mark}, {priority = 6})
    p:poll()
    assert.is_truthy(support.eventually(function() return p:stats().waiting == 0 end))
    lmp.sleep(0.3)
    support.kill(w1, "KILL")
    assert.is_true(support.all_dead({w1}, 10))
    start_worker(q, {processes = 1})
    assert.are.equal("done", r:get(30))
    os.remove(mark)
    p:terminate()
  end)

  it("caps task starts across all workers with --rate-limit", function()
    local q, out = new_queue(), os.tmpname()
    local p = pool(q)
    start_worker(q, {processes = 2, args = {"--rate-limit", "5/s"}})
    start_worker(q, {processes = 2, args = {"--rate-limit", "5/s"}})
    local r = p:map_async(function(path) return record("t", path) end, (function()
      local t = {}
      for i = 1, 20 do t[i] = out end
      return t
    end)(), {chunksize = 1})
    r:get(60)
    local _, times = records(out)
    table.sort(times)
    assert.are.equal(20, #times)
    -- 20 starts at 5 a second, a burst of at most 5: 3 s at least; well over 2.5
    assert.is_true(times[20] - times[1] >= 2.5, "20 starts in " .. times[20] - times[1] .. " s")
    -- and no 1 s window holds more than 5 starts and the burst
    for i = 1, 20 do
      local n = 0
      for k = i, 20 do if times[k] - times[i] < 1 then n = n + 1 end end
      assert.is_true(n <= 10, n .. " starts within 1 s")
    end
    p:terminate()
    os.remove(out)
  end)

  it("refuses a bad --rate-limit with exit status 2", function()
    for _, v in ipairs{"0/s", "5", "5/d", "x/s", "-1/s", "/s"} do
      local out, rc = support.shell_code(support.lmp_bin .. " worker redis://127.0.0.1:1/0 --rate-limit " .. v)
      assert.are.equal(2, rc, v)
      assert.matches("option %-%-rate%-limit needs a rate such as 10/s", out)
    end
  end)
end)

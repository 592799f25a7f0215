-- Retries on lmp.Pool{broker = ...}: against a real redis-server (started
-- here on a free loopback port) and `lmp worker` processes.  A task counts
-- its attempts by appending a line to a file, since it runs in a worker's
-- process.
local support = dofile("tests/support.lua")
local lmp = require "lmp"

local SECRET = "retry-secret"
local harness = dofile("tests/redis.lua")
local redis

local nqueue = 0
local function new_queue()
  nqueue = nqueue + 1
  return "retry" .. nqueue
end

local function pool(queue, extra) return harness.pool({broker = redis:url(0), queue = queue, secret = SECRET}, extra) end

local function start_worker(queue, args)
  return harness.worker{url = redis:url(0), queue = queue, secret = SECRET, args = args}
end

-- Append a line to path (in a worker): the number of lines it then has.
local function attempt(path)
  local f = assert(io.open(path, "a"))
  f:write("x\n")
  f:close()
  local n = 0
  for _ in io.lines(path) do n = n + 1 end
  return n
end

local function count(path)
  local n = 0
  local f = io.open(path)
  if not f then return 0 end
  for _ in f:lines() do n = n + 1 end
  f:close()
  return n
end

local describe_redis = harness.describer(describe, pending)

describe_redis("lmp.Pool{broker = ...} retries", function()
  setup(function() redis = harness.server() end)
  teardown(harness.cleanup)

  it("runs a failing task again on a worker; its result comes back once", function()
    local q = new_queue()
    start_worker(q)
    local p = pool(q)
    local path = os.tmpname()
    local got = {}
    local r = p:apply_async(function(f)
      local n = attempt(f)
      if n == 1 then error("first attempt fails") end
      return n
    end, {path}, {retries = 2, retry_backoff = 0.05, callback = function(v) got[#got + 1] = v end})
    assert.are.equal(2, r:get(30))
    p:close()
    p:join()
    assert.are.same({2}, got)
    assert.are.equal(2, count(path))
    assert.are.equal(2, p:stats().done + p:stats().failed)
    os.remove(path)
  end)

  it("gives the last error with its attempts; the Pool's defaults apply", function()
    local q = new_queue()
    start_worker(q)
    local p = pool(q, {retries = 2, retry_backoff = 0})
    local path = os.tmpname()
    local ok, e = pcall(p.apply, p, function(f) error("attempt " .. attempt(f)) end, path)
    assert.is_false(ok)
    assert.are.equal("task", e.kind)
    assert.matches("attempt 3", e.message)
    assert.are.equal(3, e.attempts)
    assert.are.equal(3, count(path))
    -- a map's chunk goes again, and a call's options override the Pool's
    os.remove(path)
    assert.are.same({1, 2}, p:starmap(function(x, f)
      if x == 2 and attempt(f) == 1 then error("once") end
      return x
    end, {{1, path}, {2, path}}, {chunksize = 1}))
    ok, e = pcall(p.apply, p, function() error("fails") end)
    assert.are.equal(3, e.attempts)
    local r = p:apply_async(function() error("no retry") end, {}, {retries = 0})
    ok, e = pcall(r.get, r, 30)
    assert.is_false(ok)
    assert.are.equal(1, e.attempts)
    p:terminate()
    os.remove(path)
  end)

  it("retries a task the worker's --task-timeout killed", function()
    local q = new_queue()
    start_worker(q, {"--task-timeout", "0.5"})
    local p = pool(q)
    local path = os.tmpname()
    local r = p:apply_async(function(f)
      if attempt(f) == 1 then require("lmp").sleep(30) end
      return "second"
    end, {path}, {retries = 1, retry_backoff = 0})
    assert.are.equal("second", r:get(30))
    assert.are.equal(2, count(path))
    p:terminate()
    os.remove(path)
  end)
end)

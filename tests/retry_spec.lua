-- Retries on a local lmp.Pool: the options retries, retry_backoff,
-- retry_backoff_max and retry_if of apply_async, map and friends, and the
-- Pool's defaults.  A task counts its attempts in a shared lmp.Value and
-- stamps their start times in a shared lmp.Array, so the tests see how
-- often and when it ran, whichever process ran it.
local support = dofile("tests/support.lua")
local lmp = require "lmp"

local raised = support.raised

-- A shared attempt counter and the start time of each attempt.
local function tally()
  return {n = lmp.Value("int64", 0), at = lmp.Array("double", 16)}
end

-- Count this attempt (in a pool worker): its number.
local function attempt(c)
  local n = c.n:get_lock():with(function()
    c.n.value = c.n.value + 1
    return c.n.value
  end)
  c.at[n] = require("lmp").time()
  return n
end

-- Fails on the first `fails` attempts, then returns the attempt's number.
local function flaky(c, fails)
  local n = attempt(c)
  if n <= fails then error("attempt " .. n .. " fails") end
  return n
end

describe("lmp.Pool retries", function()
  local pool
  before_each(function() pool = lmp.Pool(2) end)
  after_each(function() pool:terminate() end)

  it("runs a failing task again until it succeeds, within retries", function()
    local c = tally()
    local r = pool:apply_async(flaky, {c, 2}, {retries = 2, retry_backoff = 0.01})
    assert.are.equal(3, r:get())
    assert.are.equal(3, c.n.value)
  end)

  it("gives the last error with its attempts once the retries are spent", function()
    local c = tally()
    local e = raised(function() return pool:apply_async(flaky, {c, 10}, {retries = 2, retry_backoff = 0}):get() end)
    assert.are.equal("task", e.kind)
    assert.matches("attempt 3 fails", e.message)
    assert.are.equal(3, e.attempts)
    assert.are.equal(3, c.n.value)
  end)

  it("makes no retry by default; the error says 1 attempt", function()
    local c = tally()
    local e = raised(function() return pool:apply_async(flaky, {c, 1}):get() end)
    assert.are.equal(1, e.attempts)
    assert.are.equal(1, c.n.value)
  end)

  it("asks retry_if, in the caller, with the error", function()
    local c = tally()
    local seen = {}
    local function retry_if(e)
      seen[#seen + 1] = e
      return false
    end
    local e = raised(function()
      return pool:apply_async(flaky, {c, 1}, {retries = 3, retry_backoff = 0, retry_if = retry_if}):get()
    end)
    assert.are.equal(1, e.attempts)
    assert.are.equal(1, c.n.value)
    assert.are.equal(1, #seen)
    assert.are.equal("task", seen[1].kind)
    assert.matches("attempt 1 fails", seen[1].message)
    -- allowing: it runs again
    c.n.value = 0
    assert.are.equal(2, pool:apply_async(flaky, {c, 1}, {retries = 3, retry_backoff = 0,
                                                          retry_if = function(err) return err.kind == "task" end}):get())
  end)

  it("keeps the task's error when retry_if raises", function()
    local c = tally()
    local e = raised(function()
      return pool:apply_async(flaky, {c, 1}, {retries = 3, retry_backoff = 0,
                                              retry_if = function() error("no way") end}):get()
    end)
    assert.are.equal("task", e.kind)
    assert.matches("no way", tostring(e.retry_if_error))
    assert.are.equal(1, c.n.value)
  end)

  it("retries a task killed by task_timeout", function()
    local p = lmp.Pool{processes = 1, task_timeout = 0.5}
    local c = tally()
    local r = p:apply_async(function(t)
      if attempt(t) == 1 then require("lmp").sleep(30) end
      return "second"
    end, {c}, {retries = 1, retry_backoff = 0})
    assert.are.equal("second", r:get())
    assert.are.equal(2, c.n.value)
    p:terminate()
  end)

  it("retries a task whose worker died under it", function()
    local c = tally()
    assert.are.equal("alive", pool:apply_async(function(t)
      if attempt(t) == 1 then os.exit(3) end
      return "alive"
    end, {c}, {retries = 1, retry_backoff = 0}):get())
    assert.are.equal(2, c.n.value)
  end)

  it("does not retry a serialize error", function()
    local c = tally()
    local e = raised(function()
      return pool:apply_async(function(t)
        attempt(t)
        return coroutine.create(print)
      end, {c}, {retries = 3, retry_backoff = 0}):get()
    end)
    assert.are.equal("serialize", e.kind)
    assert.are.equal(1, c.n.value)
  end)

  it("waits the backoff, doubling, before each retry", function()
    local c = tally()
    local d = 0.2
    assert.are.equal(3, pool:apply_async(flaky, {c, 2}, {retries = 2, retry_backoff = d}):get())
    -- jitter takes the delay down to half of d * 2^(attempt-1), never below
    assert.is_true(c.at[2] - c.at[1] >= d / 2, "first retry after " .. (c.at[2] - c.at[1]))
    assert.is_true(c.at[3] - c.at[2] >= d, "second retry after " .. (c.at[3] - c.at[2]))
  end)

  it("holds a retry while get(timeout) times out, and runs it later", function()
    local c = tally()
    local r = pool:apply_async(flaky, {c, 1}, {retries = 1, retry_backoff = 0.6})
    assert.are.same({nil, "timeout"}, {r:get(0.2)})
    assert.are.equal(1, c.n.value)
    assert.are.equal(2, r:get())
  end)

  it("cancels a task held for its retry", function()
    local c = tally()
    local r = pool:apply_async(flaky, {c, 5}, {retries = 5, retry_backoff = 30})
    assert.is_false(r:wait(0.3))
    assert.are.equal(1, c.n.value)
    assert.is_true(r:cancel())
    assert.are.equal("cancelled", raised(r.get, r).kind)
    assert.are.equal(1, c.n.value)
  end)

  it("reruns a map's failing chunk, all its items", function()
    local c = tally()
    local runs = lmp.Array("int64", 4)
    local out = pool:map(function(x)
      runs[x] = runs[x] + 1
      if x == 3 and attempt(c) == 1 then error("item 3 fails once") end
      return x * 10
    end, {1, 2, 3, 4}, {chunksize = 2, retries = 1, retry_backoff = 0})
    assert.are.same({10, 20, 30, 40}, out)
    assert.are.same({1, 1, 2, 2}, runs:totable())
    -- the final error of a map says its attempts and its item
    local e = raised(pool.starmap, pool, function(x) error("always " .. x) end, {{1}, {2}},
                     {retries = 2, retry_backoff = 0})
    assert.are.equal(3, e.attempts)
    assert.is_number(e.index)
  end)

  it("retries map_async's chunks, even after close()", function()
    local c = tally()
    local r = pool:map_async(function(x)
      if x == 2 and attempt(c) < 3 then error("not yet") end
      return x
    end, {1, 2, 3}, {chunksize = 1, retries = 2, retry_backoff = 0.05})
    pool:close()
    pool:join()
    assert.are.same({1, 2, 3}, r:get())
    assert.are.equal(3, c.n.value)
  end)

  it("takes the Pool's defaults, which a call's options override", function()
    local p = lmp.Pool{processes = 2, retries = 2, retry_backoff = 0}
    local c = tally()
    assert.are.equal(3, p:apply(flaky, c, 2))
    c.n.value = 0
    assert.are.same({3}, p:map(function(x) return flaky(x, 2) end, {c}))
    c.n.value = 0
    local e = raised(function() return p:apply_async(flaky, {c, 2}, {retries = 0}):get() end)
    assert.are.equal(1, e.attempts)
    c.n.value = 0
    e = raised(function() return p:apply_async(flaky, {c, 9}, {retries = 1}):get() end)
    assert.are.equal(2, e.attempts)
    p:terminate()
  end)

  it("refuses bad retry options", function()
    local fn = function() end
    local cases = {
      {{retries = -1}, "option 'retries' must be a non%-negative integer"},
      {{retries = 1.5}, "option 'retries' must be a non%-negative integer"},
      {{retries = "2"}, "option 'retries' must be a non%-negative integer"},
      {{retry_backoff = -1}, "option 'retry_backoff' must be a non%-negative number of seconds"},
      {{retry_backoff = 0 / 0}, "option 'retry_backoff' must be a non%-negative number"},
      {{retry_backoff_max = math.huge}, "option 'retry_backoff_max' must be a non%-negative number"},
      {{retry_if = 1}, "option 'retry_if' must be callable"},
    }
    for _, case in ipairs(cases) do
      assert.matches("^bad argument #3 to 'apply_async' %(" .. case[2],
                     select(2, pcall(pool.apply_async, pool, fn, {}, case[1])))
      assert.matches("^bad argument #3 to 'map' %(" .. case[2], select(2, pcall(pool.map, pool, fn, {1}, case[1])))
    end
    assert.matches("^bad argument #1 to 'Pool' %(field 'retries' must be a non%-negative integer",
                   select(2, pcall(lmp.Pool, {retries = -2})))
    assert.matches("^bad argument #1 to 'Pool' %(field 'retry_backoff' must be",
                   select(2, pcall(lmp.Pool, {retry_backoff = "x"})))
    assert.matches("^bad argument #1 to 'Pool' %(unknown option 'retry_if'",
                   select(2, pcall(lmp.Pool, {retry_if = fn})))
    assert.matches("^bad argument #3 to 'imap' %(unknown option 'retries'",
                   select(2, pcall(pool.imap, pool, fn, {1}, {retries = 1})))
  end)
end)

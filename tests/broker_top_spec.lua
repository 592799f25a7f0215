-- `lmp top --broker URL` and a broker pool's stats(): every queue on a
-- Redis server with its counts and workers, against a real redis-server
-- (tests/redis.lua).  Each test looks at a database of its own, so the
-- queues it sees are its own.
local support = dofile("tests/support.lua")
local harness = dofile("tests/redis.lua")
local lmp = require "lmp"

local SECRET = "top-secret"
local bin = support.lmp_bin
local sh, shq = support.shell, harness.shq

local redis -- this file's server (setup)
local ndb = 0

-- A database of its own for a test: its URL (with `cred`, "user:pass", if given).
local function new_db(cred)
  ndb = ndb + 1
  local url = redis:url(ndb)
  if cred then url = url:gsub("^redis://", "redis://" .. cred .. "@") end
  return url, ndb
end

local function start_worker(url, queue, processes)
  return harness.worker{url = url, queue = queue, secret = SECRET, processes = processes,
                        args = {"--prefetch", "1"}}
end

-- Stops a worker at once (a second SIGINT), its long tasks with it.
local function stop(pid)
  support.kill(pid, "INT")
  lmp.sleep(0.3)
  support.kill(pid, "INT")
  assert.is_true(support.all_dead({pid}, 10))
end

local function pool(url, queue, extra) return harness.pool({broker = url, queue = queue, secret = SECRET}, extra) end

-- `lmp top ARGS` with its output and exit status.
local function top(args, env)
  return support.shell_code((env or "") .. " " .. bin .. " top " .. args)
end

-- The line of `out` whose words begin with those given.
local function row(out, ...)
  local pat = "^%s*" .. table.concat({...}, "%s+"):gsub("[%-%.]", "%%%0") .. "%f[%s\0]"
  for line in out:gmatch("[^\n]+") do
    if line:match(pat) then return line end
  end
  return nil
end

local function long() require("lmp").sleep(60) end

local describe_redis = harness.describer(describe, pending)

describe_redis("lmp top --broker", function()
  setup(function() redis = harness.server() end)
  teardown(harness.cleanup)

  it("--once lists every queue with its counts and every worker with its tasks", function()
    local url = new_db()
    -- queue topA: one task dead-lettered, one held, two running, two waiting
    local wa = start_worker(url, "topA", 2)
    local pa = pool(url, "topA", {max_deliveries = 1})
    local ok, e = pcall(pa.apply, pa, function() os.exit(9) end)
    assert.is_false(ok)
    assert.are.equal("dead_letter", e.kind)
    pa:apply_async(function() return 1 end, nil, {countdown = 60})
    for _ = 1, 4 do pa:apply_async(long) end
    pa:poll()
    -- queue topB: one running, one waiting
    local wb = start_worker(url, "topB", 1)
    local pb = pool(url, "topB")
    for _ = 1, 2 do pb:apply_async(long) end
    pb:poll()
    local out, code
    assert.is_truthy(support.eventually(function()
      out, code = top("--broker " .. shq(url) .. " --once")
      return row(out, "topA", "2", "2", "1", "1") and row(out, "topB", "1", "1", "0", "0")
    end, 20), out)
    assert.are.equal(0, code)
    assert.matches("2 queues, 2 workers", out)
    assert.matches("QUEUE%s+WAITING%s+RUNNING%s+DELAYED%s+DEAD%s+TASKS/S", out)
    -- HOST PID QUEUE PROCS RUNNING DONE FAILED ...: pid, processes and running tasks
    local host = sh("hostname"):match("%S+")
    local la = row(out, host, tostring(wa), "topA", "2", "2")
    local lb = row(out, host, tostring(wb), "topB", "1", "1")
    assert.is_truthy(la, out)
    assert.is_truthy(lb, out)
    -- the running tasks by id
    local caller = pa._caller:gsub("%p", "%%%0")
    assert.matches(caller .. "%.%d+," .. caller .. "%.%d+", la)
    assert.matches(pb._caller:gsub("%p", "%%%0") .. "%.%d+", lb)
    pa:terminate()
    pb:terminate()
    stop(wa)
    stop(wb)
  end)

  it("looks without writing: an empty database stays empty, a read-only user will do", function()
    local url, db = new_db()
    local out, code = top("--broker " .. shq(url) .. " --once")
    assert.are.equal(0, code, out)
    assert.matches("0 queues, 0 workers", out)
    assert.are.equal("", redis:cli("-n " .. db .. " KEYS '*'"):gsub("%s", ""))
    local p = pool(url, "topR")
    p:apply_async(function() return 1 end, nil, {countdown = 60})
    p:poll()
    assert.matches("OK", redis:cli("ACL SETUSER topreader on '>rd-pw' '~*' '&*' '+@read' '+select'"))
    out, code = top("--broker " .. shq(url:gsub("^redis://", "redis://topreader:rd-pw@")) .. " --once")
    assert.are.equal(0, code, out)
    assert.is_truthy(row(out, "topR", "0", "0", "1", "0"), out)
    p:terminate()
  end)

  it("takes the URL from LMP_BROKER_URL or --url-file, and never shows its password", function()
    assert.matches("OK", redis:cli("ACL SETUSER topuser on '>pw-Zq81' '~*' '&*' '+@all'"))
    local url = new_db("topuser:pw-Zq81")
    local p = pool(url, "topC")
    p:apply_async(function() return 1 end, nil, {countdown = 60})
    p:poll()
    local out, code = top("--broker " .. shq(url) .. " --once")
    assert.are.equal(0, code, out)
    assert.is_truthy(row(out, "topC", "0", "0", "1", "0"), out)
    assert.matches("redis://topuser:***@", out, 1, true)
    assert.is_nil(out:find("pw-Zq81", 1, true))
    out, code = top("--broker --once", "LMP_BROKER_URL=" .. shq(url))
    assert.are.equal(0, code, out)
    assert.is_truthy(row(out, "topC", "0", "0", "1", "0"), out)
    assert.is_nil(out:find("pw-Zq81", 1, true))
    local file = support.tmpfile(url .. "\n")
    out, code = top("--once --url-file " .. file)
    os.remove(file)
    assert.are.equal(0, code, out)
    assert.is_truthy(row(out, "topC", "0", "0", "1", "0"), out)
    assert.is_nil(out:find("pw-Zq81", 1, true))
    -- a wrong password: refused, and not shown either
    out, code = top("--broker " .. shq(url:gsub("pw%-Zq81", "pw-Wrong7")) .. " --once")
    assert.are.equal(1, code, out)
    assert.matches("AUTH", out)
    assert.is_nil(out:find("pw-Wrong7", 1, true))
    p:terminate()
  end)

  it("fails clearly on a broker it cannot reach, and without a URL", function()
    local out, code = top("--broker redis://127.0.0.1:" .. harness.free_port() .. "/0 --once")
    assert.are.equal(1, code)
    assert.matches("^lmp top: cannot reach the broker", out)
    out, code = top("--broker --once", "LMP_BROKER_URL=")
    assert.are.equal(2, code)
    assert.matches("a broker URL is needed", out)
    out, code = top("--broker http://x/ --once")
    assert.are.equal(1, code)
    assert.matches("unsupported broker URL", out)
    out, code = top("--broker " .. shq(redis:url(0)) .. " 123")
    assert.are.equal(2, code)
  end)

  it("draws a live view on a terminal, hides the password from ps, and quits on q", function()
    local url = new_db("topuser:pw-Zq81")
    redis:cli("ACL SETUSER topuser on '>pw-Zq81' '~*' '&*' '+@all'")
    local w = start_worker(url, "topD", 1)
    local p = pool(url, "topD")
    p:apply_async(long)
    p:poll()
    local s = support.pty(bin .. " top --interval 0.2 --broker " .. shq(url))
    -- on a failure, the view still running is told to quit
    finally(function() if not s:output():find("::exit") then s:send("q") end end)
    s:expect("q: quit")
    s:expect("q: quit") -- a second frame: it refreshes
    s:expect("HEARTBEAT")
    assert.is_truthy(support.eventually(function()
      return row(s:output(), sh("hostname"):match("%S+"), tostring(w), "topD", "1", "1")
    end), s:output())
    -- the lmp processes' command lines (top's, its watchdog's) no longer hold the password
    local seen = 0
    -- (read from /proc here: pgrep hangs under the sanitizers' preloaded allocator)
    for pid in sh("ls /proc"):gmatch("%d+") do
      local cmdline = support.readfile("/proc/" .. pid .. "/cmdline"):gsub("%z", " ")
      if cmdline:find("top --interval 0.2 --broker", 1, true) and support.readfile("/proc/" .. pid .. "/comm"):match("^lmp") then
        seen = seen + 1
        assert.matches("topuser:", cmdline, 1, true)
        assert.is_nil(cmdline:find("pw-Zq81", 1, true))
      end
    end
    assert.is_true(seen >= 1)
    s:send("q")
    s:expect("::exit 0")
    assert.is_nil(s:output():find("pw-Zq81", 1, true))
    p:terminate()
    stop(w)
  end)
end)

describe_redis("a broker pool's stats()", function()
  setup(function() redis = harness.server() end)
  teardown(harness.cleanup)

  it("has lmp top's keys per queue and per worker, with the same counts", function()
    local url = new_db()
    local w = start_worker(url, "topE", 1)
    local p = pool(url, "topE")
    p:apply_async(long)
    p:apply_async(long)
    p:apply_async(function() return 1 end, nil, {countdown = 60})
    p:poll()
    local s
    assert.is_truthy(support.eventually(function()
      s = p:stats()
      return s.running == 1 and s.waiting == 1 and #s.workers == 1 and s.workers[1].running == 1
    end, 15))
    for _, k in ipairs{"waiting", "running", "delayed", "dead", "rate"} do
      assert.are.equal("number", type(s[k]), k)
    end
    assert.are.equal(1, s.delayed)
    assert.are.equal(0, s.dead)
    local ws = s.workers[1]
    assert.are.equal(sh("hostname"):match("%S+"), ws.host)
    assert.are.equal(w, ws.pid)
    assert.are.equal(1, ws.processes)
    assert.are.equal(1, ws.running)
    assert.are.equal(0, ws.done)
    assert.are.equal(0, ws.failed)
    assert.are.equal("number", type(ws.heartbeat_age))
    assert.is_true(ws.heartbeat_age >= 0)
    assert.are.same({p._caller .. ".1"}, ws.tasks)
    -- lmp top shows the same
    local out = support.shell(bin .. " top --once --broker " .. shq(url))
    assert.is_truthy(row(out, "topE", "1", "1", "1", "0"), out)
    assert.is_truthy(row(out, ws.host, tostring(ws.pid), "topE", "1", "1"), out)
    p:terminate()
    stop(w)
  end)
end)

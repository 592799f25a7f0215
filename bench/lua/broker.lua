-- bench/lua/broker.lua -- lmp.Pool{broker = ...} on a loopback redis-server,
-- served by two `lmp worker` processes of one process each with their
-- default settings (Celery's and RQ's sides run two workers of theirs on the
-- same kind of server: bench/py/bench_broker.py).
--   broker_tput  20k trivial tasks by apply_async, then every result:
--                tasks per second, median of 3 runs.
--   broker_rt    pool:apply of a trivial task, one after another: the
--                median per call, in microseconds.
--   broker_rtt   broker_rt with the caller and the workers reaching Redis
--                through bench/c/delayproxy (2 ms each way): the network
--                round trips a task costs on its critical path,
--                (median through the proxy - median on loopback) divided
--                by what one Redis round trip costs through the proxy more
--                than on loopback (measured the same way: a GET; a little
--                over 2 x 2 ms, the proxy's own wake-ups included).
--                Caller -> Redis -> worker -> Redis -> caller is 2 at best.
--                BENCH_DELAY_MS sets the proxy's delay (default 2).
--   broker_cluster  a Redis Cluster of three masters started here: three
--                queues, each with one worker of one process and a caller
--                process putting 5k trivial tasks by apply_async, all at
--                once; total tasks per second, median of 3, with the
--                three queues on three masters, or on one with a second
--                argument "one" (impl "one", bench/run.sh's reference).
-- The redis-server is BENCH_REDIS_PORT's (bench/run.sh starts one for the
-- broker workloads) or, without it, one started here on a free port.  The
-- proxy is BENCH_DELAYPROXY (bench/run.sh builds it), else BUILD/bench/delayproxy.
-- Usage: lmp bench/lua/broker.lua broker_tput|broker_rt|broker_rtt|broker_cluster [one]
local b = dofile((arg[0]:match("^(.*/)") or "./") .. "common.lua")
local lmp = require "lmp"

local name = arg[1]
local unit = ({broker_rt = "us", broker_rtt = "round trips"})[name] or "tasks/s"
local DELAY_MS = tonumber(os.getenv("BENCH_DELAY_MS") or "") or 2

local function sh(cmd)
  local p = io.popen("{ " .. cmd .. "\n} 2>&1")
  local out = p:read("a")
  p:close()
  return out
end

if not sh("command -v redis-server"):match("%S") then
  b.na(name, unit, "redis-server is not installed")
  return
end

local exe = sh("readlink /proc/" .. lmp.current_process().pid .. "/exe"):match("%S+")
local proxy_bin = os.getenv("BENCH_DELAYPROXY") or exe:gsub("[^/]*$", "") .. "bench/delayproxy"
if name == "broker_rtt" and not io.open(proxy_bin) then
  b.na(name, unit, "no " .. proxy_bin .. " (bench/run.sh builds it from bench/c/delayproxy.c)")
  return
end

local secret = "bench-secret"

-- A Redis Cluster of three masters on loopback, three queues on it, and
-- the tasks/s of three callers at once, each on its own queue.
local function cluster_bench()
  local dir = sh("mktemp -d"):match("%S+")
  local ports, pids = {}, {}
  local function used(p) return sh("ss -tan | grep -c ':" .. p .. " '"):match("^[1-9]") end
  while #ports < 3 do
    local p = math.random(20000, 22700) -- its bus port (+10000) under the ephemeral range
    if not used(p) and not used(p + 10000) then
      sh(string.format("mkdir -p %s/%d && cd %s/%d && redis-server --port %d --bind 127.0.0.1 --cluster-enabled yes "
                       .. "--save '' --appendonly no --daemonize yes --logfile log", dir, p, dir, p, p))
      lmp.sleep(0.2)
      if sh("redis-cli -p " .. p .. " ping"):match("PONG") then ports[#ports + 1] = p end
    end
  end
  local addrs = {}
  for i, p in ipairs(ports) do addrs[i] = "127.0.0.1:" .. p end
  sh("redis-cli --cluster create " .. table.concat(addrs, " ") .. " --cluster-yes")
  for _ = 1, 100 do
    if sh("redis-cli -p " .. ports[3] .. " cluster info"):match("cluster_state:ok") then break end
    lmp.sleep(0.1)
  end
  local url = "redis+cluster://" .. addrs[1] .. "," .. addrs[2] .. "/"
  local function node_of(q)
    local slot = tonumber(sh("redis-cli -p " .. ports[1] .. " cluster keyslot 'lmp:{" .. q .. "}'"):match("%d+"))
    return slot <= 5460 and 1 or slot <= 10922 and 2 or 3
  end
  -- queues named until each wanted master has one
  local function queues_on(masters)
    local out, i = {}, 0
    for k, m in ipairs(masters) do
      repeat
        i = i + 1
        out[k] = "bench" .. lmp.current_process().pid .. "-" .. i
      until node_of(out[k]) == m
    end
    return out
  end
  local impl = arg[2] == "one" and "one" or "lmp"
  local qs = queues_on(impl == "one" and {1, 1, 1} or {1, 2, 3})
  for _, q in ipairs(qs) do
    local code = string.format("os.exit(require('lmp.worker').main({%q, '--queue', %q, '--processes', '1'}))",
                               url, q)
    pids[#pids + 1] = sh(string.format("env LMP_SECRET=%s %s -e %q > /dev/null 2>&1 & echo $!", secret, exe, code))
                        :match("%d+")
  end
  local n = b.size(5000, 50)
  local function run()
    local go, out = lmp.Event(), lmp.Queue()
    local ps = {}
    for i, q in ipairs(qs) do
      ps[i] = lmp.Process(function()
        local pool = lmp.Pool{broker = url, queue = q, secret = secret}
        for k = 1, 50 do pool:apply(function(x) return x end, k) end -- workers up and warm
        out:put("ready")
        go:wait()
        local t0 = lmp.time()
        local rs = {}
        for k = 1, n do rs[k] = pool:apply_async(function(x) return x end, {k}) end
        for k = 1, n do assert(rs[k]:get(60) == k) end
        out:put({t0, lmp.time()})
        pool:terminate()
      end)
      ps[i]:start()
    end
    for _ = 1, #qs do assert(out:get(60) == "ready") end
    go:set()
    local first, last = math.huge, 0
    for _ = 1, #qs do
      local t = out:get(120)
      first, last = math.min(first, t[1]), math.max(last, t[2])
    end
    for _, p in ipairs(ps) do p:join() end
    return #qs * n / (last - first)
  end
  local samples = {}
  for r = 1, b.smoke and 1 or 3 do samples[r] = run() end
  b.emit(name, unit, samples, {queues = 3, masters = impl == "one" and 1 or 3, tasks_per_queue = n}, impl)
  for _, pid in ipairs(pids) do os.execute("kill -TERM " .. pid) end
  lmp.sleep(0.3)
  for _, p in ipairs(ports) do sh("redis-cli -p " .. p .. " shutdown nosave") end
  sh("rm -rf " .. dir)
end

if name == "broker_cluster" then
  cluster_bench()
  return
end

local port, dir = tonumber(os.getenv("BENCH_REDIS_PORT") or ""), nil
if not port then
  dir = sh("mktemp -d"):match("%S+")
  for _ = 1, 20 do
    local p = math.random(20000, 60000)
    sh(string.format("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --dir %s "
                     .. "--daemonize yes --pidfile %s/r.pid --logfile %s/r.log", p, dir, dir, dir))
    lmp.sleep(0.2)
    if sh("redis-cli -p " .. p .. " ping"):match("PONG") then port = p break end
  end
  if not port then error("cannot start redis-server") end
end
local pids, queues = {}, {}

local function url_of(p) return "redis://127.0.0.1:" .. p .. "/0" end

-- Two one-process workers on a queue of their own, and a pool for it,
-- warmed up; all reaching Redis at port p.
local function setup(p)
  local queue = "bench" .. lmp.current_process().pid .. "-" .. #queues
  queues[#queues + 1] = queue
  for _ = 1, 2 do
    local code = string.format("os.exit(require('lmp.worker').main({%q, '--queue', %q, '--processes', '1'}))",
                               url_of(p), queue)
    pids[#pids + 1] = sh(string.format("env LMP_SECRET=%s %s -e %q > /dev/null 2>&1 & echo $!", secret, exe, code))
                        :match("%d+")
  end
  local pool = lmp.Pool{broker = url_of(p), queue = queue, secret = secret}
  for i = 1, 50 do pool:apply(function(x) return x end, i) end -- workers up and warm
  return pool
end

-- The median time of n one-round-trip requests (a GET) to Redis at port p,
-- in microseconds.
local function median_get(p, n)
  local conn = assert(require("lmp.core").broker.open(url_of(p), "bench-rtt", 5))
  local times = {}
  for i = 1, n do
    local t0 = b.now()
    assert(conn:visibility())
    times[i] = (b.now() - t0) * 1e6
  end
  conn:close()
  return b.median(times)
end

-- The median time of n pool:apply calls of a trivial task, in microseconds.
local function median_apply(pool, n)
  local times = {}
  for i = 1, n do
    local t0 = b.now()
    assert(pool:apply(function(x) return x end, i) == i)
    times[i] = (b.now() - t0) * 1e6
  end
  return b.median(times)
end

local pool = setup(port)
if name == "broker_rt" then
  b.round_trips(name, pool, b.size(2000, 20))
elseif name == "broker_rtt" then
  local pport
  for _ = 1, 20 do
    pport = math.random(20000, 60000)
    pids[#pids + 1] = sh(string.format("%s 127.0.0.1:%d 127.0.0.1:%d %d > /dev/null 2>&1 & echo $!", proxy_bin,
                                       pport, port, DELAY_MS)):match("%d+")
    lmp.sleep(0.1)
    if sh("redis-cli -p " .. pport .. " ping"):match("PONG") then break end
    pport = nil
  end
  if not pport then error("cannot start " .. proxy_bin) end
  local far = setup(pport)
  local n = b.size(300, 5)
  local samples, near_us, far_us, hop_us = {}, {}, {}, {}
  -- loopback and proxied measured in turn, so drift hits both
  for s = 1, b.smoke and 1 or 3 do
    near_us[s] = median_apply(pool, n)
    far_us[s] = median_apply(far, n)
    hop_us[s] = median_get(pport, n) - median_get(port, n)
    samples[s] = (far_us[s] - near_us[s]) / hop_us[s]
  end
  far:terminate()
  b.emit(name, unit, samples, {calls = n, delay_ms = DELAY_MS, loopback_us = b.median(near_us),
                               latency_us = b.median(far_us), round_trip_us = b.median(hop_us)})
else
  b.throughput(name, pool, b.size(20000, 100), 3, {workers = 2})
end
pool:terminate()
for _, pid in ipairs(pids) do os.execute("kill -TERM " .. pid) end
lmp.sleep(0.3)
if dir then
  sh("redis-cli -p " .. port .. " shutdown nosave")
  sh("rm -rf " .. dir)
else
  sh(string.format("redis-cli -p %d --scan --pattern 'lmp:*' | xargs -r redis-cli -p %d unlink > /dev/null", port, port))
end

-- bench/lua/broker.lua -- lmp.Pool{broker = ...} on a loopback redis-server,
-- served by two `lmp worker` processes of one process each (RQ's side runs
-- two `rq worker`s on the same kind of server: bench/py/bench_broker.py).
--   broker_tput  20k trivial tasks by apply_async, then every result:
--                tasks per second, median of 3 runs.
--   broker_rt    pool:apply of a trivial task, one after another: the
--                median per call, in microseconds.
-- The redis-server is BENCH_REDIS_PORT's (bench/run.sh starts one for the
-- broker workloads) or, without it, one started here on a free port.
-- Usage: lmp bench/lua/broker.lua broker_tput|broker_rt
local b = dofile((arg[0]:match("^(.*/)") or "./") .. "common.lua")
local lmp = require "lmp"

local name = arg[1]
local unit = name == "broker_rt" and "us" or "tasks/s"

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
local url = "redis://127.0.0.1:" .. port .. "/0"
local queue = "bench" .. lmp.current_process().pid
local secret = "bench-secret"
local exe = sh("readlink /proc/" .. lmp.current_process().pid .. "/exe"):match("%S+")

local pids = {}
for i = 1, 2 do
  local code = string.format("os.exit(require('lmp.worker').main({%q, '--queue', %q, '--processes', '1', "
                             .. "'--prefetch', '256'}))", url, queue)
  pids[i] = sh(string.format("env LMP_SECRET=%s %s -e %q > /dev/null 2>&1 & echo $!", secret, exe, code))
              :match("%d+")
end

local pool = lmp.Pool{broker = url, queue = queue, secret = secret}
local function task(x) return x end
for i = 1, 50 do pool:apply(task, i) end -- workers up and warm

if name == "broker_rt" then
  b.round_trips(name, pool, b.size(2000, 20))
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

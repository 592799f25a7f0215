-- Scale-out over Redis: the Pool API, with the tasks going through a Redis
-- server to worker processes that may run on other machines.
--
--   lmp worker redis://host:6379/0 --processes 4     (on each machine)
--   local pool = lmp.Pool{broker = "redis://host:6379/0", secret = ...}
--
-- So that it runs anywhere, this example starts its own redis-server on a
-- free loopback port and two workers beside it (here as child processes
-- of this script), then sends them a map and a few failing tasks.  Tasks
-- and results are signed with a shared secret: a worker runs nothing that
-- does not carry a valid signature.  Without redis-server it says so and
-- exits 0.  The workers' own log lines go to stderr.
--
--   lmp examples/broker.lua
local lmp = require "lmp"

local function sh(cmd)
  local p = io.popen("{ " .. cmd .. "\n} 2>&1")
  local out = p:read("a")
  p:close()
  return out
end

if not sh("command -v redis-server"):match("%S") then
  print("skipped: redis-server is not installed")
  return
end
if not pcall(require, "lmp.worker") then
  print("skipped: this build of lmp has no broker")
  return
end

-- A throw-away Redis on a free port.
local dir = sh("mktemp -d"):match("%S+")
local port
math.randomseed(os.time() + lmp.current_process().pid)
for _ = 1, 20 do
  local p = math.random(20000, 60000)
  sh(string.format("redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no --dir %s "
                   .. "--daemonize yes --pidfile %s/redis.pid --logfile %s/redis.log", p, dir, dir, dir))
  for _ = 1, 40 do
    if sh("redis-cli -p " .. p .. " ping"):match("PONG") then port = p break end
    lmp.sleep(0.05)
  end
  if port then break end
end
assert(port, "cannot start redis-server")
local url = "redis://127.0.0.1:" .. port .. "/0"
local secret = "example-secret"

-- The secret, shared by the callers and the workers (LMP_SECRET or a file).
local secret_file = dir .. "/secret"
local f = assert(io.open(secret_file, "w"))
f:write(secret)
f:close()

-- Two workers of two processes each, as `lmp worker URL --processes 2`
-- would run them on two machines.
local workers = {}
for i = 1, 2 do
  workers[i] = lmp.Process{name = "worker-" .. i, target = function()
    os.exit(require("lmp.worker").main({url, "--processes", "2", "--secret-file", secret_file}))
  end}
  workers[i]:start()
end

do
  local pool <close> = lmp.Pool{broker = url, secret = secret}
  local squares = pool:map(function(x) return x * x end, {1, 2, 3, 4, 5, 6, 7, 8})
  print("map over the broker: " .. table.concat(squares, " "))

  local pids = {}
  for _, pid in ipairs(pool:map(function() lmp.sleep(0.01) return lmp.current_process().pid end,
                                {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, 1)) do
    pids[pid] = true
  end
  local n = 0
  for _ in pairs(pids) do n = n + 1 end
  print("processes that ran tasks: " .. (n > 1 and "more than one" or "one"))

  local res = pool:apply_async(function(a, b) return a // b end, {7, 0})
  local ok, err = pcall(res.get, res, 10)
  print("a failing task: " .. tostring(ok) .. ", kind " .. err.kind)
  print("apply: " .. pool:apply(string.format, "%s + %s = %d", 2, 3, 5))
end

do
  -- A task whose process dies is delivered again, up to max_deliveries
  -- times; then it fails with kind "dead_letter" instead of looping.
  local pool <close> = lmp.Pool{broker = url, secret = secret, max_deliveries = 2}
  local ok, err = pcall(pool.apply, pool, function() os.exit(1) end)
  print("a task that kills its worker: " .. tostring(ok) .. ", kind " .. err.kind)
  print("the workers go on: " .. pool:apply(function() return "yes" end))
end

for _, w in ipairs(workers) do w:terminate() end   -- SIGTERM: finish, then exit
for _, w in ipairs(workers) do w:join(10) end
print("workers stopped with exit codes " .. workers[1].exitcode .. " and " .. workers[2].exitcode)
sh("redis-cli -p " .. port .. " shutdown nosave; rm -rf " .. dir)

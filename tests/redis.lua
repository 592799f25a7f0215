-- Redis servers and `lmp worker`s for the broker specs: a redis-server
-- started on a free loopback port with its own temporary directory, and
-- workers started in the background against it; every spec stops what it
-- started in its teardown (redis.cleanup()).  Without redis-server,
-- redis.available is false and redis.why says so.
--
--   local redis = dofile("tests/redis.lua")
--   local srv = redis.server()            -- started, or error with its log
--   srv:url(db), srv:cli("PING"), srv:stop(), srv:start(), srv:close(), srv:kill()
--   redis.server(args, {cluster = true})  -- a Redis Cluster node, not yet joined
--   local nodes, addrs = redis.cluster(3, args, opts) -- 3 masters, joined and up
--   redis.server(args, {ca =, cert =, key =}) -- TLS only, on srv.port (its
--                                         -- files; redis-cli shows cert too)
--   local sen = redis.sentinel(srv.port, "mymaster") -- a sentinel of srv, quorum 2
--   local pid, log = redis.worker{url =, queue =, secret =, processes =,
--                                 args = {...}, command =, env =, limits =}
local support = dofile("tests/support.lua")
local lmp = require "lmp"

local sh = support.shell

local M = {}

M.available = sh("command -v redis-server"):match("%S") ~= nil and sh("command -v redis-cli"):match("%S") ~= nil
M.why = "redis-server is not installed (apt-get install redis-server)"

-- The describe of a spec over Redis: busted's own (passed in, as a spec's
-- environment has it), or one whose test is pending with the reason when
-- redis-server is missing.
function M.describer(describe, pending)
  if M.available then return describe end
  return function(name) describe(name, function() pending(M.why) end) end
end

-- lmp.Pool(o), with extra's fields added to o.
function M.pool(o, extra)
  for k, v in pairs(extra or {}) do o[k] = v end
  return lmp.Pool(o)
end

-- A word for sh.
local function shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
M.shq = shq

local readfile = support.readfile

-- tls: redis-cli's words for a TLS server, or nil
local function ping(port, tls)
  return sh("redis-cli -p " .. port .. (tls or "") .. " ping 2>&1"):match("PONG") ~= nil
end

-- A port nobody listens on, from a random start; with cluster, one below
-- the ephemeral range (32768 on), where no connection of this run holds
-- it or its cluster bus port (port + 10000).
function M.free_port(cluster)
  math.randomseed(os.time() + lmp.current_process().pid + math.floor(lmp.time() * 1e6) % 100000)
  local function used(p) return sh("ss -tan 2>/dev/null | grep -c ':" .. p .. " '"):match("^[1-9]") end
  for _ = 1, 50 do
    local p = cluster and math.random(20000, 22700) or math.random(20000, 60000)
    if not ping(p) and not used(p) and not (cluster and used(p + 10000)) then return p end
  end
  error("no free port")
end

local Server = {}
Server.__index = Server

-- Start (again, on the same port and directory); whether it answers.
function Server:start()
  if self.sentinel then
    sh(string.format("redis-server %s --sentinel", self.sentinel))
    for _ = 1, 200 do
      if ping(self.port) then return true end
      lmp.sleep(0.05)
    end
    return false
  end
  -- "-::1": the IPv6 loopback too, where the machine has one
  local port = "--port " .. self.port
  if self.tls then
    port = string.format("--port 0 --tls-port %d --tls-cert-file %s --tls-key-file %s --tls-ca-cert-file %s "
                         .. "--tls-auth-clients optional", self.port, shq(self.tls.cert), shq(self.tls.key),
                         shq(self.tls.ca))
  end
  local cmd = string.format("redis-server %s --bind '127.0.0.1 -::1' --save '' --appendonly yes "
                            .. "--appendfsync always --dir %s --daemonize yes --pidfile %s/redis.pid "
                            .. "--logfile %s/redis.log %s", port, self.dir, self.dir, self.dir,
                            self.args or "")
  sh(cmd)
  for _ = 1, 200 do
    if ping(self.port, self.tlscli) then return true end
    lmp.sleep(0.05)
  end
  return false
end

function Server:stop()
  sh("redis-cli -p " .. self.port .. (self.tlscli or "") .. " shutdown 2>&1")
  for _ = 1, 100 do
    if not ping(self.port, self.tlscli) then return end
    lmp.sleep(0.05)
  end
end

-- SIGKILL: gone at once, with whatever it had not written or replicated.
function Server:kill()
  local pid = tonumber(readfile(self.dir .. "/redis.pid"):match("%d+"))
  if pid then support.kill(pid, "KILL") end
  for _ = 1, 100 do
    if not ping(self.port) then return end
    lmp.sleep(0.05)
  end
end

function Server:cli(args) return sh("redis-cli -p " .. self.port .. (self.tlscli or "") .. " " .. args) end

function Server:url(db)
  if self.tls then return "rediss://127.0.0.1:" .. self.port .. "/" .. (db or 0) .. "?ca=" .. self.tls.ca end
  return "redis://127.0.0.1:" .. self.port .. "/" .. (db or 0)
end

function Server:log() return readfile(self.dir .. "/redis.log") end

function Server:close()
  self:stop()
  sh("rm -rf " .. shq(self.dir))
end

local servers, workers, logs = {}, {}, {}

-- s started, on a port of its own (`place` picks it and writes what the
-- server reads), kept for cleanup; or an error with what it logged.
local function started(s, what, place)
  for _ = 1, 3 do -- another program may take the port first
    place()
    if s:start() then
      servers[#servers + 1] = s
      return s
    end
  end
  local log = s:log()
  sh("rm -rf " .. shq(s.dir))
  error(what .. " did not start: " .. log)
end

-- A started server (extra redis-server words in args), or an error; with
-- opts: cluster, a Redis Cluster node (not yet joined to others); or
-- ca, cert and key (PEM files): it listens for TLS alone.
function M.server(args, opts)
  opts = opts or {}
  local cluster, tls = opts.cluster, opts.ca and opts
  if cluster then args = "--cluster-enabled yes --cluster-config-file nodes.conf " .. (args or "") end
  local s = setmetatable({dir = sh("mktemp -d"):match("%S+"), args = args, tls = tls}, Server)
  if tls then
    s.tlscli = string.format(" --tls --cacert %s --cert %s --key %s", shq(tls.ca), shq(tls.cert), shq(tls.key))
  end
  return started(s, "redis-server", function() s.port = M.free_port(cluster) end)
end

-- n cluster nodes (redis.server(args, opts) with cluster = true) joined
-- into one Redis Cluster of n masters, the slots split in their order, up
-- and serving; or an error.
function M.cluster(n, args, opts)
  local nodes, addrs, o = {}, {}, {cluster = true}
  for k, v in pairs(opts or {}) do o[k] = v end
  for i = 1, n do
    nodes[i] = M.server(args, o)
    addrs[i] = "127.0.0.1:" .. nodes[i].port
  end
  local out = sh("redis-cli" .. (nodes[1].tlscli or "") .. " --cluster create " .. table.concat(addrs, " ")
                 .. " --cluster-yes 2>&1")
  assert(out:match("All 16384 slots covered"), out)
  assert(support.eventually(function()
    for _, node in ipairs(nodes) do
      if not node:cli("CLUSTER INFO"):match("cluster_state:ok") then return false end
    end
    return true
  end, 20), "the cluster did not come up")
  return nodes, addrs
end

-- A started sentinel (redis-server --sentinel) of the master `name` at
-- 127.0.0.1:master_port: quorum 2, down after 1 s; or an error.  It
-- rewrites its own configuration file, in its directory.
function M.sentinel(master_port, name)
  local s = setmetatable({dir = sh("mktemp -d"):match("%S+")}, Server)
  s.sentinel = s.dir .. "/sentinel.conf"
  return started(s, "redis-server --sentinel", function()
    s.port = M.free_port()
    local f = assert(io.open(s.sentinel, "w"))
    f:write(string.format("port %d\nbind 127.0.0.1\ndaemonize yes\ndir %s\npidfile %s/redis.pid\n"
                          .. "logfile %s/redis.log\nsentinel monitor %s 127.0.0.1 %d 2\n"
                          .. "sentinel down-after-milliseconds %s 1000\nsentinel failover-timeout %s 5000\n",
                          s.port, s.dir, s.dir, s.dir, name, master_port, name, name))
    f:close()
  end)
end

-- Start `lmp worker` in the background: its pid and its log file.  It runs
-- require('lmp.worker').main{...} through -e, or with o.command the
-- `lmp worker ...` command line; o.url false gives it no URL argument,
-- o.env more variables (NAME=value words), o.limits ulimit's options.
function M.worker(o)
  local log = os.tmpname()
  logs[#logs + 1] = log
  local argv = {"--queue", o.queue, "--processes", tostring(o.processes or 2)}
  if o.url then table.insert(argv, 1, o.url) end
  for _, a in ipairs(o.args or {}) do argv[#argv + 1] = a end
  local run
  if o.command then
    for i = 1, #argv do argv[i] = shq(argv[i]) end
    run = support.lmp_bin .. " worker " .. table.concat(argv, " ")
  else
    for i = 1, #argv do argv[i] = string.format("%q", argv[i]) end
    run = string.format("%s -e %q", support.lmp_bin,
                        "os.exit(require('lmp.worker').main({" .. table.concat(argv, ", ") .. "}))")
  end
  local cmd = string.format("%senv LMP_SECRET=%s %s %s > %s 2>&1 & echo $!",
                            o.limits and "ulimit " .. o.limits .. "; " or "", shq(o.secret), o.env or "",
                            run, log)
  local pid = tonumber(sh(cmd):match("%d+"))
  workers[#workers + 1] = pid
  -- ready once it says so
  for _ = 1, 100 do
    if readfile(log):match("serving queue") then break end
    lmp.sleep(0.05)
  end
  return pid, log
end

-- Kill every worker started and stop every server started.
function M.cleanup()
  for _, pid in ipairs(workers) do support.kill(pid, "KILL") end
  for _, log in ipairs(logs) do os.remove(log) end
  for _, s in ipairs(servers) do s:close() end
  workers, logs, servers = {}, {}, {}
end

return M

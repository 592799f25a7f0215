-- Simulated machines for the specs: network namespaces (`ip netns`) joined
-- by veth pairs to one bridge in the root namespace, all on one /24, so a
-- test can run a redis-server on one "machine", workers on others and the
-- caller in the root namespace, and cut one machine's link.
--
--   local netns = dofile("tests/netns.lua")
--   local net, why = netns.new(3)   -- nil and why when namespaces cannot be made
--   local r = net:redis(net[1], {appendonly = "no"})
--   local w = net[2]:worker(r.url, "q", {processes = 4, env = {LMP_TEST_WORKER = "A"}})
--   net[2]:cut() ... net[2]:restore()
--   net:close()                     -- every namespace, link and process it made
--
-- Names carry the pid of the program that made them (lmpt<pid>...), so two
-- runs never meet, and a later run removes what a run that died left.
-- The subnet is the first 10.77.x.0/24 no interface of this machine uses;
-- the bridge is .1, namespace k is .(10 + k).
local support = dofile("tests/support.lua")

local M = {}

local sh, sh_code = support.shell, support.shell_code

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function sleep(s) require("lmp").sleep(s) end

-- === removal ===

-- Every namespace, bridge and veth made by run `pid` (a string of digits).
local function remove_run(pid)
  for name in sh("ip netns list"):gmatch("(lmpt" .. pid .. "n%d+)") do
    -- what runs in it dies with it
    sh("ip netns pids " .. name .. " | xargs -r kill -9")
    sh("ip netns del " .. name)
  end
  for link in sh("ip -o link show"):gmatch("%d+: (lmpt" .. pid .. "[bv]%d*)[@:]") do
    sh("ip link del " .. link)
  end
end

-- What runs that died left behind.
local function remove_stale()
  local seen = {}
  for pid in (sh("ip netns list") .. sh("ip -o link show")):gmatch("lmpt(%d+)[nbv]") do
    if not seen[pid] and not support.alive(tonumber(pid)) then
      seen[pid] = true
      remove_run(pid)
    end
  end
end

-- === a namespace ===

local Ns = {}
Ns.__index = Ns

--- ns:exec(cmd) -> output, exit code: a shell command run inside.
function Ns:exec(cmd)
  return sh_code("ip netns exec " .. self.name .. " sh -c " .. q(cmd))
end

--- ns:spawn(cmd [, log]) -> pid: a shell command started inside, in the
--- background, its output to `log` (default /dev/null).  The pid is the
--- command's own when cmd starts with `exec`.
function Ns:spawn(cmd, log)
  local out = sh(string.format("ip netns exec %s sh -c %s > %s 2>&1 < /dev/null & echo $!", self.name, q(cmd),
                               log or "/dev/null"))
  local pid = tonumber(out:match("(%d+)%s*$"))
  self.net.pids[#self.net.pids + 1] = pid
  return pid
end

--- Cut the namespace off: its veth's root side goes down (packets are
--- dropped, connections stay open as on a real network).
function Ns:cut()
  sh("ip link set " .. self.veth .. " down")
end

--- Join it again.
function Ns:restore()
  sh("ip link set " .. self.veth .. " up")
end

-- === workers ===

local Worker = {}
Worker.__index = Worker

--- ns:worker(url, queue [, opts]) -> worker: `lmp worker URL --queue Q
--- --processes N [args]` started inside, as tests/broker_spec.lua starts it,
--- once its log says it serves (or 10 s have passed).  opts: processes
--- (default 2), args (more options), secret (LMP_SECRET), env (a table of
--- more variables).  worker.pid, worker.log (a path), worker:output(),
--- worker:kill([sig]).
function Ns:worker(url, queue, opts)
  opts = opts or {}
  local args = {string.format("%q", url), '"--queue"', string.format("%q", queue), '"--processes"',
                string.format("%q", tostring(opts.processes or 2))}
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = string.format("%q", a) end
  local code = "os.exit(require('lmp.worker').main({" .. table.concat(args, ", ") .. "}))"
  local env = {"LMP_SECRET=" .. q(opts.secret or "spec-secret")}
  for k, v in pairs(opts.env or {}) do env[#env + 1] = k .. "=" .. q(v) end
  local log = os.tmpname()
  self.net.files[#self.net.files + 1] = log
  local w = setmetatable({ns = self, log = log}, Worker)
  w.pid = self:spawn(string.format("exec env %s %s -e %s", table.concat(env, " "), support.lmp_bin, q(code)), log)
  support.eventually(function() return w:output():match("serving queue") end, 10)
  return w
end

function Worker:output()
  local f = io.open(self.log)
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

function Worker:kill(sig)
  support.kill(self.pid, sig or "KILL")
end

-- === redis-server ===

local Redis = {}
Redis.__index = Redis

local redis_defaults = {appendonly = "no", appendfsync = "everysec", save = ""}

--- net:redis(ns [, opts]) -> server: a redis-server inside ns, bound to its
--- address on port 6379, with a data directory of its own.  opts:
--- appendonly ("yes"|"no", default "no"), appendfsync (default
--- "everysec"), save (default ""), dir.  server.url, server.addr,
--- server:cli(args), server:start([opts]), server:stop("kill"|"nosave"),
--- server:running().  nil and the log when it does not start.
function M.redis_in(net, ns, opts)
  local r = setmetatable({ns = ns, addr = ns.addr, port = 6379, net = net}, Redis)
  r.dir = (opts and opts.dir) or sh("mktemp -d"):match("%S+")
  net.dirs[#net.dirs + 1] = r.dir
  r.url = string.format("redis://%s:%d/0", r.addr, r.port)
  net.servers[#net.servers + 1] = r
  local ok, err = r:start(opts)
  if not ok then return nil, err end
  return r
end

function Redis:cli(args)
  return sh(string.format("redis-cli -h %s -p %d %s", self.addr, self.port, args))
end

function Redis:running()
  return self:cli("ping"):match("PONG") ~= nil
end

function Redis:start(opts)
  local o = {}
  for k, v in pairs(redis_defaults) do o[k] = v end
  for k, v in pairs(opts or self.opts or {}) do if k ~= "dir" then o[k] = v end end
  self.opts = o
  self.ns:exec(string.format("redis-server --bind %s --port %d --protected-mode no --save %s --appendonly %s --appendfsync %s "
                             .. "--dir %s --daemonize yes --pidfile %s/redis.pid --logfile %s/redis.log",
                             self.addr, self.port, q(o.save), o.appendonly, o.appendfsync, self.dir, self.dir,
                             self.dir))
  if support.eventually(function() return self:running() end, 10) then return true end
  local f = io.open(self.dir .. "/redis.log")
  local log = f and f:read("a") or ""
  if f then f:close() end
  return nil, "redis-server did not start: " .. log
end

--- Stop it: "kill" (SIGKILL, as a crash) or "nosave" (SHUTDOWN NOSAVE).
function Redis:stop(how)
  if how == "kill" then
    local f = io.open(self.dir .. "/redis.pid")
    local pid = f and tonumber(f:read("a"))
    if f then f:close() end
    if pid then support.kill(pid, "KILL") end
  else
    self:cli("shutdown nosave")
  end
  support.eventually(function() return not self:running() end, 10)
  os.remove(self.dir .. "/redis.pid")
end

-- === a delay ===

--- net:proxy(ns, listen_port, target, ms) -> pid: bench/c/delayproxy inside
--- ns, on its address and listen_port, forwarding to target ("addr:port")
--- with ms of delay each way; nil and why when it cannot be built.
function M.proxy_in(net, ns, port, target, ms)
  local bin, err = M.delayproxy()
  if not bin then return nil, err end
  local pid = ns:spawn(string.format("exec %s %s:%d %s %s", bin, ns.addr, port, target, ms))
  local host, tport = ns.addr, port
  support.eventually(function() return sh(string.format("redis-cli -h %s -p %d ping", host, tport)):match("PONG") end,
                     5)
  return pid
end

--- The delay proxy's path, compiled (as bench/run.sh compiles it) when
--- missing or older than its source; nil and the compiler's words.
function M.delayproxy()
  local bin = support.build .. "/bench/delayproxy"
  local src = "bench/c/delayproxy.c"
  if io.open(bin) == nil or sh("find " .. src .. " -newer " .. bin):match("%S") then
    local out, code = sh_code(string.format("mkdir -p %s/bench && ${CC:-cc} -std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra "
                                            .. "-Werror %s -o %s", support.build, src, bin))
    if code ~= 0 then return nil, "cannot compile " .. src .. ": " .. out end
  end
  return bin
end

-- === the network ===

local Net = {}
Net.__index = Net
Net.redis = M.redis_in
Net.proxy = M.proxy_in

-- Why namespaces cannot be made here, or nil.
local function unavailable()
  if not sh("command -v ip"):match("%S") then return "no ip command (apt-get install iproute2)" end
  if sh("id -u") ~= "0\n" then return "network namespaces need root" end
  local probe = "lmpt" .. require("lmp").current_process().pid .. "n0"
  local out, code = sh_code("ip netns add " .. probe)
  sh("ip netns del " .. probe)
  if code ~= 0 then return "ip netns add failed: " .. out:gsub("%s+$", "") end
  return nil
end

local function free_subnet()
  local used = sh("ip -4 -o addr show")
  for x = 1, 254 do
    local net = "10.77." .. x .. "."
    if not used:find(net, 1, true) then return net end
  end
  return nil
end

--- netns.new(n) -> net: n namespaces net[1..n] (each with .name, .addr,
--- .veth), or nil and why they cannot be made here.
function M.new(n)
  local why = unavailable()
  if why then return nil, why end
  remove_stale()
  local pid = require("lmp").current_process().pid
  local prefix = free_subnet()
  if not prefix then return nil, "no free 10.77.x.0/24 subnet" end
  local net = setmetatable({pid = tostring(pid), bridge = "lmpt" .. pid .. "b", pids = {}, files = {}, dirs = {},
                            servers = {}, subnet = prefix .. "0/24", gateway = prefix .. "1"}, Net)
  local function run(cmd)
    local out, code = sh_code(cmd)
    if code ~= 0 then error(cmd .. ": " .. out, 0) end
  end
  local ok, err = pcall(function()
    run(string.format("ip link add %s type bridge && ip addr add %s/24 dev %s && ip link set %s up", net.bridge,
                      net.gateway, net.bridge, net.bridge))
    for k = 1, n do
      local ns = setmetatable({net = net, index = k, name = "lmpt" .. pid .. "n" .. k,
                               veth = "lmpt" .. pid .. "v" .. k, addr = prefix .. (10 + k)}, Ns)
      run("ip netns add " .. ns.name)
      run(string.format("ip link add %s type veth peer name eth0 netns %s", ns.veth, ns.name))
      run(string.format("ip link set %s master %s up", ns.veth, net.bridge))
      run(string.format("ip -n %s addr add %s/24 dev eth0 && ip -n %s link set eth0 up && ip -n %s link set lo up",
                        ns.name, ns.addr, ns.name, ns.name))
      net[k] = ns
    end
  end)
  if not ok then
    net:close()
    return nil, tostring(err)
  end
  return net
end

--- Kill every process started in the namespaces (not the redis-servers
--- unless `servers` is true) and join every cut link again.
function Net:reset(servers)
  for k = 1, #self do
    local ns = self[k]
    local keep = {}
    if not servers then
      for _, r in ipairs(self.servers) do
        if r.ns == ns then
          local f = io.open(r.dir .. "/redis.pid")
          if f then keep[tonumber(f:read("a"))] = true f:close() end
        end
      end
    end
    for p in sh("ip netns pids " .. ns.name):gmatch("%d+") do
      if not keep[tonumber(p)] then support.kill(tonumber(p), "KILL") end
    end
    ns:restore()
  end
  for _, p in ipairs(self.pids) do support.kill(p, "KILL") end
  self.pids = {}
end

--- Remove everything this network made; safe to call twice.
function Net:close()
  if self.closed then return end
  self.closed = true
  self:reset(true)
  remove_run(self.pid)
  for _, f in ipairs(self.files) do os.remove(f) end
  for _, d in ipairs(self.dirs) do sh("rm -rf " .. d) end
end

return M

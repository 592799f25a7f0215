-- Helpers shared by the specs.
local M = {}

-- busted's assert, which a spec sees as `assert` (here that is Lua's).
local function luassert() return require "luassert" end

M.build = os.getenv("LMP_BUILD") or "build"
M.lmp_bin = M.build .. "/lmp"

-- Writes s to a new temporary file; returns its path.
function M.tmpfile(s)
  local path = os.tmpname()
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
  return path
end

-- Runs a shell command; returns its output (stdout and stderr together).
function M.shell(cmd)
  local p = io.popen("{ " .. cmd .. "\n} 2>&1")
  local out = p:read("a")
  p:close()
  return out
end

-- Runs a shell command; returns its output (stdout and stderr together) and
-- exit code.
function M.shell_code(cmd)
  local out = M.shell(cmd .. "; echo \"::exit $?\"")
  return out:gsub("::exit %d+%s*$", ""), tonumber(out:match("::exit (%d+)%s*$"))
end

-- Runs the script file `path` with the lmp executable, `args` (one string of
-- shell words) after it and `prefix` (such as "timeout 120") before it;
-- returns output (stdout and stderr together) and exit code.
function M.run_file(path, args, prefix)
  return M.shell_code(string.format("%s %s %s %s", prefix or "", M.lmp_bin, path, args or ""))
end

-- Runs the example script `path` (with `args`) with the lmp executable and
-- asserts that it exits 0; its output.
function M.run_example(path, args)
  local out, code = M.run_file(path, args)
  luassert().are.equal(0, code, out)
  return out
end

-- Runs a Lua snippet with the lmp executable; returns output (stdout and
-- stderr together) and exit code.
function M.run(code, ...)
  local path = M.tmpfile(code)
  local out, code_ = M.run_file(path, table.concat({...}, " "))
  os.remove(path)
  return out, code_
end

-- Why a private /dev/shm cannot be had here (nil when it can): the small
-- /dev/shm runs need root and a mount namespace (unshare -m).
local small_shm_reason
function M.small_shm_unavailable()
  if small_shm_reason == nil then
    local out, code = M.shell_code("unshare -m sh -c 'mount -t tmpfs -o size=1m tmpfs /dev/shm'")
    small_shm_reason = ""
    if code ~= 0 then
      small_shm_reason = "no private /dev/shm here (unshare -m and mount need root): "
        .. out:gsub("%s+$", "")
    end
  end
  return small_shm_reason ~= "" and small_shm_reason or nil
end

-- Runs the Lua snippet `code` with the lmp executable in a mount namespace
-- of its own whose /dev/shm is a tmpfs of `size` ("16m"), with the shell
-- assignments `env` ("" for none) in front; returns output and exit code.
-- Check M.small_shm_unavailable() first.
function M.run_small_shm(size, code, env)
  local path = M.tmpfile(code)
  local out, code_ = M.shell_code(string.format(
    "unshare -m sh -c 'mount -t tmpfs -o size=%s tmpfs /dev/shm && %s timeout 120 %s %s'",
    size, env or "", M.lmp_bin, path))
  os.remove(path)
  return out, code_
end

-- Runs a Lua snippet with the lmp executable (`args`, shell words, after
-- it) under the shell limits `limits` (ulimit options, such as "-v 200000"
-- or "-n 256"); returns
-- output (stdout and stderr together) and exit code.  An address-space
-- limit cannot hold a sanitizer build (its shadow memory alone is larger):
-- there it returns nil and the reason.
function M.run_limited(code, limits, args)
  if limits:find("-v", 1, true) and (os.getenv("LMP_TEST_SANITIZER") or "") ~= "" then
    return nil, "ulimit -v cannot hold a " .. os.getenv("LMP_TEST_SANITIZER") .. " build"
  end
  local path = M.tmpfile(code)
  local out, rc = M.shell_code(string.format("sh -c 'ulimit %s && exec %s %s %s'", limits, M.lmp_bin, path,
                                             args or ""))
  os.remove(path)
  return out, rc
end

-- A task (no arguments) that fills memory with small strings until
-- allocation fails, so that what is left then is garbage (scripts run by
-- run_limited reach it as dofile("tests/support.lua").memory_hog).
function M.memory_hog()
  local t = {}
  for i = 1, math.huge do t[i] = string.rep("x", 200) .. i end
end

-- How many processes run with real user id `uid`.
local function processes_of(uid)
  local n = 0
  local p = io.popen("ls /proc")
  for pid in p:lines() do
    local f = pid:match("^%d+$") and io.open("/proc/" .. pid .. "/status")
    if f then
      local status = f:read("a") or ""
      f:close()
      if tonumber(status:match("\nUid:%s+(%d+)")) == uid then n = n + 1 end
    end
  end
  p:close()
  return n
end

-- Runs the Lua snippet `code` with the lmp executable under a process limit
-- (ulimit -u) that leaves room for the program, its watchdog and `room`
-- more processes; returns output and exit code, or nil and why it cannot
-- run here.  Root ignores the limit, so as root the program runs as the
-- unprivileged user 65534 (setpriv).
function M.run_at_process_limit(code, room)
  local root = M.shell("id -u") == "0\n"
  for _, tool in ipairs({"bash", root and "setpriv" or nil}) do
    if not M.shell("command -v " .. tool):match("%S") then
      return nil, tool .. " is not installed" .. (root and ": root ignores ulimit -u" or "")
    end
  end
  local uid = root and 65534 or tonumber(M.shell("id -u"))
  -- Besides those already running: the program, its watchdog and, while
  -- the watchdog starts, the process between them (it is forked twice);
  -- when not root, the shell that starts it too.
  local limit = processes_of(uid) + 3 + (root and 0 or 1) + (room or 0)
  local path = M.tmpfile(code)
  os.execute("chmod 644 " .. path)
  -- The other user may not reach the build tree (a checkout in a 0700
  -- directory): it runs a copy of the executable, which carries everything.
  local dir = M.shell("mktemp -d"):gsub("%s+$", "")
  local bin = dir .. "/lmp"
  os.execute(string.format("cp %s %s && chmod 755 %s %s", M.lmp_bin, bin, dir, bin))
  local out, rc = M.shell_code(string.format("%sbash -c 'ulimit -u %d && exec %s %s'",
    root and "setpriv --reuid=65534 --regid=65534 --clear-groups " or "", limit, bin, path))
  os.remove(path)
  os.execute("rm -rf " .. dir)
  return out, rc
end

-- Names in /dev/shm that start with prefix (without the leading slash),
-- but the names directory and the pools' registry, which a program takes
-- when it starts.
function M.shm_entries(prefix)
  local out = {}
  local p = io.popen("ls /dev/shm 2>/dev/null")
  for name in p:lines() do
    if name:sub(1, #prefix) == prefix and not name:match("%.names$") and not name:match("%.pools$") then
      out[#out + 1] = name
    end
  end
  p:close()
  return out
end

-- How many segments under prefix are left once garbage is collected: what
-- the program still holds, for comparing with a baseline.
function M.live_segments(prefix)
  collectgarbage()
  collectgarbage()
  return #M.shm_entries(prefix)
end

-- Whether some name in /dev/shm starts with prefix.
function M.shm_exists(prefix)
  return #M.shm_entries(prefix) > 0
end

-- The shm segment name a handle shows in tostring, without its slash.
function M.segment(obj)
  return tostring(obj):match("(/lmp[^,)]+)"):sub(2)
end

-- Open descriptors of this process.
function M.fd_count()
  local pid = require("lmp").current_process().pid
  local p = io.popen("ls /proc/" .. pid .. "/fd")
  local n = 0
  for _ in p:lines() do n = n + 1 end
  p:close()
  return n
end

-- Whether process `pid` is gone and reaped: no /proc entry at all (a
-- zombie still has one, whose stat says "Z").
function M.reaped(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  local stat = f and f:read("a")
  if f then f:close() end
  return stat == nil
end

-- Whether process `pid` exists and is not a zombie.
function M.alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local stat = f:read("a") -- nil when it was reaped between open and read
  f:close()
  return stat ~= nil and not stat:match("^%d+ %b() Z")
end

-- Waits (up to `secs`, default 10) until pred() holds; its last value.
function M.eventually(pred, secs)
  local lmp = require "lmp"
  local t0 = lmp.time()
  local v = pred()
  while not v and lmp.time() - t0 < (secs or 10) do
    lmp.sleep(0.02)
    v = pred()
  end
  return v
end

-- Waits (up to `secs`, default 10) until every pid in the list is dead;
-- whether they all are.
function M.all_dead(pids, secs)
  return M.eventually(function()
    for _, pid in ipairs(pids) do
      if M.alive(pid) then return false end
    end
    return true
  end, secs)
end

-- Worker pids of a Pool or an Executor, from its stats' slots.
function M.pids(pool)
  local out = {}
  for _, w in ipairs(pool:stats().workers) do
    if w.pid then out[#out + 1] = w.pid end
  end
  return out
end

-- Sends signal `sig` (a name, default TERM) to process `pid`, ignoring failure.
function M.kill(pid, sig)
  os.execute(string.format("kill -%s %d 2>/dev/null", sig or "TERM", pid))
end

-- Starts fn(...) in a new process made by `ctx` (a context from
-- lmp.get_context, or lmp itself); returns the Process.
function M.spawn_in(ctx, fn, ...)
  local p = ctx.Process(fn, ...)
  p:start()
  return p
end

-- Starts fn(...) in a new process; returns the Process.
function M.spawn(fn, ...)
  return M.spawn_in(require("lmp"), fn, ...)
end

-- Runs fn(i) in `n` processes at once (i = 1..n), made by `ctx` (default
-- lmp), and asserts that each exits 0 within 120 s.
function M.in_processes(n, fn, ctx)
  local procs = {}
  for i = 1, n do procs[i] = M.spawn_in(ctx or require("lmp"), fn, i) end
  local assert = luassert()
  for i = 1, n do
    assert.is_true(procs[i]:join(120))
    assert.are.equal(0, procs[i].exitcode)
  end
end

-- The error a call raises (asserting that it raises one).
function M.raised(f, ...)
  local ok, err = pcall(f, ...)
  luassert().is_false(ok, "expected an error")
  return err
end

-- The list {1, ..., n}.
function M.range(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

-- What a queue holds: get(secs) until it gives nothing, in order.
function M.drained(q, secs)
  local got = {}
  while true do
    local v = q:get(secs)
    if v == nil then return got end
    got[#got + 1] = v
  end
end

-- How many different values a list holds.
function M.distinct(list)
  local seen, n = {}, 0
  for _, v in ipairs(list) do
    if not seen[v] then seen[v], n = true, n + 1 end
  end
  return n
end

-- The contents of a file that must exist.
function M.read(path)
  local f = assert(io.open(path))
  local s = f:read("a")
  f:close()
  return s
end

-- The contents of a file, "" when there is none.
function M.readfile(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("a")
  f:close()
  return s
end

-- The non-empty lines of s.
-- The ```lua samples of a page of docs, each {code =, title =} (title:
-- the heading of its section), in order.
function M.samples(path)
  local out, title, block, indent, fence = {}, nil, nil, "", false
  for line in (M.read(path) .. "\n"):gmatch("([^\n]*)\n") do
    if block then
      if line:match("^%s*```") then
        out[#out + 1] = {code = table.concat(block, "\n") .. "\n", title = title or block[1]}
        block = nil
      else
        block[#block + 1] = line:sub(1, #indent) == indent and line:sub(#indent + 1) or line
      end
    elseif line:match("^%s*```lua") then
      block, indent = {}, line:match("^(%s*)")
    elseif line:match("^%s*```") then
      fence = not fence
    elseif not fence and line:match("^#+ ") then
      title = line:match("^#+ (.*)")
    end
  end
  return out
end

-- Run code (a sample of docs, or it as changed to run here: shown is the
-- sample as the docs show it) under the lmp command: it must exit 0 and
-- print, in order, the values the "--> " comments of shown show (runs of
-- spaces alike; other lines may come between).  What it printed.
function M.check_sample(shown, code)
  local luassert = luassert()
  local out, rc = M.run(code or shown)
  luassert.are.equal(0, rc, out)
  local expected = {}
  for value in shown:gmatch("%-%-> ([^\n]*)") do
    expected[#expected + 1] = (value:gsub("%s+", " "):gsub(" $", ""))
  end
  local n = 1
  for line in out:gmatch("[^\n]+") do
    if (line:gsub("%s+", " "):gsub(" $", "")) == expected[n] then n = n + 1 end
  end
  luassert(n > #expected, "the sample did not print: " .. tostring(expected[n]) .. "\n" .. out)
  return out
end

function M.lines(s)
  local out = {}
  for l in s:gmatch("[^\n]+") do out[#out + 1] = l end
  return out
end

-- A deterministic generator (xorshift32), so failures can be replayed:
-- rand(n) is in 0 .. n-1.
function M.rng(seed)
  local x = seed
  return function(n)
    x = x ~ (x << 13) & 0xffffffff
    x = x ~ (x >> 17)
    x = x ~ (x << 5) & 0xffffffff
    return x % n
  end
end

-- Globals other than the ones present when this module loaded.
local baseline = {}
for k in pairs(_G) do baseline[k] = true end
function M.new_globals()
  local extra = {}
  for k in pairs(_G) do
    if not baseline[k] then extra[#extra + 1] = tostring(k) end
  end
  table.sort(extra)
  return extra
end

-- === a pseudo-terminal ===

-- A command on a pseudo-terminal, as a user at a terminal runs it: input
-- goes through a FIFO into `script`, which runs the command on a pty (its
-- own session, so "\3" sends SIGINT to its whole process group, as ^C does);
-- output is collected in a file and each step waits for what it expects (no
-- fixed delays).  SIGINT starts at its default action, which a background
-- job's ignored one would otherwise stay.
local Pty = {}
Pty.__index = Pty

function M.pty(cmd, env)
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir .. " && mkfifo " .. dir .. "/in"))
  local s = setmetatable({dir = dir, seen = 0}, Pty)
  local sh = string.format("cd %s && %s TERM=dumb script -qfec %q /dev/null < %s/in > %s/out 2>&1; echo \"::exit $?\" >> %s/out",
    os.getenv("PWD"), env or "", "env --default-signal=INT " .. cmd, dir, dir, dir)
  os.execute("(" .. sh .. ") &")
  s.fifo = assert(io.open(dir .. "/in", "w"))
  return s
end

function Pty:output()
  local f = io.open(self.dir .. "/out")
  local text = f and f:read("a") or ""
  if f then f:close() end
  return (text:gsub("\r", ""):gsub("\27%[[%d;?]*%a", ""))
end

function Pty:send(s)
  self.fifo:write(s)
  self.fifo:flush()
end

-- Waits until `plain` appears in the output after what earlier expects
-- consumed; fails after 10 s with the transcript.
function Pty:expect(plain)
  local lmp = require "lmp"
  local t0 = lmp.time()
  while true do
    local out = self:output()
    local i, j = out:find(plain, self.seen + 1, true)
    if i then
      self.seen = j
      return out:sub(i, j)
    end
    if lmp.time() - t0 > 10 then
      error(string.format("expected %q in:\n%s", plain, out), 2)
    end
    lmp.sleep(0.02)
  end
end

-- The first capture of `pattern` in what the next expect(plain) consumed
-- and the output before it.
function Pty:match(plain, pattern)
  local from = self.seen + 1
  self:expect(plain)
  return self:output():sub(from, self.seen):match(pattern)
end

-- Ends the input and waits for the command's exit; its status.
function Pty:close()
  if self.fifo then self.fifo:close() end
  self.fifo = nil
  self:expect("::exit")
  self.transcript = self:output()
  os.execute("rm -rf " .. self.dir)
  return tonumber(self.transcript:match("::exit (%d+)"))
end

-- Waits until process `pid` sleeps in a system call (so a signal now
-- interrupts that call); whether it does within 10 s.
function M.blocked(pid)
  return M.eventually(function()
    local f = io.open("/proc/" .. pid .. "/syscall")
    local sc = f and f:read("l")
    if f then f:close() end
    local st = io.open("/proc/" .. pid .. "/stat")
    local state = st and st:read("a"):match("^%d+ %b() (%a)")
    if st then st:close() end
    return sc ~= nil and sc:match("^%d") ~= nil and state == "S"
  end)
end

return M

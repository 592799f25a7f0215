-- lmp inside a real server: lighttpd's mod_magnet, which embeds Lua 5.4 and
-- keeps one Lua state per script, serves requests through an lmp Pool
-- (tests/lighttpd/handler.lua).  It is reloaded twice while four clients
-- send requests, then stopped; tests/lighttpd/run.sh does it inside a pid
-- namespace of its own, so that every process left behind is seen.
local support = dofile("tests/support.lua")

local build = support.build

-- Why this machine cannot run the server test, or nil.
local function cannot()
  for _, cmd in ipairs({"lighttpd", "curl", "unshare"}) do
    if select(2, support.shell_code("command -v " .. cmd)) ~= 0 then
      return cmd .. " is missing (make deps installs it)"
    end
  end
  if not io.open("/usr/lib/lighttpd/mod_magnet.so") then
    return "lighttpd's mod_magnet is missing (package lighttpd-modules-lua)"
  end
  local out, code = support.shell_code("unshare -pf --mount-proc true 2>&1")
  if code ~= 0 then return "cannot make a pid namespace: " .. out end
  if build:find("asan", 1, true) then
    return "lighttpd is not built with the sanitizer runtime lmp.so needs here"
  end
end

-- A port nothing listens on now.
local function free_port()
  local lmp = require "lmp"
  return 20000 + (lmp.current_process().pid * 7 + os.time()) % 20000
end

-- Runs run.sh in MODE and returns its findings as a table.
local function serve(mode)
  local work = os.tmpname()
  os.remove(work)
  assert(os.execute("mkdir -p " .. work))
  local out, code = support.shell_code(string.format(
    "unshare -pf --mount-proc sh tests/lighttpd/run.sh %s %s %d %s 2>&1",
    build, work, free_port(), mode))
  local log = support.read(work .. "/error.log") or ""
  os.execute("rm -rf " .. work)
  assert.are.equal(0, code, out)
  local found = {}
  for k, v in out:gmatch("(%S+) ([^\n]*)\n") do found[k] = tonumber(v) or v end
  found.output, found.log = out, log
  return found
end

for _, mode in ipairs({"inplace", "bg"}) do
  local title = mode == "inplace" and "reloaded with SIGUSR1"
    or "reloaded by re-exec (server.graceful-restart-bg)"
  describe("lighttpd with mod_magnet and a Pool, " .. title, function()
    local why = cannot()
    if why then
      it("runs", function() pending(why) end)
      return
    end

    local r
    setup(function() r = serve(mode) end)

    it("serves through the pool before, during and after two reloads", function()
      assert.are.equal(3, r.starts, r.log)
      assert.are.equal(200, r.during_all, r.output)
      assert.are.equal(200, r.during_ok, r.output)
      assert.are.equal(50, r.after_ok, r.output)
    end)

    it("serves again within seconds of each reload", function()
      -- tenths of a second until the first answer; run.sh gives up at 100
      assert.is_true(r.reload1_tenths < 100, r.output)
      assert.is_true(r.reload2_tenths < 100, r.output)
    end)

    it("keeps one family across reloads: one watchdog, the pool's workers", function()
      assert.are.equal(1, r.watchdogs_at_start, r.output)
      assert.are.equal(2, r.workers_at_start, r.output)
      assert.are.equal(1, r.watchdogs_after_reload, r.output)
      assert.are.equal(2, r.workers_after_reload, r.output)
    end)

    it("stops, leaving no process and no segment", function()
      assert.are.equal(0, r.stopped, r.output)
      assert.are.equal("[]", r.left_processes, r.output)
      assert.are.equal(0, r.left_segments, r.output)
    end)
  end)
end

-- The start methods: one set of behavioural tests, run for fork, spawn and
-- forkserver alike, then what is particular to each.
local support = dofile("tests/support.lua")
local lmp = require "lmp"

local METHODS = { "fork", "spawn", "forkserver" }

-- Runs a script with the lmp executable; output and exit code.
local run = support.run

-- pids of the processes whose command line holds `needle`.
local function pids_with(needle)
  local out = {}
  local p = io.popen("grep -l -a -F -- '" .. needle .. "' /proc/[0-9]*/cmdline 2>/dev/null")
  for path in p:lines() do
    local pid = path:match("^/proc/(%d+)/")
    if pid and support.alive(pid) then out[#out + 1] = pid end
  end
  p:close()
  return out
end

local function wait_gone(pid, secs)
  local t0 = lmp.time()
  while support.alive(pid) and lmp.time() - t0 < (secs or 5) do lmp.sleep(0.02) end
  return not support.alive(pid)
end

for _, method in ipairs(METHODS) do
  describe("start method " .. method, function()
    local ctx = lmp.get_context(method)

    it("runs the target with its arguments, name and parent", function()
      local q = lmp.Queue()
      local p = ctx.Process{target = function(a, b, queue)
        local me, parent = lmp.current_process(), lmp.parent_process()
        queue:put({a + b, me.name, me.pid, parent.name, parent.pid})
      end, args = {2, 3, q}, name = "worker-" .. method}
      assert.are.equal(method, p.start_method)
      p:start()
      local r = q:get(10)
      assert.are.same({5, "worker-" .. method, p.pid, "MainProcess", lmp.current_process().pid}, r)
      assert.is_true(p:join(10))
      assert.are.equal(0, p.exitcode)
      assert.is_false(p:is_alive())
    end)

    it("keeps nil arguments in place", function()
      local q = lmp.Queue()
      local p = ctx.Process(function(a, b, c, queue)
        queue:put({a, b, c, n = select("#", a, b, c)})
      end, nil, 2, nil, q)
      p:start()
      assert.are.same({nil, 2, nil, n = 3}, q:get(10))
      assert.is_true(p:join(10))
    end)

    it("carries closures with upvalues, recursive locals and C modules", function()
      local q = lmp.Queue()
      local lfs = require "lfs"
      local conf = {base = 100, nested = {k = "v"}}
      local function fact(n) return n <= 1 and 1 or n * fact(n - 1) end
      local p = ctx.Process(function()
        q:put({conf.base + 1, conf.nested.k, fact(5), type(lfs.currentdir()), math.sqrt(16)})
      end)
      p:start()
      assert.are.same({101, "v", 120, "string", 4.0}, q:get(10))
      assert.is_true(p:join(10))
    end)

    it("maps exit codes: 0, os.exit(n), uncaught error 1, killed -N", function()
      local ok = ctx.Process(function() end)
      local ex = ctx.Process(function() os.exit(7) end)
      local slow = ctx.Process(function() lmp.sleep(30) end)
      local term = ctx.Process(function() lmp.sleep(30) end)
      for _, p in ipairs({ok, ex, slow, term}) do p:start() end
      slow:kill()
      term:terminate()
      for _, p in ipairs({ok, ex, slow, term}) do assert.is_true(p:join(10)) end
      assert.are.equal(0, ok.exitcode)
      assert.are.equal(7, ex.exitcode)
      assert.are.equal(-9, slow.exitcode)
      assert.are.equal(-15, term.exitcode)
      -- an error's traceback goes to stderr: checked in a script below
      local out, code = run(string.format([[
        local lmp = require "lmp"
        local function inner() error("kaboom") end
        local p = lmp.Process{target = function() inner() end, name = "crasher", start_method = %q}
        p:start(); p:join()
        print("exitcode", p.exitcode)
      ]], method))
      assert.are.equal(0, code)
      assert.matches("Process crasher %(pid %d+%):", out)
      assert.matches("kaboom", out)
      assert.matches("stack traceback:", out)
      assert.matches("'?inner'?", out)
      assert.is_nil(out:find("in method 'start'", 1, true))
      assert.matches("exitcode\t1", out)
    end)

    it("join with a timeout, is_alive and sentinel", function()
      local p = ctx.Process(function() lmp.sleep(0.5) end)
      p:start()
      assert.is_true(p:is_alive())
      assert.is_number(p.sentinel)
      assert.is_false(p:join(0.05))
      assert.is_nil(p.exitcode)
      assert.is_true(p:join(10))
      assert.are.equal(0, p.exitcode)
      assert.is_false(p:is_alive())
    end)

    it("passes a Queue as an argument", function()
      local tasks, results = lmp.Queue(), lmp.Queue()
      local p = ctx.Process(function(t, r)
        while true do
          local n = t:get()
          if not n then break end
          r:put(n * n)
        end
      end, tasks, results)
      p:start()
      for i = 1, 5 do tasks:put(i) end
      tasks:put(false)
      local sum = 0
      for _ = 1, 5 do sum = sum + results:get(10) end
      assert.are.equal(55, sum)
      assert.is_true(p:join(10))
    end)

    it("passes a Pipe end as an argument", function()
      local a, b = lmp.Pipe()
      local p = ctx.Process(function(conn)
        local v = conn:recv(10)
        conn:send({echo = v})
        conn:close()
      end, b)
      p:start()
      a:send("ping")
      assert.are.same({echo = "ping"}, a:recv(10))
      assert.is_true(p:join(10))
    end)

    it("passes sync objects as arguments", function()
      if not lmp.Lock then return pending("lmp.Lock not built") end
      local lock, ev, q = lmp.Lock(), lmp.Event(), lmp.Queue()
      assert.is_true(lock:acquire())
      local p = ctx.Process(function(l, e, out)
        out:put(l:acquire(0))        -- held by the parent: false
        e:wait(10)
        out:put(l:acquire(10))       -- released by then
        l:release()
      end, lock, ev, q)
      p:start()
      assert.is_false(q:get(10))
      lock:release()
      ev:set()
      assert.is_true(q:get(10))
      assert.is_true(p:join(10))
    end)

    it("passes shared values as arguments", function()
      if not lmp.Value then return pending("lmp.Value not built") end
      local v = lmp.Value("int64", 0)
      local ps = {}
      for i = 1, 2 do
        ps[i] = ctx.Process(function(val) for _ = 1, 100 do val:add(1) end end, v)
        ps[i]:start()
      end
      for _, p in ipairs(ps) do assert.is_true(p:join(10)) end
      assert.are.equal(200, v.value)
    end)

    it("lets children start children", function()
      local q = lmp.Queue()
      local p = ctx.Process(function()
        local inner = lmp.Process{target = function() q:put(lmp.parent_process().name) end,
                                  start_method = lmp.get_start_method()}
        inner:start()
        inner:join()
        q:put(lmp.get_start_method())
      end)
      p:start()
      assert.matches("^Process", q:get(10))
      assert.are.equal("fork", q:get(10)) -- the parent's default travels
      assert.is_true(p:join(10))
    end)

    it("lists running children in active_children", function()
      local p = ctx.Process(function() lmp.sleep(0.5) end)
      p:start()
      local found = false
      for _, c in ipairs(lmp.active_children()) do found = found or c == p end
      assert.is_true(found)
      assert.is_true(p:join(10))
      for _, c in ipairs(lmp.active_children()) do assert.are_not.equal(p, c) end
    end)

    it("terminates a running process at the end of a <close> scope", function()
      local pid
      do
        local p <close> = ctx.Process(function() lmp.sleep(30) end)
        p:start()
        pid = p.pid
      end
      assert.is_true(wait_gone(pid, 2))
    end)

    it("joins non-daemon children and kills daemon ones when the program ends", function()
      local out, code = run(string.format([[
        local lmp = require "lmp"
        local ctx = lmp.get_context(%q)
        local q = lmp.Queue()
        local worker = ctx.Process(function() lmp.sleep(0.3); q:put("done") end)
        local daemon = ctx.Process{target = function() lmp.sleep(60) end, daemon = true}
        worker:start(); daemon:start()
        print("pids", worker.pid, daemon.pid)
      ]], method))
      assert.are.equal(0, code, out)
      local wpid, dpid = out:match("pids\t(%d+)\t(%d+)")
      assert.is_not_nil(wpid, out)
      assert.is_true(wait_gone(wpid, 2))
      assert.is_true(wait_gone(dpid, 2))
    end)

    it("children die with a parent killed by SIGKILL", function()
      local out = support.shell(support.lmp_bin .. string.format([[ -e '
        local p = lmp.get_context(%q).Process(function() lmp.sleep(60) end); p:start()
        io.write(p.pid, "\n"); io.flush()
        os.execute("kill -9 " .. lmp.current_process().pid)' ]], method))
      local pid = out:match("(%d+)")
      assert.is_not_nil(pid, out)
      assert.is_true(wait_gone(pid, 3))
    end)

    it("runs a pool with this start method", function()
      local pool = ctx.Pool(2)
      local offset = 10
      assert.are.same({11, 12, 13}, pool:map(function(x) return x + offset end, {1, 2, 3}))
      local who = pool:apply(function()
        return {lmp.current_process().name, lmp.parent_process().pid}
      end)
      assert.matches("^PoolWorker%-%d$", who[1])
      assert.are.equal(lmp.current_process().pid, who[2])
      pool:close()
      pool:join()
    end)

    it("runs a pool's initializer, and the pool's workers join its shared memory", function()
      local v = lmp.Value("int64", 0)
      local pool = ctx.Pool{processes = 2, initializer = function(value, step)
        value:add(step)
        _G.ready = step
      end, initargs = {v, 5}, start_method = method}
      assert.are.same({5, 5, 5, 5}, pool:map(function() return _G.ready end, {1, 2, 3, 4}))
      pool:close()
      pool:join()
      assert.are.equal(10, v.value)
    end)

    it("replaces a pool worker killed mid-task, and one retired by maxtasksperchild", function()
      local pool = lmp.Pool{processes = 1, maxtasksperchild = 2, start_method = method}
      local pids = {}
      for i = 1, 4 do pids[i] = pool:apply(function() return lmp.current_process().pid end) end
      assert.are.equal(pids[1], pids[2])
      assert.are_not.equal(pids[2], pids[3])
      local r = pool:apply_async(function() os.execute("kill -9 " .. lmp.current_process().pid) end)
      local ok, err = pcall(r.get, r, 30)
      assert.is_false(ok)
      assert.are.equal("worker_lost", err.kind)
      assert.are.equal(7, pool:apply(function(x) return x + 1 end, 6))
      pool:terminate()
    end)

    it("kills a task past its task_timeout and goes on", function()
      local pool = lmp.Pool{processes = 1, task_timeout = 0.3, start_method = method}
      local ok, err = pcall(pool.apply, pool, function() lmp.sleep(30) end)
      assert.is_false(ok)
      assert.are.equal("timeout", err.kind)
      assert.are.equal(3, pool:apply(function() return 3 end))
      pool:terminate()
    end)

    it("ctx.Pool and ctx.Executor take the module's arguments, positional ones included", function()
      -- how the calling process started, from its command line
      local function started_by()
        local f = io.open("/proc/self/cmdline")
        local s = f:read("a")
        f:close()
        return s:find("--lmp-child", 1, true) and "spawn"
               or s:find("--lmp-forkserver", 1, true) and "forkserver" or "fork"
      end
      local pool <close> = ctx.Pool(1, function(a, b) _G.init = a + b end, {2, 3}, 10)
      assert.are.same({5, method}, pool:apply(function() return {_G.init, started_by()} end))
      local ex <close> = ctx.Executor(1)
      assert.are.equal(method, ex:submit(started_by):result(30))
      assert.are.equal(support.raised(lmp.Pool, 1, 5), support.raised(ctx.Pool, 1, 5))
      assert.are.equal(support.raised(lmp.Executor, 1, 2), support.raised(ctx.Executor, 1, 2))
    end)

    it("a context travels to a child, which starts its own process with it", function()
      local q = lmp.Queue()
      local p = ctx.Process(function()
        assert(tostring(ctx) == "lmp.context(" .. method .. ")", tostring(ctx))
        local inner = ctx.Process(function() q:put(ctx.get_start_method()) end)
        inner:start()
        inner:join()
      end)
      p:start()
      assert.is_true(p:join(30))
      assert.are.equal(0, p.exitcode)
      assert.are.equal(method, q:get(10))
      -- and through a message, to a process that never loaded lmp.context
      local back = lmp.deserialize(lmp.serialize(ctx))
      assert.are.equal(ctx.get_start_method(), back.get_start_method())
    end)

    it("runs an executor with this start method", function()
      local ex = lmp.Executor{max_workers = 2, start_method = method}
      local futs = {}
      for i = 1, 4 do futs[i] = ex:submit(function(x) return x * x end, i) end
      for i = 1, 4 do assert.are.equal(i * i, futs[i]:result(30)) end
      ex:shutdown()
    end)
  end)
end

describe("pools under spawn and forkserver", function()
  it("lmp.Pool follows set_start_method", function()
    local out, code = run([[
      lmp.set_start_method("spawn")
      local pool = lmp.Pool(1)
      local cmd = pool:apply(function()
        local f = io.open("/proc/self/cmdline"); local s = f:read("a"); f:close(); return s
      end)
      print(cmd:find("--lmp-child", 1, true) and "spawned" or "forked")
      pool:close(); pool:join()
    ]])
    assert.are.equal(0, code, out)
    assert.are.equal("spawned\n", out)
  end)

  it("an initializer that cannot travel fails the constructor, naming it", function()
    local f = io.tmpfile()
    local ok, err = pcall(lmp.Pool, {processes = 1, initializer = function() return f end,
                                     start_method = "spawn"})
    f:close()
    assert.is_false(ok)
    assert.are.equal("serialize", err.kind)
    assert.matches("userdata", tostring(err))
  end)

  it("a failing initializer breaks the pool instead of respawning forever", function()
    local pool = lmp.Pool{processes = 2, initializer = function() error("no luck") end,
                          start_method = "spawn"}
    local ok, err = pcall(pool.apply, pool, function() return 1 end)
    assert.is_false(ok)
    assert.matches("no luck", tostring(err))
    pool:terminate()
  end)
end)

describe("spawn and forkserver", function()
  for _, method in ipairs({"spawn", "forkserver"}) do
    it(method .. " starts from a fresh state: the parent's globals are not there", function()
      rawset(_G, "LMP_TEST_GLOBAL", 1)
      local q = lmp.Queue()
      local p = lmp.Process{target = function() q:put(rawget(_G, "LMP_TEST_GLOBAL") or "none") end,
                            start_method = method}
      p:start()
      local v = q:get(10)
      rawset(_G, "LMP_TEST_GLOBAL", nil)
      assert.are.equal("none", v)
      assert.is_true(p:join(10))
    end)

    it(method .. " finds modules beside the main script and in package.path", function()
      local dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir -p " .. dir .. "/sub"))
      local f = assert(io.open(dir .. "/sub/helper_mod.lua", "w"))
      f:write("return {answer = function() return 42 end}\n")
      f:close()
      f = assert(io.open(dir .. "/sub/main.lua", "w"))
      f:write(string.format([[
        local lmp = require "lmp"
        local q = lmp.Queue()
        local p = lmp.Process{target = function()
          q:put(require("helper_mod").answer())
        end, start_method = %q}
        p:start()
        print("got", q:get(10))
        p:join()
      ]], method))
      f:close()
      -- run from another directory: only the script's directory finds helper_mod
      local out = support.shell("cd / && " .. support.lmp_bin:gsub("^([^/])", os.getenv("PWD") .. "/%1")
        .. " " .. dir .. "/sub/main.lua")
      os.execute("rm -rf " .. dir)
      assert.matches("got\t42", out)
    end)

    it(method .. " children see the parent's working directory and arg", function()
      local out = support.shell("cd /tmp && " .. support.lmp_bin:gsub("^([^/])", os.getenv("PWD") .. "/%1")
        .. string.format([[ -e '
        local lfs = require "lfs"
        lfs.chdir("/usr")
        local q = lmp.Queue()
        local p = lmp.Process{target = function() q:put({lfs.currentdir(), type(arg)}) end,
                              start_method = %q}
        p:start(); local r = q:get(10); p:join()
        print(r[1], r[2])' ]], method))
      assert.matches("/usr\ttable", out)
    end)

    it(method .. " reports what cannot be sent, naming where it sits", function()
      local p = lmp.Process{target = print, args = {1, io.stdout}, start_method = method}
      local ok, err = pcall(p.start, p)
      assert.is_false(ok)
      assert.is_true(lmp.is_error(err))
      assert.are.equal("serialize", err.kind)
      assert.matches("args%[2%]", err.message)
      -- the process can still be fixed and started
      p = lmp.Process{target = function() end, start_method = method}
      p:start()
      assert.is_true(p:join(10))
    end)
  end

  it("keeps the child entries of the lmp command out of --help", function()
    local help = support.shell(support.lmp_bin .. " --help")
    assert.matches("usage: lmp", help)
    assert.is_nil(help:find("lmp-child", 1, true))
    assert.is_nil(help:find("forkserver", 1, true))
  end)

  it("spawn execs the lmp executable, which joins the program's shared memory", function()
    local q = lmp.Queue()
    local p = lmp.Process{target = function()
      local f = io.open("/proc/self/cmdline")
      local cmd = f:read("a")
      f:close()
      q:put(cmd:find("--lmp-child", 1, true) ~= nil)
    end, start_method = "spawn"}
    p:start()
    assert.is_true(q:get(10))
    assert.is_true(p:join(10))
  end)
end)

describe("the forkserver", function()
  it("is one clean server per program, not a child in active_children", function()
    local out, code = run([[
      local lmp = require "lmp"
      local ctx = lmp.get_context("forkserver")
      local q = lmp.Queue()
      for i = 1, 3 do
        local p = ctx.Process(function() q:put(lmp.parent_process().pid) end)
        p:start(); p:join()
      end
      local a, b, c = q:get(5), q:get(5), q:get(5)
      local p = ctx.Process(function() lmp.sleep(0.5) end)
      p:start()
      print("parents", a == b and b == c and a == lmp.current_process().pid)
      print("active", #lmp.active_children())
      p:join()
    ]])
    assert.are.equal(0, code, out)
    assert.matches("parents\ttrue", out)
    assert.matches("active\t1", out)
  end)

  it("loads its preloads with the program's package.path", function()
    local dir = support.shell("mktemp -d"):gsub("%s+$", "")
    local f = assert(io.open(dir .. "/preloaded_mod.lua", "w"))
    f:write("return {pid = require('lmp').current_process().pid}\n")
    f:close()
    local out, code = run(string.format([[
      local lmp = require "lmp"
      package.path = %q .. "/?.lua;" .. package.path
      lmp.set_forkserver_preload{"preloaded_mod"}
      local q, root = lmp.Queue(), lmp.current_process().pid
      local p = lmp.get_context("forkserver").Process(function()
        local m = package.loaded.preloaded_mod -- loaded by the server: neither here nor in root
        q:put(m ~= nil and m.pid ~= lmp.current_process().pid and m.pid ~= root)
      end)
      p:start()
      print("preloaded", q:get(10))
      p:join()
    ]], dir))
    os.remove(dir .. "/preloaded_mod.lua")
    os.remove(dir)
    assert.are.equal(0, code, out)
    assert.are.equal("preloaded\ttrue\n", out)
  end)

  it("exits with the program, and when the program is killed", function()
    for _, how in ipairs({"exit", "kill"}) do
      local out = support.shell(support.lmp_bin .. [[ -e '
        local p = lmp.get_context("forkserver").Process(function() lmp.sleep(60) end)
        p.daemon = true
        p:start()
        io.write(lmp.current_process().pid, " ", p.pid, "\n"); io.flush()
        ]] .. (how == "kill" and [[os.execute("kill -9 " .. lmp.current_process().pid)]] or "") .. [[' ]])
      local root, child = out:match("(%d+) (%d+)")
      assert.is_not_nil(root, out)
      assert.is_true(wait_gone(child, 3), how)
      local t0 = lmp.time()
      local left
      repeat
        left = {}
        for _, pid in ipairs(pids_with("--lmp-forkserver")) do
          local f = io.open("/proc/" .. pid .. "/status")
          local st = f and f:read("a") or ""
          if f then f:close() end
          if st:match("PPid:%s*" .. root .. "\n") then left[#left + 1] = pid end
        end
        if #left > 0 then lmp.sleep(0.05) end
      until #left == 0 or lmp.time() - t0 > 3
      assert.are.same({}, left)
    end
  end)

  it("starts again if its server died", function()
    local q = lmp.Queue()
    local p = lmp.Process{target = function() q:put(1) end, start_method = "forkserver"}
    p:start(); p:join()
    for _, pid in ipairs(pids_with("--lmp-forkserver")) do
      local f = io.open("/proc/" .. pid .. "/status")
      local st = f and f:read("a") or ""
      if f then f:close() end
      if st:match("PPid:%s*" .. lmp.current_process().pid .. "\n") then os.execute("kill -9 " .. pid) end
    end
    lmp.sleep(0.05)
    p = lmp.Process{target = function() q:put(2) end, start_method = "forkserver"}
    p:start()
    assert.is_true(p:join(10))
    assert.are.same({1, 2}, {q:get(5), q:get(5)})
  end)

  it("starts children of a program whose stdin is closed", function()
    local out = support.shell(support.lmp_bin .. [[ -e '
      local q = lmp.Queue()
      local p = lmp.get_context("forkserver").Process(function() q:put(io.read("l") == nil) end)
      p:start(); print(q:get(5), p:join(5), p.exitcode)' <&- ]])
    assert.are.equal("true\ttrue\t0\n", out)
  end)

  it("gives its children the requester's stdout", function()
    local out = support.shell(support.lmp_bin .. [[ -e '
      local p = lmp.get_context("forkserver").Process(function() print("from the child") end)
      p:start(); p:join()' | cat ]])
    assert.matches("from the child", out)
  end)
end)

describe("choosing a start method", function()
  after_each(function() lmp.set_start_method(nil, true) end)

  it("lists the methods and defaults to fork", function()
    assert.are.same({"fork", "spawn", "forkserver"}, lmp.get_all_start_methods())
    assert.are.equal("fork", lmp.get_start_method())
  end)

  it("sets the default once, unless forced", function()
    lmp.set_start_method("spawn")
    assert.are.equal("spawn", lmp.get_start_method())
    assert.has_error(function() lmp.set_start_method("fork") end, "context has already been set")
    lmp.set_start_method("forkserver", true)
    assert.are.equal("forkserver", lmp.get_start_method())
    local q = lmp.Queue()
    local p = lmp.Process(function() q:put(lmp.get_start_method()) end)
    assert.is_nil(p.start_method) -- the default, whatever it is at start
    p:start()
    assert.are.equal("forkserver", q:get(10))
    assert.is_true(p:join(10))
  end)

  it("rejects unknown methods", function()
    assert.has_error(function() lmp.set_start_method("thread") end,
      "bad argument #1 to 'set_start_method' (unknown start method 'thread')")
    assert.has_error(function() lmp.get_context("thread") end,
      "bad argument #1 to 'get_context' (unknown start method 'thread')")
    assert.has_error(function() lmp.Process{target = print, start_method = 1} end,
      "bad argument #1 to 'Process' (unknown start method '1')")
    local p = lmp.Process(print)
    assert.has_error(function() p.start_method = "x" end)
    -- names with a NUL byte would be read by C up to it ("fork")
    assert.has_error(function() lmp.get_context("fork\0x") end,
      "bad argument #1 to 'get_context' (start method contains a NUL byte)")
    assert.has_error(function() lmp.set_forkserver_preload{"string\0junk"} end,
      "bad argument #1 to 'set_forkserver_preload' (module name contains a NUL byte)")
  end)

  it("gives contexts: one per method, constructors looked up in lmp", function()
    local ctx = lmp.get_context("spawn")
    assert.are.equal(ctx, lmp.get_context("spawn"))
    assert.are.equal("spawn", ctx.get_start_method())
    assert.are.equal(lmp.Queue, ctx.Queue)
    assert.are.equal(lmp.Pipe, ctx.Pipe)
    assert.are.equal(lmp.Lock, ctx.Lock)
    assert.are.equal("spawn", ctx.Process(print).start_method)
    assert.are.equal("fork", ctx.Process{target = print, start_method = "fork"}.start_method)
    assert.matches("lmp.context%(spawn%)", tostring(ctx))
    -- the default context follows set_start_method
    local def = lmp.get_context()
    lmp.set_start_method("forkserver")
    assert.are.equal("forkserver", def.get_start_method())
    assert.are.equal("forkserver", def.Process(print).start_method)
    -- objects added to lmp later appear in every context
    rawset(lmp, "LaterThing", 42)
    assert.are.equal(42, ctx.LaterThing)
    rawset(lmp, "LaterThing", nil)
  end)

  it("leaks no globals", function()
    assert.are.same({}, support.new_globals())
  end)
end)

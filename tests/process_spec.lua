local support = dofile("tests/support.lua")
local lmp = require "lmp"

describe("lmp.Process", function()
  it("runs a function with arguments in another process", function()
    local q = lmp.Queue()
    local p = lmp.Process(function(a, b, queue)
      queue:put({a + b, lmp.current_process().pid, lmp.parent_process().pid})
    end, 2, 3, q)
    assert.is_nil(p.pid)
    p:start()
    assert.is_number(p.pid)
    local r = q:get(10)
    assert.are.equal(5, r[1])
    assert.are.equal(p.pid, r[2])
    assert.are.equal(lmp.current_process().pid, r[3])
    assert.is_true(p:join(10))
    assert.are.equal(0, p.exitcode)
    assert.is_false(p:is_alive())
  end)

  it("takes the table form with name, args and daemon", function()
    local q = lmp.Queue()
    local p = lmp.Process{target = function(x, queue)
      queue:put({x, lmp.current_process().name, lmp.parent_process().name})
    end, args = {41, q}, name = "w1", daemon = true}
    assert.are.equal("w1", p.name)
    assert.is_true(p.daemon)
    p:start()
    local r = q:get(10)
    assert.are.same({41, "w1", "MainProcess"}, r)
    assert.is_true(p:join(10))
  end)

  it("keeps nil arguments in place", function()
    local q = lmp.Queue()
    local p = lmp.Process(function(a, b, c, queue) queue:put({a, b, c, n = select("#", a, b, c)}) end,
      nil, 2, nil, q)
    p:start()
    assert.are.same({nil, 2, nil, n = 3}, q:get(10))
    p:join()
  end)

  it("gives default names Process-N", function()
    local p = lmp.Process(function() end)
    assert.matches("^Process%-%d+$", p.name)
  end)

  it("maps exit codes: 0, os.exit(n), uncaught error 1, killed -N", function()
    local ok = lmp.Process(function() end)
    local ex = lmp.Process(function() os.exit(7) end)
    local err = lmp.Process{target = function() error("boom") end, name = "failing"}
    local slow = lmp.Process(function() lmp.sleep(30) end)
    for _, p in ipairs({ok, ex, slow}) do p:start() end
    err:start() -- its traceback goes to stderr

    slow:kill()
    for _, p in ipairs({ok, ex, err, slow}) do assert.is_true(p:join(10)) end
    assert.are.equal(0, ok.exitcode)
    assert.are.equal(7, ex.exitcode)
    assert.are.equal(1, err.exitcode)
    assert.are.equal(-9, slow.exitcode)
  end)

  it("terminate sends SIGTERM (exitcode -15)", function()
    local p = lmp.Process(function() lmp.sleep(30) end)
    p:start()
    p:terminate()
    assert.is_true(p:join(10))
    assert.are.equal(-15, p.exitcode)
  end)

  it("prints an uncaught error with the process name and traceback", function()
    local out, code = support.run([[
      local lmp = require "lmp"
      local function inner() error("kaboom") end
      local p = lmp.Process{target = function() inner() end, name = "crasher"}
      p:start(); p:join()
      print("exitcode", p.exitcode)
    ]])
    assert.are.equal(0, code)
    assert.matches("Process crasher %(pid %d+%):", out)
    assert.matches("kaboom", out)
    assert.matches("stack traceback:", out)
    assert.matches("in %a* ?%a* ?'?inner'?", out)
    -- only the child's own frames: not the parent's, which the fork copied
    assert.is_nil(out:find("in method 'start'", 1, true))
    assert.matches("exitcode\t1", out)
  end)

  it("join with a timeout returns false while running", function()
    local p = lmp.Process(function() lmp.sleep(0.5) end)
    p:start()
    local t0 = lmp.time()
    assert.is_false(p:join(0.05))
    assert.is_true(lmp.time() - t0 < 0.45)
    assert.is_nil(p.exitcode)
    assert.is_true(p:is_alive())
    assert.is_true(p:join(10))
    assert.are.equal(0, p.exitcode)
  end)

  it("raises on start twice, join before start, bad arguments", function()
    local p = lmp.Process(function() end)
    assert.has_error(function() p:join() end, "calling 'join' on bad self (process not started)")
    p:start()
    assert.has_error(function() p:start() end, "calling 'start' on bad self (process already started)")
    p:join()
    assert.has_error(function() lmp.Process(42) end,
      "bad argument #1 to 'Process' (function or options table expected)")
    assert.has_error(function() lmp.Process{target = print, proccess = 1} end,
      "bad argument #1 to 'Process' (unknown option 'proccess')")
    assert.has_error(function() lmp.Process{args = {}} end,
      "bad argument #1 to 'Process' (field 'target' must be callable)")
    assert.has_error(function() p:join(-1) end,
      "bad argument #1 to 'join' (timeout must be a non-negative number)")
    -- the child keeps its name in C: a NUL byte would cut it short
    assert.has_error(function() lmp.Process{target = print, name = "a\0b"} end,
      "bad argument #1 to 'Process' (field 'name' contains a NUL byte)")
    assert.has_error(function() p.name = "a\0b" end,
      "bad argument #3 to 'newindex' (name contains a NUL byte)")
  end)

  it("close refuses a running process and makes the object unusable", function()
    local p = lmp.Process(function() lmp.sleep(0.3) end)
    p:start()
    assert.has_error(function() p:close() end)
    p:join()
    p:close()
    assert.has_error(function() p:join() end, "attempt to use a closed lmp.Process")
  end)

  it("after close raises on every method and field, and close again does nothing", function()
    local p = lmp.Process{target = function() end, name = "w"}
    p:start()
    p:join()
    p:close()
    p:close()
    local closed = "attempt to use a closed lmp.Process"
    for _, m in ipairs{"is_alive", "join", "start", "terminate", "kill"} do
      assert.are.equal(closed, support.raised(p[m], p), m)
    end
    for _, k in ipairs{"exitcode", "pid", "ident", "sentinel", "name", "daemon", "start_method"} do
      assert.matches(":%d+: " .. closed .. "$", support.raised(function() return p[k] end), k)
    end
    assert.matches(":%d+: " .. closed .. "$", support.raised(function() p.name = "x" end))
    assert.matches("closed", tostring(p))
  end)

  it("terminates a running process at the end of a <close> scope", function()
    local pid
    do
      local p <close> = lmp.Process(function() lmp.sleep(30) end)
      p:start()
      pid = p.pid
    end
    assert.is_false(support.alive(pid))
  end)

  it("lists active children and leaves no zombie", function()
    local ps = {}
    for i = 1, 3 do
      ps[i] = lmp.Process(function() lmp.sleep(0.3) end)
      ps[i]:start()
    end
    local active = lmp.active_children()
    assert.is_true(#active >= 3)
    for _, p in ipairs(ps) do p:join() end
    for _, p in ipairs(lmp.active_children()) do
      for _, q in ipairs(ps) do assert.are_not.equal(p, q) end
    end
    -- a child nobody joins is still reaped once it exits
    local lone = lmp.Process(function() end)
    lone:start()
    local pid = lone.pid
    lone = nil
    collectgarbage()
    lmp.sleep(0.2)
    lmp.active_children()
    assert.is_false(support.alive(pid))
  end)

  it("releases the descriptor of a process that ended, joined or not", function()
    local before = support.fd_count()
    for _ = 1, 1000 do
      local p = lmp.Process(function() end)
      p:start()
    end
    assert.is_true(support.eventually(function() return #lmp.active_children() == 0 end, 60))
    -- at most the one descriptor every ended process's sentinel shares
    assert.is_true(support.fd_count() <= before + 1, support.fd_count() .. " open, " .. before .. " before")
  end)

  it("p.sentinel: its own while it runs, kept after; a shared readable one once reaped", function()
    local e = lmp.Event()
    local p = lmp.Process(function() e:wait(30) end)
    p:start()
    local s = p.sentinel
    assert.are.equal(0, lmp._poll_fds({s}, 0))
    e:set()
    assert.is_true(p:join(30))
    assert.are.equal(s, p.sentinel)
    assert.are.equal(1, lmp._poll_fds({s}, 0))
    local ended = {}
    for i = 1, 2 do
      local q = lmp.Process(function() end)
      q:start()
      assert.is_true(q:join(30))
      ended[i] = q.sentinel
      assert.are.equal(1, lmp._poll_fds({ended[i]}, 0))
    end
    assert.are.equal(ended[1], ended[2])
    assert.are_not.equal(s, ended[1])
  end)

  it("leaves no zombie behind a <close> scope, running or ended", function()
    local running, ended
    do
      local p <close> = lmp.Process(function() lmp.sleep(30) end)
      p:start()
      running = p.pid
    end
    do
      local p <close> = lmp.Process(function() end)
      p:start()
      ended = p.pid
      assert.is_true(support.eventually(function() return not support.alive(ended) end))
    end
    assert.is_true(support.reaped(running))
    assert.is_true(support.reaped(ended))
  end)

  it("runs closures with upvalues, and children can start children", function()
    local q = lmp.Queue()
    local base = 100
    local p = lmp.Process(function()
      local inner = lmp.Process(function() q:put(base + 1) end)
      inner:start()
      inner:join()
      q:put(base + 2)
    end)
    p:start()
    local got = {q:get(10), q:get(10)}
    table.sort(got)
    assert.are.same({101, 102}, got)
    assert.is_true(p:join(10))
  end)

  it("joins non-daemon children and kills daemon ones when the program ends", function()
    local out, code = support.run([[
      local lmp = require "lmp"
      local q = lmp.Queue()
      local worker = lmp.Process(function() lmp.sleep(0.3); q:put("done") end)
      local daemon = lmp.Process{target = function() lmp.sleep(60) end, daemon = true}
      worker:start(); daemon:start()
      print("pids", worker.pid, daemon.pid)
    ]])
    assert.are.equal(0, code)
    local wpid, dpid = out:match("pids\t(%d+)\t(%d+)")
    assert.is_not_nil(wpid)
    assert.is_false(support.alive(wpid))
    assert.is_false(support.alive(dpid))
  end)

  it("children die with a parent killed by SIGKILL", function()
    local out = support.shell(support.lmp_bin .. [[ -e '
      local p = lmp.Process(function() lmp.sleep(60) end); p:start()
      io.write(p.pid, "\n"); io.flush()
      os.execute("kill -9 " .. lmp.current_process().pid)' ]])
    local pid = out:match("(%d+)")
    assert.is_not_nil(pid)
    local t0 = lmp.time()
    while support.alive(pid) and lmp.time() - t0 < 2 do lmp.sleep(0.02) end
    assert.is_false(support.alive(pid))
  end)

  it("gives current_process and parent_process in the root", function()
    local me = lmp.current_process()
    assert.are.equal("MainProcess", me.name)
    assert.is_number(me.pid)
    assert.is_nil(lmp.parent_process())
  end)

  it("says the process limit was reached when start cannot fork", function()
    local out, code = support.run_at_process_limit([[
      for _ = 1, 64 do lmp.Process(function() lmp.sleep(30) end):start() end
      print("started them all")
    ]], 2)
    if not out then return pending("cannot run under a process limit: " .. code) end
    assert.are.equal(1, code, out)
    assert.matches("start: cannot start a process: process limit reached (ulimit -u)", out, 1, true)
  end)

  it("leaks no globals", function()
    assert.are.same({}, support.new_globals())
  end)
end)

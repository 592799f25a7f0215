local support = dofile("tests/support.lua")
local bin = support.lmp_bin

describe("the lmp command", function()
  it("runs a script with arguments in arg and ...", function()
    local out, code = support.run([[
      local lmp = require "lmp"
      print(select("#", ...), ..., arg[1], arg[2], type(arg[0]), type(lmp.Queue))
    ]], "one", "two")
    assert.are.equal(0, code)
    assert.are.equal("2\tone\tone\ttwo\tstring\tfunction\n", out) -- ... mid-list gives one value
  end)

  it("runs -e code with lmp available", function()
    local out = support.shell(bin .. [[ -e 'print(lmp.cpu_count() >= 1, require("lmp") == lmp)']])
    assert.are.equal("true\ttrue\n", out)
  end)

  it("prints its version and help", function()
    assert.matches("^lmp %d+%.%d+%.%d+ %(Lua 5%.4", support.shell(bin .. " --version"))
    assert.matches("usage: lmp", support.shell(bin .. " --help"))
  end)

  it("points --help at documentation that is there", function()
    local dir = support.shell(bin .. " --help"):match("\nDocumentation: (%S+)/ ")
    assert.is_not_nil(dir)
    for _, f in ipairs({"lua-api.md", "guide.md"}) do
      assert.is_true(support.shell("test -r " .. dir .. "/" .. f .. " && echo yes") == "yes\n", dir .. "/" .. f)
    end
  end)

  it("reports a script error with a traceback and exit status 1", function()
    local out, code = support.run("local function f() error('bad thing') end f()")
    assert.are.equal(1, code)
    assert.matches("bad thing", out)
    assert.matches("stack traceback", out)
  end)

  it("runs the worker subcommand, with its own usage and exit status", function()
    local out = support.shell(bin .. " worker; echo status $?")
    assert.matches("a broker URL is needed (an argument, --url-file or LMP_BROKER_URL)", out, 1, true)
    assert.matches("usage: lmp worker [URL]", out, 1, true)
    assert.matches("status 2", out)
    assert.matches("lmp worker [BROKER_URL]", support.shell(bin .. " --help"), 1, true)
  end)

  it("takes the worker's URL from --url-file or LMP_BROKER_URL", function()
    -- nothing listens on ports 1 and 2: the worker says where it tried
    local function tried(port)
      return "cannot reach the broker: Connection refused (redis at 127.0.0.1:" .. port .. ")\nstatus 1"
    end
    local env = "LMP_SECRET=s LMP_BROKER_URL=redis://127.0.0.1:2/0 "
    assert.matches(tried(2), support.shell(env .. bin .. " worker; echo status $?"), 1, true)
    -- the argument, then the file, come before the variable
    assert.matches(tried(1), support.shell(env .. bin .. " worker redis://127.0.0.1:1/0; echo status $?"), 1, true)
    local file = support.tmpfile("redis://127.0.0.1:1/0\nignored\n")
    assert.matches(tried(1), support.shell(env .. bin .. " worker --url-file " .. file .. "; echo status $?"), 1, true)
    local out = support.shell(env .. bin .. " worker redis://127.0.0.1:1/0 --url-file " .. file .. "; echo status $?")
    assert.matches("give the URL or --url-file, not both", out, 1, true)
    assert.matches("status 2", out)
    os.remove(file)
    out = support.shell(env .. bin .. " worker --url-file " .. file .. "; echo status $?")
    assert.matches("cannot read the URL file: " .. file .. ": No such file or directory", out, 1, true)
    assert.matches("status 2", out)
  end)

  it("says in the worker's help what --max-deliveries bounds", function()
    local help = support.shell(bin .. " worker --help")
    -- the entries the worker refuses; a task's own limit is its pool's
    assert.matches("--max-deliveries N     deliveries of an entry this worker refuses", help, 1, true)
    assert.matches("pool's max_deliveries instead", help, 1, true)
  end)

  it("says why a worker has no shared secret", function()
    local url = " redis://127.0.0.1:1/0"
    local out = support.shell("LMP_SECRET= " .. bin .. " worker" .. url .. "; echo status $?")
    assert.matches("no shared secret: set LMP_SECRET or give --secret-file\nstatus 2", out, 1, true)
    local missing = os.tmpname()
    os.remove(missing)
    out = support.shell(bin .. " worker" .. url .. " --secret-file " .. missing .. "; echo status $?")
    assert.matches("cannot read the secret file: " .. missing .. ": No such file or directory\nstatus 2", out, 1, true)
    local empty = support.tmpfile("")
    out = support.shell(bin .. " worker" .. url .. " --secret-file " .. empty .. "; echo status $?")
    os.remove(empty)
    assert.matches("no shared secret: the secret file " .. empty .. " is empty\nstatus 2", out, 1, true)
  end)

  it("runs the top subcommand, which --help mentions", function()
    assert.matches("lmp top %[PID%] %[%-%-once%]", support.shell(bin .. " --help"))
    assert.matches("PID%s+POOLS%s+WORKERS%s+COMMAND", support.shell(bin .. " top"))
    assert.matches("status 2", support.shell(bin .. " top --nope; echo status $?"))
  end)

  it("keeps every block's contents through churn of small and large blocks", function()
    -- The executable's allocator reuses the small blocks Lua frees; strings
    -- and tables of every size around its classes must read back intact
    -- after rounds of growth, shrinking and collection, in a child too.
    local out, code = support.run([[
      local lmp = require "lmp"
      local function churn(seed)
        local keep = {}
        for round = 1, 30 do
          local t = {}
          for n = 1, 300 do
            t[n] = string.rep(string.char(65 + (n + round + seed) % 26), n)
            local a = {}
            for i = 1, n % 40 do a[i] = i * round end
            t[-n] = a
          end
          for n = 1, 300, 7 do t[n], t[-n] = nil, nil end
          collectgarbage()
          for n = 1, 300 do
            local s, a = t[n], t[-n]
            if s and s ~= string.rep(string.char(65 + (n + round + seed) % 26), n) then return "string " .. n end
            for i = 1, a and n % 40 or 0 do
              if a[i] ~= i * round then return "table " .. n end
            end
          end
          keep[round % 3] = t
        end
        return "intact"
      end
      local p = lmp.Process(function() os.exit(churn(1) == "intact" and 0 or 3) end)
      p:start(); p:join()
      print(churn(0), p.exitcode)
      warn("not shown"); warn("@on"); warn("still ", "warns"); warn("@off"); warn("not shown")
    ]])
    assert.are.equal(0, code)
    assert.are.equal("intact\t0\nLua warning: still warns\n", out)
  end)

  it("exits with the status os.exit gives", function()
    assert.matches("status 3", support.shell(bin .. " -e 'os.exit(3)'; echo status $?"))
  end)

  it("rejects an unknown option", function()
    local out = support.shell(bin .. " --bogus; echo status $?")
    assert.matches("unrecognized option '%-%-bogus'", out)
    assert.matches("status 1", out)
  end)

  it("has a REPL that evaluates expressions", function()
    local out = support.shell("printf 'return 1 + 1\\nlmp.cpu_count() > 0\\nfor i = 1, 2 do\\nprint(i)\\nend\\n' | " .. bin)
    assert.matches("lmp> 2\n", out)
    assert.matches("lmp> true\n", out)
    assert.matches("1\n2\n", out)
  end)

  it("loads as a module in plain lua5.4 from the build tree", function()
    local out = support.shell([[lua5.4 -e 'package.cpath="]] .. support.build ..
      [[/?.so;"..package.cpath; local lmp = require "lmp"; print(lmp._VERSION)']])
    assert.matches("^lmp %d", out)
  end)
end)

-- ^C at a terminal: the script below prints "pid N" then a step name, then
-- blocks; the spec waits until it sleeps in that call and types ^C.
local interrupted_script = [[
local lmp = require "lmp"
local function report(tag, ok, e)
  print(tag, ok, lmp.is_error(e) and "lmp.Error " .. e.kind or tostring(e))
end
local q = lmp.Queue()
print("pid", lmp.current_process().pid, tostring(q))
print("step get")
report("get", pcall(function()
  local c <close> = setmetatable({}, {__close = function() print("closed") end})
  return q:get()
end))
print("step sleep")
report("sleep", pcall(lmp.sleep, math.huge))
print("step put")
local full = lmp.Queue(1)
full:put(1)
report("put", pcall(full.put, full, 2))
local l = lmp.Lock()
local pool = lmp.Pool(1) -- its worker ignores ^C and keeps the lock
pool:apply_async(function(lock) lock:acquire() lmp.sleep(math.huge) end, {l})
while l:acquire(0) do l:release() lmp.sleep(0.01) end
print("step lock")
report("lock", pcall(l.acquire, l))
pool:terminate()
print("step barrier")
local b = lmp.Barrier(2)
report("barrier", pcall(b.wait, b))
print("barrier broken", b.broken)
print("step loop")
report("loop", pcall(function() while true do end end))
local p = lmp.Process(function() lmp.sleep(math.huge) end)
p:start()
print("step join", p.pid)
report("join", pcall(p.join, p))
p:join()
print("child exitcode", p.exitcode)
print("step last")
q:get()
print("not reached")
]]

describe("^C in a script run by the lmp command", function()
  -- Steps whose call is interrupted (not ended by the child's death).
  local function step(s, pid, name)
    s:expect("step " .. name)
    assert.is_truthy(support.blocked(pid), name)
    s:send("\3")
  end

  it("raises an lmp.Error of kind interrupted from the blocking call, which pcall catches", function()
    local path = support.tmpfile(interrupted_script)
    local s = support.pty(bin .. " " .. path)
    local pid = tonumber(s:match("step get", "pid\t(%d+)"))
    local seg = s:output():match("(/lmp[^,)]+)"):sub(2)
    assert.is_truthy(support.blocked(pid))
    s:send("\3")
    s:expect("closed")
    s:expect("get\tfalse\tlmp.Error interrupted")
    step(s, pid, "sleep")
    s:expect("sleep\tfalse\tlmp.Error interrupted")
    step(s, pid, "put")
    s:expect("put\tfalse\tlmp.Error interrupted")
    step(s, pid, "lock")
    s:expect("lock\tfalse\tlmp.Error interrupted")
    step(s, pid, "barrier")
    s:expect("barrier\tfalse\tlmp.Error interrupted")
    s:expect("barrier broken\ttrue")
    s:expect("step loop")
    s:send("\3")
    s:expect("loop\tfalse\t")
    s:expect("interrupted!")
    -- ^C reaches the whole group: the child takes its default action, and
    -- join raises (as "interrupted", or "interrupted!" just after it).
    s:expect("step join\t")
    local child = tonumber(s:match("\n", "^(%d+)"))
    assert.is_truthy(support.blocked(pid))
    s:send("\3")
    s:expect("join\tfalse\t")
    s:expect("interrupted")
    s:expect("child exitcode\t-2")
    step(s, pid, "last")
    local code = s:close()
    assert.are.equal(130, code, s.transcript)
    assert.matches("lmp%.Error%(interrupted%): interrupted\nstack traceback", s.transcript)
    assert.is_nil(s.transcript:find("not reached", 1, true))
    assert.is_false(support.alive(child))
    assert.is_false(support.shm_exists(seg))
    os.remove(path)
  end)

  it("runs in plain lua5.4 too, where the interpreter's own handler asks", function()
    local path = support.tmpfile([[
      package.cpath = "]] .. support.build .. [[/?.so;" .. package.cpath
      local lmp = require "lmp"
      print("pid", lmp.current_process().pid)
      local q = lmp.Queue()
      local ok, e = pcall(q.get, q)
      print("get", ok, lmp.is_error(e) and e.kind)
    ]])
    local s = support.pty("lua5.4 " .. path)
    local pid = tonumber(s:match("\n", "pid\t(%d+)"))
    assert.is_truthy(support.blocked(pid))
    s:send("\3")
    s:expect("get\tfalse\tinterrupted")
    assert.are.equal(0, s:close())
    os.remove(path)
  end)
end)

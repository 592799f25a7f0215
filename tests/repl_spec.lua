-- The REPL of the lmp command: through a pipe, through a pseudo-terminal
-- (util-linux `script`), and its printer and completer on their own.
local support = dofile("tests/support.lua")
local lmp = require "lmp"
local repl = require "lmp.repl"

local bin = support.lmp_bin

local function piped(input)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(input)
  f:close()
  local out = support.shell(bin .. " < " .. path)
  os.remove(path)
  return out
end

local function session(env)
  return support.pty(bin, env)
end

describe("the REPL through a pipe", function()
  it("prints expressions, statements' output and readable tables", function()
    local out = piped([[
return 1 + 1
=2^10
"text", nil, 3
for i = 1, 2 do
  print(i)
end
{1, 2, x = {y = "s\n"}, [true] = 3}
local t = {} t.self = t return t
]])
    assert.matches("lmp> 2\n", out, 1, true)
    assert.matches("lmp> 1024.0\n", out, 1, true)
    assert.matches("lmp> text\tnil\t3\n", out, 1, true)
    assert.matches("1\n2\n", out, 1, true)
    assert.matches('{1, 2, [true] = 3, x = {y = "s\\n"}}', out, 1, true)
    assert.matches("{self = <cycle>}", out, 1, true)
  end)

  it("reports errors with a traceback of the chunk only, and goes on", function()
    local out = piped('local function f() error("oops") end f()\nnil + 1\n"still here"\n')
    assert.matches("stdin:1: oops", out, 1, true)
    assert.matches("stack traceback:", out, 1, true)
    assert.matches("in local 'f'", out, 1, true)
    assert.is_nil(out:find("repl.lua", 1, true))
    assert.matches("attempt to perform arithmetic on a nil value", out, 1, true)
    assert.matches("still here", out, 1, true)
  end)

  it("ends at the end of input like a program: children are joined", function()
    local out = piped([[
q = lmp.Queue()
p = lmp.Process(function() lmp.sleep(0.2); io.write("child done\n") end)
p:start()
]])
    assert.matches("child done", out, 1, true)
  end)
end)

describe("the REPL on a terminal", function()
  local hist

  before_each(function()
    hist = os.tmpname()
    os.remove(hist)
  end)

  after_each(function() os.remove(hist) end)

  it("evaluates, completes with tab, keeps history across sessions", function()
    local s = session("LMP_HISTORY=" .. hist)
    s:expect("ctrl-d to quit")
    s:expect("lmp> ")
    s:send("x = 40 + 2\n")
    s:expect("lmp> ")
    s:send("x\n")
    s:expect("42")
    s:send("lmp.cpu_co\t\n")           -- completes to lmp.cpu_count
    s:expect("lmp.cpu_count")
    s:expect("function:")
    s:send("string.upp\t('a')\n")      -- a table path
    s:expect("A")
    s:send("q = lmp.Queue() q:put(5)\n")
    s:expect("lmp> ")
    s:send("q:ge\t()\n")               -- methods of a userdata
    s:expect("5")
    s:send("\4")
    s:close()
    local f = assert(io.open(hist))
    local text = f:read("a")
    f:close()
    assert.matches("x = 40 + 2\n", text, 1, true)
    assert.matches("lmp.cpu_count\n", text, 1, true)
    -- the next session recalls the last line with the up arrow
    s = session("LMP_HISTORY=" .. hist)
    s:expect("lmp> ")
    s:send("\27[A\n")
    s:expect("q:get()")
    s:send("\4")
    s:close()
  end)

  it("continues incomplete chunks, and ^C drops a line or stops running code", function()
    local s = session("LMP_HISTORY=" .. hist)
    s:expect("lmp> ")
    s:send("function sq(n)\n")
    s:expect("...> ")
    s:send("return n * n\n")
    s:expect("...> ")
    s:send("end\n")
    s:expect("lmp> ")
    s:send("sq(12)\n")
    s:expect("144")
    s:send("abandoned line\3")
    s:expect("lmp> ")
    s:send("while true do end\n")
    lmp.sleep(0.2)
    s:send("\3")
    s:expect("interrupted!")
    s:send("'alive'\n")
    s:expect("alive")
    s:send("\4")
    s:close()
  end)

  it("recalls a multi-line chunk as one history entry, in the session and the next", function()
    local s = session("LMP_HISTORY=" .. hist)
    s:expect("lmp> ")
    s:send("do\n")
    s:expect("...> ")
    s:send("n = (n or 0) + 1\n")
    s:expect("...> ")
    s:send("print('n=' .. n)\n")
    s:expect("...> ")
    s:send("end\n")
    s:expect("n=1")
    s:expect("lmp> ")
    s:send("\27[A\n") -- the whole chunk again
    s:expect("n=2")
    s:expect("lmp> ")
    s:send("\4")
    s:close()
    s = session("LMP_HISTORY=" .. hist)
    s:expect("lmp> ")
    s:send("\27[A\n")
    s:expect("n=1")
    s:expect("lmp> ")
    s:send("\4")
    s:close()
  end)

  it("prints a table raised by a task, without lmp's own frames", function()
    local s = session("LMP_HISTORY=" .. hist)
    s:expect("lmp> ")
    s:send("pool = lmp.Pool(1)\n")
    s:expect("lmp> ")
    s:send("pool:apply(function() error({code = 7}) end)\n")
    s:expect("remote stack traceback")
    s:expect("lmp> ")
    s:send("\4")
    s:close()
    local out = s.transcript
    assert.matches("lmp%.Error%(task, pid %d+%): {code = 7}\n", out)
    assert.is_nil(out:find("error object is a table", 1, true), out)
    assert.is_nil(out:find("scripts/lmp", 1, true), out)
    assert.is_nil(out:find("lmp/result.lua", 1, true), out)
  end)

  it("interrupts a long pool:map on ^C and stops its work: the next map runs at once", function()
    local s = session("LMP_HISTORY=" .. hist)
    s:expect("lmp> ")
    s:send("pool = lmp.Pool(1) pool:map(function(x) return x end, {1}) print('pid', lmp.current_process().pid, pool:stats().workers[1].pid)\n")
    s:expect("pid\t")
    local pid, worker = s:match("\n", "^(%d+)\t(%d+)")
    s:expect("lmp> ")
    s:send("pool:map(function(x) print('run' .. 'ning') io.stdout:flush() lmp.sleep(x) end, {3600, 3600, 3600}, 1)\n")
    s:expect("running")
    assert.is_truthy(support.blocked(pid))
    s:send("\3")
    s:expect("lmp.Error(interrupted): interrupted")
    s:expect("lmp> ")
    -- The worker running the map was replaced; the chunks left were dropped.
    s:send("print('next', pool:map(function(x) return x * 2 end, {21})[1], pool:stats().workers[1].pid)\n")
    s:expect("next\t42\t")
    local now = s:match("\n", "^(%d+)")
    assert.are_not.equal(worker, now)
    s:expect("lmp> ")
    s:send("\4")
    s:close()
    assert.is_nil(s.transcript:find("running\nrunning", 1, true))
  end)

  it("terminates running children on ^D", function()
    local s = session("LMP_HISTORY=" .. hist)
    s:expect("lmp> ")
    s:send("p = lmp.Process(function() lmp.sleep(60) end) p:start() print('pid', p.pid)\n")
    local pid = s:expect("pid\t") and s:expect("\n")
    local out = s:output()
    pid = out:match("pid\t(%d+)")
    assert.is_not_nil(pid)
    assert.is_true(support.alive(pid))
    s:send("\4")
    s:close()
    assert.is_false(support.alive(pid))
  end)
end)

describe("the REPL's printer", function()
  local show = repl.show

  it("prints scalars as lua does and strings inside tables quoted", function()
    assert.are.equal("42", show(42))
    assert.are.equal("1.5", show(1.5))
    assert.are.equal("nil", show(nil))
    assert.are.equal("raw text", show("raw text"))
    assert.are.equal('{"a\\tb"}', show({"a\tb"}))
  end)

  it("sorts keys, writes identifiers bare and the rest in brackets", function()
    assert.are.equal('{10, 20, a = 1, b = 2, ["not ident"] = 3}', show({10, 20, b = 2, a = 1, ["not ident"] = 3}))
    assert.are.equal("{}", show({}))
  end)

  it("marks cycles, limits depth and length, breaks long tables over lines", function()
    local t = {}
    t.me = t
    assert.are.equal("{me = <cycle>}", show(t))
    assert.are.equal("{{{{{...}}}}}", show({{{{{{}}}}}}))
    local long = {}
    for i = 1, 200 do long[i] = i end
    local s = show(long)
    assert.matches("\n  1,\n  2,", s, 1, true)
    assert.matches("100,\n  ...\n}$", s)
    local shared = {1}
    assert.are.equal("{{1}, {1}}", show({shared, shared})) -- shared is not a cycle
  end)

  it("uses __tostring when a value has one", function()
    local v = setmetatable({}, {__tostring = function() return "<thing>" end})
    assert.are.equal("<thing>", show(v))
    assert.are.equal("{<thing>}", show({v}))
    assert.matches("^lmp%.Queue", show(lmp.Queue()))
  end)
end)

describe("the REPL's completer", function()
  local complete = repl.complete

  it("completes globals and keywords", function()
    assert.are.same({"print"}, complete("prin"))
    assert.are.same({"function"}, complete("functio"))
    local all = complete("")
    assert.is_true(#all > 20)
  end)

  it("completes fields of any table path, and methods after ':'", function()
    rawset(_G, "lmp", lmp) -- a global in the lmp command
    finally(function() rawset(_G, "lmp", nil); rawset(_G, "REPL_TEST_Q", nil) end)
    assert.are.same({"lmp.cpu_count"}, complete("lmp.cpu_"))
    assert.are.same({"string.upper"}, complete("string.upp"))
    rawset(_G, "REPL_TEST_Q", lmp.Queue())
    local ms = complete("REPL_TEST_Q:ge")
    rawset(_G, "REPL_TEST_Q", nil)
    assert.are.same({"REPL_TEST_Q:get", "REPL_TEST_Q:get_nowait"}, ms)
    assert.are.same({}, complete("no_such_table.x"))
    local s = complete("lmp.")
    local names = {}
    for _, v in ipairs(s) do names[v] = true end
    assert.is_true(names["lmp.Process"] and names["lmp.Queue"] and names["lmp.get_context"])
  end)

  it("hides names starting with '_' until the word does", function()
    rawset(_G, "lmp", lmp)
    finally(function() rawset(_G, "lmp", nil) end)
    for _, c in ipairs(complete("lmp.")) do assert.is_nil(c:match("^lmp%._"), c) end
    assert.are.same({"lmp._pool_worker"}, complete("lmp._pool_w"))
    for _, c in ipairs(complete("")) do assert.is_nil(c:match("^_"), c) end
    local g = complete("_")
    assert.is_true(#g > 0)
  end)

  it("leaks no globals", function()
    assert.are.same({}, support.new_globals())
  end)
end)

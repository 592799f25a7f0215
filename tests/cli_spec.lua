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
    assert.matches("a broker URL is needed", out)
    assert.matches("usage: lmp worker URL", out)
    assert.matches("status 2", out)
    assert.matches("lmp worker BROKER_URL", support.shell(bin .. " --help"))
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

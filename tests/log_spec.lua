-- Logging across processes: lmp.log_to_stderr, lmp.get_logger, handlers.
local support = dofile("tests/support.lua")
local lmp = require "lmp"

local LINE = "^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d%.%d%d%d %[(%u+)/([%w%-]+) (%d+)%] (.*)$"

local lines = support.lines

describe("lmp.get_logger", function()
  local log = lmp.get_logger()
  local got
  local h

  before_each(function()
    got = {}
    h = log:add_handler(function(rec) got[#got + 1] = rec end)
    log:set_level("debug")
  end)

  after_each(function()
    log:remove_handler(h)
    log:set_level(nil)
  end)

  it("gives one root logger and named ones that pass records to it", function()
    assert.are.equal(log, lmp.get_logger())
    assert.are.equal(log, lmp.get_logger("lmp"))
    local named = lmp.get_logger("db")
    assert.are.equal(named, lmp.get_logger("db"))
    named:info("connected to %s", "x")
    assert.are.equal(1, #got)
    assert.are.equal("db", got[1].name)
    assert.are.equal("connected to x", got[1].message)
    assert.matches("%] db: connected to x\n$", got[1].line)
    assert.matches("lmp.Logger%(db%)", tostring(named))
  end)

  it("makes records with level, time, process name and pid", function()
    log:warning("careful")
    local r = got[1]
    assert.are.equal(30, r.level)
    assert.are.equal("WARNING", r.levelname)
    assert.are.equal("MainProcess", r.process)
    assert.are.equal(lmp.current_process().pid, r.pid)
    assert.is_true(math.abs(r.time - os.time()) < 5)
    local level, name, pid, msg = r.line:gsub("\n$", ""):match(LINE)
    assert.are.same({"WARNING", "MainProcess", tostring(r.pid), "careful"}, {level, name, pid, msg})
  end)

  it("filters by the logger's level, then by the handler's", function()
    log:set_level("warning")
    log:info("dropped")
    log:error("kept")
    assert.are.equal(1, #got)
    assert.is_false(log:is_enabled_for("info"))
    assert.is_true(log:is_enabled_for(40))
    log:set_level(10)
    assert.are.equal(10, log:get_level())
    local only_errors = {}
    local h2 = log:add_handler(function(rec) only_errors[#only_errors + 1] = rec.message end, "error")
    log:info("a"); log:critical("b")
    log:remove_handler(h2)
    assert.are.same({"b"}, only_errors)
    -- a named logger without a level of its own takes the root's
    local named = lmp.get_logger("inherits")
    assert.are.equal(10, named:get_level())
    named:set_level("error")
    named:warning("no")
    assert.are.equal(40, named:get_level())
  end)

  it("formats like string.format, and never raises for a bad format", function()
    log:info("%d items in %.1fs", 3, 0.25)
    log:info("%d", "not a number")
    log:info({})
    assert.are.equal("3 items in 0.2s", got[1].message)
    assert.are.equal("%d not a number", got[2].message)
    assert.matches("^table: ", got[3].message)
  end)

  it("keeps going when a handler fails", function()
    local h2 = log:add_handler(function() error("handler bug") end)
    log:info("still logged")
    log:remove_handler(h2)
    assert.are.equal("still logged", got[1].message)
  end)

  it("rejects bad levels and handlers", function()
    assert.has_error(function() log:set_level("loud") end, "bad argument #1 to 'set_level' (unknown level 'loud')")
    assert.has_error(function() log:add_handler(42) end)
    assert.has_error(function() lmp.get_logger(42) end,
      "bad argument #1 to 'get_logger' (string expected, got number)")
    -- open(2) would cut the path short at the NUL byte and write elsewhere
    assert.has_error(function() log:add_handler(os.tmpname() .. "\0.log") end,
      "bad argument #1 to 'add_handler' (file path contains a NUL byte)")
  end)

  for _, method in ipairs(lmp.get_all_start_methods()) do
    it("gets the records of " .. method .. " children through one channel", function()
      local ps = {}
      for i = 1, 3 do
        ps[i] = lmp.Process{target = function()
          lmp.get_logger():info("child %d", i)
          lmp.get_logger("sub"):debug("named %d", i)
        end, start_method = method, name = "c" .. i}
        ps[i]:start()
      end
      for _, p in ipairs(ps) do assert.is_true(p:join(10)) end
      log:flush()
      local seen = {}
      for _, r in ipairs(got) do seen[#seen + 1] = r.process .. " " .. r.name .. " " .. r.message end
      table.sort(seen)
      assert.are.same({"c1 lmp child 1", "c1 sub named 1", "c2 lmp child 2", "c2 sub named 2",
                       "c3 lmp child 3", "c3 sub named 3"}, seen)
    end)
  end
end)

describe("lmp.log_to_stderr", function()
  it("writes whole lines from every process, never interleaved", function()
    -- stderr is a pipe here: 4 processes x 100 lines of 3000 bytes, each
    -- one write below PIPE_BUF.
    local out, code = support.run([[
      local lmp = require "lmp"
      local log = lmp.log_to_stderr("info")
      assert(lmp.log_to_stderr() == log)   -- once, however often called
      local ps = {}
      for i, m in ipairs({"fork", "spawn", "forkserver", "fork"}) do
        ps[i] = lmp.Process{target = function()
          for j = 1, 100 do lmp.get_logger():info("%d %d %s", i, j, string.rep("x", 3000)) end
        end, start_method = m}
        ps[i]:start()
      end
      for _, p in ipairs(ps) do p:join() end
      log:debug("not shown")
    ]])
    assert.are.equal(0, code, out:sub(1, 500))
    local n = 0
    for _, l in ipairs(lines(out)) do
      local level, name, pid, msg = l:match(LINE)
      assert.are.equal("INFO", level, l:sub(1, 200))
      assert.matches("^Process%-%d$", name)
      assert.matches("^%d %d+ x+$", msg)
      assert.are.equal(3000, #msg:match("x+$"))
      n = n + 1
    end
    assert.are.equal(400, n)
  end)

  it("prints warnings with no handler at all, as a last resort", function()
    local out = support.run([[
      local lmp = require "lmp"
      lmp.get_logger():info("quiet")
      lmp.get_logger():warning("loud")
    ]])
    assert.is_nil(out:find("quiet", 1, true))
    assert.matches("%[WARNING/MainProcess %d+%] loud", out)
  end)
end)

describe("logging handlers", function()
  it("appends to a file from every process", function()
    local path = os.tmpname()
    local out, code = support.run(string.format([[
      local lmp = require "lmp"
      local log = lmp.get_logger()
      log:set_level("debug")
      log:add_handler(%q)
      local ps = {}
      for i, m in ipairs({"fork", "spawn", "forkserver"}) do
        ps[i] = lmp.Process{target = function()
          for j = 1, 50 do lmp.get_logger():debug("line %%d %%d", i, j) end
        end, start_method = m}
        ps[i]:start()
      end
      for _, p in ipairs(ps) do p:join() end
    ]], path))
    assert.are.equal(0, code, out)
    local f = assert(io.open(path))
    local text = f:read("a")
    f:close()
    os.remove(path)
    local n = 0
    for _, l in ipairs(lines(text)) do
      assert.matches("%[DEBUG/Process%-%d %d+%] line %d %d+$", l)
      n = n + 1
    end
    assert.are.equal(150, n)
  end)

  it("runs a function handler for records still queued when the program ends", function()
    local out, code = support.run([[
      local lmp = require "lmp"
      local log = lmp.get_logger()
      local n = 0
      log:add_handler(function(rec) n = n + 1; io.write("got ", rec.process, " ", rec.message, "\n") end)
      for i = 1, 2 do
        lmp.Process{target = function() lmp.sleep(0.2); lmp.get_logger():error("late %d", i) end,
                    name = "w" .. i}:start()
      end
      -- no join, no flush: the program ends, its children are joined, the
      -- records reach the handler
    ]])
    assert.are.equal(0, code, out)
    assert.matches("got w1 late 1", out)
    assert.matches("got w2 late 2", out)
  end)

  it("runs the example examples/logging.lua", function()
    local out = support.shell(support.lmp_bin .. " examples/logging.lua 2>/dev/null")
    assert.are.equal("MainProcess\t1\nProcess-1\t2\nProcess-2\t2\nProcess-3\t2\n", out)
    local err = support.shell(support.lmp_bin .. " examples/logging.lua 2>&1 >/dev/null")
    assert.matches("%[INFO/Process%-2 %d+%] worker: Worker started task: 2", err)
    assert.matches("%[INFO/MainProcess %d+%] starting 3 workers", err)
  end)

  it("leaks no globals", function()
    assert.are.same({}, support.new_globals())
  end)
end)

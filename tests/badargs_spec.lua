-- Every public function and method, walked with bad arguments: wrong types,
-- negative sizes, NaN and infinite timeouts, huge counts, bad self, a
-- closed object.  Each call must return or raise a clean error (the
-- standard "bad argument", "calling '...' on bad self", an lmp.Error, or a
-- deliberate message), never an error Lua raised inside lmp, never a crash
-- or a hang; the program must still work afterwards.  The walk itself is
-- tests/badargs_walk.lua, one family per process, under a timeout, so a
-- crash or a hang fails that family and names the call.  An argument error
-- must carry the position of the call, as lauxlib's do, from functions
-- written in Lua too.
local support = dofile("tests/support.lua")

local function families()
  local p = io.popen(support.lmp_bin .. " tests/badargs_walk.lua list")
  local out = {}
  for line in p:lines() do out[#out + 1] = line end
  p:close()
  return out
end

local function walk(family)
  local p = io.popen(string.format("timeout -k 5 120 %s tests/badargs_walk.lua '%s' 2>&1; echo \"::exit $?\"",
    support.lmp_bin, family))
  local out = p:read("a")
  p:close()
  return out, tonumber(out:match("::exit (%d+)%s*$"))
end

describe("bad arguments", function()
  local list = families()

  it("reach every family of objects", function()
    assert.is_true(#list >= 25, table.concat(list, ", "))
  end)

  for _, family in ipairs(list) do
    it(family .. ": clean errors, no crash, no hang, and the program still works", function()
      local out, code = walk(family)
      local last = nil
      for line in out:gmatch("CALL ([^\n]*)") do last = line end
      assert.are.equal(0, code, "exit " .. tostring(code) .. " after " .. tostring(last) .. "\n"
        .. out:gsub("CALL [^\n]*\n", ""):sub(1, 2000))
      assert.matches("WALKED %d+", out)
      assert.matches("\nALIVE", out)
      local unclean = {}
      for line in out:gmatch("UNCLEAN ([^\n]*)") do unclean[#unclean + 1] = line end
      assert.are.same({}, unclean)
      -- Argument errors carry the caller's file:line, whether the function
      -- is written in C or in Lua.
      local unplaced = {}
      for line in out:gmatch("UNPLACED ([^\n]*)") do unplaced[#unplaced + 1] = line end
      assert.are.same({}, {table.unpack(unplaced, 1, 5)})
    end)
  end
end)

-- Every object used after close() (or after leaving its <close> scope)
-- raises one message, as Lua's io library does for a closed file.  (A
-- Lock's, Semaphore's or Condition's <close> releases it: they stay usable.)
describe("a closed object", function()
  local lmp = require "lmp"
  local function closed(o)
    getmetatable(o).__close(o)
    return o
  end
  local cases = {
    {"Value", function() return lmp.Value("int64", 1) end, "get_value"},
    {"RawValue", function() return lmp.RawValue("double", 1) end, "get_value"},
    {"Array", function() return lmp.Array("int32", {1, 2}) end, "totable"},
    {"RawArray", function() return lmp.RawArray("uint8", 4) end, "totable"},
    {"SharedMemory", function() return lmp.SharedMemory{size = 64} end, "read"},
    {"SharedMemory view", function() return lmp.SharedMemory{size = 64}:array("int32") end, "totable"},
    {"Dict", function() return lmp.Dict() end, "len"},
    {"List", function() return lmp.List() end, "len"},
    {"Event", function() return lmp.Event() end, "is_set"},
    {"Barrier", function() return lmp.Barrier(1) end, "wait"},
    {"Pipe end", function() return (lmp.Pipe()) end, "recv"},
    {"Process", function()
      local p = lmp.Process(function() end)
      p:start()
      p:join()
      return p
    end, "join"},
  }
  for _, case in ipairs(cases) do
    it(case[1] .. ": attempt to use a closed <type>", function()
      local o = case[2]()
      local name = getmetatable(o).__name
      closed(o)
      local ok, err = pcall(function() return o[case[3]](o) end)
      assert.is_false(ok)
      assert.are.equal("attempt to use a closed " .. name, tostring(err):gsub("^[^\n]-:%d+: ", ""))
    end)
  end
  -- close() itself, for the kinds whose <close> does something else or
  -- that are written in Lua.
  local by_close = {
    {"Lock", lmp.Lock, "acquire"}, {"RLock", lmp.RLock, "acquire"},
    {"Semaphore", lmp.Semaphore, "acquire"}, {"BoundedSemaphore", lmp.BoundedSemaphore, "acquire"},
    {"Condition", lmp.Condition, "acquire"},
    {"ValueLock", function() return lmp.Value("int64", 1):get_lock() end, "acquire"},
    {"Executor", function() return lmp.Executor(1) end, "stats", "lmp.Executor"},
    {"Manager", lmp.Manager, "dict", "lmp.Manager"},
  }
  for _, case in ipairs(by_close) do
    it(case[1] .. ": close(), then attempt to use a closed <type>", function()
      local o = case[2]()
      local name = case[4] or getmetatable(o).__name
      o:close()
      o:close()
      local ok, err = pcall(function() return o[case[3]](o) end)
      assert.is_false(ok)
      assert.are.equal("attempt to use a closed " .. name, tostring(err):gsub("^[^\n]-:%d+: ", ""))
    end)
  end
  it("Namespace: attempt to use a closed lmp.Namespace", function()
    local ns = closed(lmp.Namespace())
    assert.has_error(function() return ns.x end, "attempt to use a closed lmp.Namespace")
  end)
end)

-- An argument error names the caller's file and line, whether the
-- function is written in C (lauxlib's luaL_where) or in Lua.
describe("the position of an argument error", function()
  local lmp = require "lmp"
  local calls = {
    {"Queue", function() lmp.Queue("x") end}, -- written in C
    {"Pool", function() lmp.Pool("x") end},
    {"Pool", function() lmp.get_context("spawn").Pool(1, 5) end},
    {"Executor", function() lmp.Executor("x") end},
    {"Manager", function() lmp.Manager(1) end},
    {"dict", function() lmp.Manager():dict(5) end},
    {"get_logger", function() lmp.get_logger(5) end},
    {"log_to_stderr", function() lmp.log_to_stderr("loud") end},
    {"as_completed", function() lmp.as_completed(5) end},
  }
  for _, case in ipairs(calls) do
    it("is the caller's, for " .. case[1], function()
      local line = debug.getinfo(case[2], "S").linedefined
      local ok, err = pcall(case[2])
      assert.is_false(ok)
      assert.matches("^tests/badargs_spec%.lua:" .. line .. ": bad argument #%d+ to '" .. case[1] .. "'", err)
    end)
  end
  it("is none when the caller is pcall itself, as for a C function", function()
    assert.matches("^bad argument #1 to '[%w.]*Queue'", select(2, pcall(lmp.Queue, "x")))
    assert.matches("^bad argument #1 to 'Pool'", select(2, pcall(lmp.Pool, "x")))
  end)
end)

describe("leaked globals", function()
  it("none", function() assert.are.same({}, support.new_globals()) end)
end)

-- Every public function and method, walked with bad arguments: wrong types,
-- negative sizes, NaN and infinite timeouts, huge counts, bad self, a
-- closed object.  Each call must return or raise a clean error (the
-- standard "bad argument", "calling '...' on bad self", an lmp.Error, or a
-- deliberate message), never an error Lua raised inside lmp, never a crash
-- or a hang; the program must still work afterwards.  The walk itself is
-- tests/badargs_walk.lua, one family per process, under a timeout, so a
-- crash or a hang fails that family and names the call.
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
    end)
  end
end)

describe("leaked globals", function()
  it("none", function() assert.are.same({}, support.new_globals()) end)
end)

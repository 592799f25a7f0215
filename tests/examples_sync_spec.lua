local support = dofile("tests/support.lua")

local function run(script, args)
  local out = support.shell(string.format("%s %s %s; echo \"::exit $?\"", support.lmp_bin, script, args or ""))
  return out:gsub("::exit (%d+)%s*$", ""), tonumber(out:match("::exit (%d+)%s*$"))
end

describe("synchronization examples", function()
  it("barrier_phases.lua keeps every worker in step", function()
    local out, code = run("examples/barrier_phases.lua", "3 4")
    assert.are.equal(0, code, out)
    local expected = {}
    for phase = 1, 4 do
      expected[phase] = string.format("phase %d: workers 1 2 3 done, barrier passed", phase)
    end
    expected[5] = "all 4 phases kept in step"
    assert.are.equal(table.concat(expected, "\n") .. "\n", out)
  end)

  it("lock_hello.lua prints ten whole lines", function()
    local out, code = run("examples/lock_hello.lua")
    assert.are.equal(0, code, out)
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
    table.sort(lines)
    local expected = {}
    for i = 0, 9 do expected[#expected + 1] = "hello world\t" .. i end
    assert.are.same(expected, lines)
  end)
end)

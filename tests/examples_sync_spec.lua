local support = dofile("tests/support.lua")

-- Runs an example with the lmp executable and asserts it exits 0; its output.
local run_example = support.run_example

describe("synchronization examples", function()
  it("barrier_phases.lua keeps every worker in step", function()
    local out = run_example("examples/barrier_phases.lua", "3 4")
    local expected = {}
    for phase = 1, 4 do
      expected[phase] = string.format("phase %d: workers 1 2 3 done, barrier passed", phase)
    end
    expected[5] = "all 4 phases kept in step"
    assert.are.equal(table.concat(expected, "\n") .. "\n", out)
  end)

  it("lock_hello.lua prints ten whole lines", function()
    local out = run_example("examples/lock_hello.lua")
    local lines = support.lines(out)
    table.sort(lines)
    local expected = {}
    for i = 0, 9 do expected[#expected + 1] = "hello world\t" .. i end
    assert.are.same(expected, lines)
  end)
end)

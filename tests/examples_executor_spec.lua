local support = dofile("tests/support.lua")

-- Runs an example with the lmp executable and asserts it exits 0; its output.
local run_example = support.run_example

describe("executor examples", function()
  it("executor_as_completed.lua: every input once, the failure as its future's error", function()
    local out = run_example("examples/executor_as_completed.lua")
    local lines = support.lines(out)
    assert.are.equal(24, #lines, out)
    -- the first twenty come as the tasks complete: any order
    local streamed = {table.unpack(lines, 1, 20)}
    table.sort(streamed)
    local expected = {}
    for i = 0, 19 do
      expected[#expected + 1] = i == 13 and "Input 13 generated an exception: unlucky 13 (task)"
                                or string.format("%d squared is %d", i, i * i)
    end
    table.sort(expected)
    assert.are.same(expected, streamed)
    assert.are.same({
      "map: 1 4 9 16 25",
      "wait: 1 done (task), 1 still running",
      "then: slow",
      "executor shut down",
    }, {table.unpack(lines, 21)})
  end)
end)

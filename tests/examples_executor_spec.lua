local support = dofile("tests/support.lua")

local function run(script, args)
  local out = support.shell(string.format("%s %s %s; echo \"::exit $?\"", support.lmp_bin, script, args or ""))
  return out:gsub("::exit (%d+)%s*$", ""), tonumber(out:match("::exit (%d+)%s*$"))
end

describe("executor examples", function()
  it("executor_as_completed.lua: every input once, the failure as its future's error", function()
    local out, code = run("examples/executor_as_completed.lua")
    assert.are.equal(0, code, out)
    local lines = {}
    for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
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

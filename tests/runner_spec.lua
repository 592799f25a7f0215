-- tests/run.sh itself: what `make test` prints about skipped tests.
local support = dofile("tests/support.lua")

describe("tests/run.sh", function()
  it("gives each skip its name and reason, and lists them before the summary", function()
    local base = os.tmpname()
    os.remove(base)
    local spec = base .. "_spec.lua" -- busted runs only files named so
    local f = assert(io.open(spec, "w"))
    f:write([[
      describe("outer", function()
        it("needs a tool", function() return pending("the tool is not installed") end)
        pending("a whole group: no IPv6 here")
        it("passes", function() end)
      end)
    ]])
    f:close()
    -- LMP_REPORTS off: under make test-asan the run would add its own
    -- "reports" check to the count
    local out, code = support.shell_code("LMP_REPORTS= SPECS=" .. spec .. " sh tests/run.sh "
                                         .. support.build .. " lua")
    os.remove(spec)
    assert.are.equal(0, code, out)
    local lines = support.lines(out)
    assert.are.equal("1 passed, 0 failed, 2 skipped", lines[#lines])
    assert.are.equal("skipped:", lines[#lines - 3])
    assert.are.equal("  " .. spec .. ": outer needs a tool: the tool is not installed", lines[#lines - 2])
    assert.are.equal("  " .. spec .. ": outer a whole group: no IPv6 here", lines[#lines - 1])
  end)
end)

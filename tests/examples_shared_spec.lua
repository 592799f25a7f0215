local support = dofile("tests/support.lua")

-- Runs an example with the lmp executable and asserts it exits 0; its output.
local run_example = support.run_example

describe("shared-memory examples", function()
  it("shared_counter.lua ends at 200 with a lock and with add", function()
    local out = run_example("examples/shared_counter.lua")
    -- without a lock the count depends on scheduling: only its form is sure
    assert.matches("without a lock: %-?%d+ %(may differ from 200", out)
    assert.matches("with get_lock%(%): 200\n", out)
    assert.matches("with add%(%): 200\n", out)
  end)

  it("bank_account.lua keeps the money in the bank", function()
    local out = run_example("examples/bank_account.lua")
    assert.are.equal(table.concat({
      "accounts: 10, money in the bank: 10000.00",
      "transfers tried: 8000",
      "money in the bank: 10000.00",
      "no account below zero: true",
    }, "\n") .. "\n", out)
  end)

  it("manager_dict.lua fills a shared dict and list", function()
    local out = run_example("examples/manager_dict.lua")
    assert.are.equal(table.concat({
      "list: Hello, worker 1, worker 2, worker 3, worker 4",
      "squares: 1=1 2=4 3=9 4=16 5=25 6=36 7=49 8=64 9=81 10=100 11=121 12=144",
      "count: 12, sum: 650",
    }, "\n") .. "\n", out)
  end)
end)

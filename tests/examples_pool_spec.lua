local support = dofile("tests/support.lua")

-- Runs an example with the lmp executable and asserts it exits 0; its output.
local run_example = support.run_example

describe("pool examples", function()
  it("pool_squares.lua: map, map_async and apply_async", function()
    local out = run_example("examples/pool_squares.lua")
    assert.are.equal(table.concat({
      "1, 4, 9, 16, 25",
      "Task 1 is done! Task 2 is done! Task 3 is done! Task 4 is done! Task 5 is done!",
      "Task 6 is done! Task 7 is done! Task 8 is done! Task 9 is done! Task 10 is done!",
      "Task 11 is done!",
    }, "\n") .. "\n", out)
  end)

  it("pool_callbacks.lua: callbacks, error callbacks and a timeout", function()
    local out = run_example("examples/pool_callbacks.lua")
    assert.are.equal(table.concat({
      "Result: 0", "Result: 1", "Result: 4", "Result: 16", "Result: 25",
      "Caught exception: Oops on 3\t(task)", "Task timed out!",
    }, "\n") .. "\n", out)
  end)

  it("pool_starmap.lua: a shared counter, right with a lock", function()
    local out = run_example("examples/pool_starmap.lua")
    assert.matches("without a lock: %-?%d+\n", out)
    assert.matches("with a lock: 200\n", out)
    assert.matches("32.0 9.0 1000.0\n$", out)
  end)

  it("pool_imap_unordered.lua: every item once, and a lazy iterator", function()
    local out = run_example("examples/pool_imap_unordered.lua")
    for i = 1, 6 do assert.matches(("item %d: %d\n"):format(i, i * i), out) end
    assert.matches("all six: 1 2 3 4 5 6\n", out)
    assert.matches("sum of squares 1..1000: 333833500\n", out)
  end)

  it("pool_errors.lua: every failure is an lmp.Error, and the pool survives", function()
    local out = run_example("examples/pool_errors.lua")
    assert.are.equal(table.concat({
      "false\ttask\tdivision by zero", "true", "false\tworker_lost", "false\ttimeout",
      "false\tserialize", "false\ttask\t3", "12.0 6.0 4.0 3.0",
    }, "\n") .. "\n", out)
  end)
end)

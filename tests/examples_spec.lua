local support = dofile("tests/support.lua")

-- Runs an example with the lmp executable and asserts it exits 0; its output.
local run_example = support.run_example

describe("examples", function()
  it("README's example is examples/readme.lua and counts the primes", function()
    local f = assert(io.open("README.md"))
    local readme = f:read("a")
    f:close()
    local block = readme:match("```lua\n(.-)```")
    f = assert(io.open("examples/readme.lua"))
    local example = f:read("a")
    f:close()
    assert.are.equal(block, example)
    local out = run_example("examples/readme.lua")
    assert.are.equal("17984 primes below 200000, at most 1229 in a block of 10000\n"
                     .. "2160 twin prime pairs among them\n", out)
  end)

  it("primes.lua counts the same in parallel as serially", function()
    local out = run_example("examples/primes.lua", "200000 2")
    assert.matches("1 process : 17984 primes", out)
    assert.matches("2 processes: 17984 primes", out)
    assert.matches("speedup [%d.]+x", out)
  end)

  it("process_basics.lua starts four processes and joins them", function()
    local out = run_example("examples/process_basics.lua")
    for _, c in ipairs({"Asia", "America", "Europe", "Africa"}) do
      assert.matches("The name of continent is: " .. c, out)
    end
    assert.matches("proc%-Africa exited with 0", out)
  end)

  it("queue_basics.lua and pipe_basics.lua carry {42, nil, 'hello'}", function()
    local out = run_example("examples/queue_basics.lua")
    assert.are.equal("42\tnil\thello\t3\n", out)
    out = run_example("examples/pipe_basics.lua")
    assert.are.equal("42\tfalse\thello\nnil\tclosed\n", out)
  end)

  it("producer_consumer.lua consumes every product", function()
    local out = run_example("examples/producer_consumer.lua")
    assert.are.equal("10 products consumed by 2 consumers\n", out)
  end)

  it("error_handling.lua reports caught and uncaught errors", function()
    local out = run_example("examples/error_handling.lua")
    assert.matches("caught:\ttask\tan error occurred\tcode 42", out)
    assert.matches("Process crasher %(pid %d+%):", out)
    assert.matches("uncaught error exit code:\t1", out)
  end)

  it("joinable_queue.lua waits for every job", function()
    local out = run_example("examples/joinable_queue.lua")
    assert.are.equal("sum of squares 1..20 =\t2870\n", out)
  end)
end)

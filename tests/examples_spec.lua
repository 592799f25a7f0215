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

  it("primes.lua says when the machine is busy, from /proc/loadavg", function()
    -- /proc/loadavg replaced by a file that says what the test needs
    local function run_with_load(load)
      local fake = support.tmpfile(load .. " 0.50 0.50 1/100 4242\n")
      local out, code = support.shell_code(string.format(
        "%s -e 'local o = io.open; io.open = function(p, ...) return o(p == \"/proc/loadavg\" and %q or p, ...) end'"
        .. " examples/primes.lua 200000 2", support.lmp_bin, fake))
      os.remove(fake)
      assert.are.equal(0, code, out)
      return out
    end
    local cores = require("lmp").cpu_count()
    local busy = run_with_load(string.format("%.2f", cores + 1.5))
    assert.matches(string.format("the machine was busy (load average %.2f on %d cores)", cores + 1.5, cores),
                   busy, 1, true)
    assert.not_matches("busy", run_with_load(string.format("%.2f", cores)))
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

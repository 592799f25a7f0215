-- Every examples/*.lua runs, so that none can rot.  The examples that another
-- spec already runs and checks (those named as "examples/NAME.lua" in any
-- other tests/*_spec.lua) are left to it; every other one runs here and
-- must exit 0, and those in `checks` must also print what is listed.
local support = dofile("tests/support.lua")

-- Runs an example with the lmp executable, for 120 s at the most; output
-- and exit code.
local function run(script) return support.run_file(script, nil, "timeout -k 5 120") end

local read = support.read

local function lines(cmd)
  local p = io.popen(cmd)
  local t = {}
  for l in p:lines() do t[#t + 1] = l end
  p:close()
  return t
end

-- Patterns (string.match) the output of an example must contain, in any
-- order, for the examples this spec is the only one to run.  An example
-- that cannot run here (no redis-server, say) prints "skipped: why" first
-- and exits 0; its patterns are then not checked.
local checks = {
  ["batching.lua"] = {
    "apply_async, one task per item +[%d.]+ ms",
    "map, default chunksize +[%d.]+ ms",
    "map over slices of a shared Array +[%d.]+ ms +%d+ items/s +%(sum 41667916675000%)",
  },
  ["broker.lua"] = {
    "map over the broker: 1 4 9 16 25 36 49 64\n",
    "processes that ran tasks: more than one\n",
    "a failing task: false, kind task\n",
    "apply: 2 %+ 3 = 5\n",
    "a task that kills its worker: false, kind dead_letter\n",
    "the workers go on: yes\n",
    "workers stopped with exit codes 0 and 0\n",
  },
  ["condition.lua"] = {
    "^consumer woke with the predicate true and count >= 10: true\n",
    "items produced:\t12\n",
    "wait%(0.1%) with nobody notifying:\tfalse\n$",
  },
  ["cpu_speedup.lua"] = {
    "8 tasks of 10000000 iterations\n",
    "speedup [%d.]+x on %d+ cores; same results: true\n",
  },
  ["event_loop_cqueues.lua"] = {
    "^first result: 333332833333500000\n",
    "last result: 333332833333500007 %(8 results%)\n",
    "a failing task: false, kind task: no luck\n",
    "echo round trips while the workers computed: %d+\n$",
  },
  ["event_loop_luv.lua"] = {
    "^results: 333332833333500000, 333332833333500001, 333332833333500002, 333332833333500003\n",
    "heartbeats while the workers computed: %d+\n",
    "loop ended, executor shut down\n$",
  },
  ["event.lua"] = {
    "^3 workers ready, start is set: false\n",
    "worker 1 worked %d+ steps of 10 ms until stop was set\n",
    "worker 3 worked %d+ steps of 10 ms until stop was set\n",
    "wait%(0.1%) on an event nobody sets: false after [%d.]+ s\n",
    "wait%(%) on the start event now: true\n$",
  },
  ["exception_propagation.lua"] = {
    "^Exception in child process: attempt to divide by zero\n",
    "kind:\ttask\tis an lmp.Error:\ttrue\n",
    "where:\texception_propagation.lua:17\n",
    "raised in another process:\ttrue\n",
    "error value:\tEINVAL\tid\tno id\n",
    "import failed: EINVAL\n",
    "lmp.Error%(task, pid N%): plain message\n",
    "still working:\t5\n$",
  },
  ["pool_producer_consumer.lua"] = {
    "product 0 from producer 0 consumed by consumer %d\n",
    "product 4 from producer 1 consumed by consumer %d\n",
    "producer 0 exits\n", "producer 1 exits\n",
    "consumer 0 exits\n", "consumer 1 exits\n",
  },
  ["semaphore.lua"] = {
    "^6 workers, 2 slots: at most 2 inside at once\n",
    "slots free at the end:\t2\n$",
  },
  ["shared_memory.lua"] = {
    "block \"samples\": 8000000 bytes, 1000000 doubles\n",
    "in the workers: 250000250000.0 %(expected 250000250000.0%)\n",
    "first double after write:\t42.0\n",
    "Array of +4 int32 to a worker and back: last = 7, %d+ us\n",
    "Array of 16777216 int32 to a worker and back: last = 7, %d+ us\n",
  },
  ["start_methods.lua"] = {
    "available:\tfork, spawn, forkserver\n",
    "fork +global: a global set by the parent +upvalue: 3  started by: MainProcess\n",
    "spawn +global: nil +upvalue: 3  started by: MainProcess\n",
    "forkserver global: nil +upvalue: 3  started by: MainProcess\n",
    "spawned pool:\t3 6 9\n",
    "spawn with a file argument:\tfalse\tserialize\tcannot send args%[1%]: userdata %(FILE%*%)\n",
  },
  ["timeouts.lua"] = {
    "^get%(0.1%):\tnil\ttimeout\nget%(%):\t0.5\n",
    "task_timeout:\tfalse\ttimeout\nthe pool goes on:\t0\n",
    "future:result%(0.05%):\tfalse\ttimeout\nfuture:result%(%):\t0.3\n",
    "queue get%(0.1%):\tnil\ttimeout\n",
    "lock acquire%(0.1%) while the other holds it:\tfalse\n",
    "after the other finished:\ttrue\n",
    "join%(0.1%) of a process still running:\tfalse\n",
    "join%(%) after terminate:\ttrue\t%-15\n$",
  },
}

-- The examples other specs name.
local covered = {}
for _, spec in ipairs(lines("ls tests/*_spec.lua")) do
  if spec ~= "tests/examples_all_spec.lua" then
    for name in read(spec):gmatch("examples/([%w_%-]+%.lua)") do covered[name] = spec end
  end
end

local examples = {}
for _, path in ipairs(lines("ls examples/*.lua")) do
  local name = path:match("([^/]+)$")
  if not covered[name] then examples[#examples + 1] = name end
end

describe("every example", function()
  it("has a runner: another spec or this one", function()
    assert.is_true(#examples > 0)
    for name in pairs(checks) do
      assert.is_nil(covered[name], name .. " is checked here and in " .. tostring(covered[name]))
      local f = io.open("examples/" .. name)
      assert.is_not_nil(f, "examples/" .. name .. " is gone")
      f:close()
    end
  end)

  for _, name in ipairs(examples) do
    it(name .. " runs and exits 0", function()
      local out, code = run("examples/" .. name)
      assert.are.equal(0, code, out)
      if out:match("^skipped: ") then return end
      for _, pattern in ipairs(checks[name] or {}) do
        assert.matches(pattern, out)
      end
    end)
  end
end)

-- bench/lua/cpu.lua -- CPU-bound speedup on all cores.
-- The same pure-Lua loop (W iterations in all, split into equal parts) runs
-- once on one worker and once on cpu_count workers; the figure is the
-- speedup t(1 worker) / t(cpu_count workers), median of 5 runs.  The Python
-- side runs the same loop with the same W.
--   cpu_proc  workers are lmp.Process children, results back on a Queue
--   cpu_pool  workers are lmp.Pool(1) and lmp.Pool(cpu_count), pool:map
--             over 4 parts per worker
--   cpu_plain the ceiling: the same loop in plain processes of this same
--             interpreter, started together, sharing nothing and loading no
--             lmp (printed as cpu_proc, impl "plain").  What it falls short
--             of cpu_count is the machine's; what lmp falls short of it is
--             lmp's.
-- Usage: lmp bench/lua/cpu.lua cpu_proc|cpu_pool|cpu_plain
local lmp = require "lmp"
local b = dofile((arg[0]:match("^(.*/)") or "./") .. "common.lua")

local name = arg[1]
local W = b.size(50000000, 20000)

-- seconds to run `parts` parts of W / parts on `nproc` Processes
local function run_procs(nproc, parts)
  local q = lmp.Queue()
  local t0 = b.now()
  local procs = {}
  for k = 1, nproc do
    local mine = parts // nproc + (k <= parts % nproc and 1 or 0)
    procs[k] = lmp.Process(function()
      local s = 0
      for _ = 1, mine do s = s + b.work(W // parts) end
      q:put(s)
    end)
    procs[k]:start()
  end
  for _ = 1, nproc do q:get() end
  local t = b.now() - t0
  for _, p in ipairs(procs) do p:join() end
  return t
end

-- seconds to run `parts` parts of W / parts on `nproc` plain processes
local function run_plain(nproc, parts)
  local t0 = b.now()
  local procs = {}
  for k = 1, nproc do
    local mine = parts // nproc + (k <= parts % nproc and 1 or 0)
    local code = string.format("local s = 0 for _ = 1, %d do for i = 1, %d do s = (s + i * i) %% 1000003 end end "
                               .. "io.write(s)", mine, W // parts)
    procs[k] = assert(io.popen(string.format("exec '%s' -e '%s'", arg[-1], code)))
  end
  for k = 1, nproc do
    assert(procs[k]:read("a"):match("^%d+$"), "a plain process failed")
    procs[k]:close()
  end
  return b.now() - t0
end

-- t(1) / t(cpu_count) with `run`, 5 times: the speedups and the times
local function speedups(run)
  local t1s, tns = {}, {}
  local samples = b.repeat_(5, function(i)
    t1s[i] = run(1, b.ncpu)
    tns[i] = run(b.ncpu, b.ncpu)
    return t1s[i] / tns[i]
  end)
  return samples, t1s, tns
end

local samples, t1s, tns
if name == "cpu_plain" then
  samples, t1s, tns = speedups(run_plain)
  b.emit("cpu_proc", "x", samples, {workers = b.ncpu, iterations = W, t1_s = t1s, tn_s = tns}, "plain")
  return
elseif name == "cpu_proc" then
  samples, t1s, tns = speedups(run_procs)
elseif name == "cpu_pool" then
  local parts = {}
  for k = 1, 4 * b.ncpu do parts[k] = W // (4 * b.ncpu) end
  local one <close> = b.pool(name, "x", 1)
  if not one then return end
  local all <close> = lmp.Pool(b.ncpu)
  one:map(b.work, {1})
  all:map(b.work, {1, 1})
  t1s, tns = {}, {}
  samples = b.repeat_(5, function(i)
    local t0 = b.now()
    one:map(b.work, parts, 1)
    t1s[i] = b.now() - t0
    t0 = b.now()
    all:map(b.work, parts, 1)
    tns[i] = b.now() - t0
    return t1s[i] / tns[i]
  end)
  one:close(); one:join()
  all:close(); all:join()
else
  error("unknown workload " .. tostring(name))
end
b.emit(name, "x", samples, {workers = b.ncpu, iterations = W, t1_s = t1s, tn_s = tns})

-- CPU-bound work: the same job serially and with Pool.map, and the
-- speedup.  Each task sums a pure-Lua loop; the pool runs the tasks on
-- every core at once, each worker with its own Lua state, so there is no
-- lock to share (Lua, like Python, runs one thread per state).
--
--   lmp examples/cpu_speedup.lua [tasks] [iterations per task]
local lmp = require "lmp"

local TASKS = tonumber(arg and arg[1]) or 8
local ITERS = tonumber(arg and arg[2]) or 10000000

local function burn(seed)
  local s = seed
  for i = 1, ITERS do s = (s + i * i) % 1000003 end
  return s
end

local inputs = {}
for i = 1, TASKS do inputs[i] = i end

local t0 = lmp.time()
local serial = {}
for i, x in ipairs(inputs) do serial[i] = burn(x) end
local t_serial = lmp.time() - t0

local workers = lmp.cpu_count()
local pool <close> = lmp.Pool(workers)
pool:map(burn, {0})                       -- workers are up and have the function
t0 = lmp.time()
local parallel = pool:map(burn, inputs, 1)  -- one task per chunk: even spread
local t_pool = lmp.time() - t0

local same = #parallel == #serial
for i = 1, #serial do same = same and serial[i] == parallel[i] end
print(string.format("%d tasks of %d iterations", TASKS, ITERS))
print(string.format("serial:           %.2f s", t_serial))
print(string.format("Pool(%d).map:      %.2f s", workers, t_pool))
print(string.format("speedup %.2fx on %d cores; same results: %s", t_serial / t_pool, workers, same))

-- bench/lua/apply.lua -- Pool task round trips on lmp.Pool(cpu_count).
--   apply_rt     pool:apply of a trivial task, one after another: the
--                median of the per-call times, in microseconds.
--   apply_async  20k trivial tasks submitted with apply_async, then every
--                result collected: tasks per second, median of 5 runs.
-- Usage: lmp bench/lua/apply.lua apply_rt|apply_async
local b = dofile((arg[0]:match("^(.*/)") or "./") .. "common.lua")

local name = arg[1]
local unit = name == "apply_rt" and "us" or "tasks/s"
local function task(x) return x end

local pool <close> = b.pool(name, unit, b.ncpu)
if not pool then return end
for i = 1, 20 do pool:apply(task, i) end -- workers up and warm

if name == "apply_rt" then
  b.round_trips(name, pool, b.size(3000, 20))
else
  b.throughput(name, pool, b.size(20000, 100), 5)
end
pool:close()
pool:join()

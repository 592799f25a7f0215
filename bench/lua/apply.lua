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
  local n = b.size(3000, 20)
  local times = {}
  for i = 1, n do
    local t0 = b.now()
    pool:apply(task, i)
    times[i] = (b.now() - t0) * 1e6
  end
  -- The figure is a median of many single calls; the samples are the
  -- medians of five slices of them, to show the spread.
  local slices = {}
  for s = 1, 5 do
    local part = {}
    for i = (s - 1) * n // 5 + 1, s * n // 5 do part[#part + 1] = times[i] end
    slices[s] = b.median(part)
  end
  b.emit(name, unit, b.smoke and {b.median(times)} or slices, {calls = n, median_all = b.median(times)})
else
  local n = b.size(20000, 100)
  local samples = b.repeat_(5, function()
    local res = {}
    local t0 = b.now()
    for i = 1, n do res[i] = pool:apply_async(task, {i}) end
    for i = 1, n do res[i]:get() end
    return n / (b.now() - t0)
  end)
  b.emit(name, unit, samples, {tasks = n})
end
pool:close()
pool:join()

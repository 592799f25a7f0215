-- bench/lua/common.lua -- what every lmp workload shares: the clock, medians,
-- the size switch and the one JSON line a workload prints.
--
-- A workload is `lmp bench/lua/<group>.lua <name>`; it prints exactly one
-- line {"name":..,"impl":"lmp","value":..,"unit":..,...} on stdout, the
-- median of its repeats with every sample beside it, or "value":null with a
-- note when the lmp API it needs is not there yet.  BENCH_SMOKE=1 shrinks
-- every size to a single quick pass (tests use it; its numbers mean nothing).
local lmp = require "lmp"

local M = {}

M.smoke = (os.getenv("BENCH_SMOKE") or "") ~= "" and os.getenv("BENCH_SMOKE") ~= "0"
M.now = lmp.time
M.ncpu = lmp.cpu_count()

-- The pure CPU loop of the CPU-bound workloads (cpu.lua, scale.lua), the
-- same in bench/py/common.py: n turns of s = (s + i*i) % 1000003.
function M.work(n)
  local s = 0
  for i = 1, n do s = (s + i * i) % 1000003 end
  return s
end

-- full size, or the smoke size
function M.size(full, tiny)
  return M.smoke and tiny or full
end

function M.median(xs)
  local s = {}
  for i = 1, #xs do s[i] = xs[i] end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

-- run fn() `reps` times (once in smoke mode); fn returns one figure
function M.repeat_(reps, fn)
  local out = {}
  for i = 1, M.smoke and 1 or reps do out[i] = fn(i) end
  return out
end

local function num(x)
  if x ~= x or x == math.huge or x == -math.huge then return "null" end
  if math.type(x) == "integer" then return tostring(x) end
  return string.format("%.6g", x)
end

local function str(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function json(v)
  local t = type(v)
  if t == "number" then return num(v) end
  if t == "string" then return str(v) end
  if t == "boolean" then return tostring(v) end
  if t == "table" then
    local parts = {}
    for i = 1, #v do parts[i] = json(v[i]) end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  return "null"
end

-- Print the workload's line.  extra: more fields (numbers, strings, arrays);
-- impl: "lmp" unless the line is a reference measured by an lmp script.
function M.emit(name, unit, samples, extra, impl)
  local fields = {
    '"name":' .. str(name), '"impl":' .. str(impl or "lmp"),
    '"value":' .. json(M.median(samples)), '"unit":' .. str(unit),
    '"samples":' .. json(samples),
  }
  local keys = {}
  for k in pairs(extra or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do fields[#fields + 1] = str(k) .. ":" .. json(extra[k]) end
  io.write("{", table.concat(fields, ","), "}\n")
  io.flush()
end

-- The workload cannot run here (API not there yet): value null and why.
function M.na(name, unit, why)
  io.write(string.format('{"name":%s,"impl":"lmp","value":null,"unit":%s,"note":%s}\n',
    str(name), str(unit), str(why)))
  io.flush()
end

-- lmp.Pool(n), or nil after printing the n/a line when this build has no
-- Pool yet (absent, or a placeholder that says it is missing).  Any other
-- error is a real failure and is raised.
function M.pool(name, unit, n)
  if not lmp.Pool then
    M.na(name, unit, "lmp.Pool not available yet")
    return nil
  end
  local ok, pool = pcall(lmp.Pool, n)
  if ok then return pool end
  local msg = tostring(pool)
  if msg:find("missing") or msg:find("not available") or msg:find("not implemented") then
    M.na(name, unit, "lmp.Pool not available yet (" .. msg:gsub("^.-:%d+: ", "") .. ")")
    return nil
  end
  error(pool, 0)
end

-- Operations per second, median of 5: op(obj, n) does n operations on obj.
-- solo: this process, n in a row after a warm-up; beside(i), if given, runs
-- before sample i (a reference measured under the same conditions).
-- solo1: one such sample.  contended: two child processes doing n each on
-- one object made by make(), timed from the go to the last finish, total
-- per second; check(obj, total) runs after.
function M.solo1(obj, op, n)
  local t0 = M.now()
  op(obj, n)
  return n / (M.now() - t0)
end

function M.solo(obj, op, n, beside)
  op(obj, 1000)
  return M.repeat_(5, function(i)
    if beside then beside(i) end
    return M.solo1(obj, op, n)
  end)
end

function M.contended(make, op, n, check)
  return M.repeat_(5, function()
    local obj, go, done = make(), lmp.Queue(), lmp.Queue()
    local procs = {}
    for k = 1, 2 do
      procs[k] = lmp.Process(function()
        go:get()
        op(obj, n)
        done:put(true)
      end)
      procs[k]:start()
    end
    local t0 = M.now()
    go:put(true); go:put(true)
    done:get(); done:get()
    local rate = 2 * n / (M.now() - t0)
    for _, p in ipairs(procs) do p:join() end
    if check then check(obj, 2 * n) end
    return rate
  end)
end

-- The two pool workloads, on any pool.  round_trips: n pool:apply calls of
-- a trivial task one after another; the figure is the median call time in
-- microseconds, the samples the medians of five slices of the calls, to
-- show the spread.  throughput: n apply_async submissions, then every
-- result collected; tasks per second, median of `reps` runs.
local function task(x) return x end

function M.round_trips(name, pool, n, extra)
  local times = {}
  for i = 1, n do
    local t0 = M.now()
    assert(pool:apply(task, i) == i)
    times[i] = (M.now() - t0) * 1e6
  end
  local slices = {}
  for s = 1, 5 do
    local part = {}
    for i = (s - 1) * n // 5 + 1, s * n // 5 do part[#part + 1] = times[i] end
    slices[s] = M.median(part)
  end
  extra = extra or {}
  extra.calls, extra.median_all = n, M.median(times)
  M.emit(name, "us", M.smoke and {M.median(times)} or slices, extra)
end

function M.throughput(name, pool, n, reps, extra)
  local samples = M.repeat_(reps, function()
    local res = {}
    local t0 = M.now()
    for i = 1, n do res[i] = pool:apply_async(task, {i}) end
    for i = 1, n do assert(res[i]:get() == i) end
    return n / (M.now() - t0)
  end)
  extra = extra or {}
  extra.tasks = n
  M.emit(name, "tasks/s", samples, extra)
end

return M

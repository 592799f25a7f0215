-- bench/pool_quick.lua [processes]: the Pool figures of DESIGN.md, quickly,
-- next to Python's multiprocessing.Pool in the same run when python3 is
-- there.  Prints one line per measure: lmp, python, ratio.
--
--   apply round trip      sequential pool:apply of a tiny function (us)
--   apply_async 20k       20k tiny tasks submitted, then every result (tasks/s)
--   map x*x 200k          pool:map over 200k integers (items/s)
--   cpu speedup           a CPU-bound map on all workers vs one process (its
--                         own figure is the one that counts: >= 1.9 on 2 cpus)
--
-- Figures on a shared machine move with its load: run it a few times.
local lmp = require "lmp"

local procs = tonumber(arg and arg[1]) or lmp.cpu_count()

local function best(n, f)
  local b = math.huge
  for _ = 1, n do
    local t0 = lmp.time()
    f()
    b = math.min(b, lmp.time() - t0)
  end
  return b
end

local function spin(n)
  local s = 0
  for i = 1, n do s = s + i % 7 end
  return s
end

local function measure()
  local r = {}
  local pool <close> = lmp.Pool(procs)
  local inc = function(x) return x + 1 end
  pool:apply(inc, 1)
  local n = 5000
  local t = best(3, function() for i = 1, n do pool:apply(inc, i) end end)
  r.apply_us = t / n * 1e6

  local N = 20000
  t = best(3, function()
    local rs = {}
    for i = 1, N do rs[i] = pool:apply_async(inc, {i}) end
    for i = 1, N do rs[i]:get() end
  end)
  r.async_per_s = N / t

  local xs = {}
  for i = 1, 200000 do xs[i] = i end
  local sq = function(x) return x * x end
  t = best(5, function() pool:map(sq, xs) end)
  r.map_per_s = #xs / t

  local work = {}
  for i = 1, 8 * procs do work[i] = 3000000 end
  local serial = best(1, function() for i = 1, #work do spin(work[i]) end end)
  local par = best(2, function() pool:map(spin, work, 1) end)
  r.speedup = serial / par
  return r
end

local py = [[
import multiprocessing as mp, time, sys
procs = int(sys.argv[1])
def inc(x): return x + 1
def sq(x): return x * x
def spin(n):
    s = 0
    for i in range(1, n + 1): s += i % 7
    return s
def best(n, f):
    b = 1e9
    for _ in range(n):
        t0 = time.perf_counter(); f(); b = min(b, time.perf_counter() - t0)
    return b
if __name__ == "__main__":
    mp.set_start_method("fork")
    with mp.Pool(procs) as p:
        p.apply(inc, (1,))
        n = 2000
        t = best(3, lambda: [p.apply(inc, (i,)) for i in range(n)])
        print("apply_us", t / n * 1e6)
        N = 20000
        def asy():
            rs = [p.apply_async(inc, (i,)) for i in range(N)]
            for r in rs: r.get()
        print("async_per_s", N / best(3, asy))
        xs = list(range(200000))
        print("map_per_s", len(xs) / best(5, lambda: p.map(sq, xs)))
        work = [3000000 // 3] * (8 * procs)
        serial = best(1, lambda: [spin(w) for w in work])
        par = best(2, lambda: p.map(spin, work, 1))
        print("speedup", serial / par)
]]

local function python()
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(py)
  f:close()
  local p = io.popen("python3 " .. path .. " " .. procs .. " 2>/dev/null")
  local out = p:read("a")
  p:close()
  os.remove(path)
  local r = {}
  for k, v in out:gmatch("(%S+) (%S+)") do r[k] = tonumber(v) end
  return next(r) and r or nil
end

local l = measure()
local p = python()
-- One row: lmp's figure, Python's, their ratio (how many times better lmp
-- is), and the ratio DESIGN.md asks for.
local function row(name, key, unit, target, lower_is_better)
  local lv, pv = l[key], p and p[key]
  local ratio = pv and (lower_is_better and pv / lv or lv / pv)
  print(string.format("%-20s lmp %12.1f %-8s python %12s   x%-7s (target x%s)", name, lv, unit,
                      pv and string.format("%.1f", pv) or "-",
                      ratio and string.format("%.2f", ratio) or "-", target))
end
print(string.format("Pool(%d) on %d cpus", procs, lmp.cpu_count()))
row("apply round trip", "apply_us", "us", "10", true)
row("apply_async 20k", "async_per_s", "tasks/s", "10")
row("map x*x 200k", "map_per_s", "items/s", "3")
row("cpu-bound speedup", "speedup", "x", "1.9/1.83")

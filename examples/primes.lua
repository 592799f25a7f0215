-- Count the primes below N, first in this process, then fanned out over one
-- Process per core that each take ranges from a task Queue and put their
-- counts on a result Queue.  Prints both timings and the speedup, and says
-- when the machine was busy (a 1-minute load average above its core count):
-- then other programs had part of the cores, and the speedup reads low.
--
--   lmp examples/primes.lua [N] [workers]
local lmp = require "lmp"

local N = tonumber(arg and arg[1]) or 3000000
local workers = tonumber(arg and arg[2]) or lmp.cpu_count()
local CHUNK = 50000

local function is_prime(n)
  if n < 2 then return false end
  if n % 2 == 0 then return n == 2 end
  for d = 3, math.floor(math.sqrt(n)), 2 do
    if n % d == 0 then return false end
  end
  return true
end

local function count(lo, hi)
  local c = 0
  for n = lo, hi do
    if is_prime(n) then c = c + 1 end
  end
  return c
end

-- A worker takes {lo, hi} ranges until it gets the sentinel false.
local function worker(tasks, results)
  while true do
    local range = tasks:get()
    if not range then break end
    results:put(count(range[1], range[2]))
  end
end

-- The 1-minute load average, before this program adds to it (nil where
-- /proc/loadavg cannot be read).
local function loadavg()
  local f = io.open("/proc/loadavg")
  if not f then return nil end
  local load = tonumber(f:read("a"):match("^%S+"))
  f:close()
  return load
end
local load = loadavg()

print(string.format("counting primes below %d", N))

local t0 = lmp.time()
local expected = count(1, N - 1)
local serial = lmp.time() - t0
print(string.format("  1 process : %d primes in %.2f s", expected, serial))

t0 = lmp.time()
local tasks, results = lmp.Queue(), lmp.Queue()
local procs = {}
for i = 1, workers do
  procs[i] = lmp.Process{target = worker, args = {tasks, results}, name = "primes-" .. i}
  procs[i]:start()
end
local nranges = 0
for lo = 1, N - 1, CHUNK do
  tasks:put({lo, math.min(lo + CHUNK - 1, N - 1)})
  nranges = nranges + 1
end
for _ = 1, workers do tasks:put(false) end
local total = 0
for _ = 1, nranges do total = total + results:get() end
for _, p in ipairs(procs) do p:join() end
local parallel = lmp.time() - t0

print(string.format("  %d processes: %d primes in %.2f s (%d ranges over a Queue)",
  workers, total, parallel, nranges))
print(string.format("  speedup %.2fx on %d cores", serial / parallel, lmp.cpu_count()))
if load and load > lmp.cpu_count() then
  print(string.format("  the machine was busy (load average %.2f on %d cores): other programs"
    .. " had part of the cores, so the speedup reads low", load, lmp.cpu_count()))
end
assert(total == expected, "parallel count differs from the serial one")

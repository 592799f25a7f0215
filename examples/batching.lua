-- Why batching matters: the same 50,000 tiny tasks sent four ways.  A
-- task's own work here is a multiplication; what is measured is the cost
-- of getting it to a worker and its result back.
--
--   * apply_async, one call per item: one message each way per item
--   * map with chunksize 1: the same, though map encodes the function once
--   * map with the default chunksize (items / (4 * workers)): few messages
--   * one task per worker over a slice of a shared Array: no copying at all
--
--   lmp examples/batching.lua [items]
local lmp = require "lmp"

local N = tonumber(arg and arg[1]) or 50000
local WORKERS = lmp.cpu_count()

local xs = {}
for i = 1, N do xs[i] = i end
local function square(x) return x * x end

local pool <close> = lmp.Pool(WORKERS)
pool:map(square, {1})                      -- start the workers first

local function timed(label, fn)
  local t0 = lmp.time()
  local sum = fn()
  local dt = lmp.time() - t0
  print(string.format("%-34s %7.1f ms  %9.0f items/s  (sum %d)", label, dt * 1000, N / dt, sum))
end

local function total(t)
  local s = 0
  for _, v in ipairs(t) do s = s + v end
  return s
end

timed("apply_async, one task per item", function()
  local rs = {}
  for i = 1, N do rs[i] = pool:apply_async(square, {xs[i]}) end
  local s = 0
  for i = 1, N do s = s + rs[i]:get() end
  return s
end)
timed("map, chunksize 1", function() return total(pool:map(square, xs, 1)) end)
timed("map, default chunksize", function() return total(pool:map(square, xs)) end)

local data = lmp.Array("int64", xs)        -- copied once into shared memory
timed("map over slices of a shared Array", function()
  local per = -(-N // WORKERS)
  local slices = {}
  for w = 1, WORKERS do slices[w] = {(w - 1) * per + 1, math.min(w * per, N)} end
  return total(pool:starmap(function(i, j)
    local s = 0
    for k = i, j do s = s + data[k] * data[k] end
    return s
  end, slices))
end)

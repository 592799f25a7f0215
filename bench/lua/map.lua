-- bench/lua/map.lua -- pool:map of x*x over 200k integers, default chunksize,
-- on lmp.Pool(cpu_count).  Items per second, median of 5 runs.
-- Usage: lmp bench/lua/map.lua map
local b = dofile((arg[0]:match("^(.*/)") or "./") .. "common.lua")

local name = arg[1] or "map"

local n = b.size(200000, 1000)
local xs = {}
for i = 1, n do xs[i] = i end
local function square(x) return x * x end

local pool <close> = b.pool(name, "items/s", b.ncpu)
if not pool then return end
pool:map(square, {1, 2, 3, 4}) -- workers up
local samples = b.repeat_(5, function()
  local t0 = b.now()
  local r = pool:map(square, xs)
  local rate = n / (b.now() - t0)
  assert(#r == n and r[n] == n * n, "map returned a wrong result")
  return rate
end)
pool:close()
pool:join()
b.emit(name, "items/s", samples, {items = n})

-- bench/lua/array.lua -- handing a shared Array to a running worker.
-- A child takes Arrays from a Queue, reads the last element and sends it
-- back; the parent times put -> reply.  The Array's data never moves, so the
-- time must not depend on its size.  Both sizes are handed to the same
-- worker, alternately, 50 times each: whether the two processes share a CPU
-- changes a hand-off several-fold, so only figures of one run compare.
--   array_1m   the 1 MiB hand-offs (median, microseconds)
--   array_64m  the 64 MiB ones; "vs_1m" is their median over the 1 MiB one
-- Usage: lmp bench/lua/array.lua array_1m|array_64m
local lmp = require "lmp"
local b = dofile((arg[0]:match("^(.*/)") or "./") .. "common.lua")

local name = arg[1]
if name ~= "array_1m" and name ~= "array_64m" then error("unknown workload " .. tostring(name)) end
if not lmp.Array then
  b.na(name, "us", "lmp.Array not available yet")
  return
end

local function make(mib)
  local count = mib * (1 << 20) // 8
  local a = lmp.Array("double", count)
  a[count] = mib + 0.5
  return a
end
local small, big = make(1), make(64)

local jobs, replies = lmp.Queue(), lmp.Queue()
local p = lmp.Process(function()
  while true do
    local arr = jobs:get()
    if not arr then break end
    replies:put(arr[#arr])
  end
end)
p:start()

local function handoff(a)
  local t0 = b.now()
  jobs:put(a)
  local v = replies:get()
  return (b.now() - t0) * 1e6, v
end

for _ = 1, 3 do
  assert(select(2, handoff(small)) == 1.5 and select(2, handoff(big)) == 64.5)
end
local t1, t64 = {}, {}
for i = 1, b.size(50, 2) do
  t1[i] = handoff(small)
  t64[i] = handoff(big)
end
jobs:put(false)
p:join()
if name == "array_1m" then
  b.emit(name, "us", t1, {bytes = 1 << 20})
else
  b.emit(name, "us", t64, {bytes = 64 << 20, vs_1m = b.median(t64) / b.median(t1)})
end

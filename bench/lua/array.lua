-- bench/lua/array.lua -- handing a shared Array to a running worker.
-- A child takes Arrays from a Queue, reads the last element and sends it
-- back; the parent times put -> reply.  The Array's data never moves, so the
-- time must not depend on its size.  Both sizes are handed to the same
-- worker, alternately, 50 times each: whether the two processes share a CPU
-- changes a hand-off several-fold, so only figures of one run compare.
-- The figure is the median 64 MiB hand-off in microseconds; "median_1m" is
-- the 1 MiB one and "vs_1m" the first over the second.
-- Usage: lmp bench/lua/array.lua array
local lmp = require "lmp"
local b = dofile((arg[0]:match("^(.*/)") or "./") .. "common.lua")

local name = arg[1] or "array"
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
b.emit(name, "us", t64, {bytes = 64 << 20, samples_1m = t1, median_1m = b.median(t1),
  vs_1m = b.median(t64) / b.median(t1)})

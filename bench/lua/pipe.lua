-- bench/lua/pipe.lua -- lmp.Pipe ping-pong round trip.
-- A child echoes every value it receives on a duplex Pipe; the parent sends
-- a small integer and waits for it back, 2000 times per run after a warm-up.
-- The figure is the median over runs of the mean round trip, microseconds.
-- Usage: lmp bench/lua/pipe.lua pipe_rt
local lmp = require "lmp"
local b = dofile((arg[0]:match("^(.*/)") or "./") .. "common.lua")

local name = arg[1] or "pipe_rt"
local n = b.size(2000, 20)

local a, c = lmp.Pipe()
local p = lmp.Process(function()
  while true do
    local v = c:recv()
    if v == false then break end
    c:send(v)
  end
end)
p:start()
for i = 1, 200 do a:send(i); a:recv() end
local samples = b.repeat_(9, function()
  local t0 = b.now()
  for i = 1, n do
    a:send(i)
    a:recv()
  end
  return (b.now() - t0) / n * 1e6
end)
a:send(false)
p:join()
b.emit(name, "us", samples, {round_trips = n})

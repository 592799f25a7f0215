-- bench/lua/event.lua -- lmp.Event:is_set() calls per second.
--   event_is_set  one process, N e:is_set() in a row on a clear Event
-- Median of 5 runs.
-- Usage: lmp bench/lua/event.lua event_is_set
local lmp = require "lmp"
local b = dofile((arg[0]:match("^(.*/)") or "./") .. "common.lua")

local name = arg[1]
if not lmp.Event then
  b.na(name, "calls/s", "lmp.Event not available yet")
  return
end

local function calls(e, n)
  for _ = 1, n do
    e:is_set()
  end
end

local samples, n
if name == "event_is_set" then
  n = b.size(1000000, 1000)
  samples = b.solo(lmp.Event(), calls, n)
else
  error("unknown workload " .. tostring(name))
end
b.emit(name, "calls/s", samples, {calls = n})

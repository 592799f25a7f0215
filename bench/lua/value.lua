-- bench/lua/value.lua -- atomic additions to a shared lmp.Value per second.
--   value_add            one process, N v:add(1) in a row
--   value_add_contended  2 child processes doing N v:add(1) each on one
--                        Value, timed from the go to the last finish; total
--                        additions/s
-- Python has no atomic add: its twin does what Python programs write,
-- `with v.get_lock(): v.value += 1`.  Median of 5 runs.
-- Usage: lmp bench/lua/value.lua value_add|value_add_contended
local lmp = require "lmp"
local b = dofile((arg[0]:match("^(.*/)") or "./") .. "common.lua")

local name = arg[1]
if not lmp.Value then
  b.na(name, "adds/s", "lmp.Value not available yet")
  return
end

local function adds(v, n)
  for _ = 1, n do v:add(1) end
end

local function int64() return lmp.Value("int64", 0) end

local samples, n
if name == "value_add" then
  n = b.size(1000000, 1000)
  samples = b.solo(int64(), adds, n)
elseif name == "value_add_contended" then
  n = b.size(200000, 1000)
  samples = b.contended(int64, adds, n, function(v, total) assert(v.value == total) end)
else
  error("unknown workload " .. tostring(name))
end
b.emit(name, "adds/s", samples, {adds = n})

-- bench/lua/start.lua -- process start time per start method.
-- Starts a process whose target does nothing and joins it, one after
-- another after a warm-up; the figure is the median of start()+join() in
-- milliseconds (start() alone is reported beside it).  Methods other than
-- fork are measured when lmp.get_all_start_methods lists them.
--   start_fork  start_spawn  start_forkserver
-- Usage: lmp bench/lua/start.lua start_fork|start_spawn|start_forkserver
local lmp = require "lmp"
local b = dofile((arg[0]:match("^(.*/)") or "./") .. "common.lua")

local name = arg[1]
local method = name and name:match("^start_(%a+)$") or error("unknown workload " .. tostring(name))

local Process = lmp.Process
if lmp.get_all_start_methods then
  local known = false
  for _, m in ipairs(lmp.get_all_start_methods()) do known = known or m == method end
  if not known then
    b.na(name, "ms", "start method " .. method .. " not available")
    return
  end
  Process = lmp.get_context(method).Process
elseif method ~= "fork" then
  b.na(name, "ms", "lmp.get_all_start_methods not available yet")
  return
end

local function noop() end
local n = b.size(method == "fork" and 300 or 40, 3)
for _ = 1, b.smoke and 1 or 10 do
  local p = Process(noop); p:start(); p:join()
end
local whole, start = {}, {}
for i = 1, n do
  local p = Process(noop)
  local t0 = b.now()
  p:start()
  local t1 = b.now()
  p:join()
  whole[i] = (b.now() - t0) * 1e3
  start[i] = (t1 - t0) * 1e3
  p:close()
end
-- the samples: medians of five slices of the runs, to show the spread
local slices = {}
for s = 1, b.smoke and 1 or 5 do
  local part = {}
  for i = (s - 1) * n // 5 + 1, s * n // 5 do part[#part + 1] = whole[i] end
  slices[s] = b.median(b.smoke and whole or part)
end
b.emit(name, "ms", slices, {processes = n, median_all = b.median(whole), start_only = b.median(start)})

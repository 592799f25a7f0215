-- Workers advance through phases in step: nobody starts phase k + 1 before
-- every worker has finished phase k.  The Barrier's action runs once per
-- phase, in the last worker to arrive, before anyone goes on.
--
--   lmp examples/barrier_phases.lua [workers] [phases]
local lmp = require "lmp"

local WORKERS = tonumber(arg[1]) or 3
local PHASES = tonumber(arg[2]) or 4

local log = lmp.Queue()
local barrier = lmp.Barrier(WORKERS, function() log:put({"passed"}) end)

local function worker(id)
  for phase = 1, PHASES do
    lmp.sleep(0.005 * ((id + phase) % WORKERS)) -- uneven work
    log:put({"done", id, phase})
    barrier:wait()
  end
end

local procs = {}
for id = 1, WORKERS do
  procs[id] = lmp.Process{target = worker, args = {id}, name = "worker-" .. id}
  procs[id]:start()
end

-- The log is in the order things happened: each phase's WORKERS "done"
-- entries, then its one "passed".
local in_step = true
for phase = 1, PHASES do
  local ids = {}
  for _ = 1, WORKERS do
    local e = log:get(30)
    if e[1] ~= "done" or e[3] ~= phase then in_step = false end
    ids[#ids + 1] = e[2]
  end
  if log:get(30)[1] ~= "passed" then in_step = false end
  table.sort(ids)
  print(string.format("phase %d: workers %s done, barrier passed", phase, table.concat(ids, " ")))
end
for _, p in ipairs(procs) do p:join() end
print(in_step and string.format("all %d phases kept in step", PHASES) or "OUT OF STEP")

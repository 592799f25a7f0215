-- Logging from several processes into one place.
--
-- Python's recipe for this gives each worker a QueueHandler and runs a
-- QueueListener in the main process, because its logging is not
-- process-safe.  lmp's logging is: every process writes whole lines (one
-- write per line, so lines never interleave), and a function handler added
-- in the main process receives the records of every process, children
-- included, through lmp's own queue.
--
--   lmp examples/logging.lua
local lmp = require "lmp"

-- Lines like "2025-01-31 12:00:00.123 [INFO/Process-2 4242] worker: ..." on stderr.
local log = lmp.log_to_stderr("debug")

-- Runs here, in the main process, for the records of all processes.
local counts = {}
log:add_handler(function(record)
  counts[record.process] = (counts[record.process] or 0) + 1
end)

local function worker(task)
  local wlog = lmp.get_logger("worker")
  wlog:info("Worker started task: %s", task)
  -- Perform task...
  wlog:info("Worker finished task: %s", task)
end

log:info("starting 3 workers")
local jobs = {}
for i = 1, 3 do
  jobs[i] = lmp.Process{target = worker, args = {i}}
  jobs[i]:start()
end
for _, job in ipairs(jobs) do job:join() end
log:flush() -- hand the workers' records to the handler above now

local names = {}
for name in pairs(counts) do names[#names + 1] = name end
table.sort(names)
for _, name in ipairs(names) do print(name, counts[name]) end

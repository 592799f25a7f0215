-- Errors in child processes.  An uncaught error prints the child's name and
-- traceback on stderr and sets exitcode 1; a worker that wants its parent to
-- know catches the error and sends it back as an lmp.Error with the
-- traceback, the way the tutorials send traceback.format_exc() on a Queue.
local lmp = require "lmp"

local function faulty_worker()
  error({code = 42, reason = "an error occurred"})
end

local function careful_worker(q)
  local ok, err = xpcall(faulty_worker, function(e)
    return lmp.Error("task", e.reason, {value = e, traceback = debug.traceback("", 2)})
  end)
  q:put(ok or err)
end

local q = lmp.Queue()
local p = lmp.Process(careful_worker, q)
p:start()
local err = q:get()
p:join()
print("caught:", err.kind, err.message, "code " .. err.value.code)
print("child exit code:", p.exitcode)

local crash = lmp.Process{target = faulty_worker, name = "crasher"}
crash:start()
crash:join()
print("uncaught error exit code:", crash.exitcode)   --> 1 (traceback on stderr)

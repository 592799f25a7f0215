-- Errors raised in a worker come back to the caller.
--
--   async_result = pool.apply_async(child_process_task)
--   try:
--       result = async_result.get()
--   except Exception as e:
--       print(f"Exception in child process: {e}")
--
-- get() raises an lmp.Error: kind "task", the message, the worker's own
-- traceback, the original error value (a table stays a table) and the pid
-- of the worker.  Errors in callbacks-based code go to error_callback, and
-- with error() you choose what crosses.
--
--   lmp examples/exception_propagation.lua
local lmp = require "lmp"

local function child_process_task()
  return 10 // 0                          -- integer division by zero raises
end

local pool <close> = lmp.Pool(1)
local async_result = pool:apply_async(child_process_task)
local ok, e = pcall(async_result.get, async_result)
print("Exception in child process: " .. e.message:gsub("^.-:%d+: ", ""))
print("kind:", e.kind, "is an lmp.Error:", lmp.is_error(e))
print("where:", e.message:match("[%w_]+%.lua:%d+"))  -- the worker's file and line
print("remote traceback:", e.traceback:match("^[^\n]*"), "...")
print("raised in another process:", e.pid ~= lmp.current_process().pid)

-- Any Lua value can be the error; tables keep their fields.
local function validate(record)
  if not record.id then
    error({code = "EINVAL", field = "id", record = record})
  end
  return record.id
end
ok, e = pcall(pool.apply, pool, validate, {name = "no id"})
print("error value:", e.value.code, e.value.field, e.value.record.name)

-- Re-raise in the caller with your own context, keeping the remote trace.
ok, e = pcall(function()
  local okr, err = pcall(pool.apply, pool, validate, {})
  if not okr then error("import failed: " .. err.value.code, 0) end
end)
print(e)

-- tostring() shows the kind, the worker's pid, the message and traceback.
ok, e = pcall(pool.apply, pool, error, "plain message", 0)
print((tostring(e):gsub("pid %d+", "pid N"):match("^[^\n]*")))

-- The pool is still usable after every failure.
print("still working:", pool:apply(function(a, b) return a + b end, 2, 3))

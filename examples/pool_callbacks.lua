-- apply_async with callbacks, and waiting with a timeout.
--
--   p.apply_async(task, args=(i,), callback=on_success, error_callback=on_error)
--
-- Callbacks run in this process, whenever it calls into lmp (here: join):
-- never from another thread or a signal handler.  An error inside a task
-- arrives as an lmp.Error with the remote traceback and the original value.
local lmp = require "lmp"

local function task(x)
  if x == 3 then error("Oops on 3", 0) end
  return x * x
end

local results, caught = {}, {}
local pool = lmp.Pool(4)
for i = 0, 5 do
  pool:apply_async(task, {i}, {
    callback = function(r) results[#results + 1] = r end,
    error_callback = function(e) caught[#caught + 1] = e end,
  })
end
pool:close()
pool:join()

table.sort(results)
for _, r in ipairs(results) do print("Result: " .. r) end
for _, e in ipairs(caught) do print("Caught exception: " .. e.message, "(" .. e.kind .. ")") end

-- A result that is not there in time: nil, "timeout" rather than an error.
local function long_task(x)
  lmp.sleep(x)
  return x
end

local p <close> = lmp.Pool(2)
local r = p:apply_async(long_task, {5})
local v, why = r:get(0.2)
if v == nil and why == "timeout" then print("Task timed out!") end

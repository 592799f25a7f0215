-- concurrent.futures in Lua: submit work, take the results as they
-- complete, and see a failure arrive as an error of its future only.
--
--   with ProcessPoolExecutor(max_workers=4) as executor:
--       futures = {executor.submit(compute, i): i for i in inputs}
--       for future in as_completed(futures): ...
--
-- The lines come in the order the tasks finish, which varies from run to
-- run.  Leaving the <close> scope shuts the executor down and waits for it.
local lmp = require "lmp"

local function compute(x)
  if x == 13 then error("unlucky " .. x, 0) end
  return x * x
end

do
  local executor <close> = lmp.Executor{max_workers = 4}
  local futures = {}
  for i = 0, 19 do futures[executor:submit(compute, i)] = i end
  for future in lmp.as_completed(futures) do
    local i = futures[future]
    local ok, result = pcall(future.result, future)
    if ok then
      print(string.format("%d squared is %d", i, result))
    else
      print(string.format("Input %d generated an exception: %s (%s)", i, result.message, result.kind))
    end
  end

  -- map yields in input order; the timeout covers the whole map.
  local squares = {}
  for _, v in executor:map(compute, {1, 2, 3, 4, 5}, {timeout = 60}) do squares[#squares + 1] = v end
  print("map: " .. table.concat(squares, " "))

  -- wait: the first failure, without waiting for the rest (here a task
  -- that holds until the gate opens).
  local gate = lmp.Event()
  local slow = executor:submit(function(g) g:wait() return "slow" end, gate)
  local bad = executor:submit(compute, 13)
  local done, not_done = lmp.wait({slow, bad}, {return_when = lmp.FIRST_EXCEPTION})
  print(string.format("wait: %d done (%s), %d still running", #done, done[1]:exception().kind, #not_done))
  gate:set()
  print("then: " .. slow:result())
end
print("executor shut down")

-- What goes wrong in a pool, and what lmp makes of it.  Each failure is an
-- lmp.Error with a kind; the pool survives every one of them.
--
--   * an error in the task: kind "task", remote traceback, original value
--   * a worker that dies mid-task (killed, os.exit, segfault): "worker_lost"
--     (Python's Pool hangs forever here)
--   * a task running past task_timeout: "timeout", the worker is replaced
--   * a result that cannot be sent: "serialize", for that task only
local lmp = require "lmp"

local function divide(a, b)
  if b == 0 then error({code = "EDIV", msg = "division by zero"}) end
  return a / b
end

local pool <close> = lmp.Pool{processes = 2, task_timeout = 1}

local ok, err = pcall(pool.apply, pool, divide, 10, 0)
print(ok, err.kind, err.value.msg)                        --> false task division by zero
print(err.traceback:find("pool_errors.lua:", 1, true) ~= nil)    --> true (the worker's stack)

ok, err = pcall(pool.apply, pool, function() os.exit(1) end)
print(ok, err.kind)                                        --> false worker_lost

ok, err = pcall(pool.apply, pool, function() lmp.sleep(60) end)
print(ok, err.kind)                                        --> false timeout

ok, err = pcall(pool.apply, pool, function() return io.stdout end)
print(ok, err.kind)                                        --> false serialize

-- map raises the first failure; the other items still ran.
ok, err = pcall(pool.map, pool, function(x) return divide(12, x) end, {1, 2, 0, 4})
print(ok, err.kind, err.index)                             --> false task 3

print(table.concat(pool:map(function(x) return divide(12, x) end, {1, 2, 3, 4}), " "))

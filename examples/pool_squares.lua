-- A pool of worker processes: map, map_async and apply_async.
--
--   with Pool(5) as p:
--       print(p.map(square, [1, 2, 3, 4, 5]))
--
-- In Lua the with-block is a <close> variable: leaving the scope terminates
-- the pool, as Python's with-block does.
local lmp = require "lmp"

local function square(n)
  return n * n
end

local function task(id)
  lmp.sleep(0.05) -- some time-consuming work
  return ("Task %d is done!"):format(id)
end

do
  local p <close> = lmp.Pool(5)
  print(table.concat(p:map(square, {1, 2, 3, 4, 5}), ", "))   --> 1, 4, 9, 16, 25
end

local pool = lmp.Pool(3)
print(table.concat(pool:map(task, {1, 2, 3, 4, 5}), " "))

local async = pool:map_async(task, {6, 7, 8, 9, 10})
async:wait() -- the main process could do other work until here
print(table.concat(async:get(), " "))

local result = pool:apply_async(task, {11})
print(result:get())

pool:close()
pool:join()

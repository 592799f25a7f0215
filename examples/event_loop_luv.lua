-- CPU-bound work in processes, awaited from a libuv loop (luv) that stays
-- free for I/O meanwhile -- Python's asyncio with a process pool:
--
--   async def main(loop):
--       with ProcessPoolExecutor() as pool:
--           tasks = [loop.run_in_executor(pool, cpu_bound, i) for i in range(4)]
--           results = await asyncio.gather(*tasks)
--       print(results)
--
-- lmp.luv watches the executor's descriptor on the loop, so results arrive
-- there without a thread and without a busy loop; a coroutine awaits them.
-- A 10 ms heartbeat timer shows the loop going on while the workers compute.
local lmp = require "lmp"
local found, uv = pcall(require, "luv")
if not found then
  print("skipped: lua-luv is not installed")
  return
end
local lu = require "lmp.luv"

local function cpu_bound(x)
  local s = 0
  for i = 0, 1000000 - 1 do s = s + i * i end
  return s + x
end

local executor = lmp.Executor()
lu.attach(executor)

local heartbeats = 0
local heartbeat = uv.new_timer()
heartbeat:start(10, 10, function() heartbeats = heartbeats + 1 end)

coroutine.wrap(function()
  local tasks = {}
  for i = 0, 3 do tasks[#tasks + 1] = executor:submit(cpu_bound, i) end
  local results = lu.gather(tasks)
  print("results: " .. table.concat(results, ", "))
  heartbeat:close()
  executor:shutdown(false) -- no more work: the loop ends once it is done
end)()

uv.run()
print("heartbeats while the workers computed: " .. heartbeats)
executor:shutdown()
print("loop ended, executor shut down")

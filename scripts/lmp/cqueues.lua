-- lmp.cqueues: awaiting AsyncResults and Futures from cqueues coroutines.
--
-- Pools, executors, AsyncResults and Futures are cqueues pollables by
-- themselves (pollfd, events and timeout methods: the pool's descriptor,
-- "r", and a zero timeout once a result is done), so cqueues.poll(x) in a
-- controller sleeps until results may be waiting.  It does not deliver them:
-- await() does, with pool:poll(), which never blocks.
--
-- A descriptor only says that something arrived since someone last
-- delivered.  When one coroutine's poll() also delivers what another one
-- waits for, the other would sleep on a descriptor that poll() has just
-- reset; so await() also waits on a condition variable that the result
-- signals once settled (AsyncResult:_on_done, whichever lmp call settles
-- it).
local cqueues = require "cqueues"
local condition = require "cqueues.condition"
local executor = require "lmp.executor"

local target, value = executor._target, executor._value
local targets, pending, values = executor._targets, executor._pending, executor._values

local M = {}

-- True in a coroutine that cqueues.poll can suspend.
local function in_controller()
  return cqueues.running() ~= nil and coroutine.isyieldable()
end

-- A condition variable that res signals once settled.
local function signal_on_done(res)
  local cond = condition.new()
  res:_on_done(function() cond:signal() end)
  return cond
end

--- lc.await(x) -> x's value; x an AsyncResult or a Future.  Raises x's
--- lmp.Error.  In a cqueues coroutine, suspends it (and only it) until x
--- is done; elsewhere, blocks as x:get() does.
function M.await(x)
  local res, pool = target(x, 1, "await")
  if in_controller() then
    local cond
    while true do
      if not res:ready() then pool:poll() end
      if res:ready() then break end
      cond = cond or signal_on_done(res)
      cqueues.poll(pool, cond)
    end
  end
  return value(x)
end

--- lc.gather(list) -> {n =, v1, v2, ...}: awaits every AsyncResult or
--- Future of the list, the values in list order.  Raises as soon as one has
--- failed (the first in list order if several have).
function M.gather(list)
  local rs, pools, n = targets(list, "gather")
  if in_controller() then
    local conds = {}
    while true do
      local left = pending(list, rs, pools, n)
      if #left == 0 then break end
      local waits = {}
      for pool in pairs(pools) do waits[#waits + 1] = pool end
      for _, res in ipairs(left) do
        conds[res] = conds[res] or signal_on_done(res)
        waits[#waits + 1] = conds[res]
      end
      cqueues.poll(table.unpack(waits))
    end
  end
  return values(list, n)
end

return M

-- lmp.luv: pools and executors on a libuv loop (luv), without a thread and
-- without a busy loop.
--
-- attach() watches the pool's descriptor (pool:fileno()) with a uv_poll
-- handle; when it turns readable the handle's callback runs pool:poll(),
-- which delivers results and runs callbacks on the loop and resets the
-- descriptor.  A broker pool whose descriptor cannot announce results (see
-- its fileno) says so with _tick, and is polled on a uv timer instead.
--
-- await() parks the calling coroutine: it asks the result to call back once
-- settled (AsyncResult:_on_done, from the pool's callback queue, whichever
-- lmp call delivers it) and yields.  That wake-up only queues the coroutine;
-- queued coroutines are resumed from the loop, right after a poll callback
-- and in a prepare handle that runs before the loop sleeps, never from
-- inside an lmp call.  The prepare handle is unreferenced (it keeps no loop
-- alive) except while coroutines wait to be resumed, and it detaches every
-- pool that is closed, terminated or broken and has nothing left to deliver:
-- once the program's own handles are gone, uv.run() returns.
local uv = require "luv"
local executor = require "lmp.executor"
local check = require "lmp.check"

local target, value, pool_of = executor._target, executor._value, executor._pool_of
local targets, pending, values = executor._targets, executor._pending, executor._values
local typeerror, argerror = check.typeerror, check.argerror

local M = {}

local watches = {} -- pool -> {uv =, pool =, poll = uv_poll or nil, timer = uv_timer or nil}
local preps = {}   -- luv module -> its prepare handle
local runq, head, tail, queued = {}, 1, 0, {} -- coroutines to resume, in order

-- The luv module to use: the one given, or luv.
local function checkuv(loop, i, fname)
  if loop == nil then return uv end
  if type(loop) == "table" and type(loop.new_poll) == "function" and type(loop.new_prepare) == "function" then
    return loop
  end
  typeerror(i, fname, "luv module", loop)
end

local function close_handle(h)
  if h and not h:is_closing() then h:close() end
end

local function has_watches(u)
  for _, w in pairs(watches) do
    if w.uv == u then return true end
  end
  return false
end

local function unwatch(w)
  watches[w.pool] = nil
  close_handle(w.poll)
  close_handle(w.timer)
end

-- A pool that takes no more work and has nothing left to deliver needs no
-- watching: the loop may end.
local function finished(pool)
  return pool._state ~= "run" and next(pool._pending) == nil
end

-- Resume the queued coroutines, in order.  An error a coroutine does not
-- catch is raised here, in the loop callback, as luv treats any error of a
-- callback; the coroutines after it stay queued.
local resuming = false
local function flush()
  if resuming then return end
  resuming = true
  while head <= tail do
    local co = runq[head]
    runq[head] = nil
    head = head + 1
    queued[co] = nil
    if coroutine.status(co) == "suspended" then
      local ok, err = coroutine.resume(co)
      if not ok then
        resuming = false
        error(err, 0)
      end
    end
  end
  runq, head, tail = {}, 1, 0
  resuming = false
end

local prepare_cb

-- The prepare handle of luv module u, made on first need.
local function prepare(u)
  local p = preps[u]
  if p then return p end
  p = u.new_prepare()
  p:start(function() prepare_cb(u) end)
  p:unref()
  preps[u] = p
  return p
end

function prepare_cb(u)
  flush()
  for _, w in pairs(watches) do
    if w.uv == u and finished(w.pool) then unwatch(w) end
  end
  local p = preps[u]
  if head > tail then
    if has_watches(u) then
      p:unref()
    else
      preps[u] = nil
      close_handle(p)
    end
  end
end

-- Queue co to be resumed by the loop of luv module u.
local function schedule(co, u)
  if queued[co] then return end
  queued[co] = true
  tail = tail + 1
  runq[tail] = co
  prepare(u):ref() -- the loop must come round to resume it
end

local function service(w)
  w.pool:poll()
  flush()
  if watches[w.pool] == w and finished(w.pool) then unwatch(w) end
end

local function watch(pool, u)
  local w = {uv = u, pool = pool}
  local tick = pool._tick and pool:_tick()
  local h, err
  if tick then
    h, err = u.new_timer()
    if h then
      local ms = math.max(1, math.floor(tick * 1000))
      h:start(ms, ms, function() service(w) end)
      w.timer = h
    end
  else
    h, err = u.new_poll(pool:fileno())
    if h then
      h:start("r", function() service(w) end)
      w.poll = h
    end
  end
  if not h then error("attach: " .. tostring(err), 0) end
  watches[pool] = w
  prepare(u)
  return w
end

--- lu.attach(pool_or_executor [, luv]) -> the same object.  Results and
--- callbacks flow on the loop from now on; the handle goes once the pool is
--- closed (or terminated, or broken) and has delivered everything, or on
--- detach().  `luv` is the luv module to use (default require "luv", whose
--- one loop uv.run() runs).  Attaching again is a no-op.
function M.attach(obj, loop)
  local pool = pool_of(obj, 1, "attach")
  local u = checkuv(loop, 2, "attach")
  local w = watches[pool]
  if w then
    if w.uv ~= u then argerror(2, "attach", "the pool is attached to another luv module") end
    return obj
  end
  watch(pool, u)
  return obj
end

--- lu.detach(pool_or_executor): stop watching it (a no-op if not attached).
--- Coroutines still awaiting its results resume only when some lmp call
--- delivers them, or when it is attached again.
function M.detach(obj)
  local pool = pool_of(obj, 1, "detach")
  local w = watches[pool]
  if w then unwatch(w) end
end

-- The running coroutine, if it can be parked here; nil in the main one.
local function parkable()
  local co, main = coroutine.running()
  if main or not coroutine.isyieldable() then return nil end
  return co
end

--- lu.await(x) -> x's value; x an AsyncResult or a Future.  Raises x's
--- lmp.Error.  In a coroutine, suspends it until x is done, attaching x's
--- pool (to luv) if it is not attached; in the main coroutine, blocks as
--- x:get() does, loop and all.
function M.await(x)
  local res, pool = target(x, 1, "await")
  local co = parkable()
  if co and not res:ready() then
    pool:poll()
    if not res:ready() then
      local w = watches[pool] or watch(pool, uv)
      local u = w.uv
      res:_on_done(function() schedule(co, u) end)
      repeat coroutine.yield() until res:ready()
    end
  end
  return value(x)
end

--- lu.gather(list) -> {n =, v1, v2, ...}: awaits every AsyncResult or
--- Future of the list, the values in list order.  Raises as soon as one has
--- failed (the first in list order if several have).  Blocks in the main
--- coroutine, as await does.
function M.gather(list)
  local rs, pools, n = targets(list, "gather")
  local co = parkable()
  if co then
    local asked = {}
    while true do
      local left = pending(list, rs, pools, n)
      if #left == 0 then break end
      for _, res in ipairs(left) do
        if not asked[res] then
          asked[res] = true
          local w = watches[res._pool] or watch(res._pool, uv)
          local u = w.uv
          res:_on_done(function() schedule(co, u) end)
        end
      end
      coroutine.yield()
    end
  end
  return values(list, n)
end

return M

-- lmp.executor: lmp.Executor and its Futures, lmp.as_completed and
-- lmp.wait -- Python's concurrent.futures, over lmp.Pool's public methods.
--
-- An Executor owns one Pool.  submit() is the pool's apply_async; map()
-- submits the list in chunks, one map_async each; either way a Future wraps
-- the pool's AsyncResult.  lmp runs no Lua behind the program's back, so
-- results reach the parent, and futures finish, while it is inside an lmp
-- call (result, done, as_completed, wait, the executor's poll...), and done
-- callbacks run there, in the parent's Lua thread.
--
-- Every task carries a pool callback that settles its future once: the
-- future leaves its executor's live set (what shutdown{cancel_futures =
-- true} cancels), tells its waiters, then runs its done callbacks.  Waiters
-- are what as_completed and wait register on the futures still running, so
-- they learn of completions in order, without scanning their list on each
-- wake-up.  A done callback that raises is logged and ignored, as Python
-- does: one bad callback must not make some unrelated result() raise.
--
-- Waiting on futures of several executors: as_completed and wait poll each
-- pool involved without blocking, then sleep in one poll(2) on their
-- descriptors (lmp._poll_fds) until one turns readable, the deadline, or a
-- short tick, the first of them.  The tick only covers what a descriptor
-- does not announce (a pool retrying a fork that failed, say); a pool's
-- descriptor wakes for results, deaths and task timeouts.
--
-- Deliberate differences from Python: a worker that dies fails its future
-- with kind "worker_lost" and the executor goes on (no BrokenProcessPool);
-- a timeout raises an lmp.Error of kind "timeout" (Python's TimeoutError);
-- map's chunksize defaults as Pool:map's does, not to 1.
local lmp = require "lmp"

local now = lmp.time
local tointeger, mtype = math.tointeger, math.type
local pack = table.pack

local FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED = "FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED"
local TICK = 0.1 -- seconds: the longest a wait sleeps without looking

-- === argument checks, worded as lauxlib words them ===

local check = require "lmp.check"
local length = check.length
local typename, argerror, typeerror, badself = check.typename, check.argerror, check.typeerror, check.badself
local callable, checkcallable, checkoptions = check.callable, check.checkcallable, check.checkoptions

-- A timeout argument (what names it in messages: "option 'timeout'").
local function checktimeout(t, i, fname, what)
  if t == nil then return nil end
  if type(t) ~= "number" then
    if what then argerror(i, fname, what .. " must be a number") end
    typeerror(i, fname, "number", t)
  end
  if not (t >= 0) then argerror(i, fname, (what or "timeout") .. " must be a non-negative number") end
  return t
end

local function positive_int(v)
  local n = tointeger(v)
  return n ~= nil and n >= 1
end

-- === Future ===

local Future = {}
Future.__index = Future
Future.__name = "lmp.Future"

local seq = 0 -- futures are numbered as they are made: submission order

local function checkfuture(self, fname)
  if getmetatable(self) ~= Future then badself(fname, "lmp.Future expected, got " .. typename(self)) end
end

local function handler(e)
  if type(e) ~= "string" then
    local ok, s = pcall(tostring, e)
    e = ok and s or "(error object is a " .. type(e) .. " value)"
  end
  return debug.traceback(e, 2)
end

-- Call a done callback; an error is logged (logger "lmp.executor") and goes
-- no further.
local function call_back(fn, fut)
  local ok, err = xpcall(fn, handler, fut)
  if ok then return end
  local logged = pcall(function()
    lmp.get_logger("lmp.executor"):error("exception calling callback for %s: %s", tostring(fut), err)
  end)
  if not logged then io.stderr:write("lmp.executor: exception calling callback: ", err, "\n") end
end

-- The pool has settled the future's task: run once, from the pool's
-- callback queue.
local function settle(fut)
  if fut._notified then return end
  fut._notified = true
  fut._live[fut] = nil
  local ws = fut._waiters
  if ws then
    fut._waiters = nil
    for w in pairs(ws) do w(fut) end
  end
  local cbs = fut._cbs
  if cbs then
    fut._cbs = nil
    for i = 1, #cbs do call_back(cbs[i], fut) end
  end
end

-- A future of the executor, and the pool options that settle it.
local function new_future(ex)
  seq = seq + 1
  local fut = setmetatable({_live = ex._live, _pool = ex._pool, _seq = seq}, Future)
  local function settled() settle(fut) end
  return fut, {callback = settled, error_callback = settled}
end

-- Deliver what the pool has for the parent, so that a future whose task
-- finished is seen as done without anyone blocking.
local function refresh(fut)
  local res = fut._res
  if not res:ready() then fut._pool:poll() end
  return res
end

-- Wait for the future up to the timeout: its result object, or raises an
-- lmp.Error of kind "timeout".
local function await(fut, timeout, fname)
  checkfuture(fut, fname)
  checktimeout(timeout, 1, fname)
  local res = fut._res
  if res:ready() or res:wait(timeout) then return res end
  error(lmp.Error("timeout", string.format("the future did not finish within %g s", timeout)), 0)
end

--- fut:result([timeout]) -> the task's value; raises the task's lmp.Error,
--- kind "cancelled" if it was cancelled, kind "timeout" if the timeout
--- passed first.
function Future:result(timeout)
  return await(self, timeout, "result"):get()
end

--- fut:exception([timeout]) -> the task's lmp.Error, or nil if it returned;
--- raises kind "cancelled" if it was cancelled, "timeout" as result() does.
function Future:exception(timeout)
  local res = await(self, timeout, "exception")
  local ok, err = pcall(res.get, res)
  if ok then return nil end
  if res:cancelled() then error(err, 0) end
  return err
end

--- True once the future finished: a value, an error, or cancelled.
function Future:done()
  checkfuture(self, "done")
  return refresh(self):ready()
end

--- True while a worker runs the task.
function Future:running()
  checkfuture(self, "running")
  local res = refresh(self)
  return not res:ready() and res:running()
end

--- Cancel a task no worker has been handed yet: true if the future is
--- (now or already) cancelled, false if it runs or finished.
function Future:cancel()
  checkfuture(self, "cancel")
  return self._res:cancel()
end

function Future:cancelled()
  checkfuture(self, "cancelled")
  return self._res:cancelled()
end

--- fut:add_done_callback(fn): fn(fut) once the future is done; at once if it
--- already is.  Callbacks run in the order they were added.
function Future:add_done_callback(fn)
  checkfuture(self, "add_done_callback")
  checkcallable(fn, 1, "add_done_callback")
  if self._res:ready() then
    call_back(fn, self)
    return
  end
  local cbs = self._cbs
  if not cbs then
    cbs = {}
    self._cbs = cbs
  end
  cbs[#cbs + 1] = fn
end

-- The cqueues pollable protocol (cqueues.poll(fut) in a controller): the
-- pool's descriptor, read events, and a zero timeout once done.
function Future:pollfd()
  checkfuture(self, "pollfd")
  return self._pool:pollfd()
end

function Future:events()
  return "r"
end

function Future:timeout()
  checkfuture(self, "timeout")
  if self._res:ready() then return 0 end
  return self._pool:timeout()
end

function Future:__tostring()
  local res, state = self._res, nil
  if not res:ready() then
    state = res:running() and "running" or "pending"
  elseif res:cancelled() then
    state = "cancelled"
  else
    state = res:successful() and "finished" or "failed"
  end
  return "lmp.Future(" .. state .. ")"
end

-- === Executor ===

local Executor = {}
Executor.__index = Executor
Executor.__name = "lmp.Executor"

local function checkexecutor(self, fname)
  if getmetatable(self) ~= Executor then badself(fname, "lmp.Executor expected, got " .. typename(self)) end
  if self._closed then check.closed("lmp.Executor") end
end

local function checkopen(self, fname)
  checkexecutor(self, fname)
  if self._shutdown then badself(fname, "executor is shut down") end
end

--- ex:submit(fn, ...) -> a Future of fn(...) run in a worker.
function Executor:submit(fn, ...)
  checkopen(self, "submit")
  checkcallable(fn, 1, "submit")
  local fut, opts = new_future(self)
  fut._res = self._pool:apply_async(fn, pack(...), opts)
  self._live[fut] = true
  return fut
end

-- The items of a list, or of an iterator function called until it returns
-- nil (all of them now, as Python's map drains its iterables).
local function items_of(src, i, fname)
  if type(src) == "table" and not callable(src) then return src, length(src) end
  if not callable(src) then typeerror(i, fname, "table or function", src) end
  local list, n = {}, 0
  while true do
    local v = src()
    if v == nil then return list, n end
    n = n + 1
    list[n] = v
  end
end

-- The index a codec error names is the one inside its chunk.
local function shift_index(err, base)
  if lmp.is_error(err) and type(err.message) == "string" then
    err.message = err.message:gsub("^(cannot send list)%[(%d+)%]", function(pre, k)
      return string.format("%s[%d]", pre, tonumber(k) + base)
    end)
  end
  return err
end

local map_keys = {chunksize = true, timeout = true}

--- for i, v in ex:map(fn, list_or_iterator [, {chunksize =, timeout =}])
--- Everything is submitted now; the loop yields fn(list[i]) in order, and
--- raises the first task error, or kind "timeout" once `timeout` seconds
--- from this call have passed.  Leaving the loop early, or an error,
--- cancels the chunks no worker has taken.
function Executor:map(fn, src, opts)
  checkopen(self, "map")
  checkcallable(fn, 1, "map")
  local list, n = items_of(src, 2, "map")
  local size, deadline
  if opts ~= nil then
    checkoptions(opts, 3, "map", map_keys)
    if opts.chunksize ~= nil and not positive_int(opts.chunksize) then
      argerror(3, "map", "option 'chunksize' must be a positive integer")
    end
    size = tointeger(opts.chunksize)
    local t = checktimeout(opts.timeout, 3, "map", "option 'timeout'")
    if t then deadline = now() + t end
  end
  size = size or math.max(1, (n + 4 * self._n - 1) // (4 * self._n))
  local chunks, counts, nchunks = {}, {}, 0
  local k, vals, base, pos, closed = 0, nil, 0, 0, false

  local function close()
    if closed then return end
    closed = true
    for i = k + 1, nchunks do chunks[i]:cancel() end
  end

  local ok, err = pcall(function()
    for first = 1, n, size do
      local count = math.min(size, n - first + 1)
      local fut, o = new_future(self)
      o.chunksize = count
      local ok2, res = pcall(self._pool.map_async, self._pool, fn,
                             table.move(list, first, first + count - 1, 1, {n = count}), o)
      if not ok2 then error(shift_index(res, first - 1), 0) end
      fut._res = res
      self._live[fut] = true
      nchunks = nchunks + 1
      chunks[nchunks], counts[nchunks] = fut, count
    end
  end)
  if not ok then
    close()
    error(err, 0)
  end

  local function step()
    if closed then return nil end
    if vals == nil or pos - base >= counts[k] then
      if k >= nchunks then
        close()
        return nil
      end
      k = k + 1
      local fut = chunks[k]
      chunks[k] = false
      local t = deadline and math.max(0, deadline - now())
      local got, v = pcall(fut.result, fut, t)
      if not got then
        close()
        if lmp.is_error(v) and mtype(v.index) == "integer" then v.index = v.index + pos end
        error(v, 0)
      end
      vals, base = v, pos
    end
    pos = pos + 1
    return pos, vals[pos - base]
  end

  return step, nil, nil, setmetatable({}, {__close = close})
end

local shutdown_keys = {wait = true, cancel_futures = true}

--- ex:shutdown([{wait = true, cancel_futures = false}]) (or shutdown(wait)):
--- no more submissions; cancel_futures cancels what no worker has taken;
--- wait waits for the rest to finish and the workers to exit.  Again is a
--- no-op (but may still wait).
function Executor:shutdown(opts)
  checkexecutor(self, "shutdown")
  local wait, cancel = true, false
  if type(opts) == "boolean" then
    wait = opts
  elseif opts ~= nil then
    checkoptions(opts, 1, "shutdown", shutdown_keys)
    for key in pairs(shutdown_keys) do
      if opts[key] ~= nil and type(opts[key]) ~= "boolean" then
        argerror(1, "shutdown", "option '" .. key .. "' must be a boolean")
      end
    end
    if opts.wait ~= nil then wait = opts.wait end
    cancel = opts.cancel_futures == true
  end
  self._shutdown = true
  if cancel then
    local live = {}
    for fut in pairs(self._live) do live[#live + 1] = fut end
    table.sort(live, function(a, b) return a._seq < b._seq end)
    for i = 1, #live do live[i]._res:cancel() end
  end
  self._pool:close()
  if wait then self._pool:join() end
end

--- A descriptor that turns readable when results are waiting (the pool's).
function Executor:fileno()
  checkexecutor(self, "fileno")
  return self._pool:fileno()
end

--- Deliver what has arrived and run due callbacks, without blocking: the
--- number of results delivered.
function Executor:poll()
  checkexecutor(self, "poll")
  return self._pool:poll()
end

-- The cqueues pollable protocol, as the pool's.
function Executor:pollfd()
  checkexecutor(self, "pollfd")
  return self._pool:pollfd()
end

function Executor:events()
  return "r"
end

function Executor:timeout()
  checkexecutor(self, "timeout")
  return self._pool:timeout()
end

--- The pool's counters and workers (see Pool:stats()).
function Executor:stats()
  checkexecutor(self, "stats")
  return self._pool:stats()
end

--- ex:close(): shutdown{wait = true}, as Python's with-block does; the
--- executor is then closed: every use raises.  Again does nothing.
function Executor:close()
  if getmetatable(self) ~= Executor then checkexecutor(self, "close") end
  if self._closed then return end
  self:shutdown(true)
  self._closed = true
end

Executor.__close = Executor.close

-- Never blocks: the workers exit once the submitted work is done (and are
-- killed when the pool itself is collected).
function Executor:__gc()
  if not self._shutdown then pcall(self._pool.close, self._pool) end
end

-- === the program's end ===
--
-- Work submitted to an executor that was never shut down is finished when
-- the program ends, as Python's interpreter does at exit, while a
-- collection in the middle of a program never waits.  A finalizer cannot
-- tell the two apart by itself, so a "closer" is made after each executor:
-- Lua finalizes in the reverse order of creation, so when the state closes
-- the newest closer runs before every executor is collected, and it is the
-- current one only then (an older closer collected in a normal cycle finds
-- a newer one current and does nothing).  It shuts down, waiting, each
-- executor of this process still running.

local open = setmetatable({}, {__mode = "k"}) -- executor -> pid that made it
local closer

local function at_close(c)
  if c ~= closer then return end
  local pid = lmp.current_process().pid
  for ex, owner in pairs(open) do
    if owner == pid and not ex._shutdown then pcall(ex.shutdown, ex, true) end
  end
end

local function track(ex)
  open[ex] = lmp.current_process().pid
  closer = setmetatable({}, {__gc = at_close})
  return ex
end

function Executor:__tostring()
  return string.format("lmp.Executor(%d workers, %s)", self._n,
                       self._closed and "closed" or self._shutdown and "shut down" or "running")
end

local executor_keys = {max_workers = true, initializer = true, initargs = true,
                       max_tasks_per_child = true, task_timeout = true, start_method = true,
                       max_memory_per_child = true,
                       -- a broker pool (lmp.Pool{broker = ...}) instead of local processes
                       broker = true, queue = true, visibility_timeout = true,
                       max_deliveries = true, secret = true, connect_timeout = true,
                       result_ttl = true}
local broker_keys = {"broker", "queue", "visibility_timeout", "max_deliveries", "secret",
                     "connect_timeout", "result_ttl"}

local function options(...)
  local a = ...
  if type(a) == "table" and not callable(a) then
    if select("#", ...) > 1 then argerror(2, "Executor", "no arguments expected after the options table") end
    checkoptions(a, 1, "Executor", executor_keys)
    local function field(name, ok, msg)
      if a[name] ~= nil and not ok(a[name]) then argerror(1, "Executor", "field '" .. name .. "' " .. msg) end
    end
    field("max_workers", positive_int, "must be a positive integer")
    field("initializer", callable, "must be callable")
    field("initargs", function(v) return type(v) == "table" end, "must be a table")
    field("max_tasks_per_child", positive_int, "must be a positive integer")
    field("task_timeout", function(v) return type(v) == "number" and v > 0 end, "must be a positive number")
    field("max_memory_per_child", positive_int, "must be a positive integer (bytes)")
    field("start_method", function(v) return type(v) == "string" end, "must be a string")
    return a
  end
  if select("#", ...) > 1 then argerror(2, "Executor", "no arguments expected after max_workers") end
  if a ~= nil then
    if type(a) ~= "number" then typeerror(1, "Executor", "number or table", a) end
    if not positive_int(a) then argerror(1, "Executor", "max_workers must be a positive integer") end
  end
  return {max_workers = a}
end

-- The Pool options for the Executor options o (method: a context's).
local function pool_options(o, n, method)
  if o.broker == nil then
    return {processes = n, initializer = o.initializer, initargs = o.initargs,
            maxtasksperchild = o.max_tasks_per_child, task_timeout = o.task_timeout,
            max_memory_per_child = o.max_memory_per_child, start_method = o.start_method or method}
  end
  local po = {}
  for _, k in ipairs(broker_keys) do po[k] = o[k] end
  return po
end

--- lmp.Executor([max_workers]) or lmp.Executor{max_workers =, initializer =,
--- initargs =, max_tasks_per_child =, task_timeout =, max_memory_per_child =,
--- start_method =}, or
--- lmp.Executor{broker = url, queue =, secret =, ...} on a broker's workers
-- Called as new(method, ...): `method` is a context's start method, used
-- unless the options name one.
local function new(method, ...)
  local o = options(...)
  local n = tointeger(o.max_workers) or lmp.cpu_count()
  local ok, pool = pcall(lmp.Pool, pool_options(o, n, method))
  if not ok then
    check.reraise(pool, function(msg)
      return (msg:gsub("^bad argument #1 to 'Pool'", "bad argument #1 to 'Executor'")
                 :gsub("field 'processes'", "field 'max_workers'")
                 :gsub("field 'maxtasksperchild'", "field 'max_tasks_per_child'"))
    end)
  end
  return track(setmetatable({_pool = pool, _n = n, _live = {}, _shutdown = false, _closed = false},
                            Executor))
end

-- === waiting on many futures ===

-- The distinct futures of a list, or of the keys (or values) of a table
-- such as {[fut] = input}, in submission order; and the set of their pools.
local function collect(fs, fname)
  if type(fs) ~= "table" then typeerror(1, fname, "table", fs) end
  local list, seen, pools = {}, {}, {}
  local function add(f)
    if seen[f] then return end
    seen[f] = true
    list[#list + 1] = f
    pools[f._pool] = true
  end
  local n = length(fs)
  if n > 0 then
    for i = 1, n do
      local f = fs[i]
      if getmetatable(f) ~= Future then
        argerror(1, fname, string.format("lmp.Future expected at index %d, got %s", i, typename(f)))
      end
      add(f)
    end
  else
    for k, v in pairs(fs) do
      if getmetatable(k) == Future then
        add(k)
      elseif getmetatable(v) == Future then
        add(v)
      else
        argerror(1, fname, "lmp.Future expected, got " .. typename(v) .. " at key " .. tostring(k))
      end
    end
    table.sort(list, function(a, b) return a._seq < b._seq end)
  end
  return list, pools
end

local function pump(pools)
  for pool in pairs(pools) do pool:poll() end
end

-- Sleep until a busy pool's descriptor is readable (or the deadline, or
-- the tick), then deliver what every busy pool has.
local function block(busy, deadline)
  local fds, list = {}, {}
  for pool in pairs(busy) do
    list[#list + 1] = pool
    fds[#fds + 1] = pool:fileno()
  end
  local t = TICK
  if deadline then t = math.min(t, math.max(0, deadline - now())) end
  lmp._poll_fds(fds, t)
  for i = 1, #list do list[i]:poll() end
end

-- Follow the futures of `list`: `on_done(f)` for each one already done now,
-- and later for each as it finishes.  Returns the count of unfinished
-- futures per pool (kept up to date) and a function that stops following.
local function follow(list, on_done)
  local pending, busy = {}, {}
  for i = 1, #list do
    local f = list[i]
    if f._res:ready() then
      on_done(f)
    else
      pending[f] = true
      busy[f._pool] = (busy[f._pool] or 0) + 1
    end
  end
  local function waiter(f)
    pending[f] = nil
    local c = busy[f._pool] - 1
    busy[f._pool] = c > 0 and c or nil
    on_done(f)
  end
  for f in pairs(pending) do
    local ws = f._waiters
    if not ws then
      ws = {}
      f._waiters = ws
    end
    ws[waiter] = true
  end
  local function release()
    for f in pairs(pending) do
      local ws = f._waiters
      if ws then ws[waiter] = nil end
    end
  end
  return busy, release
end

--- for fut in lmp.as_completed(futs [, timeout]) -- the futures already done
--- first, then each as it finishes; raises kind "timeout" when the timeout
--- (from this call) passes with futures unfinished.
local function as_completed(fs, timeout)
  local list, pools = collect(fs, "as_completed")
  checktimeout(timeout, 2, "as_completed")
  local deadline = timeout and now() + timeout
  pump(pools)
  local q, qh, qt = {}, 1, 0
  local busy, release = follow(list, function(f)
    qt = qt + 1
    q[qt] = f
  end)
  local function step()
    while qh > qt do
      if next(busy) == nil then
        release()
        return nil
      end
      if deadline and now() >= deadline then
        release()
        local left = 0
        for _, c in pairs(busy) do left = left + c end
        error(lmp.Error("timeout", string.format("%d (of %d) futures unfinished", left, #list)), 0)
      end
      block(busy, deadline)
    end
    local f = q[qh]
    q[qh] = nil
    qh = qh + 1
    return f
  end
  return step, nil, nil, setmetatable({}, {__close = release})
end

local wait_keys = {timeout = true, return_when = true}
local conditions = {[FIRST_COMPLETED] = true, [FIRST_EXCEPTION] = true, [ALL_COMPLETED] = true}

local function failed(f)
  local res = f._res
  return res:ready() and not res:cancelled() and not res:successful()
end

--- lmp.wait(futs [, {timeout =, return_when =}]) -> done, not_done (arrays)
--- Returns once return_when holds (ALL_COMPLETED by default) or the
--- timeout passes; never raises a timeout.
local function wait(fs, opts)
  local list, pools = collect(fs, "wait")
  local timeout, when = nil, ALL_COMPLETED
  if type(opts) == "number" then
    timeout = checktimeout(opts, 2, "wait")
  elseif opts ~= nil then
    checkoptions(opts, 2, "wait", wait_keys)
    timeout = checktimeout(opts.timeout, 2, "wait", "option 'timeout'")
    if opts.return_when ~= nil then
      when = opts.return_when
      if not conditions[when] then
        argerror(2, "wait", "option 'return_when' must be FIRST_COMPLETED, FIRST_EXCEPTION or ALL_COMPLETED")
      end
    end
  end
  local deadline = timeout and now() + timeout
  pump(pools)
  local ndone, nfailed = 0, 0
  local busy, release = follow(list, function(f)
    ndone = ndone + 1
    if failed(f) then nfailed = nfailed + 1 end
  end)
  local function satisfied()
    if next(busy) == nil then return true end
    if when == FIRST_COMPLETED then return ndone > 0 end
    return when == FIRST_EXCEPTION and nfailed > 0
  end
  while not satisfied() and not (deadline and now() >= deadline) do block(busy, deadline) end
  release()
  local done, not_done = {}, {}
  for i = 1, #list do
    local f = list[i]
    if f._res:ready() then done[#done + 1] = f else not_done[#not_done + 1] = f end
  end
  return done, not_done
end

-- === coroutines ===

-- What lmp.await and the event-loop modules wait on: an AsyncResult (of a
-- local or a broker pool) or a Future.  Returns the AsyncResult behind it
-- and its pool; raises a bad argument otherwise.
local function target(x, i, fname, where)
  local mt = getmetatable(x)
  if mt == Future and x._res then return x._res, x._pool end
  if type(mt) == "table" and rawget(mt, "__name") == "lmp.AsyncResult" and x._pool then
    return x, x._pool
  end
  argerror(i, fname, "lmp.AsyncResult or lmp.Future expected" .. (where or "") .. ", got " .. typename(x))
end

-- The value of a done (or, blocking, of any) AsyncResult or Future; raises
-- its lmp.Error.
local function value(x)
  if getmetatable(x) == Future then return x:result() end
  return x:get()
end

-- For gather: the AsyncResults and pools behind a list of AsyncResults and
-- Futures, and its length; raises a bad argument naming the bad item.
local function targets(list, fname)
  if type(list) ~= "table" then typeerror(1, fname, "table", list) end
  local n = length(list)
  local rs, pools = {}, {}
  for i = 1, n do
    local res, pool = target(list[i], 1, fname, " at index " .. i)
    rs[i], pools[pool] = res, true
  end
  return rs, pools, n
end

-- One look for gather: deliver what the pools have, raise the first
-- failure in list order, and return the results still pending (empty once
-- all are settled).
local function pending(list, rs, pools, n)
  for pool in pairs(pools) do pool:poll() end
  local left = {}
  for i = 1, n do
    if not rs[i]:ready() then
      left[#left + 1] = rs[i]
    elseif not rs[i]:successful() then
      value(list[i])
    end
  end
  return left
end

-- gather's result: {n =, v1, v2, ...}.
local function values(list, n)
  local out = {n = n}
  for i = 1, n do out[i] = value(list[i]) end
  return out
end

-- The pool of a Pool or an Executor; raises a bad argument otherwise.
local function pool_of(x, i, fname)
  local mt = getmetatable(x)
  if mt == Executor then return x._pool end
  if type(mt) == "table" and rawget(mt, "__name") == "lmp.Pool" and x._pending then return x end
  typeerror(i, fname, "lmp.Pool or lmp.Executor", x)
end

--- lmp.await(x) -> x's value (raises its lmp.Error); x an AsyncResult or a
--- Future.  In a coroutine other than the main one, each time it runs it
--- delivers what x's pool has (pool:poll(), which never blocks), returns if
--- x is done, and otherwise yields x, alone, to whoever resumed the
--- coroutine; resume it with no values, once x:pollfd() is readable or
--- whenever you like (an early resume only yields x again).  In the main
--- coroutine, or one that cannot yield, it blocks as x:get() does.
local function await(x)
  local res, pool = target(x, 1, "await")
  local _, main = coroutine.running()
  if not main and coroutine.isyieldable() then
    while not res:ready() do
      pool:poll()
      if res:ready() then break end
      coroutine.yield(x)
    end
  end
  return value(x)
end

return {
  await = await,
  _target = target,
  _value = value,
  _pool_of = pool_of,
  _targets = targets,
  _pending = pending,
  _values = values,
  Executor = function(...) return new(nil, ...) end,
  _new = new,
  as_completed = as_completed,
  wait = wait,
  FIRST_COMPLETED = FIRST_COMPLETED,
  FIRST_EXCEPTION = FIRST_EXCEPTION,
  ALL_COMPLETED = ALL_COMPLETED,
}

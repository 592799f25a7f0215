-- lmp.result: lmp.AsyncResult and the apply/map/imap machinery of lmp.Pool,
-- one implementation for the pool on local workers (scripts/lmp/pool.lua,
-- over bindings/lpool.c) and the pool on a broker (scripts/lmp/broker.lua).
--
-- Every submitted unit (an apply task, a chunk of a map) has a ticket and a
-- handler in pool._pending; the backend's dispatch takes what has arrived
-- and calls handler:_settle(how, value) (how: "ok", "stored", "partial" or
-- "error").  Callbacks are never called from inside a settle: they go to
-- pool._cbq, a queue that the lmp calls (get, wait, join, imap's iterator,
-- poll, cancel, terminate) run, so a callback that raises leaves every
-- result in a consistent state and the callbacks after it still run at the
-- next call.
--
-- M.new(B) builds the class and installs apply, apply_async, map,
-- map_async, starmap, starmap_async, imap and imap_unordered on B.Pool.  The
-- backend B says what differs between the two kinds of pool:
--   lmp, Pool, check_running(pool, fname)
--   dispatch(pool, deadline)   settle what arrives, waiting until deadline
--                              (nil: for ever) for something: nil, or
--                              "timeout" once the deadline has passed, or
--                              "closed" once nothing more can come
--   submit_apply(pool, fn, args, n [, opts]) -> ticket
--   submit(pool, tag, fr, list, count [, first [, values [, opts]]]) ->
--                              ticket: one chunk, items first.. of list
--                              (all of it without first), its values
--                              stored in values when the backend can
--   submit_keys, check_submit(opts, i, fname)   optional: options of the
--                              backend's own that submissions take (opts)
--   encode_fn(fn) -> fr        the function of a map or imap
--   cancel(pool, t)            true if the unit t will now never run (its
--                              handler is dropped), false if its result
--                              will still come (it is then ignored)
--   state(pool, t)             "queued", "running"...; absent when the
--                              backend cannot tell (then no result can be
--                              cancelled, unless it has revoke, and none
--                              is said to be running)
--   stop(pool, t)              optional: cancel the unit t, or stop it
--                              where it runs: true if it will not finish
--   revoke(pool, ts, terminate)   optional, for a backend without state:
--                              AsyncResult:cancel of the units ts (a set);
--                              true if the result is cancelled (the units
--                              withdrawn are dropped from pool._pending)
--   pollfd(pool), tick(pool)   AsyncResult:pollfd() and, while pending,
--                              AsyncResult:timeout() (tick optional)
--   default_chunksize(pool, n), window(pool), new_values(n), isatty(fd)
--   flush(pool)                optional: after the chunks of a map are sent
--   profile, tag(pool, job, opts, tag)   optional: the option 'profile'
--   map_error(e, first), item_error(e, k, i)   optional: the error of a
--                              failed chunk for the map, for its k-th item i
--   countdown                  true if submissions take opts.countdown (the
--                              broker then holds a retry until it is due)
--   fast_apply(Pool, AsyncResult) -> apply   optional: apply(pool, fn, args
--                              [, n]) makes the common apply_async whole (the
--                              AsyncResult as submit_apply below makes it,
--                              in pool._pending) or returns nothing when the
--                              call is not the common one
--
-- Retries: a unit (an apply task, a map's chunk) that fails with an error of
-- kind "task", "timeout" or "worker_lost" is sent again, up to `retries`
-- more times, after retry_backoff * 2^(attempt-1) seconds (at most
-- retry_backoff_max), jittered down to half of that.  The decision is made
-- here, where the unit settles, so retry_if runs in the caller.  A broker
-- holds the retry (countdown); a local pool's retry is held in pool._held
-- and submitted by the backend's dispatch (R.release) once due, the wait of
-- every call cut short to the next due time.  The final error carries
-- `attempts`.
local check = require "lmp.check"
local tags = require("lmp.core").pool.tags -- the task tags, as bindings/lpool.h defines them

local M = {}

local tointeger = math.tointeger
local argerror, typeerror, badself = check.argerror, check.typeerror, check.badself
local callable, checkcallable, checkoptions = check.callable, check.checkcallable, check.checkoptions
local checkself, length = check.checkself, check.length

-- === argument checks, worded as lauxlib words them ===

local function checktimeout(t, i, fname)
  if t == nil then return nil end
  if type(t) ~= "number" then typeerror(i, fname, "number", t) end
  if not (t >= 0) then argerror(i, fname, "timeout must be a non-negative number") end
  return t
end

local function optcallable(opts, key, i, fname)
  local f = opts[key]
  if f ~= nil and not callable(f) then argerror(i, fname, "option '" .. key .. "' must be callable") end
  return f
end

-- === retries ===

local RETRY_KINDS = {task = true, timeout = true, worker_lost = true}
local BACKOFF, BACKOFF_MAX = 1, 600 -- seconds: the defaults of retry_backoff, retry_backoff_max
local NO_RETRY = {retries = 0, backoff = BACKOFF, max = BACKOFF_MAX}

local function seconds_ok(v) return type(v) == "number" and v >= 0 and v < 9e9 end

--- Check the retry options of a call (what: "option") or a Pool (what:
--- "field") in o, argument i of fname.
function M.check_retry(o, i, fname, what)
  local function bad(key, msg) argerror(i, fname, what .. " '" .. key .. "' " .. msg) end
  local r = o.retries
  if r ~= nil and not (type(r) == "number" and tointeger(r) and r >= 0 and r <= 0x7fffffff) then
    bad("retries", "must be a non-negative integer")
  end
  if o.retry_backoff ~= nil and not seconds_ok(o.retry_backoff) then
    bad("retry_backoff", "must be a non-negative number of seconds")
  end
  if o.retry_backoff_max ~= nil and not seconds_ok(o.retry_backoff_max) then
    bad("retry_backoff_max", "must be a non-negative number of seconds")
  end
  if o.retry_if ~= nil and not callable(o.retry_if) then bad("retry_if", "must be callable") end
end

M.retry_keys = {retries = true, retry_backoff = true, retry_backoff_max = true}

--- A Pool's retry defaults from its (checked) options.
function M.retry_defaults(o)
  if o.retries == nil and o.retry_backoff == nil and o.retry_backoff_max == nil then return NO_RETRY end
  return {retries = tointeger(o.retries) or 0, backoff = o.retry_backoff or BACKOFF,
          max = o.retry_backoff_max or BACKOFF_MAX}
end

-- The retry plan of a call: its options over the pool's defaults; nil
-- when the call makes no retry.
local function plan_of(pool, opts)
  local d = pool._retry or NO_RETRY
  if opts == nil or (opts.retries == nil and opts.retry_backoff == nil and opts.retry_backoff_max == nil
                     and opts.retry_if == nil) then
    return d.retries > 0 and d or nil
  end
  local r = tointeger(opts.retries) or d.retries
  if r == 0 then return nil end
  return {retries = r, backoff = opts.retry_backoff or d.backoff, max = opts.retry_backoff_max or d.max,
          retry_if = opts.retry_if}
end

-- A call's options for a retry the broker holds `delay` seconds.
local function delayed(opts, delay)
  local o = {}
  for k, v in pairs(opts or {}) do o[k] = v end
  o.eta, o.countdown = nil, delay
  return o
end

-- Seconds before the attempt after `attempt`: the backoff doubled each
-- time, capped, and jittered uniformly down to half.
local function backoff(plan, attempt)
  local d = math.min(plan.max, plan.backoff * 2 ^ (attempt - 1))
  return d * (0.5 + 0.5 * math.random())
end

local function checkchunksize(c, i, fname, what)
  if c == nil then return nil end
  local n = tointeger(c)
  if not n or n < 1 then argerror(i, fname, (what or "chunksize") .. " must be a positive integer") end
  return n
end

-- === callbacks ===

--- A pool's callback queue: a FIFO of (function, argument) pairs; q.h is
--- the next pair, q.t the last one.
function M.new_queue()
  return {h = 1, t = 0}
end

local function queue_callback(pool, f, arg)
  local q = pool._cbq
  local t = q.t + 1
  q.t = t
  q[2 * t - 1], q[2 * t] = f, arg
end

-- Run queued callbacks in order.  One that raises propagates its error;
-- the ones after it stay queued for the next call.
local function run_callbacks(pool)
  local q = pool._cbq
  while q.h <= q.t do
    local h = q.h
    local f, arg = q[2 * h - 1], q[2 * h]
    q[2 * h - 1], q[2 * h] = nil, nil
    q.h = h + 1
    if q.h > q.t then q.h, q.t = 1, 0 end
    f(arg)
  end
end
M.run_callbacks = run_callbacks

-- === errors ===

-- A task's error about a global the workers lack though this process has
-- it: the global was most likely defined after the workers started (they
-- have the globals of the moment they were made), so say so.
local function hint(e)
  if type(e) ~= "table" or e.kind ~= "task" or type(e.message) ~= "string" then return end
  local name = e.message:match("a nil value %(global '([%a_][%w_]*)'%)")
  if name and rawget(_G, name) ~= nil then
    e.message = string.format("%s (hint: this process has a global '%s', but the pool's workers "
      .. "started before it was defined: define it before creating the pool, or capture it as "
      .. "an upvalue by making it a local)", e.message, name)
  end
end

--- A backend's failed event (how: "error", or "partial" with the errors
--- of a map's items in v[2]), with hints added to its errors.
function M.hint(how, v)
  if how == "error" then
    hint(v)
  elseif how == "partial" then
    for _, e in pairs(v[2]) do hint(e) end
  end
end

--- Settle every pending unit of a pool with the error err (the callbacks
--- are queued, not run).
function M.settle_all(pool, err)
  local pending = pool._pending
  for t, h in pairs(pending) do
    pending[t] = nil
    h:_settle("error", err)
  end
end

-- Call the functions an event-loop module left on a settled result.
local function wake(res)
  local ws = res._wake
  res._wake = nil
  for i = 1, #ws do ws[i](res) end
end

local function same(e) return e end

function M.new(B)
  local lmp, Pool, check_running = B.lmp, B.Pool, B.check_running
  local dispatch = B.dispatch
  local now = lmp.time
  local map_error, item_error = B.map_error or same, B.item_error or same
  local R = {}

  -- A unit held for its retry has a table for a ticket: it is queued, and
  -- taken back by dropping it (R.release then skips it).
  local function cancel_unit(pool, t)
    if type(t) == "table" then return true end
    return B.cancel(pool, t)
  end
  local function stop_unit(pool, t)
    if type(t) == "table" then return true end
    return (B.stop or B.cancel)(pool, t)
  end
  local unit_state = B.state and function(pool, t)
    if type(t) == "table" then return "queued" end
    return B.state(pool, t)
  end

  -- === AsyncResult ===

  local AsyncResult = {}
  AsyncResult.__index = AsyncResult
  AsyncResult.__name = "lmp.AsyncResult"
  R.AsyncResult = AsyncResult

  -- Settle a result once: queue its callback or error callback, then its
  -- wake-ups.
  local function finish(res, ok, value)
    if res._done then return end
    res._done, res._ok, res._value = true, ok, value
    if res._bar then res._bar:finish() end
    local pool = res._pool
    if ok and res._cb then
      queue_callback(pool, res._cb, value)
    elseif not ok and res._eb then
      queue_callback(pool, res._eb, value)
    end
    if res._wake then queue_callback(pool, wake, res) end
    local tickets = res._tickets
    if tickets and not ok then
      -- A failed map: chunks no worker has seen are not run at all.
      for t in pairs(tickets) do
        if cancel_unit(pool, t) then pool._pending[t] = nil end
      end
    end
    res._tickets = nil
  end

  -- === retries ===

  -- Send unit h again after `delay` seconds: a broker holds it
  -- (countdown); a local pool's unit waits in pool._held, its ticket a
  -- table, until R.release submits it.  False (and the error) if it could
  -- not be sent.
  local function again(pool, h, delay)
    if B.countdown then
      local ok, t = pcall(h._resend, h, delay)
      if not ok then return false, t end
      pool._pending[t] = h
      h:_ticket(t)
      return true
    end
    local key, due = {}, now() + delay
    pool._pending[key] = h
    h:_ticket(key)
    local held = pool._held
    if not held then
      held = {}
      pool._held = held
    end
    held[#held + 1] = {due, key, h}
    if not pool._held_due or due < pool._held_due then pool._held_due = due end
    return true
  end

  -- Unit h (of pool, with plan) failed with e: e gets its count of
  -- attempts; true if the unit goes again.
  local function failed_again(pool, h, plan, e)
    if type(e) ~= "table" or not RETRY_KINDS[e.kind] then return false end
    local attempt = h._attempt or 1
    e.attempts = attempt
    if not plan or attempt > plan.retries then return false end
    if plan.retry_if then
      local ok, yes = pcall(plan.retry_if, e)
      if not ok then e.retry_if_error = yes end
      if not ok or not yes then return false end
    end
    h._attempt = attempt + 1
    local ok, err = again(pool, h, backoff(plan, attempt))
    if not ok then e.retry_error = err end
    return ok
  end

  --- Submit a local pool's held units that are due (for its dispatch): the
  --- time the next one is due, or nil.
  function R.release(pool)
    local due = pool._held_due
    if not due then return nil end
    local t = now()
    if t < due then return due end
    local held, pending = pool._held, pool._pending
    local keep, next_due = {}, nil
    for i = 1, #held do
      local u = held[i]
      local key, h = u[2], u[3]
      if pending[key] == h then -- not dropped meanwhile (cancelled, terminated)
        if u[1] > t then
          keep[#keep + 1] = u
          if not next_due or u[1] < next_due then next_due = u[1] end
        else
          pending[key] = nil
          local ok, tk = pcall(h._resend, h)
          if ok then
            pending[tk] = h
            h:_ticket(tk)
          else
            finish(rawget(h, "job") or h, false, tk)
          end
        end
      end
    end
    pool._held, pool._held_due = keep, next_due
    return next_due
  end

  --- Seconds until a local pool's next held unit is due, or nil.
  function R.held_wait(pool)
    local due = pool._held_due
    return due and math.max(0, due - now()) or nil
  end

  -- The handler of an apply task is its result (finish, made short: this
  -- runs once per task).
  function AsyncResult:_settle(how, v)
    if self._done then return end
    local ok = how == "ok"
    if not ok and failed_again(self._pool, self, self._plan, v) then return end
    self._done, self._ok, self._value = true, ok, v
    local f
    if ok then f = self._cb else f = self._eb end
    if f then queue_callback(self._pool, f, v) end
    if self._wake then queue_callback(self._pool, wake, self) end
  end

  -- For lmp.await, lmp.luv and lmp.cqueues: fn(res) once the result is
  -- settled, from the pool's callback queue (so after its own callback),
  -- whichever lmp call delivers it.  False, and no call, if it already is.
  function AsyncResult:_on_done(fn)
    if self._done then return false end
    local ws = self._wake
    if not ws then
      ws = {}
      self._wake = ws
    end
    ws[#ws + 1] = fn
    return true
  end

  local bar_tick = require("lmp.progress").TICK -- waits with a progress bar wake this often

  -- Dispatch until the result is done or the timeout passes; true if done.
  local function waitfor(res, timeout, fname)
    if getmetatable(res) ~= AsyncResult then checkself(res, AsyncResult, fname) end
    if timeout ~= nil then checktimeout(timeout, 1, fname) end
    local pool = res._pool
    if pool._cbq.t > 0 then run_callbacks(pool) end
    if res._done then return true end
    local deadline
    if timeout ~= nil then deadline = now() + timeout end
    repeat
      local bar = res._bar
      if bar then
        -- Wake on the bar's tick to redraw its clock.
        local tick = now() + bar_tick
        local r = dispatch(pool, deadline and math.min(deadline, tick) or tick)
        if r == "timeout" and not res._done and (not deadline or now() < deadline) then
          bar:refresh()
        elseif r ~= nil then
          return res._done == true
        end
      elseif dispatch(pool, deadline) ~= nil then
        return res._done == true
      end
    until res._done
    return true
  end

  --- Wait until the result is ready or the timeout passes: true once ready.
  function AsyncResult:wait(timeout)
    return waitfor(self, timeout, "wait") == true
  end

  --- The value, nil and "timeout", or raises the task's lmp.Error.
  function AsyncResult:get(timeout)
    if timeout ~= nil or getmetatable(self) ~= AsyncResult or not self._done or self._pool._cbq.t > 0 then
      if not waitfor(self, timeout, "get") then return nil, "timeout" end
    end
    if self._ok then return self._value end
    error(self._value, 0)
  end

  function AsyncResult:ready()
    checkself(self, AsyncResult, "ready")
    return self._done == true
  end

  function AsyncResult:successful()
    checkself(self, AsyncResult, "successful")
    if not self._done then badself("successful", "result is not ready") end
    return self._ok
  end

  -- The tickets of the units behind this result that have no answer yet.
  local function units(res)
    if res._tickets then return res._tickets end
    if not res._done and res._t then return {[res._t] = true} end
    return {}
  end

  -- The result of a call that waits for it (map, starmap, apply).  A wait
  -- given up (^C raises an lmp.Error of kind "interrupted" from it) gives up
  -- the call: what no worker has started is dropped, the workers running
  -- the rest are stopped and replaced, and the pool is free at once.
  local function sync_get(res)
    local ok, e = pcall(waitfor, res, nil, "get")
    if not ok then
      local pool = res._pool
      for t in pairs(units(res)) do
        stop_unit(pool, t)
        pool._pending[t] = nil
      end
      res._tickets = nil
      finish(res, false, e)
      error(e, 0)
    end
    if res._ok then return res._value end
    error(res._value, 0)
  end

  --- True while a worker runs (part of) the task (never known on a broker).
  function AsyncResult:running()
    checkself(self, AsyncResult, "running")
    if self._done or not unit_state then return false end
    local pool = self._pool
    for t in pairs(units(self)) do
      if unit_state(pool, t) == "running" then return true end
    end
    return false
  end

  -- Withdraw the units ts of a pool whose backend tells their state:
  -- true if the result is cancelled.
  local function withdraw(pool, ts, terminate)
    local one = next(ts)
    if terminate then
      -- Whatever runs is stopped (its worker killed and replaced); not
      -- cancelled if all of it had finished already.
      local any = false
      for t in pairs(ts) do
        if stop_unit(pool, t) then
          pool._pending[t] = nil
          any = true
        end
      end
      return any
    elseif next(ts, one) == nil then
      -- One task: cancelled if no worker has taken it, in the parent's
      -- backlog or in the ring (the core decides, atomically).
      local st = unit_state(pool, one)
      if (st ~= "queued" and st ~= "sent") or not cancel_unit(pool, one) then return false end
      pool._pending[one] = nil
    else
      -- Several (a map's chunks): only while no worker has taken any.  A
      -- chunk a worker takes in the same instant still runs; its result is
      -- dropped with the others.
      for t in pairs(ts) do
        local st = unit_state(pool, t)
        if st ~= "queued" and st ~= "sent" then return false end
      end
      for t in pairs(ts) do
        cancel_unit(pool, t)
        pool._pending[t] = nil
      end
    end
    return true
  end

  local cancel_keys = {terminate = true}

  --- Cancel a task no worker has started: true if cancelled (it then
  --- fails with kind "cancelled" and never runs), false otherwise.  With
  --- {terminate = true} a running task is stopped too (its worker is
  --- killed and replaced), and the result fails "cancelled" at once.
  function AsyncResult:cancel(opts)
    checkself(self, AsyncResult, "cancel")
    local terminate = false
    if opts ~= nil then
      checkoptions(opts, 1, "cancel", cancel_keys)
      terminate = opts.terminate
      if terminate ~= nil and type(terminate) ~= "boolean" then
        argerror(1, "cancel", "option 'terminate' must be a boolean")
      end
    end
    if self._done then return self._cancelled == true end
    local pool = self._pool
    local ts = units(self)
    if next(ts) == nil then return false end
    if B.revoke then
      if not B.revoke(pool, ts, terminate == true) then return false end
    elseif not unit_state or not withdraw(pool, ts, terminate) then
      return false
    end
    self._tickets = nil
    self._cancelled = true
    finish(self, false, lmp.Error("cancelled", "the task was cancelled"))
    run_callbacks(pool)
    return true
  end

  function AsyncResult:cancelled()
    checkself(self, AsyncResult, "cancelled")
    return self._cancelled == true
  end

  -- The cqueues pollable protocol (cqueues.poll(res) in a controller): the
  -- pool's descriptor (if any), read events, and a zero timeout once done.
  function AsyncResult:pollfd()
    checkself(self, AsyncResult, "pollfd")
    return B.pollfd(self._pool)
  end

  function AsyncResult:events()
    return "r"
  end

  function AsyncResult:timeout()
    checkself(self, AsyncResult, "timeout")
    if self._done then return 0 end
    return B.tick and B.tick(self._pool)
  end

  function AsyncResult:__tostring()
    local state = not self._done and "pending" or self._cancelled and "cancelled"
                  or self._ok and "done" or "failed"
    return "lmp.AsyncResult(" .. state .. ")"
  end

  -- === progress ===

  local function new_bar(total)
    if not B.isatty(2) then return nil end
    return require("lmp.progress").new(total, {clock = now, stream = io.stderr})
  end

  -- === options ===

  -- A backend's own submission options (submit_keys, checked by
  -- check_submit) join those of apply_async, map and starmap.
  local submit_keys = B.submit_keys or {}
  local function with_submit(keys)
    for k in pairs(submit_keys) do keys[k] = true end
    for k in pairs(M.retry_keys) do keys[k] = true end
    keys.retry_if = true
    return keys
  end
  local map_keys = with_submit{chunksize = true, callback = true, error_callback = true, progress = true,
                               profile = B.profile or nil}
  local sync_keys = with_submit{chunksize = true, progress = true, profile = B.profile or nil}
  local imap_keys = {chunksize = true, progress = true, profile = B.profile or nil}

  -- The third argument of map and friends: a chunksize or an options table.
  local function map_options(arg, fname, async, keys)
    if arg == nil then return {} end
    if type(arg) == "table" then
      checkoptions(arg, 3, fname, keys or async and map_keys or sync_keys)
      if B.check_submit and not keys then B.check_submit(arg, 3, fname) end
      if not keys then M.check_retry(arg, 3, fname, "option") end
      checkchunksize(arg.chunksize, 3, fname, "option 'chunksize'")
      if async then
        optcallable(arg, "callback", 3, fname)
        optcallable(arg, "error_callback", 3, fname)
      end
      return arg
    end
    if type(arg) ~= "number" then typeerror(3, fname, async and "table" or "number", arg) end
    return {chunksize = checkchunksize(arg, 3, fname)}
  end

  local function tagged(pool, job, opts, tag)
    if B.tag then return B.tag(pool, job, opts, tag) end
    return tag
  end

  -- === map ===

  local Chunk = {}
  Chunk.__index = Chunk

  -- The first error of a partial chunk: the failing item of lowest index.
  local function first_error(errs, first)
    local k
    for i in pairs(errs) do
      if not k or i < k then k = i end
    end
    local e = errs[k]
    if type(e) == "table" and e.index == nil then e.index = first + k - 1 end
    return e
  end

  function Chunk:_settle(how, v)
    local job = self.job
    if job._done then return end
    job._tickets[self.t] = nil
    if how == "stored" or how == "ok" then
      if how == "ok" then table.move(v, 1, self.count, self.first, job._values) end
      job._left = job._left - 1
      job._count = job._count + self.count
      if job._bar then job._bar:update(job._count) end
      if job._left == 0 then finish(job, true, job._values) end
    else
      local e = how == "partial" and first_error(v[2], self.first) or map_error(v, self.first)
      if not failed_again(job._pool, self, job._plan, e) then finish(job, false, e) end
    end
  end

  -- A retry: the chunk again, all its items (after `delay` on a broker).
  function Chunk:_resend(delay)
    local job = self.job
    local opts = job._opts
    if delay then opts = delayed(opts, delay) end
    return B.submit(job._pool, job._tag, job._fr, job._list, self.count, self.first, job._values, opts)
  end

  function Chunk:_ticket(t)
    self.t = t
    self.job._tickets[t] = true
  end

  local function start_map(pool, fname, tag, fn, list, opts)
    check_running(pool, fname)
    checkcallable(fn, 1, fname)
    if type(list) ~= "table" then typeerror(2, fname, "table", list) end
    local n = length(list)
    local job = setmetatable({_pool = pool, _values = B.new_values(n), _left = 0, _count = 0,
                              _cb = opts.callback, _eb = opts.error_callback, _tickets = {}},
                             AsyncResult)
    if n == 0 then
      finish(job, true, job._values)
      return job
    end
    local size = tointeger(opts.chunksize) or B.default_chunksize(pool, n)
    if opts.progress then job._bar = new_bar(n) end
    tag = tagged(pool, job, opts, tag)
    local fr = B.encode_fn(fn)
    local plan = plan_of(pool, opts)
    if plan then
      job._plan, job._tag, job._fr, job._list, job._opts = plan, tag, fr, list, opts
      pool._retried = true
    end
    local submit, pending = B.submit, pool._pending
    for first = 1, n, size do
      local count = math.min(size, n - first + 1)
      local t = submit(pool, tag, fr, list, count, first, job._values, opts)
      pending[t] = setmetatable({job = job, t = t, first = first, count = count}, Chunk)
      job._tickets[t] = true
      job._left = job._left + 1
    end
    if B.flush then B.flush(pool) end
    return job
  end

  --- pool:map(fn, list [, chunksize | {chunksize =, progress =}]) -> results
  function Pool:map(fn, list, opts)
    return sync_get(start_map(self, "map", tags.map, fn, list, map_options(opts, "map", false)))
  end

  function Pool:map_async(fn, list, opts)
    return start_map(self, "map_async", tags.map, fn, list, map_options(opts, "map_async", true))
  end

  function Pool:starmap(fn, list, opts)
    return sync_get(start_map(self, "starmap", tags.starmap, fn, list, map_options(opts, "starmap", false)))
  end

  function Pool:starmap_async(fn, list, opts)
    return start_map(self, "starmap_async", tags.starmap, fn, list,
                     map_options(opts, "starmap_async", true))
  end

  -- === apply ===

  local apply_keys = with_submit{callback = true, error_callback = true}
  local no_args = {}

  local backend_submit_apply = B.submit_apply

  local function submit_apply(pool, fn, args, n, cb, eb, opts)
    local t = backend_submit_apply(pool, fn, args, n, opts)
    local res = setmetatable({_pool = pool, _t = t, _cb = cb, _eb = eb, _done = false, _ok = false, _value = false},
                             AsyncResult)
    pool._pending[t] = res
    if opts == nil and (pool._retry or NO_RETRY).retries == 0 then return res end -- no retry plan
    local plan = plan_of(pool, opts)
    if plan then
      res._plan, res._fn, res._args, res._n, res._opts = plan, fn, args, n, opts
      pool._retried = true
    end
    return res
  end

  -- A retry: the task again, with its arguments (after `delay` on a broker).
  function AsyncResult:_resend(delay)
    local opts = self._opts
    if delay then opts = delayed(opts, delay) end
    return backend_submit_apply(self._pool, self._fn, self._args, self._n, opts)
  end

  function AsyncResult:_ticket(t)
    self._t = t
  end

  -- The common call (a running pool, a function, a list, no options),
  -- made by the backend in one go when it can.
  local fast_apply = B.fast_apply and B.fast_apply(Pool, AsyncResult)

  --- pool:apply(fn, ...) -> the result; raises the task's lmp.Error.
  function Pool:apply(fn, ...)
    local args, n = {...}, select("#", ...)
    if fast_apply then
      local res = fast_apply(self, fn, args, n)
      if res then return sync_get(res) end
    end
    if getmetatable(self) ~= Pool or self._state ~= "run" then check_running(self, "apply") end
    if type(fn) ~= "function" then checkcallable(fn, 1, "apply") end
    return sync_get(submit_apply(self, fn, args, n))
  end

  --- pool:apply_async(fn [, args [, {callback =, error_callback =}]]) -> AsyncResult
  function Pool:apply_async(fn, args, opts)
    if opts == nil and fast_apply then
      local res = fast_apply(self, fn, args)
      if res then return res end
    end
    if getmetatable(self) ~= Pool or self._state ~= "run" then check_running(self, "apply_async") end
    if type(fn) ~= "function" then checkcallable(fn, 1, "apply_async") end
    if args ~= nil and type(args) ~= "table" then typeerror(2, "apply_async", "table", args) end
    local cb, eb
    if opts ~= nil then
      checkoptions(opts, 3, "apply_async", apply_keys)
      if B.check_submit then B.check_submit(opts, 3, "apply_async") end
      M.check_retry(opts, 3, "apply_async", "option")
      cb = optcallable(opts, "callback", 3, "apply_async")
      eb = optcallable(opts, "error_callback", 3, "apply_async")
    end
    if args == nil then return submit_apply(self, fn, no_args, 0, cb, eb, opts) end
    local n = rawget(args, "n") -- most lists have no n: the length without a call
    return submit_apply(self, fn, args, n == nil and #args or length(args), cb, eb, opts)
  end

  -- === imap ===

  -- Chunks go out as the consumer pulls, within a window; items come back
  -- in order (imap) or as they complete (imap_unordered).
  local IChunk = {}
  IChunk.__index = IChunk

  local function deliver(job, i, ok, v)
    if job.ordered then
      job.ready[i] = true
      if ok then job.vals[i] = v else job.errs[i] = v end
    else
      local q = job.q
      q[#q + 1] = i
      if ok then job.vals[i] = v else job.errs[i] = v end
    end
  end

  function IChunk:_settle(how, v)
    local job = self.job
    job.tickets[self.t] = nil
    job.inflight = job.inflight - 1
    if job.dead then return end
    local first = self.first
    for k = 1, self.count do
      local i = first + k - 1
      if how == "ok" then
        deliver(job, i, true, v[k])
      elseif how == "partial" then
        local e = v[2][k]
        if e ~= nil then
          if type(e) == "table" and e.index == nil then e.index = i end
          deliver(job, i, false, e)
        else
          deliver(job, i, true, v[1][k])
        end
      else
        deliver(job, i, false, item_error(v, k, i))
      end
    end
    job.done = job.done + self.count
    if job.bar then job.bar:update(job.done) end
  end

  -- Submit one more chunk from the source, if it has items: false once it
  -- is exhausted.  An error of the source ends it.
  local function pull(job)
    local pool, size, first = job.pool, job.size, job.pos + 1
    local items, count
    if job.list then
      count = math.min(size, job.total - job.pos)
      if count <= 0 then
        job.exhausted = true
        return false
      end
    else
      items, count = {}, 0
      local src = job.src
      while count < size do
        local ok, v = pcall(src)
        if not ok then
          -- Raised in its place, once the items before it are yielded.
          job.src_err, job.exhausted = v, true
          break
        end
        if v == nil then
          job.exhausted = true
          break
        end
        count = count + 1
        items[count] = v
      end
      if count == 0 then return false end
    end
    local t
    if items then
      t = B.submit(pool, job.tag, job.fr, items, count)
    else
      t = B.submit(pool, job.tag, job.fr, job.list, count, first)
    end
    pool._pending[t] = setmetatable({job = job, t = t, first = first, count = count}, IChunk)
    job.tickets[t] = true
    job.inflight = job.inflight + 1
    job.pos = job.pos + count
    return true
  end

  -- Keep the pipeline full, within the window: chunks in flight and items
  -- waiting to be yielded are both bounded.
  local function feed(job)
    local limit = job.window * job.size
    while not job.exhausted and job.inflight < job.window and job.pos - job.yielded < limit do
      if not pull(job) then break end
    end
  end

  -- End an imap: chunks no worker has taken are dropped; with `stop` (the
  -- loop ended by an error, ^C's included) the running ones are stopped too.
  local function close_job(job, stop)
    if job.dead then return end
    job.dead = true
    local pool = job.pool
    local drop = stop and stop_unit or cancel_unit
    for t in pairs(job.tickets) do
      if drop(pool, t) then
        pool._pending[t] = nil
        job.tickets[t] = nil
      end
    end
    if job.bar then job.bar:finish() end
  end

  local function take(job, i)
    local v, e = job.vals[i], job.errs[i]
    job.vals[i], job.errs[i] = nil, nil
    job.yielded = job.yielded + 1
    if e ~= nil then error(e, 0) end
    return i, v
  end

  local function step(job)
    local pool = job.pool
    if job.dead then return nil end
    run_callbacks(pool)
    while true do
      if job.ordered then
        local i = job.nextout
        if job.ready[i] then
          job.ready[i] = nil
          job.nextout = i + 1
          feed(job)
          return take(job, i)
        end
      elseif job.qh <= #job.q then
        local i = job.q[job.qh]
        job.q[job.qh] = nil
        job.qh = job.qh + 1
        if job.qh > #job.q then job.q, job.qh = {}, 1 end
        feed(job)
        return take(job, i)
      end
      if job.exhausted and job.yielded >= job.pos then
        close_job(job)
        if job.src_err ~= nil then error(job.src_err, 0) end
        return nil
      end
      feed(job)
      if job.inflight > 0 then
        local bar = job.bar
        local r = dispatch(pool, bar and now() + bar_tick or nil)
        if r == "timeout" and bar then bar:refresh() end
        if r == "closed" and job.inflight > 0 then
          close_job(job)
          error(pool._broken or lmp.Error("cancelled", "the pool ended during imap"), 0)
        end
      end
    end
  end

  local closer_mt = {__close = function(self, err) close_job(self.job, err ~= nil) end}

  local function start_imap(pool, fname, ordered, fn, src, opts)
    check_running(pool, fname)
    checkcallable(fn, 1, fname)
    local kind = type(src)
    if kind ~= "table" and not (kind == "function" or callable(src)) then
      typeerror(2, fname, "table or function", src)
    end
    opts = map_options(opts, fname, false, imap_keys)
    local job = {pool = pool, fr = B.encode_fn(fn), tag = tags.map,
                 size = tointeger(opts.chunksize) or 1, ordered = ordered, pos = 0,
                 yielded = 0, done = 0, inflight = 0, window = B.window(pool),
                 exhausted = false, dead = false,
                 vals = {}, errs = {}, ready = {}, nextout = 1, q = {}, qh = 1, tickets = {}}
    if kind == "table" and not callable(src) then
      job.list, job.total = src, length(src)
    else
      job.src = src
    end
    if opts.progress then job.bar = new_bar(job.total) end
    job.tag = tagged(pool, job, opts, job.tag)
    return function() return step(job) end, nil, nil, setmetatable({job = job}, closer_mt)
  end

  --- for i, v in pool:imap(fn, list_or_iterator [, chunksize | {chunksize =, progress =}])
  function Pool:imap(fn, src, opts)
    return start_imap(self, "imap", true, fn, src, opts)
  end

  --- for i, v in pool:imap_unordered(...) -- as they complete; i is the input index
  function Pool:imap_unordered(fn, src, opts)
    return start_imap(self, "imap_unordered", false, fn, src, opts)
  end

  return R
end

return M

-- lmp.pool: lmp.Pool over the pool core of bindings/lpool.c (which forks
-- the workers, moves the bytes and reports deaths and timeouts).
--
-- Loaded the first time lmp.Pool is called (scripts/lmp/init.lua); the
-- module is the constructor, whose first argument is a context's start
-- method (nil: the default).  The code sits in one block, its locals the
-- module's, over lmp and the pool core (lmp.core.pool).
--
-- AsyncResult, apply, map and imap are lmp.result's, over this backend:
-- every submitted unit has a ticket of the core, and dispatch() takes an
-- event from the core and settles its handler, then those of the events
-- that have arrived meanwhile.  A unit held for a retry
-- (lmp.result's retries) is submitted by the dispatch that runs once it is
-- due, and no dispatch waits past that time.
local lmp = require "lmp"
local core = require("lmp.core").pool

do
  local tointeger = math.tointeger

  local check = require "lmp.check"
  local result = require "lmp.result"
  local profile = require "lmp.profile"
  local profiling = profile.active
  local argerror, typeerror, badself = check.argerror, check.typeerror, check.badself
  local callable, checkcallable, checkoptions = check.callable, check.checkcallable, check.checkoptions
  local checkself = check.checkself
  local run_callbacks, settle_all, hint = result.run_callbacks, result.settle_all, result.hint
  local TAG_APPLY = core.tags.apply
  local TAG_PROFILE = core.tags.profile -- the task runs under the sampler; its reply brings the samples

  local Pool = {}
  Pool.__index = Pool
  Pool.__name = "lmp.Pool"

  local function check_running(pool, fname)
    checkself(pool, Pool, fname)
    local st = pool._state
    if st == "run" then return end
    if st == "broken" then error(pool._broken, 0) end
    badself(fname, st == "close" and "pool is closed" or "pool is terminated")
  end

  -- The samples of a profiled task go to the profile of the call it
  -- belongs to, and to those of the lmp.profile calls under way.
  local function take_samples(h, text)
    local job = h and (h.job or h)
    local own = job and rawget(job, "profile")
    if own then own:add(text) end
    for i = 1, #profiling do
      if profiling[i] ~= own then profiling[i]:add(text) end
    end
  end

  local R -- lmp.result's class, made below

  -- Settle the handler of task t's event.
  local function settle(pool, t, how, v, samples)
    local pending = pool._pending
    local h = pending[t]
    if samples then take_samples(h, samples) end
    if h ~= nil then
      pending[t] = nil
      if how ~= "ok" and how ~= "stored" then hint(how, v) end
      h:_settle(how, v)
    end
  end

  -- The initializer failed: the pool is broken, whatever is pending fails.
  local function broken(pool, v)
    pool._broken = v
    if pool._state == "run" then pool._state = "broken" end
    settle_all(pool, v)
    run_callbacks(pool)
  end

  local DRAIN = 256 -- events settled per dispatch at most, after the first

  -- Take one event, waiting until deadline (nil: for ever), and settle its
  -- handler, then those of the events that have arrived meanwhile (up to
  -- DRAIN of them, without waiting): nil and the number of events, or
  -- "timeout" / "closed".
  local function dispatch(pool, deadline)
    local wake = pool._held_due and R.release(pool)
    if pool._close_due and next(pool._pending) == nil then
      -- closed while retries could still come: the core closes once none can
      pool._close_due = nil
      pool._c:close()
    end
    if wake and deadline and wake >= deadline then wake = nil end
    local c = pool._c
    local t, how, v, samples = c:wait(wake or deadline)
    if wake and t == nil and how == "timeout" then
      -- woken to submit a held unit
      run_callbacks(pool)
      return nil, 0
    end
    if t ~= nil and how ~= "broken" then
      settle(pool, t, how, v, samples)
      local n, pending = 1, pool._pending
      while n <= DRAIN do
        -- the core settles plain replies itself, and hands back any other event
        local k
        k, t, how, v, samples = c:drain(pending, DRAIN - n + 1)
        n = n + k
        if t == nil then break end
        if how == "broken" then
          broken(pool, v)
          return nil, n
        end
        settle(pool, t, how, v, samples)
        n = n + 1
      end
      if pool._cbq.t > 0 then run_callbacks(pool) end
      return nil, n
    end
    if t == nil then
      if how == "closed" then
        -- Nothing more can come: whatever is still pending never will.
        settle_all(pool, pool._broken or lmp.Error("cancelled", "the pool ended before the task did"))
      end
      run_callbacks(pool)
      return how
    end
    broken(pool, v)
    return nil, 0
  end

  -- The tag of a call's tasks: profiled when the call asks for it (it then
  -- gets a profile of its own, which pool:profile_report shows) or when an
  -- lmp.profile call is under way.
  local function profiled(pool, job, opts, tag)
    if opts.profile then
      job.profile = profile.new()
      pool._profile = job.profile
      return tag | TAG_PROFILE
    end
    if #profiling > 0 then return tag | TAG_PROFILE end
    return tag
  end

  R = result.new{
    lmp = lmp, Pool = Pool, check_running = check_running, dispatch = dispatch,
    submit_apply = function(pool, fn, args, n)
      return pool._c:submit(#profiling > 0 and TAG_APPLY | TAG_PROFILE or TAG_APPLY, fn, args, n)
    end,
    -- The core stores a map's values straight into `values`.
    submit = function(pool, tag, fr, list, count, first, values)
      return pool._c:submit(tag, fr, list, count, first, values)
    end,
    encode_fn = core.encode_fn,
    fast_apply = function(P, AsyncResult) return core.fast_apply(P, AsyncResult, profiling) end,
    cancel = function(pool, t) return pool._c:cancel(t) end,
    stop = function(pool, t) return pool._c:stop(t) end,
    state = function(pool, t) return pool._c:state(t) end,
    pollfd = function(pool) return pool._c:fileno() end,
    default_chunksize = function(pool, n)
      return math.max(1, (n + 4 * pool._n - 1) // (4 * pool._n))
    end,
    window = function(pool) return 4 * pool._n end,
    new_values = core.table,
    isatty = core.isatty,
    profile = true, tag = profiled,
    tick = function(pool) return R.held_wait(pool) end,
  }

  -- === lifecycle ===

  function Pool:close()
    checkself(self, Pool, "close")
    if self._state == "run" then
      self._state = "close"
      -- a unit that may still be retried needs the core to take it
      if self._retried and next(self._pending) ~= nil then
        self._close_due = true
      else
        self._c:close()
      end
    end
  end

  --- Kill the workers now; whatever has no result fails with kind "cancelled".
  function Pool:terminate()
    checkself(self, Pool, "terminate")
    if self._state == "terminate" then return end
    self._state = "terminate"
    self._c:terminate()
    settle_all(self, lmp.Error("cancelled", "the pool was terminated"))
    run_callbacks(self)
  end

  --- Wait for the workers to exit, after close() or terminate().
  function Pool:join()
    checkself(self, Pool, "join")
    if self._state == "run" then
      badself("join", "pool is still running; call close() or terminate() first")
    end
    run_callbacks(self)
    while dispatch(self, nil) ~= "closed" do end
  end

  --- Deliver what has arrived and run due callbacks, without blocking: the
  --- number of results delivered.
  function Pool:poll()
    checkself(self, Pool, "poll")
    run_callbacks(self)
    local n = 0
    while true do
      local r, k = dispatch(self, 0)
      if r ~= nil then return n end
      n = n + k
    end
  end

  --- A descriptor that turns readable when results may be waiting; poll()
  --- resets it.
  function Pool:fileno()
    checkself(self, Pool, "fileno")
    return self._c:fileno()
  end

  -- The cqueues pollable protocol: cqueues.poll(pool) returns once results
  -- may be waiting (then pool:poll() delivers them).
  function Pool:pollfd()
    checkself(self, Pool, "pollfd")
    return self._c:fileno()
  end

  function Pool:events()
    return "r"
  end

  -- Seconds until a unit held for a retry is due (poll() submits it).
  function Pool:timeout()
    checkself(self, Pool, "timeout")
    return R.held_wait(self)
  end

  --- Observability: counters and one entry per worker slot.
  function Pool:stats()
    checkself(self, Pool, "stats")
    local s = self._c:stats()
    s.workers = self._c:workers()
    return s
  end

  --- The merged worker profile of the last call made with {profile = true}
  --- (see lmp.profile): the top n functions (20 by default) as text.
  function Pool:profile_report(n)
    checkself(self, Pool, "profile_report")
    if n ~= nil and (not tointeger(n) or tointeger(n) < 1) then
      if type(n) ~= "number" then typeerror(1, "profile_report", "number", n) end
      argerror(1, "profile_report", "count must be a positive integer")
    end
    return (self._profile or profile.new()):report(n)
  end

  function Pool:__close()
    self:terminate()
  end

  function Pool:__tostring()
    local st = self._state == "run" and "running" or self._state == "close" and "closed"
               or self._state == "broken" and "broken" or "terminated"
    return string.format("lmp.Pool(%d processes, %s)", self._n, st)
  end

  -- === the constructor ===

  local pool_keys = {processes = true, initializer = true, initargs = true,
                     maxtasksperchild = true, task_timeout = true, start_method = true,
                     max_memory_per_child = true}
  for k in pairs(result.retry_keys) do pool_keys[k] = true end

  local methods = {fork = true, spawn = true, forkserver = true}

  local function check_start_method(m)
    if m ~= nil and not methods[m] then
      argerror(1, "Pool", "unknown start method '" .. tostring(m) .. "'")
    end
  end

  -- processes: why a count is refused, or nil.
  local function processes_bad(v)
    local n = tointeger(v)
    if not n or n < 1 then return "must be a positive integer" end
    if n > core.max_processes then return "must be at most " .. core.max_processes end
  end

  local function maxtasks_ok(v)
    local n = tointeger(v)
    return n and n >= 1 and n <= 0xffffffff
  end

  --- lmp.Pool([processes [, initializer [, initargs [, maxtasksperchild]]]])
  --- lmp.Pool{processes =, initializer =, initargs =, maxtasksperchild =,
  ---          task_timeout =, max_memory_per_child =, start_method =,
  ---          retries =, retry_backoff =, retry_backoff_max =}
  ---          (start_method: lmp.get_start_method())
  -- Called as new(method, ...): `method` is a context's start method, used
  -- unless the options name one (nil for lmp.Pool itself).
  return function(method, ...)
    local a = ...
    local o
    if type(a) == "table" and not callable(a) then
      if select("#", ...) > 1 then argerror(2, "Pool", "no arguments expected after the options table") end
      checkoptions(a, 1, "Pool", pool_keys)
      o = a
      local function field(name, ok, msg)
        if a[name] ~= nil and not ok(a[name]) then argerror(1, "Pool", "field '" .. name .. "' " .. msg) end
      end
      if a.processes ~= nil and processes_bad(a.processes) then
        argerror(1, "Pool", "field 'processes' " .. processes_bad(a.processes))
      end
      field("initializer", callable, "must be callable")
      field("initargs", function(v) return type(v) == "table" end, "must be a table")
      field("maxtasksperchild", maxtasks_ok, "must be a positive integer")
      field("task_timeout", function(v) return type(v) == "number" and v > 0 end,
            "must be a positive number")
      field("task_timeout", function(v) return v < 9e9 end, "must be less than 9e9 seconds")
      field("max_memory_per_child", function(v) local n = tointeger(v) return n and n >= 1 end,
            "must be a positive integer (bytes)")
      check_start_method(a.start_method)
      result.check_retry(a, 1, "Pool", "field")
    else
      local n, init, initargs, max = ...
      if n ~= nil and processes_bad(n) then
        if type(n) ~= "number" then typeerror(1, "Pool", "number", n) end
        argerror(1, "Pool", "processes " .. processes_bad(n))
      end
      if init ~= nil then checkcallable(init, 2, "Pool") end
      if initargs ~= nil and type(initargs) ~= "table" then typeerror(3, "Pool", "table", initargs) end
      if max ~= nil and not maxtasks_ok(max) then
        argerror(4, "Pool", "maxtasksperchild must be a positive integer")
      end
      o = {processes = n, initializer = init, initargs = initargs, maxtasksperchild = max}
    end
    local n = tointeger(o.processes) or lmp.cpu_count()
    local c = core.new(n, tointeger(o.maxtasksperchild) or 0, o.task_timeout or 0,
                       o.initializer, o.initargs, tointeger(o.max_memory_per_child) or 0,
                       o.start_method or method)
    return setmetatable({_c = c, _n = n, _pending = {}, _cbq = result.new_queue(), _state = "run",
                         _retry = result.retry_defaults(o)}, Pool)
  end
end

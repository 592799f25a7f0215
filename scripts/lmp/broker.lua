-- lmp.broker: lmp.Pool{broker = url}, the local Pool's API over a broker
-- (runtime/broker_redis.c through bindings/lbroker.c), served by `lmp
-- worker` processes on any number of machines (scripts/lmp/worker.lua).
--
-- A task is one signed message: the function (encoded once per function
-- object, or once per map call for closures with upvalues), its arguments
-- or a chunk of a map's items, the caller's id and the delivery policy
-- (visibility_timeout, max_deliveries), sealed with HMAC-SHA256 under the
-- shared secret.  Results come back signed on a list that only this pool
-- reads; one that fails its check is dropped, and so is a second result for
-- a task already settled (delivery is at least once, results exactly once).
--
-- Submissions are buffered and sent in one pipelined batch when 512 are
-- waiting and whenever the pool waits for results (get, wait, join, poll,
-- imap's iterator), so a loop of apply_async costs one round trip per batch.
-- Callbacks run, as on a local pool, inside those calls, in order.
local lmp = require "lmp"
local core = require "lmp.broker_core"

local M = {}

local now = lmp.time
local tointeger, mtype = math.tointeger, math.type
local TAG_APPLY, TAG_MAP, TAG_STARMAP = 1, 2, 3
local RESULT_BATCH = 512
local MAX_AGE = 86400 -- seconds a signed result may have travelled
local TICK = 0.05 -- seconds between looks of an event loop (lmp.luv, lmp.cqueues)

-- === argument checks, worded as lauxlib words them ===

local check = require "lmp.check"
local typename, argerror, typeerror, badself = check.typename, check.argerror, check.typeerror, check.badself
local callable, checkcallable, checkoptions = check.callable, check.checkcallable, check.checkoptions
local checkself = check.checkself

local function length(t)
  local n = rawget(t, "n")
  if mtype(n) == "integer" and n >= 0 then return n end
  return #t
end

-- === encoding functions ===

-- A function whose only upvalue is _ENV (or none) cannot change between
-- calls, so its encoding is kept; a closure is encoded once per call.
local fn_cache = setmetatable({}, {__mode = "k"})

local function encode_fn(fn)
  local s = fn_cache[fn]
  if s then return s end
  s = core.encode(fn, "function")
  if type(fn) == "function" then
    local i, pure = 1, true
    while true do
      local name = debug.getupvalue(fn, i)
      if name == nil then break end
      if name ~= "_ENV" then pure = false break end
      i = i + 1
    end
    if pure then fn_cache[fn] = s end
  end
  return s
end

-- === callbacks ===

local function queue_callback(pool, f, arg)
  local q = pool._cbq
  q[#q + 1] = f
  q[#q + 1] = arg
end

local function run_callbacks(pool)
  local q = pool._cbq
  while q.h <= #q do
    local h = q.h
    local f, arg = q[h], q[h + 1]
    q[h], q[h + 1] = false, false
    q.h = h + 2
    if q.h > #q then
      pool._cbq = {h = 1}
      q = pool._cbq
    end
    f(arg)
  end
end

-- === AsyncResult ===

local AsyncResult = {}
AsyncResult.__index = AsyncResult
AsyncResult.__name = "lmp.AsyncResult"

-- Call the functions an event-loop module left on a settled result.
local function wake(res)
  local ws = res._wake
  res._wake = nil
  for i = 1, #ws do ws[i](res) end
end

local function finish(res, ok, value)
  if res._done then return end
  res._done, res._ok, res._value = true, ok, value
  if res._bar then res._bar:finish() end
  local f
  if ok then f = res._cb else f = res._eb end
  if f then queue_callback(res._pool, f, value) end
  if res._wake then queue_callback(res._pool, wake, res) end
  if res._tickets and not ok then
    for id in pairs(res._tickets) do res._pool._pending[id] = nil end
  end
  res._tickets = nil
end

-- An apply task's handler is its result.
function AsyncResult:_settle(status, v)
  if status == "ok" then finish(self, true, v) else finish(self, false, v) end
end

-- As a local pool's result: fn(res) once settled (lmp.await, lmp.luv,
-- lmp.cqueues); false if it already is.
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

-- The cqueues pollable protocol.  The connection's descriptor does not
-- announce results reliably (see Pool:fileno), so no descriptor: a
-- controller looks again every TICK seconds, at once when done.
function AsyncResult:pollfd()
  return nil
end

function AsyncResult:events()
  return "r"
end

function AsyncResult:timeout()
  checkself(self, AsyncResult, "timeout")
  if self._done then return 0 end
  return TICK
end

-- The error a worker reports for a dead-lettered task.
local function dead_error(v)
  if lmp.is_error(v) then return v end
  return lmp.Error("dead_letter", tostring(v))
end

-- Take what has arrived (waiting until the deadline for the first) and
-- settle it; "timeout" when nothing came.
local function dispatch(pool, deadline)
  local conn = pool._conn
  local timeout
  if deadline then timeout = math.max(0, deadline - now()) end
  local msgs, err = conn:results(pool._caller, RESULT_BATCH, timeout)
  if not msgs then
    error(lmp.Error("broker", "broker pool: " .. tostring(err)), 0)
  end
  local pending, key = pool._pending, pool._secret
  for i = 1, #msgs do
    local kind, id, body = core.unseal(key, msgs[i], MAX_AGE)
    if kind == "R" and type(body) == "table" then
      local h = pending[id]
      if h ~= nil then
        pending[id] = nil
        pool._inflight = pool._inflight - 1
        local s = body.s
        if s == "dead" then
          h:_settle("error", dead_error(body.v))
        else
          h:_settle(s, body.v)
        end
      end
    else
      pool._refused = pool._refused + 1
    end
  end
  if pool._cbq.h <= #pool._cbq then run_callbacks(pool) end
  if #msgs == 0 then return "timeout" end
  return nil
end

local function waitfor(res, timeout, fname)
  checkself(res, AsyncResult, fname)
  if timeout ~= nil then
    if type(timeout) ~= "number" then typeerror(1, fname, "number", timeout) end
    if not (timeout >= 0) then argerror(1, fname, "timeout must be a non-negative number") end
  end
  local pool = res._pool
  run_callbacks(pool)
  if res._done then return true end
  local deadline
  if timeout ~= nil then deadline = now() + timeout end
  repeat
    if dispatch(pool, deadline) == "timeout" and deadline and now() >= deadline then
      return res._done == true
    end
  until res._done
  return true
end

function AsyncResult:wait(timeout)
  return waitfor(self, timeout, "wait") == true
end

function AsyncResult:get(timeout)
  if not waitfor(self, timeout, "get") then return nil, "timeout" end
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

--- A task on a broker cannot be taken back once sent: false unless done
--- and cancelled already.
function AsyncResult:cancel()
  checkself(self, AsyncResult, "cancel")
  return self._cancelled == true
end

function AsyncResult:cancelled()
  checkself(self, AsyncResult, "cancelled")
  return self._cancelled == true
end

--- Unknown on a broker (the worker does not say when it starts): false.
function AsyncResult:running()
  checkself(self, AsyncResult, "running")
  return false
end

function AsyncResult:__tostring()
  local state = not self._done and "pending" or self._ok and "done" or "failed"
  return "lmp.AsyncResult(" .. state .. ")"
end

-- === the pool ===

local Pool = {}
Pool.__index = Pool
Pool.__name = "lmp.Pool"

local function check_running(pool, fname)
  checkself(pool, Pool, fname)
  if pool._state == "run" then return end
  badself(fname, pool._state == "close" and "pool is closed" or "pool is terminated")
end

-- Seal and queue one task; returns its id.
local function submit(pool, tag, fr, args, n)
  local seq = pool._seq + 1
  pool._seq = seq
  local id = pool._caller .. "." .. seq
  local body = {v = core.lua_version, c = pool._caller, t = tag, f = fr,
                a = core.encode(args, "args"), n = n, vt = pool._vt, md = pool._md}
  local ok, err = pool._conn:put(core.seal(pool._secret, "T", id, body))
  if not ok then error(lmp.Error("broker", "broker pool: " .. tostring(err)), 0) end
  pool._inflight = pool._inflight + 1
  return id
end

local no_args = {}
local apply_keys = {callback = true, error_callback = true}

local function apply_async(pool, fname, fn, args, n, cb, eb)
  local id = submit(pool, TAG_APPLY, encode_fn(fn), args, n)
  local res = setmetatable({_pool = pool, _cb = cb, _eb = eb}, AsyncResult)
  pool._pending[id] = res
  return res
end

function Pool:apply(fn, ...)
  check_running(self, "apply")
  checkcallable(fn, 1, "apply")
  return apply_async(self, "apply", fn, {...}, select("#", ...)):get()
end

function Pool:apply_async(fn, args, opts)
  check_running(self, "apply_async")
  checkcallable(fn, 1, "apply_async")
  if args ~= nil and type(args) ~= "table" then typeerror(2, "apply_async", "table", args) end
  local cb, eb
  if opts ~= nil then
    checkoptions(opts, 3, "apply_async", apply_keys)
    cb, eb = opts.callback, opts.error_callback
    if cb ~= nil and not callable(cb) then argerror(3, "apply_async", "option 'callback' must be callable") end
    if eb ~= nil and not callable(eb) then argerror(3, "apply_async", "option 'error_callback' must be callable") end
  end
  args = args or no_args
  return apply_async(self, "apply_async", fn, args, length(args), cb, eb)
end

-- === map ===

local map_keys = {chunksize = true, callback = true, error_callback = true, progress = true}
local sync_keys = {chunksize = true, progress = true}

local function map_options(arg, fname, async)
  if arg == nil then return {} end
  if type(arg) == "table" then
    checkoptions(arg, 3, fname, async and map_keys or sync_keys)
    if arg.chunksize ~= nil then
      local c = tointeger(arg.chunksize)
      if not c or c < 1 then argerror(3, fname, "option 'chunksize' must be a positive integer") end
    end
    return arg
  end
  if type(arg) ~= "number" then typeerror(3, fname, async and "table" or "number", arg) end
  local c = tointeger(arg)
  if not c or c < 1 then argerror(3, fname, "chunksize must be a positive integer") end
  return {chunksize = c}
end

-- A broker pool does not know how many workers serve it: chunks of about
-- n/32 items, at most 1000, keep many workers busy and messages small.
local function default_chunksize(n)
  return math.max(1, math.min(1000, (n + 31) // 32))
end

local Chunk = {}
Chunk.__index = Chunk

function Chunk:_settle(status, v)
  local job = self.job
  if job._done then return end
  job._tickets[self.id] = nil
  if status == "ok" then
    table.move(v, 1, self.count, self.first, job._values)
    job._left = job._left - 1
    job._count = job._count + self.count
    if job._bar then job._bar:update(job._count) end
    if job._left == 0 then finish(job, true, job._values) end
  else
    if type(v) == "table" and mtype(v.index) == "integer" then v.index = self.first + v.index - 1 end
    finish(job, false, v)
  end
end

local function new_bar(total)
  if not core.isatty(2) then return nil end
  return require("lmp.progress").new(total, {clock = now, stream = io.stderr})
end

local function start_map(pool, fname, tag, fn, list, opts)
  check_running(pool, fname)
  checkcallable(fn, 1, fname)
  if type(list) ~= "table" then typeerror(2, fname, "table", list) end
  local n = length(list)
  local job = setmetatable({_pool = pool, _values = {}, _left = 0, _count = 0,
                            _cb = opts.callback, _eb = opts.error_callback, _tickets = {}},
                           AsyncResult)
  if n == 0 then
    finish(job, true, job._values)
    return job
  end
  if opts.progress then job._bar = new_bar(n) end
  local size = tointeger(opts.chunksize) or default_chunksize(n)
  local fr = encode_fn(fn)
  for first = 1, n, size do
    local count = math.min(size, n - first + 1)
    local id = submit(pool, tag, fr, table.move(list, first, first + count - 1, 1, {}), count)
    pool._pending[id] = setmetatable({job = job, id = id, first = first, count = count}, Chunk)
    job._tickets[id] = true
    job._left = job._left + 1
  end
  pool._conn:flush()
  return job
end

function Pool:map(fn, list, opts)
  return start_map(self, "map", TAG_MAP, fn, list, map_options(opts, "map", false)):get()
end

function Pool:map_async(fn, list, opts)
  return start_map(self, "map_async", TAG_MAP, fn, list, map_options(opts, "map_async", true))
end

function Pool:starmap(fn, list, opts)
  return start_map(self, "starmap", TAG_STARMAP, fn, list, map_options(opts, "starmap", false)):get()
end

function Pool:starmap_async(fn, list, opts)
  return start_map(self, "starmap_async", TAG_STARMAP, fn, list, map_options(opts, "starmap_async", true))
end

-- === imap ===

-- Chunks go out as the consumer pulls, at most `window` in flight; items
-- come back in order (imap) or as they complete (imap_unordered).
local IChunk = {}
IChunk.__index = IChunk

function IChunk:_settle(status, v)
  local job = self.job
  job.inflight = job.inflight - 1
  for k = 1, self.count do
    local i = self.first + k - 1
    if status == "ok" then
      job.vals[i] = v[k]
    else
      local e = v
      if type(e) == "table" and mtype(e.index) == "integer" then
        if e.index ~= k then e = nil else e.index = i end
      end
      if e == nil then
        -- an item before the failing one of this chunk: it ran, but its
        -- value is not reported by a failed chunk; fail it too
        e = lmp.Error("task", "an earlier item of its chunk failed", {index = i})
      end
      job.errs[i] = e
    end
    job.ready[i] = true
    job.q[#job.q + 1] = i
  end
  job.done = job.done + self.count
  if job.bar then job.bar:update(job.done) end
end

local function pull(job)
  local items, count = {}, 0
  if job.list then
    count = math.min(job.size, job.total - job.pos)
    if count <= 0 then job.exhausted = true return false end
    table.move(job.list, job.pos + 1, job.pos + count, 1, items)
  else
    while count < job.size do
      local ok, v = pcall(job.src)
      if not ok then job.src_err, job.exhausted = v, true break end
      if v == nil then job.exhausted = true break end
      count = count + 1
      items[count] = v
    end
    if count == 0 then return false end
  end
  local pool = job.pool
  local id = submit(pool, job.tag, job.fr, items, count)
  pool._pending[id] = setmetatable({job = job, first = job.pos + 1, count = count}, IChunk)
  job.inflight = job.inflight + 1
  job.pos = job.pos + count
  return true
end

local function step(job)
  local pool = job.pool
  run_callbacks(pool)
  while true do
    local i
    if job.ordered then
      if job.ready[job.nextout] then
        i = job.nextout
        job.nextout = i + 1
      end
    elseif job.qh <= #job.q then
      i = job.q[job.qh]
      job.qh = job.qh + 1
    end
    if i then
      job.ready[i] = nil
      local v, e = job.vals[i], job.errs[i]
      job.vals[i], job.errs[i] = nil, nil
      job.yielded = job.yielded + 1
      if e ~= nil then error(e, 0) end
      return i, v
    end
    if job.exhausted and job.yielded >= job.pos then
      if job.bar then job.bar:finish() end
      if job.src_err ~= nil then error(job.src_err, 0) end
      return nil
    end
    while not job.exhausted and job.inflight < job.window do
      if not pull(job) then break end
    end
    if job.inflight > 0 then dispatch(pool, nil) end
  end
end

local function start_imap(pool, fname, ordered, fn, src, opts)
  check_running(pool, fname)
  checkcallable(fn, 1, fname)
  local kind = type(src)
  if kind ~= "table" and not callable(src) then typeerror(2, fname, "table or function", src) end
  opts = map_options(opts, fname, false)
  local job = {pool = pool, fr = encode_fn(fn), tag = TAG_MAP, size = tointeger(opts.chunksize) or 1,
               ordered = ordered, pos = 0, yielded = 0, done = 0, inflight = 0, window = 64,
               exhausted = false, vals = {}, errs = {}, ready = {}, nextout = 1, q = {}, qh = 1}
  if kind == "table" and not callable(src) then
    job.list, job.total = src, length(src)
  else
    job.src = src
  end
  if opts.progress and job.total then job.bar = new_bar(job.total) end
  return function() return step(job) end
end

function Pool:imap(fn, src, opts)
  return start_imap(self, "imap", true, fn, src, opts)
end

function Pool:imap_unordered(fn, src, opts)
  return start_imap(self, "imap_unordered", false, fn, src, opts)
end

-- === lifecycle ===

function Pool:close()
  checkself(self, Pool, "close")
  if self._state == "run" then
    self._state = "close"
    self._conn:flush()
  end
end

--- Stop waiting: what has no result fails with kind "cancelled" (the
--- tasks already sent may still run on a worker; their results are dropped).
function Pool:terminate()
  checkself(self, Pool, "terminate")
  if self._state == "terminate" then return end
  self._state = "terminate"
  local err = lmp.Error("cancelled", "the pool was terminated")
  for id, h in pairs(self._pending) do
    self._pending[id] = nil
    h:_settle("error", err)
  end
  self._inflight = 0
  run_callbacks(self)
  self._conn:close()
end

--- Wait until every task sent has its result, after close().
function Pool:join()
  checkself(self, Pool, "join")
  if self._state == "run" then
    badself("join", "pool is still running; call close() or terminate() first")
  end
  run_callbacks(self)
  if self._state == "terminate" then return end
  while next(self._pending) ~= nil do dispatch(self, nil) end
end

--- Deliver what has arrived and run due callbacks, without blocking: the
--- number of results delivered.
function Pool:poll()
  checkself(self, Pool, "poll")
  run_callbacks(self)
  if self._state == "terminate" then return 0 end
  local before = self._inflight
  dispatch(self, now())
  return before - self._inflight
end

--- The broker connection's descriptor, for event loops: it turns readable
--- only while the pool waits for a reply, so poll() on a short tick too.
function Pool:fileno()
  checkself(self, Pool, "fileno")
  if self._state == "terminate" then return -1 end
  return self._conn:fileno()
end

-- Event loops poll a broker pool every _tick seconds instead of watching
-- its descriptor; the cqueues pollable protocol says the same.
Pool._tick = TICK

function Pool:pollfd()
  return nil
end

function Pool:events()
  return "r"
end

function Pool:timeout()
  return TICK
end

function Pool:stats()
  checkself(self, Pool, "stats")
  local waiting, dead = self._conn:counts()
  return {broker = self._url, queue = self._queue, inflight = self._inflight,
          submitted = self._seq, refused = self._refused, waiting = waiting, dead = dead,
          workers = self._conn:workers()}
end

function Pool:__close()
  self:terminate()
end

function Pool:__tostring()
  local st = self._state == "run" and "running" or self._state == "close" and "closed" or "terminated"
  return string.format("lmp.Pool(broker %s, queue %s, %s)", self._url:gsub("//[^@/]*@", "//"),
                       self._queue, st)
end

-- === the constructor ===

local pool_keys = {broker = true, queue = true, visibility_timeout = true, max_deliveries = true,
                   secret = true, connect_timeout = true, result_ttl = true}

local function field(o, name, ok, msg)
  if o[name] ~= nil and not ok(o[name]) then argerror(1, "Pool", "field '" .. name .. "' " .. msg) end
end

local function positive(v) return type(v) == "number" and v > 0 end
local function posint(v) local n = tointeger(v) return n and n >= 1 end
local function str(v) return type(v) == "string" and #v > 0 end

--- The secret: the option, else LMP_SECRET; a pool without one is refused.
function M.secret(s, fname)
  s = s or os.getenv("LMP_SECRET")
  if s == nil or s == "" then
    error(string.format("%s: a broker needs a shared secret (option 'secret' or LMP_SECRET)", fname), 0)
  end
  return s
end

--- lmp.Pool{broker = "redis://[user:pass@]host:port/db", queue = "default",
---          visibility_timeout = 30, max_deliveries = 5, secret = "...",
---          connect_timeout = 5, result_ttl = 3600}
function M.Pool(o, ...)
  if select("#", ...) > 0 then argerror(2, "Pool", "no arguments expected after the options table") end
  checkoptions(o, 1, "Pool", pool_keys)
  field(o, "broker", str, "must be a URL string")
  field(o, "queue", str, "must be a non-empty string")
  field(o, "visibility_timeout", positive, "must be a positive number")
  field(o, "max_deliveries", posint, "must be a positive integer")
  field(o, "secret", str, "must be a non-empty string")
  field(o, "connect_timeout", positive, "must be a positive number")
  field(o, "result_ttl", positive, "must be a positive number")
  local secret = M.secret(o.secret, "Pool")
  local queue = o.queue or "default"
  local conn, err = core.open(o.broker, queue, o.connect_timeout or 5, o.result_ttl or 3600)
  if not conn then error(lmp.Error("broker", "Pool: " .. tostring(err)), 0) end
  local vt = o.visibility_timeout or 30
  local ok, verr = conn:visibility(vt)
  if not ok then error(lmp.Error("broker", "Pool: " .. tostring(verr)), 0) end
  return setmetatable({_conn = conn, _url = o.broker, _queue = queue, _secret = secret,
                       _caller = conn:consumer(), _seq = 0, _pending = {}, _inflight = 0,
                       _refused = 0, _cbq = {h = 1}, _state = "run",
                       _vt = vt, _md = tointeger(o.max_deliveries) or 5},
                      Pool)
end

return M

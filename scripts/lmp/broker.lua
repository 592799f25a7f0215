-- lmp.broker: lmp.Pool{broker = url}, the local Pool's API over a broker
-- (runtime/broker_redis.c through bindings/lbroker.c), served by `lmp
-- worker` processes on any number of machines (scripts/lmp/worker.lua).
--
-- A task is one signed message: the function (encoded once per function
-- object, or once per map call for closures with upvalues), its arguments
-- or a chunk of a map's items, the caller's id and the delivery policy
-- (visibility_timeout, max_deliveries, result_ttl), sealed with HMAC-SHA256
-- under the shared secret with its queue and expiry.  Results come back
-- signed on a stream that only this pool reads; one that fails its check is
-- dropped, and so is a second result for a task already settled (delivery
-- is at least once, results exactly once).
--
-- Nothing is left waiting for ever: a task dead-lettered by the workers
-- (even one they could not read: another secret, an altered entry) sends
-- this pool a notice that fails it with kind "dead_letter"; and every
-- visibility_timeout while tasks are out the pool asks the broker what it
-- holds of it (runtime/broker_redis.c's state): a count below what was sent,
-- or a queue made anew, means the broker lost them, and they fail with kind
-- "broker".
--
-- A durable task (option durable) counts only once a replica of the broker
-- holds it: before the pool reads results it sends what is buffered and asks
-- Redis to WAIT for one replica (up to connect_timeout); durable tasks that
-- no replica acknowledged in time fail with kind "broker" (they may still
-- run; their results are dropped).  Their workers WAIT likewise before
-- counting their results done.
--
-- Revoking (AsyncResult:cancel): a task no worker has been handed is
-- withdrawn in the same atomic step that tells so (runtime/broker_redis.c's
-- revoke marks it as handed out, so every take drops it): cancel() is true
-- and the result fails "cancelled" at once.  A task a worker has is
-- recorded among the queue's revocations, which workers look at ten times a
-- second: one that holds it unstarted skips it, and with terminate stops it
-- where it runs; its result, "cancelled", comes from there.  Whether it had
-- started cannot be known here without asking the worker, so a plain
-- cancel() of such a task is false; with terminate it is true at once.
--
-- Submissions are buffered and sent in one pipelined batch when 512 are
-- waiting and whenever the pool waits for results (get, wait, join, poll,
-- imap's iterator), so a loop of apply_async costs one round trip per batch.
-- Callbacks run, as on a local pool, inside those calls, in order.
local lmp = require "lmp"
local core = require("lmp.core").broker
local pcore = require("lmp.core").pool

local M = {}

local now = lmp.time
local tointeger, mtype = math.tointeger, math.type
local RESULT_BATCH = 512
local MAX_AGE = 86400 -- seconds a signed result may have travelled
local TICK = 0.05 -- seconds between looks of an event loop without a notifier
local RATE_EVERY, RATE_SPAN = 0.5, 5 -- the rate's samples: how far apart, how far back
local WORKERS_EVERY = 5 -- seconds a count of the queue's worker processes is kept
local SETTLE_EVERY = 5 -- seconds between updates of the replay records' low mark
local LOST_HINT = "run Redis with appendonly yes (docs/guide.md, 'Running Redis so that nothing is lost')"

local check = require "lmp.check"
local result = require "lmp.result"
local argerror, badself = check.argerror, check.badself
local checkoptions, checkself, checkcstring = check.checkoptions, check.checkself, check.checkcstring
local run_callbacks, settle_all = result.run_callbacks, result.settle_all
local TAG_APPLY = pcore.tags.apply

-- === encoding functions ===

-- A function's encoding as a task carries it: kept for a function that
-- cannot change between calls, by the local pool's rule (lpool.c); a
-- closure is encoded once per call.
local function encode_fn(fn) return pcore.encode_fn(fn, true) end

-- The error a worker reports for a dead-lettered task.
local function dead_error(v)
  if lmp.is_error(v) then return v end
  return lmp.Error("dead_letter", tostring(v))
end

-- === counters ===

-- Keep a sample of the results counted every RATE_EVERY seconds or more,
-- reaching RATE_SPAN back (as the local pool does).
local function rate_sample(pool, t)
  local s = pool._rs
  if #s > 0 and t - s[#s][1] < RATE_EVERY then return end
  s[#s + 1] = {t, pool._done + pool._failed}
  while #s > 1 and t - s[1][1] > RATE_SPAN do table.remove(s, 1) end
end

-- Results per second since the oldest sample.
local function rate(pool)
  local t = now()
  rate_sample(pool, t)
  local first = pool._rs[1]
  local dt = t - first[1]
  return dt > 0 and (pool._done + pool._failed - first[2]) / dt or 0
end

-- A worker of the queue as its heartbeat (Worker:info) describes it: its
-- host from its consumer name (host:pid:random), the ids of up to 8 of its
-- running tasks ("..." after them if it runs more).
local function worker_entry(w)
  local info = w.info
  local function count(key) return tointeger(tonumber(info:match("%f[%w]" .. key .. "=(%d+)"))) end
  local running = count("running") or 0
  local tasks = {}
  for id in (info:match("%f[%w]tasks=(%S+)") or ""):gmatch("[^,]+") do tasks[#tasks + 1] = id end
  return {pid = count("pid"), done = count("done") or 0, failed = count("failed") or 0,
          state = info:match(" draining") and "exiting" or running > 0 and "busy" or "idle",
          name = w.name, processes = count("processes"), running = running, info = info,
          host = w.name:match("^(.+):%d+:%x+$") or w.name, tasks = tasks, heartbeat_age = w.heartbeat_age}
end
M.worker_entry = worker_entry

--- A queue as conn:queues() gives it, as pool:stats() and `lmp top
--- --broker` show it: name, waiting, running (its workers' running tasks),
--- delayed, dead, taken and its workers (worker_entry, by name).
function M.queue_entry(q)
  local workers, running = {}, 0
  for i, w in ipairs(q.workers) do
    workers[i] = worker_entry(w)
    running = running + workers[i].running
  end
  table.sort(workers, function(a, b) return a.name < b.name end)
  return {name = q.name, waiting = q.waiting, running = running, delayed = q.delayed, dead = q.dead,
          taken = q.taken, workers = workers}
end

local function broker_error(err)
  error(lmp.Error("broker", "broker pool: " .. tostring(err)), 0)
end

-- The seq of a task id ("<caller>.<seq>"), or nil.
local function seq_of(id)
  return tointeger(tonumber(id:match("%.(%d+)$")))
end

-- Settle the pending task `id` (a result, or a failure made here).
local function settle(pool, id, how, v)
  local h = pool._pending[id]
  if h == nil then return end
  pool._pending[id] = nil
  pool._inflight = pool._inflight - 1
  pool._due[id] = nil
  if how == "ok" then pool._done = pool._done + 1 else pool._failed = pool._failed + 1 end
  h:_settle(how, v)
end

-- A dead-letter notice: "D", the length of the task's message, the message
-- as the caller sent it, and its history (unsigned: written by a worker
-- that may not have been able to read the task).  The task is ours when
-- its message passes our check; one that does not (altered in Redis) is
-- named only by the id its header claims.
local function dead_notice(pool, notice)
  local ok, n = pcall(string.unpack, ">I4", notice, 2)
  if not ok or #notice < 5 + n then return false end
  local msg, history = notice:sub(6, 5 + n), notice:sub(6 + n)
  local kind, id = core.unseal(pool._secret, msg)
  local why
  if kind == "T" then
    why = "its entry was dead-lettered"
  else
    id = core.peek(msg)
    why = "its entry failed the workers' signature check until it was dead-lettered "
          .. "(the workers have another secret, or the entry was altered in Redis)"
  end
  if id == nil or pool._pending[id] == nil then return kind == "T" end
  local deliveries = select(2, history:gsub("\n", "\n"))
  settle(pool, id, "error", lmp.Error("dead_letter", string.format("task %s: %s after %d deliveries; last: %s",
    id, why, deliveries, (history:match("([^\n]*)\n?$") or "")), {deliveries = deliveries, history = history}))
  return true
end

-- Fail what the broker no longer holds: the tasks after the count it has of
-- this pool (all of them when the queue was made anew).
local function lost(pool, count, epoch)
  local first = pool._base + count -- the last seq the broker still counts
  local what
  if epoch ~= pool._epoch then
    first = 0
    what = string.format("queue '%s' was made anew (its stream and group were gone)", pool._queue)
  else
    what = string.format("it holds %d of this pool's %d tasks", count, pool._seq - pool._base)
  end
  local ids = {}
  for id in pairs(pool._pending) do
    local seq = seq_of(id)
    if seq and seq > first then ids[#ids + 1] = id end
  end
  if #ids > 0 then
    local e = lmp.Error("broker", string.format(
      "broker pool: the broker lost its state and %d tasks of this pool with it: %s (Redis was flushed, "
      .. "or restarted without persistence); %s", #ids, what, LOST_HINT))
    for i = 1, #ids do settle(pool, ids[i], "error", e) end
  end
  pool._epoch, pool._base = epoch, pool._seq - count
end

-- Every visibility timeout while tasks are out: does the broker still hold
-- them?  And now and then: lower the replay records' mark.
local function check_state(pool, t)
  if t >= pool._next_check and next(pool._pending) ~= nil then
    pool._next_check = t + pool._vt
    local count, epoch = pool._conn:state()
    if not count then broker_error(epoch) end
    if epoch ~= pool._epoch or count < pool._seq - pool._base then lost(pool, count, epoch) end
  end
  if t >= pool._next_settle then
    pool._next_settle = t + SETTLE_EVERY
    local lo = pool._seq + 1
    for id in pairs(pool._pending) do
      local seq = seq_of(id)
      if seq and seq < lo then lo = seq end
    end
    if lo > pool._lo then
      pool._lo = lo
      pool._conn:settle(pool._caller, lo, false, pool._expires)
    end
  end
end

-- The durable tasks sent since the last look: a replica must hold them
-- (WAIT 1), or they fail.
local function replicate(pool)
  local ids = pool._unwaited
  if #ids == 0 then return end
  pool._unwaited = {}
  local n, why = pool._conn:replicate(1, pool._wait)
  if n and n >= 1 then return end
  local e = lmp.Error("broker", string.format(
    "broker pool: no replica of the broker acknowledged %d durable tasks within %g s (%s); they may "
    .. "still run, their results are dropped", #ids, pool._wait, tostring(why)))
  for i = 1, #ids do settle(pool, ids[i], "error", e) end
end

-- Take what has arrived (waiting until the deadline for the first) and
-- settle it; "timeout" when nothing came and the deadline has passed.
local function dispatch(pool, deadline)
  local conn = pool._conn
  if pool._wakefd then conn:notify_reset() end -- before reading: no wake-up lost
  replicate(pool)
  local t = now()
  check_state(pool, t)
  -- wait no longer than the next check
  local timeout = next(pool._pending) ~= nil and math.max(0, pool._next_check - t) or nil
  if deadline then timeout = math.min(timeout or math.huge, math.max(0, deadline - t)) end
  local msgs, err = conn:results(pool._caller, RESULT_BATCH, timeout)
  if not msgs then broker_error(err) end
  local key = pool._secret
  for i = 1, #msgs do
    local kind, id, body = core.unseal(key, msgs[i], MAX_AGE)
    if kind == "R" and type(body) == "table" then
      local s, v = body.s, body.v
      -- r: the value as the worker's pool wrote it, which the worker passed on unread
      if pool._pending[id] ~= nil and type(body.r) == "string" then v = core.decode(body.r) end
      if s == "dead" then s, v = "error", dead_error(v) end
      settle(pool, id, s, v)
    elseif msgs[i]:sub(1, 1) ~= "D" or not dead_notice(pool, msgs[i]) then
      pool._refused = pool._refused + 1
    end
  end
  if #msgs > 0 then rate_sample(pool, now()) end
  if pool._cbq.t > 0 then run_callbacks(pool) end
  if #msgs == 0 and deadline and now() >= deadline then return "timeout" end
  return nil
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

-- Seal and queue one task (held until its countdown or eta, if opts has
-- one; at opts' priority, else the pool's); returns its id.
local function submit(pool, tag, fr, args, n, opts)
  local seq = pool._seq + 1
  pool._seq = seq
  local id = pool._caller .. "." .. seq
  local body = {v = core.lua_version, c = pool._caller, t = tag, f = fr,
                a = core.encode(args, "args"), n = n, vt = pool._vt, md = pool._md, rt = pool._rt}
  local countdown, eta = opts and opts.countdown, opts and opts.eta
  local durable = opts and opts.durable
  if durable == nil then durable = pool._durable end
  if durable then
    body.du = pool._wait -- the worker waits as long for a replica of the result
    pool._unwaited[#pool._unwaited + 1] = id
  end
  local start = eta or os.time() + (countdown or 0) -- the expiry runs from when it may start
  local ok, err = pool._conn:put(core.seal(pool._secret, "T", id, body, "task", pool._queue,
                                           math.ceil(start) + pool._expires), countdown, eta,
                                 opts and opts.priority or pool._priority)
  if not ok then error(lmp.Error("broker", "broker pool: " .. tostring(err)), 0) end
  pool._inflight = pool._inflight + 1
  if countdown or eta then pool._due[id] = math.ceil(start) end -- for revoke's expiry
  return id
end

-- Revoke the tasks ts (a set of ids) in one round trip (see the header):
-- true if the result they make is cancelled now, which is when one of them
-- no worker had been handed, or with terminate.  The tasks withdrawn leave
-- the pending ones; a result still to come for another is dropped.
local function revoke(pool, ts, terminate)
  local ids, at, t = {}, {}, os.time()
  for id in pairs(ts) do
    ids[#ids + 1] = id
    at[#ids] = (pool._due[id] or t) + pool._expires -- the latest it could be delivered
  end
  local before, err = pool._conn:revoke(ids, at, terminate)
  if not before then
    -- Revoked or not, nobody can tell: the results fail rather than wait
    -- for what may never come.
    local e = lmp.Error("broker", "broker pool: cannot revoke: " .. tostring(err))
    for i = 1, #ids do settle(pool, ids[i], "error", e) end
    error(e, 0)
  end
  local any = terminate
  for i = 1, #ids do any = any or before[i] end
  if not any then return false end
  for i = 1, #ids do
    local id = ids[i]
    if (terminate or before[i]) and pool._pending[id] ~= nil then
      pool._pending[id], pool._due[id] = nil, nil
      pool._inflight = pool._inflight - 1
    end
  end
  return true
end

-- How many processes serve the queue, as the workers' heartbeats say
-- (looked up at most every WORKERS_EVERY seconds); nil if none is known.
local function processes(pool)
  local t = now()
  if t >= pool._procs_at then
    pool._procs_at = t + WORKERS_EVERY
    local total = 0
    for _, w in ipairs(pool._conn:workers() or {}) do total = total + (worker_entry(w).processes or 0) end
    pool._procs = total > 0 and total or nil
  end
  return pool._procs
end

-- Eight chunks per process serving the queue (at most 1000 items each):
-- fine enough that every worker, one that joins late too, gets a share and
-- the last chunks end close together; coarse enough to keep messages few.
-- Without a worker to count, chunks of about n/32 items.
local function default_chunksize(pool, n)
  local p = processes(pool)
  return math.max(1, math.min(1000, p and -(-n // (8 * p)) or (n + 31) // 32))
end

-- The notifier's descriptor, made on first use; nil if it cannot be (or
-- the pool is terminated).
local function notifier(pool)
  if pool._state == "terminate" then return nil end
  if pool._wakefd == nil then pool._wakefd = pool._conn:notify_fd(pool._caller) or false end
  return pool._wakefd or nil
end

-- Seconds between an event loop's looks at a pool without a notifier; nil
-- with one.
local function tick(pool)
  return notifier(pool) == nil and TICK or nil
end

-- AsyncResult, apply, map and imap: lmp.result's, over the broker.
-- A priority: an integer 0..9, higher first.
local function is_priority(v)
  local p = type(v) == "number" and tointeger(v)
  return p and p >= 0 and p <= 9
end

-- Delayed tasks: {countdown = seconds} or {eta = seconds since the epoch};
-- {priority = 0..9}.
local function check_submit(opts, i, fname)
  local countdown, eta = opts.countdown, opts.eta
  if countdown ~= nil and (type(countdown) ~= "number" or countdown < 0 or countdown ~= countdown) then
    argerror(i, fname, "option 'countdown' must be a non-negative number of seconds")
  end
  if eta ~= nil and (type(eta) ~= "number" or eta ~= eta or eta == math.huge or eta == -math.huge) then
    argerror(i, fname, "option 'eta' must be a time in seconds since the epoch")
  end
  if countdown ~= nil and eta ~= nil then
    argerror(i, fname, "options 'countdown' and 'eta' exclude each other")
  end
  if opts.durable ~= nil and type(opts.durable) ~= "boolean" then
    argerror(i, fname, "option 'durable' must be a boolean")
  end
  if opts.priority ~= nil and not is_priority(opts.priority) then
    argerror(i, fname, "option 'priority' must be an integer from 0 to 9")
  end
end

result.new{
  lmp = lmp, Pool = Pool, check_running = check_running, dispatch = dispatch,
  submit_apply = function(pool, fn, args, n, opts) return submit(pool, TAG_APPLY, encode_fn(fn), args, n, opts) end,
  -- A chunk travels as its own list of items.
  submit = function(pool, tag, fr, list, count, first, _, opts)
    if first then list = table.move(list, first, first + count - 1, 1, {}) end
    return submit(pool, tag, fr, list, count, opts)
  end,
  submit_keys = {countdown = true, eta = true, durable = true, priority = true},
  check_submit = check_submit,
  countdown = true, -- a retry is held by the broker until due
  encode_fn = encode_fn,
  -- A failed map's other chunks, an imap left early: their results are
  -- still awaited (so stats, poll and join count them), and dropped when
  -- they come.
  cancel = function() return false end,
  revoke = revoke,
  -- The notifier's descriptor (see Pool:fileno); without one a cqueues
  -- controller looks again every TICK seconds.
  pollfd = notifier,
  tick = tick,
  default_chunksize = default_chunksize,
  window = function() return 64 end,
  new_values = function() return {} end,
  isatty = core.isatty,
  flush = function(pool) pool._conn:flush() end,
  -- A worker reports the index of a failed item within its chunk.
  map_error = function(e, first)
    if type(e) == "table" and mtype(e.index) == "integer" then e.index = first + e.index - 1 end
    return e
  end,
  item_error = function(e, k, i)
    if type(e) == "table" and mtype(e.index) == "integer" then
      if e.index ~= k then e = nil else e.index = i end
    end
    if e == nil then
      -- an item before the failing one of its chunk: it ran, but its value
      -- is not reported by a failed chunk; fail it too
      e = lmp.Error("task", "an earlier item of its chunk failed", {index = i})
    end
    return e
  end,
}

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
  settle_all(self, lmp.Error("cancelled", "the pool was terminated"))
  self._inflight = 0
  run_callbacks(self)
  self:_forget()
  self._conn:close()
end

-- The pool is done with the broker: its results, counters and replay
-- records go, but the mark that refuses a replay of any of its tasks
-- (kept until they would have expired).  Best effort: the keys expire.
function Pool:_forget()
  if self._forgotten then return end
  self._forgotten = true
  self._conn:flush()
  self._conn:settle(self._caller, self._seq + 1, true, self._expires)
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
  self:_forget()
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

--- A descriptor for event loops that turns readable when results may have
--- come (then poll() delivers them): the notifier, a second connection
--- parked on the pool's wake-up token (runtime/broker_redis.c).  Without it
--- (it could not be made), the connection's own descriptor, readable only
--- while the pool waits for a reply, so loops then poll on a short tick.
function Pool:fileno()
  checkself(self, Pool, "fileno")
  if self._state == "terminate" then return -1 end
  return notifier(self) or self._conn:fileno()
end

-- For lmp.luv: seconds between looks when the descriptor cannot be watched,
-- nil when it can.
Pool._tick = tick

function Pool:pollfd()
  checkself(self, Pool, "pollfd")
  return notifier(self)
end

function Pool:events()
  return "r"
end

function Pool:timeout()
  return tick(self)
end

--- The local pool's counters (docs/lua-api.md), with what only a broker
--- knows.  queued and running are the queue's, every caller's: the
--- broker does not tell one caller's tasks from another's.
function Pool:stats()
  checkself(self, Pool, "stats")
  local list, err = self._conn:queues(self._queue)
  if not list then broker_error(err) end
  local q = M.queue_entry(list[1])
  return {queued = q.waiting, running = q.running, done = self._done,
          failed = self._failed, restarts = 0, recycled = 0, rate = rate(self), workers = q.workers,
          broker = core.url_shown(self._url), queue = self._queue, inflight = self._inflight, submitted = self._seq,
          refused = self._refused, waiting = q.waiting, delayed = q.delayed, dead = q.dead}
end

function Pool:__close()
  self:terminate()
end

function Pool:__tostring()
  local st = self._state == "run" and "running" or self._state == "close" and "closed" or "terminated"
  return string.format("lmp.Pool(broker %s, queue %s, %s)", core.url_shown(self._url),
                       self._queue, st)
end

-- === the constructor ===

local pool_keys = {broker = true, queue = true, visibility_timeout = true, max_deliveries = true,
                   secret = true, connect_timeout = true, result_ttl = true, expires = true,
                   durable = true, priority = true}
for k in pairs(result.retry_keys) do pool_keys[k] = true end

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
---          connect_timeout = 5, result_ttl = 3600, expires = 86400, durable = false,
---          priority = 0, retries = 0, retry_backoff = 1, retry_backoff_max = 600}
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
  field(o, "expires", positive, "must be a positive number")
  field(o, "durable", function(v) return type(v) == "boolean" end, "must be a boolean")
  field(o, "priority", is_priority, "must be an integer from 0 to 9")
  if o.broker then checkcstring(o.broker, 1, "Pool", "field 'broker'") end
  if o.queue then checkcstring(o.queue, 1, "Pool", "field 'queue'") end
  result.check_retry(o, 1, "Pool", "field")
  local secret = M.secret(o.secret, "Pool")
  local queue = o.queue or "default"
  local conn, err = core.open(o.broker, queue, o.connect_timeout or 5, o.result_ttl or 3600)
  if not conn then error(lmp.Error("broker", "Pool: " .. tostring(err)), 0) end
  local vt = o.visibility_timeout or 30
  local ok, verr = conn:visibility(vt)
  if not ok then error(lmp.Error("broker", "Pool: " .. tostring(verr)), 0) end
  local count, epoch = conn:state()
  if not count then error(lmp.Error("broker", "Pool: " .. tostring(epoch)), 0) end
  local t = now()
  return setmetatable({_conn = conn, _url = o.broker, _queue = queue, _secret = secret,
                       _caller = conn:consumer(), _seq = 0, _pending = {}, _due = {}, _inflight = 0,
                       _refused = 0, _done = 0, _failed = 0, _rs = {{t, 0}}, _cbq = result.new_queue(), _state = "run",
                       _vt = vt, _md = tointeger(o.max_deliveries) or 5, _rt = o.result_ttl or 3600,
                       _expires = math.ceil(o.expires or 86400), _epoch = epoch, _base = -count,
                       _next_check = t + vt, _next_settle = t + SETTLE_EVERY, _lo = 0, _procs_at = 0,
                       _durable = o.durable, _unwaited = {}, _wait = o.connect_timeout or 5,
                       _retry = result.retry_defaults(o), _priority = tointeger(o.priority) or 0},
                      Pool)
end

return M

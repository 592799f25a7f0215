-- lmp.worker: `lmp worker URL [--queue q] [--processes n]`, the process
-- that serves a broker queue, and `lmp worker --status URL`.
--
--   require("lmp.worker").main({"redis://127.0.0.1:6379/0", "--queue", "q"})
--
-- returns the exit status.  The URL may come instead from --url-file or
-- LMP_BROKER_URL, where other users cannot read its password (`lmp
-- worker` overwrites a password given on its command line in the
-- process's argv, bindings/main.c; a table given to main cannot be), and
-- no message shows a password (core.url_shown).  The worker takes tasks in batches, checks each
-- signature before decoding a byte of it, runs the tasks on a local pool of
-- n processes and publishes signed results in batches.  The loop itself
-- never runs a task, and the leases of the running ones are renewed by a
-- thread of their own (lmp/broker.h's lease keeper), so a long task keeps
-- its lease however busy the loop is.
--
-- A task's function and arguments, and a result, are opaque bytes here:
-- the task's parts go to the local pool's core (lmp.core.pool's forward)
-- as they came, and a result goes back as the pool's worker wrote it,
-- sealed inside the signed result ({s = status, r = bytes}).  Values are
-- read only where they must be: a result that holds an lmp handle (decoded
-- so that sealing it refuses it, as a local object cannot reach another
-- machine), a task without its count (its arguments are counted), and the
-- errors the pool itself makes (a timeout; a worker lost, which sends the
-- task back to the queue).
--
-- A delivery that fails (a refused signature, a pool process that died
-- under the task) puts the task back at once for any worker, counting the
-- delivery; past the task's max_deliveries it is dead-lettered and its
-- caller gets an lmp.Error of kind "dead_letter".  The tasks of workers that
-- vanished are reclaimed once idle for the visibility timeout.
--
-- A task its caller revoked after a worker was handed it (lmp.broker's
-- cancel) is in the queue's revocations, which the worker fetches when
-- their count changes (the count comes with each tick's promote): a task
-- held here that no local process has started is dropped, with terminate a
-- running one is stopped (its process killed, and replaced by the local
-- pool), and a revoked task handed here again (given back, reclaimed) is
-- not run; each time its caller gets a "cancelled" result.
--
-- Signals: SIGTERM or a first SIGINT drains (running tasks finish, no new
-- ones are taken, then the worker exits 0); a second SIGINT stops at once,
-- putting the running tasks back for other workers (exit 130).
local lmp = require "lmp"
local core = require("lmp.core").broker
local pcore = require("lmp.core").pool

local M = {}

local now = lmp.time
local tointeger = math.tointeger
local tags = pcore.tags -- as bindings/lpool.h defines them
local TAG_APPLY, TAG_MAP, TAG_STARMAP = tags.apply, tags.map, tags.starmap

local usage = [[
usage: lmp worker [URL] [--queue NAME] [--processes N] [options]
       lmp worker --status [URL] [--queue NAME]
  URL                    redis://[user:password@]host:port/db, or
                         redis+sentinel://[user:password@]s1:26379,s2/master/db
                         (following the sentinels' master), or
                         redis+cluster://host:port,host:port/ (rediss+cluster://
                         over TLS); without it,
                         the first line of --url-file, or LMP_BROKER_URL
                         (a password given here is hidden from ps);
                         rediss://...db?ca=PATH[&cert=PATH&key=PATH] for TLS
  --url-file PATH        read the URL from the first line of PATH
  --queue NAME           queue to serve (default "default")
  --processes N          local pool size (default: number of CPUs)
  --prefetch N           tasks held per process (default: adaptive, see below)
  --visibility-timeout S reclaim tasks idle this long (default 30; a lower
                         visibility_timeout of the queue's pools wins)
  --max-deliveries N     deliveries of an entry this worker refuses (bad
                         signature, not a task) before it is dead-lettered
                         (default 5); a task that passes the check has its
                         pool's max_deliveries instead
  --max-age S            refuse tasks signed longer ago (default 86400)
  --task-timeout S       kill a task running longer (kind "timeout")
  --rate-limit N/s       start at most N tasks a second (or N/m, N/h) across
                         all the queue's workers (give each the same rate)
  --secret-file PATH     the shared secret (default: LMP_SECRET)
By default a worker holds, besides a task for each free process, about 20 ms
of work at the rate its tasks finish (at most 256 per process): tiny tasks
come in large batches, long ones one per process, and work it has not started
within 0.2 s goes back to the queue for an idle worker.  --prefetch N holds
N per process instead, always (faster for floods of tiny tasks, unfair when
tasks are long).
]]

local function say(fmt, ...)
  io.stderr:write(string.format("lmp worker[%d]: " .. fmt .. "\n", lmp.current_process().pid, ...))
  io.stderr:flush()
end

-- === arguments ===

local flags = {["--queue"] = "queue", ["--processes"] = "processes", ["--prefetch"] = "prefetch",
               ["--visibility-timeout"] = "vt", ["--max-deliveries"] = "md", ["--max-age"] = "max_age",
               ["--task-timeout"] = "task_timeout", ["--secret-file"] = "secret_file",
               ["--url-file"] = "url_file", ["--rate-limit"] = "rate_limit"}
local numeric = {processes = "int", prefetch = "int", vt = "num", md = "int", max_age = "num",
                 task_timeout = "num"}

-- "N/s", "N/m" or "N/h" -> tasks a second, N a positive number.
local PER = {s = 1, m = 60, h = 3600}
local function rate_limit(s)
  local n, unit = s:match("^(%d*%.?%d+)/([smh])$")
  n = tonumber(n)
  if not n or n <= 0 then return nil end
  return n / PER[unit]
end

local function parse(argv)
  local o = {queue = "default"}
  local i = 1
  while i <= #argv do
    local a = argv[i]
    local name, val = a:match("^(%-%-[%w-]+)=(.*)$")
    name = name or a
    if a == "--status" then
      o.status = true
    elseif a == "-h" or a == "--help" then
      o.help = true
    elseif flags[name] then
      if val == nil then
        i = i + 1
        val = argv[i]
      end
      if val == nil then return nil, "option " .. name .. " needs a value" end
      local key = flags[name]
      if numeric[key] then
        local n = tonumber(val)
        if not n or n <= 0 or (numeric[key] == "int" and not tointeger(n)) then
          return nil, "option " .. name .. " needs a positive " .. (numeric[key] == "int" and "integer" or "number")
        end
        val = numeric[key] == "int" and tointeger(n) or n
      elseif key == "rate_limit" then
        val = rate_limit(val)
        if not val then return nil, "option " .. name .. " needs a rate such as 10/s, 30/m or 100/h" end
      end
      o[key] = val
    elseif a:sub(1, 1) == "-" then
      return nil, "unknown option " .. a
    elseif o.url == nil then
      o.url = a
    else
      return nil, "unexpected argument " .. a
    end
    i = i + 1
  end
  if o.url and o.url_file then return nil, "give the URL or --url-file, not both" end
  return o
end

-- The broker URL: the argument, the first line of --url-file, or
-- LMP_BROKER_URL; nil and a message if none.
local function broker_url(o)
  if o.url then return o.url end
  if o.url_file then
    local f, err = io.open(o.url_file)
    local s = f and f:read("l")
    if f then f:close() end
    if not f then return nil, "cannot read the URL file: " .. err end
    if not s or not s:match("%S") then return nil, "the URL file " .. o.url_file .. " is empty" end
    return (s:match("^%s*(.-)%s*$"))
  end
  local env = os.getenv("LMP_BROKER_URL")
  if env and env:match("%S") then return (env:match("^%s*(.-)%s*$")) end
  return nil, "a broker URL is needed (an argument, --url-file or LMP_BROKER_URL)"
end

M.broker_url = broker_url

local function read_secret(o)
  if o.secret_file then
    local f, err = io.open(o.secret_file)
    if not f then return nil, err end
    local s = f:read("l")
    f:close()
    return s
  end
  return os.getenv("LMP_SECRET")
end

-- === --status ===

local function status(o)
  local conn, err = core.open(o.url, o.queue, 5)
  if not conn then
    say("%s", err)
    return 1
  end
  local ws, werr = conn:workers()
  if not ws then
    say("%s", werr)
    return 1
  end
  local waiting, dead, taken, delayed = conn:counts()
  if not waiting then
    say("%s", dead)
    return 1
  end
  print(string.format("queue %s: %d waiting, %d taken, %d delayed, %d dead-lettered, %d live workers",
                      o.queue, waiting, taken, delayed, dead, #ws))
  table.sort(ws, function(a, b) return a.name < b.name end)
  for _, w in ipairs(ws) do
    local leases = 0
    for _ in w.running:gmatch("[^\n]+") do leases = leases + 1 end
    print(string.format("%s  %s  leases=%d", w.name, w.info, leases))
  end
  conn:close()
  return 0
end

-- === serving ===

local BUFFER = 0.02 -- seconds of work a worker reserves beyond its free processes
local MAX_PREFETCH = 256 -- the most tasks reserved per process
local HOLD = 0.2 -- seconds a reserved task may wait for a local process before it goes back
local PATIENCE = 1 -- seconds a broker call reconnects before the loop hears of it
local ANSWER = 3 -- seconds past its blocking time a take may take to answer
local TICK = 0.1 -- the loop's timers: give-back, promotion, rate, heartbeat text
local REFUSED_FIRST, REFUSED_MAX = 0.1, 5 -- seconds a refused entry waits before its next delivery
local REFUSING_MAX = 0.25 -- the longest a worker that refuses entries waits to ask again

local Worker = {}
Worker.__index = Worker

-- The heartbeat's text: counters and the ids of up to 8 running tasks.
function Worker:info()
  local ids = {}
  for _, t in pairs(self.running) do
    if #ids == 8 then ids[#ids + 1] = "..." break end
    ids[#ids + 1] = t.id
  end
  return string.format("pid=%d processes=%d running=%d done=%d failed=%d refused=%d%s%s",
                       lmp.current_process().pid, self.n, self.nrunning, self.ndone, self.nfailed,
                       self.nrefused,
                       self.draining and " draining" or "",
                       #ids > 0 and " tasks=" .. table.concat(ids, ",") or "")
end

-- The broker could not be reached: said once, until it can again.
function Worker:cut(err)
  if not self.cut_since then
    self.cut_since = now()
    say("cut off from the broker: %s; retrying", err)
  end
end

function Worker:back()
  if self.cut_since then
    say("back in touch with the broker after %.1f s", now() - self.cut_since)
    self.cut_since = nil
  end
end

-- How many tasks to hold: the fixed --prefetch per process, or by default
-- the free processes plus BUFFER seconds of work at the rate tasks finish
-- here, so that a worker keeps busy across a round trip to the broker but
-- does not sit on work that another worker could start.
function Worker:depth()
  if self.prefetch then return self.n * self.prefetch end
  return self.n + math.min(self.n * MAX_PREFETCH, math.floor(self.rate * BUFFER))
end

-- Queue a sealed result for the next batch of completions (its lease is
-- kept until the batch is published).
function Worker:complete(t, sealed, ok)
  local b = self.batch
  b[#b + 1] = {t.msg.id, t.id, t.caller, sealed, ok, t.rt}
  if t.du then self.durable = math.max(self.durable or 0, t.du) end
  self:forget(t, true)
  self.finished = self.finished + 1
end

-- Queue a signed result made here (an error, or a value decoded here).
function Worker:publish(t, status, value)
  local ok, sealed = pcall(core.seal, self.secret, "R", t.id, {s = status, v = value}, "result", self.queue)
  if not ok then
    sealed = core.seal(self.secret, "R", t.id, {s = "error", v = lmp.is_error(sealed) and sealed
                                                or lmp.Error("serialize", tostring(sealed))}, "result", self.queue)
  end
  self:complete(t, sealed, ok and status == "ok")
end

-- Queue a signed result whose value is a pool worker's reply, unread.
function Worker:forward(t, status, bytes)
  self:complete(t, core.seal(self.secret, "R", t.id, {s = status, r = bytes}, "result", self.queue),
                status == "ok")
end

function Worker:forget(t, keep_lease)
  if self.running[t.msg.id] then
    self.running[t.msg.id] = nil
    self.nrunning = self.nrunning - 1
    if not keep_lease then self.conn:lease_del(t.msg.id) end
  end
end

-- Publish the finished tasks' results; kept for the next try when the
-- broker cannot be reached (the tasks stay leased meanwhile).
function Worker:flush()
  if #self.batch == 0 then return end
  local b = self.batch
  local ok, err = self.conn:complete(b)
  if not ok then
    self:cut(err)
    return
  end
  self:back()
  self.batch = {}
  self:replicate()
  for i = 1, #b do
    self.conn:lease_del(b[i][1])
    if b[i][5] then self.ndone = self.ndone + 1 else self.nfailed = self.nfailed + 1 end
  end
end

-- Results of durable tasks count once a replica holds them (WAIT 1, as
-- long as their caller waits for its tasks); one that none acknowledged is
-- said (a failover before it replicates makes the task run again).
function Worker:replicate()
  local wait = self.durable
  if not wait then return end
  self.durable = nil
  local n, why = self.conn:replicate(1, wait)
  if not n or n < 1 then say("no replica acknowledged the results of durable tasks: %s", why) end
end

-- The server the broker's connection reached: said when it moves (a
-- sentinel failover).
function Worker:follow()
  local at = self.conn:server()
  if at == "" or at == self.at then return end
  if self.at then say("following the broker's failover: its master is now %s", at) end
  self.at = at
end

-- A dead-letter notice for the caller of an entry this worker could not
-- read (see lmp.broker's dead_notice): the entry and its history, unsigned.
local function notice(msg, history)
  return "D" .. string.pack(">I4", #msg.data) .. msg.data .. history
end

-- A delivery that failed through no fault of the task's result: the task
-- goes back for any worker (after `delay` seconds, if given), or to the
-- dead letters once out of deliveries.  `ran` is how many deliveries ran
-- the task (the current one may not have).
function Worker:redeliver(msg, reason, t, md, ran, delay)
  if t then self:forget(t) end
  ran = ran or msg.deliveries
  local ok, err
  if ran >= md then
    local history = msg.history .. self.consumer .. ": " .. reason .. "\n"
    if t then
      local e = lmp.Error("dead_letter", string.format("task %s failed %d deliveries (last: %s)", t.id,
                                                       ran, reason),
                          {deliveries = ran, history = history})
      ok, err = self.conn:bury(msg, reason, t.id, t.caller,
                               core.seal(self.secret, "R", t.id, {s = "dead", v = e}, "result", self.queue), t.rt)
    else
      -- a task it could not read: its caller learns from the id it claims
      local id = core.peek(msg.data)
      local caller = id and id:match("^(.+)%.%d+$")
      if caller then
        ok, err = self.conn:bury(msg, reason, id, caller, notice(msg, history))
      else
        ok, err = self.conn:bury(msg, reason)
      end
    end
  else
    ok, err = self.conn:release(msg, reason, delay)
  end
  if not ok then say("cannot put entry %s back: %s", msg.id, err) end
end

-- Hand a task to the local pool, its parts unread.
function Worker:run(t, body)
  if body.v ~= core.lua_version then
    self:publish(t, "error", lmp.Error("serialize", string.format(
      "the task was sent by Lua %d.%d; this worker runs Lua %d.%d", body.v // 100, body.v % 100,
      core.lua_version // 100, core.lua_version % 100)))
    return
  end
  local tag, f, a, n = body.t, body.f, body.a, tointeger(body.n)
  if type(f) ~= "string" or type(a) ~= "string" then
    self:publish(t, "error", lmp.Error("serialize", "the task has no function or no arguments"))
    return
  end
  if tag ~= TAG_APPLY and tag ~= TAG_MAP and tag ~= TAG_STARMAP then
    self:publish(t, "error", lmp.Error("task", "unknown task type " .. tostring(tag)))
    return
  end
  if self.broken then
    self:publish(t, "error", self.broken)
    return
  end
  if not n then -- lmp's pools always send it: count the arguments
    local ok, args = pcall(core.decode, a)
    if not ok or type(args) ~= "table" then
      self:publish(t, "error", lmp.is_error(args) and args or lmp.Error("serialize", tostring(args)))
      return
    end
    n = #args
  end
  t.local_id = self.pool:forward(tag, f, n, a)
  t.at = now()
  self.tasks[t.local_id] = t
end

-- A reply of the local pool for task t (a task given back by stop_now or
-- already settled has no say any more).
function Worker:settle(t, how, v)
  if self.running[t.msg.id] ~= t then return end
  if type(v) == "string" then
    if core.handles(v) == 0 then return self:forward(t, how, v) end
    v = core.decode(v)
  elseif lmp.is_error(v) and v.kind == "worker_lost" then
    return self:redeliver(t.msg, "worker_lost: " .. tostring(v.message), t, t.md)
  end
  self:publish(t, how, v)
end

-- Publish what the local pool has finished, waiting until deadline (nil:
-- for ever) for the first reply; "timeout", or "closed" once the pool has
-- ended.
function Worker:collect(deadline)
  local pool, tasks = self.pool, self.tasks
  while true do
    local id, how, v = pool:wait(deadline, true)
    if id == nil then return how end
    deadline = 0
    if how == "broken" then
      -- no worker can start: every task fails as a local pool's would
      self.broken = v
      for k, t in pairs(tasks) do
        tasks[k] = nil
        if self.running[t.msg.id] == t then self:publish(t, "error", v) end
      end
    else
      local t = tasks[id]
      tasks[id] = nil
      if t then self:settle(t, how, v) end
    end
  end
end

local function revoked_error(t)
  return lmp.Error("cancelled", "task " .. t.id .. " was revoked")
end

-- The queue's revocations, when they changed: kept for the entries to
-- come, and the tasks held here that they name are dropped (not started)
-- or stopped (terminate).
function Worker:revocations()
  local gen, list = self.conn:revoked(self.revgen)
  if gen == nil then return self:cut(list) end
  if gen == false then return end
  self.revgen = gen
  local revoked = {}
  for i = 1, #list do
    local how, id = list[i]:match("^(%a+) (.+)$")
    if id and revoked[id] ~= "terminate" then revoked[id] = how end
  end
  self.revoked = revoked
  local pool = self.pool
  for _, t in pairs(self.running) do
    local how = revoked[t.id]
    if how and t.local_id and self.tasks[t.local_id] == t
       and (pool:cancel(t.local_id) or how == "terminate" and pool:stop(t.local_id)) then
      self.tasks[t.local_id] = nil
      self:publish(t, "error", revoked_error(t))
    end
  end
end

-- One delivered entry: checked, then run, redelivered or dead-lettered.
function Worker:handle(msg)
  if self.running[msg.id] then return end -- our own, read again after a reconnection
  if self.draining then return self:give_back_entry(msg) end -- taken as the drain began
  local kind, id, body, queue = core.unseal(self.secret, msg.data, self.max_age)
  if kind ~= "T" or type(body) ~= "table" or type(body.c) ~= "string" or queue ~= self.queue then
    local why = kind == nil and id or kind == "T" and queue ~= self.queue
                and string.format("signed for queue '%s'", queue) or "not a task"
    self.nrefused = self.nrefused + 1
    say("refusing entry %s: %s (delivery %d)", msg.id, why, msg.deliveries)
    -- the entry backs off, not this worker: 0.1 s, doubling with each
    -- refusal (a worker with the right secret may come meanwhile)
    self:redeliver(msg, "refused: " .. why, nil, self.md, nil,
                   math.min(REFUSED_MAX, REFUSED_FIRST * 2 ^ (msg.deliveries - 1)))
    -- and this worker asks a little later: one that refuses everything
    -- (another secret) leaves the entries to the workers that can run them
    self.refusing = math.min(REFUSING_MAX, (self.refusing or REFUSING_MAX / 8) * 2)
    self.ask_after = now() + self.refusing
    return
  end
  self.refusing = nil
  local md = tointeger(body.md) or self.md
  local t = {msg = msg, id = id, caller = body.c, md = md, rt = tonumber(body.rt), du = tonumber(body.du)}
  if msg.deliveries > md then
    -- the last delivery never came back (its worker vanished)
    self:redeliver(msg, "out of deliveries, the last one lost with its worker", t, md, msg.deliveries - 1)
    return
  end
  self.running[msg.id] = t
  self.nrunning = self.nrunning + 1
  self.conn:lease_add(msg.id)
  if self.revoked[id] then return self:publish(t, "error", revoked_error(t)) end
  self:run(t, body)
end

-- Ask for as many tasks as there is room for, unless a take is out.  The
-- take waits at the broker (up to a second) and answers when work comes;
-- the loop meanwhile serves the local pool.
function Worker:ask()
  if self.asking or (self.refusing and now() < self.ask_after) then return end
  local room = self:depth() - self.nrunning
  if room <= 0 then return end
  local ready, err = self.tconn:take_send(room, 1)
  if ready == nil then
    self:cut(err)
    return
  end
  self.asking, self.asked_at, self.asked = true, now(), room
  if ready then self:receive() end
end

-- The take's answer, if it has come.
function Worker:receive()
  local msgs, err = self.tconn:take_recv()
  if msgs == false then
    if now() - self.asked_at > 1 + ANSWER then -- the link is gone without a word
      self.tconn:take_cancel()
      self.asking = false
      self:cut("no answer to a take in " .. (1 + ANSWER) .. " s")
    end
    return
  end
  self.asking = false
  if not msgs then return self:cut(err) end
  self:back()
  -- a full answer: work is waiting, so every worker has some
  self.backlog = #msgs >= self.asked
  for i = 1, #msgs do self:handle(msgs[i]) end
end

-- Tasks whose lease lapsed (their worker vanished) are claimed every
-- quarter visibility timeout (at most a second apart), all at once and
-- whatever room there is: they run next here, ahead of new work.
function Worker:reclaim(t)
  if t < self.next_reclaim then return end
  -- the queue's visibility timeout, as its producers asked, bounds ours
  local qvt = self.conn:visibility()
  local vt = qvt and qvt > 0 and qvt < self.vt and math.max(0.5, qvt) or self.vt
  self.next_reclaim = t + math.min(1, math.max(0.25, vt / 4))
  local msgs, err = self.conn:reclaim(vt, self.n + MAX_PREFETCH)
  if not msgs then return self:cut(err) end
  for i = 1, #msgs do
    if not self.running[msgs[i].id] then
      say("reclaimed entry %s (delivery %d)", msgs[i].id, msgs[i].deliveries)
    end
    self:handle(msgs[i])
  end
end

-- An entry this worker will not run after all goes back to the queue for
-- any worker, its delivery uncounted.
function Worker:give_back_entry(msg)
  local ok, err = self.conn:release({id = msg.id, data = msg.data, deliveries = msg.deliveries - 1,
                                     history = msg.history})
  if not ok then say("cannot give entry %s back: %s", msg.id, err) end
end

-- Tasks reserved here that no local process has started within HOLD go
-- back to the queue for an idle worker: only when the queue has run dry
-- (with a backlog every worker has work, and a task given back would wait
-- behind all of it).  Reclaimed tasks stay: they are behind nothing here.
function Worker:give_back(t)
  if self.prefetch or self.backlog then return end
  local pool = self.pool
  for _, task in pairs(self.running) do
    if task.at and t - task.at > HOLD and task.msg.deliveries == 1 and pool:state(task.local_id) ~= "running"
       and pool:cancel(task.local_id) then
      self.tasks[task.local_id] = nil
      self:forget(task)
      self:give_back_entry(task.msg)
    end
  end
end

-- Held tasks (countdown, eta) that are due enter the queue: every worker
-- looks each tick; the broker moves each once.
function Worker:promote()
  local n, err = self.conn:promote(256)
  if not n then self:cut(err) end
end

-- The rate tasks finish here, smoothed over the loop's ticks.
function Worker:measure(t)
  local dt = t - self.rate_at
  self.rate = 0.5 * self.rate + 0.5 * self.finished / dt
  self.finished, self.rate_at = 0, t
end

function Worker:stop_now()
  for _, t in pairs(self.running) do
    self:redeliver(t.msg, "worker stopped", t, math.huge)
  end
  self.pool:terminate()
end

function Worker:serve()
  local last_tick = now()
  while true do
    local nterm, nint = core.signals()
    if nint >= 2 then
      say("stopping now; %d running tasks go back to the queue", self.nrunning)
      self:flush()
      self:stop_now()
      return 130
    end
    if (nterm > 0 or nint > 0) and not self.draining then
      self.draining = true
      say("draining: finishing %d running tasks, taking no new ones", self.nrunning)
      self.conn:lease_info(self:info())
    end
    self:collect(0)
    self:flush()
    local t = now()
    if self.asking then self:receive() end -- draining, what it brings goes back (see handle)
    if self.draining then
      if self.nrunning == 0 and #self.batch == 0 and not self.asking then return 0 end
    else
      self:reclaim(t)
      self:ask()
    end
    if t - last_tick >= TICK then
      self:measure(t)
      self:follow()
      if not self.draining then
        self:give_back(t)
        self:promote()
      end
      self:revocations()
      last_tick = t
      if t - (self.info_at or 0) > 0.5 then
        self.info_at = t
        self.conn:lease_info(self:info())
      end
    end
    local fds = {self.pool:fileno()}
    if self.asking and self.tconn:fileno() >= 0 then fds[2] = self.tconn:fileno() end
    if #self.batch == 0 or not self.cut_since then
      lmp._poll_fds(fds, self.cut_since and 0.5 or TICK)
    else
      lmp.sleep(0.5)
    end
  end
end

local function serve(o)
  local secret, serr = read_secret(o)
  if serr then
    say("cannot read the secret file: %s", serr)
    return 2
  elseif not secret or secret == "" then
    say("no shared secret: %s", o.secret_file and "the secret file " .. o.secret_file .. " is empty"
                                or "set LMP_SECRET or give --secret-file")
    return 2
  end
  local conn, err = core.open(o.url, o.queue, 5)
  if not conn then
    say("%s", err)
    return 1
  end
  -- takes have a connection of their own, parked at the broker while the
  -- loop serves the local pool
  local tconn, terr = core.open(o.url, o.queue, 5, nil, conn:consumer())
  if not tconn then
    say("%s", terr)
    return 1
  end
  conn:patience(PATIENCE)
  tconn:patience(PATIENCE)
  if o.rate_limit then assert(tconn:rate_limit(o.rate_limit)) end
  local n = o.processes or lmp.cpu_count()
  local pool = pcore.new(n, 0, o.task_timeout or 0, nil, nil, 0, nil)
  core.catch_signals()
  local t = now()
  local w = setmetatable({conn = conn, tconn = tconn, pool = pool, secret = secret, n = n,
                          queue = o.queue, consumer = conn:consumer(), prefetch = o.prefetch,
                          vt = o.vt or 30, md = o.md or 5, max_age = o.max_age or 86400,
                          running = {}, nrunning = 0, ndone = 0, nfailed = 0, nrefused = 0,
                          batch = {}, tasks = {}, next_reclaim = 0, rate = 0,
                          rate_at = t, finished = 0, revoked = {}, revgen = -1},
                         Worker)
  local ok, lerr = conn:lease_start(0.25, 5)
  if not ok then
    say("cannot start the lease keeper: %s", lerr)
    return 1
  end
  conn:lease_info(w:info())
  w:revocations()
  say("serving queue %s at %s as %s with %d processes", o.queue, core.url_shown(o.url),
      conn:consumer(), n)
  local rc = w:serve()
  w:flush()
  conn:lease_stop()
  if rc ~= 130 then
    pool:close()
    while w:collect(nil) ~= "closed" do end
  end
  tconn:close()
  conn:close()
  say("stopped")
  return rc
end

--- main(argv) -> exit status
function M.main(argv)
  if type(argv) ~= "table" then
    error(string.format("bad argument #1 to 'main' (table expected, got %s)", type(argv)), 2)
  end
  local o, err = parse(argv)
  if not o then
    io.stderr:write("lmp worker: ", err, "\n", usage)
    return 2
  end
  if o.help then
    io.stdout:write(usage)
    return 0
  end
  o.url, err = broker_url(o)
  if not o.url then
    io.stderr:write("lmp worker: ", err, "\n", usage)
    return 2
  end
  if o.status then return status(o) end
  return serve(o)
end

return M

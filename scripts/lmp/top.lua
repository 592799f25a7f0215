-- lmp top: a live view of the pools of a running lmp program, or of a
-- broker's queues and workers.
--
--   lmp top               the running lmp programs of this user
--   lmp top PID           a live view of PID's pools; q quits
--   lmp top --once PID    one snapshot as plain text, for scripts
--   lmp top --broker URL  a live view of every queue on the broker (--once too)
--
-- It reads what the program already keeps in shared memory (the registry of
-- its pools and each pool's worker slots, see lmp_pool_list and
-- lmp_pool_peek in include/lmp/pool.h) and /proc: the program does nothing
-- for it and never waits for it.  Only segments of this user are read.
-- A broker is looked at through lmp_broker_queues (include/lmp/broker.h),
-- which writes nothing there: the queues' counts and the workers'
-- heartbeats, each queue's rate from its workers' counters between looks.
local lmp = require "lmp"
local top = require("lmp.core").top

local M = {}

local usage = [[
usage: lmp top                         list the running lmp programs of this user
       lmp top [--interval S] PID      live view of PID's pools (q quits)
       lmp top --once PID              one snapshot as plain text
       lmp top --broker [URL] [--url-file PATH] [--interval S] [--once]
                                       live view of a broker's queues and workers;
                                       the URL may come from --url-file or
                                       LMP_BROKER_URL instead
]]

local BROKER_GAP = 1 -- seconds between --once's two looks at a broker (workers report every 0.5 s)
local CONNECT = 2 -- seconds a look at a broker tries to (re)connect

-- === formatting ===

local function cmdline(pid)
  local f = io.open("/proc/" .. pid .. "/cmdline")
  if not f then return "?" end
  local s = f:read("a") or ""
  f:close()
  s = s:gsub("%z$", ""):gsub("%z", " ")
  return s ~= "" and s or "?"
end

local function bytes(n)
  if not n then return "-" end
  local units = {"B", "K", "M", "G", "T"}
  local i = 1
  while n >= 1024 and i < #units do
    n = n / 1024
    i = i + 1
  end
  return i == 1 and string.format("%d%s", n, units[i]) or string.format("%.1f%s", n, units[i])
end

local function seconds(s)
  if not s then return "-" end
  if s < 60 then return string.format("%.1fs", s) end
  if s < 3600 then return string.format("%dm%02ds", s // 60, math.floor(s % 60)) end
  return string.format("%dh%02dm", s // 3600, math.floor(s % 3600) // 60)
end

-- === snapshots ===

-- The pools of pid with their counters and workers: {{entry =, stats =}, ...}.
local function snapshot(pid)
  local pools = {}
  for _, e in ipairs(top.pools(pid) or {}) do
    local s = top.peek(e.name)
    if s then pools[#pools + 1] = {entry = e, stats = s} end
  end
  return pools
end

-- What changed between two snapshots dt seconds apart: each worker's CPU%
-- (by pid), and each pool's tasks per second (by segment name) from its
-- workers' own counters, which stay current while the program is busy
-- elsewhere (the pool's published rate only moves when its owner calls it).
-- A replaced worker starts its counters again: only pids in both count.
local function changes(prev, now, dt)
  local before, cpu, rate = {}, {}, {}
  for _, p in ipairs(prev or {}) do
    for _, w in ipairs(p.stats.workers) do
      if w.pid then before[w.pid] = w end
    end
  end
  for _, p in ipairs(now) do
    local tasks, seen = 0, false
    for _, w in ipairs(p.stats.workers) do
      local b = w.pid and before[w.pid]
      if b and dt > 0 then
        if w.cpu and b.cpu then cpu[w.pid] = 100 * (w.cpu - b.cpu) / dt end
        tasks, seen = tasks + (w.done + w.failed) - (b.done + b.failed), true
      end
    end
    if seen then rate[p.entry.name] = tasks / dt end
  end
  return {cpu = cpu, rate = rate}
end

-- The text of one snapshot: a list of lines.
local function render(pid, pools, ch)
  local lines = {}
  local nworkers = 0
  for _, p in ipairs(pools) do nworkers = nworkers + #p.stats.workers end
  lines[1] = string.format("lmp top - pid %d: %s", pid, cmdline(pid))
  lines[2] = string.format("%d pool%s, %d worker%s", #pools, #pools == 1 and "" or "s", nworkers,
                           nworkers == 1 and "" or "s")
  for i, p in ipairs(pools) do
    local s = p.stats
    lines[#lines + 1] = ""
    lines[#lines + 1] = string.format("pool %d (process %d): %d queued, %d running, %.1f tasks/s",
                                      i, p.entry.owner, s.queued, s.running,
                                      ch.rate[p.entry.name] or s.rate)
    lines[#lines + 1] = string.format("  done %d, failed %d, worker restarts %d (recycled for memory %d)",
                                      s.done, s.failed, s.restarts, s.recycled)
    lines[#lines + 1] = string.format("  %3s %7s %-8s %7s %7s %6s %7s %7s %7s %6s", "#", "PID", "STATE",
                                      "TASK", "AGE", "CPU%", "CPU", "RSS", "DONE", "FAILED")
    for k, w in ipairs(s.workers) do
      local c = w.pid and ch.cpu[w.pid]
      lines[#lines + 1] = string.format("  %3d %7s %-8s %7s %7s %6s %7s %7s %7d %6d", k,
        w.pid or "-", w.state, w.task or "-", seconds(w.running_for),
        c and string.format("%.1f", c) or "-", seconds(w.cpu), bytes(w.rss), w.done, w.failed)
    end
  end
  return lines
end

-- === commands ===

local function list_programs()
  local roots = top.programs() or {}
  table.sort(roots)
  print(string.format("%8s %6s %8s  %s", "PID", "POOLS", "WORKERS", "COMMAND"))
  for _, pid in ipairs(roots) do
    local pools = snapshot(pid)
    local workers = 0
    for _, p in ipairs(pools) do workers = workers + #p.stats.workers end
    print(string.format("%8d %6d %8d  %s", pid, #pools, workers, cmdline(pid)))
  end
  return 0
end

local function once(pid)
  local first = snapshot(pid)
  if #first == 0 then
    io.stderr:write(string.format("lmp top: no pools of an lmp program of yours with pid %d\n", pid))
    return 1
  end
  local t0 = lmp.time()
  lmp.sleep(0.2)
  local now = snapshot(pid)
  if #now == 0 then now = first end
  io.write(table.concat(render(pid, now, changes(first, now, lmp.time() - t0)), "\n"), "\n")
  return 0
end

-- The live screen: frame() gives the lines to draw, or nil and a last word
-- (there is nothing left to show); drawn again every interval seconds
-- until q, a signal or the end of input.
local function live(frame, interval)
  local ok, err = top.raw()
  if not ok then
    io.stderr:write("lmp top: " .. tostring(err) .. "\n")
    return 1
  end
  local function draw(lines)
    local rows, cols = top.size()
    local out = {"\27[H\27[2J"}
    for i = 1, math.min(#lines, rows - 1) do out[#out + 1] = lines[i]:sub(1, cols) .. "\n" end
    out[#out + 1] = "\27[7m q: quit \27[0m"
    io.stdout:write(table.concat(out))
    io.stdout:flush()
  end
  local run = function()
    io.stdout:write("\27[?25l")
    while true do
      local lines, last = frame()
      if not lines then
        io.stdout:write("\27[H\27[2J")
        print(last)
        return 0
      end
      draw(lines)
      local key, why = top.key(interval)
      if key == "q" or key == "Q" or why == "signal" or why == "closed" then return 0 end
    end
  end
  local okr, code = pcall(run)
  top.restore()
  io.stdout:write("\27[?25h\n")
  io.stdout:flush()
  if not okr then error(code, 0) end
  return code
end

local function live_pools(pid, interval)
  local prev, t_prev = snapshot(pid), lmp.time()
  if #prev == 0 then
    io.stderr:write(string.format("lmp top: no pools of an lmp program of yours with pid %d\n", pid))
    return 1
  end
  local first = true
  return live(function()
    if first then
      first = false
      return render(pid, prev, changes(nil, prev, 0))
    end
    local now, t = snapshot(pid), lmp.time()
    if #now == 0 then return nil, string.format("lmp top: pid %d has no pools any more", pid) end
    local lines = render(pid, now, changes(prev, now, t - t_prev))
    prev, t_prev = now, t
    return lines
  end, interval)
end

-- === the broker ===

local broker -- lmp.broker, loaded for the broker view only

-- Every queue with its workers: {queue_entry, ...} (see lmp.broker), or
-- nil and a message.
local function look(conn)
  local list, err = conn:queues()
  if not list then return nil, err end
  for i, q in ipairs(list) do list[i] = broker.queue_entry(q) end
  return list
end

-- Each queue's tasks per second between two looks dt seconds apart, from
-- its workers' done and failed counters (their own, kept since each
-- started): only workers in both looks count.  Sets q.rate (nil when no
-- worker was in both).
local function rates(prev, now, dt)
  local before = {}
  for _, q in ipairs(prev or {}) do
    for _, w in ipairs(q.workers) do before[w.name] = w end
  end
  for _, q in ipairs(now) do
    local tasks, seen = 0, false
    for _, w in ipairs(q.workers) do
      local b = before[w.name]
      if b and dt > 0 then tasks, seen = tasks + (w.done + w.failed) - (b.done + b.failed), true end
    end
    q.rate = seen and math.max(0, tasks) / dt or nil
  end
  return now
end

local function plural(n, word) return string.format("%d %s%s", n, word, n == 1 and "" or "s") end

-- The broker's view as lines: a table of queues, then one of workers.
local function render_broker(shown, queues, err)
  local nworkers, qw, hw = 0, 5, 4
  for _, q in ipairs(queues) do
    nworkers = nworkers + #q.workers
    qw = math.max(qw, #q.name)
    for _, w in ipairs(q.workers) do hw = math.max(hw, #w.host) end
  end
  local lines = {"lmp top - broker " .. shown,
                 plural(#queues, "queue") .. ", " .. plural(nworkers, "worker")}
  if err then lines[#lines + 1] = "cannot look at the broker: " .. err end
  lines[#lines + 1] = ""
  lines[#lines + 1] = string.format("%-" .. qw .. "s %8s %8s %8s %8s %8s", "QUEUE", "WAITING", "RUNNING",
                                    "DELAYED", "DEAD", "TASKS/S")
  for _, q in ipairs(queues) do
    lines[#lines + 1] = string.format("%-" .. qw .. "s %8d %8d %8d %8d %8s", q.name, q.waiting, q.running,
                                      q.delayed, q.dead, q.rate and string.format("%.1f", q.rate) or "-")
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = string.format("%-" .. hw .. "s %7s %-" .. qw .. "s %5s %7s %7s %6s %9s %-8s %s", "HOST",
                                    "PID", "QUEUE", "PROCS", "RUNNING", "DONE", "FAILED", "HEARTBEAT", "STATE",
                                    "TASKS")
  for _, q in ipairs(queues) do
    for _, w in ipairs(q.workers) do
      lines[#lines + 1] = string.format("%-" .. hw .. "s %7s %-" .. qw .. "s %5s %7d %7d %6d %9s %-8s %s",
        w.host, w.pid or "-", q.name, w.processes or "-", w.running, w.done, w.failed,
        w.heartbeat_age and seconds(w.heartbeat_age) .. " ago" or "-", w.state,
        #w.tasks > 0 and table.concat(w.tasks, ",") or "-")
    end
  end
  return lines
end

local function broker_view(o)
  broker = require "lmp.broker"
  local core = require("lmp.core").broker
  local url, uerr = require("lmp.worker").broker_url(o)
  if not url then
    io.stderr:write("lmp top: ", uerr, "\n", usage)
    return 2
  end
  local shown = core.url_shown(url)
  -- an observer: queue "" makes no queue of its own; a broker away holds
  -- a frame (and q) up to CONNECT seconds
  local conn, err = core.open(url, "", CONNECT)
  if not conn then
    io.stderr:write("lmp top: ", err, "\n")
    return 1
  end
  conn:patience(CONNECT) -- and a reply that does not come shows in seconds, not 15
  local prev, perr = look(conn)
  if not prev then
    io.stderr:write("lmp top: ", perr, "\n")
    conn:close()
    return 1
  end
  local t_prev = lmp.time()
  local code
  if o.once or not (top.isatty(0) and top.isatty(1)) then
    lmp.sleep(BROKER_GAP)
    local now, nerr = look(conn)
    if not now then
      io.stderr:write("lmp top: ", nerr, "\n")
      code = 1
    else
      io.write(table.concat(render_broker(shown, rates(prev, now, lmp.time() - t_prev)), "\n"), "\n")
      code = 0
    end
  else
    local first = true
    code = live(function()
      if first then
        first = false
        return render_broker(shown, rates(nil, prev, 0))
      end
      local now, lerr = look(conn)
      if not now then return render_broker(shown, prev, lerr) end
      local t = lmp.time()
      rates(prev, now, t - t_prev)
      prev, t_prev = now, t
      return render_broker(shown, now)
    end, o.interval)
  end
  conn:close()
  return code
end

--- lmp top [--once] [--interval S] [PID | --broker [URL] [--url-file PATH]]:
--- the exit status.
function M.main(argv)
  local pid, once_, interval = nil, false, 1
  local o -- the broker view's options, as lmp.worker's broker_url reads them
  local i = 1
  while i <= #argv do
    local a = argv[i]
    if a == "--once" then
      once_ = true
    elseif a == "--interval" or a == "-d" then
      i = i + 1
      interval = tonumber(argv[i])
      if not interval or interval <= 0 then
        io.stderr:write("lmp top: --interval needs a positive number of seconds\n" .. usage)
        return 2
      end
    elseif a == "--broker" then
      o = o or {}
      if argv[i + 1] and argv[i + 1]:sub(1, 1) ~= "-" then
        i = i + 1
        o.url = argv[i]
      end
    elseif a == "--url-file" then
      o = o or {}
      i = i + 1
      o.url_file = argv[i]
      if not o.url_file then
        io.stderr:write("lmp top: --url-file needs a path\n" .. usage)
        return 2
      end
    elseif a == "-h" or a == "--help" then
      io.write(usage)
      return 0
    elseif a:match("^%d+$") and not pid then
      pid = math.tointeger(tonumber(a))
    else
      io.stderr:write("lmp top: unexpected argument '" .. a .. "'\n" .. usage)
      return 2
    end
    i = i + 1
  end
  if o then
    if pid then
      io.stderr:write("lmp top: a PID or --broker, not both\n" .. usage)
      return 2
    end
    if o.url and o.url_file then
      io.stderr:write("lmp top: give the URL or --url-file, not both\n" .. usage)
      return 2
    end
    o.once, o.interval = once_, interval
    return broker_view(o)
  end
  if not pid then
    if once_ then
      io.stderr:write("lmp top: --once needs a PID\n" .. usage)
      return 2
    end
    return list_programs()
  end
  if once_ or not (top.isatty(0) and top.isatty(1)) then return once(pid) end
  return live_pools(pid, interval)
end

return M

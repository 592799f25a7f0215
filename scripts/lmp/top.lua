-- lmp top: a live view of the pools of a running lmp program.
--
--   lmp top               the running lmp programs of this user
--   lmp top PID           a live view of PID's pools; q quits
--   lmp top --once PID    one snapshot as plain text, for scripts
--
-- It reads what the program already keeps in shared memory (the registry of
-- its pools and each pool's worker slots, see lmp_pool_list and
-- lmp_pool_peek in include/lmp/pool.h) and /proc: the program does nothing
-- for it and never waits for it.  Only segments of this user are read.
local lmp = require "lmp"
local top = require("lmp.core").top

local M = {}

local usage = [[
usage: lmp top                         list the running lmp programs of this user
       lmp top [--interval S] PID      live view of PID's pools (q quits)
       lmp top --once PID              one snapshot as plain text
]]

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

local function live(pid, interval)
  local prev, t_prev = snapshot(pid), lmp.time()
  if #prev == 0 then
    io.stderr:write(string.format("lmp top: no pools of an lmp program of yours with pid %d\n", pid))
    return 1
  end
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
    draw(render(pid, prev, changes(nil, prev, 0)))
    while true do
      local key, why = top.key(interval)
      if key == "q" or key == "Q" or why == "signal" or why == "closed" then return 0 end
      local now, t = snapshot(pid), lmp.time()
      if #now == 0 then
        io.stdout:write("\27[H\27[2J")
        print(string.format("lmp top: pid %d has no pools any more", pid))
        return 0
      end
      draw(render(pid, now, changes(prev, now, t - t_prev)))
      prev, t_prev = now, t
    end
  end
  local okr, code = pcall(run)
  top.restore()
  io.stdout:write("\27[?25h\n")
  io.stdout:flush()
  if not okr then error(code, 0) end
  return code
end

--- lmp top [--once] [--interval S] [PID]: the exit status.
function M.main(argv)
  local pid, once_, interval = nil, false, 1
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
  if not pid then
    if once_ then
      io.stderr:write("lmp top: --once needs a PID\n" .. usage)
      return 2
    end
    return list_programs()
  end
  if once_ or not (top.isatty(0) and top.isatty(1)) then return once(pid) end
  return live(pid, interval)
end

return M

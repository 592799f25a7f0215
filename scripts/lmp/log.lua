-- lmp.log: logging across processes (lmp.log_to_stderr, lmp.get_logger).
--
-- A logger has a level and handlers; named loggers also pass their records
-- to the root logger (lmp.get_logger()), as Python's do.  Each record is
-- formatted once, where it happens, into one line:
--
--   2025-01-31 12:00:00.123 [INFO/Process-1 4242] message
--   2025-01-31 12:00:00.123 [INFO/Process-1 4242] name: message
--
-- Handlers and the one channel.  A stream (io.stderr, io.stdout) or file
-- path handler is written by every process itself with one write(2) per
-- line (lmp.core.log), so lines never interleave mid-line and appear at once.
-- A function handler runs only in the process that added it, its owner:
-- other processes put their records on the owner's channel, an lmp.Queue,
-- and the owner drains it into the function (Python's QueueHandler and
-- QueueListener, without the listener thread: lmp never runs Lua behind the
-- program's back).  The owner drains when it logs, when it calls
-- logger:flush(), and when its Lua state closes, after its children ended.
--
-- Children inherit the set-up with fork; spawn and forkserver children get
-- it through _export / _import (lspawn.c calls them through the hooks
-- lmp/init.lua gives it), function handlers travelling as "forward to the
-- owner's channel".
local lmp = require "lmp"
local core = require("lmp.core").log
local check = require "lmp.check"

local M = {}

local LEVELS = { notset = 0, debug = 10, info = 20, warning = 30, warn = 30, error = 40, critical = 50 }
local NAMES = { [10] = "DEBUG", [20] = "INFO", [30] = "WARNING", [40] = "ERROR", [50] = "CRITICAL" }
local DEFAULT_LEVEL = 30

local loggers = {}    -- name -> logger
local channel         -- this process's channel (an lmp.Queue), if it owns function handlers
local channel_pid     -- the process that made `channel`
local draining = false

local Logger = {}
Logger.__index = Logger

-- === levels ===

local function checklevel(level, fname, arg)
  if math.type(level) == "integer" then return level end
  local n = type(level) == "string" and LEVELS[level:lower()]
  if not n then
    check.argerror(arg, fname, "unknown level '" .. tostring(level) .. "'")
  end
  return n
end

local function levelname(n)
  return NAMES[n] or ("Level " .. n)
end

-- === handlers ===

local function newhandler(target, level, fname)
  local h = { level = level and checklevel(level, fname, 2) or 0, target = target }
  if type(target) == "function" then
    h.kind, h.fn, h.owner = "fn", target, core.pid()
    if not channel or channel_pid ~= h.owner then
      channel, channel_pid = lmp.Queue(), h.owner
      core.on_close(function() M.flush() end) -- made after the channel: runs before its finalizer
    end
    h.channel = channel
  elseif io.type(target) == "file" then
    local fd = target == io.stderr and 2 or target == io.stdout and 1 or nil
    if not fd then check.argerror(1, fname, "io.stderr or io.stdout expected") end
    h.kind, h.fd = "stream", fd
  elseif type(target) == "string" then
    if target:find("\0", 1, true) then -- open(2) would cut it short and write elsewhere
      error(string.format("bad argument #1 to '%s' (file path contains a NUL byte)", fname), 3)
    end
    h.kind, h.path = "file", target
  else
    check.argerror(1, fname, "function, file path or io.stderr expected, got " .. type(target))
  end
  return h
end

-- Records from other processes, for this process's function handlers.
local function dispatch_fn(logger, rec, pid)
  while logger do
    for _, h in ipairs(logger.handlers) do
      if h.kind == "fn" and h.owner == pid and rec.level >= h.level then
        local ok, err = pcall(h.fn, rec)
        if not ok then core.write(2, "lmp.log: handler error: " .. tostring(err) .. "\n") end
      end
    end
    logger = logger.propagate and logger.parent or nil
  end
end

-- Drain this process's channel into its function handlers.
function M.flush()
  if draining or not channel or channel_pid ~= core.pid() then return end
  draining = true
  local pid = core.pid()
  while true do
    local rec = channel:get_nowait()
    if rec == nil then break end
    dispatch_fn(M.get_logger(rec.name ~= "lmp" and rec.name or nil), rec, pid)
  end
  draining = false
end

local function write_line(h, line)
  if h.kind == "stream" then
    core.write(h.fd, line)
  else
    if not h.fd then
      local fd, err = core.open(h.path)
      if not fd then
        core.write(2, "lmp.log: " .. err .. "\n")
        h.kind, h.fd = "stream", 2
      else
        h.fd = fd
      end
    end
    core.write(h.fd, line)
  end
end

-- === records ===

local function format(fmt, ...)
  if select("#", ...) == 0 then return tostring(fmt) end
  local ok, s = pcall(string.format, fmt, ...)
  if ok then return s end
  local parts = { tostring(fmt) }
  for i = 1, select("#", ...) do parts[#parts + 1] = tostring((select(i, ...))) end
  return table.concat(parts, " ")
end

local function record(logger, level, fmt, ...)
  local t = core.now()
  local me = lmp.current_process()
  local msg = format(fmt, ...)
  local line = string.format("%s.%03d [%s/%s %d] %s%s\n",
    os.date("%Y-%m-%d %H:%M:%S", math.floor(t)), math.floor(t % 1 * 1000),
    levelname(level), me.name, me.pid, logger.name ~= "lmp" and logger.name .. ": " or "", msg)
  return { time = t, level = level, levelname = levelname(level), name = logger.name,
           process = me.name, pid = me.pid, message = msg, line = line }
end

function Logger:get_level()
  local l = self
  while l do
    if l.level then return l.level end
    l = l.parent
  end
  return DEFAULT_LEVEL
end

function Logger:is_enabled_for(level)
  return checklevel(level, "is_enabled_for", 1) >= self:get_level()
end

function Logger:log(level, fmt, ...)
  level = checklevel(level, "log", 1)
  if level < self:get_level() then return end
  local rec = record(self, level, fmt, ...)
  local pid = core.pid()
  M.flush() -- records that came earlier go first
  local handled, forwarded = false, {}
  local l = self
  while l do
    for _, h in ipairs(l.handlers) do
      handled = true
      if h.kind == "fn" then
        if h.owner == pid then
          if level >= h.level then
            local ok, err = pcall(h.fn, rec)
            if not ok then core.write(2, "lmp.log: handler error: " .. tostring(err) .. "\n") end
          end
        elseif not forwarded[h.channel] then
          forwarded[h.channel] = true
          h.channel:put(rec)
        end
      elseif level >= h.level then
        write_line(h, rec.line)
      end
    end
    l = l.propagate and l.parent or nil
  end
  -- No handler at all: warnings and worse still reach stderr, as Python's
  -- last-resort handler does.
  if not handled and level >= LEVELS.warning then core.write(2, rec.line) end
end

for name, n in pairs({ debug = 10, info = 20, warning = 30, error = 40, critical = 50 }) do
  Logger[name] = function(self, fmt, ...) return self:log(n, fmt, ...) end
end
Logger.warn = Logger.warning

function Logger:set_level(level)
  self.level = level ~= nil and checklevel(level, "set_level", 1) or nil
  return self
end

-- logger:add_handler(fn | path | io.stderr [, level]) -> handler
function Logger:add_handler(target, level)
  local h = newhandler(target, level, "add_handler")
  self.handlers[#self.handlers + 1] = h
  return h
end

-- Removes a handler given as returned by add_handler or as what was added.
function Logger:remove_handler(h)
  for i, x in ipairs(self.handlers) do
    if x == h or x.target == h then
      table.remove(self.handlers, i)
      if x.fd and x.kind == "file" then core.close(x.fd) end
      return true
    end
  end
  return false
end

function Logger:flush() M.flush() end

Logger.__tostring = function(self) return "lmp.Logger(" .. self.name .. ")" end

-- === module functions ===

local function newlogger(name, parent)
  return setmetatable({ name = name, handlers = {}, propagate = parent ~= nil, parent = parent }, Logger)
end

-- lmp.get_logger([name]): the root logger, or the one named (made once).
function M.get_logger(name)
  if name ~= nil and type(name) ~= "string" then
    check.typeerror(1, "get_logger", "string", name)
  end
  if not loggers.lmp then loggers.lmp = newlogger("lmp") end
  if name == nil or name == "lmp" then return loggers.lmp end
  if not loggers[name] then loggers[name] = newlogger(name, loggers.lmp) end
  return loggers[name]
end

-- lmp.log_to_stderr([level]): the root logger, writing to stderr (once,
-- however often it is called).
function M.log_to_stderr(level)
  local root = M.get_logger()
  if level ~= nil then root:set_level(checklevel(level, "log_to_stderr", 1)) end
  for _, h in ipairs(root.handlers) do
    if h.kind == "stream" and h.fd == 2 then return root end
  end
  root:add_handler(io.stderr)
  return root
end

-- === across spawn and forkserver ===

function M._export()
  local out = {}
  for name, l in pairs(loggers) do
    local hs = {}
    for i, h in ipairs(l.handlers) do
      hs[i] = { kind = h.kind, level = h.level, fd = h.kind == "stream" and h.fd or nil, path = h.path,
                owner = h.owner, channel = h.channel }
    end
    out[name] = { level = l.level, propagate = l.propagate, handlers = hs }
  end
  return { loggers = out }
end

function M._import(cfg)
  for name, c in pairs(cfg.loggers or {}) do
    local l = M.get_logger(name)
    l.level, l.propagate = c.level, c.propagate
    l.handlers = {}
    for i, h in ipairs(c.handlers or {}) do
      l.handlers[i] = { kind = h.kind, level = h.level, fd = h.fd, path = h.path, owner = h.owner,
                        channel = h.channel, target = h.path }
    end
  end
end

return M

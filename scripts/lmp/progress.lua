-- lmp.progress: a one-line progress bar for long maps (done/total, rate,
-- ETA), redrawn in place with a carriage return at most ten times a second.
--
-- lmp.Pool draws one for map/imap/starmap given {progress = true}, and only
-- when stderr is a terminal: in a pipe or a log file a bar is noise.  The
-- module itself draws wherever it is told to; format() is pure, for tests.
local M = {}

local WIDTH = 30
local INTERVAL = 0.1 -- seconds between redraws

local function duration(s)
  if s ~= s or s == math.huge or s < 0 then return "?" end
  s = math.floor(s + 0.5)
  if s >= 3600 then return string.format("%d:%02d:%02d", s // 3600, s // 60 % 60, s % 60) end
  return string.format("%d:%02d", s // 60, s % 60)
end

local function rate_text(r)
  if r >= 1e6 then return string.format("%.1fM/s", r / 1e6) end
  if r >= 1e4 then return string.format("%.1fk/s", r / 1e3) end
  return string.format("%.1f/s", r)
end

--- The bar as text: done of total (total may be nil when unknown) after
--- `elapsed` seconds.
function M.format(done, total, elapsed)
  local rate = elapsed > 0 and done / elapsed or 0
  if total and total > 0 then
    local frac = math.min(done / total, 1)
    local fill = math.floor(frac * WIDTH + 0.5)
    local eta = rate > 0 and (total - done) / rate or math.huge
    return string.format("[%s%s] %d/%d %3d%% %s ETA %s", string.rep("#", fill),
                         string.rep(".", WIDTH - fill), done, total, math.floor(frac * 100),
                         rate_text(rate), done >= total and duration(0) or duration(eta))
  end
  return string.format("%d done %s %s", done, rate_text(rate), duration(elapsed))
end

local Bar = {}
Bar.__index = Bar

function Bar:draw()
  local line = M.format(self.done, self.total, self.clock() - self.t0)
  local pad = self.width > #line and string.rep(" ", self.width - #line) or ""
  self.width = #line
  self.stream:write("\r", line, pad)
  self.stream:flush()
end

--- Record progress; redraws when the last drawing is old enough.
function Bar:update(done)
  self.done = done
  local t = self.clock()
  if t - self.last >= INTERVAL then
    self.last = t
    self:draw()
  end
end

--- Final drawing and a newline; idempotent.
function Bar:finish()
  if self.finished then return end
  self.finished = true
  self:draw()
  self.stream:write("\n")
  self.stream:flush()
end

--- A bar for `total` items (nil: unknown) drawn on opts.stream (default
--- io.stderr), timed by opts.clock (default os.clock).
function M.new(total, opts)
  opts = opts or {}
  local clock = opts.clock or os.clock
  local bar = setmetatable({total = total, done = 0, clock = clock, t0 = clock(), last = -math.huge,
                            width = 0, stream = opts.stream or io.stderr}, Bar)
  return bar
end

return M

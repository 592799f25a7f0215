-- lmp.progress: a one-line progress bar for long maps (done/total, rate,
-- elapsed time, ETA), redrawn in place with a carriage return.
--
-- lmp.Pool draws one for map/imap/starmap given {progress = true}, and only
-- when stderr is a terminal: in a pipe or a log file a bar is noise.  It is
-- drawn at 0/N at once, again as items complete (at most ten times a
-- second) and on the waiting pool's tick (refresh), so the elapsed time and
-- the ETA move while a long item runs.  Each drawing fits the terminal's
-- width as it is then, so a resized terminal gets a bar that fits: the
-- last column stays free (writing there wraps on some terminals), and the
-- bar, then the rate, the elapsed time and the ETA give way on narrow ones.
-- The module itself draws wherever it is told to; format() is pure, for
-- tests.
local M = {}

local WIDTH = 30 -- the bar's width at most
local MIN_BAR = 10 -- narrower than this, no bar
local INTERVAL = 0.1 -- seconds between redraws on completions
M.TICK = 0.5 -- seconds between redraws while nothing completes (see refresh)

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

-- The longest of the candidate lines (fullest first) that fits in `room`
-- columns; the first one cut to fit when none does.
local function fit(room, candidates)
  for _, c in ipairs(candidates) do
    if #c <= room then return c end
  end
  return candidates[#candidates]:sub(1, room)
end

--- The bar as text: done of total (total may be nil when unknown) after
--- `elapsed` seconds, in fewer than `columns` columns (80 by default).
function M.format(done, total, elapsed, columns)
  local room = (columns or 80) - 1
  local rate = elapsed > 0 and done / elapsed or 0
  local r, e = rate_text(rate), duration(elapsed)
  if not (total and total > 0) then
    local n = done .. " done"
    return fit(room, {n .. " " .. r .. " " .. e, n .. " " .. e, n})
  end
  local frac = math.min(done / total, 1)
  local eta = "ETA " .. (done >= total and duration(0) or duration(rate > 0 and (total - done) / rate or math.huge))
  local count = string.format("%d/%d %3d%%", done, total, math.floor(frac * 100))
  local text = table.concat({count, r, e, eta}, " ")
  local width = math.min(WIDTH, room - #text - 3)
  local lines = {}
  if width >= MIN_BAR then
    local fill = math.floor(frac * width + 0.5)
    lines[1] = string.format("[%s%s] %s", string.rep("#", fill), string.rep(".", width - fill), text)
  end
  for _, l in ipairs{text, count .. " " .. e .. " " .. eta, count .. " " .. eta, count,
                     done .. "/" .. total} do
    lines[#lines + 1] = l
  end
  return fit(room, lines)
end

local Bar = {}
Bar.__index = Bar

function Bar:draw()
  local cols = self.columns()
  local line = M.format(self.done, self.total, self.clock() - self.t0, cols)
  -- Blank what is left of a longer line, within the terminal's width.
  local blank = math.min(self.width, cols - 1) - #line
  self.width = #line
  self.last = self.clock()
  self.stream:write("\r", line, blank > 0 and string.rep(" ", blank) or "")
  self.stream:flush()
end

--- Record progress; redraws when the last drawing is old enough.
function Bar:update(done)
  self.done = done
  if self.clock() - self.last >= INTERVAL then self:draw() end
end

--- Redraw for the time that passed (elapsed time and ETA), unless finished.
function Bar:refresh()
  if not self.finished then self:draw() end
end

--- Final drawing and a newline; idempotent.
function Bar:finish()
  if self.finished then return end
  self.finished = true
  self:draw()
  self.stream:write("\n")
  self.stream:flush()
end

-- The width of the terminal on stderr now (so a resize is followed): its
-- window size, else COLUMNS, else 80.
local function stderr_columns()
  local _, cols = require("lmp.core").top.size(2)
  return cols
end

--- A bar for `total` items (nil: unknown) drawn at once on opts.stream
--- (default io.stderr), timed by opts.clock (default os.clock), as wide as
--- opts.columns() says (default: the terminal on stderr).
function M.new(total, opts)
  opts = opts or {}
  local clock = opts.clock or os.clock
  local bar = setmetatable({total = total, done = 0, clock = clock, t0 = clock(), last = -math.huge,
                            width = 0, stream = opts.stream or io.stderr,
                            columns = opts.columns or stderr_columns}, Bar)
  bar:draw()
  return bar
end

return M

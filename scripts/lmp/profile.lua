-- lmp.profile: profiles of Lua code across processes.
--
-- The samples come from the sampler of bindings/lprofile.c, in text form:
-- a worker takes them while it runs a profiled task and sends them with the
-- reply, the parent takes them around the code lmp.profile runs.  Here they
-- are merged into Profile objects, by function (source and line where it is
-- defined), and reported like Python's pstats sorted by cumulative time:
-- "self" counts the samples taken while the function itself ran, "cum" the
-- samples taken while it was anywhere on the stack.
local lmp = require "lmp"
local check = require "lmp.check"

local M = {}

-- Profiles of the lmp.profile calls under way, innermost last: every
-- profiled reply that arrives meanwhile is merged into each.  One list per
-- Lua state, kept by the C side, so a second load of this module shares it.
M.active = lmp._profiles_active()

local Profile = {}
Profile.__index = Profile
Profile.__name = "lmp.Profile"

function M.new()
  return setmetatable({samples = 0, tasks = 0, _by = {}}, Profile)
end

--- Merge samples in the sampler's text form.
function Profile:add(text)
  local by = self._by
  local n = tonumber(text:match("^samples (%d+)")) or 0
  self.samples = self.samples + n
  self.tasks = self.tasks + 1
  for s, c, line, name, src in text:gmatch("\n(%d+)\t(%d+)\t(%-?%d+)\t([^\t\n]*)\t([^\n]*)") do
    local key = src .. ":" .. line
    local f = by[key]
    if not f then
      f = {name = name, source = src, line = tonumber(line), self = 0, cum = 0}
      by[key] = f
    elseif f.name == "?" and name ~= "?" then
      f.name = name
    end
    f.self = f.self + tonumber(s)
    f.cum = f.cum + tonumber(c)
  end
end

--- The functions seen, by cumulative samples (then self), at most n:
--- {{name =, source =, line =, self =, cum =}, ...}.
function Profile:top(n)
  local list = {}
  for _, f in pairs(self._by) do
    list[#list + 1] = {name = f.name, source = f.source, line = f.line, self = f.self, cum = f.cum}
  end
  table.sort(list, function(a, b)
    if a.cum ~= b.cum then return a.cum > b.cum end
    if a.self ~= b.self then return a.self > b.self end
    return a.source .. a.line < b.source .. b.line
  end)
  if n and #list > n then
    for i = #list, n + 1, -1 do list[i] = nil end
  end
  return list
end

local function pct(k, total)
  return total > 0 and 100 * k / total or 0
end

--- A pstats-like table of the top n functions (20 by default), as text.
function Profile:report(n)
  if n ~= nil then
    local k = math.tointeger(n)
    if not k or k < 1 then check.argerror(1, "report", "count must be a positive integer") end
    n = k
  end
  local total = self.samples
  local out = {string.format("%d samples from %d profiled run%s, sorted by cumulative samples",
                             total, self.tasks, self.tasks == 1 and "" or "s"),
               string.format("%8s %6s %8s %6s  %s", "self", "self%", "cum", "cum%", "function")}
  for _, f in ipairs(self:top(n or 20)) do
    out[#out + 1] = string.format("%8d %5.1f%% %8d %5.1f%%  %s (%s:%d)", f.self, pct(f.self, total),
                                  f.cum, pct(f.cum, total), f.name == "?" and "function" or f.name,
                                  f.source, f.line)
  end
  return table.concat(out, "\n") .. "\n"
end

function Profile:__tostring()
  return self:report()
end

--- lmp.profile(fn, ...) -> profile, fn's results: runs fn(...) with the
--- calling process sampled, and every pool task submitted meanwhile too.
function M.run(fn, ...)
  check.checkcallable(fn, 1, "profile")
  local p = M.new()
  local active = M.active
  active[#active + 1] = p
  local started = lmp._profile_start()
  local r = table.pack(pcall(fn, ...))
  if started then p:add(lmp._profile_stop()) end
  for i = #active, 1, -1 do
    if active[i] == p then table.remove(active, i) break end
  end
  if not r[1] then error(r[2], 0) end
  return p, table.unpack(r, 2, r.n)
end

return M

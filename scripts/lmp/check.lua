-- lmp.check: argument checks for the Lua-side modules, worded as lauxlib
-- words them, so a bad argument to a function written in Lua reads exactly
-- like one to a function written in C:
--   file.lua:12: bad argument #2 to 'map' (number expected, got string)
--   file.lua:12: calling 'submit' on bad self (executor is shut down)
-- The position is the caller's, as luaL_where(L, 1) gives it for a C
-- function: the frame that called the outermost of lmp's own frames (these
-- modules, and the module's functions that run them, such as lmp's lazy
-- constructors).  As for a C function, a caller that is itself a C
-- function (pcall(f, ...)) gives no position.
local M = {}

-- lmp's own chunks share this file's directory ("@scripts/lmp/" when
-- embedded).
local OWN = debug.getinfo(1, "S").source:match("^(.*[/\\])") or "@lmp."

local function own(info)
  if info.what ~= "C" then return info.source:sub(1, #OWN) == OWN end
  for _, v in pairs(package.loaded.lmp or {}) do
    if v == info.func then return true end
  end
  return false
end

-- Raise msg (a string) at the caller's position, as luaL_error does: the
-- frames up to the first one of Lua code outside lmp are lmp's own or C
-- functions (lmp's inner ones, or a pcall of the program).  (No tail calls
-- here: error's level counts this function's frame.)
function M.raise(msg)
  local level, outer = 2, 1
  local info = debug.getinfo(level, "Sf")
  while info and (info.what == "C" or own(info)) do
    if own(info) then outer = level end
    level = level + 1
    info = debug.getinfo(level, "Sf")
  end
  error(msg, debug.getinfo(outer + 1, "l") and outer + 1 or 0)
end

-- Raise again, at the caller's position, an error raised by a function
-- this one passed its arguments to: a message loses the position it had
-- and may be reworded (`reword(msg)`, e.g. to name this function); any
-- other error value goes on unchanged.
function M.reraise(err, reword)
  if type(err) ~= "string" then error(err, 0) end
  local msg = err:gsub("^[^\n]-:%d+: ", "", 1)
  M.raise(reword and reword(msg) or msg)
end

-- The type name lauxlib reports: a metatable's __name, else type().
function M.typename(v)
  local mt = getmetatable(v)
  if type(mt) == "table" and type(rawget(mt, "__name")) == "string" then return mt.__name end
  return type(v)
end

function M.argerror(i, fname, msg)
  M.raise(string.format("bad argument #%d to '%s' (%s)", i, fname, msg))
end

function M.typeerror(i, fname, expected, v)
  M.argerror(i, fname, expected .. " expected, got " .. M.typename(v))
end

function M.badself(fname, msg)
  M.raise(string.format("calling '%s' on bad self (%s)", fname, msg))
end

-- The one wording for an object used after close(), as C's lmpb_closed.
function M.closed(tname)
  M.raise("attempt to use a closed " .. tname)
end

-- self must be an object of the class `mt` (a metatable with a __name).
function M.checkself(self, mt, fname)
  if getmetatable(self) ~= mt then M.badself(fname, mt.__name .. " expected, got " .. M.typename(self)) end
end

function M.callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil
end

function M.checkcallable(v, i, fname)
  if not M.callable(v) then M.typeerror(i, fname, "function", v) end
end

-- The length of a list: its n field when it has one (table.pack), else #.
function M.length(t)
  local n = rawget(t, "n")
  if math.type(n) == "integer" and n >= 0 then return n end
  return #t
end

-- A string C will read as a C string: a NUL byte inside would cut it short
-- there (and name something else), as lmpb_checkcstring refuses in C.
function M.checkcstring(s, i, fname, what)
  if s:find("\0", 1, true) then M.argerror(i, fname, what .. " contains a NUL byte") end
end

-- An options table whose keys must all be in the set `known`.
function M.checkoptions(opts, i, fname, known)
  if type(opts) ~= "table" then M.typeerror(i, fname, "table", opts) end
  for k in pairs(opts) do
    if not known[k] then M.argerror(i, fname, "unknown option '" .. tostring(k) .. "'") end
  end
end

return M

-- lmp.check: argument checks for the Lua-side modules, worded as lauxlib
-- words them, so a bad argument to a function written in Lua reads exactly
-- like one to a function written in C:
--   bad argument #2 to 'map' (number expected, got string)
--   calling 'submit' on bad self (executor is shut down)
-- Errors are raised at level 0: the message already names the function.
local M = {}

-- The type name lauxlib reports: a metatable's __name, else type().
function M.typename(v)
  local mt = getmetatable(v)
  if type(mt) == "table" and type(rawget(mt, "__name")) == "string" then return mt.__name end
  return type(v)
end

function M.argerror(i, fname, msg)
  error(string.format("bad argument #%d to '%s' (%s)", i, fname, msg), 0)
end

function M.typeerror(i, fname, expected, v)
  M.argerror(i, fname, expected .. " expected, got " .. M.typename(v))
end

function M.badself(fname, msg)
  error(string.format("calling '%s' on bad self (%s)", fname, msg), 0)
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

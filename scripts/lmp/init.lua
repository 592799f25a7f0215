-- lmp: the module table, Lua over the C core.
--
-- As LuaSocket's socket.lua requires socket.core and extends it, this
-- chunk takes lmp.core (bindings/linit.c: the objects, start methods,
-- codec and helpers written in C) and adds what is clearer in Lua: which
-- pool lmp.Pool makes, and the entry points of the modules written in Lua
-- (Executor, Manager, logging, profiling, contexts).  Those modules load on
-- first use, so a program that never calls them never loads them.  Calls
-- go one way: this file calls C; C never looks a Lua module up by name.
--
-- The functions here keep no upvalue but the globals and lmp itself, and
-- look their module up in package.loaded on each call, so that each works
-- wherever it is called from.
local core = require "lmp.core"

local M = {}
-- Modules loaded from here on may require "lmp" while this chunk runs.
package.loaded.lmp = M

-- The core's functions and constants; its tables (core.pool, core.log,
-- core.broker, core.top) are for the modules below.
for k, v in pairs(core) do
  if type(v) ~= "table" then M[k] = v end
end

-- lmp and its core cross processes by name, as a registered metatable
-- does (lmp.register): a function that keeps lmp as an upvalue arrives
-- bound to the receiver's lmp, not to a copy of it.
core.register("lmp", M)
core.register("lmp.core", core)

-- Classes of lmp's own are registered by their module when it loads; the
-- codec asks here for one that a message names before this process has
-- loaded its module.
local own_classes = {["lmp.context"] = true}
core._class_loader(function(name)
  if own_classes[name] then
    require(name)
    return true
  end
end)

-- lmp.Pool(...): a first argument that is a table with a `broker` field
-- makes a broker pool (lmp.broker); anything else a local pool (lmp.pool),
-- exactly as it came.
function M.Pool(...)
  local o = ...
  if type(o) == "table" and getmetatable(o) == nil and o.broker ~= nil then
    return require("lmp.broker").Pool(...)
  end
  return require("lmp.pool")(nil, ...)
end

-- A context's Pool: the start method first (lmp.context).
function M._pool_new(method, ...)
  return require("lmp.pool")(method, ...)
end

function M.Executor(...) return require("lmp.executor").Executor(...) end
function M.as_completed(...) return require("lmp.executor").as_completed(...) end
function M.wait(...) return require("lmp.executor").wait(...) end
function M.await(...) return require("lmp.executor").await(...) end

function M.Manager(...) return require("lmp.manager").new(...) end

function M.get_logger(...) return require("lmp.log").get_logger(...) end
function M.log_to_stderr(...) return require("lmp.log").log_to_stderr(...) end

function M.profile(...) return require("lmp.profile").run(...) end

-- lmp.get_context([method]): the method is checked here, as every start
-- method argument is.
function M.get_context(method)
  if method ~= nil then
    local known = false
    for _, m in ipairs(M.get_all_start_methods()) do known = known or m == method end
    if not known then
      local check = require "lmp.check"
      if type(method) == "string" and method:find("\0", 1, true) then
        check.argerror(1, "get_context", "start method contains a NUL byte")
      end
      check.argerror(1, "get_context", "unknown start method '" .. tostring(method) .. "'")
    end
  end
  return require("lmp.context")(method)
end

-- A child started by spawn or forkserver takes the parent's logging set-up
-- (bindings/lspawn.c carries it in the payload): the set-up of this
-- process when logging is in use, and how a child applies one.
core._log_hooks(function()
  local log = package.loaded["lmp.log"]
  if log then return log._export() end
end, function(setup)
  require("lmp.log")._import(setup)
end)

return M

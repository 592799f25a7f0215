-- lmp.context: what lmp.get_context(method) returns.
--
-- A context looks like the lmp module, except that what starts processes
-- uses its start method: ctx.Process, ctx.Pool, ctx.Executor.  Everything
-- else (ctx.Queue, ctx.Lock, ctx.Value...) is lmp's own, looked up when it is
-- used, so objects added to lmp later appear in every context.  Python's
-- contexts work the same way.  One context per method, made once; the
-- default context (get_context() with no method) follows set_start_method.
local lmp = require "lmp"

-- The constructors that start processes, as functions of the context's
-- method and the constructor's own arguments (the method applies unless
-- the options name one).
local constructors = {
  Pool = function(method, first, ...)
    -- a broker pool starts no process here: lmp.Pool's own dispatch
    if type(first) == "table" and getmetatable(first) == nil and first.broker ~= nil then
      return lmp.Pool(first, ...)
    end
    return lmp._pool_new(method, first, ...)
  end,
  Executor = function(method, ...) return require("lmp.executor")._new(method, ...) end,
}

local function is_options(v)
  if type(v) ~= "table" then return false end
  local mt = getmetatable(v)
  return not (type(mt) == "table" and mt.__call)
end

-- ctx.Process(...): lmp.Process(...) with the context's method, unless the
-- options table names one itself.
local function process(method)
  return function(...)
    local p = lmp.Process(...)
    if not (is_options((...)) and (...).start_method ~= nil) then
      p.start_method = method or lmp.get_start_method()
    end
    return p
  end
end

-- ctx.Pool / ctx.Executor: the same arguments as lmp.Pool / lmp.Executor.
local function with_method(name, method)
  local make = constructors[name]
  return function(...)
    return make(method or lmp.get_start_method(), ...)
  end
end

-- A context is a table {method = m} (false for the default context) with
-- one shared metatable, registered as class "lmp.context": a context sent
-- to another process (an upvalue of a target, say) arrives as the same
-- context there.
local Context = {}

local own = {
  get_start_method = function(method) return function() return method or lmp.get_start_method() end end,
  Process = process,
}

function Context.__index(ctx, k)
  local make = own[k] -- own is the first upvalue: docs_spec reads the methods from it
  local method = rawget(ctx, "method")
  if make then return make(method) end
  local v = lmp[k]
  if v ~= nil and constructors[k] then return with_method(k, method) end
  return v
end

function Context.__newindex(_, k)
  error("cannot set field '" .. tostring(k) .. "' of a context", 2)
end

function Context.__tostring(ctx)
  return "lmp.context(" .. (rawget(ctx, "method") or "default") .. ")"
end

lmp.register("lmp.context", Context)

local contexts = {}

return function(method)
  local key = method or "default"
  contexts[key] = contexts[key] or setmetatable({method = method or false}, Context)
  return contexts[key]
end

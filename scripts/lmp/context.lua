-- lmp.context: what lmp.get_context(method) returns.
--
-- A context looks like the lmp module, except that what starts processes
-- uses its start method: ctx.Process, ctx.Pool, ctx.Executor.  Everything
-- else (ctx.Queue, ctx.Lock, ctx.Value...) is lmp's own, looked up when it is
-- used, so objects added to lmp later appear in every context.  Python's
-- contexts work the same way.  One context per method, made once; the
-- default context (get_context() with no method) follows set_start_method.
local lmp = require "lmp"

-- Constructors that take a start_method option, and the option their first
-- positional argument stands for.
local positional = { Pool = "processes", Executor = "max_workers" }

local function is_options(v)
  if type(v) ~= "table" then return false end
  local mt = getmetatable(v)
  return not (type(mt) == "table" and mt.__call)
end

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
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

-- ctx.Pool / ctx.Executor: the options table gains start_method.
local function with_method(name, method)
  return function(first, ...)
    local ctor = lmp[name]
    local opts
    if is_options(first) then
      opts = copy(first)
    else
      if select("#", ...) > 0 then
        error(string.format("bad argument #2 to '%s' (use an options table with a context)", name), 2)
      end
      opts = { [positional[name]] = first }
    end
    if opts.start_method == nil then opts.start_method = method or lmp.get_start_method() end
    return ctor(opts)
  end
end

local contexts = {}

local function new(method)
  local ctx = {}
  local own = {
    get_start_method = function() return method or lmp.get_start_method() end,
    Process = process(method),
  }
  return setmetatable(ctx, {
    __index = function(_, k)
      if own[k] then return own[k] end
      local v = lmp[k]
      if v ~= nil and positional[k] then return with_method(k, method) end
      return v
    end,
    __newindex = function(_, k) error("cannot set field '" .. tostring(k) .. "' of a context", 2) end,
    __tostring = function() return "lmp.context(" .. (method or "default") .. ")" end,
  })
end

return function(method)
  local key = method or "default"
  contexts[key] = contexts[key] or new(method)
  return contexts[key]
end

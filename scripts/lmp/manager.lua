-- lmp.manager: lmp.Manager(), the factory Python programs know from
-- multiprocessing.Manager().
--
-- Python needs a manager process because its shared objects cannot hold
-- arbitrary values or travel after a process started; lmp's can, so this
-- manager is only a familiar way to make them: m:dict() is an lmp.Dict,
-- m:Lock() an lmp.Lock, each living in shared memory like any other.  The
-- manager remembers what it made (weakly: an object nobody else holds is
-- still freed by garbage collection) so that shutdown() -- or the end of a
-- `local m <close> = lmp.Manager()` scope -- can close it all, as stopping
-- Python's manager process ends its objects: queues stop accepting puts,
-- containers and values release this process's handle.  Constructors are
-- looked up at call time, so each works as soon as lmp has the object.
local lmp = require "lmp"

local M = {}

local Manager = {}
Manager.__index = Manager
Manager.__name = "lmp.Manager"

-- m.dict(x) instead of m:dict(): the standard message, not an index error.
local function checkself(self, method)
  if getmetatable(self) ~= Manager then
    error("calling '" .. method .. "' on bad self (lmp.Manager expected, got "
      .. (type(self) == "table" and (getmetatable(self) or {}).__name or type(self)) .. ")", 3)
  end
end

local function maker(method, ctor)
  return function(self, ...)
    checkself(self, method)
    if self._closed then
      error("bad argument #1 to '" .. method .. "' (manager is shut down)", 2)
    end
    local make = lmp[ctor]
    if make == nil then
      error("lmp." .. ctor .. " is not available", 2)
    end
    -- An argument error names the method called (m:dict), not the
    -- constructor behind it; the arguments are numbered the same.
    local ok, obj = pcall(make, ...)
    if not ok then
      if type(obj) == "string" then
        obj = obj:gsub("^(bad argument #%d+ to )'[^']*'", "%1'" .. method .. "'")
      end
      error(obj, 0)
    end
    self._n = self._n + 1
    self._made[self._n] = obj
    return obj
  end
end

-- Python's lower-case names for the containers, its capitalized ones for
-- the rest.
local names = {
  dict = "Dict", list = "List", Namespace = "Namespace",
  Value = "Value", Array = "Array",
  Queue = "Queue", JoinableQueue = "JoinableQueue",
  Lock = "Lock", RLock = "RLock", Semaphore = "Semaphore",
  BoundedSemaphore = "BoundedSemaphore", Event = "Event",
  Condition = "Condition", Barrier = "Barrier",
}
for method, ctor in pairs(names) do Manager[method] = maker(method, ctor) end

-- Close everything made here that can be closed; later calls raise.
function Manager:shutdown()
  checkself(self, "shutdown")
  if self._closed then return end
  self._closed = true
  for _, obj in pairs(self._made) do
    local mt = getmetatable(obj)
    if type(mt) == "table" and mt.__name == "lmp.Namespace" then
      mt.__close(obj) -- every field of a Namespace is data: no close method
    else
      local ok, close = pcall(function() return obj.close end)
      if ok and type(close) == "function" then pcall(close, obj) end
    end
  end
  self._made = {}
end

-- Python's start() and join() have nothing to do here.
function Manager:start()
  checkself(self, "start")
  return self
end

Manager.__close = Manager.shutdown

function Manager:__tostring()
  return self._closed and "lmp.Manager (shut down)" or "lmp.Manager"
end

function M.new(...)
  if select("#", ...) > 0 and type((...)) ~= "table" then
    error("bad argument #1 to 'Manager' (table expected, got " .. type((...)) .. ")", 2)
  end
  for k in pairs((...) or {}) do
    error("bad argument #1 to 'Manager' (unknown option '" .. tostring(k) .. "')", 2)
  end
  -- Weak values: an object is dropped from _made before its finalizer runs
  -- (a weak key would linger one collection longer, finalized).
  return setmetatable({_made = setmetatable({}, {__mode = "v"}), _n = 0, _closed = false}, Manager)
end

return M

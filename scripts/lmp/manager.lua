-- lmp.manager: lmp.Manager(), the factory Python programs know from
-- multiprocessing.Manager().
--
-- Python needs a manager process because its shared objects cannot hold
-- arbitrary values or travel after a process started; lmp's can, so this
-- manager is only a familiar way to make them: m:dict() is an lmp.Dict,
-- m:Lock() an lmp.Lock, each living in shared memory like any other.  The
-- manager remembers what it made (weakly: an object nobody else holds is
-- still freed by garbage collection) so that shutdown() (or close(), or the
-- end of a `local m <close> = lmp.Manager()` scope) can close it all, as stopping
-- Python's manager process ends its objects: queues stop accepting puts,
-- containers and values release this process's handle.  Constructors are
-- looked up at call time, so each works as soon as lmp has the object.
local lmp = require "lmp"

local check = require "lmp.check"

local M = {}

local Manager = {}
Manager.__index = Manager
Manager.__name = "lmp.Manager"

-- m.dict(x) instead of m:dict(): the standard message, not an index error;
-- and a closed manager raises for every use but close.
local function checkopen(self, method)
  check.checkself(self, Manager, method)
  if self._closed then check.closed("lmp.Manager") end
end

local function maker(method, ctor)
  return function(self, ...)
    checkopen(self, method)
    local make = lmp[ctor]
    if make == nil then check.raise("lmp." .. ctor .. " is not available") end
    -- An argument error names the method called (m:dict), not the
    -- constructor behind it; the arguments are numbered the same.
    local ok, obj = pcall(make, ...)
    if not ok then
      check.reraise(obj, function(msg)
        return (msg:gsub("^(bad argument #%d+ to )'[^']*'", "%1'" .. method .. "'"))
      end)
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

-- Close everything made here; later uses raise.  Again does nothing.
local function shutdown(self, fname)
  check.checkself(self, Manager, fname)
  if self._closed then return end
  self._closed = true
  for _, obj in pairs(self._made) do pcall(function() obj:close() end) end
  self._made = {}
end

function Manager:shutdown() shutdown(self, "shutdown") end
function Manager:close() shutdown(self, "close") end
Manager.__close = Manager.close

-- Python's start() and join() have nothing to do here.
function Manager:start()
  checkopen(self, "start")
  return self
end

function Manager:__tostring()
  return self._closed and "lmp.Manager (shut down)" or "lmp.Manager"
end

function M.new(...)
  local opts = ...
  if select("#", ...) > 0 then check.checkoptions(opts, 1, "Manager", {}) end
  -- Weak values: an object is dropped from _made before its finalizer runs
  -- (a weak key would linger one collection longer, finalized).
  return setmetatable({_made = setmetatable({}, {__mode = "v"}), _n = 0, _closed = false}, Manager)
end

return M

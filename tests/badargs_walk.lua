-- Walks one family of lmp's public functions with bad arguments:
--
--   lmp tests/badargs_walk.lua FAMILY      (FAMILY: see `families` below,
--                                          or "list" to print them)
--
-- Every function (module functions, or the methods of a freshly made
-- object, found at run time) is called with each bad value in each of its
-- first three argument places, with bad values as self, with an object of
-- another kind as self, and after close().  Each call must return or raise
-- a clean error; the program must still work afterwards.  Output lines:
--
--   CALL <label>        before each call (the last one names a crash)
--   UNCLEAN <label> -> <error>   an error Lua raised for lmp, not lmp itself
--   UNPLACED <label> -> <error>  an argument error without the position of
--                                the call ("walk:1:"), which lauxlib's have
--   ODD <label> -> <error>       a deliberate error in a non-standard form
--   WALKED <n calls>, then ALIVE once the program still works
--
-- tests/badargs_spec.lua runs every family in a process of its own, under a
-- timeout, and checks those lines.
local lmp = require "lmp"

local NAN = 0 / 0
local BAD = {
  {"nil", nil}, {"false", false}, {"true", true}, {"0", 0}, {"-1", -1}, {"1.5", 1.5},
  {"-0.5", -0.5}, {"nan", NAN}, {"inf", math.huge}, {"-inf", -math.huge},
  {"maxinteger", math.maxinteger}, {"mininteger", math.mininteger}, {"2^53", 2 ^ 53},
  {"2^31", 1 << 31}, {"''", ""}, {"'x'", "x"}, {"'10'", "10"}, {"long string", ("s"):rep(1000)},
  {"{}", {}}, {"{1,2}", {1, 2}}, {"{x=1}", {x = 1}}, {"function", function() end},
  {"print", print}, {"coroutine", coroutine.create(function() end)}, {"io.stdout", io.stdout},
}

-- Method names to probe on every object: those of the API, and every
-- function found in any metatable or method table met on the way.
local NAMES = {}
for name in ([[put get put_nowait get_nowait qsize empty full close task_done join
  send recv send_bytes recv_bytes poll fileno acquire release locked with get_value
  set clear is_set wait wait_for notify notify_all reset abort get_lock add totable
  fill read write array unlink keys values items update len incr pop append extend
  get_nowait start terminate kill is_alive apply apply_async map map_async imap
  imap_unordered starmap starmap_async stats cancel ready successful dict list Value
  Array Queue JoinableQueue Lock RLock Semaphore BoundedSemaphore Condition Event
  Barrier Namespace shutdown submit result exception done running cancelled
  add_done_callback insert remove index count copy setdefault profile_report]]):gmatch("%S+") do
  NAMES[name] = true
end

local function harvest(t, seen)
  seen = seen or {}
  if type(t) ~= "table" or seen[t] then return end
  seen[t] = true
  for k, v in pairs(t) do
    if type(k) == "string" and type(v) == "function" and not k:match("^_") then NAMES[k] = true end
    if type(v) == "table" then harvest(v, seen) end
  end
end

local function methods_of(obj)
  local mt = getmetatable(obj)
  if type(mt) == "table" then
    harvest(mt)
    if type(mt.__index) == "function" then
      for i = 1, 255 do
        local n, v = debug.getupvalue(mt.__index, i)
        if not n then break end
        harvest(v)
      end
    end
  end
  local out = {}
  for name in pairs(NAMES) do
    local ok, v = pcall(function() return obj[name] end)
    if ok and type(v) == "function" then out[#out + 1] = name end
  end
  table.sort(out)
  return out
end

-- === judging an outcome ===

local function describe(err)
  if lmp.is_error(err) then return "lmp.Error(" .. tostring(err.kind) .. "): " .. tostring(err.message) end
  return (tostring(err):gsub("\n.*", ""):sub(1, 160))
end

-- The function a standard message names: "bad argument #1 to 'Pool' (...)"
-- names Pool (C functions called through a field may say "lmp.Pool").
local function named(msg)
  local name = msg:match("^bad argument #%d+ to '([^']+)'") or msg:match("^calling '([^']+)' on bad self")
  return name and name:gsub("^lmp%.", "")
end

-- "standard": bad argument, bad self, lmp.Error, a corrupt message or no
-- memory, naming the function called (`fname`).  "state": another error lmp raised on purpose (release of an
-- unheld lock, join before start...).  "unclean": an error Lua itself
-- raised inside lmp, which means an argument was never checked.
local function judge(ok, err, fname)
  if ok then return "ok" end
  if lmp.is_error(err) then return "standard" end
  if type(err) ~= "string" then return "unclean" end
  local msg = err:gsub("^[^\n]-:%d+: ", "", 1)
  if msg:match("^attempt to use a closed lmp%.") then return "state" end
  if msg:match("^attempt to ") or msg:match("^table index is ") or msg:match("^invalid key")
      or msg:match("stack overflow") or msg:match("^bad argument #%d+ to '%?'") then
    return "unclean"
  end
  local name = named(msg)
  if name and name ~= fname then return "unclean" end -- names a function the user never called
  if msg:match("^bad argument #%d+ to '[^']+' %(") or msg:match("^calling '[^']+' on bad self")
      or msg:match("^corrupt message %(") or msg:match("not enough memory")
      or msg:match("out of memory") then
    return "standard"
  end
  return "state"
end

local calls, unclean, unplaced, odd = 0, {}, {}, {}

-- Objects made for the calls, ended after each one so that pools and
-- processes do not pile up waiting for the collector.
local made = {}

local function tidy()
  for i = #made, 1, -1 do
    local o = made[i]
    made[i] = nil
    local function call(name, ...)
      local ok, f = pcall(function() return o[name] end)
      if ok and type(f) == "function" then pcall(f, o, ...) end
    end
    call("terminate")
    call("shutdown", {wait = true, cancel_futures = true})
    call("kill")
    if type(o) == "userdata" then
      local ok, alive = pcall(function() return o:is_alive() end)
      if ok and alive ~= nil then pcall(o.join, o, 5) end
    end
    call("close")
  end
end

local function label_of(what, args, n)
  local parts = {}
  for i = 1, n do parts[i] = args[i] == nil and "nil" or args[i] end
  return what .. "(" .. table.concat(parts, ", ") .. ")"
end

-- Call holder[key] with n arguments (labels in names, values in vals).
-- The call is compiled with the key spelled out, `holder.key(...)`, as user
-- code has it, so that an error names the function as the user sees it,
-- and not as a tail call, so that an error has its position: "walk:1:".
local invokers = {}

local function invoke(holder, key, ...)
  local f = invokers[key]
  if not f then
    assert(key:match("^[%a_][%w_]*$"), key)
    f = assert(load("local h = ... return function(...) local r = table.pack(h." .. key
                    .. "(...)) return table.unpack(r, 1, r.n) end", "=walk"))
    invokers[key] = f
  end
  return f(holder)(...)
end

local function try(what, holder, key, names, vals, n)
  local label = label_of(what, names, n)
  io.write("CALL ", label, "\n")
  io.flush()
  calls = calls + 1
  local res = table.pack(pcall(invoke, holder, key, table.unpack(vals, 1, n)))
  local ok, err = res[1], res[2]
  for i = 2, res.n do
    if type(res[i]) == "table" or type(res[i]) == "userdata" then made[#made + 1] = res[i] end
  end
  tidy()
  local verdict = judge(ok, err, key)
  if verdict == "unclean" then unclean[#unclean + 1] = label .. " -> " .. describe(err) end
  if verdict == "standard" and type(err) == "string" and not err:match("^walk:1: ")
      and (err:match("bad argument #%d+ to '") or err:match("calling '[^']+' on bad self")) then
    unplaced[#unplaced + 1] = label .. " -> " .. describe(err)
  end
  if verdict == "state" then odd[describe(err)] = label end
end

-- Values for a function: all of BAD, except where `skip(value)` says the
-- value would legitimately block (a sleep of a year).
local function values_for(skip)
  local out = {}
  for _, b in ipairs(BAD) do
    if not (skip and skip(b[2])) then out[#out + 1] = b end
  end
  return out
end

local function longer_than(limit)
  return function(v)
    local n = tonumber(v)
    return n ~= nil and (n ~= n or n > limit)
  end
end

-- Each bad value in places 1..3 (the places before it nil, or `prefix`).
local function walk_args(what, holder, key, self, prefix, skip)
  local fixed = self ~= nil and 1 or 0
  for _, b in ipairs(values_for(skip)) do
    for place = 1, 3 do
      for _, pre in ipairs(prefix and {{}, prefix} or {{}}) do
        if #pre < place then
          local names, vals = {}, {}
          if self ~= nil then names[1], vals[1] = "self", self() end
          for i = 1, #pre do names[fixed + i], vals[fixed + i] = pre[i][1], pre[i][2] end
          names[fixed + place], vals[fixed + place] = b[1], b[2]
          try(what, holder, key, names, vals, fixed + place)
        end
      end
    end
  end
end

-- === families ===

local function fn() return 1 end

local function pool() return lmp.Pool(1) end

-- make(method) -> a fresh object ready for that method, so that no bad
-- argument can make a call wait forever: a queue holds an item, a lock is
-- free, an event is set, a barrier has one party, a process has ended.
local families = {
  Queue = function() local q = lmp.Queue(); q:put(1) return q end,
  JoinableQueue = function(m)
    local q = lmp.JoinableQueue()
    q:put(1)
    if m == "join" then q:get(); q:task_done() end
    return q
  end,
  SimpleQueue = function() local q = lmp.SimpleQueue(); q:put(1) return q end,
  Pipe = function() local a, b = lmp.Pipe(); b:send(1); a:send(1) return a end,
  ["Pipe(receiving end)"] = function() local r, w = lmp.Pipe(false); w:send(1) return r end,
  ["Pipe(sending end)"] = function() local _, w = lmp.Pipe(false) return w end,
  Lock = function() return lmp.Lock() end,
  RLock = function() return lmp.RLock() end,
  Semaphore = function() return lmp.Semaphore(100) end,
  BoundedSemaphore = function() return lmp.BoundedSemaphore(100) end,
  Event = function() local e = lmp.Event(); e:set() return e end,
  Condition = function() return lmp.Condition() end,
  Barrier = function() return lmp.Barrier(1) end,
  Value = function() return lmp.Value("int64", 1) end,
  RawValue = function() return lmp.RawValue("double", 1) end,
  ValueLock = function() return lmp.Value("int64", 1):get_lock() end,
  Array = function() return lmp.Array("int32", {1, 2, 3}) end,
  RawArray = function() return lmp.RawArray("uint8", 4) end,
  SharedMemory = function() return lmp.SharedMemory{size = 64} end,
  ["SharedMemory view"] = function() return lmp.SharedMemory{size = 64}:array("int32") end,
  Dict = function() local d = lmp.Dict(); d.a = 1 return d end,
  List = function() local l = lmp.List(); l:append(1); l:append(2) return l end,
  Namespace = function() local n = lmp.Namespace(); n.a = 1 return n end,
  Process = function()
    local p = lmp.Process(fn)
    p:start()
    p:join()
    return p
  end,
  ["Process (not started)"] = function() return lmp.Process(fn) end,
  Pool = pool,
  AsyncResult = function()
    local r = pool():apply_async(fn)
    r:wait(30)
    return r
  end,
  Manager = function() return lmp.Manager() end,
}
if lmp.Executor then
  families.Executor = function() return lmp.Executor{max_workers = 1} end
  families.Future = function()
    local f = lmp.Executor{max_workers = 1}:submit(fn)
    f:result(30)
    return f
  end
end

-- Module functions: a good first argument lets the walk reach the later
-- places; some values are skipped where they would only make a call wait.
local PREFIX = {
  Value = {{"'int64'", "int64"}}, RawValue = {{"'int64'", "int64"}},
  Array = {{"'double'", "double"}}, RawArray = {{"'double'", "double"}},
  Barrier = {{"1", 1}}, Process = {{"fn", fn}}, Pool = {{"1", 1}}, Error = {{"'task'", "task"}},
  register = {{"'badargs.x'", "badargs.x"}}, deserialize = {{"serialize(1)", lmp.serialize(1)}},
  Semaphore = {{"1", 1}}, BoundedSemaphore = {{"1", 1}},
}
local SKIP = {
  sleep = longer_than(0.01),
}

local function walk_module()
  local names = {}
  for k, v in pairs(lmp) do
    if type(k) == "string" and type(v) == "function" and not k:match("^_") then names[#names + 1] = k end
  end
  table.sort(names)
  for _, name in ipairs(names) do
    try("lmp." .. name, lmp, name, {}, {}, 0)
    walk_args("lmp." .. name, lmp, name, nil, PREFIX[name], SKIP[name])
  end
end

-- Something of another kind to pass as self (not a queue to a queue's
-- method: the queues share methods, and an empty one would block a get).
local function stranger(family)
  return family:match("Queue") and lmp.Lock() or lmp.Queue()
end

local function walk_object(family)
  assert(families[family], "unknown family " .. family)
  local function make(m)
    local o = families[family](m)
    made[#made + 1] = o
    return o
  end
  local sample = make()
  for _, m in ipairs(methods_of(sample)) do
    local what = family .. ":" .. m
    walk_args(what, sample, m, function() return make(m) end)
    for _, b in ipairs(BAD) do try(what, sample, m, {b[1]}, {b[2]}, 1) end
    try(what, sample, m, {"another kind"}, {stranger(family)}, 1)
    local closed = make(m)
    local ok, close = pcall(function() return closed.close end)
    if ok and type(close) == "function" then
      pcall(close, closed)
      try(what, sample, m, {"closed"}, {closed}, 1)
    end
  end
end

local family = arg[1] or "module"
if family == "list" then
  local out = {"module"}
  for k in pairs(families) do out[#out + 1] = k end
  table.sort(out)
  print(table.concat(out, "\n"))
  return
end
if family == "module" then walk_module() else walk_object(family) end
collectgarbage()
collectgarbage()
print("WALKED " .. calls)
for _, u in ipairs(unclean) do print("UNCLEAN " .. u) end
for _, u in ipairs(unplaced) do print("UNPLACED " .. u) end
for msg, label in pairs(odd) do print("ODD " .. label .. " -> " .. msg) end

-- Still working: a process, a queue, a pool.
local q = lmp.Queue()
local p = lmp.Process(function() q:put(42) end)
p:start()
assert(q:get(30) == 42)
assert(p:join(30) and p.exitcode == 0)
local pl = lmp.Pool(1)
assert(pl:apply(function(x) return x + 1 end, 1) == 2)
pl:terminate()
print("ALIVE")

-- docs/lua-api.md against the module itself: every public name of the lmp
-- table and every method of every object type is documented, and every
-- lmp.NAME the reference mentions exists.  A name added to the code without
-- documentation, or documentation left behind by a removed name, fails here.
local support = dofile("tests/support.lua")
local lmp = require "lmp"

local read = support.read

local doc = read("docs/lua-api.md")

-- The text under a heading, up to the next heading of the same or a higher
-- level (subsections included).
local function section(heading)
  local level, title = heading:match("^(#+) (.*)$")
  local start = doc:find("\n" .. heading .. "\n", 1, true)
  assert(start, "docs/lua-api.md has no heading '" .. heading .. "'")
  local body = doc:sub(start + #heading + 2)
  local stop
  for pos, hashes in body:gmatch("\n()(#+) ") do
    if #hashes <= #level then stop = pos break end
  end
  assert(title)
  return stop and body:sub(1, stop - 1) or body
end

-- Lua-pattern-escaped name.
local function esc(s) return (s:gsub("%p", "%%%0")) end

-- Is name written as a member in text: after ':', '.' or '`', not followed
-- by more of an identifier (so `get` is not found in `get_nowait`).
local function mentions(text, name)
  return text:find("[:%.`]" .. esc(name) .. "%f[^%w_]") ~= nil
end

-- The methods of an object: its metatable's __index table, its "methods"
-- table, or the table an __index function looks methods up in (its first
-- upvalue).  Names starting with "_" are internal.
local function methods(obj)
  local mt = getmetatable(obj)
  local t
  if type(mt) == "table" then
    local index = rawget(mt, "__index")
    if type(index) == "table" then
      t = index
    elseif type(rawget(mt, "methods")) == "table" then
      t = mt.methods
    elseif type(index) == "function" then
      local _, up = debug.getupvalue(index, 1)
      if type(up) == "table" then t = up end
    end
  end
  local names = {}
  for k, v in pairs(t or {}) do
    if type(k) == "string" and not k:match("^_") and type(v) == "function" then names[#names + 1] = k end
  end
  table.sort(names)
  return names
end

-- One object of each type, with the headings its members are documented
-- under.  Made once; closed at the end.
local pool, ex, conn_a, conn_b
local objects

local function make_objects()
  pool = lmp.Pool(1)
  ex = lmp.Executor(1)
  conn_a, conn_b = lmp.Pipe()
  local shared = "## Shared memory"
  objects = {
    {"Process", lmp.Process(function() end), {"## lmp.Process"}},
    {"Pipe end", conn_a, {"## lmp.Pipe"}},
    {"Queue", lmp.Queue(), {"## lmp.Queue, lmp.JoinableQueue, lmp.SimpleQueue"}},
    {"JoinableQueue", lmp.JoinableQueue(), {"## lmp.Queue, lmp.JoinableQueue, lmp.SimpleQueue"}},
    {"SimpleQueue", lmp.SimpleQueue(), {"## lmp.Queue, lmp.JoinableQueue, lmp.SimpleQueue"}},
    {"Lock", lmp.Lock(), {"### lmp.Lock and lmp.RLock"}},
    {"RLock", lmp.RLock(), {"### lmp.Lock and lmp.RLock"}},
    {"Semaphore", lmp.Semaphore(), {"### lmp.Semaphore and lmp.BoundedSemaphore"}},
    {"BoundedSemaphore", lmp.BoundedSemaphore(), {"### lmp.Semaphore and lmp.BoundedSemaphore"}},
    {"Event", lmp.Event(), {"### lmp.Event"}},
    {"Condition", lmp.Condition(), {"### lmp.Condition"}},
    {"Barrier", lmp.Barrier(2), {"### lmp.Barrier"}},
    {"Value", lmp.Value("i", 1), {"### lmp.Value and lmp.RawValue", shared}},
    {"RawValue", lmp.RawValue("i", 1), {"### lmp.Value and lmp.RawValue", shared}},
    {"Array", lmp.Array("i", 3), {"### lmp.Array and lmp.RawArray", shared}},
    {"RawArray", lmp.RawArray("i", 3), {"### lmp.Array and lmp.RawArray", shared}},
    {"ValueLock", lmp.Value("i", 1):get_lock(), {"### The lock of get_lock()"}},
    {"SharedMemory", lmp.SharedMemory(16), {"### lmp.SharedMemory", shared}},
    {"Dict", lmp.Dict(), {"### lmp.Dict, lmp.List and lmp.Namespace", shared}},
    {"List", lmp.List(), {"### lmp.Dict, lmp.List and lmp.Namespace", shared}},
    {"Namespace", lmp.Namespace(), {"### lmp.Dict, lmp.List and lmp.Namespace", shared}},
    {"Manager", lmp.Manager(), {"### lmp.Manager"}},
    {"Error", lmp.Error("task", "x"), {"## lmp.Error"}},
    {"Pool", pool, {"## Pools"}},
    {"AsyncResult", pool:apply_async(function() return 1 end), {"### AsyncResult"}},
    {"Executor", ex, {"## Executor and futures"}},
    {"Future", ex:submit(function() return 1 end), {"### Future"}},
    {"Logger", lmp.get_logger(), {"## Logging"}},
    {"context", lmp.get_context("fork"), {"## Start methods"}},
  }
end

local function close_objects()
  for _, o in ipairs(objects) do
    local close = (getmetatable(o[2]) or {}).__close
    if type(close) == "function" and o[1] ~= "Pool" and o[1] ~= "Executor" then pcall(close, o[2]) end
  end
  pool:close()
  pool:join()
  ex:shutdown()
  conn_a:close()
  conn_b:close()
end

describe("docs/lua-api.md", function()
  setup(make_objects)
  teardown(close_objects)

  it("documents every public name of the lmp table", function()
    local missing = {}
    for k in pairs(lmp) do
      -- Names starting with "_" are internal (lmp._poll_fds, lmp._pool_counters
      -- serve lmp's own Lua modules), except _VERSION, documented as Lua's is.
      if type(k) == "string" and (not k:match("^_") or k == "_VERSION") then
        if not doc:find("lmp%." .. esc(k) .. "%f[^%w_]") then missing[#missing + 1] = "lmp." .. k end
      end
    end
    table.sort(missing)
    assert.are.same({}, missing)
  end)

  it("documents every method of every object type, in its section", function()
    local missing = {}
    for _, o in ipairs(objects) do
      local kind, obj, headings = o[1], o[2], o[3]
      local text = {}
      for i, h in ipairs(headings) do text[i] = section(h) end
      text = table.concat(text, "\n")
      for _, name in ipairs(methods(obj)) do
        if not mentions(text, name) then missing[#missing + 1] = kind .. ":" .. name end
      end
    end
    assert.are.same({}, missing)
  end)

  it("finds the methods it checks (the lookup above still works)", function()
    for _, o in ipairs(objects) do
      if o[1] ~= "Error" and o[1] ~= "Namespace" then
        assert.is_true(#methods(o[2]) > 0, o[1] .. " shows no methods")
      end
    end
  end)

  it("mentions no lmp.NAME that does not exist", function()
    -- Written as lmp.NAME without being fields of the lmp table: the names
    -- of object types (metatables' __name), and a few others.
    local not_fields = {
      so = "the file lmp.so",
      Qu = "the REPL's completion of lmp.Qu",
    }
    for _, o in ipairs(objects) do
      local mt = getmetatable(o[2])
      local name = type(mt) == "table" and rawget(mt, "__name")
      if type(name) == "string" and name:match("^lmp%.") then not_fields[name:sub(5)] = "a type name" end
    end
    local unknown = {}
    -- A quoted "lmp.x" is the name of a module or a logger, not a field.
    for before, name in doc:gmatch("(.)lmp%.([%a_][%w_]*)") do
      if before ~= '"' and before ~= "/" and lmp[name] == nil and not not_fields[name] then
        unknown[#unknown + 1] = "lmp." .. name
      end
    end
    assert.are.same({}, unknown)
  end)
end)

-- docs/lmp.1 names every environment variable lmp reads (a getenv in the C
-- code, an os.getenv in the Lua-side modules), the internal ones as such: a
-- variable read without being documented fails here.
describe("docs/lmp.1", function()
  local man = read("docs/lmp.1")

  it("documents every environment variable the code reads", function()
    local env = man:match("\n%.SH ENVIRONMENT\n(.-)\n%.SH ")
    assert.is_not_nil(env)
    local names, missing = {}, {}
    local p = io.popen("grep -rhoE 'getenv\\(\"[A-Za-z_0-9]+\"\\)' runtime bindings scripts")
    for name in p:read("a"):gmatch('getenv%("([%w_]+)"%)') do names[name] = true end
    p:close()
    for _, name in ipairs({"LMP_SECRET", "LMP_EXECUTABLE", "LMP_HISTORY", "LMP_PREFIX"}) do
      assert.is_true(names[name], name .. " not found in the code: the search above is broken")
    end
    for name in pairs(names) do
      if not env:find("%f[%w_]" .. name .. "%f[^%w_]") then missing[#missing + 1] = name end
    end
    table.sort(missing)
    assert.are.same({}, missing)
  end)

  it("describes the worker and top subcommands", function()
    assert.matches("\n.SH LMP WORKER\n", man, 1, true)
    assert.matches("\n.SH LMP TOP\n", man, 1, true)
    for flag in support.shell(support.lmp_bin .. " worker --help"):gmatch("\n  (%-%-[%w-]+)") do
      assert.matches(flag:gsub("%-", "\\-"), man, 1, true)
    end
    for flag in support.shell(support.lmp_bin .. " top --help"):gmatch("%-%-[%w-]+") do
      assert.matches(flag:gsub("%-", "\\-"), man, 1, true)
    end
  end)
end)

-- The Lua samples of the guides are meant to be run as they are: each
-- ```lua block of docs/guide.md and docs/from-python.md runs under the lmp
-- command and must exit 0, and print, in order, the lines its "--> "
-- comments show (tabs or runs of spaces between values alike).  A sample
-- that needs something outside the machine says so on its first line,
-- "-- with ...", and is only checked to compile.
for _, page in ipairs({{"docs/guide.md", 10}, {"docs/from-python.md", 10}}) do
  local path, least = page[1], page[2]
  describe(path, function()
    local samples = support.samples(path)
    it("has Lua samples", function()
      assert.is_true(#samples >= least)
    end)

    for i, sample in ipairs(samples) do
      local block = sample.code
      it("sample " .. i .. " runs (" .. sample.title .. ")", function()
        if block:match("^%-%- with ") then
          assert(load(block, "=sample " .. i))
          return
        end
        support.check_sample(block)
      end)
    end
  end)
end

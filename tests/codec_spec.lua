local support = dofile("tests/support.lua")
local lmp = require "lmp"

local ser, des = lmp.serialize, lmp.deserialize
local trusted = {trusted = true}

local function rt(v, opts) return des(ser(v), opts) end
local function rtt(v) return des(ser(v), trusted) end

-- The message of an error, whether a string or an lmp.Error.
local function errmsg(f, ...)
  local err = support.raised(f, ...)
  if type(err) == "table" then return err.message, err end
  return (err:gsub("^[^:]*:%d+: ", ""))
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

local function nest(depth)
  local root = {}
  local t = root
  for _ = 2, depth do
    t[1] = {}
    t = t[1]
  end
  return root
end

local function depth_of(t)
  local d = 0
  while type(t) == "table" do d, t = d + 1, t[1] end
  return d
end

-- Runs Lua code in a fresh interpreter that finds the same lmp module;
-- returns its output.
local function run_lua(code)
  local path = support.tmpfile(code)
  local p = io.popen(string.format("lua5.4 -e %q %s 2>&1",
    "package.cpath = " .. string.format("%q", package.cpath), path))
  local out = p:read("a")
  p:close()
  os.remove(path)
  return out
end

describe("lmp codec: plain values", function()
  it("round-trips nil and booleans", function()
    assert.is_nil(rt(nil))
    assert.is_true(rt(true))
    assert.is_false(rt(false))
    assert.are.equal("\xc0", ser(nil))
    assert.are.equal("\xc3", ser(true))
    assert.are.equal("\xc2", ser(false))
  end)

  it("keeps integers integers, in every width", function()
    local values = {0, 1, -1, 31, 32, -32, -33, 127, 128, -128, -129, 255, 256,
      32767, 32768, -32768, -32769, 65535, 65536, 1 << 31, -(1 << 31) - 1,
      4294967295, 4294967296, math.maxinteger, math.mininteger}
    for _, v in ipairs(values) do
      local r = rt(v)
      assert.are.equal(v, r)
      assert.are.equal("integer", math.type(r))
    end
    assert.are.equal("\x03", ser(3))
    assert.are.equal("\xff", ser(-1))
    assert.are.equal("\xcd\x01\x2c", ser(300))
    assert.are.equal("\xd3\x80\0\0\0\0\0\0\0", ser(math.mininteger))
  end)

  it("keeps floats floats, as float64", function()
    for _, v in ipairs{3.0, 0.1, -2.5, math.pi, 1e308, -1e-308, 2^53, 2^63, 5e-324} do
      local r = rt(v)
      assert.are.equal(v, r)
      assert.are.equal("float", math.type(r))
    end
    assert.are.equal("\xcb" .. string.pack(">d", 3.0), ser(3.0))
  end)

  it("keeps inf, -inf, nan and the sign of zero", function()
    assert.are.equal(math.huge, rt(math.huge))
    assert.are.equal(-math.huge, rt(-math.huge))
    local nan = rt(0 / 0)
    assert.is_true(nan ~= nan)
    assert.are.equal("float", math.type(nan))
    local z = rt(-0.0)
    assert.are.equal(-math.huge, 1 / z)
    assert.are.equal(math.huge, 1 / rt(0.0))
  end)

  it("keeps strings byte for byte", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    all = table.concat(all)
    for _, s in ipairs{"", "a", "\0", "a\0b\0", all, all:rep(300)} do
      assert.are.equal(s, rt(s))
    end
    for _, n in ipairs{31, 32, 255, 256, 65535, 65536, 100000} do
      local s = ("x"):rep(n)
      assert.are.equal(s, rt(s))
    end
    assert.are.equal("\xa3abc", ser("abc"))
    assert.are.equal("\xd9\x20" .. ("x"):rep(32), ser(("x"):rep(32)))
  end)

  it("reads what other msgpack writers produce", function()
    local f = des("\xca" .. string.pack(">f", 1.5))
    assert.are.equal(1.5, f)
    assert.are.equal("float", math.type(f))
    assert.are.equal("abc", des("\xc4\x03abc"))
    assert.are.equal("abc", des("\xc5\x00\x03abc"))
    assert.are.equal("abc", des("\xdb\x00\x00\x00\x03abc"))
    assert.are.equal(2^64, des("\xcf" .. ("\xff"):rep(8)))
    assert.are.equal(math.maxinteger, des("\xcf\x7f" .. ("\xff"):rep(7)))
    assert.are.equal(-2, des("\xd0\xfe"))
    assert.are.equal(-2, des("\xd1\xff\xfe"))
    assert.are.equal(-2, des("\xd2\xff\xff\xff\xfe"))
    assert.are.equal(200, des("\xd1\x00\xc8"))
    assert.are.same({1, 2}, des("\xdc\x00\x02\x01\x02"))
    assert.are.same({1, 2}, des("\xdd\x00\x00\x00\x02\x01\x02"))
    assert.are.same({a = 1}, des("\xde\x00\x01\xa1a\x01"))
    assert.are.same({a = 1}, des("\xdf\x00\x00\x00\x01\xa1a\x01"))
  end)
end)

describe("lmp codec: tables", function()
  it("sends sequences as arrays and the rest as maps", function()
    assert.are.equal("\x93\x01\x02\x03", ser({1, 2, 3}))
    assert.are.equal("\x90", ser({}))
    assert.are.equal("\x81\xa1a\x01", ser({a = 1}))
    local back = {}
    back[3] = "c"; back[2] = "b"; back[1] = "a"
    assert.are.equal("\x93\xa1a\xa1b\xa1c", ser(back))
    assert.are.equal(0x82, ser({1, nil, 3}):byte()) -- a hole: a map
    assert.are.equal(0x83, ser({1, 2, x = 3}):byte())
    assert.are.equal(0x81, ser({[2] = 1}):byte())
  end)

  it("gives maps of every size the smallest header", function()
    local function map(n)
      local t = {}
      for i = 1, n do t[-i] = {i} end -- tables inside: content after the header moves
      return t
    end
    for _, case in ipairs{{15, "\x8f"}, {16, "\xde\x00\x10"}, {65535, "\xde\xff\xff"},
                          {65536, "\xdf\x00\x01\x00\x00"}} do
      local n, header = case[1], case[2]
      local t = map(n)
      local m = ser({t, {t}})
      assert.are.equal("\x92" .. header, m:sub(1, 1 + #header))
      local r = des(m)
      assert.are.equal(n, count(r[1]))
      assert.are.equal(r[1], r[2][1])
      assert.are.same({n}, r[1][-n])
    end
  end)

  it("round-trips nested, mixed and sparse tables", function()
    local values = {
      {},
      {1, 2, 3},
      {1, {2, {3, {4}}}},
      {a = 1, b = {c = {d = "e"}}},
      {1, 2, x = 3, [10] = 4, [-1] = 5, [0] = 6},
      {1, nil, 3},
      {[1.5] = "f", [true] = "t", [false] = "f"},
      {[1e6] = 1},
      {"a", true, false, 3.0, {}},
    }
    for _, v in ipairs(values) do assert.are.same(v, rt(v)) end
    local r = rt({[1.5] = 1, [2] = 2.0})
    assert.are.equal("integer", math.type(next({[2] = true})))
    assert.are.equal("float", math.type(r[2]))
    local big = {}
    for i = 1, 10000 do big[i] = i * 3 end
    assert.are.same(big, rt(big))
  end)

  it("reads every string key as sent, message after message", function()
    -- keys of one length that differ in a byte, the empty key, NUL bytes,
    -- the longest short key and one past it, and more keys than messages
    -- usually repeat
    local t = {[""] = 0, ["a\0b"] = 1, ["a\0c"] = 2, [string.rep("k", 31)] = 3,
      [string.rep("k", 32)] = 4, ab = 5, ba = 6, aab = 7, aba = 8, baa = 9}
    for i = 1, 500 do t["key" .. i] = i end
    for _ = 1, 3 do
      assert.are.same(t, rt(t))
      assert.are.same({x = {ab = 1}, y = {ba = 2}}, rt({x = {ab = 1}, y = {ba = 2}}))
    end
    local keys = {}
    for k in pairs(rt(t)) do keys[#keys + 1] = k end
    assert.are.equal(count(t), #keys)
  end)

  it("accepts tables as keys", function()
    local k = {1}
    local r = rt({[k] = "v", other = k})
    assert.are.equal("v", r[r.other])
    assert.are_not.equal(k, r.other)
  end)

  it("preserves shared references and cycles", function()
    local shared = {x = 1}
    local t = {a = shared, b = shared, list = {shared, shared}}
    t.self = t
    local r = rt(t)
    assert.are.equal(r.a, r.b)
    assert.are.equal(r.a, r.list[1])
    assert.are.equal(r.list[1], r.list[2])
    assert.are.equal(r, r.self)
    assert.are_not.equal(shared, r.a)
    assert.are.equal(1, r.a.x)

    local a, b = {}, {}
    a.b, b.a = b, a
    local ra = rt(a)
    assert.are.equal(ra, ra.b.a)

    local c = {}
    c[c] = c
    local rc = rt(c)
    assert.are.equal(rc, rc[rc])
    assert.are.equal(1, count(rc))
    -- REF is ext 1 holding the table's number (tables count from 1).
    local s = {}
    s.self = s
    assert.are.equal("\x81\xa4self\xd4\x01\x01", ser(s))
  end)

  it("copies: the receiver's tables are new", function()
    local t = {1, 2}
    local r = rt(t)
    r[1] = 10
    assert.are.equal(1, t[1])
  end)

  it("nests 150 and 200 levels, and refuses 201 and 1000 cleanly", function()
    assert.are.equal(150, depth_of(rt(nest(150))))
    assert.are.equal(200, depth_of(rt(nest(200))))
    local msg, err = errmsg(ser, nest(201))
    assert.is_true(lmp.is_error(err))
    assert.are.equal("serialize", err.kind)
    assert.matches("^cannot send value%[1%]%[1%].*: nested deeper than 200 levels$", msg)
    msg = errmsg(ser, nest(1000))
    assert.matches("nested deeper than 200 levels$", msg)
    assert.are.equal("corrupt message (nested deeper than 200 levels at byte 200)",
      errmsg(des, ("\x91"):rep(1000) .. "\xc0"))
    assert.are.equal(200, depth_of(des(("\x91"):rep(199) .. "\x90")))
  end)
end)

describe("lmp codec: functions", function()
  it("refuses code from an untrusted message", function()
    local m = ser(function() return 1 end)
    local msg, err = errmsg(des, m)
    assert.are.equal(
      "refusing to load code from an untrusted message (deserialize with {trusted = true})", msg)
    assert.are.equal("serialize", err.kind)
    assert.matches("^refusing", errmsg(des, m, {trusted = false}))
    assert.matches("^refusing", errmsg(des, ser({1, {f = print}})))
    assert.matches("^refusing to bind the receiver's globals", errmsg(des, ser(_G)))
    assert.are.equal(1, des(m, trusted)())
  end)

  it("sends lmp itself by name: a function keeping lmp arrives bound to the receiver's lmp", function()
    local core = require "lmp.core"
    assert.are.equal(lmp, des(ser(lmp)))
    assert.are.equal(core, des(ser(core)))
    local function f() return lmp end
    local m = ser(f)
    assert.is_true(#m < 300, #m .. " bytes") -- a name, not lmp's functions
    assert.are.equal(lmp, des(m, trusted)())
    -- in another process, that process's own lmp
    local pool = lmp.Pool(1)
    finally(function() pool:terminate() end)
    assert.is_true(pool:apply(function() return lmp == require("lmp") and lmp.Queue ~= nil end))
  end)

  it("sends upvalues: numbers, tables, other functions", function()
    local n, t = 41, {k = "v"}
    local function helper(x) return x * 2 end
    local function f(x) return n + x, t.k, helper(x) end
    local g = rtt(f)
    local a, b, c = g(1)
    assert.are.equal(42, a)
    assert.are.equal("v", b)
    assert.are.equal(2, c)
    t.k = "changed"
    assert.are.equal("v", select(2, g(1)))
  end)

  it("sends a local recursive function, which is its own upvalue", function()
    local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end
    local g = rtt(fact)
    assert.are.equal(120, g(5))
    local _, up = debug.getupvalue(g, 1)
    assert.are.equal(g, up)
  end)

  it("keeps one function one function, and upvalues shared", function()
    local n = 0
    local function inc() n = n + 1; return n end
    local function get() return n end
    local r = rtt({inc = inc, get = get, again = inc})
    assert.are.equal(r.inc, r.again)
    r.inc(); r.inc()
    assert.are.equal(2, r.get())
    assert.are.equal(0, n)
  end)

  it("binds _ENV to the receiver's globals", function()
    local function f() return codec_spec_global end -- luacheck: ignore
    local g = rtt(f)
    local name, env = debug.getupvalue(g, 1)
    assert.are.equal("_ENV", name)
    assert.are.equal(_G, env)
    assert.are.equal("\xc7\x00\x04", ser(_G)) -- GLOBALS: ext 4, empty
    assert.are.equal(_G, rtt(_G))
  end)

  it("binds any _ENV upvalue to the receiver's globals", function()
    local g
    do
      local _ENV = setmetatable({x = 5}, {__index = _G})
      g = function() return x end -- luacheck: ignore
    end
    local h = rtt(g)
    local _, env = debug.getupvalue(h, 1)
    assert.are.equal(_G, env)
    codec_spec_x = "global" -- luacheck: ignore
    assert.is_nil(h())
    codec_spec_x = nil -- luacheck: ignore
  end)

  it("reads the receiver's globals in another process", function()
    local function f(x) return codec_remote_greeting .. " " .. x, math.sqrt(16) end -- luacheck: ignore
    local path = support.tmpfile(ser({f = f, sqrt = math.sqrt, pr = print}))
    local out = run_lua(string.format([[
      local lmp = require "lmp"
      local f = io.open(%q, "rb")
      local m = f:read("a")
      f:close()
      codec_remote_greeting = "hello from"
      local t = lmp.deserialize(m, {trusted = true})
      local a, b = t.f("the child")
      print(a, b, t.sqrt == math.sqrt, t.pr == print)
    ]], path))
    os.remove(path)
    assert.are.equal("hello from the child\t4.0\ttrue\ttrue\n", out)
  end)

  it("keeps varargs, several results and line information", function()
    local g = rtt(function(...) return select("#", ...), ... end)
    local r = table.pack(g(1, nil, 3))
    assert.are.equal(4, r.n)
    assert.are.same({3, 1, nil, 3}, {r[1], r[2], r[3], r[4]})
    local h = rtt(function() error("boom") end)
    local ok, err = pcall(h)
    assert.is_false(ok)
    assert.matches("codec_spec%.lua:%d+: boom", err)
  end)

  it("sends C functions by name", function()
    for _, f in ipairs{math.sqrt, print, string.format, table.concat, io.write, os.time} do
      assert.are.equal(f, rtt(f))
    end
    assert.are.equal(0xc9, ser(math.sqrt):byte())
    assert.matches("math.*sqrt", ser(math.sqrt))
  end)

  it("finds C functions of modules loaded later, and notices replaced ones", function()
    local it = string.gmatch("a", "a") -- a C function no module holds
    assert.are.equal("cannot send value: C function (not reachable from package.loaded)",
      (errmsg(ser, it)))
    package.loaded.codec_spec_mod = {iter = it}
    assert.are.equal(it, rtt(it))
    package.loaded.codec_spec_mod.iter = nil
    assert.matches("not reachable", (errmsg(ser, it)))
    package.loaded.codec_spec_mod = nil
  end)

  it("refuses a C function the receiver does not have", function()
    local m = "\xc9\x00\x00\x00\x0a\x03\xa4nope\xa4func"
    assert.are.equal("cannot receive C function 'nope.func': not in package.loaded",
      (errmsg(des, m, trusted)))
  end)
end)

describe("lmp codec: registered classes", function()
  local Point = {}
  Point.__index = Point
  function Point.new(x, y) return setmetatable({x = x, y = y}, Point) end
  function Point:norm2() return self.x * self.x + self.y * self.y end

  it("register returns the metatable and checks its arguments", function()
    assert.are.equal(Point, lmp.register("codec_spec.Point", Point))
    assert.are.equal("bad argument #1 to 'register' (string expected, got no value)",
      errmsg(function() lmp.register() end))
    assert.are.equal("bad argument #2 to 'register' (table expected, got number)",
      errmsg(function() lmp.register("x", 1) end))
    assert.are.equal("bad argument #1 to 'register' (name contains a NUL byte)",
      errmsg(function() lmp.register("codec_spec.Point\0x", {}) end))
  end)

  it("sends instances with their content and the receiver's metatable", function()
    lmp.register("codec_spec.Point", Point)
    local p = Point.new(3, 4)
    local r = rt(p)
    assert.are.equal(Point, getmetatable(r))
    assert.are.equal(25, r:norm2())
    local list = rt({p, p, Point.new(1, 1)})
    assert.are.equal(list[1], list[2])
    assert.are.equal(2, list[3]:norm2())
    local seq = setmetatable({1, 2, 3}, Point)
    assert.are.same({1, 2, 3}, rt(seq))
  end)

  it("uses the latest registration of a name", function()
    local Old, New = {}, {}
    lmp.register("codec_spec.Swap", Old)
    lmp.register("codec_spec.Swap", New)
    assert.are.equal(New, getmetatable(rt(setmetatable({}, New))))
    assert.matches("table with unregistered metatable$", (errmsg(ser, setmetatable({}, Old))))
  end)

  it("sends a metatable by name from its registration until its name moves on", function()
    local A, B = {}, {}
    assert.are_not.equal(A, rt(A)) -- not registered yet: a copy
    lmp.register("codec_spec.Moving", A)
    assert.are.equal(A, rt(A))
    assert.are.equal(A, rt({A})[1])
    lmp.register("codec_spec.Moving", B)
    assert.are_not.equal(A, rt(A)) -- a plain table again
    assert.are.equal(B, rt(B))
    assert.matches("table with unregistered metatable$", (errmsg(ser, setmetatable({}, A))))
  end)

  it("sends a registered metatable itself by name, wherever it sits", function()
    lmp.register("codec_spec.Point", Point)
    local function new(x, y) return setmetatable({x = x, y = y}, Point) end
    -- as an upvalue: the constructor's instances get the receiver's metatable
    local made = rtt(new)(1, 2)
    assert.are.equal(Point, getmetatable(made))
    assert.are.equal(Point, getmetatable(rt(made)))
    -- as a value, a field, a key, nested, and next to its instances
    assert.are.equal(Point, rt(Point))
    local r = rt({mt = Point, list = {{Point}}, [Point] = true, p = new(3, 4)})
    assert.are.equal(Point, r.mt)
    assert.are.equal(Point, r.list[1][1])
    assert.is_true(r[Point])
    assert.are.equal(r.mt, getmetatable(r.p))
    -- a class whose metatable has a metatable of its own (a __call constructor)
    local Callable = setmetatable({}, {__call = function(c, v) return setmetatable({v = v}, c) end})
    Callable.__index = Callable
    lmp.register("codec_spec.Callable", Callable)
    assert.are.equal(Callable, rt(Callable))
    assert.are.equal(Callable, getmetatable(rtt(function(v) return Callable(v) end)(5)))
    -- the receiver must know the name
    local msg, err = errmsg(des, "\xc7\x06\x08\xa5nope!")
    assert.are.equal(
      "cannot receive a 'nope!': no metatable registered under that name (lmp.register)", msg)
    assert.are.equal("serialize", err.kind)
  end)

  it("crosses processes with a registered metatable as an upvalue or argument", function()
    lmp.register("codec_spec.Point", Point)
    local function new(x, y) return setmetatable({x = x, y = y}, Point) end
    local pool <close> = lmp.Pool(1)
    local p = pool:apply(function() return new(3, 4) end)
    assert.are.equal(Point, getmetatable(p))
    assert.are.equal(25, p:norm2())
    p = pool:apply(function(mt) return setmetatable({x = 1, y = 1}, mt) end, Point)
    assert.are.equal(2, p:norm2())
    assert.is_true(pool:apply(function(t) return getmetatable(t[1]) == t.mt end, {new(0, 0), mt = Point}))
  end)

  it("refuses a class the receiver has not registered", function()
    local m = "\xc9\x00\x00\x00\x07\x07\xa5nope!\x90"
    local msg, err = errmsg(des, m)
    assert.are.equal(
      "cannot receive a 'nope!': no metatable registered under that name (lmp.register)", msg)
    assert.are.equal("serialize", err.kind)
  end)

  it("sends lmp.Error values", function()
    local e = lmp.Error("task", "it failed", {pid = 7, value = {1, 2}})
    local r = rt(e)
    assert.is_true(lmp.is_error(r))
    assert.are.equal("task", r.kind)
    assert.are.equal("it failed", r.message)
    assert.are.same({1, 2}, r.value)
    assert.are.equal(tostring(e), tostring(r))
  end)
end)

describe("lmp codec: handles", function()
  it("sends lmp handles as handles to the same object", function()
    local q = lmp.Queue()
    local r = rt({q, q, {inner = q}})
    assert.are.equal(r[1], r[2])
    assert.are.equal(r[1], r[3].inner)
    assert.are.equal("lmp.Queue", getmetatable(r[1]).__name)
    r[1]:put("through the copy")
    assert.are.equal("through the copy", q:get(1))
    q:close()
  end)

  it("refuses a handle of a type the receiver does not know", function()
    local msg, err = errmsg(des, "\xc9\x00\x00\x00\x07\x06\xa4nope\xc4\x00")
    assert.are.equal("cannot receive a handle of unknown type 'nope'", msg)
    assert.are.equal("serialize", err.kind)
    local _, err2 = errmsg(des, "\xc9\x00\x00\x00\x0e\x06\xa9lmp.Queue\xc4\x02ab")
    assert.is_true(lmp.is_error(err2))
    assert.are.equal("serialize", err2.kind)
  end)
end)

describe("lmp codec: wire format", function()
  it("numbers objects in the order it meets them", function()
    local list = {}
    for i = 1, 300 do list[i] = {i} end
    for i = 1, 300 do list[300 + i] = list[i] end
    local m = ser(list)
    assert.truthy(m:find("\xd4\x01\x02", 1, true))         -- REF 2: fixext1
    assert.truthy(m:find("\xd5\x01\xcc\xc8", 1, true))     -- REF 200: fixext2
    assert.truthy(m:find("\xc7\x03\x01\xcd\x01\x2d", 1, true)) -- REF 301: ext8
    local r = des(m)
    for i = 1, 300 do assert.are.equal(r[i], r[300 + i]) end
    assert.are.equal(300, r[600][1])
  end)

  it("reads a reference in every ext form another writer may use", function()
    -- {t, t, {}} with t = {}: the second element REF 2 (the outer table is 1)
    for _, ref in ipairs({
      "\xd4\x01\x02",                 -- fixext 1
      "\xd5\x01\xcc\x02",             -- fixext 2, uint 8
      "\xc7\x01\x01\x02",             -- ext 8
      "\xc8\x00\x01\x01\x02",         -- ext 16
      "\xc9\x00\x00\x00\x01\x01\x02", -- ext 32
    }) do
      local r = des("\x93\x90" .. ref .. "\x90")
      assert.are.equal(r[1], r[2])
      assert.are_not.equal(r[1], r[3])
    end
    -- a cycle, the reference as the last byte but one
    local r = des("\x91\xc8\x00\x01\x01\x01")
    assert.are.equal(r, r[1])
    -- and a message that only looks like one in a string still decodes
    assert.are.same({"\xd4\x01", {}}, des(ser({"\xd4\x01", {}})))
  end)

  it("tags lmp's kinds with ext types 2 to 8", function()
    local n = 0
    local function inc() n = n + 1 end
    local function get() return n end
    assert.are.equal("\xc9\x02", ser(inc):sub(1, 1) .. ser(inc):sub(6, 6))
    assert.are.equal(3, ser(math.sqrt):byte(6))
    assert.are.equal("\xc7\x00\x04", ser(_G))
    assert.truthy(ser({inc, get}):find("\xd5\x05\x02\x01", 1, true)) -- get joins inc's n
    assert.are.equal(6, ser(lmp.Queue()):byte(6))
    local C = lmp.register("codec_spec.Wire", {})
    assert.are.equal("\xc9\x00\x00\x00\x12\x07\xafcodec_spec.Wire\x91\x01",
      ser(setmetatable({1}, C)))
    assert.are.equal("\xc9\x00\x00\x00\x10\x08\xafcodec_spec.Wire", ser(C))
  end)

  it("frees the objects of a big message for the next one", function()
    local big = {}
    for i = 1, 6000 do big[i] = {i} end
    big[6001] = big[1]
    local r = des(ser(big))
    assert.are.equal(r[1], r[6001])
    local small = des(ser({{1}, {2}}))
    assert.are.same({{1}, {2}}, small)
  end)
end)

describe("lmp codec: what cannot be sent", function()
  local co = coroutine.create(function() end)

  local function fails(v, expected)
    local msg, err = errmsg(ser, v)
    assert.are.equal(expected, msg)
    assert.is_true(lmp.is_error(err))
    assert.are.equal("serialize", err.kind)
  end

  it("names the value and where it sits", function()
    fails(co, "cannot send value: thread")
    fails({1, {handler = io.stdout}}, "cannot send value[2].handler: userdata (FILE*)")
    fails({list = {1, 2, co}}, "cannot send value.list[3]: thread")
    fails({["a b"] = co}, 'cannot send value["a b"]: thread')
    fails({["q\"\n\\\1"] = co}, 'cannot send value["q\\"\\n\\\\\\1"]: thread')
    fails({["end"] = co}, 'cannot send value["end"]: thread')
    fails({_x1 = {[7] = co}}, "cannot send value._x1[7]: thread")
    fails({[1.5] = co}, "cannot send value[1.5]: thread")
    fails({[true] = co}, "cannot send value[true]: thread")
    fails({[co] = 1}, "cannot send value[<thread>]: thread")
    fails({[{co}] = 1}, "cannot send value[<table>][1]: thread")
    fails({a = setmetatable({}, {})}, "cannot send value.a: table with unregistered metatable")
    fails({f = coroutine.wrap(function() end)},
      "cannot send value.f: C function (not reachable from package.loaded)")
    fails({[("k"):rep(60)] = co}, "cannot send value." .. ("k"):rep(60) .. ": thread")
    fails({[("k "):rep(30)] = co}, 'cannot send value["' .. ("k "):rep(18) .. 'k..."]: thread')
  end)

  it("names upvalues in the path", function()
    local counter = co
    local function f() return counter end
    fails(f, "cannot send value<upvalue counter>: thread")
    fails({handler = f}, "cannot send value.handler<upvalue counter>: thread")
    local function g() return f end
    fails({g}, "cannot send value[1]<upvalue f><upvalue counter>: thread")
  end)

  it("checks its arguments", function()
    assert.are.equal("bad argument #1 to 'serialize' (value expected)",
      errmsg(function() lmp.serialize() end))
    assert.are.equal("bad argument #1 to 'deserialize' (string expected, got no value)",
      errmsg(function() lmp.deserialize() end))
    assert.are.equal("bad argument #1 to 'deserialize' (string expected, got table)",
      errmsg(function() lmp.deserialize({}) end))
    assert.are.equal("bad argument #2 to 'deserialize' (table expected, got number)",
      errmsg(function() lmp.deserialize("\1", 5) end))
    assert.are.equal("bad argument #2 to 'deserialize' (unknown option 'trsuted')",
      errmsg(function() lmp.deserialize("\1", {trsuted = true}) end))
    assert.are.equal(1, des("\1", {}))
    assert.are.equal(1, des("\1", {trusted = false}))
  end)
end)

describe("lmp codec: corrupt input", function()
  local function corrupt(m, opts)
    local ok, err = pcall(des, m, opts)
    if ok then return nil end
    if type(err) == "table" then
      assert.are.equal("serialize", err.kind)
      return err.message
    end
    assert.matches("^corrupt message %(.+ at byte %d+%)$", err)
    return err
  end

  it("explains what is wrong and where", function()
    assert.are.equal("corrupt message (truncated at byte 0)", corrupt(""))
    assert.are.equal("corrupt message (invalid type byte 0xc1 at byte 1)", corrupt("\x91\xc1"))
    assert.are.equal("corrupt message (trailing bytes at byte 1)", corrupt("\x01\x02"))
    assert.are.equal("corrupt message (trailing bytes at byte 2)", corrupt("\x91\x01\x02"))
    assert.are.equal("corrupt message (array longer than the message at byte 0)",
      corrupt("\x92\x01"))
    assert.are.equal("corrupt message (truncated at byte 3)", corrupt("\x92\x01\xa3ab"))
    assert.are.equal("corrupt message (truncated at byte 5)", corrupt("\xdb\xff\xff\xff\xff"))
    assert.are.equal("corrupt message (truncated at byte 1)", corrupt("\xa5ab"))
    assert.are.equal("corrupt message (array longer than the message at byte 0)",
      corrupt("\xdd\xff\xff\xff\xff\x01"))
    assert.are.equal("corrupt message (map longer than the message at byte 0)",
      corrupt("\xdf\x7f\xff\xff\xff\x01\x01"))
    assert.are.equal("corrupt message (nil map key at byte 1)", corrupt("\x81\xc0\x01"))
    assert.are.equal("corrupt message (NaN map key at byte 1)",
      corrupt("\x81\xcb" .. string.pack(">d", 0 / 0) .. "\x01"))
    assert.are.equal("corrupt message (reference to an unknown object at byte 1)",
      corrupt("\x91\xd4\x01\x05"))
    assert.are.equal("corrupt message (reference to an unknown object at byte 0)",
      corrupt("\xd4\x01\x01"))
    assert.are.equal("corrupt message (unknown ext type 99 at byte 0)", corrupt("\xd4\x63\x00"))
    assert.are.equal("corrupt message (ext payload longer than its content at byte 4)",
      corrupt("\x91\xd5\x01\x01\x00"))
    assert.matches("^corrupt message %(bad function: ", corrupt("\xc7\x03\x02\xa1x\x90", trusted))
  end)

  it("fails cleanly on every truncation of valid messages", function()
    local n = 0
    local function f(x) return x end
    local Pt = setmetatable({}, {})
    lmp.register("codec_spec.Trunc", getmetatable(Pt))
    local samples = {
      {1, 2.5, "three", {four = 4, [5] = {true, false}}, math.mininteger},
      (function() local s = {}; s.a = s; s.b = {s, s}; return s end)(),
      {f = f, g = math.sqrt, env = _G},
      {Pt, lmp.Error("task", "x")},
      ("s"):rep(300),
    }
    for _, v in ipairs(samples) do
      local m = ser(v)
      for len = 0, #m - 1 do
        local err = corrupt(m:sub(1, len), trusted)
        assert.is_not_nil(err, "a truncation decoded: " .. len)
        n = n + 1
      end
      assert.is_not_nil(rtt(v))
    end
    assert.is_true(n > 400)
  end)

  it("never crashes on random bytes", function()
    local r = support.rng(12345)
    local pieces = {"\xdd\xff\xff\xff\xff", "\xc9\xff\xff\xff\xff\x07", "\xd4\x01\x01", "\x9f",
      "\x8f", "\xc1", "\xdb\x00\x00\x00\x05", "\xc7\x00\x04"}
    local decoded, failed = 0, 0
    for _ = 1, 3000 do
      local parts = {}
      for _ = 1, r(24) do
        if r(4) == 0 then
          parts[#parts + 1] = pieces[r(#pieces) + 1]
        else
          parts[#parts + 1] = string.char(r(256))
        end
      end
      local ok = pcall(des, table.concat(parts))
      if ok then decoded = decoded + 1 else failed = failed + 1 end
      corrupt(table.concat(parts))
    end
    assert.are.equal(3000, decoded + failed)
    assert.is_true(failed > 0)
  end)
end)

describe("lmp codec: reentrancy", function()
  it("survives finalizers that send and receive mid-message", function()
    local inner_ok, nested = true, 0
    local payload = {x = {1, 2, {3}}, s = "inner"}
    local mt = {__gc = function()
      if debug.traceback():find("deserialize") then nested = nested + 1 end
      local ok, r = pcall(rt, payload)
      inner_ok = inner_ok and ok and r.s == "inner" and r.x[3][1] == 3
    end}
    local big = {}
    for i = 1, 500 do big[i] = {i, tostring(i), {k = i}} end
    local m = ser(big)
    collectgarbage("incremental", 10, 400) -- collect all the time
    collectgarbage() -- from a clean heap, whatever ran before in this process
    local rounds = 0
    repeat -- until a finalizer has run inside a deserialize (a larger heap takes more)
      rounds = rounds + 1
      for _ = 1, 200 do setmetatable({}, mt) end
      local r = des(m)
      assert.are.equal(500, #r)
      assert.are.equal("499", r[499][2])
      assert.are.equal(m, ser(r))
    until (rounds >= 5 and nested > 0) or rounds >= 200
    collectgarbage("incremental", 200, 100)
    collectgarbage()
    assert.is_true(nested > 0)
    assert.is_true(inner_ok)
  end)
end)

describe("lmp codec", function()
  it("leaks no globals", function()
    assert.are.same({}, support.new_globals())
  end)
end)

local support = dofile("tests/support.lua")
local lmp = require "lmp"

local segment, exists, in_processes = support.segment, support.shm_exists, support.in_processes

local types = {
  int8 = "b", uint8 = "B", int16 = "h", uint16 = "H", int32 = "i", uint32 = "I",
  int64 = "q", uint64 = "Q", float = "f", double = "d",
}

describe("lmp.Value", function()
  it("has every type name and Python typecode", function()
    for name, code in pairs(types) do
      for _, t in ipairs({name, code}) do
        local v = lmp.Value(t)
        assert.are.equal(name, v.type)
        assert.are.equal(code, v.typecode)
        if name == "float" or name == "double" then
          assert.are.equal("float", math.type(v.value))
        else
          assert.are.equal("integer", math.type(v.value))
        end
        assert.are.equal(0, v.value)
      end
    end
    assert.are.equal("int64", lmp.Value("l").type)
    assert.are.equal("uint64", lmp.Value("L").type)
  end)

  it("reads and writes value, range-checked", function()
    local v = lmp.Value("int16", -7)
    assert.are.equal(-7, v.value)
    v.value = 32767
    assert.are.equal(32767, v.value)
    v.value = 2.0 -- an integer value, as Lua sees it
    assert.are.equal(2, v.value)
    assert.are.equal("integer", math.type(v.value))
    local f = lmp.Value("float", 0.5)
    f.value = 3
    assert.are.equal(3.0, f.value)
    assert.are.equal("float", math.type(f.value))
    assert.has_error(function() v.value = 32768 end,
      "bad argument #2 to 'newindex' (32768 out of range for int16)")
    assert.has_error(function() lmp.Value("uint8").value = 300 end,
      "bad argument #2 to 'newindex' (300 out of range for uint8)")
    assert.has_error(function() lmp.Value("uint8").value = -1 end,
      "bad argument #2 to 'newindex' (-1 out of range for uint8)")
    assert.has_error(function() v.value = 1.5 end,
      "bad argument #2 to 'newindex' (number has no integer representation)")
    assert.has_error(function() v.value = "x" end,
      "bad argument #2 to 'newindex' (number expected, got string)")
    assert.has_error(function() f.value = {} end,
      "bad argument #2 to 'newindex' (number expected, got table)")
    assert.has_error(function() v.other = 1 end,
      "bad argument #1 to 'newindex' (lmp.Value has no field 'other' to set)")
    assert.is_nil(v.other)
  end)

  it("keeps uint64 past math.maxinteger as floats", function()
    local u = lmp.Value("uint64", math.maxinteger)
    assert.are.equal(math.maxinteger, u.value)
    u.value = 2^63
    assert.are.equal(2^63, u.value)
    assert.are.equal("float", math.type(u.value))
    u.value = 0
    assert.are.equal(2^64 - 1, u:add(-1)) -- wraps, as C does
    assert.has_error(function() u.value = -1 end,
      "bad argument #2 to 'newindex' (-1 out of range for uint64)")
    assert.has_error(function() u.value = 2^64 end,
      "bad argument #2 to 'newindex' (number has no integer representation)")
  end)

  it("add is atomic arithmetic returning the new value", function()
    local v = lmp.Value("int64", 10)
    assert.are.equal(15, v:add(5))
    assert.are.equal(12, v:add(-3))
    assert.are.equal(12, v.value)
    local b = lmp.Value("int8", 127)
    assert.are.equal(-128, b:add(1)) -- wraps like Lua's own integers
    local d = lmp.Value("double", 1)
    assert.are.equal(1.5, d:add(0.5))
    assert.has_error(function() v:add("x") end,
      "bad argument #1 to 'add' (number expected, got string)")
    assert.has_error(function() v:add(0.5) end,
      "bad argument #1 to 'add' (number has no integer representation)")
  end)

  it("methods refuse a handle of another class, or another userdata", function()
    local v, a = lmp.Value("int64", 0), lmp.Array("int64", 2)
    local l = v:get_lock()
    local cases = {
      {function() v.add(a, 1) end, "bad argument #1 to 'add' (lmp.Value expected, got lmp.Array)"},
      {function() v.add(l, 1) end, "bad argument #1 to 'add' (lmp.Value expected, got lmp.ValueLock)"},
      {function() v.add(lmp.Lock(), 1) end, "bad argument #1 to 'add' (lmp.Value expected, got lmp.Lock)"},
      {function() v.add(io.stdout, 1) end, "bad argument #1 to 'add' (lmp.Value expected, got FILE*)"},
      {function() a.add(v, 1, 1) end, "bad argument #1 to 'add' (lmp.Array expected, got lmp.Value)"},
      {function() l.acquire(v) end, "bad argument #1 to 'acquire' (lmp.ValueLock expected, got lmp.Value)"},
      {function() l.release(lmp.Lock()) end,
        "bad argument #1 to 'release' (lmp.ValueLock expected, got lmp.Lock)"},
    }
    for _, case in ipairs(cases) do
      assert.has_error(case[1], case[2])
    end
    assert.are.equal(0, v.value)
  end)

  it("rejects bad constructor arguments", function()
    assert.has_error(function() lmp.Value() end,
      "bad argument #1 to 'Value' (string expected, got no value)")
    assert.has_error(function() lmp.Value("int33") end,
      "bad argument #1 to 'Value' (unknown type 'int33')")
    assert.has_error(function() lmp.Value("uint8", 256) end,
      "bad argument #2 to 'Value' (256 out of range for uint8)")
    assert.has_error(function() lmp.Value("i", 1.5) end,
      "bad argument #2 to 'Value' (number has no integer representation)")
    assert.has_error(function() lmp.Value("d", "x") end,
      "bad argument #2 to 'Value' (number expected, got string)")
    assert.has_error(function() lmp.Value{type = "i", vaule = 1} end,
      "bad argument #1 to 'Value' (unknown option 'vaule')")
    assert.has_error(function() lmp.Value{value = 1} end,
      "bad argument #1 to 'Value' (field 'type' must be a type name)")
    assert.has_error(function() lmp.Value{type = "B", value = 999} end,
      "bad argument #1 to 'Value' (field 'value': 999 out of range for uint8)")
    assert.has_error(function() lmp.Value{type = "B", lock = "yes"} end,
      "bad argument #1 to 'Value' (field 'lock' must be a boolean)")
    assert.has_error(function() lmp.RawValue{type = "B", lock = true} end,
      "bad argument #1 to 'RawValue' (a RawValue has no lock)")
  end)

  it("takes an options table", function()
    local v = lmp.Value{type = "uint32", value = 9}
    assert.are.equal(9, v.value)
    assert.is_function(v.get_lock)
    local r = lmp.Value{type = "uint32", lock = false}
    assert.is_nil(r.get_lock)
    assert.matches("^lmp.RawValue%(uint32, ", tostring(r))
  end)

  it("RawValue has no lock, as in Python", function()
    local r = lmp.RawValue("d", 2.5)
    assert.are.equal(2.5, r.value)
    assert.are.equal(3.5, r:add(1))
    assert.is_nil(r.get_lock)
    assert.has_error(function() r:get_lock() end)
    assert.matches("^lmp.RawValue%(double, /lmp", tostring(r))
    assert.matches("^lmp.Value%(int32, /lmp", tostring(lmp.Value("i")))
  end)

  it("close releases the handle; using it afterwards raises", function()
    local v = lmp.Value("i", 1)
    v:close()
    v:close()
    assert.has_error(function() return v.value end, "attempt to use a closed lmp.Value")
    assert.are.equal("lmp.Value (closed)", tostring(v))
    local w
    do
      local v2 <close> = lmp.Value("i", 2)
      w = v2
    end
    assert.has_error(function() w:add(1) end, "attempt to use a closed lmp.Value")
  end)

  it("a closed Value or Array still gives its methods, which raise when called", function()
    for _, c in ipairs{{lmp.Value("i"), "lmp.Value"}, {lmp.Array("i", 2), "lmp.Array"}} do
      local obj, name = c[1], c[2]
      obj:close()
      assert.are.equal("function", type(obj.get_lock))
      assert.are.same({false, "attempt to use a closed " .. name}, {pcall(obj.get_lock, obj)})
      assert.has_error(function() return obj.type end, "attempt to use a closed " .. name)
    end
  end)
end)

describe("the lock of get_lock()", function()
  it("acquires, releases, nests like Python's RLock", function()
    local v = lmp.Value("i")
    local l = v:get_lock()
    assert.matches("^lmp.ValueLock%(unlocked", tostring(l))
    assert.is_false(l:locked())
    assert.is_true(l:acquire())
    assert.is_true(l:locked())
    assert.is_true(l:acquire(0)) -- again: it is recursive
    l:release()
    assert.is_true(v:get_lock():locked()) -- the same lock through another handle
    l:release()
    assert.is_false(l:locked())
    assert.has_error(function() l:release() end, "cannot release un-acquired lock")
    assert.is_true(l:acquire(false))
    l:release()
  end)

  it("with runs under the lock, returns results and releases on error", function()
    local v = lmp.Value("i")
    local l = v:get_lock()
    local a, b = l:with(function(x, y)
      assert.is_true(l:locked())
      return x + y, "two"
    end, 1, 2)
    assert.are.equal(3, a)
    assert.are.equal("two", b)
    assert.is_false(l:locked())
    local ok, err = pcall(l.with, l, function() error({code = 7}) end)
    assert.is_false(ok)
    assert.are.equal(7, err.code)
    assert.is_false(l:locked())
    assert.has_error(function() l:with() end, "bad argument #1 to 'with' (function expected, got no value)")
  end)

  it("as a <close> variable gives back the scope's hold", function()
    local l = lmp.Array("i", 3):get_lock()
    do
      l:acquire()
      local _ <close> = l
      assert.is_true(l:locked())
    end
    assert.is_false(l:locked())
  end)

  it("times out against another process, then is free", function()
    local v = lmp.Value("i")
    local l = v:get_lock()
    local ready, go = lmp.Queue(), lmp.Queue()
    local p = lmp.Process(function()
      l:acquire()
      ready:put(true)
      go:get(30)
      l:release()
    end)
    p:start()
    ready:get(30)
    assert.is_true(l:locked())
    assert.is_false(l:acquire(0))
    assert.is_false(l:acquire(false))
    assert.has_error(function() l:release() end, "cannot release un-acquired lock")
    go:put(true)
    assert.is_true(l:acquire(30))
    l:release()
    assert.is_true(p:join(30))
  end)

  it("reports owner_died after its holder is killed", function()
    local v = lmp.Value("i")
    local l = v:get_lock()
    local ready = lmp.Queue()
    local p = lmp.Process(function()
      l:acquire()
      ready:put(true)
      lmp.sleep(60)
    end)
    p:start()
    ready:get(30)
    p:kill()
    p:join(30)
    local ok, why = l:acquire(30)
    assert.is_true(ok)
    assert.are.equal("owner_died", why)
    l:release()
    assert.are.same({true}, {l:acquire(0)})
    l:release()
  end)

  it("reports owner_died when a child ends while holding it", function()
    local v = lmp.Value("i")
    local p = lmp.Process(function() v:get_lock():acquire() end)
    p:start()
    assert.is_true(p:join(30))
    assert.are.equal(0, p.exitcode)
    local ok, why = v:get_lock():acquire(30)
    assert.is_true(ok)
    assert.are.equal("owner_died", why)
    v:get_lock():release()
  end)

  it("rejects bad arguments", function()
    local l = lmp.Value("i"):get_lock()
    assert.has_error(function() l:acquire("soon") end,
      "bad argument #1 to 'acquire' (number expected, got string)")
    assert.has_error(function() l:acquire(-1) end,
      "bad argument #1 to 'acquire' (timeout must be a non-negative number)")
    assert.has_error(function() l:acquire(false, 1) end,
      "bad argument #2 to 'acquire' (a timeout makes no sense for a non-blocking acquire)")
  end)
end)

describe("lmp.Array", function()
  it("is zero-filled, 1-based, with #, type and typecode", function()
    local a = lmp.Array("int32", 5)
    assert.are.equal(5, #a)
    assert.are.equal("int32", a.type)
    assert.are.equal("i", a.typecode)
    for i = 1, 5 do assert.are.equal(0, a[i]) end
    a[1], a[5] = 10, -20
    assert.are.equal(10, a[1])
    assert.are.equal(-20, a[5])
    assert.is_nil(a[6]) -- the end, as for a table
    assert.is_nil(a.nothing)
    assert.matches("^lmp.Array%(int32, 5, /lmp", tostring(a))
  end)

  it("is made from a table, and ipairs walks it", function()
    local a = lmp.Array("d", {1, 2.5, 3})
    local seen = {}
    for i, x in ipairs(a) do seen[i] = x end
    assert.are.same({1.0, 2.5, 3.0}, seen)
    assert.are.same({1.0, 2.5, 3.0}, a:totable())
    local e = lmp.Array("i", {})
    assert.are.equal(0, #e)
    assert.is_nil(e[1])
    assert.are.same({}, e:totable())
  end)

  it("totable takes a span", function()
    local a = lmp.Array("int8", {1, 2, 3, 4, 5})
    assert.are.same({2, 3, 4}, a:totable(2, 4))
    assert.are.same({4, 5}, a:totable(4))
    assert.are.same({}, a:totable(3, 2))
    assert.are.same({}, a:totable(6))
    assert.has_error(function() a:totable(0) end,
      "bad argument #1 to 'totable' (index 0 out of range 1..5)")
    assert.has_error(function() a:totable(1, 6) end,
      "bad argument #2 to 'totable' (index 6 out of range 0..5)")
  end)

  it("fill and add", function()
    local a = lmp.Array("uint16", 4)
    a:fill(7)
    assert.are.same({7, 7, 7, 7}, a:totable())
    assert.are.equal(10, a:add(2, 3))
    assert.are.same({7, 10, 7, 7}, a:totable())
    assert.has_error(function() a:fill("x") end,
      "bad argument #1 to 'fill' (number expected, got string)")
    assert.has_error(function() a:fill(70000) end,
      "bad argument #1 to 'fill' (70000 out of range for uint16)")
    assert.has_error(function() a:add(5, 1) end,
      "bad argument #1 to 'add' (index 5 out of range 1..4)")
    assert.has_error(function() a:add(1, "x") end,
      "bad argument #2 to 'add' (number expected, got string)")
  end)

  it("checks indexes and values", function()
    local a = lmp.Array("int32", 10)
    assert.has_error(function() return a[0] end,
      "bad argument #1 to 'index' (index 0 out of range 1..10)")
    assert.has_error(function() return a[12] end,
      "bad argument #1 to 'index' (index 12 out of range 1..10)")
    assert.has_error(function() return a[-1] end,
      "bad argument #1 to 'index' (index -1 out of range 1..10)")
    assert.has_error(function() return a[1.5] end,
      "bad argument #1 to 'index' (number has no integer representation)")
    assert.has_error(function() return a[true] end,
      "bad argument #1 to 'index' (number expected, got boolean)")
    assert.has_error(function() a[0] = 1 end,
      "bad argument #1 to 'newindex' (index 0 out of range 1..10)")
    assert.has_error(function() a[11] = 1 end,
      "bad argument #1 to 'newindex' (index 11 out of range 1..10)")
    assert.has_error(function() a[1.5] = 1 end,
      "bad argument #1 to 'newindex' (number has no integer representation)")
    assert.has_error(function() a.x = 1 end,
      "bad argument #1 to 'newindex' (lmp.Array has no field 'x' to set)")
    assert.has_error(function() a[1] = 2^31 end,
      "bad argument #2 to 'newindex' (2147483648 out of range for int32)")
    assert.has_error(function() a[1] = 0.5 end,
      "bad argument #2 to 'newindex' (number has no integer representation)")
    assert.has_error(function() a[1] = "x" end,
      "bad argument #2 to 'newindex' (number expected, got string)")
    assert.has_error(function() lmp.Array("uint8", 1)[1] = 300 end,
      "bad argument #2 to 'newindex' (300 out of range for uint8)")
    a[2] = 3.0
    assert.are.equal(3, a[2])
  end)

  it("rejects bad constructor arguments", function()
    assert.has_error(function() lmp.Array("int32", -1) end,
      "bad argument #2 to 'Array' (size must not be negative)")
    assert.has_error(function() lmp.Array("int32", "x") end,
      "bad argument #2 to 'Array' (number or table expected, got string)")
    assert.has_error(function() lmp.Array("int32", 1.5) end,
      "bad argument #2 to 'Array' (number has no integer representation)")
    assert.has_error(function() lmp.Array("int8", {1, 300}) end,
      "bad argument #2 to 'Array' (item 2: 300 out of range for int8)")
    assert.has_error(function() lmp.Array("x", 1) end,
      "bad argument #1 to 'Array' (unknown type 'x')")
    assert.has_error(function() lmp.Array{type = "i"} end,
      "bad argument #1 to 'Array' (give one of the fields 'size' and 'values')")
    assert.has_error(function() lmp.Array{type = "i", size = 1, values = {}} end,
      "bad argument #1 to 'Array' (give one of the fields 'size' and 'values')")
    assert.has_error(function() lmp.Array{type = "i", sise = 1} end,
      "bad argument #1 to 'Array' (unknown option 'sise')")
    assert.has_error(function() lmp.Array{type = "i", values = {"a"}} end,
      "bad argument #1 to 'Array' (item 1: number expected, got string)")
  end)

  it("takes an options table", function()
    local a = lmp.Array{type = "double", size = 3}
    assert.are.equal(3, #a)
    local b = lmp.Array{type = "i", values = {4, 5}, lock = false}
    assert.are.same({4, 5}, b:totable())
    assert.is_nil(b.get_lock)
  end)

  it("RawArray has no lock", function()
    local r = lmp.RawArray("i", {1, 2})
    assert.is_nil(r.get_lock)
    assert.are.same({1, 2}, r:totable())
    assert.matches("^lmp.RawArray%(int32, 2, ", tostring(r))
  end)

  it("totable and fill hold the lock, which the caller may already hold", function()
    local a = lmp.Array("i", 3)
    local l = a:get_lock()
    l:acquire()
    a:fill(1)
    assert.are.same({1, 1, 1}, a:totable())
    l:release()
    assert.is_false(l:locked())
  end)
end)

describe("shared values under contention", function()
  it("4 processes x 10k add(1) = 40000", function()
    local v = lmp.Value("int64", 0)
    local a = lmp.Array("int32", 4)
    in_processes(4, function(w)
      for _ = 1, 10000 do
        v:add(1)
        a:add(w, 1)
      end
    end)
    assert.are.equal(40000, v.value)
    assert.are.same({10000, 10000, 10000, 10000}, a:totable())
  end)

  it("4 processes x 10k increments under get_lock = 40000", function()
    local v = lmp.Value("i", 0)
    in_processes(4, function()
      local l = v:get_lock()
      for _ = 1, 10000 do
        l:acquire()
        v.value = v.value + 1
        l:release()
      end
    end)
    assert.are.equal(40000, v.value)
  end)

  it("the same with lock:with", function()
    local v = lmp.Value("d", 0)
    in_processes(4, function()
      local l = v:get_lock()
      local function inc() v.value = v.value + 0.5 end
      for _ = 1, 10000 do l:with(inc) end
    end)
    assert.are.equal(20000.0, v.value)
  end)

  -- Without a lock, read-modify-write from several processes can lose
  -- updates; whether it does in one run depends on scheduling, so only the
  -- bound is certain.
  it("a RawValue without a lock never gains, and may lose, updates", function()
    local v = lmp.RawValue("i", 0)
    in_processes(4, function()
      for _ = 1, 10000 do v.value = v.value + 1 end
    end)
    assert.is_true(v.value <= 40000)
    assert.is_true(v.value >= 10000)
  end)
end)

describe("handles of shared values", function()
  it("pass through a Queue to a running process", function()
    local inbox, outbox = lmp.Queue(), lmp.Queue()
    local p = lmp.Process(function()
      local t = inbox:get(30)
      t.v:add(5)
      t.a[2] = 42
      t.l:acquire()
      outbox:put(t.l:locked())
      t.l:release()
      t.r.value = t.r.value * 2
    end)
    p:start()
    local v, a, r = lmp.Value("i", 1), lmp.Array("int64", 3), lmp.RawValue("f", 1.5)
    inbox:put({v = v, a = a, l = v:get_lock(), r = r})
    assert.is_true(outbox:get(30))
    assert.is_true(p:join(30))
    assert.are.equal(6, v.value)
    assert.are.equal(42, a[2])
    assert.are.equal(3.0, r.value)
    assert.is_false(v:get_lock():locked())
  end)

  it("survive serialize and deserialize", function()
    local a = lmp.Array("i", {1, 2})
    local copy = lmp.deserialize(lmp.serialize(a))
    copy[1] = 9
    assert.are.equal(9, a[1])
    local v = lmp.deserialize(lmp.serialize(lmp.Value("b", -3)))
    assert.are.equal(-3, v.value)
  end)

  it("are freed when the last handle is collected", function()
    local names = {}
    do
      local v, a, r = lmp.Value("i"), lmp.Array("d", 1000), lmp.RawArray("B", 10)
      local l = v:get_lock()
      names = {segment(v), segment(a), segment(r), segment(l)}
      for _, n in ipairs(names) do assert.is_true(exists(n)) end
    end
    collectgarbage(); collectgarbage()
    for _, n in ipairs(names) do assert.is_false(exists(n)) end
  end)

  it("a lock keeps its value alive", function()
    local l, name
    do
      local v = lmp.Value("i", 5)
      name = segment(v)
      l = v:get_lock()
    end
    collectgarbage(); collectgarbage()
    assert.is_true(exists(name))
    l = nil
    collectgarbage(); collectgarbage()
    assert.is_false(exists(name))
  end)
end)

describe("lmp.SharedMemory", function()
  it("creates a zero-filled block and reads and writes it, 1-based", function()
    local m = lmp.SharedMemory{size = 16}
    assert.are.equal(16, m.size)
    assert.matches("^/lmp", m.name)
    assert.are.equal(string.rep("\0", 16), m:read())
    m:write(1, "hello")
    m:write(12, "world")
    assert.are.equal("hello", m:read(1, 5))
    assert.are.equal("world", m:read(12))
    assert.are.equal("", m:read(17))
    assert.are.equal("lo\0", m:read(4, 3))
    assert.are.equal(16, #m:read())
    assert.matches("^lmp.SharedMemory%(/lmp.*, 16%)$", tostring(m))
    local n = lmp.SharedMemory(8)
    assert.are.equal(8, n.size)
  end)

  it("rejects reads and writes outside the block", function()
    local m = lmp.SharedMemory{size = 16}
    assert.has_error(function() m:read(0) end,
      "bad argument #1 to 'read' (offset 0 out of range 1..17)")
    assert.has_error(function() m:read(18) end,
      "bad argument #1 to 'read' (offset 18 out of range 1..17)")
    assert.has_error(function() m:read(10, 8) end,
      "bad argument #2 to 'read' (length 8 past the end (7 bytes from offset 10))")
    assert.has_error(function() m:read(1, -1) end,
      "bad argument #2 to 'read' (length -1 past the end (16 bytes from offset 1))")
    assert.has_error(function() m:write(15, "abc") end,
      "bad argument #2 to 'write' (3 bytes at offset 15 do not fit in 16)")
    assert.has_error(function() m:write(0, "a") end,
      "bad argument #1 to 'write' (offset 0 out of range 1..17)")
    assert.has_error(function() m:write() end,
      "bad argument #1 to 'write' (number expected, got no value)")
    assert.has_error(function() m:write(1, {}) end,
      "bad argument #2 to 'write' (string expected, got table)")
  end)

  it("attaches by the name the user gave, from another process", function()
    local m = lmp.SharedMemory{size = 32, name = "board"}
    assert.are.equal("board", m.name)
    local p = lmp.Process(function()
      local c = assert(lmp.SharedMemory("board"))
      assert(c.size == 32)
      c:write(1, "from the child")
    end)
    p:start()
    assert.is_true(p:join(30))
    assert.are.equal(0, p.exitcode)
    assert.are.equal("from the child", m:read(1, 14))
    local again = lmp.SharedMemory{name = "board"}
    assert.are.equal("from the child", again:read(1, 14))
  end)

  it("attaches an unnamed block by its segment name", function()
    local m = lmp.SharedMemory{size = 4}
    m:write(1, "abcd")
    local c = lmp.SharedMemory(m.name)
    assert.are.equal("abcd", c:read())
  end)

  it("returns nil, reason for a missing name and a taken one", function()
    local v, err = lmp.SharedMemory("no-such-block")
    assert.is_nil(v)
    assert.are.equal("not found", err)
    local m = lmp.SharedMemory{size = 1, name = "taken"}
    v, err = lmp.SharedMemory{size = 1, name = "taken"}
    assert.is_nil(v)
    assert.are.equal("exists", err)
    m:close()
    collectgarbage()
    -- the block is gone with its last handle, and the name with it
    v, err = lmp.SharedMemory("taken")
    assert.is_nil(v)
    assert.are.equal("not found", err)
    assert.is_not_nil(lmp.SharedMemory{size = 1, name = "taken"})
  end)

  it("unlink removes the names; holders keep the memory", function()
    local m = lmp.SharedMemory{size = 8, name = "short-lived"}
    local seg = lmp.SharedMemory("short-lived")
    assert.is_true(m:unlink())
    assert.are.same({nil, "not found"}, {m:unlink()})
    assert.are.same({nil, "not found"}, {lmp.SharedMemory("short-lived")})
    m:write(1, "still")
    assert.are.equal("still", seg:read(1, 5))
    local anon = lmp.SharedMemory(4)
    local name = anon.name
    anon:unlink()
    assert.are.same({nil, "not found"}, {lmp.SharedMemory(name)})
  end)

  it("unlink works after close, in Python's order", function()
    local m = lmp.SharedMemory{size = 8, name = "closed-then-unlinked"}
    local other = lmp.SharedMemory("closed-then-unlinked")
    m:close()
    assert.is_true(m:unlink())
    assert.are.same({nil, "not found"}, {lmp.SharedMemory("closed-then-unlinked")})
    assert.are.same({nil, "not found"}, {m:unlink()})
    other:write(1, "kept") -- a holder keeps the memory
    assert.are.equal("kept", other:read(1, 4))
    -- closing the last handle freed the block, and its names with it
    local lone = lmp.SharedMemory{size = 8, name = "lone"}
    lone:close()
    assert.are.same({nil, "not found"}, {lone:unlink()})
    assert.are.same({nil, "not found"}, {lmp.SharedMemory("lone")})
  end)

  it("close releases the handle", function()
    local m = lmp.SharedMemory(4)
    assert.is_false(m.closed)
    m:close()
    assert.is_true(m.closed)
    m:close()
    assert.has_error(function() m:read() end, "attempt to use a closed lmp.SharedMemory")
    assert.has_error(function() return m.size end, "attempt to use a closed lmp.SharedMemory")
    -- a method is found; calling it raises, which pcall catches
    assert.are.same({false, "attempt to use a closed lmp.SharedMemory"}, {pcall(m.read, m)})
    assert.are.same({false, "attempt to use a closed lmp.SharedMemory"}, {pcall(m.array, m, "int8")})
    do
      local n <close> = lmp.SharedMemory(4)
      m = n
    end
    assert.is_true(m.closed)
  end)

  it("gives typed views that share its bytes", function()
    local m = lmp.SharedMemory{size = 16}
    local a = m:array("int32")
    assert.are.equal(4, #a)
    assert.are.equal("int32", a.type)
    assert.is_nil(a.get_lock)
    a[1] = 0x01020304
    assert.are.equal(string.pack("<i4", 0x01020304), m:read(1, 4))
    local b = m:array("uint8", 5, 4)
    assert.are.equal(4, #b)
    b[1] = 255
    assert.are.equal(string.pack("<I4", 255), m:read(5, 4))
    local d = m:array("double", 9)
    assert.are.equal(1, #d)
    d[1] = 0.25
    assert.are.equal(string.pack("<d", 0.25), m:read(9, 8))
    assert.are.equal(0, #m:array("int64", 17))
    assert.has_error(function() m:array("int32", 2) end,
      "bad argument #2 to 'array' (offset 2 is not aligned for int32 (1 + a multiple of 4))")
    assert.has_error(function() m:array("int32", 1, 5) end,
      "bad argument #3 to 'array' (5 elements of int32 at offset 1 do not fit in 16 bytes)")
    assert.has_error(function() m:array("int32", 18) end,
      "bad argument #2 to 'array' (offset 18 out of range 1..17)")
    assert.has_error(function() m:array("int31") end,
      "bad argument #1 to 'array' (unknown type 'int31')")
    m:close()
    a[2] = 5 -- a view keeps the block mapped
    assert.are.equal(5, a[2])
  end)

  it("passes through a Queue, views included", function()
    local m = lmp.SharedMemory{size = 64}
    local inbox, done = lmp.Queue(), lmp.Queue()
    local p = lmp.Process(function()
      local t = inbox:get(30)
      t.m:write(1, "via queue")
      t.view[2] = 77
      done:put(t.m.size)
    end)
    p:start()
    inbox:put({m = m, view = m:array("int16", 33, 4)})
    assert.are.equal(64, done:get(30))
    assert.is_true(p:join(30))
    assert.are.equal("via queue", m:read(1, 9))
    assert.are.equal(string.pack("<i2", 77), m:read(35, 2))
  end)

  it("rejects bad arguments", function()
    assert.has_error(function() lmp.SharedMemory{size = 0} end,
      "bad argument #1 to 'SharedMemory' (size must be positive)")
    assert.has_error(function() lmp.SharedMemory(-5) end,
      "bad argument #1 to 'SharedMemory' (size must be positive)")
    assert.has_error(function() lmp.SharedMemory{} end,
      "bad argument #1 to 'SharedMemory' (give a size to create, or a name to attach)")
    assert.has_error(function() lmp.SharedMemory{size = 1, nam = "x"} end,
      "bad argument #1 to 'SharedMemory' (unknown option 'nam')")
    assert.has_error(function() lmp.SharedMemory{size = 1.5} end,
      "bad argument #1 to 'SharedMemory' (field 'size' must be an integer)")
    assert.has_error(function() lmp.SharedMemory{size = 1, name = 5} end,
      "bad argument #1 to 'SharedMemory' (field 'name' must be a string)")
    assert.has_error(function() lmp.SharedMemory{size = 1, name = "/abs"} end,
      "bad argument #1 to 'SharedMemory' (name must be 1 to 47 bytes, not starting with '/')")
    assert.has_error(function() lmp.SharedMemory{size = 1, name = string.rep("x", 48)} end,
      "bad argument #1 to 'SharedMemory' (name must be 1 to 47 bytes, not starting with '/')")
    -- a name is a C string: a NUL byte would cut it short and attach another block
    local x = lmp.SharedMemory{size = 1, name = "x"}
    assert.has_error(function() lmp.SharedMemory("x\0anything") end,
      "bad argument #1 to 'SharedMemory' (name contains a NUL byte)")
    assert.has_error(function() lmp.SharedMemory{name = "x\0anything"} end,
      "bad argument #1 to 'SharedMemory' (field 'name' contains a NUL byte)")
    assert.has_error(function() lmp.SharedMemory{size = 1, name = "y\0"} end,
      "bad argument #1 to 'SharedMemory' (field 'name' contains a NUL byte)")
    assert.are.same({nil, "not found"}, {lmp.SharedMemory("y")})
    x:close()
    assert.has_error(function() lmp.SharedMemory(true) end,
      "bad argument #1 to 'SharedMemory' (table, string or number expected, got boolean)")
    local v = lmp.Value("i")
    assert.has_error(function() lmp.SharedMemory("/" .. segment(v)) end,
      "bad argument #1 to 'SharedMemory' ('/" .. segment(v) .. "' is not a SharedMemory block)")
  end)

  it("frees its segment with the last handle", function()
    local name
    do
      local m = lmp.SharedMemory{size = 100}
      local view = m:array("uint8")
      name = m.name:sub(2)
      m:close()
      collectgarbage(); collectgarbage()
      assert.is_true(exists(name)) -- the view holds it
      view[1] = 1
    end
    collectgarbage(); collectgarbage()
    assert.is_false(exists(name))
  end)
end)

describe("after the program", function()
  it("nothing is left in /dev/shm, even when the root is killed", function()
    local out = support.run([[
      local lmp = require "lmp"
      local keep = {
        lmp.Value("i"), lmp.Array("d", 10), lmp.SharedMemory{size = 64, name = "kept"},
        lmp.Dict{x = lmp.List{1}}, lmp.SharedMemory(100),
      }
      for i = 1, 3000 do keep[4][i] = i end -- a grown store too
      local pid = lmp.current_process().pid
      io.write(pid, "\n")
      io.flush()
      os.execute("kill -9 " .. pid)
    ]])
    local pid = out:match("^(%d+)")
    assert.is_not_nil(pid, out)
    local left
    for _ = 1, 100 do -- the watchdog sweeps once it sees the root gone
      left = support.shm_entries("lmp." .. pid .. ".")
      if #left == 0 then break end
      lmp.sleep(0.05)
    end
    assert.are.same({}, left)
  end)
end)

-- Shared memory is reserved when an object is made: what does not fit in
-- /dev/shm goes to memory (memfd), and what fits nowhere fails in the
-- constructor with no_space, never with SIGBUS at first touch.
describe("lmp.Array on a small /dev/shm", function()
  it("refuses an Array larger than memory in its constructor", function()
    local ok, e = pcall(lmp.Array, "double", 2^40)
    assert.is_false(ok)
    assert.is_true(lmp.is_error(e))
    assert.are.equal("no_space", e.kind)
    assert.matches("^Array: cannot reserve 8%.0 TiB of shared memory in /dev/shm", e.message)
  end)

  for _, method in ipairs({"fork", "spawn", "forkserver"}) do
    it("holds 1e6 doubles on a 2 MiB /dev/shm (" .. method .. ")", function()
      local why = support.small_shm_unavailable()
      if why then return pending(why) end
      local out, code = support.run_small_shm("2m", string.format([[
        local lmp = require "lmp"
        lmp.set_start_method(%q)
        local a = lmp.Array("double", 1e6)
        a:fill(1)
        local p = lmp.Process(function(b) for i = 1, #b, 1000 do b[i] = 2 end end, a)
        p:start(); assert(p:join(60))
        local s = 0
        for i = 1, #a do s = s + a[i] end
        print("exitcode", p.exitcode, "sum", s)
      ]], method))
      assert.are.equal(0, code, out)
      assert.matches("exitcode\t0\tsum\t1001000", out)
    end)
  end

  it("fails in its constructor with no_space when memory cannot be used", function()
    local why = support.small_shm_unavailable()
    if why then return pending(why) end
    local out = support.run_small_shm("2m", [[
      local lmp = require "lmp"
      local ok, e = pcall(lmp.Array, "double", 1e6)
      print(ok, e.kind, e.message)
    ]], "LMP_TEST_NO_MEMFD=1")
    assert.matches("false\tno_space\tArray: cannot reserve 7%.6 MiB of shared memory in /dev/shm "
                   .. "%(2%.0 MiB filesystem, [%d.]+ [KM]i?B free%)", out)
  end)
end)

describe("leaked globals", function()
  it("none", function() assert.are.same({}, support.new_globals()) end)
end)

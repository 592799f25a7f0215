local support = dofile("tests/support.lua")
local lmp = require "lmp"

local segment, exists, in_processes = support.segment, support.shm_exists, support.in_processes

-- Segments of this program (the root's prefix), to show nothing is left.
local function program_segments()
  local n = 0
  local prefix = segment(lmp.Dict()):match("^(lmp%.%d+%.%x+)%.")
  collectgarbage(); collectgarbage()
  for _, name in ipairs(support.shm_entries(prefix .. ".")) do
    if not name:match("%.names$") then n = n + 1 end
  end
  return n
end

describe("lmp.Dict", function()
  it("stores copies of values under string, number and boolean keys", function()
    local d = lmp.Dict()
    local t = {1, {x = "y"}}
    d.a = 1
    d[2] = t
    d[true] = false
    d[0.5] = "half"
    assert.are.equal(1, d.a)
    assert.are.same({1, {x = "y"}}, d[2])
    assert.is_false(d[true])
    assert.are.equal("half", d[0.5])
    assert.is_nil(d.missing)
    assert.is_nil(d[false])
    t[1] = "changed here"
    assert.are.equal(1, d[2][1]) -- a copy was stored
    local got = d[2]
    got[1] = "changed there"
    assert.are.equal(1, d[2][1])
    assert.are.equal(4, #d)
    assert.are.equal(4, d:len())
    assert.matches("^lmp.Dict%(/lmp", tostring(d))
  end)

  it("keys as in a Lua table: 1 and 1.0 are one key, nil deletes", function()
    local d = lmp.Dict()
    d[1] = "one"
    assert.are.equal("one", d[1.0])
    d[2.0] = "two"
    assert.are.equal("two", d[2])
    assert.are.equal("integer", math.type(d:keys()[2]))
    d[1] = nil
    assert.is_nil(d[1])
    assert.are.equal(1, #d)
    d.nothing = nil -- deleting a missing key is fine
    assert.are.equal(3, lmp.Dict{a = 1, b = 2, c = 3}:len())
  end)

  it("keeps fractional keys apart from integer ones, as a Lua table does", function()
    local function check(d)
      d[2] = "two"
      d[2.5] = "twohalf"
      d[0.5] = "half"
      d[-0.0] = "zero"
      d[2 ^ 63] = "big"
      assert.are.equal("two", d[2])
      assert.are.equal("twohalf", d[2.5])
      assert.are.equal("half", d[0.5])
      assert.are.equal("zero", d[0]) -- -0.0 is the key 0, as in a table
      assert.are.equal("big", d[2 ^ 63])
      assert.is_nil(d[math.mininteger])
      local t = {}
      for k, v in pairs(d) do t[#t + 1] = math.type(k) .. " " .. k .. "=" .. v end
      assert.are.same({"integer 2=two", "float 2.5=twohalf", "float 0.5=half",
        "integer 0=zero", "float 9.2233720368548e+18=big"}, t)
      assert.are.equal("twohalf", d:pop(2.5))
      assert.are.equal("two", d[2])
      assert.are.equal(1.5, d:incr(0.25, 1.5))
      assert.are.equal(1.5, d[0.25])
      d[0] = nil
      assert.are.equal(4, #d)
      assert.are.equal("half", lmp.Dict(d:totable())[0.5])
    end
    check(lmp.Dict())
    local m <close> = lmp.Manager()
    check(m:dict())
  end)

  it("rejects keys it cannot store", function()
    local d = lmp.Dict()
    assert.has_error(function() d[{}] = 1 end,
      "bad argument #1 to 'newindex' (key must be a string, number or boolean, got table)")
    assert.has_error(function() return d[print] end,
      "bad argument #1 to 'index' (key must be a string, number or boolean, got function)")
    assert.has_error(function() d[0 / 0] = 1 end,
      "bad argument #1 to 'newindex' (key is NaN)")
    assert.has_error(function() d:get({}) end,
      "bad argument #1 to 'get' (key must be a string, number or boolean, got table)")
    assert.has_error(function() d:get() end, "bad argument #1 to 'get' (value expected)")
    local ok, err = pcall(function() d.x = coroutine.create(print) end)
    assert.is_false(ok)
    assert.are.equal("serialize", err.kind)
    assert.are.equal("cannot send value: thread", err.message)
    assert.is_nil(d.x)
  end)

  it("methods win over keys for d.name; d:get reads such a key", function()
    local d = lmp.Dict()
    d.keys = "data"
    assert.is_function(d.keys)
    assert.are.equal("data", d:get("keys"))
    assert.are.same({"keys"}, d:keys())
  end)

  it("get, pop and setdefault", function()
    local d = lmp.Dict{a = 1}
    assert.are.equal(1, d:get("a"))
    assert.are.equal("dflt", d:get("b", "dflt"))
    assert.is_nil(d:get("b"))
    assert.are.equal(1, d:pop("a"))
    assert.is_nil(d:pop("a"))
    assert.are.equal("gone", d:pop("a", "gone"))
    assert.are.equal(0, #d)
    assert.are.equal(5, d:setdefault("n", 5))
    assert.are.equal(5, d:setdefault("n", 6))
    assert.are.equal(5, d.n)
  end)

  it("keys, values, items and totable keep insertion order", function()
    local d = lmp.Dict()
    d.c = 1; d.a = 2; d.b = 3
    d.a = 20 -- replacing keeps the place
    d.c = nil; d.c = 30 -- re-inserted: last
    assert.are.same({"a", "b", "c"}, d:keys())
    assert.are.same({20, 3, 30}, d:values())
    assert.are.same({{"a", 20}, {"b", 3}, {"c", 30}}, d:items())
    assert.are.same({a = 20, b = 3, c = 30}, d:totable())
  end)

  it("pairs iterates a snapshot", function()
    local d = lmp.Dict{x = 1, y = 2, z = 3}
    local seen = {}
    for k, v in pairs(d) do
      seen[k] = v
      d[k .. k] = v -- changing the dict does not disturb the loop
    end
    assert.are.same({x = 1, y = 2, z = 3}, seen)
    assert.are.equal(6, #d)
  end)

  it("update takes a table or a Dict, under one lock", function()
    local d = lmp.Dict{a = 1}
    d:update{b = 2, c = 3}
    d:update(lmp.Dict{a = 10, d = 4})
    assert.are.same({a = 10, b = 2, c = 3, d = 4}, d:totable())
    assert.has_error(function() d:update(5) end,
      "bad argument #1 to 'update' (table or lmp.Dict expected, got number)")
    assert.has_error(function() d:update{[{}] = 1} end,
      "bad argument #1 to 'update' (key must be a string, number or boolean, got table)")
  end)

  it("incr is atomic arithmetic returning the new value", function()
    local d = lmp.Dict()
    assert.are.equal(1, d:incr("n"))
    assert.are.equal(11, d:incr("n", 10))
    assert.are.equal(9, d:incr("n", -2))
    assert.are.equal("integer", math.type(d.n))
    assert.are.equal(9.5, d:incr("n", 0.5))
    assert.are.equal("float", math.type(d.n))
    d.big = math.maxinteger
    assert.are.equal(math.mininteger, d:incr("big")) -- wraps like Lua's integers
    d.s = "text"
    assert.has_error(function() d:incr("s") end,
      "bad argument #1 to 'incr' (the value at this key is not a number)")
    assert.has_error(function() d:incr("n", "x") end,
      "bad argument #2 to 'incr' (number expected, got string)")
    assert.are.equal("text", d.s)
  end)

  it("clear and close", function()
    local d = lmp.Dict{a = 1, b = 2}
    d:clear()
    assert.are.equal(0, #d)
    d.c = 3
    assert.are.same({c = 3}, d:totable())
    d:close()
    d:close()
    assert.has_error(function() return d.c end, "attempt to use a closed lmp.Dict")
    assert.are.equal("lmp.Dict (closed)", tostring(d))
    local e
    do
      local d2 <close> = lmp.Dict()
      e = d2
    end
    assert.has_error(function() e:len() end, "attempt to use a closed lmp.Dict")
  end)

  it("a closed Dict or List still gives its methods, which raise when called", function()
    for _, c in ipairs{{lmp.Dict{a = 1}, "lmp.Dict", "keys"}, {lmp.List{1}, "lmp.List", "append"}} do
      local obj, name, method = c[1], c[2], c[3]
      obj:close()
      assert.are.equal("function", type(obj[method]))
      assert.are.same({false, "attempt to use a closed " .. name}, {pcall(obj[method], obj, 1)})
      assert.are.same({false, "attempt to use a closed " .. name}, {pcall(obj.len, obj)})
      assert.is_true(obj.closed)
    end
  end)

  it("grows past its first store and holds large values", function()
    local d = lmp.Dict()
    for i = 1, 20000 do d["key" .. i] = i end
    local big = string.rep("0123456789", 100000)
    d.big = big
    assert.are.equal(20001, #d)
    for i = 1, 20000, 997 do assert.are.equal(i, d["key" .. i]) end
    assert.are.equal(big, d.big)
    for i = 1, 20000 do d["key" .. i] = nil end
    assert.are.same({"big"}, d:keys())
  end)

  it("4 processes x 10k incr on one key = 40000", function()
    local d = lmp.Dict()
    in_processes(4, function()
      for _ = 1, 10000 do d:incr("hits") end
    end)
    assert.are.equal(40000, d.hits)
  end)

  it("writers in 4 processes lose nothing while the store grows", function()
    local d = lmp.Dict()
    in_processes(4, function(w)
      for i = 1, 3000 do d[w * 100000 + i] = {w, i} end
    end)
    assert.are.equal(12000, #d)
    for w = 1, 4 do
      for i = 1, 3000, 499 do assert.are.same({w, i}, d[w * 100000 + i]) end
    end
  end)

  it("a reader in another process sees every write while the store grows", function()
    local d = lmp.Dict{fixed = "yes"}
    local r = lmp.Process(function()
      local last = 0
      while true do
        assert(d.fixed == "yes")
        local n = #d
        assert(n >= last)
        last = n
        if d.done then break end
      end
    end)
    r:start()
    for i = 1, 20000 do d[i] = i end
    d.done = true
    assert.is_true(r:join(120))
    assert.are.equal(0, r.exitcode)
  end)

  it("passes to a running process through a Queue", function()
    local inbox, outbox = lmp.Queue(), lmp.Queue()
    local p = lmp.Process(function()
      local dd = inbox:get(30)
      dd.from_child = dd.from_parent .. "!"
      outbox:put(#dd)
    end)
    p:start()
    local d = lmp.Dict{from_parent = "hi"}
    inbox:put(d)
    assert.are.equal(2, outbox:get(30))
    assert.is_true(p:join(30))
    assert.are.equal("hi!", d.from_child)
  end)

  it("keeps handles stored in it as handles", function()
    local d = lmp.Dict()
    local q, v = lmp.Queue(), lmp.Value("i", 0)
    d.q = q
    d.v = v
    d.t = {q = q, v = v}
    local inbox = lmp.Queue()
    local p = lmp.Process(function()
      local dd = inbox:get(30)
      dd.v:add(1)
      dd.t.v:add(1)
      dd.q:put("via the dict")
      dd.t.q:put("twice")
    end)
    p:start()
    inbox:put(d)
    assert.are.equal("via the dict", q:get(30))
    assert.are.equal("twice", q:get(30))
    assert.is_true(p:join(30))
    assert.are.equal(2, v.value)
    assert.are.equal(2, d.v.value) -- read again and again
    assert.are.equal(2, d:get("v").value)
  end)

  it("keeps what it holds alive, and lets it go when removed", function()
    local d = lmp.Dict()
    local vname, lname
    do
      local v, l = lmp.Value("i", 7), lmp.List{1}
      vname, lname = segment(v), segment(l)
      d.v = v
      d.nested = {list = l}
    end
    collectgarbage(); collectgarbage()
    assert.is_true(exists(vname))
    assert.is_true(exists(lname))
    assert.are.equal(7, d.v.value)
    assert.are.same({1}, d.nested.list:totable())
    collectgarbage(); collectgarbage()
    assert.is_true(exists(vname))
    d.v = nil
    d.nested = "replaced"
    collectgarbage(); collectgarbage()
    assert.is_false(exists(vname))
    assert.is_false(exists(lname))
  end)

  it("frees its segments, and what it holds, with the last handle", function()
    local before = program_segments()
    do
      local d = lmp.Dict()
      for i = 1, 5000 do d[i] = i end -- a grown store: a second segment
      d.inner = lmp.Dict{v = lmp.Value("d", 1), l = lmp.List{lmp.Array("i", 3)}}
      assert.is_true(program_segments() >= before + 6)
    end
    assert.are.equal(before, program_segments())
  end)

  it("leaves nothing behind writers killed while it grew", function()
    local before = program_segments()
    do
      local d = lmp.Dict()
      for _ = 1, (os.getenv("LMP_STRESS") or "0") ~= "0" and 150 or 10 do
        local p = lmp.Process(function()
          local j = 0
          while true do j = j + 1; d[j] = string.rep("x", 1000) end
        end)
        p:start()
        lmp.sleep(0.02)
        p:kill()
        p:join()
      end
      d:clear()
    end
    assert.is_true(support.eventually(function() return program_segments() == before end, 5),
      table.concat(support.shm_entries(segment(lmp.Dict()):match("^(lmp%.%d+%.%x+%.)")), " "))
  end)
end)

describe("lmp.List", function()
  it("append, insert, extend, pop, totable and #", function()
    local L = lmp.List()
    assert.are.equal(0, #L)
    L:append("a")
    L:append({1, 2})
    L:insert(1, "first")
    L:insert(4, "last")
    L:extend{5, 6}
    assert.are.same({"first", "a", {1, 2}, "last", 5, 6}, L:totable())
    assert.are.equal(6, #L)
    assert.are.equal(6, L:len())
    assert.are.equal(6, L:pop())
    assert.are.equal("first", L:pop(1))
    assert.are.equal("last", L:pop(3))
    assert.are.same({"a", {1, 2}, 5}, L:totable())
    L:clear()
    assert.is_nil(L:pop())
    assert.are.equal(0, #L)
    assert.matches("^lmp.List%(/lmp", tostring(L))
  end)

  it("indexes 1-based; L[#L + 1] reads nil, so ipairs works", function()
    local L = lmp.List{"x", "y", "z"}
    assert.are.equal("x", L[1])
    assert.are.equal("z", L[3])
    assert.is_nil(L[4])
    L[2] = "Y"
    local seen = {}
    for i, v in ipairs(L) do seen[i] = v end
    assert.are.same({"x", "Y", "z"}, seen)
    local ps = {}
    for i, v in pairs(L) do ps[i] = v end
    assert.are.same({"x", "Y", "z"}, ps)
  end)

  it("checks positions", function()
    local L = lmp.List{1, 2, 3}
    assert.has_error(function() return L[0] end,
      "bad argument #1 to 'index' (index 0 out of range 1..3)")
    assert.has_error(function() return L[5] end,
      "bad argument #1 to 'index' (index 5 out of range 1..3)")
    assert.has_error(function() return L[1.5] end,
      "bad argument #1 to 'index' (number has no integer representation)")
    assert.has_error(function() return L[true] end,
      "bad argument #1 to 'index' (number expected, got boolean)")
    assert.has_error(function() L[4] = 4 end,
      "bad argument #1 to 'newindex' (index 4 out of range 1..3)")
    assert.has_error(function() L.x = 4 end,
      "bad argument #1 to 'newindex' (number expected, got string)")
    assert.has_error(function() L:insert(5, "x") end,
      "bad argument #1 to 'insert' (position 5 out of range 1..4)")
    assert.has_error(function() L:insert(0, "x") end,
      "bad argument #1 to 'insert' (position 0 out of range)")
    assert.has_error(function() L:pop(4) end,
      "bad argument #1 to 'pop' (index 4 out of range 1..3)")
    assert.has_error(function() L:append() end,
      "bad argument #1 to 'append' (value expected)")
    assert.has_error(function() L:extend(1) end,
      "bad argument #1 to 'extend' (table expected, got number)")
    assert.has_error(function() lmp.List(1) end,
      "bad argument #1 to 'List' (table or lmp.List expected, got number)")
    assert.are.same({1, 2, 3}, L:totable())
  end)

  it("4 processes append and insert, losing nothing", function()
    local L = lmp.List()
    in_processes(4, function(w)
      for i = 1, 2500 do
        if i % 2 == 0 then L:append(w * 10000 + i) else L:insert(1, w * 10000 + i) end
      end
    end)
    assert.are.equal(10000, #L)
    local seen = {}
    for _, v in ipairs(L:totable()) do
      assert.is_nil(seen[v])
      seen[v] = true
    end
  end)

  it("passes through a Queue and extends from another List", function()
    local L = lmp.List{1}
    local inbox = lmp.Queue()
    local p = lmp.Process(function() inbox:get(30):append("child") end)
    p:start()
    inbox:put(L)
    assert.is_true(p:join(30))
    L:extend(lmp.List{"more"})
    assert.are.same({1, "child", "more"}, L:totable())
  end)
end)

describe("lmp.Namespace", function()
  it("is a Dict with attribute access", function()
    local ns = lmp.Namespace()
    ns.x = 1
    ns.keys = "data, not a method"
    assert.are.equal(1, ns.x)
    assert.are.equal("data, not a method", ns.keys)
    assert.is_nil(ns.missing)
    local seen = {}
    for k, v in pairs(ns) do seen[k] = v end
    assert.are.same({x = 1, keys = "data, not a method"}, seen)
    assert.are.equal("Namespace(x=1, keys=data, not a method)", tostring(ns))
    local p = lmp.Process(function() ns.y = ns.x + 1 end)
    p:start()
    assert.is_true(p:join(30))
    assert.are.equal(2, ns.y)
  end)

  it("has close(): every use afterwards raises, close again does nothing", function()
    local ns = lmp.Namespace()
    ns.x = 1
    ns:close()
    ns:close()
    assert.has_error(function() return ns.x end, "attempt to use a closed lmp.Namespace")
    assert.has_error(function() ns.x = 2 end, "attempt to use a closed lmp.Namespace")
    local kept
    do
      local n2 <close> = lmp.Namespace()
      kept = n2
    end
    assert.has_error(function() return kept.y end, "attempt to use a closed lmp.Namespace")
  end)
end)

describe("lmp.Manager", function()
  it("makes shared objects with Python's names", function()
    local m = lmp.Manager()
    local d, L, ns = m:dict{a = 1}, m:list{1, 2}, m:Namespace()
    assert.are.equal(1, d.a)
    assert.are.same({1, 2}, L:totable())
    ns.z = 26
    assert.are.equal(26, ns.z)
    assert.are.equal(3, m:Value("i", 3).value)
    assert.are.same({0, 0}, m:Array("d", 2):totable())
    local q = m:Queue()
    q:put(1)
    assert.are.equal(1, q:get(1))
    assert.is_not_nil(m:JoinableQueue())
    if lmp.Lock then
      local l = m:Lock()
      assert.is_true(l:acquire())
      l:release()
      assert.is_not_nil(m:RLock())
      assert.is_not_nil(m:Semaphore(2))
      assert.is_not_nil(m:BoundedSemaphore(2))
      assert.is_not_nil(m:Event())
      assert.is_not_nil(m:Condition())
      assert.is_not_nil(m:Barrier(2))
    end
    m:shutdown()
  end)

  it("shutdown closes what it made; later calls raise", function()
    local m = lmp.Manager()
    local d, q, ns = m:dict(), m:Queue(), m:Namespace()
    m:shutdown()
    m:shutdown()
    assert.has_error(function() return d.x end, "attempt to use a closed lmp.Dict")
    assert.has_error(function() return ns.x end, "attempt to use a closed lmp.Namespace")
    assert.is_true(q.closed)
    assert.has_error(function() m:dict() end, "attempt to use a closed lmp.Manager")
  end)

  it("close() is shutdown: it closes what it made, sync objects too; every use raises", function()
    local m = lmp.Manager()
    local l, e, ns = m:Lock(), m:Event(), m:Namespace()
    m:close()
    m:close()
    for _, o in ipairs{l, e} do
      assert.matches("closed", tostring(o))
    end
    assert.has_error(function() return ns.x end, "attempt to use a closed lmp.Namespace")
    for _, name in ipairs{"dict", "Lock", "start"} do
      assert.are.equal("attempt to use a closed lmp.Manager", support.raised(m[name], m))
    end
    assert.has_no_error(function() m:shutdown() end)
  end)

  it("works as a <close> variable and checks its options", function()
    local d
    do
      local m <close> = lmp.Manager()
      d = m:dict()
    end
    assert.has_error(function() d:len() end, "attempt to use a closed lmp.Dict")
    assert.has_error(function() lmp.Manager{address = 1} end,
      "bad argument #1 to 'Manager' (unknown option 'address')")
    assert.has_error(function() lmp.Manager(1) end,
      "bad argument #1 to 'Manager' (table expected, got number)")
    local m <close> = lmp.Manager()
    assert.has_error(function() m:Array(5) end, "bad argument #1 to 'Array' (string expected, got number)")
    assert.has_error(function() m:dict(5) end,
      "bad argument #1 to 'dict' (table or lmp.Dict expected, got number)")
  end)

  it("its objects pass to processes like any other", function()
    local m <close> = lmp.Manager()
    local counter = m:dict()
    local ps = {}
    for i = 1, 3 do
      ps[i] = lmp.Process(function() counter:incr("n", i) end)
      ps[i]:start()
    end
    for i = 1, 3 do assert.is_true(ps[i]:join(30)) end
    assert.are.equal(6, counter.n)
  end)
end)

describe("lmp.Dict on a small /dev/shm", function()
  for _, method in ipairs({"fork", "spawn", "forkserver"}) do
    it("grows past a full /dev/shm (" .. method .. ")", function()
      local why = support.small_shm_unavailable()
      if why then return pending(why) end
      local out, code = support.run_small_shm("4m", string.format([[
        local lmp = require "lmp"
        lmp.set_start_method(%q)
        local d = lmp.Dict()
        local p = lmp.Process(function()
          for i = 1, 3000 do d[i] = string.rep("d", 4000) .. i end
        end)
        p:start(); assert(p:join(60))
        local ok = 0
        for i = 1, 3000 do if d[i] == string.rep("d", 4000) .. i then ok = ok + 1 end end
        print("exitcode", p.exitcode, "ok", ok)
      ]], method))
      assert.are.equal(0, code, out)
      assert.matches("exitcode\t0\tok\t3000", out)
    end)
  end
end)

describe("leaked globals", function()
  it("none", function() assert.are.same({}, support.new_globals()) end)
end)

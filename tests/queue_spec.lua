local support = dofile("tests/support.lua")
local lmp = require "lmp"

local STRESS = (os.getenv("LMP_STRESS") or "0") ~= "0"

describe("lmp.Queue", function()
  it("is FIFO and keeps value types", function()
    local q = lmp.Queue()
    for i = 1, 10 do q:put(i) end
    q:put(3.0); q:put("s\0s"); q:put({a = {1, 2}}); q:put(false)
    for i = 1, 10 do assert.are.equal(i, q:get(1)) end
    local f = q:get(1)
    assert.are.equal("float", math.type(f))
    assert.are.equal("s\0s", q:get(1))
    assert.are.same({a = {1, 2}}, q:get(1))
    assert.is_false(q:get(1))
    assert.is_true(q:empty())
  end)

  it("returns nil, reason for the expected outcomes", function()
    local q = lmp.Queue(2)
    assert.are.equal(2, q.maxsize)
    assert.is_true(q:put(1))
    assert.is_true(q:put_nowait(2))
    assert.is_true(q:full())
    assert.are.equal(2, q:qsize())
    local ok, err = q:put_nowait(3)
    assert.is_nil(ok); assert.are.equal("full", err)
    local t0 = lmp.time()
    ok, err = q:put(3, 0.1)
    assert.is_nil(ok); assert.are.equal("full", err)
    assert.is_true(lmp.time() - t0 >= 0.09)
    assert.are.equal(1, q:get_nowait())
    assert.are.equal(2, q:get(0))
    local v
    v, err = q:get_nowait()
    assert.is_nil(v); assert.are.equal("empty", err)
    v, err = q:get(0.05)
    assert.is_nil(v); assert.are.equal("timeout", err)
  end)

  it("returns a stored nil unambiguously", function()
    local q = lmp.Queue()
    q:put(nil)
    local v, err = q:get(1)
    assert.is_nil(v); assert.is_nil(err)
  end)

  it("blocks a producer on a full queue until a consumer makes room", function()
    local q = lmp.Queue(1)
    q:put("first")
    local p = lmp.Process(function() lmp.sleep(0.2); q:get() end)
    p:start()
    local t0 = lmp.time()
    assert.is_true(q:put("second", 10))
    assert.is_true(lmp.time() - t0 >= 0.1)
    p:join()
    assert.are.equal("second", q:get(1))
  end)

  it("close: no more puts, gets drain, then closed", function()
    local q = lmp.Queue()
    q:put(1); q:put(2)
    q:close()
    assert.is_true(q.closed)
    local ok, err = q:put(3)
    assert.is_nil(ok); assert.are.equal("closed", err)
    assert.are.equal(1, q:get())
    assert.are.equal(2, q:get())
    local v
    v, err = q:get()
    assert.is_nil(v); assert.are.equal("closed", err)
  end)

  it("close wakes a consumer blocked in get", function()
    local q = lmp.Queue()
    local r = lmp.Queue()
    local p = lmp.Process(function() r:put({q:get()}) end)
    p:start()
    lmp.sleep(0.1)
    q:close()
    assert.are.same({nil, "closed"}, r:get(5))
    assert.is_true(p:join(5))
  end)

  it("carries a 16 MiB message", function()
    local q = lmp.Queue()
    local big = string.rep("0123456789abcdef", 1024 * 1024)
    local p = lmp.Process(function() q:put(big) end)
    p:start()
    assert.are.equal(big, q:get(10))
    p:join()
  end)

  it("holds more than its ring when unbounded", function()
    local q = lmp.Queue{capacity = 64 * 1024}
    local s = string.rep("x", 1000)
    for i = 1, 500 do q:put({i, s}) end
    for i = 1, 500 do assert.are.equal(i, q:get(1)[1]) end
  end)

  it("loses and duplicates nothing with 2 producers and 2 consumers, 100k messages", function()
    local q, out = lmp.Queue(1000), lmp.Queue()
    local N = 50000
    local procs = {}
    for w = 1, 2 do
      procs[#procs + 1] = lmp.Process(function()
        for i = 1, N do q:put(w * 1000000 + i) end
      end)
      procs[#procs + 1] = lmp.Process(function()
        local seen = {}
        while true do
          local v = q:get()
          if v == false then break end
          seen[#seen + 1] = v
        end
        out:put(seen)
      end)
    end
    for _, p in ipairs(procs) do p:start() end
    procs[1]:join(); procs[3]:join()
    q:put(false); q:put(false)
    local all = {}
    for _ = 1, 2 do
      for _, v in ipairs(out:get(60)) do
        assert.is_nil(all[v], "duplicate " .. v)
        all[v] = true
      end
    end
    for w = 1, 2 do
      for i = 1, N do assert.is_true(all[w * 1000000 + i], "lost " .. (w * 1000000 + i)) end
    end
    for _, p in ipairs(procs) do assert.is_true(p:join(10)) end
  end)

  it("is a handle: it passes through a queue and to a running process", function()
    local control = lmp.Queue()
    local p = lmp.Process(function()
      local reply = control:get(10)
      reply:put("via a queue received after start")
    end)
    p:start()
    local reply = lmp.Queue()
    control:put(reply)
    assert.are.equal("via a queue received after start", reply:get(10))
    assert.is_true(p:join(10))
    local copy = lmp.deserialize(lmp.serialize(reply))
    copy:put(5)
    assert.are.equal(5, reply:get(1))
  end)

  it("rejects bad arguments", function()
    assert.has_error(function() lmp.Queue(-1) end,
      "bad argument #1 to 'Queue' (maxsize must not be negative)")
    assert.has_error(function() lmp.Queue("big") end,
      "bad argument #1 to 'Queue' (number expected, got string)")
    assert.has_error(function() lmp.Queue(1.5) end,
      "bad argument #1 to 'Queue' (number has no integer representation)")
    assert.has_error(function() lmp.Queue{maxsze = 3} end,
      "bad argument #1 to 'Queue' (unknown option 'maxsze')")
    local q = lmp.Queue()
    assert.has_error(function() q:put() end, "bad argument #1 to 'put' (value expected)")
    assert.has_error(function() q:get("soon") end,
      "bad argument #1 to 'get' (number expected, got string)")
    assert.has_error(function() q:put(1, "soon") end,
      "bad argument #2 to 'put' (number expected, got string)")
    assert.has_error(function() q:get(-1) end,
      "bad argument #1 to 'get' (timeout must be a non-negative number)")
    local ok, err = pcall(q.put, q, {handler = coroutine.create(print)})
    assert.is_false(ok)
    assert.are.equal("serialize", err.kind)
    assert.are.equal("cannot send value.handler: thread", err.message)
    assert.is_true(q:empty())
  end)

  it("frees its segment when the last handle is collected", function()
    local prefix
    do
      local q = lmp.Queue()
      prefix = tostring(q):match("%((/?[^)]+)%)"):gsub("^/", "")
      assert.are.equal(1, #support.shm_entries(prefix))
    end
    collectgarbage(); collectgarbage()
    assert.are.equal(0, #support.shm_entries(prefix))
  end)

  it("gives back what a process killed in the middle of a put held", function()
    -- 1 MiB messages spill to segments of their own: a producer killed
    -- while making one, or before releasing it, must not leave it behind.
    local q = lmp.Queue()
    local prefix = tostring(q):match("/(lmp%.%d+%.%x+%.)")
    local function count() return support.live_segments(prefix) end
    local before = count()
    for i = 1, STRESS and 300 or 25 do
      local p = lmp.Process(function()
        local s = string.rep("y", 1 << 20)
        while true do q:put(s) end
      end)
      p:start()
      lmp.sleep(0.005 * (i % 7))
      p:kill()
      p:join()
      while q:get(0) ~= nil do end
    end
    assert.is_true(support.eventually(function() return count() == before end, 5),
      table.concat(support.shm_entries(prefix), " "))
  end)

  it("gives back the handles inside messages nobody read when it goes", function()
    local prefix = tostring(lmp.Queue()):match("/(lmp%.%d+%.%x+%.)")
    local function count() return support.live_segments(prefix) end
    local before = count()
    for i = 1, STRESS and 1000 or 50 do
      local q = lmp.Queue()
      q:put(lmp.Value("i", i))
      if i % 10 == 0 then q:put({string.rep("x", 1 << 20), lmp.Array("d", 4)}) end -- spilled
    end
    assert.are.equal(before, count())
  end)

  it("gives back a dropped queue's unread handles held in a Dict", function()
    local prefix = tostring(lmp.Queue()):match("/(lmp%.%d+%.%x+%.)")
    local function count() return support.live_segments(prefix) end
    local before = count()
    do
      local d = lmp.Dict()
      local q = lmp.Queue()
      q:put(lmp.Value("i", 1))
      d.q = q
    end
    assert.are.equal(before, count())
  end)

  it("works as a <close> variable", function()
    local q2
    do
      local q <close> = lmp.Queue()
      q2 = q
    end
    assert.is_true(q2.closed)
  end)
end)

describe("lmp.JoinableQueue", function()
  it("join waits until every item is marked done", function()
    local jq = lmp.JoinableQueue()
    for i = 1, 5 do jq:put(i) end
    assert.is_false(jq:join(0.05))
    local p = lmp.Process(function()
      for _ = 1, 5 do jq:get(); lmp.sleep(0.01); jq:task_done() end
    end)
    p:start()
    assert.is_true(jq:join(10))
    p:join()
  end)

  it("raises when task_done outnumbers the puts", function()
    local jq = lmp.JoinableQueue()
    jq:put(1)
    jq:get()
    jq:task_done()
    assert.has_error(function() jq:task_done() end,
      "task_done() called more times than there were items put")
  end)
end)

describe("lmp.SimpleQueue", function()
  it("has put, get, empty and close", function()
    local sq = lmp.SimpleQueue()
    assert.is_true(sq:empty())
    sq:put({1})
    assert.is_false(sq:empty())
    assert.are.same({1}, sq:get())
    assert.is_nil(sq.qsize)
    sq:close()
    local v, err = sq:get()
    assert.is_nil(v); assert.are.equal("closed", err)
  end)
end)

-- A container's /dev/shm is small (Docker: 64 MiB).  Segments have their
-- memory reserved when made, and what /dev/shm cannot hold goes to memory
-- (memfd) instead, so nothing dies of SIGBUS and nothing is lost.
describe("lmp.Queue on a small /dev/shm", function()
  for _, method in ipairs({"fork", "spawn", "forkserver"}) do
    local producer = string.format([[
      local lmp = require "lmp"
      lmp.set_start_method(%q)
      local q, errs = lmp.Queue(), lmp.Queue(0, 1024)
      local p = lmp.Process(function()
        for i = 1, 10 do
          local ok, e = pcall(q.put, q, string.rep("y", 3 << 20))
          if not ok then errs:put({i, e.kind, e.message}); return end
        end
      end)
      p:start(); assert(p:join(60))
      local n = 0
      while true do
        local m = q:get(0)
        if m == nil then break end
        assert(#m == 3 << 20 and m == string.rep("y", 3 << 20))
        n = n + 1
      end
      local e = errs:get(0)
      print("exitcode", p.exitcode, "got", n)
      if e then print("failed at", e[1], e[2], e[3]) end
    ]], method)

    it("delivers every large message past a full /dev/shm (" .. method .. ")", function()
      local why = support.small_shm_unavailable()
      if why then return pending(why) end
      local out, code = support.run_small_shm("16m", producer)
      assert.are.equal(0, code, out)
      assert.matches("exitcode\t0\tgot\t10\n", out)
      assert.is_nil(out:find("failed at", 1, true), out)
    end)

    it("fails a put with no_space when memory cannot be used, losing nothing (" .. method .. ")",
       function()
      local why = support.small_shm_unavailable()
      if why then return pending(why) end
      local out, code = support.run_small_shm("16m", producer, "LMP_TEST_NO_MEMFD=1")
      assert.are.equal(0, code, out)
      local got, at = out:match("exitcode\t0\tgot\t(%d+)\nfailed at\t(%d+)\tno_space\t")
      assert.is_not_nil(got, out)
      assert.are.equal(tonumber(at) - 1, tonumber(got)) -- every put accepted was delivered
      assert.matches("put: cannot reserve 3%.0 MiB of shared memory in /dev/shm %(16%.0 MiB filesystem", out)
    end)

    it("grows its ring past a full /dev/shm (" .. method .. ")", function()
      local why = support.small_shm_unavailable()
      if why then return pending(why) end
      local out, code = support.run_small_shm("8m", string.format([[
        local lmp = require "lmp"
        lmp.set_start_method(%q)
        local q = lmp.Queue()
        local p = lmp.Process(function()
          for i = 1, 4000 do q:put(string.rep("r", 4000) .. i) end
        end)
        p:start(); assert(p:join(60))
        for i = 1, 4000 do assert(q:get(0) == string.rep("r", 4000) .. i) end
        print("exitcode", p.exitcode, "empty", q:empty())
      ]], method))
      assert.are.equal(0, code, out)
      assert.matches("exitcode\t0\tempty\ttrue", out)
    end)
  end
end)

describe("leaked globals", function()
  it("none", function() assert.are.same({}, support.new_globals()) end)
end)

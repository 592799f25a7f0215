local support = dofile("tests/support.lua")
local lmp = require "lmp"
local STRESS = (os.getenv("LMP_STRESS") or "0") ~= "0"

describe("lmp.Pipe", function()
  it("carries values both ways on a duplex pipe", function()
    local a, b = lmp.Pipe()
    assert.is_true(a:send({1, "two", 3.0, {nested = true}}))
    local v = b:recv(5)
    assert.are.same({1, "two", 3.0, {nested = true}}, v)
    assert.are.equal("float", math.type(v[3]))
    b:send("back")
    assert.are.equal("back", a:recv(5))
    a:close(); b:close()
  end)

  it("sends nil and false as values", function()
    local a, b = lmp.Pipe()
    a:send(nil); a:send(false)
    local v, err = b:recv(1)
    assert.is_nil(v); assert.is_nil(err)
    assert.is_false(b:recv(1))
  end)

  it("talks to a child process", function()
    local parent, child = lmp.Pipe()
    local p = lmp.Process(function(conn)
      while true do
        local msg = conn:recv()
        if msg == "stop" then break end
        conn:send(msg * 2)
      end
    end, child)
    p:start()
    child:close()
    for i = 1, 100 do
      parent:send(i)
      assert.are.equal(i * 2, parent:recv(5))
    end
    parent:send("stop")
    assert.is_true(p:join(5))
  end)

  it("one-way pipes have a receiving and a sending end", function()
    local r, w = lmp.Pipe(false)
    assert.is_true(r.readable); assert.is_false(r.writable)
    assert.is_false(w.readable); assert.is_true(w.writable)
    w:send(42)
    assert.are.equal(42, r:recv(1))
    assert.has_error(function() r:send(1) end, "calling 'send' on bad self (connection is read-only)")
    assert.has_error(function() w:recv() end, "calling 'recv' on bad self (connection is write-only)")
    local r2, w2 = lmp.Pipe{duplex = false}
    assert.is_false(r2.writable)
    assert.is_true(w2.writable)
  end)

  it("keeps message boundaries for bytes, large and empty", function()
    local a, b = lmp.Pipe()
    local big = string.rep("\0\1\2\255", 2 * 1024 * 1024) -- 8 MiB
    local p = lmp.Process(function() a:send_bytes(""); a:send_bytes(big); a:send_bytes("x\0y", 2, 2) end)
    p:start()
    assert.are.equal("", b:recv_bytes(5))
    assert.are.equal(big, b:recv_bytes(5))
    assert.are.equal("\0y", b:recv_bytes(5))
    p:join()
  end)

  it("poll and recv honour timeouts", function()
    local a, b = lmp.Pipe()
    assert.is_false(b:poll())
    local t0 = lmp.time()
    assert.is_false(b:poll(0.1))
    assert.is_true(lmp.time() - t0 >= 0.09)
    local v, err = b:recv(0.05)
    assert.is_nil(v); assert.are.equal("timeout", err)
    a:send(1)
    assert.is_true(b:poll(1))
    assert.are.equal(1, b:recv())
    assert.is_number(a:fileno())
  end)

  it("reports closed when the other end is gone", function()
    local a, b = lmp.Pipe()
    a:send("last")
    a:close()
    assert.are.equal("last", b:recv(1))
    local v, err = b:recv(1)
    assert.is_nil(v); assert.are.equal("closed", err)
    local ok, err2 = b:send("x")
    assert.is_nil(ok); assert.are.equal("closed", err2)
    assert.is_true(a.closed)
    assert.has_error(function() a:recv() end, "attempt to use a closed lmp.Connection")
  end)

  it("a writer killed mid-message never yields a torn message", function()
    local r, w = lmp.Pipe(false)
    local p = lmp.Process(function()
      r:close()
      local chunk = string.rep("z", 4 * 1024 * 1024)
      while true do w:send_bytes(chunk) end
    end)
    p:start()
    w:close()
    assert.are.equal(4 * 1024 * 1024, #r:recv_bytes(5))
    p:kill()
    p:join()
    while true do
      local s, err = r:recv_bytes(5)
      if not s then assert.are.equal("closed", err) break end
      assert.are.equal(4 * 1024 * 1024, #s)
    end
  end)

  it("passes a pipe end through a Queue to a running process", function()
    local q = lmp.Queue()
    local p = lmp.Process(function()
      local conn = q:get(10)
      conn:send("hello through a handed-over end")
      conn:close()
    end)
    p:start()
    local a, b = lmp.Pipe()
    q:put(b)
    b:close()
    assert.are.equal("hello through a handed-over end", a:recv(10))
    assert.is_true(p:join(10))
  end)

  it("works as a <close> variable and under garbage collection", function()
    local fd
    do
      local a, b = lmp.Pipe()
      local a1 <close> = a
      local b1 <close> = b
      fd = a:fileno()
    end
    local ok, err = pcall(function() return lmp.Pipe() end)
    assert.is_true(ok, err)
    for _ = 1, 2000 do lmp.Pipe() end
    collectgarbage(); collectgarbage()
    assert.is_true(support.fd_count() < 100)
  end)

  it("gives back the handles inside messages nobody read when its ends go", function()
    local prefix = tostring(lmp.Queue()):match("/(lmp%.%d+%.%x+%.)")
    local function count() return support.live_segments(prefix) end
    local before = count()
    for i = 1, STRESS and 1000 or 100 do
      local a, b = lmp.Pipe()
      b:send(lmp.Value("i", i))
      if i % 10 == 0 then a:send({string.rep("x", 300 << 10), lmp.Array("d", 4)}) end -- records
    end
    assert.are.equal(before, count())
  end)

  it("leaves unread messages to another holder of the end", function()
    local a, b = lmp.Pipe()
    local q = lmp.Queue()
    q:put(a) -- a copy of the reading end travels: this one may not drain it
    b:send(lmp.Value("i", 7))
    a:close()
    local other = q:get(5)
    assert.are.equal(7, other:recv(5).value)
    other:close()
    b:close()
  end)

  -- Python's idiom: nothing is closed, the collector reclaims the ends.
  local idiom = [[
    local lmp = require "lmp"
    lmp.set_start_method(arg[1])
    local function f(conn) conn:send("hi") end
    for _ = 1, tonumber(arg[2]) do
      local parent, child = lmp.Pipe()
      local p = lmp.Process(f, child)
      p:start()
      assert(parent:recv() == "hi")
      p:join()
    end
    print("done")
  ]]

  for _, case in ipairs{{"fork", 10000}, {"spawn", 300}, {"forkserver", 1000}} do
    it("runs the unclosed Pipe-to-Process idiom " .. case[2] .. " times under ulimit -n 256 ("
       .. case[1] .. ")", function()
      local out, code = support.run_limited(idiom, "-n 256", case[1] .. " " .. case[2])
      assert.are.equal(0, code, out)
      assert.matches("done", out)
    end)
  end

  it("refuses to send an end past the watchdog's limit, losing none already sent", function()
    local q = lmp.Queue()
    local a, b = lmp.Pipe()
    local sent, err = 0, nil
    while sent <= 4096 do
      local ok, e = pcall(q.put, q, b)
      if not ok then err = e break end
      sent = sent + 1
    end
    assert.is_not_nil(err)
    assert.are.equal("serialize", err.kind)
    assert.matches("too many connections in transit: the watchdog holds at most 4096", err.message, 1, true)
    -- every end sent before is there; taking one makes room
    local first = q:get(5)
    first:send("x")
    assert.are.equal("x", a:recv(5))
    first:close()
    q:put(b)
    for _ = 1, sent do q:get(5):close() end
    assert.is_nil(q:get(0))
  end)

  it("rejects bad arguments", function()
    assert.has_error(function() lmp.Pipe("yes") end,
      "bad argument #1 to 'Pipe' (boolean expected, got string)")
    assert.has_error(function() lmp.Pipe{duplx = true} end,
      "bad argument #1 to 'Pipe' (unknown option 'duplx')")
    local a = lmp.Pipe()
    assert.has_error(function() a:send() end, "bad argument #1 to 'send' (value expected)")
    assert.has_error(function() a:send_bytes(1, 5) end)
    local ok, err = pcall(a.send, a, io.stdout)
    assert.is_false(ok)
    assert.is_true(lmp.is_error(err))
    assert.are.equal("serialize", err.kind)
    assert.are.equal("cannot send value: userdata (FILE*)", err.message)
  end)
end)

local support = dofile("tests/support.lua")
local lmp = require "lmp"

describe("lmp module", function()
  it("has a version", function()
    assert.matches("^lmp %d+%.%d+%.%d+$", lmp._VERSION)
  end)

  it("sleep and time use the monotonic clock", function()
    local t0 = lmp.time()
    assert.are.equal("float", math.type(t0))
    lmp.sleep(0.05)
    local dt = lmp.time() - t0
    assert.is_true(dt >= 0.05 and dt < 1)
    lmp.sleep(0)
    assert.has_error(function() lmp.sleep(-1) end,
      "bad argument #1 to 'sleep' (seconds must be a non-negative number)")
    assert.has_error(function() lmp.sleep("x") end,
      "bad argument #1 to 'sleep' (number expected, got string)")
  end)

  it("sleeps for ever from 9e9 seconds on, math.huge included", function()
    for _, secs in ipairs({math.huge, 9e9}) do
      local p = lmp.Process(function() lmp.sleep(secs) end)
      p:start()
      -- still asleep once its siblings of the same start have long ended
      local q = lmp.Process(function() end)
      q:start()
      q:join()
      assert.is_false(p:join(0.5), tostring(secs))
      assert.is_true(p:is_alive())
      p:kill()
      p:join()
    end
  end)

  it("cpu_count is a positive integer", function()
    assert.are.equal("integer", math.type(lmp.cpu_count()))
    assert.is_true(lmp.cpu_count() >= 1)
  end)
end)

describe("lmp.Error", function()
  it("builds errors and tells them apart", function()
    local e = lmp.Error("task", "it failed", {pid = 12, traceback = "stack traceback:\n\tx.lua:1"})
    assert.is_true(lmp.is_error(e))
    assert.are.equal("task", e.kind)
    assert.are.equal("it failed", e.message)
    assert.are.equal(12, e.pid)
    assert.matches("^lmp.Error%(task, pid 12%): it failed\nremote stack traceback:", tostring(e))
    local e2 = lmp.Error{kind = "timeout", message = "too slow"}
    assert.is_true(lmp.is_error(e2))
    assert.are.equal("lmp.Error(timeout): too slow", tostring(e2))
    assert.is_false(lmp.is_error({kind = "task"}))
    assert.is_false(lmp.is_error("task"))
    assert.is_false(lmp.is_error(nil))
  end)

  it("prints a message and a traceback of any length whole", function()
    local long = ("y"):rep(1010)
    assert.are.equal("lmp.Error(task): " .. long, tostring(lmp.Error("task", long)))
    local msg = ("x"):rep(5000)
    local tb = "stack traceback:\n" .. ("\tdeep.lua:1: in function 'f'\n"):rep(200)
    local e = lmp.Error("task", msg, {pid = 12, traceback = tb})
    assert.are.equal("lmp.Error(task, pid 12): " .. msg .. "\nremote " .. tb, tostring(e))
    assert.are.equal("lmp.Error(task): 2.5", tostring(lmp.Error{kind = "task", message = 2.5}))
  end)

  it("crosses processes as an lmp.Error", function()
    local q = lmp.Queue()
    local p = lmp.Process(function() q:put(lmp.Error("task", "remote", {value = {code = 3}})) end)
    p:start()
    local e = q:get(5)
    p:join()
    assert.is_true(lmp.is_error(e))
    assert.are.same({code = 3}, e.value)
  end)

  it("rejects a kind that is not a string", function()
    assert.has_error(function() lmp.Error(1) end)
    assert.has_error(function() lmp.Error{message = "x"} end,
      "bad argument #1 to 'Error' (field 'kind' must be a string)")
  end)
end)

describe("cleanup", function()
  local function prefix_of(out)
    local root, rnd = out:match("/lmp%.(%d+)%.(%x+)%.")
    assert.is_not_nil(root, out)
    return "lmp." .. root .. "." .. rnd .. "."
  end

  it("leaves nothing in /dev/shm after a normal exit", function()
    local out, code = support.run([[
      local lmp = require "lmp"
      local q, jq = lmp.Queue(), lmp.JoinableQueue()
      q:put(string.rep("x", 8 * 1024 * 1024)) -- a spilled record, never read
      local p = lmp.Process(function() q:put(1) end); p:start(); p:join()
      print(tostring(q))
    ]])
    assert.are.equal(0, code, out)
    assert.are.same({}, support.shm_entries(prefix_of(out)))
  end)

  it("leaves nothing in /dev/shm and no child when the root is killed with SIGKILL", function()
    local out = support.shell(support.lmp_bin .. [[ -e '
      local q = lmp.Queue()
      q:put(string.rep("y", 8 * 1024 * 1024))
      local ps = {}
      for i = 1, 2 do
        ps[i] = lmp.Process(function() local own = lmp.Queue(); q:put(tostring(own)); lmp.sleep(60) end)
        ps[i]:start()
      end
      q:get(); q:get(5); q:get(5)
      io.write(tostring(q), " ", ps[1].pid, " ", ps[2].pid, "\n"); io.flush()
      os.execute("kill -9 " .. lmp.current_process().pid)' ]])
    local prefix = prefix_of(out)
    local p1, p2 = out:match(" (%d+) (%d+)")
    assert.is_not_nil(p1, out)
    local t0 = lmp.time()
    while (#support.shm_entries(prefix) > 0 or support.alive(p1) or support.alive(p2))
        and lmp.time() - t0 < 2 do
      lmp.sleep(0.02)
    end
    assert.are.same({}, support.shm_entries(prefix))
    assert.is_false(support.alive(p1))
    assert.is_false(support.alive(p2))
  end)
end)

describe("leaked globals", function()
  it("none", function() assert.are.same({}, support.new_globals()) end)
end)

-- Observability: pool:stats(), max_memory_per_child, the profiler, and
-- `lmp top` (plain and on a pseudo-terminal).
local support = dofile("tests/support.lua")
local lmp = require "lmp"

local bin = support.lmp_bin

local eventually, range = support.eventually, support.range

-- The error a call raises, as a string.
local function raised(f, ...) return tostring(support.raised(f, ...)) end

local function sum(workers, field)
  local n = 0
  for _, w in ipairs(workers) do n = n + w[field] end
  return n
end

local function busy_worker(pool)
  return eventually(function()
    for _, w in ipairs(pool:stats().workers) do
      if w.state == "busy" then return w end
    end
  end)
end

describe("pool:stats()", function()
  it("has the documented fields, and the done counts add up", function()
    local pool <close> = lmp.Pool(2)
    assert.are.same(range(20), pool:map(function(x) return x end, range(20), 1))
    local s = pool:stats()
    for _, k in ipairs({"queued", "running", "done", "failed", "restarts", "recycled"}) do
      assert.are.equal("integer", math.type(s[k]), k)
    end
    assert.is_number(s.rate)
    assert.is_true(s.rate > 0)
    assert.are.equal(20, s.done)
    assert.are.equal(0, s.failed)
    assert.are.equal(0, s.queued)
    assert.are.equal(0, s.restarts)
    assert.are.equal(2, #s.workers)
    assert.are.equal(20, sum(s.workers, "done"))
    assert.are.equal(0, sum(s.workers, "failed"))
    for _, w in ipairs(s.workers) do
      assert.are.equal("integer", math.type(w.pid))
      assert.is_true(w.state == "idle" or w.state == "starting")
      assert.is_nil(w.task)
      assert.is_number(w.cpu)
      assert.is_true(w.rss > 0)
    end
  end)

  it("counts a task that raised as failed, here and in its worker", function()
    local pool <close> = lmp.Pool(1)
    pool:apply(function() return 1 end)
    assert.is_false(pcall(pool.apply, pool, function() error("no") end))
    local s = pool:stats()
    assert.are.equal(1, s.done)
    assert.are.equal(1, s.failed)
    assert.are.equal(1, s.workers[1].done)
    assert.are.equal(1, s.workers[1].failed)
  end)

  it("shows a busy worker with its task and how long it has run", function()
    local pool <close> = lmp.Pool(2)
    local r = pool:apply_async(function() lmp.sleep(0.5) return "slow" end)
    local w = busy_worker(pool)
    assert.is_truthy(w)
    assert.are.equal("integer", math.type(w.task))
    assert.is_true(w.running_for >= 0)
    assert.is_true(pool:stats().running >= 1)
    assert.are.equal("slow", r:get())
  end)

  it("counts a killed worker as a restart and its task as failed", function()
    local pool <close> = lmp.Pool(1)
    local r = pool:apply_async(function() lmp.sleep(30) end)
    local w = busy_worker(pool)
    os.execute("kill -9 " .. w.pid)
    local ok, err = pcall(r.get, r)
    assert.is_false(ok)
    assert.are.equal("worker_lost", err.kind)
    assert.are.equal(5, pool:apply(function() return 5 end))
    local s = pool:stats()
    assert.are.equal(1, s.restarts)
    assert.are.equal(1, s.failed)
    assert.are_not.equal(w.pid, s.workers[1].pid)
  end)

  it("is executor:stats() too", function()
    local ex <close> = lmp.Executor(2)
    ex:submit(function() return 1 end):result()
    local s = ex:stats()
    assert.are.equal(1, s.done)
    assert.are.equal(2, #s.workers)
    assert.is_number(s.rate)
  end)
end)

describe("max_memory_per_child", function()
  -- Each task keeps 24 MiB alive in a global of its worker: a leak.
  local function leak(x)
    _G.kept = _G.kept or {}
    _G.kept[#_G.kept + 1] = string.rep("x", 24 * 1024 * 1024)
    return x * 2, lmp.current_process().pid
  end

  it("replaces a worker grown past it, and keeps the results", function()
    local pool <close> = lmp.Pool{processes = 1, max_memory_per_child = 16 * 1024 * 1024}
    local seen = {}
    for i = 1, 3 do
      local r = pool:apply(function() local v, pid = leak(i) return {v, pid} end)
      assert.are.equal(2 * i, r[1])
      seen[r[2]] = true
    end
    local n = 0
    for _ in pairs(seen) do n = n + 1 end
    assert.are.equal(3, n)
    assert.are.same({2, 4, 6, 8}, pool:map(function(x) return (leak(x)) end, {1, 2, 3, 4}, 1))
    local s = pool:stats()
    assert.is_true(s.recycled >= 6)
    assert.is_true(s.restarts >= 6)
    assert.are.equal(0, s.failed)
  end)

  it("leaves a worker under it alone", function()
    local pool <close> = lmp.Pool{processes = 1, max_memory_per_child = 1024 * 1024 * 1024}
    local a = pool:apply(function() return lmp.current_process().pid end)
    local b = pool:apply(function() return lmp.current_process().pid end)
    assert.are.equal(a, b)
    assert.are.equal(0, pool:stats().recycled)
  end)

  it("works through the Executor", function()
    local ex <close> = lmp.Executor{max_workers = 1, max_memory_per_child = 16 * 1024 * 1024}
    assert.are.equal(6, ex:submit(function() return (leak(3)) end):result())
    assert.are.equal(8, ex:submit(function() return (leak(4)) end):result())
    assert.is_true(eventually(function() return ex:stats().recycled >= 1 end))
  end)

  it("rejects bad values", function()
    for _, v in ipairs({0, -1, 1.5, "x", true}) do
      assert.matches("bad argument #1 to 'Pool' %(field 'max_memory_per_child' must be a positive integer",
                     raised(lmp.Pool, {processes = 1, max_memory_per_child = v}))
      assert.matches("bad argument #1 to 'Executor' %(field 'max_memory_per_child' must be a positive integer",
                     raised(lmp.Executor, {max_workers = 1, max_memory_per_child = v}))
    end
  end)
end)

describe("the profiler", function()
  local function hot(n)
    local s = 0
    for i = 1, n do s = s + i % 7 end
    return s
  end
  local function cold(n)
    local s = 0
    for i = 1, n do s = s + i end
    return s
  end
  local function work(n) return hot(n) + cold(n // 20) end

  local function by_self(prof)
    local list = prof:top()
    table.sort(list, function(a, b) return a.self > b.self end)
    return list
  end

  it("names the hot function of a map with {profile = true}", function()
    local pool <close> = lmp.Pool(2)
    local r = pool:map(work, {200000, 200000, 200000, 200000}, {profile = true})
    assert.are.equal(4, #r)
    local report = pool:profile_report(5)
    assert.matches("samples", report)
    local first = report:match("\n[^\n]*\n([^\n]*)")
    assert.matches("observe_spec.lua", first)
    local hot_line = report:match("hot %(([^)]*)%)")
    assert.is_truthy(hot_line, report)
    -- the function that ran most is hot, above cold
    assert.is_truthy(report:find("hot (", 1, true) < report:find("cold (", 1, true))
  end)

  it("gives map_async's result its own profile", function()
    local pool <close> = lmp.Pool(1)
    local res = pool:map_async(work, {100000, 100000}, {profile = true})
    assert.are.equal(2, #res:get())
    assert.are.equal("hot", by_self(res.profile)[1].name)
    assert.are.equal(2, res.profile.tasks)
  end)

  it("lmp.profile covers the caller and the pool tasks it runs", function()
    local pool <close> = lmp.Pool(2)
    local prof, a, b = lmp.profile(function(x)
      return pool:map(work, {150000, 150000, 150000}), x
    end, "arg")
    assert.are.equal(3, #a)
    assert.are.equal("arg", b)
    local top = by_self(prof)
    assert.are.equal("hot", top[1].name)
    assert.is_true(top[1].self > 0 and prof.samples >= top[1].self)
    assert.matches("hot %(", tostring(prof))
    assert.is_nil(debug.gethook())
    -- outside lmp.profile, no task is profiled: no hook in the worker
    assert.is_nil(pool:apply(function() return debug.gethook() end))
    -- inside, every task is, the plainest apply_async and apply included
    local function hooked() return debug.gethook() ~= nil end
    local _, async, sync = lmp.profile(function()
      return pool:apply_async(hooked):get(), pool:apply(hooked)
    end)
    assert.is_true(async)
    assert.is_true(sync)
  end)

  it("sees pool tasks after package.loaded is reset, as busted's insulation does", function()
    local pool <close> = lmp.Pool(1)
    pool:map(work, {1}) -- the pool's code is loaded, with the lmp.profile it found
    local saved = package.loaded["lmp.profile"]
    package.loaded["lmp.profile"] = nil -- lmp.profile loads the module again
    local prof = lmp.profile(function() return pool:map(work, {100000, 100000}, 1) end)
    package.loaded["lmp.profile"] = saved
    assert.are.equal(3, prof.tasks) -- the caller and both chunks
  end)

  it("raises the profiled code's error, and stops", function()
    local ok, err = pcall(lmp.profile, function() error("boom") end)
    assert.is_false(ok)
    assert.matches("boom", err)
    assert.is_nil(debug.gethook())
  end)

  it("checks its arguments", function()
    assert.matches("bad argument #1 to 'profile'", raised(lmp.profile, 42))
    local pool <close> = lmp.Pool(1)
    assert.matches("bad argument #1 to 'profile_report'", raised(pool.profile_report, pool, 0))
    assert.matches("0 samples", pool:profile_report())
    assert.matches("unknown option 'profil'", raised(pool.map, pool, work, {1}, {profil = true}))
  end)
end)

-- A program with a pool: one worker busy, the other idle after a map and
-- 50 more tasks that run while the program sleeps (so it never counts them
-- itself).  It writes its pid and its workers' pids to `path`, then waits.
local function start_program(path)
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write([[
    local lmp = require "lmp"
    local pool <close> = lmp.Pool(2)
    local r = pool:apply_async(function() lmp.sleep(60) end)
    pool:map(function(x) return x end, {1, 2, 3, 4})
    for i = 1, 50 do pool:apply_async(function(x) return x end, {i}) end
    local pids = {}
    for _, w in ipairs(pool:stats().workers) do pids[#pids + 1] = w.pid end
    local out = io.open(arg[1], "w")
    out:write(lmp.current_process().pid, " ", table.concat(pids, " "))
    out:close()
    lmp.sleep(60)
  ]])
  f:close()
  os.execute(string.format("%s %s %s >/dev/null 2>&1 & echo $! > %s.pid", bin, script, path, path))
  local content = eventually(function()
    local fh = io.open(path)
    local s = fh and fh:read("a")
    if fh then fh:close() end
    return s and s:match("^%d+ %d+ %d+$") and s
  end)
  assert.is_truthy(content, "the program did not start")
  local nums = {}
  for n in content:gmatch("%d+") do nums[#nums + 1] = tonumber(n) end
  return {pid = nums[1], workers = {nums[2], nums[3]}, script = script, path = path}
end

local function stop_program(p)
  os.execute("kill " .. p.pid .. " 2>/dev/null")
  os.remove(p.script)
  os.remove(p.path)
  os.remove(p.path .. ".pid")
end

describe("lmp top", function()
  local prog
  setup(function() prog = start_program(os.tmpname()) end)
  teardown(function() stop_program(prog) end)

  it("--once PID prints the program's pools and workers", function()
    local out = support.shell(string.format("%s top --once %d; echo ::exit $?", bin, prog.pid))
    assert.matches("::exit 0", out)
    assert.matches("pid " .. prog.pid, out, 1, true)
    assert.matches("1 pool, 2 workers", out, 1, true)
    for _, pid in ipairs(prog.workers) do
      assert.is_truthy(out:find("%s" .. pid .. "%s"), out)
    end
    assert.matches("busy", out)
    assert.matches("idle", out)
    -- the workers' counts, though the program has not looked at its pool
    assert.is_truthy(eventually(function()
      out = support.shell(string.format("%s top --once %d", bin, prog.pid))
      return out:find("done 54, failed 0", 1, true)
    end), out)
  end)

  it("with no PID lists the running programs", function()
    local out = support.shell(bin .. " top")
    assert.matches("PID%s+POOLS%s+WORKERS%s+COMMAND", out)
    assert.is_truthy(out:find("\n%s*" .. prog.pid .. "%s+1%s+2%s"), out)
  end)

  it("fails for a process without pools, and on bad arguments", function()
    local out = support.shell(bin .. " top --once 1; echo ::exit $?")
    assert.matches("no pools", out)
    assert.matches("::exit 1", out)
    assert.matches("::exit 2", support.shell(bin .. " top --bogus; echo ::exit $?"))
    assert.matches("::exit 2", support.shell(bin .. " top --once; echo ::exit $?"))
    assert.matches("usage: lmp top", support.shell(bin .. " top --help"))
  end)

  it("draws a live view on a terminal and quits on q", function()
    local dir = os.tmpname()
    os.remove(dir)
    assert(os.execute("mkdir -p " .. dir .. " && mkfifo " .. dir .. "/in"))
    local cmd = string.format(
      "cd %s && TERM=dumb script -qfec %q /dev/null < %s/in > %s/out 2>&1; echo \"::exit $?\" >> %s/out",
      os.getenv("PWD"), bin .. " top --interval 0.2 " .. prog.pid, dir, dir, dir)
    os.execute("(" .. cmd .. ") &")
    local fifo = assert(io.open(dir .. "/in", "w"))
    local function output()
      local f = io.open(dir .. "/out")
      local s = f and f:read("a") or ""
      if f then f:close() end
      return s
    end
    -- two frames drawn, so it refreshes
    assert.is_truthy(eventually(function()
      local _, n = output():gsub("q: quit", "")
      return n >= 2
    end), output())
    assert.matches("STATE", output())
    assert.is_truthy(output():find(tostring(prog.workers[1]), 1, true))
    fifo:write("q")
    fifo:flush()
    assert.is_truthy(eventually(function() return output():match("::exit 0") end), output())
    assert.matches("\27%[%?25h", output()) -- the cursor is back
    fifo:close()
    os.execute("rm -rf " .. dir)
  end)
end)

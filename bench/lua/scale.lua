-- bench/lua/scale.lua -- how lmp.Pool scales past this machine's cores: the
-- model's inputs, measured, and the model checked against map and
-- apply_async on 1, 2, 4 and 8 workers, in one run.  bench/README.md ("How
-- it scales past two cores") gives the model and reads its output.
--
-- Inputs (Pool(1) unless said; each the best of 5 repeats, every input
-- measured once per repeat):
--   apply_async  the parent's submit loop per task (s) and, once every
--                reply is in the reply ring, its get loop per result (g);
--                the worker's own cost per task (w), timed inside the
--                worker: a first task holds the worker on an Event while
--                the parent fills the ring, and the task after the batch
--                returns the worker's clock.  The same with a 64 KiB string
--                argument gives the cost per byte of an argument on each side.
--   map          the same three (submit = the map_async call, collect =
--                the result's get, worker) at chunk sizes 10, 100, 1000 and
--                10000, each fitted as t(chunk) = a + b * chunksize.
--   ring         lmp.Queue of small integers: put + get in one process (ns
--                per message) and from a child process to the parent
--                (messages/s), what a task or a reply goes through.
--   memory       copying an 8 MiB string (s:sub(2)): GB/s in one process,
--                and the total of two processes copying at once.
--   CPUs         a CPU loop in one process and in one per CPU at once: how
--                many CPUs the run gets on a machine other work shares.
-- Check: map(x*x) over 200k integers with the default chunksize and 20k
-- trivial apply_async tasks, on Pool(1), (2), (4) and (8), against what
-- the model predicts from the inputs on the CPUs the run had.
-- The line's value is the worker count from which map with items of 10 us
-- saturates the parent (the parent's costs weigh in it, hardly the
-- worker's own: higher is better); every input and prediction is a field.  The same as a table on
-- stderr.
-- Usage: lmp bench/lua/scale.lua scale
local lmp = require "lmp"
local b = dofile((arg[0]:match("^(.*/)") or "./") .. "common.lua")

local name = arg[1] or "scale"
local now = b.now
local REPS = 5
-- Noise on a shared machine only ever slows a run down: each figure is the
-- best of REPS repeats (the least time, the highest rate), the closest to
-- what the code costs on a quiet machine.
local function best(xs) return math.min(table.unpack(xs)) end
local function top(xs) return math.max(table.unpack(xs)) end

local function task(x) return x end
local function square(x) return x * x end
local function stamp() return lmp.time() end
local function hold(ev)
  ev:wait()
  return lmp.time()
end
local function length(s) return #s end

-- Wait, outside the pool's calls, until the workers have answered `target`
-- tasks in all (the replies then sit in the reply ring).
local function settled(pool, target)
  while pool:stats().done < target do lmp.sleep(0.0005) end
end

-- === inputs: the parent's and a worker's costs ===

-- One batch on a Pool(1): the worker is held while `submit()` fills the
-- ring, then runs it all; collect() runs once every reply is in.  Returns
-- the submit time, the collect time and the worker's time (seconds).
local function batch(pool, ev, submit, collect, tasks)
  ev:clear()
  local base = pool:stats().done
  local h = pool:apply_async(hold, {ev})
  local t0 = now()
  local job = submit()
  local t1 = now()
  local mark = pool:apply_async(stamp)
  ev:set()
  settled(pool, base + tasks + 2)
  local t2 = now()
  collect(job)
  local t3 = now()
  local tw = mark:get() - h:get()
  return t1 - t0, t3 - t2, tw
end

-- apply_async: per task, the parent's submit and collect and the worker's
-- run, in seconds, for one batch of n tasks whose argument is `arg` (fn
-- runs on it).
local function apply_costs(pool, ev, n, fn, arg)
  local res
  local ts, tg, tw = batch(pool, ev, function()
    res = {}
    for i = 1, n do res[i] = pool:apply_async(fn, {arg or i}) end
    return res
  end, function()
    for i = 1, n do res[i]:get() end
  end, n)
  return ts / n, tg / n, tw / (n + 1)
end

-- map_async at one chunk size: per chunk, the three sides (seconds).
local function map_costs(pool, ev, xs, size)
  local chunks = (#xs + size - 1) // size
  local ts, tg, tw = batch(pool, ev, function()
    return pool:map_async(square, xs, size)
  end, function(job)
    local out = job:get()
    assert(#out == #xs and out[#xs] == #xs * #xs, "map returned a wrong result")
  end, chunks)
  return ts / chunks, tg / chunks, tw / chunks
end

-- Each repeat measures every input once, so that a burst of other work
-- on the machine spoils one repeat of each rather than every repeat of
-- one; the best of each is kept.  fns[k]() returns several figures.
local function interleaved(fns)
  local got = {}
  for _ = 1, b.smoke and 1 or REPS do
    for k, fn in ipairs(fns) do
      local r = table.pack(fn())
      got[k] = got[k] or {}
      for i = 1, r.n do
        got[k][i] = got[k][i] or {}
        table.insert(got[k][i], r[i])
      end
    end
  end
  local out = {}
  for k = 1, #fns do
    out[k] = {}
    for i, xs in ipairs(got[k]) do out[k][i] = best(xs) end
  end
  return out
end

-- t(chunk) = a + b * chunksize from per-chunk times at several sizes,
-- fitted per item (t / size = b + a / size, least squares) so that the
-- small chunks, where a shows, weigh as much as the large ones; neither
-- cost is below zero.
local function fit(sizes, ts)
  local n, sx, sy, sxx, sxy = #sizes, 0, 0, 0, 0
  for i = 1, n do
    local x, y = 1 / sizes[i], ts[i] / sizes[i]
    sx, sy = sx + x, sy + y
    sxx, sxy = sxx + x * x, sxy + x * y
  end
  local a = (n * sxy - sx * sy) / (n * sxx - sx * sx)
  local bi = (sy - a * sx) / n
  if a < 0 then a, bi = 0, sy / n end
  if bi < 0 then a, bi = sxy / sxx, 0 end
  return a, bi
end

local function ints(n)
  local xs = {}
  for i = 1, n do xs[i] = i end
  return xs
end

local in_ = {} -- the inputs, in seconds (rates in units per second)
do
  local ev = lmp.Event()
  local pool <close> = b.pool(name, "workers", 1)
  if not pool then return end
  pool:map(square, {1, 2, 3, 4})
  for i = 1, 20 do pool:apply(task, i) end
  local batch_n = b.size(2000, 20) -- fits the task ring: no backlog
  local big = string.rep("x", 65536)
  -- map: at most 2000 chunks (the ring's share), at most 200k items
  local sizes = b.smoke and {2, 20} or {10, 100, 1000, 10000}
  local fns = {
    function() return apply_costs(pool, ev, batch_n, task) end,
    function() return apply_costs(pool, ev, b.size(200, 5), length, big) end,
  }
  for _, size in ipairs(sizes) do
    local xs = ints(math.min(b.size(200000, 200), 2000 * size))
    fns[#fns + 1] = function() return map_costs(pool, ev, xs, size) end
  end
  local got = interleaved(fns)
  in_.s, in_.g, in_.w = table.unpack(got[1])
  local sb, gb, wb = table.unpack(got[2])
  in_.s_byte, in_.w_byte = (sb - in_.s) / #big, (wb - in_.w) / #big
  in_.g_big = gb
  local ss, gs, ws = {}, {}, {}
  for i = 1, #sizes do
    ss[i], gs[i], ws[i] = table.unpack(got[2 + i])
  end
  in_.as, in_.bs = fit(sizes, ss)
  in_.ag, in_.bg = fit(sizes, gs)
  in_.aw, in_.bw = fit(sizes, ws)
  pool:close()
  pool:join()
end

-- the ring: small messages through lmp.Queue
do
  local n = b.size(100000, 500)
  local q = lmp.Queue()
  local t = {}
  for r = 1, b.smoke and 1 or REPS do
    local t0 = now()
    for i = 1, n do
      q:put(i)
      q:get()
    end
    t[r] = (now() - t0) / n
  end
  in_.q_pair = best(t)
  local rates = b.repeat_(REPS, function()
    local go, q2 = lmp.Queue(), lmp.Queue()
    local p = lmp.Process(function()
      go:get()
      for i = 1, n do q2:put(i) end
    end)
    p:start()
    local t0 = now()
    go:put(true)
    for _ = 1, n do q2:get() end
    local rate = n / (now() - t0)
    p:join()
    return rate
  end)
  in_.ring = top(rates)
end

-- memory: GB/s of a copy, one process and two at once
local function copy_rate(s, reps)
  local t0 = now()
  for _ = 1, reps do
    local c = s:sub(2)
    assert(#c == #s - 1)
  end
  return reps * (#s - 1) / (now() - t0) / 1e9
end

do
  local s = string.rep("y", b.size(8 << 20, 1 << 16))
  local reps = b.size(40, 2)
  copy_rate(s, 2)
  in_.mem1 = top(b.repeat_(REPS, function() return copy_rate(s, reps) end))
  local go, out = lmp.Queue(), lmp.Queue()
  local procs = {}
  for k = 1, 2 do
    procs[k] = lmp.Process(function()
      copy_rate(s, 2)
      go:get()
      out:put(copy_rate(s, reps))
    end)
    procs[k]:start()
  end
  go:put(true); go:put(true)
  in_.mem2 = out:get() + out:get()
  for _, p in ipairs(procs) do p:join() end
end

-- the machine's share: a CPU loop in one process, then in one per CPU at
-- once; the CPUs this run gets are cpu_count * t(one) / t(all), less than
-- cpu_count while other work shares the machine

local function cpu_share()
  local n = b.size(2000000, 10000)
  local t0 = now()
  b.work(n)
  local one = now() - t0
  local go, done = lmp.Queue(), lmp.Queue()
  local procs = {}
  for k = 1, b.ncpu do
    procs[k] = lmp.Process(function()
      go:get()
      done:put(b.work(n))
    end)
    procs[k]:start()
  end
  t0 = now()
  for _ = 1, b.ncpu do go:put(true) end
  for _ = 1, b.ncpu do done:get() end
  local all = now() - t0
  for _, p in ipairs(procs) do p:join() end
  return math.max(1, math.min(b.ncpu, b.ncpu * one / all))
end

-- === the model ===
--
-- One parent feeds n workers on `cores` CPUs.  The parent's work is serial:
-- P = its cost per task (or per chunk and per item) times the count; the
-- workers' W (their own costs plus the task's `x` per item) is shared by n.
-- The run takes the longest of: the parent's P; the workers' W / n plus one
-- task's trip through the pipeline; all the CPU time spread over the cores,
-- (P + W) / cores; and the ring's hand-offs (one per task or chunk).

local M = {}

function M.map(n, items, cores, x)
  local size = math.max(1, (items + 4 * n - 1) // (4 * n)) -- pool.lua's default
  local k = (items + size - 1) // size
  local P = k * (in_.as + in_.ag) + items * (in_.bs + in_.bg)
  local W = k * in_.aw + items * (in_.bw + (x or 0))
  -- the first chunk is sent before any worker starts, the last collected
  -- after they end; and the last chunk sent runs after the parent sent all
  local first = in_.as + in_.ag + size * (in_.bs + in_.bg)
  local last = k * in_.as + items * in_.bs + in_.aw + size * (in_.bw + (x or 0)) + in_.ag + size * in_.bg
  local T = math.max(P, W / n + first, last, (P + W) / cores, k / in_.ring)
  return items / T, T
end

function M.apply(n, tasks, cores, x)
  local P = tasks * (in_.s + in_.g)
  local W = tasks * (in_.w + (x or 0))
  local T = math.max(P, W / n + in_.s + in_.g, (P + W) / cores, tasks / in_.ring)
  return tasks / T, T
end

-- The worker count past which the parent is the bound (per item: the
-- workers' cost over the parent's).
local function saturation(map_size, x)
  x = x or 0
  if map_size then
    local p = in_.as / map_size + in_.bs + in_.ag / map_size + in_.bg
    return (in_.aw / map_size + in_.bw + x) / p
  end
  return (in_.w + x) / (in_.s + in_.g)
end

-- === the check: measured against predicted on this machine ===

local items, tasks = b.size(200000, 1000), b.size(20000, 100)
local xs = ints(items)
local counts = b.smoke and {1, 2} or {1, 2, 4, 8}
local check = {}
for _, n in ipairs(counts) do
  local pool <close> = lmp.Pool(n)
  pool:map(square, {1, 2, 3, 4})
  for i = 1, 4 * n do pool:apply(task, i) end
  local mr, ms, mg, ar, as, ag = {}, {}, {}, {}, {}, {}
  for r = 1, b.smoke and 1 or REPS do
    local t0 = now()
    local job = pool:map_async(square, xs)
    local t1 = now()
    local out = job:get()
    local t2 = now()
    assert(#out == items and out[items] == items * items, "map returned a wrong result")
    mr[r], ms[r], mg[r] = items / (t2 - t0), (t1 - t0) / items, (t2 - t1) / items
    local res = {}
    t0 = now()
    for i = 1, tasks do res[i] = pool:apply_async(task, {i}) end
    t1 = now()
    for i = 1, tasks do assert(res[i]:get() == i) end
    t2 = now()
    ar[r], as[r], ag[r] = tasks / (t2 - t0), (t1 - t0) / tasks, (t2 - t1) / tasks
  end
  pool:close()
  pool:join()
  -- the CPUs this run had at this moment (best of 3)
  local cores = top(b.repeat_(3, cpu_share))
  check[#check + 1] = {n = n, cores = cores, map = top(mr), map_model = M.map(n, items, cores),
                       map_submit = best(ms), map_wait = best(mg), apply = top(ar),
                       apply_model = M.apply(n, tasks, cores), apply_submit = best(as),
                       apply_wait = best(ag)}
end

-- === predictions past this machine: cores enough for every worker ===

local ns = {1, 2, 4, 8, 16, 32, 64}
local pred = {}
local BIG = 1e9 -- cores: enough
for _, n in ipairs(ns) do
  local row = {n = n}
  row.map = M.map(n, items, BIG)
  row.apply = M.apply(n, tasks, BIG)
  for _, x in ipairs({1e-5, 1e-3}) do
    local key = x == 1e-5 and "10us" or "1ms"
    local _, t1 = M.map(1, items, BIG, x)
    local _, tn = M.map(n, items, BIG, x)
    row["map_speedup_" .. key] = t1 / tn
    local _, a1 = M.apply(1, tasks, BIG, x)
    local _, an = M.apply(n, tasks, BIG, x)
    row["apply_speedup_" .. key] = a1 / an
  end
  pred[#pred + 1] = row
end

-- === output ===

local out = {
  cpus = b.ncpu, items = items, tasks = tasks,
  apply_submit_ns = in_.s * 1e9, apply_collect_ns = in_.g * 1e9, apply_worker_ns = in_.w * 1e9,
  apply_submit_ns_per_kib = in_.s_byte * 1024e9, apply_worker_ns_per_kib = in_.w_byte * 1024e9,
  map_submit_chunk_ns = in_.as * 1e9, map_submit_item_ns = in_.bs * 1e9,
  map_collect_chunk_ns = in_.ag * 1e9, map_collect_item_ns = in_.bg * 1e9,
  map_worker_chunk_ns = in_.aw * 1e9, map_worker_item_ns = in_.bw * 1e9,
  queue_pair_ns = in_.q_pair * 1e9, ring_msgs_per_s = in_.ring,
  copy_gbs_1 = in_.mem1, copy_gbs_2 = in_.mem2,
  parent_map_items_per_s = 1 / (in_.bs + in_.bg),
  parent_apply_tasks_per_s = 1 / (in_.s + in_.g),
  map_saturation = saturation(1000), apply_saturation = saturation(nil),
  apply_saturation_10us = saturation(nil, 1e-5), apply_saturation_1ms = saturation(nil, 1e-3),
  map_saturation_10us = saturation(1000, 1e-5), map_saturation_1ms = saturation(1000, 1e-3),
}
-- a 64 KiB argument: what each side costs per task, where a 1 ms task
-- saturates the parent, and the rate at which the parent then moves bytes
local big_p = in_.s + 65536 * in_.s_byte + in_.g_big
local big_w = in_.w + 65536 * in_.w_byte
out.apply_64k_parent_ns, out.apply_64k_worker_ns = big_p * 1e9, big_w * 1e9
out.apply_64k_saturation_1ms = (big_w + 1e-3) / big_p
out.apply_64k_parent_gbs = 65536 / big_p / 1e9
for _, c in ipairs(check) do
  local function put(k, v) out[string.format("check%d_%s", c.n, k)] = v end
  put("cores", c.cores); put("map", c.map); put("map_model", c.map_model); put("map_error", c.map_model / c.map - 1)
  put("apply", c.apply); put("apply_model", c.apply_model); put("apply_error", c.apply_model / c.apply - 1)
  put("map_submit_ns", c.map_submit * 1e9); put("map_wait_ns", c.map_wait * 1e9)
  put("apply_submit_ns", c.apply_submit * 1e9); put("apply_wait_ns", c.apply_wait * 1e9)
end
for _, r in ipairs(pred) do
  for k, v in pairs(r) do
    if k ~= "n" then out[string.format("pred%d_%s", r.n, k)] = v end
  end
end

local function say(...) io.stderr:write(string.format(...)) end
say("scale: inputs (ns)\n")
say("  apply_async  parent: submit %.0f + collect %.0f per task; worker %.0f per task\n",
  in_.s * 1e9, in_.g * 1e9, in_.w * 1e9)
say("               a 64 KiB argument adds %.0f (parent) and %.0f (worker) per KiB\n",
  in_.s_byte * 1024e9, in_.w_byte * 1024e9)
say("  map          parent: submit %.0f/chunk + %.1f/item, collect %.0f/chunk + %.1f/item;\n"
  .. "               worker %.0f/chunk + %.1f/item\n", in_.as * 1e9, in_.bs * 1e9, in_.ag * 1e9,
  in_.bg * 1e9, in_.aw * 1e9, in_.bw * 1e9)
say("  ring         Queue put+get %.0f ns in one process; %.3g msgs/s child -> parent\n",
  in_.q_pair * 1e9, in_.ring)
say("  memory       copy %.2f GB/s one process, %.2f GB/s two at once\n", in_.mem1, in_.mem2)
say("  64 KiB args  parent %.0f, worker %.0f per task: a 1 ms task saturates the parent at %.0f workers,\n"
  .. "               which then moves %.2f GB/s of arguments\n", big_p * 1e9, big_w * 1e9,
  out.apply_64k_saturation_1ms, out.apply_64k_parent_gbs)
say("  parent bound map %.3g items/s, apply_async %.3g tasks/s; saturated from %.2f and %.2f workers\n",
  out.parent_map_items_per_s, out.parent_apply_tasks_per_s, out.map_saturation, out.apply_saturation)
say("check: best of %d, model on the CPUs the run had (of %d), model/measured - 1;\n"
  .. "  the parent's ns per item or task submitting, and waiting for the results\n", REPS, b.ncpu)
say("  workers  CPUs  map items/s     model    err  submit  wait | apply tasks/s     model    err  submit  wait\n")
for _, c in ipairs(check) do
  say("  %7d  %4.2f  %11.4g %9.4g %+5.0f%% %7.0f %5.0f | %13.4g %9.4g %+5.0f%% %7.0f %5.0f\n", c.n, c.cores, c.map,
    c.map_model, (c.map_model / c.map - 1) * 100, c.map_submit * 1e9, c.map_wait * 1e9, c.apply,
    c.apply_model, (c.apply_model / c.apply - 1) * 100, c.apply_submit * 1e9, c.apply_wait * 1e9)
end
say("predicted with a CPU per worker and one for the parent (speedup for 10 us and 1 ms per item):\n")
say("  workers   map items/s   x10us    x1ms | apply tasks/s   x10us    x1ms\n")
for _, r in ipairs(pred) do
  say("  %7d  %12.4g  %6.2f  %6.1f | %13.4g  %6.2f  %6.1f\n", r.n, r.map, r.map_speedup_10us,
    r.map_speedup_1ms, r.apply, r.apply_speedup_10us, r.apply_speedup_1ms)
end

b.emit(name, "workers", {out.map_saturation_10us}, out)

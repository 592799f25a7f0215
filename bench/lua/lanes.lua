-- bench/lua/lanes.lua -- apply_async's reference: the same workload on
-- LuaLanes, the idiomatic way, in plain lua5.4 (no lmp).
--
-- cpu_count worker lanes (lanes.gen), each looping on one linda: receive a
-- task, send back its result.  The parent sends 20k tasks, then receives
-- the 20k results; tasks per second, median of 5 runs, printed as the one
-- JSON line every workload prints, impl "lanes".  bench/run.sh runs it
-- with LUA_PATH/LUA_CPATH pointing at the Lanes it found (BENCH_LANES).
-- Usage: lua5.4 bench/lua/lanes.lua apply_async
local name = arg[1] or "apply_async"
local smoke = (os.getenv("BENCH_SMOKE") or "") ~= "" and os.getenv("BENCH_SMOKE") ~= "0"

local function emit(fields)
  local parts = {}
  for _, kv in ipairs(fields) do
    local k, v = kv[1], kv[2]
    local s
    if type(v) == "table" then
      local xs = {}
      for i = 1, #v do xs[i] = string.format("%.6g", v[i]) end
      s = "[" .. table.concat(xs, ",") .. "]"
    elseif type(v) == "number" then
      s = math.type(v) == "integer" and tostring(v) or string.format("%.6g", v)
    elseif v == nil then
      s = "null"
    else
      s = '"' .. tostring(v):gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
    end
    parts[#parts + 1] = '"' .. k .. '":' .. s
  end
  io.write("{", table.concat(parts, ","), "}\n")
  io.flush()
end

local ok, lanes = pcall(require, "lanes")
if not ok then
  emit{{"name", name}, {"impl", "lanes"}, {"value", nil}, {"unit", "tasks/s"},
       {"note", "LuaLanes not found: set BENCH_LANES=DIR (lanes.lua, lanes_core.so)"}}
  return
end
lanes = lanes.configure()

local function median(xs)
  local s = {table.unpack(xs)}
  table.sort(s)
  local n = #s
  if n % 2 == 1 then return s[(n + 1) // 2] end
  return (s[n // 2] + s[n // 2 + 1]) / 2
end

local function cpu_count()
  local p = io.popen("nproc 2>/dev/null")
  local n = p and tonumber(p:read("l") or "")
  if p then p:close() end
  return n or 1
end

local function task(x) return x end

local linda = lanes.linda()
local worker = lanes.gen("base", function(l)
  while true do
    local _, x = l:receive("task")
    if not x then return end
    l:send("result", task(x))
  end
end)

local ncpu = cpu_count()
local lanes_ = {}
for k = 1, ncpu do lanes_[k] = worker(linda) end

local function run(n)
  local seen, sum = {}, 0
  for i = 1, n do linda:send("task", i) end
  for _ = 1, n do
    local _, v = linda:receive("result")
    seen[v] = true
    sum = sum + v
  end
  assert(sum == n * (n + 1) // 2 and #seen == n, "lanes: a result is missing")
end

run(20) -- workers up and warm
local n = smoke and 100 or 20000
local samples = {}
for r = 1, smoke and 1 or 5 do
  local t0 = lanes.now_secs()
  run(n)
  samples[r] = n / (lanes.now_secs() - t0)
end
for _ = 1, ncpu do linda:send("task", false) end
for k = 1, ncpu do lanes_[k]:join() end

emit{{"name", name}, {"impl", "lanes"}, {"value", median(samples)}, {"unit", "tasks/s"},
     {"samples", samples}, {"tasks", n}, {"workers", ncpu}, {"lanes", lanes.ABOUT.version}}

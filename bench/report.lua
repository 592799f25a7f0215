-- bench/report.lua -- turns the workloads' JSON lines into the table and
-- bench/results.json.
--
--   lmp bench/report.lua LINES OUT.json [key=value ...]
--
-- LINES holds one JSON object per line, as the workloads print them
-- ({"name":..,"impl":"lmp"|"python"|"c","value":..,"unit":..}); several
-- lines of the same name and impl (repeated rounds) are merged: their values'
-- median is the figure and their samples are kept together.  key=value
-- arguments (date, python, kernel, ...) go into the JSON's "run" object.
-- Each row below names a workload, which way is better, and its target;
-- ref names the reference (Python unless said: "c", the raw C ping-pong;
-- "plain", plain interpreter processes; "lanes", LuaLanes; "celery";
-- "cjson", lua-cjson; "floor", the lmp line's own field named by reffield)
-- and refname its workload when that is another one; show, a field of the
-- lines to show and compare instead of their value, in `unit` when the row
-- gives one.  The ratio column is oriented so that > 1 means lmp is better.

local rows = {
  {"apply_rt", "1 apply round trip", "lower", {ratio = 10}},
  {"apply_async", "2 apply_async, 20k tasks", "higher", {ratio = 10}},
  -- and LuaLanes (lanes.gen workers on a linda), measured in the same run
  {"apply_async", "2 apply_async vs LuaLanes", "higher", {ratio = 1.5}, ref = "lanes"},
  {"queue_small", "3 Queue, 100k small msgs", "higher", {ratio = 10}},
  {"queue_1k", "3 Queue, 1 KiB msgs", "higher"},
  {"queue_1m", "3 Queue, 1 MiB msgs", "higher"},
  {"pipe_rt", "4 Pipe round trip", "lower"},
  {"pipe_rt", "4 Pipe round trip vs raw C", "lower", {ratio = 1 / 1.2, text = "lmp <=1.2x C"}, ref = "c"},
  {"map", "5 Pool.map x*x, 200k ints", "higher", {ratio = 3}},
  {"cpu_proc", "6 CPU speedup, Processes", "higher", {lmp_min = 1.9}},
  {"cpu_pool", "6 CPU speedup, Pool", "higher", {lmp_min = 1.9}},
  -- the ceiling: the same loop in plain processes of the same interpreter
  {"cpu_proc", "6 CPU speedup, Processes vs plain", "higher", ref = "plain"},
  {"cpu_pool", "6 CPU speedup, Pool vs plain", "higher", ref = "plain", refname = "cpu_proc"},
  -- the scaling model (bench/README.md): the worker count from which the
  -- parent is the bound for tasks of 10 us and 1 ms, from the costs
  -- measured in the run
  {"scale", "13 Pool workers until the parent saturates, map 10 us", "higher"},
  {"scale", "13 Pool workers until the parent saturates, apply_async 10 us", "higher",
   show = "apply_saturation_10us"},
  {"scale", "13 Pool workers until the parent saturates, apply_async 1 ms", "higher",
   show = "apply_saturation_1ms"},
  {"start_fork", "7 start+join, fork", "lower", {lmp_max = 0.5}},
  {"start_spawn", "7 start+join, spawn", "lower"},
  {"start_forkserver", "7 start+join, forkserver", "lower"},
  {"lock_uncontended", "8 Lock pairs, uncontended", "higher", {ratio = 1.5}},
  -- the same loop on a Lock-shaped object whose methods do nothing
  {"lock_uncontended", "8 Lock pairs vs the Lua call floor", "higher",
   {ratio = 1 / 1.5, text = "lmp >=floor/1.5"}, ref = "floor", reffield = "floor_pairs_s"},
  {"lock_semaphore", "8 Semaphore pairs, uncontended", "higher", {ratio = 1.5}},
  {"lock_event", "8 Event:is_set", "higher", {ratio = 1.5}},
  {"lock_contended", "8 Lock pairs, 2 processes", "higher"},
  {"value_add", "8 Value:add, 1 process", "higher"},
  {"value_add_contended", "8 Value:add, 2 processes", "higher"},
  {"array", "9 Array hand-off, 1 MiB", "lower", show = "median_1m"},
  {"array", "9 Array hand-off, 64 MiB", "lower", {flat = "vs_1m", max = 2}},
  {"codec", "10 codec encode+decode", "higher", {ratio = 1}, by = "per_s"},
  {"codec", "10 codec encode (vs pickle.dumps)", "higher", show = "encode_per_s", unit = "/s"},
  {"codec", "10 codec decode (vs pickle.loads)", "higher", show = "decode_per_s", unit = "/s"},
  -- and lua-cjson, the Lua reference, on the same table in the same run
  {"codec", "10 codec encode+decode (vs lua-cjson)", "higher", by = "per_s", ref = "cjson"},
  {"codec", "10 codec encode (vs cjson.encode)", "higher", show = "encode_per_s", unit = "/s",
   ref = "cjson"},
  {"codec", "10 codec decode (vs cjson.decode)", "higher", show = "decode_per_s", unit = "/s",
   ref = "cjson"},
  -- the broker's "Python" side is RQ on the same redis-server
  {"broker_tput", "11 broker tasks, 2 workers (vs RQ)", "higher",
   {lmp_min = 10040, text = "lmp >=10,040/s"}},
  {"broker_rt", "11 broker round trip (vs RQ)", "lower", {lmp_max = 1000, text = "lmp <=1 ms"}},
  -- and Celery 5, measured in the same run
  {"broker_tput", "11 broker tasks, 2 workers (vs Celery)", "higher", ref = "celery"},
  {"broker_rt", "11 broker round trip (vs Celery)", "lower", ref = "celery"},
  -- network round trips on a task's critical path (lmp only)
  {"broker_rtt", "11 broker round trips per task, 2 ms each way", "lower", {lmp_max = 2, text = "lmp <=2"}},
  -- a Redis Cluster: three queues on three masters against the same on one
  {"broker_cluster", "11 broker, 3 queues on 3 cluster masters (vs 1 master)", "higher", ref = "one"},
  -- lmp against itself: the same program on a small /dev/shm and on this one
  {"shm_64m", "12 1 GiB Queue + 256 MiB Array, 64 MiB /dev/shm (vs normal)", "higher",
   ref = "normal", refname = "shm_normal"},
  {"shm_8m", "12 1 GiB Queue + 256 MiB Array, 8 MiB /dev/shm (vs normal)", "higher",
   ref = "normal", refname = "shm_normal"},
}

-- === a small JSON reader (objects, arrays, strings, numbers, literals) ===

local function decode(s)
  local pos = 1
  local value
  local function ws() pos = s:find("[^ \t\r\n]", pos) or #s + 1 end
  local function fail(what) error(string.format("bad JSON at %d: %s", pos, what), 0) end
  local function str()
    local out = {}
    pos = pos + 1
    while true do
      local c = s:sub(pos, pos)
      if c == "" then fail("unterminated string") end
      if c == '"' then pos = pos + 1; return table.concat(out) end
      if c == "\\" then
        local e = s:sub(pos + 1, pos + 1)
        if e == "u" then
          out[#out + 1] = utf8.char(tonumber(s:sub(pos + 2, pos + 5), 16) or fail("bad \\u"))
          pos = pos + 6
        else
          out[#out + 1] = ({b = "\b", f = "\f", n = "\n", r = "\r", t = "\t"})[e] or e
          pos = pos + 2
        end
      else
        out[#out + 1] = c
        pos = pos + 1
      end
    end
  end
  function value()
    ws()
    local c = s:sub(pos, pos)
    if c == "{" then
      local t = {}
      pos = pos + 1
      ws()
      if s:sub(pos, pos) == "}" then pos = pos + 1; return t end
      repeat
        ws()
        if s:sub(pos, pos) ~= '"' then fail("key expected") end
        local k = str()
        ws()
        if s:sub(pos, pos) ~= ":" then fail("':' expected") end
        pos = pos + 1
        t[k] = value()
        ws()
        c = s:sub(pos, pos)
        pos = pos + 1
      until c ~= ","
      if c ~= "}" then fail("'}' expected") end
      return t
    elseif c == "[" then
      local t = {}
      pos = pos + 1
      ws()
      if s:sub(pos, pos) == "]" then pos = pos + 1; return t end
      repeat
        t[#t + 1] = value()
        ws()
        c = s:sub(pos, pos)
        pos = pos + 1
      until c ~= ","
      if c ~= "]" then fail("']' expected") end
      return t
    elseif c == '"' then
      return str()
    end
    local lit = s:match("^[%w%.%+%-]+", pos) or fail("value expected")
    pos = pos + #lit
    if lit == "true" then return true elseif lit == "false" then return false
    elseif lit == "null" then return nil end
    return tonumber(lit) or fail("bad literal " .. lit)
  end
  local v = value()
  ws()
  if pos <= #s then fail("trailing characters") end
  return v
end

-- === a JSON writer ===

local function encode(v, indent)
  indent = indent or ""
  local t = type(v)
  if t == "nil" then return "null" end
  if t == "boolean" then return tostring(v) end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    return math.type(v) == "integer" and tostring(v) or string.format("%.6g", v)
  end
  if t == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
  end
  local inner = indent .. "  "
  if #v > 0 or next(v) == nil then
    local parts = {}
    for i = 1, #v do parts[i] = encode(v[i], inner) end
    local flat = "[" .. table.concat(parts, ",") .. "]"
    if #flat < 100 then return flat end
    return "[\n" .. inner .. table.concat(parts, ",\n" .. inner) .. "\n" .. indent .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = encode(k) .. ": " .. encode(v[k], inner) end
  return "{\n" .. inner .. table.concat(parts, ",\n" .. inner) .. "\n" .. indent .. "}"
end

-- === figures ===

local function median(xs)
  local s = {}
  for _, x in ipairs(xs) do s[#s + 1] = x end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  return n % 2 == 1 and s[(n + 1) // 2] or (s[n // 2] + s[n // 2 + 1]) / 2
end

-- 3 significant digits with k/M/G for large figures
local function fmt(x)
  if x == nil then return nil end
  local a = math.abs(x)
  for _, u in ipairs({{1e9, 1e9, "G"}, {1e6, 1e6, "M"}, {1e4, 1e3, "k"}}) do
    if a >= u[1] then return string.format("%.3g%s", x / u[2], u[3]) end
  end
  if a >= 100 then return string.format("%.0f", x) end
  return string.format("%.3g", x)
end

local function load_lines(path)
  local by = {}
  local f = assert(io.open(path))
  for line in f:lines() do
    if line:match("^%s*{") then
      local ok, obj = pcall(decode, line)
      if ok and type(obj) == "table" and obj.name and obj.impl then
        local key = obj.name .. "/" .. obj.impl
        local e = by[key] or {name = obj.name, impl = obj.impl, values = {}, samples = {}, fields = {}, lines = {}}
        by[key] = e
        e.unit = e.unit or obj.unit
        e.lines[#e.lines + 1] = obj
        if type(obj.value) == "number" then
          e.values[#e.values + 1] = obj.value
          for _, x in ipairs(type(obj.samples) == "table" and obj.samples or {}) do
            e.samples[#e.samples + 1] = x
          end
          for k, x in pairs(obj) do -- numeric extras (per_s, vs_1m, ...), merged too
            if type(x) == "number" and k ~= "value" then
              e.fields[k] = e.fields[k] or {}
              table.insert(e.fields[k], x)
            end
          end
        else
          e.note = e.note or obj.note or obj.error
          e.failed = e.failed or obj.error ~= nil
        end
      end
    end
  end
  f:close()
  for _, e in pairs(by) do
    e.value = median(e.values)
    for k, xs in pairs(e.fields) do e.fields[k] = median(xs) end
  end
  return by
end

-- ratio oriented so that > 1 means lmp is better
local function ratio(lmp, ref, better, field)
  local function get(e) return e and (field and e.fields[field] or e.value) end
  local a, r = get(lmp), get(ref)
  if not a or not r or a == 0 or r == 0 then return nil end
  return better == "lower" and r / a or a / r
end

local function target_text(tg)
  if not tg then return "-" end
  if tg.text then return tg.text end
  if tg.ratio then return string.format(">=%gx", tg.ratio) end
  if tg.lmp_min then return string.format("lmp >=%gx", tg.lmp_min) end
  if tg.lmp_max then return string.format("lmp <=%g ms", tg.lmp_max) end
  if tg.flat then return string.format("O(1): <=%gx 1 MiB", tg.max) end
  return "?"
end

-- true, false, or nil when a figure is missing
local function met(tg, lmp, r)
  if not tg then return nil end
  local v = lmp and lmp.value
  if tg.ratio then return r and r >= tg.ratio end
  if tg.lmp_min then return v and v >= tg.lmp_min end
  if tg.lmp_max then return v and v <= tg.lmp_max end
  if tg.flat then -- the run's own ratio of the two sizes (one placement)
    local x = lmp and lmp.value and lmp.fields[tg.flat]
    return x and x <= tg.max
  end
end

-- Print the header and the rows as columns: the first left-aligned, the
-- others right-aligned.
local function print_table(head, trs)
  local widths = {}
  for c = 1, #head do
    widths[c] = #head[c]
    for _, tr in ipairs(trs) do widths[c] = math.max(widths[c], utf8.len(tr[c]) or #tr[c]) end
  end
  local function line(cells)
    local parts = {}
    for c = 1, #cells do
      local pad = string.rep(" ", widths[c] - (utf8.len(cells[c]) or #cells[c]))
      parts[c] = c == 1 and cells[c] .. pad or pad .. cells[c]
    end
    return table.concat(parts, "  ")
  end
  print(line(head))
  print((line(head):gsub(".", "-")))
  for _, tr in ipairs(trs) do print(line(tr)) end
end

-- === main ===

local lines_path, out_path = arg[1], arg[2]
if not lines_path or not out_path then
  io.stderr:write("usage: lmp bench/report.lua LINES OUT.json [key=value ...]\n")
  os.exit(2)
end
local runinfo = {}
for i = 3, #arg do
  local k, v = arg[i]:match("^([%w_]+)=(.*)$")
  if k then runinfo[k] = tonumber(v) or v end
end

local by = load_lines(lines_path)

-- A table cell: the figure of one side of a row (its `show` field if the
-- row names one), with a tag after it; "-" for no side, "n/a" or "FAILED"
-- for a side without a figure.
local function cell_of(e, row, tag)
  if not e then return "-" end
  if not e.value then return e.failed and "FAILED" or "n/a" end
  return fmt(row.show and e.fields[row.show] or e.value) .. (tag or "")
end

-- Two builds of lmp (run.sh --against): one row per workload, the new
-- build's figure against the old one's, and whether it kept 0.95 of it.
local function against_table()
  local seen, trs, worse = {}, {}, {}
  local keep = 0.95
  for _, row in ipairs(rows) do
    local name, label, better = row[1], row[2], row[3]
    local new, old = by[name .. "/lmp"], by[name .. "/old"]
    if not seen[name] and (new or old) then
      seen[name] = true
      local r = ratio(new, old, better, row.by or row.show)
      local ok = r and r >= keep
      if not ok then worse[#worse + 1] = name .. (r and "" or " (no figure)") end
      trs[#trs + 1] = {(label:gsub(" %(vs [^)]*%)", "")) .. " [" .. ((new or old).unit or "") .. "]",
        cell_of(new, row), cell_of(old, row), r and string.format("%.2fx", r) or "-", r == nil and "n/a" or ok and "yes" or "NO"}
    end
  end
  return trs, worse, keep
end

if runinfo.against then
  local trs, worse, keep = against_table()
  print_table({"workload [unit]", "new", "old", "new/old", ">=" .. keep}, trs)
  print(#worse == 0 and string.format("every ratio >= %g.  old: %s", keep, runinfo.against)
    or string.format("below %g: %s.  old: %s", keep, table.concat(worse, ", "), runinfo.against))
  os.exit(0)
end

local ref_tags = {c = " (C)", plain = " (plain)", normal = " (normal)", celery = " (Celery)",
  cjson = " (cjson)", lanes = " (Lanes)", floor = " (floor)"}
local out_rows, table_rows = {}, {}
local n_met, n_targets = 0, 0
for _, row in ipairs(rows) do
  local name, label, better, tg = row[1], row[2], row[3], row[4]
  local refimpl = row.ref or "python"
  local lmp, ref = by[name .. "/lmp"], by[(row.refname or name) .. "/" .. refimpl]
  if row.reffield then -- a reference measured by the lmp script itself
    local x = lmp and lmp.fields[row.reffield]
    ref = x and {value = x, unit = lmp.unit, fields = {}, samples = {}} or nil
  end
  if lmp or ref then -- rows of workloads this run left out are not shown
    local r = ratio(lmp, ref, better, row.by or row.show)
    local m = met(tg, lmp, r)
    if tg then
      n_targets = n_targets + 1
      if m then n_met = n_met + 1 end
    end
    local unit = row.unit or (lmp and lmp.unit) or (ref and ref.unit) or ""
    table_rows[#table_rows + 1] = {
      label .. " [" .. unit .. "]", cell_of(lmp, row), cell_of(ref, row, ref_tags[refimpl]),
      r and string.format("%.2fx", r) or "-", target_text(tg),
      (m == nil and (tg and "n/a" or "-") or (m and "met" or "NOT MET"))
        .. (tg and tg.flat and lmp and lmp.fields[tg.flat] and string.format(" (%.2fx)", lmp.fields[tg.flat]) or ""),
    }
    local function side(e)
      if not e then return nil end
      return {value = e.value, samples = e.samples, note = e.note, failed = e.failed or nil,
      medians = e.fields, lines = e.lines}
    end
    out_rows[#out_rows + 1] = {
      name = name, label = label, unit = unit, better = better, reference = refimpl,
      lmp = side(lmp), [refimpl] = side(ref), ratio = r, ratio_on = row.by or row.show,
      target = tg and target_text(tg) or nil, met = m,
    }
  end
end

print_table({"workload [unit]", "lmp", "Python", "ratio", "target", "met"}, table_rows)
print(string.format("targets met: %d of %d.  ratio > 1: lmp better; times are medians of repeats.", n_met, n_targets))
if by["codec/lmp"] then
  print("codec ratios are on round trips/s (same table), not on MB/s of two encodings;")
  print("its encode and decode rows on encodes/s and decodes/s alone.")
end

local f = assert(io.open(out_path, "w"))
f:write(encode({run = runinfo, rows = out_rows, targets_met = n_met, targets = n_targets}), "\n")
f:close()

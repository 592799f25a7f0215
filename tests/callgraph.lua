-- callgraph.lua BUILD_DIR: the file-level call graph of bindings/ and the
-- layers below it, from the symbol tables of the built objects (nm).
--
-- A file calls another when it uses (nm "U") a symbol the other defines.
-- The bindings are layered as Lua's own library is: helpers at the bottom
-- (lauxlib's role), the opener on top (linit's role), families in between;
-- so no circle of calls may take in more than two files.  The runtime is
-- layered the same way, more strictly: its files call downwards only (the
-- root, runtime.c, over segments and the watchdog), and the few circles it
-- has are listed below, each with the calls that close it, so any new circle,
-- or a new call back up one of those, fails.  And the runtime and the public
-- headers never reach up into bindings/: no object of runtime/ uses a symbol
-- of bindings/ (or any lmpb_ name), and no file of runtime/ or include/
-- includes a header of bindings/.
--
-- Prints TAP, one line per rule; a failure lists the offending circle.
local B = arg[1] or "build"

local function lines(cmd)
  local p = assert(io.popen(cmd))
  local t = {}
  for l in p:lines() do t[#t + 1] = l end
  p:close()
  return t
end

-- Every object of a directory: defs[sym] = file, uses[file] = {sym, ...}.
local function scan(dir, defs, uses, files)
  for _, o in ipairs(lines("ls " .. B .. "/" .. dir .. "/*.o 2>/dev/null")) do
    local file = dir .. "/" .. o:match("([^/]+)%.o$") .. ".c"
    local src = io.open(file)
    if src then src:close() else goto stale end -- left by a file since removed
    files[#files + 1] = file
    uses[file] = {}
    for _, l in ipairs(lines("nm " .. o)) do
      local kind, sym = l:match("^%s*%x*%s+(%a)%s+(%S+)$")
      if kind == "U" then
        table.insert(uses[file], sym)
      elseif kind and kind:match("%u") and defs then
        defs[sym] = file
      end
    end
    ::stale::
  end
end

local defs, uses, files = {}, {}, {}
scan("bindings", defs, uses, files)
local results, n = {}, 0
local function tap(ok, what, detail)
  n = n + 1
  results[#results + 1] = (ok and "ok " or "not ok ") .. n .. " - " .. what
  if not ok then results[#results + 1] = detail end
end

if #files == 0 then
  tap(false, "call graph: no objects in " .. B .. "/bindings", "#   build first")
  print(table.concat(results, "\n"))
  os.exit(1)
end

-- edges[a][b] = {sym, ...}: a uses what b defines.
local function graph(files, defs, uses)
  local edges = {}
  for _, f in ipairs(files) do
    edges[f] = {}
    for _, s in ipairs(uses[f]) do
      local g = defs[s]
      if g and g ~= f then
        edges[f][g] = edges[f][g] or {}
        table.insert(edges[f][g], s)
      end
    end
  end
  return edges
end

local function sorted_succ(edges, v)
  local succ = {}
  for w in pairs(edges[v]) do succ[#succ + 1] = w end
  table.sort(succ)
  return succ
end

-- Tarjan's strongly connected components, each a sorted list of files.
local function components(files, edges)
  local index, low, onstack, stack, sccs, counter = {}, {}, {}, {}, {}, 0
  local function connect(v)
    counter = counter + 1
    index[v], low[v] = counter, counter
    stack[#stack + 1] = v
    onstack[v] = true
    for _, w in ipairs(sorted_succ(edges, v)) do
      if not index[w] then
        connect(w)
        low[v] = math.min(low[v], low[w])
      elseif onstack[w] then
        low[v] = math.min(low[v], index[w])
      end
    end
    if low[v] == index[v] then
      local c = {}
      repeat
        local w = table.remove(stack)
        onstack[w] = nil
        c[#c + 1] = w
      until w == v
      table.sort(c)
      sccs[#sccs + 1] = c
    end
  end
  local sorted = {}
  for i, f in ipairs(files) do sorted[i] = f end
  table.sort(sorted)
  for _, f in ipairs(sorted) do if not index[f] then connect(f) end end
  return sccs
end

-- One shortest circle through `start` inside the component `member`.
local function circle(edges, start, member)
  local prev, queue, head = {[start] = false}, {start}, 1
  while queue[head] do
    local v = queue[head]
    head = head + 1
    for _, w in ipairs(sorted_succ(edges, v)) do
      if w == start then
        local path, u = {start}, v
        while u ~= start do table.insert(path, 2, u) u = prev[u] end
        path[#path + 1] = start
        local s = {}
        for i = 1, #path - 1 do
          s[#s + 1] = path[i] .. " -(" .. edges[path[i]][path[i + 1]][1] .. ")-> "
        end
        return table.concat(s) .. start
      end
      if member[w] and prev[w] == nil then
        prev[w] = v
        queue[#queue + 1] = w
      end
    end
  end
end

-- The lines that show a component: its files, then a circle through each.
local function describe(edges, c)
  local member, out = {}, {"#   a circle of " .. #c .. " files: " .. table.concat(c, " ")}
  for _, f in ipairs(c) do member[f] = true end
  for _, f in ipairs(c) do
    local w = circle(edges, f, member)
    if w then out[#out + 1] = "#     " .. w end
  end
  return out
end

local edges = graph(files, defs, uses)
local bad = {}
for _, c in ipairs(components(files, edges)) do
  if #c > 2 then
    for _, l in ipairs(describe(edges, c)) do bad[#bad + 1] = l end
  end
end
tap(#bad == 0, "call graph: no circle of calls in bindings/ takes in more than 2 files",
    table.concat(bad, "\n"))

-- Nothing below reaches up.
local rdefs, ruses, rfiles = {}, {}, {}
scan("runtime", rdefs, ruses, rfiles)
local up = {}
for _, f in ipairs(rfiles) do
  for _, s in ipairs(ruses[f]) do
    if defs[s] or s:match("^lmpb_") then
      up[#up + 1] = "#   " .. f .. " uses " .. s .. (defs[s] and " (" .. defs[s] .. ")" or "")
    end
  end
end
local headers = {}
for _, h in ipairs(lines("ls bindings/*.h 2>/dev/null")) do headers[#headers + 1] = h:match("[^/]+$") end
for _, h in ipairs(headers) do
  for _, f in ipairs(lines("grep -rlE '#[[:space:]]*include[[:space:]]*[<\"]([^\">]*/)?" .. h:gsub("%.", "\\.")
                           .. "[\">]' runtime include 2>/dev/null")) do
    up[#up + 1] = "#   " .. f .. " includes " .. h
  end
end
tap(#up == 0, "call graph: nothing in runtime/ or include/ reaches up into bindings/", table.concat(up, "\n"))

-- The runtime's circles.  Each allowed one is named by its files, and by the
-- calls back up that close it (from -> to may use only `calls`); every other
-- circle among runtime/*.o fails, whatever its width.
local allowed = {
  -- An engine reports back to the broker object that drives it (its error
  -- text, the messages and queues it read, the signed layout it peeks at for
  -- task ids, a URL as logs show it and its query): the two are one object
  -- split by transport (runtime/broker_engine.h).
  {files = {"runtime/broker.c", "runtime/broker_redis.c"}, from = "runtime/broker_redis.c",
   to = "runtime/broker.c", calls = {"lmp__broker_fail", "lmp__broker_push", "lmp__wall_ms",
                                      "lmp__broker_url_shown", "lmp_broker_batch_clear", "lmp_broker_batch_free",
                                      "lmp_broker_peek", "lmp__broker_url_query", "lmp_broker_queues_free"}},
  -- A segment call made before anyone started the runtime starts it
  -- (lmp/segment.h, lmp/runtime.h): the root is above segments and gives
  -- them their prefix, and this lazy start is the one call back up.
  {files = {"runtime/runtime.c", "runtime/segment.c"}, from = "runtime/segment.c",
   to = "runtime/runtime.c", calls = {"lmp_runtime_init"}},
}
local redges = graph(rfiles, rdefs, ruses)
local wide = {}
for _, c in ipairs(components(rfiles, redges)) do
  if #c > 1 then
    local key, ok = table.concat(c, " "), false
    for _, a in ipairs(allowed) do
      if table.concat(a.files, " ") == key then
        local may = {}
        for _, s in ipairs(a.calls) do may[s] = true end
        for _, s in ipairs(redges[a.from][a.to] or {}) do
          if not may[s] then wide[#wide + 1] = "#   " .. a.from .. " uses " .. s .. " (" .. a.to .. ")" end
        end
        ok = true
      end
    end
    if not ok then
      for _, l in ipairs(describe(redges, c)) do wide[#wide + 1] = l end
    end
  end
end
tap(#wide == 0, "call graph: runtime/ calls downwards, but for the circles listed in callgraph.lua",
    table.concat(wide, "\n"))

print(table.concat(results, "\n"))

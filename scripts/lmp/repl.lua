-- lmp.repl: the interactive loop of the `lmp` command.
--
-- Reads a chunk, tries it first as an expression (`return <line>`) so that
-- `lmp.cpu_count()` prints its value, then as a statement; an incomplete
-- chunk (an error ending in <eof>) asks for more lines, as lua's own REPL
-- does.  Results print tab-separated; tables print readably (keys sorted,
-- nested tables to a depth of 4, cycles marked, long ones cut short).
--
-- On a terminal, lines come from readline (lmp.readline, linked into the
-- lmp executable only) with history in ~/.lmp_history (LMP_HISTORY
-- overrides it) and tab completion of globals, keywords and the fields of
-- any table path typed (`lmp.Qu`, `string.f`, `q:ge`).  ^C drops the line
-- being typed, or interrupts the code running; ^D ends the session and
-- terminates the children still running.  When stdin is not a terminal
-- (piped input), lines are read plainly and the prompts still printed, and
-- the end of input is a normal end of program: children are joined.
local lmp = require "lmp"

local M = {}

-- === printing values ===

local MAX_DEPTH, MAX_ITEMS, WIDTH = 4, 100, 78

local function quote(s)
  return (string.format("%q", s):gsub("\\\n", "\\n"):gsub("\\9", "\\t"))
end

local function is_ident(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local function has_tostring(v)
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__tostring ~= nil
end

local pretty

-- The parts of a table: array items first, then the other keys sorted.
local function parts(t, depth, seen, indent)
  local out, n = {}, #t
  for i = 1, n do
    if #out >= MAX_ITEMS then out[#out + 1] = "..."; return out end
    out[#out + 1] = pretty(t[i], depth + 1, seen, indent)
  end
  local keys = {}
  for k in pairs(t) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, key_order)
  for _, k in ipairs(keys) do
    if #out >= MAX_ITEMS then out[#out + 1] = "..."; break end
    local ks = is_ident(k) and k or "[" .. pretty(k, MAX_DEPTH, seen, indent) .. "]"
    out[#out + 1] = ks .. " = " .. pretty(t[k], depth + 1, seen, indent)
  end
  return out
end

function pretty(v, depth, seen, indent)
  local tv = type(v)
  if tv == "string" then return quote(v) end
  if tv ~= "table" or has_tostring(v) then return tostring(v) end
  if seen[v] then return "<cycle>" end
  if depth >= MAX_DEPTH then return "{...}" end
  seen[v] = true
  local items = parts(v, depth, seen, indent .. "  ")
  seen[v] = nil
  if #items == 0 then return "{}" end
  local flat = "{" .. table.concat(items, ", ") .. "}"
  if #flat + #indent <= WIDTH and not flat:find("\n", 1, true) then return flat end
  local inner = indent .. "  "
  return "{\n" .. inner .. table.concat(items, ",\n" .. inner) .. "\n" .. indent .. "}"
end

-- How the REPL shows one result: strings as they are (as lua does),
-- everything else through the pretty-printer.
function M.show(v)
  if type(v) == "string" then return v end
  return pretty(v, 0, {}, "")
end

-- === completion ===

local KEYWORDS = { "and", "break", "do", "else", "elseif", "end", "false", "for", "function",
                   "goto", "if", "in", "local", "nil", "not", "or", "repeat", "return", "then",
                   "true", "until", "while" }

-- The names a value offers after "." (fields) or ":" (methods).
local function names_of(v, out, depth)
  depth = depth or 0
  if depth > 3 then return end
  if type(v) == "table" then
    for k in pairs(v) do
      if type(k) == "string" then out[k] = true end
    end
  end
  local mt = getmetatable(v)
  if type(mt) == "table" then
    local index = rawget(mt, "__index")
    if type(index) == "table" then names_of(index, out, depth + 1) end
    if type(rawget(mt, "methods")) == "table" then names_of(mt.methods, out, depth + 1) end
    -- A C __index often finds methods in a table it holds as an upvalue.
    if type(index) == "function" then
      for i = 1, 255 do
        local name, up = debug.getupvalue(index, i)
        if name == nil then break end
        if type(up) == "table" and up ~= v then
          for k, f in pairs(up) do
            if type(k) == "string" and type(f) == "function" and k:sub(1, 2) ~= "__" then out[k] = true end
          end
        end
      end
    end
  end
end

-- Follow "a.b.c" from the globals; nil if any step is not there.
local function resolve(path)
  local v = _G
  for name in path:gmatch("[^.:]+") do
    if not is_ident(name) then return nil end
    local ok, nv = pcall(function() return v[name] end)
    if not ok or nv == nil then return nil end
    v = nv
  end
  return v
end

-- Whether name completes partial: names starting with "_" (internals,
-- such as lmp._pool_worker) only once the partial does.
local function offered(name, partial)
  return name:sub(1, #partial) == partial and is_ident(name)
         and (name:sub(1, 1) ~= "_" or partial:sub(1, 1) == "_")
end

-- Candidates completing `word` ("lmp.Qu", "pri", "q:ge").
function M.complete(word)
  local found, out = {}, {}
  local head, sep, partial = word:match("^(.-)([.:])([%w_]*)$")
  if head and head ~= "" then
    local v = resolve(head)
    if v == nil then return out end
    names_of(v, found)
    for k in pairs(found) do
      if offered(k, partial) then out[#out + 1] = head .. sep .. k end
    end
  else
    names_of(_G, found)
    for _, k in ipairs(KEYWORDS) do found[k] = true end
    for k in pairs(found) do
      if offered(k, word) then out[#out + 1] = k end
    end
  end
  table.sort(out)
  return out
end

-- === evaluating ===

local function incomplete(err)
  return err and err:find("<eof>$") ~= nil
end

local function compile(src)
  if src:sub(1, 1) == "=" then src = "return " .. src:sub(2) end -- lua 5.1's "=expr"
  local fn, err = load("return " .. src, "=stdin")
  if fn then return fn end
  return load(src, "=stdin")
end

-- An error value as text: an lmp.Error as it prints, with a table the
-- task raised shown as the REPL shows tables; other tables likewise.
local function error_text(e)
  if lmp.is_error(e) then
    local text = tostring(e)
    if type(e.value) == "table" and not has_tostring(e.value) then
      text = text:gsub("%(error object is a table value%)", function() return M.show(e.value) end, 1)
    end
    return text
  end
  if type(e) == "string" then return e end
  if type(e) == "table" and not has_tostring(e) then return M.show(e) end
  if has_tostring(e) then return tostring(e) end
  return string.format("(error object is a %s value)", type(e))
end

-- Frames of lmp's own modules (chunk names "lmp/x.lua"), and the C
-- function (error) they raised with, tell the user nothing.
local function lmp_frame(line)
  return line:match("^\t[^\n]-lmp/[%w_]+%.lua:") ~= nil
end

local function strip_lmp_frames(tb)
  local lines = {}
  for l in (tb .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
  local head = 1
  while lines[head] and lines[head] ~= "stack traceback:" do head = head + 1 end
  if not lines[head] then return tb end
  local kept, lost = {}, false
  for i = head + 1, #lines do
    local l = lines[i]
    local dropped = lmp_frame(l)
      or (l:match("^\t%[C%]: in ") and lines[i + 1] and lmp_frame(lines[i + 1]))
      or (l == "\t(...tail calls...)" and lost)
    if dropped then lost = true else kept[#kept + 1] = l; lost = false end
  end
  local out = table.concat(lines, "\n", 1, head - 1)
  if #kept == 0 then return out end
  return out .. "\n" .. lines[head] .. "\n" .. table.concat(kept, "\n")
end

local function traceback(msg)
  -- the REPL's own frames below the chunk are noise
  local tb = debug.traceback(error_text(msg), 2)
  tb = tb:gsub("\n[^\n]*'xpcall'.*$", ""):gsub("\n[^\n]*icall'.*$", "")
  return strip_lmp_frames(tb)
end

local function report(ok, ...)
  if not ok then
    io.stderr:write(tostring((...)), "\n")
    return
  end
  local n = select("#", ...)
  if n == 0 then return end
  local out = {}
  for i = 1, n do out[i] = M.show((select(i, ...))) end
  io.write(table.concat(out, "\t"), "\n")
  io.flush()
end

-- === input ===

local function history_path()
  local p = os.getenv("LMP_HISTORY")
  if p and p ~= "" then return p end
  local home = os.getenv("HOME")
  return home and home ~= "" and home .. "/.lmp_history" or nil
end

-- A reader: read(prompt) -> line | false (interrupted) | nil (end).
local function plain_reader()
  return function(prompt)
    io.write(prompt)
    io.flush()
    local line = io.read("L")
    return line and line:gsub("\n$", "")
  end
end

local function readline_reader(rl)
  local hist = history_path()
  if hist then rl.read_history(hist) end
  rl.set_completer(function(word) return M.complete(word) end)
  return function(prompt) return rl.readline(prompt) end,
         function(chunk)
           rl.add_history(chunk)
           if hist then rl.append_history(hist, 1000) end
         end
end

-- Ask the children still running to stop, then reap them.
local function end_children()
  local kids = lmp.active_children()
  for _, p in ipairs(kids) do pcall(p.terminate, p) end
  for _, p in ipairs(kids) do
    if not p:join(1) then pcall(p.kill, p); p:join() end
  end
end

function M.run()
  local ok, rl = pcall(require, "lmp.readline")
  local tty = ok and rl.isatty(0) and rl.isatty(1)
  local read, remember = plain_reader(), function() end
  local call = function(fn) return xpcall(fn, traceback) end
  if tty then
    read, remember = readline_reader(rl)
    call = function(fn) return rl.icall(traceback, fn) end
  end
  io.write(lmp._VERSION, " (", _VERSION, ")  ctrl-d to quit\n")
  while true do
    local line = read("lmp> ")
    if line == nil then
      io.write("\n")
      if tty then end_children() end
      return
    end
    if line then
      local src = line
      local fn, err = compile(src)
      while not fn and incomplete(err) do
        local more = read("...> ")
        if not more then src = nil; break end -- ^C or end: drop the chunk
        src = src .. "\n" .. more
        fn, err = compile(src)
      end
      if src and src:match("%S") then remember(src) end
      if fn then
        report(call(fn))
      elseif src then
        io.stderr:write(err, "\n")
      end
    end
  end
end

return setmetatable(M, { __call = function(_, ...) return M.run(...) end })

-- lmp.repl: the interactive loop of the `lmp` command.
--
-- Reads a line, tries it first as an expression (`return <line>`) so that
-- `lmp.cpu_count()` prints its value, then as a statement; an incomplete
-- chunk (an error ending in <eof>) asks for more lines, as lua's own REPL
-- does.  Results are printed with tostring, tab-separated.
local lmp = require "lmp"

local function incomplete(err)
  return err and err:find("<eof>$") ~= nil
end

local function compile(src)
  local fn, err = load("return " .. src, "=stdin")
  if fn then return fn end
  return load(src, "=stdin")
end

local function show(ok, ...)
  if not ok then
    io.stderr:write(tostring((...)), "\n")
    return
  end
  local n = select("#", ...)
  if n == 0 then return end
  local out = {}
  for i = 1, n do out[i] = tostring((select(i, ...))) end
  io.write(table.concat(out, "\t"), "\n")
end

return function()
  io.write(lmp._VERSION, " (", _VERSION, ")  ctrl-d to quit\n")
  while true do
    io.write("lmp> ")
    io.flush()
    local src = io.read("L")
    if not src then io.write("\n") return end
    local fn, err = compile(src)
    while not fn and incomplete(err) do
      io.write("...> ")
      io.flush()
      local more = io.read("L")
      if not more then break end
      src = src .. more
      fn, err = compile(src)
    end
    if fn then
      show(xpcall(fn, debug.traceback))
    else
      io.stderr:write(err, "\n")
    end
  end
end

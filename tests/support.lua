-- Helpers shared by the specs.
local M = {}

M.build = os.getenv("LMP_BUILD") or "build"
M.lmp_bin = M.build .. "/lmp"

-- Runs a Lua snippet with the lmp executable; returns output (stdout and
-- stderr together) and exit code.
function M.run(code, ...)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  local args = table.concat({...}, " ")
  local p = io.popen(string.format("%s %s %s 2>&1; echo \"::exit $?\"", M.lmp_bin, path, args))
  local out = p:read("a")
  p:close()
  os.remove(path)
  local code_ = tonumber(out:match("::exit (%d+)%s*$"))
  return out:gsub("::exit %d+%s*$", ""), code_
end

function M.shell(cmd)
  local p = io.popen("{ " .. cmd .. "\n} 2>&1")
  local out = p:read("a")
  p:close()
  return out
end

-- Names in /dev/shm that start with prefix (without the leading slash).
function M.shm_entries(prefix)
  local out = {}
  local p = io.popen("ls /dev/shm 2>/dev/null")
  for name in p:lines() do
    if name:sub(1, #prefix) == prefix then out[#out + 1] = name end
  end
  p:close()
  return out
end

-- Open descriptors of this process.
function M.fd_count()
  local pid = require("lmp").current_process().pid
  local p = io.popen("ls /proc/" .. pid .. "/fd")
  local n = 0
  for _ in p:lines() do n = n + 1 end
  p:close()
  return n
end

function M.alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local stat = f:read("a")
  f:close()
  return not stat:match("^%d+ %b() Z")
end

-- Globals other than the ones present when this module loaded.
local baseline = {}
for k in pairs(_G) do baseline[k] = true end
function M.new_globals()
  local extra = {}
  for k in pairs(_G) do
    if not baseline[k] then extra[#extra + 1] = tostring(k) end
  end
  table.sort(extra)
  return extra
end

return M

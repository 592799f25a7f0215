-- bench/lua/shm.lua -- lmp in a container-sized /dev/shm.
-- A producer process puts 1 GiB through a Queue in 1 MiB messages and a
-- consumer process gets them all, while the parent holds a 256 MiB Array
-- (filled, so its memory is really there).  The figure is MiB/s from the go
-- to the consumer's last get, median of 3.  shm_normal runs on this
-- machine's /dev/shm; shm_64m and shm_8m run the same program in a mount
-- namespace of their own whose /dev/shm is a tmpfs of 64 MiB (Docker's
-- default) or 8 MiB, so most segments cannot live there and lmp places them
-- in memory instead (memfd).  The report gives each as a ratio to
-- shm_normal of the same run, whose line has "impl":"normal".  Those two need root (unshare -m); elsewhere
-- they print n/a.
-- Usage: lmp bench/lua/shm.lua shm_normal|shm_64m|shm_8m [inner]
local lmp = require "lmp"
local b = dofile((arg[0]:match("^(.*/)") or "./") .. "common.lua")

local name, inner = arg[1] or "shm_normal", arg[2] == "inner"
local size = name:match("^shm_(%d+m)$")

if size and not inner then
  -- Run this very script again, in a private mount namespace.
  local exe = arg[-1] or "lmp" -- the lmp executable running this
  local cmd = string.format(
    "unshare -m sh -c 'mount -t tmpfs -o size=%s tmpfs /dev/shm && %s %s %s inner' 2>&1",
    size, exe, arg[0], name)
  local p = io.popen(cmd)
  local out = p:read("a")
  local ok = p:close()
  local line = out:match('({"name":[^\n]*})')
  if ok and line then
    io.write(line, "\n")
  else
    b.na(name, "MiB/s", "cannot run in a private /dev/shm here (needs root and unshare -m): "
      .. (out:match("[^\n]*") or ""))
  end
  return
end

local MSGS = b.size(1024, 16)
local ARRAY_MIB = b.size(256, 4)
local MSG = string.rep("m", 1 << 20)

local samples = b.repeat_(3, function()
  local a = lmp.Array("double", ARRAY_MIB * (1 << 20) // 8)
  a:fill(1)
  local q, go, done = lmp.Queue(), lmp.Event(), lmp.Queue()
  local producer = lmp.Process(function()
    go:wait()
    for _ = 1, MSGS do q:put(MSG) end
  end)
  local consumer = lmp.Process(function()
    go:wait()
    local bytes = 0
    for _ = 1, MSGS do bytes = bytes + #q:get() end
    done:put(bytes)
  end)
  producer:start(); consumer:start()
  local t0 = b.now()
  go:set()
  local bytes = done:get()
  local t = b.now() - t0
  producer:join(); consumer:join()
  assert(bytes == MSGS << 20 and producer.exitcode == 0 and consumer.exitcode == 0)
  assert(a[#a] == 1)
  return MSGS / t
end)
b.emit(name, "MiB/s", samples, {msgs = MSGS, array_mib = ARRAY_MIB},
       name == "shm_normal" and "normal" or nil)

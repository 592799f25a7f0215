-- CPU-bound work in processes, awaited from cqueues coroutines while a TCP
-- echo on loopback keeps answering: the controller sleeps on the sockets
-- and on the executor's descriptor at once, so neither waits for the other.
--
-- Futures are cqueues pollables; lmp.cqueues.await(future) suspends only
-- the coroutine that calls it.
local lmp = require "lmp"
local found, cqueues = pcall(require, "cqueues")
if not found then
  print("skipped: lua-cqueues is not installed")
  return
end
local socket = require "cqueues.socket"
local lc = require "lmp.cqueues"

local function cpu_bound(x)
  local s = 0
  for i = 0, 1000000 - 1 do s = s + i * i end
  return s + x
end

local executor <close> = lmp.Executor(2)
local cq = cqueues.new()
local server = socket.listen("127.0.0.1", 0)
local _, host, port = server:localname()
local busy, trips = true, 0

cq:wrap(function() -- the echo server
  local con = server:accept()
  for line in con:lines("*l") do con:write(line, "\n") end
  con:close()
end)

cq:wrap(function() -- a client, pinging every 10 ms while the work goes on
  local con = socket.connect(host, port)
  repeat
    con:write("ping\n")
    assert(con:read("*l") == "ping")
    trips = trips + 1
    cqueues.sleep(0.01)
  until not busy
  con:close()
end)

cq:wrap(function() -- the work
  local futures = {}
  for i = 0, 7 do futures[#futures + 1] = executor:submit(cpu_bound, i) end
  local first = lc.await(futures[1])
  print("first result: " .. first)
  local all = lc.gather(futures)
  print("last result: " .. all[all.n] .. " (" .. all.n .. " results)")
  local ok, err = pcall(lc.await, executor:submit(function() error("no luck", 0) end))
  print("a failing task: " .. tostring(ok) .. ", kind " .. err.kind .. ": " .. err.message)
  busy = false
end)

assert(cq:loop())
server:close()
print("echo round trips while the workers computed: " .. trips)

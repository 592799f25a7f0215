-- bench/lua/queue.lua -- lmp.Queue throughput between two processes.
-- A child puts N messages as fast as it can once told to go; the parent
-- times from the go to the last get.  Messages per second, median of runs.
--   queue_small  100k small integers
--   queue_1k     50k strings of 1 KiB
--   queue_1m     200 strings of 1 MiB
-- Usage: lmp bench/lua/queue.lua queue_small|queue_1k|queue_1m
local lmp = require "lmp"
local b = dofile((arg[0]:match("^(.*/)") or "./") .. "common.lua")

local name = arg[1]
local cfg = ({
  queue_small = {n = b.size(100000, 500), reps = 5},
  queue_1k = {n = b.size(50000, 200), reps = 5, bytes = 1024},
  queue_1m = {n = b.size(200, 4), reps = 5, bytes = 1 << 20},
})[name] or error("unknown workload " .. tostring(name))

local function producer(go, q, n, bytes)
  local msg = bytes and string.rep("x", bytes)
  go:get()
  if msg then
    for _ = 1, n do q:put(msg) end
  else
    for i = 1, n do q:put(i) end
  end
end

local n = cfg.n
local samples = b.repeat_(cfg.reps, function()
  local go, q = lmp.Queue(), lmp.Queue()
  local p = lmp.Process(producer, go, q, n, cfg.bytes)
  p:start()
  local t0 = b.now()
  go:put(true)
  for _ = 1, n do q:get() end
  local rate = n / (b.now() - t0)
  p:join()
  return rate
end)
b.emit(name, "msgs/s", samples, {messages = n, bytes = cfg.bytes or 8})

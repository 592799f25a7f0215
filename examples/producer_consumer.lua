-- Two producers and two consumers share one bounded Queue.  Each producer
-- puts a sentinel "end" when done; each consumer stops after seeing one, and
-- reports what it consumed on a result Queue.
local lmp = require "lmp"

local PRODUCTS = 5

local function producer(q, id)
  for i = 0, PRODUCTS - 1 do
    q:put(string.format("product %d from producer %d", i, id))
  end
  q:put("end")
end

local function consumer(q, results, id)
  local n = 0
  while q:get() ~= "end" do n = n + 1 end
  results:put({id, n})
end

local q, results = lmp.Queue(4), lmp.Queue()
local procs = {}
for id = 0, 1 do
  procs[#procs + 1] = lmp.Process(producer, q, id)
  procs[#procs + 1] = lmp.Process(consumer, q, results, id)
end
for _, p in ipairs(procs) do p:start() end
local total = 0
for _ = 1, 2 do
  local r = results:get()
  total = total + r[2]
end
for _, p in ipairs(procs) do p:join() end
print(string.format("%d products consumed by 2 consumers", total))   --> 10

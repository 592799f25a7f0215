-- Producers and consumers as Pool tasks, sharing a Queue, two Locks and a
-- counter.  Python needs a Manager for this (its Queue, Lock and Value
-- pass to a Pool only through a manager process); lmp's objects pass to a
-- task as plain arguments.
--
-- A consumer stops only once every producer has finished: each producer
-- puts "end" when it is done, and consumers count the "end"s in a shared
-- Value under count_lock.  print_lock keeps the printed lines whole.
--
--   lmp examples/pool_producer_consumer.lua
local lmp = require "lmp"

local PRODUCERS, CONSUMERS, PRODUCTS = 2, 2, 5

local function say(print_lock, fmt, ...)
  local line = string.format(fmt, ...)
  print_lock:with(function()
    print(line)
    io.stdout:flush()
  end)
end

local function producer(q, producer_id, print_lock)
  math.randomseed(producer_id)
  for i = 0, PRODUCTS - 1 do
    lmp.sleep(math.random() * 0.02)
    q:put(string.format("product %d from producer %d", i, producer_id))
  end
  q:put("end")                         -- tells the consumers this producer is done
  say(print_lock, "producer %d exits", producer_id)
end

local function consumer(q, consumer_id, print_lock, exited, count_lock)
  while true do
    local product = q:get(0.05)
    if product == nil then             -- nothing for now: are all producers gone?
      if exited.value == PRODUCERS then break end
    elseif product == "end" then
      count_lock:with(function() exited.value = exited.value + 1 end)
    else
      say(print_lock, "%s consumed by consumer %d", product, consumer_id)
    end
  end
  say(print_lock, "consumer %d exits", consumer_id)
end

local q = lmp.Queue()
local print_lock, count_lock = lmp.Lock(), lmp.Lock()
local exited = lmp.Value("i", 0)       -- 'i': a C int, as in Python

local producer_pool = lmp.Pool(PRODUCERS)
local consumer_pool = lmp.Pool(CONSUMERS)
local function print_traceback(e) print(tostring(e)) end
for i = 0, PRODUCERS - 1 do
  producer_pool:apply_async(producer, {q, i, print_lock}, {error_callback = print_traceback})
end
for i = 0, CONSUMERS - 1 do
  consumer_pool:apply_async(consumer, {q, i, print_lock, exited, count_lock},
                            {error_callback = print_traceback})
end
producer_pool:close()
consumer_pool:close()
producer_pool:join()
consumer_pool:join()

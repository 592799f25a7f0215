-- Python's Manager, the lmp way: the manager hands out a dict and a list
-- that live in shared memory, so workers write to them directly (there is
-- no manager process to ask).  Four workers square their share of 1..12
-- into the dict, log to the list and count into one key with incr.
--
--   lmp examples/manager_dict.lua
local lmp = require "lmp"

local m <close> = lmp.Manager()
local shared_list = m:list()
shared_list:append("Hello")

local squares = m:dict()
local procs = {}
for w = 1, 4 do
  procs[w] = lmp.Process(function()
    for n = w, 12, 4 do
      squares[n] = n * n
      squares:incr("count")
    end
    shared_list:append("worker " .. w)
  end)
  procs[w]:start()
end
for _, p in ipairs(procs) do p:join() end

local log = shared_list:totable()
table.sort(log, function(a, b) return a == "Hello" or (b ~= "Hello" and a < b) end)
print("list: " .. table.concat(log, ", "))
local parts, sum = {}, 0
for n = 1, 12 do
  parts[#parts + 1] = n .. "=" .. squares[n]
  sum = sum + squares[n]
end
print("squares: " .. table.concat(parts, " "))
print("count: " .. squares.count .. ", sum: " .. sum)

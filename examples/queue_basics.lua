-- A child puts a value on a Queue; the parent gets it.  The table keeps its
-- nil hole: {42, nil, "hello", n = 3}.
local lmp = require "lmp"

local function f(q)
  q:put({42, nil, "hello", n = 3})
end

local q = lmp.Queue()
local p = lmp.Process(f, q)
p:start()
local v = q:get()
print(v[1], v[2], v[3], v.n)   --> 42  nil  hello  3
p:join()

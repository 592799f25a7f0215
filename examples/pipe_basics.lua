-- A child sends a value over one end of a Pipe and closes it; the parent
-- receives it, then learns the other side is gone.
local lmp = require "lmp"

local function f(conn)
  conn:send({42, false, "hello"})
  conn:close()
end

local parent_conn, child_conn = lmp.Pipe()
local p = lmp.Process(f, child_conn)
p:start()
child_conn:close()           -- the parent keeps only its own end
local v = parent_conn:recv()
print(v[1], v[2], v[3])      --> 42  false  hello
print(parent_conn:recv())    --> nil  closed
p:join()

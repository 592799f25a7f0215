-- The three start methods, side by side.
--
--   fork        the child is a copy of the parent (the default on Linux)
--   spawn       the lmp executable runs again, with a fresh Lua state
--   forkserver  a clean server process, started once, forks the children
--
-- With fork the child sees the parent's globals; with spawn and forkserver
-- it sees only what travels: the target with its upvalues, its arguments,
-- and what it requires.  Each child reports back on a Queue.
--
--   lmp examples/start_methods.lua
local lmp = require "lmp"

SETTING = "a global set by the parent"        -- luacheck: ignore
local limit = 3                               -- a local: travels as an upvalue

local function probe(q, method)
  q:put(string.format("%-10s global: %-28s upvalue: %d  started by: %s", method,
                      tostring(SETTING), limit, lmp.parent_process().name))
end

print("available:", table.concat(lmp.get_all_start_methods(), ", "))
print("default:", lmp.get_start_method())

local q = lmp.Queue()
for _, method in ipairs(lmp.get_all_start_methods()) do
  local ctx = lmp.get_context(method)
  local p = ctx.Process(probe, q, method)
  p:start()
  p:join()
  print(q:get())
end

-- Pools take the method too: here every worker is a fresh lmp process.
local pool <close> = lmp.get_context("spawn").Pool(2)
print("spawned pool:", table.concat(pool:map(function(x) return x * limit end, {1, 2, 3}), " "))

-- What cannot be sent fails at start() with spawn, naming the culprit.
local p = lmp.Process{target = probe, args = {io.stdout, "spawn"}, start_method = "spawn"}
local ok, err = pcall(p.start, p)
print("spawn with a file argument:", ok, err.kind, err.message)

-- A mod_magnet request handler that offloads its work to an lmp Pool.
-- mod_magnet keeps one Lua state per script across requests but clears its
-- globals after each one: the pool lives in a module (package.loaded).
local lmp = require "lmp"

local state = package.loaded["lmp.lighttpd_test"]
if not state then
  state = {pool = lmp.Pool(2)}
  package.loaded["lmp.lighttpd_test"] = state
end

local n = tonumber(lighty.r.req_attr["uri.query"] or "") or 7
local ok, v = pcall(state.pool.apply, state.pool, function(x)
  lmp.sleep(0.01)
  return x * x
end, n)
lighty.r.resp_header["Content-Type"] = "text/plain"
lighty.r.resp_body.set({ok and tostring(v) or ("error: " .. tostring(v)), "\n"})
return ok and 200 or 500

-- starmap: each item is the list of a call's arguments.  Here four adders
-- and two subtractors share one counter, first without a lock (a race: the
-- total is usually wrong), then with one (always 200).
--
--   add_pool.starmap_async(add, [(counter, lock) for _ in range(4)])
--
-- Python needs a Manager for this, since its Value and Lock only pass to a
-- Pool by inheritance; lmp's handles go through any call.
local lmp = require "lmp"

local function add(counter, lock)
  for _ = 1, 100 do
    if lock then lock:acquire() end
    counter.value = counter.value + 1
    if lock then lock:release() end
  end
end

local function sub(counter, lock)
  for _ = 1, 100 do
    if lock then lock:acquire() end
    counter.value = counter.value - 1
    if lock then lock:release() end
  end
end

local function run(counter, lock)
  local add_pool, sub_pool = lmp.Pool(4), lmp.Pool(2)
  local a = add_pool:starmap_async(add, {{counter, lock}, {counter, lock}, {counter, lock}, {counter, lock}})
  local s = sub_pool:starmap_async(sub, {{counter, lock}, {counter, lock}})
  add_pool:close()
  sub_pool:close()
  add_pool:join()
  sub_pool:join()
  assert(a:successful() and s:successful())
  return counter.value
end

print("without a lock: " .. run(lmp.Value("int64", 0), false))   --> often not 200
print("with a lock: " .. run(lmp.Value("int64", 0), lmp.Lock()))   --> 200

-- starmap returns the results in order, like map.
local p <close> = lmp.Pool(2)
print(table.concat(p:starmap(function(x, y) return x ^ y end, {{2, 5}, {3, 2}, {10, 3}}), " "))

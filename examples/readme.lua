local lmp = require "lmp"

local function is_prime(n)
  for d = 2, math.floor(n ^ 0.5) do
    if n % d == 0 then return false end
  end
  return n > 1
end

local twins, lock, most = lmp.Queue(), lmp.Lock(), lmp.Value("int64", 0)
local function count(block)              -- runs in a worker; its upvalues go along
  local n = 0
  for x = (block - 1) * 10000, block * 10000 - 1 do
    if is_prime(x) then
      n = n + 1
      if is_prime(x + 2) then twins:put(x) end
    end
  end
  lock:with(function() most.value = math.max(most.value, n) end)  -- read-modify-write
  return n
end

local pool <close> = lmp.Pool()          -- one worker per core
local blocks = {}
for i = 1, 20 do blocks[i] = i end
local total = 0
for _, n in ipairs(pool:map(count, blocks, {progress = true})) do total = total + n end
print(total .. " primes below 200000, at most " .. most.value .. " in a block of 10000")
print(twins:qsize() .. " twin prime pairs among them")

-- imap and imap_unordered: results as they come, without waiting for all.
-- imap yields them in input order; imap_unordered yields each as soon as it
-- is done, with its input index.  The input may be a list or an iterator
-- function, which is consumed lazily: here a generator of 1000 numbers.
local lmp = require "lmp"

local function slow_square(x)
  lmp.sleep(x % 3 * 0.02)
  return x * x
end

local pool <close> = lmp.Pool(3)

local order = {}
for i, v in pool:imap_unordered(slow_square, {1, 2, 3, 4, 5, 6}) do
  order[#order + 1] = i
  print(("item %d: %d"):format(i, v))
end
table.sort(order)
print("all six: " .. table.concat(order, " "))

local n = 0
local function numbers()
  n = n + 1
  if n <= 1000 then return n end
end
local sum = 0
for _, v in pool:imap(function(x) return x * x end, numbers, 50) do sum = sum + v end
print("sum of squares 1..1000: " .. sum)   --> 333833500

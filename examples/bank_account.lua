-- Bank accounts in shared memory: an Array of balances (in cents) and four
-- tellers, each a process, moving money between random accounts.  A
-- transfer reads two balances and writes both, so it runs under the
-- Array's lock; the money in the bank stays the same however the tellers
-- interleave, and no account goes below zero.
--
--   lmp examples/bank_account.lua
local lmp = require "lmp"

local ACCOUNTS, TELLERS, TRANSFERS = 10, 4, 2000

local balances = lmp.Array("int64", ACCOUNTS)
balances:fill(100000) -- 1000.00 each
local done = lmp.Value("int32", 0)
local refused = lmp.Value("int32", 0)

local function total()
  local sum = 0
  for _, b in ipairs(balances:totable()) do sum = sum + b end
  return sum
end

local function teller(id)
  math.randomseed(id)
  local lock = balances:get_lock()
  for _ = 1, TRANSFERS do
    local from, to = math.random(ACCOUNTS), math.random(ACCOUNTS)
    local amount = math.random(1, 5000)
    lock:with(function()
      if from ~= to and balances[from] >= amount then
        balances[from] = balances[from] - amount
        balances[to] = balances[to] + amount
        done:add(1)
      else
        refused:add(1)
      end
    end)
  end
end

print(string.format("accounts: %d, money in the bank: %.2f", ACCOUNTS, total() / 100))
local procs = {}
for id = 1, TELLERS do
  procs[id] = lmp.Process(teller, id)
  procs[id]:start()
end
for _, p in ipairs(procs) do p:join() end

local lowest = math.huge
for _, b in ipairs(balances:totable()) do lowest = math.min(lowest, b) end
print(string.format("transfers tried: %d", done.value + refused.value))
print(string.format("money in the bank: %.2f", total() / 100))
print(string.format("no account below zero: %s", tostring(lowest >= 0)))

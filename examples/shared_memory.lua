-- Shared memory: data that many processes read without copying it.
--
--   shm = shared_memory.SharedMemory(create=True, size=a.nbytes)
--   existing_shm = shared_memory.SharedMemory(name=shm.name)
--
-- The parent fills a named block with a million doubles through a typed
-- view; pool workers attach it by name and each sums its own slice, so the
-- data is never serialized.  Then the same with an lmp.Array sent as a task
-- argument: only its handle travels, whatever its size.
--
--   lmp examples/shared_memory.lua
local lmp = require "lmp"

local N, PARTS = 1000000, 4

local block <close> = lmp.SharedMemory{size = N * 8, name = "samples"}
local view = block:array("double")          -- a typed window onto the bytes
for i = 1, N do view[i] = i * 0.5 end
print(string.format("block %q: %d bytes, %d doubles", block.name, block.size, #view))

local function partial_sum(part)            -- runs in a worker
  local m <close> = lmp.SharedMemory("samples")   -- attach by name
  local v = m:array("double")
  local per = N // PARTS
  local s = 0.0
  for i = (part - 1) * per + 1, part * per do s = s + v[i] end
  return s
end

local pool <close> = lmp.Pool(2)
local total = 0.0
for _, s in ipairs(pool:map(partial_sum, {1, 2, 3, 4}, 1)) do total = total + s end
print(string.format("sum over %d slices in the workers: %.1f (expected %.1f)",
                    PARTS, total, 0.5 * N * (N + 1) / 2))

-- Raw bytes work too: write a header, read it back anywhere.
block:write(1, string.pack("<d", 42.0))
print("first double after write:", view[1])

-- An Array is a handle: sending it sends its name, not its contents.
local big = lmp.Array("int32", 16 * 1024 * 1024)   -- 64 MiB
big[#big] = 7
local small = lmp.Array("int32", 4)
small[#small] = 7
for _, a in ipairs({small, big}) do
  local t0 = lmp.time()
  local last = pool:apply(function(arr) return arr[#arr] end, a)
  print(string.format("Array of %8d int32 to a worker and back: last = %d, %.0f us",
                      #a, last, (lmp.time() - t0) * 1e6))
end

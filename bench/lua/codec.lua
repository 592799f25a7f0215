-- bench/lua/codec.lua -- the codec: lmp.serialize + lmp.deserialize of a
-- mixed nested table (200 records of strings, integers, floats, booleans,
-- arrays and maps, a 1 KiB string, a deep chain), in a loop of about half a
-- second.  The figure is MB/s of encoded bytes through one encode and one
-- decode, median of 5 runs; round trips per second are beside it, and the
-- ratio to Python is taken on those (the same table per second), since the
-- two encodings differ in size.  Encodes and decodes are also timed apart
-- (encode_per_s, decode_per_s: k of each alone, in the same runs).
-- bench/py/bench_codec.py builds the same table for pickle.
-- With "cjson" after the name, the same runs go through lua-cjson
-- (cjson.encode, cjson.decode) instead: the Lua reference, impl "cjson",
-- n/a when the module is not installed.
-- Usage: lmp bench/lua/codec.lua codec [cjson]
local lmp = require "lmp"
local b = dofile((arg[0]:match("^(.*/)") or "./") .. "common.lua")

local name = arg[1] or "codec"
local impl = arg[2] or "lmp"
local encode, decode = lmp.serialize, lmp.deserialize
if impl == "cjson" then
  local ok, cjson = pcall(require, "cjson")
  if not ok then
    b.emit(name, "MB/s", {}, {note = "lua-cjson is not installed"}, impl)
    return
  end
  encode, decode = cjson.encode, cjson.decode
end

local function record(i)
  return {
    id = i, name = "user-" .. i, score = i * 0.5 + 0.25, active = i % 2 == 0,
    tags = {"alpha", "beta", "gamma"},
    pos = {x = i, y = -i, z = i * 1.5},
    history = {i, i + 1, i + 2, i + 3, i + 4},
  }
end

local records = {}
for i = 1, 200 do records[i] = record(i) end
local doc = {
  version = 3, title = "benchmark document", records = records,
  blob = string.rep("ab", 512), flags = {true, false, true},
  meta = {created = 1700000000, ratio = 0.75, nested = {a = {b = {c = {d = "deep"}}}}},
}

local s = encode(doc)
assert(decode(s).records[200].pos.z == 300.0)
local size = #s

-- round trips that fit in about `budget` seconds
local function calibrate(budget)
  local k, t0 = 0, b.now()
  repeat
    decode(encode(doc))
    k = k + 1
  until b.now() - t0 >= budget / 10
  return math.max(1, k * 10)
end

local k = b.smoke and 1 or calibrate(0.5)
local per_s, enc_s, dec_s = {}, {}, {}
local samples = b.repeat_(5, function(i)
  local t0 = b.now()
  for _ = 1, k do decode(encode(doc)) end
  local t = b.now() - t0
  per_s[i] = k / t
  t0 = b.now()
  for _ = 1, k do encode(doc) end
  enc_s[i] = k / (b.now() - t0)
  t0 = b.now()
  for _ = 1, k do decode(s) end
  dec_s[i] = k / (b.now() - t0)
  return k * size / t / 1e6
end)
b.emit(name, "MB/s", samples, {encoded_bytes = size, round_trips = k, per_s = b.median(per_s),
  encode_per_s = b.median(enc_s), decode_per_s = b.median(dec_s)}, impl)

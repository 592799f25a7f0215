-- Mutation test of the decoder: valid messages, damaged in thousands of
-- deterministic ways, must each decode or raise a Lua error; never crash.
-- LMP_FUZZ_ROUNDS scales the number of mutants (default 1; valgrind: 0.1).
local support = dofile("tests/support.lua")
local lmp = require "lmp"

local ROUNDS = tonumber(os.getenv("LMP_FUZZ_ROUNDS")) or 1

-- xorshift32: the same mutants on every run.
local rng = support.rng

local BOUNDARY = {0x00, 0x01, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3,
  0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb, 0xcc, 0xcf, 0xd0, 0xd3, 0xd4, 0xd5, 0xd8,
  0xd9, 0xda, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xfe, 0xff}

-- Headers that announce far more than any message holds, and ext headers
-- of each lmp type.
local FORGED = {"\xdd\xff\xff\xff\xff", "\xdf\xff\xff\xff\xff", "\xdb\xff\xff\xff\xff",
  "\xc6\x7f\xff\xff\xff", "\xc9\xff\xff\xff\xff\x07", "\xc9\x00\x00\x00\x05\x02",
  "\xde\xff\xff", "\xdc\xff\xff", "\xd4\x01\x7f", "\xd5\x01\xcd\xff", "\xd6\x05\x00\x01\x02\x03",
  "\xc7\x00\x04", "\xc7\x01\x06", "\xc8\xff\xff\x07", "\xcf\xff\xff\xff\xff\xff\xff\xff\xff",
  "\x9f", "\x8f", "\xff\xff\xff\xff"}

local function mutate(m, r, corpus)
  local n = #m
  if n == 0 then return string.char(BOUNDARY[r(#BOUNDARY) + 1]) end
  local pos = r(n + 1) + 1
  local kind = r(9)
  if kind == 0 then -- flip one to three bits
    local b = {m:byte(1, -1)}
    for _ = 1, r(3) + 1 do
      local i = r(n) + 1
      b[i] = b[i] ~ (1 << r(8))
    end
    return string.char(table.unpack(b))
  elseif kind == 1 then -- a byte becomes a boundary value
    local v = string.char(BOUNDARY[r(#BOUNDARY) + 1])
    return m:sub(1, pos - 1) .. v .. m:sub(pos + 1)
  elseif kind == 2 then -- truncate
    return m:sub(1, r(n))
  elseif kind == 3 then -- insert a byte
    local v = r(2) == 0 and string.char(r(256)) or string.char(BOUNDARY[r(#BOUNDARY) + 1])
    return m:sub(1, pos - 1) .. v .. m:sub(pos)
  elseif kind == 4 then -- insert a forged header
    return m:sub(1, pos - 1) .. FORGED[r(#FORGED) + 1] .. m:sub(pos)
  elseif kind == 5 then -- overwrite with a forged header
    local f = FORGED[r(#FORGED) + 1]
    return m:sub(1, pos - 1) .. f .. m:sub(pos + #f)
  elseif kind == 6 then -- delete a range
    return m:sub(1, pos - 1) .. m:sub(pos + r(8) + 1)
  elseif kind == 7 then -- repeat a range
    local len = r(16) + 1
    return m:sub(1, pos + len - 1) .. m:sub(pos, pos + len - 1) .. m:sub(pos + len)
  else -- splice two messages
    local other = corpus[r(#corpus) + 1]
    return m:sub(1, pos - 1) .. other:sub(r(#other + 1) + 1)
  end
end

local stats = {decoded = 0, corrupt = 0, refused = 0}

-- Decode one mutant: a value, a "corrupt message" error or a refusal (an
-- lmp.Error of kind "serialize"); whatever decodes must encode again.
local function check(m, opts)
  local ok, v = pcall(lmp.deserialize, m, opts)
  if ok then
    stats.decoded = stats.decoded + 1
    local ok2, err = pcall(lmp.serialize, v)
    assert(ok2 or (lmp.is_error(err) and err.kind == "serialize"), tostring(err))
  elseif type(v) == "string" then
    assert(v:match("^corrupt message %(.* at byte %d+%)$"), v)
    stats.corrupt = stats.corrupt + 1
  else
    assert(lmp.is_error(v) and v.kind == "serialize", tostring(v))
    stats.refused = stats.refused + 1
  end
end

local function fuzz(corpus, opts, seed, per_message)
  local r = rng(seed)
  local count = 0
  for _, m in ipairs(corpus) do
    for _ = 1, math.max(1, math.floor(per_message * ROUNDS)) do
      local mutant = mutate(m, r, corpus)
      if r(4) == 0 then mutant = mutate(mutant, r, corpus) end
      check(mutant, opts)
      count = count + 1
    end
  end
  return count
end

local Point = {}
Point.__index = Point
lmp.register("codec_fuzz.Point", Point)

-- Messages that carry no code: safe to decode trusted whatever the damage.
local function data_corpus()
  local shared = {1, 2}
  local cyc = {name = "cycle"}
  cyc.self = cyc
  local values = {
    true, 0, -1, 300, -70000, math.maxinteger, math.mininteger, 0.5, -0.0, 1 / 0,
    "", "short", ("long string "):rep(30), "\0\1\2\255",
    {}, {1, 2, 3}, {a = 1, b = {c = {d = {e = "deep"}}}},
    {1, "two", 3.0, {4, {5, {6}}}, x = true, [10] = false, [-1] = "neg", [0.5] = "half"},
    {shared, shared, {inner = shared}},
    cyc,
    {setmetatable({x = 1, y = 2}, Point), setmetatable({3, 4}, Point)},
    lmp.Error("task", "failed", {pid = 1, traceback = "stack traceback:\n\t[C]: in ?"}),
  }
  local big = {}
  for i = 1, 200 do big[i] = i % 3 == 0 and {i} or i * 1000 end
  values[#values + 1] = big
  values[#values + 1] = {nested = {{{{{{{{{{"ten"}}}}}}}}}}}
  local corpus = {lmp.serialize(nil)}
  for _, v in ipairs(values) do corpus[#corpus + 1] = lmp.serialize(v) end
  if lmp.Queue then -- handles, when the module has them
    local q = lmp.Queue()
    corpus[#corpus + 1] = lmp.serialize({q = q, again = q, items = {1, 2}})
  end
  return corpus
end

-- Messages that carry code: decoded untrusted only, since forged bytecode can
-- crash Lua itself (that is what `trusted` is for).
local function code_corpus()
  local n = 0
  local function counter() n = n + 1; return n end
  local function fact(k) if k <= 1 then return 1 end return k * fact(k - 1) end
  local t = {k = "v"}
  return {
    lmp.serialize(function() return 1 end),
    lmp.serialize({counter = counter, get = function() return n end, t = t}),
    lmp.serialize({fact, math.sqrt, print, _G}),
    lmp.serialize(function(x) return t.k .. x, fact(x) end),
  }
end

describe("codec fuzz", function()
  it("the corpus decodes", function()
    for _, m in ipairs(data_corpus()) do
      lmp.deserialize(m, {trusted = true})
      lmp.deserialize(m)
    end
    for _, m in ipairs(code_corpus()) do lmp.deserialize(m, {trusted = true}) end
  end)

  it("survives mutants of plain messages decoded trusted", function()
    local corpus = data_corpus()
    for _, m in ipairs(corpus) do assert.is_nil(m:find("\27Lua", 1, true)) end
    local n = fuzz(corpus, {trusted = true}, 0x2545f491, 1500)
    assert.is_true(n >= 1500 * #corpus * ROUNDS - #corpus)
  end)

  it("survives mutants of plain messages decoded untrusted", function()
    fuzz(data_corpus(), nil, 0x9e3779b9, 1000)
  end)

  it("survives mutants of messages with code decoded untrusted", function()
    fuzz(code_corpus(), nil, 0x85ebca6b, 5000)
  end)

  it("rejected or decoded every mutant", function()
    local total = stats.decoded + stats.corrupt + stats.refused
    print(string.format("\n# codec fuzz: %d mutants: %d decoded, %d corrupt, %d refused",
      total, stats.decoded, stats.corrupt, stats.refused))
    assert.is_true(stats.corrupt > stats.decoded / 10)
    assert.is_true(stats.refused > 0)
    assert.are.same({}, support.new_globals())
  end)
end)

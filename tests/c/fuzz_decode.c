/*
 * fuzz_decode.c -- throws damaged messages at every reader of lmp's bytes.
 *
 * The readers of bindings/codec/ take bytes from other processes (and,
 * through a broker, from other machines), so each must turn any input into
 * a value or a refusal, never a crash.  Every input goes to all of them:
 *
 *   lmpb_decode             the codec: a value or a Lua error
 *   lmpb_plain_unpack_list  the pool's plain lists: the items or -1, and
 *   lmpb_plain_items/_next  its streaming twin, which must accept exactly
 *                           the same messages and read the same values
 *   lmpb_plain_number       a shared container's stored number
 *   lmpb_handle_names       the handle walker: a count or -1
 *
 * and what a fast reader accepts the codec must decode to the same values
 * (a message the codec decodes, the walker must walk).  This program checks
 * that under a sanitizer, in two ways:
 *
 *   fuzz_decode [ITERATIONS [SEED]]   mutate a built-in corpus (bit flips,
 *                                     boundary bytes, truncations, forged
 *                                     lengths, splices) and read each mutant
 *   fuzz_decode FILE...               read each file (a crash reproducer)
 *   fuzz_decode --corpus DIR          write the corpus there (libFuzzer seeds)
 *
 * Memory is bounded as well as checked: the Lua state's allocator refuses to
 * let one decode grow the heap by more than 64 KiB plus 256 bytes per input
 * byte (512 for the plain readers, whose check holds their list and the
 * codec's), so a message whose headers announce more than it holds (a 4 GiB
 * array in 20 bytes, or nested tables that each claim every byte left) fails
 * the run with "not enough memory" instead of passing while it allocates.
 *
 * Built with -DLMP_LIBFUZZER it is a libFuzzer target instead.  Build lines:
 *
 *   cc -std=c11 -D_GNU_SOURCE -O1 -g -fsanitize=address,undefined \
 *      -Iinclude -Ibindings -I/usr/include/lua5.4 tests/c/fuzz_decode.c \
 *      bindings/codec/codec.c bindings/codec/plain.c bindings/codec/walk.c \
 *      bindings/lerror.c runtime/common.c \
 *      -llua5.4 -lmsgpackc -lm -o build/fuzz_decode
 *   clang -DLMP_LIBFUZZER -std=c11 -D_GNU_SOURCE -O1 -g \
 *      -fsanitize=fuzzer,address,undefined ...same sources... -o build/fuzz_decode_lf
 *
 * Mutants of messages that carry functions are decoded untrusted only:
 * loading forged bytecode can crash Lua itself, which is why `trusted`
 * exists.  (Not named test_*: it is not part of `make test`.)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "codec.h"
#include "codec/plain.h"
#include "lmp/segment.h"
#include "lmpaux.h"
#include "lmpb.h"

_Noreturn static void fail(const char *what, const char *data, size_t len)
{
  fprintf(stderr, "%s; the input (%zu bytes):", what, len);
  for (size_t i = 0; i < len && i < 64; i++)
    fprintf(stderr, " %02x", (unsigned char)data[i]);
  fprintf(stderr, "%s\n", len > 64 ? " ..." : "");
  abort();
}

/* segment.c's, which lmpaux.c's error table names and this program does not
 * link: no segment is ever made here. */
__attribute__((weak)) const char *lmp_seg_space_error(void)
{
  return "";
}

/* === the Lua side === */

/* The allocator of the fuzzed state: it counts, and refuses growth past
 * mem_limit (set around each decode). */
static size_t mem_used, mem_limit = SIZE_MAX;

static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
  (void)ud;
  if (ptr == NULL)
    osize = 0; /* then osize is a type tag, not a size */
  if (nsize == 0) {
    free(ptr);
    mem_used -= osize;
    return NULL;
  }
  if (nsize > osize && mem_used - osize + nsize > mem_limit)
    return NULL; /* Lua collects and retries, then raises "not enough memory" */
  void *p = realloc(ptr, nsize);
  if (p != NULL)
    mem_used = mem_used - osize + nsize;
  return p;
}

static int panic(lua_State *L)
{
  fprintf(stderr, "lua panic: %s\n", lua_tostring(L, -1));
  abort();
}

static const char corpus_src[] =
    "local lmp = ...\n"
    "local P = lmp.register('fuzz.P', {})\n"
    "local shared, cyc = {1, 2}, {}\n"
    "cyc.self = cyc\n"
    "local n = 0\n"
    "local function inc() n = n + 1 return n end\n"
    "local function fact(k) if k < 2 then return 1 end return k * fact(k - 1) end\n"
    "local big = {}\n"
    "for i = 1, 100 do big[i] = i % 3 == 0 and {i, tostring(i)} or i * 1000 end\n"
    "local data = {\n"
    "  true, 0, -1, 300, -70000, math.maxinteger, math.mininteger, 0.5, -0.0, 1/0,\n"
    "  '', 'short', ('long '):rep(60), '\\0\\1\\255',\n"
    "  {}, {1, 2, 3}, {a = 1, b = {c = {d = 'e'}}}, big,\n"
    "  {1, 'two', 3.0, {4, {5}}, x = true, [10] = false, [0.5] = 'half'},\n"
    "  {shared, shared, {shared}}, cyc,\n"
    "  {setmetatable({x = 1}, P), setmetatable({1, 2}, P)}, {P, {mt = P}, setmetatable({}, P)},\n"
    "  lmp.Error('task', 'failed', {pid = 1}),\n"
    "}\n"
    "local code = {\n"
    "  function() return 1 end, {inc = inc, get = function() return n end},\n"
    "  {fact, math.sqrt, print, _G},\n"
    "}\n"
    "local many = {}\n"
    "for i = 1, 40 do many[i] = i * 7919 - 100000 end\n"
    "local plain = {\n"
    "  {1, 2, 3}, many, {n = 5, 1, nil, 'x', 2.5, true}, {n = 2}, {false, 0/0, -0.0, 1/0},\n"
    "  {'', 'a', ('b'):rep(31), ('c'):rep(32), ('d'):rep(300)},\n"
    "  {-1, -32, -33, -200, -70000, -2^40, math.mininteger, math.maxinteger, 255, 65536, 2^33},\n"
    "}\n"
    "return data, code, plain\n";

static lua_State *open_state(void)
{
  lua_State *L = lua_newstate(limited_alloc, NULL);
  if (L == NULL)
    abort();
  lua_atpanic(L, panic);
  luaL_openlibs(L);
  lua_newtable(L);
  lmpb_error_open(L);
  lmpb_codec_open(L);
  lua_setglobal(L, "lmp");
  return L;
}

/* lmpb_decode under pcall: (string, trusted) -> nothing */
static int decode_call(lua_State *L)
{
  size_t len;
  const char *s = lua_tolstring(L, 1, &len);
  lmpb_decode(L, s, len, lua_toboolean(L, 2));
  return 0;
}

/* Decode; 1 when a value came out, 0 for a Lua error.  Aborts on an error
 * that is neither "corrupt message" nor an lmp.Error. */
static int decode(lua_State *L, const char *data, size_t len, int trusted)
{
  int top = lua_gettop(L);
  lua_pushcfunction(L, decode_call);
  lua_pushlstring(L, data, len);
  lua_pushboolean(L, trusted);
  mem_limit = mem_used + (64u << 10) + 256 * len;
  int rc = lua_pcall(L, 2, 0, 0);
  mem_limit = SIZE_MAX;
  if (rc != LUA_OK && lua_type(L, -1) == LUA_TSTRING &&
      strncmp(lua_tostring(L, -1), "corrupt message (", 17) != 0) {
    fprintf(stderr, "unexpected error: %s\n", lua_tostring(L, -1));
    abort();
  }
  lua_settop(L, top);
  return rc == LUA_OK;
}

/* Two values that two readers read from the same bytes: the same value of
 * the same subtype (floats compared by their bits, so NaN is itself). */
static int same(lua_State *L, int a, int b)
{
  if (lua_type(L, a) != lua_type(L, b))
    return 0;
  if (lua_type(L, a) != LUA_TNUMBER)
    return lua_rawequal(L, a, b);
  if (lua_isinteger(L, a) != lua_isinteger(L, b))
    return 0;
  if (lua_isinteger(L, a))
    return lua_tointeger(L, a) == lua_tointeger(L, b);
  lua_Number x = lua_tonumber(L, a), y = lua_tonumber(L, b);
  return memcmp(&x, &y, sizeof x) == 0;
}

/* The plain readers under pcall: (string) -> 1 when a list was read, else
 * 0.  What they accept, the codec decodes to the same values; a message
 * that is not one raises a string naming the disagreement. */
static int plain_call(lua_State *L)
{
  size_t len;
  const char *s = lua_tolstring(L, 1, &len);
  const unsigned char *end = (const unsigned char *)s + len, *p;
  lua_Integer i, n;
  double f;
  int isint;
  uint64_t count;
  if (lmpb_plain_number(s, len, &i, &f, &isint)) {
    lmpb_decode(L, s, len, 0);
    if (isint)
      lua_pushinteger(L, i);
    else
      lua_pushnumber(L, (lua_Number)f);
    if (!same(L, 2, 3))
      return luaL_error(L, "lmpb_plain_number and lmpb_decode read different numbers");
    lua_settop(L, 1);
  }
  lua_newtable(L); /* 2: the list reader's items */
  n = lmpb_plain_unpack_list(L, s, len, 2, 1);
  p = lmpb_plain_items(s, len, &count);
  if ((n >= 0) != (p != NULL) || (p && count != (uint64_t)n))
    return luaL_error(L, "lmpb_plain_unpack_list and lmpb_plain_items disagree");
  if (n < 0) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lmpb_decode(L, s, len, 0); /* 3: the codec's */
  if (!lua_istable(L, 3))
    return luaL_error(L, "lmpb_decode read a plain list as a %s", luaL_typename(L, 3));
  for (lua_Integer k = 1; k <= n; k++) {
    lua_rawgeti(L, 2, k);
    lua_rawgeti(L, 3, k);
    if (p >= end || !lmpb_plain_next(L, &p, end))
      return luaL_error(L, "lmpb_plain_next refused item %d", (int)k);
    if (!same(L, 4, 5) || !same(L, 4, 6))
      return luaL_error(L, "the readers read item %d differently", (int)k);
    lua_settop(L, 3);
  }
  if (p != end)
    return luaL_error(L, "lmpb_plain_next stopped short of the end");
  lua_pushboolean(L, 1);
  return 1;
}

/* 1 when the plain readers read a list, 0 when they refused it; aborts when
 * they disagree with each other or with the codec. */
static int plain(lua_State *L, const char *data, size_t len)
{
  int top = lua_gettop(L);
  lua_pushcfunction(L, plain_call);
  lua_pushlstring(L, data, len);
  mem_limit = mem_used + (64u << 10) + 512 * len;
  int rc = lua_pcall(L, 1, 1, 0);
  mem_limit = SIZE_MAX;
  if (rc != LUA_OK)
    fail(lua_tostring(L, -1) ? lua_tostring(L, -1) : "plain readers: an error object", data, len);
  rc = lua_toboolean(L, -1);
  lua_settop(L, top);
  return rc;
}

static void walked_name(const char *name)
{
  if (strncmp(name, "/lmp.", 5) != 0 || strlen(name) >= LMP_SEG_NAME_MAX)
    abort();
}

/* The handle walker: 1 when it walked the message, 0 when it refused it;
 * aborts when it refuses one the codec decoded. */
static int walk(const char *data, size_t len, int decoded)
{
  int r = lmpb_handle_names(data, len, walked_name);
  if (r < 0 && decoded)
    fail("the handle walker refused a message the codec decodes", data, len);
  return r >= 0;
}

/* Every reader on one input. */
typedef struct tally {
  long decoded, rejected, lists, notlists, walked, unwalked;
} tally;

static void read_all(lua_State *L, const char *data, size_t len, int trusted, tally *t)
{
  int ok = decode(L, data, len, trusted);
  ok ? t->decoded++ : t->rejected++;
  plain(L, data, len) ? t->lists++ : t->notlists++;
  walk(data, len, ok) ? t->walked++ : t->unwalked++;
}

#ifdef LMP_LIBFUZZER

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static lua_State *L;
  static tally t;
  if (L == NULL)
    L = open_state();
  read_all(L, (const char *)data, size, 0, &t);
  return 0;
}

#else

/* === mutations === */

#define CORPUS_MAX 64

typedef struct msg {
  char *data;
  size_t len;
  int trusted; /* safe to decode trusted: carries no code */
} msg;

static uint64_t rng_state = 88172645463325252ULL;

static uint32_t rnd(uint32_t n)
{
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return n ? (uint32_t)(rng_state % n) : 0;
}

static const unsigned char boundary[] = {
    0x00, 0x01, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xc1, 0xc4, 0xc6, 0xc7, 0xc9, 0xca,
    0xcb, 0xcc, 0xcf, 0xd0, 0xd3, 0xd4, 0xd8, 0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0xe0, 0xff};

static const char *const forged[] = {
    "\xdd\xff\xff\xff\xff",
    "\xdf\xff\xff\xff\xff",
    "\xdb\xff\xff\xff\xff",
    "\xc6\x7f\xff\xff\xff",
    "\xc9\xff\xff\xff\xff\x07",
    "\xc9\x00\x00\x00\x05\x02",
    "\xd4\x01\x7f",
    "\xd5\x01\xcd\xff",
    "\xc7\x00\x04",
    "\xc8\xff\xff\x06",
    "\x9f",
    "\x8f",
};

/* Write a mutant of m into out (room for m->len + 16 bytes); its length. */
static size_t mutate(const msg *m, char *out)
{
  size_t n = m->len, pos = rnd((uint32_t)n + 1);
  const char *f;
  memcpy(out, m->data, n);
  switch (rnd(6)) {
  case 0: /* flip bits */
    for (uint32_t k = rnd(3) + 1; k > 0 && n > 0; k--)
      out[rnd((uint32_t)n)] ^= (char)(1 << rnd(8));
    return n;
  case 1: /* a boundary byte */
    if (pos < n)
      out[pos] = (char)boundary[rnd(sizeof boundary)];
    return n;
  case 2: /* truncate */
    return rnd((uint32_t)n);
  case 3: /* insert a byte */
    memmove(out + pos + 1, m->data + pos, n - pos);
    out[pos] = (char)rnd(256);
    return n + 1;
  case 4: /* insert a forged header */
    f = forged[rnd(sizeof forged / sizeof *forged)];
    memmove(out + pos + strlen(f), m->data + pos, n - pos);
    memcpy(out + pos, f, strlen(f));
    return n + strlen(f);
  default: /* delete a range */
    if (pos < n) {
      size_t k = rnd(8) + 1;
      k = k > n - pos ? n - pos : k;
      memmove(out + pos, m->data + pos + k, n - pos - k);
      return n - k;
    }
    return n;
  }
}

/* Encode each value of the list at `list` into corpus[], from *count on. */
static void add_corpus(lua_State *L, int list, msg *corpus, int *count, int trusted)
{
  for (lua_Integer i = 1; lua_rawgeti(L, list, i) != LUA_TNIL; i++) {
    const lmp_buf_t *b = lmpb_encode(L, -1, "value");
    msg *m = &corpus[(*count)++];
    m->data = malloc(b->len + 16);
    if (m->data == NULL)
      abort();
    memcpy(m->data, b->data, b->len);
    m->len = b->len;
    m->trusted = trusted;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
}

/* Pack each list of the table at `list` as the pool does (its n field, or
 * its length, items) into corpus[], from *count on. */
static void add_plain(lua_State *L, int list, msg *corpus, int *count)
{
  lmp_buf_t b = {0};
  for (lua_Integer i = 1; lua_rawgeti(L, list, i) != LUA_TNIL; i++) {
    lua_getfield(L, -1, "n");
    lua_Integer n = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : (lua_Integer)lua_rawlen(L, -2);
    lua_pop(L, 1);
    if (lmpb_plain_pack_list(L, lua_gettop(L), 1, n, &b) < 0)
      abort();
    msg *m = &corpus[(*count)++];
    m->data = malloc(b.len + 16);
    if (m->data == NULL)
      abort();
    memcpy(m->data, b.data, b.len);
    m->len = b.len;
    m->trusted = 1;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  lmp_buf_free(&b);
}

/* Messages that hold handles, for the walker (no handle type is registered
 * here, so the codec refuses them): [h, {h = h}, 7], h a Queue whose
 * identity names two segments. */
static void add_handles(msg *corpus, int *count)
{
  static const char id[] = "/lmp.q1\0/lmp.l2\0x";
  char h[64], *p = h;
  size_t idlen = sizeof id - 1, hlen = 1 + 9 + 2 + idlen;
  *p++ = (char)0xc7, *p++ = (char)hlen, *p++ = 6; /* ext 8, HANDLE */
  *p++ = (char)(0xa0 | 9), memcpy(p, "lmp.Queue", 9), p += 9;
  *p++ = (char)0xc4, *p++ = (char)idlen, memcpy(p, id, idlen), p += idlen;
  size_t n = (size_t)(p - h);
  msg *m = &corpus[(*count)++];
  m->data = malloc(3 * n + 32);
  if (m->data == NULL)
    abort();
  p = m->data;
  *p++ = (char)0x93, memcpy(p, h, n), p += n;
  *p++ = (char)0x81, *p++ = (char)0xa1, *p++ = 'h', memcpy(p, h, n), p += n;
  *p++ = 7;
  m->len = (size_t)(p - m->data);
  m->trusted = 1;
}

/* Inputs on which the readers once disagreed. */
static const struct {
  const char *data;
  size_t len;
} regressions[] = {
    /* A uint64 past math.maxinteger (from another writer): the codec reads
     * a float, and lmpb_plain_number read a negative integer. */
    {"\xcf\x80\x00\x00\x00\x00\x00\x00\x00", 9},
    {"\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9},
};

static void add_regressions(msg *corpus, int *count)
{
  for (size_t i = 0; i < sizeof regressions / sizeof *regressions; i++) {
    msg *m = &corpus[(*count)++];
    m->data = malloc(regressions[i].len + 16);
    if (m->data == NULL)
      abort();
    memcpy(m->data, regressions[i].data, regressions[i].len);
    m->len = regressions[i].len;
    m->trusted = 1;
  }
}

/* The corpus: encoded messages, data first (decoded trusted too), then
 * plain lists, handles and the regressions. */
static int build_corpus(lua_State *L, msg *corpus)
{
  int count = 0;
  if (luaL_loadstring(L, corpus_src) != LUA_OK)
    abort();
  lua_getglobal(L, "lmp");
  if (lua_pcall(L, 1, 3, 0) != LUA_OK) {
    fprintf(stderr, "corpus: %s\n", lua_tostring(L, -1));
    exit(1);
  }
  int top = lua_gettop(L);
  add_corpus(L, top - 2, corpus, &count, 1); /* data: decoded trusted */
  add_corpus(L, top - 1, corpus, &count, 0); /* code: untrusted only */
  add_plain(L, top, corpus, &count);
  add_handles(corpus, &count);
  add_regressions(corpus, &count);
  lua_settop(L, top - 3);
  return count;
}

static int write_corpus(const char *dir)
{
  lua_State *L = open_state();
  msg corpus[CORPUS_MAX];
  int count = build_corpus(L, corpus);
  for (int i = 0; i < count; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/seed-%02d", dir, i);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(corpus[i].data, 1, corpus[i].len, f) != corpus[i].len) {
      perror(path);
      return 1;
    }
    fclose(f);
    free(corpus[i].data);
  }
  lua_close(L);
  return 0;
}

static int fuzz(long iterations)
{
  lua_State *L = open_state();
  msg corpus[CORPUS_MAX];
  tally t = {0};
  char *buf;
  size_t room = 0;
  int count = build_corpus(L, corpus);
  for (int i = 0; i < count; i++)
    room = corpus[i].len + 16 > room ? corpus[i].len + 16 : room;
  buf = malloc(room);
  if (buf == NULL)
    abort();
  for (int i = 0; i < count; i++) /* each message as it is, first */
    read_all(L, corpus[i].data, corpus[i].len, corpus[i].trusted, &t);
  for (long i = 0; i < iterations; i++) {
    const msg *m = &corpus[rnd((uint32_t)count)];
    size_t len = mutate(m, buf);
    read_all(L, buf, len, m->trusted, &t);
  }
  printf("%d messages and %ld mutants, 0 crashes: codec %ld decoded, %ld rejected; plain "
         "lists %ld read, %ld refused; handle walker %ld walked, %ld refused\n",
         count, iterations, t.decoded, t.rejected, t.lists, t.notlists, t.walked, t.unwalked);
  free(buf);
  for (int i = 0; i < count; i++)
    free(corpus[i].data);
  lua_close(L);
  return 0;
}

static int replay(int argc, char **argv)
{
  lua_State *L = open_state();
  for (int i = 1; i < argc; i++) {
    FILE *f = fopen(argv[i], "rb");
    if (f == NULL) {
      perror(argv[i]);
      return 1;
    }
    static char data[1 << 20];
    size_t len = fread(data, 1, sizeof data, f);
    fclose(f);
    tally t = {0};
    read_all(L, data, len, 0, &t);
    printf("%s: codec %s, plain list %s, walker %s\n", argv[i], t.decoded ? "decoded" : "rejected",
           t.lists ? "read" : "refused", t.walked ? "walked" : "refused");
  }
  lua_close(L);
  return 0;
}

int main(int argc, char **argv)
{
  if (argc == 3 && strcmp(argv[1], "--corpus") == 0)
    return write_corpus(argv[2]);
  if (argc > 1 && strtol(argv[1], NULL, 10) <= 0)
    return replay(argc, argv);
  if (argc > 2)
    rng_state ^= (uint64_t)strtoull(argv[2], NULL, 0) * 0x9e3779b97f4a7c15ULL;
  return fuzz(argc > 1 ? strtol(argv[1], NULL, 10) : 200000);
}

#endif

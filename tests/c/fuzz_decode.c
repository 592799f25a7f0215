/*
 * fuzz_decode.c -- throws damaged messages at lmpb_decode.
 *
 * The decoder reads bytes from other processes (and, through a broker, from
 * other machines), so it must turn any input into a value or a Lua error.
 * This program checks that under a sanitizer, in two ways:
 *
 *   fuzz_decode [ITERATIONS [SEED]]   mutate a built-in corpus (bit flips,
 *                                     boundary bytes, truncations, forged
 *                                     lengths, splices) and decode each mutant
 *   fuzz_decode FILE...               decode each file (a crash reproducer)
 *   fuzz_decode --corpus DIR          write the corpus there (libFuzzer seeds)
 *
 * Memory is bounded as well as checked: the Lua state's allocator refuses to
 * let one decode grow the heap by more than 64 KiB plus 256 bytes per input
 * byte, so a message whose headers announce more than it holds (a 4 GiB
 * array in 20 bytes, or nested tables that each claim every byte left) fails
 * the run with "not enough memory" instead of passing while it allocates.
 *
 * Built with -DLMP_LIBFUZZER it is a libFuzzer target instead.  Build lines:
 *
 *   cc -std=c11 -D_GNU_SOURCE -O1 -g -fsanitize=address,undefined \
 *      -Iinclude -Ibindings -I/usr/include/lua5.4 tests/c/fuzz_decode.c \
 *      bindings/codec.c bindings/lerror.c runtime/common.c \
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

#include "lmp/shm.h"
#include "codec.h"
#include "lmpaux.h"
#include "lmpb.h"

/* shm.c's, which lmpaux.c's error table names and this program does not
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
    "return data, code\n";

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

#ifdef LMP_LIBFUZZER

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static lua_State *L;
  if (L == NULL)
    L = open_state();
  decode(L, (const char *)data, size, 0);
  return 0;
}

#else

/* === mutations === */

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

/* The corpus: encoded messages, data first (decoded trusted too). */
static int build_corpus(lua_State *L, msg *corpus)
{
  int count = 0;
  if (luaL_loadstring(L, corpus_src) != LUA_OK)
    abort();
  lua_getglobal(L, "lmp");
  if (lua_pcall(L, 1, 2, 0) != LUA_OK) {
    fprintf(stderr, "corpus: %s\n", lua_tostring(L, -1));
    exit(1);
  }
  add_corpus(L, lua_gettop(L) - 1, corpus, &count, 1); /* data: decoded trusted */
  add_corpus(L, lua_gettop(L), corpus, &count, 0);     /* code: untrusted only */
  return count;
}

static int write_corpus(const char *dir)
{
  lua_State *L = open_state();
  msg corpus[64];
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
  msg corpus[64];
  long decoded = 0, rejected = 0;
  char *buf;
  size_t room = 0;
  int count = build_corpus(L, corpus);
  for (int i = 0; i < count; i++)
    room = corpus[i].len + 16 > room ? corpus[i].len + 16 : room;
  buf = malloc(room);
  if (buf == NULL)
    abort();
  for (long i = 0; i < iterations; i++) {
    const msg *m = &corpus[rnd((uint32_t)count)];
    size_t len = mutate(m, buf);
    if (decode(L, buf, len, m->trusted))
      decoded++;
    else
      rejected++;
  }
  printf("%ld mutants of %d messages: %ld decoded, %ld rejected\n", iterations, count, decoded,
         rejected);
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
    printf("%s: %s\n", argv[i], decode(L, data, len, 0) ? "decoded" : "rejected");
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

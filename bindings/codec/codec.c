/*
 * codec.c -- Lua values <-> msgpack: the bytes of every lmp message.
 *
 * Everything that crosses a process boundary (task arguments and results,
 * queue items, pipe messages, entries of shared containers) is encoded here,
 * so this is a hot path: a queue put of a small table is one encode, and a
 * steady stream of messages allocates nothing once the buffers have grown.
 *
 * Format.  Plain msgpack for plain values: nil, booleans, integers in their
 * smallest width, floats always as float64 (3 stays an integer, 3.0 a float;
 * inf, nan and -0.0 survive; float32 is read too, and a uint64 past
 * math.maxinteger from another writer becomes a float), strings as str (bin
 * is read as a string).  A table whose keys are exactly 1..n (n >= 1) is an
 * array, any other table a map, the empty table an empty array.  lmp's own
 * kinds are ext types whose payload is a short sequence of msgpack values,
 * listed in codec.h.  Lists of plain values take a faster path of their own
 * (plain.c) to the same bytes.
 *
 * Identity.  Tables, Lua functions and handles are numbered from 1 in the
 * order the encoder first meets them, and meeting one again writes REF(id).
 * The decoder creates each object before decoding what it contains and
 * numbers it the same way, so shared references and cycles (a table holding
 * itself, a local recursive function that is its own upvalue) arrive as they
 * left; a message with no reference in it (may_refer) is not numbered.
 * Upvalues shared by closures of one message stay shared (lua_upvalueid on
 * the way out, lua_upvaluejoin on the way in).
 *
 * Kinds.  An upvalue named _ENV, and the global table wherever it appears,
 * travel as GLOBALS and bind to the receiver's globals.  A C function travels
 * as a name under which package.loaded reaches it (found by a reverse lookup
 * cached in the registry, rebuilt on a miss); a table whose metatable was
 * given to lmp.register as CLASS, and that metatable itself, met as a value
(an upvalue of a constructor, a field), as METATABLE, so that it arrives as
the receiver's registered one and not as a copy; a userdata whose metatable __name is a
 * registered handle type as HANDLE, its identity written and read back by
 * the type's hooks (run protected; an error there becomes a "serialize"
 * lmp.Error).  Anything else is refused with a "serialize" lmp.Error naming
 * where the value sits: "cannot send args[2].handler: userdata (FILE*)".
 * The encoder keeps the steps of that path as stack indexes and spells them
 * out only when it fails.
 *
 * Why our own writers and decoder.  msgpack-c's packer (msgpack_pack_*
 * through a callback into a buffer the state owns) writes the ext and bin
 * parts of functions, handles and classes; plain values, strings and
 * container headers, which are most of any message, are written straight
 * into the buffer with the same bytes, because a callback per value cost
 * more than the values.  A map is written in one traversal and its header
 * widened afterwards when it has more than 15 pairs (enc_pairs).
 * msgpack-c's unpacker is not used: it caps nesting at 32 levels
 * (MSGPACK_EMBED_STACK_SIZE, compiled into libmsgpackc) and builds an
 * object tree that would then be copied onto the Lua stack.  The reader
 * below decodes straight onto the stack and trusts nothing: each length is
 * checked against the bytes left before anything is read or allocated, an
 * array or map cannot announce more elements than bytes remain, nesting
 * stops at 200 levels (as on encode), trailing bytes are refused, and every
 * defect raises the Lua error "corrupt message (<reason> at byte N)", N
 * counted from 0.  tests/codec_fuzz_spec.lua and tests/c/fuzz_decode.c
 * feed it mutated messages.
 *
 * Trust.  Lua does not verify bytecode and forged bytecode can crash the
 * interpreter, so FUNCTION is loaded (lua_load, mode "b") only when the
 * caller vouches for the bytes (lmp's own channels, HMAC-checked broker
 * messages); so are CFUNCTION and GLOBALS, which hand out code and the
 * receiver's environment.  Untrusted input may carry data, classes and
 * handles.
 *
 * Reentrancy.  A finalizer can run at any allocation and may itself send or
 * receive a message.  The buffers of a state are marked busy while a call
 * uses them; a nested call takes a second set (codec_acquire).
 */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "codec.h"
#include "format.h"
#include "lmp/segment.h" /* LMP_SEG_NAME_MAX, a constant: the codec calls no runtime */
#include "lmpaux.h"
#include "lmpb.h"

#define CODEC_MAXDEPTH 200
#define CODEC_MT "lmp.codec"

/* Registry keys: their addresses. */
static const char K_CODEC;   /* the main codec userdata */
static const char K_BYNAME;  /* class name -> metatable */
static const char K_BYMT;    /* metatable -> class name */
static const char K_HANDLES; /* handle type name -> lightuserdata lmpb_handle_type */
static const char K_CLASSLOAD; /* the Lua side's loader of lmp's own classes */
static const char K_CFUNCS;  /* C function -> "module\0field" (weak keys, a cache) */
static const char K_DUMPS;   /* Lua function -> its bytecode (weak keys, a cache) */

/* Bumped by every lmp.register (in any state of the process): a codec
 * rebuilds its set of registered metatables when this moved. */
static unsigned class_epoch = 1;

/* Push the registry table at `key`, creating it when missing. */
static void registry_table(lua_State *L, const void *key, const char *mode)
{
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE)
    return;
  lua_pop(L, 1);
  lua_newtable(L);
  if (mode) {
    lua_createtable(L, 0, 1);
    lua_pushstring(L, mode);
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
  }
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

/* === object maps === */

/*
 * Open addressing from an object's address to a number.  Emptied in O(1)
 * between messages by bumping the generation stamp: a slot is live only when
 * it carries the current one.  Objects stay alive during an encode (they are
 * reachable from the value being encoded), so their addresses are stable.
 */
typedef struct idslot {
  const void *key;
  uint64_t val;
  uint32_t gen;
} idslot;

typedef struct idmap {
  idslot *slot;
  size_t cap; /* a power of two, or 0 */
  size_t count;
  uint32_t gen;
} idmap;

static size_t idmap_hash(const void *p)
{
  uint64_t x = (uint64_t)(uintptr_t)p;
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  return (size_t)x;
}

static void idmap_free(idmap *m)
{
  free(m->slot);
  m->slot = NULL;
  m->cap = m->count = 0;
}

/* Forget every entry; a map grown by one huge message is given back. */
static void idmap_clear(idmap *m)
{
  if (m->cap > 65536)
    idmap_free(m);
  m->count = 0;
  if (++m->gen == 0) { /* the stamps wrapped around: wipe them */
    if (m->slot)
      memset(m->slot, 0, m->cap * sizeof(idslot));
    m->gen = 1;
  }
}

static int idmap_get(const idmap *m, const void *key, uint64_t *val)
{
  if (m->count == 0)
    return 0;
  for (size_t i = idmap_hash(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
    const idslot *s = &m->slot[i];
    if (s->gen != m->gen)
      return 0;
    if (s->key == key) {
      *val = s->val;
      return 1;
    }
  }
}

static void idmap_insert(idmap *m, const void *key, uint64_t val)
{
  size_t i = idmap_hash(key) & (m->cap - 1);
  while (m->slot[i].gen == m->gen)
    i = (i + 1) & (m->cap - 1);
  m->slot[i].key = key;
  m->slot[i].val = val;
  m->slot[i].gen = m->gen;
  m->count++;
}

static int idmap_grow(idmap *m)
{
  idmap old = *m;
  size_t cap = old.cap ? old.cap * 2 : 64;
  idslot *s = calloc(cap, sizeof *s);
  if (s == NULL)
    return -1;
  m->slot = s;
  m->cap = cap;
  m->count = 0;
  m->gen = 1;
  for (size_t i = 0; i < old.cap; i++)
    if (old.slot[i].gen == old.gen)
      idmap_insert(m, old.slot[i].key, old.slot[i].val);
  free(old.slot);
  return 0;
}

/* Add an entry the caller knows is absent; 0 or -1 when out of memory. */
static int idmap_put(idmap *m, const void *key, uint64_t val)
{
  if ((m->count + 1) * 2 > m->cap && idmap_grow(m) < 0)
    return -1;
  idmap_insert(m, key, val);
  return 0;
}

/* One probe for the commonest question of the encoder, "seen before?": 1
 * and its number in *val if key is there, else 0 after adding it with
 * number `val_new`; -1 when out of memory. */
static int idmap_get_or_put(idmap *m, const void *key, uint64_t val_new, uint64_t *val)
{
  if ((m->count + 1) * 2 > m->cap && idmap_grow(m) < 0)
    return -1;
  size_t i = idmap_hash(key) & (m->cap - 1);
  for (; m->slot[i].gen == m->gen; i = (i + 1) & (m->cap - 1)) {
    if (m->slot[i].key == key) {
      *val = m->slot[i].val;
      return 1;
    }
  }
  m->slot[i].key = key;
  m->slot[i].val = val_new;
  m->slot[i].gen = m->gen;
  m->count++;
  return 0;
}

/* === codec state === */

/*
 * The decoder's cache of map keys.  A stream of messages repeats its keys,
 * and each would otherwise be hashed and looked up in Lua's string table
 * again: a key of at most KEYMAXLEN bytes is kept in slot h (a hash of its
 * bytes) as a Lua string, anchored at [h + 1] in the codec's second
 * uservalue, with its bytes' address here; a key met again is pushed from
 * there.  The cache lasts as long as the codec (a few short strings).
 */
#define KEYCACHE 128 /* a power of two */
#define KEYMAXLEN 31 /* a fixstr */

typedef struct keyslot {
  const char *s; /* the Lua string's bytes, or NULL */
  size_t len;
} keyslot;

/* Who holds one side of a codec: lets a mark left behind by a call that a
 * Lua error cut short be told apart from a call still under way. */
typedef struct holder {
  lua_State *L;
  const void *ci;
  int busy;
} holder;

typedef struct codec {
  lmp_buf_t buf;     /* the message being encoded; lmpb_encode returns it */
  lmp_buf_t scratch; /* a handle's identity, as its hook writes it */
  idmap objs;        /* table, function or userdata address -> id */
  idmap upvals;      /* lua_upvalueid -> function id << 8 | upvalue number */
  idmap mts;         /* the registered metatables (keys of K_BYMT), as of... */
  unsigned mts_epoch; /* ...this value of class_epoch (0: never built) */
  holder enc, dec;
  lua_Integer nrefs; /* decode: refs[1..nrefs] may hold objects */
  keyslot keys[KEYCACHE];
} codec; /* uservalue 1: the decoder's refs table; 2: its keys' strings */

static int codec_gc(lua_State *L)
{
  codec *c = luaL_checkudata(L, 1, CODEC_MT);
  lmp_buf_free(&c->buf);
  lmp_buf_free(&c->scratch);
  idmap_free(&c->objs);
  idmap_free(&c->upvals);
  idmap_free(&c->mts);
  return 0;
}

/* Push the codec anchored at registry[key], creating it when missing. */
static codec *codec_push(lua_State *L, const void *key)
{
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TUSERDATA)
    return lua_touserdata(L, -1);
  lua_pop(L, 1);
  codec *c = lua_newuserdatauv(L, sizeof *c, 2);
  memset(c, 0, sizeof *c);
  if (luaL_newmetatable(L, CODEC_MT)) {
    lua_pushcfunction(L, codec_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_createtable(L, 16, 0);
  lua_setiuservalue(L, -2, 1);
  lua_createtable(L, KEYCACHE, 0);
  lua_setiuservalue(L, -2, 2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
  return c;
}

/*
 * Push a codec whose encode (dec = 0) or decode side is free and mark that
 * side busy.  A side is busy while a call uses it, and stays marked after a
 * Lua error the codec did not raise itself (out of memory) cut a call short.
 * A mark left by the same thread at the same call site is such a leftover
 * (a genuinely nested call, from a finalizer or a hook, always runs in a
 * frame of its own); any other busy side is in use, and the call moves on to
 * the next codec of a chain, each anchored in the registry under the address
 * of the one before.
 */
static codec *codec_acquire(lua_State *L, int dec)
{
  lua_Debug ar;
  const void *ci = lua_getstack(L, 0, &ar) ? (const void *)ar.i_ci : NULL;
  codec *c = codec_push(L, &K_CODEC);
  for (;;) {
    holder *h = dec ? &c->dec : &c->enc;
    if (!h->busy || (h->L == L && h->ci == ci)) {
      h->L = L;
      h->ci = ci;
      h->busy = 1;
      return c;
    }
    lua_pop(L, 1);
    c = codec_push(L, c);
  }
}

/* === encoder === */

/* One step of the path from the root to the value being encoded. */
enum { STEP_INDEX, STEP_KEY, STEP_UPVALUE };

typedef struct step {
  int kind;
  int idx;       /* STEP_KEY: the key (also while the key itself is encoded);
                    STEP_UPVALUE: the function */
  lua_Integer n; /* STEP_INDEX: the index; STEP_UPVALUE: the upvalue number */
} step;

typedef struct enc {
  lua_State *L;
  codec *c;
  msgpack_packer pk;
  const char *what;    /* the root's name in error messages */
  const void *globals; /* the global table */
  int bymt;            /* stack index of the registry's metatable -> class name */
  int remote;          /* for another machine: handles are refused */
  uint64_t nextid;
  step path[CODEC_MAXDEPTH + 1];
} enc;

static const char *const reserved[] = {
    "and",      "break",  "do",   "else", "elseif", "end",   "false", "for",
    "function", "goto",   "if",   "in",   "local",  "nil",   "not",   "or",
    "repeat",   "return", "then", "true", "until",  "while", NULL,
};

static int is_name(const char *s, size_t n)
{
  if (n == 0 || (s[0] >= '0' && s[0] <= '9'))
    return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (!(ch == '_' || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
          (ch >= '0' && ch <= '9')))
      return 0;
  }
  for (int i = 0; reserved[i]; i++)
    if (strcmp(s, reserved[i]) == 0)
      return 0;
  return 1;
}

/* ["..."] with the escapes of %q; long keys are cut short. */
static void path_add_quoted(luaL_Buffer *b, const char *s, size_t n)
{
  size_t shown = n > 40 ? 37 : n;
  luaL_addstring(b, "[\"");
  for (size_t i = 0; i < shown; i++) {
    unsigned char ch = (unsigned char)s[i];
    char esc[8];
    if (ch == '"' || ch == '\\') {
      luaL_addchar(b, '\\');
      luaL_addchar(b, (char)ch);
    } else if (ch == '\n') {
      luaL_addstring(b, "\\n");
    } else if (ch == '\r') {
      luaL_addstring(b, "\\r");
    } else if (ch == '\t') {
      luaL_addstring(b, "\\t");
    } else if (ch < 0x20 || ch == 0x7f) {
      int len = 0;
      esc[len++] = '\\';
      if (ch >= 100)
        esc[len++] = (char)('0' + ch / 100);
      if (ch >= 10)
        esc[len++] = (char)('0' + ch / 10 % 10);
      esc[len++] = (char)('0' + ch % 10);
      luaL_addlstring(b, esc, (size_t)len);
    } else {
      luaL_addchar(b, (char)ch);
    }
  }
  luaL_addstring(b, shown < n ? "...\"]" : "\"]");
}

/* The rendering of the key at `idx`: [3], .name, ["a key"], [<table>]. */
static void path_add_key(luaL_Buffer *b, lua_State *L, int idx)
{
  size_t n;
  const char *s;
  switch (lua_type(L, idx)) {
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx))
      lua_pushfstring(L, "[%I]", (LUAI_UACINT)lua_tointeger(L, idx));
    else
      lua_pushfstring(L, "[%f]", (LUAI_UACNUMBER)lua_tonumber(L, idx));
    luaL_addvalue(b);
    break;
  case LUA_TBOOLEAN:
    luaL_addstring(b, lua_toboolean(L, idx) ? "[true]" : "[false]");
    break;
  case LUA_TSTRING:
    s = lua_tolstring(L, idx, &n);
    if (is_name(s, n)) {
      luaL_addchar(b, '.');
      luaL_addlstring(b, s, n);
    } else {
      path_add_quoted(b, s, n);
    }
    break;
  default:
    lua_pushfstring(L, "[<%s>]", luaL_typename(L, idx));
    luaL_addvalue(b);
  }
}

static void path_add_upvalue(luaL_Buffer *b, lua_State *L, int fidx, int n)
{
  const char *name = lua_getupvalue(L, fidx, n); /* a name of the prototype */
  lua_pop(L, name != NULL);
  if (name && *name && strcmp(name, "(no name)") != 0) { /* named unless stripped */
    luaL_addstring(b, "<upvalue ");
    luaL_addstring(b, name);
    luaL_addchar(b, '>');
  } else {
    lua_pushfstring(L, "<upvalue %d>", n);
    luaL_addvalue(b);
  }
}

/* Push the path of a value at `depth`: what, then one rendering per step. */
static void path_push(enc *e, int depth)
{
  luaL_Buffer b;
  luaL_buffinit(e->L, &b);
  luaL_addstring(&b, e->what);
  for (int i = 0; i < depth; i++) {
    const step *s = &e->path[i];
    if (s->kind == STEP_INDEX) {
      lua_pushfstring(e->L, "[%I]", (LUAI_UACINT)s->n);
      luaL_addvalue(&b);
    } else if (s->kind == STEP_UPVALUE) {
      path_add_upvalue(&b, e->L, s->idx, (int)s->n);
    } else {
      path_add_key(&b, e->L, s->idx);
    }
  }
  luaL_pushresult(&b);
}

/* Raise "cannot send <path>: <desc>" for the value at `depth`. */
_Noreturn static void enc_fail(enc *e, int depth, const char *desc)
{
  e->c->enc.busy = 0;
  path_push(e, depth);
  lmpb_error_raise(e->L, "serialize", "cannot send %s: %s", lua_tostring(e->L, -1), desc);
  abort(); /* not reached: lmpb_error_raise does not return */
}

_Noreturn static void enc_nomem(enc *e)
{
  e->c->enc.busy = 0;
  luaL_error(e->L, "not enough memory to encode a message");
  abort(); /* not reached */
}

/* Append without raising; lua_dump's writer must not longjmp. */
static int enc_append(enc *e, const void *p, size_t n)
{
  lmp_buf_t *b = &e->c->buf;
  if (b->cap - b->len < n && (b->len + n < b->len || lmp_buf_reserve(b, b->len + n) < 0))
    return -1;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

/* msgpack_packer's write callback (the ext and bin parts of the rarer
 * kinds: functions, handles, classes). */
static int enc_write(void *data, const char *p, size_t n)
{
  if (enc_append(data, p, n) < 0)
    enc_nomem(data);
  return 0;
}

static int enc_dump_writer(lua_State *L, const void *p, size_t n, void *data)
{
  (void)L;
  return enc_append(data, p, n) < 0;
}

/* === encoder: the hot writers === */

/*
 * Plain values and container headers are written straight into the buffer
 * rather than through msgpack_pack_*: the packer hands every value, even a
 * one-byte integer, to a write callback, which for tables of small values
 * cost more than the values.  The bytes are the ones msgpack-c writes
 * (integers in their smallest width, floats as float64, str 8/16/32).
 */

static void enc_grow(enc *e, size_t n)
{
  lmp_buf_t *b = &e->c->buf;
  if (b->len + n < b->len || lmp_buf_reserve(b, b->len + n) < 0)
    enc_nomem(e);
}

/* Room for n more bytes at the end of the buffer. */
static inline unsigned char *enc_room(enc *e, size_t n)
{
  lmp_buf_t *b = &e->c->buf;
  if (b->cap - b->len < n)
    enc_grow(e, n);
  return (unsigned char *)b->data + b->len;
}

/* A tag byte and an n-byte big-endian value (n = 0: the tag alone). */
static inline void enc_tagged(enc *e, unsigned tag, uint64_t v, int n)
{
  unsigned char *p = enc_room(e, 9);
  p[0] = (unsigned char)tag;
  lmpb_put_be(p + 1, v, n);
  e->c->buf.len += 1 + (size_t)n;
}

static void enc_int(enc *e, int64_t v)
{
  if (v >= -32 && v <= 127) {
    enc_tagged(e, (unsigned char)(int8_t)v, 0, 0);
  } else if (v >= 0) {
    uint64_t u = (uint64_t)v;
    if (u <= 0xff)
      enc_tagged(e, 0xcc, u, 1);
    else if (u <= 0xffff)
      enc_tagged(e, 0xcd, u, 2);
    else if (u <= 0xffffffffu)
      enc_tagged(e, 0xce, u, 4);
    else
      enc_tagged(e, 0xcf, u, 8);
  } else if (v >= INT8_MIN) {
    enc_tagged(e, 0xd0, (uint64_t)v & 0xff, 1);
  } else if (v >= INT16_MIN) {
    enc_tagged(e, 0xd1, (uint64_t)v & 0xffff, 2);
  } else if (v >= INT32_MIN) {
    enc_tagged(e, 0xd2, (uint64_t)v & 0xffffffffu, 4);
  } else {
    enc_tagged(e, 0xd3, (uint64_t)v, 8);
  }
}

static void enc_double(enc *e, double d)
{
  uint64_t bits;
  memcpy(&bits, &d, sizeof bits);
  enc_tagged(e, 0xcb, bits, 8);
}

static void enc_str(enc *e, const char *s, size_t n, int depth)
{
  if (n <= 31) { /* most strings: one check for room */
    unsigned char *p = enc_room(e, n + 1);
    *p = (unsigned char)(0xa0 | n);
    memcpy(p + 1, s, n);
    e->c->buf.len += n + 1;
    return;
  }
  if (n <= 0xff)
    enc_tagged(e, 0xd9, n, 1);
  else if (n <= 0xffff)
    enc_tagged(e, 0xda, n, 2);
  else if (n <= UINT32_MAX)
    enc_tagged(e, 0xdb, n, 4);
  else
    enc_fail(e, depth, "string longer than 4 GiB");
  memcpy(enc_room(e, n), s, n);
  e->c->buf.len += n;
}

/* An array or map header for n elements (or pairs). */
static void enc_count(enc *e, size_t n, int ismap)
{
  if (n <= 15)
    enc_tagged(e, (ismap ? 0x80 : 0x90) | (unsigned)n, 0, 0);
  else if (n <= 0xffff)
    enc_tagged(e, ismap ? 0xde : 0xdc, n, 2);
  else
    enc_tagged(e, ismap ? 0xdf : 0xdd, n, 4);
}

/* Open an ext (or bin) whose length is patched in by enc_close: the 32-bit
 * form, whatever the size, so nothing has to move. */
static size_t enc_open(enc *e, unsigned char tag, int type)
{
  size_t at = e->c->buf.len;
  enc_tagged(e, tag, 0, 4);
  if (tag == 0xc9)
    enc_tagged(e, (unsigned char)type, 0, 0);
  return at;
}

static void enc_close(enc *e, size_t at, int depth)
{
  size_t hlen = (unsigned char)e->c->buf.data[at] == 0xc9 ? 6 : 5;
  size_t n = e->c->buf.len - at - hlen;
  if (n > UINT32_MAX)
    enc_fail(e, depth, "larger than 4 GiB");
  lmpb_put_be((unsigned char *)e->c->buf.data + at + 1, n, 4);
}

static size_t uint_size(uint64_t v)
{
  return v < 128 ? 1 : v < 256 ? 2 : v < 65536 ? 3 : v <= UINT32_MAX ? 5 : 9;
}

/* REF(id): fixext 1, 2 or ext 8, as msgpack_pack_ext writes them. */
static void enc_ref(enc *e, uint64_t id)
{
  size_t n = uint_size(id);
  if (n <= 2) {
    enc_tagged(e, n == 1 ? 0xd4 : 0xd5, EXT_REF, 1);
  } else {
    enc_tagged(e, 0xc7, n, 1);
    enc_tagged(e, EXT_REF, 0, 0);
  }
  enc_int(e, (int64_t)id); /* ids are positive: written as uint */
}

static void enc_newid(enc *e, const void *p)
{
  if (idmap_put(&e->c->objs, p, ++e->nextid) < 0)
    enc_nomem(e);
}

/* Entering a container at `depth`: its children sit one level deeper.  A
 * level takes at most 8 stack slots, and every level enters here: room for
 * four levels is made at every fourth. */
static void enc_enter(enc *e, int depth)
{
  if (depth >= CODEC_MAXDEPTH)
    enc_fail(e, depth, "nested deeper than 200 levels");
  if ((depth & 3) == 0 && !lua_checkstack(e->L, 4 * 8))
    enc_fail(e, depth, "the Lua stack is exhausted");
}

static void enc_value(enc *e, int idx, int depth);

/* nil, booleans, numbers and strings (the value at idx, of Lua type
 * `type`): the values that cannot fail.  0 for anything else. */
static inline int enc_scalar(enc *e, int idx, int type, int depth)
{
  lua_State *L = e->L;
  size_t n;
  const char *s;
  switch (type) {
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx))
      enc_int(e, (int64_t)lua_tointeger(L, idx));
    else
      enc_double(e, (double)lua_tonumber(L, idx));
    return 1;
  case LUA_TSTRING:
    s = lua_tolstring(L, idx, &n);
    enc_str(e, s, n, depth);
    return 1;
  case LUA_TBOOLEAN:
    enc_tagged(e, lua_toboolean(L, idx) ? 0xc3 : 0xc2, 0, 0);
    return 1;
  case LUA_TNIL:
    enc_tagged(e, 0xc0, 0, 0);
    return 1;
  default:
    return 0;
  }
}

/* === encoder: tables === */

/* Elements from..n of a sequence. */
static void enc_items(enc *e, int idx, lua_Integer from, lua_Integer n, int depth)
{
  lua_State *L = e->L;
  for (lua_Integer i = from; i <= n; i++) {
    lua_rawgeti(L, idx, i);
    e->path[depth].kind = STEP_INDEX;
    e->path[depth].n = i;
    enc_value(e, lua_gettop(L), depth + 1);
    lua_pop(L, 1);
  }
}

/*
 * The common case in one traversal: lua_next yields 1..n in order (the array
 * part), and leading scalars are written as they come.  Returns 0, with the
 * buffer as it was, when the keys are not 1..n in that order; nothing that
 * takes an id has been written by then.
 */
static int enc_array(enc *e, int idx, lua_Integer n, int depth)
{
  lua_State *L = e->L;
  size_t mark = e->c->buf.len;
  lua_Integer i = 0, rest = 0;
  enc_count(e, (size_t)n, 0);
  e->path[depth].kind = STEP_INDEX;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    int isint; /* a float key is never integral: Lua normalizes those */
    if (++i > n || lua_tointegerx(L, -2, &isint) != i || !isint) {
      lua_pop(L, 2);
      e->c->buf.len = mark;
      return 0;
    }
    e->path[depth].n = i;
    if (rest == 0 && !enc_scalar(e, -1, lua_type(L, -1), depth + 1))
      rest = i;
    lua_pop(L, 1);
  }
  if (i != n) {
    e->c->buf.len = mark;
    return 0;
  }
  if (rest)
    enc_items(e, idx, rest, n, depth);
  return 1;
}

/* Are the keys of the table at idx exactly 1..n, in whatever order? */
static int enc_is_seq(enc *e, int idx, lua_Integer n)
{
  lua_State *L = e->L;
  lua_Integer count = 0;
  int seq = 1;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_Integer k = lua_tointegerx(L, -2, &seq);
    lua_pop(L, 1);
    if (!seq || k < 1 || k > n || ++count > n) {
      lua_pop(L, 1);
      return 0;
    }
  }
  return count == n;
}

/*
 * A map in one traversal.  Its size is known only at the end, so the header
 * is written as a fixmap and widened once the table turns out to have more
 * than 15 pairs, moving what follows it up: a memmove of the map's bytes is
 * cheaper than a second traversal to count them.  No pairs: the empty table
 * goes as an empty array.
 */
static void enc_pairs(enc *e, int idx, int depth)
{
  lua_State *L = e->L;
  size_t at = e->c->buf.len;
  uint64_t count = 0;
  int key = lua_gettop(L) + 1; /* where lua_next leaves the key, the value above it */
  enc_tagged(e, 0x80, 0, 0);
  e->path[depth].kind = STEP_KEY;
  e->path[depth].idx = key;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    count++;
    enc_value(e, key, depth + 1);
    enc_value(e, key + 1, depth + 1);
    lua_pop(L, 1);
  }
  unsigned char *h = (unsigned char *)e->c->buf.data + at;
  if (count <= 15) {
    *h = (unsigned char)((count ? 0x80 : 0x90) | count);
    return;
  }
  size_t body = e->c->buf.len - at - 1, extra = count <= 0xffff ? 2 : 4;
  h = enc_room(e, extra) - body - 1;
  memmove(h + 1 + extra, h + 1, body);
  *h = count <= 0xffff ? 0xde : 0xdf;
  lmpb_put_be(h + 1, count, (int)extra);
  e->c->buf.len += extra;
}

/* A table's content: an array when its keys are exactly 1..n, else a map. */
static void enc_content(enc *e, int idx, int depth)
{
  lua_Integer n = (lua_Integer)lua_rawlen(e->L, idx);
  if (n > 0) {
    if (enc_array(e, idx, n, depth))
      return;
    if (enc_is_seq(e, idx, n)) { /* 1..n, but not in the order lua_next goes */
      enc_count(e, (size_t)n, 0);
      enc_items(e, idx, 1, n, depth);
      return;
    }
  }
  enc_pairs(e, idx, depth);
}

/* A table with a metatable (on top of the stack): a registered class. */
static void enc_class(enc *e, int idx, int depth)
{
  lua_State *L = e->L;
  if (lua_rawget(L, e->bymt) != LUA_TSTRING)
    enc_fail(e, depth, "table with unregistered metatable");
  size_t at = enc_open(e, 0xc9, EXT_CLASS);
  size_t n;
  const char *name = lua_tolstring(L, -1, &n);
  enc_str(e, name, n, depth);
  lua_pop(L, 1);
  enc_content(e, idx, depth);
  enc_close(e, at, depth);
}

/* The table at idx (address p) if it is a registered metatable: its name
 * as METATABLE; 0 if it is not one.  Most tables are not: the codec's own
 * set of those addresses answers that without asking the registry. */
static int enc_metatable(enc *e, int idx, const void *p, int depth)
{
  lua_State *L = e->L;
  uint64_t unused;
  if (!idmap_get(&e->c->mts, p, &unused))
    return 0;
  lua_pushvalue(L, idx);
  if (lua_rawget(L, e->bymt) != LUA_TSTRING) {
    lua_pop(L, 1);
    return 0;
  }
  size_t at = enc_open(e, 0xc9, EXT_METATABLE);
  size_t n;
  const char *name = lua_tolstring(L, -1, &n);
  enc_str(e, name, n, depth);
  enc_close(e, at, depth);
  lua_pop(L, 1);
  return 1;
}

static void enc_table(enc *e, int idx, int depth)
{
  const void *p = lua_topointer(e->L, idx);
  uint64_t id;
  if (p == e->globals) {
    msgpack_pack_ext(&e->pk, 0, EXT_GLOBALS);
    return;
  }
  /* Numbered as it is met, class or not (a failure ends the message). */
  int seen = idmap_get_or_put(&e->c->objs, p, e->nextid + 1, &id);
  if (seen < 0)
    enc_nomem(e);
  if (seen) {
    enc_ref(e, id);
    return;
  }
  e->nextid++;
  enc_enter(e, depth);
  if (enc_metatable(e, idx, p, depth))
    return;
  if (lua_getmetatable(e->L, idx)) {
    enc_class(e, idx, depth);
    return;
  }
  enc_content(e, idx, depth);
}

/* === encoder: functions === */

/* Push the package.loaded[module][field] named by "module\0field" at
 * `name`, or nil. */
static void cfunc_get(lua_State *L, int name)
{
  size_t n;
  const char *s = lua_tolstring(L, name, &n);
  size_t ml = strlen(s);
  int top = lua_gettop(L);
  if (ml < n && lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) == LUA_TTABLE) {
    lua_pushlstring(L, s, ml);
    if (lua_rawget(L, -2) == LUA_TTABLE) {
      lua_pushlstring(L, s + ml + 1, n - ml - 1);
      lua_rawget(L, -2);
      lua_replace(L, top + 1);
    }
  }
  lua_settop(L, top + 1);
  if (lua_type(L, -1) != LUA_TFUNCTION) {
    lua_pop(L, 1);
    lua_pushnil(L);
  }
}

/* Is the name at `a` a better choice than the one at `b`?  Names outside
 * _G first, then the shorter, then the smaller: any fixed rule will do, so
 * that both ends agree. */
static int cfunc_better(lua_State *L, int a, int b)
{
  size_t la, lb;
  const char *sa = lua_tolstring(L, a, &la), *sb = lua_tolstring(L, b, &lb);
  int ga = strcmp(sa, "_G") == 0, gb = strcmp(sb, "_G") == 0;
  if (ga != gb)
    return gb;
  if (la != lb)
    return la < lb;
  return memcmp(sa, sb, la) < 0;
}

/* Add the C functions of the module table on top to the cache at `cache`,
 * under the module name at `mod`. */
static void cfunc_scan(lua_State *L, int cache, int mod)
{
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    if (lua_type(L, -2) == LUA_TSTRING && lua_iscfunction(L, -1)) {
      lua_pushvalue(L, mod);
      lua_pushlstring(L, "", 1);
      lua_pushvalue(L, -4);
      lua_concat(L, 3); /* module \0 field */
      lua_pushvalue(L, -2);
      if (lua_rawget(L, cache) != LUA_TSTRING || cfunc_better(L, -2, -1)) {
        lua_pop(L, 1);
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, cache); /* cache[f] = name */
      } else {
        lua_pop(L, 2);
      }
    }
    lua_pop(L, 1);
  }
}

/* Rebuild the cache of C function names from package.loaded. */
static void cfunc_rebuild(lua_State *L)
{
  int top = lua_gettop(L);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  if (lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE) == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, top + 2)) {
      if (lua_type(L, -2) == LUA_TSTRING && lua_istable(L, -1))
        cfunc_scan(L, top + 1, lua_gettop(L) - 1);
      lua_pop(L, 1);
    }
  }
  lua_settop(L, top + 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &K_CFUNCS);
}

/* Push the cached name of the C function at `idx` if the cache has one that
 * still reaches it; else push nothing and return 0. */
static int cfunc_cached(lua_State *L, int idx)
{
  int top = lua_gettop(L);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &K_CFUNCS) == LUA_TTABLE) {
    lua_pushvalue(L, idx);
    if (lua_rawget(L, -2) == LUA_TSTRING) {
      cfunc_get(L, -1);
      if (lua_rawequal(L, -1, idx)) {
        lua_pop(L, 1);
        lua_replace(L, top + 1);
        return 1;
      }
    }
  }
  lua_settop(L, top);
  return 0;
}

static void enc_cfunction(enc *e, int idx, int depth)
{
  lua_State *L = e->L;
  if (!cfunc_cached(L, idx)) {
    cfunc_rebuild(L);
    if (!cfunc_cached(L, idx))
      enc_fail(e, depth, "C function (not reachable from package.loaded)");
  }
  size_t n;
  const char *s = lua_tolstring(L, -1, &n);
  size_t ml = strlen(s);
  size_t at = enc_open(e, 0xc9, EXT_CFUNCTION);
  enc_str(e, s, ml, depth);
  enc_str(e, s + ml + 1, n - ml - 1, depth);
  enc_close(e, at, depth);
  lua_pop(L, 1);
}

/* The bytecode of the Lua function at `idx` as bin, from the cache when the
 * function was sent before. */
static void enc_bytecode(enc *e, int idx, int depth)
{
  lua_State *L = e->L;
  registry_table(L, &K_DUMPS, "k");
  lua_pushvalue(L, idx);
  if (lua_rawget(L, -2) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    msgpack_pack_bin(&e->pk, n);
    msgpack_pack_bin_body(&e->pk, s, n);
    lua_pop(L, 2);
    return;
  }
  lua_pop(L, 1);
  size_t at = enc_open(e, 0xc6, 0);
  lua_pushvalue(L, idx);
  int rc = lua_dump(L, enc_dump_writer, e, 0);
  lua_pop(L, 1);
  if (rc != 0)
    enc_nomem(e);
  enc_close(e, at, depth);
  lua_pushvalue(L, idx);
  lua_pushlstring(L, e->c->buf.data + at + 5, e->c->buf.len - at - 5);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* Upvalue n of the function at `idx` (numbered fid): shared with a function
 * sent earlier in this message, or its value.  An upvalue named _ENV binds
 * to the receiver's globals whatever it holds here: a sandbox (busted runs
 * each spec file in one) is the sender's, and the receiver has its own. */
static void enc_upvalue(enc *e, int idx, uint64_t fid, int n, int depth)
{
  lua_State *L = e->L;
  const void *uid = lua_upvalueid(L, idx, n);
  uint64_t v;
  if (uid && idmap_get(&e->c->upvals, uid, &v)) {
    msgpack_pack_ext(&e->pk, uint_size(v >> 8) + uint_size(v & 0xff), EXT_UPVALUE);
    msgpack_pack_uint64(&e->pk, v >> 8);
    msgpack_pack_uint64(&e->pk, v & 0xff);
    return;
  }
  if (uid && idmap_put(&e->c->upvals, uid, fid << 8 | (uint64_t)n) < 0)
    enc_nomem(e);
  const char *name = lua_getupvalue(L, idx, n);
  if (strcmp(name, "_ENV") == 0) { /* whatever the sender's environment */
    msgpack_pack_ext(&e->pk, 0, EXT_GLOBALS);
    lua_pop(L, 1);
    return;
  }
  e->path[depth].kind = STEP_UPVALUE;
  e->path[depth].idx = idx;
  e->path[depth].n = n;
  enc_value(e, lua_gettop(L), depth + 1);
  lua_pop(L, 1);
}

static void enc_function(enc *e, int idx, int depth)
{
  lua_State *L = e->L;
  const void *p = lua_topointer(L, idx);
  uint64_t id;
  lua_Debug ar;
  if (lua_iscfunction(L, idx)) {
    enc_cfunction(e, idx, depth);
    return;
  }
  if (idmap_get(&e->c->objs, p, &id)) {
    enc_ref(e, id);
    return;
  }
  enc_enter(e, depth);
  enc_newid(e, p);
  id = e->nextid;
  size_t at = enc_open(e, 0xc9, EXT_FUNCTION);
  enc_bytecode(e, idx, depth);
  lua_pushvalue(L, idx);
  lua_getinfo(L, ">u", &ar);
  msgpack_pack_array(&e->pk, ar.nups);
  for (int i = 1; i <= ar.nups; i++)
    enc_upvalue(e, idx, id, i, depth);
  enc_close(e, at, depth);
}

/* === encoder: userdata === */

static int handle_encode_call(lua_State *L)
{
  const lmpb_handle_type *t = lua_touserdata(L, 1);
  lmp_buf_t *out = lua_touserdata(L, 2);
  lua_pushinteger(L, t->encode(L, 3, out));
  return 1;
}

/* A userdata whose metatable's __name is a registered handle type; the
 * type's hook runs protected, so a hook that raises cannot leave the codec
 * marked busy. */
static void enc_userdata(enc *e, int idx, int depth)
{
  lua_State *L = e->L;
  const void *p = lua_topointer(L, idx);
  const lmpb_handle_type *t = NULL;
  const char *tname = NULL;
  uint64_t id;
  if (idmap_get(&e->c->objs, p, &id)) {
    enc_ref(e, id);
    return;
  }
  if (lua_getmetatable(L, idx)) {
    lua_pushliteral(L, "__name");
    if (lua_rawget(L, -2) == LUA_TSTRING) {
      tname = lua_tostring(L, -1);
      registry_table(L, &K_HANDLES, NULL);
      lua_pushvalue(L, -2);
      lua_rawget(L, -2);
      t = lua_touserdata(L, -1);
    }
  }
  if (t == NULL)
    enc_fail(e, depth, tname ? lua_pushfstring(L, "userdata (%s)", tname) : "userdata");
  if (e->remote) /* a segment name or a descriptor means nothing elsewhere */
    enc_fail(e, depth,
             lua_pushfstring(L, "%s (a local object: it cannot reach another machine)", tname));
  enc_newid(e, p);
  e->c->scratch.len = 0;
  lua_pushcfunction(L, handle_encode_call);
  lua_pushlightuserdata(L, (void *)t);
  lua_pushlightuserdata(L, &e->c->scratch);
  lua_pushvalue(L, idx);
  if (lua_pcall(L, 3, 1, 0) != LUA_OK)
    enc_fail(e, depth, lua_pushfstring(L, "%s (%s)", tname, luaL_tolstring(L, -1, NULL)));
  int rc = (int)lua_tointeger(L, -1);
  if (rc < 0)
    enc_fail(e, depth, lua_pushfstring(L, "%s (%s)", tname, lmp_strerror(rc)));
  size_t at = enc_open(e, 0xc9, EXT_HANDLE);
  enc_str(e, tname, strlen(tname), depth);
  msgpack_pack_bin(&e->pk, e->c->scratch.len);
  msgpack_pack_bin_body(&e->pk, e->c->scratch.data, e->c->scratch.len);
  enc_close(e, at, depth);
  lua_pop(L, 5); /* metatable, __name, handles, type, result */
}

/* Tables, functions, userdata, and what cannot be sent: kept out of
 * enc_value, which runs for every value and stays small (inlined there,
 * their registers would be saved and restored for every number). */
__attribute__((noinline)) static void enc_object(enc *e, int idx, int type, int depth)
{
  switch (type) {
  case LUA_TTABLE:
    enc_table(e, idx, depth);
    break;
  case LUA_TFUNCTION:
    enc_function(e, idx, depth);
    break;
  case LUA_TUSERDATA:
    enc_userdata(e, idx, depth);
    break;
  case LUA_TLIGHTUSERDATA:
    enc_fail(e, depth, "light userdata");
    break;
  default:
    enc_fail(e, depth, "thread");
  }
}

static void enc_value(enc *e, int idx, int depth)
{
  int type = lua_type(e->L, idx);
  if (!enc_scalar(e, idx, type, depth))
    enc_object(e, idx, type, depth);
}

/* Bring the codec's set of registered metatables up to date with the
 * registry's (at e->bymt): a registered metatable stays anchored there, so
 * its address cannot be reused while it is in the set, and lmp.register
 * moves class_epoch, so a replaced one leaves the set before the next
 * message. */
static void enc_sync_classes(enc *e)
{
  lua_State *L = e->L;
  codec *c = e->c;
  unsigned epoch = __atomic_load_n(&class_epoch, __ATOMIC_RELAXED);
  if (c->mts_epoch == epoch)
    return;
  idmap_clear(&c->mts);
  lua_pushnil(L);
  while (lua_next(L, e->bymt)) {
    lua_pop(L, 1);
    if (idmap_put(&c->mts, lua_topointer(L, -1), 1) < 0) {
      c->mts_epoch = 0;
      enc_nomem(e);
    }
  }
  c->mts_epoch = epoch;
}

static const lmp_buf_t *encode(lua_State *L, int idx, const char *what, int remote)
{
  enc e;
  idx = lua_absindex(L, idx);
  e.L = L;
  e.what = what ? what : "value";
  e.remote = remote;
  e.c = codec_acquire(L, 0);
  lua_pop(L, 1); /* it stays anchored in the registry */
  e.c->buf.len = 0;
  idmap_clear(&e.c->objs);
  idmap_clear(&e.c->upvals);
  e.nextid = 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  e.globals = lua_topointer(L, -1);
  lua_pop(L, 1);
  msgpack_packer_init(&e.pk, &e, enc_write);
  if (!lua_checkstack(L, 8))
    enc_fail(&e, 0, "the Lua stack is exhausted");
  registry_table(L, &K_BYMT, NULL);
  e.bymt = lua_gettop(L);
  enc_sync_classes(&e);
  enc_value(&e, idx, 0);
  lua_pop(L, 1);
  e.c->enc.busy = 0;
  return &e.c->buf;
}

const lmp_buf_t *lmpb_encode(lua_State *L, int idx, const char *what)
{
  return encode(L, idx, what, 0);
}

const lmp_buf_t *lmpb_encode_remote(lua_State *L, int idx, const char *what)
{
  return encode(L, idx, what, 1);
}

/* === decoder === */

typedef struct dec {
  lua_State *L;
  const unsigned char *base, *p, *end; /* end: of the message or of an ext */
  codec *c;                            /* NULL while decoding a message that is one plain value */
  int refs;                            /* stack index of the table of numbered objects */
  int keys;                            /* stack index of the key cache's strings, or 0 */
  int numbered;                        /* objects are numbered: REFs may follow */
  int depth;
  int trusted;
  uint64_t presize; /* table slots still to preallocate (see dec_newtable) */
} dec;

static void dec_release(dec *d)
{
  if (d->c)
    d->c->dec.busy = 0;
}

_Noreturn static void dec_fail(dec *d, const unsigned char *at, const char *reason)
{
  dec_release(d);
  lua_pushfstring(d->L, "corrupt message (%s at byte %I)", reason, (LUAI_UACINT)(at - d->base));
  lua_error(d->L);
  abort(); /* not reached: lua_error does not return */
}

/* A well-formed message the receiver will not (or cannot) accept. */
_Noreturn static void dec_refuse(dec *d, const char *msg)
{
  dec_release(d);
  lmpb_error_raise(d->L, "serialize", "%s", msg);
  abort(); /* not reached */
}

static void dec_need(dec *d, size_t n)
{
  if ((size_t)(d->end - d->p) < n)
    dec_fail(d, d->p, "truncated");
}

/* An n-byte big-endian number. */
static uint64_t dec_be(dec *d, int n)
{
  dec_need(d, (size_t)n);
  uint64_t v = lmpb_get_be(d->p, n);
  d->p += n;
  return v;
}

/* As enc_enter: room for four levels of 8 slots at every fourth. */
static void dec_enter(dec *d, const unsigned char *at)
{
  if (++d->depth > CODEC_MAXDEPTH)
    dec_fail(d, at, "nested deeper than 200 levels");
  if ((d->depth & 3) == 1 && !lua_checkstack(d->L, 4 * 8))
    dec_fail(d, at, "Lua stack exhausted");
}

/* Number the object on top of the stack. */
static void dec_newref(dec *d)
{
  if (!d->numbered)
    return;
  lua_pushvalue(d->L, -1);
  lua_rawseti(d->L, d->refs, ++d->c->nrefs);
}

static void dec_getref(dec *d, const unsigned char *at, uint64_t id)
{
  if (id < 1 || id > (uint64_t)d->c->nrefs)
    dec_fail(d, at, "reference to an unknown object");
  lua_rawgeti(d->L, d->refs, (lua_Integer)id);
}

static uint64_t dec_uint(dec *d)
{
  const unsigned char *at = d->p;
  dec_need(d, 1);
  unsigned c = *d->p++;
  if (c <= 0x7f)
    return c;
  if (c >= 0xcc && c <= 0xcf)
    return dec_be(d, 1 << (c - 0xcc));
  dec_fail(d, at, "unsigned integer expected");
}

/* A str or bin, in place. */
static const char *dec_bytes(dec *d, size_t *n)
{
  const unsigned char *at = d->p, *s;
  dec_need(d, 1);
  unsigned c = *d->p++;
  if (c >= 0xa0 && c <= 0xbf)
    *n = c & 0x1f;
  else if (c == 0xd9 || c == 0xc4)
    *n = (size_t)dec_be(d, 1);
  else if (c == 0xda || c == 0xc5)
    *n = (size_t)dec_be(d, 2);
  else if (c == 0xdb || c == 0xc6)
    *n = (size_t)dec_be(d, 4);
  else
    dec_fail(d, at, "string expected");
  dec_need(d, *n);
  s = d->p;
  d->p += *n;
  return (const char *)s;
}

static int dec_string(dec *d, size_t n)
{
  dec_need(d, n);
  lua_pushlstring(d->L, (const char *)d->p, n);
  d->p += n;
  return LUA_TSTRING;
}

/* The header of an array or map: its count; *ismap says which. */
static uint64_t dec_count(dec *d, int *ismap)
{
  const unsigned char *at = d->p;
  dec_need(d, 1);
  unsigned c = *d->p++;
  *ismap = (c >= 0x80 && c <= 0x8f) || c == 0xde || c == 0xdf;
  if (c >= 0x80 && c <= 0x9f)
    return c & 0x0f;
  if (c == 0xdc || c == 0xde)
    return dec_be(d, 2);
  if (c == 0xdd || c == 0xdf)
    return dec_be(d, 4);
  dec_fail(d, at, "array or map expected");
}

/* What dec_value pushed, as far as a map key needs to know: the Lua type,
 * or DEC_OTHER for a float or an ext (the stack has to be asked). */
#define DEC_OTHER (-1)

static int dec_value(dec *d);

/* Push a new table for `n` elements, numbered; the count is checked against
 * the bytes left (each element takes at least one).  The table is sized
 * for its elements in advance from a budget of one slot per byte of the
 * message: a well-formed message never needs more (every element has a
 * byte of its own), while nested headers that each claim the bytes left
 * would otherwise make a 1 MiB message allocate gigabytes before failing. */
static int dec_newtable(dec *d, const unsigned char *at, uint64_t n, int ismap)
{
  uint64_t left = (uint64_t)(d->end - d->p);
  if (n > (ismap ? left / 2 : left) || n > INT_MAX)
    dec_fail(d, at, ismap ? "map longer than the message" : "array longer than the message");
  uint64_t size = n < d->presize ? n : d->presize;
  d->presize -= size;
  lua_createtable(d->L, ismap ? 0 : (int)size, ismap ? (int)size : 0);
  dec_newref(d);
  return lua_gettop(d->L);
}

/* Push the key that comes next, a fixstr of 1..KEYMAXLEN bytes (the
 * caller checked its tag), through the key cache. */
static void dec_key(dec *d)
{
  lua_State *L = d->L;
  size_t n = *d->p & 0x1f;
  dec_need(d, 1 + n);
  const unsigned char *p = d->p + 1;
  uint32_t h = (uint32_t)n;
  h = h * 31 + p[0];
  h = h * 31 + p[n - 1];
  h = h * 31 + p[n >> 1];
  h = (h * 0x9e3779b1u) >> 20 & (KEYCACHE - 1);
  keyslot *k = &d->c->keys[h];
  d->p = p + n;
  if (k->len == n && k->s && memcmp(k->s, p, n) == 0) {
    lua_rawgeti(L, d->keys, (lua_Integer)h + 1);
    return;
  }
  const char *s = lua_pushlstring(L, (const char *)p, n);
  lua_pushvalue(L, -1);
  lua_rawseti(L, d->keys, (lua_Integer)h + 1);
  k->s = s;
  k->len = n;
}

static void dec_fill(dec *d, int t, uint64_t n, int ismap)
{
  lua_State *L = d->L;
  for (uint64_t i = 1; i <= n; i++) {
    if (!ismap) {
      dec_value(d);
      lua_rawseti(L, t, (lua_Integer)i);
      continue;
    }
    const unsigned char *at = d->p;
    int k;
    if (at < d->end && *at > 0xa0 && *at <= 0xa0 + KEYMAXLEN) {
      dec_key(d);
      k = LUA_TSTRING;
    } else {
      k = dec_value(d);
    }
    if (k == DEC_OTHER)
      k = lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1)
              ? DEC_OTHER
              : lua_type(L, -1);
    if (k == LUA_TNIL)
      dec_fail(d, at, "nil map key");
    if (k == DEC_OTHER)
      dec_fail(d, at, "NaN map key");
    dec_value(d);
    lua_rawset(L, t);
  }
}

static void dec_table(dec *d, const unsigned char *at, uint64_t n, int ismap)
{
  dec_enter(d, at);
  int t = dec_newtable(d, at, n, ismap);
  dec_fill(d, t, n, ismap);
  d->depth--;
}

/* === decoder: ext types === */

typedef struct chunk {
  const char *p;
  size_t n;
} chunk;

static const char *chunk_read(lua_State *L, void *data, size_t *n)
{
  chunk *ck = data;
  (void)L;
  *n = ck->n;
  ck->n = 0;
  return *n ? ck->p : NULL;
}

/* When the next value is an ext of `type`, step over its header and return
 * its length in *n; else leave the position alone and return 0. */
static int dec_peek_ext(dec *d, int type, size_t *n)
{
  const unsigned char *p = d->p;
  size_t left = (size_t)(d->end - p), lenbytes, len;
  if (left < 2)
    return 0;
  if (*p >= 0xd4 && *p <= 0xd8) {
    lenbytes = 0;
    len = (size_t)1 << (*p - 0xd4);
  } else if (*p >= 0xc7 && *p <= 0xc9) {
    lenbytes = (size_t)1 << (*p - 0xc7);
    if (left < 2 + lenbytes)
      return 0;
    len = 0;
    for (size_t i = 0; i < lenbytes; i++)
      len = len << 8 | p[1 + i];
  } else {
    return 0;
  }
  if ((signed char)p[1 + lenbytes] != type)
    return 0;
  d->p = p + 2 + lenbytes;
  *n = len;
  return 1;
}

/* Upvalue i of the function at f: joined to one decoded earlier, or set. */
static void dec_upvalue(dec *d, int f, int i)
{
  lua_State *L = d->L;
  const unsigned char *at = d->p, *end = d->end;
  lua_Debug ar;
  size_t n;
  if (!dec_peek_ext(d, EXT_UPVALUE, &n)) {
    dec_value(d);
    lua_setupvalue(L, f, i);
    return;
  }
  dec_need(d, n);
  d->end = d->p + n;
  uint64_t id = dec_uint(d), up = dec_uint(d);
  if (d->p != d->end)
    dec_fail(d, at, "malformed upvalue reference");
  d->end = end;
  dec_getref(d, at, id);
  if (lua_type(L, -1) != LUA_TFUNCTION || lua_iscfunction(L, -1))
    dec_fail(d, at, "upvalue reference to a non-function");
  lua_pushvalue(L, -1);
  lua_getinfo(L, ">u", &ar);
  if (up < 1 || up > ar.nups)
    dec_fail(d, at, "reference to an unknown upvalue");
  lua_upvaluejoin(L, f, i, lua_gettop(L), (int)up);
  lua_pop(L, 1);
}

static void dec_function(dec *d, const unsigned char *at)
{
  lua_State *L = d->L;
  lua_Debug ar;
  int ismap;
  size_t n;
  if (!d->trusted)
    dec_refuse(d, "refusing to load code from an untrusted message "
                  "(deserialize with {trusted = true})");
  dec_enter(d, at);
  chunk ck;
  ck.p = dec_bytes(d, &n);
  ck.n = n;
  if (lua_load(L, chunk_read, &ck, "=(message)", "b") != LUA_OK)
    dec_fail(d, at, lua_pushfstring(L, "bad function: %s", lua_tostring(L, -1)));
  int f = lua_gettop(L);
  dec_newref(d);
  lua_pushvalue(L, f);
  lua_getinfo(L, ">u", &ar);
  uint64_t nups = dec_count(d, &ismap);
  if (ismap || nups != ar.nups)
    dec_fail(d, at, "wrong number of upvalues");
  for (int i = 1; i <= ar.nups; i++)
    dec_upvalue(d, f, i);
  d->depth--;
}

static void dec_cfunction(dec *d)
{
  lua_State *L = d->L;
  size_t ml, fl;
  if (!d->trusted)
    dec_refuse(d, "refusing to accept a C function from an untrusted message "
                  "(deserialize with {trusted = true})");
  const char *mod = dec_bytes(d, &ml);
  const char *field = dec_bytes(d, &fl);
  lua_pushlstring(L, mod, ml);
  lua_pushlstring(L, "", 1);
  lua_pushlstring(L, field, fl);
  lua_concat(L, 3);
  cfunc_get(L, -1);
  if (lua_isnil(L, -1))
    dec_refuse(d, lua_pushfstring(L, "cannot receive C function '%s.%s': not in package.loaded",
                                  lua_pushlstring(L, mod, ml), lua_pushlstring(L, field, fl)));
  lua_remove(L, -2);
}

static void dec_globals(dec *d)
{
  if (!d->trusted)
    dec_refuse(d, "refusing to bind the receiver's globals from an untrusted message "
                  "(deserialize with {trusted = true})");
  lua_rawgeti(d->L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
}

static int handle_decode_call(lua_State *L)
{
  const lmpb_handle_type *t = lua_touserdata(L, 1);
  const char *data = lua_touserdata(L, 2);
  size_t n = (size_t)lua_tointeger(L, 3);
  t->decode(L, data, n);
  return 1;
}

static void dec_handle(dec *d)
{
  lua_State *L = d->L;
  size_t tl, n;
  const char *tname = dec_bytes(d, &tl);
  const char *data = dec_bytes(d, &n);
  registry_table(L, &K_HANDLES, NULL);
  lua_pushlstring(L, tname, tl);
  lua_rawget(L, -2);
  const lmpb_handle_type *t = lua_touserdata(L, -1);
  if (t == NULL)
    dec_refuse(d, lua_pushfstring(L, "cannot receive a handle of unknown type '%s'",
                                  lua_pushlstring(L, tname, tl)));
  lua_pop(L, 2);
  lua_pushcfunction(L, handle_decode_call);
  lua_pushlightuserdata(L, (void *)t);
  lua_pushlightuserdata(L, (void *)data);
  lua_pushinteger(L, (lua_Integer)n);
  if (lua_pcall(L, 3, 1, 0) != LUA_OK) { /* an lmp.Error as it is, else made one */
    if (lua_type(L, -1) != LUA_TSTRING) {
      dec_release(d);
      lua_error(L);
    }
    dec_refuse(d, lua_tostring(L, -1));
  }
  dec_newref(d);
}

/* Classes of lmp's own are registered by their module when it loads: a
 * process that never used one has not loaded it.  The Lua side gives a
 * loader (lmp.core._class_loader(fn), from scripts/lmp/init.lua) that loads
 * the module of a name it knows and answers true; the decoder asks it when
 * a message names a class not registered here, and looks again. */
static int load_own_class(lua_State *L, const char *name, size_t n)
{
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &K_CLASSLOAD) != LUA_TFUNCTION) {
    lua_pop(L, 1);
    return 0;
  }
  lua_pushlstring(L, name, n);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    lua_pop(L, 1);
    return 0;
  }
  int loaded = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return loaded;
}

/* lmp.core._class_loader(fn): the loader above. */
static int l_class_loader(lua_State *L)
{
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &K_CLASSLOAD);
  return 0;
}

/* Push the metatable registered under the name that comes next. */
static void dec_registered(dec *d)
{
  lua_State *L = d->L;
  size_t n;
  const char *name = dec_bytes(d, &n);
  registry_table(L, &K_BYNAME, NULL);
  lua_pushlstring(L, name, n);
  if (lua_rawget(L, -2) != LUA_TTABLE && load_own_class(L, name, n)) {
    lua_pop(L, 1);
    lua_pushlstring(L, name, n);
    lua_rawget(L, -2);
  }
  if (lua_type(L, -1) != LUA_TTABLE)
    dec_refuse(d, lua_pushfstring(L,
                                  "cannot receive a '%s': no metatable registered under "
                                  "that name (lmp.register)",
                                  lua_pushlstring(L, name, n)));
  lua_remove(L, -2);
}

static void dec_class(dec *d, const unsigned char *at)
{
  lua_State *L = d->L;
  int ismap;
  dec_registered(d);
  dec_enter(d, at);
  uint64_t count = dec_count(d, &ismap);
  int t = dec_newtable(d, at, count, ismap);
  dec_fill(d, t, count, ismap);
  lua_pushvalue(L, t - 1);
  lua_setmetatable(L, t);
  lua_remove(L, t - 1);
  d->depth--;
}

/* An ext of `n` bytes: its type, then a payload that must be used exactly. */
static void dec_ext(dec *d, const unsigned char *at, size_t n)
{
  const unsigned char *end = d->end;
  int type = (signed char)dec_be(d, 1);
  dec_need(d, n);
  d->end = d->p + n;
  switch (type) {
  case EXT_REF:
    dec_getref(d, at, dec_uint(d));
    break;
  case EXT_FUNCTION:
    dec_function(d, at);
    break;
  case EXT_CFUNCTION:
    dec_cfunction(d);
    break;
  case EXT_GLOBALS:
    dec_globals(d);
    break;
  case EXT_HANDLE:
    dec_handle(d);
    break;
  case EXT_CLASS:
    dec_class(d, at);
    break;
  case EXT_METATABLE:
    dec_registered(d);
    dec_newref(d);
    break;
  default:
    dec_fail(d, at, lua_pushfstring(d->L, "unknown ext type %d", type));
  }
  if (d->p != d->end)
    dec_fail(d, d->p, "ext payload longer than its content");
  d->end = end;
}

/* === decoder: values === */

static void dec_number(dec *d, unsigned c)
{
  lua_State *L = d->L;
  uint64_t v;
  if (c == 0xca) {
    uint32_t u = (uint32_t)dec_be(d, 4);
    float f;
    memcpy(&f, &u, sizeof f);
    lua_pushnumber(L, (lua_Number)f);
  } else if (c == 0xcb) {
    v = dec_be(d, 8);
    double x;
    memcpy(&x, &v, sizeof x);
    lua_pushnumber(L, (lua_Number)x);
  } else if (c <= 0xcf) { /* uint 8..64; past the integers, a float */
    v = dec_be(d, 1 << (c - 0xcc));
    if (v > (uint64_t)LUA_MAXINTEGER)
      lua_pushnumber(L, (lua_Number)v);
    else
      lua_pushinteger(L, (lua_Integer)v);
  } else { /* int 8..64 */
    int n = 1 << (c - 0xd0);
    v = dec_be(d, n);
    if (n < 8 && (v >> (8 * n - 1)))
      v |= ~(uint64_t)0 << (8 * n); /* sign-extend */
    lua_pushinteger(L, (lua_Integer)(int64_t)v);
  }
}

static int dec_tagged(dec *d, const unsigned char *at, unsigned c)
{
  lua_State *L = d->L;
  switch (c) {
  case 0xc0:
    lua_pushnil(L);
    return LUA_TNIL;
  case 0xc2:
  case 0xc3:
    lua_pushboolean(L, c == 0xc3);
    return LUA_TBOOLEAN;
  case 0xc4:
  case 0xd9:
    return dec_string(d, (size_t)dec_be(d, 1));
  case 0xc5:
  case 0xda:
    return dec_string(d, (size_t)dec_be(d, 2));
  case 0xc6:
  case 0xdb:
    return dec_string(d, (size_t)dec_be(d, 4));
  case 0xc7:
  case 0xc8:
  case 0xc9:
    dec_ext(d, at, (size_t)dec_be(d, 1 << (c - 0xc7)));
    return DEC_OTHER;
  case 0xd4:
  case 0xd5:
  case 0xd6:
  case 0xd7:
  case 0xd8:
    dec_ext(d, at, (size_t)1 << (c - 0xd4));
    return DEC_OTHER;
  case 0xdc:
  case 0xdd:
    dec_table(d, at, dec_be(d, c == 0xdc ? 2 : 4), 0);
    return LUA_TTABLE;
  case 0xde:
  case 0xdf:
    dec_table(d, at, dec_be(d, c == 0xde ? 2 : 4), 1);
    return LUA_TTABLE;
  case 0xc1:
    dec_fail(d, at, "invalid type byte 0xc1");
  default: /* 0xca..0xd3 */
    dec_number(d, c);
    return DEC_OTHER; /* a float may be NaN */
  }
}

/* Push the next value; returns what it is (see DEC_OTHER). */
static int dec_value(dec *d)
{
  const unsigned char *at = d->p;
  dec_need(d, 1);
  unsigned c = *d->p++;
  if (c <= 0x7f) {
    lua_pushinteger(d->L, (lua_Integer)c);
    return LUA_TNUMBER;
  }
  if (c >= 0xe0) {
    lua_pushinteger(d->L, (lua_Integer)c - 256);
    return LUA_TNUMBER;
  }
  if (c <= 0x9f) {
    dec_table(d, at, c & 0x0f, c <= 0x8f);
    return LUA_TTABLE;
  }
  if (c <= 0xbf)
    return dec_string(d, c & 0x1f);
  return dec_tagged(d, at, c);
}

/* Does a message starting with byte c hold objects that may be numbered? */
static int holds_objects(unsigned c)
{
  return (c >= 0x80 && c <= 0x9f) || (c >= 0xc7 && c <= 0xc9) || (c >= 0xd4 && c <= 0xd8) ||
         (c >= 0xdc && c <= 0xdf);
}

/*
 * Can the message refer to an object met earlier in it?  Only a REF, or an
 * UPVALUE naming an earlier function, does: an ext of type EXT_REF or
 * EXT_UPVALUE, whose type byte sits 1 byte after a fixext tag, 2 after ext
 * 8, 3 after ext 16, 5 after ext 32.  Where no such byte follows such a tag
 * there is no reference, and the decoder numbers nothing; a match inside a
 * string or a number only costs the numbering.
 */
static int may_refer(const unsigned char *p, size_t len)
{
  static const unsigned char types[] = {EXT_REF, EXT_UPVALUE};
  for (size_t t = 0; t < sizeof types; t++) {
    const unsigned char *q = p, *end = p + len;
    while ((q = memchr(q, types[t], (size_t)(end - q))) != NULL) {
      size_t at = (size_t)(q - p);
      if ((at >= 1 && q[-1] >= 0xd4 && q[-1] <= 0xd8) || (at >= 2 && q[-2] == 0xc7) ||
          (at >= 3 && q[-3] == 0xc8) || (at >= 5 && q[-5] == 0xc9))
        return 1;
      q++;
    }
  }
  return 0;
}

/* Empty the refs table (at `refs`, of the codec at `ud`): cleared in place
 * while small, else replaced by a new one sized for as many objects (a
 * stream of messages tends to repeat its shape), which costs less than
 * clearing each entry. */
static void refs_clear(lua_State *L, codec *c, int ud, int refs)
{
  if (c->nrefs > 64) {
    lua_createtable(L, c->nrefs > 4096 ? 16 : (int)c->nrefs, 0);
    lua_pushvalue(L, -1);
    lua_setiuservalue(L, ud, 1);
    lua_replace(L, refs);
  } else {
    for (lua_Integer i = 1; i <= c->nrefs; i++) {
      lua_pushnil(L);
      lua_rawseti(L, refs, i);
    }
  }
  c->nrefs = 0;
}

void lmpb_decode(lua_State *L, const char *data, size_t len, int trusted)
{
  dec d;
  d.L = L;
  d.base = d.p = (const unsigned char *)data;
  d.end = d.base + len;
  d.c = NULL;
  d.refs = d.keys = d.depth = d.numbered = 0;
  d.trusted = trusted;
  d.presize = len;
  if (!lua_checkstack(L, 8))
    luaL_error(L, "stack overflow (cannot decode a message)");
  if (len == 0 || !holds_objects(*d.p)) {
    dec_value(&d);
    if (d.p != d.end)
      dec_fail(&d, d.p, "trailing bytes");
    return;
  }
  d.c = codec_acquire(L, 1);
  int ud = lua_gettop(L);
  lua_getiuservalue(L, ud, 1);
  d.refs = ud + 1;
  lua_getiuservalue(L, ud, 2);
  d.keys = ud + 2;
  refs_clear(L, d.c, ud, d.refs); /* what a failed decode left behind */
  d.numbered = may_refer(d.base, len);
  dec_value(&d);
  if (d.p != d.end)
    dec_fail(&d, d.p, "trailing bytes");
  refs_clear(L, d.c, ud, d.refs);
  d.c->dec.busy = 0;
  lua_replace(L, ud);
  lua_settop(L, ud);
}

/* === registration === */

void lmpb_register_handle(lua_State *L, const lmpb_handle_type *t)
{
  registry_table(L, &K_HANDLES, NULL);
  lua_pushlightuserdata(L, (void *)t);
  lua_setfield(L, -2, t->tname);
  lua_pop(L, 1);
}

void lmpb_register_class(lua_State *L, const char *name, int mt_idx)
{
  mt_idx = lua_absindex(L, mt_idx);
  registry_table(L, &K_BYNAME, NULL);
  registry_table(L, &K_BYMT, NULL);
  int byname = lua_gettop(L) - 1, bymt = byname + 1;
  lua_pushstring(L, name); /* unbind what the name was bound to */
  if (lua_rawget(L, byname) != LUA_TNIL) {
    lua_pushnil(L);
    lua_rawset(L, bymt);
  } else {
    lua_pop(L, 1);
  }
  lua_pushvalue(L, mt_idx); /* and the name the metatable had */
  if (lua_rawget(L, bymt) != LUA_TNIL) {
    lua_pushnil(L);
    lua_rawset(L, byname);
  } else {
    lua_pop(L, 1);
  }
  if (__atomic_add_fetch(&class_epoch, 1, __ATOMIC_RELAXED) == 0) /* 0: never built */
    __atomic_add_fetch(&class_epoch, 1, __ATOMIC_RELAXED);
  lua_pushstring(L, name);
  lua_pushvalue(L, mt_idx);
  lua_rawset(L, byname);
  lua_pushvalue(L, mt_idx);
  lua_pushstring(L, name);
  lua_rawset(L, bymt);
  lua_pop(L, 2);
}

/* === Lua functions === */

/* lmp.serialize(v) -> string */
static int l_serialize(lua_State *L)
{
  luaL_checkany(L, 1);
  const lmp_buf_t *b = lmpb_encode(L, 1, "value");
  lua_pushlstring(L, b->data, b->len);
  return 1;
}

/* lmp.deserialize(s [, {trusted = bool}]) -> v */
static int l_deserialize(lua_State *L)
{
  static const char *const options[] = {"trusted", NULL};
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  int trusted = 0;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lmpb_checkoptions(L, 2, options);
    lua_getfield(L, 2, "trusted");
    trusted = lua_toboolean(L, -1);
  }
  lmpb_decode(L, s, len, trusted);
  return 1;
}

/* lmp.register(name, mt) -> mt */
static int l_register(lua_State *L)
{
  luaL_checkstring(L, 1);
  const char *name = lmpb_checkcstring(L, 1, 1, "name");
  luaL_checktype(L, 2, LUA_TTABLE);
  lmpb_register_class(L, name, 2);
  lua_settop(L, 2);
  return 1;
}

int lmpb_codec_open(lua_State *L)
{
  static const luaL_Reg funcs[] = {
      {"serialize", l_serialize},
      {"deserialize", l_deserialize},
      {"register", l_register},
      {"_class_loader", l_class_loader},
      {NULL, NULL},
  };
  codec_push(L, &K_CODEC);
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
  return 0;
}

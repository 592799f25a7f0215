/*
 * plain.c -- lists of plain values, the pool's fast path to the codec's
 * bytes.
 *
 * Most maps move numbers and strings, for which the codec's generality
 * (identity maps, paths for error messages) costs more than the values
 * themselves.  A list whose items are all nil, booleans, numbers or strings
 * is packed here directly from the caller's table, as the plain msgpack
 * array the codec would have written, and such an array is unpacked
 * directly into its destination: the parent writes a map chunk's results
 * straight into the result table, a worker reads a chunk's items one by one
 * as it runs them and packs each result as it comes.  Anything else goes
 * through the codec (codec.c), which reads these bytes as well.  The
 * halves a worker runs once per item are inline in plain.h.
 *
 * The readers trust nothing: every length is checked against the bytes
 * left, and an array cannot announce more items than bytes remain.
 * tests/c/fuzz_decode.c feeds them mutated messages and checks that they
 * agree with the codec.
 */
#include <stdint.h>
#include <string.h>

#include "plain.h"

/* === writers === */

static int put_str(lmp_buf_t *b, const char *s, size_t n)
{
  int ok = n <= 31            ? plain_tagged(b, 0xa0 | (unsigned)n, 0, 0)
           : n <= 0xff        ? plain_tagged(b, 0xd9, n, 1)
           : n <= 0xffff      ? plain_tagged(b, 0xda, n, 2)
           : n <= 0xffffffffu ? plain_tagged(b, 0xdb, n, 4)
                              : 0;
  unsigned char *p = ok ? plain_room(b, n) : NULL;
  if (!p)
    return 0;
  if (n)
    memcpy(p, s, n);
  b->len += n;
  return 1;
}

/* Pack the value at idx, of Lua type `type`, as the codec would; 0 if it
 * is not a plain value (or memory ran out). */
static inline int pack_typed(lua_State *L, int idx, int type, lmp_buf_t *b)
{
  size_t n;
  const char *s;
  switch (type) {
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx))
      return plain_int(b, (int64_t)lua_tointeger(L, idx));
    double d = (double)lua_tonumber(L, idx);
    uint64_t bits;
    memcpy(&bits, &d, 8);
    return plain_tagged(b, 0xcb, bits, 8);
  case LUA_TNIL:
    return plain_tagged(b, 0xc0, 0, 0);
  case LUA_TBOOLEAN:
    return plain_tagged(b, lua_toboolean(L, idx) ? 0xc3 : 0xc2, 0, 0);
  case LUA_TSTRING:
    s = lua_tolstring(L, idx, &n);
    return put_str(b, s, n);
  default:
    return 0;
  }
}

int lmpb_plain_put_any(lua_State *L, int idx, lmp_buf_t *b)
{
  return pack_typed(L, idx, lua_type(L, idx), b);
}

/* Static, and lmpb_plain_put_array below calls it: a call between two
 * exported functions of a -fPIC object goes through the PLT and is not
 * inlined. */
static int put_array(lmp_buf_t *b, size_t n)
{
  return n <= 15            ? plain_tagged(b, 0x90 | (unsigned)n, 0, 0)
         : n <= 0xffff      ? plain_tagged(b, 0xdc, n, 2)
         : n <= 0xffffffffu ? plain_tagged(b, 0xdd, n, 4)
                            : 0;
}

int lmpb_plain_put_array(lmp_buf_t *b, size_t n)
{
  return put_array(b, n);
}

int lmpb_plain_put_nil(lmp_buf_t *b)
{
  return plain_tagged(b, 0xc0, 0, 0);
}

#define PACK_BATCH 64 /* values on the stack at a time */

/* Pack t[first .. first+count-1] into out as an array: 0, or -1 when an
 * item is not a plain value or t has a metatable (then use the codec). */
int lmpb_plain_pack_list(lua_State *L, int t, lua_Integer first, lua_Integer count, lmp_buf_t *out)
{
  if (lua_getmetatable(L, t)) {
    lua_pop(L, 1);
    return -1;
  }
  out->len = 0;
  if (!put_array(out, (size_t)count))
    return -1;
  luaL_checkstack(L, PACK_BATCH, NULL);
  for (lua_Integer i = first, end = first + count; i < end;) {
    int k = end - i < PACK_BATCH ? (int)(end - i) : PACK_BATCH, base = lua_gettop(L);
    int types[PACK_BATCH];
    for (int j = 0; j < k; j++)
      types[j] = lua_rawgeti(L, t, i + j);
    for (int j = 1; j <= k; j++) {
      if (!pack_typed(L, base + j, types[j - 1], out)) {
        lua_settop(L, base);
        return -1;
      }
    }
    lua_settop(L, base);
    i += k;
  }
  return 0;
}

/* Pack the single value at idx: 0, or -1 if it is not a plain value. */
int lmpb_plain_pack_value(lua_State *L, int idx, lmp_buf_t *out)
{
  out->len = 0;
  return lmpb_plain_put(L, idx, out) ? 0 : -1;
}

size_t lmpb_plain_put_number(unsigned char out[9], int isint, lua_Integer i, double f)
{
  uint64_t u;
  if (isint)
    u = (uint64_t)i;
  else
    memcpy(&u, &f, sizeof u);
  out[0] = isint ? 0xd3 : 0xcb;
  lmpb_put_be(out + 1, u, 8);
  return 9;
}

/* === readers === */

int lmpb_plain_next_any(lua_State *L, const unsigned char **pp, const unsigned char *end)
{
  const unsigned char *p = *pp;
  size_t n, len = 0;
  unsigned c = *p++;
  if (c <= 0x7f) {
    lua_pushinteger(L, c);
  } else if (c >= 0xe0) {
    lua_pushinteger(L, (int8_t)c);
  } else if (c >= 0xa0 && c <= 0xbf) {
    len = c & 0x1f;
    goto str;
  } else {
    switch (c) {
    case 0xc0:
      lua_pushnil(L);
      break;
    case 0xc2:
    case 0xc3:
      lua_pushboolean(L, c == 0xc3);
      break;
    case 0xca:
    case 0xcb: {
      n = c == 0xca ? 4 : 8;
      if ((size_t)(end - p) < n)
        return 0;
      uint64_t v = lmpb_get_be(p, (int)n);
      p += n;
      if (n == 4) {
        uint32_t u = (uint32_t)v;
        float f;
        memcpy(&f, &u, 4);
        lua_pushnumber(L, (lua_Number)f);
      } else {
        double d;
        memcpy(&d, &v, 8);
        lua_pushnumber(L, (lua_Number)d);
      }
      break;
    }
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf: {
      n = (size_t)1 << (c - 0xcc);
      if ((size_t)(end - p) < n)
        return 0;
      uint64_t v = lmpb_get_be(p, (int)n);
      p += n;
      if (v > (uint64_t)LUA_MAXINTEGER)
        lua_pushnumber(L, (lua_Number)v);
      else
        lua_pushinteger(L, (lua_Integer)v);
      break;
    }
    case 0xd0:
    case 0xd1:
    case 0xd2:
    case 0xd3: {
      n = (size_t)1 << (c - 0xd0);
      if ((size_t)(end - p) < n)
        return 0;
      uint64_t v = lmpb_get_be(p, (int)n);
      p += n;
      if (n < 8 && (v >> (8 * n - 1)))
        v |= ~(uint64_t)0 << (8 * n);
      lua_pushinteger(L, (lua_Integer)(int64_t)v);
      break;
    }
    case 0xd9:
    case 0xda:
    case 0xdb: /* str 8, 16, 32 */
    case 0xc4:
    case 0xc5:
    case 0xc6: /* bin: read as a string */
      n = (size_t)1 << (c >= 0xd9 ? c - 0xd9 : c - 0xc4);
      if ((size_t)(end - p) < n)
        return 0;
      len = (size_t)lmpb_get_be(p, (int)n);
      p += n;
      goto str;
    default:
      return 0;
    }
  }
  *pp = p;
  return 1;
str:
  if ((size_t)(end - p) < len)
    return 0;
  lua_pushlstring(L, (const char *)p, len);
  *pp = p + len;
  return 1;
}

/* Step over an array header: the pointer after it (and its count in *n),
 * or NULL. */
static const unsigned char *array_header(const unsigned char *p, const unsigned char *end,
                                         uint64_t *n)
{
  if (p >= end)
    return NULL;
  if (*p >= 0x90 && *p <= 0x9f) {
    *n = *p & 0x0f;
    return p + 1;
  }
  int w = *p == 0xdc ? 2 : *p == 0xdd ? 4 : 0;
  if (!w || end - p < 1 + w)
    return NULL;
  *n = lmpb_get_be(p + 1, w);
  return p + 1 + w;
}

/* Step over one plain value: the pointer after it, or NULL if it is
 * something else or truncated. */
static const unsigned char *skip_scalar_any(const unsigned char *p, const unsigned char *end)
{
  size_t n;
  if (p >= end)
    return NULL;
  unsigned c = *p++;
  if (c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3)
    return p;
  if (c >= 0xa0 && c <= 0xbf) {
    n = c & 0x1f;
  } else if (c == 0xca || c == 0xcb) {
    n = c == 0xca ? 4 : 8;
  } else if (c >= 0xcc && c <= 0xd3) {
    n = (size_t)1 << ((c - 0xcc) & 3);
  } else if ((c >= 0xd9 && c <= 0xdb) || (c >= 0xc4 && c <= 0xc6)) {
    int w = 1 << (c >= 0xd9 ? c - 0xd9 : c - 0xc4);
    if (end - p < w)
      return NULL;
    n = (size_t)lmpb_get_be(p, w);
    p += w;
  } else {
    return NULL;
  }
  return (size_t)(end - p) < n ? NULL : p + n;
}

/* The same, with integers (most lists of numbers) handled inline. */
static inline const unsigned char *skip_scalar(const unsigned char *p, const unsigned char *end)
{
  if (p < end && *p <= 0x7f)
    return p + 1;
  if (p < end && *p >= 0xcc && *p <= 0xd3) { /* uint, int 8..64 */
    size_t n = 1 + ((size_t)1 << ((*p - 0xcc) & 3));
    return (size_t)(end - p) < n ? NULL : p + n;
  }
  return skip_scalar_any(p, end);
}

/* Unpack `count` plain values from p into t[first...]: the position after
 * them, or NULL at the first value that is not plain (the ones before it
 * are written). */
static const unsigned char *unpack_items(lua_State *L, const unsigned char *p,
                                         const unsigned char *end, uint64_t count, int t,
                                         lua_Integer first)
{
  for (uint64_t i = 0; i < count; i++) {
    if (p >= end || !lmpb_plain_next(L, &p, end))
      return NULL;
    lua_rawseti(L, t, first + (lua_Integer)i);
  }
  return p;
}

/* Unpack a msgpack array of plain values into t[first...]: the number of
 * items, or -1 when the message is something else.  Some items may have
 * been written by then: the caller falls back to the codec, whose result
 * replaces them all (a list of plain values is the case worth one pass). */
lua_Integer lmpb_plain_unpack_list(lua_State *L, const char *data, size_t len, int t,
                                   lua_Integer first)
{
  const unsigned char *end = (const unsigned char *)data + len, *p;
  uint64_t n;
  if (!(p = array_header((const unsigned char *)data, end, &n)) || n > (uint64_t)(end - p))
    return -1;
  if (unpack_items(L, p, end, n, t, first) != end)
    return -1;
  return (lua_Integer)n;
}

const unsigned char *lmpb_plain_items(const char *data, size_t len, uint64_t *n)
{
  const unsigned char *end = (const unsigned char *)data + len, *p, *q;
  if (!(p = array_header((const unsigned char *)data, end, n)))
    return NULL;
  q = p;
  for (uint64_t i = 0; i < *n && q; i++)
    q = skip_scalar(q, end);
  return q == end ? p : NULL;
}

int lmpb_plain_number(const void *msg, size_t len, lua_Integer *i, double *f, int *isint)
{
  const unsigned char *q = msg;
  if (len < 1)
    return 0;
  unsigned c = *q++;
  size_t n = len - 1;
  *isint = 1;
  if (c <= 0x7f && n == 0) {
    *i = c;
  } else if (c >= 0xe0 && n == 0) {
    *i = (int8_t)c;
  } else if (c >= 0xcc && c <= 0xcf && n == (size_t)1 << (c - 0xcc)) {
    uint64_t u = lmpb_get_be(q, (int)n);
    if (u > (uint64_t)LUA_MAXINTEGER) { /* another writer's: a float, as the codec reads it */
      *f = (double)u;
      *isint = 0;
    } else {
      *i = (lua_Integer)u;
    }
  } else if (c >= 0xd0 && c <= 0xd3 && n == (size_t)1 << (c - 0xd0)) {
    uint64_t u = lmpb_get_be(q, (int)n);
    int bits = 8 * (int)n;
    if (bits < 64 && (u >> (bits - 1)) & 1)
      u |= ~(uint64_t)0 << bits; /* sign-extend */
    *i = (lua_Integer)u;
  } else if (c == 0xcb && n == 8) {
    uint64_t u = lmpb_get_be(q, 8);
    memcpy(f, &u, sizeof *f);
    *isint = 0;
  } else if (c == 0xca && n == 4) {
    uint32_t u = (uint32_t)lmpb_get_be(q, 4);
    float x;
    memcpy(&x, &u, sizeof x);
    *f = x;
    *isint = 0;
  } else {
    return 0;
  }
  return 1;
}

const unsigned char *lmpb_plain_unpack_items(lua_State *L, const unsigned char *p,
                                             const unsigned char *end, uint64_t count, int t,
                                             lua_Integer first)
{
  return unpack_items(L, p, end, count, t, first);
}

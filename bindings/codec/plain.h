/*
 * plain.h -- the plain-value path of the wire room (plain.c), for its
 * callers: the pool's parent and its workers, and a shared container's
 * counters.
 *
 * A worker reads each item and writes each result of a chunk as it runs
 * it, so lmpb_plain_next and lmpb_plain_put run once per item of every
 * map: they are inline below with their common cases (small non-negative
 * integers in, integers out), and call plain.c for the others.  A call
 * each per item cost a trivial task 4% more instructions.
 */
#ifndef LMP_CODEC_PLAIN_H
#define LMP_CODEC_PLAIN_H

#include <lauxlib.h>

#include "codec.h"

/*
 * Plain values: nil, booleans, numbers and strings, in the bytes the codec
 * writes for them, without its machinery (identity maps, paths for error
 * messages), which for a list of numbers costs more than the numbers.  The
 * pool moves its items and results this way; anything else goes through
 * lmpb_encode / lmpb_decode.
 *
 * Writers.  lmpb_plain_put (inline, below) appends the value at idx,
 * put_nil a nil, put_array the header of an array of n values: 1, or 0
 * when the value is not plain (or memory ran out).  pack_list empties out and packs t[first ..
 * first+count-1] as one array, pack_value the value at idx alone: 0, or -1
 * when a value is not plain or t has a metatable (use the codec then).
 */
int lmpb_plain_put_nil(lmp_buf_t *b);
int lmpb_plain_put_array(lmp_buf_t *b, size_t n);
int lmpb_plain_pack_list(lua_State *L, int t, lua_Integer first, lua_Integer count, lmp_buf_t *out);
int lmpb_plain_pack_value(lua_State *L, int idx, lmp_buf_t *out);
/*
 * Readers; none trusts its input.  unpack_list: a message that is an array
 * of plain values goes into t[first...]; the number of items, or -1 when
 * the message is something else (some items may have been written by then:
 * the caller decodes with the codec, whose result replaces them all).
 * unpack_items: `count` plain values from p into t[first...]; the position
 * after them, or NULL at the first that is not plain.  items: when the
 * message is an array of plain values and nothing else, its first item
 * (and the count in *n), else NULL; lmpb_plain_next (inline, below) then
 * reads the items one by one, and cannot fail on one that items() passed.
 */
lua_Integer lmpb_plain_unpack_list(lua_State *L, const char *data, size_t len, int t,
                                   lua_Integer first);
const unsigned char *lmpb_plain_unpack_items(lua_State *L, const unsigned char *p,
                                             const unsigned char *end, uint64_t count, int t,
                                             lua_Integer first);
const unsigned char *lmpb_plain_items(const char *data, size_t len, uint64_t *n);
/* A message that is one number: 1 with the integer in *i (*isint = 1) or
 * the float in *f (*isint = 0), 0 if it is anything else.  put_number
 * writes one as int64 or float64 into out: 9 bytes, whatever the value. */
int lmpb_plain_number(const void *msg, size_t len, lua_Integer *i, double *f, int *isint);
size_t lmpb_plain_put_number(unsigned char out[9], int isint, lua_Integer i, double f);

/* === the per-item calls, inline === */

/*
 * Plain values are written straight into the buffer, in the same msgpack
 * the codec writes (integers in their smallest width, other numbers as
 * float64, strings as str).  msgpack-c's packer calls its writer once per
 * value, which for a list of small numbers costs more than the numbers: this
 * writer makes room once per value and stores the bytes itself.
 */
static inline unsigned char *plain_room(lmp_buf_t *b, size_t n)
{
  if (b->cap - b->len < n && lmp_buf_reserve(b, b->len + n) < 0)
    return NULL;
  return (unsigned char *)b->data + b->len;
}

/* A tag byte and an n-byte big-endian value. */
static inline int plain_tagged(lmp_buf_t *b, unsigned tag, uint64_t v, int n)
{
  unsigned char *p = plain_room(b, 1 + (size_t)n);
  if (!p)
    return 0;
  p[0] = (unsigned char)tag;
  lmpb_put_be(p + 1, v, n);
  b->len += 1 + (size_t)n;
  return 1;
}

static inline int plain_int(lmp_buf_t *b, int64_t v)
{
  unsigned char *p = plain_room(b, 9);
  uint64_t u = (uint64_t)v;
  int n;
  if (!p)
    return 0;
  if (v >= -32 && v <= 127) {
    *p = (unsigned char)(int8_t)v;
    b->len++;
    return 1;
  }
  if (v >= 0) {
    n = u <= 0xff ? 1 : u <= 0xffff ? 2 : u <= 0xffffffffu ? 4 : 8;
    *p = (unsigned char)(n == 1 ? 0xcc : n == 2 ? 0xcd : n == 4 ? 0xce : 0xcf);
  } else {
    n = v >= INT8_MIN ? 1 : v >= INT16_MIN ? 2 : v >= INT32_MIN ? 4 : 8;
    *p = (unsigned char)(n == 1 ? 0xd0 : n == 2 ? 0xd1 : n == 4 ? 0xd2 : 0xd3);
  }
  lmpb_put_be(p + 1, u, n);
  b->len += 1 + (size_t)n;
  return 1;
}

/* Append the value at idx: 1, or 0 when it is not plain (or memory ran
 * out). */
int lmpb_plain_put_any(lua_State *L, int idx, lmp_buf_t *b);

static inline int lmpb_plain_put(lua_State *L, int idx, lmp_buf_t *b)
{
  if (lua_isinteger(L, idx)) /* the commonest result: one question fewer */
    return plain_int(b, (int64_t)lua_tointeger(L, idx));
  return lmpb_plain_put_any(L, idx, b);
}

/* Push the plain value at *pp (*pp < end) and step over it: 1, or 0 when
 * it is something else or truncated (nothing pushed). */
int lmpb_plain_next_any(lua_State *L, const unsigned char **pp, const unsigned char *end);

static inline int lmpb_plain_next(lua_State *L, const unsigned char **pp, const unsigned char *end)
{
  const unsigned char *p = *pp;
  unsigned c = *p;
  if (c <= 0x7f) {
    lua_pushinteger(L, c);
    *pp = p + 1;
    return 1;
  }
  if (c >= 0xcc && c <= 0xcf) { /* uint 8..64 */
    int n = 1 << (c - 0xcc);
    uint64_t v;
    if (end - p > n && (v = lmpb_get_be(p + 1, n)) <= (uint64_t)LUA_MAXINTEGER) {
      lua_pushinteger(L, (lua_Integer)v);
      *pp = p + 1 + n;
      return 1;
    }
  }
  return lmpb_plain_next_any(L, pp, end);
}

#endif

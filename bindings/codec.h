/*
 * codec.h -- the codec (codec.c): lmp's messages, msgpack with ext types
 * for Lua functions, shared references, handles and registered classes.
 * Internal to bindings/.
 */
#ifndef LMPB_CODEC_H
#define LMPB_CODEC_H

#include <lua.h>
#include <stdint.h>
#include <string.h>

#include "lmp/common.h"

/* Write v as n bytes (0, 1, 2, 4 or 8), big-endian: msgpack's fields, for
 * the codec and for the pool's packer of plain values. */
static inline void lmpb_put_be(unsigned char *p, uint64_t v, int n)
{
  uint16_t v2 = __builtin_bswap16((uint16_t)v);
  uint32_t v4 = __builtin_bswap32((uint32_t)v);
  uint64_t v8 = __builtin_bswap64(v);
  switch (n) {
  case 1:
    *p = (unsigned char)v;
    break;
  case 2:
    memcpy(p, &v2, 2);
    break;
  case 4:
    memcpy(p, &v4, 4);
    break;
  case 8:
    memcpy(p, &v8, 8);
    break;
  }
}

/* The n-byte (1, 2, 4 or 8) big-endian number at p: msgpack's fields, read
 * (the caller has checked that the n bytes are there). */
static inline uint64_t lmpb_get_be(const unsigned char *p, int n)
{
  uint16_t v2;
  uint32_t v4;
  uint64_t v8;
  switch (n) {
  case 1:
    return *p;
  case 2:
    memcpy(&v2, p, 2);
    return __builtin_bswap16(v2);
  case 4:
    memcpy(&v4, p, 4);
    return __builtin_bswap32(v4);
  default:
    memcpy(&v8, p, 8);
    return __builtin_bswap64(v8);
  }
}

/*
 * Encode the value at `idx` (msgpack with lmp's ext types).  `what` names the
 * root of the value in error messages ("args", "value", "result").  Returns a
 * buffer owned by the lua_State and reused by the next encode: copy it or
 * send it before encoding again.  Unsendable values raise an lmp.Error of kind
 * "serialize": "cannot send args[2].handler: userdata (FILE*)".
 */
const lmp_buf_t *lmpb_encode(lua_State *L, int idx, const char *what);
/* The same for a message that may reach another machine (a broker's): lmp
 * handles, which name this machine's shared memory and descriptors, raise a
 * "serialize" lmp.Error that says so. */
const lmp_buf_t *lmpb_encode_remote(lua_State *L, int idx, const char *what);

/* Decode one message and push its value.  `trusted` allows Lua bytecode.
 * Malformed input raises a Lua error "corrupt message (...)", never crashes. */
void lmpb_decode(lua_State *L, const char *data, size_t len, int trusted);
/* Call fn (if not NULL) on the segment name of every handle in one encoded
 * value, without decoding it.  The number of handles, or -1 if the bytes
 * are malformed (fn may have been called on some before). */
typedef void (*lmpb_name_fn)(const char *name);
int lmpb_handle_names(const void *msg, size_t len, lmpb_name_fn fn);

/*
 * Handles: a userdata type that crosses processes as a small byte string
 * (usually a segment name) and is rebuilt on the other side.
 *   encode: append the identity of the handle at `idx` to `out`; pins what
 *           must stay alive while the message travels; 0 or -errno.
 *   decode: push a handle rebuilt from `data`; raise on failure.
 */
typedef struct lmpb_handle_type {
  const char *tname; /* its metatable's name, e.g. "lmp.Queue" */
  int (*encode)(lua_State *L, int idx, lmp_buf_t *out);
  void (*decode)(lua_State *L, const char *data, size_t len);
} lmpb_handle_type;

/* Called once per type from the family's open function.  The hooks must not
 * call lmpb_encode / lmpb_decode themselves. */
void lmpb_register_handle(lua_State *L, const lmpb_handle_type *t);

/* What lmp.register(name, mt) does: tables whose metatable is the one at
 * `mt_idx` cross as their content and arrive with the metatable the receiver
 * registered under `name`.  Registering a name again replaces it. */
void lmpb_register_class(lua_State *L, const char *name, int mt_idx);

#endif

/*
 * lmpb.h -- what the binding files share: the codec, lmp.Error, handles and
 * option tables.  Internal to bindings/; the public surface is include/lmp.h.
 *
 * Conventions (Lua's own library style): arguments are checked first with
 * luaL_check* / luaL_opt*; expected outcomes return nil plus a reason
 * ("timeout", "empty", "full", "closed"); programming errors raise through
 * luaL_argerror / luaL_error; failures of remote work raise an lmp.Error.
 */
#ifndef LMPB_H
#define LMPB_H

#include <lauxlib.h>
#include <lua.h>

#include "lmp/common.h"

/* === lmp.Error (lerror.c) === */

/* Push a new lmp.Error {kind =, message =}. */
void lmpb_error_push(lua_State *L, const char *kind, const char *msg);
/* Raise a new lmp.Error; never returns. */
int lmpb_error_raise(lua_State *L, const char *kind, const char *fmt, ...);
int lmpb_error_open(lua_State *L); /* adds Error, is_error to the table on top */

/* === the codec (codec.c) === */

/*
 * Encode the value at `idx` (msgpack with lmp's ext types).  `what` names the
 * root of the value in error messages ("args", "value", "result").  Returns a
 * buffer owned by the lua_State and reused by the next encode: copy it or
 * send it before encoding again.  Unsendable values raise an lmp.Error of kind
 * "serialize": "cannot send args[2].handler: userdata (FILE*)".
 */
const lmp_buf_t *lmpb_encode(lua_State *L, int idx, const char *what);

/* Decode one message and push its value.  `trusted` allows Lua bytecode.
 * Malformed input raises a Lua error "corrupt message (...)", never crashes. */
void lmpb_decode(lua_State *L, const char *data, size_t len, int trusted);

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

int lmpb_codec_open(lua_State *L); /* adds serialize, deserialize, register */

/* === Lua-side modules (generated from scripts/ by bindings/embed.lua) === */

void lmpb_scripts_open(lua_State *L); /* registers lmp.* in package.preload */

/* === the families: each adds its constructors to the module table on top === */

int lmpb_process_open(lua_State *L);
int lmpb_pipe_open(lua_State *L);
int lmpb_queue_open(lua_State *L);

/* === helpers (lmp.c) === */

/* Push the error value at idx as a message: a string as it is, anything
 * else through __tostring (an lmp.Error) or as "(error object is a T value)". */
const char *lmpb_tomessage(lua_State *L, int idx);
/* Message handler for lua_pcall: the error as a string (through __tostring
 * for an lmp.Error) followed by a stack traceback. */
int lmpb_traceback(lua_State *L);
/* __index fallback: push the method named by the key at index 2 from the
 * "methods" table of metatable `tname` (nil if there is none); returns 1. */
int lmpb_method(lua_State *L, const char *tname);

/* Timeout argument: nil blocks forever, a number of seconds otherwise. */
int64_t lmpb_optdeadline(lua_State *L, int arg);
/* Raise `bad argument #1 to 'fname' (unknown option 'key')` for a key of the
 * table at `idx` that is not in the NULL-terminated `known` list. */
void lmpb_checkoptions(lua_State *L, int idx, const char *const known[]);
/* Push nil and the reason for an expected outcome; returns 2. */
int lmpb_fail(lua_State *L, const char *reason);
/* Map an unexpected runtime code to a Lua error. */
int lmpb_rterror(lua_State *L, const char *what, int code);

#endif

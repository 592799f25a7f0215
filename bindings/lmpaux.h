/*
 * lmpaux.h -- the ground floor of the bindings: argument checks, lmp.Error,
 * the one table from runtime codes to Lua results, ^C, and the state's
 * owner tag.  lauxlib's role for lmp: every binding file may use it, and it
 * uses nothing of bindings/ (lmpaux.c includes this header only).
 *
 * Conventions (Lua's own library style): arguments are checked first with
 * luaL_check* / luaL_opt*; expected outcomes return nil plus a reason
 * ("timeout", "empty", "full", "closed"); programming errors raise through
 * luaL_argerror / luaL_error; failures of remote work raise an lmp.Error.
 */
#ifndef LMPAUX_H
#define LMPAUX_H

#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>

#include "lmp/common.h"

/* === arguments === */

/* The string at idx, for C: one with a NUL byte inside would be cut short
 * there (and name another object), so it is a bad argument `arg`, "<what>
 * contains a NUL byte".  NULL if the value is not a string or a number. */
const char *lmpb_checkcstring(lua_State *L, int idx, int arg, const char *what);
/* Timeout argument: absent or nil blocks forever, a number of seconds
 * otherwise.  An absent one is told by the argument count alone, inline:
 * blocking calls without a timeout are hot paths (a Lock's acquire). */
int64_t lmpb_checkdeadline(lua_State *L, int arg);
static inline int64_t lmpb_optdeadline(lua_State *L, int arg)
{
  return lua_gettop(L) < arg ? LMP_FOREVER : lmpb_checkdeadline(L, arg);
}
/* Raise `bad argument #1 to 'fname' (unknown option 'key')` for a key of the
 * table at `idx` that is not in the NULL-terminated `known` list. */
void lmpb_checkoptions(lua_State *L, int idx, const char *const known[]);
/* __index fallback: push the method named by the key at index 2 from the
 * "methods" table of metatable `tname` (nil if there is none); returns 1. */
int lmpb_method(lua_State *L, const char *tname);
/* Raise `attempt to use a closed lmp.Queue` (tname: the metatable's name),
 * the one wording for every object used after close(), as liolib words a
 * closed file. */
int lmpb_closed(lua_State *L, const char *tname);
/* Handle tags.  A method knows its handle by two API calls (lua_touserdata,
 * lua_rawlen) where a metatable check costs many: a handle keeps in its
 * first field lmpb_tag(itself, its class), which is read only from a full
 * userdata of the handle's size (so the read stays in bounds whatever the
 * argument) and cleared before the handle's memory can be freed and reused.
 * The per-process key (lmpb_tag_init draws it) is never visible to Lua, so
 * no other userdata holds the value but by a 2^-64 chance.  A value without
 * the tag goes the slow way, through the metatable and its errors. */
extern uintptr_t lmpb_tag_key;
void lmpb_tag_init(void);
static inline uintptr_t lmpb_tag(const void *handle, const void *class_)
{
  return (uintptr_t)handle ^ (uintptr_t)class_ ^ lmpb_tag_key;
}
/* The tagged handle of `size` bytes and class `class_` at idx, or NULL. */
static inline void *lmpb_totagged(lua_State *L, int idx, size_t size, const void *class_)
{
  uintptr_t *u = lua_touserdata(L, idx);
  if (u != NULL && lua_rawlen(L, idx) == size && *u == lmpb_tag(u, class_))
    return u;
  return NULL;
}

/* === messages === */

/* Push the error value at idx as a message: a string as it is, a number as
 * its text (the value at idx stays a number), anything else through
 * __tostring (an lmp.Error) or as "(error object is a T value)". */
const char *lmpb_tomessage(lua_State *L, int idx);
/* Message handler for lua_pcall: the error as a string (through __tostring
 * for an lmp.Error) followed by a stack traceback. */
int lmpb_traceback(lua_State *L);

/* === lmp.Error === */

#define LMPB_ERROR_MT "lmp.Error"

/* Push lmp.Error's metatable, made on first use. */
void lmpb_error_metatable(lua_State *L);
/* Push a new lmp.Error {kind =, message =}. */
void lmpb_error_push(lua_State *L, const char *kind, const char *msg);
/* Raise a new lmp.Error; never returns. */
int lmpb_error_raise(lua_State *L, const char *kind, const char *fmt, ...);

/* === results: one table from runtime codes to Lua === */

/* Push nil and the reason for an expected outcome; returns 2. */
int lmpb_fail(lua_State *L, const char *reason);
/*
 * What a runtime call's `rc` (0 or more, or -errno) is in Lua, for every
 * binding, as luaL_fileresult is for liolib.  rc >= 0: nothing is pushed,
 * returns 0 (the caller pushes its success).  The expected outcomes push
 * their result and return its count:
 *   -ETIMEDOUT              nil, `timeout` (the call's word for it:
 *                           "timeout", "empty", "full"), or false alone when
 *                           `timeout` is NULL (an acquire's, a join's);
 *   -EPIPE, -ECONNRESET     nil, "closed".
 * Any other code raises, as lmpb_rterror says.
 */
int lmpb_result(lua_State *L, const char *what, int rc, const char *timeout);
/* Raise for an unexpected runtime code: -ENOSPC an lmp.Error of kind
 * "no_space" (saying what ran out where), -EINTR after a ^C one of kind
 * "interrupted", anything else "what: reason". */
int lmpb_rterror(lua_State *L, const char *what, int code);
/* Descriptors of objects nobody can reach are closed only when the
 * collector runs their __gc.  After a call that opens descriptors failed
 * with `rc` (-errno): when descriptors ran out (EMFILE, ENFILE), run a full
 * collection and return 1, and the caller makes the call once more; 0 for
 * any other code.  Every binding that opens descriptors goes through it:
 *   int rc = open_something(...);
 *   if (lmpb_fds_retry(L, rc))
 *     rc = open_something(...); */
int lmpb_fds_retry(lua_State *L, int rc);

/* === interruption (^C) === */

/* The root's first state takes ^C (`root`: this process is the root of its
 * family); a value in the registry gives it back when the state closes. */
void lmpb_interrupt_open(lua_State *L, int root);
/* After a wait returned EINTR or -EINTR: if ^C asked to interrupt, consume
 * the request and raise an lmp.Error of kind "interrupted"; else return. */
void lmpb_interrupt_check(lua_State *L);
/* Async-signal-safe: record a ^C, for a SIGINT handler of the lmp
 * executable that stands in for lmp's own (the REPL's). */
void lmpb_interrupt_request(void);

/* === the state === */

/* The registry field the opener keeps the state's owner tag in. */
#define LMPB_OWNER_KEY "lmp.owner"

/* The owner tag of the children this state starts (lmp_proc_set_owner):
 * closing the state ends those, and only those; 0 before lmp opened. */
uint64_t lmpb_owner(lua_State *L);

#endif

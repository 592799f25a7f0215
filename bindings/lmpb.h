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
#include <stdint.h>
#include <string.h>

#include "lmp/array.h"
#include "lmp/common.h"
#include "lmp/proc.h"

/* === lmp.Error (lerror.c) === */

/* Push a new lmp.Error {kind =, message =}. */
void lmpb_error_push(lua_State *L, const char *kind, const char *msg);
/* Raise a new lmp.Error; never returns. */
int lmpb_error_raise(lua_State *L, const char *kind, const char *fmt, ...);
int lmpb_error_open(lua_State *L); /* adds Error, is_error to the table on top */

/* === the codec (bindings/codec/) === */

/* Write v as n bytes (0, 1, 2, 4 or 8), big-endian: msgpack's fields. */
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

/* The lmp.ValueLock of get_lock() (larray.c), for an lmp.Condition built
 * on one (lsyncobj.c): its RLock, or NULL when idx holds something else (raises
 * when the handle is closed); and the handle's encode and decode. */
struct lmp_lock *lmpb_valuelock(lua_State *L, int idx);
int lmpb_valuelock_encode(lua_State *L, int idx, lmp_buf_t *out);
void lmpb_valuelock_decode(lua_State *L, const char *data, size_t len);

/* For lmp.SharedMemory (lshmem.c), from larray.c: the element type named at
 * idx (a bad argument otherwise); a new lmp.Array handle pushed closed, and
 * where its array goes (a view of the block).  And what every handle type
 * there shares: the metatable `mt` with `methods` as the upvalue of
 * meta's __index; what a closed handle's __index still answers (`closed`
 * and its methods: 1 pushed, or 0); append a handle's bytes to `out` (0 or
 * -ENOMEM); attach the segment a received handle names, adopting its pin
 * (raises on failure). */
lmp_ctype_t lmpb_checkctype(lua_State *L, int idx);
lmp_array_t **lmpb_newarray(lua_State *L);
void lmpb_newclass(lua_State *L, const char *mt, const luaL_Reg *meta, const luaL_Reg *methods);
int lmpb_closed_index(lua_State *L);
int lmpb_handle_append(lmp_buf_t *out, const void *p, size_t n);
lmp_seg_t *lmpb_handle_attach(lua_State *L, const char *data, size_t len, const char *mt);

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
int lmpb_pool_open(lua_State *L);
int lmpb_profile_open(lua_State *L); /* lmp._profile_start, _profile_stop (lprofile.c) */
int lmpb_top_open(lua_State *L);     /* require "lmp._top", for lmp top (ltop.c) */
int lmpb_broker_open(lua_State *L); /* lmp.Pool{broker = url} (lbroker.c) */
int lmpb_executor_open(lua_State *L); /* Executor, as_completed, wait (lexecutor.c) */
int lmpb_start_open(lua_State *L); /* start methods (lspawn.c) */
int lmpb_log_open(lua_State *L);   /* logging's C half (llog.c) */
int lmpb_sync_open(lua_State *L);
int lmpb_array_open(lua_State *L); /* Value, Array, RawValue, RawArray (larray.c) */
int lmpb_shmem_open(lua_State *L); /* SharedMemory (lshmem.c) */
int lmpb_dict_open(lua_State *L);

/* === processes (lprocess.c) === */

/*
 * The child's side of every start method.  become: take the identity that
 * current_process() and parent_process() report (`pname` NULL: this
 * process's own name until now, and the parent is the process that forked
 * it; otherwise the parent is `pname`, pid `ppid`) and forget the parent's
 * Process objects.  run: call the function at `fn_idx` with the `nargs`
 * values above it; an uncaught error prints "Process <name> (pid N):" and
 * the traceback on stderr; the process ends through lmp_proc_exit with 0,
 * the code given to os.exit, or 1 after an error.
 */
void lmpb_process_become(lua_State *L, const char *name, const char *pname, pid_t ppid);
void lmpb_process_run(lua_State *L, int fn_idx, int nargs) __attribute__((noreturn));

/* === start methods (lspawn.c) === */

typedef struct lmpb_start {
  const char *method; /* "fork", "spawn", "forkserver"; NULL: lmp.get_start_method() */
  const char *name;   /* the child's current_process().name; NULL: "Process" */
  int daemon;         /* terminated, not joined, when the parent's lmp state closes */
} lmpb_start_t;

/*
 * Start a child process that calls the function at `fn_idx` with the `nargs`
 * values above it, by the start method `how->method`:
 *   fork        the child is a copy of this process and calls the function
 *               in the state it inherits (nothing is serialized);
 *   spawn       the lmp executable is exec'd with a fresh Lua state, and the
 *               function (bytecode plus upvalues) and its arguments travel
 *               through the codec, with package.path/cpath, the main
 *               script's directory, the C modules loaded here, arg, the
 *               current directory, the start method and the logging set-up;
 *   forkserver  the same payload goes to this process's fork server, which
 *               forks the child from its clean state; the child is then the
 *               server's, but *out works the same (pidfd and exit status).
 * In the child, the function runs as lmpb_process_run describes.
 * Returns 0 with *out set (the caller owns it: lmp_proc_free), or -errno
 * when the system refused (fork, exec, memfd, the server).  Raises for a bad
 * method name (luaL_error), an unsendable function or argument (an lmp.Error
 * of kind "serialize": "cannot send args[2]: userdata (FILE*)"), and when
 * spawn or forkserver cannot find the lmp executable.  The values at fn_idx
 * and above are left on the stack.
 */
int lmpb_spawn(lua_State *L, int fn_idx, int nargs, const lmpb_start_t *how, lmp_proc_t **out);

/* Raise for a start the system refused (code: lmpb_spawn's or the pool's
 * -errno), as `what: ...`.  fork's EAGAIN is the process limit (ulimit -u),
 * and says so: "Pool: cannot start a worker: process limit reached
 * (ulimit -u)"; `whom` names the child ("a worker", "a process"). */
int lmpb_start_error(lua_State *L, const char *what, const char *whom, int code);

/* The start method named by the value at `idx`: NULL for nil, else one of
 * "fork", "spawn", "forkserver" (a static string); anything else raises
 * bad argument #arg (unknown start method 'x'). */
const char *lmpb_checkmethod(lua_State *L, int idx, int arg);
/* lmp.get_start_method(): the method for children started without one. */
const char *lmpb_default_method(lua_State *L);

/* The lmp executable that spawn and forkserver exec (main.c sets its own). */
void lmpb_set_executable(const char *path);

/* The hidden entry points of the lmp executable: `lmp --lmp-child FD` runs
 * the payload in descriptor FD and never returns; `lmp --lmp-forkserver FD
 * PATH CPATH DIR [module...]` (args: the `nargs` strings after FD) takes
 * the requester's package.path, package.cpath and script directory (""
 * for none), requires the modules, then serves fork requests on the socket
 * FD until it closes. */
void lmpb_spawn_main(lua_State *L, int fd) __attribute__((noreturn));
void lmpb_forkserver_main(lua_State *L, int fd, int nargs, char **args) __attribute__((noreturn));

/* Push a function that, when called, does require(module)[field](...): for
 * module functions implemented in scripts/ (lmp.get_context, lmp.get_logger). */
void lmpb_pushlazy(lua_State *L, const char *module, const char *field);
/* package.preload[name] = open: a module of C functions, loaded by require. */
void lmpb_preload(lua_State *L, const char *name, lua_CFunction open);

/* === helpers (lmp.c) === */

/* The string at idx, for C: one with a NUL byte inside would be cut short
 * there (and name another object), so it is a bad argument `arg`, "<what>
 * contains a NUL byte".  NULL if the value is not a string or a number. */
const char *lmpb_checkcstring(lua_State *L, int idx, int arg, const char *what);

/* Push the error value at idx as a message: a string as it is, a number as
 * its text (the value at idx stays a number), anything else through
 * __tostring (an lmp.Error) or as "(error object is a T value)". */
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
/* The owner tag of the children this state starts (lmp_proc_set_owner):
 * closing the state ends those, and only those. */
uint64_t lmpb_owner(lua_State *L);

/* The sampling profiler (lprofile.c): start on thread L (0, or -1 if one
 * runs already), stop and append the samples as text to out, and forget a
 * profile inherited through fork. */
int lmpb_profile_start(lua_State *L);
void lmpb_profile_stop(lmp_buf_t *out);
void lmpb_profile_reset(lua_State *L);

/* A pool's counters and one worker slot as pool:stats() shows them (lpool.c). */
struct lmp_pool_stats;
struct lmp_pool_slot_info;
void lmpb_push_stats(lua_State *L, const struct lmp_pool_stats *st);
void lmpb_push_slot(lua_State *L, const struct lmp_pool_slot_info *s, int64_t now);
/* Descriptors of objects nobody can reach are closed only when the
 * collector runs their __gc.  After a call that opens descriptors failed
 * with `rc` (-errno): when descriptors ran out (EMFILE, ENFILE), run a full
 * collection and return 1, and the caller makes the call once more; 0 for
 * any other code.  Every binding that opens descriptors goes through it:
 *   int rc = open_something(...);
 *   if (lmpb_fds_retry(L, rc))
 *     rc = open_something(...); */
int lmpb_fds_retry(lua_State *L, int rc);
/* Map an unexpected runtime code to a Lua error (lerror.c): -ENOSPC raises an
 * lmp.Error of kind "no_space", -EINTR (a wait interrupted by ^C) one of
 * kind "interrupted". */
int lmpb_rterror(lua_State *L, const char *what, int code);
/* After a wait returned EINTR or -EINTR: if ^C asked to interrupt, consume
 * the request and raise an lmp.Error of kind "interrupted"; else return. */
void lmpb_interrupt_check(lua_State *L);
/* Async-signal-safe: record a ^C, for a SIGINT handler of the lmp
 * executable that stands in for lmp's own (the REPL's). */
void lmpb_interrupt_request(void);
/* Raise `attempt to use a closed lmp.Queue` (tname: the metatable's name),
 * the one wording for every object used after close(), as liolib words a
 * closed file. */
int lmpb_closed(lua_State *L, const char *tname);

#endif

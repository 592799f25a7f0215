/*
 * lmpb.h -- the families of the bindings and what they offer each other:
 * the openers that linit.c calls to fill lmp.core, the start methods, the
 * child's side of them, and the few functions one family lends another.
 * Internal to bindings/; the public surface is include/lmp.h.  The ground
 * floor every family stands on is lmpaux.h, the codec is codec.h.
 */
#ifndef LMPB_H
#define LMPB_H

#include <lauxlib.h>
#include <lua.h>
#include <stdint.h>

#include "lmp/array.h"
#include "lmp/common.h"
#include "lmp/proc.h"
#include "lmp/segment.h"

/* === what larray.c lends lshmem.c === */

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

/* === Lua-side modules (generated from scripts/ by bindings/embed.lua) === */

void lmpb_scripts_open(lua_State *L); /* registers lmp.* in package.preload */
/* Push the chunk of module `name` ("lmp" is scripts/lmp/init.lua); returns
 * luaL_loadbuffer's status, with the message pushed instead on failure
 * (LUA_ERRFILE: no such module in this build). */
int lmpb_scripts_load(lua_State *L, const char *name);

/* === the families: each adds its functions to the core table on top (linit.c) === */

int lmpb_process_open(lua_State *L);
int lmpb_pipe_open(lua_State *L);
int lmpb_queue_open(lua_State *L);
int lmpb_pool_open(lua_State *L); /* core.pool and the pool's hidden functions (lpool.c) */
int lmpb_profile_open(lua_State *L); /* lmp._profile_start, _profile_stop (lprofile.c) */
int lmpb_top_open(lua_State *L);     /* core.top, for lmp top (ltop.c) */
int lmpb_broker_open(lua_State *L);  /* core.broker, for broker pools and lmp worker (lbroker.c) */
int lmpb_executor_open(lua_State *L); /* Executor, as_completed, wait (lexecutor.c) */
int lmpb_start_open(lua_State *L); /* start methods (lspawn.c) */
int lmpb_log_open(lua_State *L);   /* core.log: logging's C half (llog.c) */
int lmpb_sync_open(lua_State *L);
int lmpb_array_open(lua_State *L); /* Value, Array, RawValue, RawArray (larray.c) */
int lmpb_shmem_open(lua_State *L); /* SharedMemory (lshmem.c) */
int lmpb_dict_open(lua_State *L);
int lmpb_error_open(lua_State *L); /* Error, is_error (lerror.c) */
int lmpb_codec_open(lua_State *L); /* serialize, deserialize, register (codec.c) */

/* === the child's side of every start method (lchild.c) === */

/*
 * become: take the identity that current_process() and parent_process()
 * report (`pname` NULL: this process's own name until now, and the parent
 * is the process that forked it; otherwise the parent is `pname`, pid
 * `ppid`) and forget the parent's Process objects.  run: call the function
 * at `fn_idx` with the `nargs` values above it; an uncaught error prints
 * "Process <name> (pid N):" and the traceback on stderr; the process ends
 * through lmp_proc_exit with 0, the code given to os.exit, or 1 after an
 * error.
 */
void lmpb_process_become(lua_State *L, const char *name, const char *pname, pid_t ppid);
void lmpb_process_run(lua_State *L, int fn_idx, int nargs) __attribute__((noreturn));
/* This process's name and its parent's, as become set them ("MainProcess"
 * and "" in the root); the number of the next Process made here (1, 2, ...
 * since the last become). */
const char *lmpb_process_name(void);
const char *lmpb_parent_name(void);
int lmpb_process_next(void);
/* The registry field of the Process objects started here (Process ->
 * true); become clears it. */
#define LMPB_CHILDREN_KEY "lmp.children"

/* === start methods (lspawn.c) === */

typedef struct lmpb_start {
  const char *method; /* "fork", "spawn", "forkserver"; NULL: lmp.get_start_method() */
  const char *name;   /* the child's current_process().name; NULL: "Process" */
  int flags;          /* LMP_PROC_DAEMON: terminated, not joined, when the parent's
                       * lmp state closes; LMP_PROC_NOINT: ignores ^C from birth */
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

/* === what one family lends another === */

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

/* The lmp.ValueLock of get_lock() (larray.c), for an lmp.Condition built
 * on one (lsyncobj.c): its RLock, or NULL when idx holds something else (raises
 * when the handle is closed); and the handle's encode and decode. */
struct lmp_lock *lmpb_valuelock(lua_State *L, int idx);
int lmpb_valuelock_encode(lua_State *L, int idx, lmp_buf_t *out);
void lmpb_valuelock_decode(lua_State *L, const char *data, size_t len);

#endif

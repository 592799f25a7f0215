/*
 * lpool.h -- what the pool core (lpool.c) and the pool worker loop
 * (lworker.c) share: the words of a task and of its reply, the protected
 * encoder, the lists of plain values, and the worker's entry points.
 * Internal to those two files; the rest of bindings/ knows the pool through
 * lmpb.h only.
 *
 * A task is [function record][u32 count][value]; the function record is
 * [u64 hash][u32 length][the function as the codec encodes it].  A reply is
 * the encoded value with a status; a profiled one ends in
 * [samples][u32 length of the samples].
 */
#ifndef LPOOL_H
#define LPOOL_H

#include "lmp/pool.h"
#include "lmpb.h"

/* Task tags, as Lua sees them too (lmp.core.pool's `tags`).  TAG_PROFILE is
 * a flag on the others: the task runs under the sampler (lprofile.c). */
enum { TAG_APPLY = 1, TAG_MAP = 2, TAG_STARMAP = 3, TAG_PROFILE = 0x100 };
/* Reply statuses; ST_PROFILED flags a reply that carries samples. */
enum { ST_OK = 0, ST_ERROR = 1, ST_PARTIAL = 2, ST_PROFILED = 0x10000 };

/* Run the protected encoder fn (value, what -> light userdata of a buffer)
 * on the value at idx; *out its buffer.  A memory error is retried once
 * after a full collection.  Leaves the error on the stack when the status
 * is not LUA_OK. */
int lmpb_pool_pencode(lua_State *L, lua_CFunction fn, int idx, const char *what,
                      const lmp_buf_t **out);
/* Encode the value at idx without raising: the buffer, or NULL with the
 * codec's error pushed. */
const lmp_buf_t *lmpb_pool_try_encode(lua_State *L, int idx, const char *what);

/* === the worker (lworker.c) === */

/* Serve tasks as worker w on thread L until the pool closes: the process's
 * exit code.  init_ref is the registry's {fn, args, n} of the initializer,
 * or LUA_NOREF. */
int lmpb_worker_run(lmp_pool_worker_t *w, lua_State *L, int init_ref);
/* lmp._pool_worker(ticket, init): the body of a worker started by spawn or
 * forkserver; never returns. */
int lmpb_pool_worker(lua_State *L);
/* How many functions this process loaded as a worker (for tests). */
lua_Integer lmpb_worker_loads(void);

#endif

/*
 * lworker.c -- the loop a pool worker runs: take a task from the pool core
 * (runtime/pool.c), run it, reply.  It runs only in a worker: a child that
 * inherited the parent's Lua state through fork, or one started by spawn or
 * forkserver that attached to the pool by its ticket (lmp._pool_worker).
 * The parent's side, and the format of tasks and replies, are lpool.c's
 * (see lpool.h).
 *
 * The loop runs in a coroutine of its own, so tracebacks show the task's
 * frames and not the parent's, which the fork left on the stack.  Items of
 * a chunk run under one lua_pcall; an error at item k is recorded and the
 * chunk goes on from k + 1.  Replies: status OK (the value, or the array of
 * values), ERROR (an lmp.Error, which crosses as a registered class) or
 * PARTIAL ({values, errors}).  A reply that cannot be encoded fails only
 * the items that hold the culprit, with kind "serialize".  Every task gets
 * a reply: a task that ran out of memory leaves garbage that a full
 * collection frees before its error is encoded, and when even that fails,
 * an error "not enough memory" encoded when the worker started goes
 * instead.
 *
 * Functions are loaded once per worker, however many tasks carry them: a
 * small cache keyed by the hash the parent put in the function record (see
 * "the function cache" below).  The results of a chunk that are all plain
 * values are packed as they come (lpool.c's lists of plain values), and a
 * chunk whose items are all plain is read item by item as it runs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "codec.h"
#include "codec/plain.h"
#include "lmpaux.h"
#include "lpool.h"

#define FN_CACHE_MAX 64 /* functions a worker keeps loaded */

/* A worker's buffer for replies of plain values. */
static lmp_buf_t worker_buf;
/* A worker's samples of the task it runs, when it is profiled. */
static lmp_buf_t prof_buf;
static int profiling;

/* === errors === */

/* lua_pcall with the message handler at index 1.  Lua skips the handler
 * for out-of-memory errors: those arrive here as the bare message and are
 * made an lmp.Error too, after a collection has freed what the task left
 * behind (its frames are gone, so most of what filled memory is garbage). */
static int tpcall(lua_State *L, int nargs, int nres)
{
  int rc = lua_pcall(L, nargs, nres, 1);
  if (rc == LUA_OK)
    return rc;
  if (rc == LUA_ERRMEM)
    lua_gc(L, LUA_GCCOLLECT);
  int is = 0;
  if (lua_type(L, -1) == LUA_TTABLE && lua_getmetatable(L, -1)) {
    luaL_getmetatable(L, "lmp.Error");
    is = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
  }
  if (!is) {
    lmpb_error_push(L, "task", lmpb_tomessage(L, -1));
    lua_insert(L, -3);
    lua_pop(L, 2);
  }
  return rc;
}

/* Message handler: the error as an lmp.Error of kind "task", with the
 * traceback where it was raised and the original value. */
static int msgh(lua_State *L)
{
  int err = lua_gettop(L) >= 1 ? 1 : 0;
  if (!err) {
    lua_pushnil(L);
    err = 1;
  }
  const char *msg = lmpb_tomessage(L, err);
  lmpb_error_push(L, "task", msg);
  int e = lua_gettop(L);
  luaL_traceback(L, L, NULL, 1);
  /* The frames below the task (the worker loop, all anonymous C functions)
   * tell the user nothing. */
  size_t len;
  const char *tb = lua_tolstring(L, -1, &len), *nl;
  size_t end = len;
  static const char cframe[] = "\n\t[C]: in ?";
  while ((nl = memrchr(tb, '\n', end)) != NULL && end - (size_t)(nl - tb) == sizeof cframe - 1 &&
         memcmp(nl, cframe, sizeof cframe - 1) == 0)
    end = (size_t)(nl - tb);
  if (end < len) {
    lua_pushlstring(L, tb, end);
    lua_replace(L, -2);
  }
  lua_setfield(L, e, "traceback");
  lua_pushvalue(L, err);
  lua_setfield(L, e, "value");
  lua_pushinteger(L, getpid());
  lua_setfield(L, e, "pid");
  return 1;
}

/* An error about to be sent must be sendable: drop a value that is not. */
static void sanitize_error(lua_State *L, int idx)
{
  idx = lua_absindex(L, idx);
  if (lua_type(L, idx) != LUA_TTABLE)
    return;
  if (lua_getfield(L, idx, "value") != LUA_TNIL && !lmpb_pool_try_encode(L, -1, "value")) {
    lua_pop(L, 1); /* the codec's error */
    lua_pushnil(L);
    lua_setfield(L, idx, "value");
  }
  lua_pop(L, 1);
}

/* Protected: err, what -> the encoding of err (a light userdata), made an
 * lmp.Error of kind "task" first when it is not one (the bare message of a
 * memory error), its value dropped when that cannot be sent.  With what
 * NULL, a plain "the task's error could not be sent" is encoded instead. */
static int encode_error(lua_State *L)
{
  if (!lua_touserdata(L, 2)) {
    lmpb_error_push(L, "task", "the task's error could not be sent");
  } else if (!lua_istable(L, 1)) {
    lmpb_error_push(L, "task", lmpb_tomessage(L, 1));
  } else {
    lua_settop(L, 1);
    sanitize_error(L, 1);
  }
  lua_pushlightuserdata(L, (void *)lmpb_encode(L, -1, "error"));
  return 1;
}

/* The reply of last resort, encoded when the worker starts: "not enough
 * memory", for when even the task's error cannot be encoded. */
static lmp_buf_t oom_error;

static void keep_oom_error(lua_State *L)
{
  lmpb_error_push(L, "task", "not enough memory");
  const lmp_buf_t *b = lmpb_encode(L, -1, "error");
  if (lmp_buf_reserve(&oom_error, b->len) < 0)
    luaL_error(L, "not enough memory");
  memcpy(oom_error.data, b->data, b->len);
  oom_error.len = b->len;
  lua_pop(L, 1);
}

static void reply(lmp_pool_worker_t *w, uint32_t status, const lmp_buf_t *b)
{
  struct iovec v[3] = {{b->data, b->len}};
  int n = 1;
  uint32_t plen;
  if (profiling) {
    profiling = 0;
    prof_buf.len = 0;
    lmpb_profile_stop(&prof_buf);
    plen = (uint32_t)prof_buf.len;
    v[1].iov_base = prof_buf.data;
    v[1].iov_len = prof_buf.len;
    v[2].iov_base = &plen;
    v[2].iov_len = 4;
    n = 3;
    status |= ST_PROFILED;
  }
  int rc = lmp_pool_worker_reply(w, status, v, n);
  if (rc < 0) {
    fprintf(stderr, "lmp pool worker %d: cannot reply: %s\n", (int)getpid(), lmp_strerror(rc));
    lmp_proc_exit(1);
  }
}

/* Reply with the error at the top of the stack (an lmp.Error, or the
 * message of a memory error).  A reply always goes: an error that cannot
 * be sent becomes a plain one, and when memory is too short even for that,
 * the one encoded in advance goes. */
static void reply_error(lua_State *L, lmp_pool_worker_t *w)
{
  const lmp_buf_t *b;
  int rc = lmpb_pool_pencode(L, encode_error, -1, "error", &b);
  if (rc != LUA_OK && rc != LUA_ERRMEM) {
    lua_pop(L, 1);
    rc = lmpb_pool_pencode(L, encode_error, -1, NULL, &b);
  }
  reply(w, ST_ERROR, rc == LUA_OK ? b : &oom_error);
}

/* === the function cache ===
 *
 * A worker keeps the last FN_CACHE_MAX functions it loaded.  A slot holds
 * the hash the parent wrote in the function record, a copy of the record's
 * bytes (a hit compares them: the hash only narrows the search) and the
 * function itself, held in the registry.  A function not found is decoded
 * and takes a free slot, or else the one least recently used.  There is one
 * cache per process, since a worker process runs one worker loop; a worker
 * forked from a worker (a pool made inside a task) inherits its parent's
 * cache, and the state it belongs to, with it.
 */
typedef struct fn_slot {
  uint64_t hash;
  uint64_t used; /* fn_clock at the last use; 0: the slot is free */
  char *bytes;   /* the function's encoding (malloc) */
  size_t len;
  int ref; /* registry: the function */
} fn_slot;

static fn_slot fn_cache[FN_CACHE_MAX];
static uint64_t fn_clock;
static lua_Integer fn_loads; /* functions decoded, for tests */

lua_Integer lmpb_worker_loads(void)
{
  return fn_loads;
}

/* The slot holding these bytes, or NULL. */
static fn_slot *fn_find(uint64_t hash, const char *bytes, size_t len)
{
  for (fn_slot *s = fn_cache; s < fn_cache + FN_CACHE_MAX; s++)
    if (s->used && s->hash == hash && s->len == len && memcmp(s->bytes, bytes, len) == 0)
      return s;
  return NULL;
}

/* A free slot: one never used, or else the least recently used, emptied. */
static fn_slot *fn_evict(lua_State *L)
{
  fn_slot *v = fn_cache;
  for (fn_slot *s = fn_cache + 1; s < fn_cache + FN_CACHE_MAX && v->used; s++)
    if (s->used < v->used)
      v = s;
  if (v->used) {
    luaL_unref(L, LUA_REGISTRYINDEX, v->ref);
    free(v->bytes);
    memset(v, 0, sizeof *v);
  }
  return v;
}

/* Keep the function at the top of the stack under these bytes; when memory
 * is short it is simply not kept (and loaded again next time). */
static void fn_keep(lua_State *L, uint64_t hash, const char *bytes, size_t len)
{
  fn_slot *s = fn_evict(L);
  lua_pushvalue(L, -1);
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  char *copy = malloc(len ? len : 1);
  if (!copy) {
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    return;
  }
  memcpy(copy, bytes, len);
  *s = (fn_slot){hash, ++fn_clock, copy, len, ref};
}

/* Push the function of a task record: the one loaded before from the same
 * bytes, else decoded now (raises on bytes that are not a function's). */
static void push_function(lua_State *L, uint64_t hash, const char *bytes, size_t len)
{
  fn_slot *s = fn_find(hash, bytes, len);
  if (s) {
    s->used = ++fn_clock;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
    return;
  }
  lmpb_decode(L, bytes, len, 1);
  fn_loads++;
  fn_keep(L, hash, bytes, len);
}

/* === tasks === */

typedef struct task {
  lmp_pool_worker_t *w;
  uint32_t tag;
  uint64_t hash;
  const char *fn, *val;
  size_t fnlen, vallen;
  uint32_t count;
  lua_Integer cur, next;          /* items: the one running, the first still to run */
  const unsigned char *ip, *iend; /* items still to read, when they are streamed */
  int packing;                    /* results are packed into worker_buf as they come */
  lua_Integer packed;             /* how many */
  size_t hdr;                     /* the length of the array header in worker_buf */
  int timed;                      /* items report their start (task_timeout applies) */
} task;

static int parse_task(task *t, const lmp_pool_task_t *pt)
{
  const char *p = pt->data;
  uint32_t n;
  if (pt->len < 16)
    return -1;
  memcpy(&t->hash, p, 8);
  memcpy(&n, p + 8, 4);
  if (n > pt->len - 16)
    return -1;
  t->tag = pt->tag & ~(uint32_t)TAG_PROFILE;
  t->fn = p + 12;
  t->fnlen = n;
  memcpy(&t->count, p + 12 + n, 4);
  t->val = p + 16 + n;
  t->vallen = pt->len - 16 - n;
  return 0;
}

/* A map's items that are all plain values are read one by one as they
 * run, without a table: set t->ip to the first. */
static int stream_items(task *t)
{
  const unsigned char *p;
  uint64_t n;
  if (t->tag != TAG_MAP || !(p = lmpb_plain_items(t->val, t->vallen, &n)) || n != t->count)
    return 0;
  t->ip = p;
  t->iend = (const unsigned char *)t->val + t->vallen;
  return 1;
}

/* Protected: task -> fn, value (nil when its items are streamed) */
static int load_task(lua_State *L)
{
  task *t = lua_touserdata(L, 1);
  push_function(L, t->hash, t->fn, t->fnlen);
  if (stream_items(t)) {
    lua_pushnil(L);
    return 2;
  }
  lua_createtable(L, (int)t->count, 0);
  if (lmpb_plain_unpack_list(L, t->val, t->vallen, lua_gettop(L), 1) < 0) {
    lua_pop(L, 1);
    lmpb_decode(L, t->val, t->vallen, 1);
  }
  return 2;
}

/* Push the arguments of one call from the table at idx: its first n items. */
static int push_args(lua_State *L, int idx, lua_Integer n)
{
  luaL_checkstack(L, (int)n + 2, "too many arguments");
  for (lua_Integer i = 1; i <= n; i++)
    lua_rawgeti(L, idx, i);
  return (int)n;
}

/* Protected: fn, args -> result (apply). */
static int call_apply(lua_State *L)
{
  task *t = lua_touserdata(L, 3);
  lua_pushvalue(L, 1);
  int n = push_args(L, 2, t->count);
  lua_call(L, n, 1);
  return 1;
}

/* The number of arguments in a starmap item: its n field, or its length. */
static lua_Integer arity(lua_State *L, int idx)
{
  lua_Integer n;
  if (lua_getfield(L, idx, "n") == LUA_TNUMBER && lua_isinteger(L, -1))
    n = lua_tointeger(L, -1);
  else
    n = (lua_Integer)lua_rawlen(L, idx);
  lua_pop(L, 1);
  return n;
}

/* The results packed so far become out[1 .. packed]. */
static void unpack_packed(lua_State *L, task *t, int out)
{
  const unsigned char *p = (const unsigned char *)worker_buf.data + t->hdr;
  (void)lmpb_plain_unpack_items(L, p, (const unsigned char *)worker_buf.data + worker_buf.len,
                                (uint64_t)t->packed, out, 1);
}

/* Keep the result at the top for item i: packed while every result is a
 * plain value, else in the table at out. */
static void keep_result(lua_State *L, task *t, int out, lua_Integer i)
{
  if (t->packing) {
    if (lmpb_plain_put(L, -1, &worker_buf)) {
      lua_pop(L, 1);
      t->packed++;
      return;
    }
    unpack_packed(L, t, out);
    t->packing = 0;
  }
  lua_rawseti(L, out, i);
}

/* Protected: fn, items (nil when streamed), out, task -> runs items
 * t->next .. count. */
static int call_items(lua_State *L)
{
  task *t = lua_touserdata(L, 4);
  int star = t->tag == TAG_STARMAP;
  for (lua_Integer i = t->next; i <= (lua_Integer)t->count; i++) {
    t->cur = i;
    if (t->timed)
      lmp_pool_worker_progress(t->w, (uint32_t)(i - 1));
    lua_pushvalue(L, 1);
    int n = 1;
    if (t->ip) {
      lmpb_plain_next(L, &t->ip, t->iend); /* checked by stream_items */
    } else if (star) {
      if (lua_rawgeti(L, 2, i) != LUA_TTABLE)
        luaL_error(L, "starmap item %d is not a table of arguments", (int)i);
      int item = lua_gettop(L);
      n = push_args(L, item, arity(L, item));
      lua_remove(L, item);
    } else {
      lua_rawgeti(L, 2, i);
    }
    lua_call(L, n, 1);
    keep_result(L, t, 3, i);
  }
  return 0;
}

/* Runs one apply task; leaves the stack as it found it. */
static void run_apply(lua_State *L, lmp_pool_worker_t *w, task *t, int fn)
{
  lua_pushcfunction(L, call_apply);
  lua_pushvalue(L, fn);
  lua_pushvalue(L, fn + 1);
  lua_pushlightuserdata(L, t);
  if (tpcall(L, 3, 1) != LUA_OK) {
    reply_error(L, w);
    return;
  }
  if (lmpb_plain_pack_value(L, -1, &worker_buf) == 0) {
    reply(w, ST_OK, &worker_buf);
    return;
  }
  const lmp_buf_t *b = lmpb_pool_try_encode(L, -1, "result");
  if (!b) {
    reply_error(L, w);
    return;
  }
  reply(w, ST_OK, b);
}

/* The items whose result cannot be sent become errors. */
static void find_unsendable(lua_State *L, int out, int errs, lua_Integer n)
{
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, out, i);
    if (!lmpb_pool_try_encode(L, -1, "result")) {
      lua_rawseti(L, errs, i);
      lua_pushnil(L);
      lua_rawseti(L, out, i);
    }
    lua_pop(L, 1);
  }
}

static void run_items(lua_State *L, lmp_pool_worker_t *w, task *t, int fn)
{
  lua_Integer n = t->count;
  lua_newtable(L);
  int out = lua_gettop(L), errs = 0;
  t->w = w;
  t->timed = lmp_pool_worker_timed(w);
  t->next = 1;
  worker_buf.len = 0;
  t->packing = lmpb_plain_put_array(&worker_buf, (size_t)n);
  t->hdr = worker_buf.len;
  t->packed = 0;
  while (t->next <= n) {
    lua_pushcfunction(L, call_items);
    lua_pushvalue(L, fn);
    lua_pushvalue(L, fn + 1);
    lua_pushvalue(L, out);
    lua_pushlightuserdata(L, t);
    if (tpcall(L, 4, 0) == LUA_OK)
      break;
    if (!errs) {
      lua_newtable(L);
      lua_insert(L, -2);
      errs = out + 1;
    }
    sanitize_error(L, -1);
    lua_rawseti(L, errs, t->cur);
    if (t->packing) { /* the failed item's place */
      t->packing = lmpb_plain_put_nil(&worker_buf);
      t->packed++;
    }
    t->next = t->cur + 1;
  }
  if (t->packing && !errs) {
    reply(w, ST_OK, &worker_buf);
    return;
  }
  if (t->packing)
    unpack_packed(L, t, out);
  if (!errs) {
    const lmp_buf_t *b = lmpb_pool_try_encode(L, out, "result");
    if (b) {
      reply(w, ST_OK, b);
      return;
    }
    lua_pop(L, 1); /* the codec's error: find the culprits */
    lua_newtable(L);
    errs = out + 1;
  }
  find_unsendable(L, out, errs, n);
  lua_createtable(L, 2, 0);
  lua_pushvalue(L, out);
  lua_rawseti(L, -2, 1);
  lua_pushvalue(L, errs);
  lua_rawseti(L, -2, 2);
  const lmp_buf_t *b = lmpb_pool_try_encode(L, -1, "result");
  if (b)
    reply(w, ST_PARTIAL, b);
  else
    reply_error(L, w);
}

static void run_task(lua_State *L, lmp_pool_worker_t *w, const lmp_pool_task_t *pt)
{
  task t;
  memset(&t, 0, sizeof t);
  if (parse_task(&t, pt) < 0) {
    lmpb_error_push(L, "task", "corrupt task record");
    reply_error(L, w);
    return;
  }
  lua_pushcfunction(L, load_task);
  lua_pushlightuserdata(L, &t);
  if (tpcall(L, 1, 2) != LUA_OK) {
    reply_error(L, w);
    return;
  }
  int fn = lua_gettop(L) - 1;
  if (pt->tag & TAG_PROFILE)
    profiling = lmpb_profile_start(L) == 0;
  if (t.tag == TAG_APPLY)
    run_apply(L, w, &t, fn);
  else
    run_items(L, w, &t, fn);
}

/* === the loop === */

/* The initializer (the registry's {fn, args, n} at init_ref), if any; 0,
 * or -1 after reporting its failure. */
static int run_initializer(lua_State *L, lmp_pool_worker_t *w, int init_ref)
{
  if (init_ref == LUA_NOREF)
    return 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, init_ref);
  int cfg = lua_gettop(L);
  lua_rawgeti(L, cfg, 1);
  lua_rawgeti(L, cfg, 2);
  lua_rawgeti(L, cfg, 3);
  lua_Integer n = lua_tointeger(L, -1);
  lua_pop(L, 1);
  int args = lua_gettop(L);
  int nargs = push_args(L, args, n);
  lua_remove(L, args);
  int rc = tpcall(L, nargs, 0);
  if (rc == LUA_OK) {
    lua_settop(L, cfg - 1);
    return 0;
  }
  lua_pushliteral(L, "initializer");
  lua_setfield(L, -2, "kind");
  sanitize_error(L, -1);
  const lmp_buf_t *b = lmpb_pool_try_encode(L, -1, "error");
  if (b)
    lmp_pool_worker_fail_init(w, b->data, b->len);
  else
    lmp_pool_worker_fail_init(w, NULL, 0);
  return -1;
}

/* The worker's main, in a coroutine: w, init_ref (an integer). */
static int worker_loop(lua_State *L)
{
  lmp_pool_worker_t *w = lua_touserdata(L, 1);
  int init_ref = (int)lua_tointeger(L, 2);
  lua_settop(L, 0);
  lua_pushcfunction(L, msgh); /* 1: every task runs under it (tpcall) */
  keep_oom_error(L);
  if (run_initializer(L, w, init_ref) < 0)
    return 0;
  lmp_pool_task_t pt;
  int rc;
  while ((rc = lmp_pool_worker_next(w, &pt)) == 0) {
    run_task(L, w, &pt);
    lua_settop(L, 1);
  }
  if (rc != -EPIPE)
    return luaL_error(L, "cannot take a task: %s", lmp_strerror(rc));
  lua_pushboolean(L, 1);
  return 1;
}

int lmpb_worker_run(lmp_pool_worker_t *w, lua_State *L, int init_ref)
{
  /* SIGINT is ignored since the worker's birth (LMP_PROC_NOINT): the
   * terminal's ^C is for the program, which decides what stops. */
  lmpb_profile_reset(L); /* a new thread inherits the hook */
  lua_State *co = lua_newthread(L);
  lua_pushcfunction(co, worker_loop);
  lua_pushlightuserdata(co, w);
  lua_pushinteger(co, init_ref);
  int nres, rc = lua_resume(co, L, 2, &nres);
  if (rc == LUA_OK)
    return nres > 0 && lua_toboolean(co, -1) ? 0 : 1;
  fflush(stdout);
  fprintf(stderr, "lmp pool worker %d: %s\n", (int)getpid(),
          rc == LUA_YIELD ? "attempt to yield from a task" : lmpb_tomessage(co, -1));
  return 1;
}

int lmpb_pool_worker(lua_State *L)
{
  const char *ticket = luaL_checkstring(L, 1);
  lmp_pool_worker_t *w;
  int rc = lmp_pool_worker_attach(ticket, &w);
  if (rc < 0)
    return lmpb_rterror(L, "_pool_worker", rc);
  int init_ref = LUA_NOREF;
  if (lua_istable(L, 2)) {
    lua_pushvalue(L, 2);
    init_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  int code = lmpb_worker_run(w, L, init_ref);
  lmp_pool_worker_release(w);
  lmp_proc_exit(code);
}

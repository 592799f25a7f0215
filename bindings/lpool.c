/*
 * lpool.c -- the C half of lmp.Pool: the pool core object and the encoding
 * of functions once per call.  The Pool and AsyncResult objects users see
 * are written in Lua (scripts/lmp/pool.lua), loaded the first time lmp.Pool
 * is called, over the functions below (lmp.core.pool); the loop the
 * workers run is in lworker.c, and what the two files share in lpool.h.
 *
 * A task is [function record][u32 count][msgpack value].  The function
 * record is [u64 hash][u32 length][the function as the codec encodes it,
 * upvalues included]; it is built once per map call (and once per function
 * object for functions whose only upvalue is _ENV, which cannot change), so
 * a 10k-item map encodes its function once.  Which functions are kept is
 * decided here for the broker's tasks too (core.encode_fn(fn, true)), whose
 * function is the bare encoding without the record's header.
 *
 * Lists of plain values (nil, booleans, numbers, strings) take the wire
 * room's fast path (codec/plain.c): the parent packs a map's items straight
 * from the caller's table and unpacks a chunk's results straight into the
 * result table; a worker (lworker.c) reads a chunk's items one by one as it
 * runs them and packs each result as it comes.  Anything else goes through
 * the codec.
 *
 * The parent's part of the commonest task is kept out of Lua: an
 * apply_async with no options is made whole here (fast_apply: checks,
 * encoding, submission, its AsyncResult filed in pool._pending), and the
 * replies that have arrived are taken together and settled here
 * (core:drain), each by its handler's _settle, the one piece of Lua left.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "lmp/pool.h"
#include "lmp/proc.h"
#include "codec.h"
#include "codec/plain.h"
#include "lmpaux.h"
#include "lpool.h"

#define CORE_MT "lmp.PoolCore"

static const char K_FNRECS;  /* registry: reusable function -> its record (weak keys) */
static const char K_FNREMOTE; /* the same for broker tasks: its bare encoding */

/* Counter for tests: function records built here. */
static lua_Integer fn_encodes;

typedef struct lpool {
  lmp_pool_t *pool; /* NULL until created, and after free */
  pid_t owner;
  lua_State *L;  /* the thread of the current call: a worker forked now runs on it */
  int init_ref;  /* registry: {fn, args, n}, or LUA_NOREF */
  lmp_buf_t buf; /* lists of plain values, packed */
  const char *method; /* the start method: "fork", "spawn", "forkserver" */
  lua_Integer sinks;  /* destinations of replies kept (user value 1) */
  int start_err;      /* registry: why the last hooked start failed, or LUA_NOREF */
} lpool;

/* === helpers === */

/*
 * This process's pid, without a system call each time (getpid is one, and
 * every call on a pool checks it): kept in a page that fork wipes
 * (MADV_WIPEONFORK), so a forked child finds zero there and asks again.
 */
static pid_t *pid_page;
static int pid_page_failed;

static pid_t self_pid(void)
{
  if (!pid_page && !pid_page_failed) {
    long size = sysconf(_SC_PAGESIZE);
    void *m = mmap(NULL, (size_t)size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m != MAP_FAILED && madvise(m, (size_t)size, MADV_WIPEONFORK) == 0) {
      pid_page = m;
    } else {
      if (m != MAP_FAILED)
        munmap(m, (size_t)size);
      pid_page_failed = 1;
    }
  }
  if (!pid_page)
    return getpid();
  if (*pid_page == 0)
    *pid_page = getpid();
  return *pid_page;
}

/* The core's methods have its metatable as their upvalue: comparing it is
 * cheaper than luaL_checkudata's look-up by name, and these run per task. */
static lpool *checkcore(lua_State *L)
{
  lpool *lp = lua_touserdata(L, 1);
  int ok = lp && lua_getmetatable(L, 1);
  if (ok) {
    ok = lua_rawequal(L, -1, lua_upvalueindex(1));
    lua_pop(L, 1);
  }
  if (!ok)
    lp = luaL_checkudata(L, 1, CORE_MT); /* raises, worded as lauxlib words it */
  if (lp->owner != self_pid())
    luaL_argerror(L, 1, "pool belongs to another process");
  if (!lp->pool)
    luaL_argerror(L, 1, "pool is released");
  lp->L = L;
  return lp;
}

/* A 64-bit hash of the bytes, 8 at a time: for the workers' cache, which
 * compares the bytes anyway, so quality matters only for speed. */
static uint64_t hash64(const char *p, size_t n)
{
  uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
  while (n >= 8) {
    uint64_t k;
    memcpy(&k, p, 8);
    h = (h ^ (k * 0xff51afd7ed558ccdull)) * 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 29;
    p += 8;
    n -= 8;
  }
  uint64_t k = 0;
  memcpy(&k, p, n);
  h = (h ^ (k * 0xff51afd7ed558ccdull)) * 0xc4ceb9fe1a85ec53ull;
  return h ^ (h >> 32);
}

static int iscallable(lua_State *L, int idx)
{
  if (lua_isfunction(L, idx))
    return 1;
  int ok = luaL_getmetafield(L, idx, "__call") != LUA_TNIL;
  if (ok)
    lua_pop(L, 1);
  return ok;
}

/* A C function, or a Lua function whose only upvalue is _ENV: its encoding
 * never changes, so it can be kept. */
static int reusable(lua_State *L, int idx)
{
  if (lua_iscfunction(L, idx))
    return 1;
  if (!lua_isfunction(L, idx))
    return 0;
  for (int i = 1;; i++) {
    const char *name = lua_getupvalue(L, idx, i);
    if (!name)
      return 1;
    lua_pop(L, 1);
    if (strcmp(name, "_ENV") != 0)
      return 0;
  }
}

/* === the parent === */

/* Push the weak table of kept records (remote: of broker encodings). */
static void push_fnrecs(lua_State *L, int remote)
{
  const void *key = remote ? &K_FNREMOTE : &K_FNRECS;
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, key) == LUA_TTABLE)
    return;
  lua_pop(L, 1);
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, key);
}

/* Push the record of the function at idx, or with remote its encoding for
 * a broker task (handles refused): from the cache, or built (and cached
 * when it can be reused).  Whether it can be. */
static int push_fnrec(lua_State *L, int idx, int remote)
{
  idx = lua_absindex(L, idx);
  int keep = reusable(L, idx);
  if (keep) {
    push_fnrecs(L, remote);
    lua_pushvalue(L, idx);
    if (lua_rawget(L, -2) == LUA_TSTRING) {
      lua_remove(L, -2);
      return keep;
    }
    lua_pop(L, 2);
  }
  if (remote) {
    const lmp_buf_t *b = lmpb_encode_remote(L, idx, "function");
    lua_pushlstring(L, b->data, b->len);
  } else {
    const lmp_buf_t *b = lmpb_encode(L, idx, "function");
    if (b->len > UINT32_MAX)
      luaL_error(L, "function too large");
    uint64_t h = hash64(b->data, b->len);
    uint32_t n = (uint32_t)b->len;
    luaL_Buffer lb;
    char *out = luaL_buffinitsize(L, &lb, 12 + b->len);
    memcpy(out, &h, 8);
    memcpy(out + 8, &n, 4);
    memcpy(out + 12, b->data, b->len);
    luaL_pushresultsize(&lb, 12 + b->len);
  }
  fn_encodes++;
  if (keep) {
    push_fnrecs(L, remote);
    lua_pushvalue(L, idx);
    lua_pushvalue(L, -3);
    lua_rawset(L, -3);
    lua_pop(L, 1);
  }
  return keep;
}

/* core.encode_fn(fn [, remote]) -> function record (a string); with
 * remote, the function's encoding as a broker task carries it. */
static int l_encode_fn(lua_State *L)
{
  luaL_argcheck(L, iscallable(L, 1), 1, "function expected");
  int remote = lua_toboolean(L, 2);
  lua_settop(L, 1);
  push_fnrec(L, 1, remote);
  return 1;
}

/* Protected: value, what (a light userdata) -> its encoding (another). */
static int encode_call(lua_State *L)
{
  lua_pushlightuserdata(L, (void *)lmpb_encode(L, 1, lua_touserdata(L, 2)));
  return 1;
}

int lmpb_pool_pencode(lua_State *L, lua_CFunction fn, int idx, const char *what,
                      const lmp_buf_t **out)
{
  idx = lua_absindex(L, idx);
  for (int pass = 0;; pass++) {
    lua_pushcfunction(L, fn);
    lua_pushvalue(L, idx);
    lua_pushlightuserdata(L, (void *)what);
    int rc = lua_pcall(L, 2, 1, 0);
    if (rc == LUA_OK) {
      *out = lua_touserdata(L, -1);
      lua_pop(L, 1);
      return rc;
    }
    if (rc != LUA_ERRMEM || pass)
      return rc;
    lua_pop(L, 1);
    lua_gc(L, LUA_GCCOLLECT);
  }
}

const lmp_buf_t *lmpb_pool_try_encode(lua_State *L, int idx, const char *what)
{
  const lmp_buf_t *b;
  return lmpb_pool_pencode(L, encode_call, idx, what, &b) == LUA_OK ? b : NULL;
}

/* Encode value[first .. first+count-1] as an array.  When an item cannot
 * be sent, the error names it by its index in the caller's list. */
static const lmp_buf_t *encode_slice(lua_State *L, int list, lua_Integer first, lua_Integer count)
{
  lua_createtable(L, (int)count, 0);
  for (lua_Integer k = 0; k < count; k++) {
    lua_geti(L, list, first + k);
    lua_rawseti(L, -2, k + 1);
  }
  const lmp_buf_t *b = lmpb_pool_try_encode(L, -1, "list");
  if (b)
    return b;
  lua_pop(L, 1);
  for (lua_Integer k = 0; k < count; k++) { /* raise naming the item in the caller's list */
    const char *name = lua_pushfstring(L, "list[%I]", (LUAI_UACINT)(first + k));
    lua_geti(L, list, first + k);
    lmpb_encode(L, -1, name);
    lua_pop(L, 2);
  }
  return lmpb_encode(L, -1, "list");
}

/* Replace the function at idx (a function, or its record already) by its
 * record.  The pool's last reusable function and its record are kept in
 * the core's user values 2 and 3: a stream of tasks of one function finds
 * it there. */
static void fnrec_at(lua_State *L, int core, int idx)
{
  if (lua_type(L, idx) == LUA_TSTRING)
    return;
  lua_getiuservalue(L, core, 2);
  int same = lua_rawequal(L, -1, idx);
  lua_pop(L, 1);
  if (same) {
    lua_getiuservalue(L, core, 3);
  } else {
    luaL_argcheck(L, iscallable(L, idx), idx, "function expected");
    if (push_fnrec(L, idx, 0)) {
      lua_pushvalue(L, idx);
      lua_setiuservalue(L, core, 2);
      lua_pushvalue(L, -1);
      lua_setiuservalue(L, core, 3);
    }
  }
  lua_replace(L, idx);
}

/* Hand a task to the pool: the record at fr, the value at val (items
 * first.. of it with slice); its id, or raises. */
static uint64_t submit_task(lua_State *L, lpool *lp, lua_Integer tag, int fr, int val,
                            lua_Integer count, lua_Integer first, int slice)
{
  size_t fnlen;
  const char *f = lua_tolstring(L, fr, &fnlen);
  const lmp_buf_t *b = &lp->buf;
  if (!lua_istable(L, val) || lmpb_plain_pack_list(L, val, first, count, &lp->buf) < 0) {
    if (slice)
      b = encode_slice(L, val, first, count);
    else
      b = lmpb_encode(L, val, tag == TAG_APPLY ? "args" : "list");
  }
  uint32_t n = (uint32_t)count;
  struct iovec iov[3] = {{(void *)f, fnlen}, {&n, 4}, {b->data, b->len}};
  uint64_t id;
  int rc = lmp_pool_submit(lp->pool, (uint32_t)tag, iov, 3, &id);
  if (rc < 0)
    lmpb_rterror(L, "submit", rc);
  return id;
}

/* c:submit(tag, fn, value, count [, first [, dest]]) -> id.  fn is a
 * function or its record (encode_fn).  With first, the items are
 * value[first .. first+count-1]; with dest, a reply that is a list of plain
 * values is written to dest[first...] and wait reports it as "stored". */
static int core_submit(lua_State *L)
{
  lpool *lp = checkcore(L);
  lua_Integer tag = luaL_checkinteger(L, 2);
  fnrec_at(L, 1, 3);
  luaL_checkany(L, 4);
  lua_Integer count = luaL_checkinteger(L, 5);
  luaL_argcheck(L, count >= 0 && count <= UINT32_MAX, 5, "bad count");
  lua_Integer first = luaL_optinteger(L, 6, 1);
  int slice = !lua_isnoneornil(L, 6), sink = !lua_isnoneornil(L, 7);
  if (sink)
    luaL_checktype(L, 7, LUA_TTABLE);
  lua_settop(L, 7);
  uint64_t id = submit_task(L, lp, tag, 3, 4, count, first, slice);
  if (sink) {
    lua_getiuservalue(L, 1, 1);
    lua_pushvalue(L, 7);
    lua_rawseti(L, -2, (lua_Integer)id);
    lua_pushinteger(L, first);
    lua_rawseti(L, -2, -(lua_Integer)id);
    lua_pop(L, 1);
    lp->sinks++;
  }
  lua_pushinteger(L, (lua_Integer)id);
  return 1;
}

/*
 * apply(pool, fn [, args [, n]]) -> AsyncResult, or nothing: the common
 * apply_async made whole here, for lmp.result (B.fast_apply): a running
 * pool without retries, a function, a list without metatable or field n
 * (or nothing; n: its count, when the caller knows it), no lmp.profile
 * under way.  Anything else returns nothing and lmp.result does it all.
 * The result is lmp.result's AsyncResult for an apply task, made as its
 * submit_apply makes one and filed in pool._pending under its ticket.
 */
enum { /* fast_apply's upvalues: the classes, then the field names it uses */
  UV_POOL = 1, UV_RESULT, UV_PROFILES, UV_CORE_MT, UV_NO_ARGS,
  UV_STATE, UV_RUN, UV_RETRY, UV_RETRIES, UV_C, UV_PENDING, UV_N,
  UV_POOLF, UV_T, UV_DONE, UV_OK, UV_VALUE, UV_COUNT = UV_VALUE
};
static const char *const fast_names[] = {"_state", "run", "_retry", "retries", "_c", "_pending", "n",
                                         "_pool", "_t", "_done", "_ok", "_value"};

/* Push t[upvalue k] (t a table at index t, its field raw). */
static int uvget(lua_State *L, int t, int k)
{
  lua_pushvalue(L, lua_upvalueindex(k));
  return lua_rawget(L, t);
}

static void uvset_false(lua_State *L, int k)
{
  lua_pushvalue(L, lua_upvalueindex(k));
  lua_pushboolean(L, 0);
  lua_rawset(L, -3);
}

static int fast_apply(lua_State *L)
{
  lua_settop(L, 4);
  if (lua_type(L, 1) != LUA_TTABLE || lua_type(L, 2) != LUA_TFUNCTION || !lua_getmetatable(L, 1))
    return 0;
  int ok = lua_rawequal(L, -1, lua_upvalueindex(UV_POOL));
  lua_pop(L, 1);
  int t = lua_type(L, 3);
  if (!ok || lua_rawlen(L, lua_upvalueindex(UV_PROFILES)) > 0 || (t != LUA_TNIL && t != LUA_TTABLE))
    return 0;
  lua_Integer n = 0;
  if (t == LUA_TTABLE) {
    if (lua_getmetatable(L, 3))
      return 0;
    if (lua_isinteger(L, 4)) {
      n = lua_tointeger(L, 4);
    } else {
      if (uvget(L, 3, UV_N) != LUA_TNIL)
        return 0;
      lua_pop(L, 1);
      n = (lua_Integer)lua_rawlen(L, 3);
    }
    if (n < 0 || n > UINT32_MAX)
      return 0;
  } else {
    lua_pushvalue(L, lua_upvalueindex(UV_NO_ARGS));
    lua_replace(L, 3);
  }
  uvget(L, 1, UV_STATE); /* 5 */
  uvget(L, 1, UV_RETRY); /* 6 */
  uvget(L, 1, UV_C);     /* 7 */
  if (!lua_rawequal(L, 5, lua_upvalueindex(UV_RUN)) || !lua_istable(L, 6) ||
      uvget(L, 6, UV_RETRIES) != LUA_TNUMBER || lua_tointeger(L, -1) != 0 ||
      !lua_getmetatable(L, 7))
    return 0;
  ok = lua_rawequal(L, -1, lua_upvalueindex(UV_CORE_MT));
  lua_pop(L, 2);
  lpool *lp = lua_touserdata(L, 7);
  if (!ok || lp->owner != self_pid() || !lp->pool)
    return 0;
  lp->L = L;
  fnrec_at(L, 7, 2);
  uint64_t id = submit_task(L, lp, TAG_APPLY, 2, 3, n, 1, 0);
  lua_createtable(L, 0, 5);
  lua_pushvalue(L, lua_upvalueindex(UV_POOLF));
  lua_pushvalue(L, 1);
  lua_rawset(L, -3);
  lua_pushvalue(L, lua_upvalueindex(UV_T));
  lua_pushinteger(L, (lua_Integer)id);
  lua_rawset(L, -3);
  uvset_false(L, UV_DONE);
  uvset_false(L, UV_OK);
  uvset_false(L, UV_VALUE);
  lua_pushvalue(L, lua_upvalueindex(UV_RESULT));
  lua_setmetatable(L, -2);
  uvget(L, 1, UV_PENDING);
  lua_pushvalue(L, -2);
  lua_rawseti(L, -2, (lua_Integer)id);
  lua_pop(L, 1);
  return 1;
}

/* core.fast_apply(Pool, AsyncResult, profiles) -> apply (see fast_apply) */
static int l_fast_apply(lua_State *L)
{
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 3);
  luaL_getmetatable(L, CORE_MT);
  lua_newtable(L);
  for (size_t i = 0; i < sizeof fast_names / sizeof *fast_names; i++)
    lua_pushstring(L, fast_names[i]);
  lua_pushcclosure(L, fast_apply, UV_COUNT);
  return 1;
}

/* c:forward(tag, fn, count, value) -> id: a task whose parts came encoded
 * (a broker's): fn a function's encoding (encode_fn(f, true)), value its
 * encoded arguments or items.  They go to a worker as they are, unread;
 * only the record's header is added. */
static int core_forward(lua_State *L)
{
  lpool *lp = checkcore(L);
  lua_Integer tag = luaL_checkinteger(L, 2);
  size_t fnlen, vlen;
  const char *fn = luaL_checklstring(L, 3, &fnlen);
  lua_Integer count = luaL_checkinteger(L, 4);
  const char *v = luaL_checklstring(L, 5, &vlen);
  luaL_argcheck(L, tag == TAG_APPLY || tag == TAG_MAP || tag == TAG_STARMAP, 2,
                "unknown task type");
  luaL_argcheck(L, fnlen <= UINT32_MAX, 3, "function too large");
  luaL_argcheck(L, count >= 0 && count <= UINT32_MAX, 4, "bad count");
  uint64_t h = hash64(fn, fnlen);
  uint32_t fl = (uint32_t)fnlen, n = (uint32_t)count;
  struct iovec iov[5] = {{&h, 8}, {&fl, 4}, {(void *)fn, fnlen}, {&n, 4}, {(void *)v, vlen}};
  uint64_t id;
  int rc = lmp_pool_submit(lp->pool, (uint32_t)tag, iov, 5, &id);
  if (rc < 0)
    return lmpb_rterror(L, "submit", rc);
  lua_pushinteger(L, (lua_Integer)id);
  return 1;
}

/* Push the destination of task id's reply (and forget it): 1, or 0 if it
 * has none. */
static int take_sink(lua_State *L, lpool *lp, lua_Integer id, lua_Integer *first)
{
  if (lp->sinks == 0)
    return 0;
  lua_getiuservalue(L, 1, 1);
  if (lua_rawgeti(L, -1, id) != LUA_TTABLE) {
    lua_pop(L, 2);
    return 0;
  }
  lua_rawgeti(L, -2, -id);
  *first = lua_tointeger(L, -1);
  lua_pop(L, 1);
  lua_pushnil(L);
  lua_rawseti(L, -3, id);
  lua_pushnil(L);
  lua_rawseti(L, -3, -id);
  lua_remove(L, -2);
  lp->sinks--;
  return 1;
}

static void exit_text(char *buf, size_t n, int code)
{
  if (code < 0)
    snprintf(buf, n, "killed by signal %d", -code);
  else
    snprintf(buf, n, "exit code %d", code);
}

/* Push the lmp.Error for a task that has no reply. */
static void push_failure(lua_State *L, const lmp_pool_event_t *ev)
{
  char how[48];
  exit_text(how, sizeof how, ev->exitcode);
  if (ev->type == LMP_POOL_TIMEOUT) {
    lua_pushfstring(L, "task ran past task_timeout; worker %d was killed", (int)ev->pid);
    lmpb_error_push(L, "timeout", lua_tostring(L, -1));
  } else if (ev->type == LMP_POOL_LOST) {
    lua_pushfstring(L, "worker %d died while running the task (%s)", (int)ev->pid, how);
    lmpb_error_push(L, "worker_lost", lua_tostring(L, -1));
  } else {
    lua_pushfstring(L, "worker %d died while starting (%s)", (int)ev->pid, how);
    lmpb_error_push(L, "initializer", lua_tostring(L, -1));
  }
  lua_remove(L, -2);
  lua_pushinteger(L, ev->pid);
  lua_setfield(L, -2, "pid");
  lua_pushinteger(L, ev->exitcode);
  lua_setfield(L, -2, "exitcode");
}

/* Push what event ev says, as c:wait returns it. */
static int push_event(lua_State *L, lpool *lp, lmp_pool_event_t ev, int raw)
{
  lua_Integer first;
  int sink = ev.id && take_sink(L, lp, (lua_Integer)ev.id, &first);
  int top = lua_gettop(L), nres = 3, prof = 0;
  if (ev.type == LMP_POOL_DONE && (ev.status & ST_PROFILED)) { /* the samples go fourth */
    uint32_t plen = 0;
    if (ev.len >= 4)
      memcpy(&plen, (const char *)ev.data + ev.len - 4, 4);
    if (ev.len < 4 || plen > ev.len - 4)
      plen = 0;
    ev.len -= ev.len >= 4 ? 4 + (size_t)plen : ev.len;
    ev.status &= ~(uint32_t)ST_PROFILED;
    lua_pushlstring(L, (const char *)ev.data + ev.len, plen);
    prof = lua_gettop(L);
    nres = 4;
  }
  lua_pushinteger(L, (lua_Integer)ev.id);
  switch (ev.type) {
  case LMP_POOL_DONE:
    if (sink && ev.status == ST_OK) {
      lua_Integer n = lmpb_plain_unpack_list(L, ev.data, ev.len, top, first);
      if (n >= 0) {
        lua_pushliteral(L, "stored");
        lua_pushinteger(L, n);
        if (prof)
          lua_pushvalue(L, prof);
        return nres;
      }
    }
    lua_pushstring(L, ev.status == ST_OK ? "ok" : ev.status == ST_PARTIAL ? "partial" : "error");
    if (raw)
      lua_pushlstring(L, ev.data, ev.len);
    else
      lmpb_decode(L, ev.data, ev.len, 1);
    if (prof)
      lua_pushvalue(L, prof);
    return nres;
  case LMP_POOL_BROKEN:
    lua_pushliteral(L, "broken");
    if (ev.len)
      lmpb_decode(L, ev.data, ev.len, 1);
    else
      push_failure(L, &ev);
    break;
  default:
    lua_pushliteral(L, "error");
    push_failure(L, &ev);
  }
  return 3;
}

/* c:wait([deadline [, raw]]) -> id, how, value | nil, "timeout" | nil, "closed".
 * deadline is absolute, in lmp.time() seconds; nil waits forever.
 * how: "ok", "error" (value is an lmp.Error), "partial" ({values,
 * errors}), or "broken" (id 0, value the initializer's lmp.Error).  With
 * raw, the value of a worker's reply is its bytes, undecoded (a string);
 * an error no worker wrote (a timeout, a worker lost) is still an lmp.Error. */
static int core_wait(lua_State *L)
{
  lpool *lp = checkcore(L);
  int64_t deadline = LMP_FOREVER;
  if (!lua_isnoneornil(L, 2)) {
    lua_Number d = luaL_checknumber(L, 2) * 1e9;
    deadline = d <= 0 ? 0 : d >= 9e18 ? LMP_FOREVER : (int64_t)d;
  }
  int raw = lua_toboolean(L, 3);
  lmp_pool_event_t ev;
  int rc = lmp_pool_wait(lp->pool, &ev, deadline);
  if (rc < 0)
    return lmpb_result(L, "wait", rc, "timeout");
  return push_event(L, lp, ev, raw);
}

/* c:drain(pending, max) -> n [, id, how, value [, samples]]: the events
 * that are ready now, taken without waiting.  A plain reply (a task's
 * result, no samples) is settled here as the pool's dispatch settles one:
 * its handler in pending is dropped from it and handler:_settle(how,
 * value) called.  Stops after max of them, when none is ready, or at the
 * first other event (an error, a profiled reply, the pool broken), which
 * comes back after the count for the caller to settle. */
static int core_drain(lua_State *L)
{
  lpool *lp = checkcore(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer max = luaL_checkinteger(L, 3);
  lua_settop(L, 3);
  lua_Integer n = 0;
  while (n < max) {
    lmp_pool_event_t ev;
    int rc = lmp_pool_take(lp->pool, &ev);
    if (rc < 0)
      return lmpb_rterror(L, "take", rc);
    if (rc == 0)
      break;
    int plain = ev.type == LMP_POOL_DONE && ev.status == ST_OK;
    int k = push_event(L, lp, ev, 0);
    if (!plain) {
      lua_pushinteger(L, n);
      lua_insert(L, -k - 1);
      return k + 1;
    }
    int top = lua_gettop(L); /* id, how, value */
    if (lua_rawgeti(L, 2, lua_tointeger(L, top - 2)) != LUA_TNIL) {
      lua_pushnil(L);
      lua_rawseti(L, 2, lua_tointeger(L, top - 2));
      lua_getfield(L, -1, "_settle");
      lua_insert(L, -2);
      lua_pushvalue(L, top - 1);
      lua_pushvalue(L, top);
      lua_call(L, 3, 0);
    }
    lua_settop(L, 3);
    n++;
  }
  lua_pushinteger(L, n);
  return 1;
}

/* Withdraw task t by `how` (cancel or stop); its sink goes with it. */
static int withdraw(lua_State *L, int (*how)(lmp_pool_t *, uint64_t))
{
  lpool *lp = checkcore(L);
  lua_Integer id = luaL_checkinteger(L, 2), first;
  int done = how(lp->pool, (uint64_t)id);
  if (done && take_sink(L, lp, id, &first))
    lua_pop(L, 1);
  lua_pushboolean(L, done);
  return 1;
}

static int core_cancel(lua_State *L)
{
  return withdraw(L, lmp_pool_cancel);
}

/* core:stop(t): cancel the task, or kill (and replace) the worker running
 * it; for a call that was given up (interrupted). */
static int core_stop(lua_State *L)
{
  return withdraw(L, lmp_pool_stop);
}

static int core_state(lua_State *L)
{
  static const char *const names[] = {NULL, "queued", "sent", "running"};
  lpool *lp = checkcore(L);
  int st = lmp_pool_task_state(lp->pool, (uint64_t)luaL_checkinteger(L, 2));
  if (st > 0 && st <= LMP_POOL_TASK_RUNNING)
    lua_pushstring(L, names[st]);
  else
    lua_pushnil(L);
  return 1;
}

static int core_close(lua_State *L)
{
  lmp_pool_close(checkcore(L)->pool);
  return 0;
}

static int core_terminate(lua_State *L)
{
  lpool *lp = checkcore(L);
  lmp_pool_terminate(lp->pool);
  lua_newtable(L);
  lua_setiuservalue(L, 1, 1); /* no reply will come: forget the destinations */
  lp->sinks = 0;
  return 0;
}

static int core_fileno(lua_State *L)
{
  lua_pushinteger(L, lmp_pool_fd(checkcore(L)->pool));
  return 1;
}

static void setint(lua_State *L, const char *k, lua_Integer v)
{
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}

void lmpb_push_slot(lua_State *L, const lmp_pool_slot_info_t *s, int64_t now)
{
  static const char *const states[] = {"none", "starting", "idle", "busy", "exiting"};
  lua_createtable(L, 0, 9);
  if (s->pid) {
    setint(L, "pid", s->pid);
    lmp_proc_usage_t u;
    if (lmp_proc_usage(s->pid, &u) == 0) {
      lua_pushnumber(L, (lua_Number)u.cpu_ns / 1e9);
      lua_setfield(L, -2, "cpu");
      setint(L, "rss", (lua_Integer)u.rss);
    }
  }
  lua_pushstring(L, states[s->state >= 0 && s->state <= LMP_POOL_EXITING ? s->state : 0]);
  lua_setfield(L, -2, "state");
  if (s->state == LMP_POOL_BUSY) {
    setint(L, "task", (lua_Integer)s->task);
    setint(L, "item", (lua_Integer)s->item + 1);
    /* `now` may have been read before the task started: never negative */
    int64_t age = now > s->started_ns ? now - s->started_ns : 0;
    lua_pushnumber(L, (lua_Number)age / 1e9);
    lua_setfield(L, -2, "running_for");
  }
  setint(L, "done", (lua_Integer)s->done);
  setint(L, "failed", (lua_Integer)s->failed);
}

void lmpb_push_stats(lua_State *L, const lmp_pool_stats_t *st)
{
  lua_createtable(L, 0, 8);
  setint(L, "queued", (lua_Integer)st->queued);
  setint(L, "running", (lua_Integer)st->running);
  /* As the workers' counters do: a task that raised failed. */
  setint(L, "done", (lua_Integer)(st->done - st->errors));
  setint(L, "failed", (lua_Integer)(st->failed + st->errors));
  setint(L, "restarts", (lua_Integer)st->restarts);
  setint(L, "recycled", (lua_Integer)st->recycled);
  lua_pushnumber(L, st->rate);
  lua_setfield(L, -2, "rate");
}

/* c:workers() -> {{pid =, state =, task =, item =, running_for =, done =, failed =,
 * cpu =, rss =}, ...} */
static int core_workers(lua_State *L)
{
  lpool *lp = checkcore(L);
  int n = lmp_pool_processes(lp->pool);
  int64_t now = lmp_now_ns();
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lmp_pool_slot_info_t s;
    lmp_pool_slot(lp->pool, i, &s);
    lmpb_push_slot(L, &s, now);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* c:stats() -> {queued =, running =, done =, failed =, restarts =, recycled =, rate =} */
static int core_stats(lua_State *L)
{
  lpool *lp = checkcore(L);
  lmp_pool_stats_t st;
  lmp_pool_stats(lp->pool, &st);
  lmpb_push_stats(L, &st);
  return 1;
}

/* Never blocks: workers still running are killed and reaped later.  In a
 * worker (a forked copy of the parent's state) it does nothing: the worker
 * runs on that very memory. */
static int core_gc(lua_State *L)
{
  lpool *lp = luaL_checkudata(L, 1, CORE_MT);
  if (lp->owner != self_pid())
    return 0;
  if (lp->pool) {
    lmp_pool_free(lp->pool);
    lp->pool = NULL;
  }
  luaL_unref(L, LUA_REGISTRYINDEX, lp->init_ref);
  luaL_unref(L, LUA_REGISTRYINDEX, lp->start_err);
  lp->init_ref = lp->start_err = LUA_NOREF;
  lmp_buf_free(&lp->buf);
  lmp_proc_reap();
  return 0;
}


/* === starting workers === */

/* A forked worker: it has the parent's state, and takes a worker's name. */
static int worker_body(lmp_pool_worker_t *w, void *ctx)
{
  lpool *lp = ctx;
  char name[32];
  snprintf(name, sizeof name, "PoolWorker-%d", lmp_pool_worker_index(w) + 1);
  lmpb_process_become(lp->L, name, NULL, 0);
  return lmpb_worker_run(w, lp->L, lp->init_ref);
}

/*
 * Workers started by spawn or forkserver.  The parent starts a child that
 * calls lmp._pool_worker(ticket, init) -- a C function, so it travels by
 * name -- with the initializer record {fn, args, n} as its argument; the
 * child attaches to the pool as the worker the ticket names and runs the
 * same loop as a forked worker.  The start runs under lua_pcall, since the
 * pool's core calls it: an initializer that cannot be sent is kept in
 * start_err for l_new to raise.
 */
struct start_args {
  lpool *lp;
  const char *ticket;
  int index;
  lmp_proc_t **out;
  int rc;
};

static int start_call(lua_State *L)
{
  struct start_args *a = lua_touserdata(L, 1);
  lua_pushcfunction(L, lmpb_pool_worker);
  lua_pushstring(L, a->ticket);
  if (a->lp->init_ref != LUA_NOREF)
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->lp->init_ref);
  else
    lua_pushnil(L);
  char name[32];
  snprintf(name, sizeof name, "PoolWorker-%d", a->index + 1);
  lmpb_start_t how = {a->lp->method, name, LMP_PROC_DAEMON | LMP_PROC_NOINT};
  a->rc = lmpb_spawn(L, 2, 2, &how, a->out);
  return 0;
}

static int start_worker(void *ctx, const char *ticket, int index, lmp_proc_t **out)
{
  lpool *lp = ctx;
  lua_State *L = lp->L;
  struct start_args a = {lp, ticket, index, out, 0};
  lua_pushcfunction(L, start_call);
  lua_pushlightuserdata(L, &a);
  if (lua_pcall(L, 1, 0, 0) == LUA_OK)
    return a.rc;
  luaL_unref(L, LUA_REGISTRYINDEX, lp->start_err);
  lp->start_err = luaL_ref(L, LUA_REGISTRYINDEX);
  return -EINVAL;
}

#define MAX_PROCESSES 4096

/* core.new(processes, maxtasksperchild, task_timeout, initializer, initargs,
 * max_memory, start_method) */
static int l_new(lua_State *L)
{
  lua_Integer n = luaL_checkinteger(L, 1);
  lua_Integer max = luaL_optinteger(L, 2, 0);
  lua_Number timeout = luaL_optnumber(L, 3, 0);
  lua_Integer maxmem = luaL_optinteger(L, 6, 0);
  luaL_argcheck(L, maxmem >= 0, 6, "bad max_memory");
  const char *method = lmpb_checkmethod(L, 7, 7);
  luaL_argcheck(L, n >= 1 && n <= MAX_PROCESSES, 1, "processes must be between 1 and 4096");
  luaL_argcheck(L, max >= 0 && max <= UINT32_MAX, 2, "bad maxtasksperchild");
  luaL_argcheck(L, timeout >= 0 && timeout < 9e9, 3, "bad task_timeout");
  lpool *lp = lua_newuserdatauv(L, sizeof *lp, 3);
  memset(lp, 0, sizeof *lp);
  lua_newtable(L);
  lua_setiuservalue(L, -2, 1); /* destinations of replies, by task id */
  lp->owner = self_pid();
  lp->init_ref = LUA_NOREF;
  lp->start_err = LUA_NOREF;
  lp->method = method ? method : lmpb_default_method(L);
  lp->L = L;
  luaL_setmetatable(L, CORE_MT);
  int ud = lua_gettop(L);
  if (!lua_isnoneornil(L, 4)) {
    lua_createtable(L, 3, 0);
    lua_pushvalue(L, 4);
    lua_rawseti(L, -2, 1);
    if (lua_istable(L, 5)) {
      lua_pushvalue(L, 5);
      lua_rawseti(L, -2, 2);
      lua_getfield(L, 5, "n");
      if (!lua_isinteger(L, -1)) {
        lua_pop(L, 1);
        lua_pushinteger(L, (lua_Integer)lua_rawlen(L, 5));
      }
    } else {
      lua_newtable(L);
      lua_rawseti(L, -2, 2);
      lua_pushinteger(L, 0);
    }
    lua_rawseti(L, -2, 3);
    lp->init_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  lmp_pool_config_t cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.processes = (int)n;
  cfg.maxtasksperchild = (uint32_t)max;
  cfg.task_timeout_ns = (int64_t)(timeout * 1e9);
  cfg.max_memory = (uint64_t)maxmem;
  cfg.body = worker_body;
  if (strcmp(lp->method, "fork") != 0)
    cfg.start = start_worker;
  cfg.ctx = lp;
  cfg.owner = lmpb_owner(L);
  lmp_proc_reap();
  fflush(NULL); /* or each worker would write the parent's buffered output again */
  int rc = lmp_pool_create(&cfg, &lp->pool);
  if (lmpb_fds_retry(L, rc))
    rc = lmp_pool_create(&cfg, &lp->pool);
  if (rc < 0 && lp->start_err != LUA_NOREF) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, lp->start_err);
    return lua_error(L);
  }
  if (rc < 0)
    return lmpb_start_error(L, "Pool", "a worker", rc);
  lua_settop(L, ud);
  return 1;
}

/* core.table(n): an empty table with room for n items in its array part,
 * so a map's results land without the table growing under them. */
static int l_table(lua_State *L)
{
  lua_Integer n = luaL_checkinteger(L, 1);
  lua_createtable(L, n > 0 && n < INT32_MAX ? (int)n : 0, 0);
  return 1;
}

/* core.isatty(fd) */
static int l_isatty(lua_State *L)
{
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

/* lmp._pool_counters() -> {fn_encodes =, fn_loads =}: for tests. */
static int l_counters(lua_State *L)
{
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, fn_encodes);
  lua_setfield(L, -2, "fn_encodes");
  lua_pushinteger(L, lmpb_worker_loads());
  lua_setfield(L, -2, "fn_loads");
  return 1;
}

/* === lmp.Pool === */

static const luaL_Reg core_methods[] = {
    {"submit", core_submit}, {"forward", core_forward}, {"wait", core_wait}, {"drain", core_drain},
    {"cancel", core_cancel}, {"stop", core_stop},
    {"state", core_state},   {"close", core_close},
    {"terminate", core_terminate}, {"fileno", core_fileno},
    {"workers", core_workers}, {"stats", core_stats},
    {NULL, NULL},
};

static const luaL_Reg core_funcs[] = {
    {"new", l_new},     {"encode_fn", l_encode_fn}, {"isatty", l_isatty}, {"fast_apply", l_fast_apply},
    {"table", l_table}, {"counters", l_counters},   {NULL, NULL},
};

/* lmp.core.pool: the functions above, the task tags (which the Lua side of
 * the pools reads from here) and the largest pool. */
static int open_core(lua_State *L)
{
  luaL_newlib(L, core_funcs);
  lua_pushinteger(L, MAX_PROCESSES);
  lua_setfield(L, -2, "max_processes"); /* so Pool's own checks name 'Pool' */
  lua_createtable(L, 0, 4);
  setint(L, "apply", TAG_APPLY);
  setint(L, "map", TAG_MAP);
  setint(L, "starmap", TAG_STARMAP);
  setint(L, "profile", TAG_PROFILE);
  lua_setfield(L, -2, "tags");
  return 1;
}

int lmpb_pool_open(lua_State *L)
{
  if (luaL_newmetatable(L, CORE_MT)) {
    luaL_newlibtable(L, core_methods);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, core_methods, 1); /* the metatable, for checkcore */
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, core_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  open_core(L);
  lua_setfield(L, -2, "pool"); /* for scripts/lmp/pool.lua and the broker */
  lua_pushcfunction(L, l_counters);
  lua_setfield(L, -2, "_pool_counters");
  lua_pushcfunction(L, lmpb_pool_worker);
  lua_setfield(L, -2, "_pool_worker");
  return 0;
}

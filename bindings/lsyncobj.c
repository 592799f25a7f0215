/*
 * lsyncobj.c -- lmp.Lock, RLock, Semaphore, BoundedSemaphore, Event,
 * Condition and Barrier.
 *
 * Each object is a segment of its own holding a small header (magic, kind,
 * the Barrier's default timeout and serialized action) and the runtime
 * object (runtime/syncobj.c).  A handle is the segment's name, so a Lock
 * sent through a Queue, or passed to a Process, is the same lock on the
 * other side; a Condition travels as its own name and its lock's.
 *
 * A Lock this process still holds when its last handle here is collected
 * is abandoned first, as a dying holder's would be, so the next acquirer
 * hears "owner_died" instead of waiting forever on a mutex nobody can
 * release.  (A process that ends while holding one needs nothing of the
 * kind: its segments stay mapped until it exits, and the kernel hands the
 * robust mutex on.)
 *
 * Lua-side choices.  A Lock held by this process and acquired again without
 * a timeout raises ("would deadlock") rather than hang forever; with a
 * timeout it waits that out and returns false, as Python does.  Releasing a
 * lock this process does not hold raises (a pthread mutex cannot be
 * released by another process, unlike Python's semaphore-based Lock).  As a
 * to-be-closed variable a Lock, RLock, Condition or Semaphore releases one
 * hold this process has on it, if any (`l:acquire(); local _ <close> = l`),
 * as a with-block would; an Event or a Barrier drops this handle.  close()
 * drops the handle for every kind, as garbage collection does: one
 * idempotent sync_close behind both, after which every use raises.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmp/segment.h"
#include "lmp/syncobj.h"
#include "codec.h"
#include "lmpaux.h"
#include "lmpb.h"

enum { LOCK, RLOCK, SEM, BSEM, EVENT, COND, BARRIER, NKINDS };
static const char *const mtnames[] = {
    "lmp.Lock",  "lmp.RLock",     "lmp.Semaphore", "lmp.BoundedSemaphore",
    "lmp.Event", "lmp.Condition", "lmp.Barrier",
};

#define K(k) (1 << (k))
#define LOCKS (K(LOCK) | K(RLOCK))
#define SEMS (K(SEM) | K(BSEM))

#define SYNC_MAGIC 0x53504d4cu /* "LMPS" */

/* The segment. */
struct shared {
  uint32_t magic; /* written last */
  uint32_t kind;
  double timeout;      /* Barrier: the default for wait, negative for none */
  uint32_t action_len; /* Barrier: bytes of the serialized action */
  uint32_t pad;
  union {
    lmp_lock_t lock;
    lmp_sem_t sem;
    lmp_event_t event;
    lmp_condition_t cond;
    lmp_barrier_t barrier;
  } u;
  char action[];
};

/* === handles === */

typedef struct lsync {
  uintptr_t tag;  /* while open: lmpb_tag(itself, mtnames) (lmpaux.h) */
  lmp_seg_t *seg; /* NULL before it is made and after close */
  struct shared *sh;
  int kind;
  lua_Integer units; /* Semaphore: units this handle took and did not give back */
} lsync;

/* A handle in its closed state, which __gc can always free.  User value 1:
 * a Condition's lock, a Barrier's action. */
static lsync *newsync(lua_State *L, int kind)
{
  lsync *s = lua_newuserdatauv(L, sizeof *s, 1);
  memset(s, 0, sizeof *s);
  s->kind = kind;
  luaL_setmetatable(L, mtnames[kind]);
  return s;
}

/* Give s the segment, its reference included. */
static int sync_open(lsync *s, lmp_seg_t *seg)
{
  s->seg = seg;
  s->sh = lmp_seg_data(seg);
  s->tag = lmpb_tag(s, mtnames);
  return 0;
}

/* Back to the closed state (the segment's reference is the caller's). */
static void sync_unopen(lsync *s)
{
  s->tag = 0;
  s->seg = NULL;
  s->sh = NULL;
}

static void sync_close(lsync *s)
{
  if (s->seg == NULL)
    return;
  /* A Lock is about to become unreachable here while this process holds
   * it: hand it on as a dying holder would. */
  if ((s->kind == LOCK || s->kind == RLOCK) && lmp_seg_local(s->seg) == 1)
    lmp_lock_abandon(&s->sh->u.lock);
  lmp_seg_t *seg = s->seg;
  sync_unopen(s);
  lmp_seg_release(seg);
}

/* A new object of `kind` with `extra` bytes after it; raises on failure. */
static lsync *sync_create(lua_State *L, int kind, size_t extra, const char *fname)
{
  lsync *s = newsync(L, kind);
  lmp_seg_t *seg;
  int rc = lmp_seg_create(sizeof(struct shared) + extra, &seg);
  if (lmpb_fds_retry(L, rc))
    rc = lmp_seg_create(sizeof(struct shared) + extra, &seg);
  if (rc == 0)
    rc = sync_open(s, seg);
  if (rc < 0)
    lmpb_rterror(L, fname, rc);
  s->sh->kind = (uint32_t)kind;
  return s;
}

static void sync_publish(lsync *s)
{
  __atomic_store_n(&s->sh->magic, SYNC_MAGIC, __ATOMIC_RELEASE);
}

/* Every method and metamethod has the seven metatables as upvalues 1..7,
 * so telling a handle's kind is a pointer comparison, not a registry
 * lookup by name (which costs as much as the lock operation itself). */
static int kindof(lua_State *L, int idx)
{
  int k = -1;
  if (lua_getmetatable(L, idx)) {
    for (k = 0; k < NKINDS && !lua_rawequal(L, -1, lua_upvalueindex(k + 1)); k++) {
    }
    lua_pop(L, 1);
  }
  return k < NKINDS ? k : -1;
}

/* The handle at argument 1, any kind, open or closed (for metamethods). */
static lsync *tosync(lua_State *L)
{
  if (kindof(L, 1) < 0)
    luaL_typeerror(L, 1, "lmp sync object");
  return lua_touserdata(L, 1);
}

/* checksync by the metatable, raising its errors. */
static lsync *checksync_mt(lua_State *L, int mask, const char *expected)
{
  int k = kindof(L, 1);
  if (k < 0 || !(mask & K(k)))
    luaL_typeerror(L, 1, expected);
  lsync *s = lua_touserdata(L, 1);
  if (s->sh == NULL)
    lmpb_closed(L, mtnames[k]);
  return s;
}

/* The handle at argument 1, one of the kinds in `mask`.  An open handle
 * is known by its tag first (lmpaux.h), which costs two API calls where
 * kindof's metatable search costs as much as the lock operation itself;
 * the tag is there only while the handle is open (sync_unopen clears it).
 * Anything else, closed handles included, goes through the metatable and
 * its errors. */
static inline lsync *checksync(lua_State *L, int mask, const char *expected)
{
  lsync *s = lmpb_totagged(L, 1, sizeof *s, mtnames);
  if (s != NULL && (mask & K(s->kind)))
    return s;
  return checksync_mt(L, mask, expected);
}

/* The Lock or RLock handle at idx, or NULL (for functions without the
 * metatables as upvalues: kindof cannot serve there). */
static lsync *tolock(lua_State *L, int idx)
{
  lsync *s = luaL_testudata(L, idx, mtnames[LOCK]);
  return s ? s : luaL_testudata(L, idx, mtnames[RLOCK]);
}

/* The lock of a Lock, RLock or Condition whose handle is at `idx`; a
 * Condition keeps its lock's handle alive in its user value: a Lock, an
 * RLock or the ValueLock of a Value or Array. */
static lmp_lock_t *lockof(lua_State *L, int idx, lsync *s)
{
  if (s->kind != COND)
    return &s->sh->u.lock;
  lua_getiuservalue(L, idx, 1);
  int k = kindof(L, -1);
  lsync *l = k >= 0 ? lua_touserdata(L, -1) : NULL;
  if (l && l->sh == NULL)
    lmpb_closed(L, mtnames[k]); /* its lock was closed */
  lmp_lock_t *lk = l ? &l->sh->u.lock : lmpb_valuelock(L, -1);
  lua_pop(L, 1);
  return lk;
}

static void checkcallable(lua_State *L, int arg)
{
  if (lua_isfunction(L, arg))
    return;
  if (luaL_getmetafield(L, arg, "__call") != LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  luaL_typeerror(L, arg, "function");
}

static int expired(int64_t deadline)
{
  return deadline != LMP_FOREVER && lmp_now_ns() >= deadline;
}

/* === Lock and RLock (and a Condition's lock) === */

static int push_acquired(lua_State *L, int rc)
{
  if (rc == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (rc == -EDEADLK)
    return luaL_error(L, "acquire would deadlock: this process already holds the lock "
                         "(give a timeout, or use an RLock)");
  if (rc == -EOVERFLOW)
    return luaL_error(L, "acquire: RLock held too many times");
  if (rc < 0 && rc != -EOWNERDEAD)
    return lmpb_result(L, "acquire", rc, NULL);
  lua_pushboolean(L, 1);
  lua_pushliteral(L, "owner_died");
  return 2;
}

static int release_error(lua_State *L, lmp_lock_t *l)
{
  pid_t owner = lmp_lock_owner(l);
  if (owner == 0)
    return luaL_error(L, "release unlocked lock");
  return luaL_error(L, "cannot release un-acquired lock (held by process %d)", (int)owner);
}

/* acquire([timeout]) -> true | false | true, "owner_died" */
static int lock_acquire(lua_State *L)
{
  lsync *s = checksync(L, LOCKS | K(COND), "lmp.Lock");
  int64_t deadline = lmpb_optdeadline(L, 2);
  return push_acquired(L, lmp_lock_acquire(lockof(L, 1, s), deadline));
}

static int lock_release(lua_State *L)
{
  lsync *s = checksync(L, LOCKS | K(COND), "lmp.Lock");
  lmp_lock_t *l = lockof(L, 1, s);
  return lmp_lock_release(l) == 0 ? 0 : release_error(L, l);
}

static int lock_locked(lua_State *L)
{
  lsync *s = checksync(L, LOCKS, "lmp.Lock");
  lua_pushboolean(L, lmp_lock_locked(&s->sh->u.lock));
  return 1;
}

/* === Semaphore and BoundedSemaphore === */

static int sem_acquire(lua_State *L)
{
  lsync *s = checksync(L, SEMS, "lmp.Semaphore");
  int64_t deadline = lmpb_optdeadline(L, 2);
  int rc = lmp_sem_acquire(&s->sh->u.sem, deadline);
  if (rc < 0)
    return lmpb_result(L, "acquire", rc, NULL);
  s->units++;
  lua_pushboolean(L, 1);
  return 1;
}

static int sem_give(lua_State *L, lsync *s, lua_Integer n)
{
  if (lmp_sem_release(&s->sh->u.sem, (uint32_t)n) < 0) {
    if (s->kind == BSEM)
      return luaL_error(L, "Semaphore released too many times");
    return luaL_error(L, "Semaphore value would exceed %d", LMP_SEM_VALUE_MAX);
  }
  s->units = s->units > n ? s->units - n : 0;
  return 0;
}

/* release([n]) */
static int sem_release(lua_State *L)
{
  lsync *s = checksync(L, SEMS, "lmp.Semaphore");
  lua_Integer n = lua_gettop(L) < 2 ? 1 : luaL_optinteger(L, 2, 1);
  luaL_argcheck(L, n >= 1 && n <= LMP_SEM_VALUE_MAX, 2, "n must be between 1 and 2147483647");
  return sem_give(L, s, n);
}

static int sem_get_value(lua_State *L)
{
  lsync *s = checksync(L, SEMS, "lmp.Semaphore");
  lua_pushinteger(L, (lua_Integer)lmp_sem_value(&s->sh->u.sem));
  return 1;
}

/* === with and <close>, for the lock-like kinds === */

/* with(fn, ...): fn's results; an error in fn is raised again unchanged,
 * after the release. */
static int sync_with(lua_State *L)
{
  lsync *s = checksync(L, LOCKS | SEMS | K(COND), "lmp.Lock");
  lmp_lock_t *l = NULL;
  int rc, status;

  checkcallable(L, 2);
  if (s->kind == SEM || s->kind == BSEM) {
    if ((rc = lmp_sem_acquire(&s->sh->u.sem, LMP_FOREVER)) < 0)
      return lmpb_rterror(L, "with", rc);
    s->units++;
  } else {
    l = lockof(L, 1, s);
    lua_pop(L, push_acquired(L, lmp_lock_acquire(l, LMP_FOREVER))); /* raises on failure */
  }
  status = lua_pcall(L, lua_gettop(L) - 2, LUA_MULTRET, 0);
  if (l == NULL) {
    if (status == LUA_OK)
      sem_give(L, s, 1); /* raises past a BoundedSemaphore's bound */
    else if (lmp_sem_release(&s->sh->u.sem, 1) == 0 && s->units > 0)
      s->units--;
  } else if (lmp_lock_release(l) < 0 && status == LUA_OK) {
    return release_error(L, l); /* fn released it itself */
  }
  if (status != LUA_OK)
    return lua_error(L);
  return lua_gettop(L) - 1;
}

static int sync_close_meta(lua_State *L)
{
  lsync *s = tosync(L);
  if (s->sh == NULL)
    return 0;
  switch (s->kind) {
  case LOCK:
  case RLOCK:
  case COND: {
    lmp_lock_t *l = lockof(L, 1, s);
    if (lmp_lock_owned(l))
      lmp_lock_release(l);
    break;
  }
  case SEM:
  case BSEM:
    if (s->units > 0 && lmp_sem_release(&s->sh->u.sem, 1) == 0)
      s->units--;
    break;
  default:
    sync_close(s);
  }
  return 0;
}

/* close(), and __gc: drop this handle; again does nothing. */
static int sync_closel(lua_State *L)
{
  sync_close(tosync(L));
  return 0;
}

static int sync_tostring(lua_State *L)
{
  lsync *s = tosync(L);
  lua_pushfstring(L, "%s(%s)", mtnames[s->kind], s->seg ? lmp_seg_name(s->seg) : "closed");
  return 1;
}

/* === Event === */

static int event_set(lua_State *L)
{
  lmp_event_set(&checksync(L, K(EVENT), "lmp.Event")->sh->u.event);
  return 0;
}

static int event_clear(lua_State *L)
{
  lmp_event_clear(&checksync(L, K(EVENT), "lmp.Event")->sh->u.event);
  return 0;
}

static int event_is_set(lua_State *L)
{
  lua_pushboolean(L, lmp_event_is_set(&checksync(L, K(EVENT), "lmp.Event")->sh->u.event));
  return 1;
}

/* wait([timeout]) -> true once set, false on timeout */
static int event_wait(lua_State *L)
{
  lsync *s = checksync(L, K(EVENT), "lmp.Event");
  int rc = lmp_event_wait(&s->sh->u.event, lmpb_optdeadline(L, 2));
  if (rc < 0)
    return lmpb_result(L, "wait", rc, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/* === Condition === */

/* One wait; pushes true | false [, "owner_died"]. */
static int cond_wait1(lua_State *L, lsync *s, int64_t deadline)
{
  int died = 0;
  int rc = lmp_condition_wait(&s->sh->u.cond, lockof(L, 1, s), deadline, &died);
  if (rc == -EPERM)
    return luaL_error(L, "cannot wait on un-acquired lock");
  if (rc < 0 && rc != -ETIMEDOUT)
    return lmpb_rterror(L, "wait", rc);
  lua_pushboolean(L, rc == 0);
  if (!died)
    return 1;
  lua_pushliteral(L, "owner_died");
  return 2;
}

/* wait([timeout]) -> true when notified, false on timeout */
static int cond_wait(lua_State *L)
{
  lsync *s = checksync(L, K(COND), "lmp.Condition");
  return cond_wait1(L, s, lmpb_optdeadline(L, 2));
}

/* wait_for(pred [, timeout]) -> the predicate's last value */
static int cond_wait_for(lua_State *L)
{
  lsync *s = checksync(L, K(COND), "lmp.Condition");
  checkcallable(L, 2);
  int64_t deadline = lmpb_optdeadline(L, 3);
  lua_settop(L, 3);
  for (;;) {
    lua_pushvalue(L, 2);
    lua_call(L, 0, 1);
    if (lua_toboolean(L, -1) || expired(deadline))
      return 1;
    lua_settop(L, 3);
    cond_wait1(L, s, deadline);
    lua_settop(L, 3);
  }
}

static int cond_notify_n(lua_State *L, lsync *s, uint32_t n)
{
  if (lmp_condition_notify(&s->sh->u.cond, lockof(L, 1, s), n) == -EPERM)
    return luaL_error(L, "cannot notify on un-acquired lock");
  return 0;
}

/* notify([n = 1]) */
static int cond_notify(lua_State *L)
{
  lsync *s = checksync(L, K(COND), "lmp.Condition");
  lua_Integer n = luaL_optinteger(L, 2, 1);
  luaL_argcheck(L, n >= 0, 2, "n must not be negative");
  return cond_notify_n(L, s, n > UINT32_MAX ? UINT32_MAX : (uint32_t)n);
}

static int cond_notify_all(lua_State *L)
{
  return cond_notify_n(L, checksync(L, K(COND), "lmp.Condition"), UINT32_MAX);
}

/* === Barrier === */

typedef struct action_call {
  lua_State *L;
  int fn; /* stack index of the action */
} action_call;

/* Runs in the last arrival; an error stays on the stack for wait to raise. */
static int run_action(void *arg)
{
  action_call *a = arg;
  lua_pushvalue(a->L, a->fn);
  return lua_pcall(a->L, 0, 0, 0) != LUA_OK;
}

/* Push the Barrier's action (nil if none): the creator's own function, or
 * the one sent in the segment, decoded once per handle. */
static void barrier_action(lua_State *L, lsync *s)
{
  if (lua_getiuservalue(L, 1, 1) != LUA_TNIL || s->sh->action_len == 0)
    return;
  lua_pop(L, 1);
  lmpb_decode(L, s->sh->action, s->sh->action_len, 1);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, 1, 1);
}

/* wait([timeout]) -> index 0 .. parties-1; raises broken_barrier */
static int barrier_wait(lua_State *L)
{
  lsync *s = checksync(L, K(BARRIER), "lmp.Barrier");
  int64_t deadline = lmpb_optdeadline(L, 2);
  action_call a = {L, 0};
  int rc;

  if (lua_isnoneornil(L, 2) && s->sh->timeout >= 0)
    deadline = lmp_deadline(s->sh->timeout);
  lua_settop(L, 2);
  barrier_action(L, s);
  a.fn = lua_gettop(L);
  rc = lmp_barrier_wait(&s->sh->u.barrier, deadline, lua_isnil(L, a.fn) ? NULL : run_action, &a);
  if (rc >= 0) {
    lua_pushinteger(L, rc);
    return 1;
  }
  if (rc == -ECANCELED)
    return lua_error(L); /* the action's error, as it was raised */
  if (rc == -ETIMEDOUT)
    return lmpb_error_raise(L, "broken_barrier", "barrier wait timed out; the barrier is broken");
  if (rc == -EPIPE)
    return lmpb_error_raise(L, "broken_barrier", "broken barrier");
  return lmpb_rterror(L, "wait", rc);
}

static int barrier_reset(lua_State *L)
{
  lmp_barrier_reset(&checksync(L, K(BARRIER), "lmp.Barrier")->sh->u.barrier);
  return 0;
}

static int barrier_abort(lua_State *L)
{
  lmp_barrier_abort(&checksync(L, K(BARRIER), "lmp.Barrier")->sh->u.barrier);
  return 0;
}

/* Methods are found open or closed (calling one on a closed handle
 * raises); the fields raise once it is closed. */
static int barrier_index(lua_State *L)
{
  lua_getfield(L, lua_upvalueindex(BARRIER + 1), "methods");
  lua_pushvalue(L, 2);
  if (lua_rawget(L, -2) != LUA_TNIL)
    return 1;
  lua_settop(L, 2);
  lsync *s = checksync(L, K(BARRIER), "lmp.Barrier");
  const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
  lmp_barrier_t *b = &s->sh->u.barrier;
  if (strcmp(k, "parties") == 0) {
    lua_pushinteger(L, b->parties);
  } else if (strcmp(k, "n_waiting") == 0) {
    lua_pushinteger(L, lmp_barrier_n_waiting(b));
  } else if (strcmp(k, "broken") == 0) {
    lua_pushboolean(L, lmp_barrier_broken(b));
  } else {
    lua_pushnil(L);
  }
  return 1;
}

/* === constructors === */

static const char *const no_options[] = {NULL};

static void new_lock(lua_State *L, int kind, const char *fname)
{
  lsync *s = sync_create(L, kind, 0, fname);
  int rc = lmp_lock_init(&s->sh->u.lock, kind == RLOCK);
  if (rc < 0)
    lmpb_rterror(L, fname, rc);
  sync_publish(s);
}

/* Lock() / Lock{} */
static int lock_new(lua_State *L)
{
  if (lua_istable(L, 1))
    lmpb_checkoptions(L, 1, no_options);
  new_lock(L, LOCK, "Lock");
  return 1;
}

static int rlock_new(lua_State *L)
{
  if (lua_istable(L, 1))
    lmpb_checkoptions(L, 1, no_options);
  new_lock(L, RLOCK, "RLock");
  return 1;
}

/* Semaphore([value = 1]) / Semaphore{value = n} */
static int make_sem(lua_State *L, int kind)
{
  static const char *const options[] = {"value", NULL};
  lua_Integer v;
  if (lua_istable(L, 1)) {
    lmpb_checkoptions(L, 1, options);
    lua_getfield(L, 1, "value");
    if (!lua_isnil(L, -1) && !lua_isinteger(L, -1))
      luaL_argerror(L, 1, "field 'value' must be an integer");
    v = luaL_optinteger(L, -1, 1);
    lua_pop(L, 1);
  } else {
    v = luaL_optinteger(L, 1, 1);
  }
  luaL_argcheck(L, v >= 0 && v <= LMP_SEM_VALUE_MAX, 1, "value must be between 0 and 2147483647");
  lsync *s = sync_create(L, kind, 0, kind == SEM ? "Semaphore" : "BoundedSemaphore");
  lmp_sem_init(&s->sh->u.sem, (uint32_t)v, kind == SEM ? LMP_SEM_VALUE_MAX : (uint32_t)v);
  sync_publish(s);
  return 1;
}

static int sem_new(lua_State *L)
{
  return make_sem(L, SEM);
}

static int bsem_new(lua_State *L)
{
  return make_sem(L, BSEM);
}

static int event_new(lua_State *L)
{
  if (lua_istable(L, 1))
    lmpb_checkoptions(L, 1, no_options);
  lsync *s = sync_create(L, EVENT, 0, "Event");
  lmp_event_init(&s->sh->u.event);
  sync_publish(s);
  return 1;
}

/* Condition([lock]) / Condition{lock = l}; the default lock is an RLock. */
static int cond_new(lua_State *L)
{
  static const char *const options[] = {"lock", NULL};
  int intable = lua_istable(L, 1);
  if (intable) {
    lmpb_checkoptions(L, 1, options);
    lua_getfield(L, 1, "lock");
  } else {
    lua_settop(L, 1);
  }
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    new_lock(L, RLOCK, "Condition");
  } else if (lmpb_valuelock(L, -1) == NULL) {
    lsync *l = tolock(L, -1);
    if (l == NULL) {
      if (intable)
        luaL_argerror(L, 1, "field 'lock' must be an lmp.Lock, lmp.RLock or lmp.ValueLock");
      luaL_typeerror(L, 1, "lmp.Lock, lmp.RLock or lmp.ValueLock");
    }
    if (l->sh == NULL)
      luaL_argerror(L, 1, "the lock is closed");
  }
  int lock = lua_gettop(L);
  lsync *s = sync_create(L, COND, 0, "Condition");
  lmp_condition_init(&s->sh->u.cond);
  lua_pushvalue(L, lock);
  lua_setiuservalue(L, -2, 1);
  sync_publish(s);
  return 1;
}

/* Barrier(parties [, action [, timeout]]) / Barrier{parties =, action =, timeout =} */
static int barrier_new(lua_State *L)
{
  static const char *const options[] = {"parties", "action", "timeout", NULL};
  if (lua_istable(L, 1)) {
    lmpb_checkoptions(L, 1, options);
    lua_getfield(L, 1, "parties");
    lua_getfield(L, 1, "action");
    lua_getfield(L, 1, "timeout");
    if (!lua_isinteger(L, -3) || lua_tointeger(L, -3) < 1 || lua_tointeger(L, -3) > INT32_MAX)
      luaL_argerror(L, 1, "field 'parties' must be a positive integer");
    if (!lua_isnil(L, -2) && !lua_isfunction(L, -2))
      luaL_argerror(L, 1, "field 'action' must be a function");
    if (!lua_isnil(L, -1) && (!lua_isnumber(L, -1) || !(lua_tonumber(L, -1) >= 0)))
      luaL_argerror(L, 1, "field 'timeout' must be a non-negative number");
    lua_remove(L, 1);
  } else {
    lua_Integer parties = luaL_checkinteger(L, 1);
    luaL_argcheck(L, parties >= 1 && parties <= INT32_MAX, 1, "parties must be at least 1");
    if (!lua_isnoneornil(L, 2))
      luaL_checktype(L, 2, LUA_TFUNCTION);
    if (!lua_isnoneornil(L, 3)) {
      lua_Number t = luaL_checknumber(L, 3);
      luaL_argcheck(L, t >= 0, 3, "timeout must be a non-negative number");
    }
  }
  lua_settop(L, 3);
  double timeout = lua_isnil(L, 3) ? -1 : lua_tonumber(L, 3);
  size_t len = 0;
  const char *action = NULL;
  if (!lua_isnil(L, 2)) {
    const lmp_buf_t *msg = lmpb_encode(L, 2, "action");
    /* Copied: a collection while the segment is made could run code
     * that encodes into the same buffer. */
    lua_pushlstring(L, msg->data, msg->len);
    action = lua_tolstring(L, -1, &len);
  }
  lsync *s = sync_create(L, BARRIER, len, "Barrier");
  int rc = lmp_barrier_init(&s->sh->u.barrier, (uint32_t)lua_tointeger(L, 1));
  if (rc < 0)
    return lmpb_rterror(L, "Barrier", rc);
  s->sh->timeout = timeout;
  s->sh->action_len = (uint32_t)len;
  if (len)
    memcpy(s->sh->action, action, len);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  sync_publish(s);
  return 1;
}

/* === crossing processes === */

static int put_name(lmp_buf_t *out, lmp_seg_t *seg, int sep)
{
  const char *name = lmp_seg_name(seg);
  size_t len = strlen(name);
  if (lmp_buf_reserve(out, out->len + len + 1) < 0)
    return -ENOMEM;
  if (sep)
    out->data[out->len++] = '\0';
  memcpy(out->data + out->len, name, len);
  out->len += len;
  return 0;
}

#define VALUELOCK_TAG 'V' /* a Condition's lock that is a ValueLock: NUL, 'V', its handle */

/* The segment name; a Condition adds a NUL and its lock's (a ValueLock's
 * after the tag; segment names begin with '/'). */
static int sync_encode(lua_State *L, int idx, lmp_buf_t *out)
{
  lsync *s = lua_touserdata(L, idx), *l = NULL;
  if (s->seg == NULL)
    return -EPIPE;
  if (put_name(out, s->seg, 0) < 0)
    return -ENOMEM;
  if (s->kind == COND) {
    lua_getiuservalue(L, idx, 1);
    int rc = 0;
    if ((l = tolock(L, -1)) != NULL) {
      rc = l->seg ? put_name(out, l->seg, 1) : -EPIPE;
    } else if (lmp_buf_reserve(out, out->len + 2) < 0) {
      rc = -ENOMEM;
    } else {
      out->data[out->len++] = '\0';
      out->data[out->len++] = VALUELOCK_TAG;
      rc = lmpb_valuelock_encode(L, lua_gettop(L), out); /* pins its segment */
    }
    lua_pop(L, 1);
    if (rc < 0)
      return rc;
  }
  lmp_seg_pin(s->seg);
  if (l)
    lmp_seg_pin(l->seg);
  return 0;
}

/* Attach the named segment into s (adopting the message's pin) and check
 * it holds one of the kinds in mask.  0 or -errno. */
static int attach(lsync *s, const char *data, size_t len, int mask)
{
  char name[LMP_SEG_NAME_MAX];
  lmp_seg_t *seg;
  int rc;

  if (len == 0 || len >= sizeof name)
    return -EBADMSG;
  memcpy(name, data, len);
  name[len] = '\0';
  if ((rc = lmp_seg_attach(name, 1, &seg)) < 0 || (rc = sync_open(s, seg)) < 0)
    return rc;
  struct shared *sh = s->sh;
  if (lmp_seg_size(seg) < sizeof *sh ||
      __atomic_load_n(&sh->magic, __ATOMIC_ACQUIRE) != SYNC_MAGIC || sh->kind >= NKINDS ||
      !(mask & K(sh->kind)) ||
      (sh->kind == BARRIER && lmp_seg_size(seg) - sizeof *sh < sh->action_len)) {
    lmp_seg_release(seg); /* not ours to touch */
    sync_unopen(s);
    return -EINVAL;
  }
  return 0;
}

static void decode_kind(lua_State *L, const char *data, size_t len, int kind)
{
  const char *sep = memchr(data, '\0', len);
  size_t n = kind == COND && sep ? (size_t)(sep - data) : len;
  lsync *s = newsync(L, kind);
  int rc = attach(s, data, n, K(kind));
  if (kind == COND && sep && (size_t)(sep - data) + 1 < len && sep[1] == VALUELOCK_TAG) {
    lmpb_valuelock_decode(L, sep + 2, len - n - 2);
    lua_setiuservalue(L, -2, 1);
  } else if (kind == COND) {
    /* The lock's handle, of whichever kind its segment says. */
    int lrc = -EBADMSG;
    if (sep) {
      lsync *l = newsync(L, LOCK);
      lrc = attach(l, sep + 1, len - n - 1, LOCKS);
      if (l->sh && l->sh->kind == RLOCK) {
        l->kind = RLOCK;
        luaL_setmetatable(L, mtnames[RLOCK]);
      }
      lua_setiuservalue(L, -2, 1);
    }
    if (rc == 0)
      rc = lrc;
  }
  if (rc < 0)
    luaL_error(L, "cannot receive a %s: %s", mtnames[kind], lmp_strerror(rc));
}

#define DECODER(name, kind)                                                                        \
  static void name(lua_State *L, const char *d, size_t n)                                          \
  {                                                                                                \
    decode_kind(L, d, n, kind);                                                                    \
  }
DECODER(lock_decode, LOCK)
DECODER(rlock_decode, RLOCK)
DECODER(sem_decode, SEM)
DECODER(bsem_decode, BSEM)
DECODER(event_decode, EVENT)
DECODER(cond_decode, COND)
DECODER(barrier_decode, BARRIER)

/* === registration === */

static const luaL_Reg lock_methods[] = {
    {"acquire", lock_acquire},
    {"release", lock_release},
    {"locked", lock_locked},
    {"with", sync_with},
    {"close", sync_closel},
    {NULL, NULL},
};

static const luaL_Reg sem_methods[] = {
    {"acquire", sem_acquire},
    {"release", sem_release},
    {"get_value", sem_get_value},
    {"with", sync_with},
    {"close", sync_closel},
    {NULL, NULL},
};

static const luaL_Reg event_methods[] = {
    {"set", event_set},   {"clear", event_clear}, {"is_set", event_is_set},
    {"wait", event_wait}, {"close", sync_closel}, {NULL, NULL},
};

static const luaL_Reg cond_methods[] = {
    {"acquire", lock_acquire}, {"release", lock_release},
    {"wait", cond_wait},       {"wait_for", cond_wait_for},
    {"notify", cond_notify},   {"notify_all", cond_notify_all},
    {"with", sync_with},       {"close", sync_closel},
    {NULL, NULL},
};

static const luaL_Reg barrier_methods[] = {
    {"wait", barrier_wait},
    {"reset", barrier_reset},
    {"abort", barrier_abort},
    {"close", sync_closel},
    {NULL, NULL},
};

static const luaL_Reg metamethods[] = {
    {"__gc", sync_closel},
    {"__close", sync_close_meta},
    {"__tostring", sync_tostring},
    {NULL, NULL},
};

/* Push the seven metatables, the upvalues every method gets. */
static void push_metatables(lua_State *L, int first)
{
  for (int k = 0; k < NKINDS; k++)
    lua_pushvalue(L, first + k);
}

/* Fill the metatable of `kind`; the seven metatables start at `first`. */
static void fillclass(lua_State *L, int kind, int first, const luaL_Reg *methods)
{
  lua_pushvalue(L, first + kind);
  push_metatables(L, first);
  luaL_setfuncs(L, metamethods, NKINDS);
  lua_newtable(L);
  push_metatables(L, first);
  luaL_setfuncs(L, methods, NKINDS);
  if (kind == BARRIER) {
    lua_setfield(L, -2, "methods");
    push_metatables(L, first);
    lua_pushcclosure(L, barrier_index, NKINDS);
  }
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

int lmpb_sync_open(lua_State *L)
{
  static const lmpb_handle_type handles[] = {
      {"lmp.Lock", sync_encode, lock_decode},
      {"lmp.RLock", sync_encode, rlock_decode},
      {"lmp.Semaphore", sync_encode, sem_decode},
      {"lmp.BoundedSemaphore", sync_encode, bsem_decode},
      {"lmp.Event", sync_encode, event_decode},
      {"lmp.Condition", sync_encode, cond_decode},
      {"lmp.Barrier", sync_encode, barrier_decode},
  };
  static const luaL_Reg ctors[] = {
      {"Lock", lock_new},       {"RLock", rlock_new},
      {"Semaphore", sem_new},   {"BoundedSemaphore", bsem_new},
      {"Event", event_new},     {"Condition", cond_new},
      {"Barrier", barrier_new}, {NULL, NULL},
  };
  const luaL_Reg *methods[] = {lock_methods,  lock_methods, sem_methods,    sem_methods,
                               event_methods, cond_methods, barrier_methods};
  lmpb_tag_init();
  int first = lua_gettop(L) + 1;
  for (int k = 0; k < NKINDS; k++)
    luaL_newmetatable(L, mtnames[k]);
  for (int k = 0; k < NKINDS; k++) {
    fillclass(L, k, first, methods[k]);
    lmpb_register_handle(L, &handles[k]);
  }
  lua_settop(L, first - 1);
  luaL_setfuncs(L, ctors, 0);
  return 0;
}

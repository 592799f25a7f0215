/*
 * lqueue.c -- lmp.Queue, lmp.JoinableQueue and lmp.SimpleQueue.
 *
 * All three are the same shared ring (runtime/queue.c) seen through different
 * method sets, as in Python.  put encodes into the state's scratch buffer and
 * copies it once into the ring; get copies the record into the handle's own
 * buffer and decodes from there, so a steady stream costs no allocation.
 * A queue is a handle: sending it sends its segment name.
 */
#include <errno.h>
#include <string.h>

#include "lmp/queue.h"
#include "codec.h"
#include "lmpaux.h"
#include "lmpb.h"

enum { PLAIN, JOINABLE, SIMPLE };
static const char *const mtnames[] = {"lmp.Queue", "lmp.JoinableQueue", "lmp.SimpleQueue"};
static const char *const ctornames[] = {"Queue", "JoinableQueue", "SimpleQueue"};

typedef struct lqueue {
  lmp_queue_t *q; /* NULL only if construction failed */
  int kind;
  lmp_buf_t buf;
} lqueue;

/* === helpers === */

/* Every function of this file that takes a queue has the three metatables
 * as upvalues 1..3: comparing the argument's metatable with them costs no
 * registry lookup, which matters on the put/get path. */
static lqueue *checkqueue(lua_State *L)
{
  lqueue *q = lua_touserdata(L, 1);
  if (q != NULL && lua_getmetatable(L, 1)) {
    for (int k = PLAIN; k <= SIMPLE; k++) {
      if (lua_rawequal(L, -1, lua_upvalueindex(k + 1))) {
        lua_pop(L, 1);
        luaL_argcheck(L, q->q != NULL, 1, "queue handle was finalized");
        return q;
      }
    }
    lua_pop(L, 1);
  }
  luaL_typeerror(L, 1, "lmp.Queue");
  return NULL;
}

static lqueue *newqueue(lua_State *L, int kind)
{
  lqueue *q = lua_newuserdatauv(L, sizeof *q, 0);
  memset(q, 0, sizeof *q);
  q->kind = kind;
  luaL_setmetatable(L, mtnames[kind]);
  return q;
}

/* === constructors === */

static const char *const queue_options[] = {"maxsize", "capacity", NULL};

static lua_Integer checksize(lua_State *L, int arg, lua_Integer v, const char *what)
{
  if (v < 0)
    luaL_argerror(L, arg, lua_pushfstring(L, "%s must not be negative", what));
  return v;
}

/* Queue([maxsize]) / Queue{maxsize =, capacity =}; capacity = ring bytes. */
static int queue_create(lua_State *L, int kind)
{
  lua_Integer maxsize = 0, capacity = 0;
  if (lua_istable(L, 1)) {
    lmpb_checkoptions(L, 1, queue_options);
    lua_getfield(L, 1, "maxsize");
    lua_getfield(L, 1, "capacity");
    if (!lua_isnil(L, -2) && !lua_isinteger(L, -2))
      luaL_argerror(L, 1, "field 'maxsize' must be an integer");
    if (!lua_isnil(L, -1) && !lua_isinteger(L, -1))
      luaL_argerror(L, 1, "field 'capacity' must be an integer");
    maxsize = checksize(L, 1, lua_tointeger(L, -2), "maxsize");
    capacity = checksize(L, 1, lua_tointeger(L, -1), "capacity");
    lua_pop(L, 2);
  } else if (kind != SIMPLE) {
    maxsize = checksize(L, 1, luaL_optinteger(L, 1, 0), "maxsize");
  }
  luaL_argcheck(L, kind != SIMPLE || maxsize == 0, 1, "a SimpleQueue has no maxsize");
  lqueue *q = newqueue(L, kind);
  int rc = lmp_queue_create((size_t)maxsize, (size_t)capacity, &q->q);
  if (lmpb_fds_retry(L, rc))
    rc = lmp_queue_create((size_t)maxsize, (size_t)capacity, &q->q);
  if (rc < 0)
    return lmpb_rterror(L, ctornames[kind], rc);
  return 1;
}

static int queue_new(lua_State *L)
{
  return queue_create(L, PLAIN);
}
static int joinable_new(lua_State *L)
{
  return queue_create(L, JOINABLE);
}
static int simple_new(lua_State *L)
{
  return queue_create(L, SIMPLE);
}

/* === put and get === */

static int put(lua_State *L, lqueue *q, int64_t deadline, const char *full)
{
  luaL_checkany(L, 2);
  const lmp_buf_t *msg = lmpb_encode(L, 2, "value");
  int rc = lmp_queue_put(q->q, msg->data, msg->len, deadline);
  if (rc < 0)
    return lmpb_result(L, "put", rc, full);
  lua_pushboolean(L, 1);
  return 1;
}

static int get(lua_State *L, lqueue *q, int64_t deadline, const char *empty)
{
  int rc = lmp_queue_get(q->q, &q->buf, deadline);
  if (rc < 0)
    return lmpb_result(L, "get", rc, empty);
  lmpb_decode(L, q->buf.data, q->buf.len, 1);
  return 1;
}

static int queue_put(lua_State *L)
{
  lqueue *q = checkqueue(L);
  return put(L, q, lmpb_optdeadline(L, 3), "full");
}

static int queue_put_nowait(lua_State *L)
{
  return put(L, checkqueue(L), lmp_deadline(0), "full");
}

static int queue_get(lua_State *L)
{
  lqueue *q = checkqueue(L);
  return get(L, q, lmpb_optdeadline(L, 2), "timeout");
}

static int queue_get_nowait(lua_State *L)
{
  return get(L, checkqueue(L), lmp_deadline(0), "empty");
}

/* === state === */

static int queue_qsize(lua_State *L)
{
  lua_pushinteger(L, (lua_Integer)lmp_queue_qsize(checkqueue(L)->q));
  return 1;
}

static int queue_empty(lua_State *L)
{
  lua_pushboolean(L, lmp_queue_qsize(checkqueue(L)->q) == 0);
  return 1;
}

static int queue_full(lua_State *L)
{
  lmp_queue_t *q = checkqueue(L)->q;
  size_t max = lmp_queue_maxsize(q);
  lua_pushboolean(L, max > 0 && lmp_queue_qsize(q) >= max);
  return 1;
}

static int queue_close(lua_State *L)
{
  lmp_queue_close(checkqueue(L)->q);
  return 0;
}

/* __index: the methods table (upvalue 1) first, then the fields. */
static int queue_index(lua_State *L)
{
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
    return 1;
  lqueue *q = lua_touserdata(L, 1);
  const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
  if (strcmp(k, "closed") == 0)
    lua_pushboolean(L, lmp_queue_closed(q->q));
  else if (strcmp(k, "maxsize") == 0)
    lua_pushinteger(L, (lua_Integer)lmp_queue_maxsize(q->q));
  else
    lua_pushnil(L);
  return 1;
}

/* A message nobody will read gives back the pins of its handles. */
static void unread_unpin(void *ctx, const void *msg, size_t len)
{
  (void)ctx;
  (void)lmpb_handle_names(msg, len, lmp_seg_unpin);
}

static int queue_gc(lua_State *L)
{
  lqueue *q = lua_touserdata(L, 1);
  if (q->q)
    lmp_queue_free_unread(q->q, unread_unpin, NULL);
  q->q = NULL;
  lmp_buf_free(&q->buf);
  return 0;
}

static int queue_tostring(lua_State *L)
{
  lqueue *q = checkqueue(L);
  lua_pushfstring(L, "%s(%s)", mtnames[q->kind], lmp_seg_name(lmp_queue_seg(q->q)));
  return 1;
}

/* === JoinableQueue === */

static int queue_task_done(lua_State *L)
{
  int rc = lmp_queue_task_done(checkqueue(L)->q);
  if (rc == -EINVAL)
    return luaL_error(L, "task_done() called more times than there were items put");
  return 0;
}

static int queue_join(lua_State *L)
{
  lqueue *q = checkqueue(L);
  int rc = lmp_queue_join(q->q, lmpb_optdeadline(L, 2));
  if (rc < 0)
    return lmpb_result(L, "join", rc, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/* === crossing processes === */

static int queue_encode(lua_State *L, int idx, lmp_buf_t *out)
{
  lqueue *q = lua_touserdata(L, idx);
  lmp_seg_t *seg = lmp_queue_seg(q->q);
  const char *name = lmp_seg_name(seg);
  size_t len = strlen(name);
  if (lmp_buf_reserve(out, out->len + len) < 0)
    return -ENOMEM;
  memcpy(out->data + out->len, name, len);
  out->len += len;
  lmp_seg_pin(seg);
  return 0;
}

static void decode_kind(lua_State *L, const char *data, size_t len, int kind)
{
  char name[LMP_SEG_NAME_MAX];
  if (len == 0 || len >= sizeof name)
    luaL_error(L, "corrupt message (bad queue handle)");
  memcpy(name, data, len);
  name[len] = '\0';
  lqueue *q = newqueue(L, kind);
  lmp_seg_t *seg;
  int rc = lmp_seg_attach(name, 1, &seg);
  if (lmpb_fds_retry(L, rc))
    rc = lmp_seg_attach(name, 1, &seg);
  if (rc == 0) {
    rc = lmp_queue_open(seg, &q->q);
    lmp_seg_release(seg);
  }
  if (rc < 0)
    luaL_error(L, "cannot receive a %s: %s", mtnames[kind], lmp_strerror(rc));
}

static void plain_decode(lua_State *L, const char *d, size_t n)
{
  decode_kind(L, d, n, PLAIN);
}
static void joinable_decode(lua_State *L, const char *d, size_t n)
{
  decode_kind(L, d, n, JOINABLE);
}
static void simple_decode(lua_State *L, const char *d, size_t n)
{
  decode_kind(L, d, n, SIMPLE);
}

/* === registration === */

static const luaL_Reg simple_methods[] = {
    {"put", queue_put},     {"get", queue_get}, {"empty", queue_empty},
    {"close", queue_close}, {NULL, NULL},
};

static const luaL_Reg queue_methods[] = {
    {"put_nowait", queue_put_nowait},
    {"get_nowait", queue_get_nowait},
    {"qsize", queue_qsize},
    {"full", queue_full},
    {NULL, NULL},
};

static const luaL_Reg joinable_methods[] = {
    {"task_done", queue_task_done},
    {"join", queue_join},
    {NULL, NULL},
};

static const luaL_Reg metamethods[] = {
    {"__index", queue_index},       {"__gc", queue_gc}, {"__close", queue_close},
    {"__tostring", queue_tostring}, {NULL, NULL},
};

static void pushclasses(lua_State *L)
{
  for (int k = PLAIN; k <= SIMPLE; k++)
    luaL_getmetatable(L, mtnames[k]);
}

/* Fill the metatable of `kind`: methods and metamethods close over the
 * three metatables (see checkqueue), __index over the methods table. */
static void fillclass(lua_State *L, int kind)
{
  luaL_getmetatable(L, mtnames[kind]);
  pushclasses(L);
  luaL_setfuncs(L, metamethods, 3);
  lua_newtable(L);
  pushclasses(L);
  luaL_setfuncs(L, simple_methods, 3);
  if (kind != SIMPLE) {
    pushclasses(L);
    luaL_setfuncs(L, queue_methods, 3);
  }
  if (kind == JOINABLE) {
    pushclasses(L);
    luaL_setfuncs(L, joinable_methods, 3);
  }
  lua_pushcclosure(L, queue_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

int lmpb_queue_open(lua_State *L)
{
  static const lmpb_handle_type handles[] = {
      {"lmp.Queue", queue_encode, plain_decode},
      {"lmp.JoinableQueue", queue_encode, joinable_decode},
      {"lmp.SimpleQueue", queue_encode, simple_decode},
  };
  static const luaL_Reg ctors[] = {
      {"Queue", queue_new},
      {"JoinableQueue", joinable_new},
      {"SimpleQueue", simple_new},
      {NULL, NULL},
  };
  for (int k = PLAIN; k <= SIMPLE; k++) {
    luaL_newmetatable(L, mtnames[k]);
    lua_pop(L, 1);
  }
  for (int k = PLAIN; k <= SIMPLE; k++) {
    fillclass(L, k);
    lmpb_register_handle(L, &handles[k]);
  }
  luaL_setfuncs(L, ctors, 0);
  return 0;
}

/*
 * lbroker.c -- the C half of the broker pool and of `lmp worker`: a
 * connection object over lmp/broker.h, sealing (encode + sign) and opening
 * (verify + decode) of messages.
 *
 * The Pool, its AsyncResult and the worker loop are Lua (scripts/lmp/
 * broker.lua, scripts/lmp/worker.lua); they reach this file through
 * lmp.core.broker.  Nothing here decodes a byte of a
 * message before its HMAC has been checked: open() verifies first, and only
 * an authentic message is decoded, trusted (bytecode allowed), since the
 * secret's holders are the only ones who could have written it.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../runtime/broker_engine.h"
#include "codec.h"
#include "lmpaux.h"
#include "lmpb.h"

#define CONN_MT "lmp.BrokerConn"

typedef struct lconn {
  lmp_broker_t *b;
  pid_t owner;
  lmp_broker_batch_t batch;
  int wakefd; /* a copy of the notifier's descriptor, kept until __gc (see conn_notify_fd) */
} lconn;

static lconn *checkconn(lua_State *L)
{
  lconn *c = luaL_checkudata(L, 1, CONN_MT);
  if (c->b == NULL)
    luaL_error(L, "broker connection is closed");
  return c;
}

/* nil, message, code: an outside failure, as luaL_fileresult words it. */
static int fail(lua_State *L, lconn *c, int rc)
{
  lua_pushnil(L);
  const char *m = c && c->b ? lmp_broker_errmsg(c->b) : "";
  lua_pushstring(L, m && *m ? m : lmp_strerror(rc));
  lua_pushinteger(L, -rc);
  return 3;
}

/* true, or fail()'s three values when rc is a failure. */
static int ok_or_fail(lua_State *L, lconn *c, int rc)
{
  if (rc < 0)
    return fail(L, c, rc);
  lua_pushboolean(L, 1);
  return 1;
}

/* === the connection === */

/* core.open(url, queue, connect_timeout_s, result_ttl_s [, consumer]) ->
 * conn | nil, msg (a second connection of one consumer names it) */
static int l_open(lua_State *L)
{
  lmp_broker_config_t cfg = {0};
  char err[300];
  cfg.url = luaL_checkstring(L, 1);
  cfg.queue = luaL_optstring(L, 2, "default");
  cfg.connect_timeout = (int64_t)(luaL_optnumber(L, 3, 5) * 1000);
  cfg.result_ttl = (int64_t)(luaL_optnumber(L, 4, 3600) * 1000);
  cfg.consumer = luaL_optstring(L, 5, NULL);
  lconn *c = lua_newuserdatauv(L, sizeof *c, 0);
  memset(c, 0, sizeof *c);
  c->wakefd = -1;
  luaL_setmetatable(L, CONN_MT);
  int rc = lmp_broker_open(&cfg, &c->b, err, sizeof err);
  if (rc < 0) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    lua_pushinteger(L, -rc);
    return 3;
  }
  c->owner = getpid();
  return 1;
}

static int conn_close(lua_State *L)
{
  lconn *c = luaL_checkudata(L, 1, CONN_MT);
  if (c->b && c->owner == getpid())
    lmp_broker_close(c->b);
  c->b = NULL;
  lmp_broker_batch_free(&c->batch);
  return 0;
}

static int conn_gc(lua_State *L)
{
  lconn *c = luaL_checkudata(L, 1, CONN_MT);
  conn_close(L);
  if (c->wakefd >= 0)
    close(c->wakefd);
  c->wakefd = -1;
  return 0;
}

static int conn_consumer(lua_State *L)
{
  lua_pushstring(L, lmp_broker_consumer(checkconn(L)->b));
  return 1;
}

static int conn_fileno(lua_State *L)
{
  lua_pushinteger(L, lmp_broker_fileno(checkconn(L)->b));
  return 1;
}

/* conn:notify_fd(caller) -> a descriptor for event loops (see
 * lmp_broker_notify_fd), or nil and why.  It is a copy that stays open after
 * close() (an event loop may still be watching it) until the connection is
 * collected; closed, the copy is an empty epoll set: never readable. */
static int conn_notify_fd(lua_State *L)
{
  lconn *c = checkconn(L);
  if (c->wakefd < 0) {
    int fd = lmp_broker_notify_fd(c->b, luaL_checkstring(L, 2));
    if (fd < 0)
      return fail(L, c, fd);
    if ((c->wakefd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0)
      return fail(L, c, -errno);
  }
  lua_pushinteger(L, c->wakefd);
  return 1;
}

/* conn:notify_reset() -> true, or nil and why */
static int conn_notify_reset(lua_State *L)
{
  lconn *c = checkconn(L);
  return ok_or_fail(L, c, lmp_broker_notify_reset(c->b));
}

/* conn:put(msg [, countdown [, eta [, priority]]]): held countdown seconds
 * from now, or until eta (seconds since the epoch), when either is given;
 * at priority 0..9 (default 0) */
static int conn_put(lua_State *L)
{
  lconn *c = checkconn(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  int64_t due = 0;
  int prio = (int)luaL_optinteger(L, 5, 0);
  if (!lua_isnoneornil(L, 4))
    due = (int64_t)(luaL_checknumber(L, 4) * 1000);
  else if (!lua_isnoneornil(L, 3))
    due = lmp__wall_ms() + (int64_t)(luaL_checknumber(L, 3) * 1000);
  return ok_or_fail(L, c, lmp_broker_put_priority(c->b, s, n, due, prio));
}

/* conn:promote(max) -> how many held tasks were due and are now queued */
static int conn_promote(lua_State *L)
{
  lconn *c = checkconn(L);
  int rc = lmp_broker_promote(c->b, (int)luaL_optinteger(L, 2, 256));
  if (rc < 0)
    return fail(L, c, rc);
  lua_pushinteger(L, rc);
  return 1;
}

static int conn_flush(lua_State *L)
{
  lconn *c = checkconn(L);
  return ok_or_fail(L, c, lmp_broker_flush(c->b));
}

/* The messages an operation put in c->batch (rc, its result), as a list:
 * strings only, or {id, data, deliveries, history}; or fail()'s values. */
static int push_batch(lua_State *L, lconn *c, int rc, int full)
{
  lmp_broker_batch_t *bt = &c->batch;
  if (rc < 0) {
    lmp_broker_batch_clear(bt);
    return fail(L, c, rc);
  }
  lua_createtable(L, bt->n, 0);
  for (int i = 0; i < bt->n; i++) {
    lmp_broker_msg_t *m = &bt->msg[i];
    if (full) {
      lua_createtable(L, 0, 4);
      lua_pushstring(L, m->id);
      lua_setfield(L, -2, "id");
      lua_pushlstring(L, m->data, m->len);
      lua_setfield(L, -2, "data");
      lua_pushinteger(L, m->deliveries);
      lua_setfield(L, -2, "deliveries");
      lua_pushstring(L, m->history ? m->history : "");
      lua_setfield(L, -2, "history");
    } else {
      lua_pushlstring(L, m->data, m->len);
    }
    lua_rawseti(L, -2, i + 1);
  }
  lmp_broker_batch_clear(bt);
  return 1;
}

/* conn:results(caller, max, timeout_s|nil) -> {msg...} */
static int conn_results(lua_State *L)
{
  lconn *c = checkconn(L);
  const char *caller = luaL_checkstring(L, 2);
  int max = (int)luaL_optinteger(L, 3, 256);
  int64_t deadline = lmpb_optdeadline(L, 4);
  return push_batch(L, c, lmp_broker_results(c->b, caller, max, deadline, &c->batch), 0);
}

/* conn:take(max, block_s) -> {{id =, data =, deliveries =, history =}...} */
static int conn_take(lua_State *L)
{
  lconn *c = checkconn(L);
  int max = (int)luaL_optinteger(L, 2, 64);
  int64_t block = (int64_t)(luaL_optnumber(L, 3, 1) * 1000);
  return push_batch(L, c, lmp_broker_take(c->b, max, block, &c->batch), 1);
}

/* conn:reclaim(idle_s, max) -> msgs */
static int conn_reclaim(lua_State *L)
{
  lconn *c = checkconn(L);
  int64_t idle = (int64_t)(luaL_checknumber(L, 2) * 1000);
  int max = (int)luaL_optinteger(L, 3, 64);
  return push_batch(L, c, lmp_broker_reclaim(c->b, idle, max, &c->batch), 1);
}

/* conn:take_send(max, block_s) -> true (the answer is there: take_recv),
 * false (sent: wait for fileno) | nil, msg */
static int conn_take_send(lua_State *L)
{
  lconn *c = checkconn(L);
  int max = (int)luaL_optinteger(L, 2, 64);
  int64_t block = (int64_t)(luaL_optnumber(L, 3, 1) * 1000);
  int rc = lmp_broker_take_send(c->b, max, block);
  if (rc < 0)
    return fail(L, c, rc);
  lua_pushboolean(L, rc > 0);
  return 1;
}

/* conn:take_recv() -> msgs, or false while the answer has not come */
static int conn_take_recv(lua_State *L)
{
  lconn *c = checkconn(L);
  int rc = lmp_broker_take_recv(c->b, &c->batch);
  if (rc == -EAGAIN) {
    lua_pushboolean(L, 0);
    return 1;
  }
  return push_batch(L, c, rc, 1);
}

static int conn_take_cancel(lua_State *L)
{
  lmp_broker_take_cancel(checkconn(L)->b);
  return 0;
}

/* conn:rate_limit(per_s): cap this connection's takes by the queue's token
 * bucket (0: no cap) */
static int conn_rate_limit(lua_State *L)
{
  lconn *c = checkconn(L);
  return ok_or_fail(L, c, lmp_broker_set_rate_limit(c->b, luaL_checknumber(L, 2), 0));
}

/* conn:patience(seconds): how long an operation reconnects before failing */
static int conn_patience(lua_State *L)
{
  lconn *c = checkconn(L);
  lmp_broker_set_patience(c->b, (int64_t)(luaL_checknumber(L, 2) * 1000));
  return 0;
}

/* conn:state() -> count, epoch (see lmp_broker_state) */
static int conn_state(lua_State *L)
{
  lconn *c = checkconn(L);
  int64_t count = 0;
  char epoch[128];
  int rc = lmp_broker_state(c->b, &count, epoch, sizeof epoch);
  if (rc < 0)
    return fail(L, c, rc);
  lua_pushinteger(L, count);
  lua_pushstring(L, epoch);
  return 2;
}

/* conn:replicate(replicas, timeout_s) -> how many replicas hold this
 * connection's writes [, why fewer] (see lmp_broker_replicate) */
static int conn_replicate(lua_State *L)
{
  lconn *c = checkconn(L);
  int replicas = (int)luaL_checkinteger(L, 2);
  int rc = lmp_broker_replicate(c->b, replicas, (int64_t)(luaL_checknumber(L, 3) * 1000));
  if (rc < 0)
    return fail(L, c, rc);
  lua_pushinteger(L, rc);
  if (rc >= replicas)
    return 1;
  lua_pushstring(L, lmp_broker_errmsg(c->b));
  return 2;
}

/* conn:server() -> "host:port" of the server connected to, "" if none */
static int conn_server(lua_State *L)
{
  char at[300];
  lua_pushstring(L, lmp_broker_server(checkconn(L)->b, at, sizeof at));
  return 1;
}

/* conn:settle(caller, lo, final, expires_s) */
static int conn_settle(lua_State *L)
{
  lconn *c = checkconn(L);
  const char *caller = luaL_checkstring(L, 2);
  lua_Integer lo = luaL_checkinteger(L, 3);
  int final = lua_toboolean(L, 4);
  int64_t expires = (int64_t)(luaL_optnumber(L, 5, 86400) * 1000);
  return ok_or_fail(L, c,
                    lmp_broker_settle(c->b, caller, lo > 0 ? (uint64_t)lo : 0, final, expires));
}

/* conn:revoke(ids, expires_s, terminate) -> {before...}: per task id,
 * true if no worker had been handed it (see lmp_broker_revoke); each task
 * can be delivered until expires_s[i] (seconds since the epoch). */
static int conn_revoke(lua_State *L)
{
  lconn *c = checkconn(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TTABLE);
  int terminate = lua_toboolean(L, 4);
  int n = (int)luaL_len(L, 2);
  if (n <= 0) {
    lua_newtable(L);
    return 1;
  }
  /* the arrays live in a userdata, the ids in the table */
  size_t each = sizeof(const char *) + sizeof(int64_t) + sizeof(int);
  char *mem = lua_newuserdatauv(L, each * (size_t)n, 0);
  const char **ids = (const char **)mem;
  int64_t *at = (int64_t *)(mem + sizeof *ids * (size_t)n);
  int *before = (int *)(mem + (sizeof *ids + sizeof *at) * (size_t)n);
  for (int i = 0; i < n; i++) {
    lua_geti(L, 2, i + 1);
    ids[i] = luaL_checkstring(L, -1);
    lua_pop(L, 1);
    lua_geti(L, 3, i + 1);
    at[i] = (int64_t)(luaL_checknumber(L, -1) * 1000);
    lua_pop(L, 1);
  }
  int rc = lmp_broker_revoke(c->b, ids, at, n, terminate, before);
  if (rc < 0)
    return fail(L, c, rc);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n; i++) {
    lua_pushboolean(L, before[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* conn:revoked(gen) -> false (nothing changed since gen), or the new gen
 * and the live revocations {"cancel <id>" | "terminate <id>"...} */
static int conn_revoked(lua_State *L)
{
  lconn *c = checkconn(L);
  int64_t gen = (int64_t)luaL_checkinteger(L, 2);
  int rc = lmp_broker_revoked(c->b, &gen, &c->batch);
  if (rc <= 0) {
    if (rc < 0)
      return push_batch(L, c, rc, 0);
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_pushinteger(L, gen);
  push_batch(L, c, rc, 0);
  return 2;
}

/* A message table at idx back into a lmp_broker_msg_t (borrowing strings). */
static void tomsg(lua_State *L, int idx, lmp_broker_msg_t *m)
{
  luaL_checktype(L, idx, LUA_TTABLE);
  memset(m, 0, sizeof *m);
  lua_getfield(L, idx, "id");
  snprintf(m->id, sizeof m->id, "%s", luaL_checkstring(L, -1));
  lua_getfield(L, idx, "data");
  m->data = (char *)luaL_checklstring(L, -1, &m->len);
  lua_getfield(L, idx, "deliveries");
  m->deliveries = (uint32_t)luaL_checkinteger(L, -1);
  lua_getfield(L, idx, "history");
  m->history = (char *)luaL_optstring(L, -1, "");
  lua_pop(L, 4); /* the strings stay alive in the table */
}

/* conn:complete({{msg_id, task_id, caller, data, ok, ttl_s}...}) */
static int conn_complete(lua_State *L)
{
  lconn *c = checkconn(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  int n = (int)lua_rawlen(L, 2);
  if (n == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lmp_broker_done_t *d = lua_newuserdatauv(L, sizeof *d * (size_t)n, 0);
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, 2, i + 1);
    int t = lua_gettop(L);
    lua_rawgeti(L, t, 1);
    d[i].msg_id = luaL_checkstring(L, -1);
    lua_rawgeti(L, t, 2);
    d[i].task_id = luaL_checkstring(L, -1);
    lua_rawgeti(L, t, 3);
    d[i].caller = luaL_checkstring(L, -1);
    lua_rawgeti(L, t, 4);
    d[i].data = luaL_checklstring(L, -1, &d[i].len);
    lua_rawgeti(L, t, 6);
    d[i].ttl_ms = (int64_t)(luaL_optnumber(L, -1, 0) * 1000);
    lua_settop(L, t - 1); /* the list keeps the strings */
  }
  return ok_or_fail(L, c, lmp_broker_complete(c->b, d, n));
}

/* conn:release(msg, reason|nil [, delay_s]) */
static int conn_release(lua_State *L)
{
  lconn *c = checkconn(L);
  lmp_broker_msg_t m;
  tomsg(L, 2, &m);
  int64_t delay = (int64_t)(luaL_optnumber(L, 4, 0) * 1000);
  return ok_or_fail(L, c, lmp_broker_release_later(c->b, &m, luaL_optstring(L, 3, NULL), delay));
}

/* conn:bury(msg, reason [, task_id, caller, result, ttl_s]) */
static int conn_bury(lua_State *L)
{
  lconn *c = checkconn(L);
  lmp_broker_msg_t m;
  lmp_broker_done_t d, *dp = NULL;
  tomsg(L, 2, &m);
  const char *reason = luaL_checkstring(L, 3);
  if (!lua_isnoneornil(L, 4)) {
    d.msg_id = m.id;
    d.task_id = luaL_checkstring(L, 4);
    d.caller = luaL_checkstring(L, 5);
    d.data = luaL_checklstring(L, 6, &d.len);
    d.ttl_ms = (int64_t)(luaL_optnumber(L, 7, 0) * 1000);
    dp = &d;
  }
  return ok_or_fail(L, c, lmp_broker_bury(c->b, &m, reason, dp));
}

/* conn:visibility([seconds]) -> the queue's visibility timeout (0: unset),
 * after lowering it to `seconds` when given */
static int conn_visibility(lua_State *L)
{
  lconn *c = checkconn(L);
  int64_t ms = 0;
  int rc = 0;
  if (!lua_isnoneornil(L, 2))
    rc = lmp_broker_set_visibility(c->b, (int64_t)(luaL_checknumber(L, 2) * 1000));
  if (rc == 0)
    rc = lmp_broker_get_visibility(c->b, &ms);
  if (rc < 0)
    return fail(L, c, rc);
  lua_pushnumber(L, (lua_Number)ms / 1000);
  return 1;
}

/* conn:counts() -> waiting, dead, taken, delayed (see lmp_broker_counts) */
static int conn_counts(lua_State *L)
{
  lconn *c = checkconn(L);
  lmp_broker_counts_t n;
  int rc = lmp_broker_counts(c->b, &n);
  if (rc < 0)
    return fail(L, c, rc);
  lua_pushinteger(L, n.waiting);
  lua_pushinteger(L, n.dead);
  lua_pushinteger(L, n.taken);
  lua_pushinteger(L, n.delayed);
  return 4;
}

/* conn:workers() -> {{name =, info =, running =}...} */
static int conn_workers(lua_State *L)
{
  lconn *c = checkconn(L);
  int rc = lmp_broker_workers(c->b, &c->batch);
  if (rc < 0) {
    lmp_broker_batch_clear(&c->batch);
    return fail(L, c, rc);
  }
  lua_createtable(L, c->batch.n, 0);
  for (int i = 0; i < c->batch.n; i++) {
    lmp_broker_msg_t *m = &c->batch.msg[i];
    lua_createtable(L, 0, 3);
    lua_pushstring(L, m->id);
    lua_setfield(L, -2, "name");
    lua_pushlstring(L, m->data, m->len);
    lua_setfield(L, -2, "info");
    lua_pushstring(L, m->history ? m->history : "");
    lua_setfield(L, -2, "running");
    lua_rawseti(L, -2, i + 1);
  }
  lmp_broker_batch_clear(&c->batch);
  return 1;
}

/* Pushes a worker of conn:queues(), its heartbeat's age from now_ms. */
static void push_worker(lua_State *L, const lmp_broker_worker_t *w, int64_t now_ms)
{
  lua_createtable(L, 0, 4);
  lua_pushstring(L, w->name);
  lua_setfield(L, -2, "name");
  lua_pushstring(L, w->info);
  lua_setfield(L, -2, "info");
  lua_pushstring(L, w->running);
  lua_setfield(L, -2, "running");
  if (w->seen_ms > 0) {
    lua_pushnumber(L, (lua_Number)(now_ms > w->seen_ms ? now_ms - w->seen_ms : 0) / 1000);
    lua_setfield(L, -2, "heartbeat_age");
  }
}

/* conn:queues([name]) -> {{name =, waiting =, taken =, delayed =, dead =,
 * workers = {{name =, info =, running =, heartbeat_age =}...}}...}, the
 * queue `name` or every queue on the server (see lmp_broker_queues) */
static int conn_queues(lua_State *L)
{
  lconn *c = checkconn(L);
  const char *only = luaL_optstring(L, 2, NULL);
  lmp_broker_queues_t qs;
  int rc = lmp_broker_queues(c->b, only, &qs);
  if (rc < 0)
    return fail(L, c, rc);
  int64_t now = lmp__wall_ms();
  lua_createtable(L, qs.n, 0);
  for (int i = 0; i < qs.n; i++) {
    const lmp_broker_queue_t *q = &qs.q[i];
    lua_createtable(L, 0, 6);
    lua_pushstring(L, q->name);
    lua_setfield(L, -2, "name");
    lua_pushinteger(L, q->counts.waiting);
    lua_setfield(L, -2, "waiting");
    lua_pushinteger(L, q->counts.taken);
    lua_setfield(L, -2, "taken");
    lua_pushinteger(L, q->counts.delayed);
    lua_setfield(L, -2, "delayed");
    lua_pushinteger(L, q->counts.dead);
    lua_setfield(L, -2, "dead");
    lua_createtable(L, q->nworkers, 0);
    for (int k = 0; k < q->nworkers; k++) {
      push_worker(L, &q->workers[k], now);
      lua_rawseti(L, -2, k + 1);
    }
    lua_setfield(L, -2, "workers");
    lua_rawseti(L, -2, i + 1);
  }
  lmp_broker_queues_free(&qs);
  return 1;
}

static int conn_lease_start(lua_State *L)
{
  lconn *c = checkconn(L);
  return ok_or_fail(L, c,
                    lmp_broker_lease_start(c->b, (int64_t)(luaL_checknumber(L, 2) * 1000),
                                           (int64_t)(luaL_checknumber(L, 3) * 1000)));
}

static int conn_lease_add(lua_State *L)
{
  lconn *c = checkconn(L);
  lmp_broker_lease_add(c->b, luaL_checkstring(L, 2));
  return 0;
}

static int conn_lease_del(lua_State *L)
{
  lconn *c = checkconn(L);
  lmp_broker_lease_del(c->b, luaL_checkstring(L, 2));
  return 0;
}

static int conn_lease_info(lua_State *L)
{
  lconn *c = checkconn(L);
  lmp_broker_lease_info(c->b, luaL_checkstring(L, 2));
  return 0;
}

static int conn_lease_stop(lua_State *L)
{
  lconn *c = checkconn(L);
  if (c->owner == getpid())
    lmp_broker_lease_stop(c->b);
  return 0;
}

/* === sealing === */

/* core.seal(secret, kind, id, value, what, queue [, expires]) -> signed
 * message (expires: wall-clock seconds after which it is refused) */
static int l_seal(lua_State *L)
{
  size_t klen;
  const char *key = luaL_checklstring(L, 1, &klen);
  const char *kind = luaL_checkstring(L, 2);
  const char *id = luaL_checkstring(L, 3);
  luaL_checkany(L, 4);
  const char *what = luaL_optstring(L, 5, "value");
  const char *queue = luaL_checkstring(L, 6);
  int64_t expires = (int64_t)(luaL_optnumber(L, 7, 0) * 1000);
  const lmp_buf_t *p = lmpb_encode_remote(L, 4, what);
  lmp_buf_t out = {0};
  int rc = lmp_broker_sign(&out, key, klen, kind[0], id, queue, expires, p->data, p->len);
  if (rc < 0) {
    lmp_buf_free(&out);
    return luaL_error(L, "cannot sign a message: %s", lmp_strerror(rc));
  }
  lua_pushlstring(L, out.data, out.len);
  lmp_buf_free(&out);
  return 1;
}

/* core.unseal(secret, msg, max_age_s) -> kind, id, value, queue | nil, reason */
static int l_unseal(lua_State *L)
{
  size_t klen, len;
  const char *key = luaL_checklstring(L, 1, &klen);
  const char *msg = luaL_checklstring(L, 2, &len);
  int64_t age = (int64_t)(luaL_optnumber(L, 3, 0) * 1000);
  lmp_broker_view_t v;
  int rc = lmp_broker_verify(msg, len, key, klen, age, &v);
  if (rc == -EBADMSG)
    return lmpb_fail(L, "bad signature");
  if (rc == -ESTALE)
    return lmpb_fail(L, "stale timestamp");
  if (rc < 0)
    return lmpb_fail(L, lmp_strerror(rc));
  char k[2] = {(char)v.kind, 0};
  lua_pushstring(L, k);
  lua_pushlstring(L, v.id, v.idlen);
  lmpb_decode(L, v.payload, v.len, 1);
  lua_pushlstring(L, v.queue, v.qlen);
  return 4;
}

/* core.peek(msg) -> id, kind, queue of a message NOT checked (to report on
 * one that failed its check), or nil */
static int l_peek(lua_State *L)
{
  size_t len;
  const char *msg = luaL_checklstring(L, 1, &len);
  lmp_broker_view_t v;
  if (lmp_broker_peek(msg, len, &v) < 0)
    return 0;
  char k[2] = {(char)v.kind, 0};
  lua_pushlstring(L, v.id, v.idlen);
  lua_pushstring(L, k);
  lua_pushlstring(L, v.queue, v.qlen);
  return 3;
}

/* core.encode(value, what) -> string */
static int l_encode(lua_State *L)
{
  luaL_checkany(L, 1);
  const lmp_buf_t *p = lmpb_encode_remote(L, 1, luaL_optstring(L, 2, "value"));
  lua_pushlstring(L, p->data, p->len);
  return 1;
}

/* core.decode(string) -> value: only for bytes that came out of unseal. */
static int l_decode(lua_State *L)
{
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lmpb_decode(L, s, n, 1);
  return 1;
}

/* core.handles(bytes) -> how many lmp handles an encoded value holds
 * (without decoding it), or -1 if the bytes are malformed. */
static int l_handles(lua_State *L)
{
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  lua_pushinteger(L, lmpb_handle_names(s, n, NULL));
  return 1;
}

/* === signals of `lmp worker` === */

/* The handlers only count (STYLE: signals set flags); the worker's loop
 * reads the counts.  A child forked later (a replacement pool worker)
 * inherits the handler but not the role: there it acts as the default. */
static volatile sig_atomic_t sig_term, sig_int;
static pid_t sig_owner;

static void on_signal(int sig)
{
  if (getpid() != sig_owner) {
    signal(sig, SIG_DFL);
    raise(sig);
    return;
  }
  if (sig == SIGINT)
    sig_int++;
  else
    sig_term++;
}

/* core.catch_signals(): SIGTERM and SIGINT are counted from now on. */
static int l_catch_signals(lua_State *L)
{
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sig_owner = getpid();
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  (void)L;
  return 0;
}

/* core.signals() -> SIGTERMs, SIGINTs received so far */
static int l_signals(lua_State *L)
{
  lua_pushinteger(L, sig_term);
  lua_pushinteger(L, sig_int);
  return 2;
}

static int l_isatty(lua_State *L)
{
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

static const luaL_Reg conn_methods[] = {
    {"close", conn_close},
    {"consumer", conn_consumer},
    {"fileno", conn_fileno},
    {"notify_fd", conn_notify_fd},
    {"notify_reset", conn_notify_reset},
    {"put", conn_put},
    {"flush", conn_flush},
    {"results", conn_results},
    {"take", conn_take},
    {"promote", conn_promote},
    {"take_send", conn_take_send},
    {"take_recv", conn_take_recv},
    {"take_cancel", conn_take_cancel},
    {"patience", conn_patience},
    {"rate_limit", conn_rate_limit},
    {"state", conn_state},
    {"replicate", conn_replicate},
    {"server", conn_server},
    {"settle", conn_settle},
    {"revoke", conn_revoke},
    {"revoked", conn_revoked},
    {"reclaim", conn_reclaim},
    {"complete", conn_complete},
    {"release", conn_release},
    {"bury", conn_bury},
    {"counts", conn_counts},
    {"visibility", conn_visibility},
    {"workers", conn_workers},
    {"queues", conn_queues},
    {"lease_start", conn_lease_start},
    {"lease_add", conn_lease_add},
    {"lease_del", conn_lease_del},
    {"lease_info", conn_lease_info},
    {"lease_stop", conn_lease_stop},
    {NULL, NULL},
};

/* core.url_shown(url) -> the URL as logs show it, its password as "***" */
static int l_url_shown(lua_State *L)
{
  size_t len;
  const char *url = luaL_checklstring(L, 1, &len);
  luaL_Buffer buf;
  char *out = luaL_buffinitsize(L, &buf, len + 4);
  lmp__broker_url_shown(url, out, len + 4);
  luaL_pushresultsize(&buf, strlen(out));
  return 1;
}

static const luaL_Reg core_funcs[] = {
    {"open", l_open},           {"seal", l_seal},     {"unseal", l_unseal},
    {"encode", l_encode},       {"decode", l_decode}, {"catch_signals", l_catch_signals},
    {"signals", l_signals},     {"isatty", l_isatty}, {"handles", l_handles},
    {"url_shown", l_url_shown}, {"peek", l_peek},     {NULL, NULL},
};

int lmpb_broker_open(lua_State *L)
{
  if (luaL_newmetatable(L, CONN_MT)) {
    luaL_newlib(L, conn_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, conn_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_pop(L, 1);
  luaL_newlib(L, core_funcs);
  lua_pushinteger(L, LUA_VERSION_NUM);
  lua_setfield(L, -2, "lua_version");
  lua_setfield(L, -2, "broker");
  return 0;
}

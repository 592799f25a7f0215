/*
 * lpipe.c -- lmp.Pipe: two connected ends that carry Lua values (send/recv)
 * or raw strings (send_bytes/recv_bytes).
 *
 * An end owns one socket descriptor (runtime/pipe.c frames the messages).
 * Ends are handles: sending one to another process hands a duplicate of the
 * descriptor to the root's watchdog and the receiver takes it from there, so
 * an end can travel through a Queue or to an already running process.  The
 * end that was sent stays open in the sender until it closes it.
 *
 * Messages can carry handles, each pinned until its receiver adopts it.  A
 * message nobody will read must give its pins back, or the objects it names
 * live until the program ends.  When a reading end closes and this process
 * is provably its only holder (made here, never sent, not received, and no
 * fork since: a child would have a copy), what it has not read will never
 * be read, so it is drained then and its handles released.  An end that may
 * have a copy elsewhere leaves its messages to that copy.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "lmp/pipe.h"
#include "lmp/runtime.h"
#include "lmp/segment.h"
#include "codec.h"
#include "lmpaux.h"
#include "lmpb.h"

#define PIPE_MT "lmp.Connection"

typedef struct lpipe {
  int fd; /* -1 once closed */
  int readable, writable;
  int shared;           /* sent or received: another process may hold it */
  pid_t pid;            /* the process it was made in ... */
  unsigned long forks;  /* ... and its forks until then */
  lmp_pipe_reader_t rd; /* the last message, and messages still arriving */
} lpipe;

static unsigned long forks; /* forks of this process (pthread_atfork) */

static void count_fork(void)
{
  forks++;
}

/* === helpers === */

static lpipe *newend(lua_State *L, int fd, int readable, int writable)
{
  lpipe *p = lua_newuserdatauv(L, sizeof *p, 0);
  memset(p, 0, sizeof *p);
  p->fd = -1;
  luaL_setmetatable(L, PIPE_MT);
  p->fd = fd;
  p->readable = readable;
  p->writable = writable;
  p->pid = getpid();
  p->forks = forks;
  return p;
}

static lpipe *checkopen(lua_State *L)
{
  lpipe *p = luaL_checkudata(L, 1, PIPE_MT);
  if (p->fd < 0)
    lmpb_closed(L, PIPE_MT);
  return p;
}

static lpipe *checkreadable(lua_State *L)
{
  lpipe *p = checkopen(L);
  luaL_argcheck(L, p->readable, 1, "connection is write-only");
  return p;
}

static lpipe *checkwritable(lua_State *L)
{
  lpipe *p = checkopen(L);
  luaL_argcheck(L, p->writable, 1, "connection is read-only");
  return p;
}

static int sendresult(lua_State *L, int rc)
{
  if (rc < 0)
    return lmpb_result(L, "send", rc, "timeout");
  lua_pushboolean(L, 1);
  return 1;
}

/* Receives one message into the end's buffer; returns 0 or pushes nil, reason. */
static int recv_into(lua_State *L, lpipe *p, int64_t deadline)
{
  int rc = lmp_pipe_recv(&p->rd, p->fd, deadline);
  return rc < 0 ? lmpb_result(L, "recv", rc, "timeout") : 0;
}

/* === constructor === */

/* lmp.Pipe([duplex = true]) -> a, b.  One-way: a receives, b sends. */
static int pipe_new(lua_State *L)
{
  int duplex = 1;
  if (lua_istable(L, 1)) {
    static const char *const known[] = {"duplex", NULL};
    lmpb_checkoptions(L, 1, known);
    lua_getfield(L, 1, "duplex");
    duplex = lua_isnil(L, -1) || lua_toboolean(L, -1);
  } else if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TBOOLEAN);
    duplex = lua_toboolean(L, 1);
  }
  int fds[2];
  lpipe *a = newend(L, -1, 1, duplex);
  lpipe *b = newend(L, -1, duplex, 1);
  int rc = lmp_pipe_pair(duplex, fds);
  if (lmpb_fds_retry(L, rc))
    rc = lmp_pipe_pair(duplex, fds);
  if (rc < 0)
    return lmpb_rterror(L, "Pipe", rc);
  a->fd = fds[0];
  b->fd = fds[1];
  return 2;
}

/* === methods === */

static int pipe_send(lua_State *L)
{
  lpipe *p = checkwritable(L);
  luaL_checkany(L, 2);
  const lmp_buf_t *msg = lmpb_encode(L, 2, "value");
  return sendresult(L, lmp_pipe_send(p->fd, msg->data, msg->len));
}

static int pipe_recv(lua_State *L)
{
  lpipe *p = checkreadable(L);
  if (recv_into(L, p, lmpb_optdeadline(L, 2)))
    return 2;
  lmpb_decode(L, p->rd.msg.data, p->rd.msg.len, 1);
  return 1;
}

/* send_bytes(s [, offset [, size]]) as Python's, with a 1-based offset. */
static int pipe_send_bytes(lua_State *L)
{
  lpipe *p = checkwritable(L);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  lua_Integer off = luaL_optinteger(L, 3, 1);
  luaL_argcheck(L, off >= 1 && (size_t)off <= len + 1, 3, "offset out of range");
  lua_Integer size = luaL_optinteger(L, 4, (lua_Integer)len - off + 1);
  luaL_argcheck(L, size >= 0 && (size_t)(off - 1 + size) <= len, 4, "size out of range");
  return sendresult(L, lmp_pipe_send(p->fd, s + off - 1, (size_t)size));
}

static int pipe_recv_bytes(lua_State *L)
{
  lpipe *p = checkreadable(L);
  if (recv_into(L, p, lmpb_optdeadline(L, 2)))
    return 2;
  lua_pushlstring(L, p->rd.msg.data, p->rd.msg.len);
  return 1;
}

static int pipe_poll(lua_State *L)
{
  lpipe *p = checkreadable(L);
  int64_t deadline = lua_isnoneornil(L, 2) ? lmp_deadline(0) : lmpb_optdeadline(L, 2);
  int rc = lmp_pipe_poll(&p->rd, p->fd, deadline);
  if (rc < 0)
    return lmpb_rterror(L, "poll", rc);
  lua_pushboolean(L, rc > 0);
  return 1;
}

static int pipe_fileno(lua_State *L)
{
  lua_pushinteger(L, checkopen(L)->fd);
  return 1;
}

/* What an end that only this process holds has not read will never be read:
 * give back the pins of the handles in it. */
static void drain_unread(lpipe *p)
{
  if (!p->readable || p->shared || p->pid != getpid() || p->forks != forks)
    return;
  while (lmp_pipe_recv(&p->rd, p->fd, lmp_deadline(0)) == 0)
    (void)lmpb_handle_names(p->rd.msg.data, p->rd.msg.len, lmp_seg_unpin);
}

static int pipe_close(lua_State *L)
{
  lpipe *p = luaL_checkudata(L, 1, PIPE_MT);
  if (p->fd >= 0) {
    drain_unread(p);
    close(p->fd);
  }
  p->fd = -1;
  lmp_pipe_reader_free(&p->rd);
  return 0;
}

static int pipe_index(lua_State *L)
{
  lpipe *p = luaL_checkudata(L, 1, PIPE_MT);
  const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
  if (strcmp(k, "closed") == 0)
    lua_pushboolean(L, p->fd < 0);
  else if (strcmp(k, "readable") == 0)
    lua_pushboolean(L, p->readable);
  else if (strcmp(k, "writable") == 0)
    lua_pushboolean(L, p->writable);
  else {
    lmpb_method(L, PIPE_MT);
  }
  return 1;
}

static int pipe_tostring(lua_State *L)
{
  lpipe *p = luaL_checkudata(L, 1, PIPE_MT);
  if (p->fd < 0)
    lua_pushliteral(L, "lmp.Connection(closed)");
  else
    lua_pushfstring(L, "lmp.Connection(fd %d, %s)", p->fd,
                    p->readable && p->writable ? "duplex"
                    : p->readable              ? "read"
                                               : "write");
  return 1;
}

/* === crossing processes === */

struct wire {
  uint64_t token;
  uint8_t readable, writable;
};

static int pipe_encode(lua_State *L, int idx, lmp_buf_t *out)
{
  lpipe *p = lua_touserdata(L, idx);
  if (p->fd < 0)
    return -EBADF;
  struct wire w = {0, (uint8_t)p->readable, (uint8_t)p->writable};
  int rc = lmp_fd_stash(p->fd, &w.token);
  p->shared = 1; /* its receiver reads what comes to it from now on */
  if (rc == -ENOSPC)
    return luaL_error(L,
                      "too many connections in transit: the watchdog holds at most %d "
                      "(fewer under a low ulimit -n) until their receivers take them",
                      LMP_FD_STASH_MAX);
  if (rc < 0)
    return rc;
  if (lmp_buf_reserve(out, out->len + sizeof w) < 0)
    return -ENOMEM;
  memcpy(out->data + out->len, &w, sizeof w);
  out->len += sizeof w;
  return 0;
}

static void pipe_decode(lua_State *L, const char *data, size_t len)
{
  struct wire w;
  if (len != sizeof w)
    luaL_error(L, "corrupt message (bad connection handle)");
  memcpy(&w, data, sizeof w);
  lpipe *p = newend(L, -1, w.readable != 0, w.writable != 0);
  p->shared = 1; /* its sender may hold it still */
  int rc = lmp_fd_fetch(w.token, &p->fd);
  if (lmpb_fds_retry(L, rc))
    rc = lmp_fd_fetch(w.token, &p->fd);
  if (rc < 0)
    luaL_error(L, "cannot receive a connection: %s", lmp_strerror(rc));
}

static const luaL_Reg methods[] = {
    {"send", pipe_send},
    {"recv", pipe_recv},
    {"send_bytes", pipe_send_bytes},
    {"recv_bytes", pipe_recv_bytes},
    {"poll", pipe_poll},
    {"fileno", pipe_fileno},
    {"close", pipe_close},
    {NULL, NULL},
};

static const luaL_Reg metamethods[] = {
    {"__index", pipe_index},       {"__gc", pipe_close}, {"__close", pipe_close},
    {"__tostring", pipe_tostring}, {NULL, NULL},
};

int lmpb_pipe_open(lua_State *L)
{
  static const lmpb_handle_type handle = {PIPE_MT, pipe_encode, pipe_decode};
  static int counting;
  if (!counting) /* once per process: lmp.so is never unloaded */
    counting = pthread_atfork(NULL, count_fork, NULL) == 0;
  if (luaL_newmetatable(L, PIPE_MT)) {
    luaL_setfuncs(L, metamethods, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "methods");
  }
  lua_pop(L, 1);
  lmpb_register_handle(L, &handle);
  lua_pushcfunction(L, pipe_new);
  lua_setfield(L, -2, "Pipe");
  return 0;
}

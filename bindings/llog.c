/*
 * llog.c -- the C half of logging (scripts/lmp/log.lua is the rest).
 *
 * Logging needs three things Lua lacks.  A line must reach its descriptor
 * in one write(2), so lines from different processes never interleave
 * mid-line (a pipe guarantees it up to PIPE_BUF bytes; an O_APPEND file and
 * a terminal in practice for any size); Lua's buffered files cannot promise
 * that.  Records need wall-clock time with milliseconds.  And the process
 * that owns a function handler must run it for the records still queued
 * when its state closes, after its children have ended: a finalizer does
 * that (the state's children ended first, then the drain), created after the channel
 * so that it runs before the channel's own finalizer.
 *
 * These are lmp.core.log; lmp.log_to_stderr and lmp.get_logger
 * (scripts/lmp/init.lua) load lmp.log on first use.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lmp/proc.h"
#include "lmpaux.h"
#include "lmpb.h"

#define CLOSER_MT "lmp.log.closer"
#define CLOSER_KEY "lmp.log.closer_instance"

/* core.write(fd, s): one write(2) of the whole string (more only if the
 * kernel takes less, which a blocking pipe does not below PIPE_BUF). */
static int l_write(lua_State *L)
{
  int fd = (int)luaL_checkinteger(L, 1);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0)
      return luaL_fileresult(L, 0, NULL);
    s += w;
    n -= (size_t)w;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* core.open(path) -> fd: for appending, created if missing. */
static int l_open(lua_State *L)
{
  const char *path = luaL_checkstring(L, 1);
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return luaL_fileresult(L, 0, path);
  lua_pushinteger(L, fd);
  return 1;
}

static int l_close(lua_State *L)
{
  close((int)luaL_checkinteger(L, 1));
  return 0;
}

/* core.now() -> seconds since the epoch, with a fraction. */
static int l_now(lua_State *L)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
  return 1;
}

static int l_pid(lua_State *L)
{
  lua_pushinteger(L, getpid());
  return 1;
}

/* The closer: a userdata holding the pid that made it and the drain
 * function (its user value). */
static int closer_gc(lua_State *L)
{
  pid_t *owner = luaL_checkudata(L, 1, CLOSER_MT);
  if (*owner != getpid())
    return 0;
  lmp_proc_shutdown_owner(lmpb_owner(L));
  lua_getiuservalue(L, 1, 1);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK)
    lua_pop(L, 1); /* nothing to report to at this point */
  return 0;
}

/* core.on_close(fn): run fn when this process's Lua state closes, after
 * its children have ended.  Once per process; later calls replace fn. */
static int l_on_close(lua_State *L)
{
  luaL_checktype(L, 1, LUA_TFUNCTION);
  pid_t *owner = lua_newuserdatauv(L, sizeof *owner, 1);
  *owner = getpid();
  if (luaL_newmetatable(L, CLOSER_MT)) {
    lua_pushcfunction(L, closer_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_pushvalue(L, 1);
  lua_setiuservalue(L, -2, 1);
  /* A closer this one replaces must not run too. */
  if (lua_getfield(L, LUA_REGISTRYINDEX, CLOSER_KEY) == LUA_TUSERDATA)
    *(pid_t *)lua_touserdata(L, -1) = 0;
  lua_pop(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, CLOSER_KEY);
  return 0;
}

static const luaL_Reg core[] = {
    {"write", l_write}, {"open", l_open},         {"close", l_close}, {"now", l_now},
    {"pid", l_pid},     {"on_close", l_on_close}, {NULL, NULL},
};

int lmpb_log_open(lua_State *L)
{
  luaL_newlib(L, core);
  lua_setfield(L, -2, "log");
  return 0;
}

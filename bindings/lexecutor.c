/*
 * lexecutor.c -- the C half of lmp.Executor: the module entries and one
 * helper.  The Executor, its Futures, as_completed, wait and await are
 * written in Lua (scripts/lmp/executor.lua) over lmp.Pool's public surface,
 * and loaded the first time one of them is called (scripts/lmp/init.lua).
 *
 * The helper waits on several descriptors at once.  Futures may come from
 * several executors, each with its own pool and its own pool:fileno(); to
 * wait for the first of them to finish, as_completed and wait sleep in one
 * poll(2) on all those descriptors instead of spinning over pool:poll().
 * It is hidden (lmp._poll_fds): event loops have their own poll.
 */
#include <poll.h>

#include "../runtime/internal.h"
#include "lmpaux.h"
#include "lmpb.h"

#define MAX_FDS 4096

/* lmp._poll_fds({fd, ...} [, timeout]) -> how many are readable (or in
 * error, or hung up); 0 when the timeout passed first.  A signal does not
 * cut the wait short, but ^C raises "interrupted". */
static int l_poll_fds(lua_State *L)
{
  luaL_checktype(L, 1, LUA_TTABLE);
  int64_t deadline = lmpb_optdeadline(L, 2);
  lua_Integer n = luaL_len(L, 1);
  luaL_argcheck(L, n >= 0 && n <= MAX_FDS, 1, "too many descriptors");
  struct pollfd *fds = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *fds, 0);
  for (lua_Integer i = 0; i < n; i++) {
    int isint;
    lua_geti(L, 1, i + 1);
    lua_Integer fd = lua_tointegerx(L, -1, &isint);
    if (!isint || fd < 0 || fd > 0x7fffffff)
      return luaL_argerror(L, 1, lua_pushfstring(L, "descriptor expected at index %d", (int)i + 1));
    lua_pop(L, 1);
    fds[i].fd = (int)fd;
    fds[i].events = POLLIN;
    fds[i].revents = 0;
  }
  int rc = lmp__poll_fds(fds, (size_t)n, deadline);
  if (rc < 0)
    return lmpb_rterror(L, "poll", rc);
  lua_pushinteger(L, rc);
  return 1;
}

int lmpb_executor_open(lua_State *L)
{
  static const char *const consts[] = {"FIRST_COMPLETED", "FIRST_EXCEPTION", "ALL_COMPLETED", NULL};
  for (int i = 0; consts[i]; i++) {
    lua_pushstring(L, consts[i]);
    lua_setfield(L, -2, consts[i]);
  }
  lua_pushcfunction(L, l_poll_fds);
  lua_setfield(L, -2, "_poll_fds");
  return 0;
}

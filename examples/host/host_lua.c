/*
 * host_lua.c -- a C program that embeds Lua and lmp.
 *
 * The whole embedding surface is <lmp.h>: register the module with
 * luaL_requiref(L, "lmp", luaopen_lmp, 1), run Lua that uses it, read the
 * results back from the Lua stack.  The script below squares numbers in
 * worker processes fed through a Queue, and again with a Pool when this
 * build has one; the C side sums what comes back.
 *
 *   make examples && build/examples/host_lua
 */
#include <stdio.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include <lmp.h>

static const char script[] =
    "local lmp = require 'lmp'\n"
    "local n = ...\n"
    "local tasks, results = lmp.Queue(), lmp.Queue()\n"
    "local workers = {}\n"
    "for i = 1, 2 do\n"
    "  workers[i] = lmp.Process(function()\n"
    "    for x in function() return tasks:get() end do results:put(x * x) end\n"
    "  end)\n"
    "  workers[i]:start()\n"
    "end\n"
    "for x = 1, n do tasks:put(x) end\n"
    "for _ = 1, #workers do tasks:put(nil) end\n"
    "local squares = {}\n"
    "for i = 1, n do squares[i] = results:get() end\n"
    "for _, w in ipairs(workers) do w:join() end\n"
    "local pooled\n"
    "if lmp.Pool then\n"
    "  local pool <close> = lmp.Pool(2)\n"
    "  local xs = {}\n"
    "  for x = 1, n do xs[x] = x end\n"
    "  pooled = pool:map(function(x) return x * x end, xs)\n"
    "end\n"
    "return squares, pooled\n";

/* Sum of the integers in the table at `idx`. */
static long long sum(lua_State *L, int idx)
{
  long long s = 0;
  lua_Integer n = luaL_len(L, idx);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, idx, i);
    s += lua_tointeger(L, -1);
    lua_pop(L, 1);
  }
  return s;
}

int main(void)
{
  lua_State *L = luaL_newstate();
  if (!L)
    return 1;
  luaL_openlibs(L);
  luaL_requiref(L, "lmp", luaopen_lmp, 1);
  lua_pop(L, 1);

  int status = luaL_loadbuffer(L, script, sizeof script - 1, "=host_lua");
  if (status == LUA_OK) {
    lua_pushinteger(L, 100);
    status = lua_pcall(L, 1, 2, 0);
  }
  if (status != LUA_OK) {
    fprintf(stderr, "host_lua: %s\n", lua_tostring(L, -1));
    lua_close(L);
    return 1;
  }
  printf("processes: %lld squares, sum %lld\n", (long long)luaL_len(L, -2), sum(L, -2));
  if (lua_istable(L, -1))
    printf("pool: %lld squares, sum %lld\n", (long long)luaL_len(L, -1), sum(L, -1));
  /* Closing the state joins what is still running, as the lmp command does. */
  lua_close(L);
  return 0;
}

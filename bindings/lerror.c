/*
 * lerror.c -- lmp.Error, the value remote failures are raised as.
 *
 * An lmp.Error is a plain table {kind, message, traceback, value, pid} with a
 * shared metatable, so it crosses processes like any registered class and a
 * handler can read its fields without accessors.  `kind` says what failed
 * ("task", "worker_lost", "timeout", "serialize", ...), `traceback` is the
 * remote one, `value` the original error value when it could be sent.
 *
 * Unexpected runtime codes become errors here, in one place: most as a plain
 * "what: reason" string, and the ones a program may want to handle as an
 * lmp.Error of their own kind ("no_space": shared memory ran out, the
 * message saying how much was asked for and what was left where).
 */
#include <errno.h>
#include <stdarg.h>
#include <string.h>

#include "lmp/segment.h"
#include "lmpb.h"

#define ERROR_MT "lmp.Error"

/* === construction === */

void lmpb_error_push(lua_State *L, const char *kind, const char *msg)
{
  lua_createtable(L, 0, 4);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushstring(L, msg);
  lua_setfield(L, -2, "message");
  luaL_setmetatable(L, ERROR_MT);
}

int lmpb_error_raise(lua_State *L, const char *kind, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  lmpb_error_push(L, kind, lua_tostring(L, -1));
  return lua_error(L);
}

int lmpb_rterror(lua_State *L, const char *what, int code)
{
  const char *why;

  if (code == -ENOSPC) {
    why = lmp_seg_space_error();
    return lmpb_error_raise(L, "no_space", "%s: %s", what, *why ? why : lmp_strerror(code));
  }
  if (code == -EINTR)
    lmpb_interrupt_check(L);
  return luaL_error(L, "%s: %s", what, lmp_strerror(code));
}

/* lmp.Error(kind, message [, fields]) or lmp.Error{kind =, message =, ...} */
static int error_new(lua_State *L)
{
  if (lua_istable(L, 1)) {
    lua_settop(L, 1);
    lua_getfield(L, 1, "kind");
    luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, 1, "field 'kind' must be a string");
    lua_getfield(L, 1, "message");
    if (lua_isnil(L, -1)) {
      lua_pushstring(L, "");
      lua_setfield(L, 1, "message");
    }
    lua_settop(L, 1);
    luaL_setmetatable(L, ERROR_MT);
    return 1;
  }
  luaL_checktype(L, 1, LUA_TSTRING);
  const char *kind = lua_tostring(L, 1);
  const char *msg = luaL_optstring(L, 2, "");
  lmpb_error_push(L, kind, msg);
  if (!lua_isnoneornil(L, 3)) {
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_rawset(L, -4);
    }
  }
  return 1;
}

/* === methods === */

static int error_tostring(lua_State *L)
{
  luaL_Buffer b;
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  /* the fields first: nothing but luaL_addvalue's value may be pushed
   * while the buffer is open */
  lua_getfield(L, 1, "kind");      /* 2 */
  lua_getfield(L, 1, "message");   /* 3 */
  lua_getfield(L, 1, "traceback"); /* 4 */
  lua_getfield(L, 1, "pid");       /* 5 */
  luaL_buffinit(L, &b);
  luaL_addstring(&b, "lmp.Error(");
  luaL_addstring(&b, lua_isstring(L, 2) ? lua_tostring(L, 2) : "?");
  if (lua_isinteger(L, 5)) {
    lua_pushfstring(L, ", pid %d", (int)lua_tointeger(L, 5));
    luaL_addvalue(&b);
  }
  luaL_addstring(&b, "): ");
  if (lua_isstring(L, 3)) {
    lua_pushvalue(L, 3);
    luaL_addvalue(&b);
  }
  if (lua_isstring(L, 4) && lua_rawlen(L, 4) > 0) {
    luaL_addstring(&b, "\nremote ");
    lua_pushvalue(L, 4);
    luaL_addvalue(&b);
  }
  luaL_pushresult(&b);
  return 1;
}

static int error_is(lua_State *L)
{
  int is = 0;
  if (lua_type(L, 1) == LUA_TTABLE && lua_getmetatable(L, 1)) {
    luaL_getmetatable(L, ERROR_MT);
    is = lua_rawequal(L, -1, -2);
  }
  lua_pushboolean(L, is);
  return 1;
}

int lmpb_error_open(lua_State *L)
{
  if (luaL_newmetatable(L, ERROR_MT)) {
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
  }
  lmpb_register_class(L, ERROR_MT, lua_gettop(L));
  lua_pop(L, 1);
  lua_pushcfunction(L, error_new);
  lua_setfield(L, -2, "Error");
  lua_pushcfunction(L, error_is);
  lua_setfield(L, -2, "is_error");
  return 0;
}

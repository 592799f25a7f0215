/*
 * lerror.c -- lmp.Error, the value remote failures are raised as.
 *
 * An lmp.Error is a plain table {kind, message, traceback, value, pid} with a
 * shared metatable, so it crosses processes like any registered class and a
 * handler can read its fields without accessors.  `kind` says what failed
 * ("task", "worker_lost", "timeout", "serialize", ...), `traceback` is the
 * remote one, `value` the original error value when it could be sent.
 *
 * The value itself (its metatable, its __tostring, raising one from C) is
 * the ground floor's (lmpaux.c), so that every binding can raise one; this
 * file adds lmp.Error and lmp.is_error to the core and registers the class
 * with the codec, so that an error crosses processes as an lmp.Error.
 */
#include "codec.h"
#include "lmpaux.h"
#include "lmpb.h"

#define ERROR_MT LMPB_ERROR_MT

/* === construction === */

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
  lmpb_error_metatable(L);
  lmpb_register_class(L, ERROR_MT, lua_gettop(L));
  lua_pop(L, 1);
  lua_pushcfunction(L, error_new);
  lua_setfield(L, -2, "Error");
  lua_pushcfunction(L, error_is);
  lua_setfield(L, -2, "is_error");
  return 0;
}

/*
 * larray.c -- lmp.Value, lmp.Array, lmp.RawValue, lmp.RawArray, and the
 * lock their get_lock() returns.
 *
 * A Value is an Array of one element seen through another metatable; both
 * are an lmp_array_t (runtime/array.c), and so is a view of a SharedMemory
 * block (m:array(), lshmem.c), which is an lmp.Array without a lock.  Every element
 * access is one atomic load or store, so v.value never reads half a write;
 * add() is an atomic read-modify-write.  totable() and fill() hold the lock,
 * when there is one, for the whole copy, as Python's slice access does.
 *
 * Numbers.  Integer types take Lua integers (and floats with an exact
 * integer value) in the type's range; anything else is a bad argument.
 * uint64 values past math.maxinteger cannot be Lua integers: they read as
 * floats, and a float in [2^63, 2^64) with an integer value stores exactly.
 * add() wraps around as C (and Lua's own integer arithmetic) does.
 *
 * Indexing.  a[i] is 1-based.  Reading a[#a + 1] gives nil, so ipairs and
 * `while a[i]` loops end where Lua's do; any other index outside 1..#a is a
 * bad argument ("index 0 out of range 1..10"), as is every write outside it.
 * Arguments of metamethods are numbered as for methods, from the first after
 * the object: in a[k] = v, k is #1 and v is #2.
 *
 * The lock.  get_lock() returns an lmp.ValueLock: the RLock in the array's
 * header (runtime/array.c), with acquire, release, locked, with, <close>
 * (releases a hold, as a Lock's does) and close (drops the handle).  It is
 * a handle of its own, so it can be sent anywhere like the array.  A
 * process that drops its last handle to an array while holding its lock
 * abandons it (the next acquirer gets "owner_died"), and a child that ends
 * holding it hands it on the same way.  lmp.Condition takes it as its lock
 * (lmpb_valuelock and friends, for lsyncobj.c).
 *
 * Handles.  A Value, Array or lock crosses as its segment name; a view as
 * the block's segment name, a NUL, and "v:<offset>:<count>:<type>" in text.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmp/array.h"
#include "lmp/shmem.h"
#include "lmp/syncobj.h"
#include "codec.h"
#include "lmpaux.h"
#include "lmpb.h"

/* Arrays, not literals: their addresses are the classes of the handle
 * tags (lmpaux.h). */
static const char VALUE_MT[] = "lmp.Value";
static const char ARRAY_MT[] = "lmp.Array";
static const char LOCK_MT[] = "lmp.ValueLock";

typedef struct larray {
  uintptr_t tag;  /* lmpb_tag(itself, its metatable's name) until closed */
  lmp_array_t *a; /* NULL once closed */
} larray;

/* Push a new handle of metatable mt in its closed state: __gc can free it
 * whatever happens before the array is stored in it. */
static larray *new_larray(lua_State *L, const char *mt)
{
  larray *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->a = NULL;
  u->tag = 0;
  luaL_setmetatable(L, mt);
  u->tag = lmpb_tag(u, mt);
  return u;
}

/* The open handle of metatable mt at idx, known by its tag; or NULL (then
 * luaL_checkudata decides). */
static larray *toopen(lua_State *L, int idx, const char *mt)
{
  larray *u = lmpb_totagged(L, idx, sizeof *u, mt);
  return u != NULL && u->a != NULL ? u : NULL;
}

/* close(), and __gc: the handle is closed for good. */
static void drop(larray *u)
{
  u->tag = 0;
  if (u->a)
    lmp_array_free(u->a);
  u->a = NULL;
}

/* Push a new lmp.Array handle, closed, and return where its array goes:
 * for the views of a SharedMemory block (lshmem.c). */
lmp_array_t **lmpb_newarray(lua_State *L)
{
  return &new_larray(L, ARRAY_MT)->a;
}

/* === argument helpers === */

/* A bad argument numbered by hand: metamethods get their arguments at stack
 * positions Lua's own numbering would report off by one. */
static int badarg(lua_State *L, int idx, const char *fname, int argno, const char *msg)
{
  if (fname == NULL)
    return luaL_argerror(L, idx, msg);
  return luaL_error(L, "bad argument #%d to '%s' (%s)", argno, fname, msg);
}

static int typeerr(lua_State *L, int idx, const char *fname, int argno, const char *want)
{
  const char *msg = lua_pushfstring(L, "%s expected, got %s", want, luaL_typename(L, idx));
  return badarg(L, idx, fname, argno, msg);
}

/* The type name at idx; errors name argument `arg` (a table's fields are
 * all argument #1). */
static lmp_ctype_t check_ctype_at(lua_State *L, int idx, int arg)
{
  lmp_ctype_t t;
  if (lua_type(L, idx) != LUA_TSTRING)
    luaL_argerror(L, arg, idx == arg ? lua_pushfstring(L, "string expected, got %s",
                                                       luaL_typename(L, idx))
                                     : "field 'type' must be a type name");
  const char *name = lua_tostring(L, idx);
  if (lmp_ctype_parse(name, &t) < 0)
    luaL_argerror(L, arg, lua_pushfstring(L, "unknown type '%s'", name));
  return t;
}

lmp_ctype_t lmpb_checkctype(lua_State *L, int idx)
{
  return check_ctype_at(L, idx, idx);
}

/* An optional boolean field `lock` of the options table at 1. */
static int opt_lock(lua_State *L, int raw, const char *what)
{
  int lock = !raw;
  if (lua_getfield(L, 1, "lock") != LUA_TNIL) {
    if (raw)
      luaL_argerror(L, 1, lua_pushfstring(L, "a %s has no lock", what));
    if (!lua_isboolean(L, -1))
      luaL_argerror(L, 1, "field 'lock' must be a boolean");
    lock = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  return lock;
}

/* The Lua value at idx as an element of type t: NULL and *out, or the
 * message of what is wrong with it (pushed). */
static const char *to_elem(lua_State *L, int idx, lmp_ctype_t t, lmp_scalar_t *out)
{
  lua_Integer i;
  int isnum;
  if (lmp_ctype_is_float(t)) {
    out->d = (double)lua_tonumberx(L, idx, &isnum);
    return isnum ? NULL : lua_pushfstring(L, "number expected, got %s", luaL_typename(L, idx));
  }
  i = lua_tointegerx(L, idx, &isnum);
  if (!isnum) {
    lua_Number n = lua_tonumberx(L, idx, &isnum);
    if (!isnum)
      return lua_pushfstring(L, "number expected, got %s", luaL_typename(L, idx));
    if (t == LMP_UINT64 && n >= 0x1p63 && n < 0x1p64 && n == floor(n)) {
      out->u = (uint64_t)n;
      return NULL;
    }
    return lua_pushliteral(L, "number has no integer representation");
  }
  if (!lmp_ctype_fits(t, (int64_t)i))
    return lua_pushfstring(L, "%I out of range for %s", i, lmp_ctype_name(t));
  out->i = (int64_t)i;
  return NULL;
}

/* to_elem raising a bad argument (fname NULL: a regular argument at stack
 * position idx). */
static lmp_scalar_t check_elem(lua_State *L, int idx, lmp_ctype_t t, const char *fname, int argno)
{
  lmp_scalar_t v;
  const char *err = to_elem(L, idx, t, &v);
  if (err)
    badarg(L, idx, fname, argno, err);
  return v;
}

static void push_elem(lua_State *L, lmp_ctype_t t, lmp_scalar_t v)
{
  if (lmp_ctype_is_float(t))
    lua_pushnumber(L, (lua_Number)v.d);
  else if (t == LMP_UINT64 && v.u > (uint64_t)INT64_MAX)
    lua_pushnumber(L, (lua_Number)v.u);
  else
    lua_pushinteger(L, (lua_Integer)v.i);
}

static lmp_scalar_t check_delta(lua_State *L, int idx, lmp_ctype_t t)
{
  lmp_scalar_t d;
  if (lmp_ctype_is_float(t))
    d.d = (double)luaL_checknumber(L, idx);
  else
    d.i = (int64_t)luaL_checkinteger(L, idx);
  return d;
}

/* An integer-valued key of an Array: -1 if it is not a number at all. */
static int index_arg(lua_State *L, int idx, const char *fname, lua_Integer *out)
{
  int isnum;
  *out = lua_tointegerx(L, idx, &isnum);
  if (isnum)
    return 1;
  if (lua_type(L, idx) == LUA_TNUMBER)
    badarg(L, idx, fname, 1, "number has no integer representation");
  return 0;
}

static int range_error(lua_State *L, const char *fname, int argno, lua_Integer i, size_t n)
{
  return luaL_error(L, "bad argument #%d to '%s' (index %I out of range 1..%I)", argno, fname, i,
                    (lua_Integer)n);
}

/* === Value and Array objects === */

static larray *toarray(lua_State *L, int idx)
{
  larray *u = luaL_testudata(L, idx, ARRAY_MT);
  return u ? u : luaL_testudata(L, idx, VALUE_MT);
}

/* What a closed handle still answers: `closed`, and its methods (from
 * __index's upvalue), which raise "attempt to use a closed ..." when called
 * -- close and unlink excepted -- so that pcall(obj.method, obj) catches it;
 * 0 for anything else (a field, which raises). */
int lmpb_closed_index(lua_State *L)
{
  if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "closed") == 0) {
    lua_pushboolean(L, 1);
    return 1;
  }
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
    return 1;
  lua_pop(L, 1);
  return 0;
}

static lmp_array_t *check_open(lua_State *L, int idx, const char *mt)
{
  larray *u = toopen(L, idx, mt);
  if (u != NULL)
    return u->a;
  u = luaL_checkudata(L, idx, mt);
  if (u->a == NULL)
    lmpb_closed(L, mt);
  return u->a;
}

static lmp_array_t *checkvalue(lua_State *L)
{
  return check_open(L, 1, VALUE_MT);
}

static lmp_array_t *checkarray(lua_State *L)
{
  return check_open(L, 1, ARRAY_MT);
}

static int has_lock(lmp_array_t *a)
{
  return lmp_array_lockp(a) != NULL;
}

/* Take the array's lock, if it has one, around a copy; a dead holder's
 * lock is ours all the same. */
static void lock_if_any(lmp_array_t *a)
{
  if (has_lock(a))
    (void)lmp_array_lock(a, LMP_FOREVER);
}

static void unlock_if_any(lmp_array_t *a)
{
  if (has_lock(a))
    (void)lmp_array_unlock(a);
}

/* Value(type [, init]) / Value{type =, value =, lock =} */
static int value_create(lua_State *L, int raw, const char *fname)
{
  static const char *const options[] = {"type", "value", "lock", NULL};
  int lock = !raw, targ = 1, varg = 2, tidx = 1, vidx = 2;
  if (lua_istable(L, 1)) {
    lmpb_checkoptions(L, 1, options);
    lock = opt_lock(L, raw, fname);
    lua_settop(L, 1);
    lua_getfield(L, 1, "type");
    lua_getfield(L, 1, "value");
    targ = varg = 1;
    tidx = 2;
    vidx = 3;
  }
  lmp_ctype_t t = check_ctype_at(L, tidx, targ);
  lmp_scalar_t v = {0};
  if (!lua_isnoneornil(L, vidx)) {
    const char *err = to_elem(L, vidx, t, &v);
    if (err)
      luaL_argerror(L, varg, targ == varg ? lua_pushfstring(L, "field 'value': %s", err) : err);
  }
  larray *u = new_larray(L, VALUE_MT);
  int rc = lmp_array_create(t, 1, (lock ? LMP_ARRAY_LOCK : 0) | LMP_ARRAY_VALUE, &u->a);
  if (lmpb_fds_retry(L, rc))
    rc = lmp_array_create(t, 1, (lock ? LMP_ARRAY_LOCK : 0) | LMP_ARRAY_VALUE, &u->a);
  if (rc < 0)
    return lmpb_rterror(L, fname, rc);
  lmp_array_store(u->a, 0, v);
  return 1;
}

static int value_new(lua_State *L) { return value_create(L, 0, "Value"); }
static int rawvalue_new(lua_State *L) { return value_create(L, 1, "RawValue"); }

/* Array(type, n | {values}) / Array{type =, size = | values =, lock =} */
static int array_create(lua_State *L, int raw, const char *fname)
{
  static const char *const options[] = {"type", "size", "values", "lock", NULL};
  int lock = !raw, targ = 1, narg = 2, tidx = 1, nidx = 2;
  if (lua_istable(L, 1)) {
    lmpb_checkoptions(L, 1, options);
    lock = opt_lock(L, raw, fname);
    lua_settop(L, 1);
    lua_getfield(L, 1, "type");
    lua_getfield(L, 1, "size");
    lua_getfield(L, 1, "values");
    if (lua_isnil(L, 3) == lua_isnil(L, 4))
      luaL_argerror(L, 1, "give one of the fields 'size' and 'values'");
    if (!lua_isnil(L, 4) && !lua_istable(L, 4))
      luaL_argerror(L, 1, "field 'values' must be a table");
    if (!lua_isnil(L, 3) && !lua_isinteger(L, 3))
      luaL_argerror(L, 1, "field 'size' must be an integer");
    targ = narg = 1;
    tidx = 2;
    nidx = lua_isnil(L, 3) ? 4 : 3;
  }
  lmp_ctype_t t = check_ctype_at(L, tidx, targ);
  lua_Integer n;
  int from_table = lua_istable(L, nidx);
  if (from_table) {
    n = (lua_Integer)luaL_len(L, nidx);
  } else {
    int isnum;
    n = lua_tointegerx(L, nidx, &isnum);
    if (!isnum)
      luaL_argerror(L, narg, lua_isnumber(L, nidx)
                                 ? "number has no integer representation"
                                 : lua_pushfstring(L, "number or table expected, got %s",
                                                   luaL_typename(L, nidx)));
    luaL_argcheck(L, n >= 0, narg, "size must not be negative");
  }
  larray *u = new_larray(L, ARRAY_MT);
  int rc = lmp_array_create(t, (size_t)n, lock ? LMP_ARRAY_LOCK : 0, &u->a);
  if (lmpb_fds_retry(L, rc))
    rc = lmp_array_create(t, (size_t)n, lock ? LMP_ARRAY_LOCK : 0, &u->a);
  if (rc < 0)
    return lmpb_rterror(L, fname, rc);
  lmp_array_t *a = u->a;
  for (lua_Integer i = 1; from_table && i <= n; i++) {
    lmp_scalar_t v;
    lua_geti(L, nidx, i);
    const char *err = to_elem(L, -1, t, &v);
    if (err)
      luaL_argerror(L, narg, lua_pushfstring(L, "item %I: %s", i, err));
    lmp_array_store(a, (size_t)(i - 1), v);
    lua_pop(L, 1);
  }
  return 1;
}

static int array_new(lua_State *L) { return array_create(L, 0, "Array"); }
static int rawarray_new(lua_State *L) { return array_create(L, 1, "RawArray"); }

static int obj_close(lua_State *L)
{
  larray *u = toarray(L, 1);
  if (u == NULL)
    return luaL_typeerror(L, 1, "lmp.Array or lmp.Value");
  drop(u);
  return 0;
}

static int push_lock(lua_State *L, lmp_array_t *a);
static int obj_get_lock(lua_State *L);
static const char *kind_name(lmp_array_t *a, int value);

static const char *kind_mt(lua_State *L, int idx)
{
  return luaL_testudata(L, idx, VALUE_MT) ? VALUE_MT : ARRAY_MT;
}

static int obj_get_lock(lua_State *L)
{
  larray *u = toarray(L, 1);
  if (u == NULL)
    return luaL_typeerror(L, 1, "lmp.Array or lmp.Value");
  if (u->a == NULL)
    return lmpb_closed(L, kind_mt(L, 1));
  if (!has_lock(u->a))
    return luaL_error(L, "%s has no lock", kind_name(u->a, luaL_testudata(L, 1, VALUE_MT) != NULL));
  return push_lock(L, u->a);
}

/* Fields and methods common to both; 1 if k was one of them. */
/* A method (from __index's upvalue) or a field common to Value and Array. */
static int common_index(lua_State *L, lmp_array_t *a, const char *k)
{
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) {
    if (lua_tocfunction(L, -1) == obj_get_lock && !has_lock(a))
      lua_pushnil(L); /* the Raw kinds have none, as in Python */
    return 1;
  }
  if (strcmp(k, "type") == 0) {
    lua_pushstring(L, lmp_ctype_name(lmp_array_type(a)));
  } else if (strcmp(k, "typecode") == 0) {
    char c = lmp_ctype_code(lmp_array_type(a));
    lua_pushlstring(L, &c, 1);
  } else {
    lua_pushnil(L);
  }
  return 1;
}

static const char *kind_name(lmp_array_t *a, int value)
{
  if (value)
    return has_lock(a) ? "lmp.Value" : "lmp.RawValue";
  return has_lock(a) || lmp_array_is_view(a) ? "lmp.Array" : "lmp.RawArray";
}

static int obj_tostring(lua_State *L)
{
  larray *u = toarray(L, 1);
  int value = luaL_testudata(L, 1, VALUE_MT) != NULL;
  if (u == NULL || u->a == NULL) {
    lua_pushfstring(L, "%s (closed)", value ? VALUE_MT : ARRAY_MT);
    return 1;
  }
  lmp_array_t *a = u->a;
  if (value)
    lua_pushfstring(L, "%s(%s, %s)", kind_name(a, 1), lmp_ctype_name(lmp_array_type(a)),
                    lmp_seg_name(lmp_array_seg(a)));
  else
    lua_pushfstring(L, "%s(%s, %I, %s)", kind_name(a, 0), lmp_ctype_name(lmp_array_type(a)),
                    (lua_Integer)lmp_array_len(a), lmp_seg_name(lmp_array_seg(a)));
  return 1;
}

/* === Value === */

static int value_index(lua_State *L)
{
  larray *u = toopen(L, 1, VALUE_MT);
  if (u == NULL) {
    u = luaL_checkudata(L, 1, VALUE_MT);
    if (u->a == NULL && lmpb_closed_index(L))
      return 1;
  }
  lmp_array_t *a = u->a ? u->a : checkvalue(L);
  const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
  if (strcmp(k, "value") == 0) {
    push_elem(L, lmp_array_type(a), lmp_array_load(a, 0));
    return 1;
  }
  if (strcmp(k, "closed") == 0) {
    lua_pushboolean(L, 0);
    return 1;
  }
  return common_index(L, a, k);
}

static int value_newindex(lua_State *L)
{
  lmp_array_t *a = checkvalue(L);
  const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
  if (k == NULL || strcmp(k, "value") != 0)
    return badarg(L, 2, "newindex", 1,
                  lua_pushfstring(L, "lmp.Value has no field '%s' to set",
                                  k ? k : luaL_tolstring(L, 2, NULL)));
  lmp_array_store(a, 0, check_elem(L, 3, lmp_array_type(a), "newindex", 2));
  return 0;
}

/* v:add(n) -> the new value */
static int value_add(lua_State *L)
{
  lmp_array_t *a = checkvalue(L);
  lmp_scalar_t d = check_delta(L, 2, lmp_array_type(a));
  push_elem(L, lmp_array_type(a), lmp_array_add(a, 0, d));
  return 1;
}

/* === Array === */

static int array_index(lua_State *L)
{
  larray *u = luaL_checkudata(L, 1, ARRAY_MT);
  if (u->a == NULL && lmpb_closed_index(L))
    return 1;
  lmp_array_t *a = checkarray(L);
  lua_Integer i;
  if (lua_type(L, 2) == LUA_TSTRING) {
    if (strcmp(lua_tostring(L, 2), "closed") == 0) {
      lua_pushboolean(L, 0);
      return 1;
    }
    return common_index(L, a, lua_tostring(L, 2));
  }
  if (!index_arg(L, 2, "index", &i))
    return typeerr(L, 2, "index", 1, "number");
  size_t n = lmp_array_len(a);
  if (i >= 1 && (lua_Unsigned)i <= n) {
    push_elem(L, lmp_array_type(a), lmp_array_load(a, (size_t)(i - 1)));
    return 1;
  }
  if ((lua_Unsigned)i == n + 1) { /* the end of the sequence, for ipairs */
    lua_pushnil(L);
    return 1;
  }
  return range_error(L, "index", 1, i, n);
}

static int array_newindex(lua_State *L)
{
  lmp_array_t *a = checkarray(L);
  lua_Integer i;
  if (!index_arg(L, 2, "newindex", &i)) {
    if (lua_type(L, 2) == LUA_TSTRING)
      return badarg(L, 2, "newindex", 1,
                    lua_pushfstring(L, "lmp.Array has no field '%s' to set", lua_tostring(L, 2)));
    return typeerr(L, 2, "newindex", 1, "number");
  }
  size_t n = lmp_array_len(a);
  if (i < 1 || (lua_Unsigned)i > n)
    return range_error(L, "newindex", 1, i, n);
  lmp_array_store(a, (size_t)(i - 1), check_elem(L, 3, lmp_array_type(a), "newindex", 2));
  return 0;
}

static int array_len(lua_State *L)
{
  lua_pushinteger(L, (lua_Integer)lmp_array_len(checkarray(L)));
  return 1;
}

/* Bounds i..j of totable, Lua style: 1 <= i, j <= #a, empty when i > j. */
static void check_span(lua_State *L, size_t n, lua_Integer *i, lua_Integer *j)
{
  *i = luaL_optinteger(L, 2, 1);
  *j = luaL_optinteger(L, 3, (lua_Integer)n);
  if (*i < 1 || (lua_Unsigned)*i > n + 1)
    luaL_argerror(L, 2, lua_pushfstring(L, "index %I out of range 1..%I", *i, (lua_Integer)n));
  if (*j < 0 || (lua_Unsigned)*j > n)
    luaL_argerror(L, 3, lua_pushfstring(L, "index %I out of range 0..%I", *j, (lua_Integer)n));
}

/* a:totable([i [, j]]) -> {a[i], ..., a[j]}, read under the lock */
static int array_totable(lua_State *L)
{
  lmp_array_t *a = checkarray(L);
  lua_Integer i, j;
  check_span(L, lmp_array_len(a), &i, &j);
  lua_Integer n = j >= i ? j - i + 1 : 0;
  lmp_ctype_t t = lmp_array_type(a);
  /* Sized before the lock is taken: filling it then allocates nothing. */
  lua_createtable(L, (int)(n < INT32_MAX ? n : INT32_MAX), 0);
  lock_if_any(a);
  for (lua_Integer k = 0; k < n; k++) {
    push_elem(L, t, lmp_array_load(a, (size_t)(i - 1 + k)));
    lua_rawseti(L, -2, k + 1);
  }
  unlock_if_any(a);
  return 1;
}

/* a:fill(x): every element, under the lock */
static int array_fill(lua_State *L)
{
  lmp_array_t *a = checkarray(L);
  lmp_scalar_t v = check_elem(L, 2, lmp_array_type(a), NULL, 0);
  size_t n = lmp_array_len(a);
  lock_if_any(a);
  for (size_t k = 0; k < n; k++)
    lmp_array_store(a, k, v);
  unlock_if_any(a);
  return 0;
}

/* a:add(i, n) -> the new a[i], atomically */
static int array_add(lua_State *L)
{
  lmp_array_t *a = checkarray(L);
  lua_Integer i = luaL_checkinteger(L, 2);
  size_t n = lmp_array_len(a);
  if (i < 1 || (lua_Unsigned)i > n)
    luaL_argerror(L, 2, lua_pushfstring(L, "index %I out of range 1..%I", i, (lua_Integer)n));
  lmp_scalar_t d = check_delta(L, 3, lmp_array_type(a));
  push_elem(L, lmp_array_type(a), lmp_array_add(a, (size_t)(i - 1), d));
  return 1;
}

/* === the lock === */

static lmp_lock_t *checklock(lua_State *L)
{
  lmp_array_t *a = check_open(L, 1, LOCK_MT);
  return lmp_array_lockp(a);
}

static int push_lock(lua_State *L, lmp_array_t *a)
{
  larray *u = new_larray(L, LOCK_MT);
  int rc = lmp_array_open(lmp_array_seg(a), &u->a);
  if (rc < 0)
    return lmpb_rterror(L, "get_lock", rc);
  return 1;
}

/* The outcome of an acquire: true, true + "owner_died", or false. */
static int acquired(lua_State *L, int rc, const char *fname)
{
  if (rc == 0 || rc == -EOWNERDEAD) {
    lua_pushboolean(L, 1);
    if (rc == 0)
      return 1;
    lua_pushliteral(L, "owner_died");
    return 2;
  }
  return lmpb_result(L, fname, rc, NULL);
}

/* l:acquire([timeout]) or l:acquire(blocking [, timeout]) as in Python */
static int lock_acquire(lua_State *L)
{
  lmp_lock_t *l = checklock(L);
  int64_t deadline;
  if (lua_isboolean(L, 2)) {
    int blocking = lua_toboolean(L, 2);
    luaL_argcheck(L, blocking || lua_isnoneornil(L, 3), 3,
                  "a timeout makes no sense for a non-blocking acquire");
    deadline = blocking ? lmpb_optdeadline(L, 3) : lmp_deadline(0);
  } else {
    deadline = lmpb_optdeadline(L, 2);
  }
  return acquired(L, lmp_lock_acquire(l, deadline), "acquire");
}

static int lock_release(lua_State *L)
{
  if (lmp_lock_release(checklock(L)) < 0)
    return luaL_error(L, "cannot release un-acquired lock");
  return 0;
}

static int lock_locked(lua_State *L)
{
  lua_pushboolean(L, lmp_lock_locked(checklock(L)));
  return 1;
}

/* l:with(fn, ...) -> fn's results; the lock is released on error too. */
static int lock_with(lua_State *L)
{
  lmp_lock_t *l = checklock(L);
  if (!lua_isfunction(L, 2)) {
    if (luaL_getmetafield(L, 2, "__call") == LUA_TNIL)
      luaL_typeerror(L, 2, "function");
    lua_pop(L, 1);
  }
  int rc = lmp_lock_acquire(l, LMP_FOREVER);
  if (rc < 0 && rc != -EOWNERDEAD)
    return lmpb_rterror(L, "with", rc);
  int base = 1;
  int status = lua_pcall(L, lua_gettop(L) - 2, LUA_MULTRET, 0);
  lmp_lock_release(l);
  if (status != LUA_OK)
    return lua_error(L);
  return lua_gettop(L) - base;
}

/* <close>: give back the hold of the scope, if the caller has one (as a
 * Lock's <close> does); nothing for a closed handle. */
static int lock_close(lua_State *L)
{
  larray *u = luaL_checkudata(L, 1, LOCK_MT);
  if (u->a && lmp_lock_owned(lmp_array_lockp(u->a)))
    lmp_lock_release(lmp_array_lockp(u->a));
  return 0;
}

/* close(), and __gc: drop this handle; again does nothing. */
static int lock_free(lua_State *L)
{
  drop(luaL_checkudata(L, 1, LOCK_MT));
  return 0;
}

static int lock_tostring(lua_State *L)
{
  larray *u = luaL_checkudata(L, 1, LOCK_MT);
  if (u->a == NULL) {
    lua_pushfstring(L, "%s(closed)", LOCK_MT);
    return 1;
  }
  lua_pushfstring(L, "%s(%s, %s)", LOCK_MT, lmp_lock_locked(lmp_array_lockp(u->a)) ? "locked" : "unlocked",
                  lmp_seg_name(lmp_array_seg(u->a)));
  return 1;
}

/* Methods only, found open or closed: calling one on a closed handle raises. */
static int lock_index(lua_State *L)
{
  lua_pushvalue(L, 2);
  if (lua_rawget(L, lua_upvalueindex(1)) == LUA_TNIL)
    check_open(L, 1, LOCK_MT); /* a method is found closed or not: it checks */
  return 1;
}

/* === crossing processes === */

int lmpb_handle_append(lmp_buf_t *out, const void *p, size_t n)
{
  if (lmp_buf_reserve(out, out->len + n) < 0)
    return -ENOMEM;
  memcpy(out->data + out->len, p, n);
  out->len += n;
  return 0;
}

static int array_encode(lua_State *L, int idx, lmp_buf_t *out)
{
  larray *u = lua_touserdata(L, idx);
  if (u->a == NULL)
    return -EBADF;
  lmp_seg_t *seg = lmp_array_seg(u->a);
  const char *name = lmp_seg_name(seg);
  int rc = lmpb_handle_append(out, name, strlen(name));
  if (rc == 0 && lmp_array_is_view(u->a)) {
    char tail[64];
    int n = snprintf(tail, sizeof tail, "%cv:%zu:%zu:%d", 0, lmp_shmem_view_offset(u->a),
                     lmp_array_len(u->a), (int)lmp_array_type(u->a));
    rc = lmpb_handle_append(out, tail, (size_t)n);
  }
  if (rc == 0)
    lmp_seg_pin(seg);
  return rc;
}

/* Attach the segment a handle names (adopting its pin). */
lmp_seg_t *lmpb_handle_attach(lua_State *L, const char *data, size_t len, const char *mt)
{
  char name[LMP_SEG_NAME_MAX];
  lmp_seg_t *seg;
  if (len == 0 || len >= sizeof name || memchr(data, '\0', len))
    luaL_error(L, "corrupt message (bad %s handle)", mt);
  memcpy(name, data, len);
  name[len] = '\0';
  int rc = lmp_seg_attach(name, 1, &seg);
  if (lmpb_fds_retry(L, rc))
    rc = lmp_seg_attach(name, 1, &seg);
  if (rc < 0)
    luaL_error(L, "cannot receive a %s: %s", mt, lmp_strerror(rc));
  return seg;
}

static void decode_array(lua_State *L, const char *data, size_t len, const char *mt)
{
  const char *nul = memchr(data, '\0', len);
  size_t nlen = nul ? (size_t)(nul - data) : len;
  char tail[64];
  unsigned long long off = 0, count = 0;
  int type = -1, used = 0;
  if (nul) {
    size_t tl = len - nlen - 1;
    if (tl >= sizeof tail)
      luaL_error(L, "corrupt message (bad %s handle)", mt);
    memcpy(tail, nul + 1, tl);
    tail[tl] = '\0';
    if (sscanf(tail, "v:%llu:%llu:%d%n", &off, &count, &type, &used) != 3 ||
        (size_t)used != tl || type < 0 || type >= LMP_CTYPE_COUNT)
      luaL_error(L, "corrupt message (bad %s handle)", mt);
  }
  larray *u = new_larray(L, mt);
  lmp_seg_t *seg = lmpb_handle_attach(L, data, nlen, mt);
  lmp_array_t *a = NULL;
  int rc;
  if (nul) {
    lmp_shmem_t *m;
    rc = lmp_shmem_open(seg, &m);
    if (rc == 0) {
      rc = lmp_shmem_view(m, (size_t)off, (lmp_ctype_t)type, (size_t)count, &a);
      lmp_shmem_free(m);
    }
  } else {
    rc = lmp_array_open(seg, &a);
    if (rc == 0) {
      int value = (lmp_array_flags(a) & LMP_ARRAY_VALUE) != 0;
      int ok = strcmp(mt, LOCK_MT) == 0 ? has_lock(a) : value == (strcmp(mt, VALUE_MT) == 0);
      if (!ok) {
        lmp_array_free(a);
        rc = -EINVAL;
      }
    }
  }
  lmp_seg_release(seg);
  if (rc < 0)
    luaL_error(L, "cannot receive a %s: %s", mt, lmp_strerror(rc));
  u->a = a;
}

static void value_decode(lua_State *L, const char *d, size_t n) { decode_array(L, d, n, VALUE_MT); }
static void array_decode(lua_State *L, const char *d, size_t n) { decode_array(L, d, n, ARRAY_MT); }
static void lock_decode(lua_State *L, const char *d, size_t n) { decode_array(L, d, n, LOCK_MT); }

/* For an lmp.Condition built on a ValueLock (lsyncobj.c). */
lmp_lock_t *lmpb_valuelock(lua_State *L, int idx)
{
  larray *u = luaL_testudata(L, idx, LOCK_MT);
  if (u == NULL)
    return NULL;
  if (u->a == NULL)
    lmpb_closed(L, LOCK_MT);
  return lmp_array_lockp(u->a);
}

int lmpb_valuelock_encode(lua_State *L, int idx, lmp_buf_t *out)
{
  return array_encode(L, idx, out);
}

void lmpb_valuelock_decode(lua_State *L, const char *data, size_t len)
{
  lock_decode(L, data, len);
}

/* === registration === */

static const luaL_Reg value_methods[] = {
  {"add", value_add},
  {"get_lock", obj_get_lock},
  {"close", obj_close},
  {NULL, NULL},
};

static const luaL_Reg array_methods[] = {
  {"get_lock", obj_get_lock},
  {"totable", array_totable},
  {"fill", array_fill},
  {"add", array_add},
  {"close", obj_close},
  {NULL, NULL},
};

static const luaL_Reg lock_methods[] = {
  {"acquire", lock_acquire},
  {"release", lock_release},
  {"locked", lock_locked},
  {"with", lock_with},
  {"close", lock_free},
  {NULL, NULL},
};

/* The metatable, with the methods table in its field "methods" and as the
 * upvalue of its __index (one table lookup finds a method). */
void lmpb_newclass(lua_State *L, const char *mt, const luaL_Reg *meta, const luaL_Reg *methods)
{
  luaL_newmetatable(L, mt);
  luaL_setfuncs(L, meta, 0);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_pushvalue(L, -1);
  lua_setfield(L, -3, "methods");
  lua_getfield(L, -2, "__index");
  lua_CFunction index = lua_tocfunction(L, -1);
  lua_pop(L, 1);
  lua_pushcclosure(L, index, 1);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
}

int lmpb_array_open(lua_State *L)
{
  static const luaL_Reg value_meta[] = {
    {"__index", value_index}, {"__newindex", value_newindex}, {"__gc", obj_close},
    {"__close", obj_close},   {"__tostring", obj_tostring},   {NULL, NULL},
  };
  static const luaL_Reg array_meta[] = {
    {"__index", array_index}, {"__newindex", array_newindex}, {"__len", array_len},
    {"__gc", obj_close},      {"__close", obj_close},         {"__tostring", obj_tostring},
    {NULL, NULL},
  };
  static const luaL_Reg lock_meta[] = {
    {"__index", lock_index},       {"__gc", lock_free}, {"__close", lock_close},
    {"__tostring", lock_tostring}, {NULL, NULL},
  };
  static const lmpb_handle_type handles[] = {
    {VALUE_MT, array_encode, value_decode},
    {ARRAY_MT, array_encode, array_decode},
    {LOCK_MT, array_encode, lock_decode},
  };
  static const luaL_Reg ctors[] = {
    {"Value", value_new},
    {"RawValue", rawvalue_new},
    {"Array", array_new},
    {"RawArray", rawarray_new},
    {NULL, NULL},
  };
  lmpb_tag_init();
  lmpb_newclass(L, VALUE_MT, value_meta, value_methods);
  lmpb_newclass(L, ARRAY_MT, array_meta, array_methods);
  lmpb_newclass(L, LOCK_MT, lock_meta, lock_methods);
  for (size_t i = 0; i < sizeof handles / sizeof handles[0]; i++)
    lmpb_register_handle(L, &handles[i]);
  luaL_setfuncs(L, ctors, 0);
  return 0;
}

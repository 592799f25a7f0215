/*
 * lshmem.c -- lmp.SharedMemory: raw blocks of bytes that any process of the
 * program attaches, by the block's segment name or a name the user chose
 * (runtime/shmem.c keeps those names, scoped to the program).
 *
 * m:read and m:write copy bytes at 1-based offsets; m:array(type) is a
 * typed view of the block, an lmp.Array without a lock (larray.c).  close()
 * drops this handle, as garbage collection does; unlink() takes the names
 * away, after close too, as Python's shm.close(); shm.unlink() allows.
 *
 * Handles.  A block crosses as its segment name.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "lmp/shmem.h"
#include "codec.h"
#include "lmpaux.h"
#include "lmpb.h"

#define SHMEM_MT "lmp.SharedMemory"

typedef struct lshmem {
  lmp_shmem_t *m;             /* NULL once closed */
  char seg[LMP_SEG_NAME_MAX]; /* its segment name once closed, for unlink */
} lshmem;

/* === the block === */

static lmp_shmem_t *checkshmem(lua_State *L)
{
  lshmem *u = luaL_checkudata(L, 1, SHMEM_MT);
  if (u->m == NULL)
    lmpb_closed(L, SHMEM_MT);
  return u->m;
}

static lshmem *new_lshmem(lua_State *L)
{
  lshmem *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->m = NULL;
  u->seg[0] = '\0';
  luaL_setmetatable(L, SHMEM_MT);
  return u;
}

static int shmem_attach(lua_State *L, const char *name)
{
  lshmem *u = new_lshmem(L);
  int rc = lmp_shmem_attach(name, &u->m);
  if (lmpb_fds_retry(L, rc))
    rc = lmp_shmem_attach(name, &u->m);
  if (rc == -ENOENT)
    return lmpb_fail(L, "not found");
  if (rc == -EINVAL)
    return luaL_argerror(L, 1, lua_pushfstring(L, "'%s' is not a SharedMemory block", name));
  if (rc < 0)
    return lmpb_rterror(L, "SharedMemory", rc);
  return 1;
}

static int shmem_create(lua_State *L, lua_Integer size, const char *name)
{
  luaL_argcheck(L, size > 0, 1, "size must be positive");
  lshmem *u = new_lshmem(L);
  int rc = lmp_shmem_create((size_t)size, name, &u->m);
  if (lmpb_fds_retry(L, rc))
    rc = lmp_shmem_create((size_t)size, name, &u->m);
  if (rc == -EEXIST)
    return lmpb_fail(L, "exists");
  if (rc == -EINVAL)
    return luaL_argerror(L, 1, "name must be 1 to 47 bytes, not starting with '/'");
  if (rc == -EDQUOT)
    return luaL_error(L, "SharedMemory: too many named blocks (%d)", LMP_SHMEM_DIR_MAX);
  if (rc < 0)
    return lmpb_rterror(L, "SharedMemory", rc);
  return 1;
}

/* SharedMemory{size = n [, name =]} creates, SharedMemory(name) and
 * SharedMemory{name =} attach, SharedMemory(n) creates an unnamed block. */
static int shmem_new(lua_State *L)
{
  static const char *const options[] = {"size", "name", NULL};
  if (lua_type(L, 1) == LUA_TSTRING)
    return shmem_attach(L, lmpb_checkcstring(L, 1, 1, "name"));
  if (lua_type(L, 1) == LUA_TNUMBER)
    return shmem_create(L, luaL_checkinteger(L, 1), NULL);
  if (!lua_istable(L, 1))
    return luaL_typeerror(L, 1, "table, string or number");
  lmpb_checkoptions(L, 1, options);
  lua_getfield(L, 1, "size");
  lua_getfield(L, 1, "name");
  if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
    luaL_argerror(L, 1, "field 'name' must be a string");
  const char *name = lmpb_checkcstring(L, -1, 1, "field 'name'");
  if (lua_isnil(L, -2)) {
    if (name == NULL)
      return luaL_argerror(L, 1, "give a size to create, or a name to attach");
    return shmem_attach(L, name);
  }
  if (!lua_isinteger(L, -2))
    luaL_argerror(L, 1, "field 'size' must be an integer");
  return shmem_create(L, lua_tointeger(L, -2), name);
}

/* A 1-based offset of a block of `size` bytes: 1..size+1. */
static size_t check_offset(lua_State *L, int arg, size_t size)
{
  lua_Integer o = luaL_optinteger(L, arg, 1);
  if (o < 1 || (lua_Unsigned)o > size + 1)
    luaL_argerror(L, arg,
                  lua_pushfstring(L, "offset %I out of range 1..%I", o, (lua_Integer)size + 1));
  return (size_t)(o - 1);
}

/* m:read([offset [, len]]) -> string */
static int shmem_read(lua_State *L)
{
  lmp_shmem_t *m = checkshmem(L);
  size_t size = lmp_shmem_size(m), off = check_offset(L, 2, size);
  lua_Integer len = luaL_optinteger(L, 3, (lua_Integer)(size - off));
  if (len < 0 || (lua_Unsigned)len > size - off)
    luaL_argerror(L, 3,
                  lua_pushfstring(L, "length %I past the end (%I bytes from offset %I)", len,
                                  (lua_Integer)(size - off), (lua_Integer)off + 1));
  lua_pushlstring(L, (const char *)lmp_shmem_data(m) + off, (size_t)len);
  return 1;
}

/* m:write(offset, s) */
static int shmem_write(lua_State *L)
{
  lmp_shmem_t *m = checkshmem(L);
  size_t size = lmp_shmem_size(m), len;
  luaL_checkinteger(L, 2);
  size_t off = check_offset(L, 2, size);
  const char *s = luaL_checklstring(L, 3, &len);
  if (len > size - off)
    luaL_argerror(L, 3,
                  lua_pushfstring(L, "%I bytes at offset %I do not fit in %I", (lua_Integer)len,
                                  (lua_Integer)off + 1, (lua_Integer)size));
  memcpy((char *)lmp_shmem_data(m) + off, s, len);
  return 0;
}

/* m:array(type [, offset [, count]]) -> an lmp.Array over the block */
static int shmem_array(lua_State *L)
{
  lmp_shmem_t *m = checkshmem(L);
  lmp_ctype_t t = lmpb_checkctype(L, 2);
  size_t size = lmp_shmem_size(m), esize = lmp_ctype_size(t);
  size_t off = check_offset(L, 3, size);
  if (off % esize != 0)
    luaL_argerror(L, 3,
                  lua_pushfstring(L, "offset %I is not aligned for %s (1 + a multiple of %I)",
                                  (lua_Integer)off + 1, lmp_ctype_name(t), (lua_Integer)esize));
  lua_Integer count = luaL_optinteger(L, 4, (lua_Integer)((size - off) / esize));
  if (count < 0 || (lua_Unsigned)count > (size - off) / esize)
    luaL_argerror(L, 4,
                  lua_pushfstring(L, "%I elements of %s at offset %I do not fit in %I bytes", count,
                                  lmp_ctype_name(t), (lua_Integer)off + 1, (lua_Integer)size));
  int rc = lmp_shmem_view(m, off, t, (size_t)count, lmpb_newarray(L));
  if (rc < 0)
    return lmpb_rterror(L, "array", rc);
  return 1;
}

static int shmem_close(lua_State *L)
{
  lshmem *u = luaL_checkudata(L, 1, SHMEM_MT);
  if (u->m == NULL)
    return 0;
  snprintf(u->seg, sizeof u->seg, "%s", lmp_seg_name(lmp_shmem_seg(u->m)));
  lmp_shmem_free(u->m);
  u->m = NULL;
  return 0;
}

/* m:unlink() -> true, or nil, "not found" if it was already.  After close
 * too, as Python's shm.close(); shm.unlink(): the block is attached again by
 * its segment name, unless it went with its last handle. */
static int shmem_unlink(lua_State *L)
{
  lshmem *u = luaL_checkudata(L, 1, SHMEM_MT);
  lmp_shmem_t *m = u->m;
  int rc = m != NULL ? 0 : u->seg[0] != '\0' ? lmp_shmem_attach(u->seg, &m) : -ENOENT;
  if (rc == 0)
    rc = lmp_shmem_unlink(m);
  if (m != u->m)
    lmp_shmem_free(m);
  if (rc == -ENOENT)
    return lmpb_fail(L, "not found");
  if (rc < 0)
    return lmpb_rterror(L, "unlink", rc);
  lua_pushboolean(L, 1);
  return 1;
}

static int shmem_index(lua_State *L)
{
  lshmem *u = luaL_checkudata(L, 1, SHMEM_MT);
  const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
  if (u->m == NULL && lmpb_closed_index(L))
    return 1;
  lmp_shmem_t *m = checkshmem(L);
  if (strcmp(k, "closed") == 0) {
    lua_pushboolean(L, 0);
  } else if (strcmp(k, "name") == 0) {
    lua_pushstring(L, lmp_shmem_name(m));
  } else if (strcmp(k, "size") == 0) {
    lua_pushinteger(L, (lua_Integer)lmp_shmem_size(m));
  } else {
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
  }
  return 1;
}

static int shmem_tostring(lua_State *L)
{
  lshmem *u = luaL_checkudata(L, 1, SHMEM_MT);
  if (u->m == NULL)
    lua_pushfstring(L, "%s (closed)", SHMEM_MT);
  else
    lua_pushfstring(L, "%s(%s, %I)", SHMEM_MT, lmp_shmem_name(u->m),
                    (lua_Integer)lmp_shmem_size(u->m));
  return 1;
}

/* === crossing processes === */

static int shmem_encode(lua_State *L, int idx, lmp_buf_t *out)
{
  lshmem *u = lua_touserdata(L, idx);
  if (u->m == NULL)
    return -EBADF;
  lmp_seg_t *seg = lmp_shmem_seg(u->m);
  const char *name = lmp_seg_name(seg);
  int rc = lmpb_handle_append(out, name, strlen(name));
  if (rc == 0)
    lmp_seg_pin(seg);
  return rc;
}

static void shmem_decode(lua_State *L, const char *data, size_t len)
{
  lshmem *u = new_lshmem(L);
  lmp_seg_t *seg = lmpb_handle_attach(L, data, len, SHMEM_MT);
  int rc = lmp_shmem_open(seg, &u->m);
  lmp_seg_release(seg);
  if (rc < 0)
    luaL_error(L, "cannot receive a %s: %s", SHMEM_MT, lmp_strerror(rc));
}

/* === registration === */

static const luaL_Reg shmem_methods[] = {
    {"read", shmem_read},   {"write", shmem_write},   {"array", shmem_array},
    {"close", shmem_close}, {"unlink", shmem_unlink}, {NULL, NULL},
};

int lmpb_shmem_open(lua_State *L)
{
  static const luaL_Reg shmem_meta[] = {
      {"__index", shmem_index},       {"__gc", shmem_close}, {"__close", shmem_close},
      {"__tostring", shmem_tostring}, {NULL, NULL},
  };
  static const lmpb_handle_type handle = {SHMEM_MT, shmem_encode, shmem_decode};
  lmpb_newclass(L, SHMEM_MT, shmem_meta, shmem_methods);
  lmpb_register_handle(L, &handle);
  lua_pushcfunction(L, shmem_new);
  lua_setfield(L, -2, "SharedMemory");
  return 0;
}

/*
 * ldict.c -- lmp.Dict, lmp.List, lmp.Namespace and lmp.Manager.
 *
 * The containers live in shared memory (runtime/dict.c), not in a server
 * process: every process that holds one reads and writes it directly under
 * its robust lock.  Keys and values are stored serialized, so what comes out
 * is a copy; lmp handles inside values stay handles.
 *
 * Keys are strings, numbers and booleans, encoded canonically by a tag byte
 * and the bytes of the value, so that 1 and 1.0 are the same key as in a Lua
 * table.  Values are a flag byte followed by the codec's msgpack: the flag
 * says whether the value holds handles.
 *
 * Handles inside values.  Sending a handle pins its segment until the
 * receiver adopts the pin (lmp/segment.h).  A value in a container is a message that
 * is never consumed, or consumed many times, so the container keeps the pins
 * of the values it stores: each read pins the handles again before the codec
 * adopts them (under the lock, so a concurrent delete cannot free them in
 * between), a value replaced or deleted gives its pins back, and the last
 * holder of a container gives back those of every value left.  Giving back
 * the last reference to a container or a queue goes through that object, so
 * that its own last-holder cleanup runs too (the values it holds, a grown
 * store or ring); containers that hold each other keep each other until the
 * program ends.  A handle's
 * identity is its segment name, or several NUL-separated parts of which
 * those beginning with "/lmp." are segment names (a Condition carries its
 * lock's); the walker below finds them in the msgpack of a value.  A Pipe
 * end stored in a Dict can be taken out once, as a sent one can.
 *
 * Atomicity.  Each method is one critical section: d:incr, d:setdefault,
 * d:pop, d:update and L:extend are atomic as a whole; pairs(d), d:items()
 * and friends copy a consistent snapshot under the lock and decode it after.
 * Nothing that can raise runs with the lock held: values are encoded before
 * the lock is taken and decoded after it is released.
 *
 * Indexing follows lmp.Array: L[i] is 1-based, L[#L + 1] reads as nil (so
 * ipairs works), other positions outside 1..#L are bad arguments.  On a Dict,
 * method names win over keys for d.name; d:get(name) reads such a key.  A
 * Namespace has one method, close; every other field is data (ns.x = 1).
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lmp/dict.h"
#include "lmp/queue.h"
#include "codec.h"
#include "codec/plain.h"
#include "lmp/runtime.h"
#include "lmpaux.h"
#include "lmpb.h"

#define DICT_MT "lmp.Dict"
#define LIST_MT "lmp.List"
#define NS_MT "lmp.Namespace"
#define SCRATCH_MT "lmp.dict.scratch"

enum { DICT, LIST, NS };
static const char *const mtnames[] = {DICT_MT, LIST_MT, NS_MT};

enum { PLAIN = 0, HANDLES = 1 }; /* the flag byte of a stored value */

/* Buffers for one operation: key, values to store, bytes read out. */
typedef struct bufs {
  lmp_buf_t k, v, o;
} bufs;

typedef struct ldict {
  void *c; /* lmp_dict_t or lmp_list_t; NULL once closed */
  int kind;
  int busy; /* own buffers in use (a finalizer may call in mid-operation) */
  bufs b;
} ldict;

/* === buffers === */

static int scratch_gc(lua_State *L)
{
  bufs *b = luaL_checkudata(L, 1, SCRATCH_MT);
  lmp_buf_free(&b->k);
  lmp_buf_free(&b->v);
  lmp_buf_free(&b->o);
  return 0;
}

/* The handle's buffers, or fresh ones when they are busy (a finalizer that
 * calls in during a decode).  Whatever can raise an argument or serialize
 * error happens before they are taken; what raises after gives them back. */
static bufs *fresh(lua_State *L);

static bufs *take(lua_State *L, ldict *d)
{
  bufs *b = &d->b;
  if (d->busy)
    return fresh(L);
  d->busy = 1;
  b->k.len = b->v.len = b->o.len = 0;
  return b;
}

/* Buffers of their own, owned by a userdata left on the stack, for batches
 * (whose encoding may raise at any item). */
static bufs *fresh(lua_State *L)
{
  bufs *b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  luaL_setmetatable(L, SCRATCH_MT);
  return b;
}

static void give(ldict *d, bufs *b)
{
  if (b == &d->b)
    d->busy = 0;
}

static int append(lmp_buf_t *b, const void *p, size_t n)
{
  if (lmp_buf_reserve(b, b->len + n) < 0)
    return -ENOMEM;
  if (n)
    memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

/* A record of a batch: u32 length, then the bytes. */
static int append_rec(lmp_buf_t *b, const void *p, size_t n)
{
  uint32_t len = (uint32_t)n;
  if (n > UINT32_MAX)
    return -EFBIG;
  int rc = append(b, &len, sizeof len);
  return rc < 0 ? rc : append(b, p, n);
}

static const char *next_rec(const lmp_buf_t *b, size_t *pos, size_t *len)
{
  uint32_t n;
  *len = 0;
  if (*pos >= b->len)
    return NULL;
  memcpy(&n, b->data + *pos, sizeof n);
  const char *p = b->data + *pos + sizeof n;
  *pos += sizeof n + n;
  *len = n;
  return p;
}

/* === handles inside values === */

typedef lmpb_name_fn name_fn;

static void pin_name(const char *name)
{
  lmp_seg_t *s;
  if (lmp_seg_attach(name, 0, &s) == 0) {
    lmp_seg_pin(s);
    lmp_seg_release(s);
  }
}

static void visit_unpin(void *ctx, const void *val, size_t len);
static void unread_unpin(void *ctx, const void *msg, size_t len);

/* Give back a pin.  If that lets go of the last reference to a container
 * or a queue, its own last-holder cleanup must run (what its values hold,
 * a grown store or ring), so the segment is let go of through the object
 * it holds. */
static void unpin_name(const char *name)
{
  lmp_seg_t *s;
  lmp_dict_t *d;
  lmp_list_t *l;
  lmp_queue_t *q;
  if (lmp_seg_attach(name, 1, &s) < 0)
    return;
  if (lmp_dict_open(s, &d) == 0) {
    lmp_seg_release(s);
    lmp_dict_free(d, visit_unpin, NULL);
  } else if (lmp_list_open(s, &l) == 0) {
    lmp_seg_release(s);
    lmp_list_free(l, visit_unpin, NULL);
  } else if (lmp_queue_open(s, &q) == 0) {
    lmp_seg_release(s);
    lmp_queue_free_unread(q, unread_unpin, NULL);
  } else {
    lmp_seg_release(s);
  }
}

/* Apply fn to the handles of a stored value (flag byte first). */
static void stored_handles(const void *val, size_t len, name_fn fn)
{
  const unsigned char *p = val;
  if (len > 1 && p[0] == HANDLES) {
    p++;
    (void)lmpb_handle_names(p, len - 1, fn);
  }
}

static void visit_unpin(void *ctx, const void *val, size_t len)
{
  (void)ctx;
  stored_handles(val, len, unpin_name);
}

/* A queue's message nobody will read gives back its pins. */
static void unread_unpin(void *ctx, const void *msg, size_t len)
{
  (void)ctx;
  (void)lmpb_handle_names(msg, len, unpin_name);
}

/* Every stored value in a batch of records gives back its pins. */
static void unpin_batch(const lmp_buf_t *b, size_t from)
{
  size_t pos = from, n;
  const char *p;
  while ((p = next_rec(b, &pos, &n)) != NULL)
    stored_handles(p, n, unpin_name);
}

/* === keys and values === */

/* What is wrong with the key at idx (pushed), or NULL.  Checked before a
 * buffer is taken, so that the error does not leave it busy. */
static const char *key_problem(lua_State *L, int idx)
{
  switch (lua_type(L, idx)) {
  case LUA_TSTRING:
  case LUA_TBOOLEAN:
    return NULL;
  case LUA_TNUMBER:
    return isnan((double)lua_tonumber(L, idx)) ? "key is NaN" : NULL;
  default:
    return lua_pushfstring(L, "key must be a string, number or boolean, got %s",
                           luaL_typename(L, idx));
  }
}

/* Append the (checked) key at idx: a tag byte and its bytes.  0 or
 * -ENOMEM. */
static int key_bytes(lua_State *L, int idx, lmp_buf_t *b)
{
  union {
    lua_Integer i;
    double d;
    char c;
  } u;
  const void *p = &u;
  size_t n;
  char tag;
  switch (lua_type(L, idx)) {
  case LUA_TSTRING:
    tag = 's';
    p = lua_tolstring(L, idx, &n);
    break;
  case LUA_TNUMBER: {
    /* A float with an exact integer value (2.0, -0.0) is that integer key,
     * as in a Lua table; 2.5 stays a float key. */
    int exact;
    u.i = lua_tointegerx(L, idx, &exact);
    if (!exact) {
      u.d = (double)lua_tonumber(L, idx);
      tag = 'f';
      n = sizeof u.d;
      break;
    }
    tag = 'i';
    n = sizeof u.i;
    break;
  }
  default:
    tag = 'b';
    u.c = (char)lua_toboolean(L, idx);
    n = 1;
    break;
  }
  if (append(b, &tag, 1) < 0 || append(b, p, n) < 0)
    return -ENOMEM;
  return 0;
}

static void push_key(lua_State *L, const char *k, size_t n)
{
  lua_Integer i;
  double d;
  switch (n > 0 ? k[0] : 0) {
  case 's':
    lua_pushlstring(L, k + 1, n - 1);
    return;
  case 'i':
    if (n == 1 + sizeof i) {
      memcpy(&i, k + 1, sizeof i);
      lua_pushinteger(L, i);
      return;
    }
    break;
  case 'f':
    if (n == 1 + sizeof d) {
      memcpy(&d, k + 1, sizeof d);
      lua_pushnumber(L, (lua_Number)d);
      return;
    }
    break;
  case 'b':
    if (n == 2) {
      lua_pushboolean(L, k[1]);
      return;
    }
    break;
  }
  luaL_error(L, "corrupt key in a shared container");
}

/* A key argument of a method (numbered by Lua) or of a metamethod (#1 of
 * fname). */
static void check_key(lua_State *L, int idx, const char *fname)
{
  const char *err = key_problem(L, idx);
  if (err && fname)
    luaL_error(L, "bad argument #1 to '%s' (%s)", fname, err);
  if (err)
    luaL_argerror(L, idx, err);
}

/* The value at idx, encoded by the codec (its buffer, valid until the next
 * encode); *handles tells whether it holds any. */
static const lmp_buf_t *encode_value(lua_State *L, int idx, int *handles)
{
  const lmp_buf_t *m = lmpb_encode(L, idx, "value");
  const unsigned char *p = (const unsigned char *)m->data;
  *handles = lmpb_handle_names(p, m->len, NULL) > 0;
  return m;
}

/* Append an encoded value to buf as a stored value record (flag byte, then
 * the bytes).  0, or -ENOMEM after giving back the pins its encoding took. */
static int put_value(lmp_buf_t *buf, const lmp_buf_t *m, int handles)
{
  unsigned char flag = handles ? HANDLES : PLAIN;
  uint32_t len = (uint32_t)(m->len + 1);
  if (m->len < UINT32_MAX && append(buf, &len, sizeof len) == 0 && append(buf, &flag, 1) == 0 &&
      append(buf, m->data, m->len) == 0)
    return 0;
  if (handles) {
    (void)lmpb_handle_names(m->data, m->len, unpin_name);
  }
  return -ENOMEM;
}

/* Encode the value at idx into a batch buffer that no error can leave busy
 * (a fresh one). */
static void batch_value(lua_State *L, int idx, bufs *b)
{
  int handles;
  const lmp_buf_t *m = encode_value(L, idx, &handles);
  if (put_value(&b->v, m, handles) < 0)
    luaL_error(L, "out of memory");
}

static void batch_key(lua_State *L, int idx, bufs *b)
{
  size_t at = b->k.len;
  if (key_bytes(L, idx, &b->k) < 0 || append_rec(&b->v, b->k.data + at, b->k.len - at) < 0)
    luaL_error(L, "out of memory");
}

static void push_value(lua_State *L, const char *p, size_t n)
{
  if (n < 1)
    luaL_error(L, "corrupt value in a shared container");
  lmpb_decode(L, p + 1, n - 1, 1);
}

/* Copy a value read under the lock into b as a record, pinning its handles
 * for the decode to adopt.  0 or -ENOMEM. */
static int copy_out(lmp_buf_t *b, const void *val, size_t len)
{
  int rc = append_rec(b, val, len);
  if (rc == 0)
    stored_handles(val, len, pin_name);
  return rc;
}

/* === objects === */

static ldict *newdict(lua_State *L, int kind)
{
  ldict *d = lua_newuserdatauv(L, sizeof *d, 0);
  memset(d, 0, sizeof *d);
  d->kind = kind;
  luaL_setmetatable(L, mtnames[kind]);
  return d;
}

static int obj_close(lua_State *L);

/* What a closed handle still answers to: closed, close (again) and the
 * other methods, which raise "attempt to use a closed ..." when called, so
 * that pcall(d.method, d) catches it; 0 for any other key (data, which
 * raises). */
static int closed_index(lua_State *L, ldict *d)
{
  const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
  if (d->kind != NS && strcmp(k, "closed") == 0) {
    lua_pushboolean(L, d->c == NULL);
    return 1;
  }
  if (d->c == NULL && strcmp(k, "close") == 0) {
    lua_pushcfunction(L, obj_close);
    return 1;
  }
  if (d->c == NULL && d->kind != NS && lua_type(L, 2) == LUA_TSTRING) {
    luaL_getmetatable(L, mtnames[d->kind]);
    lua_getfield(L, -1, "methods");
    lua_pushvalue(L, 2);
    if (lua_rawget(L, -2) != LUA_TNIL)
      return 1;
    lua_settop(L, 2);
  }
  return 0;
}

static ldict *checkkind(lua_State *L, int idx, int kind)
{
  ldict *d = luaL_checkudata(L, idx, mtnames[kind]);
  if (d->c == NULL)
    lmpb_closed(L, mtnames[kind]);
  return d;
}

/* A Dict or a Namespace (the same thing behind other manners). */
static ldict *checkmap(lua_State *L, int idx)
{
  ldict *d = luaL_testudata(L, idx, DICT_MT);
  if (d == NULL)
    d = luaL_testudata(L, idx, NS_MT);
  if (d == NULL)
    luaL_typeerror(L, idx, DICT_MT);
  if (d->c == NULL)
    lmpb_closed(L, mtnames[d->kind]);
  return d;
}

static lmp_dict_t *D(ldict *d)
{
  return d->c;
}

static lmp_list_t *Li(ldict *d)
{
  return d->c;
}

static void lock_dict(lua_State *L, ldict *d, bufs *b)
{
  int rc = lmp_dict_lock(D(d));
  if (rc < 0) {
    give(d, b);
    lmpb_rterror(L, mtnames[d->kind], rc);
  }
}

static void lock_list(lua_State *L, ldict *d, bufs *b)
{
  int rc = lmp_list_lock(Li(d));
  if (rc < 0) {
    give(d, b);
    lmpb_rterror(L, LIST_MT, rc);
  }
}

/* Raise for a runtime error met under the lock, after giving the buffers
 * back. */
static int fail(lua_State *L, ldict *d, bufs *b, const char *what, int rc)
{
  give(d, b);
  return lmpb_rterror(L, what, rc);
}

static int obj_close(lua_State *L)
{
  /* close is also reachable as d.close(x): x must be one of ours. */
  ldict *d = luaL_testudata(L, 1, DICT_MT);
  if (d == NULL)
    d = luaL_testudata(L, 1, LIST_MT);
  if (d == NULL)
    d = luaL_testudata(L, 1, NS_MT);
  if (d == NULL)
    return luaL_typeerror(L, 1, "lmp.Dict, lmp.List or lmp.Namespace");
  if (d->c) {
    if (d->kind == LIST)
      lmp_list_free(d->c, visit_unpin, NULL);
    else
      lmp_dict_free(d->c, visit_unpin, NULL);
  }
  d->c = NULL;
  lmp_buf_free(&d->b.k);
  lmp_buf_free(&d->b.v);
  lmp_buf_free(&d->b.o);
  return 0;
}

static lmp_seg_t *obj_seg(ldict *d)
{
  return d->kind == LIST ? lmp_list_seg(d->c) : lmp_dict_seg(d->c);
}

static int obj_tostring(lua_State *L)
{
  ldict *d = lua_touserdata(L, 1);
  if (d->c == NULL)
    lua_pushfstring(L, "%s (closed)", mtnames[d->kind]);
  else
    lua_pushfstring(L, "%s(%s)", mtnames[d->kind], lmp_seg_name(obj_seg(d)));
  return 1;
}

/* The (checked) key at idx into b->k of taken buffers. */
static void put_key(lua_State *L, ldict *d, bufs *b, int idx)
{
  if (key_bytes(L, idx, &b->k) < 0) {
    give(d, b);
    luaL_error(L, "out of memory");
  }
}

/* === Dict: reading === */

/* Look up the key in b->k and copy its value into b->o; 1 if found. */
static int dict_read(lua_State *L, ldict *d, bufs *b)
{
  const void *v;
  size_t n;
  lock_dict(L, d, b);
  int found = lmp_dict_find(D(d), b->k.data, b->k.len, &v, &n) == 0;
  int rc = found ? copy_out(&b->o, v, n) : 0;
  lmp_dict_unlock(D(d));
  if (rc < 0)
    fail(L, d, b, "get", rc);
  return found;
}

static int push_read(lua_State *L, ldict *d, bufs *b, int found, int dflt)
{
  size_t pos = 0, n;
  if (found) {
    const char *p = next_rec(&b->o, &pos, &n);
    push_value(L, p, n);
  } else if (dflt) {
    lua_pushvalue(L, dflt);
  } else {
    lua_pushnil(L);
  }
  give(d, b);
  return 1;
}

/* d:get(k [, default]) */
static int dict_get(lua_State *L)
{
  ldict *d = checkmap(L, 1);
  luaL_checkany(L, 2);
  lua_settop(L, 3);
  check_key(L, 2, NULL);
  bufs *b = take(L, d);
  put_key(L, d, b, 2);
  return push_read(L, d, b, dict_read(L, d, b), 3);
}

/* d:pop(k [, default]): the value, removed; its pins go to the decode. */
static int dict_pop(lua_State *L)
{
  ldict *d = checkmap(L, 1);
  const void *v;
  size_t n;
  luaL_checkany(L, 2);
  lua_settop(L, 3);
  check_key(L, 2, NULL);
  bufs *b = take(L, d);
  put_key(L, d, b, 2);
  lock_dict(L, d, b);
  int found = lmp_dict_find(D(d), b->k.data, b->k.len, &v, &n) == 0;
  int rc = found ? append_rec(&b->o, v, n) : 0;
  if (found && rc == 0)
    lmp_dict_del(D(d), b->k.data, b->k.len);
  lmp_dict_unlock(D(d));
  if (rc < 0)
    return fail(L, d, b, "pop", rc);
  return push_read(L, d, b, found, 3);
}

static int dict_len(lua_State *L)
{
  ldict *d = checkmap(L, 1);
  int rc = lmp_dict_lock(D(d));
  if (rc < 0)
    return lmpb_rterror(L, "len", rc);
  lua_Integer n = (lua_Integer)lmp_dict_len(D(d));
  lmp_dict_unlock(D(d));
  lua_pushinteger(L, n);
  return 1;
}

enum { KEYS = 1, VALUES = 2 };

/* The values of a snapshot that will not be decoded give back the pins
 * taken for the decode. */
static void unpin_snapshot(const lmp_buf_t *o, int what)
{
  size_t pos = 0, n;
  const char *r;
  while ((r = next_rec(o, &pos, &n)) != NULL) {
    if ((what & KEYS) && (what & VALUES) && (r = next_rec(o, &pos, &n)) == NULL)
      break;
    if (what & VALUES)
      stored_handles(r, n, unpin_name);
  }
}

/* Copy every entry (keys, values or both) into b->o under the lock. */
static void snapshot(lua_State *L, ldict *d, bufs *b, int what)
{
  const void *k, *v;
  size_t kl, vl, pos = 0;
  int rc = 0;
  lock_dict(L, d, b);
  while (rc == 0 && lmp_dict_next(D(d), &pos, &k, &kl, &v, &vl)) {
    if (what & KEYS)
      rc = append_rec(&b->o, k, kl);
    if (rc == 0 && (what & VALUES))
      rc = copy_out(&b->o, v, vl);
  }
  lmp_dict_unlock(D(d));
  if (rc < 0) {
    unpin_snapshot(&b->o, what);
    fail(L, d, b, "snapshot", rc);
  }
}

/* Decode a snapshot as a sequence (keys or values), a sequence of {k, v}
 * pairs, or a map. */
enum { AS_SEQ, AS_PAIRS, AS_MAP, AS_FLAT };

static void push_snapshot(lua_State *L, ldict *d, bufs *b, int what, int as)
{
  size_t pos = 0, n;
  const char *p;
  lua_Integer i = 0;
  lua_newtable(L);
  while ((p = next_rec(&b->o, &pos, &n)) != NULL) {
    if (what == KEYS) {
      push_key(L, p, n);
    } else if (what == VALUES) {
      push_value(L, p, n);
    } else {
      push_key(L, p, n);
      p = next_rec(&b->o, &pos, &n);
      push_value(L, p, n);
      if (as == AS_MAP) {
        lua_rawset(L, -3);
        continue;
      }
      if (as == AS_PAIRS) {
        lua_createtable(L, 2, 0);
        lua_insert(L, -3);
        lua_rawseti(L, -3, 2);
        lua_rawseti(L, -2, 1);
      } else {
        lua_rawseti(L, -3, i + 2);
        lua_rawseti(L, -2, i + 1);
        i += 2;
        continue;
      }
    }
    lua_rawseti(L, -2, ++i);
  }
  if (as == AS_FLAT) {
    lua_pushinteger(L, i);
    lua_setfield(L, -2, "n");
  }
  give(d, b);
}

static int dict_view(lua_State *L, int what, int as)
{
  ldict *d = checkmap(L, 1);
  bufs *b = take(L, d);
  snapshot(L, d, b, what);
  push_snapshot(L, d, b, what, as);
  return 1;
}

static int dict_keys(lua_State *L) { return dict_view(L, KEYS, AS_SEQ); }
static int dict_values(lua_State *L) { return dict_view(L, VALUES, AS_SEQ); }
static int dict_items(lua_State *L) { return dict_view(L, KEYS | VALUES, AS_PAIRS); }
static int dict_totable(lua_State *L) { return dict_view(L, KEYS | VALUES, AS_MAP); }

/* The iterator of pairs(): walks a flat snapshot {k1, v1, k2, v2, ..., n=}. */
static int snap_next(lua_State *L)
{
  lua_Integer i = lua_tointeger(L, lua_upvalueindex(2));
  lua_getfield(L, lua_upvalueindex(1), "n");
  lua_Integer n = lua_tointeger(L, -1);
  if (i >= n)
    return 0;
  lua_pushinteger(L, i + 2);
  lua_replace(L, lua_upvalueindex(2));
  lua_rawgeti(L, lua_upvalueindex(1), i + 1);
  lua_rawgeti(L, lua_upvalueindex(1), i + 2);
  return 2;
}

static int pairs_of_snapshot(lua_State *L)
{
  lua_pushinteger(L, 0);
  lua_pushcclosure(L, snap_next, 2);
  lua_pushnil(L);
  lua_pushnil(L);
  return 3;
}

static int dict_pairs(lua_State *L)
{
  dict_view(L, KEYS | VALUES, AS_FLAT);
  return pairs_of_snapshot(L);
}

/* === Dict: writing === */

static int holds_handles(const void *val, size_t n)
{
  return n > 1 && ((const unsigned char *)val)[0] == HANDLES;
}

/* Store the batch in b->v (records: key, value, key, value...) under one
 * lock.  Old values holding handles are collected into b->o and give back
 * their pins after.  On failure, the values not stored give back theirs. */
static void store_batch(lua_State *L, ldict *d, bufs *b, const char *what)
{
  size_t pos = 0, done = 0, kl, vl, oldn;
  const char *k, *v;
  const void *old;
  int rc = 0;
  lock_dict(L, d, b);
  while ((k = next_rec(&b->v, &pos, &kl)) != NULL) {
    v = next_rec(&b->v, &pos, &vl);
    size_t mark = b->o.len;
    if (lmp_dict_find(D(d), k, kl, &old, &oldn) == 0 && holds_handles(old, oldn) &&
        (rc = append_rec(&b->o, old, oldn)) < 0)
      break;
    if ((rc = lmp_dict_set(D(d), k, kl, v, vl)) < 0) {
      b->o.len = mark; /* the old value is still stored: it keeps its pins */
      break;
    }
    done = pos;
  }
  lmp_dict_unlock(D(d));
  unpin_batch(&b->o, 0);
  if (rc < 0) {
    pos = done;
    while (next_rec(&b->v, &pos, &kl) && (v = next_rec(&b->v, &pos, &vl)) != NULL)
      stored_handles(v, vl, unpin_name);
    fail(L, d, b, what, rc);
  }
}

/* Delete key (in b->k); its value's pins are given back. */
static void delete_key(lua_State *L, ldict *d, bufs *b)
{
  const void *old;
  size_t n;
  int rc = 0;
  lock_dict(L, d, b);
  if (lmp_dict_find(D(d), b->k.data, b->k.len, &old, &n) == 0) {
    rc = append_rec(&b->o, old, n);
    if (rc == 0)
      lmp_dict_del(D(d), b->k.data, b->k.len);
  }
  lmp_dict_unlock(D(d));
  if (rc < 0)
    fail(L, d, b, "delete", rc);
  unpin_batch(&b->o, 0);
}

/* d[k] = v; d[k] = nil deletes, as in a table. */
static int dict_set(lua_State *L, ldict *d, int vidx)
{
  const lmp_buf_t *m = NULL;
  int handles = 0;
  check_key(L, 2, "newindex");
  if (!lua_isnil(L, vidx))
    m = encode_value(L, vidx, &handles);
  bufs *b = take(L, d);
  put_key(L, d, b, 2);
  if (m == NULL) {
    delete_key(L, d, b);
  } else {
    if (append_rec(&b->v, b->k.data, b->k.len) < 0 || put_value(&b->v, m, handles) < 0) {
      give(d, b);
      return luaL_error(L, "out of memory");
    }
    store_batch(L, d, b, "newindex");
  }
  give(d, b);
  return 0;
}

/* d:update(t | dict): every pair stored under one lock. */
static int dict_update(lua_State *L)
{
  ldict *d = checkmap(L, 1);
  lua_settop(L, 2);
  ldict *src = luaL_testudata(L, 2, DICT_MT);
  if (src == NULL)
    src = luaL_testudata(L, 2, NS_MT);
  if (src) {
    lua_pushcfunction(L, dict_totable);
    lua_pushvalue(L, 2);
    lua_call(L, 1, 1);
    lua_replace(L, 2);
  } else if (!lua_istable(L, 2)) {
    return luaL_typeerror(L, 2, "table or lmp.Dict");
  }
  bufs *b = fresh(L);
  lua_pushnil(L);
  while (lua_next(L, 2)) {
    const char *err = key_problem(L, -2);
    if (err)
      return luaL_argerror(L, 2, err);
    batch_key(L, -2, b);
    batch_value(L, -1, b);
    lua_pop(L, 1);
  }
  store_batch(L, d, b, "update");
  return 0;
}

/* The number stored at a value (flag byte, then msgpack); 0 if it is not
 * one. */
static int stored_number(const void *val, size_t len, lua_Integer *i, double *f, int *isint)
{
  const unsigned char *p = val;
  return len >= 2 && p[0] == PLAIN && lmpb_plain_number(p + 1, len - 1, i, f, isint);
}

/* A stored number: flag, then the number. */
static size_t number_bytes(unsigned char *out, int isint, lua_Integer i, double f)
{
  out[0] = PLAIN;
  return 1 + lmpb_plain_put_number(out + 1, isint, i, f);
}

/* d:incr(k [, n = 1]) -> the new value, atomically; a missing key counts
 * from 0. */
static int dict_incr(lua_State *L)
{
  ldict *d = checkmap(L, 1);
  luaL_checkany(L, 2);
  int dint = lua_isnoneornil(L, 3) || lua_isinteger(L, 3);
  lua_Integer di = dint ? luaL_optinteger(L, 3, 1) : 0;
  double df = dint ? 0 : (double)luaL_checknumber(L, 3);
  check_key(L, 2, NULL);
  bufs *b = take(L, d);
  put_key(L, d, b, 2);
  const void *v;
  size_t n;
  lua_Integer i = 0;
  double f = 0;
  int isint = 1, rc = 0, notnum = 0;
  unsigned char out[10];
  lock_dict(L, d, b);
  if (lmp_dict_find(D(d), b->k.data, b->k.len, &v, &n) == 0)
    notnum = !stored_number(v, n, &i, &f, &isint);
  if (!notnum) {
    if (isint && dint) {
      i = (lua_Integer)((lua_Unsigned)i + (lua_Unsigned)di);
    } else {
      f = (isint ? (double)i : f) + (dint ? (double)di : df);
      isint = 0;
    }
    rc = lmp_dict_set(D(d), b->k.data, b->k.len, out, number_bytes(out, isint, i, f));
  }
  lmp_dict_unlock(D(d));
  give(d, b);
  if (notnum)
    return luaL_argerror(L, 2, "the value at this key is not a number");
  if (rc < 0)
    return lmpb_rterror(L, "incr", rc);
  if (isint)
    lua_pushinteger(L, i);
  else
    lua_pushnumber(L, (lua_Number)f);
  return 1;
}

/* d:setdefault(k, v) -> d[k], storing v first if k is missing */
static int dict_setdefault(lua_State *L)
{
  ldict *d = checkmap(L, 1);
  luaL_checkany(L, 2);
  luaL_checkany(L, 3);
  check_key(L, 2, NULL);
  int handles;
  const lmp_buf_t *m = encode_value(L, 3, &handles);
  bufs *b = take(L, d);
  const void *old;
  size_t n;
  put_key(L, d, b, 2);
  if (put_value(&b->v, m, handles) < 0) {
    give(d, b);
    return luaL_error(L, "out of memory");
  }
  lock_dict(L, d, b);
  int had = lmp_dict_find(D(d), b->k.data, b->k.len, &old, &n) == 0;
  size_t pos = 0, vl;
  const char *val = next_rec(&b->v, &pos, &vl);
  int rc = had ? copy_out(&b->o, old, n) : lmp_dict_set(D(d), b->k.data, b->k.len, val, vl);
  lmp_dict_unlock(D(d));
  if (had || rc < 0)
    stored_handles(val, vl, unpin_name); /* not stored */
  if (rc < 0)
    return fail(L, d, b, "setdefault", rc);
  if (!had) {
    give(d, b);
    lua_pushvalue(L, 3);
    return 1;
  }
  return push_read(L, d, b, 1, 0);
}

static int dict_clear(lua_State *L)
{
  ldict *d = checkmap(L, 1);
  const void *k, *v;
  size_t kl, vl, pos = 0;
  bufs *b = take(L, d);
  int rc = 0;
  lock_dict(L, d, b);
  while (rc == 0 && lmp_dict_next(D(d), &pos, &k, &kl, &v, &vl))
    if (vl > 1 && ((const unsigned char *)v)[0] == HANDLES)
      rc = append_rec(&b->o, v, vl);
  if (rc == 0)
    lmp_dict_clear(D(d));
  lmp_dict_unlock(D(d));
  if (rc < 0)
    return fail(L, d, b, "clear", rc);
  unpin_batch(&b->o, 0);
  give(d, b);
  return 0;
}

/* === Dict and Namespace: metamethods === */

static int dict_index(lua_State *L)
{
  if (closed_index(L, luaL_checkudata(L, 1, mtnames[DICT])))
    return 1;
  ldict *d = checkkind(L, 1, DICT);
  if (lua_type(L, 2) == LUA_TSTRING) {
    luaL_getmetatable(L, DICT_MT);
    lua_getfield(L, -1, "methods");
    lua_pushvalue(L, 2);
    if (lua_rawget(L, -2) != LUA_TNIL)
      return 1;
    lua_settop(L, 2);
  }
  check_key(L, 2, "index");
  bufs *b = take(L, d);
  put_key(L, d, b, 2);
  return push_read(L, d, b, dict_read(L, d, b), 0);
}

static int dict_newindex(lua_State *L)
{
  return dict_set(L, checkmap(L, 1), 3);
}

/* Every field is data, except close, the one method. */
static int ns_index(lua_State *L)
{
  if (closed_index(L, luaL_checkudata(L, 1, mtnames[NS])))
    return 1;
  if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "close") == 0) {
    lua_pushcfunction(L, obj_close);
    return 1;
  }
  ldict *d = checkkind(L, 1, NS);
  check_key(L, 2, "index");
  bufs *b = take(L, d);
  put_key(L, d, b, 2);
  return push_read(L, d, b, dict_read(L, d, b), 0);
}

/* Namespace(a=1, b=x) */
static int ns_tostring(lua_State *L)
{
  ldict *d = lua_touserdata(L, 1);
  luaL_Buffer out;
  if (d->c == NULL)
    return obj_tostring(L);
  lua_settop(L, 1);
  dict_view(L, KEYS | VALUES, AS_PAIRS); /* 2 */
  lua_Integer n = (lua_Integer)luaL_len(L, 2);
  lua_createtable(L, (int)n, 0); /* 3: the parts */
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 2, i);
    lua_rawgeti(L, 4, 1);
    lua_rawgeti(L, 4, 2);
    const char *k = luaL_tolstring(L, 5, NULL), *v = luaL_tolstring(L, 6, NULL);
    lua_pushfstring(L, "%s=%s", k, v);
    lua_rawseti(L, 3, i);
    lua_settop(L, 3);
  }
  luaL_buffinit(L, &out);
  luaL_addstring(&out, "Namespace(");
  for (lua_Integer i = 1; i <= n; i++) {
    if (i > 1)
      luaL_addstring(&out, ", ");
    lua_rawgeti(L, 3, i);
    luaL_addvalue(&out);
  }
  luaL_addchar(&out, ')');
  luaL_pushresult(&out);
  return 1;
}

/* === List === */

static ldict *checklist(lua_State *L)
{
  return checkkind(L, 1, LIST);
}

static size_t list_len_locked(lua_State *L, ldict *d)
{
  int rc = lmp_list_lock(Li(d));
  if (rc < 0)
    lmpb_rterror(L, LIST_MT, rc);
  size_t n = lmp_list_len(Li(d));
  lmp_list_unlock(Li(d));
  return n;
}

static int list_len(lua_State *L)
{
  lua_pushinteger(L, (lua_Integer)list_len_locked(L, checklist(L)));
  return 1;
}

/* Insert the values in b->v (records) at 0-based position `at`, or at the
 * end when at < 0, under one lock. */
static void list_store(lua_State *L, ldict *d, bufs *b, lua_Integer at, const char *what,
                       int argno)
{
  size_t pos = 0, vl, n, stop = 0;
  const char *v;
  int rc = 0;
  lock_list(L, d, b);
  n = lmp_list_len(Li(d));
  if (at > (lua_Integer)n) {
    lmp_list_unlock(Li(d));
    unpin_batch(&b->v, 0);
    give(d, b);
    luaL_error(L, "bad argument #%d to '%s' (position %I out of range 1..%I)", argno, what,
               at + 1, (lua_Integer)n + 1);
  }
  size_t i = at < 0 ? n : (size_t)at;
  while ((v = next_rec(&b->v, &pos, &vl)) != NULL) {
    if ((rc = lmp_list_insert(Li(d), i++, v, vl)) < 0)
      break;
    stop = pos;
  }
  lmp_list_unlock(Li(d));
  if (rc < 0) {
    pos = stop;
    while ((v = next_rec(&b->v, &pos, &vl)) != NULL)
      stored_handles(v, vl, unpin_name);
    fail(L, d, b, what, rc);
  }
}

static int list_append(lua_State *L)
{
  ldict *d = checklist(L);
  luaL_checkany(L, 2);
  bufs *b = fresh(L);
  batch_value(L, 2, b);
  list_store(L, d, b, -1, "append", 1);
  give(d, b);
  return 0;
}

/* L:insert(i, v): before position i, 1 <= i <= #L + 1 */
static int list_insert(lua_State *L)
{
  ldict *d = checklist(L);
  lua_Integer i = luaL_checkinteger(L, 2);
  luaL_checkany(L, 3);
  if (i < 1)
    luaL_argerror(L, 2, lua_pushfstring(L, "position %I out of range", i));
  bufs *b = fresh(L);
  batch_value(L, 3, b);
  list_store(L, d, b, i - 1, "insert", 1);
  give(d, b);
  return 0;
}

/* L:extend(t | list): every item appended under one lock. */
static int list_extend(lua_State *L)
{
  ldict *d = checklist(L);
  lua_settop(L, 2);
  ldict *src = luaL_testudata(L, 2, LIST_MT);
  if (src) {
    lua_getfield(L, 2, "totable");
    lua_pushvalue(L, 2);
    lua_call(L, 1, 1);
    lua_replace(L, 2);
  } else {
    luaL_checktype(L, 2, LUA_TTABLE);
  }
  bufs *b = fresh(L);
  lua_Integer n = (lua_Integer)luaL_len(L, 2);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, 2, i);
    batch_value(L, -1, b);
    lua_pop(L, 1);
  }
  list_store(L, d, b, -1, "extend", 1);
  give(d, b);
  return 0;
}

/* Read item i (1-based) into b->o; -ERANGE outside 1..#L; *n is #L. */
static int list_read(lua_State *L, ldict *d, bufs *b, lua_Integer i, size_t *n, int del)
{
  const void *v;
  size_t len;
  lock_list(L, d, b);
  *n = lmp_list_len(Li(d));
  int rc = i >= 1 && (lua_Unsigned)i <= *n ? 0 : -ERANGE;
  if (rc == 0 && lmp_list_get(Li(d), (size_t)(i - 1), &v, &len) == 0) {
    rc = del ? append_rec(&b->o, v, len) : copy_out(&b->o, v, len);
    if (rc == 0 && del)
      lmp_list_del(Li(d), (size_t)(i - 1));
  }
  lmp_list_unlock(Li(d));
  return rc;
}

/* L:pop([i]) -> the item, removed (the last by default); nil when empty. */
static int list_pop(lua_State *L)
{
  ldict *d = checklist(L);
  bufs *b = take(L, d);
  size_t n, len;
  const void *v;
  int rc = 0;
  if (lua_isnoneornil(L, 2)) {
    /* #L is only known under the lock */
    lock_list(L, d, b);
    n = lmp_list_len(Li(d));
    if (n > 0 && lmp_list_get(Li(d), n - 1, &v, &len) == 0 &&
        (rc = append_rec(&b->o, v, len)) == 0)
      lmp_list_del(Li(d), n - 1);
    lmp_list_unlock(Li(d));
    if (rc < 0)
      return fail(L, d, b, "pop", rc);
    return push_read(L, d, b, n > 0, 0);
  }
  lua_Integer i = luaL_checkinteger(L, 2);
  rc = list_read(L, d, b, i, &n, 1);
  if (rc == -ERANGE) {
    give(d, b);
    return luaL_argerror(L, 2, lua_pushfstring(L, "index %I out of range 1..%I", i, (lua_Integer)n));
  }
  if (rc < 0)
    return fail(L, d, b, "pop", rc);
  return push_read(L, d, b, 1, 0);
}

static int list_totable(lua_State *L)
{
  ldict *d = checklist(L);
  bufs *b = take(L, d);
  const void *v;
  size_t len;
  int rc = 0;
  lock_list(L, d, b);
  size_t n = lmp_list_len(Li(d));
  for (size_t i = 0; rc == 0 && i < n; i++)
    if (lmp_list_get(Li(d), i, &v, &len) == 0)
      rc = copy_out(&b->o, v, len);
  lmp_list_unlock(Li(d));
  if (rc < 0) {
    unpin_batch(&b->o, 0);
    return fail(L, d, b, "totable", rc);
  }
  push_snapshot(L, d, b, VALUES, AS_SEQ);
  return 1;
}

static int list_clear(lua_State *L)
{
  ldict *d = checklist(L);
  bufs *b = take(L, d);
  const void *v;
  size_t len;
  int rc = 0;
  lock_list(L, d, b);
  size_t n = lmp_list_len(Li(d));
  for (size_t i = 0; rc == 0 && i < n; i++)
    if (lmp_list_get(Li(d), i, &v, &len) == 0 && len > 1 &&
        ((const unsigned char *)v)[0] == HANDLES)
      rc = append_rec(&b->o, v, len);
  if (rc == 0)
    lmp_list_clear(Li(d));
  lmp_list_unlock(Li(d));
  if (rc < 0)
    return fail(L, d, b, "clear", rc);
  unpin_batch(&b->o, 0);
  give(d, b);
  return 0;
}

static int list_index(lua_State *L)
{
  if (closed_index(L, luaL_checkudata(L, 1, mtnames[LIST])))
    return 1;
  ldict *d = checklist(L);
  int isnum;
  if (lua_type(L, 2) == LUA_TSTRING) {
    luaL_getmetatable(L, LIST_MT);
    lua_getfield(L, -1, "methods");
    lua_getfield(L, -1, lua_tostring(L, 2));
    return 1;
  }
  lua_Integer i = lua_tointegerx(L, 2, &isnum);
  if (!isnum)
    return luaL_error(L, "bad argument #1 to 'index' (%s)",
                      lua_type(L, 2) == LUA_TNUMBER
                          ? "number has no integer representation"
                          : lua_pushfstring(L, "number expected, got %s", luaL_typename(L, 2)));
  bufs *b = take(L, d);
  size_t n;
  int rc = list_read(L, d, b, i, &n, 0);
  if (rc == -ERANGE) {
    give(d, b);
    if ((lua_Unsigned)i == n + 1) { /* the end of the sequence, for ipairs */
      lua_pushnil(L);
      return 1;
    }
    return luaL_error(L, "bad argument #1 to 'index' (index %I out of range 1..%I)", i,
                      (lua_Integer)n);
  }
  if (rc < 0)
    return fail(L, d, b, "index", rc);
  return push_read(L, d, b, 1, 0);
}

static int list_newindex(lua_State *L)
{
  ldict *d = checklist(L);
  int isnum;
  lua_Integer i = lua_tointegerx(L, 2, &isnum);
  if (!isnum)
    return luaL_error(L, "bad argument #1 to 'newindex' (%s)",
                      lua_type(L, 2) == LUA_TNUMBER
                          ? "number has no integer representation"
                          : lua_pushfstring(L, "number expected, got %s", luaL_typename(L, 2)));
  int handles;
  const lmp_buf_t *m = encode_value(L, 3, &handles);
  bufs *b = take(L, d);
  if (put_value(&b->v, m, handles) < 0) {
    give(d, b);
    return luaL_error(L, "out of memory");
  }
  size_t pos = 0, vl;
  const char *val = next_rec(&b->v, &pos, &vl);
  const void *old;
  size_t oldn;
  lock_list(L, d, b);
  size_t n = lmp_list_len(Li(d));
  int rc = i >= 1 && (lua_Unsigned)i <= n ? 0 : -ERANGE;
  if (rc == 0 && lmp_list_get(Li(d), (size_t)(i - 1), &old, &oldn) == 0 && oldn > 1 &&
      ((const unsigned char *)old)[0] == HANDLES)
    rc = append_rec(&b->o, old, oldn);
  if (rc == 0 && (rc = lmp_list_set(Li(d), (size_t)(i - 1), val, vl)) < 0)
    b->o.len = 0; /* the old value stays */
  lmp_list_unlock(Li(d));
  if (rc < 0) {
    stored_handles(val, vl, unpin_name);
    give(d, b);
    if (rc == -ERANGE)
      return luaL_error(L, "bad argument #1 to 'newindex' (index %I out of range 1..%I)", i,
                        (lua_Integer)n);
    return lmpb_rterror(L, "newindex", rc);
  }
  unpin_batch(&b->o, 0);
  give(d, b);
  return 0;
}

static int list_pairs(lua_State *L)
{
  list_totable(L);
  lua_Integer n = (lua_Integer)luaL_len(L, -1);
  lua_createtable(L, (int)(2 * n), 1);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_pushinteger(L, i);
    lua_rawseti(L, -2, 2 * i - 1);
    lua_rawgeti(L, -2, i);
    lua_rawseti(L, -2, 2 * i);
  }
  lua_pushinteger(L, 2 * n);
  lua_setfield(L, -2, "n");
  return pairs_of_snapshot(L);
}

/* === constructors === */

static int make(lua_State *L, int kind, const char *fname)
{
  int init = !lua_isnoneornil(L, 1);
  if (init && !lua_istable(L, 1) && !luaL_testudata(L, 1, mtnames[kind == LIST ? LIST : DICT]) &&
      !(kind != LIST && luaL_testudata(L, 1, NS_MT)))
    return luaL_typeerror(L, 1, kind == LIST ? "table or lmp.List" : "table or lmp.Dict");
  lua_settop(L, 1);
  ldict *d = newdict(L, kind);
  lmp_list_t *l = NULL;
  lmp_dict_t *m = NULL;
  int rc = kind == LIST ? lmp_list_create(&l) : lmp_dict_create(&m);
  if (lmpb_fds_retry(L, rc))
    rc = kind == LIST ? lmp_list_create(&l) : lmp_dict_create(&m);
  d->c = kind == LIST ? (void *)l : (void *)m;
  if (rc < 0)
    return lmpb_rterror(L, fname, rc);
  if (init) {
    lua_pushcfunction(L, kind == LIST ? list_extend : dict_update);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 1);
    lua_call(L, 2, 0);
  }
  return 1;
}

static int dict_new(lua_State *L) { return make(L, DICT, "Dict"); }
static int list_new(lua_State *L) { return make(L, LIST, "List"); }
static int ns_new(lua_State *L) { return make(L, NS, "Namespace"); }

/* === crossing processes === */

static int obj_encode(lua_State *L, int idx, lmp_buf_t *out)
{
  ldict *d = lua_touserdata(L, idx);
  if (d->c == NULL)
    return -EBADF;
  lmp_seg_t *seg = obj_seg(d);
  const char *name = lmp_seg_name(seg);
  if (append(out, name, strlen(name)) < 0)
    return -ENOMEM;
  lmp_seg_pin(seg);
  return 0;
}

static void decode_kind(lua_State *L, const char *data, size_t len, int kind)
{
  char name[LMP_SEG_NAME_MAX];
  lmp_seg_t *seg;
  if (len == 0 || len >= sizeof name || memchr(data, '\0', len))
    luaL_error(L, "corrupt message (bad %s handle)", mtnames[kind]);
  memcpy(name, data, len);
  name[len] = '\0';
  ldict *d = newdict(L, kind);
  int rc = lmp_seg_attach(name, 1, &seg);
  if (lmpb_fds_retry(L, rc))
    rc = lmp_seg_attach(name, 1, &seg);
  if (rc == 0) {
    lmp_list_t *l = NULL;
    lmp_dict_t *m = NULL;
    rc = kind == LIST ? lmp_list_open(seg, &l) : lmp_dict_open(seg, &m);
    d->c = kind == LIST ? (void *)l : (void *)m;
    lmp_seg_release(seg);
  }
  if (rc < 0)
    luaL_error(L, "cannot receive a %s: %s", mtnames[kind], lmp_strerror(rc));
}

static void dict_decode(lua_State *L, const char *d, size_t n) { decode_kind(L, d, n, DICT); }
static void list_decode(lua_State *L, const char *d, size_t n) { decode_kind(L, d, n, LIST); }
static void ns_decode(lua_State *L, const char *d, size_t n) { decode_kind(L, d, n, NS); }

/* === registration === */

static const luaL_Reg dict_methods[] = {
  {"get", dict_get},       {"pop", dict_pop},         {"keys", dict_keys},
  {"values", dict_values}, {"items", dict_items},     {"update", dict_update},
  {"len", dict_len},       {"incr", dict_incr},       {"setdefault", dict_setdefault},
  {"clear", dict_clear},   {"totable", dict_totable}, {"close", obj_close},
  {NULL, NULL},
};

static const luaL_Reg list_methods[] = {
  {"append", list_append}, {"extend", list_extend},   {"insert", list_insert},
  {"pop", list_pop},       {"totable", list_totable}, {"clear", list_clear},
  {"len", list_len},       {"close", obj_close},      {NULL, NULL},
};

static const luaL_Reg no_methods[] = {{NULL, NULL}};

static void newclass(lua_State *L, const char *mt, const luaL_Reg *meta, const luaL_Reg *methods)
{
  luaL_newmetatable(L, mt);
  luaL_setfuncs(L, meta, 0);
  lua_newtable(L);
  luaL_setfuncs(L, methods, 0);
  lua_setfield(L, -2, "methods");
  lua_pop(L, 1);
}

int lmpb_dict_open(lua_State *L)
{
  static const luaL_Reg dict_meta[] = {
    {"__index", dict_index}, {"__newindex", dict_newindex}, {"__len", dict_len},
    {"__pairs", dict_pairs}, {"__gc", obj_close},           {"__close", obj_close},
    {"__tostring", obj_tostring}, {NULL, NULL},
  };
  static const luaL_Reg ns_meta[] = {
    {"__index", ns_index},   {"__newindex", dict_newindex}, {"__pairs", dict_pairs},
    {"__gc", obj_close},     {"__close", obj_close},        {"__tostring", ns_tostring},
    {NULL, NULL},
  };
  static const luaL_Reg list_meta[] = {
    {"__index", list_index}, {"__newindex", list_newindex}, {"__len", list_len},
    {"__pairs", list_pairs}, {"__gc", obj_close},           {"__close", obj_close},
    {"__tostring", obj_tostring}, {NULL, NULL},
  };
  static const lmpb_handle_type handles[] = {
    {DICT_MT, obj_encode, dict_decode},
    {LIST_MT, obj_encode, list_decode},
    {NS_MT, obj_encode, ns_decode},
  };
  static const luaL_Reg ctors[] = {
    {"Dict", dict_new},
    {"List", list_new},
    {"Namespace", ns_new},
    {NULL, NULL},
  };
  newclass(L, DICT_MT, dict_meta, dict_methods);
  newclass(L, NS_MT, ns_meta, no_methods);
  newclass(L, LIST_MT, list_meta, list_methods);
  luaL_newmetatable(L, SCRATCH_MT);
  lua_pushcfunction(L, scratch_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);
  for (size_t i = 0; i < sizeof handles / sizeof handles[0]; i++)
    lmpb_register_handle(L, &handles[i]);
  luaL_setfuncs(L, ctors, 0);
  /* References a dead process left, and pins in unread messages, are given
   * back through their object, so its last-holder cleanup runs too. */
  lmp_runtime_set_unpin(unpin_name);
  return 0;
}

/*
 * lprocess.c -- lmp.Process and the process-wide queries (current_process,
 * parent_process, active_children).
 *
 * With the fork start method the child is a copy of the parent's Lua state:
 * start() forks and, in the child, calls the target right there with the
 * arguments it already has (nothing is serialized) and never returns; the
 * child ends through lmp_proc_exit, which skips the parent's atexit handlers
 * and Lua finalizers.  A Process userdata remembers the pid that created it:
 * the copy a child inherits is inert (its methods raise, its __gc does
 * nothing), because the child must not wait for or signal its siblings.
 *
 * The other start methods (lspawn.c) send the target and its arguments to
 * a fresh state instead; start() hands every method to lmpb_spawn, and the
 * child side of all of them ends in lmpb_process_run (lchild.c).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lmp/proc.h"
#include "lmp/segment.h"
#include "lmpaux.h"
#include "lmpb.h"

#define PROCESS_MT "lmp.Process"
#define CHILDREN_KEY LMPB_CHILDREN_KEY /* registry: started Process -> true */

enum { CREATED, STARTED, CLOSED };

typedef struct lprocess {
  lmp_proc_t *proc; /* set while started and not closed */
  pid_t owner;      /* pid of the process that made this object */
  int state;
  int daemon;
  const char *method; /* start method given (a static string); NULL: the default */
} lprocess;

/* === helpers === */

static lprocess *checkproc(lua_State *L)
{
  lprocess *p = luaL_checkudata(L, 1, PROCESS_MT);
  if (p->owner != getpid())
    luaL_argerror(L, 1, "process object belongs to another process");
  return p;
}

static lprocess *checkstarted(lua_State *L)
{
  lprocess *p = checkproc(L);
  if (p->state == CLOSED)
    lmpb_closed(L, PROCESS_MT);
  if (p->state != STARTED)
    luaL_argerror(L, 1, "process not started");
  return p;
}

/* Field `k` of the process's uservalue table. */
static int getfield(lua_State *L, int idx, const char *k)
{
  lua_getiuservalue(L, idx, 1);
  int t = lua_getfield(L, -1, k);
  lua_remove(L, -2);
  return t;
}

static void setfield(lua_State *L, int idx, const char *k)
{
  idx = lua_absindex(L, idx);
  lua_getiuservalue(L, idx, 1);
  lua_insert(L, -2);
  lua_setfield(L, -2, k);
  lua_pop(L, 1);
}

static void forget_child(lua_State *L, int idx)
{
  idx = lua_absindex(L, idx);
  lua_getfield(L, LUA_REGISTRYINDEX, CHILDREN_KEY);
  lua_pushvalue(L, idx);
  lua_pushnil(L);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

/* Forget the started processes that have ended, as Python's
 * active_children() and start() do: a Process nobody joins is then
 * collected once the program drops it. */
static void forget_ended(lua_State *L)
{
  lua_getfield(L, LUA_REGISTRYINDEX, CHILDREN_KEY);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    lprocess *p = lua_touserdata(L, -1);
    if (!p->proc || !lmp_proc_alive(p->proc)) {
      lua_pushvalue(L, -1);
      lua_pushnil(L);
      lua_rawset(L, -4); /* clearing a field during lua_next is allowed */
    }
  }
  lua_pop(L, 1);
}

static int iscallable(lua_State *L, int idx)
{
  if (lua_isfunction(L, idx))
    return 1;
  int ok = luaL_getmetafield(L, idx, "__call") != LUA_TNIL;
  if (ok)
    lua_pop(L, 1);
  return ok;
}

/* === construction === */

static const char *const process_options[] = {"target", "args",         "name",
                                              "daemon", "start_method", NULL};

/* Collect the options into the uservalue table at `ut`. */
static void read_options(lua_State *L, int ut, lprocess *p)
{
  lmpb_checkoptions(L, 1, process_options);
  lua_getfield(L, 1, "target");
  luaL_argcheck(L, iscallable(L, -1), 1, "field 'target' must be callable");
  lua_setfield(L, ut, "target");
  if (lua_getfield(L, 1, "args") != LUA_TNIL) {
    luaL_argcheck(L, lua_istable(L, -1), 1, "field 'args' must be a table");
    if (lua_getfield(L, -1, "n") == LUA_TNIL) {
      lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -2));
      lua_setfield(L, -3, "n");
    }
    lua_pop(L, 1);
  } else {
    lua_pop(L, 1);
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, 0);
    lua_setfield(L, -2, "n");
  }
  lua_setfield(L, ut, "args");
  if (lua_getfield(L, 1, "name") != LUA_TNIL) {
    luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, 1, "field 'name' must be a string");
    lmpb_checkcstring(L, -1, 1, "field 'name'");
    lua_setfield(L, ut, "name");
  } else {
    lua_pop(L, 1);
  }
  lua_getfield(L, 1, "daemon");
  p->daemon = lua_toboolean(L, -1);
  lua_getfield(L, 1, "start_method");
  p->method = lmpb_checkmethod(L, -1, 1);
  lua_pop(L, 2);
}

/* lmp.Process(fn, ...) or lmp.Process{target =, args =, name =, daemon =} */
static int process_new(lua_State *L)
{
  int n = lua_gettop(L);
  int table_form = lua_istable(L, 1) && !iscallable(L, 1);
  luaL_argcheck(L, table_form || iscallable(L, 1), 1, "function or options table expected");
  lprocess *p = lua_newuserdatauv(L, sizeof *p, 1);
  memset(p, 0, sizeof *p);
  p->owner = getpid();
  luaL_setmetatable(L, PROCESS_MT);
  lua_createtable(L, 0, 4);
  int ut = lua_gettop(L);
  if (table_form) {
    luaL_argcheck(L, n == 1, 2, "no arguments expected after the options table");
    read_options(L, ut, p);
  } else {
    lua_pushvalue(L, 1);
    lua_setfield(L, ut, "target");
    lua_createtable(L, n - 1, 1);
    for (int i = 2; i <= n; i++) {
      lua_pushvalue(L, i);
      lua_rawseti(L, -2, i - 1);
    }
    lua_pushinteger(L, n - 1);
    lua_setfield(L, -2, "n");
    lua_setfield(L, ut, "args");
  }
  if (lua_getfield(L, ut, "name") == LUA_TNIL) {
    lua_pushfstring(L, "Process-%d", lmpb_process_next());
    lua_setfield(L, ut, "name");
  }
  lua_pop(L, 1);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

/* === methods === */

static int process_start(lua_State *L)
{
  lprocess *p = checkproc(L);
  if (p->state == CLOSED)
    lmpb_closed(L, PROCESS_MT);
  luaL_argcheck(L, p->state == CREATED, 1, "process already started");
  lmp_proc_reap();
  forget_ended(L);
  lua_settop(L, 1);
  getfield(L, 1, "name");
  lmpb_start_t how = {p->method, lua_tostring(L, 2), p->daemon ? LMP_PROC_DAEMON : 0};
  getfield(L, 1, "target");
  getfield(L, 1, "args");
  lua_getfield(L, -1, "n");
  int nargs = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_checkstack(L, nargs, "too many arguments");
  for (int i = 1; i <= nargs; i++)
    lua_rawgeti(L, 4, i);
  lua_remove(L, 4);
  lmp_proc_t *proc;
  int rc = lmpb_spawn(L, 3, nargs, &how, &proc);
  if (lmpb_fds_retry(L, rc))
    rc = lmpb_spawn(L, 3, nargs, &how, &proc);
  if (rc < 0)
    return lmpb_start_error(L, "start", "a process", rc);
  lua_settop(L, 1);
  p->proc = proc;
  p->state = STARTED;
  lua_getfield(L, LUA_REGISTRYINDEX, CHILDREN_KEY);
  lua_pushvalue(L, 1);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  return 0;
}

static int process_join(lua_State *L)
{
  lprocess *p = checkstarted(L);
  int64_t deadline = lmpb_optdeadline(L, 2);
  int rc = lmp_proc_wait_intr(p->proc, deadline);
  if (rc == 0)
    forget_child(L, 1);
  else if (rc != -ETIMEDOUT)
    return lmpb_rterror(L, "join", rc);
  lua_pushboolean(L, rc == 0);
  return 1;
}

static int process_is_alive(lua_State *L)
{
  lprocess *p = checkproc(L);
  if (p->state == CLOSED)
    lmpb_closed(L, PROCESS_MT);
  lua_pushboolean(L, p->state == STARTED && lmp_proc_alive(p->proc));
  return 1;
}

static int signal_process(lua_State *L, int sig)
{
  lprocess *p = checkstarted(L);
  int rc = lmp_proc_signal(p->proc, sig);
  if (rc < 0)
    return lmpb_rterror(L, sig == SIGKILL ? "kill" : "terminate", rc);
  return 0;
}

static int process_terminate(lua_State *L)
{
  return signal_process(L, SIGTERM);
}
static int process_kill(lua_State *L)
{
  return signal_process(L, SIGKILL);
}

static int process_close(lua_State *L)
{
  lprocess *p = checkproc(L);
  if (p->state == STARTED) {
    if (lmp_proc_alive(p->proc))
      return luaL_error(L, "cannot close a process while it is still running; "
                           "join() or terminate() it first");
    lmp_proc_free(p->proc);
    p->proc = NULL;
    forget_child(L, 1);
  }
  p->state = CLOSED;
  return 0;
}

/* <close>: a process still running at the end of its scope is terminated. */
static int process_toclose(lua_State *L)
{
  lprocess *p = luaL_checkudata(L, 1, PROCESS_MT);
  if (p->owner != getpid())
    return 0;
  if (p->state == STARTED && lmp_proc_alive(p->proc)) {
    lmp_proc_signal(p->proc, SIGTERM);
    if (lmp_proc_wait(p->proc, lmp_deadline(1.0)) == -ETIMEDOUT) {
      lmp_proc_signal(p->proc, SIGKILL);
      lmp_proc_wait(p->proc, LMP_FOREVER);
    }
  }
  return process_close(L);
}

static int process_gc(lua_State *L)
{
  lprocess *p = luaL_checkudata(L, 1, PROCESS_MT);
  if (p->owner == getpid() && p->proc)
    lmp_proc_free(p->proc);
  p->proc = NULL;
  p->state = CLOSED;
  return 0;
}

static int process_tostring(lua_State *L)
{
  lprocess *p = luaL_checkudata(L, 1, PROCESS_MT);
  getfield(L, 1, "name");
  const char *state = p->state == CREATED ? "initial" : p->state == CLOSED ? "closed" : NULL;
  if (!state && p->owner == getpid())
    state = lmp_proc_alive(p->proc) ? "started" : "stopped";
  lua_pushfstring(L, "lmp.Process(%s, %s", lua_tostring(L, -1), state ? state : "?");
  if (p->proc)
    lua_pushfstring(L, ", pid %d)", (int)lmp_proc_pid(p->proc));
  else
    lua_pushliteral(L, ")");
  lua_concat(L, 2);
  return 1;
}

/* Fields: pid, name, daemon, exitcode (nil while running), sentinel.  After
 * close every field raises, as every method does; methods are still found
 * (the call raises), so pcall(p.join, p) catches the error. */
static int process_index(lua_State *L)
{
  lprocess *p = luaL_checkudata(L, 1, PROCESS_MT);
  const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
  int ours = p->owner == getpid() && p->proc;
  lmpb_method(L, PROCESS_MT);
  if (!lua_isnil(L, -1))
    return 1;
  lua_pop(L, 1);
  if (p->state == CLOSED)
    return lmpb_closed(L, PROCESS_MT);
  if (strcmp(k, "name") == 0) {
    getfield(L, 1, "name");
  } else if (strcmp(k, "daemon") == 0) {
    lua_pushboolean(L, p->daemon);
  } else if (strcmp(k, "pid") == 0 || strcmp(k, "ident") == 0) {
    if (ours)
      lua_pushinteger(L, lmp_proc_pid(p->proc));
    else
      lua_pushnil(L);
  } else if (strcmp(k, "exitcode") == 0) {
    int code;
    if (ours && lmp_proc_exitcode(p->proc, &code) == 0)
      lua_pushinteger(L, code);
    else
      lua_pushnil(L);
  } else if (strcmp(k, "start_method") == 0) {
    lua_pushstring(L, p->method); /* nil: the default when it starts */
  } else if (strcmp(k, "sentinel") == 0) {
    if (ours && lmp_proc_fd(p->proc) >= 0)
      lua_pushinteger(L, lmp_proc_fd(p->proc));
    else
      lua_pushnil(L);
  } else {
    lua_pushnil(L);
  }
  return 1;
}

static int process_newindex(lua_State *L)
{
  lprocess *p = luaL_checkudata(L, 1, PROCESS_MT);
  const char *k = luaL_checkstring(L, 2);
  if (p->state == CLOSED)
    return lmpb_closed(L, PROCESS_MT);
  if (strcmp(k, "name") == 0) {
    luaL_checkstring(L, 3);
    lmpb_checkcstring(L, 3, 3, "name");
    lua_settop(L, 3);
    setfield(L, 1, "name");
  } else if (strcmp(k, "daemon") == 0) {
    luaL_argcheck(L, p->state == CREATED, 1, "process already started");
    p->daemon = lua_toboolean(L, 3);
  } else if (strcmp(k, "start_method") == 0) {
    luaL_argcheck(L, p->state == CREATED, 1, "process already started");
    p->method = lmpb_checkmethod(L, 3, 3);
  } else {
    return luaL_error(L, "cannot set field '%s' of a process", k);
  }
  return 0;
}

/* === module functions === */

static int l_current_process(lua_State *L)
{
  lua_createtable(L, 0, 2);
  lua_pushstring(L, lmpb_process_name());
  lua_setfield(L, -2, "name");
  lua_pushinteger(L, getpid());
  lua_setfield(L, -2, "pid");
  return 1;
}

static int l_parent_process(lua_State *L)
{
  pid_t ppid = lmp_proc_parent_pid();
  if (ppid == 0)
    return 0;
  lua_createtable(L, 0, 2);
  lua_pushstring(L, lmpb_parent_name());
  lua_setfield(L, -2, "name");
  lua_pushinteger(L, ppid);
  lua_setfield(L, -2, "pid");
  return 1;
}

/* Started processes still alive, in no particular order; reaps the others. */
static int l_active_children(lua_State *L)
{
  lmp_proc_reap();
  forget_ended(L);
  lua_newtable(L);
  lua_getfield(L, LUA_REGISTRYINDEX, CHILDREN_KEY);
  int n = 0;
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_rawseti(L, -4, ++n);
  }
  lua_pop(L, 1);
  return 1;
}

static const luaL_Reg methods[] = {
    {"start", process_start},
    {"join", process_join},
    {"is_alive", process_is_alive},
    {"terminate", process_terminate},
    {"kill", process_kill},
    {"close", process_close},
    {NULL, NULL},
};

static const luaL_Reg metamethods[] = {
    {"__index", process_index},   {"__newindex", process_newindex}, {"__gc", process_gc},
    {"__close", process_toclose}, {"__tostring", process_tostring}, {NULL, NULL},
};

static const luaL_Reg funcs[] = {
    {"Process", process_new},
    {"current_process", l_current_process},
    {"parent_process", l_parent_process},
    {"active_children", l_active_children},
    {NULL, NULL},
};

int lmpb_process_open(lua_State *L)
{
  if (luaL_newmetatable(L, PROCESS_MT)) {
    luaL_setfuncs(L, metamethods, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "methods");
  }
  lua_pop(L, 1);
  if (lua_getfield(L, LUA_REGISTRYINDEX, CHILDREN_KEY) == LUA_TNIL) {
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, CHILDREN_KEY);
  }
  lua_pop(L, 1);
  luaL_setfuncs(L, funcs, 0);
  return 0;
}

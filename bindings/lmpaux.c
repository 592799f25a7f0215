/*
 * lmpaux.c -- the ground floor of the bindings (lauxlib's role): argument
 * checks, lmp.Error, the one table from runtime codes to Lua results, ^C,
 * and the state's owner tag.
 *
 * Every binding file stands on this one, and it stands on nothing of
 * bindings/: it includes its own header and the runtime's, so the layers
 * above can call down into it and it never calls up.
 *
 * Runtime functions return 0 or -errno; lmpb_result turns a code into what
 * the Lua caller sees, in one place, as luaL_fileresult does for liolib:
 * the expected outcomes of a wait (a timeout, the other side gone) are
 * results, and what a program may want to handle apart (shared memory ran
 * out, a ^C) raises an lmp.Error of its own kind.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "lmp/common.h"
#include "lmp/runtime.h"
#include "lmp/segment.h"
#include "lmpaux.h"

/* === arguments and messages === */

int64_t lmpb_checkdeadline(lua_State *L, int arg)
{
  if (lua_isnoneornil(L, arg))
    return LMP_FOREVER;
  lua_Number t = luaL_checknumber(L, arg);
  luaL_argcheck(L, t >= 0, arg, "timeout must be a non-negative number");
  return lmp_deadline(t);
}

void lmpb_checkoptions(lua_State *L, int idx, const char *const known[])
{
  idx = lua_absindex(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    int ok = 0;
    if (lua_type(L, -1) == LUA_TSTRING)
      for (int i = 0; known[i] && !ok; i++)
        ok = strcmp(lua_tostring(L, -1), known[i]) == 0;
    if (!ok) {
      const char *key = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : luaL_typename(L, -1);
      luaL_argerror(L, idx, lua_pushfstring(L, "unknown option '%s'", key));
    }
  }
}

uintptr_t lmpb_tag_key;

/* Once per process (again does nothing; a second key drawn at the same
 * time is dropped). */
void lmpb_tag_init(void)
{
  uintptr_t key = 0, none = 0;
  if (__atomic_load_n(&lmpb_tag_key, __ATOMIC_RELAXED) != 0)
    return;
  if (getrandom(&key, sizeof key, 0) != (ssize_t)sizeof key)
    key = (uintptr_t)lmp_now_ns() * (uintptr_t)0x9e3779b97f4a7c15u ^ (uintptr_t)&key;
  __atomic_compare_exchange_n(&lmpb_tag_key, &none, key | 1, 0, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
}

int lmpb_closed(lua_State *L, const char *tname)
{
  return luaL_error(L, "attempt to use a closed %s", tname);
}

const char *lmpb_checkcstring(lua_State *L, int idx, int arg, const char *what)
{
  size_t n;
  const char *s = lua_tolstring(L, idx, &n);
  if (s != NULL && strlen(s) != n)
    luaL_argerror(L, arg, lua_pushfstring(L, "%s contains a NUL byte", what));
  return s;
}

const char *lmpb_tomessage(lua_State *L, int idx)
{
  int t = lua_type(L, idx);
  if (t == LUA_TSTRING || t == LUA_TNUMBER) {
    lua_pushvalue(L, idx);
    return lua_tostring(L, -1); /* converts the copy: the value stays a number */
  }
  if (luaL_callmeta(L, idx, "__tostring")) {
    if (lua_type(L, -1) == LUA_TSTRING)
      return lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  return lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, idx));
}

int lmpb_traceback(lua_State *L)
{
  luaL_traceback(L, L, lmpb_tomessage(L, 1), 1);
  return 1;
}

int lmpb_method(lua_State *L, const char *tname)
{
  luaL_getmetatable(L, tname);
  lua_getfield(L, -1, "methods");
  lua_pushvalue(L, 2);
  lua_rawget(L, -2);
  return 1;
}

/* === lmp.Error === */

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

void lmpb_error_metatable(lua_State *L)
{
  if (luaL_newmetatable(L, LMPB_ERROR_MT)) {
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushvalue(L, -1);
    lua_setfield(L, -2, "__index");
  }
}

void lmpb_error_push(lua_State *L, const char *kind, const char *msg)
{
  lua_createtable(L, 0, 4);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushstring(L, msg);
  lua_setfield(L, -2, "message");
  lmpb_error_metatable(L);
  lua_setmetatable(L, -2);
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

/* === results === */

int lmpb_fail(lua_State *L, const char *reason)
{
  lua_pushnil(L);
  lua_pushstring(L, reason);
  return 2;
}

int lmpb_result(lua_State *L, const char *what, int rc, const char *timeout)
{
  if (rc >= 0)
    return 0;
  if (rc == -ETIMEDOUT && timeout == NULL) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (rc == -ETIMEDOUT)
    return lmpb_fail(L, timeout);
  if (rc == -EPIPE || rc == -ECONNRESET)
    return lmpb_fail(L, "closed");
  return lmpb_rterror(L, what, rc);
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

int lmpb_fds_retry(lua_State *L, int rc)
{
  if (rc != -EMFILE && rc != -ENFILE)
    return 0;
  lua_gc(L, LUA_GCCOLLECT);
  return 1;
}

/* === interruption === */

/*
 * ^C in the root interrupts what runs, and the program decides what to do
 * with it.  The SIGINT handler only records (lmp's signal rule) and, as
 * lua.c's does, sets a hook on the root's state so that running Lua code
 * raises "interrupted!" at its next instruction.  The handler has no
 * SA_RESTART, so a blocking wait of the runtime is cut short; the runtime
 * asks intr_pending whether to give up (lmp_set_interrupt_check), returns
 * -EINTR, and the binding raises an lmp.Error of kind "interrupted" through
 * lmpb_interrupt_check, which consumes the request (the hook goes too).
 *
 * SA_RESETHAND: a second ^C before the first is consumed (a wait that cannot
 * be interrupted, such as a Lock's) ends the program, as it ends lua; the
 * handler is armed again when a request is consumed.  In a forked child the
 * handler restores the default action at once: children die of the
 * terminal's ^C as Python's get KeyboardInterrupt (pool workers ignore it).
 *
 * lmp installs its handler only over the default action.  A host that has
 * its own keeps it; one that interrupts Lua as lua.c does (a count hook set
 * from its handler; the standalone lua interpreter is one) still
 * interrupts lmp's waits, for such a hook counts as a request then.
 */
#define INTR_KEY "lmp.interrupt"

static lua_State *intr_L;        /* the root state's main thread; NULL if none */
static pid_t intr_pid;           /* the root */
static int intr_owned;           /* the handler is lmp's */
static struct sigaction intr_sa; /* the handler to arm again (intr_arm) */
static volatile sig_atomic_t intr_flag;

static void intr_hook(lua_State *L, lua_Debug *ar);

static void on_sigint(int sig)
{
  if (getpid() != intr_pid) {
    raise(sig); /* the action is the default again (SA_RESETHAND) */
    return;
  }
  intr_flag = 1;
  lua_sethook(intr_L, intr_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

/* Arm the handler again once a request is consumed: the one armed when
 * the state opened (lmp's, or a host's that resets itself as lua.c's does),
 * if the action is the default now. */
static void intr_arm(void)
{
  struct sigaction now;
  if (intr_sa.sa_handler == SIG_DFL || intr_sa.sa_handler == SIG_IGN ||
      sigaction(SIGINT, NULL, &now) < 0 || now.sa_handler != SIG_DFL)
    return;
  sigaction(SIGINT, &intr_sa, NULL);
}

/* Whether an interruption waits to be consumed (for the runtime's waits). */
static int intr_pending(void)
{
  if (intr_L == NULL || getpid() != intr_pid)
    return 0;
  if (intr_flag)
    return 1;
  return !intr_owned && lua_gethook(intr_L) != NULL && (lua_gethookmask(intr_L) & LUA_MASKCOUNT) &&
         lua_gethookcount(intr_L) == 1;
}

/* Consume the pending interruption: 1 if there was one. */
static int intr_take(void)
{
  if (!intr_pending())
    return 0;
  intr_flag = 0;
  lua_sethook(intr_L, NULL, 0, 0);
  intr_arm();
  return 1;
}

static void intr_hook(lua_State *L, lua_Debug *ar)
{
  (void)ar;
  intr_take();
  luaL_error(L, "interrupted!");
}

void lmpb_interrupt_request(void)
{
  intr_flag = 1;
}

void lmpb_interrupt_check(lua_State *L)
{
  if (intr_take())
    lmpb_error_raise(L, "interrupted", "interrupted");
}

static int intr_gc(lua_State *L)
{
  struct sigaction sa;
  (void)L;
  if (intr_owned && sigaction(SIGINT, NULL, &sa) == 0 && sa.sa_handler == on_sigint)
    signal(SIGINT, SIG_DFL);
  intr_owned = 0;
  intr_sa.sa_handler = SIG_IGN;
  intr_L = NULL;
  lmp_set_interrupt_check(NULL);
  return 0;
}

/* A userdata made after the opener's sentinel gives ^C back before the
 * state's children are ended. */
void lmpb_interrupt_open(lua_State *L, int root)
{
  if (intr_L != NULL || !root)
    return;
  lua_newuserdatauv(L, 1, 0);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, intr_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, INTR_KEY);
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  intr_L = lua_tothread(L, -1);
  lua_pop(L, 1);
  intr_pid = getpid();
  intr_flag = 0;
  lmp_set_interrupt_check(intr_pending);
  if (sigaction(SIGINT, NULL, &intr_sa) < 0)
    intr_sa.sa_handler = SIG_IGN; /* never arm */
  intr_owned = !(intr_sa.sa_flags & SA_SIGINFO) && intr_sa.sa_handler == SIG_DFL;
  if (intr_owned) {
    memset(&intr_sa, 0, sizeof intr_sa);
    intr_sa.sa_handler = on_sigint;
    intr_sa.sa_flags = SA_RESETHAND; /* and no SA_RESTART: waits see EINTR */
    sigemptyset(&intr_sa.sa_mask);
    intr_arm();
  } else if (intr_sa.sa_flags & SA_SIGINFO) {
    intr_sa.sa_handler = SIG_IGN; /* a host's three-argument handler: never armed by lmp */
  }
}

/* === the state === */

uint64_t lmpb_owner(lua_State *L)
{
  uint64_t owner = 0;
  if (lua_getfield(L, LUA_REGISTRYINDEX, LMPB_OWNER_KEY) == LUA_TNUMBER)
    owner = (uint64_t)lua_tointeger(L, -1);
  lua_pop(L, 1);
  return owner;
}

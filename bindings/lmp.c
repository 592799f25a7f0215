/*
 * lmp.c -- luaopen_lmp: the module table, the process-wide helpers (sleep,
 * time, cpu_count) and the shared argument helpers of the bindings.
 *
 * Opening the module initializes the runtime (this process becomes the root
 * unless it was started by another lmp process) and then each family of
 * objects adds its constructors, as LuaSocket's luaopen calls each *_open.
 * A sentinel userdata in the registry shuts the state's children down when
 * the state closes: daemon children are terminated, the others joined.  An
 * atexit hook does the same for a script that ends with os.exit() without
 * closing its state.
 *
 * ^C (SIGINT) interrupts the root, as Python's KeyboardInterrupt does: see
 * "interruption" below.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lmp.h"
#include "lmp/proc.h"
#include "lmp/runtime.h"
#include "lmpb.h"

/* === shared helpers === */

int64_t lmpb_optdeadline(lua_State *L, int arg)
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

int lmpb_fail(lua_State *L, const char *reason)
{
  lua_pushnil(L);
  lua_pushstring(L, reason);
  return 2;
}

int lmpb_fds_retry(lua_State *L, int rc)
{
  if (rc != -EMFILE && rc != -ENFILE)
    return 0;
  lua_gc(L, LUA_GCCOLLECT);
  return 1;
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

/* The root's first state takes ^C; a userdata made after the sentinel
 * gives it back before the state's children are ended. */
static void intr_open(lua_State *L)
{
  if (intr_L != NULL || !lmp_runtime_is_root())
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

/* === module functions === */

/* lmp.sleep(seconds): sleeps the whole time (for ever from 9e9 s, about 285
 * years, on) through signals, but a ^C raises "interrupted". */
static int l_sleep(lua_State *L)
{
  lua_Number s = luaL_checknumber(L, 1);
  luaL_argcheck(L, s >= 0 && !isnan(s), 1, "seconds must be a non-negative number");
  int64_t deadline = lmp_deadline(s);
  struct timespec ts = {deadline / 1000000000, deadline % 1000000000};
  for (;;) {
    if (deadline == LMP_FOREVER)
      pause();
    else if (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != EINTR)
      return 0;
    lmpb_interrupt_check(L);
  }
}

static int l_time(lua_State *L)
{
  lua_pushnumber(L, (lua_Number)lmp_now_ns() / 1e9);
  return 1;
}

static int l_cpu_count(lua_State *L)
{
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  lua_pushinteger(L, n > 0 ? n : 1);
  return 1;
}

/* === the state's lifetime === */

/*
 * Each Lua state that opens lmp gets a sentinel in its registry, made
 * before anything else of lmp so that it is finalized after everything
 * else when the state closes.  It carries the state's owner tag: the
 * children the state started are tagged with it, and its close ends those
 * only (a host may run other states that keep working).  When the last
 * state of the process closes, the process-wide parts go too: the
 * forkserver, and the SIGCHLD handler, which must not outlive a module the
 * host may unload.  An atexit hook ends everything for a program that
 * exits without closing its state.
 */
typedef struct sentinel {
  pid_t pid;      /* the process that opened the state */
  uint64_t owner; /* tag of the children it starts */
} sentinel_t;

#define SENTINEL_KEY "lmp.sentinel"

static pid_t exit_pid;   /* the process whose atexit hook is registered */
static pid_t states_pid; /* the process open_states counts for */
static int open_states;  /* states of that process with lmp open */
static uint64_t last_owner;

static void at_exit(void)
{
  if (getpid() == exit_pid)
    lmp_proc_shutdown();
}

static int state_gc(lua_State *L)
{
  sentinel_t *s = lua_touserdata(L, 1);
  if (s->pid != getpid())
    return 0; /* a forked copy: the children are the parent's */
  lmp_proc_shutdown_owner(s->owner);
  if (states_pid == s->pid && --open_states == 0) {
    lmp_proc_shutdown();
    lmp_proc_release_signals();
  }
  return 0;
}

uint64_t lmpb_owner(lua_State *L)
{
  uint64_t owner = 0;
  if (lua_getfield(L, LUA_REGISTRYINDEX, SENTINEL_KEY) == LUA_TUSERDATA)
    owner = ((sentinel_t *)lua_touserdata(L, -1))->owner;
  lua_pop(L, 1);
  return owner;
}

static void sentinel_open(lua_State *L)
{
  pid_t pid = getpid();
  if (lua_getfield(L, LUA_REGISTRYINDEX, SENTINEL_KEY) != LUA_TNIL) {
    lua_pop(L, 1);
    return;
  }
  lua_pop(L, 1);
  sentinel_t *s = lua_newuserdatauv(L, sizeof *s, 0);
  s->pid = pid;
  s->owner = ++last_owner;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, state_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_setfield(L, LUA_REGISTRYINDEX, SENTINEL_KEY);
  if (states_pid != pid) { /* the first state here, or a fork's */
    states_pid = pid;
    open_states = 0;
  }
  open_states++;
  if (exit_pid == 0)
    atexit(at_exit);
  exit_pid = pid;
}

static const luaL_Reg funcs[] = {
    {"sleep", l_sleep},
    {"time", l_time},
    {"cpu_count", l_cpu_count},
    {NULL, NULL},
};

LMP_API int luaopen_lmp(lua_State *L)
{
  int rc = lmp_runtime_init();
  if (rc == -EAGAIN) /* fork refused: the watchdog could not start */
    return lmpb_start_error(L, "lmp", "the runtime's watchdog", rc);
  if (rc < 0)
    return luaL_error(L, "lmp: cannot initialize the runtime: %s", lmp_strerror(rc));
  sentinel_open(L);
  intr_open(L);
  luaL_newlib(L, funcs);
  lua_pushliteral(L, "lmp " LMP_VERSION_STRING);
  lua_setfield(L, -2, "_VERSION");
  lmpb_error_open(L);
  lmpb_codec_open(L);
  lmpb_process_open(L);
  lmpb_pipe_open(L);
  lmpb_queue_open(L);
  lmpb_pool_open(L);
  lmpb_profile_open(L);
  lmpb_top_open(L);
  lmpb_broker_open(L);
  lmpb_executor_open(L);
  lmpb_start_open(L);
  lmpb_log_open(L);
  lmpb_sync_open(L);
  lmpb_array_open(L);
  lmpb_shmem_open(L);
  lmpb_dict_open(L);
  lmpb_scripts_open(L);
  return 1;
}

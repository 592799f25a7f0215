/*
 * linit.c -- the opener (linit.c's role for lmp): luaopen_lmp_core builds
 * the C core table, lmp.core, from the table of family openers below, and
 * luaopen_lmp runs the Lua module over it (scripts/lmp/init.lua, embedded).
 *
 *   require "lmp"       lmp.so's luaopen_lmp: opens the core (once per
 *                       state: it is package.loaded["lmp.core"]), then runs
 *                       the embedded init chunk and returns its table;
 *   require "lmp.core"  the core alone (luaopen_lmp_core), which is also
 *                       what an installed scripts/lmp/init.lua requires.
 *
 * As LuaSocket's socket.lua requires socket.core and extends it, the Lua
 * module copies the core's functions into lmp and adds what is clearer in
 * Lua (Pool's dispatch, Executor, Manager, logging, profiling), loading
 * scripts/lmp/ modules on first use.  Calls go one way: Lua calls C; no C
 * function here looks a Lua module up by name.  Each family only adds its
 * own fields to the core table, so the order of the table below does not
 * matter.
 *
 * Opening the core initializes the runtime (this process becomes the root
 * unless it was started by another lmp process).  A sentinel userdata in
 * the registry shuts the state's children down when the state closes:
 * daemon children are terminated, the others joined.  An atexit hook does
 * the same for a script that ends with os.exit() without closing its
 * state.  ^C (SIGINT) interrupts the root, as Python's KeyboardInterrupt
 * does (lmpaux.c).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "lmp.h"
#include "lmp/proc.h"
#include "lmp/runtime.h"
#include "lmpaux.h"
#include "lmpb.h"

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
  /* the tag again, where lmpb_owner reads it */
  lua_pushinteger(L, (lua_Integer)s->owner);
  lua_setfield(L, LUA_REGISTRYINDEX, LMPB_OWNER_KEY);
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

/* === the core === */

/* The families, each adding its fields to the core table on top. */
static const lua_CFunction families[] = {
    lmpb_error_open,  lmpb_codec_open,    lmpb_process_open, lmpb_pipe_open,
    lmpb_queue_open,  lmpb_pool_open,     lmpb_profile_open, lmpb_top_open,
    lmpb_broker_open, lmpb_executor_open, lmpb_start_open,   lmpb_log_open,
    lmpb_sync_open,   lmpb_array_open,    lmpb_shmem_open,   lmpb_dict_open, NULL,
};

LMP_API int luaopen_lmp_core(lua_State *L)
{
  int rc = lmp_runtime_init();
  if (rc == -EAGAIN) /* fork refused: the watchdog could not start */
    return lmpb_start_error(L, "lmp", "the runtime's watchdog", rc);
  if (rc < 0)
    return luaL_error(L, "lmp: cannot initialize the runtime: %s", lmp_strerror(rc));
  sentinel_open(L);
  lmpb_interrupt_open(L, lmp_runtime_is_root());
  luaL_newlib(L, funcs);
  lua_pushliteral(L, "lmp " LMP_VERSION_STRING);
  lua_setfield(L, -2, "_VERSION");
  for (int i = 0; families[i]; i++)
    families[i](L);
  lmpb_scripts_open(L);
  return 1;
}

/* === the module === */

LMP_API int luaopen_lmp(lua_State *L)
{
  luaL_requiref(L, "lmp.core", luaopen_lmp_core, 0);
  lua_pop(L, 1);
  if (lmpb_scripts_load(L, "lmp") != LUA_OK)
    return lua_error(L);
  lua_pushliteral(L, "lmp");
  lua_call(L, 1, 1);
  return 1;
}

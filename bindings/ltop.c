/*
 * ltop.c -- what `lmp top` (scripts/lmp/top.lua) needs from C: the pools of
 * this user's running lmp programs, read from their shared segments without
 * taking part (lmp_pool_list / lmp_pool_peek), a terminal in cbreak mode, and
 * a terminal's size (for lmp top's screen and scripts/lmp/progress.lua).
 *
 * They are lmp.core.top, for scripts/lmp/top.lua.  The terminal is put in cbreak
 * mode (no echo, keys one at a time, ^C still a signal) and restored by
 * restore(), which the Lua side calls on every way out; SIGINT, SIGTERM and
 * SIGHUP only set a flag here, which key() reports, so the restore happens
 * in normal context.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include "lmp/pool.h"
#include "lmp/proc.h"
#include "lmpaux.h"
#include "lmpb.h"

#define MAX_POOLS 256
#define MAX_SLOTS 4096

/* === programs and pools === */

/* programs() -> {root pid, ...} */
static int l_programs(lua_State *L)
{
  pid_t pids[256];
  int n = lmp_pool_programs(pids, 256);
  if (n < 0)
    return lmpb_fail(L, lmp_strerror(n));
  lua_createtable(L, n, 0);
  for (int i = 0; i < n && i < 256; i++) {
    lua_pushinteger(L, pids[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* pools([pid]) -> {{root =, owner =, name =}, ...} */
static int l_pools(lua_State *L)
{
  pid_t pid = (pid_t)luaL_optinteger(L, 1, 0);
  lmp_pool_entry_t *e = lua_newuserdatauv(L, MAX_POOLS * sizeof *e, 0);
  int n = lmp_pool_list(pid, e, MAX_POOLS);
  if (n < 0)
    return lmpb_fail(L, lmp_strerror(n));
  lua_createtable(L, n, 0);
  for (int i = 0; i < n && i < MAX_POOLS; i++) {
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, e[i].root);
    lua_setfield(L, -2, "root");
    lua_pushinteger(L, e[i].owner);
    lua_setfield(L, -2, "owner");
    lua_pushstring(L, e[i].name);
    lua_setfield(L, -2, "name");
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/* peek(name) -> stats table with workers, as pool:stats() | nil, message */
static int l_peek(lua_State *L)
{
  const char *name = luaL_checkstring(L, 1);
  lmp_pool_slot_info_t *s = lua_newuserdatauv(L, MAX_SLOTS * sizeof *s, 0);
  lmp_pool_stats_t st;
  int n = lmp_pool_peek(name, &st, s, MAX_SLOTS);
  if (n < 0)
    return lmpb_fail(L, lmp_strerror(n));
  int64_t now = lmp_now_ns();
  lmpb_push_stats(L, &st);
  lua_createtable(L, n, 0);
  for (int i = 0; i < n && i < MAX_SLOTS; i++) {
    lmpb_push_slot(L, &s[i], now);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "workers");
  return 1;
}

/* usage(pid) -> cpu seconds, rss bytes | nil, message */
static int l_usage(lua_State *L)
{
  lmp_proc_usage_t u;
  int rc = lmp_proc_usage((pid_t)luaL_checkinteger(L, 1), &u);
  if (rc < 0)
    return lmpb_fail(L, lmp_strerror(rc));
  lua_pushnumber(L, (lua_Number)u.cpu_ns / 1e9);
  lua_pushinteger(L, (lua_Integer)u.rss);
  return 2;
}

/* === the terminal === */

static struct termios saved;
static int raw_on;
static volatile sig_atomic_t got_signal;
static struct sigaction old_int, old_term, old_hup;

static void on_signal(int sig)
{
  got_signal = sig;
}

/* raw() -> true | nil, message: stdin in cbreak mode, signals noted. */
static int l_raw(lua_State *L)
{
  if (raw_on) {
    lua_pushboolean(L, 1);
    return 1;
  }
  if (tcgetattr(0, &saved) < 0)
    return lmpb_fail(L, strerror(errno));
  struct termios t = saved;
  t.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
  t.c_cc[VMIN] = 1;
  t.c_cc[VTIME] = 0;
  if (tcsetattr(0, TCSANOW, &t) < 0)
    return lmpb_fail(L, strerror(errno));
  raw_on = 1;
  got_signal = 0;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  sigaction(SIGHUP, &sa, &old_hup);
  lua_pushboolean(L, 1);
  return 1;
}

/* restore(): the terminal as raw() found it; idempotent. */
static int l_restore(lua_State *L)
{
  (void)L;
  if (!raw_on)
    return 0;
  tcsetattr(0, TCSANOW, &saved);
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
  sigaction(SIGHUP, &old_hup, NULL);
  raw_on = 0;
  return 0;
}

/* key(timeout) -> the key read | nil, "timeout" | nil, "signal" | nil, "closed" */
static int l_key(lua_State *L)
{
  lua_Number t = luaL_checknumber(L, 1);
  int64_t deadline = lmp_now_ns() + (int64_t)(t * 1e9);
  for (;;) {
    if (got_signal)
      return lmpb_fail(L, "signal");
    int64_t left = deadline - lmp_now_ns();
    if (left <= 0)
      return lmpb_fail(L, "timeout");
    struct pollfd p = {0, POLLIN, 0};
    int rc = poll(&p, 1, (int)(left / 1000000) + 1);
    if (rc < 0 && errno == EINTR)
      continue;
    if (rc <= 0)
      continue;
    char c;
    ssize_t n = read(0, &c, 1);
    if (n == 1) {
      lua_pushlstring(L, &c, 1);
      return 1;
    }
    if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
      return lmpb_fail(L, "closed");
  }
}

/* A positive count from the environment variable name, or dflt. */
static lua_Integer env_count(const char *name, lua_Integer dflt)
{
  const char *s = getenv(name);
  char *end;
  long n = s ? strtol(s, &end, 10) : 0;
  return s && *s && !*end && n > 0 && n < 100000 ? n : dflt;
}

/* size([fd]) -> rows, columns of the terminal on fd (1): its window size
 * now (so a resize shows), else LINES and COLUMNS, else 24 and 80 */
static int l_size(lua_State *L)
{
  struct winsize ws;
  int fd = (int)luaL_optinteger(L, 1, 1);
  int ok = ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0;
  lua_pushinteger(L, ok ? ws.ws_row : env_count("LINES", 24));
  lua_pushinteger(L, ok ? ws.ws_col : env_count("COLUMNS", 80));
  return 2;
}

/* isatty(fd) -> boolean */
static int l_isatty(lua_State *L)
{
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

static const luaL_Reg funcs[] = {
    {"programs", l_programs}, {"pools", l_pools},     {"peek", l_peek}, {"usage", l_usage},
    {"raw", l_raw},           {"restore", l_restore}, {"key", l_key},   {"size", l_size},
    {"isatty", l_isatty},     {NULL, NULL},
};

/* lmp.core.top holds these functions: a table of its own, outside the lmp
 * table, so a function whose upvalue is lmp can still be sent. */
int lmpb_top_open(lua_State *L)
{
  luaL_newlib(L, funcs);
  lua_setfield(L, -2, "top");
  return 0;
}

/*
 * lreadline.c -- the line editor of the lmp REPL: GNU readline, bound just
 * enough for scripts/lmp/repl.lua.
 *
 * Only the lmp executable links readline: main.c registers this as
 * package.preload["lmp.readline"], and lmp.so never carries it, so a host
 * that loads the module does not inherit readline's license or its terminal
 * handling.  The REPL falls back to plain reads without it, and when stdin
 * is not a terminal.
 *
 * readline is driven through its callback interface so that ^C at the
 * prompt can be handled in normal context: a SIGINT handler only records
 * the signal, the poll(2) on stdin returns EINTR, and the loop drops the
 * line and returns false.  While the REPL evaluates a chunk, icall makes ^C
 * raise "interrupted!" inside the running Lua code instead (a hook set from
 * the handler, as the lua command does), so a runaway loop does not end the
 * session, and a blocking lmp call raise an lmp.Error of kind "interrupted"
 * (a pool's map then stops its work).
 *
 *   rl.readline(prompt)     -> line | false (^C) | nil (end of input)
 *   rl.add_history(chunk); rl.read_history(path); rl.append_history(path, max)
 *                           (a chunk of several lines is one entry)
 *   rl.set_completer(fn)    fn(word, line_before_word) -> {candidates}
 *   rl.isatty(fd)           -> boolean
 *   rl.icall(msgh, fn, ...) -> like xpcall; ^C raises "interrupted!"
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include "lmpaux.h"

#define COMPLETER_KEY "lmp.readline.completer"

static lua_State *current; /* the state inside readline or icall */
static volatile sig_atomic_t got_int;
static char *cb_line;
static int cb_done;

/* === ^C === */

static void on_sigint(int sig)
{
  (void)sig;
  got_int = 1;
}

static void stop_hook(lua_State *L, lua_Debug *ar)
{
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted!");
}

/* During icall: make the running code raise at its next instruction. */
static void on_sigint_eval(int sig)
{
  (void)sig;
  lmpb_interrupt_request(); /* a blocking lmp call raises "interrupted" */
  if (current)
    lua_sethook(current, stop_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static void catch_sigint(void (*fn)(int), struct sigaction *old)
{
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = fn;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, old); /* no SA_RESTART: poll must return EINTR */
}

/* === reading a line === */

static void on_line(char *line)
{
  cb_line = line;
  cb_done = 1;
  rl_callback_handler_remove();
}

static int l_readline(lua_State *L)
{
  const char *prompt = luaL_optstring(L, 1, "");
  struct sigaction old;
  got_int = 0;
  cb_done = 0;
  cb_line = NULL;
  current = L;
  catch_sigint(on_sigint, &old);
  rl_callback_handler_install(prompt, on_line);
  int interrupted = 0;
  while (!cb_done) {
    struct pollfd p = {STDIN_FILENO, POLLIN, 0};
    int n = poll(&p, 1, -1);
    if (n < 0 && errno == EINTR && got_int) {
      interrupted = 1;
      break;
    }
    if (n > 0)
      rl_callback_read_char();
  }
  if (interrupted) {
    rl_free_line_state();
    rl_callback_sigcleanup();
    rl_callback_handler_remove();
    fputs("\n", stdout);
    fflush(stdout);
  }
  sigaction(SIGINT, &old, NULL);
  current = NULL;
  if (interrupted) {
    lua_pushboolean(L, 0);
  } else if (cb_line) {
    lua_pushstring(L, cb_line);
    free(cb_line);
  } else {
    lua_pushnil(L);
  }
  return 1;
}

/* === history === */

static int l_add_history(lua_State *L)
{
  add_history(luaL_checkstring(L, 1));
  return 0;
}

static int l_read_history(lua_State *L)
{
  lua_pushboolean(L, read_history(luaL_checkstring(L, 1)) == 0);
  return 1;
}

/* Append the newest entry to the file (creating it), keep at most `max`. */
static int l_append_history(lua_State *L)
{
  const char *path = luaL_checkstring(L, 1);
  int max = (int)luaL_optinteger(L, 2, 1000);
  int rc = append_history(1, path);
  if (rc == ENOENT)
    rc = write_history(path);
  if (rc == 0)
    history_truncate_file(path, max);
  lua_pushboolean(L, rc == 0);
  return 1;
}

/* === completion === */

static char **matches;
static int nmatches;

static char *next_match(const char *text, int state)
{
  (void)text;
  return state < nmatches ? strdup(matches[state]) : NULL;
}

/* Ask the Lua completer for the candidates of `text`. */
static char **complete(const char *text, int start, int end)
{
  (void)end;
  rl_attempted_completion_over = 1;      /* never fall back to file names */
  rl_completion_append_character = '\0'; /* "lmp.Queue" then "(" or ".", not a space */
  lua_State *L = current;
  if (!L)
    return NULL;
  int top = lua_gettop(L);
  char **found = NULL;
  if (lua_getfield(L, LUA_REGISTRYINDEX, COMPLETER_KEY) == LUA_TFUNCTION) {
    lua_pushstring(L, text);
    lua_pushlstring(L, rl_line_buffer, (size_t)start);
    if (lua_pcall(L, 2, 1, 0) == LUA_OK && lua_istable(L, -1)) {
      int n = (int)lua_rawlen(L, -1);
      matches = calloc((size_t)n + 1, sizeof *matches);
      nmatches = 0;
      for (int i = 1; matches && i <= n; i++) {
        if (lua_rawgeti(L, -1, i) == LUA_TSTRING)
          matches[nmatches++] = (char *)lua_tostring(L, -1); /* anchored by the table */
        lua_pop(L, 1);
      }
      if (nmatches > 0)
        found = rl_completion_matches(text, next_match);
      free(matches);
      matches = NULL;
      nmatches = 0;
    }
  }
  lua_settop(L, top);
  return found;
}

static int l_set_completer(lua_State *L)
{
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, COMPLETER_KEY);
  return 0;
}

/* === the rest === */

static int l_isatty(lua_State *L)
{
  lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
  return 1;
}

/* rl.icall(msgh, fn, ...): xpcall during which ^C raises "interrupted!". */
static int l_icall(lua_State *L)
{
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checkany(L, 2);
  struct sigaction old;
  lua_State *saved = current;
  current = L;
  catch_sigint(on_sigint_eval, &old);
  int status = lua_pcall(L, lua_gettop(L) - 2, LUA_MULTRET, 1);
  sigaction(SIGINT, &old, NULL);
  lua_sethook(L, NULL, 0, 0);
  current = saved;
  lua_pushboolean(L, status == LUA_OK);
  lua_replace(L, 1);
  return lua_gettop(L);
}

static const luaL_Reg funcs[] = {
    {"readline", l_readline},
    {"add_history", l_add_history},
    {"read_history", l_read_history},
    {"append_history", l_append_history},
    {"set_completer", l_set_completer},
    {"isatty", l_isatty},
    {"icall", l_icall},
    {NULL, NULL},
};

int lmpb_readline_open(lua_State *L)
{
  rl_readline_name = "lmp";
  rl_attempted_completion_function = complete;
  rl_basic_word_break_characters = " \t\n\"\\'`@$><=;|&{(+-*/%^~#,)[]}";
  /* A multi-line chunk is one entry, in the file too: entries there are
   * separated by their timestamps, so its lines stay together. */
  history_write_timestamps = 1;
  history_multiline_entries = 1;
  using_history();
  luaL_newlib(L, funcs);
  return 1;
}

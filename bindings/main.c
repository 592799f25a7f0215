/*
 * main.c -- the lmp command: a Lua 5.4 interpreter with lmp built in.
 *
 *   lmp script.lua [args]   run a script; arg and ... as with lua
 *   lmp -e 'code'           run code (several -e run in order)
 *   lmp -l name             require a module into a global of that name
 *   lmp -i                  enter the REPL after the script
 *   lmp                     REPL
 *   lmp worker ... | lmp top ...   subcommands (scripts/lmp/<name>.lua)
 *   lmp --version | --help
 *
 * The module is linked in and registered as package.loaded.lmp (and the
 * global `lmp`), so `require "lmp"` needs no LUA_CPATH and never loads a
 * second copy of the runtime.  The Lua-side code that would run here (the
 * REPL) lives in scripts/lmp/repl.lua.
 *
 * Two more entries are not for people: `--lmp-child FD` is how the spawn
 * start method starts a child (the payload is in descriptor FD) and
 * `--lmp-forkserver FD` runs the fork server (runtime/forkserver.c, its Lua
 * side in lspawn.c).  They are the first argument or nothing, and --help
 * does not list them.
 */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "../runtime/broker_engine.h"
#include "lmp.h"
#include "lmpaux.h"
#include "lmpb.h"

static const char usage[] = "usage: lmp [options] [script [args]]\n"
                            "  -e code    run code\n"
                            "  -l name    require module 'name' into global 'name'\n"
                            "  -i         enter the interactive mode after running the script\n"
                            "  -v, --version  show the version\n"
                            "  -h, --help     show this help\n"
                            "  --         stop handling options\n"
                            "  -          run stdin\n"
                            "With no script and no -e, lmp starts its REPL.\n"
                            "\n"
                            "       lmp worker [BROKER_URL] [--queue q] [--processes n]\n"
                            "       lmp worker --status [BROKER_URL]\n"
                            "  serve (or list the workers of) a broker queue; the URL may come\n"
                            "  from --url-file PATH or LMP_BROKER_URL instead; see lua-api.md\n"
                            "\n"
                            "       lmp top [PID] [--once] [--interval S]\n"
                            "  list this user's running lmp programs, or show PID's pools live\n"
                            "  (workers, state, task age, CPU%, RSS, throughput, queue; q quits);\n"
                            "  --once prints one plain-text snapshot\n"
                            "\n"
                            "       lmp top --broker [BROKER_URL] [--once] [--interval S]\n"
                            "  every queue of a broker (waiting, running, delayed, dead, tasks/s)\n"
                            "  and its workers, live; the URL as for lmp worker\n";

static const char *progname = "lmp";

/* === error reporting === */

static int report(lua_State *L, int status)
{
  if (status != LUA_OK) {
    fprintf(stderr, "%s: %s\n", progname, lua_tostring(L, -1));
    fflush(stderr);
    lua_pop(L, 1);
  }
  return status;
}

/* An error that ends the program because of ^C ends it with status 130
 * (128 + SIGINT), as the shell reports a program SIGINT killed, once the
 * state is closed (children ended, segments released). */
static int interrupted;

/* The message handler: notes an interruption (lmp's lmp.Error of kind
 * "interrupted", or Lua's "interrupted!" between calls), then adds the
 * traceback. */
static int msghandler(lua_State *L)
{
  interrupted = 0;
  if (lua_type(L, 1) == LUA_TSTRING) {
    size_t n;
    const char *s = lua_tolstring(L, 1, &n);
    interrupted = n >= 12 && strcmp(s + n - 12, "interrupted!") == 0;
  } else if (lua_type(L, 1) == LUA_TTABLE && lua_getmetatable(L, 1)) {
    luaL_getmetatable(L, "lmp.Error");
    lua_getfield(L, 1, "kind");
    interrupted = lua_rawequal(L, -2, -3) && lua_type(L, -1) == LUA_TSTRING &&
                  strcmp(lua_tostring(L, -1), "interrupted") == 0;
    lua_settop(L, 1);
  }
  return lmpb_traceback(L);
}

static int docall(lua_State *L, int narg, int nres)
{
  int base = lua_gettop(L) - narg;
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  int status = lua_pcall(L, narg, nres, base);
  lua_remove(L, base);
  return status;
}

/* === running things === */

static int dostring(lua_State *L, const char *code, const char *name)
{
  int status = luaL_loadbuffer(L, code, strlen(code), name);
  if (status == LUA_OK)
    status = docall(L, 0, 0);
  return report(L, status);
}

static int dorequire(lua_State *L, const char *name)
{
  lua_getglobal(L, "require");
  lua_pushstring(L, name);
  int status = docall(L, 1, 1);
  if (status == LUA_OK)
    lua_setglobal(L, name);
  return report(L, status);
}

/* arg table as lua.c builds it: script at 0, options below, arguments above. */
static void createargtable(lua_State *L, char **argv, int argc, int script)
{
  lua_createtable(L, argc - script - 1, script + 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

static int runscript(lua_State *L, char **argv, int argc, int script)
{
  const char *fname = argv[script];
  if (strcmp(fname, "-") == 0 && strcmp(argv[script - 1], "--") != 0)
    fname = NULL; /* stdin */
  int status = luaL_loadfile(L, fname);
  if (status == LUA_OK) {
    int n = argc - script - 1;
    luaL_checkstack(L, n + 3, "too many arguments to script");
    for (int i = script + 1; i < argc; i++)
      lua_pushstring(L, argv[i]);
    status = docall(L, n, 0);
  }
  return report(L, status);
}

static int repl(lua_State *L)
{
  lua_getglobal(L, "require");
  lua_pushliteral(L, "lmp.repl");
  int status = docall(L, 1, 1);
  if (status == LUA_OK)
    status = docall(L, 0, 0);
  return report(L, status);
}

/* === options === */

struct opts {
  int script; /* index of the script in argv, 0 if none */
  int interactive;
  int has_e;
  int version;
};

/* Where lua-api.md and guide.md are: <prefix>/share/doc/lmp/ beside the
 * installed <prefix>/bin/lmp, or docs/ of the source tree beside build/lmp. */
static const char *docdir(void)
{
  static char dir[PATH_MAX];
  char exe[PATH_MAX], path[PATH_MAX + 64];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0)
    return NULL;
  exe[n] = '\0';
  char *slash = strrchr(exe, '/');
  if (slash == NULL)
    return NULL;
  *slash = '\0';
  const char *rel[] = {"/../share/doc/lmp", "/../docs", NULL};
  for (int i = 0; rel[i]; i++) {
    snprintf(path, sizeof path, "%s%s/lua-api.md", exe, rel[i]);
    if (access(path, R_OK) == 0 && realpath(path, dir)) {
      *strrchr(dir, '/') = '\0';
      return dir;
    }
  }
  return NULL;
}

static void printusage(FILE *f)
{
  const char *dir = docdir();
  fputs(usage, f);
  if (dir)
    fprintf(f, "\nDocumentation: %s/ (lua-api.md, guide.md), and man lmp\n", dir);
  else
    fputs("\nDocumentation: docs/ of the lmp source (lua-api.md, guide.md), and man lmp\n", f);
}

/* Returns 0, or -1 after printing usage for a bad option. */
static int scanargs(char **argv, int argc, struct opts *o)
{
  memset(o, 0, sizeof *o);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-' || strcmp(a, "-") == 0) {
      o->script = i;
      return 0;
    }
    if (strcmp(a, "--") == 0) {
      o->script = i + 1 < argc ? i + 1 : 0;
      return 0;
    }
    if (strcmp(a, "-i") == 0) {
      o->interactive = 1;
    } else if (strcmp(a, "-v") == 0 || strcmp(a, "--version") == 0) {
      o->version = 1;
    } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
      printusage(stdout);
      exit(EXIT_SUCCESS);
    } else if ((strcmp(a, "-e") == 0 || strcmp(a, "-l") == 0) && i + 1 < argc) {
      o->has_e |= a[1] == 'e';
      i++;
    } else {
      fprintf(stderr, "%s: unrecognized option '%s'\n", progname, a);
      printusage(stderr);
      return -1;
    }
  }
  return 0;
}

/* Runs -e and -l in order. */
static int runoptions(lua_State *L, char **argv, int last)
{
  for (int i = 1; i < last; i++) {
    int status = LUA_OK;
    if (strcmp(argv[i], "-e") == 0)
      status = dostring(L, argv[++i], "=(command line)");
    else if (strcmp(argv[i], "-l") == 0)
      status = dorequire(L, argv[++i]);
    if (status != LUA_OK)
      return status;
  }
  return LUA_OK;
}

/* === main === */

/* lreadline.c: the REPL's line editor, linked into this executable only. */
int lmpb_readline_open(lua_State *L);

static void openlmp(lua_State *L)
{
  luaL_checkversion(L);
  luaL_openlibs(L);
  luaL_requiref(L, "lmp", luaopen_lmp, 1);
  lua_pop(L, 1);
  /* The executable provides the REPL's line editor as a module of its own,
   * as lua.c's host provides the standard libraries. */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, lmpb_readline_open);
  lua_setfield(L, -2, "lmp.readline");
  lua_pop(L, 1);
}

/* === subcommands === */

/* `lmp NAME args...` for each NAME here runs lmp.NAME's main(argv), which
 * returns the exit status.  (A script file of that name runs as `lmp ./NAME`.) */
static const char *const subcommands[] = {"worker", "top", NULL};

static int issubcommand(int argc, char **argv)
{
  for (int i = 0; argc > 1 && subcommands[i]; i++)
    if (strcmp(argv[1], subcommands[i]) == 0)
      return 1;
  return 0;
}

/* Pushes the exit status. */
static void runsubcommand(lua_State *L, int argc, char **argv)
{
  openlmp(L);
  lua_getglobal(L, "require");
  lua_pushfstring(L, "lmp.%s", argv[1]);
  int status = docall(L, 1, 1);
  if (status == LUA_OK) {
    lua_getfield(L, -1, "main");
    lua_createtable(L, argc - 2, 0);
    for (int i = 2; i < argc; i++) {
      lua_pushstring(L, argv[i]);
      lua_rawseti(L, -2, i - 1);
    }
    status = docall(L, 1, 1);
  }
  if (report(L, status) != LUA_OK)
    lua_pushinteger(L, EXIT_FAILURE);
  else if (!lua_isinteger(L, -1))
    lua_pushinteger(L, lua_toboolean(L, -1) ? EXIT_SUCCESS : EXIT_FAILURE);
}

/* `lmp worker redis://user:PASSWORD@host...` (and `lmp top --broker ...`):
 * other users read command lines (ps, /proc/PID/cmdline show the memory of
 * argv, and of the children forked with it).  So each argument holding a password is copied for the
 * program and the password's bytes in argv are overwritten, before anything
 * else runs. */
static void hide_passwords(int argc, char **argv)
{
  for (int i = 2; i < argc; i++) {
    size_t off = 0, len = lmp__broker_url_password(argv[i], &off);
    if (len == 0)
      continue;
    char *copy = strdup(argv[i]);
    if (copy == NULL) {
      fprintf(stderr, "%s: not enough memory\n", progname);
      exit(EXIT_FAILURE);
    }
    memset(argv[i] + off, 'x', len);
    argv[i] = copy;
  }
}

/* The hidden entries; returns only if argv is not one of them. */
static void hidden(lua_State *L, int argc, char **argv)
{
  if (argc < 3)
    return;
  char *end;
  long fd = strtol(argv[2], &end, 10);
  if (*end || fd < 0 || fd > 65535)
    return;
  if (strcmp(argv[1], "--lmp-child") == 0 && argc == 3) {
    openlmp(L);
    lmpb_spawn_main(L, (int)fd);
  }
  if (strcmp(argv[1], "--lmp-forkserver") == 0) {
    openlmp(L);
    lmpb_forkserver_main(L, (int)fd, argc - 3, argv + 3);
  }
}

static int pmain(lua_State *L)
{
  int argc = (int)lua_tointeger(L, 1);
  char **argv = lua_touserdata(L, 2);
  hidden(L, argc, argv);
  if (issubcommand(argc, argv)) {
    runsubcommand(L, argc, argv);
    return 1;
  }
  struct opts o;
  if (scanargs(argv, argc, &o) < 0)
    return 0;
  if (o.version) {
    printf("lmp %s (%s)\n", LMP_VERSION_STRING, LUA_RELEASE);
    if (!o.script && !o.has_e && !o.interactive)
      goto ok;
  }
  openlmp(L);
  createargtable(L, argv, argc, o.script);
  int last = o.script ? o.script : argc;
  if (runoptions(L, argv, last) != LUA_OK)
    return 0;
  if (o.script && runscript(L, argv, argc, o.script) != LUA_OK)
    return 0;
  if (o.interactive || (!o.script && !o.has_e && !o.version)) {
    if (repl(L) != LUA_OK)
      return 0;
  }
ok:
  lua_pushinteger(L, EXIT_SUCCESS);
  return 1;
}

/* === the state's allocator ===
 *
 * Lua allocates and frees small blocks at a high rate (tables, their
 * parts, closures, strings) and, unlike malloc, tells the allocator each
 * block's size when freeing it.  The lmp executable keeps the blocks Lua
 * frees, up to 256 bytes, on a free list of their size class (16 bytes
 * apart) and hands them out again, so the common allocation is a pop and
 * the common free a push.  Each list keeps at most CACHE_BYTES; past that,
 * and for larger blocks, malloc and free serve as usual, and every block
 * is a malloc block, whichever path made it: a small one is made at its
 * whole class size.  Sanitizer builds keep no lists, so that every use of
 * freed memory is still seen.  A state not made by luaL_newstate needs its
 * panic and warning functions of its own: they behave as lauxlib's. */
#define SMALL_MAX 256
#define CLASSES (SMALL_MAX / 16)
#define CACHE_BYTES (256 * 1024)

#if defined(__SANITIZE_ADDRESS__)
#define KEEP_BLOCKS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KEEP_BLOCKS 0
#endif
#endif
#ifndef KEEP_BLOCKS
#define KEEP_BLOCKS 1
#endif

struct blocks {
  void *head[CLASSES];
  size_t kept[CLASSES]; /* blocks on each list */
};

static struct blocks blocks;

static size_t class_of(size_t n)
{
  return (n - 1) / 16;
}

static void *block_new(size_t n)
{
  if (KEEP_BLOCKS && n <= SMALL_MAX) {
    size_t c = class_of(n);
    void *b = blocks.head[c];
    if (b != NULL) {
      blocks.head[c] = *(void **)b;
      blocks.kept[c]--;
      return b;
    }
    return malloc((c + 1) * 16);
  }
  return malloc(n);
}

static void block_free(void *p, size_t n)
{
  if (KEEP_BLOCKS && n <= SMALL_MAX) {
    size_t c = class_of(n);
    if (blocks.kept[c] < CACHE_BYTES / ((c + 1) * 16)) {
      *(void **)p = blocks.head[c];
      blocks.head[c] = p;
      blocks.kept[c]++;
      return;
    }
  }
  free(p);
}

static void *allocate(void *ud, void *p, size_t osize, size_t nsize)
{
  (void)ud;
  if (p == NULL) /* osize is then the kind of object, not a size */
    return nsize == 0 ? NULL : block_new(nsize);
  if (nsize == 0) {
    block_free(p, osize);
    return NULL;
  }
  if (osize > SMALL_MAX && nsize > SMALL_MAX)
    return realloc(p, nsize);
  if (nsize <= osize)
    return p; /* shrunk in place: a smaller class when it is freed */
  void *q = block_new(nsize);
  if (q != NULL) {
    memcpy(q, p, osize);
    block_free(p, osize);
  }
  return q;
}

static int panic(lua_State *L)
{
  const char *msg =
      lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "error object is not a string";
  fprintf(stderr, "%s: PANIC: unprotected error in call to Lua API (%s)\n", progname, msg);
  fflush(stderr);
  return 0; /* lua_error aborts */
}

/* warn(): off until "@on", back off at "@off"; a message in several parts
 * (tocont) is one line. */
static struct {
  int on, midline;
} warnings;

static void warning(void *ud, const char *msg, int tocont)
{
  (void)ud;
  if (!warnings.midline && msg[0] == '@') { /* a control message */
    if (strcmp(msg + 1, "on") == 0)
      warnings.on = 1;
    else if (strcmp(msg + 1, "off") == 0)
      warnings.on = 0;
    return;
  }
  if (!warnings.on)
    return;
  fprintf(stderr, "%s%s%s", warnings.midline ? "" : "Lua warning: ", msg, tocont ? "" : "\n");
  fflush(stderr);
  warnings.midline = tocont;
}

int main(int argc, char **argv)
{
  if (argc > 1 && (strcmp(argv[1], "worker") == 0 || strcmp(argv[1], "top") == 0))
    hide_passwords(argc, argv);
  lmpb_set_executable("/proc/self/exe");
  lua_State *L = lua_newstate(allocate, NULL);
  if (L == NULL) {
    fprintf(stderr, "%s: cannot create state: not enough memory\n", progname);
    return EXIT_FAILURE;
  }
  lua_atpanic(L, panic);
  lua_setwarnf(L, warning, NULL);
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  int status = lua_pcall(L, 2, 1, 0);
  int code = status == LUA_OK && lua_isinteger(L, -1) ? (int)lua_tointeger(L, -1) : EXIT_FAILURE;
  report(L, status);
  lua_close(L);
  return interrupted && code == EXIT_FAILURE ? 128 + SIGINT : code;
}

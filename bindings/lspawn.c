/*
 * lspawn.c -- start methods: fork, spawn and forkserver, and the module
 * functions that choose between them.
 *
 * fork is lmp_proc_fork: the child is a copy and calls the target in the
 * state it inherited.  The other two start the child from a clean state, so
 * the target and its arguments travel as a payload: three framed codec
 * messages (the target, the arguments, and a "meta" table with what the
 * child needs to resemble its parent: package.path and cpath, the main
 * script's directory, the C modules loaded here, arg, the current
 * directory, the default start method, the logging set-up, the names).  The
 * payload is written to a memfd before anything is started, so no writer
 * ever blocks on a slow reader and the descriptor is the whole channel:
 *
 *   spawn       lmp_proc_spawn execs `lmp --lmp-child FD` with the memfd
 *               kept at FD; the new process joins this program's family
 *               through LMP_PREFIX / LMP_ROOT_PID, so handles in the payload
 *               attach as anywhere else.  The channel is trusted: only this
 *               process could have written that descriptor.
 *   forkserver  runtime/forkserver.c: on first use this process starts
 *               `lmp --lmp-forkserver FD PATH CPATH DIR [preloads...]`, a
 *               server with nothing but lmp (and the preloads, required
 *               with this process's paths) loaded; each start sends it the
 *               memfd, the server forks, and its child runs the payload as
 *               spawn's does.  The requester adopts the child
 *               (lmp_proc_adopt): join, exitcode, is_alive, terminate and
 *               kill work as for its own children.  This file builds the
 *               server's command line and gives it the Lua side: the paths
 *               and preloads before the first request, the payload in each
 *               child.
 *
 * Finding the executable: LMP_EXECUTABLE; the running lmp binary (main.c
 * says so); `lmp` next to the loaded lmp.so, or in the bin/ of the prefix it
 * was installed under; then PATH.  spawn raises if none is found.
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lmp/proc.h"
#include "lmp/runtime.h"
#include "../runtime/forkserver.h"
#include "codec.h"
#include "lmpaux.h"
#include "lmpb.h"

#define PRELOAD_KEY "lmp.forkserver_preload"

static const char K_LOG_EXPORT, K_LOG_IMPORT; /* registry: the logging hooks (l_log_hooks) */

enum { FORK, SPAWN, FORKSERVER };
static const char *const methods[] = {"fork", "spawn", "forkserver", NULL};

static char executable[PATH_MAX];

/* === helpers === */

/* The default start method is each Lua state's own, kept in its registry:
 * a host that runs several states lets each choose (the executable and the
 * forkserver are the process's). */
#define METHOD_KEY "lmp.start_method"

typedef struct method_choice {
  int method;
  int set; /* set_start_method was called */
} method_choice;

static method_choice *choice(lua_State *L)
{
  method_choice *c;
  if (lua_getfield(L, LUA_REGISTRYINDEX, METHOD_KEY) == LUA_TUSERDATA) {
    c = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return c;
  }
  lua_pop(L, 1);
  c = lua_newuserdatauv(L, sizeof *c, 0);
  c->method = FORK;
  c->set = 0;
  lua_setfield(L, LUA_REGISTRYINDEX, METHOD_KEY);
  return c;
}

static int method_index(const char *name)
{
  for (int i = 0; methods[i]; i++)
    if (strcmp(methods[i], name) == 0)
      return i;
  return -1;
}

const char *lmpb_checkmethod(lua_State *L, int idx, int arg)
{
  if (lua_isnoneornil(L, idx))
    return NULL;
  const char *name =
      lua_type(L, idx) == LUA_TSTRING ? lmpb_checkcstring(L, idx, arg, "start method") : NULL;
  int i = name ? method_index(name) : -1;
  if (i < 0)
    luaL_argerror(L, arg,
                  lua_pushfstring(L, "unknown start method '%s'", luaL_tolstring(L, idx, NULL)));
  return methods[i];
}

/* write(2) all of it, or -errno. */
static int write_all(int fd, const void *p, size_t n)
{
  const char *s = p;
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return w < 0 ? -errno : -EIO;
    s += w;
    n -= (size_t)w;
  }
  return 0;
}

/* === the executable === */

void lmpb_set_executable(const char *path)
{
  if (!realpath(path, executable))
    snprintf(executable, sizeof executable, "%s", path);
}

static int is_exec(const char *path)
{
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* `lmp` beside the loaded module, or in the bin/ of its install prefix
 * (<prefix>/lib/lua/5.4/lmp.so -> <prefix>/bin/lmp). */
static void find_beside_module(void)
{
  Dl_info info;
  char dir[PATH_MAX], path[PATH_MAX + 32];
  /* this very function is in the module */
  if (!dladdr((void *)find_beside_module, &info) || !info.dli_fname ||
      !realpath(info.dli_fname, dir))
    return;
  char *slash = strrchr(dir, '/');
  if (!slash)
    return;
  *slash = '\0';
  const char *rel[] = {"/lmp", "/../../../bin/lmp", NULL};
  for (int i = 0; rel[i]; i++) {
    snprintf(path, sizeof path, "%s%s", dir, rel[i]);
    if (is_exec(path) && realpath(path, executable))
      return;
  }
}

/* The lmp executable to exec, or NULL. */
static const char *find_executable(void)
{
  const char *env = getenv("LMP_EXECUTABLE");
  if (env && *env)
    return env;
  if (executable[0])
    return executable;
  const char *path = getenv("PATH");
  static char found[PATH_MAX + 8];
  while (path && *path) {
    size_t n = strcspn(path, ":");
    snprintf(found, sizeof found, "%.*s/lmp", (int)n, n ? path : ".");
    if (n < PATH_MAX && is_exec(found))
      return found;
    path += n + (path[n] == ':');
  }
  return NULL;
}

static const char *checkexecutable(lua_State *L)
{
  const char *exe = find_executable();
  if (!exe)
    luaL_error(L, "cannot find the lmp executable for the spawn and forkserver start methods "
                  "(set LMP_EXECUTABLE)");
  return exe;
}

/* === the payload === */

/* Directory of the main script (arg[0]), for the child's package.path. */
static void push_script_dir(lua_State *L)
{
  char path[PATH_MAX];
  int top = lua_gettop(L), ok = 0;
  if (lua_getglobal(L, "arg") == LUA_TTABLE && lua_geti(L, -1, 0) == LUA_TSTRING)
    ok = realpath(lua_tostring(L, -1), path) != NULL && strrchr(path, '/') != NULL;
  lua_settop(L, top);
  if (ok) {
    char *slash = strrchr(path, '/');
    *slash = '\0';
    lua_pushstring(L, path[0] ? path : "/");
  } else {
    lua_pushnil(L);
  }
}

/* Names of the modules in package.loaded that hold a C function of their
 * own: a C function crosses by its name there, so the child must load them
 * first.  The standard libraries and lmp are there anyway, and a Lua module
 * that only re-exports standard functions needs no loading. */
static void push_modules(lua_State *L)
{
  static const char *const std[] = {"_G",     "package", "coroutine", "table", "io", "os",
                                    "string", "math",    "utf8",      "debug", NULL};
  int top = lua_gettop(L);
  lua_newtable(L);                                      /* top + 1: the names */
  lua_newtable(L);                                      /* top + 2: the standard C functions */
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE); /* top + 3 */
  for (int i = 0; std[i]; i++) {
    if (lua_getfield(L, top + 3, std[i]) == LUA_TTABLE) {
      lua_pushnil(L);
      while (lua_next(L, -2)) {
        if (lua_iscfunction(L, -1)) {
          lua_pushboolean(L, 1);
          lua_rawset(L, top + 2);
        } else {
          lua_pop(L, 1);
        }
      }
    }
    lua_pop(L, 1);
  }
  int n = 0;
  lua_pushnil(L);
  while (lua_next(L, top + 3)) {
    const char *name = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
    int skip =
        !name || !lua_istable(L, -1) || strcmp(name, "lmp") == 0 || strncmp(name, "lmp.", 4) == 0;
    for (int i = 0; !skip && std[i]; i++)
      skip = strcmp(name, std[i]) == 0;
    int own = 0;
    if (!skip) {
      lua_pushnil(L);
      while (!own && lua_next(L, -2)) {
        if (lua_iscfunction(L, -1)) {
          lua_pushvalue(L, -1);
          own = lua_rawget(L, top + 2) == LUA_TNIL;
          lua_pop(L, 1);
        }
        lua_pop(L, 1);
      }
      if (own)
        lua_pop(L, 1); /* the key lua_next left */
    }
    if (own) {
      lua_pushvalue(L, -2);
      lua_rawseti(L, top + 1, ++n);
    }
    lua_pop(L, 1);
  }
  lua_settop(L, top + 1);
}

/* Push the meta table of a payload. */
static void push_meta(lua_State *L, const lmpb_start_t *how)
{
  char cwd[PATH_MAX];
  lua_createtable(L, 0, 12);
  int t = lua_gettop(L);
  lua_pushstring(L, how->name ? how->name : "Process");
  lua_setfield(L, t, "name");
  lua_pushstring(L, lmpb_process_name());
  lua_setfield(L, t, "pname");
  lua_pushinteger(L, getpid());
  lua_setfield(L, t, "ppid");
  lua_pushstring(L, methods[choice(L)->method]);
  lua_setfield(L, t, "method");
  lua_getglobal(L, "package");
  if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "path");
    lua_setfield(L, t, "path");
    lua_getfield(L, -1, "cpath");
    lua_setfield(L, t, "cpath");
  }
  lua_settop(L, t);
  push_script_dir(L);
  lua_setfield(L, t, "dir");
  if (lua_getglobal(L, "arg") == LUA_TTABLE)
    lua_setfield(L, t, "arg");
  else
    lua_pop(L, 1);
  if (getcwd(cwd, sizeof cwd)) {
    lua_pushstring(L, cwd);
    lua_setfield(L, t, "cwd");
  }
  push_modules(L);
  lua_setfield(L, t, "modules");
  /* The logging set-up, if logging is in use here. */
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &K_LOG_EXPORT) == LUA_TFUNCTION) {
    lua_call(L, 0, 1);
    lua_setfield(L, t, "log");
  }
  lua_settop(L, t);
}

/* Encode the value on top as one frame (a 4-byte length, then the bytes)
 * and replace it with the frame as a string. */
static void frame(lua_State *L, const char *what)
{
  const lmp_buf_t *b = lmpb_encode(L, -1, what);
  if (b->len > UINT32_MAX)
    luaL_error(L, "start: %s too large to send", what);
  uint32_t n = (uint32_t)b->len;
  /* Copied before anything else allocates: a finalizer run by the
   * allocator could encode and reuse the buffer. */
  lua_pushlstring(L, b->data, b->len);
  lua_pushlstring(L, (const char *)&n, sizeof n);
  lua_insert(L, -2);
  lua_concat(L, 2);
  lua_replace(L, -2);
}

/*
 * The payload of the function at fn_idx and its nargs arguments, in a new
 * memfd positioned nowhere in particular (the child preads).  Returns the
 * descriptor or -errno; serialization errors raise before any descriptor
 * exists.
 */
static int payload(lua_State *L, int fn_idx, int nargs, const lmpb_start_t *how)
{
  int top = lua_gettop(L);
  lua_pushvalue(L, fn_idx);
  frame(L, "target");
  lua_createtable(L, nargs, 1);
  for (int i = 1; i <= nargs; i++) {
    lua_pushvalue(L, fn_idx + i);
    lua_rawseti(L, -2, i);
  }
  lua_pushinteger(L, nargs);
  lua_setfield(L, -2, "n");
  frame(L, "args");
  push_meta(L, how);
  frame(L, "meta");
  int fd = memfd_create("lmp-payload", MFD_CLOEXEC);
  int rc = fd < 0 ? -errno : 0;
  for (int i = top + 1; rc == 0 && i <= top + 3; i++) {
    size_t n;
    const char *s = lua_tolstring(L, i, &n);
    rc = write_all(fd, s, n);
  }
  lua_settop(L, top);
  if (rc < 0 && fd >= 0)
    close(fd);
  return rc < 0 ? rc : fd;
}

/* === the forkserver: requester side === */

/* Push package.path, package.cpath and the main script's directory as
 * three strings for the server's command line ("" for one that is not
 * there). */
static void push_server_paths(lua_State *L)
{
  lua_getglobal(L, "package");
  int pkg = lua_gettop(L);
  int istable = lua_istable(L, pkg);
  const char *const keys[] = {"path", "cpath"};
  for (int i = 0; i < 2; i++) {
    if (!istable || lua_getfield(L, pkg, keys[i]) != LUA_TSTRING) {
      lua_settop(L, pkg + i);
      lua_pushliteral(L, "");
    }
  }
  push_script_dir(L);
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1);
    lua_pushliteral(L, "");
  }
  lua_remove(L, pkg);
}

/* The server's command line, on the stack (which anchors its strings
 * until the request returns): exe --lmp-forkserver FD PATH CPATH DIR
 * [preload modules...].  The preloads are required with this process's
 * paths as they are now. */
typedef struct fs_start {
  lua_State *L;
  const char *exe;
} fs_start;

static int fs_command(void *ctx, lmp__fs_cmd_t *cmd)
{
  fs_start *st = ctx;
  lua_State *L = st->L;
  int top = lua_gettop(L), npre = 0;
  luaL_checkstack(L, 8, "forkserver command line");
  push_server_paths(L);
  if (lua_getfield(L, LUA_REGISTRYINDEX, PRELOAD_KEY) == LUA_TTABLE)
    npre = (int)lua_rawlen(L, -1);
  const char **argv = lua_newuserdatauv(L, (size_t)(npre + 7) * sizeof *argv, 0);
  argv[0] = st->exe;
  argv[1] = "--lmp-forkserver";
  argv[2] = NULL; /* the socket's number */
  for (int i = 0; i < 3; i++)
    argv[3 + i] = lua_tostring(L, top + 1 + i); /* anchored on the stack */
  for (int i = 1; i <= npre; i++) {
    lua_rawgeti(L, -2, i);
    argv[5 + i] = lua_tostring(L, -1); /* anchored by the preload table */
    lua_pop(L, 1);
  }
  argv[6 + npre] = NULL;
  cmd->path = st->exe;
  cmd->argv = (char **)argv;
  cmd->fd_arg = 2;
  return 0;
}

static int start_forkserver(lua_State *L, int memfd, int flags, lmp_proc_t **out)
{
  fs_start st = {L, checkexecutable(L)};
  int top = lua_gettop(L);
  int rc = lmp__fs_request(fs_command, &st, memfd, flags, out);
  lua_settop(L, top);
  return rc;
}

/* === starting a child === */

int lmpb_start_error(lua_State *L, const char *what, const char *whom, int code)
{
  if (code == -EAGAIN)
    return luaL_error(L, "%s: cannot start %s: process limit reached (ulimit -u)", what, whom);
  return lmpb_rterror(L, what, code);
}

int lmpb_spawn(lua_State *L, int fn_idx, int nargs, const lmpb_start_t *how, lmp_proc_t **out)
{
  fn_idx = lua_absindex(L, fn_idx);
  int method = how->method ? method_index(how->method) : choice(L)->method;
  *out = NULL;
  if (method < 0)
    return luaL_error(L, "unknown start method '%s'", how->method);
  if (method == FORK) {
    int rc = lmp_proc_fork(how->flags, out);
    if (rc == 0) {
      lmpb_process_become(L, how->name ? how->name : "Process", NULL, 0);
      lmpb_process_run(L, fn_idx, nargs);
    }
    if (rc > 0)
      lmp_proc_set_owner(*out, lmpb_owner(L));
    return rc < 0 ? rc : 0;
  }
  const char *exe = checkexecutable(L);
  int fd = payload(L, fn_idx, nargs, how);
  if (fd < 0)
    return fd;
  int rc;
  if (method == SPAWN) {
    char fdarg[16];
    snprintf(fdarg, sizeof fdarg, "%d", fd);
    char *argv[] = {(char *)exe, "--lmp-child", fdarg, NULL};
    rc = lmp_proc_spawn(exe, argv, fd, how->flags, out);
  } else {
    rc = start_forkserver(L, fd, how->flags, out);
  }
  close(fd);
  if (rc == 0)
    lmp_proc_set_owner(*out, lmpb_owner(L));
  return rc;
}

/* === the child's side === */

/* The three frames of the payload userdata at `ud`, as pointers and sizes. */
static int frames(lua_State *L, int ud, const char *p[3], size_t n[3])
{
  size_t len = lua_rawlen(L, ud);
  const char *s = lua_touserdata(L, ud);
  for (int i = 0; i < 3; i++) {
    uint32_t k;
    if (len < sizeof k)
      return -1;
    memcpy(&k, s, sizeof k);
    s += sizeof k;
    len -= sizeof k;
    if (k > len)
      return -1;
    p[i] = s;
    n[i] = k;
    s += k;
    len -= k;
  }
  return len == 0 ? 0 : -1;
}

/* package.path and cpath as the parent had them, then the main script's
 * directory, so the child finds the same modules and the script's own. */
static void apply_paths(lua_State *L, int meta)
{
  lua_getglobal(L, "package");
  int pkg = lua_gettop(L);
  if (lua_getfield(L, meta, "cpath") == LUA_TSTRING)
    lua_setfield(L, pkg, "cpath");
  else
    lua_pop(L, 1);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  if (lua_getfield(L, meta, "path") == LUA_TSTRING)
    luaL_addvalue(&b);
  else {
    lua_pop(L, 1);
    lua_getfield(L, pkg, "path");
    luaL_addvalue(&b);
  }
  if (lua_getfield(L, meta, "dir") == LUA_TSTRING) {
    const char *dir = lua_tostring(L, -1);
    lua_pushfstring(L, ";%s/?.lua;%s/?/init.lua", dir, dir);
    lua_remove(L, -2);
    luaL_addvalue(&b);
  } else {
    lua_pop(L, 1);
  }
  luaL_pushresult(&b);
  lua_setfield(L, pkg, "path");
  lua_pop(L, 1);
}

/* In the child, protected: resemble the parent, then decode the target and
 * its arguments and return them.  Arguments: the payload userdata and the
 * decoded meta table. */
static int child_setup(lua_State *L)
{
  int meta = 2;
  const char *p[3];
  size_t n[3];
  frames(L, 1, p, n);
  apply_paths(L, meta);
  if (lua_getfield(L, meta, "arg") == LUA_TTABLE)
    lua_setglobal(L, "arg");
  else
    lua_pop(L, 1);
  if (lua_getfield(L, meta, "cwd") == LUA_TSTRING && chdir(lua_tostring(L, -1)) < 0) {
    /* a directory removed since: stay where we are, as a fork would */
  }
  lua_pop(L, 1);
  if (lua_getfield(L, meta, "modules") == LUA_TTABLE) {
    lua_Integer k = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= k; i++) {
      lua_getglobal(L, "require");
      lua_geti(L, -2, i);
      if (lua_pcall(L, 1, 0, 0) != LUA_OK)
        lua_pop(L, 1); /* decoding will say so if it needed the module */
    }
  }
  lua_pop(L, 1);
  if (lua_getfield(L, meta, "log") == LUA_TTABLE &&
      lua_rawgetp(L, LUA_REGISTRYINDEX, &K_LOG_IMPORT) == LUA_TFUNCTION) {
    lua_pushvalue(L, -2);
    lua_call(L, 1, 0);
  }
  lua_settop(L, meta);
  int base = lua_gettop(L);
  lmpb_decode(L, p[0], n[0], 1);
  lmpb_decode(L, p[1], n[1], 1);
  lua_getfield(L, base + 2, "n");
  int nargs = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  luaL_checkstack(L, nargs, "too many arguments");
  for (int i = 1; i <= nargs; i++)
    lua_rawgeti(L, base + 2, i);
  lua_remove(L, base + 2);
  return nargs + 1;
}

/* Stands in for the target when the set-up failed, so the failure is
 * reported (and the exit code set) as the target's own error would be. */
static int rethrow(lua_State *L)
{
  return lua_error(L);
}

static int decode_meta(lua_State *L)
{
  const char *p[3];
  size_t n[3];
  if (frames(L, 1, p, n) < 0)
    return luaL_error(L, "malformed start payload");
  lmpb_decode(L, p[2], n[2], 1);
  return 1;
}

/* The child of spawn (after exec) and of the forkserver (after fork):
 * read the payload in `fd`, take the identity it names, run. */
static void run_payload(lua_State *L, int fd) __attribute__((noreturn));

static void run_payload(lua_State *L, int fd)
{
  struct stat st;
  if (fstat(fd, &st) < 0 || st.st_size < 12) {
    fprintf(stderr, "lmp: bad start payload descriptor %d\n", fd);
    lmp_proc_exit(1);
  }
  char *buf = lua_newuserdatauv(L, (size_t)st.st_size, 0);
  int ud = lua_gettop(L);
  size_t got = 0;
  while (got < (size_t)st.st_size) {
    ssize_t r = pread(fd, buf + got, (size_t)st.st_size - got, (off_t)got);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0) {
      fprintf(stderr, "lmp: cannot read the start payload: %s\n", strerror(r < 0 ? errno : EIO));
      lmp_proc_exit(1);
    }
    got += (size_t)r;
  }
  close(fd);
  lua_pushcfunction(L, decode_meta);
  lua_pushvalue(L, ud);
  if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
    fprintf(stderr, "lmp: %s\n", lua_tostring(L, -1));
    lmp_proc_exit(1);
  }
  int meta = lua_gettop(L);
  lua_getfield(L, meta, "name");
  lua_getfield(L, meta, "pname");
  lua_getfield(L, meta, "ppid");
  lmpb_process_become(L, lua_tostring(L, -3) ? lua_tostring(L, -3) : "Process",
                      lua_tostring(L, -2) ? lua_tostring(L, -2) : "MainProcess",
                      (pid_t)lua_tointeger(L, -1));
  lua_pop(L, 3);
  if (lua_getfield(L, meta, "method") == LUA_TSTRING && method_index(lua_tostring(L, -1)) >= 0)
    choice(L)->method = method_index(lua_tostring(L, -1));
  lua_pop(L, 1);
  int base = lua_gettop(L);
  lua_pushcfunction(L, child_setup);
  lua_pushvalue(L, ud);
  lua_pushvalue(L, meta);
  if (lua_pcall(L, 2, LUA_MULTRET, 0) != LUA_OK) {
    lua_pushcfunction(L, rethrow);
    lua_insert(L, -2);
    lmpb_process_run(L, base + 1, 1);
  }
  lmpb_process_run(L, base + 1, lua_gettop(L) - base - 1);
}

void lmpb_spawn_main(lua_State *L, int fd)
{
  /* The family is joined (luaopen_lmp did): the variables are spent, and
   * a program this one runs with os.execute must not join by accident. */
  unsetenv("LMP_PREFIX");
  unsetenv("LMP_ROOT_PID");
  run_payload(L, fd);
}

/* === the forkserver: server side === */

/* The requester's paths, from the server's command line, as a child's
 * apply_paths takes them from its payload. */
static void server_paths(lua_State *L, char **args)
{
  const char *const keys[] = {"path", "cpath", "dir"};
  lua_createtable(L, 0, 3);
  for (int i = 0; i < 3; i++) {
    if (args[i][0] != '\0') {
      lua_pushstring(L, args[i]);
      lua_setfield(L, -2, keys[i]);
    }
  }
  apply_paths(L, lua_gettop(L));
  lua_pop(L, 1);
}

typedef struct fs_server {
  lua_State *L;
  int nargs;
  char **args; /* PATH CPATH DIR [preload modules...] */
} fs_server;

/* Before the first request: the requester's paths and its preloads. */
static void fs_init(void *ctx)
{
  fs_server *fs = ctx;
  lua_State *L = fs->L;
  server_paths(L, fs->args);
  for (int i = 3; i < fs->nargs; i++) {
    lua_getglobal(L, "require");
    lua_pushstring(L, fs->args[i]);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
      fprintf(stderr, "lmp forkserver: preload of '%s' failed: %s\n", fs->args[i],
              lua_tostring(L, -1));
      lua_pop(L, 1);
    }
  }
}

/* In each child: the payload the request carried. */
static int fs_run(void *ctx, int payload)
{
  run_payload(((fs_server *)ctx)->L, payload);
}

void lmpb_forkserver_main(lua_State *L, int conn, int nargs, char **args)
{
  unsetenv("LMP_PREFIX");
  unsetenv("LMP_ROOT_PID");
  if (nargs < 3)
    _exit(2); /* not started by a requester */
  fs_server fs = {L, nargs, args};
  lmp__fs_server_t srv = {fs_init, fs_run, &fs};
  lmp__fs_serve(conn, &srv);
}

/* === module functions === */

const char *lmpb_default_method(lua_State *L)
{
  return methods[choice(L)->method];
}

/* lmp.set_start_method(method [, force]): once per program (per Lua state),
 * as in Python, unless force is true; set_start_method(nil, true) goes back
 * to "fork". */
static int l_set_start_method(lua_State *L)
{
  const char *m = lmpb_checkmethod(L, 1, 1);
  int force = lua_toboolean(L, 2);
  method_choice *c = choice(L);
  if (c->set && !force)
    return luaL_error(L, "context has already been set");
  luaL_argcheck(L, m || force, 1, "start method expected");
  c->method = m ? method_index(m) : FORK;
  c->set = m != NULL;
  return 0;
}

static int l_get_start_method(lua_State *L)
{
  lua_pushstring(L, lmpb_default_method(L));
  return 1;
}

static int l_get_all_start_methods(lua_State *L)
{
  lua_createtable(L, 3, 0);
  for (int i = 0; methods[i]; i++) {
    lua_pushstring(L, methods[i]);
    lua_rawseti(L, -2, i + 1);
  }
  return 1;
}

/*
 * The logging set-up crosses to a child through two functions that lmp's
 * Lua side gives here (lmp.core._log_hooks(export, import), from
 * scripts/lmp/init.lua): export() returns this process's set-up, or nil when
 * logging is not in use, for the payload; import(setup) applies one in the
 * child.  A state that never gave them sends none.
 */
static int l_log_hooks(lua_State *L)
{
  luaL_checktype(L, 1, LUA_TFUNCTION);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &K_LOG_IMPORT);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &K_LOG_EXPORT);
  return 0;
}

/* lmp.set_forkserver_preload({module, ...}): modules the server requires
 * when it starts, with package.path and cpath as they are then (and the
 * main script's directory, as a child has), so its children find them
 * loaded. */
static int l_set_forkserver_preload(lua_State *L)
{
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer n = luaL_len(L, 1);
  lua_createtable(L, (int)n, 0);
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_geti(L, 1, i) != LUA_TSTRING)
      return luaL_argerror(L, 1, "module names expected");
    lmpb_checkcstring(L, -1, 1, "module name");
    lua_rawseti(L, -2, i);
  }
  lua_setfield(L, LUA_REGISTRYINDEX, PRELOAD_KEY);
  return 0;
}

static const luaL_Reg funcs[] = {
    {"set_start_method", l_set_start_method},
    {"get_start_method", l_get_start_method},
    {"get_all_start_methods", l_get_all_start_methods},
    {"_log_hooks", l_log_hooks},
    {"set_forkserver_preload", l_set_forkserver_preload},
    {NULL, NULL},
};

int lmpb_start_open(lua_State *L)
{
  if (!executable[0] && !getenv("LMP_EXECUTABLE"))
    find_beside_module();
  luaL_setfuncs(L, funcs, 0);
  return 0;
}

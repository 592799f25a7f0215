/*
 * test_embed.c -- lmp inside a host that owns the process: a C program
 * that embeds Lua, loads lmp.so through require (dlopen, as a server's Lua
 * module does), closes its states and goes on living.
 *
 * Servers do things a script never does: they close a Lua state and open
 * another (a reload), wait for every child with waitpid(-1), reap children
 * they did not start from their own SIGCHLD handler, run several states at
 * once, and re-exec themselves under the same pid.  Each test here is one
 * of those, and checks that lmp leaves nothing behind the host can trip
 * on: no child of the host after the last state closed, no signal handler
 * in unloaded code, no signal to a pid that was reused, no other state's
 * workers killed, no family surviving an exec.
 *
 * The module is build/lmp.so (LMP_BUILD names the build directory, as the
 * test runner sets it).
 */
#include "runner.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

static char self_exe[4096];

/* === a tiny host === */

static lua_State *host_open(void)
{
  const char *build = getenv("LMP_BUILD");
  lua_State *L = luaL_newstate();
  CHECK(L != NULL);
  luaL_openlibs(L);
  lua_getglobal(L, "package");
  lua_pushfstring(L, "%s/?.so", build ? build : "build");
  lua_setfield(L, -2, "cpath");
  lua_pop(L, 1);
  return L;
}

/* Run a chunk; its first result as an integer (0 if none).  A Lua error
 * fails the test with its message. */
static long long host_run(lua_State *L, const char *chunk)
{
  if (luaL_loadstring(L, chunk) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK)
    lmp_test_fail(__FILE__, __LINE__, "Lua: %s", luaL_tolstring(L, -1, NULL));
  long long v = lua_tointeger(L, -1);
  lua_pop(L, 1);
  return v;
}

/* The prefix of the family the state's lmp belongs to, into out: a
 * segment's name without its last part (the module exports luaopen_lmp
 * alone, so the host asks through Lua). */
static const char *module_prefix(lua_State *L, char *out, size_t n)
{
  if (luaL_dostring(L, "local m = require('lmp').SharedMemory(1)\n"
                       "local name = m.name\n"
                       "m:close()\n"
                       "return (name:match('^(.*)%.'))") != LUA_OK ||
      !lua_isstring(L, -1))
    lmp_test_fail(__FILE__, __LINE__, "Lua: %s", luaL_tolstring(L, -1, NULL));
  snprintf(out, n, "%s", lua_tostring(L, -1));
  lua_pop(L, 1);
  return out;
}

/* Wait for every child as a reloading server does; how many were reaped,
 * or -1 if some child was still there after `ms`. */
static int reap_everything(int ms)
{
  int n = 0;
  for (int waited = 0;; waited += 10) {
    pid_t r = waitpid(-1, NULL, WNOHANG);
    if (r > 0) {
      n++;
      continue;
    }
    if (r < 0 && errno == ECHILD)
      return n;
    if (waited >= ms)
      return -1;
    lmp_test_sleep_ms(10);
  }
}

static void on_host_sigchld(int sig)
{
  (void)sig;
}

/* === tests === */

/* A graceful restart closes the states, then waits for all children. */
TEST(close_then_wait_for_all_children)
{
  lua_State *L = host_open();
  CHECK_EQ(host_run(L, "local lmp = require 'lmp'\n"
                       "pool = lmp.Pool(2)\n"
                       "return pool:apply(function(x) return x * 2 end, 21)"),
           42);
  lua_close(L);
  /* The workers are ended by the close; nothing of lmp is a child now. */
  CHECK(reap_everything(5000) >= 0);
}

/* lua_close unloads lmp.so: no handler of it may stay installed. */
TEST(close_then_a_host_child_exits)
{
  struct sigaction host = {.sa_handler = on_host_sigchld}, now;
  sigemptyset(&host.sa_mask);
  CHECK_EQ(sigaction(SIGCHLD, &host, NULL), 0);
  lua_State *L = host_open();
  host_run(L, "local lmp = require 'lmp'\n"
              "local p = lmp.Process(function() end); p:start(); p:join()");
  lua_close(L);
  CHECK_EQ(sigaction(SIGCHLD, NULL, &now), 0);
  CHECK(now.sa_handler == on_host_sigchld);
  pid_t pid = lmp_test_fork();
  if (pid == 0)
    _exit(7);
  CHECK_EQ(lmp_test_wait(pid, 5000), 7);
}

/* Reloads: open, use, close, three times; one family throughout. */
TEST(three_open_close_cycles)
{
  char first[64] = "", prefix[64];
  for (int i = 0; i < 3; i++) {
    lua_State *L = host_open();
    CHECK_EQ(host_run(L, "local lmp = require 'lmp'\n"
                         "local pool <close> = lmp.Pool(1)\n"
                         "return pool:apply(function() return 5 end)"),
             5);
    if (i == 0)
      module_prefix(L, first, sizeof first);
    else
      CHECK_STREQ(module_prefix(L, prefix, sizeof prefix), first);
    lua_close(L);
    pid_t pid = lmp_test_fork();
    if (pid == 0)
      _exit(0);
    CHECK_EQ(lmp_test_wait(pid, 5000), 0);
  }
  CHECK(reap_everything(5000) >= 0);
}

/* Two states; closing one leaves the other's work alone. */
TEST(two_states_one_closed)
{
  lua_State *a = host_open(), *b = host_open();
  host_run(a, "lmp = require 'lmp'\n"
              "pool = lmp.Pool(1)\n"
              "res = pool:apply_async(function() lmp.sleep(0.5) return 'a done' end)");
  host_run(b, "local lmp = require 'lmp'\n"
              "pool = lmp.Pool(1)\n"
              "proc = lmp.Process(function() lmp.sleep(0.2) end, nil, {daemon = true})\n"
              "proc:start()\n"
              "return pool:apply(function() return 1 end)");
  lua_close(b);
  CHECK_EQ(host_run(a, "local v, err = res:get(10)\n"
                       "assert(v == 'a done', tostring(err))\n"
                       "return pool:apply(function() return 3 end)"),
           3);
  lua_close(a);
  CHECK(reap_everything(5000) >= 0);
}

/* The default start method is each state's own choice. */
TEST(start_method_per_state)
{
  lua_State *a = host_open(), *b = host_open();
  host_run(a, "lmp = require 'lmp'; lmp.set_start_method('spawn')");
  host_run(b, "lmp = require 'lmp'\n"
              "assert(lmp.get_start_method() == 'fork', lmp.get_start_method())\n"
              "lmp.set_start_method('forkserver')");
  CHECK_EQ(host_run(a, "assert(lmp.get_start_method() == 'spawn')\n"
                       "local p = lmp.Process(function() end); p:start(); p:join()\n"
                       "return p.exitcode"),
           0);
  lua_close(a);
  CHECK_EQ(host_run(b, "assert(lmp.get_start_method() == 'forkserver')\n"
                       "local p = lmp.Process(function() os.exit(4) end); p:start(); p:join()\n"
                       "return p.exitcode"),
           4);
  lua_close(b);
  CHECK(reap_everything(5000) >= 0);
}

/* Force the next pid the kernel hands out (root only). */
static int next_pid_is(pid_t pid)
{
  int fd = open("/proc/sys/kernel/ns_last_pid", O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  char buf[24];
  int n = snprintf(buf, sizeof buf, "%ld", (long)pid - 1);
  int ok = write(fd, buf, (size_t)n) == n;
  close(fd);
  return ok;
}

/* Start a pool of one worker in L; the worker's pid. */
static pid_t one_worker_pool(lua_State *L)
{
  pid_t w =
      (pid_t)host_run(L, "lmp = require 'lmp'\n"
                         "pool = lmp.Pool(1)\n"
                         "return pool:apply(function() return lmp.current_process().pid end)");
  CHECK(w > 0);
  return w;
}

/* Kill worker w and reap it as the host's own waitpid(-1) would; then
 * give its pid to a new child of ours (returned, or -1 if the kernel would
 * not let us choose the pid). */
static pid_t reap_and_reuse(pid_t w)
{
  CHECK_EQ(kill(w, SIGKILL), 0);
  CHECK_EQ(waitpid(w, NULL, 0), w);
  for (int tries = 0; tries < 20; tries++) {
    if (!next_pid_is(w)) {
      fprintf(stderr, "# cannot set ns_last_pid (%s): no pid reuse forced\n", strerror(errno));
      return -1;
    }
    pid_t victim = lmp_test_fork();
    if (victim == 0) {
      for (;;)
        pause();
    }
    if (victim == w)
      return victim;
    kill(victim, SIGKILL);
    lmp_test_wait(victim, 5000);
  }
  return -1;
}

/* The process that got the pid (if reuse could be forced) was never
 * signalled: it is still there; then nothing else is left. */
static void spared(pid_t victim)
{
  if (victim > 0) {
    CHECK(lmp_test_alive(victim));
    kill(victim, SIGKILL);
    CHECK_EQ(lmp_test_wait(victim, 5000), -SIGKILL);
  }
  CHECK(reap_everything(5000) >= 0);
}

/* The host reaps a dead worker and its pid goes to another process: the
 * state's close must not signal that process. */
TEST(no_signal_to_a_reused_pid)
{
  lua_State *L = host_open();
  pid_t victim = reap_and_reuse(one_worker_pool(L));
  lua_close(L);
  spared(victim);
}

/* The pool sees the worker the host reaped as gone and replaces it. */
TEST(worker_reaped_by_the_host)
{
  lua_State *L = host_open();
  pid_t w = one_worker_pool(L), victim = reap_and_reuse(w);
  CHECK(host_run(L, "return pool:apply(function() return lmp.current_process().pid end)") != w);
  CHECK_EQ(host_run(L, "return pool:stats().restarts"), 1);
  lua_close(L);
  spared(victim);
}

/* A server that re-execs itself keeps its pid: the family it had must end
 * (its workers and segments), and the new image starts one of its own. */
TEST(exec_ends_the_family)
{
  lua_State *L = host_open();
  host_run(L, "local lmp = require 'lmp'\n"
              "pool = lmp.Pool(2)\n"
              "v = lmp.Value('i', 1)\n"
              "return pool:apply(function() return 1 end)");
  char prefix[64];
  module_prefix(L, prefix, sizeof prefix);
  CHECK(lmp_test_shm_count(prefix) > 0);
  /* No lua_close: the image is replaced, as a re-exec'ing server does. */
  char *argv[] = {self_exe, "--after-exec", prefix, NULL};
  execv(self_exe, argv);
  CHECK(!"execv failed");
}

/* The second half of exec_ends_the_family, in the new image. */
static int after_exec(const char *prefix)
{
  /* The old workers are still our children: they must end by themselves. */
  if (reap_everything(5000) < 0) {
    fprintf(stderr, "workers of the old image still run after exec\n");
    return 1;
  }
  for (int i = 0; i < 500 && lmp_test_shm_count(prefix) > 0; i++)
    lmp_test_sleep_ms(10);
  if (lmp_test_shm_count(prefix) > 0) {
    fprintf(stderr, "segments of the old family are left: %d\n", lmp_test_shm_count(prefix));
    return 1;
  }
  return 0;
}

TEST_LIST = {
    TEST_ENTRY(close_then_wait_for_all_children),
    TEST_ENTRY(close_then_a_host_child_exits),
    TEST_ENTRY_T(three_open_close_cycles, 20),
    TEST_ENTRY(two_states_one_closed),
    TEST_ENTRY(start_method_per_state),
    TEST_ENTRY(no_signal_to_a_reused_pid),
    TEST_ENTRY(worker_reaped_by_the_host),
    TEST_ENTRY(exec_ends_the_family),
    TEST_END,
};

/* Before runner.c's main: the image exec'd by exec_ends_the_family takes
 * its own path (glibc hands constructors the program's arguments). */
__attribute__((constructor)) static void embed_exec_hook(int argc, char **argv)
{
  ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
  self_exe[n > 0 ? n : 0] = '\0';
  if (argc == 3 && strcmp(argv[1], "--after-exec") == 0)
    _exit(after_exec(argv[2]));
}

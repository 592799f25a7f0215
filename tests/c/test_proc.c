/*
 * test_proc.c -- child processes: exit codes, waits with deadlines, signals,
 * reaping (no zombie is left), shutdown of daemon and non-daemon children,
 * orphans killed through PR_SET_PDEATHSIG, and descriptor hygiene; then the
 * other kinds of children: exec'd ones (lmp_proc_spawn) and processes
 * adopted from another parent (lmp_proc_adopt), and the ordering of
 * services at shutdown.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lmp/common.h"
#include "lmp/proc.h"
#include "lmp/runtime.h"
#include "lmp/segment.h"
#include "internal.h"
#include "runner.h"

#define MS 1000000LL

/* === helpers === */

/* Fork a child that sleeps `sleep` ms (forever if negative), then exits. */
static lmp_proc_t *spawn(int daemon, int sleep, int code)
{
  lmp_proc_t *p;
  int rc = lmp_proc_fork(daemon, &p);
  CHECK(rc >= 0);
  if (rc == 0) {
    if (sleep < 0)
      for (;;)
        pause();
    lmp_test_sleep_ms(sleep);
    lmp_proc_exit(code);
  }
  CHECK(p != NULL);
  return p;
}

static int exitcode(lmp_proc_t *p)
{
  int code = 12345;
  CHECK_EQ(lmp_proc_exitcode(p, &code), 0);
  return code;
}

/* Has `pid` been reaped?  waitid(WNOWAIT) looks without reaping. */
static int reaped(pid_t pid)
{
  siginfo_t si;
  memset(&si, 0, sizeof si);
  int rc = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT);
  return rc < 0 && errno == ECHILD;
}

/* === tests === */

TEST(exit_codes)
{
  lmp_proc_t *ok = spawn(0, 0, 0), *three = spawn(0, 0, 3);
  lmp_proc_t *killed = spawn(0, -1, 0), *termed = spawn(0, -1, 0);
  CHECK_EQ(lmp_proc_signal(killed, SIGKILL), 0);
  CHECK_EQ(lmp_proc_signal(termed, SIGTERM), 0);
  lmp_proc_t *all[] = {ok, three, killed, termed};
  int want[] = {0, 3, -9, -15};
  for (int i = 0; i < 4; i++) {
    CHECK_EQ(lmp_proc_wait(all[i], lmp_deadline(5)), 0);
    CHECK_EQ(exitcode(all[i]), want[i]);
    CHECK_EQ(lmp_proc_wait(all[i], LMP_FOREVER), 0); /* again: same answer */
    CHECK_EQ(exitcode(all[i]), want[i]);
    CHECK(lmp_proc_pid(all[i]) > 0);
    lmp_proc_free(all[i]);
  }
}

TEST(wait_timeout)
{
  lmp_proc_t *p = spawn(0, 300, 5);
  int code;
  CHECK_EQ(lmp_proc_exitcode(p, &code), -EAGAIN);
  int64_t t0 = lmp_now_ns();
  CHECK_EQ(lmp_proc_wait(p, lmp_deadline(0.05)), -ETIMEDOUT);
  int64_t took = lmp_now_ns() - t0;
  CHECK(took >= 50 * MS && took < 250 * MS);
  t0 = lmp_now_ns();
  CHECK_EQ(lmp_proc_wait(p, lmp_deadline(0)), -ETIMEDOUT);
  CHECK(lmp_now_ns() - t0 < 20 * MS);
  CHECK_EQ(lmp_proc_wait(p, lmp_deadline(10)), 0);
  CHECK_EQ(exitcode(p), 5);
  lmp_proc_free(p);
}

TEST(alive)
{
  lmp_proc_t *p = spawn(0, -1, 0);
  CHECK_EQ(lmp_proc_alive(p), 1);
  CHECK(lmp_proc_fd(p) >= 0); /* Linux 5.3+ */
  CHECK_EQ(lmp_proc_signal(p, SIGKILL), 0);
  int64_t stop = lmp_now_ns() + 5000 * MS;
  while (lmp_proc_alive(p) == 1 && lmp_now_ns() < stop)
    lmp_test_sleep_ms(1);
  CHECK_EQ(lmp_proc_alive(p), 0);
  CHECK_EQ(exitcode(p), -9);
  lmp_proc_free(p);
}

/* Once reaped, the pid may belong to anyone: signalling is a no-op. */
TEST(signal_after_exit)
{
  lmp_proc_t *p = spawn(0, 0, 4);
  pid_t pid = lmp_proc_pid(p);
  CHECK_EQ(lmp_proc_wait(p, lmp_deadline(5)), 0);
  CHECK(reaped(pid));
  CHECK_EQ(lmp_proc_signal(p, SIGKILL), 0);
  CHECK_EQ(lmp_proc_signal(p, SIGTERM), 0);
  CHECK_EQ(exitcode(p), 4);
  lmp_proc_free(p);
}

/* A child whose handle is gone is reaped by lmp_proc_reap on SIGCHLD. */
TEST(no_zombie)
{
  lmp_proc_t *p = spawn(0, 0, 0);
  pid_t pid = lmp_proc_pid(p);
  lmp_proc_free(p);
  int64_t stop = lmp_now_ns() + 5000 * MS;
  while (!reaped(pid) && lmp_now_ns() < stop) {
    lmp_test_sleep_ms(1);
    lmp_proc_reap();
  }
  CHECK(reaped(pid));
  char path[64];
  struct stat st;
  snprintf(path, sizeof path, "/proc/%d", (int)pid);
  CHECK(stat(path, &st) < 0);
  CHECK_EQ(lmp_proc_children(NULL, 0), 0);
  /* A reaped child keeps its handle's answers. */
  p = spawn(0, 0, 6);
  pid = lmp_proc_pid(p);
  while (!reaped(pid) && lmp_now_ns() < stop) {
    lmp_test_sleep_ms(1);
    lmp_proc_reap();
  }
  CHECK(reaped(pid));
  CHECK_EQ(lmp_proc_alive(p), 0);
  CHECK_EQ(exitcode(p), 6);
  lmp_proc_free(p);
}

TEST(children)
{
  lmp_proc_t *p[3];
  pid_t pids[8];
  for (int i = 0; i < 3; i++)
    p[i] = spawn(0, -1, 0);
  CHECK_EQ(lmp_proc_children(pids, 8), 3);
  for (int i = 0; i < 3; i++) {
    int found = 0;
    for (int j = 0; j < 3; j++)
      found |= pids[j] == lmp_proc_pid(p[i]);
    CHECK(found);
  }
  CHECK_EQ(lmp_proc_children(pids, 1), 3); /* the count, whatever fits */
  lmp_proc_signal(p[1], SIGKILL);
  CHECK_EQ(lmp_proc_wait(p[1], lmp_deadline(5)), 0);
  CHECK_EQ(lmp_proc_children(pids, 8), 2);
  for (int i = 0; i < 3; i++) {
    lmp_proc_signal(p[i], SIGKILL);
    lmp_proc_free(p[i]);
  }
  int64_t stop = lmp_now_ns() + 5000 * MS;
  while (lmp_proc_children(NULL, 0) > 0 && lmp_now_ns() < stop)
    lmp_test_sleep_ms(1);
  CHECK_EQ(lmp_proc_children(NULL, 0), 0);
}

TEST(parent_pid)
{
  CHECK_EQ(lmp_proc_parent_pid(), 0);
  pid_t self = getpid();
  lmp_proc_t *p;
  int rc = lmp_proc_fork(0, &p);
  CHECK(rc >= 0);
  if (rc == 0)
    lmp_proc_exit(lmp_proc_parent_pid() == self && getppid() == self ? 0 : 1);
  CHECK_EQ(lmp_proc_wait(p, lmp_deadline(5)), 0);
  CHECK_EQ(exitcode(p), 0);
  lmp_proc_free(p);
}

/* A child inherits its parent's handles; they are not its children. */
TEST(inherited_handle)
{
  lmp_proc_t *sibling = spawn(0, -1, 0), *p;
  int rc = lmp_proc_fork(0, &p);
  CHECK(rc >= 0);
  if (rc == 0) {
    int code;
    int ok = lmp_proc_wait(sibling, lmp_deadline(0)) == -ECHILD &&
             lmp_proc_exitcode(sibling, &code) == -ECHILD &&
             lmp_proc_signal(sibling, SIGKILL) == -ECHILD && lmp_proc_children(NULL, 0) == 0;
    lmp_proc_free(sibling);
    lmp_proc_exit(ok ? 0 : 1);
  }
  CHECK_EQ(lmp_proc_wait(p, lmp_deadline(5)), 0);
  CHECK_EQ(exitcode(p), 0);
  CHECK_EQ(lmp_proc_alive(sibling), 1);
  lmp_proc_signal(sibling, SIGKILL);
  CHECK_EQ(lmp_proc_wait(sibling, lmp_deadline(5)), 0);
  lmp_proc_free(sibling);
  lmp_proc_free(p);
}

TEST(shutdown)
{
  lmp_proc_t *daemon = spawn(1, -1, 0), *worker = spawn(0, 300, 7);
  int64_t t0 = lmp_now_ns();
  lmp_proc_shutdown();
  CHECK(lmp_now_ns() - t0 >= 250 * MS); /* the worker was waited for */
  CHECK_EQ(exitcode(daemon), -SIGTERM);
  CHECK_EQ(exitcode(worker), 7);
  CHECK_EQ(lmp_proc_children(NULL, 0), 0);
  lmp_proc_free(daemon);
  lmp_proc_free(worker);
}

/* A daemon that ignores SIGTERM is killed after the grace period. */
TEST(shutdown_stubborn)
{
  lmp_proc_t *p;
  int rc = lmp_proc_fork(1, &p);
  CHECK(rc >= 0);
  if (rc == 0) {
    signal(SIGTERM, SIG_IGN);
    for (;;)
      pause();
  }
  lmp_test_sleep_ms(50); /* let it ignore SIGTERM */
  int64_t t0 = lmp_now_ns();
  lmp_proc_shutdown();
  int64_t took = lmp_now_ns() - t0;
  CHECK(took >= 900 * MS && took < 3000 * MS);
  CHECK_EQ(exitcode(p), -SIGKILL);
  lmp_proc_free(p);
}

/*
 * A grandchild forked through lmp dies with its parent: the child is
 * SIGKILLed and the grandchild is gone within 2 s.  This process becomes a
 * subreaper so the orphaned grandchild is reparented to it and its end can
 * be observed (and reaped) here.
 */
TEST(pdeathsig)
{
  int fds[2];
  CHECK_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  CHECK_EQ(pipe(fds), 0);
  lmp_proc_t *child;
  int rc = lmp_proc_fork(0, &child);
  CHECK(rc >= 0);
  if (rc == 0) {
    lmp_proc_t *grand;
    int rc2 = lmp_proc_fork(0, &grand);
    if (rc2 < 0)
      _exit(1);
    if (rc2 == 0) {
      /* Written once lmp_proc_fork has returned here, so the death signal
       * is armed (a grandchild orphaned earlier exits by itself instead). */
      pid_t self = getpid();
      if (write(fds[1], &self, sizeof self) != sizeof self)
        _exit(1);
    }
    for (;;)
      pause();
  }
  pid_t gpid = 0;
  CHECK_EQ(read(fds[0], &gpid, sizeof gpid), sizeof gpid);
  CHECK(gpid > 0);
  CHECK_EQ(kill(gpid, 0), 0);
  CHECK_EQ(lmp_proc_signal(child, SIGKILL), 0);
  CHECK_EQ(lmp_proc_wait(child, lmp_deadline(5)), 0);
  int64_t stop = lmp_now_ns() + 2000 * MS;
  int st = 0;
  pid_t r = 0;
  while (r == 0 && lmp_now_ns() < stop) {
    r = waitpid(gpid, &st, WNOHANG);
    if (r == 0)
      lmp_test_sleep_ms(2);
  }
  CHECK_EQ(r, gpid);
  CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
  lmp_proc_free(child);
  close(fds[0]);
  close(fds[1]);
}

/* fork, wait and free leave no descriptor behind (pidfds included). */
TEST(fd_hygiene)
{
  /* A first child starts the runtime (and its watchdog): count after it. */
  lmp_proc_t *p = spawn(0, 0, 0);
  CHECK_EQ(lmp_proc_wait(p, lmp_deadline(10)), 0);
  lmp_proc_free(p);
  int before = lmp_test_fd_count();
  for (int i = 0; i < 1000; i++) {
    p = spawn(0, 0, i & 7);
    CHECK_EQ(lmp_proc_wait(p, lmp_deadline(10)), 0);
    CHECK_EQ(exitcode(p), i & 7);
    lmp_proc_free(p);
  }
  CHECK_EQ(lmp_test_fd_count(), before);
  CHECK_EQ(lmp_proc_children(NULL, 0), 0);
}

/* === spawn: fork and exec === */

/* Run `script` with /bin/sh through lmp_proc_spawn; its exit code. */
static int sh_flags(const char *script, int keep_fd, int flags)
{
  char *argv[] = {"sh", "-c", (char *)script, "sh", NULL};
  lmp_proc_t *p;
  CHECK_EQ(lmp_proc_spawn("/bin/sh", argv, keep_fd, flags, &p), 0);
  CHECK_EQ(lmp_proc_wait(p, lmp_deadline(10)), 0);
  int code = exitcode(p);
  lmp_proc_free(p);
  return code;
}

static int sh(const char *script, int keep_fd)
{
  return sh_flags(script, keep_fd, 0);
}

TEST(spawn_exit_code)
{
  CHECK_EQ(sh("exit 3", -1), 3);
  CHECK_EQ(sh("kill -TERM $$", -1), -SIGTERM);
}

/* NOINT: a ^C that reaches the child at any moment, even its first
 * instruction or after its exec, leaves it running; without it, it ends. */
TEST(noint_child_ignores_sigint)
{
  lmp_proc_t *p;
  for (int flags = 0; flags <= LMP_PROC_NOINT; flags += LMP_PROC_NOINT) {
    int rc = lmp_proc_fork(flags, &p);
    CHECK(rc >= 0);
    if (rc == 0) {
      raise(SIGINT);
      lmp_proc_exit(0);
    }
    CHECK_EQ(lmp_proc_wait(p, lmp_deadline(10)), 0);
    CHECK_EQ(exitcode(p), flags ? 0 : -SIGINT);
    lmp_proc_free(p);
    CHECK_EQ(sh_flags("kill -INT $$; exit 0", -1, flags), flags ? 0 : -SIGINT);
  }
  /* The flag says how it starts: a NOINT child is joined at shutdown, as
   * any other, not terminated as a daemon. */
  int rc = lmp_proc_fork(LMP_PROC_NOINT, &p);
  CHECK(rc >= 0);
  if (rc == 0) {
    lmp_test_sleep_ms(200);
    lmp_proc_exit(7);
  }
  lmp_proc_shutdown();
  CHECK_EQ(exitcode(p), 7);
  lmp_proc_free(p);
}

/* The exec'd program is told the family's prefix and root. */
TEST(spawn_environment)
{
  CHECK_EQ(lmp_runtime_init(), 0);
  char script[256];
  snprintf(script, sizeof script, "test \"$LMP_PREFIX\" = '%s' && test \"$LMP_ROOT_PID\" = %ld",
           lmp_runtime_prefix(), (long)getpid());
  CHECK_EQ(sh(script, -1), 0);
  /* A stale value in our own environment is replaced, not duplicated. */
  setenv("LMP_PREFIX", "/lmp.1.00000000", 1);
  CHECK_EQ(sh(script, -1), 0);
  CHECK_EQ(sh("test $(env | grep -c '^LMP_PREFIX=') = 1", -1), 0);
  unsetenv("LMP_PREFIX");
}

/* Only stdio and the kept descriptor cross the exec. */
TEST(spawn_descriptors)
{
  int a[2], b[2];
  CHECK_EQ(pipe(a), 0); /* not close-on-exec */
  CHECK_EQ(pipe(b), 0);
  char script[128];
  snprintf(script, sizeof script, "test -e /proc/self/fd/%d && ! test -e /proc/self/fd/%d", b[1],
           a[1]);
  CHECK_EQ(sh(script, b[1]), 0);
  close(a[0]);
  close(a[1]);
  close(b[0]);
  close(b[1]);
}

/* An exec that fails is an error of the call, and leaves no child. */
TEST(spawn_enoent)
{
  char *argv[] = {"nothing", NULL};
  lmp_proc_t *p = (lmp_proc_t *)1;
  CHECK_EQ(lmp_proc_spawn("/nonexistent/lmp", argv, -1, 0, &p), -ENOENT);
  CHECK(p == NULL);
  CHECK_EQ(lmp_proc_children(NULL, 0), 0);
}

/* The segment references a fork hands the child are dropped before the
 * exec, so the new program does not leak them. */
TEST(spawn_drops_references)
{
  lmp_seg_t *s;
  CHECK_EQ(lmp_seg_create(64, &s), 0);
  CHECK_EQ(lmp__seg_refs(s), 1);
  CHECK_EQ(sh("exit 0", -1), 0);
  CHECK_EQ(lmp__seg_refs(s), 1);
  lmp_seg_release(s);
}

/* === adopted processes === */

/* A process forked with plain fork(): this test plays its real parent, and
 * adopts it as another process would. */
static lmp_proc_t *adopt_sleeper(pid_t *pid, int *status_w)
{
  int st[2];
  CHECK_EQ(pipe2(st, O_CLOEXEC), 0);
  *pid = fork();
  CHECK(*pid >= 0);
  if (*pid == 0) {
    for (;;)
      pause();
  }
  int pidfd = (int)syscall(SYS_pidfd_open, *pid, 0);
  CHECK(pidfd >= 0);
  lmp_proc_t *p;
  CHECK_EQ(lmp_proc_adopt(*pid, pidfd, st[0], 0, &p), 0);
  *status_w = st[1];
  return p;
}

/* Reap `pid` as its real parent does and report its code. */
static void report(pid_t pid, int status_w)
{
  int st;
  CHECK_EQ(waitpid(pid, &st, 0), pid);
  int32_t code = WIFSIGNALED(st) ? -WTERMSIG(st) : WEXITSTATUS(st);
  CHECK_EQ(write(status_w, &code, sizeof code), sizeof code);
  close(status_w);
}

TEST(adopt_wait_and_signal)
{
  pid_t pid;
  int w;
  lmp_proc_t *p = adopt_sleeper(&pid, &w);
  CHECK_EQ(lmp_proc_pid(p), pid);
  CHECK_EQ(lmp_proc_alive(p), 1);
  CHECK_EQ(lmp_proc_wait(p, lmp_deadline(0.02)), -ETIMEDOUT);
  int code;
  CHECK_EQ(lmp_proc_exitcode(p, &code), -EAGAIN);
  CHECK_EQ(lmp_proc_children(NULL, 0), 1);
  CHECK_EQ(lmp_proc_signal(p, SIGTERM), 0);
  report(pid, w);
  CHECK_EQ(lmp_proc_wait(p, lmp_deadline(5)), 0);
  CHECK_EQ(exitcode(p), -SIGTERM);
  CHECK_EQ(lmp_proc_alive(p), 0);
  CHECK_EQ(lmp_proc_signal(p, SIGKILL), 0); /* reaped: a no-op */
  CHECK_EQ(lmp_proc_children(NULL, 0), 0);
  lmp_proc_free(p);
}

/* Its real parent gone without a word: the code is 255, and nothing hangs. */
TEST(adopt_parent_lost)
{
  pid_t pid;
  int w;
  lmp_proc_t *p = adopt_sleeper(&pid, &w);
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  close(w);
  CHECK_EQ(lmp_proc_wait(p, lmp_deadline(5)), 0);
  CHECK_EQ(exitcode(p), 255);
  lmp_proc_free(p);
}

/* A freed handle of a running adopted process is still collected. */
TEST(adopt_reaped_without_handle)
{
  int before = lmp_test_fd_count();
  pid_t pid;
  int w;
  lmp_proc_t *p = adopt_sleeper(&pid, &w);
  lmp_proc_free(p);
  kill(pid, SIGKILL);
  report(pid, w);
  lmp_proc_reap();
  CHECK_EQ(lmp_test_fd_count(), before);
}

/* Shutdown ends a service after the children it serves, and does not
 * count it as a child.  The service exits 0 on SIGTERM only if the worker
 * has ended by then: the worker holds the write end of a pipe whose read
 * end the service checks for end of file. */
static int service_rfd;

static void on_term(int sig)
{
  char c;
  (void)sig;
  _exit(read(service_rfd, &c, 1) == 0 ? 0 : 1);
}

TEST(shutdown_service_last)
{
  int fds[2];
  CHECK_EQ(pipe2(fds, O_NONBLOCK), 0);
  lmp_proc_t *svc, *worker;
  int rc = lmp_proc_fork(LMP_PROC_SERVICE, &svc);
  CHECK(rc >= 0);
  if (rc == 0) {
    close(fds[1]);
    service_rfd = fds[0];
    signal(SIGTERM, on_term);
    for (;;)
      pause();
  }
  worker = spawn(0, 200, 0);
  close(fds[0]);
  close(fds[1]); /* the worker holds the write end until it exits */
  CHECK_EQ(lmp_proc_children(NULL, 0), 1);
  lmp_proc_shutdown();
  CHECK_EQ(exitcode(worker), 0);
  CHECK_EQ(exitcode(svc), 0);
  lmp_proc_free(svc);
  lmp_proc_free(worker);
}

TEST_LIST = {TEST_ENTRY(exit_codes),
             TEST_ENTRY(wait_timeout),
             TEST_ENTRY(alive),
             TEST_ENTRY(signal_after_exit),
             TEST_ENTRY(no_zombie),
             TEST_ENTRY(children),
             TEST_ENTRY(parent_pid),
             TEST_ENTRY(inherited_handle),
             TEST_ENTRY(shutdown),
             TEST_ENTRY(shutdown_stubborn),
             TEST_ENTRY(pdeathsig),
             TEST_ENTRY_T(fd_hygiene, 60),
             TEST_ENTRY(spawn_exit_code),
             TEST_ENTRY(noint_child_ignores_sigint),
             TEST_ENTRY(spawn_environment),
             TEST_ENTRY(spawn_descriptors),
             TEST_ENTRY(spawn_enoent),
             TEST_ENTRY(spawn_drops_references),
             TEST_ENTRY(adopt_wait_and_signal),
             TEST_ENTRY(adopt_parent_lost),
             TEST_ENTRY(adopt_reaped_without_handle),
             TEST_ENTRY(shutdown_service_last),
             TEST_END};

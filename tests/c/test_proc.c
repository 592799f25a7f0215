/*
 * test_proc.c -- child processes: exit codes, waits with deadlines, signals,
 * reaping (no zombie is left), shutdown of daemon and non-daemon children,
 * orphans killed through PR_SET_PDEATHSIG, and descriptor hygiene.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lmp/common.h"
#include "lmp/proc.h"
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
             lmp_proc_signal(sibling, SIGKILL) == -ECHILD &&
             lmp_proc_children(NULL, 0) == 0;
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

TEST_LIST = {
  TEST_ENTRY(exit_codes),
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
  TEST_END
};

/*
 * runner.c -- main() of every C test binary: fork per test, time it out,
 * clean up after it, print TAP.
 *
 * Each test runs in a child that leads its own process group.  When the test
 * ends (or its timeout fires) the runner SIGKILLs the whole group, so no
 * helper process a test forked survives it.  The runner is also a child
 * subreaper: processes that left the group (an lmp root's watchdog does, on
 * purpose) are reparented to it when their parent dies, and the runner waits
 * for them before starting the next test.  A watchdog still alive 3 s after
 * its root, or a /dev/shm entry left under a prefix the test process founded,
 * fails the test: leaks are bugs, and they would also skew later tests.
 *
 * The child starts with LMP_PREFIX and LMP_ROOT_PID unset, so every test is
 * a root of its own, and with stdout sent to stderr so whatever a test prints
 * never mixes with the TAP stream.
 */
#include "runner.h"

#include "lmp/common.h"
#include "lmp/proc.h"
#include "lmp/runtime.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_TIMEOUT_S 10
#define STRAY_GRACE_MS 3000

/* === helpers for tests === */

void lmp_test_fail(const char *file, int line, const char *fmt, ...)
{
  va_list ap;

  fprintf(stderr, "%s:%d: ", file, line);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\n");
  fflush(stderr);
  _exit(1);
}

void lmp_test_sleep_ms(int ms)
{
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

pid_t lmp_test_fork(void)
{
  pid_t pid = fork();
  CHECK(pid >= 0);
  return pid;
}

void *lmp_test_shared(size_t size)
{
  void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  CHECK(m != MAP_FAILED);
  return m;
}

void lmp_test_add(volatile int *p, int n)
{
  __atomic_add_fetch(p, n, __ATOMIC_ACQ_REL);
}

int lmp_test_get(volatile int *p)
{
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

void lmp_test_await(volatile int *p, int n)
{
  for (int i = 0; i < 5000 && lmp_test_get(p) < n; i++)
    lmp_test_sleep_ms(1);
  CHECK(lmp_test_get(p) >= n);
}

int64_t lmp_test_ms(int n)
{
  return lmp_now_ns() + (int64_t)n * 1000000;
}

static long long now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int decode_status(int st)
{
  if (WIFEXITED(st))
    return WEXITSTATUS(st);
  if (WIFSIGNALED(st))
    return -WTERMSIG(st);
  return INT_MIN;
}

/* Sleep until pid has exited (without reaping it) or timeout_ms passed;
 * 1 if it exited.  A pidfd makes this one poll; without one, a short-sleep
 * loop on waitid(WNOWAIT) does the same. */
static int wait_exit(pid_t pid, int timeout_ms)
{
  long long end = now_ms() + timeout_ms;
  int pfd = (int)syscall(SYS_pidfd_open, pid, 0), rc, left;
  siginfo_t si;

  for (;;) {
    memset(&si, 0, sizeof si);
    rc = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT);
    if (rc == 0 && si.si_pid == pid)
      break;
    if (rc < 0 && errno != EINTR)
      break; /* not our child: nothing to wait for */
    left = (int)(end - now_ms());
    if (left <= 0) {
      if (pfd >= 0)
        close(pfd);
      return 0;
    }
    if (pfd >= 0)
      poll(&(struct pollfd){.fd = pfd, .events = POLLIN}, 1, left);
    else
      lmp_test_sleep_ms(left < 2 ? left : 2);
  }
  if (pfd >= 0)
    close(pfd);
  return 1;
}

lmp_proc_t *lmp_test_start(void)
{
  lmp_proc_t *p;
  CHECK(lmp_proc_fork(0, &p) >= 0);
  return p;
}

int lmp_test_finish(lmp_proc_t *p)
{
  int code = 999;
  CHECK_EQ(lmp_proc_wait(p, lmp_deadline(60)), 0);
  CHECK_EQ(lmp_proc_exitcode(p, &code), 0);
  lmp_proc_free(p);
  return code;
}

int lmp_test_segments(void)
{
  return lmp_test_shm_count(lmp_runtime_prefix());
}

int lmp_test_wait(pid_t pid, int timeout_ms)
{
  int st;

  if (!wait_exit(pid, timeout_ms)) {
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return LMP_TEST_TIMEDOUT;
  }
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR)
      return INT_MIN;
  return decode_status(st);
}

int lmp_test_gone(pid_t pid, int timeout_ms)
{
  int pfd = (int)syscall(SYS_pidfd_open, pid, 0), n;

  if (pfd < 0)
    return errno == ESRCH;
  do
    n = poll(&(struct pollfd){.fd = pfd, .events = POLLIN}, 1, timeout_ms);
  while (n < 0 && errno == EINTR);
  close(pfd);
  return n == 1;
}

int lmp_test_shm_count(const char *prefix)
{
  size_t len;
  struct dirent *d;
  DIR *dir;
  int n = 0;

  if (prefix[0] == '/')
    prefix++;
  len = strlen(prefix);
  if ((dir = opendir("/dev/shm")) == NULL)
    return -1;
  /* Segments only: a process's holdings table ("<prefix>.h.<pid>", segment.c)
   * is bookkeeping that lives as long as the process holds anything, and
   * the names directory and the pools' registry are the family's, taken by
   * the root when it starts. */
  while ((d = readdir(dir)) != NULL)
    if (strncmp(d->d_name, prefix, len) == 0 && d->d_name[len] == '.' &&
        strncmp(d->d_name + len, ".h.", 3) != 0 && strcmp(d->d_name + len, ".names") != 0 &&
        strcmp(d->d_name + len, ".pools") != 0)
      n++;
  closedir(dir);
  return n;
}

int lmp_test_fd_count(void)
{
  struct dirent *d;
  DIR *dir;
  int n = 0;

  if ((dir = opendir("/proc/self/fd")) == NULL)
    return -1;
  while ((d = readdir(dir)) != NULL)
    if (d->d_name[0] != '.')
      n++;
  closedir(dir);
  return n - 1; /* the directory's own descriptor */
}

int lmp_test_alive(pid_t pid)
{
  char path[64], buf[256], *p;
  ssize_t n;
  int fd;

  snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
  if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
    return 0;
  n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0)
    return 0;
  buf[n] = '\0';
  /* "pid (comm) S ...": the state follows the last ')'. */
  p = strrchr(buf, ')');
  return p != NULL && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* === the runner === */

typedef struct result {
  int ok;
  char why[96];
} result_t;

static int timeout_mult(void)
{
  const char *e = getenv("LMP_TEST_TIMEOUT_MULT");
  int m = e ? atoi(e) : 1;
  return m > 0 ? m : 1;
}

static const char *base_name(const char *path)
{
  const char *s = strrchr(path, '/');
  return s ? s + 1 : path;
}

static void child_main(const lmp_test_t *t)
{
  setpgid(0, 0);
  unsetenv("LMP_PREFIX");
  unsetenv("LMP_ROOT_PID");
  dup2(2, 1);
  t->fn();
  exit(0); /* exit, not _exit: the root's atexit cleanup is under test too */
}

/* Kill anything that is still our child (reparented strays) after the
 * grace period; returns how many there were. */
static int kill_strays(void)
{
  struct dirent *d;
  char path[300], buf[512], *p;
  long ppid;
  int n = 0, fd;
  ssize_t len;
  DIR *dir = opendir("/proc");

  if (dir == NULL)
    return 0;
  while ((d = readdir(dir)) != NULL) {
    if (d->d_name[0] < '1' || d->d_name[0] > '9')
      continue;
    snprintf(path, sizeof path, "/proc/%s/stat", d->d_name);
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
      continue;
    len = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (len <= 0)
      continue;
    buf[len] = '\0';
    p = strrchr(buf, ')');
    if (p == NULL || sscanf(p + 2, "%*c %ld", &ppid) != 1 || ppid != (long)getpid())
      continue;
    if (p[2] != 'Z') {
      fprintf(stderr, "# leftover process %s\n", d->d_name);
      n++;
    }
    kill((pid_t)atol(d->d_name), SIGKILL);
  }
  closedir(dir);
  return n;
}

/* Reap every process reparented to us; fail if one outlives the grace. */
static int reap_strays(void)
{
  long long end = now_ms() + STRAY_GRACE_MS * timeout_mult();
  int st, strays = 0;
  pid_t p;

  for (;;) {
    p = waitpid(-1, &st, WNOHANG);
    if (p > 0 || (p < 0 && errno == EINTR))
      continue;
    if (p < 0) /* ECHILD: none left */
      return strays;
    if (now_ms() >= end) {
      strays += kill_strays();
      end = LLONG_MAX;
    }
    lmp_test_sleep_ms(1);
  }
}

/* Segments left under a prefix founded by the test process itself. */
static int leaked_shm(pid_t pid)
{
  char prefix[32];
  struct dirent *d;
  DIR *dir;
  size_t len;
  int n = 0;

  len = (size_t)snprintf(prefix, sizeof prefix, "lmp.%ld.", (long)pid);
  if ((dir = opendir("/dev/shm")) == NULL)
    return 0;
  while ((d = readdir(dir)) != NULL) {
    if (strncmp(d->d_name, prefix, len) != 0)
      continue;
    fprintf(stderr, "# leaked /dev/shm/%s\n", d->d_name);
    unlinkat(dirfd(dir), d->d_name, 0);
    n++;
  }
  closedir(dir);
  return n;
}

static void run_one(const lmp_test_t *t, result_t *r)
{
  int secs = (t->timeout_s > 0 ? t->timeout_s : DEFAULT_TIMEOUT_S) * timeout_mult();
  int st, code, done;
  pid_t pid;

  fflush(stdout);
  fflush(stderr);
  pid = fork();
  if (pid < 0) {
    snprintf(r->why, sizeof r->why, "fork: %s", strerror(errno));
    return;
  }
  if (pid == 0)
    child_main(t);
  setpgid(pid, pid); /* both sides, so neither races the other */
  done = wait_exit(pid, secs * 1000);
  kill(-pid, SIGKILL);
  waitpid(pid, &st, 0);
  code = decode_status(st);
  if (!done)
    snprintf(r->why, sizeof r->why, "timeout");
  else if (code < 0)
    snprintf(r->why, sizeof r->why, "signal %d", -code);
  else if (code > 0)
    snprintf(r->why, sizeof r->why, "exit %d", code);
  else
    r->ok = 1;
  if (reap_strays() > 0 && r->ok) {
    r->ok = 0;
    snprintf(r->why, sizeof r->why, "leftover process");
  }
  if (leaked_shm(pid) > 0 && r->ok) {
    r->ok = 0;
    snprintf(r->why, sizeof r->why, "leaked shared memory");
  }
}

/* LMP_TEST_SKIP="name,name": tests a run cannot do where it runs (under
 * valgrind, say, which lacks pidfd_open); reported as TAP skips. */
static int skipped(const char *name)
{
  const char *list = getenv("LMP_TEST_SKIP"), *p;
  size_t n = strlen(name);
  for (p = list; p != NULL && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
    if (strncmp(p, name, n) == 0 && (p[n] == ',' || p[n] == '\0'))
      return 1;
  return 0;
}

int main(int argc, char **argv)
{
  const char *filter = argc > 1 ? argv[1] : NULL;
  const lmp_test_t *t;
  int n = 0, i = 0, passed = 0, failed = 0;
  result_t r;

  setvbuf(stdout, NULL, _IOLBF, 0);
  /* Orphans of a test come back to us, so none outlives the run. */
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  for (t = lmp_tests; t->name; t++)
    n += filter == NULL || strstr(t->name, filter) != NULL;
  printf("1..%d\n", n);
  for (t = lmp_tests; t->name; t++) {
    if (filter != NULL && strstr(t->name, filter) == NULL)
      continue;
    memset(&r, 0, sizeof r);
    i++;
    if (skipped(t->name)) {
      printf("ok %d - %s: %s # SKIP LMP_TEST_SKIP\n", i, base_name(t->file), t->name);
      continue;
    }
    run_one(t, &r);
    if (r.ok) {
      passed++;
      printf("ok %d - %s: %s\n", i, base_name(t->file), t->name);
    } else {
      failed++;
      printf("not ok %d - %s: %s # %s\n", i, base_name(t->file), t->name, r.why);
    }
  }
  printf("# %d passed, %d failed\n", passed, failed);
  return failed > 0 || n == 0 ? 1 : 0;
}

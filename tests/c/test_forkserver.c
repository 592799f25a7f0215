/*
 * test_forkserver.c -- the forkserver (runtime/forkserver.c) with a C run
 * function: children run with the requester's stdio, their exit codes come
 * back, a killed server is started again, and no descriptor leaks into the
 * requester or from one child to the next.
 *
 * The server is this test binary exec'd with `--serve FD`: a constructor
 * sees that before the runner's main and serves.  A payload is a memfd
 * holding one job (what the child does, and its exit code).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "forkserver.h"
#include "lmp/common.h"
#include "lmp/proc.h"
#include "runner.h"

enum {
  JOB_EXIT,   /* exit with the code */
  JOB_WRITE,  /* write "ran <code>\n" to stdout, then exit with the code */
  JOB_PPID,   /* write the parent's pid (the server) to stdout */
  JOB_NULL,   /* exit 0 if stdin, stdout and stderr are /dev/null */
  JOB_FDS,    /* exit with the number of descriptors open */
  JOB_HOLD,   /* read stdin to end of file, then exit 0 */
  JOB_INITED, /* exit with 1 if the server's init ran */
  JOB_SIGINT, /* raise SIGINT, then exit 0 */
};

typedef struct job {
  int32_t what;
  int32_t code;
} job_t;

/* === the server's side === */

static int inited;

static void srv_init(void *ctx)
{
  (void)ctx;
  inited = 1;
}

static int srv_run(void *ctx, int payload)
{
  job_t j;
  char line[32];
  struct stat st;
  (void)ctx;
  if (pread(payload, &j, sizeof j, 0) != (ssize_t)sizeof j)
    return 100;
  close(payload);
  switch (j.what) {
  case JOB_WRITE: {
    int n = snprintf(line, sizeof line, "ran %d\n", j.code);
    return write(1, line, (size_t)n) == n ? j.code : 101;
  }
  case JOB_PPID: {
    pid_t pp = getppid();
    return write(1, &pp, sizeof pp) == (ssize_t)sizeof pp ? 0 : 101;
  }
  case JOB_NULL:
    for (int i = 0; i < 3; i++)
      if (fstat(i, &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(1, 3))
        return 1;
    return 0;
  case JOB_FDS:
    return lmp_test_fd_count();
  case JOB_HOLD:
    while (read(0, line, sizeof line) > 0) {
    }
    return 0;
  case JOB_INITED:
    return inited;
  case JOB_SIGINT:
    raise(SIGINT);
    return 0;
  default:
    return j.code;
  }
}

/* glibc hands constructors the command line. */
__attribute__((constructor)) static void serve_if_asked(int argc, char **argv, char **envp)
{
  (void)envp;
  if (argc == 3 && strcmp(argv[1], "--serve") == 0) {
    lmp__fs_server_t srv = {srv_init, srv_run, NULL};
    lmp__fs_serve(atoi(argv[2]), &srv);
  }
}

/* === the requester's side === */

static char self_exe[PATH_MAX];
static char *server_argv[] = {self_exe, "--serve", NULL, NULL};
static int commands; /* servers started */

static int command(void *ctx, lmp__fs_cmd_t *cmd)
{
  (void)ctx;
  ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
  if (n < 0)
    return -errno;
  self_exe[n] = '\0';
  cmd->path = self_exe;
  cmd->argv = server_argv;
  cmd->fd_arg = 2;
  commands++;
  return 0;
}

static int payload(int what, int code)
{
  job_t j = {what, code};
  int fd = memfd_create("job", MFD_CLOEXEC);
  CHECK(fd >= 0);
  CHECK_EQ(write(fd, &j, sizeof j), sizeof j);
  return fd;
}

/* Start a child for one job, with LMP_PROC_* flags; its handle. */
static lmp_proc_t *start_flags(int what, int code, int flags)
{
  lmp_proc_t *p = NULL;
  int fd = payload(what, code);
  CHECK_EQ(lmp__fs_request(command, NULL, fd, flags, &p), 0);
  CHECK(p != NULL);
  close(fd);
  return p;
}

static lmp_proc_t *start(int what, int code)
{
  return start_flags(what, code, 0);
}

/* Run one job to its end, with LMP_PROC_* flags: its exit code. */
static int run_flags(int what, int code, int flags)
{
  lmp_proc_t *p = start_flags(what, code, flags);
  int ec;
  CHECK_EQ(lmp_proc_wait(p, lmp_test_ms(5000)), 0);
  CHECK_EQ(lmp_proc_exitcode(p, &ec), 0);
  lmp_proc_free(p);
  return ec;
}

static int run(int what, int code)
{
  return run_flags(what, code, 0);
}

/* Point stdout at a new pipe; its read end. */
static int capture_stdout(void)
{
  int p[2];
  CHECK_EQ(pipe(p), 0);
  CHECK_EQ(dup2(p[1], 1), 1);
  close(p[1]);
  return p[0];
}

TEST(children_run_and_report_exit_codes)
{
  CHECK_EQ(run(JOB_EXIT, 0), 0); /* the server keeps the stdout it had */
  int out = capture_stdout();
  char buf[64] = {0};
  CHECK_EQ(run(JOB_WRITE, 0), 0);
  CHECK_EQ(run(JOB_WRITE, 3), 3);
  CHECK_EQ(run(JOB_EXIT, 7), 7);
  CHECK_EQ(read(out, buf, sizeof buf - 1), 12);
  CHECK_STREQ(buf, "ran 0\nran 3\n");
  CHECK_EQ(commands, 1); /* one server for them all */
  CHECK_EQ(run(JOB_INITED, 0), 1);
}

TEST(a_killed_child_is_reported)
{
  int in[2], ec;
  CHECK_EQ(pipe(in), 0);
  CHECK_EQ(dup2(in[0], 0), 0);
  close(in[0]);
  lmp_proc_t *p = start(JOB_HOLD, 0);
  CHECK_EQ(lmp_proc_alive(p), 1);
  CHECK_EQ(lmp_proc_wait(p, lmp_test_ms(50)), -ETIMEDOUT);
  CHECK_EQ(lmp_proc_signal(p, SIGKILL), 0);
  CHECK_EQ(lmp_proc_wait(p, lmp_test_ms(5000)), 0);
  CHECK_EQ(lmp_proc_exitcode(p, &ec), 0);
  CHECK_EQ(ec, -SIGKILL);
  lmp_proc_free(p);
  close(in[1]);
}

/* The pid of the server that runs a child now (the child writes its
 * parent's to stdout, captured at `out`). */
static pid_t server_pid(int out)
{
  pid_t pid;
  CHECK_EQ(run(JOB_PPID, 0), 0);
  CHECK_EQ(read(out, &pid, sizeof pid), sizeof pid);
  return pid;
}

/* The server is killed between two requests: the second starts another. */
TEST(server_restarts_after_sigkill)
{
  int out = capture_stdout();
  pid_t first, second;
  first = server_pid(out);
  CHECK_EQ(kill(first, SIGKILL), 0);
  second = server_pid(out);
  CHECK(second != first);
  CHECK_EQ(commands, 2);
  CHECK_EQ(run(JOB_EXIT, 5), 5);
  CHECK_EQ(commands, 2);
}

/* The server dies before it answers (it is stopped, so the request is
 * queued, then killed): the request goes to a new server. */
TEST(server_restarts_when_dead_at_request)
{
  int out = capture_stdout();
  pid_t first, second;
  first = server_pid(out);
  CHECK_EQ(kill(first, SIGSTOP), 0);
  pid_t killer = lmp_test_fork();
  if (killer == 0) {
    lmp_test_sleep_ms(100);
    kill(first, SIGKILL);
    _exit(0);
  }
  second = server_pid(out);
  CHECK(second != first);
  CHECK_EQ(commands, 2);
  CHECK_EQ(lmp_test_wait(killer, 5000), 0);
}

/* A closed stdio descriptor reaches the child as /dev/null. */
TEST(closed_stdio_becomes_dev_null)
{
  lmp_proc_t *p = NULL;
  int ec;
  CHECK_EQ(run(JOB_EXIT, 0), 0); /* the server's socket is not one of 0-2 */
  int fd = payload(JOB_NULL, 0);
  close(0);
  close(1);
  close(2);
  CHECK_EQ(lmp__fs_request(command, NULL, fd, 0, &p), 0);
  CHECK_EQ(lmp_proc_wait(p, lmp_test_ms(5000)), 0);
  CHECK_EQ(lmp_proc_exitcode(p, &ec), 0);
  CHECK_EQ(ec, 0);
  lmp_proc_free(p);
}

TEST(no_descriptor_leaks)
{
  int in[2];
  CHECK_EQ(run(JOB_EXIT, 0), 0); /* the server runs from here on */
  int before = lmp_test_fd_count();
  for (int i = 0; i < 5; i++)
    CHECK_EQ(run(JOB_EXIT, i), i);
  CHECK_EQ(lmp_test_fd_count(), before);
  /* A child sees 0-2 and what the runtime keeps, nothing of the server's
   * bookkeeping: not the status pipe of a sibling still running. */
  int alone = run(JOB_FDS, 0);
  CHECK(alone >= 3);
  CHECK_EQ(pipe(in), 0);
  CHECK_EQ(dup2(in[0], 0), 0);
  close(in[0]);
  lmp_proc_t *hold = start(JOB_HOLD, 0);
  CHECK_EQ(run(JOB_FDS, 0), alone);
  close(in[1]);
  CHECK_EQ(lmp_proc_wait(hold, lmp_test_ms(5000)), 0);
  lmp_proc_free(hold);
}

TEST(daemon_flag_and_start_errors)
{
  lmp_proc_t *p = NULL;
  int fd = payload(JOB_EXIT, 9), ec;
  CHECK_EQ(lmp__fs_request(command, NULL, fd, LMP_PROC_DAEMON, &p), 0);
  close(fd);
  CHECK_EQ(lmp_proc_wait(p, lmp_test_ms(5000)), 0);
  CHECK_EQ(lmp_proc_exitcode(p, &ec), 0);
  CHECK_EQ(ec, 9);
  lmp_proc_free(p);
  /* A payload that is no descriptor cannot be sent. */
  CHECK_EQ(lmp__fs_request(command, NULL, -1, 0, &p), -EBADF);
  CHECK(p == NULL);
}

/* A child asked for with LMP_PROC_NOINT ignores ^C from its birth (the
 * server's SIGINT stays ignored); any other takes it as a program does. */
TEST(noint_child_ignores_sigint)
{
  CHECK_EQ(run_flags(JOB_SIGINT, 0, 0), -SIGINT);
  CHECK_EQ(run_flags(JOB_SIGINT, 0, LMP_PROC_NOINT), 0);
}

TEST_LIST = {
    TEST_ENTRY(children_run_and_report_exit_codes),
    TEST_ENTRY(a_killed_child_is_reported),
    TEST_ENTRY(server_restarts_after_sigkill),
    TEST_ENTRY(server_restarts_when_dead_at_request),
    TEST_ENTRY(closed_stdio_becomes_dev_null),
    TEST_ENTRY(no_descriptor_leaks),
    TEST_ENTRY(daemon_flag_and_start_errors),
    TEST_ENTRY(noint_child_ignores_sigint),
    TEST_END,
};

/*
 * proc.c -- child processes: fork, reap, signal, and the exit path.
 *
 * The runtime keeps a registry of the children it forked: pid, a pidfd when
 * the kernel has pidfd_open(2), state and exit code, the daemon flag, and
 * whether a handle (lmp_proc_t returned to the caller) still refers to the
 * record.  The handle *is* the record, so no lookup is needed; a record
 * outlives its handle until the child is reaped, and a reaped child outlives
 * its record only as long as its handle does.
 *
 * Reaping.  A SIGCHLD handler, installed once and chained to whatever
 * handler was there before, only sets a flag.  lmp_proc_reap() runs in
 * normal context and calls waitpid(pid, WNOHANG) for registered pids only:
 * waitpid(-1) would steal the children of other libraries in the same
 * process.  Waiting with a deadline sleeps in poll(2) on the pidfd, so a join
 * with a timeout wakes exactly when the child ends; without pidfds it falls
 * back to waitpid(WNOHANG) with a growing sleep.
 *
 * Orphans.  A child asks for SIGKILL when its parent dies
 * (PR_SET_PDEATHSIG) and then checks that its parent is still the process
 * that forked it, closing the race in which the parent died before the
 * request took effect.  Note that the kernel ties the death signal to the
 * *thread* that forked: a host that forks from a short-lived thread should
 * not use lmp_proc_fork from it.
 *
 * The registry is process-local and not thread-safe: lmp calls it from the
 * thread that runs the Lua state.  A forked child inherits copies of its
 * parent's records; it closes their pidfds and forgets them, except that
 * records still referenced by an inherited handle are kept (detached from
 * the registry) so that freeing the handle later stays valid.  Such foreign
 * records answer -ECHILD: they are the parent's children, not ours.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lmp/common.h"
#include "lmp/proc.h"
#include "lmp/shm.h"

#include "internal.h"

#define SHUTDOWN_GRACE_NS 1000000000LL /* SIGTERM to SIGKILL for daemons */
#define BACKOFF_MIN_NS 50000LL         /* waitpid polling without a pidfd */
#define BACKOFF_MAX_NS 10000000LL
#define STATUS_LOST 255 /* someone else reaped our child */

enum { RUNNING, EXITED, FOREIGN };

struct lmp_proc {
  struct lmp_proc *next; /* registry link; unused once FOREIGN */
  pid_t pid;
  int pidfd; /* -1 without pidfd_open */
  int state;
  int code; /* Python-style exit code once EXITED */
  int daemon;
  int handle; /* the caller still holds this record */
};

static struct lmp_proc *registry;
static pid_t parent_pid; /* 0 in a process not forked by lmp */

static volatile sig_atomic_t sigchld_seen;
static int sigchld_installed;
static struct sigaction sigchld_prev;

/* === SIGCHLD === */

static void on_sigchld(int sig, siginfo_t *info, void *ctx)
{
  int saved = errno;
  sigchld_seen = 1;
  if (sigchld_prev.sa_flags & SA_SIGINFO) {
    if (sigchld_prev.sa_sigaction)
      sigchld_prev.sa_sigaction(sig, info, ctx);
  } else if (sigchld_prev.sa_handler != SIG_DFL && sigchld_prev.sa_handler != SIG_IGN) {
    sigchld_prev.sa_handler(sig);
  }
  errno = saved;
}

/* Installed before the first fork so no exit goes unnoticed.  A previous
 * SIG_IGN cannot be chained: it made the kernel reap every child, which
 * would defeat exit codes, so it is replaced. */
static int install_sigchld(void)
{
  if (sigchld_installed)
    return 0;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_sigchld;
  sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_NOCLDSTOP;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGCHLD, &sa, &sigchld_prev) < 0)
    return -errno;
  sigchld_installed = 1;
  return 0;
}

/* === the registry === */

static void unlink_record(struct lmp_proc *p)
{
  for (struct lmp_proc **pp = &registry; *pp; pp = &(*pp)->next) {
    if (*pp == p) {
      *pp = p->next;
      return;
    }
  }
}

static void free_record(struct lmp_proc *p)
{
  if (p->pidfd >= 0)
    close(p->pidfd);
  free(p);
}

static int decode_status(int status)
{
  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  if (WIFSIGNALED(status))
    return -WTERMSIG(status);
  return STATUS_LOST;
}

/* Record an exit.  A reaped child nobody refers to is forgotten at once. */
static void mark_exited(struct lmp_proc *p, int code)
{
  p->state = EXITED;
  p->code = code;
  if (!p->handle) {
    unlink_record(p);
    free_record(p);
  }
}

/*
 * waitpid() one running child.  `flags` is 0 or WNOHANG.  Returns 1 if the
 * child is (now) reaped, 0 if it still runs, -errno on failure.  The record
 * may be freed on return 1 when no handle holds it.
 */
static int try_reap(struct lmp_proc *p, int flags)
{
  int status;
  for (;;) {
    pid_t r = waitpid(p->pid, &status, flags);
    if (r == p->pid) {
      mark_exited(p, decode_status(status));
      return 1;
    }
    if (r == 0)
      return 0;
    if (errno == EINTR)
      continue;
    if (errno == ECHILD) {
      /* Reaped behind our back (a waitpid(-1) elsewhere): the status is
       * gone, but the child certainly is too. */
      mark_exited(p, STATUS_LOST);
      return 1;
    }
    return -errno;
  }
}

static void reap_all(void)
{
  struct lmp_proc *p = registry, *next;
  for (; p; p = next) {
    next = p->next;
    if (p->state == RUNNING)
      (void)try_reap(p, WNOHANG);
  }
}

void lmp_proc_reap(void)
{
  if (!sigchld_seen)
    return;
  /* Cleared first, so an exit during the scan sets it again. */
  sigchld_seen = 0;
  reap_all();
}

int lmp_proc_children(pid_t *pids, int max)
{
  /* A full scan, not lmp_proc_reap(): the flag is lost if a host replaced
   * our handler, and this must not list a child that has exited. */
  reap_all();
  int n = 0;
  for (struct lmp_proc *p = registry; p; p = p->next) {
    if (p->state != RUNNING)
      continue;
    if (n < max && pids)
      pids[n] = p->pid;
    n++;
  }
  return n;
}

/* === fork === */

static int open_pidfd(pid_t pid)
{
#ifdef SYS_pidfd_open
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd >= 0)
    return fd;
#else
  (void)pid;
#endif
  return -1;
}

/* In a new child: the parent's children are not ours.  Records an inherited
 * handle still points at stay allocated, marked FOREIGN. */
static void forget_parent_registry(void)
{
  struct lmp_proc *p = registry, *next;
  registry = NULL;
  for (; p; p = next) {
    next = p->next;
    if (p->handle) {
      if (p->pidfd >= 0)
        close(p->pidfd);
      p->pidfd = -1;
      p->next = NULL;
      if (p->state == RUNNING)
        p->state = FOREIGN;
    } else {
      free_record(p);
    }
  }
}

static void child_setup(pid_t forker)
{
  lmp_runtime_postfork_child();
  forget_parent_registry();
  sigchld_seen = 0;
  /* Ask first, then check: if the parent died before the request, the
   * kernel will never send the signal, but getppid() has changed. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != forker) {
    lmp_runtime_release_all();
    _exit(1);
  }
  parent_pid = forker;
}

int lmp_proc_fork(int daemon, lmp_proc_t **out)
{
  *out = NULL;
  /* The child must belong to our family (prefix, watchdog), not found one. */
  int rc = lmp_runtime_init();
  if (rc < 0 || (rc = install_sigchld()) < 0)
    return rc;
  /* Allocated before the fork so nothing can fail after it. */
  struct lmp_proc *p = calloc(1, sizeof *p);
  if (!p)
    return -ENOMEM;
  pid_t self = getpid();
  fflush(NULL); /* or buffered output would be written twice */
  lmp_runtime_prefork();
  pid_t pid = fork();
  if (pid < 0) {
    rc = -errno;
    lmp_runtime_postfork_parent(1);
    free(p);
    return rc;
  }
  if (pid == 0) {
    free(p);
    child_setup(self);
    return 0;
  }
  lmp_runtime_postfork_parent(0);
  p->pid = pid;
  p->pidfd = open_pidfd(pid);
  p->state = RUNNING;
  p->daemon = daemon != 0;
  p->handle = 1;
  p->next = registry;
  registry = p;
  *out = p;
  return 1;
}

void lmp_proc_free(lmp_proc_t *p)
{
  if (!p)
    return;
  p->handle = 0;
  if (p->state == RUNNING)
    return; /* stays registered until reaped */
  if (p->state == EXITED)
    unlink_record(p);
  free_record(p);
}

/* === one child === */

pid_t lmp_proc_pid(const lmp_proc_t *p)
{
  return p->pid;
}

int lmp_proc_fd(const lmp_proc_t *p)
{
  return p->pidfd;
}

static void sleep_ns(int64_t ns)
{
  struct timespec ts = {.tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

/* Without a pidfd: waitpid(WNOHANG), sleeping 50 us doubling to 10 ms. */
static int backoff_wait(struct lmp_proc *p, int64_t deadline)
{
  int64_t step = BACKOFF_MIN_NS;
  for (;;) {
    int rc = try_reap(p, WNOHANG);
    if (rc != 0)
      return rc < 0 ? rc : 0;
    int64_t left = deadline - lmp_now_ns();
    if (left <= 0)
      return -ETIMEDOUT;
    sleep_ns(step < left ? step : left);
    if (step < BACKOFF_MAX_NS)
      step *= 2;
  }
}

int lmp_proc_wait(lmp_proc_t *p, int64_t deadline)
{
  if (p->state == EXITED)
    return 0;
  if (p->state == FOREIGN)
    return -ECHILD;
  if (p->pidfd < 0)
    return backoff_wait(p, deadline);
  int rc = try_reap(p, WNOHANG);
  if (rc != 0)
    return rc < 0 ? rc : 0;
  rc = lmp__poll_fd(p->pidfd, POLLIN, deadline);
  if (rc < 0)
    return backoff_wait(p, deadline); /* someone closed our pidfd */
  if (rc == 0)
    return -ETIMEDOUT;
  /* Readable means it has exited: this waitpid does not block. */
  rc = try_reap(p, 0);
  return rc < 0 ? rc : 0;
}

int lmp_proc_alive(lmp_proc_t *p)
{
  if (p->state == EXITED)
    return 0;
  if (p->state == FOREIGN)
    return -ECHILD;
  int rc = try_reap(p, WNOHANG);
  if (rc < 0)
    return rc;
  return rc == 0;
}

int lmp_proc_exitcode(lmp_proc_t *p, int *code)
{
  if (p->state == FOREIGN)
    return -ECHILD;
  if (p->state == RUNNING) {
    int rc = try_reap(p, WNOHANG);
    if (rc < 0)
      return rc;
    if (rc == 0)
      return -EAGAIN;
  }
  *code = p->code;
  return 0;
}

/*
 * Signal a child only while it is unreaped: until waitpid() collects it the
 * pid cannot be reused, even if it has already exited (a zombie takes a
 * signal harmlessly).  After the reap the pid may belong to anyone.
 */
int lmp_proc_signal(lmp_proc_t *p, int sig)
{
  if (p->state == EXITED)
    return 0;
  if (p->state == FOREIGN)
    return -ECHILD;
  if (kill(p->pid, sig) < 0)
    return errno == ESRCH ? 0 : -errno;
  return 0;
}

/* === shutdown and exit === */

static void signal_daemons(int sig)
{
  for (struct lmp_proc *p = registry; p; p = p->next) {
    if (p->daemon && p->state == RUNNING)
      (void)lmp_proc_signal(p, sig);
  }
}

/* Wait for every running child matching `daemon` (-1: any) until the
 * deadline.  The list changes under us (records are freed when reaped), so
 * the scan restarts after each reap. */
static void wait_children(int daemon, int64_t deadline)
{
  for (;;) {
    struct lmp_proc *p = registry;
    while (p && (p->state != RUNNING || (daemon >= 0 && p->daemon != daemon)))
      p = p->next;
    if (!p)
      return;
    int rc = lmp_proc_wait(p, deadline);
    if (rc == -ETIMEDOUT)
      return;
    if (rc < 0)
      mark_exited(p, STATUS_LOST); /* cannot wait for it: give up, not loop */
  }
}

void lmp_proc_shutdown(void)
{
  /* As Python does: terminate the daemons first, then join the others. */
  signal_daemons(SIGTERM);
  wait_children(1, lmp_now_ns() + SHUTDOWN_GRACE_NS);
  signal_daemons(SIGKILL);
  wait_children(1, LMP_FOREVER);
  wait_children(0, LMP_FOREVER);
}

void lmp_proc_exit(int code)
{
  lmp_proc_shutdown();
  lmp_runtime_release_all();
  fflush(NULL);
  _exit(code);
}

pid_t lmp_proc_parent_pid(void)
{
  return parent_pid;
}

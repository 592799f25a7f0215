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
 * normal context and reaps registered children only: waitpid(-1) would steal
 * the children of other libraries in the same process.  Waiting with a
 * deadline sleeps in poll(2) on the pidfd, so a join with a timeout wakes
 * exactly when the child ends; without pidfds it falls back to
 * waitpid(WNOHANG) with a growing sleep.  lmp_proc_release_signals puts the
 * host's handler back, for a host that unloads lmp.
 *
 * Hosts reap what they did not start: a server's own SIGCHLD loop calls
 * waitpid(-1) on everything, lmp's children included, and the kernel may
 * then give the pid to anyone.  So a child is reaped and signalled through
 * its pidfd (waitid(P_PIDFD), pidfd_send_signal), which names that process
 * and no other, and a child whose pidfd says it is gone but that waitid
 * cannot find was reaped by someone else: it is recorded as exited (code
 * 255), never signalled again.  Only without pidfds (kernels before 5.4)
 * does a pid stand for a child, and then only while it is unreaped.
 *
 * Descriptors.  A record's pidfd (or status descriptor) is closed as soon
 * as the child is reaped, unless lmp_proc_fd handed it out: a caller that
 * polls it (a pool's epoll set, a Process's sentinel) keeps it until
 * lmp_proc_free.  So children that are never joined cost no descriptor
 * once they ended.  Asked for after that, lmp_proc_fd gives one
 * descriptor shared by every ended child, which is readable for good.
 *
 * Owners.  Several independent users can share one process (two Lua states
 * in one server); each tags its children with an owner, and ending one
 * owner's children (lmp_proc_shutdown_owner) leaves the others running.
 *
 * Orphans.  A child asks for SIGKILL when its parent dies
 * (PR_SET_PDEATHSIG) and then checks that its parent is still the process
 * that forked it, closing the race in which the parent died before the
 * request took effect.  Note that the kernel ties the death signal to the
 * *thread* that forked: a host that forks from a short-lived thread should
 * not use lmp_proc_fork from it.
 *
 * Other kinds.  lmp_proc_spawn is lmp_proc_fork followed by execve, with
 * the environment that makes the new program join this family built before
 * the fork (setenv after a fork is unsafe in a threaded host) and a
 * close-on-exec pipe that brings back the exec's error, if any.  An adopted
 * record (lmp_proc_adopt) stands for a process some other process forked
 * for us (the forkserver): waitpid cannot see it, so its "reap" reads the
 * exit code its real parent writes on the status descriptor, and signals go
 * through its pidfd, which stays bound to that process even once its pid is
 * recycled.  Services (the forkserver itself) are ended last at shutdown,
 * after the children they serve.
 *
 * The registry is process-local and not thread-safe: lmp calls it from the
 * thread that runs the Lua state.  A forked child inherits copies of its
 * parent's records; it closes their pidfds and forgets them, except that
 * records still referenced by an inherited handle are kept (detached from
 * the registry) so that freeing the handle later stays valid.  Such foreign
 * records answer -ECHILD: they are the parent's children, not ours.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lmp/common.h"
#include "lmp/proc.h"
#include "lmp/runtime.h"

#include "internal.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

#define SHUTDOWN_GRACE_NS 1000000000LL /* SIGTERM to SIGKILL for daemons */
#define BACKOFF_MIN_NS 50000LL         /* waitpid polling without a pidfd */
#define BACKOFF_MAX_NS 10000000LL
#define STATUS_LOST 255 /* someone else reaped our child */

enum { RUNNING, EXITED, FOREIGN };

struct lmp_proc {
  struct lmp_proc *next; /* registry link; unused once FOREIGN */
  pid_t pid;
  int pidfd;     /* -1 without pidfd_open */
  int status_fd; /* adopted: the exit code arrives here; -1 for our own children */
  int state;
  int code;   /* Python-style exit code once EXITED */
  int flags;  /* 0, LMP_PROC_DAEMON or LMP_PROC_SERVICE */
  int handle; /* the caller still holds this record */
  int lent;   /* lmp_proc_fd handed out the descriptor: kept until freed */
  uint64_t owner;
};

static struct lmp_proc *registry;
static pid_t parent_pid;    /* 0 in a process not started by lmp */
static int adopted_running; /* adopted records still RUNNING: reap polls them */

static int have_waitid_pidfd = 1;

static volatile sig_atomic_t sigchld_seen;
static int sigchld_installed;
static struct sigaction sigchld_prev;

/* === SIGCHLD === */

static void on_sigchld(int sig, siginfo_t *info, void *ctx);

static int is_ours(const struct sigaction *sa)
{
  return (sa->sa_flags & SA_SIGINFO) && sa->sa_sigaction == on_sigchld;
}

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
  if (is_ours(&sigchld_prev)) { /* never chain to ourselves */
    memset(&sigchld_prev, 0, sizeof sigchld_prev);
    sigchld_prev.sa_handler = SIG_DFL;
  }
  sigchld_installed = 1;
  return 0;
}

void lmp_proc_release_signals(void)
{
  struct sigaction now;
  if (!sigchld_installed)
    return;
  /* A handler the host installed since is the host's business. */
  if (sigaction(SIGCHLD, NULL, &now) == 0 && is_ours(&now))
    sigaction(SIGCHLD, &sigchld_prev, NULL);
  sigchld_installed = 0;
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

static void close_fds(struct lmp_proc *p)
{
  if (p->pidfd >= 0)
    close(p->pidfd);
  if (p->status_fd >= 0)
    close(p->status_fd);
  p->pidfd = p->status_fd = -1;
}

static void free_record(struct lmp_proc *p)
{
  close_fds(p);
  free(p);
}

/* One flag out of what callers pass: a service, a daemon, or neither. */
static int norm_flags(int flags)
{
  flags &= ~LMP_PROC_NOINT; /* how it starts, not what it is */
  if (flags & LMP_PROC_SERVICE)
    return LMP_PROC_SERVICE;
  return flags ? LMP_PROC_DAEMON : 0;
}

static int decode_status(int status)
{
  if (WIFEXITED(status))
    return WEXITSTATUS(status);
  if (WIFSIGNALED(status))
    return -WTERMSIG(status);
  return STATUS_LOST;
}

/* Record an exit.  A reaped child nobody refers to is forgotten at once;
 * one still referred to keeps its descriptors only if they were lent. */
static void mark_exited(struct lmp_proc *p, int code)
{
  if (p->status_fd >= 0 && p->state == RUNNING)
    adopted_running--;
  p->state = EXITED;
  p->code = code;
  lmp__holdings_reaped(p->pid);
  if (!p->handle) {
    unlink_record(p);
    free_record(p);
  } else if (!p->lent) {
    close_fds(p);
  }
}

/* The "reap" of an adopted process: its exit code, once its real parent
 * has written it.  Same returns as try_reap. */
static int read_status(struct lmp_proc *p, int flags)
{
  if (flags & WNOHANG) {
    int rc = lmp__poll_fd(p->status_fd, POLLIN, lmp_deadline(0));
    if (rc == 0)
      return 0;
  }
  int32_t code;
  ssize_t n;
  while ((n = read(p->status_fd, &code, sizeof code)) < 0 && errno == EINTR) {
  }
  /* End of file: the parent died before reporting; the child died with it
   * (it asked for SIGKILL when its parent dies). */
  mark_exited(p, n == (ssize_t)sizeof code ? (int)code : STATUS_LOST);
  return 1;
}

static int decode_siginfo(const siginfo_t *si)
{
  if (si->si_code == CLD_EXITED)
    return si->si_status;
  if (si->si_code == CLD_KILLED || si->si_code == CLD_DUMPED)
    return -si->si_status;
  return STATUS_LOST;
}

/* One wait for p, without handling EINTR or ECHILD: the pid reaped (its
 * exit code in *code), 0 while it runs (WNOHANG), or -1 with errno.  With
 * a pidfd, waitid(P_PIDFD) names exactly this process, whatever its pid has
 * become since. */
static pid_t wait_once(struct lmp_proc *p, int flags, int *code)
{
  if (p->pidfd >= 0 && have_waitid_pidfd) {
    siginfo_t si;
    si.si_pid = 0;
    if (waitid((idtype_t)P_PIDFD, (id_t)p->pidfd, &si, WEXITED | flags) == 0) {
      *code = decode_siginfo(&si);
      return si.si_pid;
    }
    if (errno != EINVAL)
      return -1;
    have_waitid_pidfd = 0; /* a kernel with pidfd_open but no P_PIDFD (5.3) */
  }
  int status;
  pid_t r = waitpid(p->pid, &status, flags);
  if (r > 0)
    *code = decode_status(status);
  return r;
}

/*
 * Reap one running child.  `flags` is 0 or WNOHANG.  Returns 1 if the child
 * is (now) reaped, 0 if it still runs, -errno on failure.  The record may be
 * freed on return 1 when no handle holds it.
 */
static int try_reap(struct lmp_proc *p, int flags)
{
  if (p->status_fd >= 0)
    return read_status(p, flags);
  for (;;) {
    int code;
    pid_t r = wait_once(p, flags, &code);
    if (r > 0) {
      mark_exited(p, code);
      return 1;
    }
    if (r == 0)
      return 0;
    if (errno == EINTR)
      continue;
    if (errno == ECHILD) {
      /* Reaped behind our back (a host's waitpid(-1)): the status is gone,
       * but the child certainly is too. */
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

/* Adopted processes are not ours: no SIGCHLD tells of their end, so they
 * are looked at each time (one poll each, while any runs). */
static void reap_adopted(void)
{
  struct lmp_proc *p = registry, *next;
  for (; p && adopted_running > 0; p = next) {
    next = p->next;
    if (p->state == RUNNING && p->status_fd >= 0)
      (void)read_status(p, WNOHANG);
  }
}

void lmp_proc_reap(void)
{
  if (sigchld_seen) {
    /* Cleared first, so an exit during the scan sets it again. */
    sigchld_seen = 0;
    reap_all();
  } else if (adopted_running > 0) {
    reap_adopted();
  }
}

int lmp_proc_children(pid_t *pids, int max)
{
  /* A full scan, not lmp_proc_reap(): the flag is lost if a host replaced
   * our handler, and this must not list a child that has exited. */
  reap_all();
  int n = 0;
  for (struct lmp_proc *p = registry; p; p = p->next) {
    if (p->state != RUNNING || p->flags == LMP_PROC_SERVICE)
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
  adopted_running = 0;
  for (; p; p = next) {
    next = p->next;
    if (p->handle) {
      close_fds(p);
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
  lmp__runtime_postfork_child();
  forget_parent_registry();
  sigchld_seen = 0;
  /* Not the host's name: ps says what it is, and pkill <host> spares it. */
  prctl(PR_SET_NAME, "lmp-process");
  /* Ask first, then check: if the parent died before the request, the
   * kernel will never send the signal, but getppid() has changed. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != forker) {
    lmp_runtime_release_all();
    _exit(1);
  }
  parent_pid = forker;
}

int lmp_proc_fork(int flags, lmp_proc_t **out)
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
  /* NOINT: SIGINT is held across the fork, so that the child ignores it
   * before one can reach it; the parent gets a pending one when it lets go. */
  sigset_t intr, saved;
  sigemptyset(&intr);
  sigaddset(&intr, SIGINT);
  if (flags & LMP_PROC_NOINT)
    pthread_sigmask(SIG_BLOCK, &intr, &saved);
  fflush(NULL); /* or buffered output would be written twice */
  lmp__runtime_prefork();
  pid_t pid = fork();
  if (pid == 0 && (flags & LMP_PROC_NOINT))
    signal(SIGINT, SIG_IGN);
  if (flags & LMP_PROC_NOINT)
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
  if (pid < 0) {
    rc = -errno;
    lmp__runtime_postfork_parent(1);
    free(p);
    return rc;
  }
  if (pid == 0) {
    free(p);
    child_setup(self);
    return 0;
  }
  lmp__runtime_postfork_parent(0);
  p->pid = pid;
  p->pidfd = open_pidfd(pid);
  if (lmp_runtime_is_root()) {
    /* So it ends with us, even if we exec.  The watchdog gets a pidfd of
     * its own, not a duplicate of ours: an epoll set that holds ours (a
     * pool's) forgets it only once every duplicate of it is closed. */
    int wfd = open_pidfd(pid);
    lmp__watchdog_enroll(wfd);
    if (wfd >= 0)
      close(wfd);
  }
  p->status_fd = -1;
  p->state = RUNNING;
  p->flags = norm_flags(flags);
  p->handle = 1;
  p->next = registry;
  registry = p;
  *out = p;
  return 1;
}

/* === spawn: fork and exec === */

/* environ without LMP_PREFIX and LMP_ROOT_PID, plus this family's values.
 * The strings live in `vars` (two of 64 bytes); free() the array only. */
static char **family_env(char vars[2][64])
{
  extern char **environ;
  size_t n = 0;
  while (environ[n])
    n++;
  char **env = malloc((n + 3) * sizeof *env);
  if (!env)
    return NULL;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (strncmp(environ[i], "LMP_PREFIX=", 11) != 0 &&
        strncmp(environ[i], "LMP_ROOT_PID=", 13) != 0)
      env[k++] = environ[i];
  }
  snprintf(vars[0], 64, "LMP_PREFIX=%s", lmp_runtime_prefix());
  snprintf(vars[1], 64, "LMP_ROOT_PID=%ld", (long)lmp_runtime_root_pid());
  env[k++] = vars[0];
  env[k++] = vars[1];
  env[k] = NULL;
  return env;
}

/* Mark every descriptor above stderr close-on-exec, except `keep`. */
static void cloexec_all_but(int keep)
{
#ifdef SYS_close_range
  if (syscall(SYS_close_range, 3u, ~0u, 4u /* CLOSE_RANGE_CLOEXEC */) < 0)
#endif
  {
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536)
      max = 65536;
    for (int fd = 3; fd < max; fd++)
      fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  if (keep >= 0)
    fcntl(keep, F_SETFD, 0);
}

/* In the new child: drop what the fork gave us, exec, report a failure. */
static void exec_child(const char *path, char *const argv[], char **env, int keep, int errfd)
    __attribute__((noreturn));

static void exec_child(const char *path, char *const argv[], char **env, int keep, int errfd)
{
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  lmp_runtime_release_all();
  cloexec_all_but(keep);
  execve(path, argv, env);
  int32_t err = errno;
  if (write(errfd, &err, sizeof err) < 0) {
  }
  _exit(127);
}

int lmp_proc_spawn(const char *path, char *const argv[], int keep_fd, int flags, lmp_proc_t **out)
{
  char vars[2][64];
  int errpipe[2], rc;
  *out = NULL;
  if ((rc = lmp_runtime_init()) < 0)
    return rc;
  char **env = family_env(vars);
  if (!env)
    return -ENOMEM;
  if (pipe2(errpipe, O_CLOEXEC) < 0) {
    rc = -errno;
    free(env);
    return rc;
  }
  lmp_proc_t *p;
  rc = lmp_proc_fork(flags, &p);
  if (rc == 0)
    exec_child(path, argv, env, keep_fd, errpipe[1]);
  free(env);
  close(errpipe[1]);
  if (rc < 0) {
    close(errpipe[0]);
    return rc;
  }
  /* End of file: the exec closed the pipe, so it succeeded. */
  int32_t err = 0;
  ssize_t n;
  while ((n = read(errpipe[0], &err, sizeof err)) < 0 && errno == EINTR) {
  }
  close(errpipe[0]);
  if (n == (ssize_t)sizeof err) {
    lmp_proc_wait(p, LMP_FOREVER);
    lmp_proc_free(p);
    return err > 0 ? -err : -ENOEXEC;
  }
  *out = p;
  return 0;
}

/* === adopted processes === */

int lmp_proc_adopt(pid_t pid, int pidfd, int status_fd, int flags, lmp_proc_t **out)
{
  *out = NULL;
  struct lmp_proc *p = calloc(1, sizeof *p);
  if (!p) {
    if (pidfd >= 0)
      close(pidfd);
    close(status_fd);
    return -ENOMEM;
  }
  p->pid = pid;
  p->pidfd = pidfd;
  p->status_fd = status_fd;
  p->state = RUNNING;
  p->flags = norm_flags(flags);
  p->handle = 1;
  p->next = registry;
  registry = p;
  adopted_running++;
  *out = p;
  return 0;
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

/* The descriptor that tells of the child's end; -1 if it has none. */
static int live_fd(const struct lmp_proc *p)
{
  return p->status_fd >= 0 ? p->status_fd : p->pidfd;
}

/* One descriptor, readable for good (a socket whose peer is closed), that
 * stands for every ended child whose own descriptor is closed; -1 if it
 * cannot be made. */
static int ended_fd(void)
{
  static int fd = -1;
  int sv[2];
  if (fd < 0 && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0) {
    close(sv[1]);
    fd = sv[0];
  }
  return fd;
}

int lmp_proc_fd(lmp_proc_t *p)
{
  int fd = live_fd(p);
  if (fd >= 0)
    p->lent = 1;
  else if (p->state == EXITED)
    fd = ended_fd();
  return fd;
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

/* lmp_proc_wait, and with `intr` lmp_proc_wait_intr. */
static int proc_wait(struct lmp_proc *p, int64_t deadline, int intr)
{
  if (p->state == EXITED)
    return 0;
  if (p->state == FOREIGN)
    return -ECHILD;
  if (p->pidfd < 0 && p->status_fd < 0)
    return backoff_wait(p, deadline);
  int rc = try_reap(p, WNOHANG);
  if (rc != 0)
    return rc < 0 ? rc : 0;
  while ((rc = lmp__poll_fd(live_fd(p), POLLIN, deadline)) == -EINTR && !intr) {
  }
  if (rc == -EINTR)
    return rc;
  if (rc < 0)
    return backoff_wait(p, deadline); /* someone closed our pidfd */
  if (rc == 0)
    return -ETIMEDOUT;
  /* Readable means it has exited: this waitpid does not block. */
  rc = try_reap(p, 0);
  return rc < 0 ? rc : 0;
}

int lmp_proc_wait(lmp_proc_t *p, int64_t deadline)
{
  return proc_wait(p, deadline, 0);
}

int lmp_proc_wait_intr(lmp_proc_t *p, int64_t deadline)
{
  return proc_wait(p, deadline, 1);
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
 * Signal a child through its pidfd, which names that process even once a
 * host has reaped it and its pid went to someone else.  Without a pidfd, the
 * pid is used only while the child is provably unreaped (waitid with
 * WNOWAIT sees it): until then the pid cannot be reused, and a zombie takes
 * a signal harmlessly.
 */
int lmp_proc_signal(lmp_proc_t *p, int sig)
{
  if (p->state == EXITED)
    return 0;
  if (p->state == FOREIGN)
    return -ECHILD;
#ifdef SYS_pidfd_send_signal
  if (p->pidfd >= 0) {
    if (syscall(SYS_pidfd_send_signal, p->pidfd, sig, NULL, 0) == 0)
      return 0;
    if (errno == ESRCH)
      return 0; /* it has exited; the reap records it */
    if (errno != ENOSYS)
      return -errno;
  }
#endif
  if (p->status_fd >= 0)
    return -ESRCH; /* not our child: its pid proves nothing */
  siginfo_t si;
  si.si_pid = 0;
  if (waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0 && errno == ECHILD) {
    mark_exited(p, STATUS_LOST); /* reaped by someone else: the pid is not ours */
    return 0;
  }
  if (kill(p->pid, sig) < 0)
    return errno == ESRCH ? 0 : -errno;
  return 0;
}

/* === shutdown and exit === */

#define ANY_OWNER UINT64_MAX

static int selected(const struct lmp_proc *p, int flags, uint64_t owner)
{
  return p->state == RUNNING && p->flags == flags && (owner == ANY_OWNER || p->owner == owner);
}

static void signal_kind(int flags, uint64_t owner, int sig)
{
  for (struct lmp_proc *p = registry; p; p = p->next) {
    if (selected(p, flags, owner))
      (void)lmp_proc_signal(p, sig);
  }
}

/* Wait for every running child of the kind `flags` until the deadline.  The
 * list changes under us (records are freed when reaped), so the scan
 * restarts after each reap. */
static void wait_children(int flags, uint64_t owner, int64_t deadline)
{
  for (;;) {
    struct lmp_proc *p = registry;
    while (p && !selected(p, flags, owner))
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

/* SIGTERM, a grace period, SIGKILL. */
static void end_kind(int flags, uint64_t owner)
{
  signal_kind(flags, owner, SIGTERM);
  wait_children(flags, owner, lmp_now_ns() + SHUTDOWN_GRACE_NS);
  signal_kind(flags, owner, SIGKILL);
  wait_children(flags, owner, LMP_FOREVER);
}

void lmp_proc_set_owner(lmp_proc_t *p, uint64_t owner)
{
  p->owner = owner;
}

void lmp_proc_shutdown_owner(uint64_t owner)
{
  /* As Python does: terminate the daemons first, then join the others. */
  end_kind(LMP_PROC_DAEMON, owner);
  wait_children(0, owner, LMP_FOREVER);
}

void lmp_proc_shutdown(void)
{
  /* Every owner's children; the services they used (the forkserver) go
   * last. */
  lmp_proc_shutdown_owner(ANY_OWNER);
  end_kind(LMP_PROC_SERVICE, ANY_OWNER);
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

void lmp_proc_set_parent(pid_t pid)
{
  parent_pid = pid;
}

/* === usage === */

/* Read a small /proc file into buf (NUL-terminated): its length or -errno. */
static ssize_t read_small(const char *path, char *buf, size_t n)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  ssize_t len;
  do {
    len = read(fd, buf, n - 1);
  } while (len < 0 && errno == EINTR);
  int err = errno;
  close(fd);
  if (len < 0)
    return -err;
  buf[len] = '\0';
  return len;
}

int lmp_proc_usage(pid_t pid, lmp_proc_usage_t *out)
{
  char path[64], buf[1024];
  memset(out, 0, sizeof *out);
  if (pid == 0)
    snprintf(path, sizeof path, "/proc/self/statm");
  else
    snprintf(path, sizeof path, "/proc/%ld/statm", (long)pid);
  ssize_t n = read_small(path, buf, sizeof buf);
  if (n < 0)
    return (int)n;
  unsigned long long size, resident;
  if (sscanf(buf, "%llu %llu", &size, &resident) != 2)
    return -EINVAL;
  out->rss = (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
  snprintf(path + strlen(path) - 5, 6, "stat");
  if ((n = read_small(path, buf, sizeof buf)) < 0)
    return (int)n;
  /* "pid (comm) state ppid ...": comm may hold anything, so count the
   * fields from its last ')'.  utime and stime are fields 14 and 15. */
  const char *p = strrchr(buf, ')');
  unsigned long long ut, st;
  if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
    return -EINVAL;
  long hz = sysconf(_SC_CLK_TCK);
  out->cpu_ns = (int64_t)((ut + st) * (1000000000ULL / (unsigned long long)(hz > 0 ? hz : 100)));
  return 0;
}

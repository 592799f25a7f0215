/*
 * common.c -- time, error messages and byte buffers: the conventions every
 * other part of the runtime leans on.
 *
 * Time is CLOCK_MONOTONIC in nanoseconds, so wall-clock jumps never shorten
 * or stretch a wait.  A user's timeout in seconds becomes an absolute
 * deadline once, at the edge; everything below passes the deadline along, so
 * a wait that is interrupted or woken early resumes with what is left of the
 * budget instead of starting over.  Conversions saturate: a timeout too large
 * to represent is simply "forever", never a wrapped value in the past.
 *
 * Error codes are negative errnos (as in libuv).  lmp_strerror words the ones
 * that mean an expected outcome the way the Lua side reports them ("timed
 * out", "closed", "owner died") and defers to the C library for the rest.
 *
 * At the end, two facts every room may ask the system for: random bits (the
 * names of segments and of families, stash tokens) and when a process
 * started, which tells a live process from one that took a dead one's pid.
 */
#include "lmp/common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* === time === */

int64_t lmp_now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t lmp_deadline(double timeout_s)
{
  int64_t now, ns, d;

  if (isnan(timeout_s) || timeout_s < 0)
    return LMP_FOREVER;
  now = lmp_now_ns();
  if (timeout_s == 0)
    return now;
  /* 9e9 s is about 285 years: anything longer is forever, and below it the
   * product fits an int64_t comfortably (infinity lands here too). */
  if (timeout_s >= 9e9)
    return LMP_FOREVER;
  ns = (int64_t)(timeout_s * 1e9);
  if (ns == 0)
    ns = 1; /* a positive timeout is never "already expired" */
  if (__builtin_add_overflow(now, ns, &d) || d == LMP_FOREVER)
    return LMP_FOREVER;
  return d;
}

int lmp__deadline_ms(int64_t deadline)
{
  int64_t left;

  if (deadline == LMP_FOREVER)
    return -1;
  left = deadline - lmp_now_ns();
  if (left <= 0)
    return 0;
  if (left >= (int64_t)INT_MAX * 1000000)
    return INT_MAX;
  return (int)((left + 999999) / 1000000);
}

/* === interruption === */

static int (*interrupt_check)(void);

void lmp_set_interrupt_check(int (*pending)(void))
{
  interrupt_check = pending;
}

int lmp__interrupted(void)
{
  return interrupt_check && interrupt_check() ? -EINTR : 0;
}

int lmp__interruptible(void)
{
  return interrupt_check != NULL;
}

/* === errors === */

/* The codes with an lmp-specific wording; the rest read as strerror says. */
#define LMP__ERRNO_MAP(X)                                                                          \
  X(ETIMEDOUT, "timed out")                                                                        \
  X(EAGAIN, "would block")                                                                         \
  X(EPIPE, "closed")                                                                               \
  X(EOWNERDEAD, "owner died")                                                                      \
  X(ENOTRECOVERABLE, "lock not recoverable")                                                       \
  X(ENOENT, "no such object")                                                                      \
  X(EEXIST, "already exists")                                                                      \
  X(ENOMEM, "out of memory")                                                                       \
  X(EINVAL, "invalid argument")                                                                    \
  X(EBUSY, "busy")                                                                                 \
  X(EMSGSIZE, "message too large")                                                                 \
  X(EBADMSG, "corrupt message")                                                                    \
  X(EMFILE, "too many open files")                                                                 \
  X(ENOSPC, "no space left for shared memory")                                                     \
  X(ECONNREFUSED, "watchdog unreachable")                                                          \
  X(EPROTO, "protocol error")                                                                      \
  X(ECHILD, "no such child process")                                                               \
  X(ESRCH, "no such process")                                                                      \
  X(EDEADLK, "lock already held by this thread")                                                   \
  X(EPERM, "operation not permitted")                                                              \
  X(EINTR, "interrupted")

const char *lmp_strerror(int code)
{
  if (code >= 0)
    return "success";
  switch (-code) {
#define LMP__ERRNO_CASE(e, msg)                                                                    \
  case e:                                                                                          \
    return msg;
    LMP__ERRNO_MAP(LMP__ERRNO_CASE)
#undef LMP__ERRNO_CASE
  default:
    /* glibc returns a static string for every known code and a
     * thread-local "Unknown error N" for the rest. */
    return strerror(-code);
  }
}

/* === byte buffers === */

int lmp_buf_reserve(lmp_buf_t *b, size_t cap)
{
  size_t n;
  char *p;

  if (cap <= b->cap)
    return 0;
  if (cap > PTRDIFF_MAX) /* no allocator gives more; do not even ask */
    return -ENOMEM;
  /* Grow geometrically so a stream of slowly growing messages reallocates
   * O(log n) times; fall back to the exact size when doubling overflows. */
  n = b->cap ? b->cap : 64;
  while (n < cap && n <= SIZE_MAX / 2)
    n *= 2;
  if (n < cap || n > PTRDIFF_MAX) /* doubling overflowed, or passed what can be asked */
    n = cap;
  p = realloc(b->data, n);
  if (p == NULL)
    return -ENOMEM;
  b->data = p;
  b->cap = n;
  return 0;
}

void lmp_buf_free(lmp_buf_t *b)
{
  free(b->data);
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}

int lmp__poll_fds(struct pollfd *fds, size_t n, int64_t deadline)
{
  for (;;) {
    struct timespec ts, *tsp = NULL;
    if (deadline != LMP_FOREVER) {
      ts = lmp__deadline_ts(deadline - lmp_now_ns());
      tsp = &ts;
    }
    int rc = ppoll(fds, (nfds_t)n, tsp, NULL);
    if (rc >= 0)
      return rc;
    if (errno != EINTR)
      return -errno;
    if (lmp__interrupted())
      return -EINTR;
  }
}

int lmp__poll_fd(int fd, short events, int64_t deadline)
{
  struct pollfd pfd = {.fd = fd, .events = events};
  int n = lmp__poll_fds(&pfd, 1, deadline);
  if (n > 0)
    return pfd.revents & POLLNVAL ? -EBADF : pfd.revents;
  return n;
}

/* === randomness and processes === */

void lmp__lock(pthread_mutex_t *m)
{
  if (pthread_mutex_lock(m) != 0)
    abort();
}

void lmp__unlock(pthread_mutex_t *m)
{
  if (pthread_mutex_unlock(m) != 0)
    abort();
}

uint32_t lmp__random32(void)
{
  uint32_t r;
  struct timespec ts;

  if (getrandom(&r, sizeof r, 0) == (ssize_t)sizeof r)
    return r;
  /* No getrandom (old kernel, seccomp): still unique enough per process. */
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint32_t)ts.tv_nsec ^ ((uint32_t)getpid() << 16) ^ (uint32_t)ts.tv_sec;
}

uint64_t lmp__random64(void)
{
  uint64_t r;

  if (getrandom(&r, sizeof r, 0) == (ssize_t)sizeof r)
    return r;
  return (uint64_t)lmp__random32() << 32 | lmp__random32();
}

int lmp__proc_start(pid_t pid, uint64_t *start, char *state)
{
  char path[40], buf[1024];
  unsigned long long st;
  const char *p;
  ssize_t n;
  int fd;

  snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
  if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
    return -errno;
  while ((n = read(fd, buf, sizeof buf - 1)) < 0 && errno == EINTR) {
  }
  close(fd);
  if (n <= 0)
    return n < 0 ? -errno : -ESRCH; /* ESRCH: it ended while we read */
  buf[n] = '\0';
  /* "pid (comm) state ...": comm may hold anything; starttime is field 22. */
  if ((p = strrchr(buf, ')')) == NULL ||
      sscanf(p + 1,
             " %c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
             state, &st) != 2)
    return -EINVAL;
  *start = (uint64_t)st;
  return 0;
}

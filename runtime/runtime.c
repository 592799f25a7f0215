/*
 * runtime.c -- the root of a process family: who founds it, what it is
 * called, and what every fork and exit of its processes must do.
 *
 * The first process that sets up the runtime without an inherited prefix is
 * the root.  It draws the family's prefix, "/lmp.<pid>.<8 hex>", claims the
 * names derived from the prefix alone (the names directory, the pools'
 * registry) before anything under it shows, starts the watchdog
 * (watchdog.c), sweeps what families killed whole left behind, and unlinks
 * everything under its prefix at exit.  A process exec'd by the family
 * (start method "spawn") inherits the prefix in its environment and joins.
 *
 * This room sits above the two it drives.  It hands segments (segment.c)
 * the prefix once it is known and calls their fork accounting around every
 * fork; it starts the watchdog with the prefix and keeps the liveness pipe
 * that only the root may hold; it draws the stash's tokens and gives them,
 * with the prefix, to the watchdog's client calls.  Neither room below
 * calls up here, but for one thing: a segment call made before anyone
 * started the runtime starts it (lmp/segment.h), so a C host needs no
 * set-up call.
 *
 * The root's state is guarded by its own process-local mutex, taken before
 * the segments' registry lock whenever both are held (across a fork).
 */
#include "lmp/runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"
#include "lmp/common.h"
#include "lmp/segment.h"

static struct {
  pthread_mutex_t lock;
  int inited;
  int root; /* this process started the runtime (see is_root) */
  int atexit_done;
  pid_t root_pid;
  pid_t watchdog;
  int live_w;      /* the root's end of the watchdog's liveness pipe; -1 elsewhere */
  pid_t token_pid; /* the process token_hi was drawn in */
  uint32_t token_hi;
  uint32_t token_lo;
  char prefix[32]; /* "/lmp.<pid>.<8 hex>" */
} rt = {.lock = PTHREAD_MUTEX_INITIALIZER, .live_w = -1};

/* === the root === */

/* "/lmp.<pid>.<8 hex>", nothing else: the prefix ends up in file names and
 * in a socket address, so a malformed one is refused rather than used. */
static int parse_prefix(const char *prefix, pid_t *pid)
{
  const char *p = prefix;
  long v = 0;
  int i;

  if (strncmp(p, "/lmp.", 5) != 0)
    return -EINVAL;
  for (p += 5; *p >= '0' && *p <= '9' && v < 100000000; p++)
    v = v * 10 + (*p - '0');
  if (v <= 0 || *p++ != '.')
    return -EINVAL;
  for (i = 0; i < 8; i++, p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
      return -EINVAL;
  if (*p != '\0')
    return -EINVAL;
  *pid = (pid_t)v;
  return 0;
}

/* A process exec'd by the family (start method "spawn") inherits the
 * prefix through the environment and joins it instead of founding one. */
static int adopt_prefix(const char *prefix, const char *root_env)
{
  pid_t pid;
  int rc = parse_prefix(prefix, &pid);

  if (rc < 0)
    return rc;
  if (root_env != NULL && atol(root_env) != (long)pid)
    return -EINVAL;
  snprintf(rt.prefix, sizeof rt.prefix, "%s", prefix);
  rt.root_pid = pid;
  rt.root = 0;
  return 0;
}

/* The names derived from the prefix alone (the names directory, the pools'
 * registry) are taken now, empty, before anything under the prefix shows
 * in /dev/shm or as the watchdog's socket: nobody can have planted them
 * yet, and nobody else can take them later (the sticky /dev/shm lets only
 * their owner unlink them).  Their users size them when they first need
 * them. */
static void claim_fixed_names(void)
{
  static const char *const suffixes[] = {LMP__NAMES_SUFFIX, LMP__POOLS_SUFFIX};
  char name[LMP_SEG_NAME_MAX];
  size_t i;
  int fd;

  for (i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
    snprintf(name, sizeof name, "%s%s", rt.prefix, suffixes[i]);
    fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
      close(fd);
  }
}

static int become_root(void)
{
  pid_t pid = getpid();
  int rc;

  snprintf(rt.prefix, sizeof rt.prefix, "/lmp.%ld.%08x", (long)pid, lmp__random32());
  claim_fixed_names();
  rc = lmp__watchdog_start(rt.prefix, &rt.watchdog, &rt.live_w);
  if (rc < 0)
    return rc;
  rt.root = 1;
  rt.root_pid = pid;
  lmp__sweep_families(rt.prefix); /* what families killed whole left */
  if (!rt.atexit_done && atexit(lmp_runtime_cleanup) == 0)
    rt.atexit_done = 1;
  return 0;
}

int lmp_runtime_init(void)
{
  const char *env;
  int rc = 0;

  lmp__lock(&rt.lock);
  if (rt.inited)
    goto out;
  env = getenv("LMP_PREFIX");
  rc = env != NULL && *env != '\0' ? adopt_prefix(env, getenv("LMP_ROOT_PID")) : become_root();
  if (rc == 0) {
    lmp__seg_family(rt.prefix);
    rt.inited = 1;
  } else {
    rt.prefix[0] = '\0';
  }
out:
  lmp__unlock(&rt.lock);
  return rc;
}

const char *lmp_runtime_prefix(void)
{
  return rt.prefix; /* "" before lmp_runtime_init */
}

int lmp_runtime_is_root(void)
{
  /* The pid check keeps a process forked behind lmp's back from acting as
   * the root it was copied from. */
  return rt.inited && rt.root && getpid() == rt.root_pid;
}

pid_t lmp_runtime_root_pid(void)
{
  return rt.root_pid;
}

pid_t lmp__watchdog_pid(void)
{
  return rt.watchdog;
}

int lmp_runtime_setenv(void)
{
  char pid[24];

  if (!rt.inited)
    return -EINVAL;
  snprintf(pid, sizeof pid, "%ld", (long)rt.root_pid);
  if (setenv("LMP_PREFIX", rt.prefix, 1) < 0 || setenv("LMP_ROOT_PID", pid, 1) < 0)
    return -errno;
  return 0;
}

void lmp_runtime_cleanup(void)
{
  if (lmp_runtime_is_root())
    lmp__unlink_prefix(rt.prefix);
}

/* Tokens for the fd stash: random high half per process, counter low half,
 * so two processes never draw the same token even right after a fork. */
static uint64_t stash_token(void)
{
  uint64_t t;

  lmp__lock(&rt.lock);
  if (rt.token_pid != getpid() || rt.token_lo == UINT32_MAX) {
    rt.token_pid = getpid();
    rt.token_hi = lmp__random32();
    rt.token_lo = 0;
  }
  t = (uint64_t)rt.token_hi << 32 | ++rt.token_lo;
  lmp__unlock(&rt.lock);
  return t;
}

/* === fork and exit === */

/* Both locks, the root's then the registry's, stay held from here to the
 * postfork call on each side, so no thread can map or drop a segment the
 * child would miscount, nor draw a token or start the runtime half-way.
 * The runtime is started first if it was not: a child must join its
 * parent's family, not found one of its own the first time it makes a
 * segment. */
void lmp__runtime_prefork(void)
{
  lmp_runtime_init();
  lmp__lock(&rt.lock);
  lmp__seg_prefork();
}

void lmp__runtime_postfork_parent(int failed)
{
  lmp__seg_postfork_parent(failed);
  lmp__unlock(&rt.lock);
}

void lmp__runtime_postfork_child(void)
{
  /* The child's only thread is not the one that locked: start afresh. */
  pthread_mutex_init(&rt.lock, NULL);
  rt.root = 0;
  rt.token_pid = 0;
  /* Only the root holds the liveness pipe, or its exec would go unseen. */
  if (rt.live_w >= 0)
    close(rt.live_w);
  rt.live_w = -1;
  lmp__watchdog_postfork_child();
  lmp__seg_postfork_child();
}

void lmp_runtime_release_all(void)
{
  lmp__seg_release_all();
}

void lmp_runtime_set_unpin(void (*fn)(const char *name))
{
  lmp__seg_set_unpin(fn);
}

/* === descriptors in transit === */

int lmp_fd_stash(int fd, uint64_t *token)
{
  uint64_t t = 0;
  int tries, rc;

  if (fd < 0)
    return -EBADF;
  if ((rc = lmp_runtime_init()) < 0)
    return rc;
  for (tries = 0, rc = -EEXIST; tries < 4 && rc == -EEXIST; tries++) {
    t = stash_token();
    rc = lmp__wd_stash(rt.prefix, t, fd);
  }
  if (rc == 0)
    *token = t;
  return rc;
}

int lmp_fd_fetch(uint64_t token, int *fd)
{
  int rc;

  *fd = -1;
  if ((rc = lmp_runtime_init()) < 0)
    return rc;
  return lmp__wd_fetch(rt.prefix, token, fd);
}

/*
 * watchdog.c -- the process that cleans up after the root, and keeps
 * descriptors in transit.
 *
 * Reference counts in segment headers cannot survive every crash, and the
 * root's atexit handler does not run when the root is SIGKILLed.  So the
 * root starts, once, at lmp_runtime_init, a tiny watchdog.  It is forked
 * twice (the middle process exits at once), so it is never a child of the
 * root: a host that embeds lmp and waits for all its children, as a server
 * does before a restart, does not wait for the watchdog.  It leaves the
 * root's session (terminal signals never reach it), ignores the polite
 * signals, closes every descriptor it inherited (a pipe end it kept would
 * hide end-of-file from a reader) and watches the root two ways: a pidfd,
 * readable once the root has died, and the read end of a liveness pipe
 * whose write end only the root holds, close-on-exec, so end-of-file comes
 * when the root dies *or execs* (a server that re-execs itself keeps its
 * pid, and nothing of its old family means anything to the new image).
 * When the root is gone, it kills the root's children, unlinks everything
 * under the prefix and _exits, without running atexit handlers or anything
 * else of the root's.
 *
 * The root's children are known to it by enrolment: the root sends each
 * child's pidfd as it forks it, one message on a connection it keeps, with
 * no reply.  The watchdog does not wake for these: it reads them once a
 * second, and once more before it acts, so a fork costs the root one
 * sendmsg and nobody a context switch.  Children end with their parent
 * anyway (PR_SET_PDEATHSIG), which covers death but not exec; the pidfds
 * cover both, and name exactly those processes, whatever pids get reused.
 * Grandchildren die with their parents.
 *
 * Its second job is the fd stash.  A descriptor cannot cross shared memory,
 * and the sender of a Pipe end may be gone before the receiver reads the
 * message, so the sender hands a duplicate to the watchdog over an
 * abstract-namespace SOCK_SEQPACKET socket (SCM_RIGHTS) under a 64-bit
 * token, and the receiver fetches it back exactly once.  The listening socket
 * is bound by the root before the fork, so a stash right after init never
 * races the watchdog's start.  The loop is single-threaded and serves one
 * request per connection, synchronously, with socket timeouts so a stuck
 * client costs at most a second.  Only peers with the watchdog's own uid are
 * served, and clients talk only to a server with their own uid (the
 * abstract namespace has no file modes, so after a watchdog's death another
 * user could bind its address).  The stash is capped (LMP_FD_STASH_MAX, or
 * less under a low descriptor limit): past the cap a stash is refused with
 * -ENOSPC, so the sender learns it, instead of a receiver later finding
 * its descriptor gone.
 *
 * Its third job is to keep the memfd segments (segment.c) that stand in for
 * /dev/shm when /dev/shm is too small: the creator hands it a descriptor
 * under the 64 random bits of the segment's name, any process of the family
 * (or an observer of this uid) asks for a duplicate to map it, and the last
 * reference's holder tells it to close it.  What is left is closed when the
 * watchdog ends with the family.  Each costs one descriptor: the budget is
 * what RLIMIT_NOFILE leaves beside the stash and the children (raised to
 * the hard limit if need be), at most LMP__SEGS_MAX; past it a new one is
 * refused with -EMFILE, which the creator reports as no_space.  Nothing
 * kept is ever dropped to make room.
 *
 * Everything the watchdog runs is plain system calls on static memory: it is
 * a fork of a process that may have had threads, so it never allocates.
 *
 * This file is a service below the root (runtime.c) and segments: every
 * client call is given the family's prefix, and the stash's token, by its
 * caller, and the root's enrolment address is kept when the root starts the
 * watchdog, so nothing here calls back up.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <time.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "lmp/runtime.h"

#define LMP__STASH_MAX LMP_FD_STASH_MAX
#define LMP__KIDS_MAX 1024      /* enrolled children of the root */
#define LMP__ENROL_CONNS 4      /* connections enrolments arrive on */
#define LMP__ENROL_READ_MS 1000 /* how often they are read */
#define LMP__WD_POLL_MS 200     /* back-off after a failed poll */
#define LMP__WD_IO_TIMEOUT_S 1  /* the watchdog's patience with a client */
#define LMP__CLIENT_TIMEOUT_S 5 /* a client's patience with the watchdog */
#define LMP__SEGS_MAX 65536 /* memfd segments kept at once, at most */

/* === shared by both sides === */

socklen_t lmp__stash_addr(const char *prefix, struct sockaddr_un *addr)
{
  int n;

  memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  /* Abstract namespace (leading NUL): nothing on disk to clean up. */
  n = snprintf(addr->sun_path + 1, sizeof addr->sun_path - 1, "%s.wd", prefix + 1);
  return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

/* Unlink every /dev/shm entry `doomed` says to (it may stat the entry
 * through the directory descriptor it is given), rescanning until a pass
 * removes nothing: unlinking while reading a directory may hide entries
 * from the same pass.  System calls only, no allocation.  The count. */
static int shm_sweep(int (*doomed)(int dfd, const char *name, void *ctx), void *ctx)
{
  char buf[4096] __attribute__((aligned(8)));
  int dfd, pass, total = 0, removed;
  ssize_t n, off;

  dfd = open("/dev/shm", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    return 0;
  for (pass = 0; pass < 8; pass++) {
    removed = 0;
    lseek(dfd, 0, SEEK_SET);
    while ((n = getdents64(dfd, buf, sizeof buf)) > 0) {
      for (off = 0; off < n;) {
        struct dirent64 *d = (struct dirent64 *)(buf + off);
        off += d->d_reclen;
        if (doomed(dfd, d->d_name, ctx) && unlinkat(dfd, d->d_name, 0) == 0)
          removed++;
      }
    }
    total += removed;
    if (removed == 0)
      break;
  }
  close(dfd);
  return total;
}

static int under_prefix(int dfd, const char *name, void *prefix)
{
  const char *p = (const char *)prefix + 1; /* /dev/shm entries have no leading '/' */
  size_t len = strlen(p);

  (void)dfd;
  return strncmp(name, p, len) == 0 && name[len] == '.';
}

int lmp__unlink_prefix(const char *prefix)
{
  return shm_sweep(under_prefix, (void *)prefix);
}

/* === families killed whole === */

/*
 * A cgroup kill, an OOM group kill or kill -9 -1 ends a root and its
 * watchdog together, and nobody is left to unlink the family's segments.  So
 * a new root, as it starts, looks once through /dev/shm for families of its
 * own user that nobody runs any more and removes them.  A family is
 * "lmp.<rootpid>.<8 hex>.*"; it is alive while its watchdog's abstract
 * socket is bound (a connect is refused only when nobody listens) or while
 * its root runs: a process with the root's pid that started no later than
 * the family's segments (a later one is a recycled pid).  Either sign of
 * life leaves the family alone; entries of other users are never touched.
 */

#define LMP__SWEEP_CACHE 16
#define LMP__SWEEP_SLACK_S 2 /* btime and ctime have second granularity */

/* "lmp.<pid>.<8 hex>" at the start of a /dev/shm entry, followed by '.':
 * its length, or 0. */
static size_t family_of(const char *name, pid_t *pid)
{
  const char *p = name;
  long v = 0;
  int i;

  if (strncmp(p, "lmp.", 4) != 0)
    return 0;
  for (p += 4; *p >= '0' && *p <= '9' && v < 100000000; p++)
    v = v * 10 + (*p - '0');
  if (v <= 0 || *p++ != '.')
    return 0;
  for (i = 0; i < 8; i++, p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
      return 0;
  if (*p != '.')
    return 0;
  *pid = (pid_t)v;
  return (size_t)(p - name);
}

static int watchdog_listens(const char *family)
{
  char prefix[40];
  struct sockaddr_un addr;
  socklen_t len;
  int s, rc;

  snprintf(prefix, sizeof prefix, "/%s", family);
  len = lmp__stash_addr(prefix, &addr);
  s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (s < 0)
    return 1;
  rc = connect(s, (struct sockaddr *)&addr, len) == 0 || errno != ECONNREFUSED;
  close(s);
  return rc; /* a full backlog (EAGAIN) is a listener too */
}

/* Seconds since the epoch at which the system booted, or -1. */
static long boot_time(void)
{
  char buf[4096], *p;
  ssize_t n;
  long bt = -1;
  int fd = open("/proc/stat", O_RDONLY | O_CLOEXEC);

  if (fd < 0)
    return -1;
  n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0)
    return -1;
  buf[n] = '\0';
  if ((p = strstr(buf, "\nbtime ")) != NULL)
    bt = atol(p + 7);
  return bt;
}

/* Whether the root `pid` of a family whose entry last changed at `ctime`
 * may still run. */
static int root_may_run(pid_t pid, time_t ctime)
{
  uint64_t start;
  long bt, hz = sysconf(_SC_CLK_TCK);
  char state;
  int rc = lmp__proc_start(pid, &start, &state);

  if (rc == -ENOENT || rc == -ESRCH)
    return access("/proc/self/stat", F_OK) != 0; /* without /proc, assume so */
  if (rc < 0 || state == 'Z' || (bt = boot_time()) < 0 || hz <= 0)
    return rc < 0 || state != 'Z';
  /* A process that started after the family's segment was made is another
   * one with the same pid. */
  return bt + (long)(start / (uint64_t)hz) <= (long)ctime + LMP__SWEEP_SLACK_S;
}

/* What the sweep of stale families knows: our own family, and a verdict
 * per family already looked at (most have many entries). */
struct sweep {
  const char *own;
  uid_t uid;
  size_t nseen;
  struct {
    char family[32];
    int dead;
  } seen[LMP__SWEEP_CACHE];
};

static int of_dead_family(int dfd, const char *name, void *ctx)
{
  struct sweep *sw = ctx;
  struct stat st;
  size_t flen, i;
  char family[32];
  pid_t pid;
  int dead;

  if ((flen = family_of(name, &pid)) == 0 || flen >= sizeof family ||
      (strncmp(sw->own + 1, name, flen) == 0 && sw->own[flen + 1] == '\0'))
    return 0;
  if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_uid != sw->uid)
    return 0; /* only this user's own families */
  for (i = 0; i < sw->nseen; i++)
    if (strncmp(sw->seen[i].family, name, flen) == 0 && sw->seen[i].family[flen] == '\0')
      return sw->seen[i].dead;
  memcpy(family, name, flen);
  family[flen] = '\0';
  dead = !watchdog_listens(family) && !root_may_run(pid, st.st_ctime);
  if (sw->nseen < LMP__SWEEP_CACHE) {
    memcpy(sw->seen[sw->nseen].family, family, flen + 1);
    sw->seen[sw->nseen++].dead = dead;
  }
  return dead;
}

int lmp__sweep_families(const char *own)
{
  struct sweep sw = {.own = own, .uid = geteuid()};

  return shm_sweep(of_dead_family, &sw);
}

/* === the watchdog: detaching from the root === */

static void wd_signals(void)
{
  sigset_t none;
  int sig;

  /* The root's handlers (SIGCHLD bookkeeping and the like) mean nothing
   * here; the polite signals are ignored so only SIGKILL ends it early. */
  for (sig = 1; sig < NSIG; sig++)
    signal(sig, SIG_DFL);
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGQUIT, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL); /* blocked since before the fork */
}

static void close_between(unsigned lo, unsigned hi)
{
  unsigned fd;

  if (lo > hi)
    return;
  if (close_range(lo, hi, 0) == 0)
    return;
  /* No close_range (kernel < 5.9): walk the descriptor table. */
  if (hi > 65536)
    hi = 65536;
  for (fd = lo; fd <= hi; fd++)
    close((int)fd);
}

static int move_above_stdio(int fd)
{
  int t;

  if (fd < 0 || fd > 2)
    return fd;
  t = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  close(fd);
  return t;
}

/* Keep the n descriptors of keep[] (moved above 2 if need be; -1 entries
 * are skipped), close every other one, put /dev/null on 0, 1 and 2. */
static void wd_fds(int *keep[], int n)
{
  int sorted[8], m = 0, i, j, t, lo = 3, null;

  for (i = 0; i < n; i++) {
    *keep[i] = move_above_stdio(*keep[i]);
    if (*keep[i] >= 0 && m < 8)
      sorted[m++] = *keep[i];
  }
  for (i = 1; i < m; i++) /* insertion sort: a handful of numbers */
    for (j = i; j > 0 && sorted[j - 1] > sorted[j]; j--) {
      t = sorted[j];
      sorted[j] = sorted[j - 1];
      sorted[j - 1] = t;
    }
  for (i = 0; i < m; i++) {
    if (sorted[i] > lo)
      close_between((unsigned)lo, (unsigned)sorted[i] - 1);
    lo = sorted[i] + 1;
  }
  close_between((unsigned)lo, ~0U);
  null = open("/dev/null", O_RDWR);
  if (null < 0)
    return;
  dup2(null, 0);
  dup2(null, 1);
  dup2(null, 2);
  if (null > 2)
    close(null);
}

/* === the watchdog: the stash === */

static struct {
  struct {
    uint64_t token;
    int fd;
    int used;
  } e[LMP__STASH_MAX];
  size_t cap, n;
} stash;

static int stash_find(uint64_t token)
{
  size_t i;
  for (i = 0; i < stash.cap; i++)
    if (stash.e[i].used && stash.e[i].token == token)
      return (int)i;
  return -1;
}

/* Store *fd under token; on success the stash owns it and *fd is -1.
 * -ENOSPC when it is full: every entry is a message still on its way. */
static int stash_put(uint64_t token, int *fd)
{
  size_t i, slot = stash.cap;

  if (*fd < 0)
    return -EINVAL;
  if (stash_find(token) >= 0)
    return -EEXIST;
  for (i = 0; i < stash.cap && slot == stash.cap; i++)
    if (!stash.e[i].used)
      slot = i;
  if (slot == stash.cap)
    return -ENOSPC;
  stash.e[slot].token = token;
  stash.e[slot].fd = *fd;
  stash.e[slot].used = 1;
  stash.n++;
  *fd = -1;
  return 0;
}

static int stash_take(uint64_t token, int *fd)
{
  int i = stash_find(token);

  if (i < 0)
    return -ENOENT;
  *fd = stash.e[i].fd;
  stash.e[i].used = 0;
  stash.n--;
  return 0;
}

/* === the watchdog: memfd segments === */

static void wd_reply(int c, int status, int fd);

static struct {
  struct {
    uint64_t token;
    int fd;
  } e[LMP__SEGS_MAX];
  size_t n, cap;
} segs;

static int seg_find(uint64_t token)
{
  size_t i;
  for (i = 0; i < segs.n; i++)
    if (segs.e[i].token == token)
      return (int)i;
  return -1;
}

/* Serve a memfd-segment request: 1 if req was one (and is answered). */
static int wd_seg(int c, const lmp__wd_req_t *req, int *fd)
{
  int i = req->op >= LMP__WD_SEG_PUT ? seg_find(req->token) : -1, rc;

  switch (req->op) {
  case LMP__WD_SEG_PUT:
    rc = *fd < 0 ? -EINVAL : i >= 0 ? -EEXIST : segs.n >= segs.cap ? -EMFILE : 0;
    if (rc == 0) {
      segs.e[segs.n].token = req->token;
      segs.e[segs.n++].fd = *fd;
      *fd = -1;
    }
    wd_reply(c, rc, -1);
    return 1;
  case LMP__WD_SEG_GET:
    wd_reply(c, i < 0 ? -ENOENT : 0, i < 0 ? -1 : segs.e[i].fd); /* a duplicate */
    return 1;
  case LMP__WD_SEG_DROP:
    if (i >= 0) {
      close(segs.e[i].fd);
      segs.e[i] = segs.e[--segs.n];
    }
    wd_reply(c, i < 0 ? -ENOENT : 0, -1);
    return 1;
  default:
    return 0;
  }
}

/* === the watchdog: the root's children === */

static struct {
  int fd[LMP__KIDS_MAX]; /* pidfds */
  size_t n, cap;
} kids;

/* Forget the children that have ended. */
static void kids_prune(void)
{
  size_t i = 0;
  struct pollfd p;

  while (i < kids.n) {
    p = (struct pollfd){.fd = kids.fd[i], .events = POLLIN};
    if (poll(&p, 1, 0) == 1) {
      close(kids.fd[i]);
      kids.fd[i] = kids.fd[--kids.n];
    } else {
      i++;
    }
  }
}

static int kids_add(int *fd)
{
  if (kids.n >= kids.cap)
    kids_prune();
  if (kids.n >= kids.cap)
    return -ENOSPC; /* it still dies with the root, by its death signal */
  kids.fd[kids.n++] = *fd;
  *fd = -1;
  return 0;
}

/* The connections enrolments arrive on, read now and then. */
static int enrol_conns[LMP__ENROL_CONNS] = {-1, -1, -1, -1};

static int enrol_keep(int c)
{
  int i;

  for (i = 0; i < LMP__ENROL_CONNS; i++) {
    if (enrol_conns[i] < 0) {
      enrol_conns[i] = c;
      return 1;
    }
  }
  return 0;
}

static int wd_recv(int c, lmp__wd_req_t *req, int *fd);

/* Take every enrolment queued on the kept connections. */
static void enrol_read(void)
{
  lmp__wd_req_t req;
  int i, fd, rc;

  for (i = 0; i < LMP__ENROL_CONNS; i++) {
    while (enrol_conns[i] >= 0) {
      fd = -1;
      rc = wd_recv(enrol_conns[i], &req, &fd);
      if (rc == 0 && req.op == LMP__WD_ENROLL && fd >= 0)
        kids_add(&fd);
      if (fd >= 0)
        close(fd);
      if (rc == -EAGAIN)
        break;
      if (rc < 0 || req.op != LMP__WD_ENROLL) { /* closed, or not ours to read */
        close(enrol_conns[i]);
        enrol_conns[i] = -1;
      }
    }
  }
}

/* SIGKILL every child still there, then give them a moment to be gone, so
 * none creates a segment after the sweep. */
static void kids_kill(void)
{
  struct pollfd p;
  size_t i;

  for (i = 0; i < kids.n; i++)
    syscall(SYS_pidfd_send_signal, kids.fd[i], SIGKILL, NULL, 0);
  for (i = 0; i < kids.n; i++) {
    p = (struct pollfd){.fd = kids.fd[i], .events = POLLIN};
    poll(&p, 1, 1000);
    close(kids.fd[i]);
  }
  kids.n = 0;
}

/* === the watchdog: its descriptor budget === */

/*
 * Everything the watchdog keeps is a descriptor: enrolled children, stashed
 * descriptors, memory segments.  Their tables are capped by what the
 * descriptor limit allows, so that a descriptor sent to the watchdog never
 * arrives cut off (SCM_RIGHTS past the limit drops it): the soft limit is
 * raised toward the hard one for full tables, the children take at most a
 * quarter of what there is, and when the stash and the segments cannot
 * both be full they get half each of the rest.  A full table refuses
 * (-ENOSPC for the stash, -EMFILE for segments); a child not enrolled
 * still dies with the root.
 */
static void wd_budget(void)
{
  const rlim_t want = LMP__STASH_MAX + LMP__KIDS_MAX + LMP__SEGS_MAX + 64;
  struct rlimit rl;
  size_t room = 0;

  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < want) {
    rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur > 64)
    room = (size_t)rl.rlim_cur - 64; /* beside the few the watchdog itself uses */
  kids.cap = room / 4 < LMP__KIDS_MAX ? room / 4 : LMP__KIDS_MAX;
  room -= kids.cap;
  stash.cap = room - room / 2 < LMP__STASH_MAX ? room - room / 2 : LMP__STASH_MAX;
  room -= stash.cap;
  segs.cap = room < LMP__SEGS_MAX ? room : LMP__SEGS_MAX;
}

/* === the watchdog: serving === */

/* Receive one request and at most one descriptor: 0, -EPIPE at end of
 * file, -EAGAIN when the client said nothing in time, -EINVAL for a
 * malformed request (*fd may be set then, for the caller to close). */
static int wd_recv(int c, lmp__wd_req_t *req, int *fd)
{
  size_t nfd = 1;
  ssize_t n;

  n = lmp__recv_fds(c, req, sizeof *req, fd, &nfd, MSG_DONTWAIT);
  if (n == -EAGAIN && !(fcntl(c, F_GETFL) & O_NONBLOCK)) {
    struct pollfd p = {.fd = c, .events = POLLIN};
    nfd = 1;
    if (poll(&p, 1, LMP__WD_IO_TIMEOUT_S * 1000) == 1)
      n = lmp__recv_fds(c, req, sizeof *req, fd, &nfd, 0);
  }
  if (n == 0)
    return -EPIPE;
  if (n == -EMSGSIZE)
    return -EINVAL;
  if (n < 0)
    return (int)n;
  if (nfd == 0)
    *fd = -1;
  return n == (ssize_t)sizeof *req ? 0 : -EINVAL;
}

static void wd_reply(int c, int status, int fd)
{
  lmp__wd_rep_t rep = {.status = status};

  /* A client that went away loses its descriptor: it asked for it once. */
  lmp__send_fds(c, &rep, sizeof rep, &fd, fd >= 0, 0);
}

static int peer_allowed(int c)
{
  struct ucred cr;
  socklen_t len = sizeof cr;

  return getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0 && cr.uid == geteuid();
}

/* Serve one connection; 1 if it is kept (an enrolment connection). */
static int wd_handle(int c)
{
  struct timeval tv = {LMP__WD_IO_TIMEOUT_S, 0};
  lmp__wd_req_t req;
  int fd = -1, rc, kept = 0;

  setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  rc = wd_recv(c, &req, &fd);
  if (rc == -EAGAIN)
    goto out; /* the client never spoke within the timeout */
  if (rc == 0 && wd_seg(c, &req, &fd))
    goto out;
  if (rc == 0 && req.op == LMP__WD_ENROLL) {
    kids_add(&fd); /* no reply: the root does not wait */
    kept = enrol_keep(c);
    if (kept)
      fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK);
    goto out;
  }
  if (rc == 0 && req.op == LMP__WD_STASH)
    rc = stash_put(req.token, &fd);
  else if (rc == 0 && req.op == LMP__WD_FETCH && fd < 0)
    rc = stash_take(req.token, &fd);
  else if (rc == 0)
    rc = -EINVAL;
  wd_reply(c, rc, rc == 0 ? fd : -1);
out:
  if (fd >= 0)
    close(fd);
  return kept;
}

static void wd_accept(int lfd)
{
  int i, c;

  /* Drain what is queued, but bounded, so the root check runs often. */
  for (i = 0; i < 64; i++) {
    c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
      return;
    if (!(peer_allowed(c) && wd_handle(c)))
      close(c);
  }
}

static void wd_main(const char *prefix, int lfd, int pidfd, int live) __attribute__((noreturn));

static void wd_main(const char *prefix, int lfd, int pidfd, int live)
{
  struct pollfd p[3];
  int n, gone;
  int *keep[] = {&lfd, &pidfd, &live};

  setsid();
  wd_signals();
  wd_fds(keep, 3);
  if (chdir("/") < 0) { /* hold no mount busy; staying put is harmless */
  }
  prctl(PR_SET_NAME, "lmp-watchdog");
  wd_budget();
  for (;;) {
    p[0] = (struct pollfd){.fd = pidfd, .events = POLLIN};
    p[1] = (struct pollfd){.fd = live, .events = POLLIN};
    p[2] = (struct pollfd){.fd = lfd, .events = POLLIN};
    /* A negative fd is skipped by poll. */
    n = poll(p, 3, enrol_conns[0] >= 0 ? LMP__ENROL_READ_MS : -1);
    enrol_read();
    if (n < 0 && errno != EINTR)
      poll(NULL, 0, LMP__WD_POLL_MS); /* never spin, never give up */
    /* The root died (pidfd), or died or exec'd (end of file on the pipe). */
    gone = n > 0 && ((p[0].revents & (POLLIN | POLLHUP)) || (p[1].revents & (POLLIN | POLLHUP)));
    if (gone)
      break;
    if (p[0].revents & POLLNVAL)
      pidfd = -1;
    if (n > 0 && (p[2].revents & POLLIN))
      wd_accept(lfd);
    else if (n > 0 && (p[2].revents & (POLLERR | POLLHUP | POLLNVAL))) {
      close(lfd); /* the stash is lost, the cleanup duty is not */
      lfd = -1;
    }
  }
  /* Enrolments sent just before the end are still queued: take them. */
  if (lfd >= 0)
    wd_accept(lfd);
  enrol_read();
  kids_kill();
  lmp__unlink_prefix(prefix);
  _exit(0);
}

/* The middle process of the double fork: start the watchdog, tell the root
 * its pid, and go. */
static void wd_launch(const char *prefix, int lfd, int pidfd, int live, int report)
    __attribute__((noreturn));

static void wd_launch(const char *prefix, int lfd, int pidfd, int live, int report)
{
  pid_t wd = fork();

  if (wd == 0) {
    close(report);
    wd_main(prefix, lfd, pidfd, live);
  }
  if (write(report, &wd, sizeof wd) < 0) { /* the root then sees no pid */
  }
  _exit(0);
}

/* The root's enrolment address, its own watchdog's, kept when it starts it. */
static struct sockaddr_un enrol_addr;
static socklen_t enrol_len;

int lmp__watchdog_start(const char *prefix, pid_t *pid, int *live_w)
{
  struct sockaddr_un addr;
  socklen_t len = lmp__stash_addr(prefix, &addr);
  pid_t root = getpid(), mid, wd = -1;
  int lfd, pidfd, rc = 0, live[2], report[2];
  sigset_t all, old;
  ssize_t n;

  *pid = 0;
  *live_w = -1;
  lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (lfd < 0)
    return -errno;
  if (bind(lfd, (struct sockaddr *)&addr, len) < 0 || listen(lfd, 128) < 0)
    goto err;
  if (pipe2(live, O_CLOEXEC) < 0)
    goto err;
  if (pipe2(report, O_CLOEXEC) < 0) {
    rc = -errno;
    close(live[0]);
    close(live[1]);
    close(lfd);
    return rc;
  }
  /* A pidfd of the root taken by the root itself refers to exactly this
   * process, with no window where the pid could be recycled. */
  pidfd = (int)syscall(SYS_pidfd_open, root, 0);
  /* Signals stay blocked until the watchdog has left the session and set
   * its dispositions: a ^C at the terminal right now must not kill it. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  mid = fork();
  if (mid == 0) {
    close(live[1]);
    close(report[0]);
    wd_launch(prefix, lfd, pidfd, live[0], report[1]);
  }
  if (mid < 0)
    rc = -errno;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  close(report[1]);
  close(live[0]);
  close(lfd);
  if (pidfd >= 0)
    close(pidfd);
  if (mid > 0) {
    while ((n = read(report[0], &wd, sizeof wd)) < 0 && errno == EINTR) {
    }
    /* Reap the middle process; a host's SIGCHLD loop may have done it. */
    while (waitpid(mid, NULL, 0) < 0 && errno == EINTR) {
    }
    if (n != (ssize_t)sizeof wd || wd <= 0)
      rc = -EAGAIN;
  }
  close(report[0]);
  if (rc < 0) {
    close(live[1]);
    return rc;
  }
  *pid = wd;
  *live_w = live[1];
  enrol_addr = addr;
  enrol_len = len;
  return 0;
err:
  rc = -errno;
  close(lfd);
  return rc;
}

/* === the client side === */

static int wd_connect(const char *prefix)
{
  struct timeval tv = {LMP__CLIENT_TIMEOUT_S, 0};
  struct sockaddr_un addr;
  socklen_t len = lmp__stash_addr(prefix, &addr);
  int s, rc;

  s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (s < 0)
    return -errno;
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  while (connect(s, (struct sockaddr *)&addr, len) < 0) {
    if (errno == EINTR)
      continue;
    if (errno == EISCONN)
      break;
    rc = errno == EAGAIN ? -ETIMEDOUT : -errno;
    close(s);
    return rc;
  }
  /* An abstract address has no file mode: had the watchdog died, anyone
   * could have bound it since.  Only our own user gets a descriptor. */
  if (!peer_allowed(s)) {
    close(s);
    return -EACCES;
  }
  return s;
}

/* One round trip with the watchdog of `prefix`: send req (with sendfd if
 * >= 0), return the reply's status; a descriptor in the reply lands in
 * *recvfd (close-on-exec).  It does not start the runtime, so it may run
 * with the runtime's registry locked. */
static int wd_call_at(const char *prefix, const lmp__wd_req_t *req, int sendfd, int *recvfd)
{
  lmp__wd_rep_t rep;
  size_t nfd = 1;
  ssize_t n;
  int s, rc, fd = -1;

  if ((s = wd_connect(prefix)) < 0)
    return s;
  n = lmp__send_fds(s, req, sizeof *req, &sendfd, sendfd >= 0, 0);
  if (n >= 0)
    n = lmp__recv_fds(s, &rep, sizeof rep, &fd, &nfd, 0);
  if (nfd == 0)
    fd = -1;
  if (n < 0 && n != -EMSGSIZE)
    rc = n == -EAGAIN ? -ETIMEDOUT : (int)n;
  else
    rc = n == (ssize_t)sizeof rep ? rep.status : -EPROTO;
  if (rc == 0 && recvfd != NULL && fd < 0)
    rc = -EPROTO;
  if (rc == 0 && recvfd != NULL) {
    *recvfd = fd;
    fd = -1;
  }
  if (fd >= 0)
    close(fd);
  close(s);
  return rc;
}

int lmp__wd_seg_put(const char *prefix, uint64_t token, int fd)
{
  lmp__wd_req_t req = {.op = LMP__WD_SEG_PUT, .token = token};
  return wd_call_at(prefix, &req, fd, NULL);
}

int lmp__wd_seg_get(const char *prefix, uint64_t token, int *fd)
{
  lmp__wd_req_t req = {.op = LMP__WD_SEG_GET, .token = token};
  *fd = -1;
  return wd_call_at(prefix, &req, -1, fd);
}

void lmp__wd_seg_drop(const char *prefix, uint64_t token)
{
  lmp__wd_req_t req = {.op = LMP__WD_SEG_DROP, .token = token};
  wd_call_at(prefix, &req, -1, NULL);
}

int lmp__wd_stash(const char *prefix, uint64_t token, int fd)
{
  lmp__wd_req_t req = {.op = LMP__WD_STASH, .token = token};
  return wd_call_at(prefix, &req, fd, NULL);
}

int lmp__wd_fetch(const char *prefix, uint64_t token, int *fd)
{
  lmp__wd_req_t req = {.op = LMP__WD_FETCH, .token = token};
  *fd = -1;
  return wd_call_at(prefix, &req, -1, fd);
}

/* The root's connection for enrolments, kept from one fork to the next. */
static int enrol_sock = -1;

static int enrol_send(int pidfd)
{
  lmp__wd_req_t req = {.op = LMP__WD_ENROLL};
  ssize_t n = lmp__send_fds(enrol_sock, &req, sizeof req, &pidfd, 1, MSG_DONTWAIT);

  return n < 0 ? (int)n : 0;
}

void lmp__watchdog_enroll(int pidfd)
{
  int tries;

  if (pidfd < 0 || enrol_len == 0)
    return;
  /* Best effort: a full queue (the watchdog reads it once a second) loses
   * the enrolment, not the child, which still dies with the root. */
  for (tries = 0; tries < 2; tries++) {
    if (enrol_sock < 0) {
      enrol_sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
      if (enrol_sock < 0)
        return;
      if (connect(enrol_sock, (struct sockaddr *)&enrol_addr, enrol_len) < 0 ||
          !peer_allowed(enrol_sock)) {
        close(enrol_sock);
        enrol_sock = -1;
        return;
      }
    }
    int rc = enrol_send(pidfd);
    if (rc == 0 || rc == -EAGAIN)
      return;
    close(enrol_sock); /* the watchdog dropped it: once more, afresh */
    enrol_sock = -1;
  }
}

void lmp__watchdog_postfork_child(void)
{
  if (enrol_sock >= 0)
    close(enrol_sock);
  enrol_sock = -1;
}

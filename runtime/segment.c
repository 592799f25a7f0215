/*
 * segment.c -- named shared-memory segments.
 *
 * Every shared object lives in a shared-memory segment named
 * "<prefix>.<16 hex>", where the prefix "/lmp.<rootpid>.<8 hex>" belongs to
 * one root process and everything it starts.  The root (runtime.c) hands
 * the prefix down once it is known and drives the fork accounting below; a
 * segment call made before anyone started the runtime starts it, the one
 * call this file makes up into the root.  A handle is a name, so it can
 * travel in any message to any process of the family, at any time.
 *
 * Names.  /dev/shm is listed by every user, so the prefix is no secret; the
 * 64 bits after it are drawn from getrandom for each name, so another user
 * cannot create the next name first.  A name that exists anyway (planted, or
 * a recycled one) is skipped: creation retries with a fresh name on EEXIST
 * and EACCES, and attaching refuses anything not owner-only and ours.
 *
 * Backing store.  A segment is sized with posix_fallocate, never with
 * ftruncate alone: tmpfs hands out pages at first touch, and a touch that
 * finds the filesystem full is a SIGBUS, so the store is reserved when the
 * segment is made (as PostgreSQL's dsm_impl_posix_resize does) and a
 * shortage is -ENOSPC from the call that asked.  When /dev/shm cannot hold a
 * segment (too small, as a container's 64 MiB, or full), the segment is a
 * memfd instead, bounded only by memory and the cgroup.  Its name carries
 * 'm' after the prefix ("<prefix>.m<16 hex>") and a descriptor for it is
 * kept by the family's watchdog under those 64 bits, so a name still
 * resolves in every process: attach asks the watchdog for a duplicate where
 * a /dev/shm name is opened with shm_open.  The last reference tells the
 * watchdog to let it go (where a /dev/shm one is unlinked); the watchdog's
 * end closes whatever is left.  Each memfd segment costs the watchdog one
 * descriptor, within a budget (watchdog.c); past it creation fails with
 * -ENOSPC and says why.  lmp_seg_space_error() words the last shortage of
 * the calling thread: how much was asked, and what /dev/shm and memory had.
 * LMP_TEST_NO_MEMFD=1 in the environment turns the fallback off (tests).
 *
 * Lifetime is two-level.  In the segment header, `refs` counts processes that
 * hold the segment and `inflight` counts names pinned while they travel in
 * messages (each pin is also a reference).  In each process, a small
 * registry maps names to descriptors with a local count, so a process that
 * sees the same name twice maps it once and holds one reference.  The last
 * local release drops the process's reference; whoever drops the last one
 * unlinks the name.  A reference is only ever taken from a non-zero count, so
 * a segment on its way out cannot be revived, and the unlink happens exactly
 * once (ENOENT from a racing cleanup is harmless anyway).
 *
 * Crashes break counting, so counting is not the last line.  A process that
 * dies holding references has them given back when it is reaped (its
 * holdings table, below); the root unlinks everything under its prefix when
 * it exits, and the watchdog (watchdog.c) does the same when the root dies
 * without exiting cleanly; a family whose root and watchdog were killed
 * together is removed by the next root of the same user (watchdog.c).
 *
 * The registry is guarded by a process-local mutex, so threads of a C host
 * may share the runtime.  lmp__seg_prefork holds that mutex across fork(2)
 * so the child's copy of the registry and its references agree exactly.
 */
#include "lmp/segment.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "lmp/common.h"
#include "lmp/runtime.h"

#define LMP__SEG_MAGIC 0x31306765732d706dULL /* "mp-seg01" */
#define LMP__SEG_HDR 64                      /* header size = data alignment */
#define LMP__BUCKETS 64
#define LMP__CREATE_TRIES 64
#define LMP__MEMFD_MARK 'm' /* after the prefix's '.': a memfd segment */

/* The header at the start of every segment; the data follows at offset 64.
 * refs and inflight are only ever touched with atomic builtins. */
typedef struct lmp__seg_hdr {
  uint64_t magic;
  uint64_t size; /* usable bytes after the header */
  uint32_t refs;
  uint32_t inflight;
} lmp__seg_hdr_t;

struct lmp_seg {
  struct lmp_seg *next; /* registry bucket chain */
  lmp__seg_hdr_t *hdr;  /* the mapping starts here */
  size_t maplen;
  uint32_t local; /* references held inside this process */
  uint32_t hslot; /* its slot in this process's holdings table + 1; 0: none */
  char name[LMP_SEG_NAME_MAX];
};

static struct {
  pthread_mutex_t lock;
  char prefix[32]; /* the family's, given by the root; "" before */
  lmp_seg_t *buckets[LMP__BUCKETS];
} reg = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* === small helpers === */

static unsigned name_hash(const char *name)
{
  uint32_t h = 2166136261u; /* FNV-1a */
  for (; *name; name++)
    h = (h ^ (unsigned char)*name) * 16777619u;
  return h % LMP__BUCKETS;
}

/* Take a reference only while the count is non-zero: a segment whose count
 * reached zero is being unlinked and must not come back. */
static int inc_if_nonzero(uint32_t *n)
{
  uint32_t v = __atomic_load_n(n, __ATOMIC_RELAXED);
  do {
    if (v == 0)
      return 0;
  } while (!__atomic_compare_exchange_n(n, &v, v + 1, 1, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
  return 1;
}

static int dec_if_positive(uint32_t *n)
{
  uint32_t v = __atomic_load_n(n, __ATOMIC_RELAXED);
  do {
    if (v == 0)
      return 0;
  } while (!__atomic_compare_exchange_n(n, &v, v - 1, 1, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
  return 1;
}

/* The holdings table (see "holdings" below); callers hold reg.lock. */
static void hold_creating(lmp_seg_t *s);
static void hold_add(lmp_seg_t *s);
static void hold_del(lmp_seg_t *s);
static void hold_after_fork(void);
static void hold_close(void);
static void hold_prefork(void);
static int hold_postfork_parent(int failed);

/* === the registry (callers hold reg.lock) === */

static lmp_seg_t *reg_find(const char *name)
{
  lmp_seg_t *s;
  for (s = reg.buckets[name_hash(name)]; s; s = s->next)
    if (strcmp(s->name, name) == 0)
      return s;
  return NULL;
}

static void reg_insert(lmp_seg_t *s)
{
  unsigned h = name_hash(s->name);
  s->next = reg.buckets[h];
  reg.buckets[h] = s;
}

static void reg_remove(lmp_seg_t *s)
{
  lmp_seg_t **p = &reg.buckets[name_hash(s->name)];
  while (*p && *p != s)
    p = &(*p)->next;
  if (*p)
    *p = s->next;
}

static int name_token(const char *name, uint64_t *token);

/* Make a name resolve no more: unlink it from /dev/shm, or have the watchdog
 * let go of a memfd's descriptor.  ENOENT is harmless: the root or the
 * watchdog got there first. */
static void name_unlink(const char *name)
{
  uint64_t token;

  if (name_token(name, &token) == 2)
    lmp__wd_seg_drop(reg.prefix, token);
  else
    shm_unlink(name);
}

/* Drop this process's reference: unlink if it was the last one anywhere,
 * free the descriptor, and unmap unless `keep_mapped`.  A process on its way
 * to _exit or exec keeps its mappings: the kernel walks the robust mutexes a
 * dying process holds through addresses in its own memory, so a lock held in
 * an unmapped segment would never be handed on with EOWNERDEAD. */
static void seg_drop(lmp_seg_t *s, int keep_mapped)
{
  int last = __atomic_sub_fetch(&s->hdr->refs, 1, __ATOMIC_ACQ_REL) == 0;
  /* Unlinked before the unmap, which can take long for a large segment:
   * a process killed in between would leave it with no holder. */
  if (last)
    name_unlink(s->name); /* ENOENT: the root or watchdog got there first */
  if (!keep_mapped)
    munmap(s->hdr, s->maplen);
  free(s);
}

/* === the family === */

void lmp__seg_family(const char *prefix)
{
  snprintf(reg.prefix, sizeof reg.prefix, "%s", prefix);
}

/* === segments: names === */

/* The 64 random bits of a name, and whether it is a memfd segment's:
 * "<prefix>.<16 hex>" or "<prefix>.m<16 hex>".  0 if it is neither. */
static int name_token(const char *name, uint64_t *token)
{
  const char *p = strrchr(name, '.');
  int memfd, i;
  uint64_t v = 0;

  if (p == NULL)
    return 0;
  memfd = p[1] == LMP__MEMFD_MARK;
  p += 1 + memfd;
  for (i = 0; i < 16; i++, p++) {
    if (*p >= '0' && *p <= '9')
      v = v << 4 | (uint64_t)(*p - '0');
    else if (*p >= 'a' && *p <= 'f')
      v = v << 4 | (uint64_t)(*p - 'a' + 10);
    else
      return 0;
  }
  if (*p != '\0')
    return 0;
  *token = v;
  return memfd ? 2 : 1;
}

static void new_name(lmp_seg_t *s, int memfd)
{
  snprintf(s->name, sizeof s->name, "%s.%s%016llx", reg.prefix, memfd ? "m" : "",
           (unsigned long long)lmp__random64());
}

/* === segments: backing store === */

static __thread char space_msg[256];

const char *lmp_seg_space_error(void)
{
  return space_msg;
}

/* "3.0 MiB" */
static const char *human(char *b, size_t n, uint64_t v)
{
  static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double d = (double)v;
  int u = 0;

  if (v < 1024) {
    snprintf(b, n, "%llu bytes", (unsigned long long)v);
    return b;
  }
  while (d >= 1024 && u < 5) {
    d /= 1024;
    u++;
  }
  snprintf(b, n, "%.1f %s", d, units[u]);
  return b;
}

/* Size and free space of /dev/shm; 0 when unknown or unbounded. */
static void shm_space(uint64_t *size, uint64_t *avail)
{
  struct statvfs v;

  *size = *avail = 0;
  if (statvfs("/dev/shm", &v) == 0 && v.f_blocks > 0) {
    *size = (uint64_t)v.f_blocks * v.f_frsize;
    *avail = (uint64_t)v.f_bavail * v.f_frsize;
  }
}

static uint64_t read_u64(const char *path, const char *key)
{
  char buf[4096], *p;
  ssize_t n;
  int fd = open(path, O_RDONLY | O_CLOEXEC);

  if (fd < 0)
    return UINT64_MAX;
  n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0)
    return UINT64_MAX;
  buf[n] = '\0';
  p = key ? strstr(buf, key) : buf;
  if (p == NULL)
    return UINT64_MAX;
  p += key ? strlen(key) : 0;
  while (*p == ' ')
    p++;
  if (*p < '0' || *p > '9') /* "max" */
    return UINT64_MAX;
  return strtoull(p, NULL, 10);
}

/* What memory can still give a memfd: MemAvailable, and what is left under
 * a cgroup v2 memory.max.  Anonymous shared memory is not bounded by any
 * filesystem, so without this check a huge request would be filled page by
 * page until the OOM killer stepped in. */
static uint64_t memory_available(void)
{
  char path[512], line[400], *nl;
  uint64_t avail = read_u64("/proc/meminfo", "MemAvailable:"), max, cur;
  ssize_t n;
  int fd;

  if (avail != UINT64_MAX)
    avail *= 1024;
  fd = open("/proc/self/cgroup", O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return avail;
  n = read(fd, line, sizeof line - 1);
  close(fd);
  line[n > 0 ? n : 0] = '\0';
  if (strncmp(line, "0::/", 4) != 0) /* cgroup v2 only */
    return avail;
  if ((nl = strchr(line, '\n')) != NULL)
    *nl = '\0';
  snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.max", line + 3);
  max = read_u64(path, NULL);
  snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.current", line + 3);
  cur = read_u64(path, NULL);
  if (max != UINT64_MAX && cur != UINT64_MAX)
    avail = avail < (max > cur ? max - cur : 0) ? avail : (max > cur ? max - cur : 0);
  return avail;
}

/* Give fd `len` bytes that are really there: 0, or the error of
 * posix_fallocate (ENOSPC, EFBIG, ENOMEM...) as -errno. */
static int reserve(int fd, size_t len)
{
  int rc;

  if (len > (size_t)INT64_MAX)
    return -EFBIG;
  while ((rc = posix_fallocate(fd, 0, (off_t)len)) == EINTR) {
  }
  return -rc;
}

static int no_space(int rc)
{
  return rc == -ENOSPC || rc == -EFBIG || rc == -ENOMEM;
}

/* A new /dev/shm segment of len bytes: its descriptor, or -errno. */
static int shm_new(lmp_seg_t *s, size_t len)
{
  int fd, rc, tries;

  /* A name can exist already: planted by someone who read the prefix in
   * /dev/shm (EEXIST, or EACCES where the sticky directory protects it), or
   * left by a dead process.  Another random name does not. */
  for (tries = 0; tries < LMP__CREATE_TRIES; tries++) {
    new_name(s, 0);
    lmp__lock(&reg.lock);
    hold_creating(s); /* listed before it exists: a death now leaks nothing */
    lmp__unlock(&reg.lock);
    fd = shm_open(s->name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 || (errno != EEXIST && errno != EACCES))
      break;
  }
  if (fd < 0)
    return -errno;
  if ((rc = reserve(fd, len)) < 0) {
    close(fd);
    shm_unlink(s->name);
    return rc;
  }
  return fd;
}

/* A new memfd segment of len bytes, kept by the watchdog under its name. */
static int memfd_new(lmp_seg_t *s, size_t len)
{
  int fd, rc, tries;
  uint64_t token;

  fd = memfd_create(reg.prefix + 1, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0)
    return -errno;
  if ((rc = reserve(fd, len)) < 0)
    goto err;
  /* Nobody may shrink it under a mapping (a SIGBUS elsewhere) or grow it. */
  fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  fchmod(fd, 0600);
  for (tries = 0, rc = -EEXIST; tries < 4 && rc == -EEXIST; tries++) {
    new_name(s, 1);
    name_token(s->name, &token);
    lmp__lock(&reg.lock);
    hold_creating(s);
    lmp__unlock(&reg.lock);
    rc = lmp__wd_seg_put(reg.prefix, token, fd);
  }
  if (rc < 0)
    goto err;
  return fd;
err:
  close(fd);
  return rc;
}

/* Word the shortage for lmp_seg_space_error. */
static void space_fail(size_t len, int fallback, int wd_full)
{
  char a[32], b[32], c[32], d[32];
  uint64_t size, avail;
  int n;

  shm_space(&size, &avail);
  n = snprintf(space_msg, sizeof space_msg, "cannot reserve %s of shared memory in /dev/shm",
               human(a, sizeof a, len));
  if (size > 0 && n > 0 && (size_t)n < sizeof space_msg)
    n += snprintf(space_msg + n, sizeof space_msg - (size_t)n, " (%s filesystem, %s free)",
                  human(b, sizeof b, size), human(c, sizeof c, avail));
  if (n <= 0 || (size_t)n >= sizeof space_msg)
    return;
  if (wd_full)
    snprintf(space_msg + n, sizeof space_msg - (size_t)n,
             " and the watchdog holds as many memory segments as it may");
  else if (fallback)
    snprintf(space_msg + n, sizeof space_msg - (size_t)n, " nor in memory (%s available)",
             human(d, sizeof d, memory_available()));
}

/* The descriptor of a new segment of len bytes with its store reserved:
 * in /dev/shm when it fits there, else a memfd; or -errno (-ENOSPC with
 * space_msg set when neither has room). */
static int backing_new(lmp_seg_t *s, size_t len)
{
  const char *off = getenv("LMP_TEST_NO_MEMFD");
  int fallback = !(off && *off && strcmp(off, "0") != 0);
  uint64_t size, avail;
  int fd;

  space_msg[0] = '\0';
  shm_space(&size, &avail);
  /* When statvfs already says it cannot fit, do not fill the filesystem
   * page by page only to have the kernel take every page back. */
  fd = size > 0 && avail < len ? -ENOSPC : shm_new(s, len);
  if (fd >= 0 || !no_space(fd))
    return fd;
  if (!fallback) {
    space_fail(len, 0, 0);
    return -ENOSPC;
  }
  if (len > memory_available()) {
    space_fail(len, 1, 0);
    return -ENOSPC;
  }
  fd = memfd_new(s, len);
  if (no_space(fd) || fd == -EMFILE)
    space_fail(len, 1, fd == -EMFILE);
  return no_space(fd) || fd == -EMFILE ? -ENOSPC : fd;
}

int lmp_seg_create(size_t size, lmp_seg_t **out)
{
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  lmp_seg_t *s = NULL;
  void *p = MAP_FAILED;
  int fd = -1, rc;

  *out = NULL;
  if ((rc = lmp_runtime_init()) < 0)
    return rc;
  if (size > SIZE_MAX - LMP__SEG_HDR - page)
    return -ENOMEM;
  if ((s = calloc(1, sizeof *s)) == NULL)
    return -ENOMEM;
  s->maplen = (LMP__SEG_HDR + size + page - 1) / page * page;
  if ((fd = rc = backing_new(s, s->maplen)) < 0)
    goto err;
  p = mmap(NULL, s->maplen, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    rc = -errno;
    goto err;
  }
  close(fd);
  s->hdr = p;
  s->hdr->magic = LMP__SEG_MAGIC;
  s->hdr->size = s->maplen - LMP__SEG_HDR;
  __atomic_store_n(&s->hdr->refs, 1, __ATOMIC_RELEASE);
  s->local = 1;
  lmp__lock(&reg.lock);
  reg_insert(s);
  hold_add(s);
  lmp__unlock(&reg.lock);
  *out = s;
  return 0;

err:
  if (fd >= 0) {
    close(fd);
    name_unlink(s->name);
  }
  lmp__lock(&reg.lock);
  hold_del(s);
  lmp__unlock(&reg.lock);
  free(s);
  return rc;
}

static int valid_name(const char *name)
{
  size_t n = name ? strnlen(name, LMP_SEG_NAME_MAX) : 0;
  return n >= 2 && n < LMP_SEG_NAME_MAX && name[0] == '/' && strchr(name + 1, '/') == NULL;
}

/* Segments are created owner-only by this user.  Anything else under the
 * prefix was planted (the names in /dev/shm are visible to every user), and
 * mapping it would hand its maker our locks and our messages. */
int lmp__owner_only(const struct stat *st)
{
  return st->st_uid == geteuid() && (st->st_mode & 077) == 0;
}

/* A descriptor for an existing segment: shm_open, or a duplicate of the
 * watchdog's for a memfd.  -errno (-ENOENT when it is gone). */
static int name_open(const char *name, int flags)
{
  uint64_t token;
  int fd;

  if (name_token(name, &token) == 2) {
    /* Only this family's watchdog knows it: a name of another prefix is
     * looked up at that family's watchdog, which serves only our uid. */
    char prefix[LMP_SEG_NAME_MAX];
    size_t n = (size_t)(strrchr(name, '.') - name);
    memcpy(prefix, name, n);
    prefix[n] = '\0';
    return lmp__wd_seg_get(prefix, token, &fd) < 0 ? -ENOENT : fd;
  }
  fd = shm_open(name, flags | O_CLOEXEC, 0);
  return fd < 0 ? -errno : fd;
}

/* Map an existing segment and check it is one of ours. */
static int seg_map(const char *name, lmp_seg_t **out)
{
  lmp_seg_t *s = NULL;
  struct stat st;
  void *p;
  int fd, rc;

  if ((fd = name_open(name, O_RDWR)) < 0)
    return fd;
  if (fstat(fd, &st) < 0) {
    rc = -errno;
    goto err;
  }
  rc = -EACCES; /* not made by this user, owner-only: not one of ours */
  if (!lmp__owner_only(&st))
    goto err;
  rc = -EINVAL; /* too small to be one of ours */
  if (st.st_size < LMP__SEG_HDR * 2)
    goto err;
  rc = -ENOMEM;
  if ((s = calloc(1, sizeof *s)) == NULL)
    goto err;
  p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    rc = -errno;
    goto err;
  }
  s->hdr = p;
  s->maplen = (size_t)st.st_size;
  if (s->hdr->magic != LMP__SEG_MAGIC || s->hdr->size != s->maplen - LMP__SEG_HDR) {
    munmap(p, s->maplen);
    rc = -EINVAL;
    goto err;
  }
  snprintf(s->name, sizeof s->name, "%s", name);
  close(fd);
  *out = s;
  return 0;

err:
  close(fd);
  free(s);
  return rc;
}

/* The name came in a message that pinned it, but this process already holds
 * a reference of its own: the pin is not needed. */
static void drop_pin(lmp_seg_t *s)
{
  if (dec_if_positive(&s->hdr->inflight))
    __atomic_sub_fetch(&s->hdr->refs, 1, __ATOMIC_ACQ_REL);
}

int lmp_seg_attach(const char *name, int adopt, lmp_seg_t **out)
{
  lmp_seg_t *s;
  int rc;

  *out = NULL;
  if (!valid_name(name))
    return -EINVAL;
  if ((rc = lmp_runtime_init()) < 0)
    return rc;
  /* Held across the map so two threads attaching one name map it once. */
  lmp__lock(&reg.lock);
  if ((s = reg_find(name)) != NULL) {
    s->local++;
    if (adopt)
      drop_pin(s);
    goto out;
  }
  if ((rc = seg_map(name, &s)) < 0)
    goto out;
  /* First attach here: adopt the message's pin, or take a new reference. */
  if (!(adopt && dec_if_positive(&s->hdr->inflight)) && !inc_if_nonzero(&s->hdr->refs)) {
    munmap(s->hdr, s->maplen);
    free(s);
    s = NULL;
    rc = -ENOENT; /* its last holder is unlinking it */
    goto out;
  }
  s->local = 1;
  reg_insert(s);
  hold_add(s);
out:
  lmp__unlock(&reg.lock);
  *out = s;
  return rc;
}

void lmp_seg_retain(lmp_seg_t *s)
{
  lmp__lock(&reg.lock);
  s->local++;
  lmp__unlock(&reg.lock);
}

void lmp_seg_release(lmp_seg_t *s)
{
  int last;

  if (s == NULL)
    return;
  lmp__lock(&reg.lock);
  if (s->local == 0)
    abort(); /* released more often than retained: a use after free */
  last = --s->local == 0;
  if (last) {
    reg_remove(s);
    hold_del(s); /* before the reference goes: a death in between leaks, never frees twice */
  }
  lmp__unlock(&reg.lock);
  if (last)
    seg_drop(s, 0);
}

void lmp_seg_pin(lmp_seg_t *s)
{
  __atomic_add_fetch(&s->hdr->refs, 1, __ATOMIC_ACQ_REL);
  __atomic_add_fetch(&s->hdr->inflight, 1, __ATOMIC_ACQ_REL);
}

void *lmp_seg_data(const lmp_seg_t *s)
{
  return (char *)s->hdr + LMP__SEG_HDR;
}

size_t lmp_seg_size(const lmp_seg_t *s)
{
  return s->maplen - LMP__SEG_HDR;
}

const char *lmp_seg_name(const lmp_seg_t *s)
{
  return s->name;
}

uint32_t lmp__seg_refs(const lmp_seg_t *s)
{
  return __atomic_load_n(&s->hdr->refs, __ATOMIC_ACQUIRE);
}

uint32_t lmp_seg_local(const lmp_seg_t *s)
{
  lmp__lock(&reg.lock);
  uint32_t n = s->local;
  lmp__unlock(&reg.lock);
  return n;
}

/* === fork === */

static void add_refs_all(int delta)
{
  lmp_seg_t *s;
  int i;

  for (i = 0; i < LMP__BUCKETS; i++)
    for (s = reg.buckets[i]; s; s = s->next)
      __atomic_add_fetch(&s->hdr->refs, (uint32_t)delta, __ATOMIC_ACQ_REL);
}

/* The registry stays locked from here to the postfork call on each side, so
 * no thread can map or drop a segment the child would miscount. */
void lmp__seg_prefork(void)
{
  lmp__lock(&reg.lock);
  add_refs_all(1);
  hold_prefork();
}

void lmp__seg_postfork_parent(int failed)
{
  if (hold_postfork_parent(failed) || failed)
    add_refs_all(-1);
  lmp__unlock(&reg.lock);
}

void lmp__seg_postfork_child(void)
{
  /* The child's only thread is not the one that locked: start afresh. */
  pthread_mutex_init(&reg.lock, NULL);
  hold_after_fork();
}

void lmp__seg_release_all(void)
{
  lmp_seg_t *s, *next;
  int i;

  lmp__lock(&reg.lock);
  hold_close(); /* first: a death from here on leaks, never frees twice */
  for (i = 0; i < LMP__BUCKETS; i++) {
    for (s = reg.buckets[i]; s; s = next) {
      next = s->next;
      seg_drop(s, 1);
    }
    reg.buckets[i] = NULL;
  }
  lmp__unlock(&reg.lock);
}

/* === holdings: the references of a process that dies === */

/*
 * A process killed before it could release its segments (SIGKILL, a task
 * timeout, the OOM killer) leaves its references in their headers, and the
 * segments then stay until the root exits.  So each process lists what it
 * holds in a holdings table of its own, a small segment named
 * "<prefix>.h.<pid>" that only it writes: one slot per segment in its
 * registry, filled after the reference is taken and emptied before it is
 * dropped, under the registry's lock.  Whoever reaps a process
 * (lmp__holdings_reaped, from proc.c) reads its table and gives back every
 * reference listed there.
 *
 * Why a table per process, and not a scan of what live processes map: the
 * owner writes it without any lock shared with other processes (one slot
 * store on the first attach of a segment, one on its last release: nothing
 * on the put/get paths), only a dead owner's table is ever read, and it is
 * exact where a scan would race with attaches in progress.  The order of the
 * stores makes every window err on the safe side: a process killed between
 * taking a reference and listing it, or between unlisting and dropping it,
 * leaks that one reference (the root's cleanup still gets it); a reference is
 * never given back twice.  The reaper claims a table by unlinking its name,
 * so two noticers never both give back, and checks that the table's owner
 * (its pid and start time) is really gone, so a recycled pid is never taken
 * for its predecessor.
 *
 * Giving back goes through the object: the dead process's reference is
 * turned into a pin (it is counted already), and the pin is released by the
 * unpin hook, which the Lua bindings set so that the last holder of a
 * container or a queue also releases what its values hold.
 *
 * Bounded: 72 bytes per segment the process holds, grown by doubling; a
 * process that cannot make its table (a full /dev/shm) goes untracked, as
 * before.
 */

#define LMP__HOLD_MAGIC 0x31646c6f682d706dULL /* "mp-hold1" */
#define LMP__HOLD_FIRST 64                    /* slots in a new table */

typedef struct lmp__hold_hdr {
  uint64_t magic;
  int64_t pid;
  uint64_t start; /* the owner's start time, in clock ticks since boot */
  char pad[40];
} lmp__hold_hdr_t;

enum { HOLD_FREE = 0, HOLD_HELD = 1, HOLD_CREATING = 2 };

typedef struct lmp__hold_slot {
  uint32_t state;
  uint32_t next; /* the free list, owner's use only: index + 1, 0 ends it */
  char name[LMP_SEG_NAME_MAX];
} lmp__hold_slot_t;

static struct {
  pid_t pid; /* the process the state below belongs to */
  int off;   /* no table in this process: untracked */
  lmp__hold_hdr_t *h;
  size_t maplen;
  uint32_t cap, hi; /* slots mapped; slots ever used */
  uint32_t free;    /* head of the free list, index + 1 */
  char name[LMP_SEG_NAME_MAX];
} hold;

static void (*unpin_hook)(const char *name);

static lmp__hold_slot_t *hold_slots(lmp__hold_hdr_t *h)
{
  return (lmp__hold_slot_t *)(h + 1);
}

/* 1 when the process that started at `start` as `pid` has ended for sure
 * (any = 1: when no process has that pid).  Without /proc, never. */
static int owner_gone(pid_t pid, uint64_t start, int any)
{
  uint64_t now;
  char state;
  int rc = lmp__proc_start(pid, &now, &state);

  if (rc == -ENOENT || rc == -ESRCH)
    return access("/proc/self/stat", F_OK) == 0;
  return rc == 0 && !any && now != start; /* the pid went to another process */
}

/* Make this process's table (lazily, at its first segment). */
static int hold_make(void)
{
  size_t len = sizeof(lmp__hold_hdr_t) + LMP__HOLD_FIRST * sizeof(lmp__hold_slot_t);
  lmp__hold_hdr_t *h;
  char state;
  int fd, tries;

  if (hold.h) /* a parent's that forked us behind lmp's back */
    munmap(hold.h, hold.maplen);
  hold.h = NULL;
  hold.pid = getpid();
  hold.off = 1;
  snprintf(hold.name, sizeof hold.name, "%s.h.%ld", reg.prefix, (long)hold.pid);
  /* A table under our own pid is a predecessor's that nobody reaped (an
   * image before exec, a recycled pid): its owner is gone, the name is ours. */
  for (tries = 0; (fd = shm_open(hold.name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600)) < 0;)
    if (errno != EEXIST || tries++ > 0 || shm_unlink(hold.name) < 0)
      return -errno;
  /* Reserved, as every segment is: a full /dev/shm must not SIGBUS us
   * here; without a table this process goes untracked instead. */
  if ((errno = -reserve(fd, len)) != 0 ||
      (h = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED) {
    int err = errno;
    close(fd);
    shm_unlink(hold.name);
    return -err;
  }
  close(fd);
  h->pid = hold.pid;
  if (lmp__proc_start(hold.pid, &h->start, &state) < 0)
    h->start = 0; /* no /proc: never found gone, so never given back */
  __atomic_store_n(&h->magic, LMP__HOLD_MAGIC, __ATOMIC_RELEASE);
  hold.h = h;
  hold.maplen = len;
  hold.cap = LMP__HOLD_FIRST;
  hold.hi = hold.free = 0;
  hold.off = 0;
  return 0;
}

static int hold_grow(void)
{
  size_t len = sizeof(lmp__hold_hdr_t) + (size_t)hold.cap * 2 * sizeof(lmp__hold_slot_t);
  void *p;
  int fd = shm_open(hold.name, O_RDWR | O_CLOEXEC, 0);

  int rc;

  if (fd < 0)
    return -errno;
  rc = reserve(fd, len);
  close(fd);
  if (rc < 0)
    return rc;
  if ((p = mremap(hold.h, hold.maplen, len, MREMAP_MAYMOVE)) == MAP_FAILED)
    return -errno;
  hold.h = p;
  hold.maplen = len;
  hold.cap *= 2;
  return 0;
}

/* A free slot (index + 1), or 0 when this process goes untracked. */
static uint32_t hold_slot_new(void)
{
  uint32_t i;

  if (hold.pid != getpid() && hold_make() < 0)
    return 0;
  if (hold.off)
    return 0;
  if (hold.free) {
    i = hold.free - 1;
    hold.free = hold_slots(hold.h)[i].next;
  } else if (hold.hi < hold.cap || hold_grow() == 0) {
    i = hold.hi++;
  } else {
    return 0; /* untracked: a leak at worst */
  }
  return i + 1;
}

static void hold_set(lmp_seg_t *s, uint32_t state)
{
  lmp__hold_slot_t *slot = &hold_slots(hold.h)[s->hslot - 1];

  snprintf(slot->name, sizeof slot->name, "%s", s->name);
  __atomic_store_n(&slot->state, state, __ATOMIC_RELEASE);
}

/* The name of a segment about to be created, listed before the file exists:
 * a creator killed before its header is written leaves a segment that no
 * count will ever bring to zero. */
static void hold_creating(lmp_seg_t *s)
{
  if (s->hslot == 0 && (s->hslot = hold_slot_new()) == 0)
    return;
  hold_set(s, HOLD_CREATING);
}

static void hold_add(lmp_seg_t *s)
{
  if (s->hslot == 0 && (s->hslot = hold_slot_new()) == 0)
    return;
  hold_set(s, HOLD_HELD);
}

static void hold_del(lmp_seg_t *s)
{
  lmp__hold_slot_t *slot;

  if (s->hslot == 0 || hold.pid != getpid() || hold.off)
    return;
  slot = &hold_slots(hold.h)[s->hslot - 1];
  if (strcmp(slot->name, s->name) != 0)
    return; /* a slot of the table of a parent that forked behind our back */
  __atomic_store_n(&slot->state, HOLD_FREE, __ATOMIC_RELEASE);
  slot->next = hold.free;
  hold.free = s->hslot;
  s->hslot = 0;
}

/*
 * A child killed before it ever ran (right after a fork, on a busy machine)
 * never lists the references it inherited.  So when it inherits any, the
 * parent waits, right after the fork, for word from the child over a pipe:
 * its pid before it makes its table, and one byte once every inherited
 * reference is listed.  End of file instead means the child died: if it
 * made no table, the parent gives those references back at once (the
 * registry has not changed in between: it is locked).  Once the table
 * exists, what it lists is the reaper's to give back.
 */
static int hold_sync[2] = {-1, -1};

static int registry_empty(void)
{
  int i;

  for (i = 0; i < LMP__BUCKETS; i++)
    if (reg.buckets[i])
      return 0;
  return 1;
}

static void hold_prefork(void)
{
  if (!registry_empty() && pipe2(hold_sync, O_CLOEXEC) < 0)
    hold_sync[0] = hold_sync[1] = -1;
}

/* In the child, around hold_after_fork. */
static void hold_tell_parent(const void *what, size_t n)
{
  if (hold_sync[1] >= 0 && write(hold_sync[1], what, n) < 0) { /* the parent sees EOF */
  }
}

static void hold_child_done(void)
{
  if (hold_sync[0] >= 0)
    close(hold_sync[0]);
  if (hold_sync[1] >= 0)
    close(hold_sync[1]);
  hold_sync[0] = hold_sync[1] = -1;
}

/* 1 when the child died holding inherited references nobody listed. */
static int hold_postfork_parent(int failed)
{
  char name[LMP_SEG_NAME_MAX], done;
  int32_t pid = 0;
  ssize_t n;
  int fd, listed = 1;

  if (hold_sync[0] < 0)
    return 0;
  close(hold_sync[1]);
  if (!failed) {
    while ((n = read(hold_sync[0], &pid, sizeof pid)) < 0 && errno == EINTR) {
    }
    if (n != (ssize_t)sizeof pid) {
      listed = 0; /* it died before it made its table */
    } else {
      while ((n = read(hold_sync[0], &done, 1)) < 0 && errno == EINTR) {
      }
      if (n != 1) { /* it died making its table: was it made? */
        lmp__hold_hdr_t h;
        snprintf(name, sizeof name, "%s.h.%ld", reg.prefix, (long)pid);
        fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0);
        listed = fd >= 0 && pread(fd, &h, sizeof h, 0) == (ssize_t)sizeof h &&
                 h.magic == LMP__HOLD_MAGIC;
        if (fd >= 0)
          close(fd);
      }
    }
  }
  close(hold_sync[0]);
  hold_sync[0] = hold_sync[1] = -1;
  return !failed && !listed;
}

/* In a new child: the table mapped here is the parent's.  The child holds
 * a reference to every segment of the registry (lmp__runtime_prefork), and
 * lists them in a table of its own. */
static void hold_after_fork(void)
{
  lmp_seg_t *s;
  int i;

  int32_t pid = (int32_t)getpid();

  if (hold.h)
    munmap(hold.h, hold.maplen);
  memset(&hold, 0, sizeof hold);
  hold_tell_parent(&pid, sizeof pid);
  for (i = 0; i < LMP__BUCKETS; i++)
    for (s = reg.buckets[i]; s; s = s->next) {
      s->hslot = 0;
      hold_add(s);
    }
  hold_tell_parent("y", 1);
  hold_child_done();
}

/* Before _exit or exec, when every reference is about to be dropped. */
static void hold_close(void)
{
  if (hold.pid == getpid() && hold.h) {
    shm_unlink(hold.name);
    munmap(hold.h, hold.maplen);
  }
  memset(&hold, 0, sizeof hold);
  hold.pid = getpid();
  hold.off = 1;
}

void lmp__seg_set_unpin(void (*fn)(const char *name))
{
  unpin_hook = fn;
}

void lmp_seg_unpin(const char *name)
{
  lmp_seg_t *s;

  if (unpin_hook)
    unpin_hook(name);
  else if (lmp_seg_attach(name, 1, &s) == 0)
    lmp_seg_release(s);
}

/* A segment a dead process was creating: nobody else can know its name, so
 * it goes if its header still counts no holder (the creator was killed
 * before writing it); one that does stays for the root's cleanup. */
static void drop_unborn(const char *name)
{
  const lmp__seg_hdr_t *h;
  struct stat st;
  int fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0), unborn = 0;

  if (fd < 0)
    return;
  if (fstat(fd, &st) == 0 && lmp__owner_only(&st)) {
    if ((size_t)st.st_size < sizeof *h) {
      unborn = 1;
    } else if ((h = mmap(NULL, sizeof *h, PROT_READ, MAP_SHARED, fd, 0)) != MAP_FAILED) {
      unborn = __atomic_load_n(&h->refs, __ATOMIC_ACQUIRE) == 0 &&
               __atomic_load_n(&h->inflight, __ATOMIC_ACQUIRE) == 0;
      munmap((void *)h, sizeof *h);
    }
  }
  close(fd);
  if (unborn)
    shm_unlink(name);
}

/* Give back one reference a dead process held: make it a pin (it is
 * counted in refs already) and release the pin through the hook. */
static void give_back(const char *name)
{
  lmp_seg_t *s;

  if (lmp_seg_attach(name, 0, &s) < 0)
    return;
  __atomic_add_fetch(&s->hdr->inflight, 1, __ATOMIC_ACQ_REL);
  lmp_seg_release(s);
  lmp_seg_unpin(name);
}

void lmp__holdings_reaped(pid_t pid)
{
  char name[LMP_SEG_NAME_MAX], seg[LMP_SEG_NAME_MAX];
  lmp__hold_hdr_t *h;
  lmp__hold_slot_t *slots;
  struct stat st;
  size_t i, n;
  int fd;

  if (reg.prefix[0] == '\0' || pid <= 0)
    return;
  snprintf(name, sizeof name, "%s.h.%ld", reg.prefix, (long)pid);
  if ((fd = shm_open(name, O_RDONLY | O_CLOEXEC, 0)) < 0)
    return; /* never made one, or it exited cleanly */
  if (fstat(fd, &st) < 0 || !lmp__owner_only(&st) || (size_t)st.st_size < sizeof *h ||
      (h = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0)) == MAP_FAILED) {
    close(fd);
    return;
  }
  close(fd);
  /* Only a table whose owner is gone, and only the one noticer that
   * unlinks it, gives anything back.  One without its magic was being made
   * when its owner died: it lists nothing yet. */
  if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != LMP__HOLD_MAGIC) {
    if (owner_gone(pid, 0, 1))
      shm_unlink(name);
  } else if (h->pid == pid && owner_gone(pid, h->start, 0) && shm_unlink(name) == 0) {
    slots = hold_slots(h);
    n = ((size_t)st.st_size - sizeof *h) / sizeof *slots;
    for (i = 0; i < n; i++) {
      uint32_t state = __atomic_load_n(&slots[i].state, __ATOMIC_ACQUIRE);
      if (state == HOLD_FREE)
        continue;
      memcpy(seg, slots[i].name, sizeof seg);
      seg[sizeof seg - 1] = '\0';
      if (state == HOLD_HELD)
        give_back(seg);
      else if (state == HOLD_CREATING && valid_name(seg))
        drop_unborn(seg);
    }
  }
  munmap(h, (size_t)st.st_size);
}

/* === observers === */

int lmp_seg_peek(const char *name, const void **data, size_t *size)
{
  struct stat st;
  void *p;
  int fd, rc;

  if (!valid_name(name))
    return -EINVAL;
  if ((fd = name_open(name, O_RDONLY)) < 0)
    return fd;
  if (fstat(fd, &st) < 0) {
    rc = -errno;
    close(fd);
    return rc;
  }
  if (!lmp__owner_only(&st)) {
    close(fd);
    return -EACCES;
  }
  if (st.st_size < LMP__SEG_HDR * 2) {
    close(fd);
    return -EINVAL;
  }
  p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
  rc = p == MAP_FAILED ? -errno : 0;
  close(fd);
  if (rc < 0)
    return rc;
  const lmp__seg_hdr_t *h = p;
  if (h->magic != LMP__SEG_MAGIC || h->size != (uint64_t)st.st_size - LMP__SEG_HDR) {
    munmap(p, (size_t)st.st_size);
    return -EINVAL;
  }
  *data = (const char *)p + LMP__SEG_HDR;
  *size = (size_t)h->size;
  return 0;
}

void lmp_seg_unpeek(const void *data, size_t size)
{
  if (data)
    munmap((char *)data - LMP__SEG_HDR, size + LMP__SEG_HDR);
}

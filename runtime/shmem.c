/*
 * shmem.c -- raw shared-memory blocks (lmp.SharedMemory) and the directory
 * of the names users give them.
 *
 * A block is a segment whose data starts with a small header (magic, the
 * size the user asked for, the user name if any) followed by the user's
 * bytes at a 64-byte boundary.  Its lifetime is the segment's: reference
 * counted, unlinked by the last holder, swept by the root at exit.
 *
 * Names.  Python's SharedMemory names are global to the machine and live
 * until someone unlinks them, which is how they leak.  lmp scopes a user
 * name to the program instead: the names directory is one shared-memory
 * object per root, "<prefix>.names", mapping user names to segment names.
 * It is not a segment (it must be found from a name every process can
 * compute, and it never goes away before the root does), so it is opened
 * here with shm_open: created or opened without O_EXCL and truncated to its
 * fixed size (idempotent, so two processes racing to make it both succeed),
 * then initialized by whichever process wins a compare-and-swap on its
 * state word; the others wait for that to finish.  The root's cleanup
 * unlinks it with everything else under the prefix.
 *
 * The directory holds no reference on the blocks it names: an entry whose
 * segment is gone is stale, and is dropped when a lookup or a create meets
 * it.  Every directory operation runs under its robust lock, attach
 * included, so a name cannot be unlinked between being looked up and being
 * attached.
 */
#include "lmp/shmem.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "lmp/common.h"
#include "lmp/mutex.h"
#include "lmp/runtime.h"

#define BLOCK_MAGIC 0x4b4c424cu /* "LBLK" */
#define BLOCK_VERSION 1u
#define DIR_MAGIC 0x5249444cu    /* "LDIR" */
#define DIR_WAIT_NS 2000000000LL /* for another process to set the directory up */

struct bhdr {
  _Atomic uint32_t magic; /* written last by create */
  uint32_t version;
  uint64_t size;             /* what the user asked for */
  _Atomic uint32_t unlinked; /* no more attaching, even where it is mapped */
  uint32_t pad;
  char name[LMP_SHMEM_NAME_MAX];
};

#define BLOCK_OFFSET ((sizeof(struct bhdr) + 63) & ~(size_t)63)

struct lmp_shmem {
  lmp_seg_t *seg;
  struct bhdr *h;
};

/* === the names directory === */

enum { DIR_FRESH, DIR_INITIALIZING, DIR_READY };

struct dirent_ {
  char name[LMP_SHMEM_NAME_MAX]; /* "" when free */
  char seg[LMP_SEG_NAME_MAX];
};

struct dir {
  _Atomic uint32_t state;
  uint32_t magic;
  uint32_t used; /* entries [0, used) may be taken */
  _Alignas(64) lmp_mutex_t lock;
  struct dirent_ ent[LMP_SHMEM_DIR_MAX];
};

static struct {
  pthread_mutex_t lock;
  struct dir *dir; /* mapped once per process; a fork inherits it */
} local = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Wait until whoever initializes the directory is done. */
static int dir_wait_ready(struct dir *d)
{
  int64_t until = lmp_now_ns() + DIR_WAIT_NS;
  struct timespec ms = {0, 1000000};
  while (atomic_load_explicit(&d->state, memory_order_acquire) != DIR_READY) {
    if (lmp_now_ns() > until)
      return -EAGAIN; /* its initializer died half-way */
    nanosleep(&ms, NULL);
  }
  return d->magic == DIR_MAGIC ? 0 : -EINVAL;
}

static int dir_map(struct dir **out)
{
  char name[LMP_SEG_NAME_MAX + 8];
  struct stat st;
  void *p;
  int fd, rc;

  if ((rc = lmp_runtime_init()) < 0)
    return rc;
  snprintf(name, sizeof name, "%s%s", lmp_runtime_prefix(), LMP__NAMES_SUFFIX);
  fd = shm_open(name, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  if (fstat(fd, &st) < 0) {
    rc = -errno;
    close(fd);
    return rc;
  }
  if (!lmp__owner_only(&st)) { /* planted by someone else (see segment.c) */
    close(fd);
    return -EACCES;
  }
  /* Reserved, not only sized: a directory on a full /dev/shm must fail
   * here, not fault when it is first written. */
  while (st.st_size < (off_t)sizeof(struct dir) &&
         (rc = posix_fallocate(fd, 0, (off_t)sizeof(struct dir))) != 0) {
    if (rc != EINTR) {
      close(fd);
      return -rc;
    }
  }
  p = mmap(NULL, sizeof(struct dir), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  rc = -errno;
  close(fd);
  if (p == MAP_FAILED)
    return rc;
  struct dir *d = p;
  uint32_t fresh = DIR_FRESH;
  if (atomic_compare_exchange_strong(&d->state, &fresh, DIR_INITIALIZING)) {
    if ((rc = lmp_mutex_init(&d->lock)) < 0) {
      munmap(p, sizeof(struct dir));
      return rc;
    }
    d->magic = DIR_MAGIC;
    atomic_store_explicit(&d->state, DIR_READY, memory_order_release);
  } else if ((rc = dir_wait_ready(d)) < 0) {
    munmap(p, sizeof(struct dir));
    return rc;
  }
  *out = d;
  return 0;
}

/* The directory, locked.  An owner that died mid-change left at worst one
 * entry with a name and no segment, which reads as stale. */
static int dir_lock(struct dir **out)
{
  int rc = 0;
  pthread_mutex_lock(&local.lock);
  if (local.dir == NULL)
    rc = dir_map(&local.dir);
  *out = local.dir;
  pthread_mutex_unlock(&local.lock);
  if (rc < 0)
    return rc;
  rc = lmp_mutex_lock(&(*out)->lock, LMP_FOREVER);
  return rc == -EOWNERDEAD ? 0 : rc;
}

static void dir_unlock(struct dir *d)
{
  lmp_mutex_unlock(&d->lock);
}

static struct dirent_ *dir_find(struct dir *d, const char *name)
{
  for (uint32_t i = 0; i < d->used && i < LMP_SHMEM_DIR_MAX; i++)
    if (strncmp(d->ent[i].name, name, LMP_SHMEM_NAME_MAX) == 0)
      return &d->ent[i];
  return NULL;
}

static void dir_clear(struct dirent_ *e)
{
  e->name[0] = '\0';
  memset(e->seg, 0, sizeof e->seg);
}

/* The segment an entry names, attached; -ENOENT (and the entry dropped) if
 * it is gone. */
static int dir_attach(struct dirent_ *e, lmp_seg_t **seg)
{
  char name[LMP_SEG_NAME_MAX];
  memcpy(name, e->seg, sizeof name);
  name[sizeof name - 1] = '\0';
  int rc = lmp_seg_attach(name, 0, seg);
  if (rc == -ENOENT || rc == -EINVAL)
    dir_clear(e);
  return rc == -EINVAL ? -ENOENT : rc;
}

/* Drop the entries whose blocks are gone (when the directory is full). */
static void dir_sweep(struct dir *d)
{
  lmp_seg_t *seg;
  for (uint32_t i = 0; i < d->used && i < LMP_SHMEM_DIR_MAX; i++)
    if (d->ent[i].name[0] != '\0' && dir_attach(&d->ent[i], &seg) == 0)
      lmp_seg_release(seg);
}

static struct dirent_ *dir_free_slot(struct dir *d)
{
  for (int swept = 0; swept < 2; swept++) {
    for (uint32_t i = 0; i < d->used && i < LMP_SHMEM_DIR_MAX; i++)
      if (d->ent[i].name[0] == '\0')
        return &d->ent[i];
    if (d->used < LMP_SHMEM_DIR_MAX)
      return &d->ent[d->used++];
    if (!swept)
      dir_sweep(d);
  }
  return NULL;
}

/* === blocks === */

static int valid_user_name(const char *name)
{
  size_t n = strnlen(name, LMP_SHMEM_NAME_MAX);
  return n > 0 && n < LMP_SHMEM_NAME_MAX && name[0] != '/';
}

static int block_new(size_t size, const char *name, lmp_shmem_t **out)
{
  lmp_seg_t *seg;
  int rc;
  if (size > SIZE_MAX - BLOCK_OFFSET)
    return -ENOMEM;
  if ((rc = lmp_seg_create(BLOCK_OFFSET + size, &seg)) < 0)
    return rc;
  lmp_shmem_t *m = calloc(1, sizeof *m);
  if (m == NULL) {
    lmp_seg_release(seg);
    return -ENOMEM;
  }
  m->seg = seg;
  m->h = lmp_seg_data(seg);
  m->h->version = BLOCK_VERSION;
  m->h->size = size;
  if (name)
    snprintf(m->h->name, sizeof m->h->name, "%s", name);
  atomic_store_explicit(&m->h->magic, BLOCK_MAGIC, memory_order_release);
  *out = m;
  return 0;
}

int lmp_shmem_create(size_t size, const char *name, lmp_shmem_t **out)
{
  struct dir *d;
  struct dirent_ *e;
  lmp_seg_t *old;
  int rc;

  *out = NULL;
  if (size == 0 || (name && !valid_user_name(name)))
    return -EINVAL;
  if (name == NULL)
    return block_new(size, NULL, out);
  if ((rc = dir_lock(&d)) < 0)
    return rc;
  if ((e = dir_find(d, name)) != NULL) {
    rc = dir_attach(e, &old);
    if (rc == 0) {
      lmp_seg_release(old);
      rc = -EEXIST;
      goto out;
    }
    if (rc != -ENOENT)
      goto out; /* cannot tell: refuse rather than shadow a live block */
  } else if ((e = dir_free_slot(d)) == NULL) {
    rc = -EDQUOT;
    goto out;
  }
  if ((rc = block_new(size, name, out)) < 0) {
    dir_clear(e);
    goto out;
  }
  snprintf(e->seg, sizeof e->seg, "%s", lmp_seg_name((*out)->seg));
  snprintf(e->name, sizeof e->name, "%s", name);
out:
  dir_unlock(d);
  return rc;
}

int lmp_shmem_open(lmp_seg_t *seg, lmp_shmem_t **out)
{
  struct bhdr *h = lmp_seg_data(seg);
  size_t size = lmp_seg_size(seg);

  *out = NULL;
  if (size < BLOCK_OFFSET || atomic_load_explicit(&h->magic, memory_order_acquire) != BLOCK_MAGIC ||
      h->version != BLOCK_VERSION || h->size == 0 || h->size > size - BLOCK_OFFSET ||
      memchr(h->name, '\0', sizeof h->name) == NULL)
    return -EINVAL;
  /* Unlinked: this process may still map it, but no new handle may reach it. */
  if (atomic_load_explicit(&h->unlinked, memory_order_acquire))
    return -ENOENT;
  lmp_shmem_t *m = calloc(1, sizeof *m);
  if (m == NULL)
    return -ENOMEM;
  lmp_seg_retain(seg);
  m->seg = seg;
  m->h = h;
  *out = m;
  return 0;
}

int lmp_shmem_attach(const char *name, lmp_shmem_t **out)
{
  struct dir *d;
  struct dirent_ *e;
  lmp_seg_t *seg = NULL;
  int rc;

  *out = NULL;
  if (name[0] == '/') {
    rc = lmp_seg_attach(name, 0, &seg);
  } else {
    if (!valid_user_name(name))
      return -ENOENT;
    if ((rc = dir_lock(&d)) < 0)
      return rc;
    e = dir_find(d, name);
    rc = e ? dir_attach(e, &seg) : -ENOENT;
    dir_unlock(d);
  }
  if (rc < 0)
    return rc;
  rc = lmp_shmem_open(seg, out);
  lmp_seg_release(seg);
  return rc;
}

void lmp_shmem_free(lmp_shmem_t *m)
{
  if (m == NULL)
    return;
  lmp_seg_release(m->seg);
  free(m);
}

int lmp_shmem_unlink(lmp_shmem_t *m)
{
  const char *seg = lmp_seg_name(m->seg);
  int found = 0, rc;
  if (m->h->name[0] != '\0') {
    struct dir *d;
    struct dirent_ *e;
    if ((rc = dir_lock(&d)) < 0)
      return rc;
    if ((e = dir_find(d, m->h->name)) != NULL && strncmp(e->seg, seg, sizeof e->seg) == 0) {
      dir_clear(e);
      found = 1;
    }
    dir_unlock(d);
  }
  /* The segment's own name goes too: no handle or attach can reach the
   * block any more.  Its last holder's unlink then meets ENOENT, harmless. */
  if (atomic_exchange(&m->h->unlinked, 1) == 0)
    found = 1;
  shm_unlink(seg);
  return found ? 0 : -ENOENT;
}

void *lmp_shmem_data(const lmp_shmem_t *m)
{
  return (char *)m->h + BLOCK_OFFSET;
}

size_t lmp_shmem_size(const lmp_shmem_t *m)
{
  return (size_t)m->h->size;
}

const char *lmp_shmem_name(const lmp_shmem_t *m)
{
  return m->h->name[0] ? m->h->name : lmp_seg_name(m->seg);
}

lmp_seg_t *lmp_shmem_seg(const lmp_shmem_t *m)
{
  return m->seg;
}

int lmp_shmem_view(lmp_shmem_t *m, size_t offset, lmp_ctype_t t, size_t n, lmp_array_t **out)
{
  *out = NULL;
  if ((unsigned)t >= LMP_CTYPE_COUNT)
    return -EINVAL;
  if (offset % lmp_ctype_size(t) != 0)
    return -EINVAL;
  if (offset > m->h->size || n > (m->h->size - offset) / lmp_ctype_size(t))
    return -ERANGE;
  return lmp_array_view(m->seg, BLOCK_OFFSET + offset, t, n, out);
}

size_t lmp_shmem_view_offset(const lmp_array_t *view)
{
  return lmp_array_offset(view) - BLOCK_OFFSET;
}

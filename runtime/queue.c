/*
 * queue.c -- a multi-producer, multi-consumer message queue in shared memory
 * (lmp.Queue, JoinableQueue, SimpleQueue).
 *
 * Layout.  The queue's segment holds a header and then a byte ring whose
 * size is a power of two.  The header has a robust process-shared mutex,
 * three condition variables (not_empty, not_full, all_done), maxsize, the
 * closed flag and the state proper: a head word and a tail word, each a
 * monotonically increasing byte offset (the ring position is offset & mask,
 * so "full" and "empty" need no spare slot) packed with a record count, and
 * a count of task_done calls.  The lock and those words share one cache
 * line, so a put or a get moves one line of header between processes.
 *
 * Records.  A record is a u32 payload length, u32 flags and the payload,
 * padded to 8 bytes so headers never straddle the wrap point; a payload that
 * does is copied in two parts.  A payload larger than an eighth of the
 * initial ring is written once into a segment of its own, outside the lock,
 * and the ring carries only that segment's length and name (REC_SPILL).  The
 * segment is pinned while its name travels; the reader attaches it adopting
 * the pin, copies the payload out and releases it, which unlinks it.
 *
 * Growth.  maxsize bounds messages, not bytes, so a put that finds the ring
 * too full grows it instead of waiting: a ring twice as large (or more) is
 * made in a segment of its own, the records are copied to the same offsets
 * modulo the new size -- the head and tail words stay as they are -- and the
 * new ring is published in one store of a generation number.  Every process
 * checks the generation under the lock before touching the ring and maps the
 * new one when it changed.  The header keeps a pin on the current ring (the
 * name in the header is a handle in flight), dropped when the ring is
 * replaced or when the last holder of the queue lets it go.  Rings never
 * shrink; the ring first built into the queue's segment is given back to the
 * system when it is replaced.
 *
 * Crash safety.  A producer writes its record into free space and makes it
 * visible afterwards with one 64-bit store: the tail word packs the tail
 * offset with the number of records ever put, so a record's bytes, the
 * message count and the unfinished-task count all change at once.  A get
 * consumes with one store to the head word, task_done with one store to the
 * done count, growth publishes with one store.  A holder SIGKILLed anywhere
 * leaves either the old state or the new one, never a mix, so a lock taken
 * over with -EOWNERDEAD needs no repair and a record exists whole or not at
 * all.  (What a killed process had created and not yet published -- a spill,
 * a ring -- is given back when it is reaped: see the holdings in segment.c.)
 * The last holder of a queue gives back what its unread messages hold.
 *
 * Consumers that must not lose a message.  lmp_queue_get_hook runs a
 * caller's hook under the lock just before the commit, with the record's
 * sequence number (records taken before it).  A pool worker publishes there
 * which task it took, so the task is at every instant either in the ring or
 * in the worker's slot: a worker killed between the two stores leaves its
 * slot naming a task that is still queued, which errs on the safe side.
 *
 * Speed.  Both sides spin briefly on the words (without the lock) before
 * going to sleep, because a cross-process futex wake costs tens of
 * microseconds and a spinning hand-off well under one.  The steady state
 * allocates nothing (payloads land in the caller's lmp_buf_t) and touches a
 * condition variable only when someone waits on it, so it makes no system
 * call and no extra atomic operation per message.
 */
#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include "lmp/mutex.h"
#include "lmp/queue.h"

#include "internal.h"

#define QUEUE_MAGIC 0x51504d4cu /* "LMPQ" */
#define QUEUE_VERSION 2u
#define REC_SPILL 1u
#define REC_HEADER 8
#define MIN_CAPACITY 1024u        /* always room for a spill record */
#define MAX_CAPACITY (1ull << 32) /* see the head and tail words below */
#define SPIN_NS 20000             /* see "Speed" above */
#define SPIN_PAUSE_NS 5000        /* then sched_yield */
#define SPIN_CHECK 16             /* checks between two clock reads */

/*
 * The head and tail words: a byte offset in the high 34 bits (a ring is at
 * most 2^32 bytes, so offsets modulo 2^34 still order correctly) and a count
 * of records in the low 30 bits (a ring holds at most 2^29 records).
 * Messages queued = tail count - head count; unfinished tasks = tail count -
 * done, all modulo 2^30.
 */
#define CNT_BITS 30
#define CNT_MASK ((UINT64_C(1) << CNT_BITS) - 1)
#define OFF_MASK ((UINT64_C(1) << (64 - CNT_BITS)) - 1)

/* Where the ring is: an empty name is the ring inside the queue segment. */
struct ringdesc {
  uint64_t capacity;
  char name[LMP_SEG_NAME_MAX];
};

struct qhdr {
  /* Read-mostly: set up once, or changed by waiters, close and growth. */
  _Atomic uint32_t magic; /* written last by create */
  uint32_t version;
  uint64_t maxsize;    /* messages; 0 = unbounded */
  uint64_t inline_max; /* larger payloads spill */
  uint64_t first_cap;  /* the ring inside this segment */
  lmp_cond_t not_empty, not_full, all_done;
  _Atomic uint32_t closed;
  _Atomic uint32_t gen; /* ring generation: desc[gen & 1] is current */
  struct ringdesc desc[2];
  /* The hot line: the lock and the words every put and get changes. */
  _Alignas(64) lmp_mutex_t lock;
  _Atomic uint64_t tailw, headw;
  _Atomic uint64_t done; /* task_done calls, modulo 2^30 */
};

#define RING_OFFSET ((sizeof(struct qhdr) + 63) & ~(size_t)63)
_Static_assert(sizeof(lmp_mutex_t) + 24 <= 64, "the hot words share the lock's line");

struct lmp_queue {
  struct qhdr *h;
  lmp_seg_t *seg;
  char *ring;    /* the ring of generation `gen`, as mapped here */
  uint64_t mask; /* its capacity - 1 */
  uint32_t gen;
  lmp_seg_t *ring_seg; /* NULL while the ring is the one inside seg */
};

struct rec {
  uint32_t len;
  uint32_t flags;
};

/* A payload written to a segment of its own; body is what the ring carries. */
struct spill {
  lmp_seg_t *seg;
  size_t body_len;
  char body[8 + LMP_SEG_NAME_MAX];
};

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)
#define STORE(x, v) atomic_store_explicit(&(x), (v), memory_order_release)

static uint64_t rec_size(size_t len)
{
  return REC_HEADER + (((uint64_t)len + 7) & ~(uint64_t)7);
}

static int expired(int64_t deadline)
{
  return deadline != LMP_FOREVER && lmp_now_ns() >= deadline;
}

static uint64_t w_off(uint64_t w)
{
  return w >> CNT_BITS;
}

static uint64_t w_cnt(uint64_t w)
{
  return w & CNT_MASK;
}

static uint64_t w_make(uint64_t off, uint64_t cnt)
{
  return (off & OFF_MASK) << CNT_BITS | (cnt & CNT_MASK);
}

/* === the lock === */

/* -EOWNERDEAD needs nothing: every change is a single store (see above). */
static int qlock(struct qhdr *h)
{
  int rc = lmp_mutex_lock(&h->lock, LMP_FOREVER);
  return rc == -EOWNERDEAD ? 0 : rc;
}

/* 0 (woken; recheck), -ETIMEDOUT, -EINTR (interrupted: the caller gives
 * up as for a timeout); the lock is held on return either way. */
static int qwait(struct qhdr *h, lmp_cond_t *c, int64_t deadline)
{
  int rc = lmp_cond_wait(c, &h->lock, deadline);
  return rc == -ETIMEDOUT || rc == -EINTR ? rc : 0;
}

/*
 * Does anyone wait on c?  Read with the lock held: a waiter registers in
 * `waiters` before it releases the lock, so a zero here means nobody can be
 * waiting for the change just made.  Skipping lmp_cond_signal then saves a
 * locked instruction on a shared cache line for every message.
 */
static int has_waiters(const lmp_cond_t *c)
{
  return __atomic_load_n(&c->waiters, __ATOMIC_RELAXED) != 0;
}

/* === the words === */

/*
 * Messages queued, ring bytes in use, tasks unfinished.  Exact under the
 * lock; without it (spinners, qsize) the head word is read first, so an
 * answer may be stale but never below zero.
 */
static uint64_t count_of(const struct qhdr *h)
{
  uint64_t hw = LOAD(h->headw), tw = LOAD(h->tailw);
  return (w_cnt(tw) - w_cnt(hw)) & CNT_MASK;
}

static uint64_t used_of(const struct qhdr *h)
{
  uint64_t hw = LOAD(h->headw), tw = LOAD(h->tailw);
  return (w_off(tw) - w_off(hw)) & OFF_MASK;
}

static uint64_t unfinished_of(const struct qhdr *h)
{
  return (w_cnt(LOAD(h->tailw)) - LOAD(h->done)) & CNT_MASK;
}

/* What a spinner waits for: a message, or (put) a free slot. */
static int ready(const struct qhdr *h, int put)
{
  return put ? count_of(h) < h->maxsize : count_of(h) != 0;
}

/*
 * Wait without the lock until ready() or close, for SPIN_NS at most: first
 * with pause (a hand-off between two running processes), then with
 * sched_yield, so that a peer waiting for our CPU gets to make the progress
 * we wait for.  Never when the deadline has passed: that call must not wait.
 */
static void spin(const struct qhdr *h, int put, int64_t deadline)
{
  if (expired(deadline))
    return;
  int64_t start = lmp_now_ns(), now = start;
  for (int i = 1; !ready(h, put) && !LOAD(h->closed); i++) {
    if (now - start < SPIN_PAUSE_NS)
      lmp__cpu_relax();
    else
      sched_yield();
    if (i % SPIN_CHECK == 0 && (now = lmp_now_ns()) - start >= SPIN_NS)
      return;
  }
}

/* === the ring === */

static void ring_write(lmp_queue_t *q, uint64_t off, const void *src, size_t n)
{
  if (n == 0)
    return; /* src may be NULL */
  size_t pos = (size_t)(off & q->mask);
  size_t first = q->mask + 1 - pos;
  if (first >= n) {
    memcpy(q->ring + pos, src, n);
    return;
  }
  memcpy(q->ring + pos, src, first);
  memcpy(q->ring, (const char *)src + first, n - first);
}

static void ring_read(lmp_queue_t *q, uint64_t off, void *dst, size_t n)
{
  if (n == 0)
    return; /* dst may be NULL */
  size_t pos = (size_t)(off & q->mask);
  size_t first = q->mask + 1 - pos;
  if (first >= n) {
    memcpy(dst, q->ring + pos, n);
    return;
  }
  memcpy(dst, q->ring + pos, first);
  memcpy((char *)dst + first, q->ring, n - first);
}

static char *first_ring(const struct qhdr *h)
{
  return (char *)h + RING_OFFSET;
}

/* Map the current ring if it changed since this handle last looked (lock
 * held).  The check is one load of a line nobody writes in steady state. */
static int ring_sync(lmp_queue_t *q)
{
  uint32_t gen = LOAD(q->h->gen);
  if (gen == q->gen && q->ring)
    return 0;
  const struct ringdesc *d = &q->h->desc[gen & 1];
  lmp_seg_t *s = NULL;
  char *ring = first_ring(q->h);
  if (d->name[0]) {
    char name[LMP_SEG_NAME_MAX];
    memcpy(name, d->name, sizeof name);
    name[sizeof name - 1] = '\0';
    int rc = lmp_seg_attach(name, 0, &s);
    if (rc < 0)
      return rc;
    if (lmp_seg_size(s) < d->capacity) {
      lmp_seg_release(s);
      return -EINVAL;
    }
    ring = lmp_seg_data(s);
  }
  if (q->ring_seg)
    lmp_seg_release(q->ring_seg);
  q->ring_seg = s;
  q->ring = ring;
  q->mask = d->capacity - 1;
  q->gen = gen;
  return 0;
}

/* Give up the header's pin on a ring this process maps: attaching with
 * adopt takes the pin over, releasing drops it. */
static void unpin_ring(lmp_seg_t *ring)
{
  lmp_seg_t *s;
  if (lmp_seg_attach(lmp_seg_name(ring), 1, &s) == 0)
    lmp_seg_release(s);
}

/* The first ring is never used again once replaced: return its pages. */
static void discard_first_ring(struct qhdr *h)
{
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t start = ((uintptr_t)first_ring(h) + page - 1) & ~(page - 1);
  uintptr_t end = ((uintptr_t)first_ring(h) + h->first_cap) & ~(page - 1);
  if (end > start)
    (void)madvise((void *)start, end - start, MADV_REMOVE);
}

/* Copy the live bytes [head, tail) to the same offsets in a larger ring. */
static void copy_live(const lmp_queue_t *q, char *to, uint64_t to_mask)
{
  uint64_t off = w_off(LOAD(q->h->headw)), end = off + used_of(q->h);
  while (off < end) {
    uint64_t from_pos = off & q->mask, to_pos = off & to_mask;
    uint64_t n = end - off;
    if (n > q->mask + 1 - from_pos)
      n = q->mask + 1 - from_pos;
    if (n > to_mask + 1 - to_pos)
      n = to_mask + 1 - to_pos;
    memcpy(to + to_pos, q->ring + from_pos, (size_t)n);
    off += n;
  }
}

/*
 * Replace the ring (lock held, handle in sync) by one with room for `need`
 * more bytes.  0, -ENOMEM past MAX_CAPACITY, or the error of making the
 * segment.  Publishing is the one store to gen; a grower killed before it
 * leaves the old ring in place.
 */
static int grow(lmp_queue_t *q, uint64_t need)
{
  struct qhdr *h = q->h;
  uint64_t used = used_of(h), cap = (q->mask + 1) * 2;
  while (cap - used < need && cap <= MAX_CAPACITY)
    cap *= 2;
  if (cap > MAX_CAPACITY)
    return -ENOMEM;
  lmp_seg_t *s;
  int rc = lmp_seg_create((size_t)cap, &s);
  if (rc < 0)
    return rc;
  copy_live(q, lmp_seg_data(s), cap - 1);
  lmp_seg_pin(s); /* the header's reference */
  uint32_t gen = q->gen + 1;
  struct ringdesc *d = &h->desc[gen & 1];
  d->capacity = cap;
  memset(d->name, 0, sizeof d->name);
  strncpy(d->name, lmp_seg_name(s), sizeof d->name - 1);
  STORE(h->gen, gen);
  if (q->ring_seg) {
    unpin_ring(q->ring_seg);
    lmp_seg_release(q->ring_seg);
  } else {
    discard_first_ring(h);
  }
  q->ring_seg = s; /* the reference from create becomes this handle's */
  q->ring = lmp_seg_data(s);
  q->mask = cap - 1;
  q->gen = gen;
  return 0;
}

/* === create, open, free === */

static size_t round_capacity(size_t cap)
{
  size_t c = MIN_CAPACITY;
  while (c < cap)
    c <<= 1;
  return c;
}

static int handle_new(lmp_seg_t *seg, lmp_queue_t **out)
{
  lmp_queue_t *q = calloc(1, sizeof *q);
  if (!q)
    return -ENOMEM;
  q->seg = seg;
  q->h = lmp_seg_data(seg);
  *out = q;
  return 0;
}

static void header_init(struct qhdr *h, size_t maxsize, size_t cap)
{
  h->version = QUEUE_VERSION;
  h->maxsize = maxsize;
  h->inline_max = cap / 8;
  h->first_cap = cap;
  h->desc[0].capacity = cap;
  lmp_cond_init(&h->not_empty);
  lmp_cond_init(&h->not_full);
  lmp_cond_init(&h->all_done);
}

int lmp_queue_create(size_t maxsize, size_t capacity, lmp_queue_t **out)
{
  lmp_seg_t *seg = NULL;
  if (capacity > MAX_CAPACITY)
    return -EINVAL;
  size_t cap = round_capacity(capacity ? capacity : LMP_QUEUE_DEFAULT_CAPACITY);
  int rc = lmp_seg_create(RING_OFFSET + cap, &seg);
  if (rc < 0)
    return rc;
  struct qhdr *h = lmp_seg_data(seg);
  if ((rc = lmp_mutex_init(&h->lock)) < 0)
    goto err;
  header_init(h, maxsize, cap);
  STORE(h->magic, QUEUE_MAGIC);
  if ((rc = handle_new(seg, out)) < 0)
    goto err;
  (*out)->ring = first_ring(h);
  (*out)->mask = cap - 1;
  return 0;
err:
  lmp_seg_release(seg);
  return rc;
}

static int header_valid(const struct qhdr *h, size_t size)
{
  uint64_t cap = h->first_cap;
  return size >= RING_OFFSET &&
         atomic_load_explicit(&h->magic, memory_order_acquire) == QUEUE_MAGIC &&
         h->version == QUEUE_VERSION && cap >= MIN_CAPACITY && !(cap & (cap - 1)) &&
         cap <= size - RING_OFFSET;
}

int lmp_queue_open(lmp_seg_t *seg, lmp_queue_t **out)
{
  struct qhdr *h = lmp_seg_data(seg);
  lmp_queue_t *q;
  if (!header_valid(h, lmp_seg_size(seg)))
    return -EINVAL;
  int rc = handle_new(seg, &q);
  if (rc < 0)
    return rc;
  lmp_seg_retain(seg);
  if ((rc = qlock(h)) == 0) {
    rc = ring_sync(q);
    lmp_mutex_unlock(&h->lock);
  }
  if (rc < 0) {
    lmp_queue_free(q);
    return rc;
  }
  *out = q;
  return 0;
}

/* The last holder lets go of the messages nobody will read: `fn` sees each
 * payload (so the host can give back the pins of the handles it carries),
 * and a spilled payload's own segment goes with its pin.  Lock held. */
static void drop_unread(lmp_queue_t *q, lmp_queue_unread_fn fn, void *ctx)
{
  struct qhdr *h = q->h;
  char body[8 + LMP_SEG_NAME_MAX + 1];
  lmp_seg_t *s;
  uint64_t len;
  struct rec r;
  void *tmp;

  while (count_of(h) > 0) {
    uint64_t hw = LOAD(h->headw), head = w_off(hw);
    memcpy(&r, q->ring + (head & q->mask), sizeof r);
    if (rec_size(r.len) > used_of(h))
      break; /* a damaged ring: what is left stays for the root's cleanup */
    if ((r.flags & REC_SPILL) && r.len >= 8 && r.len <= 8 + LMP_SEG_NAME_MAX) {
      ring_read(q, head + REC_HEADER, body, r.len);
      body[r.len] = '\0';
      memcpy(&len, body, 8);
      if (lmp_seg_attach(body + 8, 1, &s) == 0) {
        if (fn && lmp_seg_size(s) >= len)
          fn(ctx, lmp_seg_data(s), (size_t)len);
        lmp_seg_release(s);
      }
    } else if (!(r.flags & REC_SPILL) && fn && (tmp = malloc(r.len ? r.len : 1)) != NULL) {
      ring_read(q, head + REC_HEADER, tmp, r.len);
      fn(ctx, tmp, r.len);
      free(tmp);
    }
    STORE(h->headw, w_make(head + rec_size(r.len), w_cnt(hw) + 1));
  }
}

/*
 * The last holder of a queue also gives up the header's pin on a grown
 * ring, or the ring would outlive the queue until the root exits, and what
 * the unread messages hold.  "Last" is this process's last reference to the
 * header's segment (each handle holds one; a grown ring is a segment of its
 * own) while no other process (and no handle in flight) holds it; two last
 * holders leaving at the same instant may both miss it, which the root's
 * cleanup then covers.
 */
void lmp_queue_free_unread(lmp_queue_t *q, lmp_queue_unread_fn fn, void *ctx)
{
  if (!q)
    return;
  if (lmp_seg_local(q->seg) == 1 && lmp__seg_refs(q->seg) == 1 && qlock(q->h) == 0) {
    if (ring_sync(q) == 0) {
      drop_unread(q, fn, ctx);
      if (q->ring_seg)
        unpin_ring(q->ring_seg);
    }
    lmp_mutex_unlock(&q->h->lock);
  }
  if (q->ring_seg)
    lmp_seg_release(q->ring_seg);
  lmp_seg_release(q->seg);
  free(q);
}

void lmp_queue_free(lmp_queue_t *q)
{
  lmp_queue_free_unread(q, NULL, NULL);
}

lmp_seg_t *lmp_queue_seg(lmp_queue_t *q)
{
  return q->seg;
}

/* === spilled payloads === */

/* The payload of a put: the parts of an iovec, one after the other. */
struct parts {
  const struct iovec *iov;
  int n;
  size_t len;
};

static void parts_copy(const struct parts *ps, char *dst)
{
  for (int i = 0; i < ps->n; i++) {
    if (ps->iov[i].iov_len == 0)
      continue; /* iov_base may be NULL */
    memcpy(dst, ps->iov[i].iov_base, ps->iov[i].iov_len);
    dst += ps->iov[i].iov_len;
  }
}

static int spill_make(struct spill *sp, const struct parts *ps)
{
  size_t len = ps->len;
  int rc = lmp_seg_create(len ? len : 1, &sp->seg);
  if (rc < 0)
    return rc;
  parts_copy(ps, lmp_seg_data(sp->seg));
  const char *name = lmp_seg_name(sp->seg);
  size_t n = strnlen(name, LMP_SEG_NAME_MAX);
  uint64_t len64 = len;
  memcpy(sp->body, &len64, 8);
  memcpy(sp->body + 8, name, n);
  sp->body_len = 8 + n;
  return 0;
}

/* The reader's half: adopt the pin, copy out, release (the last reference,
 * so the segment is unlinked).  buf is already large enough. */
static int spill_take(const char *body, size_t body_len, lmp_buf_t *buf)
{
  char name[LMP_SEG_NAME_MAX + 1];
  uint64_t len;
  lmp_seg_t *seg;
  memcpy(&len, body, 8);
  memcpy(name, body + 8, body_len - 8);
  name[body_len - 8] = '\0';
  int rc = lmp_seg_attach(name, 1, &seg);
  if (rc < 0)
    return rc;
  if (lmp_seg_size(seg) < len) {
    rc = -EBADMSG;
  } else {
    memcpy(buf->data, lmp_seg_data(seg), (size_t)len);
    buf->len = (size_t)len;
  }
  lmp_seg_release(seg);
  return rc;
}

/* === put === */

static void write_record(lmp_queue_t *q, const struct parts *ps, uint32_t flags)
{
  struct qhdr *h = q->h;
  uint64_t tw = LOAD(h->tailw), off = w_off(tw), at = off + REC_HEADER;
  struct rec r = {(uint32_t)ps->len, flags};
  memcpy(q->ring + (off & q->mask), &r, sizeof r);
  for (int i = 0; i < ps->n; i++) {
    ring_write(q, at, ps->iov[i].iov_base, ps->iov[i].iov_len);
    at += ps->iov[i].iov_len;
  }
  STORE(h->tailw, w_make(off + rec_size(ps->len), w_cnt(tw) + 1)); /* the commit */
}

/* Wait (lock held) until the record may go in and the ring has room for
 * it, growing the ring if need be.  0, -EPIPE, -ETIMEDOUT, -EINTR, -ENOMEM. */
static int wait_room(lmp_queue_t *q, uint64_t need, int64_t deadline)
{
  struct qhdr *h = q->h;
  int timed_out = 0, rc;
  for (;;) {
    if (LOAD(h->closed))
      return -EPIPE;
    if (!h->maxsize || count_of(h) < h->maxsize) {
      if ((rc = ring_sync(q)) < 0)
        return rc;
      if (q->mask + 1 - used_of(h) >= need)
        return 0;
      if ((rc = grow(q, need)) < 0)
        return rc;
      continue;
    }
    if (timed_out || expired(deadline))
      return -ETIMEDOUT;
    if ((rc = qwait(h, &h->not_full, deadline)) == -EINTR)
      return rc;
    timed_out = rc == -ETIMEDOUT;
  }
}

int lmp_queue_put(lmp_queue_t *q, const void *data, size_t len, int64_t deadline)
{
  struct iovec iov = {(void *)data, len};
  return lmp_queue_putv(q, &iov, 1, deadline);
}

int lmp_queue_putv(lmp_queue_t *q, const struct iovec *iov, int iovcnt, int64_t deadline)
{
  struct qhdr *h = q->h;
  struct parts ps = {iov, iovcnt, 0};
  struct spill sp;
  int rc;
  for (int i = 0; i < iovcnt; i++) {
    if (iov[i].iov_len > SIZE_MAX - ps.len)
      return -ENOMEM;
    ps.len += iov[i].iov_len;
  }
  sp.seg = NULL;
  if (ps.len > h->inline_max && (rc = spill_make(&sp, &ps)) < 0)
    return rc;
  if (h->maxsize && !ready(h, 1))
    spin(h, 1, deadline);
  if ((rc = qlock(h)) < 0)
    goto err;
  if ((rc = wait_room(q, rec_size(sp.seg ? sp.body_len : ps.len), deadline)) < 0) {
    lmp_mutex_unlock(&h->lock);
    goto err;
  }
  if (sp.seg) {
    struct iovec body = {sp.body, sp.body_len};
    struct parts bp = {&body, 1, sp.body_len};
    lmp_seg_pin(sp.seg);
    write_record(q, &bp, REC_SPILL);
  } else {
    write_record(q, &ps, 0);
  }
  int wake = has_waiters(&h->not_empty);
  lmp_mutex_unlock(&h->lock);
  if (wake)
    lmp_cond_signal(&h->not_empty, 1);
  if (sp.seg)
    lmp_seg_release(sp.seg); /* the pin keeps it for the reader */
  return 0;
err:
  if (sp.seg)
    lmp_seg_release(sp.seg); /* never pinned: this unlinks it */
  return rc;
}

/* === get === */

/* Wait (lock held) for a message: 0, -EPIPE (closed and drained), -ETIMEDOUT,
 * -EINTR. */
static int wait_message(struct qhdr *h, int64_t deadline)
{
  int timed_out = 0, rc;
  for (;;) {
    if (count_of(h))
      return 0;
    if (LOAD(h->closed))
      return -EPIPE;
    if (timed_out || expired(deadline))
      return -ETIMEDOUT;
    if ((rc = qwait(h, &h->not_empty, deadline)) == -EINTR)
      return rc;
    timed_out = rc == -ETIMEDOUT;
  }
}

/*
 * Take the record at head (lock held).  An inline payload is copied into
 * buf; a spilled one leaves its ring body in `body` for spill_take after the
 * unlock.  The space the payload needs is reserved before the record is
 * consumed, so -ENOMEM leaves the message in the queue.
 */
static int take_record(lmp_queue_t *q, lmp_buf_t *buf, char *body, size_t *body_len,
                       lmp_queue_hook_fn taken, void *arg)
{
  struct qhdr *h = q->h;
  int rc = ring_sync(q);
  if (rc < 0)
    return rc;
  uint64_t hw = LOAD(h->headw), head = w_off(hw);
  struct rec r;
  uint64_t len;
  memcpy(&r, q->ring + (head & q->mask), sizeof r);
  uint64_t used = used_of(h);
  if (rec_size(r.len) > used || (count_of(h) == 1 && rec_size(r.len) != used)) {
    /* A header that does not fit what was written: only a stray write into
     * the ring does that.  Nothing queued can be found any more; drop it
     * all, which also puts the ring back in step for the next put. */
    STORE(h->headw, LOAD(h->tailw));
    return -EBADMSG;
  }
  if (r.flags & REC_SPILL) {
    if (r.len < 8 || r.len > 8 + LMP_SEG_NAME_MAX) {
      /* Cannot happen short of memory corruption; drop the record rather
       * than fail every later get on it. */
      STORE(h->headw, w_make(head + rec_size(r.len), w_cnt(hw) + 1));
      return -EBADMSG;
    }
    ring_read(q, head + REC_HEADER, body, r.len);
    memcpy(&len, body, 8);
    *body_len = r.len;
  } else {
    len = r.len;
  }
  if (len > SIZE_MAX || lmp_buf_reserve(buf, (size_t)len) < 0)
    return -ENOMEM;
  if (!(r.flags & REC_SPILL)) {
    ring_read(q, head + REC_HEADER, buf->data, r.len);
    buf->len = r.len;
  }
  if (taken)
    taken(arg, (uint32_t)w_cnt(hw));
  STORE(h->headw, w_make(head + rec_size(r.len), w_cnt(hw) + 1)); /* the commit */
  return 0;
}

int lmp_queue_get(lmp_queue_t *q, lmp_buf_t *buf, int64_t deadline)
{
  return lmp_queue_get_hook(q, buf, deadline, NULL, NULL);
}

int lmp_queue_get_hook(lmp_queue_t *q, lmp_buf_t *buf, int64_t deadline, lmp_queue_hook_fn taken,
                       void *arg)
{
  struct qhdr *h = q->h;
  char body[8 + LMP_SEG_NAME_MAX];
  size_t body_len = 0;
  buf->len = 0;
  if (!ready(h, 0))
    spin(h, 0, deadline);
  int rc = qlock(h);
  if (rc < 0)
    return rc;
  if ((rc = wait_message(h, deadline)) < 0 ||
      (rc = take_record(q, buf, body, &body_len, taken, arg)) < 0) {
    lmp_mutex_unlock(&h->lock);
    if (rc == -ENOMEM || rc == -EINTR)
      lmp_cond_signal(&h->not_empty, 1); /* we may have taken another's wake-up */
    return rc;
  }
  int wake = has_waiters(&h->not_full);
  lmp_mutex_unlock(&h->lock);
  if (wake)
    lmp_cond_broadcast(&h->not_full);
  return body_len ? spill_take(body, body_len, buf) : 0;
}

/* === state, close, tasks === */

size_t lmp_queue_qsize(lmp_queue_t *q)
{
  return (size_t)count_of(q->h);
}

size_t lmp_queue_maxsize(lmp_queue_t *q)
{
  return (size_t)q->h->maxsize;
}

int lmp_queue_closed(lmp_queue_t *q)
{
  return LOAD(q->h->closed) != 0;
}

void lmp_queue_close(lmp_queue_t *q)
{
  struct qhdr *h = q->h;
  if (qlock(h) < 0)
    return;
  STORE(h->closed, 1);
  lmp_mutex_unlock(&h->lock);
  lmp_cond_broadcast(&h->not_empty);
  lmp_cond_broadcast(&h->not_full);
  lmp_cond_broadcast(&h->all_done);
}

int lmp_queue_task_done(lmp_queue_t *q)
{
  struct qhdr *h = q->h;
  int rc = qlock(h);
  if (rc < 0)
    return rc;
  uint64_t left = unfinished_of(h);
  if (left == 0) {
    lmp_mutex_unlock(&h->lock);
    return -EINVAL;
  }
  STORE(h->done, (LOAD(h->done) + 1) & CNT_MASK);
  int wake = left == 1 && has_waiters(&h->all_done);
  lmp_mutex_unlock(&h->lock);
  if (wake)
    lmp_cond_broadcast(&h->all_done);
  return 0;
}

int lmp_queue_join(lmp_queue_t *q, int64_t deadline)
{
  struct qhdr *h = q->h;
  int timed_out = 0;
  int rc = qlock(h);
  if (rc < 0)
    return rc;
  while (unfinished_of(h)) {
    if (timed_out || expired(deadline)) {
      rc = -ETIMEDOUT;
      break;
    }
    if ((rc = qwait(h, &h->all_done, deadline)) == -EINTR)
      break;
    timed_out = rc == -ETIMEDOUT;
    rc = 0;
  }
  lmp_mutex_unlock(&h->lock);
  return rc;
}

/*
 * pool.c -- a pool of worker processes over byte payloads (lmp.Pool's core).
 *
 * Shape.  Three shared segments: a ring of tasks (parent -> workers), a ring
 * of replies (workers -> parent), both lmp_queue, and a header with one slot
 * per worker.  Workers pull, so a free worker takes the next task and the
 * load balances itself.  The parent keeps a local backlog (payloads in one
 * arena, no allocation per task) and hands tasks to the task ring only while
 * fewer than `high` wait there.  `high` is high_water, or as many as the
 * claim words allow (CLAIMS) within about RING_BUDGET bytes of payloads
 * (judged by their average size, and at least QUEUED_MIN per worker): what
 * is in the ring runs while the parent is away from the pool, so a program
 * that submits and then computes keeps its workers busy.  A task can be
 * cancelled in the backlog, or in the ring until a worker takes it: the two
 * race on the record's claim word, and one wins.
 *
 * Nothing is ever lost.  A worker takes a task with lmp_queue_get_hook and
 * writes "busy with record seq" into its slot under the ring's lock, just
 * before the record leaves the ring; it writes its reply to the reply ring
 * before it marks itself idle.  So a task is always in the ring, in a slot,
 * or answered.  The parent numbers the records it pushes (seq) and keeps the
 * task id of each record not yet answered (the `sent` window).  When a
 * worker dies, its slot names its task; the task fails once the parent has
 * read every reply that was in the ring at the death (`verdict_at`, counted in
 * replies read), because the worker may have answered just before dying.
 *
 * Deaths, timeouts, wake-ups.  The parent never uses threads or signal
 * handlers.  It learns of deaths from the workers' pidfds, checked at most
 * every CHECK_NS while it is busy and whenever its sleep ends on one.  A task past
 * task_timeout (counted from the start time in its slot, which a worker may
 * renew per item) is killed with SIGKILL and fails as TIMEOUT when its worker
 * is reaped.  To sleep, the parent polls one epoll descriptor (lmp_pool_fd)
 * holding an eventfd, the pidfds and, with a task timeout, a timerfd set to
 * the earliest deadline.  A worker writes the eventfd after a reply only if
 * the parent has cleared the shared `signalled` flag since the last write,
 * which it does only on its way to sleep (or to report "nothing yet"): in
 * steady state a reply costs no system call at all.  Idle workers do not
 * all spin on the task ring: one spins, the others sleep on a futex word the
 * parent bumps per task and wakes only when no spinner will take the task.
 * Both sides spin for a budget that adapts to how often spinning paid
 * (adapt_spin), so hand-offs take a microsecond on idle CPUs and nobody
 * burns a CPU another process needs when they are busy.
 *
 * Counters and observers.  The header carries all the counters: the
 * workers count their replies in their slots, and the parent publishes
 * what only it knows (its backlog, deaths, restarts) as it changes.  Its
 * own stats and a process outside the family (lmp top) read them the same
 * way (read_counts), so the two agree, and both are current while the
 * parent is away from the pool.  Each slot has the id of its task; the
 * pool is listed in a registry of the family's pools (see the end of this
 * file).
 *
 * Start-up failures.  A worker that fails its initializer reports it
 * (lmp_pool_worker_fail_init); one that exits before it took its first task
 * is treated the same way, and so is the third in a row killed by a signal
 * while starting.  Either breaks the pool: the workers are killed and never
 * replaced, so a bad initializer cannot fork forever.
 */
#include "lmp/pool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "lmp/mutex.h"
#include "lmp/proc.h"
#include "lmp/queue.h"
#include "lmp/runtime.h"
#include "lmp/segment.h"

#include "internal.h"

#define POOL_MAGIC 0x4c4f4f50u             /* "POOL" */
#define CHECK_NS 1000000                   /* deaths and timeouts, while busy */
#define SPIN_MAX_NS 40000                  /* the most a waiter spins before sleeping ... */
#define SPIN_START_NS 10000                /* ... where it starts; see adapt_spin */
#define SPIN_PAUSE_NS 4000                 /* then sched_yield */
#define SEQ_MASK ((UINT64_C(1) << 30) - 1) /* the ring numbers records modulo 2^30 */
#define MAX_PARTS 7
#define START_DEATHS_MAX 3        /* workers killed while starting, in a row, that break the pool */
#define RING_BUDGET (16u << 20)   /* payload bytes the ring holds, about, when high_water is 0 */
#define QUEUED_MIN 16             /* tasks per worker the ring may hold, at least */
#define CLAIMS 4096               /* records in the task ring at most (see claim) */
#define REAP_GRACE_NS 100000000LL /* how long freeing a pool waits for its killed workers */

#define RATE_SAMPLES 16           /* the rate is taken over samples of the event count ... */
#define RATE_EVERY_NS 500000000LL /* ... this far apart ... */
#define RATE_SPAN_NS 5000000000LL /* ... reaching this far back */

enum { R_DONE = 1, R_INIT_FAILED = 2 };

/* === shared memory === */

/* A worker's slot.  `word` packs the state with the 30-bit number of the
 * record being run, so one store publishes both. */
struct slot {
  _Atomic uint64_t word; /* state << 32 | seq */
  _Atomic int64_t start_ns;
  _Atomic int32_t pid;
  _Atomic uint32_t item;
  _Atomic uint64_t done, failed;
  _Atomic uint64_t task; /* the id of the task taken last, for observers */
  char pad[64 - 48];
};
_Static_assert(sizeof(struct slot) == 64, "one line per slot");

struct phdr {
  uint32_t magic;
  uint32_t nslots;
  uint32_t maxtasks; /* the config, for workers that attach (lmp_pool_worker_attach) */
  uint32_t timed;
  uint64_t max_memory;
  _Alignas(64) _Atomic uint32_t signalled; /* the eventfd was written since the parent cleared it */
  /* Idle workers: tasks pushed (the futex word), workers spinning, asleep. */
  _Alignas(64) _Atomic uint32_t tseq;
  _Atomic uint32_t spinners, sleepers;
  _Atomic uint32_t waking; /* a woken worker has not come up yet */

  _Atomic uint64_t recycled; /* workers that retired for max_memory */
  _Atomic uint64_t taken;    /* records workers took off the task ring */
  /* The slot counters of workers replaced: with the slots', every reply
   * any worker of the pool sent (read_counts). */
  _Atomic uint64_t retired_done, retired_failed;
  /* What only the parent knows, published as it changes: tasks in its
   * backlog, records it pushed to the ring, tasks lost or timed out,
   * workers forked to replace others. */
  _Alignas(64) _Atomic uint64_t pub_backlog, pub_pushed, pub_failed, pub_restarts;
  _Atomic uint64_t pub_rate; /* events per second, times 1000 */
  /* claim[seq % CLAIMS]: who has record seq while it is in the ring or has
   * just left it.  A worker taking it swaps in TAKEN, the parent cancelling
   * it swaps in CANCELLED only if no worker did: exactly one of them wins.
   * The ring never holds more than CLAIMS records, so a record's entry is
   * not reused while it is there. */
  _Atomic uint64_t claim[CLAIMS];
  _Alignas(64) struct slot slots[];
};

/* Record headers: what a task or a reply carries before its payload. */
struct thdr {
  uint32_t tag;
  uint32_t pad;
  uint64_t id;
};

struct rhdr {
  uint32_t seq;
  uint32_t kind;
  uint32_t status;
  int32_t pid;
};

enum { TAKEN = 1, CANCELLED = 2 };

static uint64_t claim_mark(uint32_t seq30, int who)
{
  return ((uint64_t)seq30 + 1) << 2 | (uint64_t)who;
}

static uint64_t slot_word(int state, uint64_t seq)
{
  return (uint64_t)state << 32 | (seq & SEQ_MASK);
}

/* === parent-side state === */

struct pend { /* a task in the backlog; its payload is in the arena */
  uint64_t id;
  uint32_t tag;
  int cancelled;
  size_t off, len;
};

struct sent { /* a task handed to the ring, by record number */
  uint64_t id;
  int final; /* answered or failed: no more events for it */
};

struct worker {
  lmp_proc_t *proc; /* NULL while the slot has no worker */
  pid_t pid;
  int64_t kill_seq; /* the record it was killed for (timeout), -1 if none */
};

struct verdict { /* a death whose task fails once the replies before it are read */
  uint64_t at;   /* when `consumed` reaches this */
  uint64_t seq;  /* the record it was running */
  pid_t pid;
  int exitcode;
  int timed_out;
  int starting; /* died before its first task: breaks the pool */
  uint32_t item;
};

struct lmp_pool {
  lmp_pool_config_t cfg;
  pid_t owner;
  struct lmp_pool *next; /* the pools of this process */
  lmp_seg_t *seg;
  struct phdr *h;
  lmp_queue_t *tasks, *replies;
  char names[3][LMP_SEG_NAME_MAX];
  int efd, epfd, tfd;
  int64_t timer_at; /* what tfd is set to, 0 when disarmed */
  struct worker *w;
  int closing, ring_closed, terminated, broken;
  /* ids and the backlog */
  uint64_t next_id;
  struct pend *bl;
  size_t bl_head, bl_n, bl_cap, bl_live;
  lmp_buf_t arena; /* the backlog's payloads, oldest first from arena_head */
  size_t arena_head;
  /* records handed to the ring: seq in [sent_lo, pushed) */
  struct sent *sent;
  uint64_t sent_lo, pushed, sent_cap;
  /* replies */
  lmp_buf_t rbuf;
  uint64_t consumed;
  struct verdict *vd;
  size_t nvd, vd_cap;
  lmp_pool_event_t *evq;
  size_t evq_head, evq_n, evq_cap;
  int64_t last_check;
  int64_t avg_len;  /* a moving average of the payloads' sizes */
  int64_t spin_ns;  /* how long to spin for a reply (adapt_spin) */
  int start_deaths; /* workers killed while starting since the last reply */
  int need_check;   /* a pidfd or the timer fired while asleep */
  uint32_t high;    /* tasks kept in the ring */
  int spawn_error;
  /* events counted now and then, for the rate (rate_sample) */
  struct {
    int64_t t;
    uint64_t n;
  } rs[RATE_SAMPLES];
  unsigned rs_head, rs_n;
  int listed; /* in the registry of pools */
};

struct lmp_pool_worker {
  lmp_pool_t *p; /* the owner's, or a minimal one made by lmp_pool_worker_attach */
  int index;
  struct slot *slot;
  lmp_buf_t buf;
  uint32_t seq;    /* of the task taken last */
  int64_t spin_ns; /* how long to spin for a task */
  pid_t pid;
  uint64_t count;
  int started;
  int skip; /* the record taken last was cancelled: take the next */
};

static lmp_pool_t *pools; /* of this process, so a new worker can close their descriptors */

/* === small helpers === */

#define LOAD(x) atomic_load_explicit(&(x), memory_order_acquire)
#define STORE(x, v) atomic_store_explicit(&(x), (v), memory_order_release)

static int grow_array(void **arr, size_t *cap, size_t need, size_t elem)
{
  if (need <= *cap)
    return 0;
  size_t n = *cap ? *cap : 16;
  while (n < need)
    n *= 2;
  void *a = realloc(*arr, n * elem);
  if (!a)
    return -ENOMEM;
  *arr = a;
  *cap = n;
  return 0;
}

static struct pend *bl_at(lmp_pool_t *p, size_t i)
{
  return &p->bl[(p->bl_head + i) & (p->bl_cap - 1)];
}

static struct sent *sent_at(lmp_pool_t *p, uint64_t seq)
{
  return &p->sent[seq & (p->sent_cap - 1)];
}

/* The full record number of a 30-bit one a worker published: the one in
 * the window [sent_lo, pushed), or UINT64_MAX. */
static uint64_t full_seq(lmp_pool_t *p, uint32_t seq30)
{
  uint64_t s = p->sent_lo + ((seq30 - p->sent_lo) & SEQ_MASK);
  return s < p->pushed ? s : UINT64_MAX;
}

/* Read a slot's word and start time as one consistent pair. */
static void slot_read(struct slot *s, uint64_t *word, int64_t *start)
{
  uint64_t w1, w2;
  do {
    w1 = LOAD(s->word);
    *start = LOAD(s->start_ns);
    w2 = LOAD(s->word);
  } while (w1 != w2);
  *word = w1;
}

static int slot_state(uint64_t word)
{
  return (int)(word >> 32);
}

/* Wake a sleeping parent, at most once per time it cleared the flag. */
static void notify(lmp_pool_t *p)
{
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_load_explicit(&p->h->signalled, memory_order_relaxed))
    return;
  if (atomic_exchange(&p->h->signalled, 1) == 0) {
    uint64_t one = 1;
    ssize_t r = write(p->efd, &one, sizeof one);
    (void)r; /* EAGAIN: the counter is saturated, so it is readable anyway */
  }
}

/* Clear the flag and the eventfd; afterwards the caller must look at the
 * reply ring once more before it sleeps. */
static void unsignal(lmp_pool_t *p)
{
  uint64_t v;
  atomic_store(&p->h->signalled, 0);
  while (read(p->efd, &v, sizeof v) < 0 && errno == EINTR) {
  }
  atomic_thread_fence(memory_order_seq_cst);
}

/* === events === */

static int push_event(lmp_pool_t *p, const lmp_pool_event_t *ev)
{
  if (p->evq_n == p->evq_cap) {
    size_t cap = p->evq_cap ? p->evq_cap * 2 : 16;
    lmp_pool_event_t *q = malloc(cap * sizeof *q);
    if (!q)
      return -ENOMEM;
    for (size_t i = 0; i < p->evq_n; i++)
      q[i] = p->evq[(p->evq_head + i) & (p->evq_cap - 1)];
    free(p->evq);
    p->evq = q;
    p->evq_cap = cap;
    p->evq_head = 0;
  }
  p->evq[(p->evq_head + p->evq_n++) & (p->evq_cap - 1)] = *ev;
  return 0;
}

static int pop_event(lmp_pool_t *p, lmp_pool_event_t *ev)
{
  if (p->evq_n == 0)
    return 0;
  *ev = p->evq[p->evq_head];
  p->evq_head = (p->evq_head + 1) & (p->evq_cap - 1);
  p->evq_n--;
  return 1;
}

/* A record's task is settled: no other event will name it. */
static void settle(lmp_pool_t *p, uint64_t seq)
{
  sent_at(p, seq)->final = 1;
  while (p->sent_lo < p->pushed && sent_at(p, p->sent_lo)->final)
    p->sent_lo++;
}

/* === the backlog and the ring === */

static int sent_append(lmp_pool_t *p, uint64_t id)
{
  uint64_t n = p->pushed - p->sent_lo;
  if (n + 1 > p->sent_cap) {
    uint64_t cap = p->sent_cap ? p->sent_cap * 2 : 64;
    struct sent *s = malloc(cap * sizeof *s);
    if (!s)
      return -ENOMEM;
    for (uint64_t q = p->sent_lo; q < p->pushed; q++)
      s[q & (cap - 1)] = *sent_at(p, q);
    free(p->sent);
    p->sent = s;
    p->sent_cap = cap;
  }
  struct sent *e = sent_at(p, p->pushed);
  e->id = id;
  e->final = 0;
  return 0;
}

/* FUTEX_WAKE that tells how many it woke. */
static long futex_wake_count(_Atomic uint32_t *word, int n)
{
  return syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, n, NULL, NULL, 0);
}

/*
 * Wake one sleeping worker, with at most one wake-up in flight: while a
 * woken worker has not come up yet (`waking`), pushes do not make more
 * system calls; the worker, once up, wakes the next one itself if tasks are
 * still waiting (lmp_pool_worker_next).  A wake that found nobody asleep
 * clears the flag at once, and the parent clears it when a worker dies.
 */
static void wake_one(struct phdr *h)
{
  uint32_t idle = 0;
  if (!atomic_compare_exchange_strong(&h->waking, &idle, 1))
    return;
  if (futex_wake_count(&h->tseq, 1) <= 0)
    atomic_store(&h->waking, 0);
}

/* After a push (or with all = 1, the ring's close): wake a sleeping worker
 * unless one that spins will take the task.  Pairs with wait_task: the
 * counter goes up before the sleepers are read, a sleeper registers before
 * it reads the counter, so a task never waits for a worker asleep. */
static void wake_worker(lmp_pool_t *p, int all)
{
  struct phdr *h = p->h;
  atomic_fetch_add(&h->tseq, 1);
  if (atomic_load(&h->sleepers) == 0)
    return;
  if (all)
    futex_wake_count(&h->tseq, INT_MAX);
  else if (atomic_load(&h->spinners) == 0 || lmp_queue_qsize(p->tasks) > 1)
    wake_one(h);
}

/* Hand one task to the ring. */
static int push_task(lmp_pool_t *p, uint64_t id, uint32_t tag, const struct iovec *iov, int n)
{
  struct thdr hd = {tag, 0, id};
  struct iovec v[MAX_PARTS + 1];
  v[0].iov_base = &hd;
  v[0].iov_len = sizeof hd;
  if (n)
    memcpy(v + 1, iov, (size_t)n * sizeof *iov);
  int rc = sent_append(p, id);
  if (rc < 0)
    return rc;
  /* Counted before a worker can take it, so pushed - taken never dips
   * below zero for an observer. */
  STORE(p->h->pub_pushed, p->pushed + 1);
  rc = lmp_queue_putv(p->tasks, v, n + 1, LMP_FOREVER);
  if (rc < 0) {
    STORE(p->h->pub_pushed, p->pushed);
    return rc;
  }
  p->pushed++;
  wake_worker(p, 0);
  return 0;
}

static int ring_has_room(lmp_pool_t *p)
{
  return lmp_queue_qsize(p->tasks) < p->high;
}

/* The backlog's count changed: publish it (see read_counts). */
static void backlog_publish(lmp_pool_t *p)
{
  atomic_store_explicit(&p->h->pub_backlog, p->bl_live, memory_order_relaxed);
}

/* Without a fixed high_water, let the ring hold CLAIMS records or about
 * RING_BUDGET bytes of payloads of the average size so far, whichever is
 * less, but QUEUED_MIN per worker at least: big payloads wait in the
 * backlog rather than in shared memory. */
static void learn(lmp_pool_t *p, size_t len)
{
  if (p->cfg.high_water)
    return;
  int64_t l = len < 64 ? 64 : len > RING_BUDGET ? RING_BUDGET : (int64_t)len;
  p->avg_len = p->avg_len ? p->avg_len + (l - p->avg_len) / 8 : l;
  int64_t n = RING_BUDGET / p->avg_len, least = QUEUED_MIN * (int64_t)p->cfg.processes;
  n = n < least ? least : n;
  p->high = n > CLAIMS ? CLAIMS : (uint32_t)n;
}

/* Drop the oldest entry, and the arena bytes nothing refers to any more. */
static void backlog_pop(lmp_pool_t *p)
{
  p->bl_head = (p->bl_head + 1) & (p->bl_cap - 1);
  p->bl_n--;
  if (p->bl_n == 0)
    p->arena.len = p->arena_head = 0;
  else
    p->arena_head = bl_at(p, 0)->off;
}

/* Append a payload to the arena: its offset, or -ENOMEM.  The live part is
 * moved to the front once the dead part in front of it is the larger, so a
 * steady stream keeps the arena at about twice what waits. */
static int64_t arena_add(lmp_pool_t *p, const struct iovec *iov, int n, size_t len)
{
  lmp_buf_t *a = &p->arena;
  size_t dead = p->arena_head;
  if (dead > 65536 && dead > a->len - dead) {
    memmove(a->data, a->data + dead, a->len - dead);
    a->len -= dead;
    p->arena_head = 0;
    for (size_t i = 0; i < p->bl_n; i++)
      bl_at(p, i)->off -= dead;
  }
  if (lmp_buf_reserve(a, a->len + len) < 0)
    return -ENOMEM;
  size_t off = a->len;
  for (int i = 0; i < n; i++) {
    if (iov[i].iov_len)
      memcpy(a->data + a->len, iov[i].iov_base, iov[i].iov_len);
    a->len += iov[i].iov_len;
  }
  return (int64_t)off;
}

/* Move backlog to the ring while it has room; close the ring once a closing
 * pool has handed everything out. */
static void feed(lmp_pool_t *p)
{
  while (p->bl_n && (p->bl_live == 0 || ring_has_room(p))) {
    struct pend *e = bl_at(p, 0);
    if (!e->cancelled) {
      struct iovec v = {p->arena.data + e->off, e->len};
      if (push_task(p, e->id, e->tag, &v, 1) < 0)
        break; /* out of memory: retried on the next call */
      p->bl_live--;
    }
    backlog_pop(p);
  }
  backlog_publish(p);
  if (p->closing && p->bl_n == 0 && !p->ring_closed) {
    lmp_queue_close(p->tasks);
    wake_worker(p, 1);
    p->ring_closed = 1;
  }
}

/* Room for one more entry; the ring is copied out in order when it grows. */
static int backlog_reserve(lmp_pool_t *p)
{
  if (p->bl_n < p->bl_cap)
    return 0;
  size_t cap = p->bl_cap ? p->bl_cap * 2 : 64;
  struct pend *b = malloc(cap * sizeof *b);
  if (!b)
    return -ENOMEM;
  for (size_t i = 0; i < p->bl_n; i++)
    b[i] = *bl_at(p, i);
  free(p->bl);
  p->bl = b;
  p->bl_cap = cap;
  p->bl_head = 0;
  return 0;
}

static void backlog_clear(lmp_pool_t *p)
{
  p->bl_n = p->bl_live = 0;
  p->arena.len = p->arena_head = 0;
}

/* Index of task id in the backlog, or -1.  Ids increase along it. */
static long backlog_find(lmp_pool_t *p, uint64_t id)
{
  size_t lo = 0, hi = p->bl_n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    uint64_t m = bl_at(p, mid)->id;
    if (m == id)
      return (long)mid;
    if (m < id)
      lo = mid + 1;
    else
      hi = mid;
  }
  return -1;
}

/* Record number of task id in the sent window, or UINT64_MAX. */
static uint64_t sent_find(lmp_pool_t *p, uint64_t id)
{
  uint64_t lo = p->sent_lo, hi = p->pushed;
  while (lo < hi) {
    uint64_t mid = lo + (hi - lo) / 2;
    uint64_t m = sent_at(p, mid)->id;
    if (m == id)
      return mid;
    if (m < id)
      lo = mid + 1;
    else
      hi = mid;
  }
  return UINT64_MAX;
}

/* === workers === */

static int work_left(lmp_pool_t *p)
{
  return p->bl_live > 0 || lmp_queue_qsize(p->tasks) > 0;
}

static int wants_workers(lmp_pool_t *p)
{
  return !p->terminated && !p->broken && (!p->closing || work_left(p));
}

/*
 * A forked process holds copies of its parent's pools, descriptors
 * included.  When it makes pools of its own, or becomes a worker of `keep`,
 * it closes them (all but keep's eventfd, which a worker writes) and drops
 * the copies from its list: otherwise it would later close numbers that its
 * own new descriptors reuse.
 */
static void forget_inherited(lmp_pool_t *keep)
{
  pid_t me = getpid();
  for (lmp_pool_t **pp = &pools; *pp;) {
    lmp_pool_t *q = *pp;
    if (q->owner == me) {
      pp = &q->next;
      continue;
    }
    *pp = q->next;
    q->next = NULL;
    if (q->epfd >= 0)
      close(q->epfd);
    if (q->tfd >= 0)
      close(q->tfd);
    if (q != keep && q->efd >= 0)
      close(q->efd);
    q->epfd = q->tfd = -1;
    if (q != keep)
      q->efd = -1;
  }
}

static void worker_init(lmp_pool_worker_t *w, lmp_pool_t *p, int i)
{
  memset(w, 0, sizeof *w);
  w->p = p;
  w->index = i;
  w->slot = &p->h->slots[i];
  w->spin_ns = SPIN_START_NS;
  w->pid = getpid();
  STORE(w->slot->pid, (int32_t)w->pid);
  /* ps and top say what it is, and a host's pkill by name spares it. */
  prctl(PR_SET_NAME, "lmp-worker");
}

static void worker_exit(lmp_pool_t *p, int i) __attribute__((noreturn));

/* In a new worker: descriptors of the parent side of every pool (and other
 * pools' eventfds) are not ours; then run the body. */
static void worker_exit(lmp_pool_t *p, int i)
{
  forget_inherited(p);
  lmp_pool_worker_t w;
  worker_init(&w, p, i);
  int code = p->cfg.body(&w, p->cfg.ctx);
  lmp_buf_free(&w.buf);
  lmp_proc_exit(code);
}

/*
 * Start worker i through the start hook.  The new process does not inherit
 * the eventfd it must write, so a duplicate waits for it at the watchdog;
 * the ticket carries the token along with the segments' names.  Returns 1
 * like the parent's side of lmp_proc_fork.
 */
static int start_hooked(lmp_pool_t *p, int i, lmp_proc_t **out)
{
  uint64_t token;
  int rc = lmp_fd_stash(p->efd, &token);
  if (rc < 0)
    return rc;
  char ticket[LMP_POOL_TICKET_MAX];
  snprintf(ticket, sizeof ticket, "%s %s %s %d %" PRIu64, p->names[0], p->names[1], p->names[2], i,
           token);
  rc = p->cfg.start(p->cfg.ctx, ticket, i, out);
  if (rc < 0) {
    int fd;
    if (lmp_fd_fetch(token, &fd) == 0) /* nobody took it: do not leave it there */
      close(fd);
    return rc;
  }
  return 1;
}

static int spawn(lmp_pool_t *p, int i)
{
  struct slot *s = &p->h->slots[i];
  STORE(s->word, slot_word(LMP_POOL_STARTING, 0));
  STORE(s->pid, 0);
  atomic_fetch_add(&p->h->retired_done, atomic_exchange(&s->done, 0));
  atomic_fetch_add(&p->h->retired_failed, atomic_exchange(&s->failed, 0));
  lmp_proc_t *proc;
  /* a worker ignores ^C from birth: the program decides what it stops */
  int rc = p->cfg.start ? start_hooked(p, i, &proc)
                        : lmp_proc_fork(LMP_PROC_DAEMON | LMP_PROC_NOINT, &proc);
  if (rc < 0)
    return rc;
  if (rc == 0)
    worker_exit(p, i);
  lmp_proc_set_owner(proc, p->cfg.owner);
  struct worker *w = &p->w[i];
  w->proc = proc;
  w->pid = lmp_proc_pid(proc);
  w->kill_seq = -1;
  STORE(s->pid, (int32_t)w->pid);
  int fd = lmp_proc_fd(proc);
  if (fd >= 0) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev);
  }
  return 0;
}

static void add_verdict(lmp_pool_t *p, const struct verdict *v)
{
  if (grow_array((void **)&p->vd, &p->vd_cap, p->nvd + 1, sizeof *v) == 0)
    p->vd[p->nvd++] = *v;
}

/* Worker i has exited (and is reaped): take note of what it was doing,
 * free its slot for a replacement. */
/* Take a worker's descriptor out of the epoll set.  Closing it is not
 * enough: a copy held elsewhere (the watchdog's) keeps the entry, which
 * would then report the death for ever. */
static void unwatch(lmp_pool_t *p, struct worker *w)
{
  int fd = lmp_proc_fd(w->proc);
  if (fd >= 0)
    epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, NULL);
}

static void on_death(lmp_pool_t *p, int i)
{
  struct worker *w = &p->w[i];
  struct slot *s = &p->h->slots[i];
  int code = 0;
  lmp_proc_exitcode(w->proc, &code);
  uint64_t word;
  int64_t start;
  slot_read(s, &word, &start);
  struct verdict v = {0};
  v.at = p->consumed + lmp_queue_qsize(p->replies);
  v.pid = w->pid;
  v.exitcode = code;
  v.item = LOAD(s->item);
  if (slot_state(word) == LMP_POOL_BUSY) {
    v.seq = full_seq(p, (uint32_t)(word & SEQ_MASK));
    if (v.seq != UINT64_MAX && !sent_at(p, v.seq)->final) {
      v.timed_out = w->kill_seq == (int64_t)v.seq;
      add_verdict(p, &v);
    }
  } else if (slot_state(word) == LMP_POOL_STARTING && !p->terminated) {
    /* It ended on its own before its first task: its start-up failed, and
     * the next would fail the same way.  Killed by a signal, it may have
     * been someone's kill: replace it, unless that keeps happening. */
    if (code >= 0 || ++p->start_deaths >= START_DEATHS_MAX) {
      v.starting = 1;
      add_verdict(p, &v);
    }
  }
  atomic_store(&p->h->waking, 0); /* it may have been the one woken */
  unwatch(p, w);
  lmp_proc_free(w->proc);
  w->proc = NULL;
  w->pid = 0;
  STORE(s->word, 0);
  STORE(s->pid, 0);
}

/* Reap workers that exited.  Polls their pidfds without waiting. */
static void check_deaths(lmp_pool_t *p)
{
  int n = p->cfg.processes;
  struct pollfd pfd[n];
  for (int i = 0; i < n; i++) {
    pfd[i].fd = p->w[i].proc ? lmp_proc_fd(p->w[i].proc) : -1;
    pfd[i].events = POLLIN;
    pfd[i].revents = 0;
  }
  if (poll(pfd, (nfds_t)n, 0) < 0)
    return;
  for (int i = 0; i < n; i++) {
    struct worker *w = &p->w[i];
    if (!w->proc)
      continue;
    /* Without a pidfd, ask (and reap) directly. */
    if (pfd[i].fd >= 0 ? !(pfd[i].revents & (POLLIN | POLLHUP | POLLNVAL))
                       : lmp_proc_alive(w->proc))
      continue;
    if (lmp_proc_wait(w->proc, 0) == 0)
      on_death(p, i);
  }
}

/* The record worker i runs (and since when), or UINT64_MAX when it runs
 * none: no process, idle, or a record no longer known. */
static uint64_t running_seq(lmp_pool_t *p, int i, int64_t *start)
{
  uint64_t word;
  if (!p->w[i].proc)
    return UINT64_MAX;
  slot_read(&p->h->slots[i], &word, start);
  if (slot_state(word) != LMP_POOL_BUSY)
    return UINT64_MAX;
  return full_seq(p, (uint32_t)(word & SEQ_MASK));
}

/* Kill tasks past their deadline; returns the earliest deadline still to
 * come (LMP_FOREVER if none). */
static int64_t check_timeouts(lmp_pool_t *p, int64_t now)
{
  int64_t next = LMP_FOREVER, limit = p->cfg.task_timeout_ns;
  if (limit <= 0)
    return next;
  for (int i = 0; i < p->cfg.processes; i++) {
    struct worker *w = &p->w[i];
    int64_t start;
    uint64_t seq = running_seq(p, i, &start);
    if (seq == UINT64_MAX || w->kill_seq == (int64_t)seq)
      continue;
    if (start + limit <= now) {
      w->kill_seq = (int64_t)seq;
      lmp_proc_signal(w->proc, SIGKILL);
    } else if (start + limit < next) {
      next = start + limit;
    }
  }
  /* A task taken after this look is due no sooner than now + limit: look
   * again then, so an event loop that sleeps on the descriptor wakes for it. */
  if (p->pushed > p->sent_lo && next > now + limit)
    next = now + limit;
  return next;
}

/* Arm the timerfd (so lmp_pool_fd wakes an event loop) for the earliest
 * task deadline. */
static void set_timer(lmp_pool_t *p, int64_t at)
{
  if (p->tfd < 0 || at == p->timer_at || (at == LMP_FOREVER && p->timer_at == 0))
    return;
  struct itimerspec its;
  memset(&its, 0, sizeof its);
  if (at != LMP_FOREVER)
    its.it_value = lmp__deadline_ts(at);
  timerfd_settime(p->tfd, TFD_TIMER_ABSTIME, &its, NULL);
  p->timer_at = at == LMP_FOREVER ? 0 : at;
}

/* Nothing more can come (terminated, broken, or closed with every worker
 * gone): leave lmp_pool_fd unreadable, the eventfd read and the timer
 * disarmed, or an event loop watching it would wake for ever. */
static void quiet(lmp_pool_t *p)
{
  uint64_t v;
  if (p->efd >= 0) {
    ssize_t r = read(p->efd, &v, sizeof v);
    (void)r; /* EAGAIN: it was not readable */
  }
  set_timer(p, LMP_FOREVER);
}

static void break_pool(lmp_pool_t *p);

/* Deaths whose replies have all been read: fail their tasks. */
static void check_verdicts(lmp_pool_t *p)
{
  size_t keep = 0;
  for (size_t k = 0; k < p->nvd; k++) {
    struct verdict v = p->vd[k];
    if (p->broken || p->terminated) {
      p->nvd = 0;
      return;
    }
    if (p->consumed < v.at) {
      p->vd[keep++] = v;
      continue;
    }
    lmp_pool_event_t ev;
    memset(&ev, 0, sizeof ev);
    ev.pid = v.pid;
    ev.exitcode = v.exitcode;
    ev.item = v.item;
    if (v.starting) {
      ev.type = LMP_POOL_BROKEN;
      push_event(p, &ev);
      break_pool(p);
      return;
    }
    if (sent_at(p, v.seq)->final || v.seq < p->sent_lo)
      continue;
    ev.type = v.timed_out ? LMP_POOL_TIMEOUT : LMP_POOL_LOST;
    ev.id = sent_at(p, v.seq)->id;
    settle(p, v.seq);
    atomic_fetch_add(&p->h->pub_failed, 1);
    push_event(p, &ev);
  }
  p->nvd = keep;
}

static void respawn(lmp_pool_t *p)
{
  if (!wants_workers(p))
    return;
  p->spawn_error = 0;
  for (int i = 0; i < p->cfg.processes; i++) {
    if (p->w[i].proc)
      continue;
    int rc = spawn(p, i);
    if (rc < 0) {
      p->spawn_error = rc; /* retried on the next check */
      return;
    }
    atomic_fetch_add(&p->h->pub_restarts, 1);
  }
}

static int live_workers(lmp_pool_t *p)
{
  int n = 0;
  for (int i = 0; i < p->cfg.processes; i++)
    n += p->w[i].proc != NULL;
  return n;
}

static void publish(lmp_pool_t *p, int64_t now);

static void maintain(lmp_pool_t *p, int64_t now)
{
  p->last_check = now;
  publish(p, now);
  if (p->timer_at && p->timer_at <= now) {
    uint64_t n;
    ssize_t r = read(p->tfd, &n, sizeof n); /* the expiry that woke us */
    (void)r;
    p->timer_at = 0;
  }
  check_deaths(p);
  set_timer(p, check_timeouts(p, now));
  check_verdicts(p);
  respawn(p);
}

/* Maintain when something calls for it (a death, a verdict, a start to
 * try again) or CHECK_NS has passed since the last time; whether it did. */
static int maintain_if_due(lmp_pool_t *p, int64_t now)
{
  if (!p->need_check && !p->nvd && !p->spawn_error && now - p->last_check < CHECK_NS)
    return 0;
  p->need_check = 0;
  maintain(p, now);
  return 1;
}

/* Kill every worker and wait for each: they die at once. */
static void kill_all(lmp_pool_t *p)
{
  for (int i = 0; i < p->cfg.processes; i++)
    if (p->w[i].proc)
      lmp_proc_signal(p->w[i].proc, SIGKILL);
  for (int i = 0; i < p->cfg.processes; i++) {
    struct worker *w = &p->w[i];
    if (!w->proc)
      continue;
    lmp_proc_wait(w->proc, LMP_FOREVER);
    lmp_proc_free(w->proc);
    w->proc = NULL;
    STORE(p->h->slots[i].word, 0);
    STORE(p->h->slots[i].pid, 0);
  }
}

/* Nothing more runs: drop what is queued, forget what is pending. */
static void shut_down(lmp_pool_t *p)
{
  kill_all(p);
  backlog_clear(p);
  backlog_publish(p);
  while (p->sent_lo < p->pushed)
    settle(p, p->sent_lo);
  p->nvd = 0;
  if (!p->ring_closed) {
    lmp_queue_close(p->tasks);
    wake_worker(p, 1);
    p->ring_closed = 1;
  }
  set_timer(p, LMP_FOREVER);
}

static void break_pool(lmp_pool_t *p)
{
  p->broken = 1;
  shut_down(p);
}

/* === replies === */

/* Read one reply if there is one: 1 and *ev set when it makes an event, 0
 * when the ring was empty or the reply was for a settled task. */
static int take_reply(lmp_pool_t *p, lmp_pool_event_t *ev)
{
  if (lmp_queue_qsize(p->replies) == 0)
    return 0;
  int rc = lmp_queue_get(p->replies, &p->rbuf, 0);
  if (rc == -ETIMEDOUT)
    return 0;
  if (rc < 0)
    return rc;
  p->consumed++;
  struct rhdr hd;
  if (p->rbuf.len < sizeof hd)
    return 0;
  memcpy(&hd, p->rbuf.data, sizeof hd);
  memset(ev, 0, sizeof *ev);
  ev->pid = hd.pid;
  ev->data = p->rbuf.data + sizeof hd;
  ev->len = p->rbuf.len - sizeof hd;
  if (hd.kind == R_INIT_FAILED) {
    if (p->broken || p->terminated)
      return 0;
    ev->type = LMP_POOL_BROKEN;
    break_pool(p);
    return 1;
  }
  uint64_t seq = full_seq(p, hd.seq);
  if (seq == UINT64_MAX || seq < p->sent_lo || sent_at(p, seq)->final)
    return 0; /* late: the task timed out or was dropped */
  ev->type = LMP_POOL_DONE;
  ev->id = sent_at(p, seq)->id;
  ev->status = hd.status;
  settle(p, seq);
  p->start_deaths = 0;
  return 1;
}

/*
 * How long to spin before sleeping, learned from how long waits last.  A
 * spinning hand-off between two processes on CPUs of their own takes well
 * under a microsecond, a kernel wake-up tens of them; but when the CPUs are
 * all busy a spinner only delays the process it waits for, and the waits
 * grow long.  After each wait: one the budget covered doubles it, one a
 * budget up to SPIN_MAX_NS would have covered sets it to twice the wait,
 * and a longer one halves it.  Hand-offs between running processes so stay
 * spinning, while on a loaded machine, for long tasks and for workers that
 * sit idle, the budget falls towards zero.
 */
static int64_t adapt_spin(int64_t budget, int64_t waited)
{
  int64_t b;
  if (waited <= budget)
    b = budget * 2 + 1000;
  else if (waited <= SPIN_MAX_NS)
    b = waited * 2;
  else
    return budget / 2;
  return b > SPIN_MAX_NS ? SPIN_MAX_NS : b;
}

/* Spin for up to `budget` ns, pausing then yielding, until ready(arg). */
static int spin_until(int64_t budget, int (*ready)(void *), void *arg)
{
  if (budget <= 0)
    return ready(arg);
  int64_t start = lmp_now_ns(), now = start;
  for (int i = 1;; i++) {
    if (ready(arg))
      return 1;
    if (now - start < SPIN_PAUSE_NS)
      lmp__cpu_relax();
    else
      sched_yield();
    if (i % 16 == 0 && (now = lmp_now_ns()) - start >= budget)
      return ready(arg);
  }
}

static int replies_waiting(void *arg)
{
  return lmp_queue_qsize(((lmp_pool_t *)arg)->replies) > 0;
}

/* Sleep on the epoll set until something may have happened, the deadline,
 * or the earliest task deadline.  The eventfd is read when it fired (that
 * resets lmp_pool_fd); a pidfd or the timer calls for a check.  -EINTR when
 * a signal cut the sleep short and the program asks waits to stop, else 0. */
static int sleep_until(lmp_pool_t *p, int64_t deadline)
{
  int64_t now = lmp_now_ns(), wake = deadline;
  if (p->timer_at && p->timer_at < wake)
    wake = p->timer_at;
  if (p->spawn_error && wake - now > 100 * 1000000LL)
    wake = now + 100 * 1000000LL; /* retry the fork */
  for (int i = 0; i < p->cfg.processes; i++)
    if (p->w[i].proc && lmp_proc_fd(p->w[i].proc) < 0 && wake - now > 50 * 1000000LL)
      wake = now + 50 * 1000000LL; /* no pidfd: look now and then */
  struct epoll_event evs[8];
  int n = epoll_wait(p->epfd, evs, 8, lmp__deadline_ms(wake));
  if (n < 0 || p->spawn_error)
    p->need_check = 1;
  if (n < 0 && errno == EINTR && lmp__interrupted())
    return -EINTR;
  for (int i = 0; i < n; i++) {
    if (evs[i].data.u32 == UINT32_MAX) {
      uint64_t v;
      ssize_t r = read(p->efd, &v, sizeof v);
      (void)r;
    } else {
      p->need_check = 1;
    }
  }
  return 0;
}

/* Work is under way: a reply may come without any death or timeout. */
static int expecting(lmp_pool_t *p)
{
  return p->pushed > p->sent_lo;
}

/* Nothing more can come: -EPIPE (or the error that keeps the pool from
 * forking any worker); 0 while something can. */
static int ended(lmp_pool_t *p)
{
  if (p->terminated || p->broken)
    return -EPIPE;
  if (live_workers(p) > 0 || p->nvd)
    return 0;
  if (p->closing && !wants_workers(p))
    return -EPIPE;
  return p->spawn_error;
}

/* Move backlog to the ring (feed), read one reply if there is one
 * (take_reply), and fail the tasks of deaths whose replies have now all
 * been read (check_verdicts). */
static int take_ready(lmp_pool_t *p, lmp_pool_event_t *ev)
{
  feed(p);
  int rc = take_reply(p, ev);
  if (rc != 0 && p->nvd)
    check_verdicts(p);
  return rc;
}

int lmp_pool_wait(lmp_pool_t *p, lmp_pool_event_t *ev, int64_t deadline)
{
  int rc;
  int64_t waiting = 0; /* since when this call waits for a reply */
  for (;;) {
    if (pop_event(p, ev))
      return 0;
    if (p->terminated || p->broken) {
      quiet(p);
      return -EPIPE;
    }
    if ((rc = take_ready(p, ev)) != 0) {
      if (waiting && rc > 0)
        p->spin_ns = adapt_spin(p->spin_ns, lmp_now_ns() - waiting);
      return rc < 0 ? rc : 0;
    }
    int64_t now = lmp_now_ns();
    if (maintain_if_due(p, now) && (p->evq_n || lmp_queue_qsize(p->replies)))
      continue;
    if ((rc = ended(p)) != 0) {
      if (rc == -EPIPE)
        quiet(p);
      return rc;
    }
    if (now < deadline && expecting(p)) {
      if (!waiting)
        waiting = now;
      if (spin_until(p->spin_ns, replies_waiting, p))
        continue;
    }
    if (lmp_now_ns() >= deadline) {
      /* Nothing now: reset the descriptor, and look once more. */
      unsignal(p);
      if (lmp_queue_qsize(p->replies))
        continue;
      maintain(p, lmp_now_ns());
      if (p->evq_n || lmp_queue_qsize(p->replies))
        continue;
      return -ETIMEDOUT;
    }
    /* Workers write the eventfd from now on; look once more, bring the
     * timer up to date, and sleep. */
    atomic_store(&p->h->signalled, 0);
    if (lmp_queue_qsize(p->replies))
      continue;
    publish(p, lmp_now_ns());
    if (p->tfd >= 0)
      set_timer(p, check_timeouts(p, lmp_now_ns()));
    if ((rc = sleep_until(p, deadline)) < 0)
      return rc;
  }
}

int lmp_pool_take(lmp_pool_t *p, lmp_pool_event_t *ev)
{
  if (pop_event(p, ev))
    return 1;
  if (p->terminated || p->broken)
    return 0;
  return take_ready(p, ev);
}

/* === the parent's API === */

int lmp_pool_submit(lmp_pool_t *p, uint32_t tag, const struct iovec *iov, int iovcnt, uint64_t *id)
{
  if (iovcnt < 0 || iovcnt > MAX_PARTS)
    return -EINVAL;
  if (p->closing || p->terminated || p->broken)
    return -EPIPE;
  size_t len = 0;
  for (int i = 0; i < iovcnt; i++)
    len += iov[i].iov_len;
  learn(p, len);
  if (p->bl_n)
    feed(p);
  uint64_t next = p->next_id + 1;
  if (p->bl_n == 0 && ring_has_room(p)) {
    int rc = push_task(p, next, tag, iov, iovcnt);
    if (rc < 0)
      return rc;
  } else {
    int64_t off;
    if (backlog_reserve(p) < 0 || (off = arena_add(p, iov, iovcnt, len)) < 0)
      return -ENOMEM;
    struct pend *e = bl_at(p, p->bl_n);
    e->id = next;
    e->tag = tag;
    e->cancelled = 0;
    e->off = (size_t)off;
    e->len = len;
    p->bl_n++;
    p->bl_live++;
    backlog_publish(p);
  }
  p->next_id = next;
  *id = next;
  return 0;
}

/* The number of the oldest record still in the ring: those before it have
 * been taken by workers. */
static uint64_t ring_head(lmp_pool_t *p)
{
  return p->pushed - lmp_queue_qsize(p->tasks);
}

/* Record seq, known to be in the ring a moment ago: cancel it unless a
 * worker has taken it since (see claim). */
static int cancel_sent(lmp_pool_t *p, uint64_t seq)
{
  uint32_t s30 = (uint32_t)(seq & SEQ_MASK);
  _Atomic uint64_t *c = &p->h->claim[s30 % CLAIMS];
  uint64_t was = atomic_load(c);
  if (was == claim_mark(s30, TAKEN) ||
      !atomic_compare_exchange_strong(c, &was, claim_mark(s30, CANCELLED)))
    return 0;
  settle(p, seq);
  return 1;
}

int lmp_pool_cancel(lmp_pool_t *p, uint64_t id)
{
  long i = backlog_find(p, id);
  if (i < 0) {
    uint64_t seq = sent_find(p, id);
    if (seq == UINT64_MAX || sent_at(p, seq)->final)
      return 0;
    /* While seq is in the ring, at most CLAIMS records came after it: its
     * claim is its own. */
    return seq >= ring_head(p) ? cancel_sent(p, seq) : 0;
  }
  if (bl_at(p, (size_t)i)->cancelled)
    return 0;
  struct pend *e = bl_at(p, (size_t)i);
  e->cancelled = 1;
  p->bl_live--;
  backlog_publish(p);
  while (p->bl_n && bl_at(p, 0)->cancelled)
    backlog_pop(p);
  return 1;
}

int lmp_pool_stop(lmp_pool_t *p, uint64_t id)
{
  if (lmp_pool_cancel(p, id))
    return 1;
  uint64_t seq = sent_find(p, id);
  if (seq == UINT64_MAX || sent_at(p, seq)->final || seq >= ring_head(p))
    return 0;
  /* Taken: kill the worker whose slot names the record, as check_timeouts
   * kills one past its deadline, and reap it (it dies at once, as in
   * kill_all) so that the next call replaces it.  The task fails as LOST
   * once the replies before the death are read (unless it answered). */
  for (int i = 0; i < p->cfg.processes; i++) {
    struct worker *w = &p->w[i];
    int64_t start;
    if (running_seq(p, i, &start) == seq) {
      lmp_proc_signal(w->proc, SIGKILL);
      lmp_proc_wait(w->proc, LMP_FOREVER);
      on_death(p, i);
      p->need_check = 1;
      return 1;
    }
  }
  return 0;
}

int lmp_pool_task_state(lmp_pool_t *p, uint64_t id)
{
  long i = backlog_find(p, id);
  if (i >= 0)
    return bl_at(p, (size_t)i)->cancelled ? LMP_POOL_TASK_UNKNOWN : LMP_POOL_TASK_QUEUED;
  uint64_t seq = sent_find(p, id);
  if (seq == UINT64_MAX || sent_at(p, seq)->final)
    return LMP_POOL_TASK_UNKNOWN;
  return seq < ring_head(p) ? LMP_POOL_TASK_RUNNING : LMP_POOL_TASK_SENT;
}

void lmp_pool_close(lmp_pool_t *p)
{
  p->closing = 1;
  feed(p);
}

void lmp_pool_terminate(lmp_pool_t *p)
{
  if (p->terminated || p->owner != getpid())
    return;
  p->terminated = 1;
  p->closing = 1;
  shut_down(p);
  p->evq_n = 0;
  quiet(p);
}

int lmp_pool_fd(const lmp_pool_t *p)
{
  return p->epfd;
}

int lmp_pool_processes(const lmp_pool_t *p)
{
  return p->cfg.processes;
}

int lmp_pool_running(const lmp_pool_t *p)
{
  return !p->closing && !p->terminated && !p->broken;
}

int lmp_pool_slot(lmp_pool_t *p, int i, lmp_pool_slot_info_t *out)
{
  if (i < 0 || i >= p->cfg.processes)
    return -EINVAL;
  struct slot *s = &p->h->slots[i];
  uint64_t word;
  int64_t start;
  slot_read(s, &word, &start);
  memset(out, 0, sizeof *out);
  out->pid = LOAD(s->pid);
  out->state = slot_state(word);
  out->done = LOAD(s->done);
  out->failed = LOAD(s->failed);
  if (out->state == LMP_POOL_BUSY) {
    uint64_t seq = full_seq(p, (uint32_t)(word & SEQ_MASK));
    if (seq == UINT64_MAX || sent_at(p, seq)->final) {
      out->state = LMP_POOL_IDLE; /* answered; about to say so */
      return 0;
    }
    out->task = sent_at(p, seq)->id;
    out->item = LOAD(s->item);
    out->started_ns = start;
  }
  return 0;
}

/* === counters, and their rate === */

/*
 * One source for the parent's stats and for every observer (lmp top), so
 * the two agree at any moment: the header.  Replies are the workers' own
 * counts and `running` their busy slots, current while the parent is away
 * from the pool; the ring holds what the parent pushed and the workers have
 * not taken; lost and timed-out tasks, restarts and the backlog are what
 * the parent alone knows, published as they change.  Up to max slots go
 * to slots.
 */
static void read_counts(struct phdr *h, lmp_pool_stats_t *st, lmp_pool_slot_info_t *slots, int max)
{
  memset(st, 0, sizeof *st);
  uint64_t ok = LOAD(h->retired_done), bad = LOAD(h->retired_failed);
  for (uint32_t i = 0; i < h->nslots; i++) {
    struct slot *s = &h->slots[i];
    uint64_t word;
    int64_t start;
    slot_read(s, &word, &start);
    int state = slot_state(word);
    uint64_t done = LOAD(s->done), failed = LOAD(s->failed);
    st->running += state == LMP_POOL_BUSY;
    ok += done;
    bad += failed;
    if ((int)i >= max)
      continue;
    lmp_pool_slot_info_t *o = &slots[i];
    memset(o, 0, sizeof *o);
    o->pid = LOAD(s->pid);
    o->state = state;
    o->done = done;
    o->failed = failed;
    if (state == LMP_POOL_BUSY) {
      o->task = LOAD(s->task);
      o->item = LOAD(s->item);
      o->started_ns = start;
    }
  }
  uint64_t pushed = LOAD(h->pub_pushed), taken = LOAD(h->taken);
  st->queued = LOAD(h->pub_backlog) + (pushed > taken ? pushed - taken : 0);
  st->done = ok + bad;
  st->errors = bad;
  st->failed = LOAD(h->pub_failed);
  st->restarts = LOAD(h->pub_restarts);
  st->recycled = LOAD(h->recycled);
  st->rate = (double)LOAD(h->pub_rate) / 1000;
}

/* Tasks that ended, replied or not. */
static uint64_t events(lmp_pool_t *p)
{
  lmp_pool_stats_t st;
  read_counts(p->h, &st, NULL, 0);
  return st.done + st.failed;
}

/* Keep a sample of the event count every RATE_EVERY_NS or more. */
static void rate_sample(lmp_pool_t *p, int64_t now, uint64_t n)
{
  unsigned last = (p->rs_head + p->rs_n - 1) % RATE_SAMPLES;
  if (p->rs_n && now - p->rs[last].t < RATE_EVERY_NS)
    return;
  if (p->rs_n == RATE_SAMPLES) {
    p->rs_head = (p->rs_head + 1) % RATE_SAMPLES;
    p->rs_n--;
  }
  unsigned i = (p->rs_head + p->rs_n++) % RATE_SAMPLES;
  p->rs[i].t = now;
  p->rs[i].n = n;
}

/* Events per second since the oldest sample at most RATE_SPAN_NS old (or,
 * when there is none, the newest one). */
static double rate(lmp_pool_t *p, int64_t now)
{
  uint64_t n = events(p);
  rate_sample(p, now, n);
  unsigned k = 0;
  while (k + 1 < p->rs_n && now - p->rs[(p->rs_head + k) % RATE_SAMPLES].t > RATE_SPAN_NS)
    k++;
  const unsigned i = (p->rs_head + k) % RATE_SAMPLES;
  int64_t dt = now - p->rs[i].t;
  return dt > 0 ? (double)(n - p->rs[i].n) * 1e9 / (double)dt : 0;
}

/* Publish the rate, which only the parent samples, for observers. */
static void publish(lmp_pool_t *p, int64_t now)
{
  atomic_store_explicit(&p->h->pub_rate, (uint64_t)(rate(p, now) * 1000), memory_order_relaxed);
}

void lmp_pool_stats(lmp_pool_t *p, lmp_pool_stats_t *out)
{
  /* The owner looks at its workers as a call would: deaths noticed and
   * replacements started (one that failed to start is tried again), so
   * the figures and the slots read next are those of now. */
  int64_t now = lmp_now_ns();
  if (p->owner == getpid() && !p->terminated && !p->broken)
    maintain_if_due(p, now);
  publish(p, now);
  read_counts(p->h, out, NULL, 0);
}

/* === create and free === */

static void unlist(lmp_pool_t *p)
{
  for (lmp_pool_t **pp = &pools; *pp; pp = &(*pp)->next) {
    if (*pp == p) {
      *pp = p->next;
      return;
    }
  }
}

static void free_memory(lmp_pool_t *p)
{
  backlog_clear(p);
  free(p->bl);
  lmp_buf_free(&p->arena);
  free(p->sent);
  free(p->vd);
  free(p->evq);
  free(p->w);
  lmp_buf_free(&p->rbuf);
  free(p);
}

static void registry_remove(lmp_pool_t *p);

/* Let go of the two queues and the header segment (their names stay). */
static void release_segments(lmp_pool_t *p)
{
  if (p->tasks)
    lmp_queue_free(p->tasks);
  if (p->replies)
    lmp_queue_free(p->replies);
  if (p->seg)
    lmp_seg_release(p->seg);
}

/* Close the eventfd, the epoll set and the timerfd, those that are open. */
static void close_fds(lmp_pool_t *p)
{
  for (int *fd = &p->efd; fd; fd = fd == &p->efd ? &p->epfd : fd == &p->epfd ? &p->tfd : NULL)
    if (*fd >= 0)
      close(*fd);
}

void lmp_pool_free(lmp_pool_t *p)
{
  if (!p)
    return;
  unlist(p);
  registry_remove(p);
  if (p->owner != getpid()) {
    /* A forked copy: the workers and segments are the owner's, only the
     * inherited descriptors are ours. */
    close_fds(p);
    free_memory(p);
    return;
  }
  /* Kill every worker, then reap them: a killed process is gone within
   * moments, so this does not block, and no zombie is left.  One that is
   * not gone by the deadline (stuck in the kernel) is reaped later by
   * lmp_proc_reap. */
  for (int i = 0; i < p->cfg.processes; i++)
    if (p->w && p->w[i].proc)
      lmp_proc_signal(p->w[i].proc, SIGKILL);
  int64_t reap_by = lmp_now_ns() + REAP_GRACE_NS;
  for (int i = 0; i < p->cfg.processes; i++) {
    if (p->w && p->w[i].proc) {
      lmp_proc_wait(p->w[i].proc, reap_by);
      lmp_proc_free(p->w[i].proc);
    }
  }
  release_segments(p);
  /* Killed workers never drop their references: the segments are private
   * to this pool, so their names can go now. */
  for (int i = 0; i < 3; i++)
    if (p->names[i][0])
      shm_unlink(p->names[i]);
  close_fds(p);
  free_memory(p);
}

static int open_fds(lmp_pool_t *p)
{
  p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  p->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (p->efd < 0 || p->epfd < 0)
    return -errno;
  struct epoll_event ev = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
  if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->efd, &ev) < 0)
    return -errno;
  if (p->cfg.task_timeout_ns > 0) {
    p->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (p->tfd < 0)
      return -errno;
    ev.data.u32 = UINT32_MAX - 1;
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->tfd, &ev) < 0)
      return -errno;
  }
  return 0;
}

static int open_shared(lmp_pool_t *p)
{
  int n = p->cfg.processes, rc;
  size_t size = sizeof(struct phdr) + (size_t)n * sizeof(struct slot);
  if ((rc = lmp_seg_create(size, &p->seg)) < 0)
    return rc;
  p->h = lmp_seg_data(p->seg);
  p->h->magic = POOL_MAGIC;
  p->h->nslots = (uint32_t)n;
  p->h->maxtasks = p->cfg.maxtasksperchild;
  p->h->timed = p->cfg.task_timeout_ns > 0;
  p->h->max_memory = p->cfg.max_memory;
  if ((rc = lmp_queue_create(0, 0, &p->tasks)) < 0 ||
      (rc = lmp_queue_create(0, 0, &p->replies)) < 0)
    return rc;
  strncpy(p->names[0], lmp_seg_name(p->seg), LMP_SEG_NAME_MAX - 1);
  strncpy(p->names[1], lmp_seg_name(lmp_queue_seg(p->tasks)), LMP_SEG_NAME_MAX - 1);
  strncpy(p->names[2], lmp_seg_name(lmp_queue_seg(p->replies)), LMP_SEG_NAME_MAX - 1);
  return 0;
}

static void registry_add(lmp_pool_t *p);

int lmp_pool_create(const lmp_pool_config_t *cfg, lmp_pool_t **out)
{
  *out = NULL;
  if (cfg->processes < 1 || cfg->processes > 4096 || !(cfg->body || cfg->start) ||
      cfg->task_timeout_ns < 0)
    return -EINVAL;
  lmp_pool_t *p = calloc(1, sizeof *p);
  if (!p)
    return -ENOMEM;
  p->cfg = *cfg;
  uint64_t high = cfg->high_water ? cfg->high_water : CLAIMS;
  p->high = high > CLAIMS ? CLAIMS : (uint32_t)high;
  forget_inherited(NULL);
  p->owner = getpid();
  p->spin_ns = SPIN_START_NS;
  p->efd = p->epfd = p->tfd = -1;
  p->w = calloc((size_t)cfg->processes, sizeof *p->w);
  int rc = p->w ? 0 : -ENOMEM;
  if (rc == 0)
    rc = open_fds(p);
  if (rc == 0)
    rc = open_shared(p);
  if (rc < 0) {
    lmp_pool_free(p);
    return rc;
  }
  p->next = pools;
  pools = p;
  for (int i = 0; i < cfg->processes; i++) {
    if ((rc = spawn(p, i)) < 0) {
      kill_all(p);
      lmp_pool_free(p);
      return rc;
    }
  }
  p->last_check = lmp_now_ns();
  rate_sample(p, p->last_check, 0);
  registry_add(p);
  *out = p;
  return 0;
}

/* === a worker === */

/* The minimal pool of an attached worker. */
static void free_attached(lmp_pool_t *p)
{
  release_segments(p);
  if (p->efd >= 0)
    close(p->efd);
  free(p);
}

int lmp_pool_worker_attach(const char *ticket, lmp_pool_worker_t **out)
{
  *out = NULL;
  char names[3][LMP_SEG_NAME_MAX];
  int index;
  uint64_t token;
  if (sscanf(ticket, "%63s %63s %63s %d %" SCNu64, names[0], names[1], names[2], &index, &token) !=
      5)
    return -EINVAL;
  lmp_pool_t *p = calloc(1, sizeof *p);
  lmp_pool_worker_t *w = calloc(1, sizeof *w);
  if (!p || !w) {
    free(p);
    free(w);
    return -ENOMEM;
  }
  p->efd = p->epfd = p->tfd = -1;
  lmp_seg_t *seg[3] = {NULL, NULL, NULL};
  int rc = 0;
  for (int k = 0; k < 3 && rc == 0; k++)
    rc = lmp_seg_attach(names[k], 0, &seg[k]);
  if (rc == 0) {
    p->seg = seg[0];
    p->h = lmp_seg_data(p->seg);
    if (lmp_seg_size(p->seg) < sizeof *p->h || p->h->magic != POOL_MAGIC || index < 0 ||
        (uint32_t)index >= p->h->nslots ||
        lmp_seg_size(p->seg) < sizeof *p->h + (size_t)p->h->nslots * sizeof(struct slot))
      rc = -EINVAL;
  }
  if (rc == 0 && (rc = lmp_queue_open(seg[1], &p->tasks)) == 0)
    rc = lmp_queue_open(seg[2], &p->replies);
  if (rc == 0)
    rc = lmp_fd_fetch(token, &p->efd);
  for (int k = 1; k < 3; k++) /* the queues hold their own references */
    if (seg[k])
      lmp_seg_release(seg[k]);
  if (rc < 0) {
    free(w);
    p->seg = seg[0];
    free_attached(p);
    return rc;
  }
  p->cfg.processes = (int)p->h->nslots;
  p->cfg.maxtasksperchild = p->h->maxtasks;
  p->cfg.task_timeout_ns = p->h->timed;
  p->cfg.max_memory = p->h->max_memory;
  worker_init(w, p, index);
  *out = w;
  return 0;
}

/* Under the task ring's lock, as the record leaves it: publish it. */
static void taken(void *arg, uint32_t seq)
{
  lmp_pool_worker_t *w = arg;
  atomic_fetch_add_explicit(&w->p->h->taken, 1, memory_order_relaxed);
  uint64_t was = atomic_exchange(&w->p->h->claim[seq % CLAIMS], claim_mark(seq, TAKEN));
  w->skip = was == claim_mark(seq, CANCELLED);
  if (w->skip)
    return; /* cancelled while in the ring: the parent expects nothing of it */
  w->seq = seq;
  atomic_store_explicit(&w->slot->item, 0, memory_order_relaxed);
  atomic_store_explicit(&w->slot->start_ns, lmp_now_ns(), memory_order_relaxed);
  STORE(w->slot->word, slot_word(LMP_POOL_BUSY, seq));
}

struct task_wait {
  lmp_pool_t *p;
  uint32_t seq;
};

static int task_pushed(void *arg)
{
  struct task_wait *tw = arg;
  return atomic_load_explicit(&tw->p->h->tseq, memory_order_acquire) != tw->seq ||
         lmp_queue_closed(tw->p->tasks);
}

/*
 * Take the next task, waiting as long as it takes.  The queue's own get
 * would have every idle worker spin, then sleep on one condition variable;
 * here only one idle worker spins at a time (the one that became idle last,
 * likely still on a CPU) and the others sleep until the parent wakes one, so
 * idle workers leave the CPUs to those that work.
 */
static int wait_task(lmp_pool_worker_t *w)
{
  lmp_pool_t *p = w->p;
  struct phdr *h = p->h;
  int64_t waiting = 0;
  for (;;) {
    struct task_wait tw = {p, atomic_load(&h->tseq)};
    int rc = lmp_queue_get_hook(p->tasks, &w->buf, 0, taken, w);
    if (rc != -ETIMEDOUT) {
      if (rc == 0 && waiting)
        w->spin_ns = adapt_spin(w->spin_ns, lmp_now_ns() - waiting);
      return rc;
    }
    if (!waiting)
      waiting = lmp_now_ns();
    if (atomic_fetch_add(&h->spinners, 1) == 0) {
      int paid = spin_until(w->spin_ns, task_pushed, &tw);
      atomic_fetch_sub(&h->spinners, 1);
      if (paid)
        continue;
    } else {
      atomic_fetch_sub(&h->spinners, 1);
    }
    atomic_fetch_add(&h->sleepers, 1);
    if (!task_pushed(&tw)) {
      lmp_futex_wait((uint32_t *)&h->tseq, tw.seq, LMP_FOREVER);
      atomic_store(&h->waking, 0);
    }
    atomic_fetch_sub(&h->sleepers, 1);
  }
}

/* After a task: has this worker grown past max_memory?  It then retires
 * (its reply is out already) and the pool forks a fresh one. */
static int grown(lmp_pool_worker_t *w)
{
  uint64_t max = w->p->cfg.max_memory;
  lmp_proc_usage_t u;
  if (!max || !w->count || lmp_proc_usage(0, &u) < 0 || u.rss <= max)
    return 0;
  atomic_fetch_add(&w->p->h->recycled, 1);
  return 1;
}

int lmp_pool_worker_next(lmp_pool_worker_t *w, lmp_pool_task_t *t)
{
  lmp_pool_t *p = w->p;
  uint32_t max = p->cfg.maxtasksperchild;
  if ((max && w->count >= max) || grown(w)) {
    STORE(w->slot->word, slot_word(LMP_POOL_EXITING, 0));
    return -EPIPE;
  }
  if (!w->started) {
    w->started = 1;
    STORE(w->slot->word, slot_word(LMP_POOL_IDLE, 0));
  }
  int rc;
  do {
    rc = wait_task(w);
  } while (rc == 0 && (w->skip || w->buf.len < sizeof(struct thdr))); /* short: cannot happen */
  if (rc < 0) {
    STORE(w->slot->word, slot_word(LMP_POOL_EXITING, 0));
    return rc;
  }
  /* More waiting and nobody about to take it: wake a sibling. */
  struct phdr *h = p->h;
  if (atomic_load_explicit(&h->sleepers, memory_order_relaxed) && lmp_queue_qsize(p->tasks) &&
      !atomic_load_explicit(&h->spinners, memory_order_relaxed))
    wake_one(h);
  struct thdr hd;
  memcpy(&hd, w->buf.data, sizeof hd);
  atomic_store_explicit(&w->slot->task, hd.id, memory_order_relaxed);
  t->tag = hd.tag;
  t->data = w->buf.data + sizeof hd;
  t->len = w->buf.len - sizeof hd;
  return 0;
}

static int push_reply(lmp_pool_worker_t *w, uint32_t kind, uint32_t status, const struct iovec *iov,
                      int n)
{
  if (n < 0 || n > MAX_PARTS)
    return -EINVAL;
  struct rhdr hd = {w->seq, kind, status, (int32_t)w->pid};
  struct iovec v[MAX_PARTS + 1];
  v[0].iov_base = &hd;
  v[0].iov_len = sizeof hd;
  if (n)
    memcpy(v + 1, iov, (size_t)n * sizeof *iov);
  int rc = lmp_queue_putv(w->p->replies, v, n + 1, LMP_FOREVER);
  if (rc == 0)
    notify(w->p);
  return rc;
}

int lmp_pool_worker_reply(lmp_pool_worker_t *w, uint32_t status, const struct iovec *iov,
                          int iovcnt)
{
  /* Counted first, so whoever reads the reply finds it counted. */
  if (!LMP_POOL_STATUS_FAILED(status))
    atomic_fetch_add(&w->slot->done, 1);
  else
    atomic_fetch_add(&w->slot->failed, 1);
  int rc = push_reply(w, R_DONE, status, iov, iovcnt);
  if (rc < 0)
    return rc;
  /* Only now idle: a death before this line finds the reply in the ring. */
  STORE(w->slot->word, slot_word(LMP_POOL_IDLE, w->seq));
  w->count++;
  return 0;
}

void lmp_pool_worker_progress(lmp_pool_worker_t *w, uint32_t item)
{
  atomic_store_explicit(&w->slot->item, item, memory_order_relaxed);
  if (w->p->cfg.task_timeout_ns > 0)
    atomic_store_explicit(&w->slot->start_ns, lmp_now_ns(), memory_order_release);
}

int lmp_pool_worker_fail_init(lmp_pool_worker_t *w, const void *data, size_t len)
{
  struct iovec v = {(void *)data, len};
  return push_reply(w, R_INIT_FAILED, 0, &v, 1);
}

void lmp_pool_worker_release(lmp_pool_worker_t *w)
{
  if (!w)
    return;
  lmp_buf_free(&w->buf);
  free_attached(w->p);
  free(w);
}

int lmp_pool_worker_index(const lmp_pool_worker_t *w)
{
  return w->index;
}

int lmp_pool_worker_timed(const lmp_pool_worker_t *w)
{
  return w->p->cfg.task_timeout_ns > 0;
}

/* === the registry of pools, and observers ===
 *
 * The registry is one segment per runtime root, "<prefix>.pools": a fixed
 * table of entries that processes of the family claim with a compare-and-
 * swap (0 free, 1 being written, 2 live).  All zeroes is an empty table, so
 * whoever comes first creates it and everyone truncates it to the same size:
 * nobody has to initialize it.  The root's cleanup (and the watchdog) unlink
 * it with the rest of the prefix.  Observers map it, and the pool headers it
 * names, read-only; the pools never wait for them.
 */

#define REG_ENTRIES 256

struct reg_entry {
  _Atomic uint32_t state;
  _Atomic int32_t owner;
  char name[LMP_SEG_NAME_MAX - 8];
};
_Static_assert(sizeof(struct reg_entry) == 64, "one line per entry");

static struct reg_entry *registry; /* this family's, mapped once per process */

static struct reg_entry *registry_map(void)
{
  if (registry)
    return registry;
  char name[LMP_SEG_NAME_MAX];
  size_t size = REG_ENTRIES * sizeof(struct reg_entry);
  if (snprintf(name, sizeof name, "%s%s", lmp_runtime_prefix(), LMP__POOLS_SUFFIX) >=
      (int)sizeof name)
    return NULL;
  int fd = shm_open(name, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0)
    return NULL;
  struct stat st;
  void *m = MAP_FAILED;
  int rc = -1;
  /* Planted by someone else, or left open to others: not ours to write.
   * The store is reserved (posix_fallocate, not ftruncate), so a full
   * /dev/shm means no registry, never a SIGBUS at first touch. */
  if (fstat(fd, &st) == 0 && lmp__owner_only(&st))
    while ((rc = posix_fallocate(fd, 0, (off_t)size)) == EINTR) {
    }
  if (rc == 0)
    m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (m != MAP_FAILED)
    registry = m;
  return registry;
}

static void registry_add(lmp_pool_t *p)
{
  struct reg_entry *r = registry_map();
  const char *name = p->names[0];
  if (!r || strlen(name) >= sizeof r->name)
    return;
  for (int i = 0; i < REG_ENTRIES; i++) {
    uint32_t free = 0;
    if (atomic_compare_exchange_strong(&r[i].state, &free, 1)) {
      atomic_store(&r[i].owner, (int32_t)p->owner);
      memset(r[i].name, 0, sizeof r[i].name);
      strcpy(r[i].name, name);
      STORE(r[i].state, 2);
      p->listed = 1;
      return;
    }
  }
}

static void registry_remove(lmp_pool_t *p)
{
  if (!p->listed || !registry || p->owner != getpid())
    return;
  for (int i = 0; i < REG_ENTRIES; i++) {
    struct reg_entry *e = &registry[i];
    if (LOAD(e->state) == 2 && LOAD(e->owner) == (int32_t)p->owner &&
        strncmp(e->name, p->names[0], sizeof e->name) == 0) {
      STORE(e->state, 0);
      break;
    }
  }
  p->listed = 0;
}

static int alive(pid_t pid)
{
  return pid > 0 && (kill(pid, 0) == 0 || errno == EPERM);
}

/* The root of a /dev/shm entry "lmp.<root>.<8 hex>..." and the length of
 * its prefix part, or 0. */
static pid_t entry_root(const char *d, size_t *plen)
{
  if (strncmp(d, "lmp.", 4) != 0)
    return 0;
  char *end;
  long root = strtol(d + 4, &end, 10);
  if (end == d + 4 || *end != '.' || root <= 0 || root > INT_MAX)
    return 0;
  size_t k = (size_t)(end - d) + 1, n = 0;
  while (n < 8 && ((d[k + n] >= '0' && d[k + n] <= '9') || (d[k + n] >= 'a' && d[k + n] <= 'f')))
    n++;
  if (n != 8 || (d[k + n] != '.' && d[k + n] != '\0'))
    return 0;
  *plen = k + n;
  return (pid_t)root;
}

/* Call fn for each live, owner-only entry of this user in /dev/shm whose
 * name is an lmp prefix followed by `suffix` (any suffix with NULL). */
static int scan_shm(const char *suffix, int (*fn)(const char *name, pid_t root, void *arg),
                    void *arg)
{
  DIR *dir = opendir("/dev/shm");
  if (!dir)
    return -errno;
  int fd = dirfd(dir), rc = 0;
  struct dirent *d;
  while (rc == 0 && (d = readdir(dir)) != NULL) {
    size_t plen;
    pid_t root = entry_root(d->d_name, &plen);
    struct stat st;
    if (!root || (suffix && strcmp(d->d_name + plen, suffix) != 0))
      continue;
    if (fstatat(fd, d->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !lmp__owner_only(&st) ||
        !alive(root))
      continue;
    rc = fn(d->d_name, root, arg);
  }
  closedir(dir);
  return rc;
}

struct programs {
  pid_t *out;
  int max, n;
};

static int add_program(const char *name, pid_t root, void *arg)
{
  (void)name;
  struct programs *pr = arg;
  int seen = 0;
  for (int i = 0; i < pr->n && i < pr->max && !seen; i++)
    seen = pr->out[i] == root;
  if (!seen) {
    if (pr->n < pr->max)
      pr->out[pr->n] = root;
    pr->n++;
  }
  return 0;
}

int lmp_pool_programs(pid_t *out, int max)
{
  struct programs pr = {out, max, 0};
  int rc = scan_shm(NULL, add_program, &pr);
  return rc < 0 ? rc : pr.n;
}

struct listing {
  pid_t pid;
  lmp_pool_entry_t *out;
  int max, n;
};

static int add_pools(const char *name, pid_t root, void *arg)
{
  struct listing *ls = arg;
  char path[LMP_SEG_NAME_MAX + 1];
  snprintf(path, sizeof path, "/%s", name);
  int fd = shm_open(path, O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0)
    return 0;
  size_t size = REG_ENTRIES * sizeof(struct reg_entry);
  struct stat st;
  void *m = MAP_FAILED;
  if (fstat(fd, &st) == 0 && lmp__owner_only(&st) && (size_t)st.st_size >= size)
    m = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (m == MAP_FAILED)
    return 0;
  const struct reg_entry *r = m;
  for (int i = 0; i < REG_ENTRIES; i++) {
    if (LOAD(((struct reg_entry *)r)[i].state) != 2)
      continue;
    pid_t owner = atomic_load_explicit(&((struct reg_entry *)r)[i].owner, memory_order_relaxed);
    if ((ls->pid && ls->pid != root && ls->pid != owner) || !alive(owner))
      continue;
    if (ls->n < ls->max) {
      lmp_pool_entry_t *e = &ls->out[ls->n];
      e->root = root;
      e->owner = owner;
      memcpy(e->name, r[i].name, sizeof r[i].name);
      e->name[sizeof r[i].name - 1] = '\0';
    }
    ls->n++;
  }
  munmap(m, size);
  return 0;
}

int lmp_pool_list(pid_t pid, lmp_pool_entry_t *out, int max)
{
  struct listing ls = {pid, out, max, 0};
  int rc = scan_shm(LMP__POOLS_SUFFIX, add_pools, &ls);
  return rc < 0 ? rc : ls.n;
}

int lmp_pool_peek(const char *name, lmp_pool_stats_t *st, lmp_pool_slot_info_t *slots, int max)
{
  const void *data;
  size_t size;
  int rc = lmp_seg_peek(name, &data, &size);
  if (rc < 0)
    return rc;
  struct phdr *h = (struct phdr *)data;
  uint32_t n = h->magic == POOL_MAGIC ? h->nslots : 0;
  if (n == 0 || n > (size - sizeof *h) / sizeof(struct slot)) {
    lmp_seg_unpeek(data, size);
    return -EINVAL;
  }
  read_counts(h, st, slots, max);
  lmp_seg_unpeek(data, size);
  return (int)n;
}

/*
 * syncobj.c -- process-shared Lock, RLock, Semaphore, Event, Condition and
 * Barrier, on the robust mutex and the futex primitives of mutex.c.
 *
 * Lock and RLock are one struct: a robust mutex plus the holder's thread id
 * and a hold count.  The mutex does the waiting and its robustness does the
 * rest: a holder that dies hands the lock to the next acquirer with
 * -EOWNERDEAD.  The owner word answers "do I hold it?" without a system
 * call (release, RLock recursion, condition waits); since only the holder
 * writes its own id there, a thread reading its own id knows it holds the
 * lock, save in one case -- a dead holder's id reused by a new thread --
 * which the mutex settles: a robust unlock refuses a thread that is not its
 * holder, and a trylock says EBUSY to the real holder only.
 * A pthread mutex can only be unlocked by the thread that locked it, so a
 * Lock, unlike Python's semaphore-based one, cannot be released by another
 * process; that is reported (-EPERM), never attempted.
 *
 * Semaphore and Event are a futex word each, with a count of sleepers so
 * that a release or a set with nobody asleep makes no system call.  They
 * keep no per-waiter state, so a waiter killed in its sleep is simply gone.
 * One window remains: a semaphore waiter killed after the kernel woke it and
 * before it took its unit takes that wake-up with it.  Sleepers therefore
 * wake at least once a second (SLICE_NS) to look again: the unit is never
 * stranded, at worst late.
 *
 * Condition counts instead of queueing: `tally` holds the waiters not yet
 * notified and the notifications not yet collected.  notify(n) moves at
 * most n from the first count to the second, bumps the futex word and wakes
 * as many sleepers; a waiter leaves only by collecting a notification (it
 * was notified) or, at its deadline, by taking itself off the first count.
 * So no notify wakes more than n waiters, and a waiter that registered
 * after a notify never collects it: it sleeps on the value of the word it
 * read when it registered, under the lock, and only a later notify moves it.
 * A waiter killed while waiting blocks nobody (a futex wake goes to live
 * sleepers only, and any live waiter can collect any notification), but it
 * stays counted: a notify may grant it a notification nobody collects until
 * the next notify, which may then let one waiter more than asked through.
 * Each killed waiter can cause that once.
 *
 * Barrier is Python's threading.Barrier turned into generations: arrival
 * number k of generation g takes index k; the last arrival runs the action
 * and ends the generation (g + 1), and a waiter of generation g leaves when
 * the generation number moves, reading whether g passed or broke in a
 * 64-generation history word.  There is no draining phase (Python waits for
 * every waiter of a generation to leave before the next may fill), which is
 * what lets a waiter killed in its wait be harmless: it counts as arrived,
 * and the survivors pass when the remaining parties come.  The action runs
 * outside the barrier's mutex with a second robust mutex held, so a process
 * killed in the action is noticed by the others (they look at least once a
 * second) and breaks the barrier instead of hanging it.
 *
 * Waits spin for about as long as a kernel wake-up costs before sleeping,
 * as mutex.c explains.
 */
#include "lmp/syncobj.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#ifndef LMP__SYNC_SPIN_NS
#define LMP__SYNC_SPIN_NS 20000 /* how long a waiter watches its word */
#endif
#define SLICE_NS 1000000000 /* longest sleep between two looks */

#define LOAD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

/* === helpers === */

/* The calling thread's ids, cached (getpid and gettid are system calls) and
 * forgotten in a forked child, whose ids are new. */
static __thread pid_t my_tid, my_pid;
static pthread_once_t ids_once = PTHREAD_ONCE_INIT;

static void ids_forget(void)
{
  my_tid = 0;
}

static void ids_register(void)
{
  pthread_atfork(NULL, NULL, ids_forget);
}

static pid_t self_tid(void)
{
  if (my_tid == 0) {
    pthread_once(&ids_once, ids_register);
    my_tid = gettid();
    my_pid = getpid();
  }
  return my_tid;
}

static int expired(int64_t deadline)
{
  return deadline != LMP_FOREVER && lmp_now_ns() >= deadline;
}

/* The end of the next sleep: the deadline, or one slice from now. */
static int64_t slice_end(int64_t deadline)
{
  int64_t t = lmp_now_ns() + SLICE_NS;
  return t < deadline ? t : deadline;
}

static void sleep_until(int64_t deadline)
{
  struct timespec ts = lmp__deadline_ts(deadline);
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
  }
}

/* Watch *word for a short while; 1 as soon as it no longer holds v. */
static int spin_while(uint32_t *word, uint32_t v, int64_t deadline)
{
  int64_t until = lmp_now_ns() + LMP__SYNC_SPIN_NS;
  int i;

  if (until > deadline)
    until = deadline;
  for (;;) {
    for (i = 0; i < 32; i++) {
      if (LOAD(word) != v)
        return 1;
      lmp__cpu_relax();
    }
    if (lmp_now_ns() >= until)
      return 0;
  }
}

/* === Lock and RLock === */

int lmp_lock_init(lmp_lock_t *l, int recursive)
{
  l->owner = 0;
  l->owner_pid = 0;
  l->count = 0;
  l->recursive = recursive != 0;
  l->abandoned = 0;
  l->pad = 0;
  return lmp_mutex_init(&l->m);
}

void lmp_lock_destroy(lmp_lock_t *l)
{
  lmp_mutex_destroy(&l->m);
}

/* The caller (thread tid: self_tid has set my_pid too) has just locked the
 * mutex (rc 0 or -EOWNERDEAD): record it. */
static int took(lmp_lock_t *l, int rc, pid_t tid)
{
  if (l->abandoned) {
    rc = -EOWNERDEAD;
    l->abandoned = 0;
  }
  l->count = 1;
  l->owner_pid = my_pid;
  STORE(&l->owner, tid);
  return rc;
}

/* Forget the holder and unlock; a dead holder's death (-EOWNERDEAD) is
 * kept for the next acquirer to hear of. */
static void let_go(lmp_lock_t *l, int rc)
{
  if (rc == -EOWNERDEAD)
    l->abandoned = 1;
  l->count = 0;
  l->owner_pid = 0;
  STORE(&l->owner, 0);
  lmp_mutex_unlock(&l->m);
}

/* 1 if the caller holds l.  A trylock that succeeds means the owner word
 * was a dead thread's: the lock goes back as it was found. */
static int held(lmp_lock_t *l)
{
  int rc;

  if (LOAD(&l->owner) != self_tid())
    return 0;
  rc = lmp_mutex_trylock(&l->m);
  if (rc == -EBUSY)
    return 1;
  if (rc == 0 || rc == -EOWNERDEAD)
    let_go(l, rc);
  return 0;
}

int lmp_lock_acquire(lmp_lock_t *l, int64_t deadline)
{
  pid_t tid = self_tid();
  int rc;

  if (LOAD(&l->owner) == tid) {
    rc = lmp_mutex_trylock(&l->m);
    if (rc == 0 || rc == -EOWNERDEAD)
      return took(l, rc, tid); /* a dead thread's id, not ours */
    if (rc != -EBUSY)
      return rc;
    if (l->recursive) {
      if (l->count == UINT32_MAX)
        return -EOVERFLOW;
      l->count++;
      return 0;
    }
    /* Only this thread could release it. */
    if (deadline == LMP_FOREVER)
      return -EDEADLK;
    sleep_until(deadline);
    return -ETIMEDOUT;
  }
  /* A free lock is the common case: one trylock, no spin set up. */
  rc = lmp_mutex_trylock(&l->m);
  if (rc == -EBUSY)
    rc = lmp_mutex_lock_intr(&l->m, deadline);
  return rc == 0 || rc == -EOWNERDEAD ? took(l, rc, tid) : rc;
}

int lmp_lock_release(lmp_lock_t *l)
{
  if (LOAD(&l->owner) != self_tid())
    return -EPERM;
  if (l->count > 1) {
    if (!held(l))
      return -EPERM;
    l->count--;
    return 0;
  }
  /* The unlock checks the holder itself (robust mutexes do), so a dead
   * thread's id that happens to be ours is refused there, at no extra
   * cost to the common case. */
  l->count = 0;
  l->owner_pid = 0;
  STORE(&l->owner, 0);
  return pthread_mutex_unlock(&l->m.m) == 0 ? 0 : -EPERM;
}

int lmp_lock_locked(lmp_lock_t *l)
{
  int rc;

  if (LOAD(&l->owner) == 0)
    return 0;
  rc = lmp_mutex_trylock(&l->m);
  if (rc == -EBUSY)
    return 1;
  if (rc == 0 || rc == -EOWNERDEAD)
    let_go(l, rc); /* its holder is gone */
  return 0;
}

int lmp_lock_owned(lmp_lock_t *l)
{
  return held(l);
}

pid_t lmp_lock_owner(lmp_lock_t *l)
{
  return lmp_lock_locked(l) ? l->owner_pid : 0;
}

int lmp_lock_abandon(lmp_lock_t *l)
{
  if (!held(l))
    return -EPERM;
  let_go(l, -EOWNERDEAD);
  return 0;
}

int lmp_lock_release_save(lmp_lock_t *l, uint32_t *count)
{
  if (!held(l))
    return -EPERM;
  *count = l->count;
  let_go(l, 0);
  return 0;
}

int lmp_lock_acquire_restore(lmp_lock_t *l, uint32_t count, int64_t deadline)
{
  int rc = lmp_lock_acquire(l, deadline);
  if (rc == 0 || rc == -EOWNERDEAD)
    l->count = count;
  return rc;
}

/* === Semaphore === */

int lmp_sem_init(lmp_sem_t *s, uint32_t value, uint32_t max)
{
  if (max > LMP_SEM_VALUE_MAX || value > max)
    return -EINVAL;
  s->max = max;
  s->waiters = 0;
  s->pad = 0;
  STORE(&s->value, value);
  return 0;
}

static int sem_take(lmp_sem_t *s)
{
  uint32_t v = __atomic_load_n(&s->value, __ATOMIC_RELAXED);
  while (v > 0)
    if (__atomic_compare_exchange_n(&s->value, &v, v - 1, 1, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
      return 1;
  return 0;
}

int lmp_sem_acquire(lmp_sem_t *s, int64_t deadline)
{
  int spun = 0, rc = 0;

  for (;;) {
    if (sem_take(s))
      return 0;
    if (rc < 0 && rc != -ETIMEDOUT)
      return rc;
    if (expired(deadline))
      return -ETIMEDOUT;
    if (!spun++ && spin_while(&s->value, 0, deadline))
      continue;
    /* waiters goes up before the kernel compares the value, and release
     * raises the value before it reads waiters: one sees the other. */
    __atomic_add_fetch(&s->waiters, 1, __ATOMIC_SEQ_CST);
    rc = lmp_futex_wait(&s->value, 0, slice_end(deadline));
    __atomic_sub_fetch(&s->waiters, 1, __ATOMIC_SEQ_CST);
  }
}

int lmp_sem_release(lmp_sem_t *s, uint32_t n)
{
  uint32_t v = __atomic_load_n(&s->value, __ATOMIC_RELAXED);

  do {
    if ((uint64_t)v + n > s->max)
      return -EOVERFLOW;
  } while (
      !__atomic_compare_exchange_n(&s->value, &v, v + n, 1, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
  if (n > 0 && __atomic_load_n(&s->waiters, __ATOMIC_SEQ_CST) > 0)
    lmp_futex_wake(&s->value, n > INT_MAX ? INT_MAX : (int)n);
  return 0;
}

uint32_t lmp_sem_value(lmp_sem_t *s)
{
  return LOAD(&s->value);
}

/* === Event === */

void lmp_event_init(lmp_event_t *e)
{
  e->waiters = 0;
  STORE(&e->word, 0);
}

void lmp_event_set(lmp_event_t *e)
{
  uint32_t w = __atomic_load_n(&e->word, __ATOMIC_RELAXED);

  do {
    if (w & 1)
      return;
  } while (!__atomic_compare_exchange_n(&e->word, &w, (w + 2) | 1, 1, __ATOMIC_SEQ_CST,
                                        __ATOMIC_RELAXED));
  if (__atomic_load_n(&e->waiters, __ATOMIC_SEQ_CST) > 0)
    lmp_futex_wake(&e->word, INT_MAX);
}

void lmp_event_clear(lmp_event_t *e)
{
  __atomic_and_fetch(&e->word, ~1u, __ATOMIC_SEQ_CST);
}

int lmp_event_is_set(lmp_event_t *e)
{
  return LOAD(&e->word) & 1;
}

/* While the flag is clear only a set changes the word, so any change seen
 * means a set happened since the wait began. */
int lmp_event_wait(lmp_event_t *e, int64_t deadline)
{
  uint32_t w = LOAD(&e->word);
  int rc;

  if ((w & 1) || spin_while(&e->word, w, deadline))
    return 0;
  __atomic_add_fetch(&e->waiters, 1, __ATOMIC_SEQ_CST);
  do
    rc = lmp_futex_wait(&e->word, w, deadline);
  while (rc == 0 && LOAD(&e->word) == w);
  __atomic_sub_fetch(&e->waiters, 1, __ATOMIC_SEQ_CST);
  if (LOAD(&e->word) != w)
    rc = 0;
  return rc;
}

/* === Condition === */

#define TALLY_NOTIFIED (UINT64_C(1) << 32)

void lmp_condition_init(lmp_condition_t *c)
{
  c->seq = 0;
  c->pad = 0;
  STORE(&c->tally, 0);
}

/* Collect a notification: 1 if there was one.  `leaving` (the deadline
 * passed): without one, stop being counted as waiting. */
static int collect(lmp_condition_t *c, int leaving)
{
  uint64_t t = __atomic_load_n(&c->tally, __ATOMIC_RELAXED), next;

  do {
    if (t >= TALLY_NOTIFIED)
      next = t - TALLY_NOTIFIED;
    else if (leaving && (uint32_t)t > 0)
      next = t - 1;
    else
      return 0;
  } while (
      !__atomic_compare_exchange_n(&c->tally, &t, next, 1, __ATOMIC_SEQ_CST, __ATOMIC_RELAXED));
  return t >= TALLY_NOTIFIED;
}

int lmp_condition_wait(lmp_condition_t *c, lmp_lock_t *l, int64_t deadline, int *owner_died)
{
  uint32_t seq, count;
  int rc;

  if (owner_died)
    *owner_died = 0;
  if (!held(l))
    return -EPERM;
  /* Both under the lock, which notify needs too: a notify comes before
   * both (and is not ours) or after both (and moves seq). */
  __atomic_add_fetch(&c->tally, 1, __ATOMIC_SEQ_CST);
  seq = __atomic_load_n(&c->seq, __ATOMIC_SEQ_CST);
  lmp_lock_release_save(l, &count);
  for (;;) {
    rc = spin_while(&c->seq, seq, deadline) ? 0 : lmp_futex_wait(&c->seq, seq, deadline);
    if (rc != 0) {
      rc = collect(c, 1) ? 0 : rc;
      break;
    }
    /* Read the word before looking for a notification: one that comes
     * after the look moves the word past this value. */
    seq = __atomic_load_n(&c->seq, __ATOMIC_SEQ_CST);
    if (collect(c, 0))
      break;
  }
  if (lmp_lock_acquire_restore(l, count, LMP_FOREVER) == -EOWNERDEAD && owner_died)
    *owner_died = 1;
  return rc;
}

int lmp_condition_notify(lmp_condition_t *c, lmp_lock_t *l, uint32_t n)
{
  uint64_t t, next;
  uint32_t k;

  if (!held(l))
    return -EPERM;
  t = __atomic_load_n(&c->tally, __ATOMIC_RELAXED);
  do {
    k = (uint32_t)t < n ? (uint32_t)t : n;
    next = t - k + (uint64_t)k * TALLY_NOTIFIED;
  } while (k > 0 && !__atomic_compare_exchange_n(&c->tally, &t, next, 1, __ATOMIC_SEQ_CST,
                                                 __ATOMIC_RELAXED));
  if (k == 0)
    return 0;
  __atomic_add_fetch(&c->seq, 1, __ATOMIC_SEQ_CST);
  lmp_futex_wake(&c->seq, k > INT_MAX ? INT_MAX : (int)k);
  return k > INT_MAX ? INT_MAX : (int)k;
}

/* === Barrier === */

int lmp_barrier_init(lmp_barrier_t *b, uint32_t parties)
{
  int rc;

  if (parties == 0)
    return -EINVAL;
  b->parties = parties;
  b->count = b->gen = b->broken = b->acting = b->pad = 0;
  b->history = 0;
  lmp_cond_init(&b->cv);
  if ((rc = lmp_mutex_init(&b->m)) < 0)
    return rc;
  if ((rc = lmp_mutex_init(&b->running)) < 0)
    lmp_mutex_destroy(&b->m);
  return rc;
}

void lmp_barrier_destroy(lmp_barrier_t *b)
{
  lmp_mutex_destroy(&b->running);
  lmp_mutex_destroy(&b->m);
}

/* The rest of this section runs with b->m held. */

static void bar_end(lmp_barrier_t *b, int broken)
{
  uint64_t bit = UINT64_C(1) << (b->gen % 64);
  b->history = broken ? b->history | bit : b->history & ~bit;
  b->gen++;
  b->count = 0;
  lmp_cond_broadcast(&b->cv);
}

static void bar_break(lmp_barrier_t *b)
{
  b->broken = 1;
  bar_end(b, 1);
}

/* Did generation g (ended) break?  Past the history, go by the present. */
static int bar_broke(lmp_barrier_t *b, uint32_t g)
{
  if (b->gen - g > 64)
    return b->broken != 0;
  return (b->history >> (g % 64)) & 1;
}

/* While the action runs its runner holds `running`: a trylock that gets
 * through means the runner died in it. */
static void bar_check_runner(lmp_barrier_t *b)
{
  int rc;

  if (!b->acting)
    return;
  rc = lmp_mutex_trylock(&b->running);
  if (rc == -EBUSY)
    return;
  if (rc == 0 || rc == -EOWNERDEAD)
    lmp_mutex_unlock(&b->running);
  b->acting = 0;
  bar_break(b);
}

/* A process that died holding m may have left the fields half-written. */
static void bar_lock(lmp_barrier_t *b)
{
  if (lmp_mutex_lock(&b->m, LMP_FOREVER) == -EOWNERDEAD) {
    bar_check_runner(b);
    bar_break(b);
  }
}

/* 0, or -EINTR when ^C asks the wait to stop. */
static int bar_sleep(lmp_barrier_t *b, int64_t deadline)
{
  int rc = lmp_cond_wait(&b->cv, &b->m, slice_end(deadline));
  if (rc == -EOWNERDEAD)
    bar_break(b);
  bar_check_runner(b);
  return rc == -EINTR ? rc : 0;
}

/* The last arrival: run the action, end the generation. */
static int bar_last(lmp_barrier_t *b, uint32_t gen, int index, lmp_barrier_action_fn action,
                    void *arg)
{
  int failed;

  if (action) {
    b->acting = 1;
    lmp_mutex_lock(&b->running, LMP_FOREVER); /* free, or a dead runner's */
    lmp_mutex_unlock(&b->m);
    failed = action(arg) != 0;
    bar_lock(b);
    b->acting = 0;
    lmp_mutex_unlock(&b->running);
    lmp_cond_broadcast(&b->cv); /* arrivals of the next generation wait for this */
    if (b->gen != gen)          /* broken or reset meanwhile */
      return failed ? -ECANCELED : -EPIPE;
    if (failed) {
      bar_break(b);
      return -ECANCELED;
    }
  }
  bar_end(b, 0);
  return index;
}

int lmp_barrier_wait(lmp_barrier_t *b, int64_t deadline, lmp_barrier_action_fn action, void *arg)
{
  uint32_t gen;
  int index, rc;

  bar_lock(b);
  /* The previous generation is complete but its action still runs. */
  while (b->acting && !b->broken) {
    if (expired(deadline)) {
      bar_break(b);
      rc = -ETIMEDOUT;
      goto out;
    }
    if (bar_sleep(b, deadline) == -EINTR) {
      rc = -EINTR; /* not counted in yet: the barrier is as it was */
      goto out;
    }
  }
  if (b->broken) {
    rc = -EPIPE;
    goto out;
  }
  gen = b->gen;
  index = (int)b->count++;
  if (b->count == b->parties) {
    rc = bar_last(b, gen, index, action, arg);
    goto out;
  }
  for (;;) {
    if (b->gen != gen) {
      rc = bar_broke(b, gen) ? -EPIPE : index;
      break;
    }
    if (expired(deadline)) {
      bar_break(b);
      rc = -ETIMEDOUT;
      break;
    }
    if (bar_sleep(b, deadline) == -EINTR) {
      bar_break(b); /* it leaves, as a timeout does: the others must not wait for it */
      rc = -EINTR;
      break;
    }
  }
out:
  lmp_mutex_unlock(&b->m);
  return rc;
}

void lmp_barrier_reset(lmp_barrier_t *b)
{
  bar_lock(b);
  if (b->count > 0)
    bar_end(b, 1);
  b->broken = 0;
  lmp_mutex_unlock(&b->m);
}

void lmp_barrier_abort(lmp_barrier_t *b)
{
  bar_lock(b);
  bar_break(b);
  lmp_mutex_unlock(&b->m);
}

uint32_t lmp_barrier_n_waiting(lmp_barrier_t *b)
{
  uint32_t n;

  bar_lock(b);
  n = b->broken ? 0 : b->count;
  lmp_mutex_unlock(&b->m);
  return n;
}

int lmp_barrier_broken(lmp_barrier_t *b)
{
  return LOAD(&b->broken) != 0;
}

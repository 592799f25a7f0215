/*
 * mutex.c -- robust process-shared mutex and condition variable.
 *
 * The mutex is a pthread mutex made PTHREAD_PROCESS_SHARED and
 * PTHREAD_MUTEX_ROBUST: glibc records held robust mutexes in a per-thread
 * list the kernel walks when the thread dies, so the next locker gets
 * EOWNERDEAD instead of waiting forever.  We make the mutex consistent on the
 * spot and report -EOWNERDEAD with the lock held: the caller learns that the
 * data it guards may be half-updated, and the lock keeps working.
 *
 * The condition variable is not a pthread condvar, whose waiter bookkeeping
 * lives in the shared struct: a waiter killed at the wrong moment can leave it
 * absorbing wake-ups meant for others.  Ours is a futex sequence counter: a
 * waiter sleeps while the counter still holds the value it read under the
 * mutex, and a signal bumps the counter and wakes sleepers.  A dead waiter
 * leaves nothing behind but a stale `waiters` count, which only costs a
 * signaller one needless system call.
 *
 * Waits spin briefly before sleeping, because a cross-process futex wake-up
 * costs tens of microseconds while a hand-off between two running processes
 * takes well under one.  Deadlines are absolute CLOCK_MONOTONIC nanoseconds;
 * EINTR is absorbed here unless the program asks for its waits to stop
 * (lmp__interrupted): then the futex wait returns -EINTR.
 */
#include "lmp/mutex.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"
#include "lmp/common.h"

/* Spin budgets.  A waiter that spins about as long as a kernel wake-up
 * would cost never loses more than twice what the best choice would have
 * cost, and wins a ~1 us hand-off whenever the other side is running. */
#ifndef LMP__MUTEX_SPIN
#define LMP__MUTEX_SPIN 100 /* trylock attempts before sleeping */
#endif
#define LMP__MUTEX_SLICE_NS 100000000LL /* an interruptible lock wait asks this often */
#ifndef LMP__COND_SPIN_NS
#define LMP__COND_SPIN_NS 20000 /* how long a waiter watches the counter */
#endif

/* === mutex === */

int lmp_mutex_init(lmp_mutex_t *m)
{
  pthread_mutexattr_t a;
  int rc;

  if ((rc = pthread_mutexattr_init(&a)) != 0)
    return -rc;
  rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  if (rc == 0)
    rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  if (rc == 0)
    rc = pthread_mutex_init(&m->m, &a);
  pthread_mutexattr_destroy(&a);
  return -rc;
}

void lmp_mutex_destroy(lmp_mutex_t *m)
{
  pthread_mutex_destroy(&m->m);
}

/* Map a pthread result; EOWNERDEAD means we hold the lock now, and the
 * mutex is made usable again before anyone else can see it. */
static int mutex_result(lmp_mutex_t *m, int rc)
{
  if (rc == EOWNERDEAD) {
    pthread_mutex_consistent(&m->m);
    return -EOWNERDEAD;
  }
  return -rc;
}

int lmp_mutex_trylock(lmp_mutex_t *m)
{
  return mutex_result(m, pthread_mutex_trylock(&m->m));
}

static int mutex_spin(lmp_mutex_t *m)
{
  int i, rc;

  for (i = 0; i < LMP__MUTEX_SPIN; i++) {
    rc = pthread_mutex_trylock(&m->m);
    if (rc != EBUSY)
      return mutex_result(m, rc);
    lmp__cpu_relax();
  }
  return -EBUSY;
}

static int mutex_sleep(lmp_mutex_t *m, int64_t deadline)
{
  struct timespec ts;

  if (deadline == LMP_FOREVER)
    return mutex_result(m, pthread_mutex_lock(&m->m));
  ts = lmp__deadline_ts(deadline);
  return mutex_result(m, pthread_mutex_clocklock(&m->m, CLOCK_MONOTONIC, &ts));
}

int lmp_mutex_lock(lmp_mutex_t *m, int64_t deadline)
{
  int rc = mutex_spin(m);
  return rc != -EBUSY ? rc : mutex_sleep(m, deadline);
}

int lmp_mutex_lock_intr(lmp_mutex_t *m, int64_t deadline)
{
  int rc = mutex_spin(m);

  if (rc != -EBUSY || !lmp__interruptible())
    return rc != -EBUSY ? rc : mutex_sleep(m, deadline);
  /* glibc's robust mutexes retry on EINTR: sleep in slices and ask
   * between them whether ^C wants the wait to stop. */
  for (;;) {
    int64_t slice = lmp_now_ns() + LMP__MUTEX_SLICE_NS;
    int64_t until = slice < deadline ? slice : deadline;
    rc = mutex_sleep(m, until);
    if (rc != -ETIMEDOUT || until == deadline)
      return rc;
    if (lmp__interrupted())
      return -EINTR;
  }
}

void lmp_mutex_unlock(lmp_mutex_t *m)
{
  /* EPERM: not held by this thread.  Misuse is a bug in the caller, and
   * carrying on would corrupt whatever the lock protects. */
  if (pthread_mutex_unlock(&m->m) != 0)
    abort();
}

/* === futex === */

int lmp_futex_wait(uint32_t *word, uint32_t expected, int64_t deadline)
{
  struct timespec ts, *tsp = NULL;
  long rc;

  if (deadline != LMP_FOREVER) {
    ts = lmp__deadline_ts(deadline);
    tsp = &ts;
  }
  /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time (WAIT takes a
   * relative one); no FUTEX_PRIVATE_FLAG, the word is shared. */
  for (;;) {
    rc = syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, tsp, NULL, FUTEX_BITSET_MATCH_ANY);
    if (rc == 0 || errno == EAGAIN)
      return 0;
    if (errno == ETIMEDOUT)
      return -ETIMEDOUT;
    if (errno != EINTR)
      return -errno;
    /* Interrupted: a change we slept through counts as a wake-up. */
    if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != expected)
      return 0;
    if (lmp__interrupted())
      return -EINTR;
  }
}

void lmp_futex_wake(uint32_t *word, int n)
{
  if (n > 0)
    syscall(SYS_futex, word, FUTEX_WAKE, n, NULL, NULL, 0);
}

/* === condition variable === */

void lmp_cond_init(lmp_cond_t *c)
{
  __atomic_store_n(&c->seq, 0, __ATOMIC_RELAXED);
  __atomic_store_n(&c->waiters, 0, __ATOMIC_RELEASE);
}

/* Watch the counter for a short while; 1 if it moved. */
static int cond_spin(lmp_cond_t *c, uint32_t seq, int64_t deadline)
{
  int64_t until = lmp_now_ns() + LMP__COND_SPIN_NS;
  int i;

  if (until > deadline)
    until = deadline;
  for (;;) {
    for (i = 0; i < 32; i++) {
      if (__atomic_load_n(&c->seq, __ATOMIC_ACQUIRE) != seq)
        return 1;
      lmp__cpu_relax();
    }
    if (lmp_now_ns() >= until)
      return 0;
  }
}

int lmp_cond_wait(lmp_cond_t *c, lmp_mutex_t *m, int64_t deadline)
{
  uint32_t seq = __atomic_load_n(&c->seq, __ATOMIC_ACQUIRE);
  int rc = 0, lrc;

  /* waiters goes up before the mutex is released and the counter is read
   * by the kernel; signal bumps the counter before it reads waiters.  With
   * both orders sequentially consistent, a signaller either sees us or the
   * kernel sees the new counter and does not put us to sleep. */
  __atomic_add_fetch(&c->waiters, 1, __ATOMIC_SEQ_CST);
  lmp_mutex_unlock(m);
  if (!cond_spin(c, seq, deadline))
    rc = lmp_futex_wait(&c->seq, seq, deadline);
  __atomic_sub_fetch(&c->waiters, 1, __ATOMIC_SEQ_CST);
  lrc = lmp_mutex_lock(m, LMP_FOREVER);
  /* -EOWNERDEAD outranks a timeout: the lock is held either way, but what
   * it guards may be half-updated and the caller must hear of it. */
  return lrc < 0 ? lrc : rc;
}

void lmp_cond_signal(lmp_cond_t *c, int n)
{
  __atomic_add_fetch(&c->seq, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&c->waiters, __ATOMIC_SEQ_CST) > 0)
    lmp_futex_wake(&c->seq, n);
}

void lmp_cond_broadcast(lmp_cond_t *c)
{
  lmp_cond_signal(c, INT_MAX);
}

/*
 * lmp/syncobj.h -- process-shared Lock, RLock, Semaphore, Event, Condition
 * and Barrier (the objects behind lmp.Lock ... lmp.Barrier).
 *
 * Every object is a plain struct with no pointers in it, initialized in
 * memory the caller gives (a shared segment, or MAP_SHARED memory inherited
 * by fork) and usable from every process that maps it.  All waits take an
 * absolute CLOCK_MONOTONIC deadline (LMP_FOREVER, or lmp_deadline(0) never
 * to block), spin briefly and then sleep in the kernel.
 *
 * Robustness.  Locks are robust pthread mutexes (lmp_mutex_t): when a holder
 * dies the next acquirer gets the lock and -EOWNERDEAD.  The kernel finds a
 * dead holder's mutex through the memory the holder mapped it at, so that
 * memory must stay mapped until the holder is gone.  The waits that have no
 * owner (Semaphore, Event, Condition) keep counters only, never a list of
 * waiters, so a waiter killed in its sleep leaves nothing that blocks the
 * others.  A Barrier counts a waiter killed in its wait as arrived.
 *
 * Identity.  "The caller" is the calling thread: one per process on the Lua
 * side.  A lock records its holder's thread id and process id.
 */
#ifndef LMP_SYNCOBJ_H
#define LMP_SYNCOBJ_H

#include <stdint.h>
#include <sys/types.h>

#include "lmp/common.h"
#include "lmp/mutex.h"

/* === Lock and RLock === */

typedef struct lmp_lock {
  lmp_mutex_t m;
  int32_t owner;     /* thread id of the holder, 0 when free */
  int32_t owner_pid; /* its process */
  uint32_t count;    /* holds by the owner: 1, or the RLock depth */
  uint32_t recursive;
  uint32_t abandoned; /* let go by a holder that could not release it */
  uint32_t pad;
} lmp_lock_t;

/* recursive = 1 makes an RLock.  0 or -errno. */
LMP_API int lmp_lock_init(lmp_lock_t *l, int recursive);
LMP_API void lmp_lock_destroy(lmp_lock_t *l);

/*
 * 0; -EOWNERDEAD (the lock is held, taken over from a holder that died or
 * abandoned it: what it guards may be half-updated); -ETIMEDOUT; -EOVERFLOW
 * (RLock depth past 2^32-1).  A Lock the caller already holds can never be
 * released while it waits: with LMP_FOREVER that is -EDEADLK at once, with a
 * deadline the call sleeps until it and returns -ETIMEDOUT, as a plain wait
 * would.
 */
LMP_API int lmp_lock_acquire(lmp_lock_t *l, int64_t deadline);
/* One hold fewer.  0, or -EPERM when the caller does not hold the lock. */
LMP_API int lmp_lock_release(lmp_lock_t *l);

LMP_API int lmp_lock_locked(lmp_lock_t *l);  /* 1 held by anyone, 0 free (a snapshot) */
LMP_API int lmp_lock_owned(lmp_lock_t *l);   /* 1 held by the caller */
LMP_API pid_t lmp_lock_owner(lmp_lock_t *l); /* process holding it, 0 if none */

/* Let go of every hold as a dying holder would: the next acquirer gets
 * -EOWNERDEAD.  For a caller about to unmap a lock it holds.  0 or -EPERM. */
LMP_API int lmp_lock_abandon(lmp_lock_t *l);

/* Give up every hold and take them back, for condition waits.  release_save:
 * 0 or -EPERM.  acquire_restore: as lmp_lock_acquire. */
LMP_API int lmp_lock_release_save(lmp_lock_t *l, uint32_t *count);
LMP_API int lmp_lock_acquire_restore(lmp_lock_t *l, uint32_t count, int64_t deadline);

/* === Semaphore and BoundedSemaphore === */

#define LMP_SEM_VALUE_MAX INT32_MAX

typedef struct lmp_sem {
  uint32_t value;   /* the futex word */
  uint32_t max;     /* release past it fails */
  uint32_t waiters; /* sleepers, so a release with none skips the syscall */
  uint32_t pad;
} lmp_sem_t;

/* max: LMP_SEM_VALUE_MAX for a Semaphore, the initial value for a
 * BoundedSemaphore.  0, -EINVAL (value > max or max > LMP_SEM_VALUE_MAX). */
LMP_API int lmp_sem_init(lmp_sem_t *s, uint32_t value, uint32_t max);
LMP_API int lmp_sem_acquire(lmp_sem_t *s, int64_t deadline); /* 0, -ETIMEDOUT */
/* Add n units.  0, or -EOVERFLOW (the value would pass max: nothing added). */
LMP_API int lmp_sem_release(lmp_sem_t *s, uint32_t n);
LMP_API uint32_t lmp_sem_value(lmp_sem_t *s);

/* === Event === */

typedef struct lmp_event {
  uint32_t word; /* bit 0: the flag; above: number of sets */
  uint32_t waiters;
} lmp_event_t;

LMP_API void lmp_event_init(lmp_event_t *e);
LMP_API void lmp_event_set(lmp_event_t *e);
LMP_API void lmp_event_clear(lmp_event_t *e);
LMP_API int lmp_event_is_set(lmp_event_t *e);
/* 0 once the flag is set (also when it was set and cleared again while the
 * caller slept, as Python's Event.wait), -ETIMEDOUT. */
LMP_API int lmp_event_wait(lmp_event_t *e, int64_t deadline);

/* === Condition === */

typedef struct lmp_condition {
  uint64_t tally; /* low half: waiting, not notified; high half: notified, not yet woken */
  uint32_t seq;   /* the futex word, bumped by every notify */
  uint32_t pad;
} lmp_condition_t;

LMP_API void lmp_condition_init(lmp_condition_t *c);

/*
 * Release every hold the caller has on l, sleep until notified or the
 * deadline, take the holds back (without a deadline).  0 notified,
 * -ETIMEDOUT, -EPERM (the caller does not hold l; nothing happened).  The
 * lock is held again on 0 and -ETIMEDOUT; *owner_died (if not NULL) is set
 * when taking it back found its holder dead.
 */
LMP_API int lmp_condition_wait(lmp_condition_t *c, lmp_lock_t *l, int64_t deadline,
                               int *owner_died);

/* Wake at most n waiters (UINT32_MAX: all).  The caller must hold l.  The
 * number of waiters notified, or -EPERM. */
LMP_API int lmp_condition_notify(lmp_condition_t *c, lmp_lock_t *l, uint32_t n);

/* === Barrier === */

typedef struct lmp_barrier {
  lmp_mutex_t m;       /* guards the fields below */
  lmp_mutex_t running; /* held by the process running the action */
  lmp_cond_t cv;
  uint32_t parties;
  uint32_t count;  /* arrived in this generation */
  uint32_t gen;    /* generation number */
  uint32_t broken; /* until reset */
  uint32_t acting; /* the last arrival runs the action */
  uint32_t pad;
  uint64_t history; /* bit g % 64 set: generation g ended broken */
} lmp_barrier_t;

/* The last arrival calls it before the others go; nonzero breaks the
 * barrier. */
typedef int (*lmp_barrier_action_fn)(void *arg);

LMP_API int lmp_barrier_init(lmp_barrier_t *b, uint32_t parties); /* 0, -EINVAL (0 parties) */
LMP_API void lmp_barrier_destroy(lmp_barrier_t *b);

/*
 * Arrive and wait for the others.  The arrival index, 0 .. parties-1 (the
 * last arrival runs action, if given, before anyone leaves), or:
 *   -EPIPE      the barrier is or got broken (abort, reset, another's
 *               timeout, a failed action, a process dead in the action)
 *   -ETIMEDOUT  this caller's deadline passed; it broke the barrier
 *   -ECANCELED  this caller ran the action, which failed; it broke the barrier
 */
LMP_API int lmp_barrier_wait(lmp_barrier_t *b, int64_t deadline, lmp_barrier_action_fn action,
                             void *arg);
/* Back to the empty state; waiters of the current generation get -EPIPE. */
LMP_API void lmp_barrier_reset(lmp_barrier_t *b);
/* Broken until reset: waiters and later arrivals get -EPIPE. */
LMP_API void lmp_barrier_abort(lmp_barrier_t *b);
LMP_API uint32_t lmp_barrier_n_waiting(lmp_barrier_t *b);
LMP_API int lmp_barrier_broken(lmp_barrier_t *b);

#endif

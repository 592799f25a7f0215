/*
 * lmp/mutex.h -- robust process-shared mutex and condition variable.
 *
 * Both are plain structs meant to be placed in shared memory by their owner
 * (init/destroy on memory the caller gives).  The mutex is a pthread mutex
 * with PTHREAD_PROCESS_SHARED and PTHREAD_MUTEX_ROBUST: when a holder dies the
 * next locker gets -EOWNERDEAD, already holding the lock and with the mutex
 * made consistent.  The condition variable is a futex sequence counter: it
 * keeps no per-waiter state, so a waiter that dies cannot absorb a wake-up
 * meant for the others.  Waits spin briefly before sleeping in the kernel.
 */
#ifndef LMP_MUTEX_H
#define LMP_MUTEX_H

#include <pthread.h>
#include <stdint.h>

#include "lmp/common.h"

typedef struct lmp_mutex {
  pthread_mutex_t m;
} lmp_mutex_t;

typedef struct lmp_cond {
  uint32_t seq;     /* bumped by every signal; the futex word */
  uint32_t waiters; /* sleepers, so a signal with none skips the syscall */
} lmp_cond_t;

LMP_API int lmp_mutex_init(lmp_mutex_t *m);
LMP_API void lmp_mutex_destroy(lmp_mutex_t *m);
/* 0, -EOWNERDEAD (acquired from a dead holder), -ETIMEDOUT */
LMP_API int lmp_mutex_lock(lmp_mutex_t *m, int64_t deadline);
/* The same, but a wait the program asks to stop (^C: lmp_set_interrupt_check)
 * returns -EINTR without the lock; for waits a user chose, never for the
 * short internal ones whose callers need the lock. */
LMP_API int lmp_mutex_lock_intr(lmp_mutex_t *m, int64_t deadline);
LMP_API int lmp_mutex_trylock(lmp_mutex_t *m); /* 0, -EOWNERDEAD, -EBUSY */
LMP_API void lmp_mutex_unlock(lmp_mutex_t *m);

LMP_API void lmp_cond_init(lmp_cond_t *c);
/* Releases m, sleeps until signalled or the deadline, re-acquires m.
 * 0 (woken, maybe spuriously), -ETIMEDOUT, -EOWNERDEAD (re-acquired from a
 * dead holder).  The mutex is held on every return. */
LMP_API int lmp_cond_wait(lmp_cond_t *c, lmp_mutex_t *m, int64_t deadline);
LMP_API void lmp_cond_signal(lmp_cond_t *c, int n); /* wake up to n waiters */
LMP_API void lmp_cond_broadcast(lmp_cond_t *c);

/* Futex primitives, for objects that wait on a word of their own. */
LMP_API int lmp_futex_wait(uint32_t *word, uint32_t expected, int64_t deadline); /* 0, -ETIMEDOUT */
LMP_API void lmp_futex_wake(uint32_t *word, int n);

#endif

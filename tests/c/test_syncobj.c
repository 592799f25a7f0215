/*
 * test_syncobj.c -- Lock, RLock, Semaphore, Event, Condition and Barrier
 * across processes: exclusion, wake-ups, timeouts, misuse, and what a
 * holder or a waiter killed with SIGKILL leaves behind.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "lmp/common.h"
#include "lmp/syncobj.h"
#include "runner.h"

/* Shared state for a test: anonymous shared memory, inherited by fork. */
typedef struct shared {
  lmp_lock_t lock, rlock;
  lmp_sem_t sem;
  lmp_event_t ev;
  lmp_condition_t cond;
  lmp_barrier_t bar;
  volatile int counter;
  volatile int flag;
  volatile int ready;
  volatile int active, peak; /* processes inside a section at once */
  volatile int slot[64];
} shared_t;

static shared_t *shared_new(void)
{
  shared_t *s = lmp_test_shared(sizeof *s);
  CHECK_EQ(lmp_lock_init(&s->lock, 0), 0);
  CHECK_EQ(lmp_lock_init(&s->rlock, 1), 0);
  lmp_event_init(&s->ev);
  lmp_condition_init(&s->cond);
  return s;
}

/* Children still running among pid[0..n-1]. */
static int running(pid_t *pid, int n)
{
  int i, k = 0;
  for (i = 0; i < n; i++)
    k += lmp_test_alive(pid[i]);
  return k;
}

/* Sleep until at most `left` of the children run, or 5 s pass. */
static void settle(pid_t *pid, int n, int left)
{
  int i;
  for (i = 0; i < 500 && running(pid, n) > left; i++)
    lmp_test_sleep_ms(10);
}

/* === Lock === */

TEST(lock_basics)
{
  shared_t *s = shared_new();
  int64_t t0;
  pid_t pid;

  CHECK_EQ(lmp_lock_locked(&s->lock), 0);
  CHECK_EQ(lmp_lock_release(&s->lock), -EPERM);
  CHECK_EQ(lmp_lock_acquire(&s->lock, LMP_FOREVER), 0);
  CHECK_EQ(lmp_lock_locked(&s->lock), 1);
  CHECK_EQ(lmp_lock_owned(&s->lock), 1);
  CHECK_EQ(lmp_lock_owner(&s->lock), getpid());
  /* Held by the caller: no deadline is a certain deadlock; a deadline is
   * waited out, as Python's Lock does. */
  CHECK_EQ(lmp_lock_acquire(&s->lock, LMP_FOREVER), -EDEADLK);
  t0 = lmp_now_ns();
  CHECK_EQ(lmp_lock_acquire(&s->lock, lmp_test_ms(50)), -ETIMEDOUT);
  CHECK(lmp_now_ns() - t0 >= 49000000);
  CHECK_EQ(lmp_lock_acquire(&s->lock, lmp_deadline(0)), -ETIMEDOUT);
  pid = lmp_test_fork();
  if (pid == 0) {
    /* A forked child holds nothing of its parent's. */
    CHECK_EQ(lmp_lock_owned(&s->lock), 0);
    CHECK_EQ(lmp_lock_locked(&s->lock), 1);
    CHECK_EQ(lmp_lock_release(&s->lock), -EPERM);
    CHECK_EQ(lmp_lock_abandon(&s->lock), -EPERM);
    CHECK_EQ(lmp_lock_acquire(&s->lock, lmp_deadline(0)), -ETIMEDOUT);
    CHECK_EQ(lmp_lock_acquire(&s->lock, lmp_test_ms(20)), -ETIMEDOUT);
    _exit(0);
  }
  CHECK_EQ(lmp_test_wait(pid, 5000), 0);
  CHECK_EQ(lmp_lock_release(&s->lock), 0);
  CHECK_EQ(lmp_lock_locked(&s->lock), 0);
  CHECK_EQ(lmp_lock_owner(&s->lock), 0);
  CHECK_EQ(lmp_lock_release(&s->lock), -EPERM);
  lmp_lock_destroy(&s->lock);
}

TEST(lock_excludes_across_processes)
{
  shared_t *s = shared_new();
  pid_t pid[4];
  int i, k;

  for (k = 0; k < 4; k++) {
    pid[k] = lmp_test_fork();
    if (pid[k] == 0) {
      for (i = 0; i < 20000; i++) {
        CHECK_EQ(lmp_lock_acquire(&s->lock, LMP_FOREVER), 0);
        s->counter = s->counter + 1; /* torn if unguarded */
        CHECK_EQ(lmp_lock_release(&s->lock), 0);
      }
      _exit(0);
    }
  }
  for (k = 0; k < 4; k++)
    CHECK_EQ(lmp_test_wait(pid[k], 30000), 0);
  CHECK_EQ(s->counter, 80000);
}

static void hold_and_pause(shared_t *s, lmp_lock_t *l, int times)
{
  int i;
  for (i = 0; i < times; i++)
    CHECK_EQ(lmp_lock_acquire(l, LMP_FOREVER), 0);
  lmp_test_add(&s->ready, 1);
  for (;;)
    pause();
}

TEST(lock_owner_killed)
{
  shared_t *s = shared_new();
  pid_t holder = lmp_test_fork();

  if (holder == 0)
    hold_and_pause(s, &s->lock, 1);
  lmp_test_await(&s->ready, 1);
  CHECK_EQ(lmp_lock_owner(&s->lock), holder);
  kill(holder, SIGKILL);
  CHECK_EQ(lmp_test_wait(holder, 5000), -SIGKILL);
  CHECK_EQ(lmp_lock_acquire(&s->lock, lmp_test_ms(1000)), -EOWNERDEAD);
  CHECK_EQ(lmp_lock_owner(&s->lock), getpid());
  CHECK_EQ(lmp_lock_release(&s->lock), 0);
  CHECK_EQ(lmp_lock_acquire(&s->lock, lmp_test_ms(1000)), 0); /* told once */
  CHECK_EQ(lmp_lock_release(&s->lock), 0);
}

/* An exit (not only a kill) with the lock held hands it on the same way. */
TEST(lock_owner_exited)
{
  shared_t *s = shared_new();
  pid_t holder = lmp_test_fork();

  if (holder == 0) {
    CHECK_EQ(lmp_lock_acquire(&s->lock, LMP_FOREVER), 0);
    _exit(0);
  }
  CHECK_EQ(lmp_test_wait(holder, 5000), 0);
  CHECK_EQ(lmp_lock_acquire(&s->lock, lmp_test_ms(1000)), -EOWNERDEAD);
  CHECK_EQ(lmp_lock_release(&s->lock), 0);
}

TEST(lock_owner_killed_wakes_sleeper)
{
  shared_t *s = shared_new();
  pid_t holder, waiter;

  holder = lmp_test_fork();
  if (holder == 0)
    hold_and_pause(s, &s->lock, 1);
  lmp_test_await(&s->ready, 1);
  waiter = lmp_test_fork();
  if (waiter == 0) {
    lmp_test_add(&s->ready, 1);
    CHECK_EQ(lmp_lock_acquire(&s->lock, lmp_test_ms(5000)), -EOWNERDEAD);
    CHECK_EQ(lmp_lock_release(&s->lock), 0);
    _exit(0);
  }
  lmp_test_await(&s->ready, 2);
  lmp_test_sleep_ms(50); /* asleep in the kernel by now */
  kill(holder, SIGKILL);
  CHECK_EQ(lmp_test_wait(holder, 5000), -SIGKILL);
  CHECK_EQ(lmp_test_wait(waiter, 5000), 0);
  CHECK_EQ(lmp_lock_acquire(&s->lock, lmp_deadline(0)), 0);
}

/* locked() notices the death and answers "free", but the news is kept for
 * the next acquirer. */
TEST(lock_locked_keeps_owner_death_for_acquirer)
{
  shared_t *s = shared_new();
  pid_t holder = lmp_test_fork();

  if (holder == 0)
    hold_and_pause(s, &s->lock, 1);
  lmp_test_await(&s->ready, 1);
  CHECK_EQ(lmp_lock_locked(&s->lock), 1);
  kill(holder, SIGKILL);
  CHECK_EQ(lmp_test_wait(holder, 5000), -SIGKILL);
  CHECK_EQ(lmp_lock_locked(&s->lock), 0);
  CHECK_EQ(lmp_lock_owner(&s->lock), 0);
  CHECK_EQ(lmp_lock_acquire(&s->lock, lmp_deadline(0)), -EOWNERDEAD);
  CHECK_EQ(lmp_lock_release(&s->lock), 0);
}

TEST(lock_abandon)
{
  shared_t *s = shared_new();
  pid_t pid;

  CHECK_EQ(lmp_lock_abandon(&s->lock), -EPERM);
  CHECK_EQ(lmp_lock_acquire(&s->lock, LMP_FOREVER), 0);
  CHECK_EQ(lmp_lock_abandon(&s->lock), 0);
  CHECK_EQ(lmp_lock_locked(&s->lock), 0);
  pid = lmp_test_fork();
  if (pid == 0) {
    CHECK_EQ(lmp_lock_acquire(&s->lock, lmp_test_ms(1000)), -EOWNERDEAD);
    CHECK_EQ(lmp_lock_release(&s->lock), 0);
    _exit(0);
  }
  CHECK_EQ(lmp_test_wait(pid, 5000), 0);
  CHECK_EQ(lmp_lock_acquire(&s->lock, LMP_FOREVER), 0);
}

/* === RLock === */

TEST(rlock_recursion)
{
  shared_t *s = shared_new();
  pid_t pid;
  int i;

  for (i = 0; i < 3; i++)
    CHECK_EQ(lmp_lock_acquire(&s->rlock, lmp_deadline(0)), 0);
  pid = lmp_test_fork();
  if (pid == 0) {
    CHECK_EQ(lmp_lock_release(&s->rlock), -EPERM); /* not the owner */
    CHECK_EQ(lmp_lock_acquire(&s->rlock, lmp_test_ms(20)), -ETIMEDOUT);
    lmp_test_add(&s->ready, 1);
    CHECK_EQ(lmp_lock_acquire(&s->rlock, lmp_test_ms(5000)), 0);
    CHECK_EQ(lmp_lock_acquire(&s->rlock, lmp_test_ms(5000)), 0);
    CHECK_EQ(lmp_lock_release(&s->rlock), 0);
    CHECK_EQ(lmp_lock_release(&s->rlock), 0);
    _exit(0);
  }
  lmp_test_await(&s->ready, 1);
  CHECK_EQ(lmp_lock_release(&s->rlock), 0);
  CHECK_EQ(lmp_lock_release(&s->rlock), 0);
  CHECK_EQ(lmp_lock_locked(&s->rlock), 1);
  lmp_test_sleep_ms(30);
  CHECK(lmp_test_alive(pid)); /* still one hold */
  CHECK_EQ(lmp_lock_release(&s->rlock), 0);
  CHECK_EQ(lmp_lock_release(&s->rlock), -EPERM);
  CHECK_EQ(lmp_test_wait(pid, 5000), 0);
  CHECK_EQ(lmp_lock_locked(&s->rlock), 0);
}

/* A dead owner's depth is not inherited: the taker holds it once. */
TEST(rlock_owner_killed)
{
  shared_t *s = shared_new();
  pid_t holder = lmp_test_fork();

  if (holder == 0)
    hold_and_pause(s, &s->rlock, 3);
  lmp_test_await(&s->ready, 1);
  kill(holder, SIGKILL);
  CHECK_EQ(lmp_test_wait(holder, 5000), -SIGKILL);
  CHECK_EQ(lmp_lock_acquire(&s->rlock, lmp_test_ms(1000)), -EOWNERDEAD);
  CHECK_EQ(lmp_lock_release(&s->rlock), 0);
  CHECK_EQ(lmp_lock_locked(&s->rlock), 0);
}

TEST(rlock_release_save_restore)
{
  shared_t *s = shared_new();
  uint32_t n = 0;

  CHECK_EQ(lmp_lock_release_save(&s->rlock, &n), -EPERM);
  CHECK_EQ(lmp_lock_acquire(&s->rlock, LMP_FOREVER), 0);
  CHECK_EQ(lmp_lock_acquire(&s->rlock, LMP_FOREVER), 0);
  CHECK_EQ(lmp_lock_release_save(&s->rlock, &n), 0);
  CHECK_EQ(n, 2);
  CHECK_EQ(lmp_lock_locked(&s->rlock), 0);
  CHECK_EQ(lmp_lock_acquire_restore(&s->rlock, n, LMP_FOREVER), 0);
  CHECK_EQ(lmp_lock_release(&s->rlock), 0);
  CHECK_EQ(lmp_lock_release(&s->rlock), 0);
  CHECK_EQ(lmp_lock_release(&s->rlock), -EPERM);
}

/* === Semaphore === */

TEST(sem_basics)
{
  shared_t *s = shared_new();

  CHECK_EQ(lmp_sem_init(&s->sem, 3, 2), -EINVAL);
  CHECK_EQ(lmp_sem_init(&s->sem, 0, (uint32_t)LMP_SEM_VALUE_MAX + 1), -EINVAL);
  CHECK_EQ(lmp_sem_init(&s->sem, 2, LMP_SEM_VALUE_MAX), 0);
  CHECK_EQ(lmp_sem_acquire(&s->sem, lmp_deadline(0)), 0);
  CHECK_EQ(lmp_sem_acquire(&s->sem, LMP_FOREVER), 0);
  CHECK_EQ(lmp_sem_value(&s->sem), 0);
  CHECK_EQ(lmp_sem_acquire(&s->sem, lmp_deadline(0)), -ETIMEDOUT);
  CHECK_EQ(lmp_sem_acquire(&s->sem, lmp_test_ms(20)), -ETIMEDOUT);
  CHECK_EQ(lmp_sem_release(&s->sem, 5), 0); /* a plain Semaphore has no bound */
  CHECK_EQ(lmp_sem_value(&s->sem), 5);
  CHECK_EQ(lmp_sem_release(&s->sem, LMP_SEM_VALUE_MAX), -EOVERFLOW);
  CHECK_EQ(lmp_sem_value(&s->sem), 5);
}

TEST(sem_bounded)
{
  shared_t *s = shared_new();

  CHECK_EQ(lmp_sem_init(&s->sem, 2, 2), 0);
  CHECK_EQ(lmp_sem_release(&s->sem, 1), -EOVERFLOW);
  CHECK_EQ(lmp_sem_acquire(&s->sem, LMP_FOREVER), 0);
  CHECK_EQ(lmp_sem_release(&s->sem, 2), -EOVERFLOW); /* all or nothing */
  CHECK_EQ(lmp_sem_value(&s->sem), 1);
  CHECK_EQ(lmp_sem_release(&s->sem, 1), 0);
  CHECK_EQ(lmp_sem_release(&s->sem, 1), -EOVERFLOW);
  CHECK_EQ(lmp_sem_value(&s->sem), 2);
}

/* Semaphore(2) lets at most two of six processes in at once. */
TEST(sem_limits_concurrency)
{
  shared_t *s = shared_new();
  pid_t pid[6];
  int i, k, now, peak;

  CHECK_EQ(lmp_sem_init(&s->sem, 2, 2), 0);
  for (k = 0; k < 6; k++) {
    pid[k] = lmp_test_fork();
    if (pid[k] == 0) {
      for (i = 0; i < 20; i++) {
        CHECK_EQ(lmp_sem_acquire(&s->sem, lmp_test_ms(10000)), 0);
        now = __atomic_add_fetch(&s->active, 1, __ATOMIC_ACQ_REL);
        peak = lmp_test_get(&s->peak);
        while (now > peak && !__atomic_compare_exchange_n(&s->peak, &peak, now, 0, __ATOMIC_ACQ_REL,
                                                          __ATOMIC_ACQUIRE)) {
        }
        lmp_test_sleep_ms(1);
        lmp_test_add(&s->active, -1);
        CHECK_EQ(lmp_sem_release(&s->sem, 1), 0);
      }
      _exit(0);
    }
  }
  for (k = 0; k < 6; k++)
    CHECK_EQ(lmp_test_wait(pid[k], 20000), 0);
  CHECK(lmp_test_get(&s->peak) >= 1 && lmp_test_get(&s->peak) <= 2);
  CHECK_EQ(lmp_sem_value(&s->sem), 2);
}

static void sem_waiter(shared_t *s, int64_t deadline)
{
  lmp_test_add(&s->ready, 1);
  CHECK_EQ(lmp_sem_acquire(&s->sem, deadline), 0);
  lmp_test_add(&s->counter, 1);
  _exit(0);
}

TEST(sem_release_wakes_that_many)
{
  shared_t *s = shared_new();
  pid_t pid[3];
  int k;

  CHECK_EQ(lmp_sem_init(&s->sem, 0, LMP_SEM_VALUE_MAX), 0);
  for (k = 0; k < 3; k++) {
    pid[k] = lmp_test_fork();
    if (pid[k] == 0)
      sem_waiter(s, lmp_test_ms(8000));
  }
  lmp_test_await(&s->ready, 3);
  lmp_test_sleep_ms(50);
  CHECK_EQ(lmp_sem_release(&s->sem, 2), 0);
  settle(pid, 3, 1);
  lmp_test_sleep_ms(50);
  CHECK_EQ(running(pid, 3), 1);
  CHECK_EQ(lmp_test_get(&s->counter), 2);
  CHECK_EQ(lmp_sem_release(&s->sem, 1), 0);
  for (k = 0; k < 3; k++)
    CHECK_EQ(lmp_test_wait(pid[k], 5000), 0);
  CHECK_EQ(lmp_sem_value(&s->sem), 0);
}

TEST(sem_dead_waiter_does_not_block_others)
{
  shared_t *s = shared_new();
  pid_t dead, live;

  CHECK_EQ(lmp_sem_init(&s->sem, 0, 1), 0);
  dead = lmp_test_fork();
  if (dead == 0)
    sem_waiter(s, LMP_FOREVER);
  live = lmp_test_fork();
  if (live == 0)
    sem_waiter(s, lmp_test_ms(8000));
  lmp_test_await(&s->ready, 2);
  lmp_test_sleep_ms(50);
  kill(dead, SIGKILL);
  CHECK_EQ(lmp_test_wait(dead, 5000), -SIGKILL);
  CHECK_EQ(lmp_sem_release(&s->sem, 1), 0);
  CHECK_EQ(lmp_test_wait(live, 5000), 0);
  CHECK_EQ(lmp_sem_value(&s->sem), 0);
  CHECK_EQ(lmp_sem_release(&s->sem, 1), 0);
  CHECK_EQ(lmp_sem_value(&s->sem), 1);
}

/* === Event === */

TEST(event_basics)
{
  shared_t *s = shared_new();
  int64_t t0;

  CHECK_EQ(lmp_event_is_set(&s->ev), 0);
  CHECK_EQ(lmp_event_wait(&s->ev, lmp_deadline(0)), -ETIMEDOUT);
  t0 = lmp_now_ns();
  CHECK_EQ(lmp_event_wait(&s->ev, lmp_test_ms(50)), -ETIMEDOUT);
  CHECK(lmp_now_ns() - t0 >= 49000000);
  lmp_event_set(&s->ev);
  lmp_event_set(&s->ev);
  CHECK_EQ(lmp_event_is_set(&s->ev), 1);
  CHECK_EQ(lmp_event_wait(&s->ev, lmp_deadline(0)), 0);
  CHECK_EQ(lmp_event_wait(&s->ev, LMP_FOREVER), 0);
  lmp_event_clear(&s->ev);
  lmp_event_clear(&s->ev);
  CHECK_EQ(lmp_event_is_set(&s->ev), 0);
  CHECK_EQ(lmp_event_wait(&s->ev, lmp_deadline(0)), -ETIMEDOUT);
}

static void event_waiter(shared_t *s, int64_t deadline)
{
  lmp_test_add(&s->ready, 1);
  CHECK_EQ(lmp_event_wait(&s->ev, deadline), 0);
  lmp_test_add(&s->counter, 1);
  _exit(0);
}

TEST(event_set_wakes_every_waiter)
{
  shared_t *s = shared_new();
  pid_t pid[4];
  int k;

  for (k = 0; k < 4; k++) {
    pid[k] = lmp_test_fork();
    if (pid[k] == 0)
      event_waiter(s, lmp_test_ms(8000));
  }
  lmp_test_await(&s->ready, 4);
  lmp_test_sleep_ms(50);
  lmp_event_set(&s->ev);
  for (k = 0; k < 4; k++)
    CHECK_EQ(lmp_test_wait(pid[k], 5000), 0);
  CHECK_EQ(lmp_test_get(&s->counter), 4);
  CHECK_EQ(s->ev.waiters, 0);
}

/* A set cleared again before the sleeper runs still ends its wait. */
TEST(event_set_then_clear_still_wakes)
{
  shared_t *s = shared_new();
  pid_t pid = lmp_test_fork();

  if (pid == 0)
    event_waiter(s, lmp_test_ms(8000));
  lmp_test_await(&s->ready, 1);
  lmp_test_sleep_ms(50);
  lmp_event_set(&s->ev);
  lmp_event_clear(&s->ev);
  CHECK_EQ(lmp_test_wait(pid, 5000), 0);
  CHECK_EQ(lmp_event_is_set(&s->ev), 0);
}

TEST(event_dead_waiter_does_not_block_others)
{
  shared_t *s = shared_new();
  pid_t dead, live;

  dead = lmp_test_fork();
  if (dead == 0)
    event_waiter(s, LMP_FOREVER);
  live = lmp_test_fork();
  if (live == 0)
    event_waiter(s, lmp_test_ms(8000));
  lmp_test_await(&s->ready, 2);
  lmp_test_sleep_ms(50);
  kill(dead, SIGKILL);
  CHECK_EQ(lmp_test_wait(dead, 5000), -SIGKILL);
  lmp_event_set(&s->ev);
  CHECK_EQ(lmp_test_wait(live, 5000), 0);
}

/* === Condition === */

TEST(condition_needs_the_lock)
{
  shared_t *s = shared_new();
  pid_t pid;
  int died = 7;

  CHECK_EQ(lmp_condition_wait(&s->cond, &s->lock, lmp_test_ms(10), &died), -EPERM);
  CHECK_EQ(died, 0);
  CHECK_EQ(lmp_condition_notify(&s->cond, &s->lock, 1), -EPERM);
  CHECK_EQ(lmp_lock_acquire(&s->lock, LMP_FOREVER), 0);
  pid = lmp_test_fork();
  if (pid == 0) { /* held, but by the parent */
    CHECK_EQ(lmp_condition_wait(&s->cond, &s->lock, lmp_test_ms(10), NULL), -EPERM);
    CHECK_EQ(lmp_condition_notify(&s->cond, &s->lock, 1), -EPERM);
    _exit(0);
  }
  CHECK_EQ(lmp_test_wait(pid, 5000), 0);
  CHECK_EQ(lmp_condition_notify(&s->cond, &s->lock, 1), 0); /* nobody waits */
  CHECK_EQ(lmp_lock_release(&s->lock), 0);
}

TEST(condition_wait_times_out_holding_the_lock)
{
  shared_t *s = shared_new();
  int64_t t0;
  int died = 7;

  CHECK_EQ(lmp_lock_acquire(&s->lock, LMP_FOREVER), 0);
  CHECK_EQ(lmp_condition_notify(&s->cond, &s->lock, 1), 0); /* lost: nobody waits */
  t0 = lmp_now_ns();
  CHECK_EQ(lmp_condition_wait(&s->cond, &s->lock, lmp_test_ms(50), &died), -ETIMEDOUT);
  CHECK(lmp_now_ns() - t0 >= 49000000);
  CHECK_EQ(died, 0);
  CHECK_EQ(lmp_lock_owned(&s->lock), 1);
  CHECK_EQ(lmp_condition_wait(&s->cond, &s->lock, lmp_deadline(0), NULL), -ETIMEDOUT);
  CHECK_EQ(s->cond.tally, 0);
  CHECK_EQ(lmp_lock_release(&s->lock), 0);
}

static void cond_waiter(shared_t *s, lmp_lock_t *l, int64_t deadline)
{
  CHECK_EQ(lmp_lock_acquire(l, LMP_FOREVER), 0);
  lmp_test_add(&s->ready, 1);
  CHECK_EQ(lmp_condition_wait(&s->cond, l, deadline, NULL), 0);
  CHECK_EQ(lmp_lock_owned(l), 1);
  lmp_test_add(&s->counter, 1);
  CHECK_EQ(lmp_lock_release(l), 0);
  _exit(0);
}

static void notify(shared_t *s, uint32_t n, int expect)
{
  CHECK_EQ(lmp_lock_acquire(&s->lock, LMP_FOREVER), 0);
  CHECK_EQ(lmp_condition_notify(&s->cond, &s->lock, n), expect);
  CHECK_EQ(lmp_lock_release(&s->lock), 0);
}

TEST(condition_notify_n_wakes_at_most_n)
{
  shared_t *s = shared_new();
  pid_t pid[5];
  int k;

  for (k = 0; k < 5; k++) {
    pid[k] = lmp_test_fork();
    if (pid[k] == 0)
      cond_waiter(s, &s->lock, lmp_test_ms(9000));
  }
  lmp_test_await(&s->ready, 5);
  lmp_test_sleep_ms(50);
  notify(s, 2, 2);
  settle(pid, 5, 3);
  lmp_test_sleep_ms(100);
  CHECK_EQ(running(pid, 5), 3);
  notify(s, 1, 1);
  settle(pid, 5, 2);
  lmp_test_sleep_ms(100);
  CHECK_EQ(running(pid, 5), 2);
  notify(s, UINT32_MAX, 2);
  for (k = 0; k < 5; k++)
    CHECK_EQ(lmp_test_wait(pid[k], 5000), 0);
  CHECK_EQ(lmp_test_get(&s->counter), 5);
  CHECK_EQ(s->cond.tally, 0);
}

/* Waiting on an RLock held twice lets go of both holds and takes both back. */
TEST(condition_on_rlock_restores_depth)
{
  shared_t *s = shared_new();
  pid_t pid;

  CHECK_EQ(lmp_lock_acquire(&s->rlock, LMP_FOREVER), 0);
  CHECK_EQ(lmp_lock_acquire(&s->rlock, LMP_FOREVER), 0);
  pid = lmp_test_fork();
  if (pid == 0) {
    CHECK_EQ(lmp_lock_acquire(&s->rlock, lmp_test_ms(5000)), 0); /* free during the wait */
    CHECK_EQ(lmp_condition_notify(&s->cond, &s->rlock, 1), 1);
    CHECK_EQ(lmp_lock_release(&s->rlock), 0);
    _exit(0);
  }
  CHECK_EQ(lmp_condition_wait(&s->cond, &s->rlock, lmp_test_ms(5000), NULL), 0);
  CHECK_EQ(lmp_test_wait(pid, 5000), 0);
  CHECK_EQ(lmp_lock_release(&s->rlock), 0);
  CHECK_EQ(lmp_lock_locked(&s->rlock), 1);
  CHECK_EQ(lmp_lock_release(&s->rlock), 0);
  CHECK_EQ(lmp_lock_locked(&s->rlock), 0);
}

TEST(condition_dead_waiter_does_not_block_others)
{
  shared_t *s = shared_new();
  pid_t dead, live;

  dead = lmp_test_fork();
  if (dead == 0)
    cond_waiter(s, &s->lock, LMP_FOREVER);
  lmp_test_await(&s->ready, 1);
  live = lmp_test_fork();
  if (live == 0)
    cond_waiter(s, &s->lock, lmp_test_ms(8000));
  lmp_test_await(&s->ready, 2);
  lmp_test_sleep_ms(50);
  kill(dead, SIGKILL);
  CHECK_EQ(lmp_test_wait(dead, 5000), -SIGKILL);
  notify(s, 1, 1); /* the dead one cannot collect it; the live one is woken */
  CHECK_EQ(lmp_test_wait(live, 5000), 0);
  CHECK_EQ(lmp_test_get(&s->counter), 1);
}

/* The waiter takes the lock back from a notifier that died holding it. */
TEST(condition_wait_reports_owner_died)
{
  shared_t *s = shared_new();
  pid_t waiter, killer;

  waiter = lmp_test_fork();
  if (waiter == 0) {
    int died = 0;
    CHECK_EQ(lmp_lock_acquire(&s->lock, LMP_FOREVER), 0);
    lmp_test_add(&s->ready, 1);
    CHECK_EQ(lmp_condition_wait(&s->cond, &s->lock, lmp_test_ms(8000), &died), 0);
    CHECK_EQ(died, 1);
    CHECK_EQ(lmp_lock_release(&s->lock), 0);
    _exit(0);
  }
  lmp_test_await(&s->ready, 1);
  killer = lmp_test_fork();
  if (killer == 0) {
    CHECK_EQ(lmp_lock_acquire(&s->lock, LMP_FOREVER), 0);
    CHECK_EQ(lmp_condition_notify(&s->cond, &s->lock, 1), 1);
    lmp_test_add(&s->ready, 1);
    for (;;)
      pause();
  }
  lmp_test_await(&s->ready, 2);
  lmp_test_sleep_ms(30);
  kill(killer, SIGKILL);
  CHECK_EQ(lmp_test_wait(killer, 5000), -SIGKILL);
  CHECK_EQ(lmp_test_wait(waiter, 5000), 0);
}

/* === Barrier === */

static int count_action(void *arg)
{
  shared_t *s = arg;
  lmp_test_add(&s->counter, 1);
  return 0;
}

TEST(barrier_indexes_and_action_per_generation)
{
  shared_t *s = shared_new();
  pid_t pid[4];
  int g, k, idx, seen;

  CHECK_EQ(lmp_barrier_init(&s->bar, 0), -EINVAL);
  CHECK_EQ(lmp_barrier_init(&s->bar, 4), 0);
  for (k = 0; k < 4; k++) {
    pid[k] = lmp_test_fork();
    if (pid[k] == 0) {
      for (g = 0; g < 5; g++) {
        idx = lmp_barrier_wait(&s->bar, lmp_test_ms(8000), count_action, s);
        CHECK(idx >= 0 && idx < 4);
        lmp_test_add(&s->slot[g], 1 << idx);
        /* the action ran before anyone left */
        CHECK_EQ(lmp_test_get(&s->counter), g + 1);
      }
      _exit(0);
    }
  }
  for (k = 0; k < 4; k++)
    CHECK_EQ(lmp_test_wait(pid[k], 10000), 0);
  for (g = 0; g < 5; g++) {
    seen = lmp_test_get(&s->slot[g]);
    CHECK_EQ(seen, 15); /* 0, 1, 2, 3 once each */
  }
  CHECK_EQ(lmp_test_get(&s->counter), 5);
  CHECK_EQ(lmp_barrier_broken(&s->bar), 0);
  CHECK_EQ(lmp_barrier_n_waiting(&s->bar), 0);
}

static int record_runner(void *arg)
{
  shared_t *s = arg;
  s->flag = (int)getpid();
  return 0;
}

TEST(barrier_action_runs_in_last_arrival)
{
  shared_t *s = shared_new();
  pid_t pid;

  CHECK_EQ(lmp_barrier_init(&s->bar, 2), 0);
  pid = lmp_test_fork();
  if (pid == 0) {
    CHECK_EQ(lmp_barrier_wait(&s->bar, lmp_test_ms(8000), record_runner, s), 0);
    _exit(0);
  }
  for (int i = 0; i < 500 && lmp_barrier_n_waiting(&s->bar) < 1; i++)
    lmp_test_sleep_ms(2);
  CHECK_EQ(lmp_barrier_n_waiting(&s->bar), 1);
  CHECK_EQ(lmp_barrier_wait(&s->bar, lmp_test_ms(8000), record_runner, s), 1);
  CHECK_EQ(s->flag, getpid());
  CHECK_EQ(lmp_test_wait(pid, 5000), 0);
}

static void bar_waiter(shared_t *s, int64_t deadline, int expect)
{
  lmp_test_add(&s->ready, 1);
  CHECK_EQ(lmp_barrier_wait(&s->bar, deadline, NULL, NULL), expect);
  _exit(0);
}

static void wait_waiting(shared_t *s, uint32_t n)
{
  for (int i = 0; i < 2500 && lmp_barrier_n_waiting(&s->bar) < n; i++)
    lmp_test_sleep_ms(2);
  CHECK_EQ(lmp_barrier_n_waiting(&s->bar), n);
}

/* One waiter's timeout breaks the barrier for every waiter, and for later
 * arrivals until reset. */
TEST(barrier_timeout_breaks_it)
{
  shared_t *s = shared_new();
  pid_t other;
  int64_t t0;

  CHECK_EQ(lmp_barrier_init(&s->bar, 3), 0);
  other = lmp_test_fork();
  if (other == 0)
    bar_waiter(s, lmp_test_ms(8000), -EPIPE);
  wait_waiting(s, 1);
  t0 = lmp_now_ns();
  CHECK_EQ(lmp_barrier_wait(&s->bar, lmp_test_ms(50), NULL, NULL), -ETIMEDOUT);
  CHECK(lmp_now_ns() - t0 >= 49000000);
  CHECK_EQ(lmp_test_wait(other, 5000), 0);
  CHECK_EQ(lmp_barrier_broken(&s->bar), 1);
  CHECK_EQ(lmp_barrier_n_waiting(&s->bar), 0);
  CHECK_EQ(lmp_barrier_wait(&s->bar, lmp_test_ms(8000), NULL, NULL), -EPIPE);
  lmp_barrier_reset(&s->bar);
  CHECK_EQ(lmp_barrier_broken(&s->bar), 0);
  /* usable again: a full round with parties 3 */
  pid_t a = lmp_test_fork();
  if (a == 0) {
    int i = lmp_barrier_wait(&s->bar, lmp_test_ms(8000), NULL, NULL);
    CHECK(i >= 0 && i < 3);
    _exit(0);
  }
  pid_t b = lmp_test_fork();
  if (b == 0) {
    int i = lmp_barrier_wait(&s->bar, lmp_test_ms(8000), NULL, NULL);
    CHECK(i >= 0 && i < 3);
    _exit(0);
  }
  int i = lmp_barrier_wait(&s->bar, lmp_test_ms(8000), NULL, NULL);
  CHECK(i >= 0 && i < 3);
  CHECK_EQ(lmp_test_wait(a, 5000), 0);
  CHECK_EQ(lmp_test_wait(b, 5000), 0);
}

TEST(barrier_abort_breaks_every_waiter)
{
  shared_t *s = shared_new();
  pid_t pid[2];
  int k;

  CHECK_EQ(lmp_barrier_init(&s->bar, 3), 0);
  for (k = 0; k < 2; k++) {
    pid[k] = lmp_test_fork();
    if (pid[k] == 0)
      bar_waiter(s, LMP_FOREVER, -EPIPE);
  }
  wait_waiting(s, 2);
  lmp_barrier_abort(&s->bar);
  for (k = 0; k < 2; k++)
    CHECK_EQ(lmp_test_wait(pid[k], 5000), 0);
  CHECK_EQ(lmp_barrier_broken(&s->bar), 1);
  CHECK_EQ(lmp_barrier_wait(&s->bar, LMP_FOREVER, NULL, NULL), -EPIPE);
}

/* reset with waiters: they get -EPIPE, the barrier is fresh at once. */
TEST(barrier_reset_breaks_current_waiters_only)
{
  shared_t *s = shared_new();
  pid_t w, a;

  CHECK_EQ(lmp_barrier_init(&s->bar, 2), 0);
  w = lmp_test_fork();
  if (w == 0)
    bar_waiter(s, lmp_test_ms(8000), -EPIPE);
  wait_waiting(s, 1);
  lmp_barrier_reset(&s->bar);
  CHECK_EQ(lmp_test_wait(w, 5000), 0);
  CHECK_EQ(lmp_barrier_broken(&s->bar), 0);
  a = lmp_test_fork();
  if (a == 0)
    bar_waiter(s, lmp_test_ms(8000), 0);
  wait_waiting(s, 1);
  CHECK_EQ(lmp_barrier_wait(&s->bar, lmp_test_ms(8000), NULL, NULL), 1);
  CHECK_EQ(lmp_test_wait(a, 5000), 0);
}

static int failing_action(void *arg)
{
  (void)arg;
  return -1;
}

TEST(barrier_failed_action_breaks_it)
{
  shared_t *s = shared_new();
  pid_t w;

  CHECK_EQ(lmp_barrier_init(&s->bar, 2), 0);
  w = lmp_test_fork();
  if (w == 0)
    bar_waiter(s, lmp_test_ms(8000), -EPIPE);
  wait_waiting(s, 1);
  CHECK_EQ(lmp_barrier_wait(&s->bar, lmp_test_ms(8000), failing_action, NULL), -ECANCELED);
  CHECK_EQ(lmp_test_wait(w, 5000), 0);
  CHECK_EQ(lmp_barrier_broken(&s->bar), 1);
}

/* A waiter killed in its wait counts as arrived: the survivors pass. */
TEST(barrier_dead_waiter_counts_as_arrived)
{
  shared_t *s = shared_new();
  pid_t dead, live;
  int i;

  CHECK_EQ(lmp_barrier_init(&s->bar, 3), 0);
  dead = lmp_test_fork();
  if (dead == 0)
    bar_waiter(s, LMP_FOREVER, 0);
  wait_waiting(s, 1);
  kill(dead, SIGKILL);
  CHECK_EQ(lmp_test_wait(dead, 5000), -SIGKILL);
  live = lmp_test_fork();
  if (live == 0)
    bar_waiter(s, lmp_test_ms(8000), 1);
  wait_waiting(s, 2);
  i = lmp_barrier_wait(&s->bar, lmp_test_ms(8000), NULL, NULL);
  CHECK_EQ(i, 2);
  CHECK_EQ(lmp_test_wait(live, 5000), 0);
  CHECK_EQ(lmp_barrier_broken(&s->bar), 0);
}

static int hang_action(void *arg)
{
  lmp_test_add(&((shared_t *)arg)->ready, 1);
  for (;;)
    pause();
  return 0;
}

/* The process running the action is killed: the others notice (within a
 * second or so) and the barrier breaks instead of hanging. */
TEST(barrier_runner_killed_in_action)
{
  shared_t *s = shared_new();
  pid_t w, runner;

  CHECK_EQ(lmp_barrier_init(&s->bar, 2), 0);
  w = lmp_test_fork();
  if (w == 0) {
    CHECK_EQ(lmp_barrier_wait(&s->bar, LMP_FOREVER, NULL, NULL), -EPIPE);
    _exit(0);
  }
  wait_waiting(s, 1);
  runner = lmp_test_fork();
  if (runner == 0) {
    lmp_barrier_wait(&s->bar, LMP_FOREVER, hang_action, s);
    _exit(0);
  }
  lmp_test_await(&s->ready, 1);
  kill(runner, SIGKILL);
  CHECK_EQ(lmp_test_wait(runner, 5000), -SIGKILL);
  CHECK_EQ(lmp_test_wait(w, 5000), 0);
  CHECK_EQ(lmp_barrier_broken(&s->bar), 1);
  lmp_barrier_reset(&s->bar);
  CHECK_EQ(lmp_barrier_broken(&s->bar), 0);
  CHECK_EQ(lmp_barrier_n_waiting(&s->bar), 0);
}

TEST_LIST = {TEST_ENTRY(lock_basics),
             TEST_ENTRY_T(lock_excludes_across_processes, 40),
             TEST_ENTRY(lock_owner_killed),
             TEST_ENTRY(lock_owner_exited),
             TEST_ENTRY(lock_owner_killed_wakes_sleeper),
             TEST_ENTRY(lock_locked_keeps_owner_death_for_acquirer),
             TEST_ENTRY(lock_abandon),
             TEST_ENTRY(rlock_recursion),
             TEST_ENTRY(rlock_owner_killed),
             TEST_ENTRY(rlock_release_save_restore),
             TEST_ENTRY(sem_basics),
             TEST_ENTRY(sem_bounded),
             TEST_ENTRY_T(sem_limits_concurrency, 30),
             TEST_ENTRY(sem_release_wakes_that_many),
             TEST_ENTRY(sem_dead_waiter_does_not_block_others),
             TEST_ENTRY(event_basics),
             TEST_ENTRY(event_set_wakes_every_waiter),
             TEST_ENTRY(event_set_then_clear_still_wakes),
             TEST_ENTRY(event_dead_waiter_does_not_block_others),
             TEST_ENTRY(condition_needs_the_lock),
             TEST_ENTRY(condition_wait_times_out_holding_the_lock),
             TEST_ENTRY(condition_notify_n_wakes_at_most_n),
             TEST_ENTRY(condition_on_rlock_restores_depth),
             TEST_ENTRY(condition_dead_waiter_does_not_block_others),
             TEST_ENTRY(condition_wait_reports_owner_died),
             TEST_ENTRY_T(barrier_indexes_and_action_per_generation, 20),
             TEST_ENTRY(barrier_action_runs_in_last_arrival),
             TEST_ENTRY(barrier_timeout_breaks_it),
             TEST_ENTRY(barrier_abort_breaks_every_waiter),
             TEST_ENTRY(barrier_reset_breaks_current_waiters_only),
             TEST_ENTRY(barrier_failed_action_breaks_it),
             TEST_ENTRY(barrier_dead_waiter_counts_as_arrived),
             TEST_ENTRY(barrier_runner_killed_in_action),
             TEST_END};

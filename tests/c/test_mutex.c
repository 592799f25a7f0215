/*
 * test_mutex.c -- the robust mutex, the futex condition variable, and the
 * futex primitives, across processes and across a holder's death.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lmp/common.h"
#include "lmp/mutex.h"
#include "runner.h"

/* Shared state for a test: anonymous shared memory, inherited by fork. */
typedef struct shared {
  lmp_mutex_t m;
  lmp_cond_t c;
  uint32_t word;
  volatile uint64_t counter;
  volatile int flag;
  volatile int ready;
} shared_t;

static shared_t *shared_new(void)
{
  shared_t *s = lmp_test_shared(sizeof *s);
  CHECK_EQ(lmp_mutex_init(&s->m), 0);
  lmp_cond_init(&s->c);
  return s;
}

/* A child that takes the mutex and keeps it until killed. */
static pid_t start_holder(shared_t *s)
{
  pid_t pid = lmp_test_fork();
  if (pid == 0) {
    CHECK_EQ(lmp_mutex_lock(&s->m, LMP_FOREVER), 0);
    lmp_test_add(&s->ready, 1);
    for (;;)
      pause();
  }
  lmp_test_await(&s->ready, 1);
  return pid;
}

/* === mutex === */

TEST(mutex_basics)
{
  shared_t *s = shared_new();
  pid_t pid;

  CHECK_EQ(lmp_mutex_lock(&s->m, LMP_FOREVER), 0);
  pid = lmp_test_fork();
  if (pid == 0) {
    CHECK_EQ(lmp_mutex_trylock(&s->m), -EBUSY);
    CHECK_EQ(lmp_mutex_lock(&s->m, lmp_deadline(0)), -ETIMEDOUT);
    _exit(0);
  }
  CHECK_EQ(lmp_test_wait(pid, 5000), 0);
  lmp_mutex_unlock(&s->m);
  CHECK_EQ(lmp_mutex_trylock(&s->m), 0);
  lmp_mutex_unlock(&s->m);
  CHECK_EQ(lmp_mutex_lock(&s->m, lmp_deadline(0)), 0); /* free: no wait needed */
  lmp_mutex_unlock(&s->m);
  lmp_mutex_destroy(&s->m);
}

TEST(mutex_excludes_across_processes)
{
  shared_t *s = shared_new();
  pid_t pid[2];
  int i, k;

  for (k = 0; k < 2; k++) {
    pid[k] = lmp_test_fork();
    if (pid[k] == 0) {
      for (i = 0; i < 100000; i++) {
        CHECK_EQ(lmp_mutex_lock(&s->m, LMP_FOREVER), 0);
        s->counter = s->counter + 1; /* a torn read-modify-write if unguarded */
        lmp_mutex_unlock(&s->m);
      }
      _exit(0);
    }
  }
  for (k = 0; k < 2; k++)
    CHECK_EQ(lmp_test_wait(pid[k], 20000), 0);
  CHECK_EQ(s->counter, 200000);
}

TEST(mutex_lock_times_out)
{
  shared_t *s = shared_new();
  int64_t t0, dt;
  pid_t pid;

  pid = start_holder(s);
  t0 = lmp_now_ns();
  CHECK_EQ(lmp_mutex_lock(&s->m, lmp_test_ms(100)), -ETIMEDOUT);
  dt = lmp_now_ns() - t0;
  CHECK(dt >= 99000000 && dt < 1000000000);
  t0 = lmp_now_ns();
  CHECK_EQ(lmp_mutex_lock(&s->m, lmp_deadline(0)), -ETIMEDOUT);
  CHECK(lmp_now_ns() - t0 < 50000000);
  kill(pid, SIGKILL);
  CHECK_EQ(lmp_test_wait(pid, 5000), -SIGKILL);
}

/* Unlocking a lock one does not hold is a bug in the caller: it aborts
 * rather than corrupt what the lock guards. */
TEST(mutex_unlock_misuse_aborts)
{
  shared_t *s = shared_new();
  pid_t pid;

  pid = lmp_test_fork();
  if (pid == 0) {
    lmp_mutex_unlock(&s->m);
    _exit(0);
  }
  CHECK_EQ(lmp_test_wait(pid, 5000), -SIGABRT);
}

/* The holder dies with the lock: the next locker gets it, is told, and the
 * lock keeps working. */
TEST(mutex_owner_died)
{
  shared_t *s = shared_new();
  pid_t holder, other;

  holder = start_holder(s);
  kill(holder, SIGKILL);
  CHECK_EQ(lmp_test_wait(holder, 5000), -SIGKILL);
  CHECK_EQ(lmp_mutex_lock(&s->m, lmp_test_ms(1000)), -EOWNERDEAD);
  lmp_mutex_unlock(&s->m);
  CHECK_EQ(lmp_mutex_lock(&s->m, lmp_test_ms(1000)), 0); /* consistent again */
  other = lmp_test_fork();
  if (other == 0) {
    CHECK_EQ(lmp_mutex_lock(&s->m, lmp_test_ms(5000)), 0);
    lmp_mutex_unlock(&s->m);
    _exit(0);
  }
  lmp_test_sleep_ms(20);
  lmp_mutex_unlock(&s->m);
  CHECK_EQ(lmp_test_wait(other, 5000), 0);
  CHECK_EQ(lmp_mutex_trylock(&s->m), 0);
  lmp_mutex_unlock(&s->m);
}

/* A locker already asleep on the lock when its holder dies wakes up owning
 * it; trylock sees the death too. */
TEST(mutex_owner_died_wakes_sleeper)
{
  shared_t *s = shared_new();
  pid_t holder, waiter;

  holder = start_holder(s);
  waiter = lmp_test_fork();
  if (waiter == 0) {
    lmp_test_add(&s->ready, 1);
    CHECK_EQ(lmp_mutex_lock(&s->m, lmp_test_ms(5000)), -EOWNERDEAD);
    s->flag = 1;
    _exit(0); /* dies holding it in turn */
  }
  lmp_test_await(&s->ready, 2);
  lmp_test_sleep_ms(50); /* asleep in the kernel by now */
  kill(holder, SIGKILL);
  CHECK_EQ(lmp_test_wait(holder, 5000), -SIGKILL);
  CHECK_EQ(lmp_test_wait(waiter, 5000), 0);
  CHECK_EQ(s->flag, 1);
  CHECK_EQ(lmp_mutex_trylock(&s->m), -EOWNERDEAD);
  lmp_mutex_unlock(&s->m);
}

/* === condition variable === */

TEST(cond_wait_times_out_holding_the_lock)
{
  shared_t *s = shared_new();
  int64_t t0, dt;
  pid_t pid;

  CHECK_EQ(lmp_mutex_lock(&s->m, LMP_FOREVER), 0);
  t0 = lmp_now_ns();
  CHECK_EQ(lmp_cond_wait(&s->c, &s->m, lmp_test_ms(100)), -ETIMEDOUT);
  dt = lmp_now_ns() - t0;
  CHECK(dt >= 99000000 && dt < 1000000000);
  CHECK_EQ(lmp_cond_wait(&s->c, &s->m, lmp_deadline(0)), -ETIMEDOUT);
  pid = lmp_test_fork();
  if (pid == 0) {
    CHECK_EQ(lmp_mutex_trylock(&s->m), -EBUSY); /* still ours */
    _exit(0);
  }
  CHECK_EQ(lmp_test_wait(pid, 5000), 0);
  lmp_mutex_unlock(&s->m);
  CHECK_EQ(s->c.waiters, 0);
}

static void cond_waiter(shared_t *s, int64_t deadline)
{
  int rc = 0;

  CHECK_EQ(lmp_mutex_lock(&s->m, LMP_FOREVER), 0);
  lmp_test_add(&s->ready, 1);
  while (!s->flag && rc == 0)
    rc = lmp_cond_wait(&s->c, &s->m, deadline);
  CHECK_EQ(rc, 0);
  s->counter++;
  lmp_mutex_unlock(&s->m);
  _exit(0);
}

TEST(cond_signal_wakes_other_process)
{
  shared_t *s = shared_new();
  pid_t pid;

  pid = lmp_test_fork();
  if (pid == 0)
    cond_waiter(s, lmp_test_ms(5000));
  lmp_test_await(&s->ready, 1);
  lmp_test_sleep_ms(30); /* let it reach the kernel, past the spin */
  CHECK_EQ(lmp_mutex_lock(&s->m, LMP_FOREVER), 0);
  s->flag = 1;
  lmp_cond_signal(&s->c, 1);
  lmp_mutex_unlock(&s->m);
  CHECK_EQ(lmp_test_wait(pid, 2000), 0);
  CHECK_EQ(s->counter, 1);
}

TEST(cond_broadcast_wakes_all)
{
  shared_t *s = shared_new();
  pid_t pid[5];
  int i;

  for (i = 0; i < 5; i++) {
    pid[i] = lmp_test_fork();
    if (pid[i] == 0)
      cond_waiter(s, lmp_test_ms(5000));
  }
  lmp_test_await(&s->ready, 5);
  lmp_test_sleep_ms(30);
  CHECK_EQ(lmp_mutex_lock(&s->m, LMP_FOREVER), 0);
  s->flag = 1;
  lmp_cond_broadcast(&s->c);
  lmp_mutex_unlock(&s->m);
  for (i = 0; i < 5; i++)
    CHECK_EQ(lmp_test_wait(pid[i], 2000), 0);
  CHECK_EQ(s->counter, 5);
  CHECK_EQ(s->c.waiters, 0);
}

TEST(cond_signal_n_wakes_n)
{
  shared_t *s = shared_new();
  pid_t pid[3];
  int i, woken = 0;

  for (i = 0; i < 3; i++) {
    pid[i] = lmp_test_fork();
    if (pid[i] == 0) {
      CHECK_EQ(lmp_mutex_lock(&s->m, LMP_FOREVER), 0);
      lmp_test_add(&s->ready, 1);
      CHECK_EQ(lmp_cond_wait(&s->c, &s->m, lmp_test_ms(5000)), 0);
      s->counter++;
      lmp_mutex_unlock(&s->m);
      _exit(0);
    }
  }
  lmp_test_await(&s->ready, 3);
  lmp_test_sleep_ms(30);
  lmp_cond_signal(&s->c, 2); /* no lock held: allowed too */
  lmp_test_sleep_ms(200);
  for (i = 0; i < 3; i++)
    woken += !lmp_test_alive(pid[i]);
  CHECK_EQ(woken, 2);
  lmp_cond_signal(&s->c, 1);
  for (i = 0; i < 3; i++)
    CHECK_EQ(lmp_test_wait(pid[i], 2000), 0);
  CHECK_EQ(s->counter, 3);
}

/* A waiter that dies while waiting leaves nothing that swallows the next
 * wake-up. */
TEST(cond_dead_waiter_does_not_block_others)
{
  shared_t *s = shared_new();
  pid_t dead, live;

  dead = lmp_test_fork();
  if (dead == 0)
    cond_waiter(s, LMP_FOREVER);
  lmp_test_await(&s->ready, 1);
  live = lmp_test_fork();
  if (live == 0)
    cond_waiter(s, lmp_test_ms(5000));
  lmp_test_await(&s->ready, 2);
  lmp_test_sleep_ms(30);
  kill(dead, SIGKILL);
  CHECK_EQ(lmp_test_wait(dead, 5000), -SIGKILL);
  CHECK_EQ(lmp_mutex_lock(&s->m, lmp_test_ms(1000)), 0); /* the dead one held no lock */
  s->flag = 1;
  lmp_cond_signal(&s->c, 1);
  lmp_mutex_unlock(&s->m);
  CHECK_EQ(lmp_test_wait(live, 2000), 0);
  CHECK_EQ(s->counter, 1);
}

/* The mutex holder dies while a waiter is being woken: the waiter's relock
 * reports it, and the waiter holds the lock. */
TEST(cond_wait_reports_owner_died)
{
  shared_t *s = shared_new();
  pid_t waiter, killer;

  waiter = lmp_test_fork();
  if (waiter == 0) {
    CHECK_EQ(lmp_mutex_lock(&s->m, LMP_FOREVER), 0);
    lmp_test_add(&s->ready, 1);
    CHECK_EQ(lmp_cond_wait(&s->c, &s->m, lmp_test_ms(5000)), -EOWNERDEAD);
    lmp_mutex_unlock(&s->m);
    _exit(0);
  }
  lmp_test_await(&s->ready, 1);
  lmp_test_sleep_ms(30);
  killer = lmp_test_fork();
  if (killer == 0) {
    CHECK_EQ(lmp_mutex_lock(&s->m, LMP_FOREVER), 0);
    lmp_cond_signal(&s->c, 1);
    lmp_test_add(&s->ready, 1);
    for (;;)
      pause(); /* dies holding the lock */
  }
  lmp_test_await(&s->ready, 2);
  lmp_test_sleep_ms(30);
  kill(killer, SIGKILL);
  CHECK_EQ(lmp_test_wait(killer, 5000), -SIGKILL);
  CHECK_EQ(lmp_test_wait(waiter, 2000), 0);
}

static void on_usr1(int sig)
{
  (void)sig;
}

/* Signals landing during a wait are absorbed: the wait still ends at its
 * deadline, never early with an error. */
TEST(waits_absorb_eintr)
{
  shared_t *s = shared_new();
  struct sigaction sa = {.sa_handler = on_usr1}; /* no SA_RESTART */
  pid_t pid, me = getpid();
  int64_t t0;
  int i;

  CHECK_EQ(sigaction(SIGUSR1, &sa, NULL), 0);
  pid = lmp_test_fork();
  if (pid == 0) {
    for (i = 0; i < 40; i++) {
      kill(me, SIGUSR1);
      lmp_test_sleep_ms(5);
    }
    _exit(0);
  }
  t0 = lmp_now_ns();
  CHECK_EQ(lmp_futex_wait(&s->word, 0, lmp_test_ms(150)), -ETIMEDOUT);
  CHECK(lmp_now_ns() - t0 >= 149000000);
  CHECK_EQ(lmp_mutex_lock(&s->m, LMP_FOREVER), 0);
  t0 = lmp_now_ns();
  CHECK_EQ(lmp_cond_wait(&s->c, &s->m, lmp_test_ms(150)), -ETIMEDOUT);
  CHECK(lmp_now_ns() - t0 >= 149000000);
  lmp_mutex_unlock(&s->m);
  CHECK_EQ(lmp_test_wait(pid, 5000), 0);
}

static volatile sig_atomic_t usr1_pending;

static void on_usr1_request(int sig)
{
  (void)sig;
  usr1_pending = 1;
}

static int usr1_requested(void)
{
  return usr1_pending;
}

/* A wait that a signal cuts short returns -EINTR when the interrupt check
 * says so (as ^C asks through the bindings), and only then. */
TEST(waits_return_eintr_when_asked)
{
  shared_t *s = shared_new();
  struct sigaction sa = {.sa_handler = on_usr1_request}; /* no SA_RESTART */
  pid_t pid, me = getpid();

  CHECK_EQ(sigaction(SIGUSR1, &sa, NULL), 0);
  lmp_set_interrupt_check(usr1_requested);
  pid = lmp_test_fork();
  if (pid == 0) {
    for (;;) { /* until the parent stops waiting and kills us */
      kill(me, SIGUSR1);
      lmp_test_sleep_ms(20);
    }
  }
  CHECK_EQ(lmp_futex_wait(&s->word, 0, LMP_FOREVER), -EINTR);
  usr1_pending = 0;
  CHECK_EQ(lmp_mutex_lock(&s->m, LMP_FOREVER), 0);
  CHECK_EQ(lmp_cond_wait(&s->c, &s->m, LMP_FOREVER), -EINTR);
  lmp_mutex_unlock(&s->m);
  usr1_pending = 0;
  lmp_set_interrupt_check(NULL);
  CHECK_EQ(lmp_futex_wait(&s->word, 0, lmp_test_ms(100)), -ETIMEDOUT);
  kill(pid, SIGKILL);
  CHECK_EQ(lmp_test_wait(pid, 5000), -SIGKILL);
}

/* === futex === */

TEST(futex_wait_and_wake)
{
  shared_t *s = shared_new();
  pid_t pid;

  CHECK_EQ(lmp_futex_wait(&s->word, 1, LMP_FOREVER), 0); /* not the value: no sleep */
  CHECK_EQ(lmp_futex_wait(&s->word, 0, lmp_test_ms(20)), -ETIMEDOUT);
  CHECK_EQ(lmp_futex_wait(&s->word, 0, lmp_deadline(0)), -ETIMEDOUT);
  pid = lmp_test_fork();
  if (pid == 0) {
    lmp_test_add(&s->ready, 1);
    while (__atomic_load_n(&s->word, __ATOMIC_ACQUIRE) == 0)
      CHECK_EQ(lmp_futex_wait(&s->word, 0, lmp_test_ms(5000)), 0);
    _exit(0);
  }
  lmp_test_await(&s->ready, 1);
  lmp_test_sleep_ms(30);
  __atomic_store_n(&s->word, 1, __ATOMIC_RELEASE);
  lmp_futex_wake(&s->word, 1);
  CHECK_EQ(lmp_test_wait(pid, 2000), 0);
  lmp_futex_wake(&s->word, 0); /* waking nobody is fine */
}

TEST_LIST = {
  TEST_ENTRY(mutex_basics),
  TEST_ENTRY_T(mutex_excludes_across_processes, 30),
  TEST_ENTRY(mutex_lock_times_out),
  TEST_ENTRY(mutex_unlock_misuse_aborts),
  TEST_ENTRY(mutex_owner_died),
  TEST_ENTRY(mutex_owner_died_wakes_sleeper),
  TEST_ENTRY(cond_wait_times_out_holding_the_lock),
  TEST_ENTRY(cond_signal_wakes_other_process),
  TEST_ENTRY(cond_broadcast_wakes_all),
  TEST_ENTRY(cond_signal_n_wakes_n),
  TEST_ENTRY(cond_dead_waiter_does_not_block_others),
  TEST_ENTRY(cond_wait_reports_owner_died),
  TEST_ENTRY(waits_absorb_eintr),
  TEST_ENTRY(waits_return_eintr_when_asked),
  TEST_ENTRY(futex_wait_and_wake),
  TEST_END
};

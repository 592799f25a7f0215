/*
 * test_pool.c -- the pool of workers over byte payloads, with a C worker
 * body: replies in any number, a worker killed or exiting mid-task (that task
 * fails, the others complete, the worker is replaced), task timeouts (per task
 * and per item), maxtasksperchild, a failing or crashing start-up (the pool
 * breaks once, no fork loop), cancel and task states, close and terminate,
 * workers started by a hook instead of fork (attached through a ticket),
 * the event descriptor, and no leaked descriptor, segment or process.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "lmp/common.h"
#include "lmp/pool.h"
#include "lmp/proc.h"
#include "lmp/runtime.h"
#include "runner.h"

#define MS 1000000LL

/* === the worker body === */

enum {
  T_ECHO = 1, /* reply with the payload */
  T_SLEEP,    /* payload: ms (int); reply with the pid */
  T_ITEMS,    /* payload: n, ms (ints): n items of ms each, reported */
  T_EXIT,     /* lmp_proc_exit(3) */
  T_KILL,     /* SIGKILL itself */
  T_PID,      /* reply with the pid */
  T_FAIL,     /* reply with status 7 */
  T_NESTED,   /* make a pool of its own, echo through it, reply */
};

enum { INIT_OK, INIT_FAIL, INIT_CRASH, INIT_KILLED_TWICE, INIT_KILLED };

struct ctx {
  int init;
  _Atomic int *forks; /* shared: one more per worker started */
};

static void reply_pid(lmp_pool_worker_t *w)
{
  int pid = getpid();
  struct iovec v = {&pid, sizeof pid};
  CHECK_EQ(lmp_pool_worker_reply(w, 0, &v, 1), 0);
}

static int body(lmp_pool_worker_t *w, void *arg);

/* In a worker: a pool of its own, one echo through it, the echo as reply. */
static void nested(lmp_pool_worker_t *w, const struct iovec *v)
{
  lmp_pool_config_t cfg = {0};
  cfg.processes = 1;
  cfg.body = body;
  lmp_pool_t *inner;
  CHECK_EQ(lmp_pool_create(&cfg, &inner), 0);
  uint64_t id;
  CHECK_EQ(lmp_pool_submit(inner, T_ECHO, v, 1, &id), 0);
  lmp_pool_event_t ev;
  CHECK_EQ(lmp_pool_wait(inner, &ev, lmp_deadline(10)), 0);
  CHECK_EQ(ev.id, id);
  struct iovec r = {(void *)ev.data, ev.len};
  CHECK_EQ(lmp_pool_worker_reply(w, 0, &r, 1), 0);
  lmp_pool_close(inner);
  while (lmp_pool_wait(inner, &ev, lmp_deadline(10)) == 0) {
  }
  lmp_pool_free(inner);
}

static int body(lmp_pool_worker_t *w, void *arg)
{
  struct ctx *c = arg;
  int started = c && c->forks ? atomic_fetch_add(c->forks, 1) : 0;
  if (c && (c->init == INIT_KILLED || (c->init == INIT_KILLED_TWICE && started < 2)))
    raise(SIGKILL);
  if (c && c->init == INIT_FAIL) {
    lmp_pool_worker_fail_init(w, "bad init", 8);
    return 1;
  }
  if (c && c->init == INIT_CRASH)
    lmp_proc_exit(4);
  lmp_pool_task_t t;
  int a[2];
  while (lmp_pool_worker_next(w, &t) == 0) {
    struct iovec v = {(void *)t.data, t.len};
    switch (t.tag) {
    case T_ECHO:
      CHECK_EQ(lmp_pool_worker_reply(w, 0, &v, 1), 0);
      break;
    case T_SLEEP:
      memcpy(a, t.data, sizeof(int));
      lmp_test_sleep_ms(a[0]);
      reply_pid(w);
      break;
    case T_ITEMS:
      memcpy(a, t.data, sizeof a);
      for (int i = 0; i < a[0]; i++) {
        lmp_pool_worker_progress(w, (uint32_t)i);
        lmp_test_sleep_ms(a[1]);
      }
      reply_pid(w);
      break;
    case T_EXIT:
      lmp_proc_exit(3);
    case T_KILL:
      raise(SIGKILL);
      break;
    case T_PID:
      reply_pid(w);
      break;
    case T_FAIL:
      CHECK_EQ(lmp_pool_worker_reply(w, 7, &v, 1), 0);
      break;
    case T_NESTED:
      nested(w, &v);
      break;
    }
  }
  return 0;
}

/* === helpers === */

static lmp_pool_t *make(int n, uint32_t max, double timeout, struct ctx *c)
{
  lmp_pool_config_t cfg = {0};
  cfg.processes = n;
  cfg.maxtasksperchild = max;
  cfg.task_timeout_ns = (int64_t)(timeout * 1e9);
  cfg.body = body;
  cfg.ctx = c;
  lmp_pool_t *p;
  CHECK_EQ(lmp_pool_create(&cfg, &p), 0);
  return p;
}

/* A pool of n workers that keeps at most `high` tasks in its ring. */
static lmp_pool_t *make_ring(int n, uint32_t high)
{
  lmp_pool_config_t cfg = {0};
  cfg.processes = n;
  cfg.high_water = high;
  cfg.body = body;
  lmp_pool_t *p;
  CHECK_EQ(lmp_pool_create(&cfg, &p), 0);
  return p;
}

static uint64_t submit(lmp_pool_t *p, uint32_t tag, const void *data, size_t len)
{
  struct iovec v = {(void *)data, len};
  uint64_t id = 0;
  CHECK_EQ(lmp_pool_submit(p, tag, &v, 1, &id), 0);
  return id;
}

static uint64_t submit_ms(lmp_pool_t *p, int ms)
{
  return submit(p, T_SLEEP, &ms, sizeof ms);
}

/* The next event within 10 s. */
static lmp_pool_event_t next(lmp_pool_t *p)
{
  lmp_pool_event_t ev;
  CHECK_EQ(lmp_pool_wait(p, &ev, lmp_deadline(10)), 0);
  return ev;
}

static int event_pid(const lmp_pool_event_t *ev)
{
  int pid = 0;
  CHECK_EQ(ev->len, sizeof pid);
  memcpy(&pid, ev->data, sizeof pid);
  return pid;
}

/* Poll slots until worker i is busy; its pid. */
static pid_t busy_pid(lmp_pool_t *p, int i)
{
  lmp_pool_slot_info_t s;
  for (int tries = 0; tries < 2000; tries++) {
    CHECK_EQ(lmp_pool_slot(p, i, &s), 0);
    if (s.state == LMP_POOL_BUSY)
      return s.pid;
    lmp_test_sleep_ms(1);
  }
  CHECK(!"worker never became busy");
  return 0;
}

static int readable(int fd)
{
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  return poll(&pfd, 1, 0) == 1;
}

static int have_pidfd(void)
{
#ifdef SYS_pidfd_open
  int fd = (int)syscall(SYS_pidfd_open, getpid(), 0);
  if (fd >= 0) {
    close(fd);
    return 1;
  }
#endif
  return 0;
}

/* poll(2) for POLLIN within ms, through the EINTRs of SIGCHLD (workers die
 * in these tests): 1 once readable, 0 at the end. */
static int wait_readable(int fd, int ms)
{
  int64_t end = lmp_now_ns() + (int64_t)ms * MS;
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  for (;;) {
    int left = (int)((end - lmp_now_ns()) / MS);
    int n = poll(&pfd, 1, left > 0 ? left : 0);
    if (n >= 0 || errno != EINTR || left <= 0)
      return n > 0;
  }
}

static _Atomic int *shared_counter(void)
{
  void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  CHECK(m != MAP_FAILED);
  return m;
}

/* === tests === */

TEST(replies)
{
  lmp_pool_t *p = make(2, 0, 0, NULL);
  enum { N = 3000 };
  static int seen[N + 1];
  uint64_t first = 0;
  for (int i = 0; i < N; i++) {
    char msg[32];
    int len = snprintf(msg, sizeof msg, "task %d", i);
    uint64_t id = submit(p, T_ECHO, msg, (size_t)len);
    if (i == 0)
      first = id;
    CHECK_EQ(id, first + (uint64_t)i);
  }
  for (int i = 0; i < N; i++) {
    lmp_pool_event_t ev = next(p);
    CHECK_EQ(ev.type, LMP_POOL_DONE);
    CHECK_EQ(ev.status, 0);
    int k = (int)(ev.id - first);
    CHECK(k >= 0 && k < N && !seen[k]);
    seen[k] = 1;
    char msg[32];
    int len = snprintf(msg, sizeof msg, "task %d", k);
    CHECK_EQ(ev.len, (size_t)len);
    CHECK(memcmp(ev.data, msg, (size_t)len) == 0);
  }
  lmp_pool_event_t ev;
  CHECK_EQ(lmp_pool_wait(p, &ev, lmp_deadline(0.05)), -ETIMEDOUT);
  /* A failed status is just a status; large payloads pass too. */
  size_t big = 3u << 20;
  char *b = malloc(big);
  memset(b, 'x', big);
  uint64_t id = submit(p, T_FAIL, b, big);
  ev = next(p);
  CHECK_EQ(ev.id, id);
  CHECK_EQ(ev.status, 7);
  CHECK_EQ(ev.len, big);
  CHECK(memcmp(ev.data, b, big) == 0);
  free(b);
  lmp_pool_stats_t st;
  lmp_pool_stats(p, &st);
  CHECK_EQ(st.done, N + 1);
  CHECK_EQ(st.failed, 0);
  CHECK_EQ(st.queued, 0);
  lmp_pool_free(p);
}

/* lmp_pool_take drains what has arrived without waiting: with every reply
 * in, one wait and then takes deliver them all; with none, it returns 0. */
TEST(take_drains)
{
  lmp_pool_t *p = make(2, 0, 0, NULL);
  enum { N = 200 };
  static int seen[N];
  lmp_pool_event_t ev;
  CHECK_EQ(lmp_pool_take(p, &ev), 0);
  uint64_t first = submit(p, T_ECHO, "x", 1);
  for (int i = 1; i < N; i++)
    submit(p, T_ECHO, "x", 1);
  lmp_pool_stats_t st;
  for (int tries = 0; tries < 10000; tries++) { /* every reply written */
    lmp_pool_stats(p, &st);
    if (st.done == N)
      break;
    lmp_test_sleep_ms(1);
  }
  CHECK_EQ(st.done, N);
  int got = 0;
  ev = next(p);
  for (int rc = 1; rc == 1; rc = lmp_pool_take(p, &ev)) {
    CHECK_EQ(ev.type, LMP_POOL_DONE);
    int k = (int)(ev.id - first);
    CHECK(k >= 0 && k < N && !seen[k]);
    seen[k] = 1;
    got++;
  }
  CHECK_EQ(got, N);
  CHECK_EQ(lmp_pool_take(p, &ev), 0);
  lmp_pool_free(p);
}

/* SIGKILL from outside, os.exit-like exit and a self-kill mid-task: that
 * task fails with the pid, the others complete, the worker is replaced. */
TEST(worker_lost)
{
  lmp_pool_t *p = make(1, 0, 0, NULL);
  uint64_t slow = submit_ms(p, 10000);
  uint64_t after = submit(p, T_PID, NULL, 0);
  pid_t pid = busy_pid(p, 0);
  CHECK_EQ(kill(pid, SIGKILL), 0);
  lmp_pool_event_t ev = next(p);
  CHECK_EQ(ev.type, LMP_POOL_LOST);
  CHECK_EQ(ev.id, slow);
  CHECK_EQ(ev.pid, pid);
  CHECK_EQ(ev.exitcode, -SIGKILL);
  ev = next(p);
  CHECK_EQ(ev.type, LMP_POOL_DONE);
  CHECK_EQ(ev.id, after);
  CHECK(event_pid(&ev) != pid);
  uint64_t ex = submit(p, T_EXIT, NULL, 0);
  ev = next(p);
  CHECK_EQ(ev.type, LMP_POOL_LOST);
  CHECK_EQ(ev.id, ex);
  CHECK_EQ(ev.exitcode, 3);
  uint64_t self = submit(p, T_KILL, NULL, 0);
  ev = next(p);
  CHECK_EQ(ev.type, LMP_POOL_LOST);
  CHECK_EQ(ev.id, self);
  CHECK_EQ(ev.exitcode, -SIGKILL);
  uint64_t ok = submit(p, T_PID, NULL, 0);
  ev = next(p);
  CHECK_EQ(ev.type, LMP_POOL_DONE);
  CHECK_EQ(ev.id, ok);
  lmp_pool_stats_t st;
  lmp_pool_stats(p, &st);
  CHECK_EQ(st.failed, 3);
  CHECK_EQ(st.restarts, 3);
  lmp_pool_free(p);
}

/* Many tasks, workers dying among them: every task ends in one event. */
TEST(deaths_among_many)
{
  lmp_pool_t *p = make(2, 0, 0, NULL);
  enum { N = 400 };
  uint64_t first = 0;
  for (int i = 0; i < N; i++) {
    uint64_t id = i % 50 == 7 ? submit(p, T_KILL, NULL, 0) : submit(p, T_ECHO, &i, sizeof i);
    if (i == 0)
      first = id;
  }
  static int seen[N];
  int lost = 0;
  for (int i = 0; i < N; i++) {
    lmp_pool_event_t ev = next(p);
    int k = (int)(ev.id - first);
    CHECK(k >= 0 && k < N && !seen[k]);
    seen[k] = 1;
    if (k % 50 == 7) {
      CHECK_EQ(ev.type, LMP_POOL_LOST);
      lost++;
    } else {
      CHECK_EQ(ev.type, LMP_POOL_DONE);
    }
  }
  CHECK_EQ(lost, N / 50);
  lmp_pool_free(p);
}

TEST(task_timeout)
{
  lmp_pool_t *p = make(1, 0, 0.2, NULL);
  int64_t t0 = lmp_now_ns();
  uint64_t slow = submit_ms(p, 10000);
  lmp_pool_event_t ev = next(p);
  int64_t took = lmp_now_ns() - t0;
  CHECK_EQ(ev.type, LMP_POOL_TIMEOUT);
  CHECK_EQ(ev.id, slow);
  CHECK_EQ(ev.exitcode, -SIGKILL);
  CHECK(took >= 200 * MS && took < 5000 * MS);
  /* The replacement runs the next task; a task of several items, each
   * shorter than the timeout, reports progress and is not killed. */
  int items[2] = {5, 100};
  uint64_t id = submit(p, T_ITEMS, items, sizeof items);
  ev = next(p);
  CHECK_EQ(ev.type, LMP_POOL_DONE);
  CHECK_EQ(ev.id, id);
  /* Without progress reports the same work is one 500 ms task: killed. */
  int ms = 500;
  id = submit(p, T_SLEEP, &ms, sizeof ms);
  ev = next(p);
  CHECK_EQ(ev.type, LMP_POOL_TIMEOUT);
  CHECK_EQ(ev.id, id);
  lmp_pool_free(p);
}

/* The timerfd wakes an event loop for a timeout: the descriptor turns
 * readable by the deadline without any call on the pool. */
TEST(timeout_wakes_fd)
{
  if (!have_pidfd())
    return; /* the kill is noticed through the pidfd */
  lmp_pool_t *p = make(1, 0, 0.2, NULL);
  uint64_t slow = submit_ms(p, 10000);
  lmp_pool_event_t ev;
  busy_pid(p, 0);
  CHECK_EQ(lmp_pool_wait(p, &ev, 0), -ETIMEDOUT); /* sees the task, arms the timer */
  CHECK(!readable(lmp_pool_fd(p)));
  CHECK(wait_readable(lmp_pool_fd(p), 5000));
  for (int i = 0; i < 500; i++) {
    int rc = lmp_pool_wait(p, &ev, 0);
    if (rc == 0)
      break;
    CHECK_EQ(rc, -ETIMEDOUT);
    CHECK(wait_readable(lmp_pool_fd(p), 5000));
  }
  CHECK_EQ(ev.type, LMP_POOL_TIMEOUT);
  CHECK_EQ(ev.id, slow);
  lmp_pool_free(p);
}

TEST(maxtasksperchild)
{
  lmp_pool_t *p = make(1, 2, 0, NULL);
  int pids[6];
  for (int i = 0; i < 6; i++)
    submit(p, T_PID, NULL, 0);
  for (int i = 0; i < 6; i++) {
    lmp_pool_event_t ev = next(p);
    CHECK_EQ(ev.type, LMP_POOL_DONE);
    pids[i] = event_pid(&ev);
  }
  for (int i = 0; i < 6; i += 2) {
    CHECK_EQ(pids[i], pids[i + 1]);
    if (i)
      CHECK(pids[i] != pids[i - 1]);
  }
  lmp_pool_free(p);
}

static void check_broken(int init)
{
  _Atomic int *forks = shared_counter();
  struct ctx c = {init, forks};
  lmp_pool_t *p = make(2, 0, 0, &c);
  uint64_t id = submit(p, T_PID, NULL, 0);
  (void)id;
  lmp_pool_event_t ev = next(p);
  CHECK_EQ(ev.type, LMP_POOL_BROKEN);
  if (init == INIT_FAIL) {
    CHECK_EQ(ev.len, 8);
    CHECK(memcmp(ev.data, "bad init", 8) == 0);
  } else {
    CHECK_EQ(ev.len, 0);
    CHECK_EQ(ev.exitcode, 4);
  }
  CHECK(ev.pid > 0);
  CHECK_EQ(lmp_pool_wait(p, &ev, lmp_deadline(0.3)), -EPIPE);
  CHECK(!lmp_pool_running(p));
  struct iovec v = {NULL, 0};
  uint64_t id2;
  CHECK_EQ(lmp_pool_submit(p, T_PID, &v, 1, &id2), -EPIPE);
  lmp_test_sleep_ms(200);
  CHECK(atomic_load(forks) <= 2); /* no respawn */
  for (int i = 0; i < 2; i++) {
    lmp_pool_slot_info_t s;
    CHECK_EQ(lmp_pool_slot(p, i, &s), 0);
    CHECK_EQ(s.pid, 0);
  }
  lmp_pool_free(p);
}

TEST(init_fails_once)
{
  check_broken(INIT_FAIL);
}

TEST(init_crash_breaks)
{
  check_broken(INIT_CRASH);
}

/* Workers killed by a signal while starting are replaced, unless it keeps
 * happening: the third in a row breaks the pool. */
TEST(killed_while_starting)
{
  _Atomic int *forks = shared_counter();
  struct ctx c = {INIT_KILLED_TWICE, forks};
  lmp_pool_t *p = make(1, 0, 0, &c);
  submit(p, T_PID, NULL, 0);
  lmp_pool_event_t ev = next(p);
  CHECK_EQ(ev.type, LMP_POOL_DONE);
  CHECK_EQ(atomic_load(forks), 3);
  lmp_pool_free(p);

  atomic_store(forks, 0);
  c.init = INIT_KILLED;
  p = make(1, 0, 0, &c);
  submit(p, T_PID, NULL, 0);
  ev = next(p);
  CHECK_EQ(ev.type, LMP_POOL_BROKEN);
  CHECK_EQ(ev.exitcode, -SIGKILL);
  CHECK_EQ(atomic_load(forks), 3);
  lmp_pool_free(p);
}

/* With one worker and a ring of one: running, sent, queued; the sent and
 * the queued task can be cancelled, and they never run. */
TEST(cancel_and_states)
{
  lmp_pool_t *p = make_ring(1, 1);
  uint64_t a = submit_ms(p, 300), b = submit(p, T_PID, NULL, 0);
  uint64_t c = submit(p, T_PID, NULL, 0), d = submit(p, T_PID, NULL, 0);
  busy_pid(p, 0);
  lmp_pool_event_t ev;
  CHECK_EQ(lmp_pool_wait(p, &ev, 0), -ETIMEDOUT); /* hands b to the ring */
  CHECK_EQ(lmp_pool_task_state(p, a), LMP_POOL_TASK_RUNNING);
  CHECK_EQ(lmp_pool_task_state(p, b), LMP_POOL_TASK_SENT);
  CHECK_EQ(lmp_pool_task_state(p, c), LMP_POOL_TASK_QUEUED);
  CHECK_EQ(lmp_pool_task_state(p, d), LMP_POOL_TASK_QUEUED);
  CHECK_EQ(lmp_pool_cancel(p, a), 0); /* running */
  CHECK_EQ(lmp_pool_cancel(p, b), 1); /* in the ring: the worker will skip it */
  CHECK_EQ(lmp_pool_cancel(p, b), 0);
  CHECK_EQ(lmp_pool_task_state(p, b), LMP_POOL_TASK_UNKNOWN);
  CHECK_EQ(lmp_pool_cancel(p, c), 1); /* in the backlog */
  CHECK_EQ(lmp_pool_cancel(p, c), 0);
  CHECK_EQ(lmp_pool_task_state(p, c), LMP_POOL_TASK_UNKNOWN);
  lmp_pool_slot_info_t s;
  CHECK_EQ(lmp_pool_slot(p, 0, &s), 0);
  CHECK_EQ(s.task, a);
  uint64_t order[2] = {a, d};
  for (int i = 0; i < 2; i++) {
    lmp_pool_event_t ev = next(p);
    CHECK_EQ(ev.type, LMP_POOL_DONE);
    CHECK_EQ(ev.id, order[i]);
  }
  CHECK_EQ(lmp_pool_task_state(p, a), LMP_POOL_TASK_UNKNOWN);
  CHECK_EQ(lmp_pool_wait(p, &ev, lmp_deadline(0.1)), -ETIMEDOUT);
  lmp_pool_free(p);
}

/* Cancelling tasks in the ring while workers take them: each task ends in
 * exactly one event, or in a successful cancel and none. */
TEST(cancel_races_workers)
{
  lmp_pool_t *p = make_ring(2, 4000);
  enum { N = 4000 };
  static uint64_t ids[N];
  static char state[N]; /* 0 pending, 1 cancelled, 2 done */
  int cancelled = 0;
  for (int i = 0; i < N; i++) {
    ids[i] = submit(p, T_ECHO, &i, sizeof i);
    if (i >= 8 && i % 2 == 0 && lmp_pool_cancel(p, ids[i - 8]) == 1) {
      state[i - 8] = 1;
      cancelled++;
    }
  }
  for (int done = 0; done < N - cancelled; done++) {
    lmp_pool_event_t ev = next(p);
    CHECK_EQ(ev.type, LMP_POOL_DONE);
    int k = (int)(ev.id - ids[0]);
    CHECK(k >= 0 && k < N && state[k] == 0);
    state[k] = 2;
  }
  lmp_pool_event_t ev;
  CHECK_EQ(lmp_pool_wait(p, &ev, lmp_deadline(0.2)), -ETIMEDOUT);
  CHECK(cancelled > 0);
  lmp_pool_free(p);
}

TEST(close_drains_then_ends)
{
  lmp_pool_t *p = make(2, 0, 0, NULL);
  for (int i = 0; i < 50; i++)
    submit(p, T_ECHO, &i, sizeof i);
  lmp_pool_slot_info_t s0, s1;
  CHECK_EQ(lmp_pool_slot(p, 0, &s0), 0);
  CHECK_EQ(lmp_pool_slot(p, 1, &s1), 0);
  lmp_pool_close(p);
  uint64_t id;
  struct iovec v = {NULL, 0};
  CHECK_EQ(lmp_pool_submit(p, T_ECHO, &v, 1, &id), -EPIPE);
  int n = 0, rc;
  lmp_pool_event_t ev;
  while ((rc = lmp_pool_wait(p, &ev, lmp_deadline(10))) == 0)
    n += ev.type == LMP_POOL_DONE;
  CHECK_EQ(rc, -EPIPE);
  CHECK_EQ(n, 50);
  CHECK(!lmp_test_alive(s0.pid));
  CHECK(!lmp_test_alive(s1.pid));
  lmp_pool_free(p);
}

TEST(terminate_is_prompt)
{
  lmp_pool_t *p = make(2, 0, 0, NULL);
  for (int i = 0; i < 10; i++)
    submit_ms(p, 10000);
  pid_t a = busy_pid(p, 0), b = busy_pid(p, 1);
  int64_t t0 = lmp_now_ns();
  lmp_pool_terminate(p);
  CHECK(lmp_now_ns() - t0 < 2000 * MS);
  CHECK(!lmp_test_alive(a));
  CHECK(!lmp_test_alive(b));
  lmp_pool_event_t ev;
  CHECK_EQ(lmp_pool_wait(p, &ev, lmp_deadline(1)), -EPIPE);
  lmp_pool_free(p);
}

/* free never waits: running workers are killed and reaped later. */
TEST(free_does_not_block)
{
  lmp_pool_t *p = make(1, 0, 0, NULL);
  submit_ms(p, 10000);
  pid_t pid = busy_pid(p, 0);
  int64_t t0 = lmp_now_ns();
  lmp_pool_free(p);
  CHECK(lmp_now_ns() - t0 < 500 * MS);
  for (int i = 0; i < 200 && lmp_test_alive(pid); i++)
    lmp_test_sleep_ms(10);
  CHECK(!lmp_test_alive(pid));
  lmp_proc_reap();
}

TEST(fd_readable_while_replies_wait)
{
  lmp_pool_t *p = make(1, 0, 0, NULL);
  int fd = lmp_pool_fd(p);
  lmp_pool_event_t ev;
  CHECK_EQ(lmp_pool_wait(p, &ev, 0), -ETIMEDOUT);
  CHECK(!readable(fd));
  uint64_t id = submit(p, T_PID, NULL, 0);
  CHECK(wait_readable(fd, 5000));
  CHECK_EQ(lmp_pool_wait(p, &ev, 0), 0);
  CHECK_EQ(ev.id, id);
  CHECK_EQ(lmp_pool_wait(p, &ev, 0), -ETIMEDOUT);
  CHECK(!readable(fd));
  /* A death wakes it too (through the worker's pidfd, where there are
   * pidfds: not under valgrind, for one). */
  if (have_pidfd()) {
    submit_ms(p, 10000);
    pid_t pid = busy_pid(p, 0);
    kill(pid, SIGKILL);
    CHECK(wait_readable(fd, 5000));
  }
  lmp_pool_free(p);
}

TEST(no_leaks)
{
  lmp_runtime_init();
  lmp_pool_free(make(1, 0, 0, NULL)); /* the family's registry of pools stays */
  for (int i = 0; i < 100 && lmp_proc_children(NULL, 0) > 0; i++)
    lmp_test_sleep_ms(10);
  int fds = lmp_test_fd_count();
  int segs = lmp_test_shm_count(lmp_runtime_prefix());
  for (int round = 0; round < 3; round++) {
    lmp_pool_t *p = make(2, 1, 1.0, NULL);
    for (int i = 0; i < 10; i++)
      submit(p, T_ECHO, &i, sizeof i);
    submit(p, T_KILL, NULL, 0);
    for (int i = 0; i < 11; i++)
      next(p);
    if (round == 0) {
      lmp_pool_terminate(p);
    } else if (round == 1) {
      lmp_pool_close(p);
      lmp_pool_event_t ev;
      while (lmp_pool_wait(p, &ev, lmp_deadline(10)) == 0) {
      }
    }
    lmp_pool_free(p);
  }
  for (int i = 0; i < 100 && lmp_proc_children(NULL, 0) > 0; i++)
    lmp_test_sleep_ms(10);
  CHECK_EQ(lmp_proc_children(NULL, 0), 0);
  CHECK_EQ(lmp_test_fd_count(), fds);
  CHECK_EQ(lmp_test_shm_count(lmp_runtime_prefix()), segs);
}

/* Workers make pools of their own: the descriptors they inherited from this
 * pool must not be mistaken for those of the new one. */
TEST(nested_pools)
{
  lmp_pool_t *p = make(2, 0, 0, NULL);
  for (int i = 0; i < 6; i++) {
    char msg[16];
    int len = snprintf(msg, sizeof msg, "nested %d", i);
    uint64_t id = submit(p, T_NESTED, msg, (size_t)len);
    lmp_pool_event_t ev = next(p);
    CHECK_EQ(ev.type, LMP_POOL_DONE);
    CHECK_EQ(ev.id, id);
    CHECK_EQ(ev.len, (size_t)len);
    CHECK(memcmp(ev.data, msg, (size_t)len) == 0);
  }
  lmp_pool_free(p);
}

/* A start hook instead of fork: the new process becomes its worker through
 * the ticket alone, and gets the pool's limits from the shared header. */
static _Atomic int *hooked;

static int start_hook(void *ctx, const char *ticket, int index, lmp_proc_t **out)
{
  CHECK(ctx == &hooked);
  CHECK(index >= 0 && index < 2);
  CHECK(strlen(ticket) < LMP_POOL_TICKET_MAX);
  atomic_fetch_add(hooked, 1);
  int rc = lmp_proc_fork(1, out);
  if (rc != 0)
    return rc < 0 ? rc : 0;
  lmp_pool_worker_t *w;
  CHECK_EQ(lmp_pool_worker_attach(ticket, &w), 0);
  CHECK_EQ(lmp_pool_worker_index(w), index);
  CHECK_EQ(lmp_pool_worker_timed(w), 1);
  int code = body(w, NULL);
  lmp_pool_worker_release(w);
  lmp_proc_exit(code);
}

TEST(start_hook)
{
  hooked = shared_counter();
  lmp_pool_config_t cfg = {0};
  cfg.processes = 2;
  cfg.maxtasksperchild = 2;
  cfg.task_timeout_ns = 300 * MS;
  cfg.start = start_hook;
  cfg.ctx = &hooked;
  lmp_pool_t *p;
  CHECK_EQ(lmp_pool_create(&cfg, &p), 0);
  CHECK_EQ(atomic_load(hooked), 2);
  for (int i = 0; i < 20; i++) {
    char msg[16];
    int len = snprintf(msg, sizeof msg, "echo %d", i);
    uint64_t id = submit(p, T_ECHO, msg, (size_t)len);
    lmp_pool_event_t ev = next(p);
    CHECK_EQ(ev.type, LMP_POOL_DONE);
    CHECK_EQ(ev.id, id);
    CHECK(ev.len == (size_t)len && memcmp(ev.data, msg, (size_t)len) == 0);
  }
  CHECK(atomic_load(hooked) >= 10); /* 2 tasks a worker: 10 workers at least, all hooked */
  uint64_t slow = submit_ms(p, 10000);
  lmp_pool_event_t ev = next(p);
  CHECK_EQ(ev.type, LMP_POOL_TIMEOUT);
  CHECK_EQ(ev.id, slow);
  /* Bad tickets, and a ticket of a pool that is gone. */
  lmp_pool_worker_t *w;
  CHECK_EQ(lmp_pool_worker_attach("", &w), -EINVAL);
  CHECK_EQ(lmp_pool_worker_attach("a b c 1", &w), -EINVAL);
  CHECK(w == NULL);
  lmp_pool_close(p);
  while (lmp_pool_wait(p, &ev, lmp_deadline(10)) == 0) {
  }
  lmp_pool_free(p);
  char gone[LMP_POOL_TICKET_MAX];
  snprintf(gone, sizeof gone, "%s-none %s-none %s-none 0 1", lmp_runtime_prefix(),
           lmp_runtime_prefix(), lmp_runtime_prefix());
  CHECK_EQ(lmp_pool_worker_attach(gone, &w), -ENOENT);
}

/* An observer finds the pool through the registry and reads its slots,
 * the busy one with its task. */
TEST(observers)
{
  lmp_pool_t *p = make(1, 0, 0, NULL); /* one worker: the one busy with `slow` */
  uint64_t slow = submit_ms(p, 10000);
  pid_t pid = busy_pid(p, 0);
  lmp_pool_entry_t e[8];
  int n = lmp_pool_list(getpid(), e, 8);
  CHECK_EQ(n, 1);
  CHECK_EQ(e[0].owner, getpid());
  CHECK_EQ(e[0].root, lmp_runtime_root_pid());
  pid_t roots[16];
  int nr = lmp_pool_programs(roots, 16), found = 0;
  for (int i = 0; i < nr && i < 16; i++)
    found |= roots[i] == lmp_runtime_root_pid();
  CHECK(found);
  lmp_pool_stats_t st;
  lmp_pool_slot_info_t s[4];
  CHECK_EQ(lmp_pool_peek(e[0].name, &st, s, 4), 1);
  CHECK_EQ(st.running, 1);
  CHECK_EQ(s[0].pid, pid);
  CHECK_EQ(s[0].state, LMP_POOL_BUSY);
  CHECK_EQ(s[0].task, slow);
  CHECK_EQ(lmp_pool_peek("/lmp.no.such", &st, s, 4), -ENOENT);
  lmp_pool_free(p);
  CHECK_EQ(lmp_pool_list(getpid(), e, 8), 0);
}

/* A worker grown past max_memory retires after its task, which completes. */
TEST(max_memory)
{
  lmp_pool_config_t cfg = {0};
  cfg.processes = 1;
  cfg.max_memory = 1; /* every worker is past it */
  cfg.body = body;
  lmp_pool_t *p;
  CHECK_EQ(lmp_pool_create(&cfg, &p), 0);
  pid_t pids[3];
  for (int i = 0; i < 3; i++) {
    submit(p, T_PID, NULL, 0);
    lmp_pool_event_t ev = next(p);
    CHECK_EQ(ev.type, LMP_POOL_DONE);
    pids[i] = event_pid(&ev);
  }
  CHECK(pids[0] != pids[1] && pids[1] != pids[2]);
  lmp_pool_stats_t st;
  lmp_pool_stats(p, &st);
  CHECK_EQ(st.done, 3);
  CHECK(st.recycled >= 2);
  CHECK(st.restarts >= 2);
  lmp_pool_free(p);
}

TEST(bad_config)
{
  lmp_pool_config_t cfg = {0};
  lmp_pool_t *p;
  cfg.body = body;
  CHECK_EQ(lmp_pool_create(&cfg, &p), -EINVAL);
  cfg.processes = 1;
  cfg.body = NULL;
  CHECK_EQ(lmp_pool_create(&cfg, &p), -EINVAL);
  CHECK(p == NULL);
}

TEST_LIST = {
    TEST_ENTRY(replies),
    TEST_ENTRY(take_drains),
    TEST_ENTRY_T(worker_lost, 30),
    TEST_ENTRY_T(deaths_among_many, 60),
    TEST_ENTRY_T(task_timeout, 30),
    TEST_ENTRY_T(timeout_wakes_fd, 30),
    TEST_ENTRY(maxtasksperchild),
    TEST_ENTRY(init_fails_once),
    TEST_ENTRY(init_crash_breaks),
    TEST_ENTRY(killed_while_starting),
    TEST_ENTRY(cancel_and_states),
    TEST_ENTRY_T(cancel_races_workers, 30),
    TEST_ENTRY(close_drains_then_ends),
    TEST_ENTRY(terminate_is_prompt),
    TEST_ENTRY(free_does_not_block),
    TEST_ENTRY(fd_readable_while_replies_wait),
    TEST_ENTRY_T(no_leaks, 30),
    TEST_ENTRY_T(nested_pools, 30),
    TEST_ENTRY_T(start_hook, 30),
    TEST_ENTRY(observers),
    TEST_ENTRY(max_memory),
    TEST_ENTRY(bad_config),
    TEST_END,
};

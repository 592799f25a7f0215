/*
 * test_faults.c -- the runtime under faults it cannot prevent: signals
 * landing in every blocking call, garbage on a pipe, damage in a queue's
 * ring, descriptors that must not reach exec'd programs, and other users'
 * objects planted where lmp looks for its own.
 *
 * EINTR.  A helper process sends SIGUSR1 to the test process every 150 us
 * while it blocks in each call, once with a handler installed without
 * SA_RESTART (every system call in progress fails with EINTR) and once with
 * it (some are restarted, poll(2) and futex waits with a timeout never are).
 * Every call must still return what it would have returned without the
 * signals: the message, the exit code, the lock, or -ETIMEDOUT no earlier
 * than its deadline.
 *
 * LMP_STRESS=1 (make stress) multiplies the rounds; under valgrind
 * (LMP_TEST_SANITIZER=valgrind) they shrink, and the storm slows down, since
 * every signal costs valgrind far more than it costs the kernel.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "lmp/common.h"
#include "lmp/mutex.h"
#include "lmp/pipe.h"
#include "lmp/pool.h"
#include "lmp/proc.h"
#include "lmp/queue.h"
#include "lmp/runtime.h"
#include "lmp/segment.h"
#include "lmp/shmem.h"
#include "lmp/syncobj.h"
#include "internal.h"
#include "runner.h"

#define MS 1000000LL
#define NOBODY 65534 /* a uid that owns nothing here */

/* === helpers === */

static int under_valgrind(void)
{
  const char *e = getenv("LMP_TEST_SANITIZER");
  return e && strcmp(e, "valgrind") == 0;
}

static int stress(int normal, int heavy)
{
  const char *e = getenv("LMP_STRESS");
  if (e && *e && strcmp(e, "0") != 0)
    return heavy;
  return under_valgrind() ? (normal + 19) / 20 : normal;
}

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint32_t rnd(uint32_t n)
{
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return n ? (uint32_t)(rng % n) : (uint32_t)rng;
}

/* Payload bytes that depend on the sequence number, the length and the
 * position: a message from the wrong place, torn or shifted, never matches. */
static void fill(char *p, size_t len, uint32_t seq)
{
  uint32_t x = seq * 2654435761u ^ (uint32_t)len;
  for (size_t i = 0; i < len; i++) {
    x = x * 1103515245u + 12345u;
    p[i] = (char)(x >> 16);
  }
}

static int matches(const char *p, size_t len, uint32_t seq)
{
  if (len == 0)
    return 1; /* p may be NULL */
  char *want = malloc(len ? len : 1);
  CHECK(want != NULL);
  fill(want, len, seq);
  int ok = memcmp(want, p, len) == 0;
  free(want);
  return ok;
}

/* Lengths from empty to several socket buffers, and over the queue's
 * inline limit (which spills to a segment of its own). */
static size_t msg_len(uint32_t i)
{
  switch (i % 7) {
  case 0:
    return 0;
  case 1:
    return 5;
  case 2:
    return 100 + i % 300;
  case 3:
    return 20000 + i; /* spills in a 64 KiB ring */
  case 4:
    return 9u << 20; /* larger than the socket buffers */
  default:
    return 1000 + (i * 7919u) % 5000;
  }
}

/* -ETIMEDOUT, and not before the deadline. */
#define CHECK_TIMED_OUT(call, deadline)                                                            \
  do {                                                                                             \
    CHECK_EQ((call), -ETIMEDOUT);                                                                  \
    CHECK(lmp_now_ns() >= (deadline));                                                             \
  } while (0)

/* === the signal storm === */

static volatile sig_atomic_t hits;

static void on_usr1(int sig)
{
  (void)sig;
  hits++;
}

static void catch_usr1(int restart)
{
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sa.sa_flags = restart ? SA_RESTART : 0;
  sigemptyset(&sa.sa_mask);
  CHECK_EQ(sigaction(SIGUSR1, &sa, NULL), 0);
}

/* A process that sends SIGUSR1 to this one every 150 us (5 ms under
 * valgrind) until stopped. */
static pid_t storm_start(int restart)
{
  pid_t target = getpid(), pid;
  catch_usr1(restart);
  hits = 0;
  pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    struct timespec ts = {0, under_valgrind() ? 5000000 : 150000};
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    signal(SIGUSR1, SIG_IGN);
    while (kill(target, SIGUSR1) == 0)
      nanosleep(&ts, NULL);
    _exit(0);
  }
  /* Return once signals arrive, so the calls that follow get some. */
  for (int i = 0; i < 10000 && hits == 0; i++)
    lmp_test_sleep_ms(1);
  CHECK(hits > 0);
  return pid;
}

static void storm_stop(pid_t pid)
{
  kill(pid, SIGKILL);
  CHECK_EQ(lmp_test_wait(pid, 5000), -SIGKILL);
}

static void nap(void)
{
  lmp_test_sleep_ms(1 + (int)rnd(3));
}

/* === EINTR: queues === */

static void put_seq(lmp_queue_t *q, uint32_t i)
{
  size_t len = msg_len(i) > (1u << 20) ? 70000 : msg_len(i);
  char *p = malloc(len ? len : 1);
  fill(p, len, i);
  CHECK_EQ(lmp_queue_put(q, p, len, LMP_FOREVER), 0);
  free(p);
}

static int get_seq(lmp_queue_t *q, lmp_buf_t *b, uint32_t i)
{
  size_t len = msg_len(i) > (1u << 20) ? 70000 : msg_len(i);
  return lmp_queue_get(q, b, LMP_FOREVER) == 0 && b->len == len && matches(b->data, len, i);
}

TEST(eintr_queue)
{
  uint32_t n = (uint32_t)stress(300, 3000);
  lmp_buf_t b = {0};
  for (int restart = 0; restart < 2; restart++) {
    lmp_queue_t *q;
    CHECK_EQ(lmp_queue_create(2, 1u << 16, &q), 0);
    /* This process blocks in get; a child produces with pauses. */
    lmp_proc_t *p = lmp_test_start();
    if (!p) {
      for (uint32_t i = 0; i < n; i++) {
        if (i % 8 == 0)
          nap();
        put_seq(q, i);
      }
      lmp_proc_exit(0);
    }
    pid_t st = storm_start(restart);
    for (uint32_t i = 0; i < n; i++)
      CHECK(get_seq(q, &b, i));
    CHECK_EQ(lmp_test_finish(p), 0);
    /* This process blocks in put on the full queue; a child consumes. */
    p = lmp_test_start();
    if (!p) {
      for (uint32_t i = 0; i < n; i++) {
        if (i % 8 == 0)
          nap();
        if (!get_seq(q, &b, i))
          lmp_proc_exit(1);
      }
      lmp_proc_exit(0);
    }
    for (uint32_t i = 0; i < n; i++)
      put_seq(q, i);
    CHECK_EQ(lmp_test_finish(p), 0);
    int64_t dl = lmp_deadline(0.1);
    CHECK_TIMED_OUT(lmp_queue_get(q, &b, dl), dl);
    put_seq(q, 1);
    put_seq(q, 2);
    dl = lmp_deadline(0.1);
    CHECK_TIMED_OUT(lmp_queue_put(q, "x", 1, dl), dl);
    /* JoinableQueue's join: the tasks are done by a child. */
    p = lmp_test_start();
    if (!p) {
      for (uint32_t i = 1; i <= 2; i++) {
        nap();
        if (!get_seq(q, &b, i) || lmp_queue_task_done(q) < 0)
          lmp_proc_exit(1);
      }
      lmp_proc_exit(0);
    }
    /* Every put so far counts; the ones taken above are marked done here. */
    for (uint32_t i = 0; i < 2 * n; i++)
      CHECK_EQ(lmp_queue_task_done(q), 0);
    CHECK_EQ(lmp_queue_join(q, LMP_FOREVER), 0);
    CHECK_EQ(lmp_test_finish(p), 0);
    storm_stop(st);
    lmp_queue_free(q);
  }
  lmp_buf_free(&b);
}

/* === EINTR: pipes === */

static void send_seq(int fd, uint32_t i)
{
  size_t len = msg_len(i);
  char *p = malloc(len ? len : 1);
  fill(p, len, i);
  CHECK_EQ(lmp_pipe_send(fd, p, len), 0);
  free(p);
}

static int recv_seq(int fd, lmp_pipe_reader_t *r, uint32_t i, int64_t deadline)
{
  return lmp_pipe_recv(r, fd, deadline) == 0 && r->msg.len == msg_len(i) &&
         matches(r->msg.data, r->msg.len, i);
}

TEST(eintr_pipe)
{
  uint32_t n = (uint32_t)stress(40, 400);
  lmp_pipe_reader_t b = {0};
  for (int restart = 0; restart < 2; restart++) {
    int fds[2];
    CHECK_EQ(lmp_pipe_pair(1, fds), 0);
    /* This process receives (blocking, or with a deadline); a child sends. */
    lmp_proc_t *p = lmp_test_start();
    if (!p) {
      for (uint32_t i = 0; i < n; i++) {
        nap();
        send_seq(fds[0], i);
      }
      lmp_proc_exit(0);
    }
    pid_t st = storm_start(restart);
    for (uint32_t i = 0; i < n; i++)
      CHECK(recv_seq(fds[1], &b, i, i % 2 ? LMP_FOREVER : lmp_deadline(60)));
    CHECK_EQ(lmp_test_finish(p), 0);
    /* This process sends into a full socket; a child reads slowly. */
    p = lmp_test_start();
    if (!p) {
      for (uint32_t i = 0; i < n; i++) {
        nap();
        if (!recv_seq(fds[0], &b, i, LMP_FOREVER))
          lmp_proc_exit(1);
      }
      lmp_proc_exit(0);
    }
    for (uint32_t i = 0; i < n; i++)
      send_seq(fds[1], i);
    CHECK_EQ(lmp_test_finish(p), 0);
    int64_t dl = lmp_deadline(0.1);
    CHECK_TIMED_OUT(lmp_pipe_recv(&b, fds[1], dl), dl);
    dl = lmp_deadline(0.1);
    CHECK_EQ(lmp_pipe_poll(&b, fds[1], dl), 0);
    CHECK(lmp_now_ns() >= dl);
    storm_stop(st);
    close(fds[0]);
    close(fds[1]);
  }
  lmp_pipe_reader_free(&b);
}

/* === EINTR: processes === */

TEST(eintr_proc_wait)
{
  for (int restart = 0; restart < 2; restart++) {
    pid_t st = storm_start(restart);
    for (int i = 0; i < stress(5, 50); i++) {
      lmp_proc_t *p = lmp_test_start();
      if (!p) {
        lmp_test_sleep_ms(50);
        lmp_proc_exit(7);
      }
      CHECK_EQ(lmp_test_finish(p), 7);
    }
    lmp_proc_t *p = lmp_test_start();
    if (!p) {
      lmp_test_sleep_ms(60000);
      lmp_proc_exit(0);
    }
    int64_t dl = lmp_deadline(0.1);
    CHECK_TIMED_OUT(lmp_proc_wait(p, dl), dl);
    CHECK_EQ(lmp_proc_alive(p), 1);
    CHECK_EQ(lmp_proc_signal(p, SIGKILL), 0);
    CHECK_EQ(lmp_test_finish(p), -SIGKILL);
    storm_stop(st);
  }
}

/* === EINTR: sync objects === */

typedef struct shared {
  lmp_mutex_t m;
  lmp_cond_t c;
  lmp_lock_t lock;
  lmp_sem_t sem;
  lmp_event_t ev;
  lmp_condition_t cond;
  lmp_barrier_t bar;
  volatile int stage, flag;
} shared_t;

static shared_t *shared_new(void)
{
  shared_t *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  CHECK(s != MAP_FAILED);
  CHECK_EQ(lmp_mutex_init(&s->m), 0);
  lmp_cond_init(&s->c);
  CHECK_EQ(lmp_lock_init(&s->lock, 0), 0);
  CHECK_EQ(lmp_sem_init(&s->sem, 0, LMP_SEM_VALUE_MAX), 0);
  lmp_event_init(&s->ev);
  lmp_condition_init(&s->cond);
  CHECK_EQ(lmp_barrier_init(&s->bar, 2), 0);
  return s;
}

static void set_int(volatile int *p, int v)
{
  __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static int get_int(volatile int *p)
{
  return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static void await_int(volatile int *p, int v)
{
  for (int i = 0; i < 10000 && get_int(p) != v; i++)
    lmp_test_sleep_ms(1);
  CHECK_EQ(get_int(p), v);
}

/* A plain fork: sync objects need no runtime. */
static pid_t child(void)
{
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0)
    signal(SIGUSR1, SIG_IGN);
  return pid;
}

static void sync_round(shared_t *s)
{
  pid_t pid;
  int64_t dl;

  /* mutex: held elsewhere for a while, then free */
  set_int(&s->stage, 0);
  set_int(&s->flag, 0);
  if ((pid = child()) == 0) {
    CHECK_EQ(lmp_mutex_lock(&s->m, LMP_FOREVER), 0);
    set_int(&s->stage, 1);
    await_int(&s->flag, 1);
    lmp_test_sleep_ms(50);
    lmp_mutex_unlock(&s->m);
    _exit(0);
  }
  await_int(&s->stage, 1);
  dl = lmp_deadline(0.1);
  CHECK_TIMED_OUT(lmp_mutex_lock(&s->m, dl), dl);
  set_int(&s->flag, 1);
  CHECK_EQ(lmp_mutex_lock(&s->m, LMP_FOREVER), 0);
  CHECK_EQ(lmp_test_wait(pid, 10000), 0);

  /* condition variable: signalled after a while; a timed wait times out */
  set_int(&s->flag, 0);
  if ((pid = child()) == 0) {
    lmp_test_sleep_ms(50);
    CHECK_EQ(lmp_mutex_lock(&s->m, LMP_FOREVER), 0);
    set_int(&s->flag, 1);
    lmp_mutex_unlock(&s->m);
    lmp_cond_broadcast(&s->c);
    _exit(0);
  }
  while (!get_int(&s->flag))
    CHECK_EQ(lmp_cond_wait(&s->c, &s->m, LMP_FOREVER), 0);
  dl = lmp_deadline(0.1);
  CHECK_TIMED_OUT(lmp_cond_wait(&s->c, &s->m, dl), dl);
  lmp_mutex_unlock(&s->m);
  CHECK_EQ(lmp_test_wait(pid, 10000), 0);

  /* Lock */
  set_int(&s->stage, 0);
  set_int(&s->flag, 0);
  if ((pid = child()) == 0) {
    CHECK_EQ(lmp_lock_acquire(&s->lock, LMP_FOREVER), 0);
    set_int(&s->stage, 1);
    await_int(&s->flag, 1);
    lmp_test_sleep_ms(50);
    CHECK_EQ(lmp_lock_release(&s->lock), 0);
    _exit(0);
  }
  await_int(&s->stage, 1);
  dl = lmp_deadline(0.1);
  CHECK_TIMED_OUT(lmp_lock_acquire(&s->lock, dl), dl);
  set_int(&s->flag, 1);
  CHECK_EQ(lmp_lock_acquire(&s->lock, LMP_FOREVER), 0);
  CHECK_EQ(lmp_test_wait(pid, 10000), 0);

  /* Condition on that Lock (held) */
  set_int(&s->flag, 0);
  if ((pid = child()) == 0) {
    lmp_test_sleep_ms(50);
    CHECK_EQ(lmp_lock_acquire(&s->lock, LMP_FOREVER), 0);
    set_int(&s->flag, 1);
    CHECK(lmp_condition_notify(&s->cond, &s->lock, UINT32_MAX) >= 0);
    CHECK_EQ(lmp_lock_release(&s->lock), 0);
    _exit(0);
  }
  while (!get_int(&s->flag))
    CHECK_EQ(lmp_condition_wait(&s->cond, &s->lock, LMP_FOREVER, NULL), 0);
  dl = lmp_deadline(0.1);
  CHECK_TIMED_OUT(lmp_condition_wait(&s->cond, &s->lock, dl, NULL), dl);
  CHECK_EQ(lmp_lock_owned(&s->lock), 1);
  CHECK_EQ(lmp_lock_release(&s->lock), 0);
  CHECK_EQ(lmp_test_wait(pid, 10000), 0);

  /* Semaphore and Event: given by another process after a while */
  if ((pid = child()) == 0) {
    lmp_test_sleep_ms(50);
    CHECK_EQ(lmp_sem_release(&s->sem, 1), 0);
    lmp_test_sleep_ms(50);
    lmp_event_set(&s->ev);
    _exit(0);
  }
  CHECK_EQ(lmp_sem_acquire(&s->sem, LMP_FOREVER), 0);
  CHECK_EQ(lmp_event_wait(&s->ev, LMP_FOREVER), 0);
  CHECK_EQ(lmp_test_wait(pid, 10000), 0);
  dl = lmp_deadline(0.1);
  CHECK_TIMED_OUT(lmp_sem_acquire(&s->sem, dl), dl);
  lmp_event_clear(&s->ev);
  dl = lmp_deadline(0.1);
  CHECK_TIMED_OUT(lmp_event_wait(&s->ev, dl), dl);

  /* Barrier of two: the other arrives after a while; alone, a deadline */
  if ((pid = child()) == 0) {
    lmp_test_sleep_ms(50);
    _exit(lmp_barrier_wait(&s->bar, lmp_deadline(10), NULL, NULL) >= 0 ? 0 : 1);
  }
  CHECK(lmp_barrier_wait(&s->bar, LMP_FOREVER, NULL, NULL) >= 0);
  CHECK_EQ(lmp_test_wait(pid, 10000), 0);
  dl = lmp_deadline(0.1);
  CHECK_TIMED_OUT(lmp_barrier_wait(&s->bar, dl, NULL, NULL), dl);
  CHECK_EQ(lmp_barrier_broken(&s->bar), 1);
  lmp_barrier_reset(&s->bar);
}

TEST(eintr_sync)
{
  shared_t *s = shared_new();
  for (int restart = 0; restart < 2; restart++) {
    pid_t st = storm_start(restart);
    for (int i = 0; i < stress(2, 20); i++)
      sync_round(s);
    storm_stop(st);
  }
}

/* === EINTR: the fd stash and the pool === */

TEST(eintr_stash)
{
  for (int restart = 0; restart < 2; restart++) {
    pid_t st = storm_start(restart);
    for (int i = 0; i < stress(200, 2000); i++) {
      int fd = open("/dev/null", O_RDONLY | O_CLOEXEC), back = -1;
      struct stat a, b;
      uint64_t token;
      CHECK(fd >= 0);
      CHECK_EQ(lmp_fd_stash(fd, &token), 0);
      CHECK_EQ(fstat(fd, &a), 0);
      close(fd);
      CHECK_EQ(lmp_fd_fetch(token, &back), 0);
      CHECK_EQ(fstat(back, &b), 0);
      CHECK(a.st_dev == b.st_dev && a.st_ino == b.st_ino);
      CHECK_EQ(lmp_fd_fetch(token, &fd), -ENOENT);
      close(back);
    }
    storm_stop(st);
  }
}

static int echo_body(lmp_pool_worker_t *w, void *ctx)
{
  lmp_pool_task_t t;
  (void)ctx;
  signal(SIGUSR1, SIG_IGN);
  while (lmp_pool_worker_next(w, &t) == 0) {
    struct iovec v = {(void *)t.data, t.len};
    if (t.tag == 2)
      nap();
    CHECK_EQ(lmp_pool_worker_reply(w, 0, &v, 1), 0);
  }
  return 0;
}

TEST(eintr_pool)
{
  int n = stress(300, 3000);
  char *seen = calloc((size_t)n + 1, 1);
  CHECK(seen != NULL);
  for (int restart = 0; restart < 2; restart++) {
    lmp_pool_config_t cfg = {0};
    lmp_pool_t *pool;
    lmp_pool_event_t ev;
    cfg.processes = 2;
    cfg.body = echo_body;
    pid_t st = storm_start(restart);
    CHECK_EQ(lmp_pool_create(&cfg, &pool), 0);
    memset(seen, 0, (size_t)n + 1);
    for (uint32_t i = 1; i <= (uint32_t)n; i++) {
      struct iovec v = {&i, sizeof i};
      uint64_t id;
      CHECK_EQ(lmp_pool_submit(pool, i % 16 == 0 ? 2 : 1, &v, 1, &id), 0);
    }
    for (int k = 0; k < n; k++) {
      uint32_t i;
      CHECK_EQ(lmp_pool_wait(pool, &ev, k % 2 ? LMP_FOREVER : lmp_deadline(60)), 0);
      CHECK_EQ(ev.type, LMP_POOL_DONE);
      CHECK_EQ(ev.len, sizeof i);
      memcpy(&i, ev.data, sizeof i);
      CHECK(i >= 1 && i <= (uint32_t)n && !seen[i]);
      CHECK_EQ(ev.id, i); /* ids count from 1 in submission order */
      seen[i] = 1;
    }
    int64_t dl = lmp_deadline(0.1);
    CHECK_TIMED_OUT(lmp_pool_wait(pool, &ev, dl), dl);
    lmp_pool_close(pool);
    while (lmp_pool_wait(pool, &ev, LMP_FOREVER) == 0) {
    }
    lmp_pool_free(pool);
    storm_stop(st);
  }
  free(seen);
}

/* === garbage on a pipe === */

/*
 * Frames, forged lengths, truncations and noise written into a socketpair
 * whose writer then closes: every receive returns a message (its bytes are
 * whatever came), -EBADMSG, -ENOMEM or -EPIPE, never hangs, and memory
 * follows the bytes that arrived, not the lengths they announce.
 */
/* One record for the pipe reader: a header (length, writer, index) that is
 * well formed, or consistent with the records before it, or not at all,
 * and a body; or noise shorter than a header. */
static size_t garbage_record(unsigned char *p, uint32_t *next_index)
{
  static const uint64_t lengths[] = {0,
                                     1,
                                     7,
                                     8,
                                     100,
                                     4096,
                                     1u << 20,
                                     UINT32_MAX,
                                     (uint64_t)1 << 32,
                                     ((uint64_t)1 << 40) - 1,
                                     (uint64_t)1 << 40,
                                     ((uint64_t)1 << 40) + 1,
                                     UINT64_MAX};
  size_t body = rnd(48), n = 0;
  uint64_t len;
  uint32_t writer = 0, index = 0;
  switch (rnd(5)) {
  case 0: /* a whole message */
    len = body;
    break;
  case 1: /* one of several records of a writer, in order or not */
    writer = 1 + rnd(3);
    index = rnd(3) ? next_index[writer]++ : rnd(4);
    len = rnd(2) ? 100 : lengths[rnd(sizeof lengths / sizeof *lengths)];
    break;
  case 2: /* a forged length, writer, index */
    len = lengths[rnd(sizeof lengths / sizeof *lengths)];
    writer = rnd(2) ? 0 : rnd(0);
    index = rnd(2) ? 0 : rnd(0);
    break;
  case 3: /* random */
    len = (uint64_t)rnd(0) << 32 | rnd(0);
    writer = rnd(0);
    index = rnd(0);
    break;
  default: /* noise (never empty: an empty record reads as end of stream) */
    for (body = 1 + rnd(15); body > 0; body--)
      p[n++] = (unsigned char)rnd(256);
    return n;
  }
  for (int i = 0; i < 8; i++)
    p[n++] = (unsigned char)(len >> (8 * i));
  for (int i = 0; i < 4; i++)
    p[n++] = (unsigned char)(writer >> (8 * i));
  for (int i = 0; i < 4; i++)
    p[n++] = (unsigned char)(index >> (8 * i));
  for (; body > 0; body--)
    p[n++] = (unsigned char)rnd(256);
  return n;
}

/* Records of every kind: each is a message, refused alone (-EBADMSG) or
 * part of a message; the pipe goes on to the end of stream, and memory
 * follows what arrived. */
TEST(pipe_reader_garbage)
{
  unsigned char rec[64];
  lmp_pipe_reader_t b = {0};
  long msgs = 0, bad = 0;
  for (int round = 0; round < stress(3000, 100000); round++) {
    int fds[2], rc, calls = 0, records = 0;
    uint32_t next_index[4] = {0};
    size_t total = 0;
    CHECK_EQ(lmp_pipe_pair(1, fds), 0);
    while (records < 60 && rnd(8) != 0) {
      size_t n = garbage_record(rec, next_index);
      CHECK_EQ(write(fds[0], rec, n), (ssize_t)n);
      total += n;
      records++;
    }
    close(fds[0]);
    while ((rc = lmp_pipe_recv(&b, fds[1], lmp_deadline(10))) != -EPIPE) {
      CHECK(rc == 0 || rc == -EBADMSG || rc == -ENOMEM);
      CHECK(rc != 0 || b.msg.len <= total);
      CHECK(++calls <= records);
      msgs += rc == 0;
      bad += rc != 0;
    }
    CHECK(b.parts == NULL);
    /* A record's worth, or at most twice what arrived. */
    CHECK(b.msg.cap <= 2 * total + LMP_PIPE_RECORD);
    close(fds[1]);
    lmp_pipe_reader_free(&b);
  }
  fprintf(stderr, "# %ld messages, %ld records refused\n", msgs, bad);
}

/* === a damaged queue ring === */

/*
 * The ring lives in memory every process of the program can write, so a
 * stray write there is possible (a C host's bug).  Damage to a record's
 * header must cost messages, never a crash or a read outside the ring, and
 * the queue must come back once what was queued is gone.
 */
TEST(queue_ring_damage)
{
  static const char mark[] = "RING-MARK-7f3a";
  lmp_buf_t b = {0};
  for (int round = 0; round < stress(2000, 50000); round++) {
    lmp_queue_t *q;
    CHECK_EQ(lmp_queue_create(0, 1024, &q), 0);
    CHECK_EQ(lmp_queue_put(q, mark, sizeof mark, LMP_FOREVER), 0);
    for (int i = rnd(4); i > 0; i--) {
      char m[100];
      size_t len = rnd(sizeof m);
      fill(m, len, (uint32_t)i);
      CHECK_EQ(lmp_queue_put(q, m, len, LMP_FOREVER), 0);
    }
    /* The first record is the mark's: its header is the 8 bytes before. */
    char *seg = lmp_seg_data(lmp_queue_seg(q)), *at = NULL;
    size_t size = lmp_seg_size(lmp_queue_seg(q));
    for (size_t off = 8; off + sizeof mark <= size && !at; off += 8)
      if (memcmp(seg + off, mark, sizeof mark) == 0)
        at = seg + off - 8;
    CHECK(at != NULL);
    uint32_t len = rnd(0), flags = rnd(0);
    switch (rnd(5)) {
    case 0: /* a length past the ring */
      memcpy(at, &len, 4);
      break;
    case 1: /* a small wrong length */
      len = rnd(64);
      memcpy(at, &len, 4);
      break;
    case 2: /* a spill record with a bogus body */
      flags = 1;
      memcpy(at + 4, &flags, 4);
      len = rnd(80);
      memcpy(at, &len, 4);
      break;
    case 3: /* unknown flags */
      memcpy(at + 4, &flags, 4);
      break;
    default: /* noise over the first records */
      for (int i = 0; i < 64; i++)
        at[rnd(128)] = (char)rnd(256);
    }
    int rc, gets = 0;
    while ((rc = lmp_queue_get(q, &b, lmp_deadline(0))) != -ETIMEDOUT) {
      CHECK(rc == 0 || rc == -EBADMSG || rc == -EINVAL || rc == -ENOENT || rc == -ENOMEM);
      if (rc == -ENOMEM || ++gets > 8)
        break;
    }
    if (rc == -ETIMEDOUT) {
      /* Drained: whatever the damage did, new messages go through whole. */
      for (uint32_t i = 0; i < 20; i++) {
        char m[100];
        fill(m, 50 + i, i);
        CHECK_EQ(lmp_queue_put(q, m, 50 + i, LMP_FOREVER), 0);
      }
      for (uint32_t i = 0; i < 20; i++) {
        CHECK_EQ(lmp_queue_get(q, &b, lmp_deadline(0)), 0);
        CHECK_EQ(b.len, 50 + i);
        CHECK(matches(b.data, b.len, i));
      }
    }
    lmp_queue_free(q);
  }
  lmp_buf_free(&b);
}

/* === descriptors === */

/* Descriptors above stderr that an exec'd program would inherit (listed
 * on stderr once the test's baseline is known). */
static int base_fds = -1; /* inheritable before the test made anything */
static unsigned char base_set[4096];

static int inheritable_fds(void)
{
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  int n = 0;
  CHECK(d != NULL);
  while ((e = readdir(d)) != NULL) {
    int fd = atoi(e->d_name), fl;
    if (e->d_name[0] == '.' || fd <= 2 || fd == dirfd(d))
      continue;
    fl = fcntl(fd, F_GETFD);
    if (fl >= 0 && !(fl & FD_CLOEXEC)) {
      char path[64], target[256] = "";
      snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
      if (readlink(path, target, sizeof target - 1) < 0)
        strcpy(target, "?");
      if (base_fds < 0 && fd < (int)sizeof base_set)
        base_set[fd] = 1;
      else if (fd >= (int)sizeof base_set || !base_set[fd])
        fprintf(stderr, "# inheritable: %d -> %s\n", fd, target);
      n++;
    }
  }
  closedir(d);
  return n;
}

static int fds_body(lmp_pool_worker_t *w, void *ctx)
{
  lmp_pool_task_t t;
  (void)ctx;
  while (lmp_pool_worker_next(w, &t) == 0) {
    int n = inheritable_fds();
    struct iovec v = {&n, sizeof n};
    CHECK_EQ(lmp_pool_worker_reply(w, 0, &v, 1), 0);
  }
  return 0;
}

TEST(descriptors_are_cloexec)
{
  base_fds = inheritable_fds(); /* whatever the shell or make passed down */
  lmp_queue_t *q;
  lmp_shmem_t *m;
  int fds[2], simplex[2], fetched = -1;
  uint64_t token;
  CHECK_EQ(lmp_runtime_init(), 0);
  CHECK_EQ(lmp_queue_create(0, 0, &q), 0);
  CHECK_EQ(lmp_pipe_pair(1, fds), 0);
  CHECK_EQ(lmp_pipe_pair(0, simplex), 0);
  CHECK_EQ(lmp_shmem_create(100, "cloexec", &m), 0);
  CHECK_EQ(lmp_fd_stash(fds[0], &token), 0);
  CHECK_EQ(lmp_fd_fetch(token, &fetched), 0);
  lmp_pool_config_t cfg = {0};
  lmp_pool_t *pool;
  lmp_pool_event_t ev;
  cfg.processes = 1;
  cfg.body = fds_body;
  CHECK_EQ(lmp_pool_create(&cfg, &pool), 0);
  uint64_t id;
  int one = 1;
  struct iovec v = {&one, sizeof one};
  CHECK_EQ(lmp_pool_submit(pool, 1, &v, 1, &id), 0);
  CHECK_EQ(lmp_pool_wait(pool, &ev, lmp_deadline(10)), 0);
  CHECK_EQ(ev.type, LMP_POOL_DONE);
  int in_worker;
  memcpy(&in_worker, ev.data, sizeof in_worker);
  CHECK_EQ(in_worker, base_fds);
  lmp_proc_t *p = lmp_test_start();
  if (!p)
    lmp_proc_exit(inheritable_fds() == base_fds ? 0 : 1);
  CHECK_EQ(lmp_test_finish(p), 0);
  p = lmp_test_start(); /* one still running: its pidfd is open here */
  if (!p) {
    lmp_test_sleep_ms(60000);
    lmp_proc_exit(0);
  }
  CHECK_EQ(inheritable_fds(), base_fds);
  lmp_proc_signal(p, SIGKILL);
  CHECK_EQ(lmp_test_finish(p), -SIGKILL);
  lmp_pool_close(pool);
  while (lmp_pool_wait(pool, &ev, lmp_deadline(10)) == 0) {
  }
  lmp_pool_free(pool);
  lmp_shmem_free(m);
  lmp_queue_free(q);
  close(fetched);
  close(fds[0]);
  close(fds[1]);
  close(simplex[0]);
  close(simplex[1]);
}

/* === other users' objects === */

static int is_root(void)
{
  if (geteuid() == 0)
    return 1;
  fprintf(stderr, "# not root: the other-user cases are skipped\n");
  return 0;
}

/* In a child: become nobody and run fn; the child's exit code. */
static int as_nobody(int (*fn)(void *), void *arg)
{
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    if (setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
      _exit(100);
    _exit(fn(arg));
  }
  return lmp_test_wait(pid, 10000);
}

/* Mode and owner of a /dev/shm entry (name with its leading '/'). */
static void shm_stat(const char *name, struct stat *st)
{
  char path[128];
  snprintf(path, sizeof path, "/dev/shm%s", name);
  CHECK_EQ(stat(path, st), 0);
}

struct forgery {
  char name[96];
  const void *hdr; /* the first bytes of a real segment, to copy */
  size_t len;
  mode_t mode;
};

/* A copy of a real segment under another name: right magic, right size. */
static int forge(void *arg)
{
  struct forgery *f = arg;
  int fd = shm_open(f->name, O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0 || fchmod(fd, f->mode) < 0 || ftruncate(fd, (off_t)f->len) < 0)
    return 1;
  void *p = mmap(NULL, f->len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED)
    return 2;
  memcpy(p, f->hdr, f->len);
  munmap(p, f->len);
  close(fd);
  return 0;
}

TEST(segments_are_private)
{
  lmp_seg_t *s;
  lmp_shmem_t *m;
  struct stat st;
  umask(0); /* the mode must not depend on the caller's umask */
  CHECK_EQ(lmp_seg_create(100, &s), 0);
  shm_stat(lmp_seg_name(s), &st);
  CHECK_EQ(st.st_mode & 0777, 0600);
  CHECK_EQ(st.st_uid, geteuid());
  CHECK_EQ(lmp_shmem_create(100, "private", &m), 0);
  char dir[96];
  snprintf(dir, sizeof dir, "%s.names", lmp_runtime_prefix());
  shm_stat(dir, &st);
  CHECK_EQ(st.st_mode & 0777, 0600);
  lmp_shmem_free(m);
  lmp_seg_release(s);
}

/* Eight roots draw eight different prefixes: the random part is not the pid. */
TEST(prefixes_are_random)
{
  char seen[8][16];
  for (int i = 0; i < 8; i++) {
    int fds[2];
    CHECK_EQ(pipe(fds), 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
      if (lmp_runtime_init() < 0)
        _exit(1);
      const char *r = strrchr(lmp_runtime_prefix(), '.');
      _exit(write(fds[1], r + 1, 8) == 8 ? 0 : 1);
    }
    close(fds[1]);
    memset(seen[i], 0, sizeof seen[i]);
    CHECK_EQ(read(fds[0], seen[i], 8), 8);
    close(fds[0]);
    CHECK_EQ(lmp_test_wait(pid, 10000), 0);
    for (int j = 0; j < i; j++)
      CHECK(strcmp(seen[i], seen[j]) != 0);
  }
}

/*
 * Attaching by name maps only segments this user made owner-only: one that
 * someone else planted under the prefix (another user, or a mode that lets
 * others in) is refused, so its contents never reach lmp's structures.
 */
TEST(attach_refuses_foreign_segments)
{
  lmp_seg_t *s, *x;
  CHECK_EQ(lmp_seg_create(4096, &s), 0);
  struct forgery f;
  f.hdr = (char *)lmp_seg_data(s) - 64; /* the segment header */
  f.len = lmp_seg_size(s) + 64;
  /* Ours, but readable by others. */
  snprintf(f.name, sizeof f.name, "%s.forged.1", lmp_runtime_prefix());
  f.mode = 0644;
  CHECK_EQ(forge(&f), 0);
  CHECK_EQ(lmp_seg_attach(f.name, 0, &x), -EACCES);
  CHECK(x == NULL);
  /* The same with owner-only mode is accepted: the check is not the name. */
  snprintf(f.name, sizeof f.name, "%s.forged.2", lmp_runtime_prefix());
  f.mode = 0600;
  CHECK_EQ(forge(&f), 0);
  CHECK_EQ(lmp_seg_attach(f.name, 0, &x), 0);
  lmp_seg_release(x);
  if (is_root()) {
    /* Another user's, owner-only: root could map it, and must not. */
    snprintf(f.name, sizeof f.name, "%s.forged.3", lmp_runtime_prefix());
    f.mode = 0600;
    CHECK_EQ(as_nobody(forge, &f), 0);
    CHECK_EQ(lmp_seg_attach(f.name, 0, &x), -EACCES);
    /* Another user's, open to all. */
    snprintf(f.name, sizeof f.name, "%s.forged.4", lmp_runtime_prefix());
    f.mode = 0666;
    CHECK_EQ(as_nobody(forge, &f), 0);
    CHECK_EQ(lmp_seg_attach(f.name, 0, &x), -EACCES);
  }
  lmp_seg_release(s);
}

static int plant_names(void *arg)
{
  const char *name = arg;
  int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0666);
  if (fd < 0 || fchmod(fd, 0666) < 0 || ftruncate(fd, 1 << 20) < 0)
    return 1;
  close(fd);
  return 0;
}

/* The user-names directory and the pools' registry have names anyone can
 * compute once a segment of the program shows in /dev/shm: the root takes
 * both when it starts, so another user finds them taken, and named blocks
 * work.  (Not root: the test plants them as the same user, who may.) */
TEST(fixed_names_cannot_be_planted)
{
  lmp_shmem_t *m;
  char dir[96], pools[96];
  CHECK_EQ(lmp_runtime_init(), 0);
  snprintf(dir, sizeof dir, "%s.names", lmp_runtime_prefix());
  snprintf(pools, sizeof pools, "%s.pools", lmp_runtime_prefix());
  if (is_root()) {
    CHECK(as_nobody(plant_names, dir) != 0);
    CHECK(as_nobody(plant_names, pools) != 0);
  }
  CHECK_EQ(lmp_shmem_create(100, "not planted", &m), 0);
  CHECK_EQ(lmp_shmem_unlink(m), 0);
  lmp_shmem_free(m);
}

struct impostor {
  int ready[2];
  const char *prefix;
};

/* Bind the fd stash's address and report whether a descriptor came in. */
static int impostor(void *arg)
{
  struct impostor *im = arg;
  struct sockaddr_un addr;
  socklen_t len = lmp__stash_addr(im->prefix, &addr);
  char byte[64];
  int s = socket(AF_UNIX, SOCK_SEQPACKET, 0), c;
  if (s < 0 || bind(s, (struct sockaddr *)&addr, len) < 0 || listen(s, 8) < 0)
    return 1;
  if (write(im->ready[1], "r", 1) != 1)
    return 1;
  struct timeval tv = {5, 0};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if ((c = accept(s, NULL, NULL)) < 0)
    return 0; /* nobody called */
  setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  int got[LMP__FDS_MAX];
  size_t nfds = LMP__FDS_MAX;
  ssize_t n = lmp__recv_fds(c, byte, sizeof byte, got, &nfds, 0);
  if (n == -EMSGSIZE) /* some came, cut off */
    return 3;
  return n >= 0 && nfds > 0 ? 3 : 0; /* 3: it got a descriptor */
}

/*
 * The stash's socket is in the abstract namespace, which has no file
 * modes.  If the watchdog dies, another user can bind its address: a
 * sender must then refuse to talk to it rather than hand it a descriptor.
 */
TEST(stash_refuses_an_impostor)
{
  if (!is_root())
    return;
  struct impostor im;
  CHECK_EQ(lmp_runtime_init(), 0);
  im.prefix = lmp_runtime_prefix();
  pid_t wd = lmp__watchdog_pid();
  CHECK(wd > 0);
  kill(wd, SIGKILL);
  CHECK(lmp_test_gone(wd, 5000)); /* not our child: it was forked twice */
  CHECK_EQ(pipe(im.ready), 0);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    if (setgid(NOBODY) < 0 || setuid(NOBODY) < 0)
      _exit(100);
    _exit(impostor(&im));
  }
  char r;
  CHECK_EQ(read(im.ready[0], &r, 1), 1);
  int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  uint64_t token;
  CHECK_EQ(lmp_fd_stash(fd, &token), -EACCES);
  close(fd);
  CHECK_EQ(lmp_test_wait(pid, 10000), 0);
  lmp_runtime_cleanup(); /* the watchdog is gone: clean up here */
}

TEST_LIST = {TEST_ENTRY_T(eintr_queue, 120),
             TEST_ENTRY_T(eintr_pipe, 120),
             TEST_ENTRY_T(eintr_proc_wait, 60),
             TEST_ENTRY_T(eintr_sync, 120),
             TEST_ENTRY_T(eintr_stash, 60),
             TEST_ENTRY_T(eintr_pool, 120),
             TEST_ENTRY_T(pipe_reader_garbage, 120),
             TEST_ENTRY_T(queue_ring_damage, 120),
             TEST_ENTRY(descriptors_are_cloexec),
             TEST_ENTRY(segments_are_private),
             TEST_ENTRY(prefixes_are_random),
             TEST_ENTRY(attach_refuses_foreign_segments),
             TEST_ENTRY(fixed_names_cannot_be_planted),
             TEST_ENTRY(stash_refuses_an_impostor),
             TEST_END};

/*
 * test_queue.c -- the shared-memory queue: order, bounds and deadlines,
 * records across the wrap point, spilled payloads, close and task
 * semantics, opening by name, many producers and consumers in separate
 * processes, producers killed in the middle of a put, gathered puts and
 * gets that report what they took.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lmp/common.h"
#include "lmp/proc.h"
#include "lmp/queue.h"
#include "lmp/runtime.h"
#include "lmp/segment.h"
#include "runner.h"

#define MS 1000000LL

/* === helpers === */

static uint32_t checksum(const char *p, size_t len)
{
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < len; i++)
    h = (h ^ (unsigned char)p[i]) * 16777619u;
  return h;
}

/* A message of `len` >= 8 bytes: a sequence number, filler derived from it,
 * and a checksum of the rest in the last 4 bytes. */
static void make_msg(char *p, size_t len, uint32_t seq)
{
  uint32_t x = seq * 2654435761u;
  memcpy(p, &seq, 4);
  for (size_t i = 4; i < len - 4; i++) {
    x = x * 1103515245u + 12345u;
    p[i] = (char)(x >> 16);
  }
  uint32_t sum = checksum(p, len - 4);
  memcpy(p + len - 4, &sum, 4);
}

/* The sequence number of an intact message, or -1. */
static int64_t check_msg(const char *p, size_t len)
{
  uint32_t seq, sum;
  if (len < 8)
    return -1;
  memcpy(&sum, p + len - 4, 4);
  if (sum != checksum(p, len - 4))
    return -1;
  memcpy(&seq, p, 4);
  return seq;
}

static void put_msg(lmp_queue_t *q, size_t len, uint32_t seq)
{
  char *p = malloc(len);
  make_msg(p, len, seq);
  CHECK_EQ(lmp_queue_put(q, p, len, lmp_deadline(10)), 0);
  free(p);
}

static void get_msg(lmp_queue_t *q, lmp_buf_t *b, size_t len, uint32_t seq)
{
  CHECK_EQ(lmp_queue_get(q, b, lmp_deadline(10)), 0);
  CHECK_EQ(b->len, len);
  CHECK_EQ(check_msg(b->data, b->len), seq);
}

/* === tests === */

TEST(fifo)
{
  lmp_queue_t *q;
  lmp_buf_t b = {0};
  CHECK_EQ(lmp_queue_create(0, 0, &q), 0);
  CHECK_EQ(lmp_queue_maxsize(q), 0);
  for (uint32_t i = 0; i < 1000; i++)
    put_msg(q, 8 + i % 300, i);
  CHECK_EQ(lmp_queue_qsize(q), 1000);
  for (uint32_t i = 0; i < 1000; i++)
    get_msg(q, &b, 8 + i % 300, i);
  CHECK_EQ(lmp_queue_qsize(q), 0);
  /* Empty payloads are messages too. */
  CHECK_EQ(lmp_queue_put(q, NULL, 0, LMP_FOREVER), 0);
  b.len = 5;
  CHECK_EQ(lmp_queue_get(q, &b, LMP_FOREVER), 0);
  CHECK_EQ(b.len, 0);
  lmp_buf_free(&b);
  lmp_queue_free(q);
}

TEST(maxsize)
{
  lmp_queue_t *q;
  lmp_buf_t b = {0};
  CHECK_EQ(lmp_queue_create(2, 0, &q), 0);
  CHECK_EQ(lmp_queue_maxsize(q), 2);
  put_msg(q, 8, 1);
  put_msg(q, 8, 2);
  char m[8];
  make_msg(m, 8, 3);
  int64_t t0 = lmp_now_ns();
  CHECK_EQ(lmp_queue_put(q, m, 8, lmp_deadline(0.05)), -ETIMEDOUT);
  int64_t took = lmp_now_ns() - t0;
  CHECK(took >= 50 * MS && took < 2000 * MS);
  t0 = lmp_now_ns();
  CHECK_EQ(lmp_queue_put(q, m, 8, lmp_deadline(0)), -ETIMEDOUT);
  CHECK(lmp_now_ns() - t0 < 20 * MS);
  CHECK_EQ(lmp_queue_qsize(q), 2);
  /* A put blocked on a full queue goes through once a consumer makes room. */
  lmp_proc_t *p = lmp_test_start();
  if (!p)
    lmp_proc_exit(lmp_queue_put(q, m, 8, lmp_deadline(10)) == 0 ? 0 : 1);
  lmp_test_sleep_ms(50);
  CHECK_EQ(lmp_queue_qsize(q), 2);
  get_msg(q, &b, 8, 1);
  CHECK_EQ(lmp_test_finish(p), 0);
  get_msg(q, &b, 8, 2);
  get_msg(q, &b, 8, 3);
  lmp_buf_free(&b);
  lmp_queue_free(q);
}

TEST(nonblocking)
{
  lmp_queue_t *q;
  lmp_buf_t b = {0};
  CHECK_EQ(lmp_queue_create(1, 0, &q), 0);
  int64_t t0 = lmp_now_ns();
  CHECK_EQ(lmp_queue_get(q, &b, lmp_deadline(0)), -ETIMEDOUT);
  CHECK(lmp_now_ns() - t0 < 20 * MS);
  CHECK_EQ(lmp_queue_put(q, "a", 1, lmp_deadline(0)), 0);
  CHECK_EQ(lmp_queue_put(q, "b", 1, lmp_deadline(0)), -ETIMEDOUT);
  CHECK_EQ(lmp_queue_get(q, &b, lmp_deadline(0)), 0);
  CHECK(b.len == 1 && b.data[0] == 'a');
  t0 = lmp_now_ns();
  CHECK_EQ(lmp_queue_get(q, &b, lmp_deadline(0.05)), -ETIMEDOUT);
  CHECK(lmp_now_ns() - t0 >= 50 * MS);
  lmp_buf_free(&b);
  lmp_queue_free(q);
}

/* 8 to 128 bytes: 128 is capacity/8, the largest record kept inline. */
static size_t wrap_len(uint32_t i)
{
  return 8 + (size_t)(i * 31u) % 121;
}

/* A small ring, records of many sizes, the queue kept partly full so that
 * records and headers land on every position around the wrap point. */
TEST(wraparound)
{
  lmp_queue_t *q;
  lmp_buf_t b = {0};
  CHECK_EQ(lmp_queue_create(0, 1024, &q), 0);
  uint32_t in = 0, out = 0;
  for (int round = 0; round < 20000; round++) {
    uint32_t backlog = (uint32_t)(round / 500) % 6;
    for (; in - out > backlog; out++)
      get_msg(q, &b, wrap_len(out), out);
    put_msg(q, wrap_len(in), in);
    in++;
  }
  for (; out < in; out++)
    get_msg(q, &b, wrap_len(out), out);
  CHECK_EQ(lmp_queue_qsize(q), 0);
  lmp_buf_free(&b);
  lmp_queue_free(q);
}

TEST(spill_16mib)
{
  lmp_queue_t *q;
  lmp_buf_t b = {0};
  size_t big = 16u << 20;
  CHECK_EQ(lmp_queue_create(0, 0, &q), 0);
  int segs = lmp_test_segments();
  put_msg(q, 100, 1);
  put_msg(q, big, 2);
  put_msg(q, 100, 3);
  CHECK_EQ(lmp_test_segments(), segs + 1); /* the spilled payload */
  CHECK_EQ(lmp_queue_qsize(q), 3);
  get_msg(q, &b, 100, 1);
  get_msg(q, &b, big, 2);
  get_msg(q, &b, 100, 3);
  CHECK_EQ(lmp_test_segments(), segs); /* unlinked once read */
  /* Across processes too. */
  lmp_proc_t *p = lmp_test_start();
  if (!p) {
    put_msg(q, big, 4);
    lmp_proc_exit(0);
  }
  get_msg(q, &b, big, 4);
  CHECK_EQ(lmp_test_finish(p), 0);
  CHECK_EQ(lmp_test_segments(), segs);
  lmp_buf_free(&b);
  lmp_queue_free(q);
}

/* putv gathers its parts into one record: inline (across the wrap point of
 * a small ring), spilled, and with empty parts. */
TEST(putv_gather)
{
  lmp_queue_t *q;
  lmp_buf_t b = {0};
  char m[4096];
  CHECK_EQ(lmp_queue_create(0, 1024, &q), 0);
  for (uint32_t i = 0; i < 2000; i++) {
    size_t len = wrap_len(i), cut = len / 3;
    make_msg(m, len, i);
    struct iovec iov[3] = {{m, cut}, {NULL, 0}, {m + cut, len - cut}};
    CHECK_EQ(lmp_queue_putv(q, iov, 3, LMP_FOREVER), 0);
    get_msg(q, &b, len, i);
  }
  size_t big = 3000; /* more than capacity/8: spilled */
  make_msg(m, big, 77);
  struct iovec iov[2] = {{m, 1000}, {m + 1000, big - 1000}};
  CHECK_EQ(lmp_queue_putv(q, iov, 2, LMP_FOREVER), 0);
  get_msg(q, &b, big, 77);
  CHECK_EQ(lmp_queue_putv(q, iov, 0, LMP_FOREVER), 0);
  CHECK_EQ(lmp_queue_get(q, &b, LMP_FOREVER), 0);
  CHECK_EQ(b.len, 0);
  lmp_buf_free(&b);
  lmp_queue_free(q);
}

struct hook_log {
  uint32_t seqs[64];
  int n;
};

static void log_seq(void *arg, uint32_t seq)
{
  struct hook_log *log = arg;
  log->seqs[log->n++] = seq;
}

/* The hook of get_hook sees each record's sequence number, spilled records
 * included, and is not called when nothing is taken. */
TEST(get_hook_seq)
{
  lmp_queue_t *q;
  lmp_buf_t b = {0};
  struct hook_log log = {{0}, 0};
  CHECK_EQ(lmp_queue_create(0, 1024, &q), 0);
  for (uint32_t i = 0; i < 20; i++)
    put_msg(q, i == 7 ? 5000 : 16, i);
  for (uint32_t i = 0; i < 10; i++)
    CHECK_EQ(lmp_queue_get(q, &b, LMP_FOREVER), 0);
  for (uint32_t i = 10; i < 20; i++) {
    CHECK_EQ(lmp_queue_get_hook(q, &b, LMP_FOREVER, log_seq, &log), 0);
    CHECK_EQ(check_msg(b.data, b.len), i);
  }
  CHECK_EQ(log.n, 10);
  for (int i = 0; i < 10; i++)
    CHECK_EQ(log.seqs[i], 10 + i);
  CHECK_EQ(lmp_queue_get_hook(q, &b, lmp_deadline(0), log_seq, &log), -ETIMEDOUT);
  lmp_queue_close(q);
  CHECK_EQ(lmp_queue_get_hook(q, &b, LMP_FOREVER, log_seq, &log), -EPIPE);
  CHECK_EQ(log.n, 10);
  /* A spilled record reports its number too. */
  lmp_queue_t *q2;
  CHECK_EQ(lmp_queue_create(0, 1024, &q2), 0);
  put_msg(q2, 16, 0);
  put_msg(q2, 5000, 1);
  log.n = 0;
  CHECK_EQ(lmp_queue_get_hook(q2, &b, LMP_FOREVER, log_seq, &log), 0);
  CHECK_EQ(lmp_queue_get_hook(q2, &b, LMP_FOREVER, log_seq, &log), 0);
  CHECK_EQ(check_msg(b.data, b.len), 1);
  CHECK_EQ(log.n, 2);
  CHECK_EQ(log.seqs[1], 1);
  lmp_buf_free(&b);
  lmp_queue_free(q);
  lmp_queue_free(q2);
}

/* maxsize bounds messages, not bytes: a ring too small for what is queued
 * grows, in an unbounded queue and in a bounded one alike. */
TEST(ring_grows)
{
  lmp_queue_t *q;
  lmp_buf_t b = {0};
  char m[200];
  CHECK_EQ(lmp_runtime_init(), 0);
  int segs = lmp_test_segments();
  CHECK_EQ(lmp_queue_create(0, 4096, &q), 0);
  for (uint32_t i = 0; i < 2000; i++) {
    size_t len = 8 + i % 120;
    make_msg(m, len, i);
    CHECK_EQ(lmp_queue_put(q, m, len, lmp_deadline(0)), 0); /* never waits */
  }
  CHECK_EQ(lmp_queue_qsize(q), 2000);
  for (uint32_t i = 0; i < 1000; i++)
    get_msg(q, &b, 8 + i % 120, i);
  for (uint32_t i = 2000; i < 3000; i++) /* and it keeps working, wrapping */
    put_msg(q, 8 + i % 120, i);
  for (uint32_t i = 1000; i < 3000; i++)
    get_msg(q, &b, 8 + i % 120, i);
  CHECK_EQ(lmp_queue_get(q, &b, lmp_deadline(0)), -ETIMEDOUT);
  lmp_queue_free(q);
  CHECK_EQ(lmp_test_segments(), segs); /* the grown ring went with the queue */

  CHECK_EQ(lmp_queue_create(50, 1024, &q), 0);
  for (uint32_t i = 0; i < 50; i++) {
    make_msg(m, 100, i);
    CHECK_EQ(lmp_queue_put(q, m, 100, lmp_deadline(0)), 0);
  }
  CHECK_EQ(lmp_queue_put(q, m, 100, lmp_deadline(0)), -ETIMEDOUT);
  for (uint32_t i = 0; i < 50; i++)
    get_msg(q, &b, 100, i);
  lmp_queue_free(q);
  CHECK_EQ(lmp_test_segments(), segs);
  lmp_buf_free(&b);
}

/* A producer in another process grows the ring while this one reads it:
 * both follow each new ring, and nothing is lost or reordered. */
TEST(ring_grows_shared)
{
  lmp_queue_t *q;
  lmp_buf_t b = {0};
  CHECK_EQ(lmp_runtime_init(), 0);
  int segs = lmp_test_segments();
  CHECK_EQ(lmp_queue_create(0, 1024, &q), 0);
  lmp_proc_t *p = lmp_test_start();
  if (!p) {
    char m[600];
    for (uint32_t i = 0; i < 30000; i++) {
      size_t len = i % 1000 == 999 ? 600 : 8 + (i * 37) % 120; /* some spill */
      make_msg(m, len, i);
      if (lmp_queue_put(q, m, len, lmp_deadline(10)) < 0)
        lmp_proc_exit(1);
    }
    lmp_queue_free(q);
    lmp_proc_exit(0);
  }
  for (uint32_t i = 0; i < 30000; i++) {
    if (i % 5000 == 0)
      lmp_test_sleep_ms(20); /* let the producer run ahead */
    CHECK_EQ(lmp_queue_get(q, &b, lmp_deadline(10)), 0);
    CHECK_EQ(check_msg(b.data, b.len), i);
  }
  CHECK_EQ(lmp_test_finish(p), 0);
  lmp_queue_free(q);
  CHECK_EQ(lmp_test_segments(), segs);
  lmp_buf_free(&b);
}

TEST(close_semantics)
{
  lmp_queue_t *q;
  lmp_buf_t b = {0};
  CHECK_EQ(lmp_queue_create(0, 0, &q), 0);
  put_msg(q, 8, 1);
  put_msg(q, 8, 2);
  CHECK_EQ(lmp_queue_closed(q), 0);
  lmp_queue_close(q);
  CHECK_EQ(lmp_queue_closed(q), 1);
  CHECK_EQ(lmp_queue_put(q, "x", 1, LMP_FOREVER), -EPIPE);
  get_msg(q, &b, 8, 1); /* gets drain what was put before the close */
  get_msg(q, &b, 8, 2);
  CHECK_EQ(lmp_queue_get(q, &b, LMP_FOREVER), -EPIPE);
  CHECK_EQ(lmp_queue_get(q, &b, lmp_deadline(0)), -EPIPE);
  lmp_queue_close(q); /* twice is harmless */
  lmp_queue_free(q);

  /* Getters blocked on an empty queue are all woken by close. */
  CHECK_EQ(lmp_queue_create(0, 0, &q), 0);
  lmp_proc_t *getters[2];
  for (int i = 0; i < 2; i++) {
    if (!(getters[i] = lmp_test_start()))
      lmp_proc_exit(lmp_queue_get(q, &b, lmp_deadline(10)) == -EPIPE ? 0 : 1);
  }
  lmp_test_sleep_ms(100);
  int64_t t0 = lmp_now_ns();
  lmp_queue_close(q);
  CHECK_EQ(lmp_test_finish(getters[0]), 0);
  CHECK_EQ(lmp_test_finish(getters[1]), 0);
  CHECK(lmp_now_ns() - t0 < 2000 * MS);
  lmp_queue_free(q);

  /* So is a put blocked on a full queue. */
  CHECK_EQ(lmp_queue_create(1, 0, &q), 0);
  put_msg(q, 8, 1);
  lmp_proc_t *p = lmp_test_start();
  if (!p)
    lmp_proc_exit(lmp_queue_put(q, "x", 1, lmp_deadline(10)) == -EPIPE ? 0 : 1);
  lmp_test_sleep_ms(50);
  lmp_queue_close(q);
  CHECK_EQ(lmp_test_finish(p), 0);
  lmp_buf_free(&b);
  lmp_queue_free(q);
}

TEST(task_done_join)
{
  lmp_queue_t *q;
  lmp_buf_t b = {0};
  CHECK_EQ(lmp_queue_create(0, 0, &q), 0);
  CHECK_EQ(lmp_queue_task_done(q), -EINVAL);
  CHECK_EQ(lmp_queue_join(q, lmp_deadline(0)), 0);
  for (uint32_t i = 0; i < 3; i++)
    put_msg(q, 8, i);
  int64_t t0 = lmp_now_ns();
  CHECK_EQ(lmp_queue_join(q, lmp_deadline(0.05)), -ETIMEDOUT);
  CHECK(lmp_now_ns() - t0 >= 50 * MS);
  /* A worker process takes the tasks; join returns once all are done. */
  lmp_proc_t *p = lmp_test_start();
  if (!p) {
    int ok = 1;
    for (int i = 0; i < 3; i++) {
      ok &= lmp_queue_get(q, &b, lmp_deadline(10)) == 0;
      lmp_test_sleep_ms(20);
      ok &= lmp_queue_task_done(q) == 0;
    }
    lmp_proc_exit(ok ? 0 : 1);
  }
  CHECK_EQ(lmp_queue_join(q, lmp_deadline(10)), 0);
  CHECK_EQ(lmp_test_finish(p), 0);
  CHECK_EQ(lmp_queue_task_done(q), -EINVAL);
  CHECK_EQ(lmp_queue_join(q, LMP_FOREVER), 0);
  lmp_buf_free(&b);
  lmp_queue_free(q);
}

/* Another process reaches the queue through its name alone, as a handle
 * sent in a message does: the sender pins, the receiver adopts the pin. */
TEST(open_by_name)
{
  lmp_queue_t *q, *q2;
  lmp_seg_t *seg;
  lmp_buf_t b = {0};
  CHECK_EQ(lmp_runtime_init(), 0);
  int segs = lmp_test_segments();
  CHECK_EQ(lmp_queue_create(5, 8192, &q), 0);
  char name[LMP_SEG_NAME_MAX];
  snprintf(name, sizeof name, "%s", lmp_seg_name(lmp_queue_seg(q)));
  lmp_seg_pin(lmp_queue_seg(q));
  lmp_proc_t *p = lmp_test_start();
  if (!p) {
    int ok = lmp_seg_attach(name, 1, &seg) == 0 && lmp_queue_open(seg, &q2) == 0;
    if (!ok)
      lmp_proc_exit(2);
    lmp_seg_release(seg); /* the queue holds its own reference */
    ok = lmp_queue_maxsize(q2) == 5;
    for (uint32_t i = 0; i < 5; i++) {
      char m[64];
      make_msg(m, sizeof m, i);
      ok &= lmp_queue_put(q2, m, sizeof m, lmp_deadline(10)) == 0;
    }
    lmp_queue_free(q2);
    lmp_proc_exit(ok ? 0 : 1);
  }
  CHECK_EQ(lmp_test_finish(p), 0);
  /* A second handle on the same queue in this process. */
  CHECK_EQ(lmp_seg_attach(name, 0, &seg), 0);
  CHECK_EQ(lmp_queue_open(seg, &q2), 0);
  lmp_seg_release(seg);
  for (uint32_t i = 0; i < 5; i++)
    get_msg(q2, &b, 64, i);
  lmp_queue_free(q2);
  lmp_queue_free(q);
  CHECK_EQ(lmp_test_segments(), segs); /* the last reference unlinked it */
  /* A segment that is not a queue is refused. */
  CHECK_EQ(lmp_seg_create(4096, &seg), 0);
  CHECK_EQ(lmp_queue_open(seg, &q), -EINVAL);
  lmp_seg_release(seg);
  lmp_buf_free(&b);
}

/*
 * 2 producers and 2 consumers, each its own process, 100k numbered
 * messages: every one arrives exactly once, and each producer's messages
 * reach any one consumer in the order they were put.
 */
#define MP_TOTAL 100000
#define MP_PRODUCERS 2
#define MP_CONSUMERS 2

static void mp_consume(lmp_queue_t *q, _Atomic uint8_t *seen)
{
  lmp_buf_t b = {0};
  int64_t last[MP_PRODUCERS] = {-1, -1};
  int rc;
  while ((rc = lmp_queue_get(q, &b, lmp_deadline(20))) == 0) {
    int64_t seq = check_msg(b.data, b.len);
    if (seq < 0 || seq >= MP_TOTAL)
      lmp_proc_exit(3);
    int prod = (int)(seq % MP_PRODUCERS);
    if (seq <= last[prod])
      lmp_proc_exit(4);
    last[prod] = seq;
    atomic_fetch_add(&seen[seq], 1);
  }
  lmp_proc_exit(rc == -EPIPE ? 0 : 5);
}

TEST(mpmc_100k)
{
  lmp_queue_t *q;
  lmp_seg_t *seen_seg;
  lmp_proc_t *prod[MP_PRODUCERS], *cons[MP_CONSUMERS];
  CHECK_EQ(lmp_queue_create(1000, 0, &q), 0);
  CHECK_EQ(lmp_seg_create(MP_TOTAL, &seen_seg), 0);
  _Atomic uint8_t *seen = lmp_seg_data(seen_seg);
  for (int i = 0; i < MP_CONSUMERS; i++) {
    if (!(cons[i] = lmp_test_start()))
      mp_consume(q, seen);
  }
  for (int i = 0; i < MP_PRODUCERS; i++) {
    if (!(prod[i] = lmp_test_start())) {
      char m[64];
      for (uint32_t seq = (uint32_t)i; seq < MP_TOTAL; seq += MP_PRODUCERS) {
        size_t len = 8 + seq % 57;
        make_msg(m, len, seq);
        if (lmp_queue_put(q, m, len, lmp_deadline(20)) < 0)
          lmp_proc_exit(1);
      }
      lmp_proc_exit(0);
    }
  }
  for (int i = 0; i < MP_PRODUCERS; i++)
    CHECK_EQ(lmp_test_finish(prod[i]), 0);
  lmp_queue_close(q);
  for (int i = 0; i < MP_CONSUMERS; i++)
    CHECK_EQ(lmp_test_finish(cons[i]), 0);
  for (int i = 0; i < MP_TOTAL; i++)
    CHECK_EQ(seen[i], 1);
  lmp_seg_release(seen_seg);
  lmp_queue_free(q);
}

/*
 * A producer SIGKILLed in a loop of puts, again and again: the consumer only
 * ever reads intact records, and never blocks forever (every get has a
 * deadline, and the lock of a dead holder is taken over).
 */
static lmp_proc_t *killed_producer(lmp_queue_t *q, uint32_t base)
{
  lmp_proc_t *p = lmp_test_start();
  if (!p) {
    size_t maxlen = 1u << 20; /* sometimes past capacity/8: a spill */
    char *m = malloc(maxlen);
    for (uint32_t i = base;; i++) {
      size_t len = i % 50 == 49 ? maxlen : 8 + (i * 7919u) % 20000;
      make_msg(m, len, i);
      if (lmp_queue_put(q, m, len, lmp_deadline(20)) < 0)
        lmp_proc_exit(1);
    }
  }
  return p;
}

TEST(producer_killed)
{
  lmp_queue_t *q;
  lmp_buf_t b = {0};
  CHECK_EQ(lmp_queue_create(0, 1u << 20, &q), 0);
  long got = 0;
  for (int round = 0; round < 30; round++) {
    lmp_proc_t *p = killed_producer(q, (uint32_t)round << 20);
    int64_t stop = lmp_now_ns() + (int64_t)(5 + round % 7 * 3) * MS;
    while (lmp_now_ns() < stop) {
      int rc = lmp_queue_get(q, &b, lmp_deadline(5));
      CHECK_EQ(rc, 0);
      CHECK(check_msg(b.data, b.len) >= 0);
      got++;
    }
    lmp_proc_signal(p, SIGKILL);
    CHECK_EQ(lmp_test_finish(p), -SIGKILL);
    int rc;
    while ((rc = lmp_queue_get(q, &b, lmp_deadline(0.01))) == 0) {
      CHECK(check_msg(b.data, b.len) >= 0);
      got++;
    }
    CHECK_EQ(rc, -ETIMEDOUT);
    CHECK_EQ(lmp_queue_qsize(q), 0);
  }
  CHECK(got > 0);
  /* The queue still works after all that. */
  put_msg(q, 100, 77);
  get_msg(q, &b, 100, 77);
  lmp_buf_free(&b);
  lmp_queue_free(q);
}

/*
 * A producer killed while it holds the lock: with a 256 MiB ring a 30 MiB
 * payload is still inline, and copying it into fresh pages keeps the lock
 * held for milliseconds, so a kill 2 ms into the put lands inside it.  The
 * next locker takes the lock over; the half-written record never appears.
 */
TEST(lock_holder_killed)
{
  lmp_queue_t *q;
  lmp_buf_t b = {0};
  size_t len = 30u << 20;
  int fds[2];
  CHECK_EQ(pipe(fds), 0);
  CHECK_EQ(lmp_queue_create(0, 256u << 20, &q), 0);
  for (int round = 0; round < 3; round++) {
    lmp_proc_t *p = lmp_test_start();
    if (!p) {
      char *m = malloc(len);
      for (uint32_t i = 0; i < 3; i++) {
        make_msg(m, len, i);
        lmp_queue_put(q, m, len, LMP_FOREVER);
      }
      make_msg(m, len, 3);
      if (write(fds[1], "x", 1) != 1)
        lmp_proc_exit(1);
      lmp_queue_put(q, m, len, LMP_FOREVER);
      for (;;)
        pause();
    }
    char c;
    CHECK_EQ(read(fds[0], &c, 1), 1);
    lmp_test_sleep_ms(2);
    lmp_proc_signal(p, SIGKILL);
    CHECK_EQ(lmp_test_finish(p), -SIGKILL);
    size_t n = lmp_queue_qsize(q);
    CHECK(n == 3 || n == 4);
    for (uint32_t i = 0; i < n; i++)
      get_msg(q, &b, len, i);
    CHECK_EQ(lmp_queue_get(q, &b, lmp_deadline(0)), -ETIMEDOUT);
    put_msg(q, 100, 9);
    get_msg(q, &b, 100, 9);
  }
  close(fds[0]);
  close(fds[1]);
  lmp_buf_free(&b);
  lmp_queue_free(q);
}

/* The same from the other side: consumers killed mid-get leave the queue
 * usable, and nothing they did not take is lost. */
TEST(consumer_killed)
{
  lmp_queue_t *q;
  lmp_buf_t b = {0};
  CHECK_EQ(lmp_queue_create(0, 1u << 20, &q), 0);
  for (int round = 0; round < 20; round++) {
    for (uint32_t i = 0; i < 200; i++)
      put_msg(q, 8 + (i * 131) % 5000, i);
    lmp_proc_t *p = lmp_test_start();
    if (!p) {
      for (;;)
        if (lmp_queue_get(q, &b, lmp_deadline(10)) < 0)
          lmp_proc_exit(1);
    }
    lmp_test_sleep_ms(round % 4);
    lmp_proc_signal(p, SIGKILL);
    CHECK_EQ(lmp_test_finish(p), -SIGKILL);
    int64_t last = -1;
    int rc;
    while ((rc = lmp_queue_get(q, &b, lmp_deadline(0))) == 0) {
      int64_t seq = check_msg(b.data, b.len);
      CHECK(seq > last);
      last = seq;
    }
    CHECK_EQ(rc, -ETIMEDOUT);
    CHECK(last == -1 || last == 199);
  }
  lmp_buf_free(&b);
  lmp_queue_free(q);
}

TEST_LIST = {TEST_ENTRY(fifo),
             TEST_ENTRY(maxsize),
             TEST_ENTRY(nonblocking),
             TEST_ENTRY(wraparound),
             TEST_ENTRY(spill_16mib),
             TEST_ENTRY(putv_gather),
             TEST_ENTRY(get_hook_seq),
             TEST_ENTRY(ring_grows),
             TEST_ENTRY_T(ring_grows_shared, 30),
             TEST_ENTRY(close_semantics),
             TEST_ENTRY(task_done_join),
             TEST_ENTRY(open_by_name),
             TEST_ENTRY_T(mpmc_100k, 60),
             TEST_ENTRY_T(producer_killed, 60),
             TEST_ENTRY_T(lock_holder_killed, 60),
             TEST_ENTRY_T(consumer_killed, 60),
             TEST_END};

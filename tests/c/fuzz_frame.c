/*
 * fuzz_frame.c -- throws arbitrary bytes at the readers of lmp's two
 * transports: the pipe record reader (lmp_pipe_recv) and the queue record
 * reader (lmp_queue_get).
 *
 * The first input byte picks the reader.  Pipe: the rest is cut into
 * records (a length byte, then that many bytes) written into a socketpair
 * whose writer then closes, and messages are read until the stream ends;
 * every receive must return a message, -EBADMSG or -ENOMEM until -EPIPE,
 * never hang, and the buffer may grow with the bytes that came, never with
 * a length a header merely announces.  Queue: a few real records are put
 * into a small ring, then overwritten with the input (a stray write into
 * shared memory); gets must return a message or an error, never read
 * outside the ring, and the queue must work again once drained.  (Spilled
 * records are left out, see queue_input.)
 *
 *   fuzz_frame [ITERATIONS [SEED]]   random inputs, biased towards frames
 *   fuzz_frame FILE...               replay inputs (crash reproducers)
 *   fuzz_frame --corpus DIR          write 32 such inputs there (seeds)
 *
 * Built with -DLMP_LIBFUZZER it is a libFuzzer target instead (make fuzz).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "lmp/common.h"
#include "lmp/pipe.h"
#include "lmp/queue.h"
#include "lmp/segment.h"

#define MAX_INPUT 65536

static void fail(const char *what, int rc)
{
  fprintf(stderr, "fuzz_frame: %s (%d)\n", what, rc);
  abort();
}

/* === the pipe === */

static void pipe_input(const uint8_t *data, size_t size)
{
  static lmp_pipe_reader_t b;
  int fds[2], rc, calls = 0, records = 0;

  if (size > MAX_INPUT)
    size = MAX_INPUT;
  if (lmp_pipe_pair(1, fds) < 0)
    fail("socketpair", -errno);
  /* An empty record reads as end of stream: the input's last one. */
  for (size_t at = 0; at < size; records++) {
    size_t n = data[at++];
    if (n > size - at)
      n = size - at;
    if (write(fds[0], data + at, n) != (ssize_t)n)
      fail("write", -errno);
    at += n;
  }
  close(fds[0]);
  while ((rc = lmp_pipe_recv(&b, fds[1], lmp_deadline(10))) != -EPIPE) {
    if (rc != 0 && rc != -EBADMSG && rc != -ENOMEM)
      fail("receive", rc);
    if ((rc == 0 && b.msg.len > size) || ++calls > records)
      fail("a message from nowhere", (int)b.msg.len);
  }
  if (b.msg.cap > 2 * size + LMP_PIPE_RECORD)
    fail("buffer larger than what arrived", (int)(b.msg.cap >> 20));
  close(fds[1]);
  lmp_pipe_reader_free(&b);
}

/* === the queue === */

#define RING 1024

static const char mark[] = "FUZZ-MARK-1d9e";
static lmp_queue_t *q;
static char *ring; /* where the ring starts: a new queue's first record */

/* The mark's record: its header, 8 bytes before the mark.  Only inside the
 * ring once its place is known (an input may have left a copy of the mark
 * at the ring's very start, whose "header" would be the queue's own). */
static char *find_mark(void)
{
  char *seg = lmp_seg_data(lmp_queue_seg(q)), *from = ring ? ring : seg;
  size_t size = ring ? RING : lmp_seg_size(lmp_queue_seg(q));
  for (size_t off = 8; off + sizeof mark <= size; off += 8)
    if (memcmp(from + off, mark, sizeof mark) == 0)
      return from + off - 8;
  return NULL;
}

static void queue_reset(void)
{
  lmp_buf_t b = {0};
  if (q != NULL)
    lmp_queue_free(q);
  ring = NULL;
  if (lmp_queue_create(0, RING, &q) < 0 || lmp_queue_put(q, mark, sizeof mark, LMP_FOREVER) < 0 ||
      (ring = find_mark()) == NULL || lmp_queue_get(q, &b, LMP_FOREVER) < 0)
    fail("queue", 0);
  lmp_buf_free(&b);
}

/* Take what is queued; 0 once empty, -1 if the queue stays stuck. */
static int drain(lmp_buf_t *b)
{
  for (int i = 0; i < 64; i++) {
    int rc = lmp_queue_get(q, b, lmp_deadline(0));
    if (rc == -ETIMEDOUT)
      return 0;
    if (rc != 0 && rc != -EBADMSG && rc != -EINVAL && rc != -ENOENT && rc != -ENOMEM)
      fail("get", rc);
  }
  return -1;
}

static void queue_input(const uint8_t *data, size_t size)
{
  static lmp_buf_t b;
  char msg[128];

  char *at = NULL;
  if (q == NULL || drain(&b) < 0)
    queue_reset();
  for (int attempt = 0; at == NULL; attempt++) {
    if (attempt == 1)
      queue_reset(); /* the mark was split by the end of the ring */
    else if (attempt > 1)
      fail("mark not found", 0);
    if (lmp_queue_put(q, mark, sizeof mark, LMP_FOREVER) < 0)
      fail("put", 0);
    at = find_mark();
  }
  for (size_t i = 0; i < 3 && i < size; i++) {
    memset(msg, 'a' + (int)i, sizeof msg);
    if (lmp_queue_put(q, msg, data[i] % 120, LMP_FOREVER) < 0)
      fail("put", 0);
  }
  size_t room = (size_t)(ring + RING - at), n = size < room ? size : room;
  memcpy(at, data, n);
  /* No spills: a record's flags sit at 8k+4 of the ring (records are
   * 8-aligned), and a forged spill is a request for as much memory as its
   * length says, which the queue makes before it can see the spilled
   * segment (to keep the message on -ENOMEM).  test_faults.c damages a
   * spill's body instead. */
  for (size_t i = 4; i < RING; i += 8)
    ring[i] &= ~1;
  if (drain(&b) < 0)
    return; /* wedged (a forged spill too large to take): next input resets */
  /* Drained: new messages go through whole. */
  for (int i = 0; i < 4; i++) {
    memset(msg, 'A' + i, sizeof msg);
    if (lmp_queue_put(q, msg, 40 + (size_t)i, LMP_FOREVER) < 0)
      fail("put after damage", 0);
  }
  for (int i = 0; i < 4; i++) {
    int rc = lmp_queue_get(q, &b, lmp_deadline(0));
    if (rc != 0 || b.len != 40 + (size_t)i || b.data[0] != 'A' + i || b.data[b.len - 1] != 'A' + i)
      fail("message after damage", rc);
  }
  lmp_buf_free(&b);
}

static void one_input(const uint8_t *data, size_t size)
{
  if (size == 0)
    return;
  if (data[0] & 1)
    queue_input(data + 1, size - 1);
  else
    pipe_input(data + 1, size - 1);
}

#ifdef LMP_LIBFUZZER

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  one_input(data, size);
  return 0;
}

#else

/* === random inputs === */

static uint64_t rng_state = 0x2545f4914f6cdd1dULL;

static uint32_t rnd(uint32_t n)
{
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return n ? (uint32_t)(rng_state % n) : (uint32_t)rng_state;
}

static void put_le(uint8_t *p, uint64_t v, int n)
{
  for (int i = 0; i < n; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}

/* Frames (or records), some well formed, some with forged lengths, some
 * cut short, some noise. */
static size_t make_input(uint8_t *p, size_t room)
{
  static const uint64_t lengths[] = {0, 1, 8, 100, 1u << 20, UINT32_MAX, (uint64_t)1 << 32,
                                     ((uint64_t)1 << 40) - 1, (uint64_t)1 << 40, UINT64_MAX};
  int queue = rnd(2);
  size_t n = 1;
  p[0] = (uint8_t)queue;
  while (n + 80 < room && rnd(6) != 0) {
    size_t body = rnd(64);
    uint64_t len = rnd(3) == 0 ? lengths[rnd(sizeof lengths / sizeof *lengths)]
                   : rnd(2)    ? body
                               : (uint64_t)rnd(0) << 32 | rnd(0);
    if (queue) { /* u32 length, u32 flags */
      put_le(p + n, len, 4);
      put_le(p + n + 4, rnd(4) == 0 ? rnd(0) : rnd(2), 4);
      n += 8;
    } else { /* record length; u64 length, u32 writer, u32 index */
      uint32_t writer = rnd(2) ? 0 : rnd(3) ? 1 + rnd(2) : rnd(0);
      p[n++] = (uint8_t)(rnd(8) ? 16 + body : rnd(256));
      put_le(p + n, len, 8);
      put_le(p + n + 8, writer, 4);
      put_le(p + n + 12, rnd(2) ? rnd(3) : rnd(0), 4);
      n += 16;
    }
    for (; body > 0; body--)
      p[n++] = (uint8_t)rnd(256);
  }
  return n - (n > 1 && rnd(4) == 0 ? rnd((uint32_t)n - 1) : 0);
}

int main(int argc, char **argv)
{
  static uint8_t buf[8192];
  if (argc == 3 && strcmp(argv[1], "--corpus") == 0) {
    for (int i = 0; i < 32; i++) {
      char path[4096];
      size_t len = make_input(buf, 512);
      snprintf(path, sizeof path, "%s/seed-%02d", argv[2], i);
      FILE *f = fopen(path, "wb");
      if (f == NULL || fwrite(buf, 1, len, f) != len) {
        perror(path);
        return 1;
      }
      fclose(f);
    }
    return 0;
  }
  if (argc > 1 && strtol(argv[1], NULL, 10) <= 0) {
    for (int i = 1; i < argc; i++) {
      FILE *f = fopen(argv[i], "rb");
      if (f == NULL) {
        perror(argv[i]);
        return 1;
      }
      size_t len = fread(buf, 1, sizeof buf, f);
      fclose(f);
      one_input(buf, len);
      printf("%s: ok\n", argv[i]);
    }
    return 0;
  }
  long n = argc > 1 ? strtol(argv[1], NULL, 10) : 100000;
  if (argc > 2)
    rng_state ^= (uint64_t)strtoull(argv[2], NULL, 0) * 0x9e3779b97f4a7c15ULL;
  for (long i = 0; i < n; i++)
    one_input(buf, make_input(buf, sizeof buf));
  if (q != NULL)
    lmp_queue_free(q);
  printf("%ld inputs to the pipe and queue readers: no crash, no hang\n", n);
  return 0;
}

#endif

/*
 * test_pipe.c -- messages over seqpacket socketpairs: round trips, simplex
 * ends, sizes from 0 bytes to 8 MiB, deadlines, and what a reader sees when
 * its writer closes or is killed in the middle of a message, alone or
 * beside other writers.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "lmp/common.h"
#include "lmp/pipe.h"
#include "runner.h"

#define MS 1000000LL

/* === helpers === */

/* A payload whose bytes depend on its length and a seed; the last 4 bytes of
 * anything 8 bytes or longer hold the seed, so a reader can check it alone. */
static void fill(char *p, size_t len, uint32_t seed)
{
  uint32_t x = seed * 2654435761u + (uint32_t)len;
  for (size_t i = 0; i < len; i++) {
    x = x * 1103515245u + 12345u;
    p[i] = (char)(x >> 16);
  }
  if (len >= 8)
    memcpy(p + len - 4, &seed, 4);
}

static int intact(const char *p, size_t len)
{
  uint32_t seed;
  if (len < 8)
    return 0;
  memcpy(&seed, p + len - 4, 4);
  char *want = malloc(len);
  fill(want, len, seed);
  int ok = memcmp(want, p, len) == 0;
  free(want);
  return ok;
}

static void send_checked(int fd, size_t len, uint32_t seed)
{
  char *p = malloc(len ? len : 1);
  fill(p, len, seed);
  CHECK_EQ(lmp_pipe_send(fd, p, len), 0);
  free(p);
}

static void recv_checked(int fd, lmp_pipe_reader_t *b, size_t len, uint32_t seed)
{
  CHECK_EQ(lmp_pipe_recv(b, fd, lmp_deadline(10)), 0);
  CHECK_EQ(b->msg.len, len);
  char *p = malloc(len ? len : 1);
  fill(p, len, seed);
  CHECK(memcmp(p, b->msg.data, len) == 0);
  free(p);
}

/* === tests === */

TEST(roundtrip_duplex)
{
  int fds[2];
  lmp_pipe_reader_t b = {0};
  CHECK_EQ(lmp_pipe_pair(1, fds), 0);
  CHECK_EQ(lmp_pipe_send(fds[0], "ping", 4), 0);
  CHECK_EQ(lmp_pipe_recv(&b, fds[1], LMP_FOREVER), 0);
  CHECK_EQ(b.msg.len, 4);
  CHECK(memcmp(b.msg.data, "ping", 4) == 0);
  CHECK_EQ(lmp_pipe_send(fds[1], "pong!", 5), 0);
  CHECK_EQ(lmp_pipe_recv(&b, fds[0], LMP_FOREVER), 0);
  CHECK_EQ(b.msg.len, 5);
  CHECK(memcmp(b.msg.data, "pong!", 5) == 0);
  /* Several queued messages keep their boundaries. */
  for (uint32_t i = 0; i < 100; i++)
    send_checked(fds[0], i * 37, i);
  for (uint32_t i = 0; i < 100; i++)
    recv_checked(fds[1], &b, i * 37, i);
  lmp_pipe_reader_free(&b);
  close(fds[0]);
  close(fds[1]);
}

TEST(simplex_ends)
{
  int fds[2];
  lmp_pipe_reader_t b = {0};
  CHECK_EQ(lmp_pipe_pair(0, fds), 0);
  send_checked(fds[1], 100, 7);
  recv_checked(fds[0], &b, 100, 7);
  /* The receiving end cannot send, and the sending end reads end of stream. */
  CHECK_EQ(lmp_pipe_send(fds[0], "x", 1), -EPIPE);
  CHECK_EQ(lmp_pipe_recv(&b, fds[1], lmp_deadline(1)), -EPIPE);
  lmp_pipe_reader_free(&b);
  close(fds[0]);
  close(fds[1]);
}

TEST(cloexec)
{
  int fds[2];
  CHECK_EQ(lmp_pipe_pair(1, fds), 0);
  CHECK(fcntl(fds[0], F_GETFD) & FD_CLOEXEC);
  CHECK(fcntl(fds[1], F_GETFD) & FD_CLOEXEC);
  close(fds[0]);
  close(fds[1]);
}

TEST(empty_message)
{
  int fds[2];
  lmp_pipe_reader_t b = {0};
  CHECK_EQ(lmp_pipe_pair(1, fds), 0);
  CHECK_EQ(lmp_pipe_send(fds[0], NULL, 0), 0);
  CHECK_EQ(lmp_pipe_send(fds[0], "a", 1), 0);
  b.msg.len = 99;
  CHECK_EQ(lmp_pipe_recv(&b, fds[1], lmp_deadline(1)), 0);
  CHECK_EQ(b.msg.len, 0);
  CHECK_EQ(lmp_pipe_recv(&b, fds[1], lmp_deadline(1)), 0);
  CHECK_EQ(b.msg.len, 1);
  lmp_pipe_reader_free(&b);
  close(fds[0]);
  close(fds[1]);
}

/* 8 MiB is more than a socket buffer holds: the writer must loop on partial
 * writes while the reader drains, in another process. */
TEST(big_message)
{
  int fds[2];
  lmp_pipe_reader_t b = {0};
  size_t big = 8u << 20;
  CHECK_EQ(lmp_pipe_pair(1, fds), 0);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    close(fds[1]);
    char *p = malloc(big);
    fill(p, big, 42);
    int rc = lmp_pipe_send(fds[0], p, big);
    rc |= lmp_pipe_send(fds[0], p, 1000);
    _exit(rc == 0 ? 0 : 1);
  }
  close(fds[0]);
  CHECK_EQ(lmp_pipe_recv(&b, fds[1], lmp_deadline(10)), 0);
  CHECK_EQ(b.msg.len, big);
  CHECK(intact(b.msg.data, b.msg.len));
  CHECK_EQ(lmp_pipe_recv(&b, fds[1], lmp_deadline(10)), 0);
  CHECK_EQ(b.msg.len, 1000);
  CHECK_EQ(lmp_pipe_recv(&b, fds[1], lmp_deadline(10)), -EPIPE);
  CHECK_EQ(lmp_test_wait(pid, 10000), 0);
  lmp_pipe_reader_free(&b);
  close(fds[1]);
}

TEST(poll_timeout)
{
  int fds[2];
  lmp_pipe_reader_t r0 = {0}, r1 = {0};
  CHECK_EQ(lmp_pipe_pair(1, fds), 0);
  int64_t t0 = lmp_now_ns();
  CHECK_EQ(lmp_pipe_poll(&r1, fds[1], lmp_deadline(0.05)), 0);
  CHECK(lmp_now_ns() - t0 >= 50 * MS);
  t0 = lmp_now_ns();
  CHECK_EQ(lmp_pipe_poll(&r1, fds[1], lmp_deadline(0)), 0);
  CHECK(lmp_now_ns() - t0 < 20 * MS);
  CHECK_EQ(lmp_pipe_send(fds[0], "x", 1), 0);
  CHECK_EQ(lmp_pipe_poll(&r1, fds[1], lmp_deadline(0)), 1);
  CHECK_EQ(lmp_pipe_poll(&r1, fds[1], LMP_FOREVER), 1);
  /* End of stream is readable too. */
  CHECK_EQ(lmp_pipe_poll(&r0, fds[0], lmp_deadline(0)), 0);
  close(fds[1]);
  CHECK_EQ(lmp_pipe_poll(&r0, fds[0], lmp_deadline(1)), 1);
  close(fds[0]);
  CHECK(lmp_pipe_poll(&r0, fds[0], lmp_deadline(0)) < 0); /* closed descriptor */
  /* The message poll found is the one recv returns. */
  CHECK_EQ(lmp_pipe_recv(&r1, fds[1], lmp_deadline(0)), 0);
  CHECK_EQ(r1.msg.len, 1);
  lmp_pipe_reader_free(&r0);
  lmp_pipe_reader_free(&r1);
}

TEST(recv_timeout)
{
  int fds[2];
  lmp_pipe_reader_t b = {0};
  CHECK_EQ(lmp_pipe_pair(1, fds), 0);
  int64_t t0 = lmp_now_ns();
  CHECK_EQ(lmp_pipe_recv(&b, fds[1], lmp_deadline(0.05)), -ETIMEDOUT);
  int64_t took = lmp_now_ns() - t0;
  CHECK(took >= 50 * MS && took < 2000 * MS);
  t0 = lmp_now_ns();
  CHECK_EQ(lmp_pipe_recv(&b, fds[1], lmp_deadline(0)), -ETIMEDOUT);
  CHECK(lmp_now_ns() - t0 < 20 * MS);
  /* The stream is still in step after timeouts. */
  send_checked(fds[0], 10, 3);
  recv_checked(fds[1], &b, 10, 3);
  lmp_pipe_reader_free(&b);
  close(fds[0]);
  close(fds[1]);
}

/* A signal during a wait resumes it with what is left of the deadline. */
static void on_alarm(int sig)
{
  (void)sig;
}

TEST(recv_eintr)
{
  int fds[2];
  lmp_pipe_reader_t b = {0};
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm; /* no SA_RESTART: ppoll sees EINTR */
  CHECK_EQ(sigaction(SIGUSR1, &sa, NULL), 0);
  CHECK_EQ(lmp_pipe_pair(1, fds), 0);
  pid_t self = getpid(), pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    for (int i = 0; i < 5; i++) {
      lmp_test_sleep_ms(20);
      kill(self, SIGUSR1);
    }
    _exit(0);
  }
  int64_t t0 = lmp_now_ns();
  CHECK_EQ(lmp_pipe_recv(&b, fds[1], lmp_deadline(0.3)), -ETIMEDOUT);
  CHECK(lmp_now_ns() - t0 >= 300 * MS);
  CHECK_EQ(lmp_test_wait(pid, 10000), 0);
  lmp_pipe_reader_free(&b);
  close(fds[0]);
  close(fds[1]);
}

TEST(peer_closed)
{
  int fds[2];
  lmp_pipe_reader_t b = {0};
  CHECK_EQ(lmp_pipe_pair(1, fds), 0);
  send_checked(fds[1], 20, 1);
  close(fds[1]);
  /* What was sent before the close is still delivered, then -EPIPE. */
  recv_checked(fds[0], &b, 20, 1);
  CHECK_EQ(lmp_pipe_recv(&b, fds[0], LMP_FOREVER), -EPIPE);
  CHECK_EQ(lmp_pipe_recv(&b, fds[0], LMP_FOREVER), -EPIPE);
  CHECK_EQ(lmp_pipe_send(fds[0], "x", 1), -EPIPE); /* and no SIGPIPE */
  lmp_pipe_reader_free(&b);
  close(fds[0]);
}

/* A raw record: a header (length, writer, index) and `n` bytes of payload. */
static void put_record(int fd, uint64_t len, uint32_t writer, uint32_t index, size_t n)
{
  unsigned char rec[16 + 64] = {0};
  for (int i = 0; i < 8; i++)
    rec[i] = (unsigned char)(len >> (8 * i));
  memcpy(rec + 8, &writer, 4); /* little-endian hosts only, as the tests run */
  memcpy(rec + 12, &index, 4);
  CHECK(n <= 64);
  CHECK_EQ(write(fd, rec, 16 + n), (ssize_t)(16 + n));
}

/* Records that are not ours are refused one by one; the pipe goes on. */
TEST(bad_frames)
{
  int fds[2];
  lmp_pipe_reader_t b = {0};
  CHECK_EQ(lmp_pipe_pair(1, fds), 0);
  put_record(fds[0], (uint64_t)1 << 44, 0, 0, 8); /* beyond the limit */
  CHECK_EQ(write(fds[0], "short", 5), 5);           /* less than a header */
  put_record(fds[0], 100, 0, 0, 10);                /* one record, length 100 */
  put_record(fds[0], 100, 77, 3, 10);               /* a continuation never started */
  put_record(fds[0], (uint64_t)1 << 44, 77, 0, 10); /* a start beyond the limit */
  put_record(fds[0], 10, 77, 0, 10);                /* a "start" that is whole */
  for (int i = 0; i < 6; i++)
    CHECK_EQ(lmp_pipe_recv(&b, fds[1], lmp_deadline(1)), -EBADMSG);
  send_checked(fds[0], 20, 5);
  recv_checked(fds[1], &b, 20, 5);
  /* A started message whose writer sends out of order is dropped whole. */
  put_record(fds[0], 100, 77, 0, 50);
  put_record(fds[0], 100, 77, 2, 50);
  CHECK_EQ(lmp_pipe_recv(&b, fds[1], lmp_deadline(1)), -EBADMSG);
  put_record(fds[0], 100, 77, 1, 50);
  CHECK_EQ(lmp_pipe_recv(&b, fds[1], lmp_deadline(1)), -EBADMSG);
  /* A record longer than a reader takes is refused, not cut. */
  size_t huge = LMP_PIPE_RECORD + 100;
  char *p = calloc(1, huge);
  CHECK_EQ(write(fds[0], p, huge), (ssize_t)huge);
  free(p);
  CHECK_EQ(lmp_pipe_recv(&b, fds[1], lmp_deadline(1)), -EBADMSG);
  /* End of stream inside a message of several records. */
  put_record(fds[0], 100, 77, 0, 50);
  close(fds[0]);
  CHECK_EQ(lmp_pipe_recv(&b, fds[1], lmp_deadline(1)), -EPIPE);
  CHECK(b.parts == NULL);
  close(fds[1]);
  lmp_pipe_reader_free(&b);
}

/* Two processes send big messages on one end at once: their records
 * interleave, and every message still arrives whole. */
TEST(interleaved_writers)
{
  int fds[2];
  lmp_pipe_reader_t b = {0};
  CHECK_EQ(lmp_pipe_pair(0, fds), 0);
  pid_t pids[2];
  for (int w = 0; w < 2; w++) {
    pids[w] = fork();
    CHECK(pids[w] >= 0);
    if (pids[w] == 0) {
      close(fds[0]);
      size_t len = 3u << 20;
      char *p = malloc(len);
      for (uint32_t i = 0; i < 8; i++) {
        size_t n = len - i * 1000 * (w + 1);
        fill(p, n, (uint32_t)w << 16 | i);
        if (lmp_pipe_send(fds[1], p, n) < 0)
          _exit(1);
      }
      _exit(0);
    }
  }
  close(fds[1]);
  uint32_t next[2] = {0, 0};
  for (int i = 0; i < 16; i++) {
    CHECK_EQ(lmp_pipe_recv(&b, fds[0], lmp_deadline(30)), 0);
    CHECK(intact(b.msg.data, b.msg.len));
    uint32_t seed;
    memcpy(&seed, b.msg.data + b.msg.len - 4, 4);
    CHECK(seed >> 16 < 2);
    CHECK_EQ(seed & 0xffff, next[seed >> 16]); /* in order, per writer */
    next[seed >> 16]++;
  }
  CHECK_EQ(lmp_pipe_recv(&b, fds[0], lmp_deadline(10)), -EPIPE);
  CHECK_EQ(lmp_test_wait(pids[0], 10000), 0);
  CHECK_EQ(lmp_test_wait(pids[1], 10000), 0);
  lmp_pipe_reader_free(&b);
  close(fds[0]);
}

/*
 * A writer killed in the middle of a large message: the reader gets the
 * whole messages sent before, then -EPIPE, never a torn one and never a
 * hang.  The first round kills the writer while nothing has been read, the
 * others while the reader is draining.
 */
static pid_t start_writer(int fd, int other)
{
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    close(other);
    size_t len = 32u << 20;
    char *p = malloc(len);
    for (uint32_t i = 0;; i++) {
      size_t n = i % 4 == 3 ? len : 100 + (i * 7919) % 100000;
      fill(p, n, i);
      if (lmp_pipe_send(fd, p, n) < 0)
        _exit(1);
    }
  }
  return pid;
}

TEST(writer_killed)
{
  lmp_pipe_reader_t b = {0};
  for (int round = 0; round < 12; round++) {
    int fds[2];
    CHECK_EQ(lmp_pipe_pair(0, fds), 0);
    pid_t pid = start_writer(fds[1], fds[0]);
    close(fds[1]);
    int got = 0;
    if (round == 0) {
      lmp_test_sleep_ms(200); /* the writer blocks on the full socket buffer */
      kill(pid, SIGKILL);
    } else {
      int64_t stop = lmp_now_ns() + (int64_t)(round * 7 % 50) * MS;
      while (lmp_now_ns() < stop) {
        CHECK_EQ(lmp_pipe_recv(&b, fds[0], lmp_deadline(5)), 0);
        CHECK(intact(b.msg.data, b.msg.len));
        got++;
      }
      kill(pid, SIGKILL);
    }
    CHECK_EQ(lmp_test_wait(pid, 10000), -SIGKILL);
    int rc;
    while ((rc = lmp_pipe_recv(&b, fds[0], lmp_deadline(5))) == 0) {
      CHECK(intact(b.msg.data, b.msg.len));
      got++;
    }
    CHECK_EQ(rc, -EPIPE);
    CHECK(round == 0 || got > 0);
    close(fds[0]);
  }
  lmp_pipe_reader_free(&b);
}

/*
 * The same while another process still holds a writing end (here this
 * one): the reader gets whole messages, then times out instead of waiting
 * for the rest of the dead writer's message; poll does not report it as
 * readable; the next writer's message comes through whole, and the dead
 * writer's records are dropped.
 */
TEST(writer_killed_others_remain)
{
  lmp_pipe_reader_t b = {0};
  for (int round = 0; round < 6; round++) {
    int fds[2];
    CHECK_EQ(lmp_pipe_pair(0, fds), 0);
    pid_t pid = start_writer(fds[1], fds[0]);
    int64_t stop = lmp_now_ns() + (int64_t)(round * 11 % 40) * MS;
    while (lmp_now_ns() < stop) {
      CHECK_EQ(lmp_pipe_recv(&b, fds[0], lmp_deadline(5)), 0);
      CHECK(intact(b.msg.data, b.msg.len));
    }
    kill(pid, SIGKILL);
    CHECK_EQ(lmp_test_wait(pid, 10000), -SIGKILL);
    int rc;
    while ((rc = lmp_pipe_recv(&b, fds[0], lmp_deadline(0.2))) == 0)
      CHECK(intact(b.msg.data, b.msg.len));
    CHECK_EQ(rc, -ETIMEDOUT);
    CHECK_EQ(lmp_pipe_poll(&b, fds[0], lmp_deadline(0.05)), 0);
    CHECK(b.parts == NULL); /* the dead writer's part is gone */
    send_checked(fds[1], 300000, 99);
    recv_checked(fds[0], &b, 300000, 99);
    close(fds[1]);
    CHECK_EQ(lmp_pipe_recv(&b, fds[0], lmp_deadline(5)), -EPIPE);
    close(fds[0]);
  }
  lmp_pipe_reader_free(&b);
}

/* A non-blocking descriptor (a user's fcntl) still sends and receives whole
 * frames: the loops wait in poll instead of failing with EAGAIN. */
TEST(nonblocking_fd)
{
  int fds[2];
  lmp_pipe_reader_t b = {0};
  size_t big = 4u << 20;
  CHECK_EQ(lmp_pipe_pair(1, fds), 0);
  fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    char *p = malloc(big);
    fill(p, big, 9);
    _exit(lmp_pipe_send(fds[0], p, big) == 0 ? 0 : 1);
  }
  CHECK_EQ(lmp_pipe_recv(&b, fds[1], lmp_deadline(10)), 0);
  CHECK_EQ(b.msg.len, big);
  CHECK(intact(b.msg.data, b.msg.len));
  CHECK_EQ(lmp_test_wait(pid, 10000), 0);
  lmp_pipe_reader_free(&b);
  close(fds[0]);
  close(fds[1]);
}

TEST_LIST = {
  TEST_ENTRY(roundtrip_duplex),
  TEST_ENTRY(simplex_ends),
  TEST_ENTRY(cloexec),
  TEST_ENTRY(empty_message),
  TEST_ENTRY(big_message),
  TEST_ENTRY(poll_timeout),
  TEST_ENTRY(recv_timeout),
  TEST_ENTRY(recv_eintr),
  TEST_ENTRY(peer_closed),
  TEST_ENTRY(bad_frames),
  TEST_ENTRY(interleaved_writers),
  TEST_ENTRY_T(writer_killed, 60),
  TEST_ENTRY_T(writer_killed_others_remain, 60),
  TEST_ENTRY(nonblocking_fd),
  TEST_END
};

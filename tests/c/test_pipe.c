/*
 * test_pipe.c -- framed messages over socketpairs: round trips, simplex
 * ends, sizes from 0 bytes to 8 MiB, deadlines, and what a reader sees when
 * its writer closes or is killed in the middle of a message.
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

static void recv_checked(int fd, lmp_buf_t *b, size_t len, uint32_t seed)
{
  CHECK_EQ(lmp_pipe_recv(fd, b, lmp_deadline(10)), 0);
  CHECK_EQ(b->len, len);
  char *p = malloc(len ? len : 1);
  fill(p, len, seed);
  CHECK(memcmp(p, b->data, len) == 0);
  free(p);
}

/* === tests === */

TEST(roundtrip_duplex)
{
  int fds[2];
  lmp_buf_t b = {0};
  CHECK_EQ(lmp_pipe_pair(1, fds), 0);
  CHECK_EQ(lmp_pipe_send(fds[0], "ping", 4), 0);
  CHECK_EQ(lmp_pipe_recv(fds[1], &b, LMP_FOREVER), 0);
  CHECK_EQ(b.len, 4);
  CHECK(memcmp(b.data, "ping", 4) == 0);
  CHECK_EQ(lmp_pipe_send(fds[1], "pong!", 5), 0);
  CHECK_EQ(lmp_pipe_recv(fds[0], &b, LMP_FOREVER), 0);
  CHECK_EQ(b.len, 5);
  CHECK(memcmp(b.data, "pong!", 5) == 0);
  /* Several queued messages keep their boundaries. */
  for (uint32_t i = 0; i < 100; i++)
    send_checked(fds[0], i * 37, i);
  for (uint32_t i = 0; i < 100; i++)
    recv_checked(fds[1], &b, i * 37, i);
  lmp_buf_free(&b);
  close(fds[0]);
  close(fds[1]);
}

TEST(simplex_ends)
{
  int fds[2];
  lmp_buf_t b = {0};
  CHECK_EQ(lmp_pipe_pair(0, fds), 0);
  send_checked(fds[1], 100, 7);
  recv_checked(fds[0], &b, 100, 7);
  /* The receiving end cannot send, and the sending end reads end of stream. */
  CHECK_EQ(lmp_pipe_send(fds[0], "x", 1), -EPIPE);
  CHECK_EQ(lmp_pipe_recv(fds[1], &b, lmp_deadline(1)), -EPIPE);
  lmp_buf_free(&b);
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
  lmp_buf_t b = {0};
  CHECK_EQ(lmp_pipe_pair(1, fds), 0);
  CHECK_EQ(lmp_pipe_send(fds[0], NULL, 0), 0);
  CHECK_EQ(lmp_pipe_send(fds[0], "a", 1), 0);
  b.len = 99;
  CHECK_EQ(lmp_pipe_recv(fds[1], &b, lmp_deadline(1)), 0);
  CHECK_EQ(b.len, 0);
  CHECK_EQ(lmp_pipe_recv(fds[1], &b, lmp_deadline(1)), 0);
  CHECK_EQ(b.len, 1);
  lmp_buf_free(&b);
  close(fds[0]);
  close(fds[1]);
}

/* 8 MiB is more than a socket buffer holds: the writer must loop on partial
 * writes while the reader drains, in another process. */
TEST(big_message)
{
  int fds[2];
  lmp_buf_t b = {0};
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
  CHECK_EQ(lmp_pipe_recv(fds[1], &b, lmp_deadline(10)), 0);
  CHECK_EQ(b.len, big);
  CHECK(intact(b.data, b.len));
  CHECK_EQ(lmp_pipe_recv(fds[1], &b, lmp_deadline(10)), 0);
  CHECK_EQ(b.len, 1000);
  CHECK_EQ(lmp_pipe_recv(fds[1], &b, lmp_deadline(10)), -EPIPE);
  CHECK_EQ(lmp_test_wait(pid, 10000), 0);
  lmp_buf_free(&b);
  close(fds[1]);
}

TEST(poll_timeout)
{
  int fds[2];
  CHECK_EQ(lmp_pipe_pair(1, fds), 0);
  int64_t t0 = lmp_now_ns();
  CHECK_EQ(lmp_pipe_poll(fds[1], lmp_deadline(0.05)), 0);
  CHECK(lmp_now_ns() - t0 >= 50 * MS);
  t0 = lmp_now_ns();
  CHECK_EQ(lmp_pipe_poll(fds[1], lmp_deadline(0)), 0);
  CHECK(lmp_now_ns() - t0 < 20 * MS);
  CHECK_EQ(lmp_pipe_send(fds[0], "x", 1), 0);
  CHECK_EQ(lmp_pipe_poll(fds[1], lmp_deadline(0)), 1);
  CHECK_EQ(lmp_pipe_poll(fds[1], LMP_FOREVER), 1);
  /* End of stream is readable too. */
  CHECK_EQ(lmp_pipe_poll(fds[0], lmp_deadline(0)), 0);
  close(fds[1]);
  CHECK_EQ(lmp_pipe_poll(fds[0], lmp_deadline(1)), 1);
  close(fds[0]);
  CHECK(lmp_pipe_poll(fds[0], lmp_deadline(0)) < 0); /* closed descriptor */
}

TEST(recv_timeout)
{
  int fds[2];
  lmp_buf_t b = {0};
  CHECK_EQ(lmp_pipe_pair(1, fds), 0);
  int64_t t0 = lmp_now_ns();
  CHECK_EQ(lmp_pipe_recv(fds[1], &b, lmp_deadline(0.05)), -ETIMEDOUT);
  int64_t took = lmp_now_ns() - t0;
  CHECK(took >= 50 * MS && took < 2000 * MS);
  t0 = lmp_now_ns();
  CHECK_EQ(lmp_pipe_recv(fds[1], &b, lmp_deadline(0)), -ETIMEDOUT);
  CHECK(lmp_now_ns() - t0 < 20 * MS);
  /* The stream is still in step after timeouts. */
  send_checked(fds[0], 10, 3);
  recv_checked(fds[1], &b, 10, 3);
  lmp_buf_free(&b);
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
  lmp_buf_t b = {0};
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
  CHECK_EQ(lmp_pipe_recv(fds[1], &b, lmp_deadline(0.3)), -ETIMEDOUT);
  CHECK(lmp_now_ns() - t0 >= 300 * MS);
  CHECK_EQ(lmp_test_wait(pid, 10000), 0);
  close(fds[0]);
  close(fds[1]);
}

TEST(peer_closed)
{
  int fds[2];
  lmp_buf_t b = {0};
  CHECK_EQ(lmp_pipe_pair(1, fds), 0);
  send_checked(fds[1], 20, 1);
  close(fds[1]);
  /* What was sent before the close is still delivered, then -EPIPE. */
  recv_checked(fds[0], &b, 20, 1);
  CHECK_EQ(lmp_pipe_recv(fds[0], &b, LMP_FOREVER), -EPIPE);
  CHECK_EQ(lmp_pipe_recv(fds[0], &b, LMP_FOREVER), -EPIPE);
  CHECK_EQ(lmp_pipe_send(fds[0], "x", 1), -EPIPE); /* and no SIGPIPE */
  lmp_buf_free(&b);
  close(fds[0]);
}

TEST(bad_frames)
{
  int fds[2];
  lmp_buf_t b = {0};
  /* A length beyond the limit is not a frame of ours. */
  CHECK_EQ(lmp_pipe_pair(1, fds), 0);
  unsigned char hdr[8] = {0, 0, 0, 0, 0, 0x10, 0, 0}; /* 2^44 */
  CHECK_EQ(write(fds[0], hdr, 8), 8);
  CHECK_EQ(lmp_pipe_recv(fds[1], &b, lmp_deadline(1)), -EBADMSG);
  close(fds[0]);
  close(fds[1]);
  /* End of stream inside a header, then inside a payload. */
  CHECK_EQ(lmp_pipe_pair(1, fds), 0);
  CHECK_EQ(write(fds[0], hdr, 3), 3);
  close(fds[0]);
  CHECK_EQ(lmp_pipe_recv(fds[1], &b, lmp_deadline(1)), -EPIPE);
  close(fds[1]);
  CHECK_EQ(lmp_pipe_pair(1, fds), 0);
  unsigned char hdr2[8] = {100, 0, 0, 0, 0, 0, 0, 0};
  CHECK_EQ(write(fds[0], hdr2, 8), 8);
  CHECK_EQ(write(fds[0], "0123456789", 10), 10);
  close(fds[0]);
  CHECK_EQ(lmp_pipe_recv(fds[1], &b, lmp_deadline(1)), -EPIPE);
  close(fds[1]);
  lmp_buf_free(&b);
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
  lmp_buf_t b = {0};
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
        CHECK_EQ(lmp_pipe_recv(fds[0], &b, lmp_deadline(5)), 0);
        CHECK(intact(b.data, b.len));
        got++;
      }
      kill(pid, SIGKILL);
    }
    CHECK_EQ(lmp_test_wait(pid, 10000), -SIGKILL);
    int rc;
    while ((rc = lmp_pipe_recv(fds[0], &b, lmp_deadline(5))) == 0) {
      CHECK(intact(b.data, b.len));
      got++;
    }
    CHECK_EQ(rc, -EPIPE);
    CHECK(round == 0 || got > 0);
    close(fds[0]);
  }
  lmp_buf_free(&b);
}

/* A non-blocking descriptor (a user's fcntl) still sends and receives whole
 * frames: the loops wait in poll instead of failing with EAGAIN. */
TEST(nonblocking_fd)
{
  int fds[2];
  lmp_buf_t b = {0};
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
  CHECK_EQ(lmp_pipe_recv(fds[1], &b, lmp_deadline(10)), 0);
  CHECK_EQ(b.len, big);
  CHECK(intact(b.data, b.len));
  CHECK_EQ(lmp_test_wait(pid, 10000), 0);
  lmp_buf_free(&b);
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
  TEST_ENTRY_T(writer_killed, 60),
  TEST_ENTRY(nonblocking_fd),
  TEST_END
};

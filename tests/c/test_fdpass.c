/*
 * test_fdpass.c -- descriptors over Unix sockets (runtime/fdpass.c): they
 * arrive, close-on-exec, whole or not at all; and polling a set of
 * descriptors until a deadline (lmp__poll_fds, common.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"
#include "lmp/common.h"
#include "runner.h"

static void seqpacket(int sv[2])
{
  CHECK_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
}

/* 1 if a and b are the same open file. */
static int same_file(int a, int b)
{
  struct stat sa, sb;
  return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

/* Send `n` descriptors (any number) with a hand-built message, as a peer
 * that does not use lmp__send_fds might. */
static void send_raw(int sock, const int *fds, int n)
{
  union {
    char buf[CMSG_SPACE(64 * sizeof(int))];
    struct cmsghdr align;
  } cb;
  char byte = 'x';
  struct iovec iov = {&byte, 1};
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
  CHECK(n <= 64);
  memset(&cb, 0, sizeof cb);
  mh.msg_control = cb.buf;
  mh.msg_controllen = CMSG_SPACE(n * sizeof(int));
  struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
  cm->cmsg_level = SOL_SOCKET;
  cm->cmsg_type = SCM_RIGHTS;
  cm->cmsg_len = CMSG_LEN(n * sizeof(int));
  memcpy(CMSG_DATA(cm), fds, n * sizeof(int));
  CHECK_EQ(sendmsg(sock, &mh, 0), 1);
}

TEST(fds_arrive_with_the_bytes)
{
  int sv[2], p[2], got[4];
  size_t n = 4;
  char buf[16];
  seqpacket(sv);
  CHECK_EQ(pipe(p), 0);
  int fds[3] = {p[0], p[1], sv[0]};
  CHECK_EQ(lmp__send_fds(sv[0], "hello", 5, fds, 3, 0), 5);
  CHECK_EQ(lmp__recv_fds(sv[1], buf, sizeof buf, got, &n, 0), 5);
  CHECK(memcmp(buf, "hello", 5) == 0);
  CHECK_EQ(n, 3);
  for (int i = 0; i < 3; i++) {
    CHECK(got[i] != fds[i]);
    CHECK(same_file(got[i], fds[i]));
  }
  /* The received write end writes into the pipe we hold. */
  CHECK_EQ(write(got[1], "z", 1), 1);
  CHECK_EQ(read(p[0], buf, 1), 1);
  CHECK_EQ(buf[0], 'z');
  for (int i = 0; i < 3; i++)
    close(got[i]);
}

TEST(fds_arrive_close_on_exec)
{
  int sv[2], p[2], got[2];
  size_t n = 2;
  char b;
  seqpacket(sv);
  CHECK_EQ(pipe(p), 0); /* not close-on-exec here */
  CHECK_EQ(fcntl(p[0], F_GETFD) & FD_CLOEXEC, 0);
  CHECK_EQ(lmp__send_fds(sv[0], "x", 1, p, 2, 0), 1);
  CHECK_EQ(lmp__recv_fds(sv[1], &b, 1, got, &n, 0), 1);
  CHECK_EQ(n, 2);
  CHECK(fcntl(got[0], F_GETFD) & FD_CLOEXEC);
  CHECK(fcntl(got[1], F_GETFD) & FD_CLOEXEC);
}

TEST(no_fds_and_end_of_file)
{
  int sv[2], got[1] = {-1};
  size_t n = 1;
  char buf[4];
  seqpacket(sv);
  CHECK_EQ(lmp__send_fds(sv[0], "ab", 2, NULL, 0, 0), 2);
  CHECK_EQ(lmp__recv_fds(sv[1], buf, sizeof buf, got, &n, 0), 2);
  CHECK_EQ(n, 0);
  CHECK_EQ(got[0], -1);
  close(sv[0]);
  n = 1;
  CHECK_EQ(lmp__recv_fds(sv[1], buf, sizeof buf, got, &n, 0), 0);
  CHECK_EQ(n, 0);
}

TEST(send_refuses_too_many)
{
  int sv[2], fds[LMP__FDS_MAX + 1];
  seqpacket(sv);
  for (int i = 0; i <= LMP__FDS_MAX; i++)
    fds[i] = sv[0];
  CHECK_EQ(lmp__send_fds(sv[0], "x", 1, fds, LMP__FDS_MAX + 1, 0), -EINVAL);
  CHECK_EQ(lmp__send_fds(-1, "x", 1, fds, 1, 0), -EBADF);
}

/* More descriptors than the room: refused whole, none left open. */
TEST(more_fds_than_room_closed)
{
  int sv[2], p[2], got[2];
  size_t n = 2;
  char b;
  seqpacket(sv);
  CHECK_EQ(pipe(p), 0);
  int fds[3] = {p[0], p[1], p[0]};
  CHECK_EQ(lmp__send_fds(sv[0], "x", 1, fds, 3, 0), 1);
  int before = lmp_test_fd_count();
  CHECK_EQ(lmp__recv_fds(sv[1], &b, 1, got, &n, 0), -EMSGSIZE);
  CHECK_EQ(n, 0);
  CHECK_EQ(lmp_test_fd_count(), before);
}

/* A control message cut off by the kernel (more descriptors than the
 * receiver's buffer holds: MSG_CTRUNC): refused, none left open. */
TEST(truncated_control_closed)
{
  int sv[2], fds[LMP__FDS_MAX + 4], got[LMP__FDS_MAX];
  size_t n = LMP__FDS_MAX;
  char b;
  seqpacket(sv);
  for (int i = 0; i < LMP__FDS_MAX + 4; i++)
    fds[i] = sv[0];
  send_raw(sv[0], fds, LMP__FDS_MAX + 4);
  int before = lmp_test_fd_count();
  CHECK_EQ(lmp__recv_fds(sv[1], &b, 1, got, &n, 0), -EMSGSIZE);
  CHECK_EQ(n, 0);
  CHECK_EQ(lmp_test_fd_count(), before);
  /* The next message is read as usual. */
  send_raw(sv[0], fds, 1);
  n = LMP__FDS_MAX;
  CHECK_EQ(lmp__recv_fds(sv[1], &b, 1, got, &n, 0), 1);
  CHECK_EQ(n, 1);
  close(got[0]);
}

/* Bytes past the buffer (MSG_TRUNC): refused, its descriptors closed. */
TEST(truncated_data_closed)
{
  int sv[2], got[2];
  size_t n = 2;
  char buf[4];
  seqpacket(sv);
  CHECK_EQ(lmp__send_fds(sv[0], "0123456789", 10, sv, 1, 0), 10);
  int before = lmp_test_fd_count();
  CHECK_EQ(lmp__recv_fds(sv[1], buf, sizeof buf, got, &n, 0), -EMSGSIZE);
  CHECK_EQ(n, 0);
  CHECK_EQ(lmp_test_fd_count(), before);
}

TEST(recv_nonblocking)
{
  int sv[2], got[1];
  size_t n = 1;
  char b;
  seqpacket(sv);
  CHECK_EQ(lmp__recv_fds(sv[1], &b, 1, got, &n, MSG_DONTWAIT), -EAGAIN);
}

static int wake_w = -1;

/* Tell the sender to go: the receive is under way and was interrupted. */
static void on_alarm(int sig)
{
  (void)sig;
  if (write(wake_w, "g", 1) < 0) {
  }
}

/* A signal (no SA_RESTART) during the receive does not end it. */
TEST(recv_resumes_after_eintr)
{
  int sv[2], go[2], got[1];
  size_t n = 1;
  char b;
  struct sigaction sa;
  seqpacket(sv);
  CHECK_EQ(pipe(go), 0);
  wake_w = go[1];
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  CHECK_EQ(sigaction(SIGALRM, &sa, NULL), 0);
  pid_t pid = lmp_test_fork();
  if (pid == 0) {
    char c;
    CHECK_EQ(read(go[0], &c, 1), 1);
    CHECK_EQ(lmp__send_fds(sv[0], "s", 1, &sv[0], 1, 0), 1);
    _exit(0);
  }
  struct itimerval it = {{0, 0}, {0, 50000}};
  CHECK_EQ(setitimer(ITIMER_REAL, &it, NULL), 0);
  CHECK_EQ(lmp__recv_fds(sv[1], &b, 1, got, &n, 0), 1);
  CHECK_EQ(n, 1);
  CHECK_EQ(lmp_test_wait(pid, 5000), 0);
}

/* === lmp__poll_fds === */

TEST(poll_fds_counts_the_ready)
{
  int a[2], b[2], c[2];
  CHECK_EQ(pipe(a), 0);
  CHECK_EQ(pipe(b), 0);
  CHECK_EQ(pipe(c), 0);
  struct pollfd p[3] = {{a[0], POLLIN, 0}, {b[0], POLLIN, 0}, {c[0], POLLIN, 0}};
  CHECK_EQ(write(a[1], "x", 1), 1);
  close(c[1]); /* hung up counts too */
  CHECK_EQ(lmp__poll_fds(p, 3, LMP_FOREVER), 2);
  CHECK(p[0].revents & POLLIN);
  CHECK_EQ(p[1].revents, 0);
  CHECK(p[2].revents & POLLHUP);
  p[0].fd = -1;
  p[2].fd = -1;
  CHECK_EQ(lmp__poll_fds(p, 3, lmp_test_ms(20)), 0);
  CHECK_EQ(lmp__poll_fds(p, 0, lmp_deadline(0)), 0);
}

static int ask_stop;
static int stop_pending(void)
{
  return ask_stop;
}

static void on_usr1(int sig)
{
  (void)sig;
}

/* A signal resumes the wait, unless the interrupt check asks it to stop. */
TEST(poll_fds_eintr)
{
  int a[2];
  struct sigaction sa;
  CHECK_EQ(pipe(a), 0);
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  CHECK_EQ(sigaction(SIGUSR1, &sa, NULL), 0);
  struct pollfd p = {a[0], POLLIN, 0};
  pid_t self = getpid(), pid = lmp_test_fork();
  if (pid == 0) {
    for (int i = 0; i < 3; i++) {
      lmp_test_sleep_ms(20);
      kill(self, SIGUSR1);
    }
    lmp_test_sleep_ms(20);
    CHECK_EQ(write(a[1], "x", 1), 1);
    _exit(0);
  }
  /* Only the writer ends this wait, whatever signals came before. */
  CHECK_EQ(lmp__poll_fds(&p, 1, LMP_FOREVER), 1);
  CHECK_EQ(lmp_test_wait(pid, 5000), 0);
  char c;
  CHECK_EQ(read(a[0], &c, 1), 1);
  ask_stop = 1;
  lmp_set_interrupt_check(stop_pending);
  pid = lmp_test_fork();
  if (pid == 0) {
    for (;;) { /* until the wait has seen one */
      lmp_test_sleep_ms(20);
      kill(self, SIGUSR1);
    }
  }
  CHECK_EQ(lmp__poll_fds(&p, 1, LMP_FOREVER), -EINTR);
  kill(pid, SIGKILL);
  CHECK_EQ(lmp_test_wait(pid, 5000), -SIGKILL);
  lmp_set_interrupt_check(NULL);
}

TEST_LIST = {
    TEST_ENTRY(fds_arrive_with_the_bytes),
    TEST_ENTRY(fds_arrive_close_on_exec),
    TEST_ENTRY(no_fds_and_end_of_file),
    TEST_ENTRY(send_refuses_too_many),
    TEST_ENTRY(more_fds_than_room_closed),
    TEST_ENTRY(truncated_control_closed),
    TEST_ENTRY(truncated_data_closed),
    TEST_ENTRY(recv_nonblocking),
    TEST_ENTRY(recv_resumes_after_eintr),
    TEST_ENTRY(poll_fds_counts_the_ready),
    TEST_ENTRY(poll_fds_eintr),
    TEST_END,
};

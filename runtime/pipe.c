/*
 * pipe.c -- framed messages over Unix stream socketpairs (lmp.Pipe).
 *
 * A pipe is a socketpair(AF_UNIX, SOCK_STREAM).  A stream socket, unlike a
 * datagram or seqpacket one, carries a message of any size (the kernel would
 * cap a datagram at the socket buffer), and unlike pipe(2) it can be made
 * duplex, have its descriptor passed, and it reports a dead peer as end of
 * stream.  A simplex pair shuts down the directions it does not use, so a
 * misuse fails loudly instead of leaving bytes nobody reads.
 *
 * Framing.  Each message is an 8-byte little-endian length followed by the
 * payload.  The sender writes both with one sendmsg(2) of two iovecs, so a
 * small message costs one system call and arrives in one piece.  The receiver
 * honours its deadline only until a frame starts: once one byte of a header
 * has been read the rest of the frame is read regardless of the deadline,
 * because stopping half-way would leave the stream out of step.  A writer
 * killed mid-message shows up as end of stream inside a frame, which is
 * reported as -EPIPE: a torn message is never returned.
 *
 * Descriptors are expected to be blocking; if a user made one non-blocking
 * the loops below wait in poll(2) instead of failing with EAGAIN.
 *
 * Waiting.  A receiver first polls the socket without sleeping for a few
 * microseconds (SPIN_NS), yielding the CPU between tries, and only then
 * sleeps in the kernel.  Waking a sleeping process on another CPU costs
 * tens of microseconds on a virtual machine (an idle vCPU has to be woken),
 * far more than the message itself: bench/ measured a ping-pong round trip
 * of 35-58 us sleeping and 6-9 us polling first, against 36-45 us for a raw
 * C socketpair ping-pong that sleeps.  The yield keeps the poll from
 * stealing the CPU from a peer that shares it (then it is 10.5 us, against
 * 12.8 us sleeping).  A receiver that waits longer loses SPIN_NS of CPU.
 */
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "lmp/pipe.h"

#include "internal.h"

#define HEADER_SIZE 8
/* Larger socket buffers let a sender run ahead of its reader; the kernel caps
 * the request at net.core.wmem_max / rmem_max, which is fine. */
#define SOCKET_BUFFER (4 << 20)
#define DISCARD_CHUNK 65536
#define READ_AHEAD (1u << 20) /* see read_payload */
#define SPIN_NS 20000 /* see "Waiting" above */

/* === pairs === */

static void enlarge_buffers(int fd)
{
  int size = SOCKET_BUFFER;
  /* Best effort: a smaller buffer only costs throughput. */
  (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
  (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
}

int lmp_pipe_pair(int duplex, int fds[2])
{
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    return -errno;
  enlarge_buffers(sv[0]);
  enlarge_buffers(sv[1]);
  if (!duplex && (shutdown(sv[0], SHUT_WR) < 0 || shutdown(sv[1], SHUT_RD) < 0)) {
    int err = -errno;
    close(sv[0]);
    close(sv[1]);
    return err;
  }
  fds[0] = sv[0];
  fds[1] = sv[1];
  return 0;
}

/* === send === */

static void put_le64(unsigned char *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le64(const unsigned char *p)
{
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v |= (uint64_t)p[i] << (8 * i);
  return v;
}

/* Drop `n` bytes from the front of an iovec array. */
static void iov_advance(struct iovec **iov, int *cnt, size_t n)
{
  while (*cnt > 0 && n >= (*iov)->iov_len) {
    n -= (*iov)->iov_len;
    (*iov)++;
    (*cnt)--;
  }
  if (*cnt > 0) {
    (*iov)->iov_base = (char *)(*iov)->iov_base + n;
    (*iov)->iov_len -= n;
  }
}

/*
 * Write the whole frame.  sendmsg() on a stream socket may write part of it
 * (a signal, a full buffer on a non-blocking descriptor); the loop carries on
 * from where it stopped.  Skipping empty iovecs keeps a 0-byte payload from
 * turning into an extra call.
 */
int lmp_pipe_send(int fd, const void *data, size_t len)
{
  if ((uint64_t)len > LMP_PIPE_MAX_MESSAGE)
    return -EMSGSIZE;
  unsigned char hdr[HEADER_SIZE];
  put_le64(hdr, len);
  struct iovec vec[2] = {{hdr, HEADER_SIZE}, {(void *)data, len}};
  struct iovec *iov = vec;
  int cnt = len ? 2 : 1;
  while (cnt > 0) {
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)cnt};
    ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n >= 0) {
      iov_advance(&iov, &cnt, (size_t)n);
      continue;
    }
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      int rc = lmp__poll_fd(fd, POLLOUT, LMP_FOREVER);
      if (rc < 0)
        return rc;
      continue;
    }
    if (errno == ECONNRESET || errno == ENOTCONN)
      return -EPIPE;
    return -errno;
  }
  return 0;
}

/* === receive === */

/*
 * Read exactly `len` bytes of a frame that has started.  End of stream here
 * means the writer died or closed mid-message: -EPIPE.
 */
static int read_full(int fd, char *p, size_t len)
{
  while (len > 0) {
    ssize_t n = recv(fd, p, len, MSG_WAITALL);
    if (n > 0) {
      p += n;
      len -= (size_t)n;
      continue;
    }
    if (n == 0)
      return -EPIPE;
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      int rc = lmp__poll_fd(fd, POLLIN, LMP_FOREVER);
      if (rc < 0)
        return rc;
      continue;
    }
    return errno == ECONNRESET ? -EPIPE : -errno;
  }
  return 0;
}

/* Consume a payload we cannot keep, so the next frame still starts in step. */
static int discard(int fd, uint64_t len)
{
  char scratch[DISCARD_CHUNK];
  while (len > 0) {
    size_t n = len < sizeof scratch ? (size_t)len : sizeof scratch;
    int rc = read_full(fd, scratch, n);
    if (rc < 0)
      return rc;
    len -= n;
  }
  return 0;
}

/*
 * Poll for the first bytes of a header for SPIN_NS at most (see "Waiting"
 * above): the count of header bytes read (> 0), -EPIPE, or 0 when nothing
 * came (or an error that the caller's own recv will report again).
 */
static int spin_start(int fd, unsigned char *hdr, int64_t deadline)
{
  int64_t now = lmp_now_ns(), until = now + SPIN_NS;
  if (deadline != LMP_FOREVER && deadline < until)
    until = deadline;
  if (until <= now)
    return 0; /* a zero timeout: the caller's one recv decides */
  for (;;) {
    ssize_t n = recv(fd, hdr, HEADER_SIZE, MSG_DONTWAIT);
    if (n > 0)
      return (int)n;
    if (n == 0)
      return -EPIPE;
    if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
      return 0;
    if (lmp_now_ns() >= until)
      return 0;
    sched_yield();
  }
}

/*
 * Wait for the first byte of a header and take whatever part of the header
 * is there.  Returns the number of header bytes read (> 0), or -ETIMEDOUT /
 * -EPIPE / -errno.  With a deadline the read never blocks (MSG_DONTWAIT) and
 * the waiting happens in poll(): when several processes read one end, poll()
 * may report data that another reader takes first, and a blocking read
 * would then overrun the deadline.  Without one, recv() itself sleeps: one
 * system call instead of three, which halves a ping-pong's round trip.
 */
static int frame_start(int fd, unsigned char *hdr, int64_t deadline)
{
  int flags = deadline == LMP_FOREVER ? 0 : MSG_DONTWAIT;
  int rc = spin_start(fd, hdr, deadline);
  if (rc != 0)
    return rc;
  for (;;) {
    ssize_t n = recv(fd, hdr, HEADER_SIZE, flags);
    if (n > 0)
      return (int)n;
    if (n == 0)
      return -EPIPE;
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return errno == ECONNRESET ? -EPIPE : -errno;
    rc = lmp__poll_fd(fd, POLLIN, deadline);
    if (rc < 0)
      return rc;
    if (rc == 0)
      return -ETIMEDOUT;
  }
}

/*
 * Read a payload of `len` bytes into buf.  The buffer grows with the bytes
 * that have arrived (at most twice as many, or READ_AHEAD), not with the
 * length the header announced: a forged header costs memory only as far as
 * its bytes really come.  Payloads up to READ_AHEAD are read in one go.
 */
static int read_payload(int fd, lmp_buf_t *buf, uint64_t len)
{
  uint64_t got = 0;
  while (got < len) {
    uint64_t upto = got + (got > READ_AHEAD ? got : READ_AHEAD);
    if (upto > len)
      upto = len;
    if (upto > SIZE_MAX || lmp_buf_reserve(buf, (size_t)upto) < 0) {
      int rc = discard(fd, len - got);
      return rc < 0 ? rc : -ENOMEM;
    }
    int rc = read_full(fd, buf->data + got, (size_t)(upto - got));
    if (rc < 0)
      return rc;
    got = upto;
  }
  return 0;
}

int lmp_pipe_recv(int fd, lmp_buf_t *buf, int64_t deadline)
{
  unsigned char hdr[HEADER_SIZE];
  buf->len = 0;
  int rc = frame_start(fd, hdr, deadline);
  if (rc < 0)
    return rc;
  if (rc < HEADER_SIZE && (rc = read_full(fd, (char *)hdr + rc, HEADER_SIZE - rc)) < 0)
    return rc;
  uint64_t len = get_le64(hdr);
  if (len > LMP_PIPE_MAX_MESSAGE)
    return -EBADMSG; /* not a frame of ours: the stream cannot be trusted */
  if ((rc = read_payload(fd, buf, len)) < 0)
    return rc;
  buf->len = (size_t)len;
  return 0;
}

int lmp_pipe_poll(int fd, int64_t deadline)
{
  int rc = lmp__poll_fd(fd, POLLIN, deadline);
  if (rc <= 0)
    return rc;
  /* POLLHUP / POLLERR count as readable: the next recv reports the end. */
  return 1;
}

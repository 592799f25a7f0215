/*
 * pipe.c -- messages over Unix seqpacket socketpairs (lmp.Pipe).
 *
 * A pipe is a socketpair(AF_UNIX, SOCK_SEQPACKET).  Unlike pipe(2) it can
 * be made duplex, have its descriptor passed, and it reports a dead peer as
 * end of stream; a simplex pair shuts down the directions it does not use,
 * so a misuse fails loudly instead of leaving bytes nobody reads.
 *
 * Records, not a byte stream.  The kernel queues a seqpacket record whole
 * or not at all and a receive takes exactly one record, so a writer killed
 * in the middle of a send leaves nothing half-written.  A byte stream
 * cannot give that: a writer killed after part of a frame leaves the frame's
 * start in the stream, and when another process still holds a writing end
 * (often the parent, which kept its copy) the reader either waits forever
 * for the rest or reads the next writer's bytes as that rest.
 *
 * Framing.  A record is a 16-byte little-endian header -- the message's
 * length (8 bytes), its writer (4) and the record's index in it (4) --
 * followed by payload.  A message that fits in one record (up to
 * LMP_PIPE_RECORD, 256 KiB, header included) is one record with writer 0:
 * one sendmsg(2), one recvmsg(2), nothing kept between calls.  A larger one
 * is cut into records that carry the writer's thread id and count up from
 * 0.  Records of several writers may interleave, so the reader keeps one
 * part per writer (lmp_pipe_reader_t) and returns a message once all of its
 * bytes are there.  What a dead writer left is never returned: its part
 * waits for records that never come, and is dropped when that writer id
 * starts a new message, when a waiting reader finds the thread gone
 * (kill(tid, 0) says ESRCH), or at end of stream.  A record that fits no
 * part (a forged header, a continuation whose start this reader never saw)
 * is refused with -EBADMSG; the records after it are read as usual.
 *
 * The first record of a writer is read into the reader's message buffer;
 * the next records are read straight behind the bytes of the message that
 * received the last record, with the remainder of the 256 KiB landing in
 * the message buffer, so a big message from one writer is copied once (by
 * the kernel) and a record of another writer costs one copy of itself.
 * Buffers grow with the bytes that arrived, never with a length a header
 * announces.  A sender whose kernel refuses records this large (EMSGSIZE:
 * a small net.core.wmem_max) halves its record size, down to 4 KiB.
 *
 * Several processes may read one end: each record goes to one of them, so
 * a message of one record goes to one reader whole.  The records of a
 * larger message may be split between readers, which then refuse them.
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
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "lmp/pipe.h"

#include "internal.h"

#define HEADER_SIZE 16
#define ROOM (LMP_PIPE_RECORD - HEADER_SIZE) /* payload of the largest record */
#define MIN_RECORD 4096
/* Larger socket buffers let a sender run ahead of its reader; the kernel caps
 * the request at net.core.wmem_max / rmem_max, which is fine. */
#define SOCKET_BUFFER (4 << 20)
#define SPIN_NS 20000 /* see "Waiting" above */

struct lmp_pipe_part {
  lmp_pipe_part_t *next;
  uint32_t writer, index; /* index: of the record expected next */
  uint64_t len, got;      /* the message's length; bytes arrived */
  lmp_buf_t buf;          /* those bytes, unless lost */
  int lost;               /* no memory for it: counted, not kept */
};

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
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
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

/* === headers === */

static void put_le(unsigned char *p, uint64_t v, int n)
{
  for (int i = 0; i < n; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int n)
{
  uint64_t v = 0;
  for (int i = 0; i < n; i++)
    v |= (uint64_t)p[i] << (8 * i);
  return v;
}

static void put_header(unsigned char *hdr, uint64_t len, uint32_t writer, uint32_t index)
{
  put_le(hdr, len, 8);
  put_le(hdr + 8, writer, 4);
  put_le(hdr + 12, index, 4);
}

/* === send === */

/* The record size this process sends, lowered when the kernel refuses it. */
static atomic_size_t record_size = LMP_PIPE_RECORD;

/* One record: sent whole, or not at all (-errno). */
static int send_record(int fd, const unsigned char *hdr, const char *p, size_t n)
{
  struct iovec vec[2] = {{(void *)hdr, HEADER_SIZE}, {(void *)p, n}};
  struct msghdr msg = {.msg_iov = vec, .msg_iovlen = n ? 2 : 1};
  for (;;) {
    if (sendmsg(fd, &msg, MSG_NOSIGNAL) >= 0)
      return 0;
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      int rc = lmp__poll_fd(fd, POLLOUT, LMP_FOREVER);
      if (rc < 0)
        return rc;
      continue;
    }
    if (errno == ECONNRESET || errno == ENOTCONN || errno == ECONNREFUSED)
      return -EPIPE;
    return -errno;
  }
}

/* A message of several records of `room` payload bytes each. */
static int send_records(int fd, const char *p, size_t len, size_t room)
{
  unsigned char hdr[HEADER_SIZE];
  uint32_t writer = (uint32_t)syscall(SYS_gettid), index = 0;
  for (size_t off = 0; off < len; off += room, index++) {
    size_t n = len - off < room ? len - off : room;
    put_header(hdr, len, writer, index);
    int rc = send_record(fd, hdr, p + off, n);
    if (rc < 0)
      return rc;
  }
  return 0;
}

int lmp_pipe_send(int fd, const void *data, size_t len)
{
  if ((uint64_t)len > LMP_PIPE_MAX_MESSAGE)
    return -EMSGSIZE;
  for (;;) {
    size_t size = atomic_load_explicit(&record_size, memory_order_relaxed);
    int rc;
    if (len <= size - HEADER_SIZE) {
      unsigned char hdr[HEADER_SIZE];
      put_header(hdr, len, 0, 0);
      rc = send_record(fd, hdr, data, len);
    } else {
      rc = send_records(fd, data, len, size - HEADER_SIZE);
    }
    /* Refused as too large before anything of it was queued (the first
     * record is the largest): try again with smaller records.  Had some
     * gone, the new first record would replace them at the reader. */
    if (rc != -EMSGSIZE || size <= MIN_RECORD)
      return rc;
    atomic_compare_exchange_strong(&record_size, &size, size / 2);
  }
}

/* === the reader's parts === */

static lmp_pipe_part_t *find(lmp_pipe_reader_t *r, uint32_t writer)
{
  lmp_pipe_part_t *p = r->parts;
  while (p != NULL && p->writer != writer)
    p = p->next;
  return p;
}

static void unlink_part(lmp_pipe_reader_t *r, lmp_pipe_part_t *p)
{
  lmp_pipe_part_t **at = &r->parts;
  while (*at != p)
    at = &(*at)->next;
  *at = p->next;
}

static void drop(lmp_pipe_reader_t *r, lmp_pipe_part_t *p)
{
  unlink_part(r, p);
  lmp_buf_free(&p->buf);
  free(p);
}

static void drop_all(lmp_pipe_reader_t *r)
{
  while (r->parts != NULL)
    drop(r, r->parts);
}

/* The part that took a record goes first: the next record is read behind it. */
static void to_front(lmp_pipe_reader_t *r, lmp_pipe_part_t *p)
{
  unlink_part(r, p);
  p->next = r->parts;
  r->parts = p;
}

static void lose(lmp_pipe_part_t *p)
{
  lmp_buf_free(&p->buf);
  p->lost = 1;
}

/* Parts whose writer is gone can never complete. */
static void reap(lmp_pipe_reader_t *r)
{
  lmp_pipe_part_t *p = r->parts, *next;
  for (; p != NULL; p = next) {
    next = p->next;
    if (kill((pid_t)p->writer, 0) < 0 && errno == ESRCH)
      drop(r, p);
  }
}

void lmp_pipe_reader_free(lmp_pipe_reader_t *r)
{
  drop_all(r);
  lmp_buf_free(&r->msg);
  r->ready = 0;
}

/* === receive === */

struct record {
  uint64_t len;
  uint32_t writer, index;
  size_t got;           /* payload bytes */
  lmp_pipe_part_t *cur; /* the part the record was read behind, or NULL */
  size_t room;          /* payload bytes that went there */
};

/*
 * Receive one record: its payload goes behind the bytes of the first part
 * (room bytes at most: what that message still lacks) and the rest into
 * r->msg.  0, or -EAGAIN / -EINTR / -EPIPE (end of stream) / -EBADMSG
 * (not a record of ours; it is consumed) / -errno.
 */
static int read_record(lmp_pipe_reader_t *r, int fd, int flags, struct record *rec)
{
  lmp_pipe_part_t *cur = r->parts != NULL && !r->parts->lost ? r->parts : NULL;
  size_t room = 0;
  if (lmp_buf_reserve(&r->msg, ROOM) < 0)
    return -ENOMEM;
  if (cur != NULL) {
    uint64_t left = cur->len - cur->got;
    room = left < ROOM ? (size_t)left : ROOM;
    if (lmp_buf_reserve(&cur->buf, (size_t)cur->got + room) < 0) {
      lose(cur);
      cur = NULL;
      room = 0;
    }
  }
  unsigned char hdr[HEADER_SIZE];
  struct iovec vec[3] = {{hdr, HEADER_SIZE},
                         {cur != NULL ? cur->buf.data + cur->got : NULL, room},
                         {r->msg.data, ROOM - room}};
  struct msghdr msg = {.msg_iov = vec, .msg_iovlen = 3};
  ssize_t n = recvmsg(fd, &msg, flags);
  if (n < 0) /* ECONNRESET: a closed duplex peer left data unread; said once */
    return errno == ECONNRESET ? -EINTR : errno == EWOULDBLOCK ? -EAGAIN : -errno;
  if (n == 0)
    return -EPIPE;
  if (n < HEADER_SIZE || (msg.msg_flags & MSG_TRUNC))
    return -EBADMSG;
  rec->len = get_le(hdr, 8);
  rec->writer = (uint32_t)get_le(hdr + 8, 4);
  rec->index = (uint32_t)get_le(hdr + 12, 4);
  rec->got = (size_t)n - HEADER_SIZE;
  rec->cur = cur;
  rec->room = room;
  return 0;
}

/* Move a record read behind a part it does not belong to into r->msg. */
static void gather(lmp_pipe_reader_t *r, const struct record *rec)
{
  if (rec->cur == NULL || rec->room == 0)
    return;
  size_t head = rec->got < rec->room ? rec->got : rec->room;
  memmove(r->msg.data + head, r->msg.data, rec->got - head);
  memcpy(r->msg.data, rec->cur->buf.data + rec->cur->got, head);
}

/* A part has all its bytes: its buffer becomes the message. */
static int complete(lmp_pipe_reader_t *r, lmp_pipe_part_t *p)
{
  int lost = p->lost;
  unlink_part(r, p);
  if (!lost) {
    lmp_buf_free(&r->msg);
    r->msg = p->buf;
    r->msg.len = (size_t)p->len;
  }
  free(p);
  return lost ? -ENOMEM : 1;
}

/* A record that starts a message of several. */
static int start_part(lmp_pipe_reader_t *r, const struct record *rec, lmp_pipe_part_t *old)
{
  if (rec->len <= rec->got || rec->len > LMP_PIPE_MAX_MESSAGE)
    return -EBADMSG;
  if (old != NULL)
    drop(r, old); /* that writer id began again: what it sent before died with it */
  lmp_pipe_part_t *p = calloc(1, sizeof *p);
  if (p == NULL)
    return -ENOMEM;
  p->writer = rec->writer;
  p->index = 1;
  p->len = rec->len;
  p->got = rec->got;
  p->buf = r->msg; /* the payload is there: take the buffer */
  p->buf.len = rec->got;
  memset(&r->msg, 0, sizeof r->msg);
  p->next = r->parts;
  r->parts = p;
  return 0;
}

/* Settle a record: 1 when r->msg holds a whole message, 0 when the record
 * went into a part, -EBADMSG / -ENOMEM. */
static int absorb(lmp_pipe_reader_t *r, const struct record *rec)
{
  lmp_pipe_part_t *p = rec->writer != 0 ? find(r, rec->writer) : NULL;
  int fits = p != NULL && rec->index != 0 && rec->index == p->index && rec->len == p->len &&
             rec->got <= p->len - p->got;
  if (fits && p == rec->cur) { /* read in place */
    p->got += rec->got;
    p->buf.len = (size_t)p->got;
    p->index++;
    return p->got == p->len ? complete(r, p) : 0;
  }
  gather(r, rec);
  if (rec->writer == 0) {
    if (rec->index != 0 || rec->len != rec->got)
      return -EBADMSG;
    r->msg.len = rec->got;
    return 1;
  }
  if (rec->index == 0)
    return start_part(r, rec, p);
  if (!fits) {
    if (p != NULL)
      drop(r, p);
    return -EBADMSG;
  }
  if (!p->lost && lmp_buf_reserve(&p->buf, (size_t)(p->got + rec->got)) < 0)
    lose(p);
  if (!p->lost) {
    memcpy(p->buf.data + p->got, r->msg.data, rec->got);
    p->buf.len = (size_t)(p->got + rec->got);
  }
  p->got += rec->got;
  p->index++;
  to_front(r, p);
  return p->got == p->len ? complete(r, p) : 0;
}

/* Read and settle one record: 1 (a whole message), 0 (part of one), <0. */
static int step(lmp_pipe_reader_t *r, int fd, int flags)
{
  struct record rec = {0};
  int rc = read_record(r, fd, flags, &rec);
  if (rc == -EPIPE)
    drop_all(r); /* nothing more can come */
  if (rc < 0)
    return rc;
  return absorb(r, &rec);
}

int lmp_pipe_recv(lmp_pipe_reader_t *r, int fd, int64_t deadline)
{
  if (r->ready) {
    int rc = r->ready;
    r->ready = 0;
    return rc > 0 ? 0 : rc;
  }
  r->msg.len = 0;
  int64_t now = lmp_now_ns(), until = now + SPIN_NS;
  if (deadline != LMP_FOREVER && deadline < until)
    until = deadline;
  int spinning = until > now, reaped = 0; /* a zero timeout: one try, then poll says */
  int flags = deadline == LMP_FOREVER ? 0 : MSG_DONTWAIT;
  for (;;) {
    int rc = step(r, fd, spinning ? MSG_DONTWAIT : flags);
    if (rc == 1)
      return 0;
    if (rc == -EINTR && (rc = lmp__interrupted()) < 0)
      return rc;
    if (rc == 0 || rc == -EINTR)
      continue;
    if (rc != -EAGAIN)
      return rc;
    if (!reaped && r->parts != NULL) {
      reap(r);
      reaped = 1;
    }
    if (spinning) {
      spinning = lmp_now_ns() < until;
      if (spinning)
        sched_yield();
      continue;
    }
    /* With a deadline the read never blocks and the waiting happens here:
     * another reader of the same end may take what poll() reported. */
    rc = lmp__poll_fd(fd, POLLIN, deadline);
    if (rc < 0)
      return rc;
    if (rc == 0)
      return -ETIMEDOUT;
  }
}

int lmp_pipe_poll(lmp_pipe_reader_t *r, int fd, int64_t deadline)
{
  int reaped = 0;
  while (!r->ready) {
    int rc = step(r, fd, MSG_DONTWAIT);
    if (rc == 1)
      r->ready = 1;
    else if (rc == -EBADMSG || rc == -ENOMEM)
      r->ready = rc; /* the next recv reports it */
    else if (rc == -EPIPE)
      return 1; /* end of stream: the next recv reads it again */
    else if (rc == -EAGAIN) {
      if (!reaped && r->parts != NULL) {
        reap(r);
        reaped = 1;
      }
      rc = lmp__poll_fd(fd, POLLIN, deadline);
      if (rc <= 0)
        return rc;
    } else if (rc != 0 && rc != -EINTR)
      return rc;
  }
  return 1;
}

/*
 * fdpass.c -- descriptors over Unix sockets: one message out with its
 * descriptors, one message in with its descriptors.
 *
 * Every place lmp hands a descriptor to another process (the watchdog's fd
 * stash, segments and enrolments, the forkserver's requests and replies)
 * goes through these two functions, as libuv's streams do, so the control
 * message is built and read in one place.  Receiving sets close-on-exec
 * atomically (MSG_CMSG_CLOEXEC): a descriptor that arrives while another
 * thread execs never leaks into the new program.
 *
 * A message that arrives cut off is refused whole.  The kernel drops the
 * descriptors that do not fit the control buffer (or the receiver's
 * descriptor limit) and says so with MSG_CTRUNC; the bytes past the buffer
 * go the same way (MSG_TRUNC).  Either way what came is not what was sent,
 * so every descriptor that did arrive is closed and the caller sees
 * -EMSGSIZE instead of a request with a hole in it.  More descriptors than
 * the caller has room for count as cut off too.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"

/* Control data with room for LMP__FDS_MAX descriptors, aligned for cmsghdr. */
typedef union fd_cmsg {
  char buf[CMSG_SPACE(LMP__FDS_MAX * sizeof(int))];
  struct cmsghdr align;
} fd_cmsg_t;

ssize_t lmp__send_fds(int sock, const void *data, size_t len, const int *fds, size_t nfds,
                      int flags)
{
  fd_cmsg_t cb;
  struct iovec iov = {(void *)data, len};
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
  struct cmsghdr *cm;
  ssize_t n;

  if (nfds > LMP__FDS_MAX)
    return -EINVAL;
  if (nfds > 0) {
    memset(&cb, 0, sizeof cb);
    mh.msg_control = cb.buf;
    mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
    cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
    memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
  }
  while ((n = sendmsg(sock, &mh, MSG_NOSIGNAL | flags)) < 0 && errno == EINTR) {
  }
  return n < 0 ? -errno : n;
}

/* Take the descriptors of mh's control data into fds (room for `room`);
 * the count of all that came in *got, those past the room closed. */
static void take_fds(struct msghdr *mh, int *fds, size_t room, size_t *got)
{
  struct cmsghdr *cm;
  size_t i, k;
  int fd;

  *got = 0;
  for (cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
      continue;
    k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (i = 0; i < k; i++, (*got)++) {
      memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
      if (*got < room)
        fds[*got] = fd;
      else
        close(fd);
    }
  }
}

ssize_t lmp__recv_fds(int sock, void *data, size_t len, int *fds, size_t *nfds, int flags)
{
  fd_cmsg_t cb;
  struct iovec iov = {data, len};
  struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
  size_t room = *nfds, got, i;
  ssize_t n;

  *nfds = 0;
  mh.msg_control = cb.buf;
  mh.msg_controllen = sizeof cb.buf;
  while ((n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | flags)) < 0 && errno == EINTR) {
  }
  if (n < 0)
    return -errno;
  take_fds(&mh, fds, room, &got);
  if (got > room || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
    for (i = 0; i < got && i < room; i++)
      close(fds[i]);
    return -EMSGSIZE;
  }
  *nfds = got;
  return n;
}

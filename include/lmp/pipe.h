/*
 * lmp/pipe.h -- message pipes over Unix stream socketpairs.
 *
 * Each message is framed by an 8-byte length, so boundaries survive any
 * size and a writer killed mid-message shows up as end of stream (the reader
 * gets -EPIPE, never a torn message).  Sockets let poll(2) and fileno work and
 * descriptors travel (see lmp_fd_stash).  Sends use MSG_NOSIGNAL: a closed
 * peer is -EPIPE, not SIGPIPE.
 */
#ifndef LMP_PIPE_H
#define LMP_PIPE_H

#include <stddef.h>
#include <stdint.h>

#include "lmp/common.h"

#define LMP_PIPE_MAX_MESSAGE ((uint64_t)1 << 40)

/* fds[0], fds[1]; both close-on-exec.  With duplex 0, fds[0] only receives
 * and fds[1] only sends. */
int lmp_pipe_pair(int duplex, int fds[2]);
/* 0, -EPIPE (peer closed), -EMSGSIZE */
int lmp_pipe_send(int fd, const void *data, size_t len);
/* 0, -ETIMEDOUT (nothing by the deadline), -EPIPE (end of stream), -EBADMSG */
int lmp_pipe_recv(int fd, lmp_buf_t *buf, int64_t deadline);
/* 1 readable (a message or end of stream), 0 not by the deadline, <0 error */
int lmp_pipe_poll(int fd, int64_t deadline);

#endif

/*
 * lmp/pipe.h -- message pipes over Unix seqpacket socketpairs.
 *
 * Each message travels as one record, or as a run of records of at most
 * LMP_PIPE_RECORD bytes when it is larger; the kernel delivers a record
 * whole or not at all, so a writer killed mid-message leaves whole records
 * behind and a reader never returns a torn message, whoever else still
 * holds a writing end.  A reader keeps the records of messages still
 * arriving in an lmp_pipe_reader_t, one per writer.  Sockets let poll(2)
 * and fileno work and descriptors travel (see lmp_fd_stash).  Sends use
 * MSG_NOSIGNAL: a closed peer is -EPIPE, not SIGPIPE.
 */
#ifndef LMP_PIPE_H
#define LMP_PIPE_H

#include <stddef.h>
#include <stdint.h>

#include "lmp/common.h"

#define LMP_PIPE_MAX_MESSAGE ((uint64_t)1 << 40)
/* The largest record a reader accepts, header included. */
#define LMP_PIPE_RECORD (256u << 10)

/* What one reading end has received: the last message (msg), and the
 * messages whose records are still arriving.  Zero-initialise it; free it
 * with lmp_pipe_reader_free.  One reader per end per process. */
typedef struct lmp_pipe_part lmp_pipe_part_t;
typedef struct lmp_pipe_reader {
  lmp_buf_t msg;          /* the message lmp_pipe_recv returned */
  lmp_pipe_part_t *parts; /* messages in progress, one per writer */
  int ready;              /* 1: msg waits to be returned; < 0: an error does */
} lmp_pipe_reader_t;

/* fds[0], fds[1]; both close-on-exec.  With duplex 0, fds[0] only receives
 * and fds[1] only sends. */
LMP_API int lmp_pipe_pair(int duplex, int fds[2]);
/* 0, -EPIPE (peer closed), -EMSGSIZE */
LMP_API int lmp_pipe_send(int fd, const void *data, size_t len);
/* 0 with the message in r->msg, -ETIMEDOUT (no whole message by the
 * deadline), -EPIPE (end of stream), -EBADMSG (a record that is not one of
 * ours; the next call goes on), -ENOMEM (a message too large to keep; it
 * is skipped) */
LMP_API int lmp_pipe_recv(lmp_pipe_reader_t *r, int fd, int64_t deadline);
/* 1 when recv would not wait (a whole message, end of stream or an error is
 * there), 0 not by the deadline, <0 error of the descriptor */
LMP_API int lmp_pipe_poll(lmp_pipe_reader_t *r, int fd, int64_t deadline);
LMP_API void lmp_pipe_reader_free(lmp_pipe_reader_t *r);

#endif

/*
 * lmp/queue.h -- a multi-producer, multi-consumer message queue in shared
 * memory.
 *
 * A queue is one segment: a header (robust mutex, two condition variables,
 * counters) followed by a byte ring of length-prefixed records.  A record too
 * large for the ring, or one that finds an unbounded queue's ring full, is
 * written once into a segment of its own and the ring carries that segment's
 * name.  A record becomes visible only once it is completely written, so a
 * producer killed half-way leaves nothing torn behind.
 *
 * `maxsize` bounds the number of messages (0: unbounded).  Closing a queue
 * makes every later put fail with -EPIPE; gets drain what is left and then
 * fail with -EPIPE.  The queue also counts unfinished tasks for
 * JoinableQueue: each put adds one, lmp_queue_task_done removes one.
 */
#ifndef LMP_QUEUE_H
#define LMP_QUEUE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "lmp/common.h"
#include "lmp/segment.h"

#define LMP_QUEUE_DEFAULT_CAPACITY (4u << 20) /* ring bytes */

typedef struct lmp_queue lmp_queue_t;

/* capacity 0 picks LMP_QUEUE_DEFAULT_CAPACITY. */
LMP_API int lmp_queue_create(size_t maxsize, size_t capacity, lmp_queue_t **out);
/* Open a queue on a segment the caller attached; takes its own reference. */
LMP_API int lmp_queue_open(lmp_seg_t *seg, lmp_queue_t **out);
LMP_API void lmp_queue_free(lmp_queue_t *q); /* the local handle; the queue lives on */
/* lmp_queue_free that, in the last holder of the queue, first calls fn on
 * each message nobody read, so the caller can give back what the messages
 * hold (the pins of handles inside them).  Spilled messages' segments go in
 * either case. */
typedef void (*lmp_queue_unread_fn)(void *ctx, const void *msg, size_t len);
LMP_API void lmp_queue_free_unread(lmp_queue_t *q, lmp_queue_unread_fn fn, void *ctx);
LMP_API lmp_seg_t *lmp_queue_seg(lmp_queue_t *q);

/* 0, -ETIMEDOUT (full until the deadline), -EPIPE (closed), -ENOMEM */
LMP_API int lmp_queue_put(lmp_queue_t *q, const void *data, size_t len, int64_t deadline);
/* The same with the payload gathered from iov[0..iovcnt). */
LMP_API int lmp_queue_putv(lmp_queue_t *q, const struct iovec *iov, int iovcnt, int64_t deadline);
/* Fills buf (len = payload size).  0, -ETIMEDOUT, -EPIPE (closed and drained) */
LMP_API int lmp_queue_get(lmp_queue_t *q, lmp_buf_t *buf, int64_t deadline);

/* Called with the queue locked once a get is certain to take its record,
 * with the record's sequence number: how many records were taken before it,
 * modulo 2^30.  It must be quick and must not call the queue. */
typedef void (*lmp_queue_hook_fn)(void *arg, uint32_t seq);
/* lmp_queue_get that runs `taken` (if not NULL) as it takes the record, so
 * a consumer can publish what it took atomically with taking it. */
LMP_API int lmp_queue_get_hook(lmp_queue_t *q, lmp_buf_t *buf, int64_t deadline,
                               lmp_queue_hook_fn taken, void *arg);

LMP_API size_t lmp_queue_qsize(lmp_queue_t *q);
LMP_API size_t lmp_queue_maxsize(lmp_queue_t *q);
LMP_API void lmp_queue_close(lmp_queue_t *q);
LMP_API int lmp_queue_closed(lmp_queue_t *q);

LMP_API int lmp_queue_task_done(lmp_queue_t *q); /* 0, -EINVAL if called more times than put */
LMP_API int lmp_queue_join(lmp_queue_t *q,
                           int64_t deadline); /* 0 when no task is unfinished, -ETIMEDOUT */

#endif

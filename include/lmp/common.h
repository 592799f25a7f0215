/*
 * lmp/common.h -- conventions shared by every part of the lmp runtime.
 *
 * Runtime functions return 0 (or a non-negative count) on success and a
 * negative errno on failure, as libuv does.  The codes that mean an expected
 * outcome rather than a fault are:
 *
 *   -ETIMEDOUT   the deadline passed          (Lua: nil, "timeout")
 *   -EAGAIN      a non-blocking call would block (Lua: nil, "empty"/"full")
 *   -EPIPE       the object was closed         (Lua: nil, "closed")
 *   -EOWNERDEAD  a lock was taken over from a dead holder; the caller holds it
 *   -EINTR       the wait was interrupted (see lmp_set_interrupt_check)
 *
 * Deadlines are absolute CLOCK_MONOTONIC nanoseconds.  LMP_FOREVER never
 * expires; lmp_deadline(0) has already expired, so a call given it never
 * blocks.  Keeping absolute deadlines (rather than relative timeouts) lets a
 * call that is interrupted or woken spuriously resume with the right budget.
 */
#ifndef LMP_COMMON_H
#define LMP_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define LMP_VERSION_MAJOR 0
#define LMP_VERSION_MINOR 1
#define LMP_VERSION_PATCH 0
#define LMP_VERSION_STRING "0.1.0"

#define LMP_FOREVER INT64_MAX

/* What lmp's libraries export.  They are built with -fvisibility=hidden, so
 * only the functions the headers under lmp/ declare with LMP_API (and
 * luaopen_lmp) are visible to programs; the runtime's own helpers are not. */
#ifndef LMP_API
#define LMP_API __attribute__((visibility("default")))
#endif

/* Monotonic time in nanoseconds. */
LMP_API int64_t lmp_now_ns(void);

/* Deadline for a timeout in seconds; a negative timeout (or NaN) means forever. */
LMP_API int64_t lmp_deadline(double timeout_s);

/* Interruption.  A blocking wait that a signal cuts short asks `pending`
 * whether the program wants the wait abandoned (a ^C, say): if it returns
 * non-zero the wait returns -EINTR, otherwise it resumes with what is left
 * of its deadline.  NULL (the default) resumes always.  Waits that return
 * -EINTR: futex-based ones (queue put/get/join, Semaphore, Event,
 * Condition), descriptor waits (pipe recv and poll) and lmp_pool_wait.
 * Mutexes (Lock, RLock) are not interruptible. */
LMP_API void lmp_set_interrupt_check(int (*pending)(void));

/* Message for a runtime return code (a negative errno). */
LMP_API const char *lmp_strerror(int code);

/* A growable byte buffer owned by its user; payloads are read into it so a
 * steady stream of messages costs no allocation. */
typedef struct lmp_buf {
  char *data;
  size_t len;
  size_t cap;
} lmp_buf_t;

LMP_API int lmp_buf_reserve(lmp_buf_t *b, size_t cap); /* 0 or -ENOMEM */
LMP_API void lmp_buf_free(lmp_buf_t *b);

#endif

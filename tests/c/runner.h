/*
 * runner.h -- the C test framework of lmp's runtime.
 *
 * Every test runs in a forked child of its own, in its own process group,
 * under a timeout, as libuv's runner does: a crash, a hang or a leaked
 * process fails one test, never the run.  A test file is a list of TEST()s
 * and one table:
 *
 *   #include "runner.h"
 *
 *   TEST(seg_create) { CHECK(x == 1); CHECK_EQ(lmp_seg_local(s), 1); }
 *
 *   TEST_LIST = {
 *     TEST_ENTRY(seg_create),
 *     TEST_ENTRY_T(slow_one, 30),   (timeout in seconds; default 10)
 *     TEST_END
 *   };
 *
 * A failing CHECK prints file:line and the expression to stderr and ends the
 * process with _exit(1), so in a child forked by a test it fails that child;
 * the test checks the child's exit code (lmp_test_wait).  The runner prints
 * TAP and a last line "# P passed, F failed"; argv[1], if given, runs only
 * the tests whose name contains it.  LMP_TEST_TIMEOUT_MULT=N stretches
 * every timeout (for valgrind or sanitizer runs); LMP_TEST_SKIP lists tests
 * (comma-separated names) to report as skipped.
 */
#ifndef LMP_TEST_RUNNER_H
#define LMP_TEST_RUNNER_H

#include <string.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct lmp_test {
  const char *name;
  void (*fn)(void);
  int timeout_s; /* 0: the default */
  const char *file;
} lmp_test_t;

/* The table a test file defines with TEST_LIST. */
extern const lmp_test_t lmp_tests[];

#define TEST(name) static void test_##name(void)
#define TEST_ENTRY(name)                                                                           \
  {                                                                                                \
#name, test_##name, 0, __FILE__                                                                \
  }
#define TEST_ENTRY_T(name, secs)                                                                   \
  {                                                                                                \
#name, test_##name, (secs), __FILE__                                                           \
  }
#define TEST_END                                                                                   \
  {                                                                                                \
    0, 0, 0, 0                                                                                     \
  }
#define TEST_LIST const lmp_test_t lmp_tests[]

void lmp_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));

#define CHECK(e)                                                                                   \
  do {                                                                                             \
    if (!(e))                                                                                      \
      lmp_test_fail(__FILE__, __LINE__, "CHECK(%s)", #e);                                          \
  } while (0)

/* Integers (and enums, sizes, pids): both sides print on failure. */
#define CHECK_EQ(a, b)                                                                             \
  do {                                                                                             \
    long long a_ = (long long)(a), b_ = (long long)(b);                                            \
    if (a_ != b_)                                                                                  \
      lmp_test_fail(__FILE__, __LINE__, "CHECK_EQ(%s, %s): %lld != %lld", #a, #b, a_, b_);         \
  } while (0)

#define CHECK_STREQ(a, b)                                                                          \
  do {                                                                                             \
    const char *a_ = (a), *b_ = (b);                                                               \
    if (a_ == 0 || b_ == 0 || strcmp(a_, b_) != 0)                                                 \
      lmp_test_fail(__FILE__, __LINE__, "CHECK_STREQ(%s, %s): \"%s\" != \"%s\"", #a, #b,           \
                    a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                       \
  } while (0)

/* === helpers for tests === */

#define LMP_TEST_TIMEDOUT (-1000)

/* Wait for a child: its exit code, -N if killed by signal N, or
 * LMP_TEST_TIMEDOUT (after killing it) if it outlives timeout_ms. */
int lmp_test_wait(pid_t pid, int timeout_ms);
/* For a process that is not our child (an lmp watchdog is nobody's): 1 once
 * it has exited, 0 if it still runs after timeout_ms. */
int lmp_test_gone(pid_t pid, int timeout_ms);
/* Segments in /dev/shm whose name is `prefix` (with or without its leading
 * '/') followed by '.', holdings tables (segment.c) not counted. */
int lmp_test_shm_count(const char *prefix);
/* Descriptors open in this process. */
int lmp_test_fd_count(void);
/* 1 while pid exists and is not a zombie. */
int lmp_test_alive(pid_t pid);
void lmp_test_sleep_ms(int ms);
/* fork(2), checked. */
pid_t lmp_test_fork(void);
/* A child forked through lmp (lmp_proc_fork), so its segment references
 * are right: the child gets NULL and ends with lmp_proc_exit. */
struct lmp_proc *lmp_test_start(void);
/* Wait for it (checked; 60 s at most, beyond any test's own timeout) and
 * free it: its exit code, -N if killed by signal N. */
int lmp_test_finish(struct lmp_proc *p);
/* Segments of this process's family (lmp_test_shm_count of its prefix). */
int lmp_test_segments(void);
/* Zero-filled shared memory that forked children see (MAP_SHARED), checked. */
void *lmp_test_shared(size_t size);
/* Counters in shared memory, atomically; await waits (5 s at most, checked)
 * until *p >= n. */
void lmp_test_add(volatile int *p, int n);
int lmp_test_get(volatile int *p);
void lmp_test_await(volatile int *p, int n);
/* The deadline n milliseconds from now (lmp_now_ns clock). */
int64_t lmp_test_ms(int n);

#endif

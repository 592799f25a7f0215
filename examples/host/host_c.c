/*
 * host_c.c -- lmp's runtime from C alone, no Lua: worker processes square
 * numbers taken from one shared queue and put the results on another.
 *
 * Queues are rings in shared memory (lmp/queue.h) and carry opaque bytes;
 * here each message is one int64_t, and 0 tells a worker to stop.  Children
 * forked with lmp_proc_fork inherit the queues, die if this process dies,
 * and are never left as zombies; the shared memory is removed when the
 * program ends, even if it is killed.
 *
 *   make examples && build/examples/host_c
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <lmp/common.h>
#include <lmp/proc.h>
#include <lmp/queue.h>

#define WORKERS 2
#define N 100

static int check(int rc, const char *what)
{
  if (rc < 0)
    fprintf(stderr, "host_c: %s: %s\n", what, lmp_strerror(rc));
  return rc;
}

/* A worker: square until the 0 that means stop. */
static int worker(lmp_queue_t *tasks, lmp_queue_t *results)
{
  lmp_buf_t buf = {0};
  int code = 0;
  for (;;) {
    int64_t x;
    if (check(lmp_queue_get(tasks, &buf, LMP_FOREVER), "get") < 0 || buf.len != sizeof x) {
      code = 1;
      break;
    }
    memcpy(&x, buf.data, sizeof x);
    if (x == 0)
      break;
    x *= x;
    if (check(lmp_queue_put(results, &x, sizeof x, LMP_FOREVER), "put") < 0) {
      code = 1;
      break;
    }
  }
  lmp_buf_free(&buf);
  return code;
}

int main(void)
{
  lmp_queue_t *tasks, *results;
  lmp_proc_t *procs[WORKERS];
  if (check(lmp_queue_create(0, 0, &tasks), "queue") < 0 ||
      check(lmp_queue_create(0, 0, &results), "queue") < 0)
    return 1;
  for (int i = 0; i < WORKERS; i++) {
    int rc = check(lmp_proc_fork(0, &procs[i]), "fork");
    if (rc < 0)
      return 1;
    if (rc == 0) /* the child: never returns */
      lmp_proc_exit(worker(tasks, results));
  }
  for (int64_t x = 1; x <= N; x++)
    lmp_queue_put(tasks, &x, sizeof x, LMP_FOREVER);
  for (int i = 0; i < WORKERS; i++) {
    int64_t stop = 0;
    lmp_queue_put(tasks, &stop, sizeof stop, LMP_FOREVER);
  }
  lmp_buf_t buf = {0};
  long long sum = 0;
  for (int i = 0; i < N; i++) {
    int64_t sq;
    if (check(lmp_queue_get(results, &buf, lmp_deadline(10)), "result") < 0)
      return 1;
    memcpy(&sq, buf.data, sizeof sq);
    sum += sq;
  }
  int failed = 0;
  for (int i = 0; i < WORKERS; i++) {
    int code = -1;
    lmp_proc_wait(procs[i], LMP_FOREVER);
    lmp_proc_exitcode(procs[i], &code);
    failed |= code != 0;
    lmp_proc_free(procs[i]);
  }
  printf("%d workers: sum of squares 1..%d = %lld\n", WORKERS, N, sum);
  lmp_buf_free(&buf);
  lmp_queue_free(tasks);
  lmp_queue_free(results);
  return failed;
}

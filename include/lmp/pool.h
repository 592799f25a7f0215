/*
 * lmp/pool.h -- a pool of worker processes over byte payloads.
 *
 * The parent submits tasks (a caller-defined tag and payload bytes) and
 * collects events: a task's reply, or its failure because the worker running
 * it died (LOST) or ran past the task timeout and was killed (TIMEOUT), or the
 * pool's breakage when a worker could not start (BROKEN).  Workers are forked
 * by the pool (or started by a caller-supplied hook, for programs that must
 * not fork their own image) and run a caller-supplied body, which loops on
 * lmp_pool_worker_next / lmp_pool_worker_reply; the pool replaces workers that
 * die or retire, so a submitted task always ends in exactly one event.
 *
 * Tasks go to a shared ring, up to high_water of them (at most 4096); the
 * rest wait in a local backlog and go out as the ring empties, during calls
 * on the pool.  By default the ring holds 4096 tasks, or about 16 MiB of
 * payloads by their average size (but at least 16 tasks per worker).  A task
 * no worker has taken can be cancelled, in either place.
 * Workers pull from the ring; each publishes, in a slot of shared memory,
 * which task it runs and since when (lmp_pool_slot reads them).
 *
 * Every call on the parent side belongs to the thread that created the pool;
 * none blocks except lmp_pool_wait (until its deadline) and
 * lmp_pool_terminate (until the killed workers are reaped).
 */
#ifndef LMP_POOL_H
#define LMP_POOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "lmp/common.h"
#include "lmp/proc.h"
#include "lmp/segment.h"

typedef struct lmp_pool lmp_pool_t;
typedef struct lmp_pool_worker lmp_pool_worker_t;

/* The body of a worker process: take tasks and reply until next says stop,
 * then return the exit code.  It runs in the forked child, never returns to
 * the caller of create/wait that forked it (the child ends in lmp_proc_exit). */
typedef int (*lmp_pool_body_fn)(lmp_pool_worker_t *w, void *ctx);

/* A ticket names a worker's place in a pool (its shared segments, its index,
 * and the parent's wake-up descriptor, deposited with the watchdog): a
 * process that did not fork from the pool's owner becomes that worker with
 * lmp_pool_worker_attach.  A short string of printable characters. */
#define LMP_POOL_TICKET_MAX (3 * LMP_SEG_NAME_MAX + 48)

/* Start worker `index` some other way than by forking the caller: start a
 * process that calls lmp_pool_worker_attach(ticket) and runs the body, and
 * set *out to it (as lmp_proc_spawn or lmp_proc_adopt do).  0 or -errno. */
typedef int (*lmp_pool_start_fn)(void *ctx, const char *ticket, int index, lmp_proc_t **out);

typedef struct lmp_pool_config {
  int processes;             /* workers, >= 1 */
  uint32_t maxtasksperchild; /* a worker retires after this many tasks; 0: never */
  int64_t task_timeout_ns;   /* a task (or item, see progress) running longer is killed; 0: none */
  uint32_t high_water;       /* tasks kept in the shared ring; 0: the default above */
  uint64_t max_memory;       /* a worker whose RSS is past this after a task retires; 0: never */
  lmp_pool_body_fn body;     /* run by forked workers */
  lmp_pool_start_fn start;   /* NULL: fork the workers (they run body) */
  void *ctx;                 /* for body and start */
  uint64_t owner;            /* the workers' owner tag (lmp_proc_set_owner) */
} lmp_pool_config_t;

/* Starts the workers (forks them, or calls cfg->start).  0 or -errno. */
LMP_API int lmp_pool_create(const lmp_pool_config_t *cfg, lmp_pool_t **out);

/* === the parent === */

/* Queue a task; the payload is gathered from iov[0..iovcnt) (at most 7 parts)
 * and copied.  *id (> 0, increasing) names it in events.  -EPIPE once the pool
 * is closed, terminated or broken. */
LMP_API int lmp_pool_submit(lmp_pool_t *p, uint32_t tag, const struct iovec *iov, int iovcnt,
                            uint64_t *id);

/* Remove a task no worker has taken yet: 1 if removed (it will have no
 * event; a worker that meets it in the ring skips it), 0 if a worker has it,
 * or it finished, or is unknown. */
LMP_API int lmp_pool_cancel(lmp_pool_t *p, uint64_t id);

/* Stop task `id` whatever its state: cancelled if no worker has taken it,
 * else its worker is killed (and replaced), the task then failing as LOST
 * unless its reply came first.  1 if cancelled or killed, 0 if the task has
 * finished or is unknown. */
LMP_API int lmp_pool_stop(lmp_pool_t *p, uint64_t id);

enum {
  LMP_POOL_TASK_UNKNOWN = 0, /* finished (event out or coming), cancelled, or never was */
  LMP_POOL_TASK_QUEUED,      /* in the local backlog: cancellable */
  LMP_POOL_TASK_SENT,        /* in the shared ring */
  LMP_POOL_TASK_RUNNING,     /* taken by a worker */
};
LMP_API int lmp_pool_task_state(lmp_pool_t *p, uint64_t id);

enum {
  LMP_POOL_DONE = 1, /* the worker replied */
  LMP_POOL_LOST,     /* the worker died while running the task */
  LMP_POOL_TIMEOUT,  /* the task ran past task_timeout; its worker was killed */
  LMP_POOL_BROKEN,   /* a worker failed to start: nothing more will run */
};

typedef struct lmp_pool_event {
  int type;
  uint64_t id;      /* the task; 0 for BROKEN */
  uint32_t status;  /* DONE: as the worker replied */
  uint32_t item;    /* LOST, TIMEOUT: the item the worker last reported */
  pid_t pid;        /* the worker */
  int exitcode;     /* LOST, and BROKEN without payload: 0.., or -N when killed by signal N */
  const void *data; /* DONE, BROKEN: the payload, valid until the next call on the pool */
  size_t len;
} lmp_pool_event_t;

/*
 * Wait for the next event until the deadline (0: do not wait), or -EINTR
 * when interrupted (lmp_set_interrupt_check).  Meanwhile it
 * hands backlogged tasks to the workers, notices deaths (and replaces the
 * dead), kills tasks past their timeout and resets the descriptor of
 * lmp_pool_fd once nothing is waiting.  0 with *ev set; -ETIMEDOUT; -EPIPE
 * when nothing more can come: terminated, broken (after the BROKEN event), or
 * closed with every worker gone.  After BROKEN the caller fails whatever it
 * still waits for: those tasks will have no event.
 */
LMP_API int lmp_pool_wait(lmp_pool_t *p, lmp_pool_event_t *ev, int64_t deadline);
/*
 * The next event if one is ready now (a reply in the ring, or one the pool
 * already holds), without waiting and without a system call: 1 with *ev set,
 * 0 if none is ready, or a negative errno.  For draining what has arrived
 * after an lmp_pool_wait; it does not look for deaths, timeouts or the end
 * (lmp_pool_wait does), nor reset the descriptor of lmp_pool_fd.
 */
LMP_API int lmp_pool_take(lmp_pool_t *p, lmp_pool_event_t *ev);

/* No more submissions; workers exit once every queued task is taken.
 * lmp_pool_wait returns -EPIPE when they all have. */
LMP_API void lmp_pool_close(lmp_pool_t *p);
/* SIGKILL every worker and reap it; queued tasks are dropped (no events). */
LMP_API void lmp_pool_terminate(lmp_pool_t *p);
/* Release everything without blocking: workers still running are sent
 * SIGKILL and reaped later (lmp_proc_reap).  In a process other than the
 * one that created the pool (a forked copy) it only frees memory. */
LMP_API void lmp_pool_free(lmp_pool_t *p);

/* A descriptor that turns readable when an event may be waiting (a reply, a
 * death, a timeout due), for event loops; lmp_pool_wait(p, ev, 0) consumes it. */
LMP_API int lmp_pool_fd(const lmp_pool_t *p);
LMP_API int lmp_pool_processes(const lmp_pool_t *p);
/* 1 while the pool takes submissions. */
LMP_API int lmp_pool_running(const lmp_pool_t *p);

enum {
  LMP_POOL_STARTING = 1, /* forked, initializing */
  LMP_POOL_IDLE,         /* waiting for a task */
  LMP_POOL_BUSY,         /* running one */
  LMP_POOL_EXITING,      /* retiring (maxtasksperchild, close) */
};

typedef struct lmp_pool_slot_info {
  pid_t pid;          /* 0 while no worker holds the slot */
  int state;          /* LMP_POOL_STARTING..EXITING, 0 for none */
  uint64_t task;      /* BUSY: the id of the task */
  uint32_t item;      /* BUSY: the item it last reported (lmp_pool_worker_progress) */
  int64_t started_ns; /* BUSY: when that task (or item) started, monotonic */
  uint64_t done;      /* tasks this worker replied to ... */
  uint64_t failed;    /* ... with a failed status (see lmp_pool_worker_reply) */
} lmp_pool_slot_info_t;

#define LMP_POOL_STATUS_FAILED(status) (((status)&0xffffu) != 0)

/* Worker i's slot, read from shared memory.  0, or -EINVAL for a bad i. */
LMP_API int lmp_pool_slot(lmp_pool_t *p, int i, lmp_pool_slot_info_t *out);

typedef struct lmp_pool_stats {
  uint64_t queued;   /* in the backlog and the ring */
  uint64_t running;  /* busy workers */
  uint64_t done;     /* replies the workers sent (DONE events, read or not) */
  uint64_t failed;   /* LOST and TIMEOUT events */
  uint64_t restarts; /* workers forked to replace others */
  uint64_t errors;   /* replies with a failed status (counted in done too) */
  uint64_t recycled; /* workers retired for max_memory (counted in restarts when replaced) */
  double rate;       /* events per second over the last few seconds */
} lmp_pool_stats_t;

/* The counters.  Called by the owner, it first reaps dead workers and
 * starts their replacements, as a wait does. */
LMP_API void lmp_pool_stats(lmp_pool_t *p, lmp_pool_stats_t *out);

/*
 * === observers ===
 *
 * A pool's header segment (its slots and the counters the parent publishes)
 * is listed in a registry of its runtime's root, the segment
 * "<prefix>.pools", so another process of the same user (lmp top) can find
 * and read it without taking part: the owner's side never waits for a
 * reader.  Segments not owned by this user, or readable by others, are
 * refused (-EACCES).
 */

typedef struct lmp_pool_entry {
  pid_t root;                  /* the program: its runtime's root process */
  pid_t owner;                 /* the process that created the pool */
  char name[LMP_SEG_NAME_MAX]; /* the pool's header segment, for lmp_pool_peek */
} lmp_pool_entry_t;

/* The live pools of this user's lmp programs: those of root or owner `pid`,
 * or all of them with pid 0.  Up to max into out; returns how many there
 * are (possibly more than max), or -errno. */
LMP_API int lmp_pool_list(pid_t pid, lmp_pool_entry_t *out, int max);

/* The roots of this user's running lmp programs (those with a segment in
 * /dev/shm).  Up to max into out; returns how many there are, or -errno. */
LMP_API int lmp_pool_programs(pid_t *out, int max);

/* Read a pool of any process of this user by its header segment's name:
 * the same counters as lmp_pool_stats gives its owner, and
 * up to max slots (slot task ids are those of lmp_pool_submit).  The number
 * of slots, or -errno (-EACCES: not this user's; -EINVAL: not a pool). */
LMP_API int lmp_pool_peek(const char *name, lmp_pool_stats_t *st, lmp_pool_slot_info_t *slots,
                          int max);

/* === a worker === */

typedef struct lmp_pool_task {
  uint32_t tag;
  const void *data; /* valid until the next call on the worker */
  size_t len;
} lmp_pool_task_t;

/* Take the next task (blocks).  0; -EPIPE when the worker should return from
 * its body (the pool is closing, or maxtasksperchild is reached). */
LMP_API int lmp_pool_worker_next(lmp_pool_worker_t *w, lmp_pool_task_t *t);
/* Reply to the task taken last: status (0 in its low 16 bits counts as
 * success in the counters; the high bits are the caller's flags) and payload
 * gathered from iov[0..iovcnt) (at most 7 parts). */
LMP_API int lmp_pool_worker_reply(lmp_pool_worker_t *w, uint32_t status, const struct iovec *iov,
                                  int iovcnt);
/* Report that item `item` of the current task starts now: task_timeout then
 * applies to each item rather than to the whole task. */
LMP_API void lmp_pool_worker_progress(lmp_pool_worker_t *w, uint32_t item);
/* Report that the worker cannot start (before the first next): the pool
 * breaks and lmp_pool_wait gives the payload in a BROKEN event.  The body
 * should then return. */
LMP_API int lmp_pool_worker_fail_init(lmp_pool_worker_t *w, const void *data, size_t len);
LMP_API int lmp_pool_worker_index(const lmp_pool_worker_t *w);

/* In a process started by a start hook: become the worker a ticket names.
 * 0 with *out set, -EINVAL for a malformed ticket or segment, -ENOENT if
 * the pool is gone.  The caller runs its body on *out, then releases it. */
LMP_API int lmp_pool_worker_attach(const char *ticket, lmp_pool_worker_t **out);
LMP_API void lmp_pool_worker_release(lmp_pool_worker_t *w);
/* 1 when the pool has a task_timeout (progress reports then matter). */
LMP_API int lmp_pool_worker_timed(const lmp_pool_worker_t *w);

#endif

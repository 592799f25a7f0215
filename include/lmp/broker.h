/*
 * lmp/broker.h -- the transport under lmp.Pool{broker = url}: a durable task
 * queue shared by processes on many machines.
 *
 * The runtime moves opaque signed messages; what they mean (functions,
 * arguments, results) is the bindings' business.  Every engine (Redis
 * Streams today; the operations were chosen so NATS JetStream could follow)
 * provides the same few operations, selected by the URL's scheme:
 *
 *   producer   put a task (buffered; flush sends the batch), wait for the
 *              results addressed to this caller
 *   consumer   take tasks (at-least-once: a taken task stays leased to this
 *              consumer until it is completed, released or its lease lapses),
 *              complete them (result stored first-write-wins, task removed, in
 *              one atomic step), release them for redelivery, bury them in
 *              the dead-letter queue, renew leases, reclaim the tasks of
 *              consumers whose leases lapsed
 *   registry   heartbeats of live workers, for `lmp worker --status`, and
 *              every queue's counts and workers, for `lmp top --broker`
 *
 * Messages are signed with HMAC-SHA256 (OpenSSL) over version, kind, task
 * id, timestamp, expiry, queue and payload; lmp_broker_verify checks the tag
 * in constant time before anything else looks at the bytes.
 *
 * Task ids have the form "<caller>.<seq>" (seq a decimal counter of that
 * caller's tasks): the broker records, per caller, which seqs have been
 * handed to a worker, so an entry added again to the stream (a replay)
 * is dropped at take instead of run twice; release() lifts the record for
 * the new delivery it makes.  A task id of another form is delivered
 * without that check.
 *
 * Functions return 0 (or a count) or a negative errno: -ECONNREFUSED and
 * -ETIMEDOUT when the engine cannot be reached (lmp_broker_errmsg says more),
 * -EPROTO for an unexpected reply, -EPROTONOSUPPORT for a server lmp cannot
 * use (a Redis Cluster node), -EINVAL for a bad URL.  A broker object is
 * used by one thread at a time; the lease keeper has its own connection.
 */
#ifndef LMP_BROKER_H
#define LMP_BROKER_H

#include <stddef.h>
#include <stdint.h>

#include "lmp/common.h"

typedef struct lmp_broker lmp_broker_t;

typedef struct lmp_broker_config {
  const char *url;         /* redis://[user:pass@]host[:port][/db], or
                              redis+sentinel://[user:pass@]s1[:26379],s2.../master[/db] */
  const char *queue;       /* queue name; NULL: "default" */
  const char *consumer;    /* this client's name; NULL: host:pid:random */
  int64_t connect_timeout; /* ms to reach the engine at open; <= 0: 5000 */
  int64_t result_ttl;      /* ms a stored result lives; <= 0: 1 hour */
} lmp_broker_config_t;

/* One delivered message.  The batch owns the bytes. */
typedef struct lmp_broker_msg {
  char id[64]; /* the engine's id of this delivery: the stream entry id, with
                  "<p>:" in front for a task of priority p > 0 */
  char *data;  /* the message as it was put */
  size_t len;
  uint32_t deliveries; /* deliveries so far, this one included */
  char *history;       /* earlier failed deliveries, "consumer: reason\n"... */
} lmp_broker_msg_t;

typedef struct lmp_broker_batch {
  lmp_broker_msg_t *msg;
  int n, cap;
} lmp_broker_batch_t;

/* clear frees the messages and keeps the array */
LMP_API void lmp_broker_batch_clear(lmp_broker_batch_t *b);
LMP_API void lmp_broker_batch_free(lmp_broker_batch_t *b);

/* A finished task: its delivery, its id, the caller to tell and the signed
 * result. */
typedef struct lmp_broker_done {
  const char *msg_id;
  const char *task_id;
  const char *caller;
  const char *data;
  size_t len;
  int64_t ttl_ms; /* how long the result waits to be collected; <= 0: the
                     broker's result_ttl */
} lmp_broker_done_t;

/* Open a connection; on failure *out is NULL and, when errmsg is given, a
 * description is written there (at most errlen bytes). */
LMP_API int lmp_broker_open(const lmp_broker_config_t *cfg, lmp_broker_t **out, char *errmsg,
                            size_t errlen);
LMP_API void lmp_broker_close(lmp_broker_t *b);
/* The last failure, as text ("" if none). */
LMP_API const char *lmp_broker_errmsg(const lmp_broker_t *b);
/* How long an operation keeps reconnecting to a broker that went away
 * before it fails with -ECONNRESET or -ETIMEDOUT (default 60000 ms); a
 * loop that wants to say it is cut off sets it short. */
LMP_API void lmp_broker_set_patience(lmp_broker_t *b, int64_t ms);
/* The descriptor of the connection (readable when a reply is due), or -1. */
LMP_API int lmp_broker_fileno(const lmp_broker_t *b);
/* This client's consumer name. */
LMP_API const char *lmp_broker_consumer(const lmp_broker_t *b);
/* For event loops: a descriptor that turns readable when results for
 * `caller` may have come, the same for the life of b (-errno if none can be
 * made).  Call lmp_broker_notify_reset, then read the results, each time it
 * turns readable. */
LMP_API int lmp_broker_notify_fd(lmp_broker_t *b, const char *caller);
LMP_API int lmp_broker_notify_reset(lmp_broker_t *b);
/* Send what is buffered, then wait up to timeout_ms until `replicas`
 * replicas of the server hold everything this connection wrote (Redis
 * WAIT): the number that do (below `replicas`: not in time), or -errno
 * (-ECONNRESET when the connection was made anew since the writes, so they
 * may be lost with the server that took them). */
LMP_API int lmp_broker_replicate(lmp_broker_t *b, int replicas, int64_t timeout_ms);
/* The server connected to now, "host:port" ("" when none), written to out:
 * with redis+sentinel:// it changes when the connection follows a failover. */
LMP_API const char *lmp_broker_server(const lmp_broker_t *b, char *out, size_t n);

/* === producer === */

LMP_API int lmp_broker_put(lmp_broker_t *b, const void *msg, size_t len);
/* The same, held by the broker until due_ms (wall clock, ms since the
 * epoch) and then queued, exactly once, by whichever consumer promotes it
 * first; a due_ms already past queues it at once. */
LMP_API int lmp_broker_put_at(lmp_broker_t *b, const void *msg, size_t len, int64_t due_ms);
/* Either of them at a priority, 0..LMP_BROKER_PRIORITIES-1 (-EINVAL
 * otherwise; due_ms 0: now): a consumer takes no task of a lower priority
 * while one of a higher waits (puts without one are priority 0). */
#define LMP_BROKER_PRIORITIES 10
LMP_API int lmp_broker_put_priority(lmp_broker_t *b, const void *msg, size_t len, int64_t due_ms,
                                    int priority);
LMP_API int lmp_broker_flush(lmp_broker_t *b);
/* Results addressed to `caller`: up to max, waiting until the deadline
 * (absolute, monotonic ns) for the first.  The count, 0 at the deadline.
 * Tasks put and not yet flushed are sent in the same round trip.  A result
 * read is deleted from the broker with the next read (or settle), so one
 * that a broken connection swallowed is read again, not lost. */
LMP_API int lmp_broker_results(lmp_broker_t *b, const char *caller, int max, int64_t deadline,
                               lmp_broker_batch_t *out);
/* What the broker holds of this producer: *count, how many tasks it has
 * acknowledged from this producer (as counted by flush); epoch, the queue's
 * identity (made anew whenever its stream and group are created).  A count
 * below what was flushed, or a changed epoch, means the broker lost state
 * (flushed, or restarted without persistence): tasks are gone. */
LMP_API int lmp_broker_state(lmp_broker_t *b, int64_t *count, char *epoch, size_t epochlen);
/* Every task of `caller` with a seq below `lo` is settled: their replay
 * records shrink to one number.  With `final`, the caller is done: its
 * results and counters are deleted, and only that number is left, for
 * expires_ms (the longest a task of it could still be delivered). */
LMP_API int lmp_broker_settle(lmp_broker_t *b, const char *caller, uint64_t lo, int final,
                              int64_t expires_ms);

/* Revoke n tasks of this producer (ids "<caller>.<seq>"; task i can be
 * delivered until expires_ms[i], wall ms), in one atomic step.  before[i]
 * is 1 when no consumer had been handed task i: none ever will (every entry
 * of it, waiting or held, is dropped at take, as a replay is).  It is 0 when
 * one had: the revocation is recorded among the queue's revocations
 * (lmp_broker_revoked) until the task expires, for the consumer that holds
 * it, or is handed it again, to act on: skip it if it has not started it,
 * and with `terminate`, stop it if it has.  -EINVAL for an id of another
 * form. */
LMP_API int lmp_broker_revoke(lmp_broker_t *b, const char *const *ids, const int64_t *expires_ms,
                              int n, int terminate, int *before);

/* === consumer === */

/* Take up to max tasks, waiting up to block_ms for the first.  After a
 * reconnection the consumer's own unfinished deliveries come back first.
 * Entries whose task was already handed out (replays) are dropped. */
LMP_API int lmp_broker_take(lmp_broker_t *b, int max, int64_t block_ms, lmp_broker_batch_t *out);
/* The same in two halves, for a loop that waits on other descriptors too:
 * take_send asks (1: the answer is already there, call take_recv; 0: sent,
 * wait for lmp_broker_fileno to turn readable); take_recv reads it (the
 * count, or -EAGAIN while it has not come).  Between the two, b serves
 * nothing else; lmp_broker_take_cancel drops a take that never answers
 * (its connection is made anew; what it took comes back with the next
 * take, as after any reconnection). */
LMP_API int lmp_broker_take_send(lmp_broker_t *b, int max, int64_t block_ms);
LMP_API int lmp_broker_take_recv(lmp_broker_t *b, lmp_broker_batch_t *out);
LMP_API void lmp_broker_take_cancel(lmp_broker_t *b);
/* Cap this consumer's takes by the queue's token bucket, kept by the
 * engine and shared by every consumer that sets a cap: per_s tokens a
 * second (0: no cap), holding at most burst (< 1: one, or a tenth of a
 * second's worth when that is more).  A take finds at most the tokens
 * there are; while none are, it waits (up to its block_ms) until the next
 * is due.  The bucket fills at the rate of the consumer that takes from
 * it, so consumers of one queue should give the same cap; one that sets
 * none is not held back.  Reclaimed tasks take no token. */
LMP_API int lmp_broker_set_rate_limit(lmp_broker_t *b, double per_s, double burst);
LMP_API int lmp_broker_complete(lmp_broker_t *b, const lmp_broker_done_t *done, int n);
/* Put a delivered task back at once for any consumer; it keeps its count
 * (m->deliveries).  A NULL reason adds no line to its history. */
LMP_API int lmp_broker_release(lmp_broker_t *b, const lmp_broker_msg_t *m, const char *reason);
/* The same, held delay_ms first (as a delayed put is, count and history
 * kept): an entry this consumer refused backs off, not the consumer. */
LMP_API int lmp_broker_release_later(lmp_broker_t *b, const lmp_broker_msg_t *m, const char *reason,
                                     int64_t delay_ms);
/* Move a task to the dead-letter queue with its history; `result`, when
 * given, is published to its caller in the same step. */
LMP_API int lmp_broker_bury(lmp_broker_t *b, const lmp_broker_msg_t *m, const char *reason,
                            const lmp_broker_done_t *result);
LMP_API int lmp_broker_renew(lmp_broker_t *b, const char *const *ids, int n);
/* Queue up to max held tasks that are due (by the broker's clock), each
 * once whoever else promotes at the same time; the number queued. */
LMP_API int lmp_broker_promote(lmp_broker_t *b, int max);
/* The queue's revocations of tasks already handed out (lmp_broker_revoke):
 * when they changed since *gen (-1 at first), the live ones into out (data
 * "cancel <task id>" or "terminate <task id>"), *gen updated, and 1; 0 when
 * nothing changed.  Their count comes along with every promote, so a
 * consumer that promotes before each look pays a round trip here only when
 * a revocation was made. */
LMP_API int lmp_broker_revoked(lmp_broker_t *b, int64_t *gen, lmp_broker_batch_t *out);
/* Claim up to max tasks whose lease lapsed more than idle_ms ago. */
LMP_API int lmp_broker_reclaim(lmp_broker_t *b, int64_t idle_ms, int max, lmp_broker_batch_t *out);
/* The queue's visibility timeout: the smallest any producer asked for in
 * the last day (set by producers, read by consumers before reclaiming);
 * get gives 0 when none was set. */
LMP_API int lmp_broker_set_visibility(lmp_broker_t *b, int64_t ms);
LMP_API int lmp_broker_get_visibility(lmp_broker_t *b, int64_t *ms);
/* Tasks waiting and dead-lettered: for status. */
typedef struct lmp_broker_counts {
  int64_t waiting; /* in the queue, not yet taken by a worker */
  int64_t taken;   /* taken by a worker and not yet finished */
  int64_t delayed; /* held until their countdown or eta */
  int64_t dead;    /* in the dead-letter queue */
} lmp_broker_counts_t;
LMP_API int lmp_broker_counts(lmp_broker_t *b, lmp_broker_counts_t *c);

/* === registry === */

LMP_API int lmp_broker_heartbeat(lmp_broker_t *b, const char *info, int64_t ttl_ms);
/* Live workers: id is the consumer name, data its last info. */
LMP_API int lmp_broker_workers(lmp_broker_t *b, lmp_broker_batch_t *out);
LMP_API int lmp_broker_unregister(lmp_broker_t *b);

/* A live worker as its last heartbeat shows it. */
typedef struct lmp_broker_worker {
  char *name;      /* its consumer name, host:pid:random */
  char *info;      /* its heartbeat's text (counters, up to 8 running ids) */
  char *running;   /* the ids it holds leases on, one a line */
  int64_t seen_ms; /* wall ms of that heartbeat; 0 if the worker does not say */
} lmp_broker_worker_t;

/* A queue with its counts and its live workers. */
typedef struct lmp_broker_queue {
  char *name;
  lmp_broker_counts_t counts;
  lmp_broker_worker_t *workers;
  int nworkers;
} lmp_broker_queue_t;

typedef struct lmp_broker_queues {
  lmp_broker_queue_t *q; /* sorted by name */
  int n;
} lmp_broker_queues_t;

/* The queue `only`, or (NULL) every queue on the server, with its counts
 * and live workers, for a live view (`lmp top --broker`): the number of
 * queues, or -errno.  The engine writes nothing, and a broker opened with
 * queue "" (an observer) makes no queue of its own, so looking leaves the
 * server as it was.  Whatever *out held is not freed: give it zeroed, or
 * freed by lmp_broker_queues_free. */
LMP_API int lmp_broker_queues(lmp_broker_t *b, const char *only, lmp_broker_queues_t *out);
LMP_API void lmp_broker_queues_free(lmp_broker_queues_t *q);

/* === the lease keeper === */

/*
 * A thread with its own connection that renews the leases of the ids added
 * here every interval_ms and sends the heartbeat with the info last set, so
 * a worker busy in Lua (or stuck) never loses a task it is still running.
 */
LMP_API int lmp_broker_lease_start(lmp_broker_t *b, int64_t interval_ms, int64_t ttl_ms);
LMP_API int lmp_broker_lease_add(lmp_broker_t *b, const char *id);
LMP_API void lmp_broker_lease_del(lmp_broker_t *b, const char *id);
LMP_API int lmp_broker_lease_info(lmp_broker_t *b, const char *info);
LMP_API void lmp_broker_lease_stop(lmp_broker_t *b);

/* === signing === */

enum { LMP_BROKER_TASK = 'T', LMP_BROKER_RESULT = 'R' };
#define LMP_BROKER_MAC_LEN 32

/* Append to out: the signed message of `kind` for task `id` of `queue`,
 * stamped now (wall clock, ms), refused after `expires` (wall ms; 0:
 * never). */
LMP_API int lmp_broker_sign(lmp_buf_t *out, const void *key, size_t keylen, int kind,
                            const char *id, const char *queue, int64_t expires, const void *payload,
                            size_t len);

typedef struct lmp_broker_view {
  int kind;
  const char *id; /* not terminated */
  size_t idlen;
  int64_t stamp;     /* ms since the epoch */
  int64_t expires;   /* ms since the epoch; 0: never */
  const char *queue; /* not terminated */
  size_t qlen;
  const char *payload;
  size_t len;
} lmp_broker_view_t;

/* Check a signed message: -EBADMSG if malformed or the tag does not match
 * (compared in constant time), -ESTALE if stamped more than max_age_ms ago,
 * more than five minutes ahead, or past its expiry.  Fills *v only on
 * success. */
LMP_API int lmp_broker_verify(const void *msg, size_t len, const void *key, size_t keylen,
                              int64_t max_age_ms, lmp_broker_view_t *v);
/* The fields of a message, NOT checked (-EBADMSG if it is not laid out as
 * one): for reporting on an entry that failed its check, never for
 * trusting it. */
LMP_API int lmp_broker_peek(const void *msg, size_t len, lmp_broker_view_t *v);

#endif

/*
 * runtime/broker_engine.h -- what an engine under lmp/broker.h provides.
 *
 * broker.c owns the broker object (configuration, consumer name, error
 * text, the lease keeper) and forwards each operation to the engine chosen
 * by the URL's scheme.  An engine keeps its connection in b->conn and
 * reports failures as -errno with the detail in b->err (lmp__broker_fail).
 */
#ifndef LMP_BROKER_ENGINE_H
#define LMP_BROKER_ENGINE_H

#include <pthread.h>
#include <sys/types.h>

#include "lmp/broker.h"

typedef struct lmp__broker_engine {
  const char *schemes; /* the URL schemes it serves, separated by spaces */
  int (*open)(lmp_broker_t *b);
  void (*close)(lmp_broker_t *b);
  int (*fileno)(const lmp_broker_t *b);
  int (*put)(lmp_broker_t *b, const void *msg, size_t len, int64_t due_ms, int priority);
  int (*promote)(lmp_broker_t *b, int max);
  int (*flush)(lmp_broker_t *b);
  int (*results)(lmp_broker_t *b, const char *caller, int max, int64_t deadline,
                 lmp_broker_batch_t *out);
  int (*take)(lmp_broker_t *b, int max, int64_t block_ms, lmp_broker_batch_t *out);
  int (*take_send)(lmp_broker_t *b, int max, int64_t block_ms);
  int (*take_recv)(lmp_broker_t *b, lmp_broker_batch_t *out);
  void (*take_cancel)(lmp_broker_t *b);
  int (*state)(lmp_broker_t *b, int64_t *count, char *epoch, size_t epochlen);
  int (*settle)(lmp_broker_t *b, const char *caller, uint64_t lo, int final, int64_t expires_ms);
  int (*complete)(lmp_broker_t *b, const lmp_broker_done_t *done, int n);
  int (*release)(lmp_broker_t *b, const lmp_broker_msg_t *m, const char *reason, int64_t delay_ms);
  int (*bury)(lmp_broker_t *b, const lmp_broker_msg_t *m, const char *reason,
              const lmp_broker_done_t *r);
  int (*renew)(lmp_broker_t *b, const char *const *ids, int n);
  int (*reclaim)(lmp_broker_t *b, int64_t idle_ms, int max, lmp_broker_batch_t *out);
  int (*set_visibility)(lmp_broker_t *b, int64_t ms);
  int (*get_visibility)(lmp_broker_t *b, int64_t *ms);
  int (*counts)(lmp_broker_t *b, lmp_broker_counts_t *c);
  int (*heartbeat)(lmp_broker_t *b, const char *info, const char *running, int64_t ttl_ms);
  int (*workers)(lmp_broker_t *b, lmp_broker_batch_t *out);
  int (*queues)(lmp_broker_t *b, const char *only, lmp_broker_queues_t *out);
  int (*unregister)(lmp_broker_t *b);
  int (*notify_fd)(lmp_broker_t *b, const char *caller);
  int (*notify_reset)(lmp_broker_t *b);
  int (*replicate)(lmp_broker_t *b, int replicas, int64_t timeout_ms);
  int (*server)(const lmp_broker_t *b, char *out, size_t n);
  int (*revoke)(lmp_broker_t *b, const char *const *ids, const int64_t *expires_ms, int n,
                int terminate, int *before);
  int (*revoked)(lmp_broker_t *b, int64_t *gen, lmp_broker_batch_t *out);
} lmp__broker_engine_t;

typedef struct lmp__lease {
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int running, stop;
  lmp_broker_t *conn; /* the keeper's own connection */
  char **ids;
  int n, cap;
  char *info;
  int64_t interval_ms, ttl_ms;
  pid_t owner; /* a forked child has the memory but not the thread */
} lmp__lease_t;

struct lmp_broker {
  const lmp__broker_engine_t *e;
  void *conn;
  lmp_broker_config_t cfg; /* strings below are owned copies */
  char *url, *queue;
  char consumer[160];
  char err[256];
  int64_t patience_ms; /* reconnecting, before an operation fails */
  double rate, burst;  /* takes per ms and the bucket's size (lmp_broker_set_rate_limit); 0: none */
  lmp__lease_t *lease;
};

/* Record a failure's text (b NULL: nowhere); returns code. */
int lmp__broker_fail(lmp_broker_t *b, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Where a URL's password is (its length, 0 if none; its offset in *off),
 * and the URL with it shown as "***": messages never print a password. */
/* Where the query of a URL (rediss://...?ca=PATH) begins: its '?', or NULL. */
const char *lmp__broker_url_query(const char *url);
size_t lmp__broker_url_password(const char *url, size_t *off);
void lmp__broker_url_shown(const char *url, char *out, size_t n);
/* A new slot at the end of the batch (zeroed), or NULL. */
lmp_broker_msg_t *lmp__broker_push(lmp_broker_batch_t *out);
/* Wall-clock milliseconds since the epoch. */
int64_t lmp__wall_ms(void);

extern const lmp__broker_engine_t lmp__broker_redis;

#endif

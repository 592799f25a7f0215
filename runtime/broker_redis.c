/*
 * broker_redis.c -- the broker on Redis Streams, through hiredis 0.14.
 *
 * Keys (all under "lmp:", so an ACL user can be limited to ~lmp:*):
 *   lmp:q:<queue>         the task stream, read through consumer group "lmp"
 *   lmp:q:<queue>:dead    dead-lettered tasks with their history
 *   lmp:q:<queue>:vt      the queue's visibility timeout in ms (the smallest asked)
 *   lmp:q:<queue>:epoch   the queue's identity, made anew with its group
 *   lmp:q:<queue>:delayed tasks held until they are due (a sorted set of the
 *                         messages by due time, wall ms; see promote_redis)
 *   lmp:q:<queue>:revoked revocations of tasks already handed out, by expiry
 *                         (a sorted set), and :revoked:n their count (see
 *                         revoke_redis)
 *   lmp:c:<caller>        the results a caller has yet to collect (a stream;
 *                         see results_redis for how it is read), kept the
 *                         result_ttl its tasks carry
 *   lmp:c:<caller>:n      how many tasks the caller has put (see state_redis)
 *   lmp:c:<caller>:t:<k>  replay records: bit i is set once the task of
 *                         seq k*65536+i has been handed to a worker
 *   lmp:c:<caller>:lo     every task of a seq below this is settled
 *   lmp:w:<consumer>      a live worker's heartbeat (a hash that expires)
 *   lmp:workers:<queue>   who has sent heartbeats, scored by expiry time
 * A caller that ends (settle_redis, final) deletes its own keys but
 * lmp:c:<caller>:lo, which lives as long as one of its tasks could be
 * replayed (their expiry).
 *
 * A stream entry carries the signed message (m), the deliveries of earlier
 * entries of the same task (d) and their history (h): a task released by a
 * worker goes back as a new entry so any worker can take it at once, and
 * keeps its count.  Entries are never trimmed by length (MAXLEN would drop
 * tasks nobody has run); a completed task's entry is acknowledged and
 * deleted in the same MULTI/EXEC that publishes its result.

 * Takes run a script (TAKE_SCRIPT): it reads new entries for this consumer
 * and sets each task's replay record in the same atomic step, so an entry
 * whose task was already handed out is acknowledged and deleted there,
 * never delivered.  A consumer that waits parks XREADGROUP BLOCK COUNT 1
 * in front of the script on one connection: when an entry comes the server
 * hands it to one waiting consumer (the others sleep on) and runs that
 * consumer's script at once, which checks the waiter's entry too; so the
 * entry reaches the worker half a round trip after it was added.
 *
 * Connections.  hiredis 0.14 leaves a context unusable after any I/O error
 * and its redisReconnect forgets the timeouts, so a broken context is freed
 * and a new one made, its socket timeout set again (always longer than the
 * longest BLOCK we send, or a reply the server has already committed to,
 * such as entries moved to our pending list, would be lost on our side),
 * then AUTH, INFO, SELECT and the group.  Reconnection backs off from 50 ms to 2 s
 * and gives up after the broker's patience; the first connection gives up after the
 * configured connect timeout with the server's or the system's words.  After
 * a reconnection, take() first reads this consumer's own pending entries
 * (id 0): deliveries whose replies the broken connection swallowed.
 *
 * Consumers.  Each worker process reads as a consumer of its own name, and
 * the group would keep every name it ever saw.  A worker that stops deletes
 * its own consumer once it has no pending entries; one that vanished is
 * deleted by a live worker's reclaim (drop_vanished) once its entries have
 * been claimed and it has not read for SWEEP_IDLE_MS and four visibility
 * timeouts.  Deleting a consumer with no pending entries loses nothing: one
 * that reads again is simply made anew.  Both are best-effort: a user whose
 * ACL lacks XINFO or XGROUP DELCONSUMER keeps the names.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "broker_engine.h"
#include "internal.h"

#define GROUP "lmp"
#define SOCKET_TIMEOUT_MS 15000
#define MAX_BLOCK_MS 2000 /* well under SOCKET_TIMEOUT_MS */
/* the socket timeout of an impatient broker: a dead link shows soon */
#define SHORT_TIMEOUT_MS (MAX_BLOCK_MS + 2000)
#define CHUNK 65536             /* tasks per replay record (the take script's too) */
#define DAY_MS (86400 * 1000LL) /* a caller's counter, a record without an expiry */
#define STR_(x) #x
#define STR(x) STR_(x)
#define PUT_BATCH 512
#define SWEEP_IDLE_MS 5000   /* a consumer idle this long (and 4 visibility timeouts) ... */
#define SWEEP_EVERY_MS 10000 /* ... is looked for this often */
#define WAKE_RETRY_MS 50     /* the notifier's tick while it has no armed BLPOP */

typedef struct rconn {
  redisContext *c;
  char host[256];
  int port, db;
  char *user, *pass;
  int fresh;          /* a new connection: own pending entries first */
  int64_t sock_ms;    /* the socket timeout set */
  int64_t next_sweep; /* wall ms of the next sweep of vanished consumers; -1: not allowed */
  char kstream[300], kdead[310], kdelayed[320], kworkers[320], kself[200], kcount[320];
  /* results: the caller's stream and the last id read from it */
  char rkey[300], rlast[48];
  int owed;          /* replies to commands sent without waiting (see read_results) */
  uint64_t lo_chunk; /* replay records below this chunk are deleted */
  /* a take in flight: replies due (waiter, script), whether a waiter went
   * first, the group's last delivered id */
  int tdue, twake;
  char tlast[48];
  lmp_broker_batch_t stash;  /* own entries read again after a reconnection */
  lmp_broker_batch_t waited; /* the waiter's entries, until the script has checked them */
  /* puts not yet acknowledged, sent again after a reconnection */
  char **puts;
  size_t *putlen;
  int64_t *putdue; /* 0, or when a held task is due (wall ms) */
  int nput, capput;
  struct notifier *wake; /* a producer's, once an event loop asked for it */
  int64_t rev_count;     /* the queue's count of revocations, read by promote */
  int rev_known;         /* ... and not yet looked at by revoked_redis */
} rconn;

/* A producer's descriptor for event loops (see notify_fd_redis). */
typedef struct notifier {
  int epfd, tfd;
  struct rconn w; /* its own connection, parked in XREAD on the results */
  int armed, refused;
  int64_t next_try; /* no connection attempt before this (monotonic ns) */
  char key[310];
} notifier;

/* === connection === */

static void sleep_ms(int64_t ms)
{
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
    ;
}

static struct timeval tv_ms(int64_t ms)
{
  struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
  return tv;
}

static int url_decode(char *s)
{
  char *o = s;
  for (; *s; s++) {
    if (*s == '%' && s[1] && s[2]) {
      char hex[3] = {s[1], s[2], 0};
      *o++ = (char)strtol(hex, NULL, 16);
      s += 2;
    } else {
      *o++ = *s;
    }
  }
  *o = 0;
  return 0;
}

/* redis://[[user]:pass@]host[:port][/db]; host may be an IPv6 address in [] */
static int parse_url(lmp_broker_t *b, rconn *r)
{
  const char *p = b->url + strlen("redis://"), *at, *slash;
  char hostport[250], shown[200];
  lmp__broker_url_shown(b->url, shown, sizeof shown);
  r->port = 6379;
  r->db = 0;
  slash = strchr(p, '/');
  at = strrchr(p, '@');
  if (at && slash && at > slash)
    at = NULL;
  if (at) {
    char *cred = strndup(p, (size_t)(at - p)), *colon = strchr(cred, ':');
    if (colon) {
      *colon = 0;
      r->pass = strdup(colon + 1);
      url_decode(r->pass);
      if (*cred)
        r->user = cred;
      else
        free(cred);
    } else {
      r->pass = cred; /* redis://password@host */
    }
    if (r->user)
      url_decode(r->user);
    p = at + 1;
  }
  size_t n = slash ? (size_t)(slash - p) : strlen(p);
  if (n == 0 || n >= sizeof hostport)
    return lmp__broker_fail(b, -EINVAL, "bad broker URL '%s' (no host)", shown);
  memcpy(hostport, p, n);
  hostport[n] = 0;
  char *host = hostport, *colon = strrchr(hostport, ':');
  if (*host == '[') { /* an IPv6 address: [::1] or [::1]:port */
    char *close = strchr(host, ']');
    if (close == NULL || close == host + 1 || (close[1] && close[1] != ':'))
      return lmp__broker_fail(b, -EINVAL, "bad broker URL '%s' (bad IPv6 address)", shown);
    *close = 0;
    colon = close[1] ? close + 1 : NULL;
    host++;
  }
  if (colon) {
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port <= 0 || port > 65535)
      return lmp__broker_fail(b, -EINVAL, "bad broker URL '%s' (bad port)", shown);
    r->port = (int)port;
    *colon = 0;
  }
  snprintf(r->host, sizeof r->host, "%s", host);
  if (slash && slash[1]) {
    char *end;
    long db = strtol(slash + 1, &end, 10);
    if (*end || db < 0 || db > 100000)
      return lmp__broker_fail(b, -EINVAL, "bad broker URL '%s' (bad database number)", shown);
    r->db = (int)db;
  }
  return 0;
}

static void drop(rconn *r)
{
  if (r->c)
    redisFree(r->c);
  r->c = NULL;
  r->owed = 0;
}

/* A reply that is an error: its text into b->err, -EPROTO.  Frees it. */
static int reply_error(lmp_broker_t *b, redisReply *rep, const char *what)
{
  int rc = lmp__broker_fail(b, -EPROTO, "%s: %s", what,
                            rep && rep->type == REDIS_REPLY_ERROR ? rep->str : "unexpected reply");
  if (rep && rep->str && strncmp(rep->str, "NOAUTH", 6) == 0)
    rc = -EACCES;
  if (rep && rep->str &&
      (strncmp(rep->str, "WRONGPASS", 9) == 0 || strncmp(rep->str, "NOPERM", 6) == 0))
    rc = -EACCES;
  freeReplyObject(rep);
  return rc;
}

/* A server that is starting (loading its data) or failing over answers
 * with these: worth another try on a new connection, not an error. */
static int transient(const redisReply *rep)
{
  return rep && rep->type == REDIS_REPLY_ERROR &&
         (strncmp(rep->str, "LOADING", 7) == 0 || strncmp(rep->str, "MASTERDOWN", 10) == 0 ||
          strncmp(rep->str, "TRYAGAIN", 8) == 0);
}

/* An I/O failure of the context: its text into b->err, the context gone. */
static int io_error(lmp_broker_t *b, rconn *r, const char *what)
{
  int rc = lmp__broker_fail(b, -ECONNRESET, "%s: %s (redis at %s:%d)", what,
                            r->c && r->c->errstr[0] ? r->c->errstr : "connection lost", r->host,
                            r->port);
  drop(r);
  return rc;
}

/* How long a reply may take: a broker that reconnects for less than the
 * usual socket timeout wants to hear of a dead link sooner too. */
static int64_t sock_timeout(const lmp_broker_t *b)
{
  return b->patience_ms < SOCKET_TIMEOUT_MS ? SHORT_TIMEOUT_MS : SOCKET_TIMEOUT_MS;
}

static int connect_once(lmp_broker_t *b, rconn *r, int64_t timeout_ms)
{
  redisReply *rep;
  r->c = redisConnectWithTimeout(r->host, r->port, tv_ms(timeout_ms));
  if (r->c == NULL)
    return lmp__broker_fail(b, -ENOMEM, "cannot allocate a redis context");
  if (r->c->err)
    return io_error(b, r, "cannot reach the broker");
  fcntl(r->c->fd, F_SETFD, FD_CLOEXEC); /* hiredis leaves it to children that exec */
  r->sock_ms = sock_timeout(b);
  redisSetTimeout(r->c, tv_ms(r->sock_ms));
  redisEnableKeepAlive(r->c);
  if (r->pass) {
    if (r->user)
      rep = redisCommand(r->c, "AUTH %s %s", r->user, r->pass);
    else
      rep = redisCommand(r->c, "AUTH %s", r->pass);
    if (rep == NULL)
      return io_error(b, r, "AUTH");
    if (rep->type == REDIS_REPLY_ERROR) {
      int rc = reply_error(b, rep, "broker refused AUTH");
      drop(r);
      return rc < 0 ? -EACCES : rc;
    }
    freeReplyObject(rep);
  }
  /* A Redis Cluster node takes the connection, then refuses each MULTI
   * across slots (CROSSSLOT): refuse it here.  A user whose ACL denies INFO
   * gets an error reply, taken for a standalone server. */
  rep = redisCommand(r->c, "INFO cluster");
  if (rep == NULL)
    return io_error(b, r, "INFO");
  int cluster = rep->type == REDIS_REPLY_STRING && strstr(rep->str, "cluster_enabled:1");
  freeReplyObject(rep);
  if (cluster) {
    drop(r);
    return lmp__broker_fail(b, -EPROTONOSUPPORT,
                            "the broker at %s:%d is a Redis Cluster node; lmp's broker needs a "
                            "standalone Redis (or Sentinel-managed primary) for now",
                            r->host, r->port);
  }
  if (r->db) {
    rep = redisCommand(r->c, "SELECT %d", r->db);
    if (rep == NULL)
      return io_error(b, r, "SELECT");
    if (rep->type == REDIS_REPLY_ERROR) {
      int rc = reply_error(b, rep, "SELECT");
      drop(r);
      return rc;
    }
    freeReplyObject(rep);
  }
  rep = redisCommand(r->c, "XGROUP CREATE %s " GROUP " 0 MKSTREAM", r->kstream);
  if (rep == NULL)
    return io_error(b, r, "XGROUP CREATE");
  if (transient(rep)) {
    lmp__broker_fail(b, -EAGAIN, "broker not ready: %s", rep->str);
    freeReplyObject(rep);
    drop(r);
    return -EAGAIN;
  }
  if (rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "BUSYGROUP", 9) != 0) {
    int rc = reply_error(b, rep, "XGROUP CREATE");
    drop(r);
    return rc;
  }
  int made = rep->type != REDIS_REPLY_ERROR;
  freeReplyObject(rep);
  if (made) {
    /* A new group: a new queue, whatever was there before (see state_redis). */
    rep = redisCommand(r->c, "SET %s:epoch %llx.%x", r->kstream, (unsigned long long)lmp_now_ns(),
                       (unsigned)getpid());
    if (rep == NULL)
      return io_error(b, r, "SET");
    freeReplyObject(rep);
  }
  r->fresh = 1;
  r->tdue = 0;
  r->tlast[0] = 0;
  return 0;
}

/* A usable connection, reconnecting with backoff for up to window_ms. */
static int ensure(lmp_broker_t *b, rconn *r, int64_t window_ms)
{
  while (r->owed > 0 && r->c && !r->c->err) {
    void *rep = NULL;
    if (redisGetReply(r->c, &rep) != REDIS_OK || rep == NULL) {
      drop(r); /* reconnected below */
      break;
    }
    freeReplyObject(rep);
    r->owed--;
  }
  if (r->c && !r->c->err) {
    if (r->sock_ms != sock_timeout(b) && r->tdue == 0) {
      r->sock_ms = sock_timeout(b);
      redisSetTimeout(r->c, tv_ms(r->sock_ms));
    }
    return 0;
  }
  drop(r);
  int64_t end = lmp_now_ns() + window_ms * 1000000, backoff = 50;
  for (;;) {
    int64_t left = (end - lmp_now_ns()) / 1000000;
    int rc = connect_once(b, r, left < 1000 ? (left > 100 ? left : 100) : 1000);
    if (rc == 0 || rc == -EACCES || rc == -EPROTO || rc == -EPROTONOSUPPORT || rc == -ENOMEM)
      return rc;
    if (lmp_now_ns() + backoff * 1000000 >= end)
      return rc;
    sleep_ms(backoff);
    backoff = backoff * 2 > 2000 ? 2000 : backoff * 2;
  }
}

/* Send the commands appended so far and read n replies into reps (each
 * freed by the caller); on an I/O failure all are freed and the connection
 * dropped. */
static int read_replies(lmp_broker_t *b, rconn *r, redisReply **reps, int n, const char *what)
{
  for (int i = 0; i < n; i++) {
    void *rep = NULL;
    if (redisGetReply(r->c, &rep) != REDIS_OK || rep == NULL) {
      for (int k = 0; k < i; k++)
        freeReplyObject(reps[k]);
      return io_error(b, r, what);
    }
    reps[i] = rep;
  }
  return 0;
}

/* Write out what was appended, without waiting for its replies. */
static int send_all(lmp_broker_t *b, rconn *r, const char *what)
{
  int done = 0;
  while (!done)
    if (redisBufferWrite(r->c, &done) != REDIS_OK)
      return io_error(b, r, what);
  return 0;
}

static int open_redis(lmp_broker_t *b)
{
  rconn *r = calloc(1, sizeof *r);
  if (r == NULL)
    return -ENOMEM;
  b->conn = r;
  int rc = parse_url(b, r);
  if (rc < 0)
    goto err;
  snprintf(r->kstream, sizeof r->kstream, "lmp:q:%s", b->cfg.queue);
  snprintf(r->kdead, sizeof r->kdead, "lmp:q:%s:dead", b->cfg.queue);
  snprintf(r->kdelayed, sizeof r->kdelayed, "lmp:q:%s:delayed", b->cfg.queue);
  snprintf(r->kworkers, sizeof r->kworkers, "lmp:workers:%s", b->cfg.queue);
  snprintf(r->kself, sizeof r->kself, "lmp:w:%s", b->consumer);
  snprintf(r->kcount, sizeof r->kcount, "lmp:c:%s:n", b->consumer);
  rc = ensure(b, r, b->cfg.connect_timeout);
  if (rc < 0)
    goto err;
  return 0;
err:
  free(r->user);
  free(r->pass);
  free(r);
  b->conn = NULL;
  return rc;
}

static void notifier_free(notifier *n);

static void close_redis(lmp_broker_t *b)
{
  rconn *r = b->conn;
  if (r == NULL)
    return;
  notifier_free(r->wake);
  drop(r);
  lmp_broker_batch_free(&r->stash);
  lmp_broker_batch_free(&r->waited);
  for (int i = 0; i < r->nput; i++)
    free(r->puts[i]);
  free(r->puts);
  free(r->putlen);
  free(r->putdue);
  free(r->user);
  free(r->pass);
  free(r);
  b->conn = NULL;
}

static int fileno_redis(const lmp_broker_t *b)
{
  const rconn *r = b->conn;
  return r && r->c && !r->c->err ? r->c->fd : -1;
}

/* === entries === */

static uint32_t num(const char *s, size_t n)
{
  uint32_t v = 0;
  for (size_t i = 0; i < n && s[i] >= '0' && s[i] <= '9'; i++)
    v = v * 10 + (uint32_t)(s[i] - '0');
  return v;
}

/* [id, [field, value, ...]] into a new message of out; 0, 1 if the entry
 * was deleted (no fields), or -errno. */
static int add_entry(lmp_broker_batch_t *out, redisReply *e, uint32_t extra)
{
  if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 || e->element[0]->type != REDIS_REPLY_STRING)
    return -EPROTO;
  redisReply *f = e->element[1];
  if (f->type != REDIS_REPLY_ARRAY)
    return 1;
  lmp_broker_msg_t *m = lmp__broker_push(out);
  if (m == NULL)
    return -ENOMEM;
  snprintf(m->id, sizeof m->id, "%s", e->element[0]->str);
  uint32_t d = 0;
  for (size_t i = 0; i + 1 < f->elements; i += 2) {
    redisReply *k = f->element[i], *v = f->element[i + 1];
    if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING || k->len != 1)
      continue;
    if (k->str[0] == 'm' && m->data == NULL) {
      m->data = malloc(v->len ? v->len : 1);
      if (m->data == NULL)
        return -ENOMEM;
      memcpy(m->data, v->str, v->len);
      m->len = v->len;
    } else if (k->str[0] == 'd') {
      d = num(v->str, v->len);
    } else if (k->str[0] == 'h' && m->history == NULL) {
      m->history = strndup(v->str, v->len);
    }
  }
  if (m->data == NULL)
    m->data = calloc(1, 1);
  if (m->history == NULL)
    m->history = strdup("");
  m->deliveries = d + extra;
  return 0;
}

/* The entries of an XREADGROUP / XCLAIM reply. */
static int add_entries(lmp_broker_t *b, redisReply *list, lmp_broker_batch_t *out, uint32_t extra)
{
  int n = 0;
  for (size_t i = 0; i < list->elements; i++) {
    int rc = add_entry(out, list->element[i], extra);
    if (rc < 0)
      return lmp__broker_fail(b, rc, "unexpected stream entry in the reply");
    n += rc == 0;
  }
  return n;
}

/* === producer === */

static int put_redis(lmp_broker_t *b, const void *msg, size_t len, int64_t due_ms)
{
  rconn *r = b->conn;
  if (r->nput == r->capput) {
    int cap = r->capput ? r->capput * 2 : 64;
    char **p = realloc(r->puts, sizeof *p * (size_t)cap);
    if (p == NULL)
      return -ENOMEM;
    r->puts = p;
    size_t *l = realloc(r->putlen, sizeof *l * (size_t)cap);
    if (l == NULL)
      return -ENOMEM;
    r->putlen = l;
    int64_t *d = realloc(r->putdue, sizeof *d * (size_t)cap);
    if (d == NULL)
      return -ENOMEM;
    r->putdue = d;
    r->capput = cap;
  }
  char *copy = malloc(len ? len : 1);
  if (copy == NULL)
    return -ENOMEM;
  memcpy(copy, msg, len);
  r->puts[r->nput] = copy;
  r->putdue[r->nput] = due_ms;
  r->putlen[r->nput++] = len;
  if (r->nput >= PUT_BATCH)
    return b->e->flush(b);
  return 0;
}

/* Append the puts not yet acknowledged, then the count of them to the
 * producer's counter (after them: a snapshot taken in between shows too few,
 * never too many); the number of commands appended. */
static int append_puts(rconn *r)
{
  if (r->nput == 0)
    return 0;
  for (int i = 0; i < r->nput; i++) {
    if (r->putdue[i] > 0) { /* held: the member is the message itself, unique */
      char due[24];
      snprintf(due, sizeof due, "%lld", (long long)r->putdue[i]);
      const char *argv[4] = {"ZADD", r->kdelayed, due, r->puts[i]};
      size_t lens[4] = {4, strlen(r->kdelayed), strlen(due), r->putlen[i]};
      redisAppendCommandArgv(r->c, 4, argv, lens);
      continue;
    }
    const char *argv[7] = {"XADD", r->kstream, "*", "m", r->puts[i], "d", "0"};
    size_t lens[7] = {4, strlen(r->kstream), 1, 1, r->putlen[i], 1, 1};
    redisAppendCommandArgv(r->c, 7, argv, lens);
  }
  redisAppendCommand(r->c, "INCRBY %s %d", r->kcount, r->nput);
  redisAppendCommand(r->c, "PEXPIRE %s %lld", r->kcount, DAY_MS);
  return r->nput + 2;
}

/* Read the n replies of append_puts: 0 (the puts are done with), -EPROTO
 * (refused; they are dropped, the text in b->err) or -ECONNRESET (the
 * connection is gone; they are kept, to be sent again). */
static int read_puts(lmp_broker_t *b, rconn *r, int n)
{
  int bad = 0;
  for (int i = 0; i < n; i++) {
    void *rep = NULL;
    if (redisGetReply(r->c, &rep) != REDIS_OK || rep == NULL)
      return io_error(b, r, "XADD");
    redisReply *x = rep;
    if (x->type == REDIS_REPLY_ERROR && !bad)
      bad = lmp__broker_fail(b, -EPROTO, "XADD: %s", x->str);
    freeReplyObject(rep);
  }
  for (int i = 0; i < r->nput; i++)
    free(r->puts[i]);
  r->nput = 0;
  return bad;
}

static int flush_redis(lmp_broker_t *b)
{
  rconn *r = b->conn;
  if (r->nput == 0)
    return 0;
  for (int attempt = 0;; attempt++) {
    int rc = ensure(b, r, attempt ? b->patience_ms : b->cfg.connect_timeout);
    if (rc < 0)
      return rc;
    rc = read_puts(b, r, append_puts(r));
    /* After a lost connection the server may hold some of them twice: the
     * replay records drop the second copy at take. */
    if (rc != -ECONNRESET || attempt >= 3)
      return rc;
  }
}

/* The id after `id` ("ms-seq" -> "ms-seq+1"), for XTRIM MINID. */
static void next_id(const char *id, char *out, size_t n)
{
  unsigned long long ms = 0, seq = 0;
  if (sscanf(id, "%llu-%llu", &ms, &seq) != 2)
    ms = seq = 0;
  snprintf(out, n, "%llu-%llu", ms, seq + 1);
}

/* The `r` fields of the entries of an XREAD reply into out; the last id
 * into last.  The count, or -errno. */
static int copy_results(lmp_broker_t *b, redisReply *rep, lmp_broker_batch_t *out, char *last,
                        size_t lastlen)
{
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 1 || rep->element[0]->elements != 2)
    return 0; /* nil: nothing came */
  redisReply *list = rep->element[0]->element[1];
  int n = 0;
  for (size_t i = 0; list->type == REDIS_REPLY_ARRAY && i < list->elements; i++) {
    redisReply *e = list->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 2 ||
        e->element[0]->type != REDIS_REPLY_STRING)
      return lmp__broker_fail(b, -EPROTO, "unexpected entry in the results");
    snprintf(last, lastlen, "%s", e->element[0]->str);
    redisReply *f = e->element[1];
    for (size_t k = 0; f->type == REDIS_REPLY_ARRAY && k + 1 < f->elements; k += 2) {
      redisReply *v = f->element[k + 1];
      if (f->element[k]->len != 1 || f->element[k]->str[0] != 'r' || v->type != REDIS_REPLY_STRING)
        continue;
      lmp_broker_msg_t *m = lmp__broker_push(out);
      if (m == NULL || (m->data = malloc(v->len ? v->len : 1)) == NULL)
        return -ENOMEM;
      memcpy(m->data, v->str, v->len);
      m->len = v->len;
      n++;
    }
  }
  return n;
}

/* Point the reader at a caller's stream (from its start when it is another). */
static void results_key(rconn *r, const char *caller)
{
  char key[300];
  snprintf(key, sizeof key, "lmp:c:%s", caller);
  if (strcmp(r->rkey, key) != 0) {
    snprintf(r->rkey, sizeof r->rkey, "%s", key);
    snprintf(r->rlast, sizeof r->rlast, "0-0");
  }
}

/*
 * A caller's results are a stream that only it reads.  One round trip
 * sends the puts not yet flushed and reads on from the last id read,
 * blocking until the deadline (at most MAX_BLOCK_MS at a time) for the
 * first result: the XREAD answers with the results themselves as soon as
 * one is added.  Results in hand are then trimmed away (XTRIM MINID, its
 * reply read later), so the broker holds them only until they are
 * collected.  A read whose reply a broken connection swallowed is simply
 * made again from the same id, so no result is lost; a result may be read
 * twice (a task run twice), and callers ignore what they have already
 * settled.
 */
static void notifier_arm(lmp_broker_t *b, struct notifier *n);

static int read_results(lmp_broker_t *b, const char *caller, int max, int64_t deadline,
                        lmp_broker_batch_t *out)
{
  rconn *r = b->conn;
  char count[16];
  snprintf(count, sizeof count, "%d", max > 0 ? max : 1);
  results_key(r, caller);
  for (int lost = 0;;) {
    int rc = ensure(b, r, b->patience_ms);
    if (rc < 0)
      return rc;
    int nput = append_puts(r);
    int64_t left = deadline == LMP_FOREVER ? MAX_BLOCK_MS : (deadline - lmp_now_ns()) / 1000000;
    if (left > MAX_BLOCK_MS)
      left = MAX_BLOCK_MS;
    if (left > 0)
      redisAppendCommand(r->c, "XREAD COUNT %s BLOCK %lld STREAMS %s %s", count, (long long)left,
                         r->rkey, r->rlast);
    else
      redisAppendCommand(r->c, "XREAD COUNT %s STREAMS %s %s", count, r->rkey, r->rlast);
    rc = read_puts(b, r, nput);
    if (rc == -ECONNRESET && ++lost <= 3)
      continue;
    if (rc < 0) {
      drop(r); /* the replies behind are not read */
      return rc;
    }
    redisReply *rep = NULL;
    if (read_replies(b, r, &rep, 1, "XREAD") < 0) {
      if (++lost <= 3)
        continue;
      return -ECONNRESET;
    }
    if (rep->type == REDIS_REPLY_ERROR)
      return reply_error(b, rep, "XREAD");
    int n = copy_results(b, rep, out, r->rlast, sizeof r->rlast);
    freeReplyObject(rep);
    if (n > 0) {
      /* Read and in hand: delete them from the broker now, without waiting
       * for the reply (ensure reads it before the next command).  If the
       * connection breaks first, they stay until the caller ends or their
       * TTL: the next read starts after them anyway. */
      char from[48];
      next_id(r->rlast, from, sizeof from);
      redisAppendCommand(r->c, "XTRIM %s MINID %s", r->rkey, from);
      r->owed++;
      send_all(b, r, "XTRIM"); /* a failure shows at the next command */
    }
    if (n != 0)
      return n;
    if (left <= 0)
      return 0;
  }
}

static int results_redis(lmp_broker_t *b, const char *caller, int max, int64_t deadline,
                         lmp_broker_batch_t *out)
{
  rconn *r = b->conn;
  int rc = read_results(b, caller, max, deadline, out);
  if (rc >= 0 && r->wake && !r->wake->armed)
    notifier_arm(b, r->wake);
  return rc;
}

/* The producer's count and the queue's epoch (see lmp_broker_state). */
static int state_redis(lmp_broker_t *b, int64_t *count, char *epoch, size_t epochlen)
{
  rconn *r = b->conn;
  redisReply *reps[2] = {NULL, NULL};
  int rc = ensure(b, r, b->patience_ms);
  if (rc < 0)
    return rc;
  rc = b->e->flush(b);
  if (rc < 0)
    return rc;
  redisAppendCommand(r->c, "GET %s", r->kcount);
  redisAppendCommand(r->c, "GET %s:epoch", r->kstream);
  rc = read_replies(b, r, reps, 2, "GET");
  if (rc < 0)
    return rc;
  *count = reps[0]->type == REDIS_REPLY_STRING ? strtoll(reps[0]->str, NULL, 10) : 0;
  snprintf(epoch, epochlen, "%s", reps[1]->type == REDIS_REPLY_STRING ? reps[1]->str : "");
  freeReplyObject(reps[0]);
  freeReplyObject(reps[1]);
  return 0;
}

/* See lmp_broker_settle. */
static int settle_redis(lmp_broker_t *b, const char *caller, uint64_t lo, int final,
                        int64_t expires_ms)
{
  rconn *r = b->conn;
  int rc = ensure(b, r, b->patience_ms);
  if (rc < 0)
    return rc;
  int n = 0;
  uint64_t upto = final && lo > 0 ? (lo - 1) / CHUNK + 1 : lo / CHUNK;
  if (expires_ms <= 0)
    expires_ms = DAY_MS;
  redisAppendCommand(r->c, "SET lmp:c:%s:lo %llu PX %lld", caller, (unsigned long long)lo,
                     (long long)expires_ms);
  n++;
  for (uint64_t k = r->lo_chunk; k < upto; k++, n++)
    redisAppendCommand(r->c, "UNLINK lmp:c:%s:t:%llu", caller, (unsigned long long)k);
  if (final) {
    redisAppendCommand(r->c, "UNLINK lmp:c:%s lmp:c:%s:n", caller, caller);
    n++;
  }
  for (int i = 0; i < n; i++) {
    void *rep = NULL;
    if (redisGetReply(r->c, &rep) != REDIS_OK || rep == NULL)
      return io_error(b, r, "settling");
    redisReply *x = rep;
    if (x->type == REDIS_REPLY_ERROR && rc == 0)
      rc = lmp__broker_fail(b, -EPROTO, "settling: %s", x->str);
    freeReplyObject(rep);
  }
  if (rc == 0 && upto > r->lo_chunk)
    r->lo_chunk = upto;
  if (final)
    r->rkey[0] = 0;
  return rc;
}

/* === consumer === */

/* Counts of this consumer's pending entries, into the messages of out from
 * index `from` on (their deliveries gain the stream's count). */
static int own_counts(lmp_broker_t *b, rconn *r, lmp_broker_batch_t *out, int from)
{
  redisReply *rep = redisCommand(r->c, "XPENDING %s " GROUP " - + %d %s", r->kstream,
                                 out->n - from + 16, b->consumer);
  if (rep == NULL)
    return io_error(b, r, "XPENDING");
  if (rep->type != REDIS_REPLY_ARRAY)
    return reply_error(b, rep, "XPENDING");
  for (size_t i = 0; i < rep->elements; i++) {
    redisReply *e = rep->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 4)
      continue;
    for (int k = from; k < out->n; k++)
      if (strcmp(out->msg[k].id, e->element[0]->str) == 0)
        out->msg[k].deliveries += (uint32_t)e->element[3]->integer - 1;
  }
  freeReplyObject(rep);
  return 0;
}

/*
 * The take: new entries for this consumer, each task's replay record set
 * in the same step.  KEYS[1] the stream; ARGV: group, consumer, count, the
 * expiry of a record whose task has none (wall ms), and the group's last
 * delivered id before a waiting XREADGROUP that came just ahead of this
 * script ("" without one): the entry that waiter handed this consumer is
 * the one of its pending entries past that id still on its first delivery
 * (reclaimed entries are past their first), and it is checked here as if
 * the script had read it.  A task id is read from the message's header
 * (broker.c: 'L' 2 kind idlen id stamp expires ...), unchecked: a forged
 * header can only get its own entry dropped or delivered, and a delivered
 * one is verified by the worker.  A replay is acknowledged and deleted.
 * Returns the group's last delivered id, the ids of the waiter's entries
 * dropped as replays, then the entries to deliver.
 */
/* clang-format off */
static const char TAKE_SCRIPT[] =
    "local s, g = KEYS[1], ARGV[1]\n"
    "local los, ttl = {}, {}\n"
    "local function fresh(e)\n"
    "  local f, m = e[2], nil\n"
    "  for i = 1, #f, 2 do if f[i] == 'm' then m = f[i + 1] end end\n"
    "  if not (m and #m >= 53 and string.byte(m, 1) == 76 and string.byte(m, 2) == 2) then\n"
    "    return true\n"
    "  end\n"
    "  local n = string.byte(m, 4)\n"
    "  local caller, seq = string.match(string.sub(m, 5, 4 + n), '^(.+)%.(%d+)$')\n"
    "  seq = tonumber(seq)\n"
    "  if not (caller and seq) then return true end\n"
    "  local lo = los[caller]\n"
    "  if lo == nil then\n"
    "    lo = tonumber(redis.call('GET', 'lmp:c:' .. caller .. ':lo')) or 0\n"
    "    los[caller] = lo\n"
    "  end\n"
    "  local k = 'lmp:c:' .. caller .. ':t:' .. math.floor(seq / " STR(CHUNK) ")\n"
    "  if seq < lo or redis.call('SETBIT', k, seq % " STR(CHUNK) ", 1) == 1 then\n"
    "    redis.call('XACK', s, g, e[1])\n"
    "    redis.call('XDEL', s, e[1])\n"
    "    return false\n"
    "  end\n"
    "  if not ttl[k] then\n"
    "    local x = 0\n"
    "    for i = 13 + n, 20 + n do x = x * 256 + string.byte(m, i) end\n"
    "    ttl[k] = true\n"
    "    redis.call('PEXPIREAT', k, x > 0 and x or ARGV[4])\n"
    "  end\n"
    "  return true\n"
    "end\n"
    "local dropped = {}\n"
    "if ARGV[5] ~= '' then\n"
    "  for _, p in ipairs(redis.call('XPENDING', s, g, '(' .. ARGV[5], '+', 16, ARGV[2])) do\n"
    "    local e = p[4] == 1 and redis.call('XRANGE', s, p[1], p[1])[1]\n"
    "    if e and not fresh(e) then dropped[#dropped + 1] = p[1] end\n"
    "  end\n"
    "end\n"
    "local out = {'0-0', dropped}\n"
    "local r = ARGV[3] ~= '0' and\n"
    "  redis.call('XREADGROUP', 'GROUP', g, ARGV[2], 'COUNT', ARGV[3], 'STREAMS', s, '>')\n"
    "for _, e in ipairs(r and r[1][2] or {}) do\n"
    "  if fresh(e) then out[#out + 1] = e end\n"
    "end\n"
    "for _, x in ipairs(redis.call('XINFO', 'GROUPS', s)) do\n"
    "  local name, last\n"
    "  for i = 1, #x, 2 do\n"
    "    if x[i] == 'name' then name = x[i + 1] end\n"
    "    if x[i] == 'last-delivered-id' then last = x[i + 1] end\n"
    "  end\n"
    "  if name == g then out[1] = last end\n"
    "end\n"
    "return out\n";
/* clang-format on */

/* Drop the replay record of the task a message carries, so that the entry
 * put back for it is delivered; the number of commands appended (0 for a
 * message without a task id of the form caller.seq). */
static int append_unmark(rconn *r, const char *data, size_t len)
{
  lmp_broker_view_t v;
  char id[256];
  if (lmp_broker_peek(data, len, &v) < 0 || v.idlen >= sizeof id)
    return 0;
  memcpy(id, v.id, v.idlen);
  id[v.idlen] = 0;
  char *dot = strrchr(id, '.'), *end;
  if (dot == NULL || dot == id || dot[1] == 0)
    return 0;
  unsigned long long seq = strtoull(dot + 1, &end, 10);
  if (*end)
    return 0;
  *dot = 0;
  redisAppendCommand(r->c, "SETBIT lmp:c:%s:t:%llu %llu 0", id, seq / CHUNK, seq % CHUNK);
  return 1;
}

/* A reply, waiting for it when `wait`, else 0 if it has not come yet. */
static int next_reply(lmp_broker_t *b, rconn *r, int wait, redisReply **out)
{
  void *rep = NULL;
  *out = NULL;
  if (redisGetReplyFromReader(r->c, &rep) != REDIS_OK)
    return io_error(b, r, "XREADGROUP");
  if (rep == NULL && wait) {
    if (redisGetReply(r->c, &rep) != REDIS_OK || rep == NULL)
      return io_error(b, r, "XREADGROUP");
  } else if (rep == NULL) {
    struct pollfd pfd = {r->c->fd, POLLIN, 0};
    if (poll(&pfd, 1, 0) <= 0)
      return 0;
    if (redisBufferRead(r->c) != REDIS_OK || redisGetReplyFromReader(r->c, &rep) != REDIS_OK)
      return io_error(b, r, "XREADGROUP");
    if (rep == NULL)
      return 0;
  }
  *out = rep;
  return 1;
}

/* After a reconnection: this consumer's own pending entries (deliveries
 * whose replies the broken connection swallowed), into r->stash. */
static int take_own(lmp_broker_t *b, rconn *r, int max)
{
  redisReply *rep = redisCommand(r->c, "XREADGROUP GROUP " GROUP " %s COUNT %d STREAMS %s 0",
                                 b->consumer, max, r->kstream);
  if (rep == NULL)
    return io_error(b, r, "XREADGROUP");
  if (rep->type == REDIS_REPLY_ERROR)
    return reply_error(b, rep, "XREADGROUP");
  int n = 0;
  if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 1 && rep->element[0]->elements == 2)
    n = add_entries(b, rep->element[0]->element[1], &r->stash, 1);
  freeReplyObject(rep);
  if (n < 0)
    return n;
  /* Once: what is still pending later is running here (its lease is
   * renewed) or will lapse and be reclaimed. */
  r->fresh = 0;
  if (n > 0) {
    int rc = own_counts(b, r, &r->stash, 0);
    if (rc < 0)
      return rc;
  }
  return n;
}

static int take_send_redis(lmp_broker_t *b, int max, int64_t block_ms)
{
  rconn *r = b->conn;
  char count[16], expiry[24];
  if (r->tdue)
    return 0;
  if (r->stash.n > 0)
    return 1;
  lmp_broker_batch_clear(&r->waited); /* a failed take's: back as our own pending */
  int rc = ensure(b, r, b->patience_ms);
  if (rc < 0)
    return rc;
  if (max <= 0)
    max = 1;
  if (r->fresh && (rc = take_own(b, r, max)) != 0)
    return rc < 0 ? rc : 1;
  if (block_ms > MAX_BLOCK_MS)
    block_ms = MAX_BLOCK_MS;
  /* The waiter: one entry, handed to this consumer alone (no other
   * waiting worker wakes for it), checked by the script that follows. */
  r->twake = block_ms > 0 && r->tlast[0];
  if (r->twake)
    redisAppendCommand(r->c, "XREADGROUP GROUP " GROUP " %s COUNT 1 BLOCK %lld STREAMS %s >",
                       b->consumer, (long long)block_ms, r->kstream);
  snprintf(count, sizeof count, "%d", max - r->twake); /* the waiter's one counts */
  snprintf(expiry, sizeof expiry, "%lld", (long long)(lmp__wall_ms() + DAY_MS));
  const char *argv[] = {"EVAL",     TAKE_SCRIPT, "1",
                        r->kstream, GROUP,       b->consumer,
                        count,      expiry,      r->twake ? r->tlast : ""};
  size_t lens[9];
  for (int i = 0; i < 9; i++)
    lens[i] = strlen(argv[i]);
  redisAppendCommandArgv(r->c, 9, argv, lens);
  r->tdue = r->twake + 1;
  rc = send_all(b, r, "XREADGROUP");
  if (rc < 0)
    r->tdue = 0;
  return rc;
}

/* Move the entries of `from` to out, but those whose ids the array reply
 * `skip` names (may be NULL), and empty `from`; the number moved, or
 * -ENOMEM. */
static int move_entries(lmp_broker_batch_t *from, const redisReply *skip, lmp_broker_batch_t *out)
{
  int n = 0;
  for (int i = 0; i < from->n && n >= 0; i++) {
    lmp_broker_msg_t *w = &from->msg[i];
    int gone = 0;
    for (size_t k = 0; skip && skip->type == REDIS_REPLY_ARRAY && k < skip->elements; k++)
      gone |=
          skip->element[k]->type == REDIS_REPLY_STRING && strcmp(skip->element[k]->str, w->id) == 0;
    if (gone)
      continue;
    lmp_broker_msg_t *m = lmp__broker_push(out);
    if (m == NULL) {
      n = -ENOMEM;
      break;
    }
    *m = *w; /* the strings move */
    w->data = w->history = NULL;
    n++;
  }
  lmp_broker_batch_clear(from);
  return n;
}

static int take_reply(lmp_broker_t *b, rconn *r, lmp_broker_batch_t *out, int wait)
{
  if (r->stash.n > 0)
    return move_entries(&r->stash, NULL, out);
  while (r->tdue > 0) {
    redisReply *rep;
    int rc = next_reply(b, r, wait, &rep);
    if (rc <= 0) {
      if (rc < 0)
        r->tdue = 0;
      return rc < 0 ? rc : -EAGAIN;
    }
    if (r->tdue-- == 2) { /* the waiter: its entry waits for the script's word */
      int n = 0;
      if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 1 && rep->element[0]->elements == 2)
        n = add_entries(b, rep->element[0]->element[1], &r->waited, 1);
      if (rep->type == REDIS_REPLY_ERROR && strstr(rep->str, "NOGROUP") == NULL) {
        r->tdue = 0;
        drop(r);
        return reply_error(b, rep, "XREADGROUP");
      }
      freeReplyObject(rep);
      if (n < 0) {
        r->tdue = 0;
        drop(r);
        return n;
      }
      continue;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
      if (strstr(rep->str, "NOGROUP")) { /* the stream was deleted: make it again */
        freeReplyObject(rep);
        drop(r);
        return 0;
      }
      return reply_error(b, rep, "taking tasks");
    }
    int n = 0;
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements >= 2) {
      redisReply *last = rep->element[0], *dropped = rep->element[1];
      if (last->type == REDIS_REPLY_STRING)
        snprintf(r->tlast, sizeof r->tlast, "%s", last->str);
      n = move_entries(&r->waited, dropped, out);
      for (size_t i = 2; i < rep->elements && n >= 0; i++) {
        int k = add_entry(out, rep->element[i], 1);
        n = k < 0 ? lmp__broker_fail(b, k, "unexpected stream entry in the reply") : n + (k == 0);
      }
    }
    lmp_broker_batch_clear(&r->waited);
    freeReplyObject(rep);
    return n;
  }
  return 0;
}

static int take_recv_redis(lmp_broker_t *b, lmp_broker_batch_t *out)
{
  rconn *r = b->conn;
  if (r->c == NULL && r->stash.n == 0)
    return 0; /* dropped: the next take_send connects again */
  return take_reply(b, r, out, 0);
}

static void take_cancel_redis(lmp_broker_t *b)
{
  rconn *r = b->conn;
  if (r->tdue)
    drop(r); /* what the script may have taken comes back as our own pending */
  r->tdue = 0;
  lmp_broker_batch_clear(&r->waited); /* that too */
}

static int take_redis(lmp_broker_t *b, int max, int64_t block_ms, lmp_broker_batch_t *out)
{
  rconn *r = b->conn;
  int rc = take_send_redis(b, max, block_ms);
  if (rc < 0)
    return rc;
  rc = take_reply(b, r, out, 1);
  if (rc == 0 && !r->twake && block_ms > 0) {
    /* the first take only learns where to wait from: wait now */
    rc = take_send_redis(b, max, block_ms);
    if (rc >= 0)
      rc = take_reply(b, r, out, 1);
  }
  return rc;
}

/* Add a result to its caller's stream; with `expire`, set the stream's
 * time to live too (the last result of a batch for that caller is
 * enough).  The number of commands appended. */
static int append_result(lmp_broker_t *b, rconn *r, const lmp_broker_done_t *d, int expire)
{
  char ckey[300], ttl[24];
  snprintf(ckey, sizeof ckey, "lmp:c:%s", d->caller);
  snprintf(ttl, sizeof ttl, "%lld", (long long)(d->ttl_ms > 0 ? d->ttl_ms : b->cfg.result_ttl));
  const char *add[5] = {"XADD", ckey, "*", "r", d->data};
  size_t addl[5] = {4, strlen(ckey), 1, 1, d->len};
  redisAppendCommandArgv(r->c, 5, add, addl);
  if (!expire)
    return 1;
  redisAppendCommand(r->c, "PEXPIRE %s %s", ckey, ttl);
  return 2;
}

/* The words of one command, built up for redisCommandArgv. */
typedef struct {
  const char **v;
  size_t *len;
  int n;
} argvec;

/* Room for `cap` words; 0 or -ENOMEM. */
static int argv_init(argvec *a, int cap)
{
  a->n = 0;
  a->v = malloc(sizeof *a->v * (size_t)cap);
  a->len = malloc(sizeof *a->len * (size_t)cap);
  if (a->v && a->len)
    return 0;
  free(a->v);
  free(a->len);
  return -ENOMEM;
}

static void argv_push(argvec *a, const char *word)
{
  a->v[a->n] = word;
  a->len[a->n++] = strlen(word);
}

static void argv_free(argvec *a)
{
  free(a->v);
  free(a->len);
}

/* XACK and XDEL of ids; the number of commands (2). */
static int append_ackdel(rconn *r, const char *const *ids, int n)
{
  argvec a;
  if (argv_init(&a, n + 3) < 0)
    return -ENOMEM;
  argv_push(&a, "XACK");
  argv_push(&a, r->kstream);
  argv_push(&a, GROUP);
  for (int i = 0; i < n; i++)
    argv_push(&a, ids[i]);
  redisAppendCommandArgv(r->c, a.n, a.v, a.len);
  /* XDEL stream id...: the same ids behind two other words. */
  a.v[1] = "XDEL";
  a.len[1] = 4;
  a.v[2] = r->kstream;
  a.len[2] = strlen(r->kstream);
  redisAppendCommandArgv(r->c, a.n - 1, a.v + 1, a.len + 1);
  argv_free(&a);
  return 2;
}

/* Run MULTI, the `build` appends, EXEC: one atomic step.  Retried after a
 * reconnection (every part of it may be applied twice harmlessly). */
typedef int (*builder)(lmp_broker_t *b, rconn *r, const void *arg);

static int transact(lmp_broker_t *b, builder build, const void *arg, const char *what)
{
  rconn *r = b->conn;
  for (int attempt = 0;; attempt++) {
    int rc = ensure(b, r, b->patience_ms);
    if (rc < 0)
      return rc;
    redisAppendCommand(r->c, "MULTI");
    int n = build(b, r, arg);
    if (n < 0)
      return n;
    redisAppendCommand(r->c, "EXEC");
    int total = n + 2, bad = 0;
    for (int i = 0; i < total; i++) {
      void *rep = NULL;
      if (redisGetReply(r->c, &rep) != REDIS_OK || rep == NULL) {
        bad = -1;
        break;
      }
      redisReply *x = rep;
      if (i == total - 1 && x->type != REDIS_REPLY_ARRAY && !bad) {
        bad = 1;
        lmp__broker_fail(b, -EPROTO, "%s: %s", what,
                         x->type == REDIS_REPLY_ERROR ? x->str : "transaction aborted");
      } else if (x->type == REDIS_REPLY_ERROR && !bad) {
        bad = 1;
        lmp__broker_fail(b, -EPROTO, "%s: %s", what, x->str);
      }
      freeReplyObject(rep);
    }
    if (bad < 0) {
      io_error(b, r, what);
      if (attempt < 5)
        continue;
      return -ECONNRESET;
    }
    return bad ? -EPROTO : 0;
  }
}

typedef struct done_arg {
  const lmp_broker_done_t *done;
  int n;
} done_arg;

static int build_complete(lmp_broker_t *b, rconn *r, const void *arg)
{
  const done_arg *a = arg;
  int cmds = 0;
  const char **ids = malloc(sizeof *ids * (size_t)a->n);
  if (ids == NULL)
    return -ENOMEM;
  for (int i = 0; i < a->n; i++) {
    const lmp_broker_done_t *d = a->done + i;
    cmds += append_result(b, r, d, i + 1 == a->n || strcmp(d->caller, d[1].caller) != 0);
    ids[i] = d->msg_id;
  }
  int rc = append_ackdel(r, ids, a->n);
  free(ids);
  return rc < 0 ? rc : cmds + rc;
}

static int complete_redis(lmp_broker_t *b, const lmp_broker_done_t *done, int n)
{
  done_arg a = {done, n};
  return transact(b, build_complete, &a, "completing tasks");
}

typedef struct move_arg {
  const lmp_broker_msg_t *m;
  const char *reason;
  const char *dest;
  const lmp_broker_done_t *result;
  uint32_t count;
  int64_t due; /* > 0: held in the delayed set until then (wall ms) */
} move_arg;

/* A held entry that keeps its count and history: "\377L", the count and
 * the history's length (u32 BE each), the history, the message (the
 * promote script reads it back). */
static char *pack_held(const lmp_broker_msg_t *m, uint32_t count, const char *h, size_t *len)
{
  size_t hl = strlen(h);
  char *p = malloc(10 + hl + m->len);
  if (p == NULL)
    return NULL;
  p[0] = (char)0xff;
  p[1] = 'L';
  for (int i = 0; i < 4; i++) {
    p[2 + i] = (char)(count >> (24 - 8 * i));
    p[6 + i] = (char)((uint32_t)hl >> (24 - 8 * i));
  }
  memcpy(p + 10, h, hl);
  memcpy(p + 10 + hl, m->data, m->len);
  *len = 10 + hl + m->len;
  return p;
}

/* XADD the task to dest with its count and history, then ack and delete. */
static int build_move(lmp_broker_t *b, rconn *r, const void *arg)
{
  const move_arg *a = arg;
  char d[16];
  int cmds = 0;
  snprintf(d, sizeof d, "%u", a->count);
  size_t hl = strlen(a->m->history ? a->m->history : "");
  char *h = malloc(hl + strlen(b->consumer) + (a->reason ? strlen(a->reason) : 0) + 8);
  if (h == NULL)
    return -ENOMEM;
  if (a->reason)
    sprintf(h, "%s%s: %s\n", a->m->history ? a->m->history : "", b->consumer, a->reason);
  else
    strcpy(h, a->m->history ? a->m->history : "");
  if (a->due > 0) {
    size_t pl;
    char *packed = pack_held(a->m, a->count, h, &pl), due[24];
    free(h);
    if (packed == NULL)
      return -ENOMEM;
    snprintf(due, sizeof due, "%lld", (long long)a->due);
    const char *argv[4] = {"ZADD", r->kdelayed, due, packed};
    size_t lens[4] = {4, strlen(r->kdelayed), strlen(due), pl};
    redisAppendCommandArgv(r->c, 4, argv, lens);
    free(packed);
  } else {
    const char *argv[9] = {"XADD", a->dest, "*", "m", a->m->data, "d", d, "h", h};
    size_t lens[9] = {4, strlen(a->dest), 1, 1, a->m->len, 1, strlen(d), 1, strlen(h)};
    redisAppendCommandArgv(r->c, 9, argv, lens);
    free(h);
  }
  cmds++;
  if (a->result)
    cmds += append_result(b, r, a->result, 1);
  if (strcmp(a->dest, r->kstream) == 0) /* a new delivery: lift the replay record */
    cmds += append_unmark(r, a->m->data, a->m->len);
  const char *ids[1] = {a->m->id};
  return cmds + append_ackdel(r, ids, 1);
}

static int release_redis(lmp_broker_t *b, const lmp_broker_msg_t *m, const char *reason,
                         int64_t delay_ms)
{
  rconn *r = b->conn;
  move_arg a = {m,    reason,        r->kstream,
                NULL, m->deliveries, delay_ms > 0 ? lmp__wall_ms() + delay_ms : 0};
  return transact(b, build_move, &a, "releasing a task");
}

static int bury_redis(lmp_broker_t *b, const lmp_broker_msg_t *m, const char *reason,
                      const lmp_broker_done_t *result)
{
  rconn *r = b->conn;
  move_arg a = {m, reason, r->kdead, result, m->deliveries, 0};
  return transact(b, build_move, &a, "dead-lettering a task");
}

static int renew_redis(lmp_broker_t *b, const char *const *ids, int n)
{
  rconn *r = b->conn;
  int rc = ensure(b, r, 5000);
  if (rc < 0)
    return rc;
  argvec a;
  if (argv_init(&a, n + 6) < 0)
    return -ENOMEM;
  const char *head[] = {"XCLAIM", r->kstream, GROUP, b->consumer, "0"};
  for (int i = 0; i < 5; i++)
    argv_push(&a, head[i]);
  for (int i = 0; i < n; i++)
    argv_push(&a, ids[i]);
  argv_push(&a, "JUSTID");
  redisReply *rep = redisCommandArgv(r->c, a.n, a.v, a.len);
  argv_free(&a);
  if (rep == NULL)
    return io_error(b, r, "XCLAIM");
  if (rep->type == REDIS_REPLY_ERROR)
    return reply_error(b, rep, "XCLAIM");
  freeReplyObject(rep);
  return 0;
}

/* Move the held tasks that are due into the stream: read, added and
 * removed in one atomic step, so each enters once however many consumers
 * promote at the same time.  Due by the server's clock. */
static const char PROMOTE_SCRIPT[] =
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, ARGV[1])\n"
    "for _, x in ipairs(due) do\n"
    "  if string.byte(x, 1) == 255 and string.byte(x, 2) == 76 and #x >= 10 then\n"
    "    local d, hl = 0, 0\n"
    "    for i = 3, 6 do d = d * 256 + string.byte(x, i) end\n"
    "    for i = 7, 10 do hl = hl * 256 + string.byte(x, i) end\n"
    "    local h, m = string.sub(x, 11, 10 + hl), string.sub(x, 11 + hl)\n"
    "    redis.call('XADD', KEYS[1], '*', 'm', m, 'd', d, 'h', h)\n"
    "  else\n"
    "    redis.call('XADD', KEYS[1], '*', 'm', x, 'd', '0')\n"
    "  end\n"
    "  redis.call('ZREM', KEYS[2], x)\n"
    "end\n"
    "return #due\n";

static int promote_redis(lmp_broker_t *b, int max)
{
  rconn *r = b->conn;
  char count[16];
  int rc = ensure(b, r, b->patience_ms);
  if (rc < 0)
    return rc;
  snprintf(count, sizeof count, "%d", max);
  redisAppendCommand(r->c, "EVAL %s 2 %s %s %s", PROMOTE_SCRIPT, r->kstream, r->kdelayed, count);
  /* the count of revocations comes along (see revoked_redis) */
  redisAppendCommand(r->c, "GET %s:revoked:n", r->kstream);
  redisReply *reps[2] = {NULL, NULL};
  rc = read_replies(b, r, reps, 2, "promoting held tasks");
  if (rc < 0)
    return rc;
  redisReply *rep = reps[0];
  r->rev_count = reps[1]->type == REDIS_REPLY_STRING ? strtoll(reps[1]->str, NULL, 10) : 0;
  r->rev_known = reps[1]->type != REDIS_REPLY_ERROR;
  freeReplyObject(reps[1]);
  if (rep->type != REDIS_REPLY_INTEGER)
    return reply_error(b, rep, "promoting held tasks");
  int n = (int)rep->integer;
  freeReplyObject(rep);
  return n;
}

/* XGROUP DELCONSUMER name, if it has no pending entries: 1 deleted, 0 not,
 * -1 refused (an ACL without the command: stop trying). */
static int drop_consumer(rconn *r, const char *name)
{
  redisReply *rep = redisCommand(r->c, "XPENDING %s " GROUP " - + 1 %s", r->kstream, name);
  int empty = rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 0;
  int refused = rep && rep->type == REDIS_REPLY_ERROR;
  if (rep)
    freeReplyObject(rep);
  if (!empty)
    return refused ? -1 : 0;
  rep = redisCommand(r->c, "XGROUP DELCONSUMER %s " GROUP " %s", r->kstream, name);
  int rc = rep == NULL ? 0 : rep->type == REDIS_REPLY_ERROR ? -1 : 1;
  if (rep)
    freeReplyObject(rep);
  return rc;
}

/* A field of an XINFO CONSUMERS entry (name, value, name, value...). */
static redisReply *info_field(const redisReply *e, const char *key)
{
  for (size_t i = 0; i + 1 < e->elements; i += 2)
    if (e->element[i]->type == REDIS_REPLY_STRING && strcmp(e->element[i]->str, key) == 0)
      return e->element[i + 1];
  return NULL;
}

/* Delete the consumers of vanished workers: no pending entries, idle past
 * the longer of SWEEP_IDLE_MS and 4 visibility timeouts.  Best-effort, at
 * most every SWEEP_EVERY_MS; errors only stop it. */
static void drop_vanished(lmp_broker_t *b, rconn *r, int64_t vt_ms)
{
  int64_t now = lmp__wall_ms();
  if (r->next_sweep < 0 || now < r->next_sweep)
    return;
  r->next_sweep = now + SWEEP_EVERY_MS;
  int64_t idle_min = 4 * vt_ms > SWEEP_IDLE_MS ? 4 * vt_ms : SWEEP_IDLE_MS;
  redisReply *rep = redisCommand(r->c, "XINFO CONSUMERS %s " GROUP, r->kstream);
  if (rep == NULL || rep->type != REDIS_REPLY_ARRAY) {
    if (rep && rep->type == REDIS_REPLY_ERROR)
      r->next_sweep = -1;
    if (rep)
      freeReplyObject(rep);
    return;
  }
  for (size_t i = 0; i < rep->elements && r->c && !r->c->err; i++) {
    redisReply *e = rep->element[i];
    if (e->type != REDIS_REPLY_ARRAY)
      continue;
    redisReply *name = info_field(e, "name"), *pending = info_field(e, "pending"),
               *idle = info_field(e, "idle");
    if (name == NULL || name->type != REDIS_REPLY_STRING || strcmp(name->str, b->consumer) == 0 ||
        pending == NULL || pending->type != REDIS_REPLY_INTEGER || pending->integer != 0 ||
        idle == NULL || idle->type != REDIS_REPLY_INTEGER || idle->integer < idle_min)
      continue;
    if (drop_consumer(r, name->str) < 0) {
      r->next_sweep = -1;
      break;
    }
  }
  freeReplyObject(rep);
}

static int reclaim_redis(lmp_broker_t *b, int64_t idle_ms, int max, lmp_broker_batch_t *out)
{
  rconn *r = b->conn;
  int rc = ensure(b, r, b->patience_ms);
  if (rc < 0)
    return rc;
  drop_vanished(b, r, idle_ms);
  if (r->c == NULL || r->c->err)
    return io_error(b, r, "XINFO");
  redisReply *rep = redisCommand(r->c, "XPENDING %s " GROUP " IDLE %lld - + %d", r->kstream,
                                 (long long)idle_ms, max > 0 ? max : 1);
  if (rep == NULL)
    return io_error(b, r, "XPENDING");
  if (rep->type != REDIS_REPLY_ARRAY)
    return reply_error(b, rep, "XPENDING");
  int n = (int)rep->elements;
  if (n == 0) {
    freeReplyObject(rep);
    return 0;
  }
  char idle[24];
  snprintf(idle, sizeof idle, "%lld", (long long)idle_ms);
  argvec a;
  uint32_t *counts = malloc(sizeof *counts * (size_t)n);
  if (counts == NULL || argv_init(&a, n + 5) < 0) {
    free(counts);
    freeReplyObject(rep);
    return -ENOMEM;
  }
  const char *head[] = {"XCLAIM", r->kstream, GROUP, b->consumer, idle};
  for (int i = 0; i < 5; i++)
    argv_push(&a, head[i]);
  int k = 0;
  for (int i = 0; i < n; i++) {
    redisReply *e = rep->element[i];
    if (e->type != REDIS_REPLY_ARRAY || e->elements < 4)
      continue;
    argv_push(&a, e->element[0]->str);
    counts[k++] = (uint32_t)e->element[3]->integer;
  }
  redisReply *cl = k ? redisCommandArgv(r->c, a.n, a.v, a.len) : NULL;
  int got = 0;
  if (k && cl == NULL) {
    got = io_error(b, r, "XCLAIM");
  } else if (cl && cl->type != REDIS_REPLY_ARRAY) {
    got = reply_error(b, cl, "XCLAIM");
    cl = NULL;
  } else if (cl) {
    int from = out->n;
    got = add_entries(b, cl, out, 1);
    /* The stream's count before this claim, matched by id. */
    for (int m = from; got > 0 && m < out->n; m++)
      for (int i = 0; i < k; i++)
        if (strcmp(out->msg[m].id, a.v[5 + i]) == 0)
          out->msg[m].deliveries += counts[i];
  }
  if (cl)
    freeReplyObject(cl);
  argv_free(&a);
  free(counts);
  freeReplyObject(rep);
  return got;
}

/* lmp:q:<queue>:vt holds the smallest visibility timeout asked for; it
 * expires a day after the last producer that asked for it opened. */
static int set_visibility_redis(lmp_broker_t *b, int64_t ms)
{
  rconn *r = b->conn;
  int64_t cur = 0;
  int rc = b->e->get_visibility(b, &cur);
  if (rc < 0)
    return rc;
  if (cur > 0 && cur < ms)
    ms = cur;
  redisReply *rep = redisCommand(r->c, "SET %s:vt %lld PX 86400000", r->kstream, (long long)ms);
  if (rep == NULL)
    return io_error(b, r, "SET");
  if (rep->type == REDIS_REPLY_ERROR)
    return reply_error(b, rep, "SET");
  freeReplyObject(rep);
  return 0;
}

static int get_visibility_redis(lmp_broker_t *b, int64_t *ms)
{
  rconn *r = b->conn;
  int rc = ensure(b, r, b->patience_ms);
  if (rc < 0)
    return rc;
  redisReply *rep = redisCommand(r->c, "GET %s:vt", r->kstream);
  if (rep == NULL)
    return io_error(b, r, "GET");
  if (rep->type == REDIS_REPLY_ERROR)
    return reply_error(b, rep, "GET");
  *ms = rep->type == REDIS_REPLY_STRING ? strtoll(rep->str, NULL, 10) : 0;
  freeReplyObject(rep);
  return 0;
}

static int64_t integer_or(const redisReply *rep, int64_t dflt)
{
  return rep->type == REDIS_REPLY_INTEGER ? rep->integer : dflt;
}

/* The stream's entries less those taken (its group's pending count, from
 * the summary form of XPENDING), the held and the dead, in one round trip. */
static int counts_redis(lmp_broker_t *b, lmp_broker_counts_t *c)
{
  rconn *r = b->conn;
  redisReply *reps[4] = {NULL, NULL, NULL, NULL};
  int rc = ensure(b, r, b->cfg.connect_timeout);
  if (rc < 0)
    return rc;
  redisAppendCommand(r->c, "XLEN %s", r->kstream);
  redisAppendCommand(r->c, "XPENDING %s " GROUP, r->kstream);
  redisAppendCommand(r->c, "ZCARD %s", r->kdelayed);
  redisAppendCommand(r->c, "XLEN %s", r->kdead);
  rc = read_replies(b, r, reps, 4, "counting");
  if (rc < 0)
    return rc;
  int64_t entries = integer_or(reps[0], -1);
  /* no group (a queue never served): nothing taken */
  c->taken = reps[1]->type == REDIS_REPLY_ARRAY && reps[1]->elements >= 1
                 ? integer_or(reps[1]->element[0], 0)
                 : 0;
  c->waiting = entries < 0 ? -1 : entries > c->taken ? entries - c->taken : 0;
  c->delayed = integer_or(reps[2], -1);
  c->dead = integer_or(reps[3], -1);
  for (int i = 0; i < 4; i++)
    freeReplyObject(reps[i]);
  return 0;
}

/* === revocation ===
 *
 * A task no consumer has been handed is revoked by setting its replay
 * record, as a take would: every entry of it, waiting or held, is then
 * dropped at take like a replay, and the caller knows at once that it will
 * never run.  One already handed out (its record set) may be running, held
 * unstarted by a worker's prefetch, or back in the stream (a worker gave it
 * back, or its lease lapsed): its revocation is recorded in
 * <queue>:revoked, members "cancel <id>" or "terminate <id>" scored by the
 * task's expiry, and <queue>:revoked:n counts them.  Consumers read the
 * count with every promote (ten times a second) and fetch the set only
 * when it changed, so a queue that never revokes costs them nothing more.
 */

/* KEYS: the set, its count, then each task's replay record; ARGV[1]
 * "cancel" or "terminate", then per task its bit, its expiry (wall ms) and
 * its id.  Per task: 1 if revoked before any consumer had it, 0 if recorded.
 * A record made here expires with its task (a take may set it later). */
/* clang-format off */
static const char REVOKE_SCRIPT[] =
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local function keep(k, at)\n"
    "  local left = redis.call('PTTL', k)\n"
    "  if left < 0 or now + left < at then redis.call('PEXPIREAT', k, at) end\n"
    "end\n"
    "local out, last = {}, 0\n"
    "for i = 3, #KEYS do\n"
    "  local a = 3 * (i - 3) + 1\n"
    "  local at = tonumber(ARGV[a + 2])\n"
    "  if redis.call('SETBIT', KEYS[i], ARGV[a + 1], 1) == 0 then\n"
    "    out[#out + 1] = 1\n"
    "    keep(KEYS[i], at)\n"
    "  else\n"
    "    out[#out + 1] = 0\n"
    "    redis.call('ZADD', KEYS[1], at, ARGV[1] .. ' ' .. ARGV[a + 3])\n"
    "    if at > last then last = at end\n"
    "  end\n"
    "end\n"
    "if last > 0 then\n"
    "  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)\n"
    "  redis.call('INCR', KEYS[2])\n"
    "  keep(KEYS[1], last)\n"
    "  keep(KEYS[2], last)\n"
    "end\n"
    "return out\n";

/* KEYS: the set, its count; ARGV[1] the count the consumer has seen.
 * Returns the count, then, if it differs, the live revocations. */
static const char REVOKED_SCRIPT[] =
    "local n = redis.call('GET', KEYS[2]) or '0'\n"
    "if n == ARGV[1] then return {n} end\n"
    "local t = redis.call('TIME')\n"
    "local out = redis.call('ZRANGEBYSCORE', KEYS[1], t[1] * 1000 + math.floor(t[2] / 1000), '+inf')\n"
    "table.insert(out, 1, n)\n"
    "return out\n";
/* clang-format on */

typedef struct revoke_slot {
  char key[300], bit[24], at[24];
} revoke_slot;

/* See lmp_broker_revoke.  Not retried after a lost connection: a second
 * run would find the records set by the first and answer wrongly. */
static int revoke_redis(lmp_broker_t *b, const char *const *ids, const int64_t *expires_ms, int n,
                        int terminate, int *before)
{
  rconn *r = b->conn;
  char kset[320], kcount[330], nkeys[16];
  snprintf(kset, sizeof kset, "%s:revoked", r->kstream);
  snprintf(kcount, sizeof kcount, "%s:revoked:n", r->kstream);
  snprintf(nkeys, sizeof nkeys, "%d", n + 2);
  revoke_slot *s = calloc((size_t)n, sizeof *s);
  argvec a;
  if (s == NULL || argv_init(&a, 6 + 4 * n) < 0) {
    free(s);
    return -ENOMEM;
  }
  int rc = 0;
  const char *head[] = {"EVAL", REVOKE_SCRIPT, nkeys, kset, kcount};
  for (int i = 0; i < 5; i++)
    argv_push(&a, head[i]);
  for (int i = 0; i < n && rc == 0; i++) {
    const char *dot = strrchr(ids[i], '.');
    char *end;
    unsigned long long seq = dot && dot > ids[i] && dot[1] ? strtoull(dot + 1, &end, 10) : 0;
    if (dot == NULL || dot == ids[i] || dot[1] == 0 || *end)
      rc = lmp__broker_fail(b, -EINVAL, "cannot revoke '%s': not a task id", ids[i]);
    snprintf(s[i].key, sizeof s[i].key, "lmp:c:%.*s:t:%llu", (int)(dot ? dot - ids[i] : 0), ids[i],
             seq / CHUNK);
    snprintf(s[i].bit, sizeof s[i].bit, "%llu", seq % CHUNK);
    snprintf(s[i].at, sizeof s[i].at, "%lld", (long long)expires_ms[i]);
    argv_push(&a, s[i].key);
  }
  argv_push(&a, terminate ? "terminate" : "cancel");
  for (int i = 0; i < n; i++) {
    argv_push(&a, s[i].bit);
    argv_push(&a, s[i].at);
    argv_push(&a, ids[i]);
  }
  if (rc == 0)
    rc = ensure(b, r, b->patience_ms);
  if (rc < 0)
    goto out;
  redisReply *rep = redisCommandArgv(r->c, a.n, a.v, a.len);
  if (rep == NULL) {
    rc = io_error(b, r, "revoking tasks");
  } else if (rep->type != REDIS_REPLY_ARRAY || rep->elements != (size_t)n) {
    rc = reply_error(b, rep, "revoking tasks");
  } else {
    for (int i = 0; i < n; i++)
      before[i] = rep->element[i]->type == REDIS_REPLY_INTEGER && rep->element[i]->integer == 1;
    freeReplyObject(rep);
  }
out:
  argv_free(&a);
  free(s);
  return rc;
}

/* See lmp_broker_revoked. */
static int revoked_redis(lmp_broker_t *b, int64_t *gen, lmp_broker_batch_t *out)
{
  rconn *r = b->conn;
  int known = r->rev_known;
  r->rev_known = 0;
  if (known && r->rev_count == *gen)
    return 0;
  int rc = ensure(b, r, b->patience_ms);
  if (rc < 0)
    return rc;
  char kset[320], kcount[330];
  snprintf(kset, sizeof kset, "%s:revoked", r->kstream);
  snprintf(kcount, sizeof kcount, "%s:revoked:n", r->kstream);
  redisReply *rep =
      redisCommand(r->c, "EVAL %s 2 %s %s %lld", REVOKED_SCRIPT, kset, kcount, (long long)*gen);
  if (rep == NULL)
    return io_error(b, r, "reading revocations");
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
      rep->element[0]->type != REDIS_REPLY_STRING)
    return reply_error(b, rep, "reading revocations");
  int64_t n = strtoll(rep->element[0]->str, NULL, 10);
  rc = n != *gen;
  for (size_t i = 1; i < rep->elements && rc > 0; i++) {
    redisReply *e = rep->element[i];
    lmp_broker_msg_t *m = e->type == REDIS_REPLY_STRING ? lmp__broker_push(out) : NULL;
    if (e->type != REDIS_REPLY_STRING)
      continue;
    if (m == NULL || (m->data = malloc(e->len + 1)) == NULL) {
      rc = -ENOMEM;
      break;
    }
    memcpy(m->data, e->str, e->len);
    m->data[e->len] = 0;
    m->len = e->len;
  }
  freeReplyObject(rep);
  if (rc > 0)
    *gen = n;
  return rc;
}

/* === registry === */

static int heartbeat_redis(lmp_broker_t *b, const char *info, const char *running, int64_t ttl_ms)
{
  rconn *r = b->conn;
  redisReply *reps[3] = {NULL, NULL, NULL};
  int rc = ensure(b, r, 2000);
  if (rc < 0)
    return rc;
  long long exp = (long long)(lmp__wall_ms() + ttl_ms);
  redisAppendCommand(r->c, "HSET %s info %s running %s queue %s", r->kself, info, running,
                     b->cfg.queue);
  redisAppendCommand(r->c, "PEXPIRE %s %lld", r->kself, (long long)ttl_ms);
  redisAppendCommand(r->c, "ZADD %s %lld %s", r->kworkers, exp, b->consumer);
  rc = read_replies(b, r, reps, 3, "heartbeat");
  if (rc < 0)
    return rc;
  for (int i = 0; i < 3; i++)
    freeReplyObject(reps[i]);
  return 0;
}

/* The live workers: the expired ones dropped and the names read in one
 * round trip, then every heartbeat in a second. */
static int workers_redis(lmp_broker_t *b, lmp_broker_batch_t *out)
{
  rconn *r = b->conn;
  redisReply *reps[2] = {NULL, NULL};
  char now[24];
  int rc = ensure(b, r, b->cfg.connect_timeout);
  if (rc < 0)
    return rc;
  snprintf(now, sizeof now, "%lld", (long long)lmp__wall_ms());
  redisAppendCommand(r->c, "ZREMRANGEBYSCORE %s -inf %s", r->kworkers, now);
  redisAppendCommand(r->c, "ZRANGE %s 0 -1", r->kworkers);
  rc = read_replies(b, r, reps, 2, "ZRANGE");
  if (rc < 0)
    return rc;
  freeReplyObject(reps[0]);
  redisReply *names = reps[1];
  if (names->type != REDIS_REPLY_ARRAY)
    return reply_error(b, names, "ZRANGE");
  for (size_t i = 0; i < names->elements; i++)
    redisAppendCommand(r->c, "HMGET lmp:w:%s info running", names->element[i]->str);
  int n = 0;
  for (size_t i = 0; i < names->elements; i++) {
    void *x = NULL;
    if (redisGetReply(r->c, &x) != REDIS_OK || x == NULL) {
      freeReplyObject(names);
      return io_error(b, r, "HMGET");
    }
    redisReply *h = x;
    lmp_broker_msg_t *m = NULL;
    if (h->type == REDIS_REPLY_ARRAY && h->elements == 2 &&
        h->element[0]->type == REDIS_REPLY_STRING && rc == 0) {
      if ((m = lmp__broker_push(out)) == NULL) {
        rc = -ENOMEM; /* the other replies are still read */
      } else {
        snprintf(m->id, sizeof m->id, "%s", names->element[i]->str);
        m->data = strndup(h->element[0]->str, h->element[0]->len);
        m->len = h->element[0]->len;
        m->history = h->element[1]->type == REDIS_REPLY_STRING
                         ? strndup(h->element[1]->str, h->element[1]->len)
                         : strdup("");
        n++;
      }
    }
    freeReplyObject(h);
  }
  freeReplyObject(names);
  return rc < 0 ? rc : n;
}

static int unregister_redis(lmp_broker_t *b)
{
  rconn *r = b->conn;
  redisReply *reps[2] = {NULL, NULL};
  int rc = ensure(b, r, 1000);
  if (rc < 0)
    return rc;
  redisAppendCommand(r->c, "DEL %s", r->kself);
  redisAppendCommand(r->c, "ZREM %s %s", r->kworkers, b->consumer);
  rc = read_replies(b, r, reps, 2, "unregister");
  if (rc < 0)
    return rc;
  freeReplyObject(reps[0]);
  freeReplyObject(reps[1]);
  drop_consumer(r, b->consumer); /* kept while it has entries: a reclaim takes those */
  return 0;
}

/* === the notifier ===
 *
 * An event loop wants a descriptor that turns readable when results come.
 * The results connection cannot be it (it is busy with whatever the pool
 * does next), so the notifier's own connection is parked in XREAD BLOCK on
 * the caller's results stream after the last id the reader has read: its
 * reply is the wake-up (a stream is read without being consumed, so the
 * two never race).  The descriptor handed out is an epoll set holding that
 * socket and a timerfd, so it stays the same across reconnections; while no
 * XREAD is parked (the server is away, or the ACL refuses it) the timer
 * ticks every WAKE_RETRY_MS instead, as a plain poll would.  The pool calls
 * notify_reset_redis before reading results: the XREAD parked then starts
 * from before that read, which only makes one wake-up too many.
 */

static void notifier_free(notifier *n)
{
  if (n == NULL)
    return;
  drop(&n->w);
  if (n->epfd >= 0)
    close(n->epfd);
  if (n->tfd >= 0)
    close(n->tfd);
  free(n);
}

static void notifier_tick(notifier *n, int on)
{
  struct itimerspec its = {{0, 0}, {0, 0}};
  if (on)
    its.it_value.tv_nsec = its.it_interval.tv_nsec = WAKE_RETRY_MS * 1000000L;
  timerfd_settime(n->tfd, 0, &its, NULL);
}

/* Park an XREAD on the results, connecting first if need be; on failure
 * the timer ticks instead. */
static void notifier_arm(lmp_broker_t *b, notifier *n)
{
  char err[sizeof b->err];
  memcpy(err, b->err, sizeof err); /* the notifier's troubles are not the pool's */
  n->armed = 0;
  if (!n->refused && (n->w.c == NULL || n->w.c->err) && lmp_now_ns() >= n->next_try) {
    drop(&n->w);
    n->next_try = lmp_now_ns() + 1000 * (int64_t)1000000; /* once a second while it fails */
    if (connect_once(b, &n->w, 200) == 0) {
      struct epoll_event ev = {.events = EPOLLIN};
      if (epoll_ctl(n->epfd, EPOLL_CTL_ADD, n->w.c->fd, &ev) < 0)
        drop(&n->w);
    }
  }
  if (!n->refused && n->w.c && !n->w.c->err) {
    rconn *r = b->conn;
    redisAppendCommand(n->w.c, "XREAD COUNT 1 BLOCK 0 STREAMS %s %s", n->key,
                       strcmp(r->rkey, n->key) == 0 ? r->rlast : "0-0");
    n->armed = send_all(b, &n->w, "XREAD") == 0; /* on failure the connection is dropped */
  }
  notifier_tick(n, !n->armed);
  memcpy(b->err, err, sizeof err);
}

static int notify_fd_redis(lmp_broker_t *b, const char *caller)
{
  rconn *r = b->conn;
  if (r->wake)
    return r->wake->epfd;
  notifier *n = calloc(1, sizeof *n);
  if (n == NULL)
    return -ENOMEM;
  n->epfd = epoll_create1(EPOLL_CLOEXEC);
  n->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  struct epoll_event ev = {.events = EPOLLIN};
  if (n->epfd < 0 || n->tfd < 0 || epoll_ctl(n->epfd, EPOLL_CTL_ADD, n->tfd, &ev) < 0) {
    int rc = -errno;
    notifier_free(n);
    return rc;
  }
  /* the same server, database and credentials (owned by r) */
  snprintf(n->w.host, sizeof n->w.host, "%s", r->host);
  n->w.port = r->port;
  n->w.db = r->db;
  n->w.user = r->user;
  n->w.pass = r->pass;
  snprintf(n->w.kstream, sizeof n->w.kstream, "%s", r->kstream);
  snprintf(n->key, sizeof n->key, "lmp:c:%s", caller);
  r->wake = n;
  notifier_arm(b, n);
  return n->epfd;
}

static int notify_reset_redis(lmp_broker_t *b)
{
  rconn *r = b->conn;
  notifier *n = r->wake;
  if (n == NULL)
    return 0;
  uint64_t ticks;
  if (read(n->tfd, &ticks, sizeof ticks) < 0 && errno != EAGAIN)
    return -errno;
  if (n->armed) {
    struct pollfd pfd = {n->w.c->fd, POLLIN, 0};
    if (poll(&pfd, 1, 0) <= 0)
      return 0; /* still parked: nothing came */
    void *rep = NULL;
    if (redisBufferRead(n->w.c) != REDIS_OK || redisGetReplyFromReader(n->w.c, &rep) != REDIS_OK) {
      drop(&n->w); /* closing the socket takes it out of the epoll set */
    } else if (rep == NULL) {
      return 0; /* part of the reply */
    } else {
      redisReply *x = rep;
      int refused = x->type == REDIS_REPLY_ERROR;
      if (refused) {
        n->refused = strncmp(x->str, "NOPERM", 6) == 0; /* no XREAD for this user: tick */
        drop(&n->w);
      }
      freeReplyObject(rep);
      if (!refused) {
        n->armed = 0; /* parked again by the read that follows, after what it reads */
        return 0;
      }
    }
  }
  notifier_arm(b, n);
  return 0;
}

const lmp__broker_engine_t lmp__broker_redis = {
    .scheme = "redis",
    .open = open_redis,
    .close = close_redis,
    .fileno = fileno_redis,
    .put = put_redis,
    .flush = flush_redis,
    .results = results_redis,
    .take = take_redis,
    .promote = promote_redis,
    .take_send = take_send_redis,
    .take_recv = take_recv_redis,
    .take_cancel = take_cancel_redis,
    .state = state_redis,
    .settle = settle_redis,
    .complete = complete_redis,
    .release = release_redis,
    .bury = bury_redis,
    .renew = renew_redis,
    .reclaim = reclaim_redis,
    .set_visibility = set_visibility_redis,
    .get_visibility = get_visibility_redis,
    .counts = counts_redis,
    .heartbeat = heartbeat_redis,
    .workers = workers_redis,
    .unregister = unregister_redis,
    .notify_fd = notify_fd_redis,
    .notify_reset = notify_reset_redis,
    .revoke = revoke_redis,
    .revoked = revoked_redis,
};

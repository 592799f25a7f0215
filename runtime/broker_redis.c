/*
 * broker_redis.c -- the broker on Redis Streams, through hiredis 0.14.
 *
 * Keys (all under "lmp:", so an ACL user can be limited to ~lmp:*; every key
 * of a queue is tagged "{<queue>}" so that a Redis Cluster keeps them in one
 * hash slot, where the scripts and transactions that span them can run):
 *   lmp:{<queue>}           the task stream, read through consumer group "lmp"
 *   lmp:{<queue>}:dead      dead-lettered tasks with their history
 *   lmp:{<queue>}:vt        the queue's visibility timeout in ms (the smallest asked)
 *   lmp:{<queue>}:epoch     the queue's identity, made anew with its group
 *   lmp:{<queue>}:delayed   tasks held until they are due (a sorted set of the
 *                           messages by due time, wall ms; see promote_redis)
 *   lmp:{<queue>}:revoked   revocations of tasks already handed out, by expiry
 *                           (a sorted set), and :revoked:n their count (see
 *                           revoke_redis)
 *   lmp:{<queue>}:c:<caller>  the results a caller has yet to collect (a
 *                           stream; see results_redis for how it is read),
 *                           kept the result_ttl its tasks carry
 *   ...:c:<caller>:n        how many tasks the caller has put (see state_redis)
 *   ...:c:<caller>:t:<k>    replay records: bit i is set once the task of
 *                           seq k*65536+i has been handed to a worker
 *   ...:c:<caller>:lo       every task of a seq below this is settled
 *   lmp:{<queue>}:w:<consumer>  a live worker's heartbeat (a hash that expires:
 *                           its info, running ids and when it was sent)
 *   lmp:{<queue>}:workers   who has sent heartbeats, scored by expiry time
 * A caller that ends (settle_redis, final) deletes its own keys but
 * ...:c:<caller>:lo, which lives as long as one of its tasks could be
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
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

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
  int fresh; /* a new connection: own pending entries first */
  /* Redis Cluster (redis+cluster://): the URL's nodes, "host:port,...",
   * owned by the broker's main connection; the node tried when the one in
   * use fails; and what the last redirection said (see cluster_string) */
  struct nodelist *seeds;
  int cluster, redirect, redirects;
  char to_host[256];
  int to_port;
  int64_t sock_ms;    /* the socket timeout set */
  int64_t next_sweep; /* wall ms of the next sweep of vanished consumers; -1: not allowed */
  char kstream[300], kdead[310], kdelayed[320], kworkers[320], kself[480], kcount[480];
  /* results: the caller's stream and the last id read from it */
  char rkey[480], rlast[48];
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
  struct nodelist *sent; /* redis+sentinel://: whom to ask for the master (else NULL) */
  unsigned gen, wrote;   /* connections made; that of the oldest write not waited for */
  /* rediss://: the broker's TLS context (the notifier's connection borrows
   * it) and this connection's session; NULL on redis:// */
  SSL_CTX *tls;
  SSL *ssl;
  /* priorities and the rate limit (see "priorities" below) */
  char klevel[LMP_BROKER_PRIORITIES][320], kprios[320], krate[320], khold[320];
  unsigned char *putlvl; /* each put's priority */
  unsigned announced;    /* levels this producer announced on this connection (bit p) */
  unsigned levels;       /* levels > 0 in use, as the last take saw them (bit p) */
  int extended;          /* the last take saw levels or a rate limit: the waiter only waits */
  int tpeek;             /* the waiter in flight is such a one */
  char plast[LMP_BROKER_PRIORITIES][48]; /* each level's last delivered id */
  int64_t hold_until;                    /* monotonic ns: the bucket has no token before this */
  int64_t rev_count;                     /* the queue's count of revocations, read by promote */
  int rev_known;                         /* ... and not yet looked at by revoked_redis */
} rconn;

/* A producer's descriptor for event loops (see notify_fd_redis). */
typedef struct notifier {
  int epfd, tfd;
  struct rconn w; /* its own connection, parked in XREAD on the results */
  int armed, refused;
  int64_t next_try; /* no connection attempt before this (monotonic ns) */
  char key[480];
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

/* host[:port] or [v6][:port], n bytes at s, into host and *port (which
 * keeps its default without a port); 0, or the URL's fault in words. */
static const char *parse_hostport(const char *s, size_t n, char *host, size_t hostlen, int *port)
{
  char buf[256];
  if (n == 0 || n >= sizeof buf || n >= hostlen)
    return "no host";
  memcpy(buf, s, n);
  buf[n] = 0;
  char *h = buf, *colon = strrchr(buf, ':');
  if (*h == '[') {
    char *close = strchr(h, ']');
    if (close == NULL || close == h + 1 || (close[1] && close[1] != ':'))
      return "bad IPv6 address";
    *close = 0;
    colon = close[1] ? close + 1 : NULL;
    h++;
  }
  if (colon) {
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p <= 0 || p > 65535)
      return "bad port";
    *port = (int)p;
    *colon = 0;
  }
  if (*h == 0)
    return "no host";
  snprintf(host, hostlen, "%s", h);
  return NULL;
}

/* The nodes a URL names, host[:port],host[:port],... (the sentinels of
 * redis+sentinel://, the cluster nodes of redis+cluster://). */
#define MAX_NODES 16

typedef struct nodelist {
  int n, cur; /* how many; the one to ask first */
  char host[MAX_NODES][256];
  int port[MAX_NODES];
  char master[128]; /* redis+sentinel://: the master's name */
} nodelist;

/* The nodes from p to end, each port dflt unless given, into a new list
 * (*out); 0 or the URL's fault as -EINVAL, in b's error. */
static int parse_nodes(lmp_broker_t *b, const char *shown, const char *p, const char *end, int dflt,
                       const char *what, nodelist **out)
{
  nodelist *l = *out = calloc(1, sizeof *l);
  if (l == NULL)
    return -ENOMEM;
  if (end == p)
    return lmp__broker_fail(b, -EINVAL, "bad broker URL '%s' (no %s host)", shown, what);
  for (const char *why = NULL; p <= end; p++) {
    const char *comma = memchr(p, ',', (size_t)(end - p)), *stop = comma ? comma : end;
    if (l->n == MAX_NODES)
      return lmp__broker_fail(b, -EINVAL, "bad broker URL '%s' (more than %d %s hosts)", shown,
                              MAX_NODES, what);
    l->port[l->n] = dflt;
    why = parse_hostport(p, (size_t)(stop - p), l->host[l->n], sizeof l->host[0], &l->port[l->n]);
    if (why)
      return lmp__broker_fail(b, -EINVAL, "bad broker URL '%s' (%s)", shown, why);
    l->n++;
    p = stop;
  }
  return 0;
}

/* The credentials of a URL's rest p, [user]:pass@ or pass@ before its
 * path, into r: p past them. */
static const char *parse_cred(rconn *r, const char *p)
{
  const char *slash = strchr(p, '/'), *at = strrchr(p, '@');
  if (at == NULL || (slash && at > slash))
    return p;
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
  return at + 1;
}

/* The i-th node of a cluster URL's into r->host and r->port. */
static void use_seed(rconn *r, int i)
{
  r->seeds->cur = i;
  snprintf(r->host, sizeof r->host, "%s", r->seeds->host[i]);
  r->port = r->seeds->port[i];
}

static int tls_params(lmp_broker_t *b, rconn *r, const char *q);

/* redis://[[user]:pass@]host[:port][/db] (host may be an IPv6 address in
 * []); or redis+cluster://[[user]:pass@]host[:port],host[:port].../ (a
 * Redis Cluster, found through any of its nodes; database 0 only); each
 * over TLS as rediss:// and rediss+cluster://, ...[?ca=...] (see
 * tls_params). */
static int parse_url(lmp_broker_t *b, rconn *r)
{
  const char *p = strstr(b->url, "://") + 3, *slash, *q = lmp__broker_url_query(b->url);
  char shown[200], base[1024];
  lmp__broker_url_shown(b->url, shown, sizeof shown);
  if (q && (size_t)(q - p) >= sizeof base)
    return lmp__broker_fail(b, -EINVAL, "bad broker URL '%s' (too long)", shown);
  if (q) { /* the rest reads the URL up to its query */
    memcpy(base, p, (size_t)(q - p));
    base[q - p] = 0;
    p = base;
  }
  r->cluster =
      strncmp(b->url, "redis+cluster://", 16) == 0 || strncmp(b->url, "rediss+cluster://", 17) == 0;
  r->port = 6379;
  r->db = 0;
  p = parse_cred(r, p);
  slash = strchr(p, '/');
  size_t n = slash ? (size_t)(slash - p) : strlen(p);
  if (r->cluster) {
    int rc = parse_nodes(b, shown, p, p + n, 6379, "cluster", &r->seeds);
    if (rc < 0)
      return rc;
    use_seed(r, 0);
  } else {
    const char *why = parse_hostport(p, n, r->host, sizeof r->host, &r->port);
    if (why)
      return lmp__broker_fail(b, -EINVAL, "bad broker URL '%s' (%s)", shown, why);
  }
  if (slash && slash[1]) {
    char *end;
    long db = strtol(slash + 1, &end, 10);
    if (*end || db < 0 || db > 100000)
      return lmp__broker_fail(b, -EINVAL, "bad broker URL '%s' (bad database number)", shown);
    if (db && r->cluster)
      return lmp__broker_fail(b, -EINVAL,
                              "bad broker URL '%s' (a Redis Cluster has database 0 only)", shown);
    r->db = (int)db;
  }
  return tls_params(b, r, q);
}

/* === Redis Cluster ===
 *
 * Every key of a queue carries its hash tag, so the queue lives in one
 * slot and one node serves all of a connection's commands: the broker
 * talks to that node alone, and a reply that says the slot is elsewhere
 * (MOVED), or is moving (ASK, TRYAGAIN) or unserved (CLUSTERDOWN), is
 * taken as a lost connection.  Every operation already survives one: it
 * is made again on a new connection, and nothing it did is lost or done
 * twice that a reconnection would not lose or do twice.  The new
 * connection goes where MOVED said, or after a short wait to the same
 * node; a node that cannot be reached gives way to the next of the URL's.
 * The redirection is seen in the reply reader (cluster_string), before any
 * call site: it fails the read, so each site takes its usual path.
 */
enum { REDIRECT_NONE, REDIRECT_MOVED, REDIRECT_WAIT };

static redisReplyObjectFunctions cluster_fn;
static void *(*plain_string)(const redisReadTask *, char *, size_t);
static pthread_once_t cluster_once = PTHREAD_ONCE_INIT;
static const redisReplyObjectFunctions *plain_fn;

static int redirection(rconn *r, const char *s, size_t n)
{
  if (n > 6 && strncmp(s, "MOVED ", 6) == 0) {
    const char *addr = strchr(s + 6, ' ');
    if (addr == NULL)
      return 0;
    addr++;
    r->to_port = 6379;
    if (parse_hostport(addr, n - (size_t)(addr - s), r->to_host, sizeof r->to_host, &r->to_port))
      return 0;
    r->redirect = REDIRECT_MOVED;
    return 1;
  }
  /* a script finds the caller's keys gone before the slot has moved */
  if (strncmp(s, "ASK ", 4) == 0 || strncmp(s, "TRYAGAIN", 8) == 0 ||
      strncmp(s, "CLUSTERDOWN", 11) == 0 || memmem(s, n, "non local key", 13)) {
    r->redirect = REDIRECT_WAIT;
    return 1;
  }
  return 0;
}

static void *cluster_string(const redisReadTask *t, char *s, size_t n)
{
  if (t->type == REDIS_REPLY_ERROR && t->parent == NULL && t->privdata &&
      redirection(t->privdata, s, n))
    return NULL; /* the reader fails; the connection is taken for lost */
  return plain_string(t, s, n);
}

static void cluster_init(void)
{
  cluster_fn = *plain_fn;
  plain_string = plain_fn->createString;
  cluster_fn.createString = cluster_string;
}

/* A new connection of a cluster broker reads redirections. */
static void cluster_reader(rconn *r)
{
  plain_fn = r->c->reader->fn;
  pthread_once(&cluster_once, cluster_init);
  r->c->reader->fn = &cluster_fn;
  r->c->reader->privdata = r;
}

/* Where the next connection goes, and how long to wait first (ms). */
static int64_t cluster_next(rconn *r, int failed)
{
  int64_t wait = 0;
  if (r->redirect == REDIRECT_MOVED && r->redirects < 16) {
    snprintf(r->host, sizeof r->host, "%s", r->to_host);
    r->port = r->to_port;
    r->redirects++;
  } else if (r->redirect == REDIRECT_WAIT) {
    wait = 20;
  } else if (failed && r->seeds) {
    use_seed(r, (r->seeds->cur + 1) % r->seeds->n);
  }
  r->redirect = REDIRECT_NONE;
  return wait;
}

static void drop(rconn *r)
{
  if (r->ssl)
    SSL_free(r->ssl); /* the socket is hiredis's to close */
  r->ssl = NULL;
  if (r->c) {
    if (r->c->reader->fn == &cluster_fn)
      r->c->reader->fn = (redisReplyObjectFunctions *)plain_fn;
    redisFree(r->c);
  }
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
  int rc;
  if (r->redirect == REDIRECT_MOVED)
    rc = lmp__broker_fail(b, -ECONNRESET, "%s: the queue's slot moved to %s:%d (redis at %s:%d)",
                          what, r->to_host, r->to_port, r->host, r->port);
  else if (r->redirect == REDIRECT_WAIT)
    rc = lmp__broker_fail(b, -ECONNRESET, "%s: the queue's slot is moving (redis at %s:%d)", what,
                          r->host, r->port);
  else
    rc = lmp__broker_fail(b, -ECONNRESET, "%s: %s (redis at %s:%d)", what,
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

static void *rc_command(rconn *r, const char *fmt, ...); /* see TLS below */

/* === sentinels === */

/*
 * redis+sentinel://[[user]:pass@]s1[:26379],...,sN/master[/db]: the data
 * node is whichever the sentinels name master of `master`.  Each connection
 * (connect_once) first asks them (resolve_master), each in turn from the
 * last one that answered, then checks that the node named is a master
 * (check_role): a sentinel that has not heard of a failover yet, or a master
 * demoted since, fails the attempt with -EAGAIN and ensure asks again after
 * its backoff.  A lost connection is made anew the same way, so every
 * connection (the caller's, its notifier's, a worker's two, the lease
 * keeper's) follows a failover.  The URL's password is the data node's;
 * the sentinels are asked without one.
 */
#define SENTINEL_PORT 26379

/* redis+sentinel://[[user]:pass@]s1[:port],s2.../master[/db] into r. */
static int parse_sentinel_url(lmp_broker_t *b, rconn *r)
{
  const char *p = b->url + strlen("redis+sentinel://"), *slash;
  char shown[200];
  lmp__broker_url_shown(b->url, shown, sizeof shown);
  p = parse_cred(r, p);
  slash = strchr(p, '/');
  if (strchr(p, '?'))
    return lmp__broker_fail(b, -EINVAL, "bad broker URL '%s' (no options are supported)", shown);
  int rc =
      parse_nodes(b, shown, p, slash ? slash : p + strlen(p), SENTINEL_PORT, "sentinel", &r->sent);
  if (rc < 0)
    return rc;
  nodelist *s = r->sent;
  const char *name = slash ? slash + 1 : "", *dbs = strchr(name, '/');
  size_t namelen = dbs ? (size_t)(dbs - name) : strlen(name);
  if (namelen == 0 || namelen >= sizeof s->master)
    return lmp__broker_fail(b, -EINVAL,
                            "bad broker URL '%s' (no master name: "
                            "redis+sentinel://host[:26379],.../master[/db])",
                            shown);
  memcpy(s->master, name, namelen);
  if (dbs && dbs[1]) {
    char *e;
    long db = strtol(dbs + 1, &e, 10);
    if (*e || db < 0 || db > 100000)
      return lmp__broker_fail(b, -EINVAL, "bad broker URL '%s' (bad database number)", shown);
    r->db = (int)db;
  }
  snprintf(r->host, sizeof r->host, "%s", s->host[0]); /* until a sentinel names the master */
  r->port = s->port[0];
  return 0;
}

/* One sentinel's answer for the master's address, into r: 0; 1 when it
 * knows no master of that name; -1 when it gave no usable answer (why). */
static int ask_sentinel(nodelist *s, int i, rconn *r, int64_t timeout_ms, char *why, size_t whylen)
{
  redisContext *c = redisConnectWithTimeout(s->host[i], s->port[i], tv_ms(timeout_ms));
  redisReply *rep = NULL;
  int rc = -1;
  if (c == NULL) {
    snprintf(why, whylen, "cannot allocate a redis context");
    return -1;
  }
  if (!c->err) {
    fcntl(c->fd, F_SETFD, FD_CLOEXEC);
    redisSetTimeout(c, tv_ms(timeout_ms));
    rep = redisCommand(c, "SENTINEL get-master-addr-by-name %s", s->master);
  }
  if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
      rep->element[0]->type == REDIS_REPLY_STRING && rep->element[1]->type == REDIS_REPLY_STRING) {
    snprintf(r->host, sizeof r->host, "%s", rep->element[0]->str);
    r->port = atoi(rep->element[1]->str);
    rc = 0;
  } else {
    rc = rep && rep->type == REDIS_REPLY_NIL ? 1 : -1;
    snprintf(why, whylen, "sentinel %s:%d: %s", s->host[i], s->port[i],
             c->err                           ? c->errstr
             : rep == NULL                    ? "no answer"
             : rep->type == REDIS_REPLY_NIL   ? "no master of that name"
             : rep->type == REDIS_REPLY_ERROR ? rep->str
                                              : "unexpected reply");
  }
  freeReplyObject(rep);
  redisFree(c);
  return rc;
}

/* Ask the sentinels where the master is (see above); 0, -EPROTO when none
 * knows the name (and none was unreachable), -ECONNREFUSED when none
 * answered with an address. */
static int resolve_master(lmp_broker_t *b, rconn *r, int64_t timeout_ms)
{
  nodelist *s = r->sent;
  char why[300] = "";
  int unknown = 0;
  for (int k = 0; k < s->n; k++) {
    int i = (s->cur + k) % s->n;
    int rc = ask_sentinel(s, i, r, timeout_ms, why, sizeof why);
    if (rc == 0) {
      s->cur = i;
      return 0;
    }
    unknown += rc == 1;
  }
  if (unknown > 0)
    return lmp__broker_fail(b, -EPROTO, "no sentinel knows a master named '%s' (%d of %d asked)",
                            s->master, unknown, s->n);
  return lmp__broker_fail(b, -ECONNREFUSED,
                          "cannot reach the broker: no sentinel named the master of '%s' (%d "
                          "asked; last %s)",
                          s->master, s->n, why);
}

/* Whether the node the sentinels named is a master (ROLE): 0, or -EAGAIN
 * (the connection dropped) when it is not, or not yet.  A user whose ACL
 * denies ROLE gets an error reply, taken for a master. */
static int check_role(lmp_broker_t *b, rconn *r)
{
  redisReply *rep = rc_command(r, "ROLE");
  if (rep == NULL)
    return io_error(b, r, "ROLE");
  char role[32] = "master";
  if (rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 &&
      rep->element[0]->type == REDIS_REPLY_STRING)
    snprintf(role, sizeof role, "%s", rep->element[0]->str);
  freeReplyObject(rep);
  if (strcmp(role, "master") == 0)
    return 0;
  drop(r);
  return lmp__broker_fail(b, -EAGAIN,
                          "the sentinels named %s:%d master of '%s', but it is a %s (a failover "
                          "under way); asking again",
                          r->host, r->port, r->sent->master, role);
}

/* === TLS ===
 *
 * rediss:// connections.  hiredis 0.14 has no TLS, so it keeps what it does
 * without I/O (formatting commands into c->obuf, parsing replies in
 * c->reader) and OpenSSL moves the bytes: after hiredis's TCP connect the
 * socket turns nonblocking, SSL_connect checks the server's certificate
 * against the CA and the URL's host (also sent as SNI), and the rc_*
 * wrappers read and write through SSL, waiting in poll for the socket
 * timeout.  Every read drains what SSL has decrypted into the reader, so
 * no reply waits inside SSL where a poll on the descriptor (the worker's,
 * the notifier's) cannot see it.  The SSL_CTX, with the CA and the client
 * certificate, is made once per broker object and shared with its
 * notifier's connection.
 */

/* The reason of OpenSSL's last error, then its queue cleared. */
static const char *tls_reason(void)
{
  const char *s = ERR_reason_error_string(ERR_peek_last_error());
  ERR_clear_error();
  return s ? s : "unknown error";
}

/* The TLS context of the broker's connections (r->tls), from the files of
 * the CA (NULL: the system's), of the client certificate and its key. */
static int tls_context(lmp_broker_t *b, rconn *r, const char *ca, const char *cert, const char *key)
{
  const char *what[3] = {"CA", "certificate", "key"}, *path[3] = {ca, cert, key}, *bad = NULL;
  int i;
  if ((cert == NULL) != (key == NULL))
    return lmp__broker_fail(b, -EINVAL,
                            "a TLS client certificate goes with its key: give both cert= and "
                            "key= (or LMP_REDIS_CERT and LMP_REDIS_KEY)");
  for (i = 0; i < 3; i++) {
    FILE *f = path[i] ? fopen(path[i], "r") : NULL;
    if (path[i] && f == NULL)
      return lmp__broker_fail(b, -errno, "cannot read the TLS %s file '%s': %s", what[i], path[i],
                              strerror(errno));
    if (f)
      fclose(f);
  }
  ERR_clear_error();
  r->tls = SSL_CTX_new(TLS_client_method());
  if (r->tls == NULL)
    return lmp__broker_fail(b, -ENOMEM, "cannot make a TLS context: %s", tls_reason());
  SSL_CTX_set_min_proto_version(r->tls, TLS1_2_VERSION);
  SSL_CTX_set_verify(r->tls, SSL_VERIFY_PEER, NULL);
  SSL_CTX_set_mode(r->tls, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_default_passwd_cb(r->tls, NULL);
  SSL_CTX_set_default_passwd_cb_userdata(r->tls, NULL);
  if (ca ? SSL_CTX_load_verify_locations(r->tls, ca, NULL) != 1
         : SSL_CTX_set_default_verify_paths(r->tls) != 1)
    i = 0, bad = "holds no usable certificate";
  else if (cert && SSL_CTX_use_certificate_chain_file(r->tls, cert) != 1)
    i = 1, bad = "holds no usable certificate";
  else if (key && SSL_CTX_use_PrivateKey_file(r->tls, key, SSL_FILETYPE_PEM) != 1)
    i = 2, bad = "holds no usable key (an unencrypted PEM key is needed)";
  else if (key && SSL_CTX_check_private_key(r->tls) != 1)
    i = 2, bad = "does not match the certificate";
  if (bad == NULL)
    return 0;
  int rc = lmp__broker_fail(b, -EINVAL, "the TLS %s file '%s' %s (%s)", what[i],
                            path[i] ? path[i] : "of the system", bad, tls_reason());
  SSL_CTX_free(r->tls);
  r->tls = NULL;
  return rc;
}

/* The TLS parameters of a rediss:// URL, its query q (from its '?', or
 * NULL): ca=, cert=, key=, else LMP_REDIS_CA, LMP_REDIS_CERT and
 * LMP_REDIS_KEY; a redis:// URL takes none. */
static int tls_params(lmp_broker_t *b, rconn *r, const char *q)
{
  const char *names[3] = {"ca", "cert", "key"};
  const char *env[3] = {getenv("LMP_REDIS_CA"), getenv("LMP_REDIS_CERT"), getenv("LMP_REDIS_KEY")};
  char shown[200], *v[3] = {NULL, NULL, NULL}, *query = NULL, *save = NULL;
  int rc = 0;
  lmp__broker_url_shown(b->url, shown, sizeof shown);
  if (strncmp(b->url, "rediss", 6) != 0) /* rediss:// or rediss+cluster:// */
    return q ? lmp__broker_fail(b, -EINVAL,
                                "bad broker URL '%s' (ca=, cert= and key= need rediss://)", shown)
             : 0;
  if (q && (query = strdup(q + 1)) == NULL)
    return -ENOMEM;
  for (char *kv = query ? strtok_r(query, "&", &save) : NULL; kv; kv = strtok_r(NULL, "&", &save)) {
    char *eq = strchr(kv, '=');
    int i = 0;
    if (eq)
      for (*eq = 0; i < 3 && strcmp(kv, names[i]) != 0; i++)
        ;
    if (eq == NULL || i == 3) {
      rc = lmp__broker_fail(b, -EINVAL,
                            "bad broker URL '%s' (unknown parameter '%s'; rediss:// takes ca=, "
                            "cert= and key=)",
                            shown, kv);
      goto out;
    }
    free(v[i]);
    if ((v[i] = strdup(eq + 1)) == NULL) {
      rc = -ENOMEM;
      goto out;
    }
    url_decode(v[i]);
  }
  for (int i = 0; i < 3; i++)
    if (v[i] == NULL && env[i] && *env[i] && (v[i] = strdup(env[i])) == NULL)
      rc = -ENOMEM;
  if (rc == 0)
    rc = tls_context(b, r, v[0], v[1], v[2]);
out:
  free(query);
  for (int i = 0; i < 3; i++)
    free(v[i]);
  return rc;
}

/* Wait until the socket is ready for what SSL wants (err, from
 * SSL_get_error), up to ms: 0, -ETIMEDOUT or -errno. */
static int tls_wait(int fd, int err, int64_t ms)
{
  struct pollfd pfd = {fd, err == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN, 0};
  int64_t end = lmp_now_ns() + ms * 1000000;
  for (;;) {
    int64_t left = (end - lmp_now_ns()) / 1000000;
    int n = poll(&pfd, 1, left > 0 ? (int)left : 0);
    if (n > 0)
      return 0;
    if (n == 0)
      return -ETIMEDOUT;
    if (errno != EINTR)
      return -errno;
  }
}

/* A failed SSL_read or SSL_write (its return ret, or wait's failure): the
 * context's err and errstr set as hiredis sets them; REDIS_ERR. */
static int tls_fail(rconn *r, int ret, int wait)
{
  redisContext *c = r->c;
  int e = wait ? SSL_ERROR_NONE : SSL_get_error(r->ssl, ret), syserr = errno;
  unsigned long last = ERR_peek_last_error();
  c->err = REDIS_ERR_IO;
  if (wait) /* as hiredis says a socket timeout */
    snprintf(c->errstr, sizeof c->errstr, "%s", strerror(wait == -ETIMEDOUT ? EAGAIN : -wait));
  else if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && syserr == 0) ||
           ERR_GET_REASON(last) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
    c->err = REDIS_ERR_EOF, snprintf(c->errstr, sizeof c->errstr, "Server closed the connection");
  else if (e == SSL_ERROR_SYSCALL)
    snprintf(c->errstr, sizeof c->errstr, "%s", strerror(syserr));
  else /* refused by the server (an alert) or broken */
    c->err = REDIS_ERR_OTHER, snprintf(c->errstr, sizeof c->errstr, "TLS: %s", tls_reason());
  ERR_clear_error();
  errno = syserr;
  return REDIS_ERR;
}

/* Read into the reader: when `wait`, until something comes (within the
 * socket timeout); then whatever SSL holds decrypted. */
static int tls_read(rconn *r, int wait)
{
  char buf[16384];
  if (r->c->err)
    return REDIS_ERR;
  for (;;) {
    ERR_clear_error();
    int n = SSL_read(r->ssl, buf, sizeof buf);
    if (n > 0) {
      if (redisReaderFeed(r->c->reader, buf, (size_t)n) != REDIS_OK) {
        r->c->err = r->c->reader->err;
        snprintf(r->c->errstr, sizeof r->c->errstr, "%s", r->c->reader->errstr);
        return REDIS_ERR;
      }
      if (SSL_pending(r->ssl) > 0)
        continue;
      return REDIS_OK;
    }
    int e = SSL_get_error(r->ssl, n), w;
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
      return tls_fail(r, n, 0);
    if (!wait)
      return REDIS_OK;
    if ((w = tls_wait(r->c->fd, e, r->sock_ms)) < 0)
      return tls_fail(r, n, w);
  }
}

/* Write out c->obuf. */
static int tls_write(rconn *r)
{
  redisContext *c = r->c;
  size_t len = sdslen(c->obuf), off = 0;
  if (c->err)
    return REDIS_ERR;
  while (off < len) {
    ERR_clear_error();
    int n = SSL_write(r->ssl, c->obuf + off, len - off > INT_MAX ? INT_MAX : (int)(len - off));
    if (n > 0) {
      off += (size_t)n;
      continue;
    }
    int e = SSL_get_error(r->ssl, n), w;
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
      return tls_fail(r, n, 0);
    if ((w = tls_wait(c->fd, e, r->sock_ms)) < 0)
      return tls_fail(r, n, w);
  }
  sdsclear(c->obuf);
  return REDIS_OK;
}

/* redisGetReply over TLS. */
static int tls_get_reply(rconn *r, void **rep)
{
  void *aux = NULL;
  if (redisGetReplyFromReader(r->c, &aux) != REDIS_OK)
    return REDIS_ERR;
  if (aux == NULL && tls_write(r) != REDIS_OK)
    return REDIS_ERR;
  while (aux == NULL)
    if (tls_read(r, 1) != REDIS_OK || redisGetReplyFromReader(r->c, &aux) != REDIS_OK)
      return REDIS_ERR;
  *rep = aux;
  return REDIS_OK;
}

/* The TLS handshake on the connected socket, within ms. */
static int tls_start(lmp_broker_t *b, rconn *r, int64_t ms)
{
  int fd = r->c->fd, rc;
  int64_t end = lmp_now_ns() + ms * 1000000;
  ERR_clear_error();
  if ((r->ssl = SSL_new(r->tls)) == NULL || SSL_set_fd(r->ssl, fd) != 1) {
    rc = lmp__broker_fail(b, -ENOMEM, "cannot start TLS: %s", tls_reason());
    goto err;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  /* the certificate must be for the URL's host: an IP address or a name
   * (a name also goes as SNI) */
  if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(r->ssl), r->host) != 1 &&
      (SSL_set_tlsext_host_name(r->ssl, r->host) != 1 || SSL_set1_host(r->ssl, r->host) != 1)) {
    rc = lmp__broker_fail(b, -EINVAL, "cannot check TLS certificates for host '%s': %s", r->host,
                          tls_reason());
    goto err;
  }
  for (;;) {
    int n = SSL_connect(r->ssl), e = SSL_get_error(r->ssl, n), syserr = errno;
    if (n == 1)
      return 0;
    long v = SSL_get_verify_result(r->ssl);
    if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) &&
        tls_wait(fd, e, (end - lmp_now_ns()) / 1000000) == 0)
      continue;
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
      rc = lmp__broker_fail(b, -ETIMEDOUT,
                            "no TLS handshake from redis at %s:%d within %lld ms (is it a plain "
                            "redis:// port?)",
                            r->host, r->port, (long long)ms);
    else if (v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH)
      rc = lmp__broker_fail(b, -EPROTO,
                            "TLS: certificate verify failed: %s (the certificate of redis at %s:%d "
                            "is not for '%s')",
                            X509_verify_cert_error_string(v), r->host, r->port, r->host);
    else if (v != X509_V_OK)
      rc = lmp__broker_fail(b, -EPROTO, "TLS: certificate verify failed: %s (redis at %s:%d)",
                            X509_verify_cert_error_string(v), r->host, r->port);
    else if (e == SSL_ERROR_SSL)
      rc = lmp__broker_fail(b, -EPROTO, "TLS handshake with redis at %s:%d failed: %s", r->host,
                            r->port, tls_reason());
    else
      rc = lmp__broker_fail(b, -ECONNRESET, "TLS handshake with redis at %s:%d failed: %s", r->host,
                            r->port, syserr ? strerror(syserr) : "connection closed");
    goto err;
  }
err:
  ERR_clear_error();
  drop(r);
  return rc;
}

/* The first command on a new connection failed: a TLS server that refuses
 * the client (no certificate, or one it does not trust) is final; a plain
 * connection closed at once may have reached a TLS port. */
static int hello_error(lmp_broker_t *b, rconn *r, const char *what)
{
  int rc, closed = r->c->err == REDIS_ERR_EOF || (r->c->err == REDIS_ERR_IO && errno == ECONNRESET);
  if (r->ssl && (r->c->err == REDIS_ERR_OTHER || closed)) {
    /* its alert, or (when our write met the closed socket first) a reset */
    rc = lmp__broker_fail(b, closed ? -ECONNRESET : -EACCES,
                          "redis at %s:%d refused the TLS connection (%s): does it want a client "
                          "certificate (cert= and key=) it trusts?",
                          r->host, r->port, r->c->errstr);
  } else if (r->ssl == NULL && closed) {
    rc = lmp__broker_fail(b, -ECONNRESET,
                          "%s: %s (redis at %s:%d; it may be a TLS port: use rediss://)", what,
                          r->c->errstr, r->host, r->port);
  } else {
    return io_error(b, r, what);
  }
  drop(r);
  return rc;
}

/* The I/O on a context, in one place: hiredis formats the commands into
 * c->obuf and parses the replies in c->reader, and these move the bytes. */
static int rc_get_reply(rconn *r, void **rep)
{
  return r->ssl ? tls_get_reply(r, rep) : redisGetReply(r->c, rep);
}

static void *rc_command(rconn *r, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  void *rep = NULL;
  if (r->ssl == NULL)
    rep = redisvCommand(r->c, fmt, ap);
  else if (redisvAppendCommand(r->c, fmt, ap) != REDIS_OK || tls_get_reply(r, &rep) != REDIS_OK)
    rep = NULL;
  va_end(ap);
  return rep;
}

static void *rc_command_argv(rconn *r, int argc, const char **argv, const size_t *argvlen)
{
  void *rep = NULL;
  if (r->ssl == NULL)
    return redisCommandArgv(r->c, argc, argv, argvlen);
  if (redisAppendCommandArgv(r->c, argc, argv, argvlen) != REDIS_OK ||
      tls_get_reply(r, &rep) != REDIS_OK)
    return NULL;
  return rep;
}

/* Read what has come (after a poll said so) into the reader. */
static int rc_buffer_read(rconn *r)
{
  return r->ssl ? tls_read(r, 0) : redisBufferRead(r->c);
}

static int rc_buffer_write(rconn *r, int *done)
{
  if (r->ssl)
    return *done = 1, tls_write(r);
  return redisBufferWrite(r->c, done);
}

static int connect_once(lmp_broker_t *b, rconn *r, int64_t timeout_ms)
{
  redisReply *rep;
  if (r->sent) {
    int rc = resolve_master(b, r, timeout_ms);
    if (rc < 0)
      return rc;
  }
  r->c = redisConnectWithTimeout(r->host, r->port, tv_ms(timeout_ms));
  if (r->c == NULL)
    return lmp__broker_fail(b, -ENOMEM, "cannot allocate a redis context");
  if (r->c->err)
    return io_error(b, r, "cannot reach the broker");
  fcntl(r->c->fd, F_SETFD, FD_CLOEXEC); /* hiredis leaves it to children that exec */
  if (r->tls) {
    int rc = tls_start(b, r, timeout_ms);
    if (rc < 0)
      return rc;
  }
  if (r->cluster)
    cluster_reader(r);
  r->sock_ms = sock_timeout(b);
  redisSetTimeout(r->c, tv_ms(r->sock_ms));
  redisEnableKeepAlive(r->c);
  if (r->pass) {
    if (r->user)
      rep = rc_command(r, "AUTH %s %s", r->user, r->pass);
    else
      rep = rc_command(r, "AUTH %s", r->pass);
    if (rep == NULL)
      return hello_error(b, r, "AUTH");
    if (rep->type == REDIS_REPLY_ERROR) {
      int rc = reply_error(b, rep, "broker refused AUTH");
      drop(r);
      return rc < 0 ? -EACCES : rc;
    }
    freeReplyObject(rep);
  }
  if (r->sent) {
    int rc = check_role(b, r);
    if (rc < 0)
      return rc;
  }
  /* A cluster node where a standalone server was named (or the reverse)
   * would answer the wrong way: say which URL to use.  A user whose ACL
   * denies INFO gets an error reply, taken for what the URL says. */
  rep = rc_command(r, "INFO cluster");
  if (rep == NULL)
    return hello_error(b, r, "INFO");
  int cluster =
      rep->type == REDIS_REPLY_STRING ? strstr(rep->str, "cluster_enabled:1") != NULL : r->cluster;
  freeReplyObject(rep);
  if (cluster != r->cluster) {
    drop(r);
    return lmp__broker_fail(b, -EPROTONOSUPPORT,
                            cluster ? "the broker at %s:%d is a Redis Cluster node: name its "
                                      "nodes as redis+cluster://host:port,host:port/"
                                    : "the broker at %s:%d is not a Redis Cluster node: name it "
                                      "as redis://host:port/db",
                            r->host, r->port);
  }
  if (r->db) {
    rep = rc_command(r, "SELECT %d", r->db);
    if (rep == NULL)
      return io_error(b, r, "SELECT");
    if (rep->type == REDIS_REPLY_ERROR) {
      int rc = reply_error(b, rep, "SELECT");
      drop(r);
      return rc;
    }
    freeReplyObject(rep);
  }
  if (b->cfg.queue[0] == 0) /* an observer (see queues_redis): no queue to make */
    goto ready;
  rep = rc_command(r, "XGROUP CREATE %s " GROUP " 0 MKSTREAM", r->kstream);
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
    rep = rc_command(r, "SET %s:epoch %llx.%x", r->kstream, (unsigned long long)lmp_now_ns(),
                     (unsigned)getpid());
    if (rep == NULL)
      return io_error(b, r, "SET");
    freeReplyObject(rep);
  }
ready:
  r->fresh = 1;
  r->gen++;
  r->tdue = 0;
  r->tlast[0] = 0;
  r->announced = 0;
  return 0;
}

/* A usable connection, reconnecting with backoff for up to window_ms. */
static int ensure(lmp_broker_t *b, rconn *r, int64_t window_ms)
{
  while (r->owed > 0 && r->c && !r->c->err) {
    void *rep = NULL;
    if (rc_get_reply(r, &rep) != REDIS_OK || rep == NULL) {
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
  for (int failed = 0;; failed = 1) {
    if (r->cluster) {
      int moved = r->redirect == REDIRECT_MOVED;
      int64_t wait = cluster_next(r, failed);
      if (wait)
        sleep_ms(wait);
      if (moved)
        failed = 0; /* straight to where the slot went */
    }
    int64_t left = (end - lmp_now_ns()) / 1000000;
    int rc = connect_once(b, r, left < 1000 ? (left > 100 ? left : 100) : 1000);
    if (rc == 0) {
      r->redirects = 0;
      return rc;
    }
    if (rc == -EACCES || rc == -EPROTO || rc == -EPROTONOSUPPORT || rc == -ENOMEM)
      return rc;
    if (r->redirect == REDIRECT_MOVED && r->redirects < 16)
      continue;
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
    if (rc_get_reply(r, &rep) != REDIS_OK || rep == NULL) {
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
    if (rc_buffer_write(r, &done) != REDIS_OK)
      return io_error(b, r, what);
  return 0;
}

/* === priorities ===
 *
 * A task of priority p > 0 goes to a stream of its own, <stream>:p<p>, read
 * through the same group; priority 0 stays in the queue's stream, so a queue
 * whose producers never give a priority works as it always did.  A producer
 * announces a level before its first task there: the group is made and the
 * level added to the hash <stream>:prios (a field a level).  The take
 * script reads the hash and the streams from the highest level down in one
 * atomic step, so a take
 * never hands out a task while one of a higher level waits.  Such a queue's
 * waiter cannot be an XREADGROUP (over several streams it would take an
 * entry from each): it is an XREAD from each level's last delivered id,
 * which takes nothing and returns as soon as any level has an entry
 * undelivered, and the script behind it takes.  Every waiting consumer
 * wakes for an entry then, and all but one find nothing: the price of
 * priorities, paid only by queues that use them.  A delivery's id carries
 * its level ("<p>:<entry id>") for complete, release, renew and bury.
 *
 * The rate limit is a token bucket, the hash <stream>:rate (tokens n at
 * server time t), refilled and spent by the take script; a take finds at
 * most the tokens there are, and the script says when the next is due.  A
 * consumer held back waits that long at the server (an XREAD BLOCK on
 * <stream>:hold, which nobody writes), so it neither spins nor takes late.
 */

static void level_keys(rconn *r)
{
  for (int p = 1; p < LMP_BROKER_PRIORITIES; p++)
    snprintf(r->klevel[p], sizeof r->klevel[p], "%s:p%d", r->kstream, p);
  snprintf(r->klevel[0], sizeof r->klevel[0], "%s", r->kstream);
  snprintf(r->kprios, sizeof r->kprios, "%s:prios", r->kstream); /* as LEVELS_ASKED */
  snprintf(r->krate, sizeof r->krate, "%s:rate", r->kstream);
  snprintf(r->khold, sizeof r->khold, "%s:hold", r->kstream);
}

/* The level of a delivery's id, and the stream entry's id in it. */
static int level_of(const char *id, const char **entry)
{
  if (id[0] >= '1' && id[0] <= '9' && id[1] == ':') {
    *entry = id + 2;
    return id[0] - '0';
  }
  *entry = id;
  return 0;
}

static void tag_level(lmp_broker_msg_t *m, int level)
{
  size_t n = strlen(m->id);
  if (level <= 0 || level >= LMP_BROKER_PRIORITIES || n + 2 >= sizeof m->id)
    return; /* stream ids are far shorter */
  memmove(m->id + 2, m->id, n + 1);
  m->id[0] = (char)('0' + level);
  m->id[1] = ':';
}

/* The levels > 0 the queue's producers announced (bit p), or -errno. */
#define LEVELS_ASKED "HMGET %s:prios 1 2 3 4 5 6 7 8 9"

/* The levels a reply to LEVELS_ASKED names (bit p), 0 for no array. */
static int levels_of(const redisReply *rep)
{
  int levels = 0;
  for (size_t i = 0;
       rep->type == REDIS_REPLY_ARRAY && i < rep->elements && i + 1 < LMP_BROKER_PRIORITIES; i++)
    if (rep->element[i]->type == REDIS_REPLY_STRING)
      levels |= 1 << (i + 1);
  return levels;
}

static int known_levels(lmp_broker_t *b, rconn *r)
{
  redisReply *rep = rc_command(r, LEVELS_ASKED, r->kstream);
  if (rep == NULL)
    return io_error(b, r, "HMGET");
  if (rep->type != REDIS_REPLY_ARRAY)
    return reply_error(b, rep, "HMGET");
  int levels = levels_of(rep);
  freeReplyObject(rep);
  return levels;
}

/* Announce the levels of the puts that this connection has not: the
 * level's group (made with its stream), then the level in the set; the
 * number of commands appended (a BUSYGROUP reply is no error). */
static int append_announce(rconn *r)
{
  int n = 0;
  for (int i = 0; i < r->nput; i++) {
    int p = r->putlvl[i];
    if (p == 0 || (r->announced & 1u << p))
      continue;
    r->announced |= 1u << p;
    redisAppendCommand(r->c, "XGROUP CREATE %s " GROUP " 0 MKSTREAM", r->klevel[p]);
    redisAppendCommand(r->c, "HSET %s %d 1", r->kprios, p);
    n += 2;
  }
  return n;
}

static int open_redis(lmp_broker_t *b)
{
  rconn *r = calloc(1, sizeof *r);
  if (r == NULL)
    return -ENOMEM;
  b->conn = r;
  int rc =
      strncmp(b->url, "redis+sentinel://", 17) == 0 ? parse_sentinel_url(b, r) : parse_url(b, r);
  if (rc < 0)
    goto err;
  /* every key of the queue, its callers' and workers' too, in one hash slot */
  snprintf(r->kstream, sizeof r->kstream, "lmp:{%s}", b->cfg.queue);
  snprintf(r->kdead, sizeof r->kdead, "%s:dead", r->kstream);
  snprintf(r->kdelayed, sizeof r->kdelayed, "%s:delayed", r->kstream);
  snprintf(r->kworkers, sizeof r->kworkers, "%s:workers", r->kstream);
  snprintf(r->kself, sizeof r->kself, "%s:w:%s", r->kstream, b->consumer);
  snprintf(r->kcount, sizeof r->kcount, "%s:c:%s:n", r->kstream, b->consumer);
  level_keys(r);
  rc = ensure(b, r, b->cfg.connect_timeout);
  if (rc < 0)
    goto err;
  return 0;
err:
  SSL_CTX_free(r->tls);
  free(r->user);
  free(r->pass);
  free(r->seeds);
  free(r->sent);
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
  SSL_CTX_free(r->tls);
  free(r->putlvl);
  free(r->user);
  free(r->pass);
  free(r->seeds);
  free(r->sent);
  free(r);
  b->conn = NULL;
}

static int fileno_redis(const lmp_broker_t *b)
{
  const rconn *r = b->conn;
  return r && r->c && !r->c->err ? r->c->fd : -1;
}

/* === replication === */

/* This connection wrote: replicate_redis has something to wait for. */
static void written(rconn *r)
{
  if (r->wrote == 0)
    r->wrote = r->gen;
}

/*
 * Flush, then WAIT until `replicas` replicas hold every write made so far:
 * the number that do (Redis counts a client's writes on its connection, so
 * writes made on a connection since lost cannot be waited for: that is
 * -ECONNRESET, as they may be lost with their server).
 */
static int replicate_redis(lmp_broker_t *b, int replicas, int64_t timeout_ms)
{
  rconn *r = b->conn;
  int rc = b->e->flush(b);
  if (rc < 0)
    return rc;
  unsigned wrote = r->wrote;
  r->wrote = 0;
  if (wrote == 0)
    return replicas; /* nothing written since the last wait */
  rc = ensure(b, r, b->patience_ms);
  if (rc < 0)
    return rc;
  if (wrote != r->gen)
    return lmp__broker_fail(b, -ECONNRESET,
                            "the connection to the broker was lost after the writes: a replica "
                            "may not have them");
  redisReply *rep = rc_command(r, "WAIT %d %lld", replicas, (long long)timeout_ms);
  if (rep == NULL)
    return io_error(b, r, "WAIT");
  if (rep->type != REDIS_REPLY_INTEGER)
    return reply_error(b, rep, "WAIT");
  rc = rep->integer > INT32_MAX ? INT32_MAX : (int)rep->integer;
  freeReplyObject(rep);
  if (rc < replicas)
    lmp__broker_fail(b, 0, "WAIT %d %lld: %d replicas acknowledged the writes in time", replicas,
                     (long long)timeout_ms, rc);
  return rc;
}

/* The server connected to (host:port), "" when none is. */
static int server_redis(const lmp_broker_t *b, char *out, size_t n)
{
  const rconn *r = b->conn;
  if (r == NULL || r->c == NULL || r->c->err)
    snprintf(out, n, "%s", "");
  else if (strchr(r->host, ':'))
    snprintf(out, n, "[%s]:%d", r->host, r->port);
  else
    snprintf(out, n, "%s:%d", r->host, r->port);
  return 0;
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

static int put_redis(lmp_broker_t *b, const void *msg, size_t len, int64_t due_ms, int priority)
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
    unsigned char *lv = realloc(r->putlvl, (size_t)cap);
    if (lv == NULL)
      return -ENOMEM;
    r->putlvl = lv;
    r->capput = cap;
  }
  /* a held task of a priority: its level in front, for the promote script */
  size_t pre = due_ms > 0 && priority > 0 ? 3 : 0;
  char *copy = malloc(len + pre + 1);
  if (copy == NULL)
    return -ENOMEM;
  if (pre) {
    memcpy(copy, "\377P", 2);
    copy[2] = (char)('0' + priority);
  }
  memcpy(copy + pre, msg, len);
  len += pre;
  r->putlvl[r->nput] = (unsigned char)priority;
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
  int announced = append_announce(r);
  for (int i = 0; i < r->nput; i++) {
    if (r->putdue[i] > 0) { /* held: the member is the message itself, unique */
      char due[24];
      snprintf(due, sizeof due, "%lld", (long long)r->putdue[i]);
      const char *argv[4] = {"ZADD", r->kdelayed, due, r->puts[i]};
      size_t lens[4] = {4, strlen(r->kdelayed), strlen(due), r->putlen[i]};
      redisAppendCommandArgv(r->c, 4, argv, lens);
      continue;
    }
    const char *key = r->klevel[r->putlvl[i]];
    const char *argv[7] = {"XADD", key, "*", "m", r->puts[i], "d", "0"};
    size_t lens[7] = {4, strlen(key), 1, 1, r->putlen[i], 1, 1};
    redisAppendCommandArgv(r->c, 7, argv, lens);
  }
  redisAppendCommand(r->c, "INCRBY %s %d", r->kcount, r->nput);
  redisAppendCommand(r->c, "PEXPIRE %s %lld", r->kcount, DAY_MS);
  return announced + r->nput + 2;
}

/* Read the n replies of append_puts: 0 (the puts are done with), -EPROTO
 * (refused; they are dropped, the text in b->err) or -ECONNRESET (the
 * connection is gone; they are kept, to be sent again). */
static int read_puts(lmp_broker_t *b, rconn *r, int n)
{
  int bad = 0;
  for (int i = 0; i < n; i++) {
    void *rep = NULL;
    if (rc_get_reply(r, &rep) != REDIS_OK || rep == NULL)
      return io_error(b, r, "XADD");
    redisReply *x = rep;
    if (x->type == REDIS_REPLY_ERROR && !bad && strncmp(x->str, "BUSYGROUP", 9) != 0)
      bad = lmp__broker_fail(b, -EPROTO, "XADD: %s", x->str);
    freeReplyObject(rep);
  }
  for (int i = 0; i < r->nput; i++)
    free(r->puts[i]);
  if (r->nput > 0)
    written(r);
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
  char key[sizeof r->rkey];
  snprintf(key, sizeof key, "%s:c:%s", r->kstream, caller);
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
  redisAppendCommand(r->c, "SET %s:c:%s:lo %llu PX %lld", r->kstream, caller,
                     (unsigned long long)lo, (long long)expires_ms);
  n++;
  for (uint64_t k = r->lo_chunk; k < upto; k++, n++)
    redisAppendCommand(r->c, "UNLINK %s:c:%s:t:%llu", r->kstream, caller, (unsigned long long)k);
  if (final) {
    redisAppendCommand(r->c, "UNLINK %s:c:%s %s:c:%s:n", r->kstream, caller, r->kstream, caller);
    n++;
  }
  for (int i = 0; i < n; i++) {
    void *rep = NULL;
    if (rc_get_reply(r, &rep) != REDIS_OK || rep == NULL)
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
  redisReply *rep =
      rc_command(r, "XPENDING %s " GROUP " - + %d %s", r->kstream, out->n - from + 16, b->consumer);
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
 * in the same step.  KEYS: the stream, the set of levels in use, the rate
 * limit's bucket, the streams of levels 1..9 (see "priorities"); ARGV:
 * group, consumer, count, the expiry of a record whose task has none (wall
 * ms), the group's last delivered id before a waiting XREADGROUP that came
 * just ahead of this script ("" without one), the rate limit (tokens a ms,
 * "" without) and the bucket's size.  The entry that waiter handed this
 * consumer is the one of its pending entries past that id still on its
 * first delivery (reclaimed entries are past their first), and it is
 * checked here as if the script had read it.  A task id is read from the
 * message's header (broker.c: 'L' 2 kind idlen id stamp expires ...),
 * unchecked: a forged header can only get its own entry dropped or
 * delivered, and a delivered one is verified by the worker.  A replay is
 * acknowledged and deleted.  The levels in use are read from the highest
 * down, at most the bucket's tokens in all; when the waiter (which knew of
 * no levels) took from level 0 while there were levels, as many more, to
 * be delivered ahead of its entry.  Returns the group's last
 * delivered id (for a queue with levels or a rate limit: {that id, ms until
 * the next token or 0, then each level and its stream's last delivered
 * id}), the ids of the waiter's entries dropped as replays, then the
 * entries to deliver ({id, fields, level} for a level above 0).
 */
/* clang-format off */
static const char TAKE_SCRIPT[] =
    "local g = ARGV[1]\n"
    "local los, ttl = {}, {}\n"
    "local function fresh(s, e)\n"
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
    "    lo = tonumber(redis.call('GET', s .. ':c:' .. caller .. ':lo')) or 0\n"
    "    los[caller] = lo\n"
    "  end\n"
    "  local k = s .. ':c:' .. caller .. ':t:' .. math.floor(seq / " STR(CHUNK) ")\n"
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
    "local function last(s)\n"
    "  local xs = redis.pcall('XINFO', 'GROUPS', s)\n"
    "  for _, x in ipairs(xs.err and {} or xs) do\n"
    "    local name, id\n"
    "    for i = 1, #x, 2 do\n"
    "      if x[i] == 'name' then name = x[i + 1] end\n"
    "      if x[i] == 'last-delivered-id' then id = x[i + 1] end\n"
    "    end\n"
    "    if name == g then return id end\n"
    "  end\n"
    "  return '0-0'\n"
    "end\n"
    "local dropped, waited = {}, 0\n"
    "if ARGV[5] ~= '' then\n"
    "  for _, p in ipairs(redis.call('XPENDING', KEYS[1], g, '(' .. ARGV[5], '+', 16, ARGV[2])) do\n"
    "    local e = p[4] == 1 and redis.call('XRANGE', KEYS[1], p[1], p[1])[1]\n"
    "    if e and fresh(KEYS[1], e) then waited = waited + 1\n"
    "    elseif e then dropped[#dropped + 1] = p[1] end\n"
    "  end\n"
    "end\n"
    "local levels = {}\n"
    "local hs = redis.call('HMGET', KEYS[2], '1', '2', '3', '4', '5', '6', '7', '8', '9')\n"
    "for p = 9, 1, -1 do\n"
    "  if hs[p] then levels[#levels + 1] = p end\n"
    "end\n"
    "levels[#levels + 1] = 0\n"
    "local want, rate, burst, tokens, now = tonumber(ARGV[3]), tonumber(ARGV[6]), tonumber(ARGV[7])\n"
    "if #levels > 1 then want = want + waited end\n"
    "if rate then\n"
    "  local t = redis.call('TIME')\n"
    "  now = t[1] * 1000 + t[2] / 1000\n"
    "  local b = redis.call('HMGET', KEYS[3], 'n', 't')\n"
    "  tokens = tonumber(b[1])\n"
    "  tokens = tokens and math.min(burst, tokens + math.max(0, now - tonumber(b[2])) * rate) or burst\n"
    "  want = math.min(want, math.floor(tokens))\n"
    "end\n"
    "local out, got = {'0-0', dropped}, 0\n"
    "for _, p in ipairs(levels) do\n"
    "  if got >= want then break end\n"
    "  local s, r = p == 0 and KEYS[1] or KEYS[3 + p]\n"
    "  local read = {'XREADGROUP', 'GROUP', g, ARGV[2], 'COUNT', want - got, 'STREAMS', s, '>'}\n"
    "  if p == 0 then\n"
    "    r = redis.call(unpack(read))\n"
    "  else\n"
    "    r = redis.pcall(unpack(read))\n"
    "    if type(r) == 'table' and r.err then\n"
    "      redis.call('XGROUP', 'CREATE', s, g, '0', 'MKSTREAM')\n"
    "      r = redis.call(unpack(read))\n"
    "    end\n"
    "  end\n"
    "  for _, e in ipairs(r and r[1][2] or {}) do\n"
    "    if fresh(s, e) then\n"
    "      got = got + 1\n"
    "      if p > 0 then e[3] = p end\n"
    "      out[#out + 1] = e\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if not rate and #levels == 1 then\n"
    "  out[1] = last(KEYS[1])\n"
    "  return out\n"
    "end\n"
    "local info = {last(KEYS[1]), 0}\n"
    "if rate then\n"
    "  tokens = tokens - got\n"
    "  redis.call('HSET', KEYS[3], 'n', tostring(tokens), 't', tostring(now))\n"
    "  redis.call('PEXPIRE', KEYS[3], math.ceil(burst / rate) + 1000)\n"
    "  if tokens < 1 then info[2] = math.ceil((1 - tokens) / rate) end\n"
    "end\n"
    "for _, p in ipairs(levels) do\n"
    "  if p > 0 then info[#info + 1] = p; info[#info + 1] = last(KEYS[3 + p]) end\n"
    "end\n"
    "out[1] = info\n"
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
  redisAppendCommand(r->c, "SETBIT %s:c:%s:t:%llu %llu 0", r->kstream, id, seq / CHUNK,
                     seq % CHUNK);
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
    if (rc_get_reply(r, &rep) != REDIS_OK || rep == NULL)
      return io_error(b, r, "XREADGROUP");
  } else if (rep == NULL) {
    struct pollfd pfd = {r->c->fd, POLLIN, 0};
    if (poll(&pfd, 1, 0) <= 0)
      return 0;
    if (rc_buffer_read(r) != REDIS_OK || redisGetReplyFromReader(r->c, &rep) != REDIS_OK)
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
  redisReply *rep = rc_command(r, "XREADGROUP GROUP " GROUP " %s COUNT %d STREAMS %s 0",
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

/* The waiter of a queue with levels or a rate limit, which takes nothing:
 * while the bucket is empty it sleeps until the next token is due; else it
 * answers as soon as a level's stream has an entry its group has not
 * delivered. */
static void append_wait(rconn *r, int64_t block_ms)
{
  int64_t held = (r->hold_until - lmp_now_ns() + 999999) / 1000000;
  if (held > 0) {
    redisAppendCommand(r->c, "XREAD BLOCK %lld STREAMS %s $",
                       (long long)(held < block_ms ? held : block_ms), r->khold);
    return;
  }
  char ms[24];
  const char *argv[6 + 2 * LMP_BROKER_PRIORITIES] = {"XREAD", "COUNT", "1", "BLOCK", ms, "STREAMS"};
  int n = 6, k = 0;
  const char *ids[LMP_BROKER_PRIORITIES];
  snprintf(ms, sizeof ms, "%lld", (long long)block_ms);
  for (int p = LMP_BROKER_PRIORITIES - 1; p > 0; p--)
    if (r->levels & 1u << p) {
      argv[n++] = r->klevel[p];
      ids[k++] = r->plast[p];
    }
  argv[n++] = r->kstream;
  ids[k++] = r->tlast;
  for (int i = 0; i < k; i++)
    argv[n++] = ids[i];
  size_t lens[6 + 2 * LMP_BROKER_PRIORITIES];
  for (int i = 0; i < n; i++)
    lens[i] = strlen(argv[i]);
  redisAppendCommandArgv(r->c, n, argv, lens);
}

/* The take script's EVAL (its keys and arguments: see TAKE_SCRIPT). */
static void append_take(lmp_broker_t *b, rconn *r, const char *count, const char *expiry)
{
  char rate[32] = "", burst[32] = "";
  if (b->rate > 0) {
    snprintf(rate, sizeof rate, "%.17g", b->rate);
    snprintf(burst, sizeof burst, "%.17g", b->burst);
  }
  /* 12 keys: the stream, the levels, the bucket, the streams of levels 1..9 */
  const char *argv[3 + 3 + (LMP_BROKER_PRIORITIES - 1) + 7] = {"EVAL",     TAKE_SCRIPT, "12",
                                                               r->kstream, r->kprios,   r->krate};
  size_t lens[sizeof argv / sizeof *argv];
  int n = 6;
  for (int p = 1; p < LMP_BROKER_PRIORITIES; p++)
    argv[n++] = r->klevel[p];
  const char *args[] = {GROUP, b->consumer, count, expiry, r->twake && !r->tpeek ? r->tlast : "",
                        rate,  burst};
  for (int i = 0; i < 7; i++)
    argv[n++] = args[i];
  for (int i = 0; i < n; i++)
    lens[i] = strlen(argv[i]);
  redisAppendCommandArgv(r->c, n, argv, lens);
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
  r->tpeek = r->twake && (r->extended || b->rate > 0);
  if (r->tpeek)
    append_wait(r, block_ms);
  else if (r->twake)
    redisAppendCommand(r->c, "XREADGROUP GROUP " GROUP " %s COUNT 1 BLOCK %lld STREAMS %s >",
                       b->consumer, (long long)block_ms, r->kstream);
  /* the waiter's one counts */
  snprintf(count, sizeof count, "%d", max - (r->twake && !r->tpeek));
  snprintf(expiry, sizeof expiry, "%lld", (long long)(lmp__wall_ms() + DAY_MS));
  append_take(b, r, count, expiry);
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

/* The entries of the take script's reply of levels above 0 (above) or of
 * level 0 (!above) into out, their ids tagged with their level; the count,
 * or -errno. */
static int add_levels(lmp_broker_t *b, redisReply *rep, lmp_broker_batch_t *out, int above)
{
  int n = 0;
  for (size_t i = 2; i < rep->elements; i++) {
    redisReply *e = rep->element[i];
    int level = e->type == REDIS_REPLY_ARRAY && e->elements >= 3 &&
                        e->element[2]->type == REDIS_REPLY_INTEGER
                    ? (int)e->element[2]->integer
                    : 0;
    if ((level > 0) != above)
      continue;
    int k = add_entry(out, e, 1);
    if (k < 0)
      return lmp__broker_fail(b, k, "unexpected stream entry in the reply");
    if (k == 0)
      tag_level(&out->msg[out->n - 1], level);
    n += k == 0;
  }
  return n;
}

/* The first word of the take script's reply: the group's last delivered
 * id, or for a queue with levels or a rate limit {that id, ms until the
 * next token, level, its last delivered id, ...}. */
static void take_info(rconn *r, const redisReply *x)
{
  if (x->type == REDIS_REPLY_STRING) {
    snprintf(r->tlast, sizeof r->tlast, "%s", x->str);
    r->extended = 0;
    r->levels = 0;
    return;
  }
  if (x->type != REDIS_REPLY_ARRAY || x->elements < 2 || x->element[0]->type != REDIS_REPLY_STRING)
    return;
  snprintf(r->tlast, sizeof r->tlast, "%s", x->element[0]->str);
  int64_t wait = x->element[1]->type == REDIS_REPLY_INTEGER ? x->element[1]->integer : 0;
  r->hold_until = wait > 0 ? lmp_now_ns() + wait * 1000000 : 0;
  r->extended = 1;
  r->levels = 0;
  for (size_t i = 2; i + 1 < x->elements; i += 2) {
    redisReply *p = x->element[i], *id = x->element[i + 1];
    if (p->type != REDIS_REPLY_INTEGER || p->integer <= 0 || p->integer >= LMP_BROKER_PRIORITIES ||
        id->type != REDIS_REPLY_STRING)
      continue;
    r->levels |= 1u << p->integer;
    snprintf(r->plast[p->integer], sizeof r->plast[0], "%s", id->str);
  }
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
    if (r->tdue-- == 2 && r->tpeek) { /* a waiter that took nothing */
      if (rep->type == REDIS_REPLY_ERROR) {
        r->tdue = 0;
        drop(r);
        return reply_error(b, rep, "XREAD");
      }
      freeReplyObject(rep);
      continue;
    }
    if (r->tdue == 1) { /* the waiter: its entry waits for the script's word */
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
      take_info(r, last);
      /* the levels above 0 first, then the waiter's entry, then level 0 */
      n = add_levels(b, rep, out, 1);
      int w = move_entries(&r->waited, dropped, out);
      n = n < 0 ? n : w < 0 ? w : n + w;
      int z = n < 0 ? 0 : add_levels(b, rep, out, 0);
      n = n < 0 ? n : z < 0 ? z : n + z;
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
  char ckey[480], ttl[24];
  snprintf(ckey, sizeof ckey, "%s:c:%s", r->kstream, d->caller);
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

/* XACK and XDEL of ids, in the stream of each one's level; the number of
 * commands (2 a level). */
static int append_ackdel(rconn *r, const char *const *ids, int n)
{
  argvec a;
  int cmds = 0;
  if (argv_init(&a, n + 3) < 0)
    return -ENOMEM;
  for (int p = 0; p < LMP_BROKER_PRIORITIES; p++) {
    a.n = 0;
    argv_push(&a, "XACK");
    argv_push(&a, r->klevel[p]);
    argv_push(&a, GROUP);
    for (int i = 0; i < n; i++) {
      const char *entry;
      if (level_of(ids[i], &entry) == p)
        argv_push(&a, entry);
    }
    if (a.n == 3)
      continue;
    redisAppendCommandArgv(r->c, a.n, a.v, a.len);
    /* XDEL stream id...: the same ids behind two other words. */
    a.v[1] = "XDEL";
    a.len[1] = 4;
    a.v[2] = r->klevel[p];
    a.len[2] = strlen(r->klevel[p]);
    redisAppendCommandArgv(r->c, a.n - 1, a.v + 1, a.len + 1);
    cmds += 2;
  }
  argv_free(&a);
  return cmds;
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
      if (rc_get_reply(r, &rep) != REDIS_OK || rep == NULL) {
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
    if (!bad)
      written(r);
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
  size_t hl = strlen(h), pre = 0;
  const char *entry;
  int level = level_of(m->id, &entry);
  char *p = malloc(3 + 10 + hl + m->len);
  if (p == NULL)
    return NULL;
  if (level > 0) { /* its level in front, as put_redis does */
    memcpy(p, "\377P", 2);
    p[2] = (char)('0' + level);
    p += pre = 3;
  }
  p[0] = (char)0xff;
  p[1] = 'L';
  for (int i = 0; i < 4; i++) {
    p[2 + i] = (char)(count >> (24 - 8 * i));
    p[6 + i] = (char)((uint32_t)hl >> (24 - 8 * i));
  }
  memcpy(p + 10, h, hl);
  memcpy(p + 10 + hl, m->data, m->len);
  *len = pre + 10 + hl + m->len;
  return p - pre;
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
  if (a->dest != r->kdead) /* a new delivery: lift the replay record */
    cmds += append_unmark(r, a->m->data, a->m->len);
  const char *ids[1] = {a->m->id};
  return cmds + append_ackdel(r, ids, 1);
}

static int release_redis(lmp_broker_t *b, const lmp_broker_msg_t *m, const char *reason,
                         int64_t delay_ms)
{
  rconn *r = b->conn;
  const char *entry;
  move_arg a = {m,    reason,        r->klevel[level_of(m->id, &entry)],
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
  for (int p = 0; p < LMP_BROKER_PRIORITIES && rc == 0; p++) { /* each level's stream */
    const char *head[] = {"XCLAIM", r->klevel[p], GROUP, b->consumer, "0"}, *entry;
    a.n = 0;
    for (int i = 0; i < 5; i++)
      argv_push(&a, head[i]);
    for (int i = 0; i < n; i++)
      if (level_of(ids[i], &entry) == p)
        argv_push(&a, entry);
    if (a.n == 5)
      continue;
    argv_push(&a, "JUSTID");
    redisReply *rep = rc_command_argv(r, a.n, a.v, a.len);
    if (rep == NULL)
      rc = io_error(b, r, "XCLAIM");
    else if (rep->type == REDIS_REPLY_ERROR)
      rc = reply_error(b, rep, "XCLAIM");
    else
      freeReplyObject(rep);
  }
  argv_free(&a);
  return rc;
}

/* Move the held tasks that are due into the stream: read, added and
 * removed in one atomic step, so each enters once however many consumers
 * promote at the same time.  Due by the server's clock. */
static const char PROMOTE_SCRIPT[] =
    "local t = redis.call('TIME')\n"
    "local now = t[1] * 1000 + math.floor(t[2] / 1000)\n"
    "local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, ARGV[1])\n"
    "for _, z in ipairs(due) do\n"
    "  local s, x = KEYS[1], z\n"
    "  if string.byte(x, 1) == 255 and string.byte(x, 2) == 80 and #x >= 3 then\n"
    "    s, x = KEYS[2 + string.byte(x, 3) - 48] or KEYS[1], string.sub(x, 4)\n"
    "  end\n"
    "  if string.byte(x, 1) == 255 and string.byte(x, 2) == 76 and #x >= 10 then\n"
    "    local d, hl = 0, 0\n"
    "    for i = 3, 6 do d = d * 256 + string.byte(x, i) end\n"
    "    for i = 7, 10 do hl = hl * 256 + string.byte(x, i) end\n"
    "    local h, m = string.sub(x, 11, 10 + hl), string.sub(x, 11 + hl)\n"
    "    redis.call('XADD', s, '*', 'm', m, 'd', d, 'h', h)\n"
    "  else\n"
    "    redis.call('XADD', s, '*', 'm', x, 'd', '0')\n"
    "  end\n"
    "  redis.call('ZREM', KEYS[2], z)\n"
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
  /* KEYS: the stream, the held tasks, the streams of levels 1..9 */
  const char *argv[3 + 2 + LMP_BROKER_PRIORITIES - 1 + 1] = {"EVAL", PROMOTE_SCRIPT, "11",
                                                             r->kstream, r->kdelayed};
  size_t lens[sizeof argv / sizeof *argv];
  int k = 5;
  for (int p = 1; p < LMP_BROKER_PRIORITIES; p++)
    argv[k++] = r->klevel[p];
  argv[k++] = count;
  for (int i = 0; i < k; i++)
    lens[i] = strlen(argv[i]);
  redisAppendCommandArgv(r->c, k, argv, lens);
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
  redisReply *rep = rc_command(r, "XPENDING %s " GROUP " - + 1 %s", r->kstream, name);
  int empty = rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 0;
  int refused = rep && rep->type == REDIS_REPLY_ERROR;
  if (rep)
    freeReplyObject(rep);
  if (!empty)
    return refused ? -1 : 0;
  rep = rc_command(r, "XGROUP DELCONSUMER %s " GROUP " %s", r->kstream, name);
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
  redisReply *rep = rc_command(r, "XINFO CONSUMERS %s " GROUP, r->kstream);
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

/* Claim the lapsed entries of one level's stream. */
static int reclaim_level(lmp_broker_t *b, rconn *r, int level, int64_t idle_ms, int max,
                         lmp_broker_batch_t *out)
{
  redisReply *rep = rc_command(r, "XPENDING %s " GROUP " IDLE %lld - + %d", r->klevel[level],
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
  const char *head[] = {"XCLAIM", r->klevel[level], GROUP, b->consumer, idle};
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
  redisReply *cl = k ? rc_command_argv(r, a.n, a.v, a.len) : NULL;
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
    for (int m = from; got > 0 && m < out->n; m++)
      tag_level(&out->msg[m], level);
  }
  if (cl)
    freeReplyObject(cl);
  argv_free(&a);
  free(counts);
  freeReplyObject(rep);
  return got;
}

/* Claim lapsed entries from every level in use, the highest first. */
static int reclaim_redis(lmp_broker_t *b, int64_t idle_ms, int max, lmp_broker_batch_t *out)
{
  rconn *r = b->conn;
  int rc = ensure(b, r, b->patience_ms);
  if (rc < 0)
    return rc;
  drop_vanished(b, r, idle_ms);
  if (r->c == NULL || r->c->err)
    return io_error(b, r, "XINFO");
  int levels = known_levels(b, r) | 1, got = 0;
  if (levels < 0)
    return levels;
  for (int p = LMP_BROKER_PRIORITIES - 1; p >= 0 && got < max; p--) {
    if (!(levels & 1 << p))
      continue;
    rc = reclaim_level(b, r, p, idle_ms, max - got, out);
    if (rc < 0)
      return rc;
    got += rc;
  }
  return got;
}

/* lmp:{<queue>}:vt holds the smallest visibility timeout asked for; it
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
  redisReply *rep = rc_command(r, "SET %s:vt %lld PX 86400000", r->kstream, (long long)ms);
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
  redisReply *rep = rc_command(r, "GET %s:vt", r->kstream);
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

/* A stream's count commands (XLEN, XPENDING's summary) ... */
static void append_stream_counts(rconn *r, const char *stream)
{
  redisAppendCommand(r->c, "XLEN %s", stream);
  redisAppendCommand(r->c, "XPENDING %s " GROUP, stream);
}

/* ... and from their two replies its entries not yet taken (-1 without a
 * count) and those taken (0 without a group: a stream never served). */
static void stream_counts(redisReply *const *reps, int64_t *waiting, int64_t *taken)
{
  int64_t entries = integer_or(reps[0], -1);
  *taken = reps[1]->type == REDIS_REPLY_ARRAY && reps[1]->elements >= 1
               ? integer_or(reps[1]->element[0], 0)
               : 0;
  *waiting = entries < 0 ? -1 : entries > *taken ? entries - *taken : 0;
}

/* Add the waiting and taken tasks of the levels above 0 of the queue
 * whose stream is `stream` to c (levels: which, bit p, or -errno). */
static int count_levels(lmp_broker_t *b, rconn *r, const char *stream, int levels,
                        lmp_broker_counts_t *c)
{
  if (levels <= 0)
    return levels;
  int n = 0;
  for (int p = 1; p < LMP_BROKER_PRIORITIES; p++)
    if (levels & 1 << p) {
      char key[sizeof r->klevel[0] + 256];
      snprintf(key, sizeof key, "%s:p%d", stream, p); /* as level_keys */
      append_stream_counts(r, key);
      n += 2;
    }
  redisReply *reps[2 * LMP_BROKER_PRIORITIES];
  int rc = read_replies(b, r, reps, n, "counting");
  if (rc < 0)
    return rc;
  for (int i = 0; i < n; i += 2) {
    int64_t waiting, taken;
    stream_counts(reps + i, &waiting, &taken);
    c->taken += taken;
    c->waiting += waiting > 0 ? waiting : 0;
    freeReplyObject(reps[i]);
    freeReplyObject(reps[i + 1]);
  }
  return 0;
}

#define COUNT_REPLIES 5

/* The commands that count a queue (its stream, held and dead keys, and
 * which levels it uses) ... */
static void append_counts(rconn *r, const char *stream, const char *delayed, const char *dead)
{
  append_stream_counts(r, stream);
  redisAppendCommand(r->c, "ZCARD %s", delayed);
  redisAppendCommand(r->c, "XLEN %s", dead);
  redisAppendCommand(r->c, LEVELS_ASKED, stream);
}

/* ... and their COUNT_REPLIES replies read into c (the replies are kept):
 * the levels above 0 it uses (bit p), counted by count_levels. */
static int read_counts(redisReply *const *reps, lmp_broker_counts_t *c)
{
  stream_counts(reps, &c->waiting, &c->taken);
  c->delayed = integer_or(reps[2], -1);
  c->dead = integer_or(reps[3], -1);
  return levels_of(reps[4]);
}

/* The stream's entries less those taken (its group's pending count, from
 * the summary form of XPENDING), the held and the dead, in one round trip;
 * then the same of the levels above 0, if the queue has any, in another. */
static int counts_redis(lmp_broker_t *b, lmp_broker_counts_t *c)
{
  rconn *r = b->conn;
  redisReply *reps[COUNT_REPLIES] = {NULL};
  int rc = ensure(b, r, b->cfg.connect_timeout);
  if (rc < 0)
    return rc;
  append_counts(r, r->kstream, r->kdelayed, r->kdead);
  rc = read_replies(b, r, reps, COUNT_REPLIES, "counting");
  if (rc < 0)
    return rc;
  int levels = read_counts(reps, c);
  for (int i = 0; i < COUNT_REPLIES; i++)
    freeReplyObject(reps[i]);
  return c->waiting < 0 ? 0 : count_levels(b, r, r->kstream, levels, c);
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
  char key[600], bit[24], at[24];
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
    snprintf(s[i].key, sizeof s[i].key, "%s:c:%.*s:t:%llu", r->kstream,
             (int)(dot ? dot - ids[i] : 0), ids[i], seq / CHUNK); /* as the take script's */
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
  redisReply *rep = rc_command_argv(r, a.n, a.v, a.len);
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
      rc_command(r, "EVAL %s 2 %s %s %lld", REVOKED_SCRIPT, kset, kcount, (long long)*gen);
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
  redisAppendCommand(r->c, "HSET %s info %s running %s queue %s at %lld", r->kself, info, running,
                     b->cfg.queue, (long long)lmp__wall_ms());
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
    redisAppendCommand(r->c, "HMGET %s:w:%s info running", r->kstream, names->element[i]->str);
  int n = 0;
  for (size_t i = 0; i < names->elements; i++) {
    void *x = NULL;
    if (rc_get_reply(r, &x) != REDIS_OK || x == NULL) {
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

/* === the overview ===
 *
 * queues_redis: every queue on the server (or one), each with its counts
 * and live workers, for `lmp top --broker` and a broker pool's stats().
 * The queues are found by their epoch keys: every queue has one from the
 * moment its group is made, whoever made it and whatever version of lmp,
 * and nothing else has a string key of that name (a set of queue names kept
 * by their makers would cost every connection a write, and miss the queues
 * made before it).  SCAN walks the database's keys, a thousand a round trip;
 * then one pipeline counts every queue and reads its workers' names, and a
 * second reads every worker's heartbeat, however many queues there are.
 * Nothing is written: lapsed heartbeats are skipped, not removed, and an
 * observer (a broker opened with queue "") makes no queue of its own.
 *
 * Another queue's keys are this connection's with the name swapped: each
 * holds the queue's name once, in its hash tag, at the same offset
 * (queue_at), so key names are still made in open_redis alone.
 */

#define WORKER_FIELDS 3 /* info running at */

/* Where the queue's name is in each of its keys (after "lmp:{"). */
static size_t queue_at(const rconn *r)
{
  return (size_t)(strchr(r->kstream, '{') - r->kstream) + 1;
}

/* own, a key of this connection holding the name `len` bytes long at `at`,
 * with `name` in its place. */
static void swap_name(char *out, size_t n, const char *own, size_t at, size_t len, const char *name)
{
  snprintf(out, n, "%.*s%s%s", (int)at, own, name, own + at + len);
}

static int by_name(const void *a, const void *b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The queues' names, sorted and without repeats (SCAN may return a key
 * twice), into names (the caller frees them): their count, or -errno. */
static int scan_queues(lmp_broker_t *b, rconn *r, char ***names)
{
  size_t qlen = strlen(b->cfg.queue), at = queue_at(r);
  const char *rest = r->kstream + at + qlen;
  char match[400], cursor[32] = "0";
  snprintf(match, sizeof match, "%.*s*%s:epoch", (int)at, r->kstream, rest);
  size_t tail = strlen(rest) + strlen(":epoch");
  char **v = NULL;
  int n = 0, cap = 0, rc = 0;
  do {
    redisReply *rep = rc_command(r, "SCAN %s MATCH %s COUNT 1000 TYPE string", cursor, match);
    if (rep == NULL) {
      rc = io_error(b, r, "SCAN");
      goto err;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        rep->element[0]->type != REDIS_REPLY_STRING || rep->element[1]->type != REDIS_REPLY_ARRAY) {
      rc = reply_error(b, rep, "SCAN");
      goto err;
    }
    snprintf(cursor, sizeof cursor, "%s", rep->element[0]->str);
    redisReply *keys = rep->element[1];
    for (size_t i = 0; i < keys->elements && rc == 0; i++) {
      redisReply *k = keys->element[i];
      if (k->type != REDIS_REPLY_STRING || k->len <= at + tail)
        continue;
      if (n == cap) {
        char **nv = realloc(v, sizeof *v * (size_t)(cap = cap ? 2 * cap : 16));
        if (nv == NULL) {
          rc = -ENOMEM;
          break;
        }
        v = nv;
      }
      if ((v[n] = strndup(k->str + at, k->len - at - tail)) == NULL)
        rc = -ENOMEM;
      else
        n++;
    }
    freeReplyObject(rep);
  } while (rc == 0 && strcmp(cursor, "0") != 0);
  if (rc < 0)
    goto err;
  if (n > 1) /* (qsort takes no NULL, even for nothing) */
    qsort(v, (size_t)n, sizeof *v, by_name);
  int m = 0;
  for (int i = 0; i < n; i++) {
    if (m > 0 && strcmp(v[m - 1], v[i]) == 0)
      free(v[i]);
    else
      v[m++] = v[i];
  }
  *names = v;
  return m;
err:
  for (int i = 0; i < n; i++)
    free(v[i]);
  free(v);
  return rc < 0 ? rc : -ENOMEM;
}

/* A queue's counts and its live workers' names, for each of out's queues:
 * one pipeline.  The names go to each worker's name. */
static int read_queues(lmp_broker_t *b, rconn *r, lmp_broker_queues_t *out)
{
  size_t qlen = strlen(b->cfg.queue), at = queue_at(r);
  int per = COUNT_REPLIES + 1, n = out->n, rc = 0;
  redisReply **reps = calloc((size_t)(per * n) + 1, sizeof *reps);
  if (reps == NULL)
    return -ENOMEM;
  for (int i = 0; i < n; i++) {
    char stream[sizeof r->kstream + 256], delayed[sizeof r->kdelayed + 256],
        dead[sizeof r->kdead + 256], workers[sizeof r->kworkers + 256];
    const char *name = out->q[i].name;
    swap_name(stream, sizeof stream, r->kstream, at, qlen, name);
    swap_name(delayed, sizeof delayed, r->kdelayed, at, qlen, name);
    swap_name(dead, sizeof dead, r->kdead, at, qlen, name);
    swap_name(workers, sizeof workers, r->kworkers, at, qlen, name);
    append_counts(r, stream, delayed, dead);
    redisAppendCommand(r->c, "ZRANGEBYSCORE %s %lld +inf", workers, (long long)lmp__wall_ms());
  }
  rc = read_replies(b, r, reps, per * n, "counting the queues");
  if (rc < 0) {
    free(reps);
    return rc;
  }
  for (int i = 0; i < n && rc == 0; i++) {
    lmp_broker_queue_t *q = &out->q[i];
    redisReply *names = reps[i * per + COUNT_REPLIES];
    int levels = read_counts(reps + i * per, &q->counts);
    if (levels && q->counts.waiting >= 0) { /* a round trip for a queue with priorities */
      char stream[sizeof r->kstream + 256];
      swap_name(stream, sizeof stream, r->kstream, at, qlen, q->name);
      if ((rc = count_levels(b, r, stream, levels, &q->counts)) < 0)
        break;
    }
    if (names->type != REDIS_REPLY_ARRAY) {
      rc = lmp__broker_fail(b, -EPROTO, "ZRANGEBYSCORE: %s",
                            names->type == REDIS_REPLY_ERROR ? names->str : "unexpected reply");
      break;
    }
    if (names->elements == 0)
      continue;
    q->workers = calloc(names->elements, sizeof *q->workers);
    if (q->workers == NULL) {
      rc = -ENOMEM;
      break;
    }
    for (size_t k = 0; k < names->elements; k++) {
      if (names->element[k]->type != REDIS_REPLY_STRING)
        continue;
      if ((q->workers[q->nworkers].name = strdup(names->element[k]->str)) == NULL) {
        rc = -ENOMEM;
        break;
      }
      q->nworkers++;
    }
  }
  for (int i = 0; i < per * n; i++)
    freeReplyObject(reps[i]);
  free(reps);
  return rc;
}

static char *reply_str(const redisReply *x)
{
  return x->type == REDIS_REPLY_STRING ? strndup(x->str, x->len) : strdup("");
}

/* Every worker's heartbeat: one pipeline.  A worker whose heartbeat lapsed
 * meanwhile keeps an empty info. */
static int read_heartbeats(lmp_broker_t *b, rconn *r, lmp_broker_queues_t *out)
{
  size_t qlen = strlen(b->cfg.queue), at = queue_at(r);
  int total = 0, rc = 0;
  for (int i = 0; i < out->n; i++)
    total += out->q[i].nworkers;
  if (total == 0)
    return 0;
  redisReply **reps = calloc((size_t)total, sizeof *reps);
  if (reps == NULL)
    return -ENOMEM;
  for (int i = 0; i < out->n; i++) {
    for (int k = 0; k < out->q[i].nworkers; k++) {
      char stream[sizeof r->kstream + 256], key[sizeof stream + 256];
      swap_name(stream, sizeof stream, r->kstream, at, qlen, out->q[i].name);
      snprintf(key, sizeof key, "%s:w:%s", stream, out->q[i].workers[k].name); /* as r->kself */
      redisAppendCommand(r->c, "HMGET %s info running at", key);
    }
  }
  rc = read_replies(b, r, reps, total, "HMGET");
  if (rc < 0) {
    free(reps);
    return rc;
  }
  int j = 0;
  for (int i = 0; i < out->n; i++) {
    for (int k = 0; k < out->q[i].nworkers; k++, j++) {
      lmp_broker_worker_t *w = &out->q[i].workers[k];
      redisReply *h = reps[j];
      int ok = h->type == REDIS_REPLY_ARRAY && h->elements == WORKER_FIELDS;
      w->info = ok ? reply_str(h->element[0]) : strdup("");
      w->running = ok ? reply_str(h->element[1]) : strdup("");
      w->seen_ms = ok && h->element[2]->type == REDIS_REPLY_STRING
                       ? strtoll(h->element[2]->str, NULL, 10)
                       : 0;
      if (w->info == NULL || w->running == NULL)
        rc = -ENOMEM;
    }
  }
  for (int i = 0; i < total; i++)
    freeReplyObject(reps[i]);
  free(reps);
  return rc;
}

static int queues_redis(lmp_broker_t *b, const char *only, lmp_broker_queues_t *out)
{
  rconn *r = b->conn;
  char **names = NULL;
  int rc = ensure(b, r, b->cfg.connect_timeout);
  if (rc < 0)
    return rc;
  int n = 1;
  if (only == NULL)
    n = scan_queues(b, r, &names);
  else if ((names = malloc(sizeof *names)) == NULL || (names[0] = strdup(only)) == NULL)
    n = -ENOMEM;
  if (n < 0) {
    free(names);
    return n;
  }
  out->q = n ? calloc((size_t)n, sizeof *out->q) : NULL;
  if (n && out->q == NULL) {
    for (int i = 0; i < n; i++)
      free(names[i]);
    free(names);
    return -ENOMEM;
  }
  for (int i = 0; i < n; i++)
    out->q[i].name = names[i];
  out->n = n;
  free(names);
  if (n > 0 && (rc = read_queues(b, r, out)) == 0)
    rc = read_heartbeats(b, r, out);
  if (rc < 0) {
    lmp_broker_queues_free(out);
    return rc;
  }
  return n;
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
  n->w.cluster = r->cluster;
  n->w.seeds = r->seeds;
  n->w.sent = r->sent;
  n->w.tls = r->tls;
  snprintf(n->w.kstream, sizeof n->w.kstream, "%s", r->kstream);
  snprintf(n->key, sizeof n->key, "%s:c:%s", r->kstream, caller);
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
    if (rc_buffer_read(&n->w) != REDIS_OK || redisGetReplyFromReader(n->w.c, &rep) != REDIS_OK) {
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
    .schemes = "redis rediss redis+cluster rediss+cluster redis+sentinel",
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
    .queues = queues_redis,
    .unregister = unregister_redis,
    .notify_fd = notify_fd_redis,
    .notify_reset = notify_reset_redis,
    .replicate = replicate_redis,
    .server = server_redis,
    .revoke = revoke_redis,
    .revoked = revoked_redis,
};

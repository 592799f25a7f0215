/*
 * broker.c -- the engine-independent half of the broker: the broker object,
 * message signing and the lease keeper.
 *
 * The object holds its configuration, its consumer name (host:pid:random,
 * unique per open so a restarted worker never inherits a dead one's name) and
 * the text of its last failure; every operation is forwarded to the engine
 * the URL's scheme names (broker_redis.c).
 *
 * Signing.  A message is
 *     'L' version kind idlen id[idlen] stamp expires qlen queue[qlen]
 *     payload tag[32]
 * (stamp and expires u64 BE wall ms) with tag = HMAC-SHA256(secret,
 * everything before it) (mac(), below).  The verifier recomputes the tag
 * over the bytes as received and compares with CRYPTO_memcmp before reading
 * any field, so nothing of a forged message (not even its lengths) steers
 * the reader.  The queue keeps an entry from being replayed into another
 * queue, the expiry bounds how long one can be replayed at all, and the
 * engine's replay records (broker_redis.c) cover the time in between.
 *
 * The lease keeper.  A worker runs tasks in child processes while its Lua
 * loop reads, dispatches and publishes; if that loop stalls (a huge result
 * to encode, a slow callback) its leases must still be renewed, or a second
 * worker would take a task that is still running.  So a pthread with its own
 * connection renews every interval the leases of the ids it was given and
 * sends the worker's heartbeat.  The thread touches no Lua state and no
 * allocator-hungry code but the engine's client.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "broker_engine.h"
#include "internal.h"

#define SIGN_VERSION 2
#define SIGN_HEAD 21 /* 'L', version, kind, idlen, stamp, expires, qlen */
#define FUTURE_SKEW_MS (5 * 60 * 1000)
#define PATIENCE_MS 60000 /* reconnecting, by default, before an operation fails */

static const lmp__broker_engine_t *const engines[] = {&lmp__broker_redis, NULL};

/* === helpers === */

int lmp__broker_fail(lmp_broker_t *b, int code, const char *fmt, ...)
{
  va_list ap;
  if (b == NULL) /* a check made for its answer alone */
    return code;
  va_start(ap, fmt);
  vsnprintf(b->err, sizeof b->err, fmt, ap);
  va_end(ap);
  return code;
}

/* The query of a broker URL (rediss://...?ca=PATH&...): its '?', or NULL.
 * It is the first '?' after the credentials, which end at the last '@'
 * before the first '/' (a password may hold '?' and '@', a path in the
 * query '/' and '@'). */
const char *lmp__broker_url_query(const char *url)
{
  const char *p = url ? strstr(url, "://") : NULL, *at = NULL;
  if (p == NULL)
    return NULL;
  p += 3;
  for (const char *s = p; *s && *s != '/'; s++)
    if (*s == '@')
      at = s;
  return strchr(at ? at + 1 : p, '?');
}

/* The password of a broker URL, scheme://[user]:PASSWORD@host... or
 * scheme://PASSWORD@host...: its length (0 if none) and its offset in *off.
 * It runs from the credentials' first ':' (or their start) to the last '@'
 * before the URL's query (else its last '@'), wider than the parser reads it
 * when the URL is malformed (a '/' in the password), so that no part of a
 * password is ever shown. */
size_t lmp__broker_url_password(const char *url, size_t *off)
{
  const char *p = url ? strstr(url, "://") : NULL, *q = lmp__broker_url_query(url), *at = NULL;
  if (p == NULL)
    return 0;
  p += 3;
  for (const char *s = p; q && s < q; s++)
    if (*s == '@')
      at = s;
  if (at == NULL)
    at = strrchr(p, '@');
  if (at == NULL)
    return 0;
  const char *colon = memchr(p, ':', (size_t)(at - p));
  const char *pass = colon ? colon + 1 : p;
  *off = (size_t)(pass - url);
  return (size_t)(at - pass);
}

/* The URL as messages may show it: its password, if any, as "***". */
void lmp__broker_url_shown(const char *url, char *out, size_t n)
{
  size_t off = 0, len = lmp__broker_url_password(url, &off);
  if (len == 0)
    snprintf(out, n, "%s", url ? url : "");
  else
    snprintf(out, n, "%.*s***%s", (int)off, url, url + off + len);
}

int64_t lmp__wall_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

lmp_broker_msg_t *lmp__broker_push(lmp_broker_batch_t *out)
{
  if (out->n == out->cap) {
    int cap = out->cap ? out->cap * 2 : 16;
    lmp_broker_msg_t *m = realloc(out->msg, (size_t)cap * sizeof *m);
    if (m == NULL)
      return NULL;
    out->msg = m;
    out->cap = cap;
  }
  lmp_broker_msg_t *m = &out->msg[out->n++];
  memset(m, 0, sizeof *m);
  return m;
}

void lmp_broker_batch_clear(lmp_broker_batch_t *b)
{
  for (int i = 0; i < b->n; i++) {
    free(b->msg[i].data);
    free(b->msg[i].history);
  }
  b->n = 0;
}

void lmp_broker_batch_free(lmp_broker_batch_t *b)
{
  lmp_broker_batch_clear(b);
  free(b->msg);
  b->msg = NULL;
  b->cap = 0;
}

/* === SIGPIPE === */

/*
 * A write to a connection the server has closed raises SIGPIPE, whose
 * default action ends the process, and hiredis writes with plain write(2).
 * So every engine call runs with SIGPIPE blocked in the calling thread; a
 * SIGPIPE it caused is taken off the pending set before the old mask comes
 * back (the failed write reports EPIPE anyway).  The program's own
 * disposition of SIGPIPE is left alone.
 */
typedef struct pipe_guard {
  sigset_t old;
  int blocked;
} pipe_guard;

static void guard_on(pipe_guard *g)
{
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGPIPE);
  g->blocked = pthread_sigmask(SIG_BLOCK, &s, &g->old) == 0 && !sigismember(&g->old, SIGPIPE);
}

static void guard_off(pipe_guard *g)
{
  sigset_t s, pending;
  struct timespec zero = {0, 0};
  if (!g->blocked)
    return;
  sigemptyset(&s);
  sigaddset(&s, SIGPIPE);
  if (sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE))
    while (sigtimedwait(&s, NULL, &zero) < 0 && errno == EINTR)
      ;
  pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

#define GUARDED(call)                                                                              \
  do {                                                                                             \
    pipe_guard g_;                                                                                 \
    guard_on(&g_);                                                                                 \
    int rc_ = (call);                                                                              \
    guard_off(&g_);                                                                                \
    return rc_;                                                                                    \
  } while (0)

static int guarded_open(lmp_broker_t *b)
{
  GUARDED(b->e->open(b));
}

/* === the object === */

static void make_consumer(char *out, size_t n)
{
  char host[64] = "localhost";
  unsigned char r[4] = {0};
  gethostname(host, sizeof host - 1);
  host[sizeof host - 1] = 0;
  if (RAND_bytes(r, sizeof r) != 1) {
    uint32_t x = (uint32_t)lmp_now_ns() ^ (uint32_t)getpid() * 2654435761u;
    memcpy(r, &x, sizeof r);
  }
  snprintf(out, n, "%s:%d:%02x%02x%02x%02x", host, (int)getpid(), r[0], r[1], r[2], r[3]);
}

int lmp_broker_open(const lmp_broker_config_t *cfg, lmp_broker_t **out, char *errmsg, size_t errlen)
{
  lmp_broker_t *b;
  const char *colon;
  int rc;

  *out = NULL;
  if (errmsg && errlen)
    errmsg[0] = 0;
  char shown[256];
  lmp__broker_url_shown(cfg->url, shown, sizeof shown);
  if (cfg->url == NULL || (colon = strstr(cfg->url, "://")) == NULL) {
    if (errmsg)
      snprintf(errmsg, errlen, "bad broker URL '%s' (expected redis://host:port/db)", shown);
    return -EINVAL;
  }
  const lmp__broker_engine_t *e = NULL;
  size_t len = (size_t)(colon - cfg->url);
  for (int i = 0; engines[i]; i++)
    for (const char *w = engines[i]->schemes; *w; w += strcspn(w, " "), w += *w == ' ')
      if (strcspn(w, " ") == len && strncmp(w, cfg->url, len) == 0)
        e = engines[i];
  if (e == NULL) {
    if (errmsg)
      snprintf(errmsg, errlen,
               "unsupported broker URL '%s' (supported: redis://, rediss://, redis+cluster://, "
               "rediss+cluster://, redis+sentinel://)",
               shown);
    return -EINVAL;
  }
  b = calloc(1, sizeof *b);
  if (b == NULL)
    return -ENOMEM;
  b->e = e;
  b->cfg = *cfg;
  b->url = strdup(cfg->url);
  b->queue = strdup(cfg->queue ? cfg->queue : "default");
  if (b->url == NULL || b->queue == NULL) {
    rc = -ENOMEM;
    goto err;
  }
  b->cfg.url = b->url;
  b->cfg.queue = b->queue;
  if (b->cfg.connect_timeout <= 0)
    b->cfg.connect_timeout = 5000;
  if (b->cfg.result_ttl <= 0)
    b->cfg.result_ttl = 3600 * 1000;
  b->patience_ms = PATIENCE_MS;
  if (cfg->consumer)
    snprintf(b->consumer, sizeof b->consumer, "%s", cfg->consumer);
  else
    make_consumer(b->consumer, sizeof b->consumer);
  b->cfg.consumer = b->consumer;
  rc = guarded_open(b);
  if (rc < 0)
    goto err;
  *out = b;
  return 0;
err:
  if (errmsg)
    snprintf(errmsg, errlen, "%s", b->err[0] ? b->err : lmp_strerror(rc));
  free(b->url);
  free(b->queue);
  free(b);
  return rc;
}

void lmp_broker_close(lmp_broker_t *b)
{
  if (b == NULL)
    return;
  lmp_broker_lease_stop(b);
  b->e->close(b);
  free(b->url);
  free(b->queue);
  free(b);
}

void lmp_broker_set_patience(lmp_broker_t *b, int64_t ms)
{
  b->patience_ms = ms > 0 ? ms : PATIENCE_MS;
}

const char *lmp_broker_errmsg(const lmp_broker_t *b)
{
  return b->err;
}

int lmp_broker_fileno(const lmp_broker_t *b)
{
  return b->e->fileno(b);
}

const char *lmp_broker_consumer(const lmp_broker_t *b)
{
  return b->consumer;
}

/* === forwarding === */

int lmp_broker_put(lmp_broker_t *b, const void *msg, size_t len)
{
  return lmp_broker_put_at(b, msg, len, 0);
}

int lmp_broker_put_at(lmp_broker_t *b, const void *msg, size_t len, int64_t due_ms)
{
  return lmp_broker_put_priority(b, msg, len, due_ms, 0);
}

int lmp_broker_put_priority(lmp_broker_t *b, const void *msg, size_t len, int64_t due_ms,
                            int priority)
{
  if (priority < 0 || priority >= LMP_BROKER_PRIORITIES)
    return lmp__broker_fail(b, -EINVAL, "priority %d is not in 0..%d", priority,
                            LMP_BROKER_PRIORITIES - 1);
  GUARDED(b->e->put(b, msg, len, due_ms > lmp__wall_ms() ? due_ms : 0, priority));
}

int lmp_broker_set_rate_limit(lmp_broker_t *b, double per_s, double burst)
{
  if (!(per_s >= 0) || per_s > 1e9 || !(burst < 1e12))
    return lmp__broker_fail(b, -EINVAL, "bad rate limit %g/s", per_s);
  b->rate = per_s / 1000;
  b->burst = burst >= 1 ? burst : per_s / 10 > 1 ? per_s / 10 : 1;
  return 0;
}

int lmp_broker_promote(lmp_broker_t *b, int max)
{
  GUARDED(b->e->promote(b, max > 0 ? max : 1));
}

int lmp_broker_revoke(lmp_broker_t *b, const char *const *ids, const int64_t *expires_ms, int n,
                      int terminate, int *before)
{
  if (n <= 0)
    return 0;
  GUARDED(b->e->revoke(b, ids, expires_ms, n, terminate, before));
}

int lmp_broker_revoked(lmp_broker_t *b, int64_t *gen, lmp_broker_batch_t *out)
{
  GUARDED(b->e->revoked(b, gen, out));
}

int lmp_broker_flush(lmp_broker_t *b)
{
  GUARDED(b->e->flush(b));
}

int lmp_broker_results(lmp_broker_t *b, const char *caller, int max, int64_t deadline,
                       lmp_broker_batch_t *out)
{
  GUARDED(b->e->results(b, caller, max, deadline, out));
}

int lmp_broker_take(lmp_broker_t *b, int max, int64_t block_ms, lmp_broker_batch_t *out)
{
  GUARDED(b->e->take(b, max, block_ms, out));
}

int lmp_broker_take_send(lmp_broker_t *b, int max, int64_t block_ms)
{
  GUARDED(b->e->take_send(b, max, block_ms));
}

int lmp_broker_take_recv(lmp_broker_t *b, lmp_broker_batch_t *out)
{
  GUARDED(b->e->take_recv(b, out));
}

void lmp_broker_take_cancel(lmp_broker_t *b)
{
  b->e->take_cancel(b);
}

int lmp_broker_state(lmp_broker_t *b, int64_t *count, char *epoch, size_t epochlen)
{
  GUARDED(b->e->state(b, count, epoch, epochlen));
}

int lmp_broker_settle(lmp_broker_t *b, const char *caller, uint64_t lo, int final,
                      int64_t expires_ms)
{
  GUARDED(b->e->settle(b, caller, lo, final, expires_ms));
}

int lmp_broker_complete(lmp_broker_t *b, const lmp_broker_done_t *done, int n)
{
  if (n <= 0)
    return 0;
  GUARDED(b->e->complete(b, done, n));
}

int lmp_broker_release(lmp_broker_t *b, const lmp_broker_msg_t *m, const char *reason)
{
  return lmp_broker_release_later(b, m, reason, 0);
}

int lmp_broker_release_later(lmp_broker_t *b, const lmp_broker_msg_t *m, const char *reason,
                             int64_t delay_ms)
{
  GUARDED(b->e->release(b, m, reason, delay_ms > 0 ? delay_ms : 0));
}

int lmp_broker_bury(lmp_broker_t *b, const lmp_broker_msg_t *m, const char *reason,
                    const lmp_broker_done_t *result)
{
  GUARDED(b->e->bury(b, m, reason, result));
}

int lmp_broker_replicate(lmp_broker_t *b, int replicas, int64_t timeout_ms)
{
  GUARDED(b->e->replicate(b, replicas, timeout_ms));
}

const char *lmp_broker_server(const lmp_broker_t *b, char *out, size_t n)
{
  b->e->server(b, out, n);
  return out;
}

int lmp_broker_renew(lmp_broker_t *b, const char *const *ids, int n)
{
  if (n <= 0)
    return 0;
  GUARDED(b->e->renew(b, ids, n));
}

int lmp_broker_reclaim(lmp_broker_t *b, int64_t idle_ms, int max, lmp_broker_batch_t *out)
{
  GUARDED(b->e->reclaim(b, idle_ms, max, out));
}

int lmp_broker_set_visibility(lmp_broker_t *b, int64_t ms)
{
  GUARDED(b->e->set_visibility(b, ms));
}

int lmp_broker_get_visibility(lmp_broker_t *b, int64_t *ms)
{
  GUARDED(b->e->get_visibility(b, ms));
}

int lmp_broker_counts(lmp_broker_t *b, lmp_broker_counts_t *c)
{
  GUARDED(b->e->counts(b, c));
}

static int lmp__broker_heartbeat(lmp_broker_t *b, const char *info, const char *running,
                                 int64_t ttl_ms)
{
  GUARDED(b->e->heartbeat(b, info, running, ttl_ms));
}

int lmp_broker_heartbeat(lmp_broker_t *b, const char *info, int64_t ttl_ms)
{
  GUARDED(b->e->heartbeat(b, info, "", ttl_ms));
}

int lmp_broker_workers(lmp_broker_t *b, lmp_broker_batch_t *out)
{
  GUARDED(b->e->workers(b, out));
}

int lmp_broker_unregister(lmp_broker_t *b)
{
  GUARDED(b->e->unregister(b));
}

int lmp_broker_queues(lmp_broker_t *b, const char *only, lmp_broker_queues_t *out)
{
  out->q = NULL;
  out->n = 0;
  GUARDED(b->e->queues(b, only, out));
}

void lmp_broker_queues_free(lmp_broker_queues_t *q)
{
  for (int i = 0; q->q && i < q->n; i++) {
    lmp_broker_queue_t *x = &q->q[i];
    for (int k = 0; x->workers && k < x->nworkers; k++) {
      free(x->workers[k].name);
      free(x->workers[k].info);
      free(x->workers[k].running);
    }
    free(x->workers);
    free(x->name);
  }
  free(q->q);
  q->q = NULL;
  q->n = 0;
}

int lmp_broker_notify_fd(lmp_broker_t *b, const char *caller)
{
  GUARDED(b->e->notify_fd(b, caller));
}

int lmp_broker_notify_reset(lmp_broker_t *b)
{
  GUARDED(b->e->notify_reset(b));
}

/* === signing === */

/*
 * HMAC-SHA256 as RFC 2104 defines it, with the digest states after the
 * key's inner and outer pads kept per thread for the last key used: a
 * message then costs two copies of a state and its own hashing, where
 * OpenSSL's one-shot HMAC() looks the algorithm up and keys it afresh each
 * time (six times slower on a task's few hundred bytes).
 */
typedef struct mac_state {
  unsigned char *key;
  size_t keylen;
  EVP_MD_CTX *in, *out, *work;
} mac_state;

static __thread mac_state mac_cache;

static int mac_rekey(mac_state *m, const void *key, size_t keylen)
{
  unsigned char k[64] = {0}, pad[64];
  unsigned int n = 0;
  const EVP_MD *md = EVP_sha256();
  if (m->in == NULL && ((m->in = EVP_MD_CTX_new()) == NULL || (m->out = EVP_MD_CTX_new()) == NULL ||
                        (m->work = EVP_MD_CTX_new()) == NULL))
    return -ENOMEM;
  free(m->key);
  m->key = NULL;
  if (keylen > sizeof k) { /* a long key is hashed first */
    if (EVP_Digest(key, keylen, k, &n, md, NULL) != 1)
      return -EIO;
  } else {
    memcpy(k, key, keylen);
  }
  for (int i = 0; i < 64; i++)
    pad[i] = k[i] ^ 0x36;
  if (EVP_DigestInit_ex(m->in, md, NULL) != 1 || EVP_DigestUpdate(m->in, pad, 64) != 1)
    return -EIO;
  for (int i = 0; i < 64; i++)
    pad[i] = k[i] ^ 0x5c;
  if (EVP_DigestInit_ex(m->out, md, NULL) != 1 || EVP_DigestUpdate(m->out, pad, 64) != 1)
    return -EIO;
  OPENSSL_cleanse(k, sizeof k);
  OPENSSL_cleanse(pad, sizeof pad);
  if ((m->key = malloc(keylen ? keylen : 1)) == NULL)
    return -ENOMEM;
  memcpy(m->key, key, keylen);
  m->keylen = keylen;
  return 0;
}

/* The tag of msg under key into out (LMP_BROKER_MAC_LEN bytes). */
static int mac(const void *key, size_t keylen, const void *msg, size_t len, unsigned char *out)
{
  mac_state *m = &mac_cache;
  unsigned char inner[LMP_BROKER_MAC_LEN];
  unsigned int n = 0;
  if (m->key == NULL || m->keylen != keylen || memcmp(m->key, key, keylen) != 0) {
    int rc = mac_rekey(m, key, keylen);
    if (rc < 0)
      return rc;
  }
  if (EVP_MD_CTX_copy_ex(m->work, m->in) != 1 || EVP_DigestUpdate(m->work, msg, len) != 1 ||
      EVP_DigestFinal_ex(m->work, inner, &n) != 1 || EVP_MD_CTX_copy_ex(m->work, m->out) != 1 ||
      EVP_DigestUpdate(m->work, inner, sizeof inner) != 1 ||
      EVP_DigestFinal_ex(m->work, out, &n) != 1 || n != LMP_BROKER_MAC_LEN)
    return -EIO;
  return 0;
}

static void put_be64(unsigned char *p, uint64_t v)
{
  for (int i = 7; i >= 0; i--, v >>= 8)
    p[i] = (unsigned char)v;
}

static uint64_t get_be64(const unsigned char *p)
{
  uint64_t v = 0;
  for (int i = 0; i < 8; i++)
    v = v << 8 | p[i];
  return v;
}

int lmp_broker_sign(lmp_buf_t *out, const void *key, size_t keylen, int kind, const char *id,
                    const char *queue, int64_t expires, const void *payload, size_t len)
{
  size_t idlen = strlen(id), qlen = strlen(queue), start = out->len;
  size_t head = SIGN_HEAD + idlen + qlen, total = head + len + LMP_BROKER_MAC_LEN;
  if (idlen > 255 || qlen > 255 || keylen > INT32_MAX)
    return -EINVAL;
  int rc = lmp_buf_reserve(out, start + total);
  if (rc < 0)
    return rc;
  unsigned char *p = (unsigned char *)out->data + start;
  p[0] = 'L';
  p[1] = SIGN_VERSION;
  p[2] = (unsigned char)kind;
  p[3] = (unsigned char)idlen;
  memcpy(p + 4, id, idlen);
  put_be64(p + 4 + idlen, (uint64_t)lmp__wall_ms());
  put_be64(p + 12 + idlen, (uint64_t)(expires > 0 ? expires : 0));
  p[20 + idlen] = (unsigned char)qlen;
  memcpy(p + SIGN_HEAD + idlen, queue, qlen);
  memcpy(p + head, payload, len);
  rc = mac(key, keylen, p, head + len, p + head + len);
  if (rc < 0)
    return rc;
  out->len = start + total;
  return 0;
}

/* The fields of a message of `body` bytes (the tag left off), unchecked. */
static int parse(const unsigned char *p, size_t body, lmp_broker_view_t *v)
{
  if (body < SIGN_HEAD || p[0] != 'L' || p[1] != SIGN_VERSION)
    return -EBADMSG;
  size_t idlen = p[3];
  if (SIGN_HEAD + idlen > body)
    return -EBADMSG;
  size_t qlen = p[20 + idlen];
  if (SIGN_HEAD + idlen + qlen > body)
    return -EBADMSG;
  v->kind = p[2];
  v->id = (const char *)p + 4;
  v->idlen = idlen;
  v->stamp = (int64_t)(get_be64(p + 4 + idlen) & INT64_MAX);
  v->expires = (int64_t)(get_be64(p + 12 + idlen) & INT64_MAX);
  v->queue = (const char *)p + SIGN_HEAD + idlen;
  v->qlen = qlen;
  v->payload = v->queue + qlen;
  v->len = body - SIGN_HEAD - idlen - qlen;
  return 0;
}

int lmp_broker_peek(const void *msg, size_t len, lmp_broker_view_t *v)
{
  if (len < SIGN_HEAD + LMP_BROKER_MAC_LEN)
    return -EBADMSG;
  return parse(msg, len - LMP_BROKER_MAC_LEN, v);
}

int lmp_broker_verify(const void *msg, size_t len, const void *key, size_t keylen,
                      int64_t max_age_ms, lmp_broker_view_t *v)
{
  const unsigned char *p = msg;
  unsigned char tag[LMP_BROKER_MAC_LEN];
  lmp_broker_view_t w;
  if (len < SIGN_HEAD + LMP_BROKER_MAC_LEN || keylen > INT32_MAX)
    return -EBADMSG;
  size_t body = len - LMP_BROKER_MAC_LEN;
  if (mac(key, keylen, p, body, tag) < 0)
    return -EIO;
  if (CRYPTO_memcmp(tag, p + body, LMP_BROKER_MAC_LEN) != 0)
    return -EBADMSG;
  /* Authentic from here on; still check the layout (a bug, not an attack). */
  if (parse(p, body, &w) < 0)
    return -EBADMSG;
  int64_t now = lmp__wall_ms();
  if (w.stamp > now + FUTURE_SKEW_MS || (max_age_ms > 0 && now - w.stamp > max_age_ms) ||
      (w.expires > 0 && now > w.expires))
    return -ESTALE;
  *v = w;
  return 0;
}

/* === the lease keeper === */

static char *join_ids(lmp__lease_t *l, const char ***ids, int *n)
{
  /* Copy the ids under the lock so the engine is called without it. */
  size_t sz = 1;
  for (int i = 0; i < l->n; i++)
    sz += strlen(l->ids[i]) + 1;
  char *buf = malloc(sz);
  const char **v = malloc(sizeof *v * (size_t)(l->n + 1));
  if (buf == NULL || v == NULL) {
    free(buf);
    free(v);
    *ids = NULL;
    *n = 0;
    return NULL;
  }
  char *p = buf;
  for (int i = 0; i < l->n; i++) {
    size_t k = strlen(l->ids[i]);
    memcpy(p, l->ids[i], k + 1);
    v[i] = p;
    p += k + 1;
  }
  *p = 0;
  *ids = v;
  *n = l->n;
  return buf;
}

static void *lease_main(void *arg)
{
  lmp__lease_t *l = arg;
  pthread_mutex_lock(&l->mu);
  while (!l->stop) {
    const char **ids;
    int n;
    char *buf = join_ids(l, &ids, &n);
    char *info = strdup(l->info ? l->info : "");
    pthread_mutex_unlock(&l->mu);
    if (buf && ids) {
      lmp_broker_renew(l->conn, ids, n);
      /* The running ids, one per line, for --status. */
      for (int i = 0; i + 1 < n; i++)
        ((char *)ids[i])[strlen(ids[i])] = '\n';
      if (info)
        lmp__broker_heartbeat(l->conn, info, n ? ids[0] : "", l->ttl_ms);
    }
    free(buf);
    free(ids);
    free(info);
    pthread_mutex_lock(&l->mu);
    if (l->stop)
      break;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t d = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + l->interval_ms * 1000000;
    ts = lmp__deadline_ts(d);
    while (!l->stop && pthread_cond_timedwait(&l->cv, &l->mu, &ts) != ETIMEDOUT)
      ;
  }
  pthread_mutex_unlock(&l->mu);
  return NULL;
}

int lmp_broker_lease_start(lmp_broker_t *b, int64_t interval_ms, int64_t ttl_ms)
{
  lmp__lease_t *l;
  pthread_condattr_t ca;
  int rc;
  if (b->lease)
    return -EALREADY;
  l = calloc(1, sizeof *l);
  if (l == NULL)
    return -ENOMEM;
  lmp_broker_config_t cfg = b->cfg;
  cfg.consumer = b->consumer;
  rc = lmp_broker_open(&cfg, &l->conn, b->err, sizeof b->err);
  if (rc < 0) {
    free(l);
    return rc;
  }
  l->interval_ms = interval_ms > 0 ? interval_ms : 1000;
  l->ttl_ms = ttl_ms > 0 ? ttl_ms : 3 * l->interval_ms;
  pthread_mutex_init(&l->mu, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&l->cv, &ca);
  pthread_condattr_destroy(&ca);
  rc = -pthread_create(&l->thread, NULL, lease_main, l);
  if (rc < 0) {
    lmp_broker_close(l->conn);
    free(l);
    return rc;
  }
  l->running = 1;
  l->owner = getpid();
  b->lease = l;
  return 0;
}

int lmp_broker_lease_add(lmp_broker_t *b, const char *id)
{
  lmp__lease_t *l = b->lease;
  int rc = 0;
  if (l == NULL)
    return 0;
  char *s = strdup(id);
  if (s == NULL)
    return -ENOMEM;
  pthread_mutex_lock(&l->mu);
  if (l->n == l->cap) {
    int cap = l->cap ? l->cap * 2 : 64;
    char **v = realloc(l->ids, sizeof *v * (size_t)cap);
    if (v == NULL) {
      rc = -ENOMEM;
      free(s);
      goto out;
    }
    l->ids = v;
    l->cap = cap;
  }
  l->ids[l->n++] = s;
out:
  pthread_mutex_unlock(&l->mu);
  return rc;
}

void lmp_broker_lease_del(lmp_broker_t *b, const char *id)
{
  lmp__lease_t *l = b->lease;
  if (l == NULL)
    return;
  /* Tasks mostly end in the order they came: look from the oldest, and keep
   * the order (a move of pointers) so that the next one is found first too. */
  pthread_mutex_lock(&l->mu);
  for (int i = 0; i < l->n; i++) {
    if (strcmp(l->ids[i], id) == 0) {
      free(l->ids[i]);
      memmove(l->ids + i, l->ids + i + 1, sizeof *l->ids * (size_t)(l->n - i - 1));
      l->n--;
      break;
    }
  }
  pthread_mutex_unlock(&l->mu);
}

int lmp_broker_lease_info(lmp_broker_t *b, const char *info)
{
  lmp__lease_t *l = b->lease;
  if (l == NULL)
    return 0;
  char *s = strdup(info);
  if (s == NULL)
    return -ENOMEM;
  pthread_mutex_lock(&l->mu);
  free(l->info);
  l->info = s;
  pthread_mutex_unlock(&l->mu);
  return 0;
}

void lmp_broker_lease_stop(lmp_broker_t *b)
{
  lmp__lease_t *l = b->lease;
  if (l == NULL)
    return;
  b->lease = NULL;
  if (l->owner != getpid())
    return; /* a forked copy: the thread and its connection are the parent's */
  pthread_mutex_lock(&l->mu);
  l->stop = 1;
  pthread_cond_signal(&l->cv);
  pthread_mutex_unlock(&l->mu);
  pthread_join(l->thread, NULL);
  lmp_broker_unregister(l->conn);
  lmp_broker_close(l->conn);
  for (int i = 0; i < l->n; i++)
    free(l->ids[i]);
  free(l->ids);
  free(l->info);
  pthread_mutex_destroy(&l->mu);
  pthread_cond_destroy(&l->cv);
  free(l);
}

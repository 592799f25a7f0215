/*
 * test_broker.c -- the engine-independent half of lmp/broker.h: signed
 * messages (round trip, every flipped byte and a wrong key refused, stale
 * and future stamps refused) and URL checks that need no server.  The
 * Redis engine itself is tested against a real redis-server by
 * tests/broker_spec.lua.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "lmp/broker.h"
#include "lmp/common.h"
#include "runner.h"

static const char key[] = "k3y";

TEST(sign_round_trip)
{
  lmp_buf_t b = {0};
  lmp_broker_view_t v;
  CHECK_EQ(lmp_broker_sign(&b, key, 3, LMP_BROKER_TASK, "caller.1", "q", 0, "payload", 7), 0);
  CHECK_EQ(b.len, 21 + 8 + 1 + 7 + LMP_BROKER_MAC_LEN);
  CHECK_EQ(lmp_broker_verify(b.data, b.len, key, 3, 60000, &v), 0);
  CHECK_EQ(v.kind, LMP_BROKER_TASK);
  CHECK_EQ(v.idlen, 8);
  CHECK(memcmp(v.id, "caller.1", 8) == 0);
  CHECK_EQ(v.qlen, 1);
  CHECK_EQ(v.queue[0], 'q');
  CHECK_EQ(v.expires, 0);
  CHECK_EQ(v.len, 7);
  CHECK(memcmp(v.payload, "payload", 7) == 0);
  lmp_buf_free(&b);
}

/* The tag is HMAC-SHA256 of everything before it, as OpenSSL's own HMAC
 * computes it: for short and long keys (over the 64-byte block), and after
 * the key changes between messages. */
TEST(sign_tag_is_hmac_sha256)
{
  char longkey[100];
  memset(longkey, 'k', sizeof longkey);
  const char *keys[] = {key, longkey, key, "another"};
  size_t lens[] = {3, sizeof longkey, 3, 7};
  for (int i = 0; i < 4; i++) {
    lmp_buf_t b = {0};
    unsigned char want[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    CHECK_EQ(lmp_broker_sign(&b, keys[i], lens[i], LMP_BROKER_TASK, "c.1", "q", 0, "payload", 7),
             0);
    size_t body = b.len - LMP_BROKER_MAC_LEN;
    CHECK(HMAC(EVP_sha256(), keys[i], (int)lens[i], (unsigned char *)b.data, body, want, &n) !=
          NULL);
    CHECK_EQ(n, LMP_BROKER_MAC_LEN);
    CHECK(memcmp(want, b.data + body, LMP_BROKER_MAC_LEN) == 0);
    lmp_buf_free(&b);
  }
}

/* peek reads what anyone could have written into Redis: for any bytes it
 * either refuses them or names fields that lie inside them. */
TEST(peek_stays_inside_any_bytes)
{
  unsigned char buf[160];
  uint32_t x = 2463534242u;
  int read = 0;
  for (int i = 0; i < 200000; i++) {
    size_t len = 0;
    x ^= x << 13, x ^= x >> 17, x ^= x << 5;
    len = x % sizeof buf;
    for (size_t k = 0; k < len; k++) {
      x ^= x << 13, x ^= x >> 17, x ^= x << 5;
      buf[k] = (unsigned char)x;
    }
    if (len > 4 && i % 2) { /* most of a header, so the length checks are reached */
      buf[0] = 'L';
      buf[1] = 2;
      buf[3] = (unsigned char)(x % 48);
    }
    lmp_broker_view_t v;
    if (lmp_broker_peek(buf, len, &v) == 0) {
      const char *end = (const char *)buf + len;
      CHECK(v.id >= (const char *)buf && v.id + v.idlen <= end);
      CHECK(v.queue >= (const char *)buf && v.queue + v.qlen <= end);
      CHECK(v.payload >= (const char *)buf && v.payload + v.len + LMP_BROKER_MAC_LEN <= end);
      read++;
    }
  }
  CHECK(read > 1000); /* the accepting side was reached too */
}

/* The queue and the expiry are signed: an entry cannot be moved to another
 * queue or kept alive past its expiry without the secret. */
TEST(sign_carries_queue_and_expiry)
{
  lmp_buf_t b = {0};
  lmp_broker_view_t v, p;
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  int64_t ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
  CHECK_EQ(lmp_broker_sign(&b, key, 3, LMP_BROKER_TASK, "c.7", "jobs", ms + 60000, "x", 1), 0);
  CHECK_EQ(lmp_broker_verify(b.data, b.len, key, 3, 0, &v), 0);
  CHECK_EQ(v.qlen, 4);
  CHECK(memcmp(v.queue, "jobs", 4) == 0);
  CHECK_EQ(v.expires, ms + 60000);
  /* peek reads the same fields without the key */
  CHECK_EQ(lmp_broker_peek(b.data, b.len, &p), 0);
  CHECK_EQ(p.idlen, 3);
  CHECK(memcmp(p.id, "c.7", 3) == 0);
  CHECK_EQ(p.qlen, 4);
  CHECK_EQ(lmp_broker_peek(b.data, 20, &p), -EBADMSG);
  lmp_buf_free(&b);
  CHECK_EQ(lmp_broker_sign(&b, key, 3, LMP_BROKER_TASK, "c.8", "jobs", ms - 1, "x", 1), 0);
  CHECK_EQ(lmp_broker_verify(b.data, b.len, key, 3, 0, &v), -ESTALE);
  lmp_buf_free(&b);
}

TEST(sign_refuses_tampering)
{
  lmp_buf_t b = {0};
  lmp_broker_view_t v;
  CHECK_EQ(lmp_broker_sign(&b, key, 3, LMP_BROKER_RESULT, "t.9", "q", 0, "some result bytes", 17),
           0);
  for (size_t i = 0; i < b.len; i++) {
    b.data[i] ^= 0x01;
    CHECK_EQ(lmp_broker_verify(b.data, b.len, key, 3, 0, &v), -EBADMSG);
    b.data[i] ^= 0x01;
  }
  CHECK_EQ(lmp_broker_verify(b.data, b.len, "k3z", 3, 0, &v), -EBADMSG);
  CHECK_EQ(lmp_broker_verify(b.data, b.len - 1, key, 3, 0, &v), -EBADMSG);
  CHECK_EQ(lmp_broker_verify(b.data, 10, key, 3, 0, &v), -EBADMSG);
  CHECK_EQ(lmp_broker_verify("", 0, key, 3, 0, &v), -EBADMSG);
  CHECK_EQ(lmp_broker_verify(b.data, b.len, key, 3, 0, &v), 0);
  lmp_buf_free(&b);
}

TEST(sign_refuses_stale)
{
  lmp_buf_t b = {0};
  lmp_broker_view_t v;
  CHECK_EQ(lmp_broker_sign(&b, key, 3, LMP_BROKER_TASK, "x", "q", 0, "p", 1), 0);
  struct timespec ts = {0, 30 * 1000000};
  nanosleep(&ts, NULL);
  CHECK_EQ(lmp_broker_verify(b.data, b.len, key, 3, 10, &v), -ESTALE);
  CHECK_EQ(lmp_broker_verify(b.data, b.len, key, 3, 60000, &v), 0);
  lmp_buf_free(&b);
}

TEST(open_rejects_bad_urls)
{
  lmp_broker_t *b = (lmp_broker_t *)1;
  char err[200];
  lmp_broker_config_t cfg = {.url = "http://127.0.0.1:1/0"};
  CHECK_EQ(lmp_broker_open(&cfg, &b, err, sizeof err), -EINVAL);
  CHECK(b == NULL);
  CHECK(strstr(err, "unsupported broker URL") != NULL);
  cfg.url = "redis://127.0.0.1:99999/0";
  CHECK_EQ(lmp_broker_open(&cfg, &b, err, sizeof err), -EINVAL);
  CHECK(strstr(err, "bad port") != NULL);
  cfg.url = "redis://127.0.0.1:6379/x";
  CHECK_EQ(lmp_broker_open(&cfg, &b, err, sizeof err), -EINVAL);
  cfg.url = "nonsense";
  CHECK_EQ(lmp_broker_open(&cfg, &b, err, sizeof err), -EINVAL);
  static const char *const bad6[] = {"redis://[::1/0", "redis://[]:6379/0", "redis://[::1]x/0",
                                     "redis://[::1]:/0", "redis://[::1]:70000/0"};
  for (size_t i = 0; i < sizeof bad6 / sizeof *bad6; i++) {
    cfg.url = bad6[i];
    CHECK_EQ(lmp_broker_open(&cfg, &b, err, sizeof err), -EINVAL);
    CHECK(strstr(err, "bad broker URL") != NULL);
  }
}

TEST(open_unreachable_in_time)
{
  lmp_broker_t *b;
  char err[200];
  /* port 1 on loopback: nobody listens there */
  lmp_broker_config_t cfg = {.url = "redis://127.0.0.1:1/0", .connect_timeout = 500};
  int64_t t0 = lmp_now_ns();
  int rc = lmp_broker_open(&cfg, &b, err, sizeof err);
  CHECK(rc < 0);
  CHECK(b == NULL);
  CHECK(strstr(err, "cannot reach the broker") != NULL);
  CHECK(lmp_now_ns() - t0 < 3000000000LL);
  /* an IPv6 address parses, and is tried */
  cfg.url = "redis://[::1]:1/0";
  CHECK(lmp_broker_open(&cfg, &b, err, sizeof err) < 0);
  CHECK(strstr(err, "cannot reach the broker") != NULL);
}

TEST_LIST = {
    TEST_ENTRY(sign_carries_queue_and_expiry),
    TEST_ENTRY(sign_tag_is_hmac_sha256),
    TEST_ENTRY(peek_stays_inside_any_bytes),
    TEST_ENTRY(sign_round_trip),
    TEST_ENTRY(sign_refuses_tampering),
    TEST_ENTRY(sign_refuses_stale),
    TEST_ENTRY(open_rejects_bad_urls),
    TEST_ENTRY(open_unreachable_in_time),
    TEST_END,
};

/*
 * test_common.c -- time, deadlines, error messages and byte buffers.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <time.h>

#include "lmp/common.h"
#include "runner.h"

TEST(now_is_monotonic_ns)
{
  struct timespec ts;
  int64_t a, b, c;
  int i;

  a = lmp_now_ns();
  clock_gettime(CLOCK_MONOTONIC, &ts);
  b = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
  CHECK(b >= a && b - a < 100000000);
  for (i = 0; i < 1000; i++) {
    c = lmp_now_ns();
    CHECK(c >= b);
    b = c;
  }
  lmp_test_sleep_ms(20);
  CHECK(lmp_now_ns() - a >= 20000000);
}

TEST(deadline_forever)
{
  CHECK_EQ(lmp_deadline(-1), LMP_FOREVER);
  CHECK_EQ(lmp_deadline(-0.001), LMP_FOREVER);
  CHECK_EQ(lmp_deadline(-INFINITY), LMP_FOREVER);
  CHECK_EQ(lmp_deadline(NAN), LMP_FOREVER);
  CHECK_EQ(lmp_deadline(INFINITY), LMP_FOREVER);
  CHECK_EQ(lmp_deadline(1e300), LMP_FOREVER);
  CHECK_EQ(lmp_deadline(1e10), LMP_FOREVER);
  CHECK_EQ(lmp_deadline((double)INT64_MAX), LMP_FOREVER);
}

TEST(deadline_zero_has_expired)
{
  int64_t d = lmp_deadline(0);
  CHECK(d != LMP_FOREVER);
  CHECK(d <= lmp_now_ns());
}

TEST(deadline_relative)
{
  int64_t before = lmp_now_ns(), d = lmp_deadline(1.5), after = lmp_now_ns();

  CHECK(d >= before + 1500000000LL - 1);
  CHECK(d <= after + 1500000000LL + 1);
  /* The smallest positive timeout has not expired at the moment it is made. */
  d = lmp_deadline(1e-12);
  CHECK(d > before);
  /* Large but finite timeouts stay in the future and never wrap. */
  d = lmp_deadline(1e9);
  CHECK(d > lmp_now_ns() + (int64_t)9e17);
  CHECK(d < LMP_FOREVER);
}

TEST(strerror_words)
{
  CHECK_STREQ(lmp_strerror(-ETIMEDOUT), "timed out");
  CHECK_STREQ(lmp_strerror(-EPIPE), "closed");
  CHECK_STREQ(lmp_strerror(-EOWNERDEAD), "owner died");
  CHECK_STREQ(lmp_strerror(-EAGAIN), "would block");
  CHECK_STREQ(lmp_strerror(-ENOENT), "no such object");
  CHECK_STREQ(lmp_strerror(0), "success");
  CHECK(lmp_strerror(-EACCES) != NULL && lmp_strerror(-EACCES)[0] != '\0');
  CHECK(lmp_strerror(-99999) != NULL && lmp_strerror(-99999)[0] != '\0');
}

TEST(buf_grows_and_keeps_data)
{
  lmp_buf_t b = {0};
  size_t i;

  CHECK_EQ(lmp_buf_reserve(&b, 10), 0);
  CHECK(b.cap >= 10 && b.data != NULL);
  memcpy(b.data, "0123456789", 10);
  b.len = 10;
  CHECK_EQ(lmp_buf_reserve(&b, 5), 0); /* never shrinks */
  CHECK(b.cap >= 10);
  CHECK_EQ(lmp_buf_reserve(&b, 1 << 20), 0);
  CHECK(b.cap >= (1u << 20));
  CHECK_EQ(memcmp(b.data, "0123456789", 10), 0);
  CHECK_EQ(b.len, 10);
  for (i = 0; i < b.cap; i++)
    b.data[i] = (char)i;
  CHECK_EQ(lmp_buf_reserve(&b, SIZE_MAX), -ENOMEM);
  CHECK(b.cap >= (1u << 20) && b.data != NULL); /* untouched on failure */
  lmp_buf_free(&b);
  CHECK(b.data == NULL && b.cap == 0 && b.len == 0);
  lmp_buf_free(&b); /* twice is harmless */
}

TEST_LIST = {
  TEST_ENTRY(now_is_monotonic_ns),
  TEST_ENTRY(deadline_forever),
  TEST_ENTRY(deadline_zero_has_expired),
  TEST_ENTRY(deadline_relative),
  TEST_ENTRY(strerror_words),
  TEST_ENTRY(buf_grows_and_keeps_data),
  TEST_END
};

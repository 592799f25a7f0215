/*
 * test_dict.c -- the shared Dict and List: basic operations, insertion
 * order, growth into new stores (with a reader in another process), writers
 * in four processes, a holder killed mid-change, and what the last holder
 * lets go of.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmp/common.h"
#include "lmp/dict.h"
#include "lmp/proc.h"
#include "lmp/runtime.h"
#include "lmp/segment.h"
#include "runner.h"

static void set_s(lmp_dict_t *d, const char *k, const char *v)
{
  CHECK_EQ(lmp_dict_set(d, k, strlen(k), v, strlen(v)), 0);
}

/* The value at k as a NUL-terminated string in buf, or NULL. */
static const char *get_s(lmp_dict_t *d, const char *k, char *buf, size_t size)
{
  const void *v;
  size_t n;
  if (lmp_dict_find(d, k, strlen(k), &v, &n) < 0)
    return NULL;
  CHECK(n < size);
  memcpy(buf, v, n);
  buf[n] = '\0';
  return buf;
}

static int64_t get_i(lmp_dict_t *d, const char *k)
{
  const void *v;
  size_t n;
  int64_t x = 0;
  if (lmp_dict_find(d, k, strlen(k), &v, &n) == 0) {
    CHECK_EQ(n, sizeof x);
    memcpy(&x, v, sizeof x);
  }
  return x;
}

static void set_i(lmp_dict_t *d, const char *k, int64_t x)
{
  CHECK_EQ(lmp_dict_set(d, k, strlen(k), &x, sizeof x), 0);
}

/* A process holding the root's segment (pass it by name, pinned). */
static lmp_dict_t *dict_in_child(const char *name)
{
  lmp_seg_t *seg;
  lmp_dict_t *d;
  CHECK_EQ(lmp_seg_attach(name, 0, &seg), 0);
  CHECK_EQ(lmp_dict_open(seg, &d), 0);
  lmp_seg_release(seg);
  return d;
}

/* === Dict === */

TEST(dict_basics)
{
  lmp_dict_t *d;
  char buf[64];
  CHECK_EQ(lmp_dict_create(&d), 0);
  CHECK_EQ(lmp_dict_lock(d), 0);
  CHECK_EQ(lmp_dict_len(d), 0);
  CHECK(get_s(d, "a", buf, sizeof buf) == NULL);
  set_s(d, "a", "1");
  set_s(d, "b", "22");
  set_s(d, "", "empty key");
  CHECK_EQ(lmp_dict_set(d, "z", 1, NULL, 0), 0); /* empty value */
  CHECK_EQ(lmp_dict_len(d), 4);
  CHECK_STREQ(get_s(d, "a", buf, sizeof buf), "1");
  CHECK_STREQ(get_s(d, "b", buf, sizeof buf), "22");
  CHECK_STREQ(get_s(d, "", buf, sizeof buf), "empty key");
  CHECK_STREQ(get_s(d, "z", buf, sizeof buf), "");
  set_s(d, "a", "replaced, and longer");
  CHECK_EQ(lmp_dict_len(d), 4);
  CHECK_STREQ(get_s(d, "a", buf, sizeof buf), "replaced, and longer");
  CHECK_EQ(lmp_dict_del(d, "b", 1), 0);
  CHECK_EQ(lmp_dict_del(d, "b", 1), -ENOENT);
  CHECK(get_s(d, "b", buf, sizeof buf) == NULL);
  CHECK_EQ(lmp_dict_len(d), 3);
  /* Binary keys: a prefix is not the key. */
  CHECK_EQ(lmp_dict_set(d, "k\0x", 3, "1", 1), 0);
  CHECK_EQ(lmp_dict_set(d, "k\0y", 3, "2", 1), 0);
  CHECK(get_s(d, "k", buf, sizeof buf) == NULL);
  lmp_dict_clear(d);
  CHECK_EQ(lmp_dict_len(d), 0);
  CHECK(get_s(d, "a", buf, sizeof buf) == NULL);
  set_s(d, "after", "clear");
  CHECK_STREQ(get_s(d, "after", buf, sizeof buf), "clear");
  lmp_dict_unlock(d);
  lmp_dict_free(d, NULL, NULL);
  CHECK_EQ(lmp_test_segments(), 0);
}

TEST(dict_keeps_insertion_order)
{
  lmp_dict_t *d;
  const void *k, *v;
  size_t kl, vl, pos = 0;
  char got[16];
  int n = 0;
  CHECK_EQ(lmp_dict_create(&d), 0);
  CHECK_EQ(lmp_dict_lock(d), 0);
  set_s(d, "c", "1");
  set_s(d, "a", "2");
  set_s(d, "d", "3");
  set_s(d, "b", "4");
  set_s(d, "a", "5"); /* replacing keeps the place */
  CHECK_EQ(lmp_dict_del(d, "d", 1), 0);
  set_s(d, "d", "6"); /* re-inserted: last */
  while (lmp_dict_next(d, &pos, &k, &kl, &v, &vl)) {
    CHECK_EQ(kl, 1);
    got[n++] = *(const char *)k;
  }
  got[n] = '\0';
  CHECK_STREQ(got, "cabd");
  lmp_dict_unlock(d);
  lmp_dict_free(d, NULL, NULL);
}

TEST(dict_grows_and_shrinks)
{
  lmp_dict_t *d;
  char k[32], v[64], buf[64];
  CHECK_EQ(lmp_dict_create(&d), 0);
  CHECK_EQ(lmp_dict_lock(d), 0);
  for (int i = 0; i < 20000; i++) {
    snprintf(k, sizeof k, "key-%d", i);
    snprintf(v, sizeof v, "value-%d-%0*d", i, i % 40, 0);
    set_s(d, k, v);
  }
  CHECK_EQ(lmp_dict_len(d), 20000);
  for (int i = 0; i < 20000; i++) {
    snprintf(k, sizeof k, "key-%d", i);
    snprintf(v, sizeof v, "value-%d-%0*d", i, i % 40, 0);
    CHECK_STREQ(get_s(d, k, buf, sizeof buf), v);
  }
  /* The store moved out of the root: two segments now. */
  CHECK_EQ(lmp_test_segments(), 2);
  for (int i = 0; i < 20000; i += 2) {
    snprintf(k, sizeof k, "key-%d", i);
    CHECK_EQ(lmp_dict_del(d, k, strlen(k)), 0);
  }
  /* Churn: replacements fill the arena with garbage, rebuilds compact it. */
  for (int r = 0; r < 50; r++)
    for (int i = 1; i < 200; i += 2) {
      snprintf(k, sizeof k, "key-%d", i);
      snprintf(v, sizeof v, "round-%d", r);
      set_s(d, k, v);
    }
  CHECK_EQ(lmp_dict_len(d), 10000);
  CHECK_STREQ(get_s(d, "key-199", buf, sizeof buf), "round-49");
  CHECK_STREQ(get_s(d, "key-201", buf, sizeof buf), "value-201-0");
  CHECK(get_s(d, "key-200", buf, sizeof buf) == NULL);
  CHECK_EQ(lmp_test_segments(), 2);
  lmp_dict_unlock(d);
  lmp_dict_free(d, NULL, NULL);
  CHECK_EQ(lmp_test_segments(), 0);
}

/* 4 processes x 10k read-modify-write increments of one key: 40000. */
TEST(dict_four_writers_lose_nothing)
{
  lmp_dict_t *d;
  lmp_proc_t *kids[4];
  char name[LMP_SEG_NAME_MAX];
  CHECK_EQ(lmp_dict_create(&d), 0);
  snprintf(name, sizeof name, "%s", lmp_seg_name(lmp_dict_seg(d)));
  for (int w = 0; w < 4; w++) {
    if ((kids[w] = lmp_test_start()) == NULL) {
      lmp_dict_t *c = dict_in_child(name);
      char k[32];
      for (int i = 0; i < 10000; i++) {
        CHECK_EQ(lmp_dict_lock(c), 0);
        set_i(c, "n", get_i(c, "n") + 1);
        /* and keys of its own, so the store grows while the others write */
        snprintf(k, sizeof k, "w%d-%d", w, i);
        set_i(c, k, i);
        lmp_dict_unlock(c);
      }
      lmp_dict_free(c, NULL, NULL);
      lmp_proc_exit(0);
    }
  }
  for (int w = 0; w < 4; w++)
    CHECK_EQ(lmp_test_finish(kids[w]), 0);
  CHECK_EQ(lmp_dict_lock(d), 0);
  CHECK_EQ(get_i(d, "n"), 40000);
  CHECK_EQ(lmp_dict_len(d), 40001);
  CHECK_EQ(get_i(d, "w3-9999"), 9999);
  lmp_dict_unlock(d);
  lmp_dict_free(d, NULL, NULL);
  CHECK_EQ(lmp_test_segments(), 0);
}

/* A reader in another process keeps checking while the store is rebuilt
 * under it again and again. */
TEST(dict_growth_with_a_concurrent_reader)
{
  lmp_dict_t *d;
  lmp_proc_t *reader;
  char name[LMP_SEG_NAME_MAX];
  CHECK_EQ(lmp_dict_create(&d), 0);
  snprintf(name, sizeof name, "%s", lmp_seg_name(lmp_dict_seg(d)));
  CHECK_EQ(lmp_dict_lock(d), 0);
  for (int i = 0; i < 16; i++) {
    char k[32];
    snprintf(k, sizeof k, "fixed%d", i);
    set_i(d, k, i * 7);
  }
  set_i(d, "done", 0);
  lmp_dict_unlock(d);
  if ((reader = lmp_test_start()) == NULL) {
    lmp_dict_t *c = dict_in_child(name);
    int64_t seen = 0;
    for (int done = 0; !done;) {
      CHECK_EQ(lmp_dict_lock(c), 0);
      for (int i = 0; i < 16; i++) {
        char k[32];
        snprintf(k, sizeof k, "fixed%d", i);
        CHECK_EQ(get_i(c, k), i * 7);
      }
      int64_t n = (int64_t)lmp_dict_len(c);
      CHECK(n >= seen); /* the writer only adds */
      seen = n;
      done = get_i(c, "done") != 0;
      lmp_dict_unlock(c);
    }
    lmp_dict_free(c, NULL, NULL);
    lmp_proc_exit(0);
  }
  for (int i = 0; i < 30000; i++) {
    char k[32];
    snprintf(k, sizeof k, "grow%d", i);
    CHECK_EQ(lmp_dict_lock(d), 0);
    set_i(d, k, i);
    lmp_dict_unlock(d);
  }
  CHECK_EQ(lmp_dict_lock(d), 0);
  set_i(d, "done", 1);
  lmp_dict_unlock(d);
  CHECK_EQ(lmp_test_finish(reader), 0);
  lmp_dict_free(d, NULL, NULL);
  CHECK_EQ(lmp_test_segments(), 0);
}

/* A holder killed in the middle of changes: the next locker repairs the
 * index and the counts, and nothing that was published is lost. */
TEST(dict_holder_killed)
{
  lmp_dict_t *d;
  lmp_proc_t *p;
  char name[LMP_SEG_NAME_MAX], buf[32];
  CHECK_EQ(lmp_dict_create(&d), 0);
  snprintf(name, sizeof name, "%s", lmp_seg_name(lmp_dict_seg(d)));
  CHECK_EQ(lmp_dict_lock(d), 0);
  set_s(d, "kept", "yes");
  lmp_dict_unlock(d);
  if ((p = lmp_test_start()) == NULL) {
    lmp_dict_t *c = dict_in_child(name);
    CHECK_EQ(lmp_dict_lock(c), 0);
    for (int i = 0; i < 500; i++) {
      char k[32];
      snprintf(k, sizeof k, "c%d", i);
      set_s(c, k, "child");
    }
    CHECK_EQ(lmp_dict_del(c, "c7", 2), 0);
    raise(SIGKILL); /* with the lock held */
  }
  CHECK_EQ(lmp_test_finish(p), -SIGKILL);
  CHECK_EQ(lmp_dict_lock(d), 0);
  CHECK_EQ(lmp_dict_len(d), 500);
  CHECK_STREQ(get_s(d, "kept", buf, sizeof buf), "yes");
  CHECK_STREQ(get_s(d, "c499", buf, sizeof buf), "child");
  CHECK(get_s(d, "c7", buf, sizeof buf) == NULL);
  set_s(d, "c7", "again");
  CHECK_EQ(lmp_dict_len(d), 501);
  lmp_dict_unlock(d);
  lmp_dict_free(d, NULL, NULL);
}

static void count_visit(void *ctx, const void *val, size_t len)
{
  (void)val;
  *(size_t *)ctx += len;
}

TEST(dict_last_holder_visits_values)
{
  lmp_dict_t *d, *d2;
  lmp_seg_t *seg;
  size_t bytes = 0;
  CHECK_EQ(lmp_dict_create(&d), 0);
  CHECK_EQ(lmp_dict_lock(d), 0);
  set_s(d, "a", "123");
  set_s(d, "b", "4567");
  set_s(d, "c", "x");
  CHECK_EQ(lmp_dict_del(d, "c", 1), 0);
  lmp_dict_unlock(d);
  seg = lmp_dict_seg(d);
  CHECK_EQ(lmp_dict_open(seg, &d2), 0);
  lmp_dict_free(d2, count_visit, &bytes); /* not the last handle */
  CHECK_EQ(bytes, 0);
  lmp_dict_free(d, count_visit, &bytes);
  CHECK_EQ(bytes, 7);
  CHECK_EQ(lmp_test_segments(), 0);
}

TEST(dict_open_checks_the_kind)
{
  lmp_dict_t *d, *d2;
  lmp_list_t *l;
  lmp_seg_t *seg;
  CHECK_EQ(lmp_dict_create(&d), 0);
  CHECK_EQ(lmp_list_open(lmp_dict_seg(d), &l), -EINVAL);
  CHECK_EQ(lmp_seg_create(100000, &seg), 0);
  CHECK_EQ(lmp_dict_open(seg, &d2), -EINVAL);
  lmp_seg_release(seg);
  lmp_dict_free(d, NULL, NULL);
  CHECK_EQ(lmp_test_segments(), 0);
}

/* === List === */

static void list_expect(lmp_list_t *l, const char *want)
{
  char got[256];
  size_t n = 0;
  for (size_t i = 0; i < lmp_list_len(l); i++) {
    const void *v;
    size_t len;
    CHECK_EQ(lmp_list_get(l, i, &v, &len), 0);
    CHECK(n + len + 1 < sizeof got);
    memcpy(got + n, v, len);
    n += len;
    got[n++] = ',';
  }
  got[n] = '\0';
  CHECK_STREQ(got, want);
}

static void push(lmp_list_t *l, size_t i, const char *s)
{
  CHECK_EQ(lmp_list_insert(l, i, s, strlen(s)), 0);
}

TEST(list_basics)
{
  lmp_list_t *l;
  const void *v;
  size_t len;
  CHECK_EQ(lmp_list_create(&l), 0);
  CHECK_EQ(lmp_list_lock(l), 0);
  CHECK_EQ(lmp_list_len(l), 0);
  CHECK_EQ(lmp_list_get(l, 0, &v, &len), -ERANGE);
  push(l, 0, "a");
  push(l, 1, "b");
  push(l, 2, "c");
  list_expect(l, "a,b,c,");
  push(l, 0, "first");
  push(l, 2, "mid");
  list_expect(l, "first,a,mid,b,c,");
  CHECK_EQ(lmp_list_insert(l, 6, "x", 1), -ERANGE);
  CHECK_EQ(lmp_list_set(l, 1, "A", 1), 0);
  CHECK_EQ(lmp_list_set(l, 5, "x", 1), -ERANGE);
  list_expect(l, "first,A,mid,b,c,");
  CHECK_EQ(lmp_list_del(l, 4), 0); /* the last */
  CHECK_EQ(lmp_list_del(l, 0), 0); /* the first */
  CHECK_EQ(lmp_list_del(l, 1), 0); /* the middle */
  CHECK_EQ(lmp_list_del(l, 2), -ERANGE);
  list_expect(l, "A,b,");
  CHECK_EQ(lmp_list_insert(l, 2, NULL, 0), 0);
  list_expect(l, "A,b,,");
  lmp_list_clear(l);
  CHECK_EQ(lmp_list_len(l), 0);
  push(l, 0, "again");
  list_expect(l, "again,");
  lmp_list_unlock(l);
  lmp_list_free(l, NULL, NULL);
  CHECK_EQ(lmp_test_segments(), 0);
}

TEST(list_grows)
{
  lmp_list_t *l;
  char s[32];
  CHECK_EQ(lmp_list_create(&l), 0);
  CHECK_EQ(lmp_list_lock(l), 0);
  for (int i = 0; i < 20000; i++) {
    snprintf(s, sizeof s, "%d", i);
    push(l, lmp_list_len(l), s);
  }
  push(l, 0, "head");
  push(l, 10000, "middle");
  CHECK_EQ(lmp_list_len(l), 20002);
  for (size_t i = 0; i < lmp_list_len(l); i++) {
    const void *v;
    size_t len;
    CHECK_EQ(lmp_list_get(l, i, &v, &len), 0);
    if (i == 0)
      snprintf(s, sizeof s, "head");
    else if (i == 10000)
      snprintf(s, sizeof s, "middle");
    else
      snprintf(s, sizeof s, "%zu", i < 10000 ? i - 1 : i - 2);
    CHECK_EQ(len, strlen(s));
    CHECK(memcmp(v, s, len) == 0);
  }
  /* Replacing every item: garbage, then compaction. */
  for (int r = 0; r < 5; r++)
    for (size_t i = 0; i < lmp_list_len(l); i++)
      CHECK_EQ(lmp_list_set(l, i, "same", 4), 0);
  while (lmp_list_len(l) > 3)
    CHECK_EQ(lmp_list_del(l, 1), 0);
  list_expect(l, "same,same,same,");
  lmp_list_unlock(l);
  lmp_list_free(l, NULL, NULL);
  CHECK_EQ(lmp_test_segments(), 0);
}

TEST(list_four_appenders)
{
  lmp_list_t *l;
  lmp_proc_t *kids[4];
  char name[LMP_SEG_NAME_MAX];
  CHECK_EQ(lmp_list_create(&l), 0);
  snprintf(name, sizeof name, "%s", lmp_seg_name(lmp_list_seg(l)));
  for (int w = 0; w < 4; w++) {
    if ((kids[w] = lmp_test_start()) == NULL) {
      lmp_seg_t *seg;
      lmp_list_t *c;
      CHECK_EQ(lmp_seg_attach(name, 0, &seg), 0);
      CHECK_EQ(lmp_list_open(seg, &c), 0);
      lmp_seg_release(seg);
      for (int i = 0; i < 5000; i++) {
        int32_t x = w * 100000 + i;
        CHECK_EQ(lmp_list_lock(c), 0);
        CHECK_EQ(lmp_list_insert(c, i % 2 ? 0 : lmp_list_len(c), &x, sizeof x), 0);
        lmp_list_unlock(c);
      }
      lmp_list_free(c, NULL, NULL);
      lmp_proc_exit(0);
    }
  }
  for (int w = 0; w < 4; w++)
    CHECK_EQ(lmp_test_finish(kids[w]), 0);
  CHECK_EQ(lmp_list_lock(l), 0);
  CHECK_EQ(lmp_list_len(l), 20000);
  static char seen[4][5000];
  for (size_t i = 0; i < 20000; i++) {
    const void *v;
    size_t len;
    int32_t x;
    CHECK_EQ(lmp_list_get(l, i, &v, &len), 0);
    CHECK_EQ(len, 4);
    memcpy(&x, v, 4);
    CHECK(x / 100000 < 4 && x % 100000 < 5000);
    CHECK(!seen[x / 100000][x % 100000]);
    seen[x / 100000][x % 100000] = 1;
  }
  lmp_list_unlock(l);
  lmp_list_free(l, NULL, NULL);
  CHECK_EQ(lmp_test_segments(), 0);
}

TEST(list_holder_killed_mid_insert)
{
  lmp_list_t *l;
  lmp_proc_t *p;
  char name[LMP_SEG_NAME_MAX];
  CHECK_EQ(lmp_list_create(&l), 0);
  snprintf(name, sizeof name, "%s", lmp_seg_name(lmp_list_seg(l)));
  CHECK_EQ(lmp_list_lock(l), 0);
  push(l, 0, "a");
  push(l, 1, "b");
  lmp_list_unlock(l);
  if ((p = lmp_test_start()) == NULL) {
    lmp_seg_t *seg;
    lmp_list_t *c;
    CHECK_EQ(lmp_seg_attach(name, 0, &seg), 0);
    CHECK_EQ(lmp_list_open(seg, &c), 0);
    CHECK_EQ(lmp_list_lock(c), 0);
    push(c, 1, "x");
    raise(SIGKILL);
  }
  CHECK_EQ(lmp_test_finish(p), -SIGKILL);
  CHECK_EQ(lmp_list_lock(l), 0);
  list_expect(l, "a,x,b,");
  push(l, 3, "c");
  list_expect(l, "a,x,b,c,");
  lmp_list_unlock(l);
  lmp_list_free(l, NULL, NULL);
}

TEST_LIST = {TEST_ENTRY(dict_basics),
             TEST_ENTRY(dict_keeps_insertion_order),
             TEST_ENTRY_T(dict_grows_and_shrinks, 60),
             TEST_ENTRY_T(dict_four_writers_lose_nothing, 120),
             TEST_ENTRY_T(dict_growth_with_a_concurrent_reader, 120),
             TEST_ENTRY(dict_holder_killed),
             TEST_ENTRY(dict_last_holder_visits_values),
             TEST_ENTRY(dict_open_checks_the_kind),
             TEST_ENTRY(list_basics),
             TEST_ENTRY_T(list_grows, 60),
             TEST_ENTRY_T(list_four_appenders, 120),
             TEST_ENTRY(list_holder_killed_mid_insert),
             TEST_END};

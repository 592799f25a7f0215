/*
 * test_array.c -- typed cells and arrays (element types, loads and stores,
 * atomic adds from several processes, the RLock in the header, views) and
 * SharedMemory blocks (user names, attach from another process, unlink,
 * stale names).
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmp/array.h"
#include "lmp/common.h"
#include "lmp/proc.h"
#include "lmp/runtime.h"
#include "lmp/segment.h"
#include "lmp/shmem.h"
#include "internal.h"
#include "runner.h"

static lmp_scalar_t I(int64_t v)
{
  lmp_scalar_t s;
  s.i = v;
  return s;
}

static lmp_scalar_t D(double v)
{
  lmp_scalar_t s;
  s.d = v;
  return s;
}

/* === element types === */

TEST(ctype_names_and_codes)
{
  static const char *names[] = {"int8",   "uint8", "int16",  "uint16", "int32",
                                "uint32", "int64", "uint64", "float",  "double"};
  static const char *codes = "bBhHiIqQfd";
  static const size_t sizes[] = {1, 1, 2, 2, 4, 4, 8, 8, 4, 8};
  lmp_ctype_t t;
  for (int i = 0; i < LMP_CTYPE_COUNT; i++) {
    char code[2] = {codes[i], 0};
    CHECK_EQ(lmp_ctype_parse(names[i], &t), 0);
    CHECK_EQ(t, i);
    CHECK_EQ(lmp_ctype_parse(code, &t), 0);
    CHECK_EQ(t, i);
    CHECK_STREQ(lmp_ctype_name(t), names[i]);
    CHECK_EQ(lmp_ctype_code(t), codes[i]);
    CHECK_EQ(lmp_ctype_size(t), sizes[i]);
  }
  CHECK_EQ(lmp_ctype_parse("l", &t), 0);
  CHECK_EQ(t, LMP_INT64);
  CHECK_EQ(lmp_ctype_parse("L", &t), 0);
  CHECK_EQ(t, LMP_UINT64);
  CHECK_EQ(lmp_ctype_parse("int", &t), -EINVAL);
  CHECK_EQ(lmp_ctype_parse("", &t), -EINVAL);
  CHECK_EQ(lmp_ctype_parse("x", &t), -EINVAL);
  CHECK(lmp_ctype_is_float(LMP_FLOAT) && lmp_ctype_is_float(LMP_DOUBLE));
  CHECK(!lmp_ctype_is_float(LMP_INT64));
}

TEST(ctype_ranges)
{
  CHECK(lmp_ctype_fits(LMP_UINT8, 255) && !lmp_ctype_fits(LMP_UINT8, 256));
  CHECK(!lmp_ctype_fits(LMP_UINT8, -1));
  CHECK(lmp_ctype_fits(LMP_INT8, -128) && !lmp_ctype_fits(LMP_INT8, -129));
  CHECK(lmp_ctype_fits(LMP_INT16, 32767) && !lmp_ctype_fits(LMP_INT16, 32768));
  CHECK(lmp_ctype_fits(LMP_UINT16, 65535) && !lmp_ctype_fits(LMP_UINT16, 65536));
  CHECK(lmp_ctype_fits(LMP_INT32, INT32_MIN) && !lmp_ctype_fits(LMP_INT32, INT32_MAX + 1LL));
  CHECK(lmp_ctype_fits(LMP_UINT32, UINT32_MAX) && !lmp_ctype_fits(LMP_UINT32, -1));
  CHECK(lmp_ctype_fits(LMP_INT64, INT64_MIN) && lmp_ctype_fits(LMP_INT64, INT64_MAX));
  CHECK(lmp_ctype_fits(LMP_UINT64, INT64_MAX) && !lmp_ctype_fits(LMP_UINT64, -1));
}

/* === arrays === */

TEST(array_create_rejects)
{
  lmp_array_t *a;
  CHECK_EQ(lmp_array_create(LMP_INT32, 0, LMP_ARRAY_VALUE, &a), -EINVAL);
  CHECK(a == NULL);
  CHECK_EQ(lmp_array_create(LMP_INT32, 0, 0, &a), 0); /* empty, as Python allows */
  CHECK_EQ(lmp_array_len(a), 0);
  lmp_array_free(a);
  CHECK_EQ(lmp_array_create(LMP_CTYPE_COUNT, 1, 0, &a), -EINVAL);
  CHECK_EQ(lmp_array_create(LMP_INT32, 2, LMP_ARRAY_VALUE, &a), -EINVAL);
  CHECK_EQ(lmp_array_create(LMP_INT32, 1, 8, &a), -EINVAL);
  CHECK_EQ(lmp_array_create(LMP_INT32, SIZE_MAX / 2, 0, &a), -ENOMEM);
}

TEST(array_load_store_every_type)
{
  for (int t = 0; t < LMP_CTYPE_COUNT; t++) {
    lmp_array_t *a;
    CHECK_EQ(lmp_array_create((lmp_ctype_t)t, 5, LMP_ARRAY_LOCK, &a), 0);
    CHECK_EQ(lmp_array_len(a), 5);
    CHECK_EQ(lmp_array_type(a), t);
    CHECK_EQ(lmp_array_flags(a), LMP_ARRAY_LOCK);
    CHECK(!lmp_array_is_view(a));
    CHECK_EQ((uintptr_t)lmp_array_data(a) % 64, 0);
    for (size_t i = 0; i < 5; i++) {
      lmp_scalar_t v = lmp_array_load(a, i);
      CHECK(lmp_ctype_is_float((lmp_ctype_t)t) ? v.d == 0 : v.i == 0);
    }
    if (lmp_ctype_is_float((lmp_ctype_t)t)) {
      lmp_array_store(a, 4, D(-2.5));
      CHECK(lmp_array_load(a, 4).d == -2.5);
      CHECK(lmp_array_load(a, 3).d == 0);
    } else {
      lmp_array_store(a, 4, I(100));
      CHECK_EQ(lmp_array_load(a, 4).i, 100);
      CHECK_EQ(lmp_array_load(a, 3).i, 0);
    }
    lmp_array_free(a);
  }
  CHECK_EQ(lmp_test_segments(), 0);
}

TEST(array_signed_and_unsigned_extension)
{
  lmp_array_t *a, *b, *c;
  CHECK_EQ(lmp_array_create(LMP_INT8, 1, 0, &a), 0);
  CHECK_EQ(lmp_array_create(LMP_UINT32, 1, 0, &b), 0);
  CHECK_EQ(lmp_array_create(LMP_UINT64, 1, 0, &c), 0);
  lmp_array_store(a, 0, I(-5));
  CHECK_EQ(lmp_array_load(a, 0).i, -5);
  lmp_array_store(b, 0, I(UINT32_MAX));
  CHECK_EQ(lmp_array_load(b, 0).i, (int64_t)UINT32_MAX);
  lmp_scalar_t u;
  u.u = UINT64_MAX;
  lmp_array_store(c, 0, u);
  CHECK(lmp_array_load(c, 0).u == UINT64_MAX);
  lmp_array_free(a);
  lmp_array_free(b);
  lmp_array_free(c);
}

TEST(add_wraps_like_c)
{
  lmp_array_t *a, *b, *c;
  CHECK_EQ(lmp_array_create(LMP_UINT8, 1, 0, &a), 0);
  CHECK_EQ(lmp_array_create(LMP_INT16, 1, 0, &b), 0);
  CHECK_EQ(lmp_array_create(LMP_INT64, 1, 0, &c), 0);
  lmp_array_store(a, 0, I(250));
  CHECK_EQ(lmp_array_add(a, 0, I(10)).i, 4);
  CHECK_EQ(lmp_array_add(a, 0, I(-5)).i, 255);
  lmp_array_store(b, 0, I(INT16_MAX));
  CHECK_EQ(lmp_array_add(b, 0, I(1)).i, INT16_MIN);
  lmp_array_store(c, 0, I(INT64_MAX));
  CHECK(lmp_array_add(c, 0, I(1)).i == INT64_MIN);
  lmp_array_free(a);
  lmp_array_free(b);
  lmp_array_free(c);
}

TEST(add_floats)
{
  lmp_array_t *a, *b;
  CHECK_EQ(lmp_array_create(LMP_FLOAT, 1, 0, &a), 0);
  CHECK_EQ(lmp_array_create(LMP_DOUBLE, 1, 0, &b), 0);
  CHECK(lmp_array_add(a, 0, D(0.5)).d == 0.5);
  CHECK(lmp_array_add(a, 0, D(0.25)).d == 0.75);
  lmp_array_store(b, 0, D(1e300));
  CHECK(lmp_array_add(b, 0, D(1e300)).d == 2e300);
  CHECK(isinf(lmp_array_add(a, 0, D(INFINITY)).d));
  lmp_array_free(a);
  lmp_array_free(b);
}

/* Children add to shared counters at once; nothing is lost. */
TEST(add_from_four_processes)
{
  lmp_array_t *a;
  lmp_proc_t *kids[4];
  CHECK_EQ(lmp_array_create(LMP_INT64, 3, LMP_ARRAY_LOCK, &a), 0);
  for (int k = 0; k < 4; k++) {
    if ((kids[k] = lmp_test_start()) == NULL) {
      for (int i = 0; i < 10000; i++) {
        lmp_array_add(a, 0, I(1));
        lmp_array_add(a, 2, I(-2));
      }
      lmp_proc_exit(0);
    }
  }
  for (int k = 0; k < 4; k++)
    CHECK_EQ(lmp_test_finish(kids[k]), 0);
  CHECK_EQ(lmp_array_load(a, 0).i, 40000);
  CHECK_EQ(lmp_array_load(a, 1).i, 0);
  CHECK_EQ(lmp_array_load(a, 2).i, -80000);
  lmp_array_free(a);
}

TEST(float_add_from_four_processes)
{
  lmp_array_t *a;
  lmp_proc_t *kids[4];
  CHECK_EQ(lmp_array_create(LMP_DOUBLE, 1, 0, &a), 0);
  for (int k = 0; k < 4; k++) {
    if ((kids[k] = lmp_test_start()) == NULL) {
      for (int i = 0; i < 10000; i++)
        lmp_array_add(a, 0, D(0.5));
      lmp_proc_exit(0);
    }
  }
  for (int k = 0; k < 4; k++)
    CHECK_EQ(lmp_test_finish(kids[k]), 0);
  CHECK(lmp_array_load(a, 0).d == 20000.0);
  lmp_array_free(a);
}

/* Read-modify-write under the lock, from four processes. */
TEST(lock_serializes_four_processes)
{
  lmp_array_t *a;
  lmp_proc_t *kids[4];
  CHECK_EQ(lmp_array_create(LMP_INT32, 1, LMP_ARRAY_LOCK | LMP_ARRAY_VALUE, &a), 0);
  for (int k = 0; k < 4; k++) {
    if ((kids[k] = lmp_test_start()) == NULL) {
      for (int i = 0; i < 10000; i++) {
        CHECK_EQ(lmp_array_lock(a, LMP_FOREVER), 0);
        lmp_array_store(a, 0, I(lmp_array_load(a, 0).i + 1));
        CHECK_EQ(lmp_array_unlock(a), 0);
      }
      lmp_proc_exit(0);
    }
  }
  for (int k = 0; k < 4; k++)
    CHECK_EQ(lmp_test_finish(kids[k]), 0);
  CHECK_EQ(lmp_array_load(a, 0).i, 40000);
  lmp_array_free(a);
}

TEST(lock_is_recursive_and_owned)
{
  lmp_array_t *a, *raw;
  lmp_proc_t *p;
  CHECK_EQ(lmp_array_create(LMP_INT32, 1, LMP_ARRAY_LOCK, &a), 0);
  CHECK_EQ(lmp_array_create(LMP_INT32, 1, 0, &raw), 0);
  CHECK(lmp_array_lockp(raw) == NULL);
  CHECK_EQ(lmp_array_lock(raw, LMP_FOREVER), -ENOLCK);
  CHECK_EQ(lmp_array_unlock(raw), -ENOLCK);
  CHECK_EQ(lmp_array_locked(raw), 0);
  CHECK_EQ(lmp_array_unlock(a), -EPERM);
  CHECK_EQ(lmp_array_lock(a, LMP_FOREVER), 0);
  CHECK_EQ(lmp_array_lock(a, lmp_deadline(0)), 0);
  CHECK_EQ(lmp_array_locked(a), 1);
  if ((p = lmp_test_start()) == NULL) {
    /* Another process: cannot take it, cannot release it. */
    CHECK_EQ(lmp_array_locked(a), 1);
    CHECK_EQ(lmp_array_lock(a, lmp_deadline(0.05)), -ETIMEDOUT);
    CHECK_EQ(lmp_array_unlock(a), -EPERM);
    lmp_proc_exit(0);
  }
  CHECK_EQ(lmp_test_finish(p), 0);
  CHECK_EQ(lmp_array_unlock(a), 0);
  CHECK_EQ(lmp_array_locked(a), 1);
  CHECK_EQ(lmp_array_unlock(a), 0);
  CHECK_EQ(lmp_array_locked(a), 0);
  CHECK_EQ(lmp_array_unlock(a), -EPERM);
  lmp_array_free(a);
  lmp_array_free(raw);
}

TEST(lock_holder_killed)
{
  lmp_array_t *a;
  lmp_proc_t *p;
  CHECK_EQ(lmp_array_create(LMP_INT32, 1, LMP_ARRAY_LOCK | LMP_ARRAY_VALUE, &a), 0);
  if ((p = lmp_test_start()) == NULL) {
    CHECK_EQ(lmp_array_lock(a, LMP_FOREVER), 0);
    CHECK_EQ(lmp_array_lock(a, LMP_FOREVER), 0);
    raise(SIGKILL);
  }
  CHECK_EQ(lmp_test_finish(p), -SIGKILL);
  CHECK_EQ(lmp_array_lock(a, lmp_deadline(5)), -EOWNERDEAD);
  /* Held once, whatever depth the dead holder had reached. */
  CHECK_EQ(lmp_array_unlock(a), 0);
  CHECK_EQ(lmp_array_locked(a), 0);
  CHECK_EQ(lmp_array_lock(a, lmp_deadline(5)), 0);
  CHECK_EQ(lmp_array_unlock(a), 0);
  lmp_array_free(a);
}

/* A child that ends normally while holding the lock hands it on. */
TEST(lock_holder_exits)
{
  lmp_array_t *a;
  lmp_proc_t *p;
  CHECK_EQ(lmp_array_create(LMP_INT32, 1, LMP_ARRAY_LOCK, &a), 0);
  if ((p = lmp_test_start()) == NULL) {
    CHECK_EQ(lmp_array_lock(a, LMP_FOREVER), 0);
    lmp_proc_exit(0);
  }
  CHECK_EQ(lmp_test_finish(p), 0);
  CHECK_EQ(lmp_array_lock(a, lmp_deadline(5)), -EOWNERDEAD);
  CHECK_EQ(lmp_array_unlock(a), 0);
  lmp_array_free(a);
}

/* Freeing the last handle while holding the lock abandons it; freeing one
 * of several does not. */
TEST(lock_abandoned_with_the_last_handle)
{
  lmp_array_t *a, *b, *c;
  char name[LMP_SEG_NAME_MAX];
  lmp_seg_t *seg;
  CHECK_EQ(lmp_array_create(LMP_INT32, 1, LMP_ARRAY_LOCK, &a), 0);
  CHECK_EQ(lmp_array_open(lmp_array_seg(a), &b), 0);
  snprintf(name, sizeof name, "%s", lmp_seg_name(lmp_array_seg(a)));
  lmp_seg_pin(lmp_array_seg(a)); /* keep it alive with no handle here */
  CHECK_EQ(lmp_array_lock(a, LMP_FOREVER), 0);
  lmp_array_free(a);
  CHECK_EQ(lmp_array_locked(b), 1); /* still held through b */
  CHECK_EQ(lmp_array_unlock(b), 0);
  CHECK_EQ(lmp_array_lock(b, LMP_FOREVER), 0);
  lmp_array_free(b);
  CHECK_EQ(lmp_seg_attach(name, 1, &seg), 0);
  CHECK_EQ(lmp_array_open(seg, &c), 0);
  lmp_seg_release(seg);
  CHECK_EQ(lmp_array_lock(c, lmp_deadline(5)), -EOWNERDEAD);
  CHECK_EQ(lmp_array_unlock(c), 0);
  lmp_array_free(c);
  CHECK_EQ(lmp_test_segments(), 0);
}

TEST(array_open_by_name_in_another_process)
{
  lmp_array_t *a;
  lmp_proc_t *p;
  char name[LMP_SEG_NAME_MAX];
  CHECK_EQ(lmp_array_create(LMP_UINT16, 10, 0, &a), 0);
  snprintf(name, sizeof name, "%s", lmp_seg_name(lmp_array_seg(a)));
  lmp_seg_pin(lmp_array_seg(a));
  if ((p = lmp_test_start()) == NULL) {
    lmp_seg_t *seg;
    lmp_array_t *b;
    CHECK_EQ(lmp_seg_attach(name, 1, &seg), 0);
    CHECK_EQ(lmp_array_open(seg, &b), 0);
    lmp_seg_release(seg);
    CHECK_EQ(lmp_array_len(b), 10);
    CHECK_EQ(lmp_array_type(b), LMP_UINT16);
    lmp_array_store(b, 9, I(65535));
    lmp_array_free(b);
    lmp_proc_exit(0);
  }
  CHECK_EQ(lmp_test_finish(p), 0);
  CHECK_EQ(lmp_array_load(a, 9).i, 65535);
  CHECK_EQ(lmp__seg_refs(lmp_array_seg(a)), 1);
  lmp_array_free(a);
  CHECK_EQ(lmp_test_segments(), 0);
}

TEST(array_open_rejects_other_segments)
{
  lmp_seg_t *seg;
  lmp_array_t *a;
  CHECK_EQ(lmp_seg_create(4096, &seg), 0);
  CHECK_EQ(lmp_array_open(seg, &a), -EINVAL);
  CHECK(a == NULL);
  lmp_seg_release(seg);
}

TEST(views_check_alignment_and_bounds)
{
  lmp_seg_t *seg;
  lmp_array_t *v;
  CHECK_EQ(lmp_seg_create(4096, &seg), 0);
  size_t size = lmp_seg_size(seg);
  CHECK_EQ(lmp_array_view(seg, 2, LMP_INT32, 1, &v), -EINVAL);
  CHECK_EQ(lmp_array_view(seg, 0, LMP_INT32, size / 4 + 1, &v), -ERANGE);
  CHECK_EQ(lmp_array_view(seg, size + 8, LMP_INT64, 0, &v), -ERANGE);
  CHECK_EQ(lmp_array_view(seg, 8, LMP_INT32, 4, &v), 0);
  CHECK(lmp_array_is_view(v));
  CHECK_EQ(lmp_array_offset(v), 8);
  CHECK(lmp_array_lockp(v) == NULL);
  lmp_array_store(v, 1, I(-7));
  int32_t x;
  memcpy(&x, (char *)lmp_seg_data(seg) + 12, 4);
  CHECK_EQ(x, -7);
  lmp_seg_release(seg); /* the view keeps it mapped */
  CHECK_EQ(lmp_array_load(v, 1).i, -7);
  lmp_array_free(v);
  CHECK_EQ(lmp_test_segments(), 0);
}

/* === SharedMemory blocks === */

TEST(shmem_unnamed)
{
  lmp_shmem_t *m, *m2;
  CHECK_EQ(lmp_shmem_create(0, NULL, &m), -EINVAL);
  CHECK_EQ(lmp_shmem_create(100, NULL, &m), 0);
  CHECK_EQ(lmp_shmem_size(m), 100);
  CHECK(lmp_shmem_name(m)[0] == '/');
  CHECK_EQ((uintptr_t)lmp_shmem_data(m) % 64, 0);
  memcpy(lmp_shmem_data(m), "hello", 5);
  CHECK_EQ(lmp_shmem_attach(lmp_shmem_name(m), &m2), 0);
  CHECK(memcmp(lmp_shmem_data(m2), "hello", 5) == 0);
  CHECK_EQ(lmp_shmem_size(m2), 100);
  CHECK_STREQ(lmp_shmem_name(m2), lmp_shmem_name(m));
  lmp_shmem_free(m2);
  lmp_shmem_free(m);
  CHECK_EQ(lmp_test_segments(), 0);
}

TEST(shmem_names_across_processes)
{
  lmp_shmem_t *m, *x;
  lmp_proc_t *p;
  CHECK_EQ(lmp_shmem_create(10, "", &m), -EINVAL);
  CHECK_EQ(lmp_shmem_create(10, "/abs", &m), -EINVAL);
  CHECK_EQ(lmp_shmem_create(10, "0123456789012345678901234567890123456789012345678", &m), -EINVAL);
  CHECK_EQ(lmp_shmem_attach("board", &x), -ENOENT);
  CHECK_EQ(lmp_shmem_create(64, "board", &m), 0);
  CHECK_STREQ(lmp_shmem_name(m), "board");
  CHECK_EQ(lmp_shmem_create(64, "board", &x), -EEXIST);
  if ((p = lmp_test_start()) == NULL) {
    lmp_shmem_t *c;
    CHECK_EQ(lmp_shmem_attach("board", &c), 0);
    CHECK_EQ(lmp_shmem_size(c), 64);
    CHECK_STREQ(lmp_shmem_name(c), "board");
    memcpy(lmp_shmem_data(c), "from the child", 14);
    CHECK_EQ(lmp_shmem_create(8, "child-made", &x), 0);
    lmp_shmem_free(x); /* freed at once: the name goes stale */
    lmp_shmem_free(c);
    lmp_proc_exit(0);
  }
  CHECK_EQ(lmp_test_finish(p), 0);
  CHECK(memcmp(lmp_shmem_data(m), "from the child", 14) == 0);
  CHECK_EQ(lmp_shmem_attach("child-made", &x), -ENOENT);
  /* A stale name is taken again. */
  CHECK_EQ(lmp_shmem_create(8, "child-made", &x), 0);
  lmp_shmem_free(x);
  lmp_shmem_free(m);
  CHECK_EQ(lmp_shmem_attach("board", &x), -ENOENT);
  CHECK_EQ(lmp_shmem_create(16, "board", &m), 0);
  lmp_shmem_free(m);
}

TEST(shmem_unlink)
{
  lmp_shmem_t *m, *n, *x;
  CHECK_EQ(lmp_shmem_create(32, "gone", &m), 0);
  CHECK_EQ(lmp_shmem_create(32, NULL, &n), 0);
  char seg[LMP_SEG_NAME_MAX];
  snprintf(seg, sizeof seg, "%s", lmp_shmem_name(n));
  CHECK_EQ(lmp_shmem_unlink(m), 0);
  CHECK_EQ(lmp_shmem_unlink(n), 0);
  CHECK_EQ(lmp_shmem_unlink(n), -ENOENT);
  CHECK_EQ(lmp_shmem_attach("gone", &x), -ENOENT);
  CHECK_EQ(lmp_shmem_attach(seg, &x), -ENOENT);
  /* Still usable where it is held; the name can be made again. */
  memcpy(lmp_shmem_data(m), "x", 1);
  CHECK_EQ(lmp_shmem_create(32, "gone", &x), 0);
  CHECK(((char *)lmp_shmem_data(x))[0] == 0);
  lmp_shmem_free(x);
  lmp_shmem_free(m);
  lmp_shmem_free(n);
}

TEST(shmem_attach_rejects_other_segments)
{
  lmp_array_t *a;
  lmp_shmem_t *m;
  CHECK_EQ(lmp_array_create(LMP_INT8, 200, 0, &a), 0);
  CHECK_EQ(lmp_shmem_attach(lmp_seg_name(lmp_array_seg(a)), &m), -EINVAL);
  CHECK_EQ(lmp_shmem_attach("/lmp.no.such.thing", &m), -ENOENT);
  lmp_array_free(a);
}

TEST(shmem_views)
{
  lmp_shmem_t *m;
  lmp_array_t *v;
  CHECK_EQ(lmp_shmem_create(20, NULL, &m), 0);
  CHECK_EQ(lmp_shmem_view(m, 2, LMP_INT32, 1, &v), -EINVAL);
  CHECK_EQ(lmp_shmem_view(m, 4, LMP_INT32, 5, &v), -ERANGE);
  CHECK_EQ(lmp_shmem_view(m, 24, LMP_INT32, 0, &v), -ERANGE);
  CHECK_EQ(lmp_shmem_view(m, 4, LMP_INT32, 4, &v), 0);
  CHECK_EQ(lmp_shmem_view_offset(v), 4);
  lmp_array_store(v, 3, I(0x01020304));
  int32_t x;
  memcpy(&x, (char *)lmp_shmem_data(m) + 16, 4);
  CHECK_EQ(x, 0x01020304);
  lmp_shmem_free(m);
  CHECK_EQ(lmp_array_load(v, 3).i, 0x01020304);
  lmp_array_free(v);
  CHECK_EQ(lmp_test_segments(), 0);
}

TEST(shmem_directory_full)
{
  static lmp_shmem_t *ms[LMP_SHMEM_DIR_MAX];
  lmp_shmem_t *x;
  char name[32];
  int n;
  for (n = 0; n < LMP_SHMEM_DIR_MAX; n++) {
    snprintf(name, sizeof name, "n%d", n);
    if (lmp_shmem_create(1, name, &ms[n]) < 0)
      break;
  }
  CHECK_EQ(n, LMP_SHMEM_DIR_MAX);
  CHECK_EQ(lmp_shmem_create(1, "one-more", &x), -EDQUOT);
  lmp_shmem_free(ms[7]);
  CHECK_EQ(lmp_shmem_create(1, "one-more", &x), 0);
  lmp_shmem_free(x);
  for (int i = 0; i < n; i++)
    if (i != 7)
      lmp_shmem_free(ms[i]);
}

TEST_LIST = {TEST_ENTRY(ctype_names_and_codes),
             TEST_ENTRY(ctype_ranges),
             TEST_ENTRY(array_create_rejects),
             TEST_ENTRY(array_load_store_every_type),
             TEST_ENTRY(array_signed_and_unsigned_extension),
             TEST_ENTRY(add_wraps_like_c),
             TEST_ENTRY(add_floats),
             TEST_ENTRY_T(add_from_four_processes, 60),
             TEST_ENTRY_T(float_add_from_four_processes, 60),
             TEST_ENTRY_T(lock_serializes_four_processes, 60),
             TEST_ENTRY(lock_is_recursive_and_owned),
             TEST_ENTRY(lock_holder_killed),
             TEST_ENTRY(lock_holder_exits),
             TEST_ENTRY(lock_abandoned_with_the_last_handle),
             TEST_ENTRY(array_open_by_name_in_another_process),
             TEST_ENTRY(array_open_rejects_other_segments),
             TEST_ENTRY(views_check_alignment_and_bounds),
             TEST_ENTRY(shmem_unnamed),
             TEST_ENTRY(shmem_names_across_processes),
             TEST_ENTRY(shmem_unlink),
             TEST_ENTRY(shmem_attach_rejects_other_segments),
             TEST_ENTRY(shmem_views),
             TEST_ENTRY_T(shmem_directory_full, 60),
             TEST_END};

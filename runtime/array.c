/*
 * array.c -- typed cells and arrays in shared memory (lmp.Value, lmp.Array,
 * RawValue, RawArray, and typed views of SharedMemory blocks).
 *
 * Layout.  An array's segment starts with a header -- magic, element type,
 * flags, length, and for the locked kinds a lock on a cache line of its own
 * -- and the elements follow at a 64-byte boundary, so every element is
 * naturally aligned.  A view has no header: it is a pointer into another
 * segment's data, at an offset the caller checked to be aligned.
 *
 * Element access.  Loads and stores are single atomic accesses of the
 * element's width (acquire and release), so no reader ever sees half a
 * store, and a Value can serve as a flag between processes.  lmp_array_add
 * is a fetch-and-add on the unsigned type of the element's width (so that
 * overflow wraps, defined, as Lua's integers wrap) or, for float and double,
 * a compare-and-swap loop on the bits.  Neither needs the lock, so Raw
 * values have an atomic add too.
 *
 * The lock.  The locked kinds carry an RLock of syncobj.c (lmp_lock_t) in
 * their header, on a cache line of its own: recursive as Python's
 * get_lock() is, released only by its holder, and robust -- a holder that
 * dies hands it to the next acquirer with -EOWNERDEAD.  Being the same
 * struct as lmp.RLock's, it behaves exactly like one.
 *
 * A process that frees its last handle to an array while holding the lock
 * abandons it first (the next acquirer hears "owner died"): unmapped, a
 * held robust mutex would be out of the kernel's reach when the holder
 * dies.  (A process on its way out keeps its mappings; see lmp/segment.h.)
 */
#include "lmp/array.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "lmp/common.h"
#include "lmp/syncobj.h"

#define ARRAY_MAGIC 0x52414d4cu /* "LMAR" */
#define ARRAY_VERSION 1u

struct ahdr {
  _Atomic uint32_t magic; /* written last by create */
  uint32_t version;
  uint32_t type;
  uint32_t flags;
  uint64_t len;
  _Alignas(64) lmp_lock_t lock; /* an RLock, for the LMP_ARRAY_LOCK kinds */
};

#define DATA_OFFSET ((sizeof(struct ahdr) + 63) & ~(size_t)63)

struct lmp_array {
  lmp_seg_t *seg;
  struct ahdr *h;   /* NULL for a view */
  lmp_lock_t *lock; /* NULL without a lock */
  char *data;
  size_t len;
  size_t offset; /* a view's offset in the segment's data */
  lmp_ctype_t type;
  unsigned flags;
};

/* === element types === */

static const struct {
  const char *name;
  char code;
  const char *aliases; /* Python typecodes */
  size_t size;
} ctypes[LMP_CTYPE_COUNT] = {
  [LMP_INT8] = {"int8", 'b', "b", 1},       [LMP_UINT8] = {"uint8", 'B', "B", 1},
  [LMP_INT16] = {"int16", 'h', "h", 2},     [LMP_UINT16] = {"uint16", 'H', "H", 2},
  [LMP_INT32] = {"int32", 'i', "i", 4},     [LMP_UINT32] = {"uint32", 'I', "I", 4},
  [LMP_INT64] = {"int64", 'q', "lq", 8},    [LMP_UINT64] = {"uint64", 'Q', "LQ", 8},
  [LMP_FLOAT] = {"float", 'f', "f", 4},     [LMP_DOUBLE] = {"double", 'd', "d", 8},
};

int lmp_ctype_parse(const char *name, lmp_ctype_t *out)
{
  for (int t = 0; t < LMP_CTYPE_COUNT; t++) {
    if (strcmp(name, ctypes[t].name) == 0 ||
        (name[0] != '\0' && name[1] == '\0' && strchr(ctypes[t].aliases, name[0]))) {
      *out = (lmp_ctype_t)t;
      return 0;
    }
  }
  return -EINVAL;
}

const char *lmp_ctype_name(lmp_ctype_t t)
{
  return ctypes[t].name;
}

char lmp_ctype_code(lmp_ctype_t t)
{
  return ctypes[t].code;
}

size_t lmp_ctype_size(lmp_ctype_t t)
{
  return ctypes[t].size;
}

int lmp_ctype_is_float(lmp_ctype_t t)
{
  return t == LMP_FLOAT || t == LMP_DOUBLE;
}

int lmp_ctype_fits(lmp_ctype_t t, int64_t v)
{
  switch (t) {
  case LMP_INT8:
    return v >= INT8_MIN && v <= INT8_MAX;
  case LMP_UINT8:
    return v >= 0 && v <= UINT8_MAX;
  case LMP_INT16:
    return v >= INT16_MIN && v <= INT16_MAX;
  case LMP_UINT16:
    return v >= 0 && v <= UINT16_MAX;
  case LMP_INT32:
    return v >= INT32_MIN && v <= INT32_MAX;
  case LMP_UINT32:
    return v >= 0 && v <= UINT32_MAX;
  case LMP_UINT64:
    return v >= 0;
  default:
    return 1;
  }
}

/* === create, open, free === */

static int handle_new(lmp_seg_t *seg, lmp_array_t **out)
{
  lmp_array_t *a = calloc(1, sizeof *a);
  if (a == NULL)
    return -ENOMEM;
  a->seg = seg;
  *out = a;
  return 0;
}

int lmp_array_create(lmp_ctype_t t, size_t n, unsigned flags, lmp_array_t **out)
{
  lmp_seg_t *seg;
  struct ahdr *h;
  int rc;

  *out = NULL;
  if ((unsigned)t >= LMP_CTYPE_COUNT || (flags & ~3u) != 0 || ((flags & LMP_ARRAY_VALUE) && n != 1))
    return -EINVAL;
  if (n > (SIZE_MAX - DATA_OFFSET) / ctypes[t].size)
    return -ENOMEM;
  if ((rc = lmp_seg_create(DATA_OFFSET + n * ctypes[t].size, &seg)) < 0)
    return rc;
  h = lmp_seg_data(seg);
  h->version = ARRAY_VERSION;
  h->type = (uint32_t)t;
  h->flags = flags;
  h->len = n;
  if ((flags & LMP_ARRAY_LOCK) && (rc = lmp_lock_init(&h->lock, 1)) < 0)
    goto err;
  atomic_store_explicit(&h->magic, ARRAY_MAGIC, memory_order_release);
  if ((rc = handle_new(seg, out)) < 0)
    goto err;
  (*out)->h = h;
  (*out)->lock = (flags & LMP_ARRAY_LOCK) ? &h->lock : NULL;
  (*out)->data = (char *)h + DATA_OFFSET;
  (*out)->len = n;
  (*out)->type = t;
  (*out)->flags = flags;
  return 0;
err:
  lmp_seg_release(seg);
  return rc;
}

int lmp_array_open(lmp_seg_t *seg, lmp_array_t **out)
{
  struct ahdr *h = lmp_seg_data(seg);
  size_t size = lmp_seg_size(seg);
  int rc;

  *out = NULL;
  if (size < DATA_OFFSET ||
      atomic_load_explicit(&h->magic, memory_order_acquire) != ARRAY_MAGIC ||
      h->version != ARRAY_VERSION || h->type >= LMP_CTYPE_COUNT || (h->flags & ~3u) != 0 ||
      ((h->flags & LMP_ARRAY_VALUE) && h->len != 1) ||
      h->len > (size - DATA_OFFSET) / ctypes[h->type].size)
    return -EINVAL;
  if ((rc = handle_new(seg, out)) < 0)
    return rc;
  lmp_seg_retain(seg);
  (*out)->h = h;
  (*out)->lock = (h->flags & LMP_ARRAY_LOCK) ? &h->lock : NULL;
  (*out)->data = (char *)h + DATA_OFFSET;
  (*out)->len = (size_t)h->len;
  (*out)->type = (lmp_ctype_t)h->type;
  (*out)->flags = h->flags;
  return 0;
}

int lmp_array_view(lmp_seg_t *seg, size_t offset, lmp_ctype_t t, size_t n, lmp_array_t **out)
{
  size_t size = lmp_seg_size(seg);
  int rc;

  *out = NULL;
  if ((unsigned)t >= LMP_CTYPE_COUNT)
    return -EINVAL;
  if (offset % ctypes[t].size != 0)
    return -EINVAL;
  if (offset > size || n > (size - offset) / ctypes[t].size)
    return -ERANGE;
  if ((rc = handle_new(seg, out)) < 0)
    return rc;
  lmp_seg_retain(seg);
  (*out)->data = (char *)lmp_seg_data(seg) + offset;
  (*out)->len = n;
  (*out)->offset = offset;
  (*out)->type = t;
  return 0;
}

void lmp_array_free(lmp_array_t *a)
{
  if (a == NULL)
    return;
  if (a->lock && lmp_seg_local(a->seg) == 1 && lmp_lock_owned(a->lock))
    lmp_lock_abandon(a->lock); /* never unmap a robust mutex we hold */
  lmp_seg_release(a->seg);
  free(a);
}

lmp_seg_t *lmp_array_seg(const lmp_array_t *a)
{
  return a->seg;
}

lmp_ctype_t lmp_array_type(const lmp_array_t *a)
{
  return a->type;
}

size_t lmp_array_len(const lmp_array_t *a)
{
  return a->len;
}

unsigned lmp_array_flags(const lmp_array_t *a)
{
  return a->flags;
}

int lmp_array_is_view(const lmp_array_t *a)
{
  return a->h == NULL;
}

size_t lmp_array_offset(const lmp_array_t *a)
{
  return a->offset;
}

void *lmp_array_data(const lmp_array_t *a)
{
  return a->data;
}

/* === elements === */

#define LD(T, p) __atomic_load_n((T *)(p), __ATOMIC_ACQUIRE)
#define ST(T, p, v) __atomic_store_n((T *)(p), (T)(v), __ATOMIC_RELEASE)
#define ADD(T, p, v) __atomic_add_fetch((T *)(p), (T)(v), __ATOMIC_SEQ_CST)

lmp_scalar_t lmp_array_load(const lmp_array_t *a, size_t i)
{
  const char *p = a->data + i * ctypes[a->type].size;
  lmp_scalar_t v = {0};
  switch (a->type) {
  case LMP_INT8:
    v.i = (int8_t)LD(uint8_t, p);
    break;
  case LMP_UINT8:
    v.i = LD(uint8_t, p);
    break;
  case LMP_INT16:
    v.i = (int16_t)LD(uint16_t, p);
    break;
  case LMP_UINT16:
    v.i = LD(uint16_t, p);
    break;
  case LMP_INT32:
    v.i = (int32_t)LD(uint32_t, p);
    break;
  case LMP_UINT32:
    v.i = LD(uint32_t, p);
    break;
  case LMP_INT64:
  case LMP_UINT64:
    v.u = LD(uint64_t, p);
    break;
  case LMP_FLOAT: {
    uint32_t bits = LD(uint32_t, p);
    float f;
    memcpy(&f, &bits, sizeof f);
    v.d = f;
    break;
  }
  case LMP_DOUBLE: {
    uint64_t bits = LD(uint64_t, p);
    memcpy(&v.d, &bits, sizeof v.d);
    break;
  }
  default:
    break;
  }
  return v;
}

void lmp_array_store(lmp_array_t *a, size_t i, lmp_scalar_t v)
{
  char *p = a->data + i * ctypes[a->type].size;
  switch (a->type) {
  case LMP_INT8:
  case LMP_UINT8:
    ST(uint8_t, p, v.u);
    break;
  case LMP_INT16:
  case LMP_UINT16:
    ST(uint16_t, p, v.u);
    break;
  case LMP_INT32:
  case LMP_UINT32:
    ST(uint32_t, p, v.u);
    break;
  case LMP_INT64:
  case LMP_UINT64:
    ST(uint64_t, p, v.u);
    break;
  case LMP_FLOAT: {
    float f = (float)v.d;
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    ST(uint32_t, p, bits);
    break;
  }
  case LMP_DOUBLE: {
    uint64_t bits;
    memcpy(&bits, &v.d, sizeof bits);
    ST(uint64_t, p, bits);
    break;
  }
  default:
    break;
  }
}

/* Float and double: compare-and-swap on the bits until no one else got in
 * between our load and our store. */
static double add_float(char *p, double delta)
{
  uint32_t old = LD(uint32_t, p), new;
  float f;
  do {
    memcpy(&f, &old, sizeof f);
    f = (float)(f + delta);
    memcpy(&new, &f, sizeof new);
  } while (!__atomic_compare_exchange_n((uint32_t *)p, &old, new, 1, __ATOMIC_SEQ_CST,
                                        __ATOMIC_ACQUIRE));
  return f;
}

static double add_double(char *p, double delta)
{
  uint64_t old = LD(uint64_t, p), new;
  double d;
  do {
    memcpy(&d, &old, sizeof d);
    d += delta;
    memcpy(&new, &d, sizeof new);
  } while (!__atomic_compare_exchange_n((uint64_t *)p, &old, new, 1, __ATOMIC_SEQ_CST,
                                        __ATOMIC_ACQUIRE));
  return d;
}

lmp_scalar_t lmp_array_add(lmp_array_t *a, size_t i, lmp_scalar_t delta)
{
  char *p = a->data + i * ctypes[a->type].size;
  lmp_scalar_t v = {0};
  switch (a->type) {
  case LMP_INT8:
    v.i = (int8_t)ADD(uint8_t, p, delta.u);
    break;
  case LMP_UINT8:
    v.i = ADD(uint8_t, p, delta.u);
    break;
  case LMP_INT16:
    v.i = (int16_t)ADD(uint16_t, p, delta.u);
    break;
  case LMP_UINT16:
    v.i = ADD(uint16_t, p, delta.u);
    break;
  case LMP_INT32:
    v.i = (int32_t)ADD(uint32_t, p, delta.u);
    break;
  case LMP_UINT32:
    v.i = ADD(uint32_t, p, delta.u);
    break;
  case LMP_INT64:
  case LMP_UINT64:
    v.u = ADD(uint64_t, p, delta.u);
    break;
  case LMP_FLOAT:
    v.d = add_float(p, delta.d);
    break;
  case LMP_DOUBLE:
    v.d = add_double(p, delta.d);
    break;
  default:
    break;
  }
  return v;
}

/* === the lock === */

lmp_lock_t *lmp_array_lockp(lmp_array_t *a)
{
  return a->lock;
}

int lmp_array_lock(lmp_array_t *a, int64_t deadline)
{
  lmp_lock_t *l = lmp_array_lockp(a);
  return l ? lmp_lock_acquire(l, deadline) : -ENOLCK;
}

int lmp_array_unlock(lmp_array_t *a)
{
  lmp_lock_t *l = lmp_array_lockp(a);
  return l ? lmp_lock_release(l) : -ENOLCK;
}

int lmp_array_locked(lmp_array_t *a)
{
  lmp_lock_t *l = lmp_array_lockp(a);
  return l ? lmp_lock_locked(l) : 0;
}

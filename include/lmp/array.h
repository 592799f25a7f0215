/*
 * lmp/array.h -- typed cells and arrays in shared memory (lmp.Value,
 * lmp.Array, their Raw forms, and typed views of a SharedMemory block).
 *
 * An array owns one segment: a header (element type, length, flags and, for
 * the locked kinds, a lock) followed by the elements.  A Value is an array of
 * one element with the VALUE flag, so one code path serves both.  A view
 * (lmp_array_view) has no header of its own: it reads elements of another
 * segment's data at an offset, and never has a lock.
 *
 * Every load and store of an element is a single atomic access of the
 * element's width, so a reader never sees a torn value; lmp_array_add is an
 * atomic read-modify-write (a fetch-and-add for integer types, a
 * compare-and-swap loop for float and double), lock-free and therefore
 * available on Raw arrays too.  Integer arithmetic wraps around modulo the
 * type's width, as in C and as Lua's own integers do.
 *
 * The locked kinds carry an RLock (lmp_lock_t of lmp/syncobj.h) in their
 * header: the process that holds it may take it again, as Python's
 * get_lock() allows, only the holder may release it, and a holder that dies
 * leaves it to the next locker with -EOWNERDEAD.  Freeing a process's last
 * handle while holding the lock abandons it (the next locker gets
 * -EOWNERDEAD too).
 */
#ifndef LMP_ARRAY_H
#define LMP_ARRAY_H

#include <stddef.h>
#include <stdint.h>

#include "lmp/common.h"
#include "lmp/segment.h"
#include "lmp/syncobj.h"

typedef enum lmp_ctype {
  LMP_INT8,
  LMP_UINT8,
  LMP_INT16,
  LMP_UINT16,
  LMP_INT32,
  LMP_UINT32,
  LMP_INT64,
  LMP_UINT64,
  LMP_FLOAT,
  LMP_DOUBLE,
  LMP_CTYPE_COUNT
} lmp_ctype_t;

/* A type name ("int32") or Python typecode ("i"); 0 or -EINVAL.  l and L are
 * 64-bit, as on Linux x86_64. */
LMP_API int lmp_ctype_parse(const char *name, lmp_ctype_t *out);
LMP_API const char *lmp_ctype_name(lmp_ctype_t t); /* "int32" */
LMP_API char lmp_ctype_code(lmp_ctype_t t);        /* 'i'; int64 is 'q', uint64 'Q' */
LMP_API size_t lmp_ctype_size(lmp_ctype_t t);
LMP_API int lmp_ctype_is_float(lmp_ctype_t t);
/* Whether integer v fits type t (an integer type; uint64 takes v >= 0). */
LMP_API int lmp_ctype_fits(lmp_ctype_t t, int64_t v);

/* One element: integer types use i (sign- or zero-extended), except uint64
 * whose full range needs u; float and double use d. */
typedef union lmp_scalar {
  int64_t i;
  uint64_t u;
  double d;
} lmp_scalar_t;

typedef struct lmp_array lmp_array_t;

enum {
  LMP_ARRAY_LOCK = 1,  /* has a lock (Value, Array; not the Raw forms) */
  LMP_ARRAY_VALUE = 2, /* a Value: one element */
};

/* A new zero-filled array of n elements in a segment of its own (a Value:
 * exactly one). */
LMP_API int lmp_array_create(lmp_ctype_t t, size_t n, unsigned flags, lmp_array_t **out);
/* Open the array in a segment the caller attached; takes its own reference.
 * -EINVAL if the segment holds no array. */
LMP_API int lmp_array_open(lmp_seg_t *seg, lmp_array_t **out);
/* n elements of type t at byte `offset` of a segment's data; the offset must
 * be a multiple of the element size and the elements must fit.  Takes its own
 * reference to the segment.  0, -ERANGE, -EINVAL (misaligned). */
LMP_API int lmp_array_view(lmp_seg_t *seg, size_t offset, lmp_ctype_t t, size_t n,
                           lmp_array_t **out);
LMP_API void lmp_array_free(lmp_array_t *a); /* the local handle; the array lives on */

LMP_API lmp_seg_t *lmp_array_seg(const lmp_array_t *a);
LMP_API lmp_ctype_t lmp_array_type(const lmp_array_t *a);
LMP_API size_t lmp_array_len(const lmp_array_t *a);
LMP_API unsigned lmp_array_flags(const lmp_array_t *a);
LMP_API int lmp_array_is_view(const lmp_array_t *a);
LMP_API size_t lmp_array_offset(const lmp_array_t *a); /* a view's byte offset; 0 otherwise */
LMP_API void *lmp_array_data(const lmp_array_t *a);

/* Element i (0-based, the caller checks i < len). */
LMP_API lmp_scalar_t lmp_array_load(const lmp_array_t *a, size_t i);
LMP_API void lmp_array_store(lmp_array_t *a, size_t i, lmp_scalar_t v);
/* Atomically add delta (d for float types, i otherwise) and return the new
 * value. */
LMP_API lmp_scalar_t lmp_array_add(lmp_array_t *a, size_t i, lmp_scalar_t delta);

/* The lock, for arrays made with LMP_ARRAY_LOCK (NULL / -ENOLCK otherwise):
 * an RLock, driven with the lmp_lock_* calls of lmp/syncobj.h.  The
 * shorthands return what those return: lock 0, -EOWNERDEAD (taken over from
 * a dead holder), -ETIMEDOUT; unlock 0 or -EPERM (not the holder). */
LMP_API lmp_lock_t *lmp_array_lockp(lmp_array_t *a);
LMP_API int lmp_array_lock(lmp_array_t *a, int64_t deadline);
LMP_API int lmp_array_unlock(lmp_array_t *a);
LMP_API int lmp_array_locked(lmp_array_t *a);

#endif

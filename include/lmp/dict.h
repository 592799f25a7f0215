/*
 * lmp/dict.h -- shared containers over byte strings: a hash table (Dict)
 * and a sequence (List), each living in shared memory with a robust lock.
 *
 * Keys and values are opaque bytes here (the Lua bindings store serialized
 * values).  A container is one small root segment -- the lock, and the name
 * of the current store -- whose name is the container's identity.  The store
 * (index, entries and an arena of records) starts inside the root segment;
 * when it runs out of room it is rebuilt, compacted, into a larger segment
 * of its own, and the root publishes the new store with one store of a
 * generation number.  Every process checks the generation when it takes the
 * lock and maps the new store when it changed, so growth is invisible to
 * readers in other processes.
 *
 * Every operation below except create/open/free runs with the lock held:
 *
 *   lmp_dict_lock(d);            -- 0, or -errno if the store cannot be mapped
 *   ... lmp_dict_find / set / del / next ...
 *   lmp_dict_unlock(d);
 *
 * Pointers returned by find, next and get point into the store: they stay
 * valid until the next change to the container or the unlock, whichever
 * comes first.  Data passed to set and insert must not point into the store.
 *
 * Crash safety: every change becomes visible through one aligned store, so a
 * holder killed anywhere leaves the old state or the new; the next locker
 * (-EOWNERDEAD from the mutex) rebuilds the derived data (the hash index and
 * counters) from the entries.  The Dict keeps insertion order, as Python's
 * dict does: replacing a value keeps its place, a deleted key re-inserted
 * goes to the end.
 */
#ifndef LMP_DICT_H
#define LMP_DICT_H

#include <stddef.h>
#include <stdint.h>

#include "lmp/common.h"
#include "lmp/segment.h"

typedef struct lmp_dict lmp_dict_t;
typedef struct lmp_list lmp_list_t;

/* Called with each value of a container its last holder frees, so that what
 * the values hold (handles pinned while stored) can be let go. */
typedef void (*lmp_store_visit_fn)(void *ctx, const void *val, size_t len);

/* === Dict === */

LMP_API int lmp_dict_create(lmp_dict_t **out);
/* Open the dict in a segment the caller attached; takes its own reference.
 * -EINVAL if the segment holds no dict. */
LMP_API int lmp_dict_open(lmp_seg_t *seg, lmp_dict_t **out);
/* The local handle.  If it is the last one anywhere, `last` (may be NULL)
 * sees every value first and the store segment is let go. */
LMP_API void lmp_dict_free(lmp_dict_t *d, lmp_store_visit_fn last, void *ctx);
LMP_API lmp_seg_t *lmp_dict_seg(const lmp_dict_t *d);

LMP_API int lmp_dict_lock(lmp_dict_t *d);
LMP_API void lmp_dict_unlock(lmp_dict_t *d);

LMP_API size_t lmp_dict_len(lmp_dict_t *d);
/* 0 and the value, or -ENOENT. */
LMP_API int lmp_dict_find(lmp_dict_t *d, const void *key, size_t klen, const void **val,
                          size_t *vlen);
/* Insert or replace.  0, -EFBIG (a key or value past 4 GiB), or the error of
 * growing the store (-ENOMEM, -ENOSPC...), which leaves the dict unchanged. */
LMP_API int lmp_dict_set(lmp_dict_t *d, const void *key, size_t klen, const void *val, size_t vlen);
LMP_API int lmp_dict_del(lmp_dict_t *d, const void *key, size_t klen); /* 0 or -ENOENT */
LMP_API void lmp_dict_clear(lmp_dict_t *d);
/* Iterate in insertion order: *pos starts at 0; 1 and an entry while there
 * is one, 0 at the end. */
LMP_API int lmp_dict_next(lmp_dict_t *d, size_t *pos, const void **key, size_t *klen,
                          const void **val, size_t *vlen);

/* === List === */

LMP_API int lmp_list_create(lmp_list_t **out);
LMP_API int lmp_list_open(lmp_seg_t *seg, lmp_list_t **out);
LMP_API void lmp_list_free(lmp_list_t *l, lmp_store_visit_fn last, void *ctx);
LMP_API lmp_seg_t *lmp_list_seg(const lmp_list_t *l);

LMP_API int lmp_list_lock(lmp_list_t *l);
LMP_API void lmp_list_unlock(lmp_list_t *l);

/* Positions are 0-based here; -ERANGE outside the list. */
LMP_API size_t lmp_list_len(lmp_list_t *l);
LMP_API int lmp_list_get(lmp_list_t *l, size_t i, const void **val, size_t *len);
LMP_API int lmp_list_set(lmp_list_t *l, size_t i, const void *val, size_t len);
/* Insert before position i; i == len appends. */
LMP_API int lmp_list_insert(lmp_list_t *l, size_t i, const void *val, size_t len);
LMP_API int lmp_list_del(lmp_list_t *l, size_t i);
LMP_API void lmp_list_clear(lmp_list_t *l);

#endif

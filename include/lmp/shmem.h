/*
 * lmp/shmem.h -- raw shared-memory blocks (lmp.SharedMemory).
 *
 * A block is `size` bytes in a segment of its own, zero-filled at creation,
 * which any process of the program can attach: by the segment's name, or by
 * a name the user chose.  User names are scoped to the program (the processes
 * under one root): they live in a small directory in shared memory under the
 * root's prefix, so two programs never collide, and nothing a program names
 * outlives it.  The directory maps a user name to a segment name; it takes
 * no reference, so a block is freed like every other segment, when the last
 * process holding it lets go, and its name then stops resolving.
 *
 * lmp_shmem_unlink makes a block unreachable by name (user name and segment
 * name both); processes that hold it keep using it until they let go.
 */
#ifndef LMP_SHMEM_H
#define LMP_SHMEM_H

#include <stddef.h>

#include "lmp/common.h"
#include "lmp/array.h"
#include "lmp/segment.h"

#define LMP_SHMEM_NAME_MAX 48 /* a user name's bytes, NUL included */
#define LMP_SHMEM_DIR_MAX 1024 /* user names alive at once in a program */

typedef struct lmp_shmem lmp_shmem_t;

/* A new block of `size` > 0 bytes; `name` NULL for none.  -EINVAL (size 0,
 * a name that is empty, too long, or starts with '/'), -EEXIST (the name is
 * taken), -EDQUOT (the directory is full), -ENOSPC (no room for the block:
 * lmp_seg_space_error says why). */
LMP_API int lmp_shmem_create(size_t size, const char *name, lmp_shmem_t **out);
/* Attach by user name, or by segment name (one that starts with '/').
 * -ENOENT if no such block exists, -EINVAL if the segment is not a block. */
LMP_API int lmp_shmem_attach(const char *name, lmp_shmem_t **out);
/* Open the block in a segment the caller attached (a received handle);
 * takes its own reference.  -ENOENT once the block was unlinked. */
LMP_API int lmp_shmem_open(lmp_seg_t *seg, lmp_shmem_t **out);
LMP_API void lmp_shmem_free(lmp_shmem_t *m); /* the local handle (close) */
/* Remove the names; 0, or -ENOENT if they were already gone. */
LMP_API int lmp_shmem_unlink(lmp_shmem_t *m);

LMP_API void *lmp_shmem_data(const lmp_shmem_t *m);
LMP_API size_t lmp_shmem_size(const lmp_shmem_t *m);
/* The user name, or the segment name of an unnamed block. */
LMP_API const char *lmp_shmem_name(const lmp_shmem_t *m);
LMP_API lmp_seg_t *lmp_shmem_seg(const lmp_shmem_t *m);

/* A typed view of n elements at byte `offset` (0-based) of the block: an
 * lmp_array_t without a lock.  -EINVAL (offset not a multiple of the element
 * size), -ERANGE (past the end). */
LMP_API int lmp_shmem_view(lmp_shmem_t *m, size_t offset, lmp_ctype_t t, size_t n,
                           lmp_array_t **out);
/* The block-relative offset of a view made by lmp_shmem_view. */
LMP_API size_t lmp_shmem_view_offset(const lmp_array_t *view);

#endif

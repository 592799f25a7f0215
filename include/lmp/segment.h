/*
 * lmp/segment.h -- named shared-memory segments, where every shared object
 * of lmp lives.
 *
 * Every shared object lmp makes lives in a shared-memory segment whose name
 * starts with one prefix per root process ("/lmp.<rootpid>.<random>", see
 * lmp/runtime.h) and ends in 64 random bits.  A handle is a segment name:
 * sending a handle sends the name and the receiver maps it, which is what
 * lets handles reach any process at any time.  A segment lives in /dev/shm
 * when it fits there, and otherwise in a memfd that the watchdog keeps
 * under the name (see segment.c); either way its memory is reserved when it
 * is made, so touching it never faults.
 *
 * Lifetime.  The segment header holds a count of processes that hold it
 * (`refs`) plus the handles serialized but not yet received (`inflight`).  A
 * process's first attach takes a reference, its last release drops it, and the
 * segment is unlinked when no reference is left.  A process that dies gives
 * back its references when it is reaped (each process lists what it holds
 * in a table of its own, "<prefix>.h.<pid>").  Whatever else a crash leaves
 * behind is unlinked by the root and its watchdog (lmp/runtime.h).
 */
#ifndef LMP_SEGMENT_H
#define LMP_SEGMENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "lmp/common.h"

#define LMP_SEG_NAME_MAX 64

typedef struct lmp_seg lmp_seg_t;

/* Create a zero-filled segment of at least `size` usable bytes, its memory
 * reserved.  The caller holds one local reference.  -ENOSPC when neither
 * /dev/shm nor memory can hold it; lmp_seg_space_error() then says why. */
LMP_API int lmp_seg_create(size_t size, lmp_seg_t **out);

/* The calling thread's last -ENOSPC from lmp_seg_create, in words: "cannot
 * reserve 3.0 MiB of shared memory in /dev/shm (16.0 MiB filesystem, 2.1 MiB
 * free) nor in memory (...)"; "" if the last creation did not fail so. */
LMP_API const char *lmp_seg_space_error(void);

/* Map a segment by name.  If this process already maps it, the same
 * descriptor is returned with one more local reference.  `adopt` = 1 when the
 * name came out of a message: the in-flight reference taken by lmp_seg_pin is
 * taken over instead of adding a new one.  -ENOENT if it no longer exists. */
LMP_API int lmp_seg_attach(const char *name, int adopt, lmp_seg_t **out);

/* One more local reference; release drops one, the last unmaps the segment
 * and unlinks it if no process holds it any more. */
LMP_API void lmp_seg_retain(lmp_seg_t *s);
LMP_API void lmp_seg_release(lmp_seg_t *s);

/* Keep the segment alive while its name travels in a message. */
LMP_API void lmp_seg_pin(lmp_seg_t *s);

LMP_API void *lmp_seg_data(const lmp_seg_t *s);
LMP_API size_t lmp_seg_size(const lmp_seg_t *s);
LMP_API const char *lmp_seg_name(const lmp_seg_t *s);
LMP_API uint32_t lmp_seg_local(const lmp_seg_t *s); /* references this process holds */

/* Give back one pin of the segment `name` (a handle in a message that will
 * never be read), through the function lmp_runtime_set_unpin set. */
LMP_API void lmp_seg_unpin(const char *name);

/* Map a segment of this user read-only, without taking a reference and
 * without touching it, for observers in other process families (lmp top):
 * *data and *size are its usable bytes.  -EACCES when it is not owner-only
 * and this user's, -EINVAL when it is not an lmp segment.  Unmap with
 * lmp_seg_unpeek. */
LMP_API int lmp_seg_peek(const char *name, const void **data, size_t *size);
LMP_API void lmp_seg_unpeek(const void *data, size_t size);

#endif

/*
 * lmp/shm.h -- named shared-memory segments, the runtime's root, and the
 * watchdog that cleans up after it.
 *
 * Every shared object lmp makes lives in a shared-memory segment whose name
 * starts with one prefix per root process ("/lmp.<rootpid>.<random>") and
 * ends in 64 random bits.  A handle is a segment name: sending a handle sends
 * the name and the receiver maps it, which is what lets handles reach any
 * process at any time.  A segment lives in /dev/shm when it fits there, and
 * otherwise in a memfd that the watchdog keeps under the name (see shm.c);
 * either way its memory is reserved when it is made, so touching it never
 * faults.
 *
 * Lifetime.  The segment header holds a count of processes that hold it
 * (`refs`) plus the handles serialized but not yet received (`inflight`).  A
 * process's first attach takes a reference, its last release drops it, and the
 * segment is unlinked when no reference is left.  A process that dies gives
 * back its references when it is reaped (each process lists what it holds
 * in a table of its own, "<prefix>.h.<pid>").  Whatever else a crash leaves
 * behind is unlinked by the root when it exits and, if the root itself is
 * killed, by the watchdog: a small process forked by the root that waits for
 * the root's end (on a pidfd) and then unlinks everything under the prefix.
 * A family whose root and watchdog were killed together is removed by the
 * next root of the same user, at its lmp_runtime_init.
 *
 * The watchdog also keeps descriptors in transit: a process that sends a Pipe
 * end hands a duplicate to the watchdog (lmp_fd_stash), and the receiver takes
 * it back exactly once (lmp_fd_fetch).  A descriptor cannot cross shared
 * memory, and the sender may be gone by the time the message is read.
 */
#ifndef LMP_SHM_H
#define LMP_SHM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define LMP_SEG_NAME_MAX 64

typedef struct lmp_seg lmp_seg_t;

/* Set up this process's runtime: the first call in a process that inherited
 * no prefix (environment variable LMP_PREFIX) makes it the root.  Idempotent.
 * The root forks its watchdog here (about 150 us) and registers
 * lmp_runtime_cleanup with atexit.  Segment and stash calls, and
 * lmp_runtime_prefork, call it first if nobody did. */
int lmp_runtime_init(void);
const char *lmp_runtime_prefix(void);
int lmp_runtime_is_root(void);
pid_t lmp_runtime_root_pid(void);

/* Put LMP_PREFIX and LMP_ROOT_PID in the environment, so a child about to
 * exec a fresh lmp process (start method "spawn") joins this family.  Call it
 * in the child between fork and exec.  0, or -EINVAL before init. */
int lmp_runtime_setenv(void);

/* The root's own cleanup: unlink every segment under the prefix.  Called at
 * exit of the root; a no-op in any other process. */
void lmp_runtime_cleanup(void);

/* Create a zero-filled segment of at least `size` usable bytes, its memory
 * reserved.  The caller holds one local reference.  -ENOSPC when neither
 * /dev/shm nor memory can hold it; lmp_seg_space_error() then says why. */
int lmp_seg_create(size_t size, lmp_seg_t **out);

/* The calling thread's last -ENOSPC from lmp_seg_create, in words: "cannot
 * reserve 3.0 MiB of shared memory in /dev/shm (16.0 MiB filesystem, 2.1 MiB
 * free) nor in memory (...)"; "" if the last creation did not fail so. */
const char *lmp_seg_space_error(void);

/* Map a segment by name.  If this process already maps it, the same
 * descriptor is returned with one more local reference.  `adopt` = 1 when the
 * name came out of a message: the in-flight reference taken by lmp_seg_pin is
 * taken over instead of adding a new one.  -ENOENT if it no longer exists. */
int lmp_seg_attach(const char *name, int adopt, lmp_seg_t **out);

/* One more local reference; release drops one, the last unmaps the segment
 * and unlinks it if no process holds it any more. */
void lmp_seg_retain(lmp_seg_t *s);
void lmp_seg_release(lmp_seg_t *s);

/* Keep the segment alive while its name travels in a message. */
void lmp_seg_pin(lmp_seg_t *s);

void *lmp_seg_data(const lmp_seg_t *s);
size_t lmp_seg_size(const lmp_seg_t *s);
const char *lmp_seg_name(const lmp_seg_t *s);
uint32_t lmp_seg_refs(const lmp_seg_t *s);  /* processes holding it, for tests */
uint32_t lmp_seg_local(const lmp_seg_t *s); /* references this process holds */

/* Fork support, called by lmp_proc_fork: before fork every mapped segment
 * gains a reference for the child, which a failed fork gives back. */
void lmp_runtime_prefork(void);
void lmp_runtime_postfork_parent(int failed);
void lmp_runtime_postfork_child(void);

/* How a reference left by a process that died is given back: it is turned
 * into a pin and `fn` releases that pin (attach adopting, then release).  A
 * host that keeps handles inside segments (the Lua bindings: containers and
 * queues whose values hold handles) sets a function that lets go through the
 * object, so its last-holder cleanup runs too.  NULL: attach and release. */
void lmp_runtime_set_unpin(void (*fn)(const char *name));

/* Give back one pin of the segment `name` (a handle in a message that will
 * never be read), through the function set above. */
void lmp_seg_unpin(const char *name);

/* Drop every reference this process holds, right before _exit or exec.  The
 * segments stay mapped until then, so that a robust mutex this process still
 * holds in one of them is handed on (EOWNERDEAD) when it ends. */
void lmp_runtime_release_all(void);

/* Descriptor hand-off through the watchdog.  It holds at most
 * LMP_FD_STASH_MAX descriptors in transit (fewer when its descriptor limit
 * is lower); past that lmp_fd_stash fails with -ENOSPC until receivers
 * take some. */
#define LMP_FD_STASH_MAX 4096
int lmp_fd_stash(int fd, uint64_t *token); /* keeps a duplicate; fd stays open */
int lmp_fd_fetch(uint64_t token, int *fd); /* once; -ENOENT if unknown or taken */

/* Map a segment of this user read-only, without taking a reference and
 * without touching it, for observers in other process families (lmp top):
 * *data and *size are its usable bytes.  -EACCES when it is not owner-only
 * and this user's, -EINVAL when it is not an lmp segment.  Unmap with
 * lmp_seg_unpeek. */
int lmp_seg_peek(const char *name, const void **data, size_t *size);
void lmp_seg_unpeek(const void *data, size_t size);

/* Pid of the watchdog, 0 if not started (for tests). */
pid_t lmp_watchdog_pid(void);

#endif

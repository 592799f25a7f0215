/*
 * lmp/runtime.h -- the family's root, its watchdog, and descriptors in
 * transit.
 *
 * The processes of one program form a family under one root: the first
 * process that sets up the runtime.  Its prefix names every segment the
 * family makes (lmp/segment.h).  Whatever a crash leaves behind is unlinked
 * by the root when it exits and, if the root itself is killed, by the
 * watchdog: a small process forked by the root that waits for the root's
 * end (on a pidfd) and then unlinks everything under the prefix.  A family
 * whose root and watchdog were killed together is removed by the next root
 * of the same user, at its lmp_runtime_init.
 *
 * The watchdog also keeps descriptors in transit: a process that sends a Pipe
 * end hands a duplicate to the watchdog (lmp_fd_stash), and the receiver takes
 * it back exactly once (lmp_fd_fetch).  A descriptor cannot cross shared
 * memory, and the sender may be gone by the time the message is read.
 */
#ifndef LMP_RUNTIME_H
#define LMP_RUNTIME_H

#include <stdint.h>
#include <sys/types.h>

#include "lmp/common.h"

/* Set up this process's runtime: the first call in a process that inherited
 * no prefix (environment variable LMP_PREFIX) makes it the root.  Idempotent.
 * The root forks its watchdog here (about 150 us) and registers
 * lmp_runtime_cleanup with atexit.  Segment and stash calls, and
 * lmp_proc_fork, call it first if nobody did. */
LMP_API int lmp_runtime_init(void);
LMP_API const char *lmp_runtime_prefix(void);
LMP_API int lmp_runtime_is_root(void);
LMP_API pid_t lmp_runtime_root_pid(void);

/* Put LMP_PREFIX and LMP_ROOT_PID in the environment, so a child about to
 * exec a fresh lmp process (start method "spawn") joins this family.  Call it
 * in the child between fork and exec.  0, or -EINVAL before init. */
LMP_API int lmp_runtime_setenv(void);

/* The root's own cleanup: unlink every segment under the prefix.  Called at
 * exit of the root; a no-op in any other process. */
LMP_API void lmp_runtime_cleanup(void);

/* How a reference left by a process that died is given back: it is turned
 * into a pin and `fn` releases that pin (attach adopting, then release).  A
 * host that keeps handles inside segments (the Lua bindings: containers and
 * queues whose values hold handles) sets a function that lets go through the
 * object, so its last-holder cleanup runs too.  NULL: attach and release. */
LMP_API void lmp_runtime_set_unpin(void (*fn)(const char *name));

/* Drop every reference this process holds, right before _exit or exec.  The
 * segments stay mapped until then, so that a robust mutex this process still
 * holds in one of them is handed on (EOWNERDEAD) when it ends. */
LMP_API void lmp_runtime_release_all(void);

/* Descriptor hand-off through the watchdog.  It holds at most
 * LMP_FD_STASH_MAX descriptors in transit (fewer when its descriptor limit
 * is lower); past that lmp_fd_stash fails with -ENOSPC until receivers
 * take some. */
#define LMP_FD_STASH_MAX 4096
LMP_API int lmp_fd_stash(int fd, uint64_t *token); /* keeps a duplicate; fd stays open */
LMP_API int lmp_fd_fetch(uint64_t token, int *fd); /* once; -ENOENT if unknown or taken */

#endif

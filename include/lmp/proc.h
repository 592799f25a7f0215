/*
 * lmp/proc.h -- child processes: fork, reap, signal, and the exit path.
 *
 * lmp_proc_fork forks like fork(2) and registers the child.  The child asks
 * the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG), then checks
 * the parent is still the one it was forked from, so no child outlives a
 * parent that died.  Each child gets a pidfd, so a join with a timeout sleeps
 * in poll(2) instead of polling waitpid, and it is reaped and signalled
 * through that pidfd: a child that a host reaped behind lmp's back is seen
 * gone, and its recycled pid is never signalled.  A SIGCHLD handler only records that
 * something exited; lmp_proc_reap reaps registered children in normal
 * context, so none is left a zombie and other libraries' children are never
 * reaped behind their back.
 *
 * Exit codes follow Python: 0, the code given to exit(), or -N when killed by
 * signal N.
 *
 * Besides forked children the registry holds two other kinds, for the start
 * methods that do not fork the caller's image: children that exec a program
 * (lmp_proc_spawn, start method "spawn"), which are ordinary children in
 * every other respect, and processes another process forked on our behalf
 * (lmp_proc_adopt, start method "forkserver").  An adopted process is not
 * our child: it is watched through a pidfd, signalled through it (no pid
 * reuse race), and its exit code arrives on a descriptor from its real
 * parent.  Every call below works on all three kinds.
 */
#ifndef LMP_PROC_H
#define LMP_PROC_H

#include <stdint.h>
#include <sys/types.h>

#include "lmp/common.h"

typedef struct lmp_proc lmp_proc_t;

/* Flags of a child.  A daemon is terminated, not joined, by
 * lmp_proc_shutdown.  A service (the forkserver) serves the other children:
 * shutdown ends it last, and lmp_proc_children does not count it.  NOINT
 * (with either or neither) makes the child ignore SIGINT from its first
 * instruction, and across lmp_proc_spawn's exec: a ^C at the terminal is
 * for the program, not for a worker that happens to be starting. */
#define LMP_PROC_DAEMON 1
#define LMP_PROC_SERVICE 2
#define LMP_PROC_NOINT 4

/* 1 in the parent (*out set), 0 in the child (*out NULL), <0 on error.
 * `flags`: 0 or LMP_PROC_* (any other non-zero value means a daemon). */
LMP_API int lmp_proc_fork(int flags, lmp_proc_t **out);

/*
 * Fork and execve(path, argv) with this process's environment plus
 * LMP_PREFIX and LMP_ROOT_PID, so the program (an lmp executable) joins this
 * family: same segments, same watchdog.  The child drops the segment
 * references the fork gave it, and every descriptor above stderr is closed
 * at exec except `keep_fd` (-1: none), which stays at its number.  Returns 0
 * once the exec has succeeded, or -errno: the exec's own error (-ENOENT,
 * -EACCES...) is reported here, after the failed child has been reaped.
 */
LMP_API int lmp_proc_spawn(const char *path, char *const argv[], int keep_fd, int flags,
                           lmp_proc_t **out);

/*
 * Register a process that another one forked for us.  `pidfd` (-1 if the
 * kernel has none) refers to it; `status_fd` turns readable when its real
 * parent has reaped it and written its exit code there as one int32 (the
 * Python-style code); end of file without a code gives 255.  Takes
 * ownership of both descriptors.  0 or -ENOMEM (descriptors closed).
 */
LMP_API int lmp_proc_adopt(pid_t pid, int pidfd, int status_fd, int flags, lmp_proc_t **out);
/* The handle; a running child stays registered until reaped. */
LMP_API void lmp_proc_free(lmp_proc_t *p);

LMP_API pid_t lmp_proc_pid(const lmp_proc_t *p);
/* 0 once exited (code stored), -ETIMEDOUT if still running at the deadline. */
LMP_API int lmp_proc_wait(lmp_proc_t *p, int64_t deadline);
/* The same, but -EINTR when the program asks the wait to stop (^C:
 * lmp_set_interrupt_check); for waits a user chose (join). */
LMP_API int lmp_proc_wait_intr(lmp_proc_t *p, int64_t deadline);
LMP_API int lmp_proc_alive(lmp_proc_t *p); /* reaps if it has exited */
LMP_API int lmp_proc_exitcode(lmp_proc_t *p,
                              int *code); /* 0 and code once exited, -EAGAIN while running */
LMP_API int lmp_proc_signal(lmp_proc_t *p, int sig); /* no-op once exited */
/* A descriptor that turns readable once the exit code is known: the pidfd,
 * or the status descriptor of an adopted process; -1 if none.  A child's
 * descriptor is closed when it is reaped unless this handed it out (then
 * it stays open until lmp_proc_free); once the child is reaped and its own
 * is closed, one descriptor shared by all ended children, always readable.
 * Never close what this returns. */
LMP_API int lmp_proc_fd(lmp_proc_t *p);

/* Reap every registered child that has exited (cheap when none has). */
LMP_API void lmp_proc_reap(void);
/* Number of live registered children, services not counted, and their pids. */
LMP_API int lmp_proc_children(pid_t *pids, int max);

/* Shutdown of this process's children: signal daemon children (SIGTERM, then
 * SIGKILL after a grace period), wait for the others, then end the services
 * the same way as daemons. */
LMP_API void lmp_proc_shutdown(void);

/* Owners, for hosts where several independent users of lmp share a process
 * (two Lua states in one server).  A child's owner is 0 until set; ending
 * one owner's children (daemons terminated, the others joined, services
 * left alone) leaves every other owner's running. */
LMP_API void lmp_proc_set_owner(lmp_proc_t *p, uint64_t owner);
LMP_API void lmp_proc_shutdown_owner(uint64_t owner);

/* Put back the SIGCHLD disposition lmp replaced, unless the host has
 * installed another since; the next fork installs lmp's again.  For a host
 * that unloads lmp, once nothing of it runs. */
LMP_API void lmp_proc_release_signals(void);

/* The end of a child: shut down its own children, release its references to
 * shared segments, flush stdio and _exit(code).  Never runs inherited atexit
 * handlers. */
LMP_API void lmp_proc_exit(int code) __attribute__((noreturn));

/* pid of the process that started this one through lmp (0 in the root). */
LMP_API pid_t lmp_proc_parent_pid(void);
/* For a process started on another's behalf (an exec'd child, or one forked
 * by the forkserver): the pid lmp_proc_parent_pid reports from now on. */
LMP_API void lmp_proc_set_parent(pid_t pid);

/* What a process (of any family) has used so far, from /proc. */
typedef struct lmp_proc_usage {
  int64_t cpu_ns; /* user and system time */
  uint64_t rss;   /* resident set size, bytes */
} lmp_proc_usage_t;

/* 0, or -errno (-ENOENT once it is gone).  pid 0 is this process. */
LMP_API int lmp_proc_usage(pid_t pid, lmp_proc_usage_t *out);

#endif

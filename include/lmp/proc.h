/*
 * lmp/proc.h -- child processes: fork, reap, signal, and the exit path.
 *
 * lmp_proc_fork forks like fork(2) and registers the child.  The child asks
 * the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG), then checks
 * the parent is still the one it was forked from, so no child outlives a
 * parent that died.  Each child gets a pidfd, so a join with a timeout sleeps
 * in poll(2) instead of polling waitpid.  A SIGCHLD handler only records that
 * something exited; lmp_proc_reap reaps registered children in normal
 * context, so none is left a zombie and other libraries' children are never
 * reaped behind their back.
 *
 * Exit codes follow Python: 0, the code given to exit(), or -N when killed by
 * signal N.
 */
#ifndef LMP_PROC_H
#define LMP_PROC_H

#include <stdint.h>
#include <sys/types.h>

typedef struct lmp_proc lmp_proc_t;

/* 1 in the parent (*out set), 0 in the child (*out NULL), <0 on error. */
int lmp_proc_fork(int daemon, lmp_proc_t **out);
void lmp_proc_free(lmp_proc_t *p); /* the handle; a running child stays registered until reaped */

pid_t lmp_proc_pid(const lmp_proc_t *p);
/* 0 once exited (code stored), -ETIMEDOUT if still running at the deadline. */
int lmp_proc_wait(lmp_proc_t *p, int64_t deadline);
int lmp_proc_alive(lmp_proc_t *p);               /* reaps if it has exited */
int lmp_proc_exitcode(lmp_proc_t *p, int *code); /* 0 and code once exited, -EAGAIN while running */
int lmp_proc_signal(lmp_proc_t *p, int sig);     /* no-op once exited */
int lmp_proc_fd(const lmp_proc_t *p);            /* pidfd, readable once it exits; -1 if none */

/* Reap every registered child that has exited (cheap when none has). */
void lmp_proc_reap(void);
/* Number of live registered children, and their pids. */
int lmp_proc_children(pid_t *pids, int max);

/* Shutdown of this process's children: signal daemon children (SIGTERM, then
 * SIGKILL after a grace period) and wait for the others. */
void lmp_proc_shutdown(void);

/* The end of a child: shut down its own children, release its references to
 * shared segments, flush stdio and _exit(code).  Never runs inherited atexit
 * handlers. */
void lmp_proc_exit(int code) __attribute__((noreturn));

/* pid of the process that forked this one through lmp (0 in the root). */
pid_t lmp_proc_parent_pid(void);

#endif

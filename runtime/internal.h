/*
 * runtime/internal.h -- helpers shared by the runtime's own files, not part
 * of the public headers.
 *
 * Deadlines are absolute CLOCK_MONOTONIC nanoseconds everywhere (common.h);
 * the kernel wants them as a timespec (futex, pthread clocklock) or as a
 * relative millisecond count (poll), so the conversions live here once.
 * So is the Unix plumbing every part uses (polls until a deadline,
 * descriptors over sockets, random bits, a process's start time); the
 * bindings use it too, for it is not part of the public headers.
 *
 * Then each room's entries for the rooms above it, lowest first: the
 * watchdog (watchdog.c), which segments ask to keep memfds; segments
 * (segment.c), whose fork accounting the root drives; and the root
 * (runtime.c), which starts both and which proc.c calls around a fork.
 */
#ifndef LMP_INTERNAL_H
#define LMP_INTERNAL_H

#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>

#include "lmp/common.h"

/* A hint to the CPU that this is a spin loop (frees the sibling hyperthread,
 * saves power); a no-op where the architecture has no such instruction. */
static inline void lmp__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield" ::: "memory");
#else
  __asm__ __volatile__("" ::: "memory");
#endif
}

/* The absolute deadline as a timespec (for CLOCK_MONOTONIC waits). */
static inline struct timespec lmp__deadline_ts(int64_t deadline)
{
  struct timespec ts;
  if (deadline < 0)
    deadline = 0;
  ts.tv_sec = (time_t)(deadline / 1000000000);
  ts.tv_nsec = (long)(deadline % 1000000000);
  return ts;
}

/* Milliseconds left until the deadline, rounded up, for poll(2): -1 for
 * LMP_FOREVER, 0 once expired, capped so it never overflows an int. */
int lmp__deadline_ms(int64_t deadline);

/* After a wait returned EINTR: -EINTR if the program asks waits to stop
 * (lmp_set_interrupt_check), 0 to resume the wait. */
int lmp__interrupted(void);
/* 1 when the program may ask waits to stop (a check is installed): waits
 * the kernel resumes by themselves (a robust mutex's) then sleep in slices
 * and ask between them. */
int lmp__interruptible(void);

/* ppoll() on one descriptor until an absolute deadline.  Returns its revents
 * (> 0), 0 at the deadline, -EBADF for a bad descriptor, or -errno.  EINTR
 * resumes with what is left, or returns -EINTR (lmp__interrupted). */
int lmp__poll_fd(int fd, short events, int64_t deadline);

/* ppoll() on n descriptors until an absolute deadline.  Returns how many
 * have revents set (> 0), 0 at the deadline, or -errno.  EINTR resumes with
 * what is left, or returns -EINTR (lmp__interrupted). */
int lmp__poll_fds(struct pollfd *fds, size_t n, int64_t deadline);

/* Lock and unlock a process-private mutex that cannot fail but by a bug
 * (then abort: going on would corrupt what it guards). */
void lmp__lock(pthread_mutex_t *m);
void lmp__unlock(pthread_mutex_t *m);

/* Random bits from getrandom, or from the clock and the pid without it. */
uint32_t lmp__random32(void);
uint64_t lmp__random64(void);

/* The start time of process `pid` (clock ticks since boot, /proc/<pid>/stat)
 * and its state letter.  0, -ENOENT when there is no such process, -errno. */
int lmp__proc_start(pid_t pid, uint64_t *start, char *state);

/* === descriptor passing (fdpass.c) === */

/* The most descriptors one message carries. */
#define LMP__FDS_MAX 8

/* Send `len` bytes from `data` as one message on the Unix socket `sock`
 * with nfds (at most LMP__FDS_MAX) descriptors attached; the receiver gets
 * duplicates, ours stay open.  `flags` go with MSG_NOSIGNAL (MSG_DONTWAIT,
 * say).  Resumes after EINTR.  The bytes sent, or -errno (-EAGAIN when a
 * send timeout or MSG_DONTWAIT ran out). */
ssize_t lmp__send_fds(int sock, const void *data, size_t len, const int *fds, size_t nfds,
                      int flags);

/* Receive one message of at most `len` bytes into `data`, and the
 * descriptors that came with it, close-on-exec, into fds: *nfds is the room
 * there on entry (at most LMP__FDS_MAX) and the count on return.  Resumes
 * after EINTR.  The bytes received (0 at end of file), or -errno (-EAGAIN
 * as for send); -EMSGSIZE for a message cut off -- longer than len, more
 * descriptors than the room, or some dropped by the kernel (MSG_CTRUNC) --
 * whose descriptors are all closed. */
ssize_t lmp__recv_fds(int sock, void *data, size_t len, int *fds, size_t *nfds, int flags);

/* 1 if a shared-memory object is this user's and owner-only, as every one
 * lmp creates is (segment.c); attaching refuses the others. */
struct stat;
int lmp__owner_only(const struct stat *st);

/* === watchdog (watchdog.c) === */

/* Unlink every /dev/shm entry whose name begins with `prefix` (given with
 * its leading '/').  Uses only system calls, no allocation, so it is safe in
 * the watchdog and at exit.  Returns the number of entries unlinked. */
int lmp__unlink_prefix(const char *prefix);

/* Unlink the /dev/shm entries of this user's families whose root and
 * watchdog are both gone (killed together), except those of the family
 * `own` (a prefix with its leading '/').  One pass over /dev/shm; returns
 * the number of entries unlinked.  Called by a new root. */
int lmp__sweep_families(const char *own);

/* Fill `addr` with the abstract socket address of the fd stash for `prefix`;
 * returns the address length to pass to bind/connect. */
socklen_t lmp__stash_addr(const char *prefix, struct sockaddr_un *addr);

/* Start the watchdog of the root whose prefix is given (not as a child of
 * the root: it is forked twice).  Called once, by the root, from
 * lmp_runtime_init.  0, *pid set and *live_w the write end of the liveness
 * pipe (close-on-exec) that only the root may hold; or -errno. */
int lmp__watchdog_start(const char *prefix, pid_t *pid, int *live_w);

/* Tell the watchdog the root started about a child of the root (its pidfd
 * is duplicated into the watchdog), so it ends with the root even when the
 * root execs.  Best effort: no reply is awaited. */
void lmp__watchdog_enroll(int pidfd);
/* In a new child: the root's enrolment connection is not its own. */
void lmp__watchdog_postfork_child(void);

/* The fd stash of the family whose prefix is given: stash keeps a duplicate
 * of fd under `token` (drawn by the caller: -EEXIST if taken, -ENOSPC when
 * full); fetch hands it back once in *fd, or -ENOENT. */
int lmp__wd_stash(const char *prefix, uint64_t token, int fd);
int lmp__wd_fetch(const char *prefix, uint64_t token, int *fd);

/* Memfd segments (segment.c): the watchdog of the family whose prefix is given
 * keeps a descriptor of each under the 64 random bits of its name.  put:
 * 0, -EEXIST (token taken), -EMFILE (the watchdog's budget for them is
 * spent); get: a new descriptor in *fd, or -ENOENT; drop: best effort. */
int lmp__wd_seg_put(const char *prefix, uint64_t token, int fd);
int lmp__wd_seg_get(const char *prefix, uint64_t token, int *fd);
void lmp__wd_seg_drop(const char *prefix, uint64_t token);

/* === segments: the family, fork, holdings (segment.c) === */

/* The root tells segments the family's prefix once it is known (at
 * lmp_runtime_init); every name they make begins with it. */
void lmp__seg_family(const char *prefix);

/* Fork support, driven by the root's hooks below: before fork every mapped
 * segment gains a reference for the child, which a failed fork gives back;
 * the registry stays locked from prefork to the postfork call on each side. */
void lmp__seg_prefork(void);
void lmp__seg_postfork_parent(int failed);
void lmp__seg_postfork_child(void);
/* Drop every reference this process holds (lmp_runtime_release_all). */
void lmp__seg_release_all(void);
/* The unpin hook lmp_seg_unpin calls (lmp_runtime_set_unpin). */
void lmp__seg_set_unpin(void (*fn)(const char *name));

/* Processes holding the segment, a snapshot: 1 with the caller's own
 * reference means no other process holds it (and for tests). */
struct lmp_seg;
uint32_t lmp__seg_refs(const struct lmp_seg *s);

/* A process of the family has ended and `pid` was reaped by this one: give
 * back the references it still held (its holdings table).  Called by
 * proc.c where it records a child's exit. */
void lmp__holdings_reaped(pid_t pid);

/* The two names of a family derived from its prefix alone: the names
 * directory of SharedMemory (shmem.c) and the pools' registry that lmp top
 * reads (pool.c).  The root takes both when it starts (runtime.c). */
#define LMP__NAMES_SUFFIX ".names"
#define LMP__POOLS_SUFFIX ".pools"

/* === the root: fork and test hooks (runtime.c) === */

/* Fork support, called by lmp_proc_fork around fork(2): the root's state
 * and the segments' registry (lmp__seg_prefork) across it. */
void lmp__runtime_prefork(void);
void lmp__runtime_postfork_parent(int failed);
void lmp__runtime_postfork_child(void);

/* Pid of the watchdog, 0 if not started (for tests). */
pid_t lmp__watchdog_pid(void);

/* The stash protocol: one request per connection, one reply. */
enum {
  LMP__WD_STASH = 1,
  LMP__WD_FETCH = 2,
  LMP__WD_ENROLL = 3,
  LMP__WD_SEG_PUT = 4,
  LMP__WD_SEG_GET = 5,
  LMP__WD_SEG_DROP = 6
};

typedef struct lmp__wd_req {
  uint32_t op;
  uint32_t pad;
  uint64_t token;
} lmp__wd_req_t;

typedef struct lmp__wd_rep {
  int32_t status; /* 0 or -errno */
  uint32_t pad;
} lmp__wd_rep_t;

#endif

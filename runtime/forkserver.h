/*
 * runtime/forkserver.h -- a server process that forks children on request
 * (start method "forkserver"), not part of the public headers.
 *
 * The requester starts the server once (exec of a command the caller
 * names), then each request sends a payload descriptor and the requester's
 * stdio; the server forks, the child runs the caller's run function on the
 * payload, and the requester adopts the child (lmp_proc_adopt).  What the
 * payload means is the caller's business: the runtime only carries the
 * descriptor.  forkserver.c tells the whole story.
 */
#ifndef LMP_FORKSERVER_H
#define LMP_FORKSERVER_H

#include "lmp/proc.h"

/* A wedged server is given this long to answer a request. */
#define LMP__FS_TIMEOUT_S 30

/* The server's command line: exec `path` with argv (NULL-terminated), in
 * which argv[fd_arg] is replaced by the number of the server's socket. */
typedef struct lmp__fs_cmd {
  const char *path;
  char **argv;
  int fd_arg;
} lmp__fs_cmd_t;

/* Asked for the command line each time a server must be started: fill
 * *cmd, whose strings must stay valid until the request returns.  0 or
 * -errno.  It is called before the runtime holds anything for the start,
 * so it may leave by longjmp (a Lua error). */
typedef int (*lmp__fs_command_fn)(void *ctx, lmp__fs_cmd_t *cmd);

/*
 * Start a child through this process's server, starting the server first if
 * this process has none (one inherited through fork is not ours), and once
 * more if it has died since its last use.  `payload` goes to the child's run
 * function; our stdin, stdout and stderr become the child's (/dev/null for
 * one that is closed).  flags: 0 or LMP_PROC_DAEMON.  0 and *out, the
 * adopted child; or -errno (-ETIMEDOUT from a wedged server, the start's
 * error, the server's fork's error).
 */
int lmp__fs_request(lmp__fs_command_fn command, void *ctx, int payload, int flags,
                    lmp_proc_t **out);

/* The child's side of a request: runs in the child the server forked, with
 * the requester's stdio at 0-2 and `payload` (close-on-exec) its to close;
 * returns the exit code (the child then ends in lmp_proc_exit) unless it
 * ends the process itself. */
typedef int (*lmp__fs_run_fn)(void *ctx, int payload);

typedef struct lmp__fs_server {
  void (*init)(void *ctx); /* once, before the first request; NULL: none */
  lmp__fs_run_fn run;      /* in each child */
  void *ctx;               /* for both */
} lmp__fs_server_t;

/* The server: serve requests on `conn` (the socket from the command line)
 * until the requester closes it, then end, leaving the children to die with
 * it.  Never returns. */
void lmp__fs_serve(int conn, const lmp__fs_server_t *srv) __attribute__((noreturn));

#endif

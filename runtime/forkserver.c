/*
 * forkserver.c -- a server process that forks children on request, and the
 * requester that talks to it (start method "forkserver").
 *
 * Forking a big program copies its state into every child; exec'ing a fresh
 * one for each child pays the start-up each time.  A forkserver is the
 * middle way: on first use the requester execs a small server (a command
 * line its caller names, holding one end of a SOCK_SEQPACKET socketpair),
 * which then forks one child per request from its own small, clean image.
 *
 * A request is one message: a magic word and the child's flags, with four
 * descriptors -- the payload (whatever the caller's run function reads) and
 * the requester's stdin, stdout and stderr (/dev/null for a closed one, which
 * cannot be sent).  The server forks (lmp_proc_fork); the child takes those
 * stdio descriptors, drops everything of the server's, and calls the run
 * function on the payload.  The reply carries the status, the pid, the read
 * end of a pipe on which the server writes the exit code once it has
 * reaped the child, and a pidfd, so the requester adopts the child
 * (lmp_proc_adopt): join, exitcode, is_alive, terminate and kill work as for
 * its own children.  The server hears of ended children through a signalfd
 * for SIGCHLD (or looks every 50 ms without one).
 *
 * Lifetimes.  The server is a service child of the process that started it
 * (shutdown ends it after the children it forked were joined or
 * terminated); it dies with that process (PR_SET_PDEATHSIG, which survives
 * the exec) and exits when the socket closes.  Its children ask for SIGKILL
 * when the server dies, so nothing outlives the requester.  A process
 * forked from the requester does not share the server: its first request
 * starts its own.  A server found dead at a request is started again, once.
 * ^C at the terminal is for the program: the server ignores SIGINT, its
 * children take the default action back.
 */
#include "forkserver.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "internal.h"
#include "lmp/runtime.h"

#define FS_MAGIC 0x6c6d7066u /* "lmpf" */
#define FS_SCAN_MS 50        /* without a signalfd, look for ended children this often */

struct fs_req {
  uint32_t magic;
  uint32_t flags; /* LMP_PROC_DAEMON, LMP_PROC_NOINT */
};

struct fs_rep {
  int32_t status; /* 0 or -errno */
  int32_t pid;
};

/* === the requester === */

static struct {
  pid_t owner;      /* the process that started the server */
  int sock;         /* our end of the socketpair; -1 if none */
  lmp_proc_t *proc; /* the server */
} fs = {0, -1, NULL};

static void fs_forget(void)
{
  if (fs.sock >= 0)
    close(fs.sock);
  if (fs.proc && fs.owner == getpid()) {
    lmp_proc_signal(fs.proc, SIGKILL);
    lmp_proc_wait(fs.proc, LMP_FOREVER);
  }
  if (fs.proc)
    lmp_proc_free(fs.proc);
  fs.sock = -1;
  fs.proc = NULL;
  fs.owner = 0;
}

/* Start this process's server if it has none (a server inherited from the
 * parent is not ours to use).  0 or -errno. */
static int fs_ensure(lmp__fs_command_fn command, void *ctx)
{
  lmp__fs_cmd_t cmd = {NULL, NULL, 0};
  struct timeval tv = {LMP__FS_TIMEOUT_S, 0};
  char fdarg[16];
  int sv[2], rc;

  if (fs.owner == getpid() && fs.sock >= 0 && lmp_proc_alive(fs.proc) == 1)
    return 0;
  fs_forget();
  if ((rc = command(ctx, &cmd)) < 0)
    return rc;
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
    return -errno;
  snprintf(fdarg, sizeof fdarg, "%d", sv[1]);
  cmd.argv[cmd.fd_arg] = fdarg;
  rc = lmp_proc_spawn(cmd.path, cmd.argv, sv[1], LMP_PROC_SERVICE, &fs.proc);
  close(sv[1]);
  if (rc < 0) {
    close(sv[0]);
    return rc;
  }
  setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  fs.sock = sv[0];
  fs.owner = getpid();
  return 0;
}

/* Send one request: the payload and our stdio. */
static int fs_send(int payload, int flags)
{
  struct fs_req req = {FS_MAGIC, (uint32_t)(flags & (LMP_PROC_DAEMON | LMP_PROC_NOINT))};
  int fds[4] = {payload, 0, 1, 2};
  int null = -1, i;
  ssize_t n;

  /* A closed stdio descriptor cannot be sent: the child gets /dev/null. */
  for (i = 1; i < 4; i++) {
    if (fcntl(fds[i], F_GETFD) < 0) {
      if (null < 0)
        null = open("/dev/null", O_RDWR | O_CLOEXEC);
      fds[i] = null;
    }
  }
  n = lmp__send_fds(fs.sock, &req, sizeof req, fds, 4, 0);
  if (null >= 0)
    close(null);
  return n < 0 ? (int)n : 0;
}

/* Receive the reply and adopt the child it names. */
static int fs_adopt(int flags, lmp_proc_t **out)
{
  struct fs_rep rep;
  int got[2] = {-1, -1}; /* the status pipe, the pidfd */
  size_t ngot = 2, i;
  ssize_t n;

  n = lmp__recv_fds(fs.sock, &rep, sizeof rep, got, &ngot, 0);
  if (n == -EAGAIN)
    return -ETIMEDOUT;
  if (n < 0 && n != -EMSGSIZE)
    return (int)n;
  if (n == 0)
    return -EPIPE; /* the server is gone */
  if (n != (ssize_t)sizeof rep || rep.status < 0 || ngot == 0) {
    for (i = 0; i < ngot; i++)
      close(got[i]);
    return n == (ssize_t)sizeof rep && rep.status < 0 ? rep.status : -EPROTO;
  }
  return lmp_proc_adopt(rep.pid, got[1], got[0], flags, out);
}

static int fs_call(int payload, int flags, lmp_proc_t **out)
{
  int rc = fs_send(payload, flags);
  return rc < 0 ? rc : fs_adopt(flags, out);
}

int lmp__fs_request(lmp__fs_command_fn command, void *ctx, int payload, int flags, lmp_proc_t **out)
{
  int rc;

  *out = NULL;
  rc = fs_ensure(command, ctx);
  if (rc == 0)
    rc = fs_call(payload, flags, out);
  if (rc == -EPIPE || rc == -ECONNRESET) {
    /* The server died since its last use: one more, once. */
    fs_forget();
    rc = fs_ensure(command, ctx);
    if (rc == 0)
      rc = fs_call(payload, flags, out);
  }
  return rc;
}

/* === the server === */

typedef struct fs_child {
  lmp_proc_t *proc;
  int status_w;
} fs_child;

static fs_child *kids;
static size_t nkids, capkids;

static int grow_kids(void)
{
  size_t cap;
  fs_child *k;

  if (nkids < capkids)
    return 0;
  cap = capkids ? capkids * 2 : 16;
  k = realloc(kids, cap * sizeof *k);
  if (!k)
    return -ENOMEM;
  kids = k;
  capkids = cap;
  return 0;
}

/* Write the exit code of every child that has ended to its requester. */
static void fs_report(void)
{
  size_t i;
  int code;

  for (i = 0; i < nkids;) {
    if (lmp_proc_alive(kids[i].proc) == 0 && lmp_proc_exitcode(kids[i].proc, &code) == 0) {
      int32_t c = code;
      if (write(kids[i].status_w, &c, sizeof c) < 0) {
        /* the requester is gone; nobody to tell */
      }
      close(kids[i].status_w);
      lmp_proc_free(kids[i].proc);
      kids[i] = kids[--nkids];
    } else {
      i++;
    }
  }
}

static void fs_reply(int conn, int status, pid_t pid, int status_r, int pidfd)
{
  struct fs_rep rep = {status, (int32_t)pid};
  int fds[2] = {status_r, pidfd};
  size_t nfds = status_r < 0 ? 0 : pidfd < 0 ? 1 : 2;

  lmp__send_fds(conn, &rep, sizeof rep, fds, nfds, 0);
}

/* Receive one request: 1 and the four descriptors, 0 at end of file, -1
 * for a malformed message (its descriptors closed). */
static int fs_recv(int conn, struct fs_req *req, int fds[4])
{
  size_t nfds = 4, i;
  ssize_t n = lmp__recv_fds(conn, req, sizeof *req, fds, &nfds, 0);

  if (n == -EMSGSIZE)
    return -1;
  if (n <= 0)
    return 0;
  if (n != (ssize_t)sizeof *req || req->magic != FS_MAGIC || nfds != 4) {
    for (i = 0; i < nfds; i++)
      close(fds[i]);
    return -1;
  }
  return 1;
}

/* In the new child: nothing of the server's bookkeeping is ours. */
static void fs_child_setup(int conn, int sfd, const int st[2], const int stdio[3], uint32_t flags)
{
  sigset_t none;
  size_t i;

  for (i = 0; i < nkids; i++)
    close(kids[i].status_w);
  close(conn);
  close(sfd);
  close(st[0]);
  close(st[1]);
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  /* The server ignores SIGINT, and so does a NOINT child (a pool worker)
   * from its birth; any other child takes ^C as a program does. */
  if (!(flags & LMP_PROC_NOINT))
    signal(SIGINT, SIG_DFL);
  prctl(PR_SET_NAME, "lmp-process");
  for (i = 0; i < 3; i++)
    dup2(stdio[i], (int)i);
  for (i = 0; i < 3; i++)
    if (stdio[i] > 2)
      close(stdio[i]);
}

static void fs_serve_one(const lmp__fs_server_t *srv, int conn, int sfd)
{
  struct fs_req req;
  int fds[4], st[2] = {-1, -1}, rc, i;
  lmp_proc_t *proc = NULL;
  int r = fs_recv(conn, &req, fds);

  if (r == 0) {
    /* The requester closed its end (or died): our children die with us. */
    lmp_runtime_release_all();
    _exit(0);
  }
  if (r < 0)
    return;
  rc = pipe2(st, O_CLOEXEC) < 0 ? -errno : grow_kids();
  if (rc == 0)
    rc = lmp_proc_fork(0, &proc); /* 1 here, 0 in the child */
  if (rc == 0) {
    fs_child_setup(conn, sfd, st, fds + 1, req.flags);
    lmp_proc_exit(srv->run(srv->ctx, fds[0]));
  }
  if (rc > 0) {
    int pidfd = lmp_proc_fd(proc) >= 0 ? fcntl(lmp_proc_fd(proc), F_DUPFD_CLOEXEC, 3) : -1;
    fs_reply(conn, 0, lmp_proc_pid(proc), st[0], pidfd);
    if (pidfd >= 0)
      close(pidfd);
    close(st[0]);
    kids[nkids++] = (fs_child){proc, st[1]};
  } else {
    fs_reply(conn, rc, 0, -1, -1);
    for (i = 0; i < 2; i++)
      if (st[i] >= 0)
        close(st[i]);
  }
  for (i = 0; i < 4; i++)
    close(fds[i]);
}

void lmp__fs_serve(int conn, const lmp__fs_server_t *srv)
{
  sigset_t chld;
  int sfd;

  prctl(PR_SET_NAME, "lmp-forkserver");
  signal(SIGINT, SIG_IGN); /* a ^C at the terminal is for the program, not us */
  if (srv->init)
    srv->init(srv->ctx);
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
  fcntl(conn, F_SETFD, FD_CLOEXEC);
  for (;;) {
    struct pollfd p[2] = {{conn, POLLIN, 0}, {sfd, POLLIN, 0}};
    int n = poll(p, 2, sfd < 0 ? FS_SCAN_MS : -1);
    if (n < 0 && errno != EINTR)
      _exit(1);
    if (sfd >= 0 && (p[1].revents & POLLIN)) {
      struct signalfd_siginfo si;
      while (read(sfd, &si, sizeof si) > 0) {
      }
    }
    fs_report();
    if (p[0].revents & (POLLIN | POLLHUP | POLLERR))
      fs_serve_one(srv, conn, sfd);
  }
}

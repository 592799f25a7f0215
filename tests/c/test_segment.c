/*
 * test_segment.c -- segments, reference counts across processes, the root's
 * cleanup, the watchdog and the fd stash.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lmp/common.h"
#include "lmp/proc.h"
#include "lmp/runtime.h"
#include "lmp/segment.h"
#include "internal.h"
#include "runner.h"

/* === helpers === */

/* fork(2) the way lmp_proc_fork does it: the child owns its references. */
static pid_t fork_lmp(void)
{
  pid_t pid;

  lmp__runtime_prefork();
  pid = fork();
  if (pid == 0) {
    lmp__runtime_postfork_child();
    return 0;
  }
  lmp__runtime_postfork_parent(pid < 0);
  CHECK(pid > 0);
  return pid;
}

static void child_exit(int code)
{
  lmp_runtime_release_all();
  _exit(code);
}

static void write_all(int fd, const void *p, size_t n)
{
  CHECK_EQ(write(fd, p, n), (ssize_t)n);
}

static void read_all(int fd, void *p, size_t n)
{
  size_t got = 0;
  ssize_t r;

  while (got < n) {
    r = read(fd, (char *)p + got, n - got);
    CHECK(r > 0);
    got += (size_t)r;
  }
}

static int shm_exists(const char *name)
{
  char path[128];
  snprintf(path, sizeof path, "/dev/shm%s", name);
  return access(path, F_OK) == 0;
}

/* The watchdog names itself once it has detached from the root. */
static void wait_watchdog_ready(pid_t wd)
{
  char path[64], comm[32];
  int i, fd;
  ssize_t n;

  snprintf(path, sizeof path, "/proc/%ld/comm", (long)wd);
  for (i = 0; i < 2000; i++) {
    fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    n = read(fd, comm, sizeof comm - 1);
    close(fd);
    if (n > 0 && strncmp(comm, "lmp-watchdog", 12) == 0)
      return;
    lmp_test_sleep_ms(1);
  }
  CHECK(!"the watchdog never got ready");
}

/* === the runtime === */

TEST(runtime_init_makes_root)
{
  char expect[32];
  pid_t wd;

  CHECK_STREQ(lmp_runtime_prefix(), "");
  CHECK_EQ(lmp_runtime_is_root(), 0);
  CHECK_EQ(lmp__watchdog_pid(), 0);
  CHECK_EQ(lmp_runtime_init(), 0);
  CHECK_EQ(lmp_runtime_init(), 0); /* idempotent */
  CHECK(lmp_runtime_is_root());
  CHECK_EQ(lmp_runtime_root_pid(), getpid());
  snprintf(expect, sizeof expect, "/lmp.%ld.", (long)getpid());
  CHECK_EQ(strncmp(lmp_runtime_prefix(), expect, strlen(expect)), 0);
  CHECK_EQ(strlen(lmp_runtime_prefix()), strlen(expect) + 8);
  wd = lmp__watchdog_pid();
  CHECK(wd > 0);
  CHECK(lmp_test_alive(wd));
  wait_watchdog_ready(wd);
  /* Its own session: ^C at the terminal never reaches it. */
  CHECK_EQ(getsid(wd), wd);
}

/* lmp_proc_fork calls prefork: a child forked before any segment existed
 * must still join its parent's family rather than found its own. */
TEST(prefork_starts_the_runtime)
{
  char prefix[32] = ""; /* all of it is sent, not only the string */
  int ch[2];
  pid_t pid;

  CHECK_EQ(pipe(ch), 0);
  pid = fork_lmp();
  if (pid == 0) {
    CHECK_EQ(lmp_runtime_is_root(), 0);
    CHECK_EQ(lmp_runtime_init(), 0);
    CHECK_EQ(lmp_runtime_is_root(), 0);
    snprintf(prefix, sizeof prefix, "%s", lmp_runtime_prefix());
    write_all(ch[1], prefix, sizeof prefix);
    child_exit(0);
  }
  read_all(ch[0], prefix, sizeof prefix);
  CHECK_EQ(lmp_test_wait(pid, 5000), 0);
  CHECK(lmp_runtime_is_root());
  CHECK_STREQ(prefix, lmp_runtime_prefix());
}

TEST(runtime_setenv_for_exec)
{
  char pid[24];

  CHECK_EQ(lmp_runtime_setenv(), -EINVAL);
  CHECK_EQ(lmp_runtime_init(), 0);
  CHECK_EQ(lmp_runtime_setenv(), 0);
  CHECK_STREQ(getenv("LMP_PREFIX"), lmp_runtime_prefix());
  snprintf(pid, sizeof pid, "%ld", (long)getpid());
  CHECK_STREQ(getenv("LMP_ROOT_PID"), pid);
}

/* A process started with LMP_PREFIX (as an exec'd worker is) joins the
 * family: not a root, same prefix, and the root's watchdog serves it. */
TEST(adopt_prefix_from_env)
{
  char prefix[64] = {0}, name[LMP_SEG_NAME_MAX] = {0}, buf[24];
  int down[2], up[2], rd, fds[2];
  uint64_t token;
  lmp_seg_t *s;
  pid_t pid;

  CHECK_EQ(pipe(down), 0);
  CHECK_EQ(pipe(up), 0);
  pid = fork(); /* before init: the child starts with no runtime at all */
  CHECK(pid >= 0);
  if (pid == 0) {
    read_all(down[0], prefix, sizeof prefix);
    setenv("LMP_PREFIX", "/lmp.1.nothex!!", 1);
    CHECK_EQ(lmp_runtime_init(), -EINVAL);
    setenv("LMP_PREFIX", prefix, 1);
    setenv("LMP_ROOT_PID", "1", 1);
    CHECK_EQ(lmp_runtime_init(), -EINVAL); /* pid disagrees with the prefix */
    snprintf(buf, sizeof buf, "%ld", (long)getppid());
    setenv("LMP_ROOT_PID", buf, 1);
    CHECK_EQ(lmp_runtime_init(), 0);
    CHECK_STREQ(lmp_runtime_prefix(), prefix);
    CHECK_EQ(lmp_runtime_is_root(), 0);
    CHECK_EQ(lmp_runtime_root_pid(), getppid());
    CHECK_EQ(lmp__watchdog_pid(), 0);
    CHECK_EQ(lmp_seg_create(100, &s), 0);
    CHECK_EQ(strncmp(lmp_seg_name(s), prefix, strlen(prefix)), 0);
    memcpy(lmp_seg_data(s), "joined", 7);
    lmp_seg_pin(s); /* as if the name went out in a message */
    CHECK_EQ(pipe(fds), 0);
    write_all(fds[1], "via-wd", 7);
    CHECK_EQ(lmp_fd_stash(fds[0], &token), 0);
    write_all(up[1], lmp_seg_name(s), LMP_SEG_NAME_MAX);
    write_all(up[1], &token, sizeof token);
    lmp_seg_release(s);
    _exit(0);
  }
  CHECK_EQ(lmp_runtime_init(), 0);
  snprintf(prefix, sizeof prefix, "%s", lmp_runtime_prefix());
  write_all(down[1], prefix, sizeof prefix);
  read_all(up[0], name, sizeof name);
  read_all(up[0], &token, sizeof token);
  CHECK_EQ(lmp_test_wait(pid, 5000), 0);
  CHECK_EQ(lmp_seg_attach(name, 1, &s), 0);
  CHECK_STREQ(lmp_seg_data(s), "joined");
  CHECK_EQ(lmp__seg_refs(s), 1);
  lmp_seg_release(s);
  CHECK(!shm_exists(name));
  CHECK_EQ(lmp_fd_fetch(token, &rd), 0);
  read_all(rd, buf, 7);
  CHECK_STREQ(buf, "via-wd");
  close(rd);
}

/* === segments === */

TEST(seg_create_basics)
{
  lmp_seg_t *s;
  unsigned char *p;
  size_t i;

  CHECK_EQ(lmp_seg_create(1000, &s), 0);
  CHECK(lmp_runtime_is_root()); /* the first segment started the runtime */
  CHECK(lmp_seg_size(s) >= 1000);
  p = lmp_seg_data(s);
  CHECK_EQ((uintptr_t)p % 64, 0);
  for (i = 0; i < lmp_seg_size(s); i++)
    CHECK_EQ(p[i], 0);
  memset(p, 0xab, lmp_seg_size(s)); /* every usable byte is writable */
  CHECK_EQ(strncmp(lmp_seg_name(s), lmp_runtime_prefix(), strlen(lmp_runtime_prefix())), 0);
  CHECK(strlen(lmp_seg_name(s)) < LMP_SEG_NAME_MAX);
  CHECK(shm_exists(lmp_seg_name(s)));
  CHECK_EQ(lmp__seg_refs(s), 1);
  CHECK_EQ(lmp_test_shm_count(lmp_runtime_prefix()), 1);
  lmp_seg_release(s);
  CHECK_EQ(lmp_test_shm_count(lmp_runtime_prefix()), 0);
}

TEST(seg_sizes)
{
  lmp_seg_t *a, *b;

  CHECK_EQ(lmp_seg_create(0, &a), 0);
  CHECK(lmp_seg_size(a) > 0);
  CHECK_EQ(lmp_seg_create(64u << 20, &b), 0);
  CHECK(lmp_seg_size(b) >= (64u << 20));
  ((char *)lmp_seg_data(b))[(64u << 20) - 1] = 1;
  CHECK(strcmp(lmp_seg_name(a), lmp_seg_name(b)) != 0);
  lmp_seg_release(a);
  lmp_seg_release(b);
  CHECK_EQ(lmp_seg_create(SIZE_MAX - 10, &a), -ENOMEM);
  CHECK(a == NULL);
}

TEST(seg_attach_same_descriptor)
{
  lmp_seg_t *s, *t, *u;
  char name[LMP_SEG_NAME_MAX];

  CHECK_EQ(lmp_seg_create(100, &s), 0);
  snprintf(name, sizeof name, "%s", lmp_seg_name(s));
  CHECK_EQ(lmp_seg_attach(name, 0, &t), 0);
  CHECK(t == s);
  CHECK_EQ(lmp__seg_refs(s), 1); /* one process, one reference */
  lmp_seg_retain(s);
  CHECK_EQ(lmp_seg_attach(name, 0, &u), 0);
  CHECK(u == s);
  lmp_seg_release(s);
  lmp_seg_release(t);
  lmp_seg_release(u);
  CHECK(shm_exists(name)); /* one local reference left */
  lmp_seg_release(s);
  CHECK(!shm_exists(name));
  CHECK_EQ(lmp_seg_attach(name, 0, &s), -ENOENT);
  CHECK(s == NULL);
}

TEST(seg_attach_rejects)
{
  lmp_seg_t *s;
  char bogus[80];
  int fd;

  CHECK_EQ(lmp_seg_attach("", 0, &s), -EINVAL);
  CHECK_EQ(lmp_seg_attach("no-slash", 0, &s), -EINVAL);
  CHECK_EQ(lmp_seg_attach("/a/b", 0, &s), -EINVAL);
  memset(bogus, 'x', sizeof bogus - 1);
  bogus[0] = '/';
  bogus[sizeof bogus - 1] = '\0';
  CHECK_EQ(lmp_seg_attach(bogus, 0, &s), -EINVAL);
  CHECK_EQ(lmp_seg_attach("/lmp.0.00000000.1.1", 0, &s), -ENOENT);
  /* Something in /dev/shm that is not an lmp segment is refused. */
  CHECK_EQ(lmp_runtime_init(), 0);
  snprintf(bogus, sizeof bogus, "%s.foreign", lmp_runtime_prefix());
  fd = shm_open(bogus, O_CREAT | O_RDWR, 0600);
  CHECK(fd >= 0);
  CHECK_EQ(ftruncate(fd, 8192), 0);
  close(fd);
  CHECK_EQ(lmp_seg_attach(bogus, 0, &s), -EINVAL);
  CHECK(s == NULL);
  shm_unlink(bogus);
}

TEST(seg_shared_between_processes)
{
  int go[2], done[2];
  char name[LMP_SEG_NAME_MAX] = {0}, c;
  lmp_seg_t *s, *t;
  pid_t pid;

  CHECK_EQ(lmp_runtime_init(), 0);
  CHECK_EQ(pipe(go), 0);
  CHECK_EQ(pipe(done), 0);
  pid = fork_lmp(); /* forked before the segment exists: attaches by name */
  if (pid == 0) {
    read_all(go[0], name, sizeof name);
    CHECK_EQ(lmp_seg_attach(name, 0, &t), 0);
    CHECK_EQ(lmp__seg_refs(t), 2);
    CHECK_STREQ(lmp_seg_data(t), "from parent");
    strcpy(lmp_seg_data(t), "from child");
    write_all(done[1], "x", 1);
    lmp_seg_release(t);
    child_exit(0);
  }
  CHECK_EQ(lmp_seg_create(4096, &s), 0);
  strcpy(lmp_seg_data(s), "from parent");
  snprintf(name, sizeof name, "%s", lmp_seg_name(s));
  write_all(go[1], name, sizeof name);
  read_all(done[0], &c, 1);
  CHECK_EQ(lmp_test_wait(pid, 5000), 0);
  CHECK_STREQ(lmp_seg_data(s), "from child");
  CHECK_EQ(lmp__seg_refs(s), 1); /* the child's reference went with it */
  lmp_seg_release(s);
  CHECK(!shm_exists(name));
}

/* The creator lets go first; the segment lives on in the other holder and
 * goes when that one lets go. */
TEST(seg_unlinked_by_last_holder)
{
  char name[LMP_SEG_NAME_MAX];
  int go[2], ready[2];
  lmp_seg_t *s, *t;
  pid_t pid;
  char c;

  CHECK_EQ(lmp_runtime_init(), 0);
  CHECK_EQ(pipe(go), 0);
  CHECK_EQ(pipe(ready), 0);
  CHECK_EQ(lmp_seg_create(100, &s), 0);
  snprintf(name, sizeof name, "%s", lmp_seg_name(s));
  pid = fork_lmp();
  if (pid == 0) {
    CHECK_EQ(lmp_seg_attach(name, 0, &t), 0);
    CHECK(t == s); /* inherited: the same descriptor */
    lmp_seg_release(s);
    write_all(ready[1], "r", 1);
    read_all(go[0], &c, 1); /* the parent has released */
    CHECK_EQ(lmp__seg_refs(t), 1);
    CHECK(shm_exists(name));
    lmp_seg_release(t);
    CHECK(!shm_exists(name));
    _exit(0);
  }
  read_all(ready[0], &c, 1);
  CHECK_EQ(lmp__seg_refs(s), 2);
  lmp_seg_release(s);
  CHECK(shm_exists(name));
  write_all(go[1], "g", 1);
  CHECK_EQ(lmp_test_wait(pid, 5000), 0);
  CHECK(!shm_exists(name));
}

/* A name sent in a message: the sender pins it and may be gone before the
 * receiver adopts the pin. */
TEST(pin_adopted_by_receiver)
{
  char name[LMP_SEG_NAME_MAX];
  int ch[2];
  lmp_seg_t *s;
  pid_t pid;

  CHECK_EQ(lmp_runtime_init(), 0);
  CHECK_EQ(pipe(ch), 0);
  pid = fork_lmp();
  if (pid == 0) {
    CHECK_EQ(lmp_seg_create(100, &s), 0);
    strcpy(lmp_seg_data(s), "pinned");
    lmp_seg_pin(s);
    CHECK_EQ(lmp__seg_refs(s), 2);
    write_all(ch[1], lmp_seg_name(s), LMP_SEG_NAME_MAX);
    child_exit(0); /* the sender dies with the message in flight */
  }
  read_all(ch[0], name, sizeof name);
  CHECK_EQ(lmp_test_wait(pid, 5000), 0);
  CHECK(shm_exists(name)); /* the pin kept it */
  CHECK_EQ(lmp_seg_attach(name, 1, &s), 0);
  CHECK_STREQ(lmp_seg_data(s), "pinned");
  CHECK_EQ(lmp__seg_refs(s), 1); /* the pin became our reference */
  lmp_seg_release(s);
  CHECK(!shm_exists(name));
}

TEST(pin_dropped_when_already_mapped)
{
  char name[LMP_SEG_NAME_MAX];
  lmp_seg_t *s, *t;

  CHECK_EQ(lmp_seg_create(100, &s), 0);
  snprintf(name, sizeof name, "%s", lmp_seg_name(s));
  lmp_seg_pin(s);
  lmp_seg_pin(s);
  CHECK_EQ(lmp__seg_refs(s), 3);
  CHECK_EQ(lmp_seg_attach(name, 1, &t), 0);
  CHECK(t == s);
  CHECK_EQ(lmp__seg_refs(s), 2); /* one pin gone; we hold our own */
  lmp_seg_release(t);
  CHECK_EQ(lmp_seg_attach(name, 1, &t), 0);
  CHECK_EQ(lmp__seg_refs(s), 1);
  /* No pin left: adopting falls back to an ordinary reference. */
  lmp_seg_release(t);
  lmp_seg_release(s);
  CHECK(!shm_exists(name));
}

TEST(adopt_without_pin_takes_a_reference)
{
  char name[LMP_SEG_NAME_MAX];
  int ch[2], done[2];
  lmp_seg_t *s, *t;
  pid_t pid;
  char c;

  CHECK_EQ(lmp_runtime_init(), 0);
  CHECK_EQ(pipe(ch), 0);
  CHECK_EQ(pipe(done), 0);
  pid = fork_lmp();
  if (pid == 0) {
    read_all(ch[0], name, sizeof name);
    CHECK_EQ(lmp_seg_attach(name, 1, &t), 0);
    CHECK_EQ(lmp__seg_refs(t), 2);
    lmp_seg_release(t);
    write_all(done[1], "d", 1);
    child_exit(0);
  }
  CHECK_EQ(lmp_seg_create(100, &s), 0);
  write_all(ch[1], lmp_seg_name(s), LMP_SEG_NAME_MAX);
  read_all(done[0], &c, 1);
  CHECK_EQ(lmp_test_wait(pid, 5000), 0);
  CHECK_EQ(lmp__seg_refs(s), 1);
  lmp_seg_release(s);
}

TEST(fork_gives_child_references)
{
  lmp_seg_t *a, *b;
  pid_t pid;

  CHECK_EQ(lmp_seg_create(100, &a), 0);
  CHECK_EQ(lmp_seg_create(100, &b), 0);
  lmp_seg_retain(b); /* several local references are still one process */
  pid = fork_lmp();
  if (pid == 0) {
    CHECK_EQ(lmp__seg_refs(a), 2);
    CHECK_EQ(lmp__seg_refs(b), 2);
    CHECK_EQ(lmp_runtime_is_root(), 0);
    lmp_runtime_cleanup(); /* a no-op outside the root */
    CHECK(shm_exists(lmp_seg_name(a)));
    child_exit(0);
  }
  CHECK_EQ(lmp_test_wait(pid, 5000), 0);
  CHECK_EQ(lmp__seg_refs(a), 1);
  CHECK_EQ(lmp__seg_refs(b), 1);
  /* A failed fork gives the child's references back. */
  lmp__runtime_prefork();
  CHECK_EQ(lmp__seg_refs(a), 2);
  lmp__runtime_postfork_parent(1);
  CHECK_EQ(lmp__seg_refs(a), 1);
  lmp_seg_release(a);
  lmp_seg_release(b);
  CHECK_EQ(lmp__seg_refs(b), 1);
  lmp_seg_release(b);
  CHECK_EQ(lmp_test_shm_count(lmp_runtime_prefix()), 0);
}

/* A child killed while it holds segments (one inherited, one it made)
 * gives them back when it is reaped. */
TEST(killed_child_gives_back_when_reaped)
{
  lmp_seg_t *s, *t;
  lmp_proc_t *p;
  int ready[2], rc;
  char name[LMP_SEG_NAME_MAX];

  CHECK_EQ(pipe(ready), 0);
  CHECK_EQ(lmp_seg_create(100, &s), 0);
  rc = lmp_proc_fork(0, &p);
  CHECK(rc >= 0);
  if (rc == 0) {
    if (lmp_seg_create(100, &t) == 0) /* held only by this process */
      (void)!write(ready[1], lmp_seg_name(t), LMP_SEG_NAME_MAX);
    for (;;)
      pause();
  }
  CHECK_EQ(read(ready[0], name, sizeof name), (ssize_t)sizeof name);
  lmp_seg_release(s); /* the child's inherited reference keeps it */
  CHECK_EQ(lmp_test_shm_count(lmp_runtime_prefix()), 2);
  CHECK_EQ(lmp_proc_signal(p, SIGKILL), 0);
  CHECK_EQ(lmp_proc_wait(p, LMP_FOREVER), 0);
  CHECK_EQ(lmp_test_shm_count(lmp_runtime_prefix()), 0);
  lmp_proc_free(p);
  close(ready[0]);
  close(ready[1]);
}

TEST(release_all_drops_everything)
{
  lmp_seg_t *s[5];
  int i;

  for (i = 0; i < 5; i++) {
    CHECK_EQ(lmp_seg_create(100, &s[i]), 0);
    lmp_seg_retain(s[i]);
  }
  CHECK_EQ(lmp_test_shm_count(lmp_runtime_prefix()), 5);
  lmp_runtime_release_all();
  CHECK_EQ(lmp_test_shm_count(lmp_runtime_prefix()), 0);
  /* The registry is empty, and the runtime still works. */
  CHECK_EQ(lmp_seg_create(100, &s[0]), 0);
  lmp_seg_release(s[0]);
}

TEST(many_segments_leak_nothing)
{
  lmp_seg_t *s[300], *t;
  int fds, i;

  CHECK_EQ(lmp_runtime_init(), 0);
  fds = lmp_test_fd_count();
  for (i = 0; i < 300; i++) {
    CHECK_EQ(lmp_seg_create((size_t)i * 100, &s[i]), 0);
    CHECK_EQ(lmp_seg_attach(lmp_seg_name(s[i]), 0, &t), 0);
    CHECK(t == s[i]);
  }
  CHECK_EQ(lmp_test_fd_count(), fds); /* a mapping holds no descriptor */
  CHECK_EQ(lmp_test_shm_count(lmp_runtime_prefix()), 300);
  for (i = 0; i < 300; i++) {
    lmp_seg_release(s[i]);
    lmp_seg_release(s[i]);
  }
  CHECK_EQ(lmp_test_shm_count(lmp_runtime_prefix()), 0);
  CHECK_EQ(lmp_test_fd_count(), fds);
}

static void *attach_loop(void *arg)
{
  lmp_seg_t *t;
  int i;

  for (i = 0; i < 20000; i++) {
    if (lmp_seg_attach(arg, i & 1, &t) != 0)
      return (void *)1;
    lmp_seg_release(t);
  }
  return NULL;
}

TEST(threads_share_the_registry)
{
  pthread_t th[4];
  lmp_seg_t *s;
  void *ret;
  int i;

  CHECK_EQ(lmp_seg_create(100, &s), 0);
  for (i = 0; i < 4; i++)
    CHECK_EQ(pthread_create(&th[i], NULL, attach_loop, (void *)lmp_seg_name(s)), 0);
  for (i = 0; i < 4; i++) {
    CHECK_EQ(pthread_join(th[i], &ret), 0);
    CHECK(ret == NULL);
  }
  CHECK_EQ(lmp__seg_refs(s), 1);
  lmp_seg_release(s);
  CHECK_EQ(lmp_test_shm_count(lmp_runtime_prefix()), 0);
}

/* === cleanup by the root and by the watchdog === */

TEST(root_cleanup_at_exit)
{
  char prefix[32] = {0};
  int ch[2];
  lmp_seg_t *s;
  pid_t pid, wd;
  int i;

  CHECK_EQ(pipe(ch), 0);
  pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    CHECK_EQ(lmp_runtime_init(), 0);
    for (i = 0; i < 3; i++)
      CHECK_EQ(lmp_seg_create(100, &s), 0); /* never released */
    lmp_seg_pin(s);
    /* Take the watchdog out, so only the atexit handler can clean up. */
    wd = lmp__watchdog_pid();
    CHECK_EQ(kill(wd, SIGKILL), 0);
    CHECK(lmp_test_gone(wd, 5000)); /* not our child: it was forked twice */
    write_all(ch[1], lmp_runtime_prefix(), sizeof prefix);
    CHECK_EQ(lmp_test_shm_count(lmp_runtime_prefix()), 3);
    exit(0);
  }
  read_all(ch[0], prefix, sizeof prefix);
  CHECK_EQ(lmp_test_wait(pid, 5000), 0);
  CHECK_EQ(lmp_test_shm_count(prefix), 0);
}

static int fd_is_devnull(pid_t pid, int fd)
{
  char path[64], target[64];
  ssize_t n;

  snprintf(path, sizeof path, "/proc/%ld/fd/%d", (long)pid, fd);
  n = readlink(path, target, sizeof target - 1);
  if (n < 0)
    return 0;
  target[n] = '\0';
  return strcmp(target, "/dev/null") == 0;
}

/* Does any descriptor of pid refer to the same object as our fd? */
static int holds_same(pid_t pid, int fd)
{
  char path[300], mine[64], theirs[64];
  struct dirent *d;
  ssize_t n;
  DIR *dir;
  int found = 0;

  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  n = readlink(path, mine, sizeof mine - 1);
  CHECK(n > 0);
  mine[n] = '\0';
  snprintf(path, sizeof path, "/proc/%ld/fd", (long)pid);
  dir = opendir(path);
  CHECK(dir != NULL);
  while ((d = readdir(dir)) != NULL) {
    snprintf(path, sizeof path, "/proc/%ld/fd/%s", (long)pid, d->d_name);
    n = readlink(path, theirs, sizeof theirs - 1);
    if (n > 0) {
      theirs[n] = '\0';
      found |= strcmp(mine, theirs) == 0;
    }
  }
  closedir(dir);
  return found;
}

/* The root is SIGKILLed with segments alive: its watchdog unlinks them all
 * and exits, and holds none of the root's descriptors meanwhile. */
TEST(watchdog_cleans_up_after_sigkill)
{
  struct {
    char prefix[32];
    pid_t wd;
  } msg;
  int ch[2], i;
  lmp_seg_t *s;
  pid_t root;
  char c;
  long long t0;

  /* Orphans come to us, so the watchdog can be reaped and seen gone. */
  CHECK_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  CHECK_EQ(pipe(ch), 0);
  root = fork();
  CHECK(root >= 0);
  if (root == 0) {
    close(ch[0]);
    CHECK_EQ(lmp_runtime_init(), 0);
    for (i = 0; i < 5; i++)
      CHECK_EQ(lmp_seg_create(4096, &s), 0);
    memset(&msg, 0, sizeof msg);
    snprintf(msg.prefix, sizeof msg.prefix, "%s", lmp_runtime_prefix());
    msg.wd = lmp__watchdog_pid();
    write_all(ch[1], &msg, sizeof msg);
    for (;;)
      pause();
  }
  close(ch[1]);
  read_all(ch[0], &msg, sizeof msg);
  CHECK_EQ(lmp_test_shm_count(msg.prefix), 5);
  CHECK(lmp_test_alive(msg.wd));
  wait_watchdog_ready(msg.wd);
  /* 0-2 on /dev/null, and none of the root's descriptors: the root had our
   * pipe's write end when it forked the watchdog. */
  CHECK(!holds_same(msg.wd, ch[0]));
  CHECK(fd_is_devnull(msg.wd, 0) && fd_is_devnull(msg.wd, 1) && fd_is_devnull(msg.wd, 2));
  /* The polite signals do not stop it. */
  CHECK_EQ(kill(msg.wd, SIGTERM), 0);
  CHECK_EQ(kill(msg.wd, SIGINT), 0);
  CHECK_EQ(kill(msg.wd, SIGHUP), 0);
  lmp_test_sleep_ms(50);
  CHECK(lmp_test_alive(msg.wd));

  t0 = (long long)lmp_now_ns();
  CHECK_EQ(kill(root, SIGKILL), 0);
  CHECK_EQ(lmp_test_wait(root, 2000), -SIGKILL);
  /* End of file right away: the watchdog holds no end of our pipe. */
  CHECK_EQ(read(ch[0], &c, 1), 0);
  CHECK_EQ(lmp_test_wait(msg.wd, 2000), 0);
  CHECK_EQ(lmp_test_shm_count(msg.prefix), 0);
  CHECK((long long)lmp_now_ns() - t0 < 2000000000LL);
}

TEST(watchdog_exits_with_clean_root)
{
  pid_t root, wd;
  int ch[2];

  CHECK_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  CHECK_EQ(pipe(ch), 0);
  root = fork();
  CHECK(root >= 0);
  if (root == 0) {
    CHECK_EQ(lmp_runtime_init(), 0);
    wd = lmp__watchdog_pid();
    write_all(ch[1], &wd, sizeof wd);
    exit(0);
  }
  read_all(ch[0], &wd, sizeof wd);
  CHECK_EQ(lmp_test_wait(root, 2000), 0);
  CHECK_EQ(lmp_test_wait(wd, 2000), 0);
}

/* === the fd stash === */

TEST(fd_stash_fetch_in_another_process)
{
  int p[2], fd, fds, flags;
  uint64_t token;
  char buf[8] = {0};
  pid_t pid;

  CHECK_EQ(lmp_runtime_init(), 0);
  fds = lmp_test_fd_count();
  CHECK_EQ(pipe(p), 0);
  write_all(p[1], "hello", 6);
  CHECK_EQ(lmp_fd_stash(p[0], &token), 0);
  CHECK(fcntl(p[0], F_GETFD) >= 0); /* ours stays open */
  close(p[0]);
  pid = fork_lmp();
  if (pid == 0) {
    CHECK_EQ(lmp_fd_fetch(token, &fd), 0);
    CHECK(fd >= 0);
    flags = fcntl(fd, F_GETFD);
    CHECK(flags >= 0 && (flags & FD_CLOEXEC));
    read_all(fd, buf, 6);
    CHECK_STREQ(buf, "hello");
    close(fd);
    child_exit(0);
  }
  CHECK_EQ(lmp_test_wait(pid, 5000), 0);
  CHECK_EQ(lmp_fd_fetch(token, &fd), -ENOENT); /* exactly once */
  CHECK_EQ(fd, -1);
  CHECK_EQ(lmp_fd_fetch(token ^ 0x5555, &fd), -ENOENT);
  CHECK_EQ(lmp_fd_fetch(0, &fd), -ENOENT);
  CHECK_EQ(lmp_fd_stash(-1, &token), -EBADF);
  close(p[1]);
  CHECK_EQ(lmp_test_fd_count(), fds);
}

TEST(fd_stash_outlives_the_sender)
{
  uint64_t tokens[2];
  int ch[2], fd, p[2];
  char buf[4] = {0};
  pid_t pid;

  CHECK_EQ(lmp_runtime_init(), 0);
  CHECK_EQ(pipe(ch), 0);
  pid = fork_lmp();
  if (pid == 0) {
    CHECK_EQ(pipe(p), 0);
    write_all(p[1], "abc", 3);
    close(p[1]);
    CHECK_EQ(lmp_fd_stash(p[0], &tokens[0]), 0);
    CHECK_EQ(lmp_fd_stash(p[0], &tokens[1]), 0);
    CHECK(tokens[0] != tokens[1]);
    write_all(ch[1], tokens, sizeof tokens);
    child_exit(0);
  }
  read_all(ch[0], tokens, sizeof tokens);
  CHECK_EQ(lmp_test_wait(pid, 5000), 0);
  CHECK_EQ(lmp_fd_fetch(tokens[1], &fd), 0);
  read_all(fd, buf, 3);
  CHECK_STREQ(buf, "abc");
  close(fd);
  CHECK_EQ(lmp_fd_fetch(tokens[0], &fd), 0); /* a second duplicate of the same end */
  close(fd);
}

TEST(fd_stash_refuses_past_cap)
{
  uint64_t first, token = 0;
  int p[2], fd, rc, n = 1;

  CHECK_EQ(pipe(p), 0);
  CHECK_EQ(lmp_fd_stash(p[0], &first), 0);
  while ((rc = lmp_fd_stash(p[0], &token)) == 0 && n <= LMP_FD_STASH_MAX)
    n++;
  CHECK_EQ(rc, -ENOSPC); /* refused, not evicted: nothing in transit is lost */
  CHECK(n > 1 && n <= LMP_FD_STASH_MAX);
  CHECK_EQ(lmp_fd_fetch(first, &fd), 0);
  close(fd);
  CHECK_EQ(lmp_fd_stash(p[0], &first), 0); /* room again */
  CHECK_EQ(lmp_fd_stash(p[0], &token), -ENOSPC);
}

/* === a small /dev/shm === */

/* Give this test process a private /dev/shm of `kib` KiB, before the
 * runtime starts.  0, or -1 (with the reason on stderr) where a mount
 * namespace cannot be made: not root, or no CLONE_NEWNS. */
static int small_shm(int kib)
{
  char opt[32];

  snprintf(opt, sizeof opt, "size=%dk", kib);
  if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
      mount("tmpfs", "/dev/shm", "tmpfs", 0, opt) < 0) {
    fprintf(stderr, "# no private /dev/shm here (%s): test not run\n", strerror(errno));
    return -1;
  }
  return 0;
}

/* Without the memfd fallback, what /dev/shm cannot hold is -ENOSPC at
 * creation, with a reason, and what it accepted can be written whole: a
 * segment sized by ftruncate alone would SIGBUS when touched. */
TEST(seg_store_is_reserved_at_creation)
{
  lmp_seg_t *s[64], *big;
  int n = 0;

  if (small_shm(1024) < 0)
    return;
  setenv("LMP_TEST_NO_MEMFD", "1", 1);
  CHECK_EQ(lmp_seg_create(4 << 20, &big), -ENOSPC);
  CHECK(big == NULL);
  CHECK(strstr(lmp_seg_space_error(), "cannot reserve 4.0 MiB of shared memory in /dev/shm") != NULL);
  CHECK(strstr(lmp_seg_space_error(), "1.0 MiB filesystem") != NULL);
  while (n < 64 && lmp_seg_create(60 << 10, &s[n]) == 0)
    n++;
  CHECK(n > 0 && n < 64);
  for (int i = 0; i < n; i++)
    memset(lmp_seg_data(s[i]), 0xab, lmp_seg_size(s[i]));
  for (int i = 0; i < n; i++)
    lmp_seg_release(s[i]);
  CHECK_EQ(lmp_test_shm_count(lmp_runtime_prefix()), 0);
}

/* A segment /dev/shm cannot hold is a memfd the watchdog keeps: its name
 * still resolves in a process that never mapped it, and it goes when its
 * last reference does. */
TEST(seg_falls_back_to_memfd)
{
  char name[LMP_SEG_NAME_MAX] = {0};
  lmp_seg_t *s;
  int p[2];
  pid_t pid;

  if (small_shm(256) < 0)
    return;
  CHECK_EQ(lmp_runtime_init(), 0);
  CHECK_EQ(pipe(p), 0);
  pid = fork_lmp();
  if (pid == 0) {
    lmp_seg_t *c;
    CHECK_EQ(lmp_seg_create(8 << 20, &c), 0);
    memset(lmp_seg_data(c), 0x5a, lmp_seg_size(c));
    lmp_seg_pin(c); /* the name travels */
    write_all(p[1], lmp_seg_name(c), LMP_SEG_NAME_MAX);
    child_exit(0);
  }
  read_all(p[0], name, LMP_SEG_NAME_MAX);
  CHECK_EQ(lmp_test_wait(pid, 10000), 0);
  CHECK(strncmp(name, lmp_runtime_prefix(), strlen(lmp_runtime_prefix())) == 0);
  CHECK(name[strlen(lmp_runtime_prefix()) + 1] == 'm');
  CHECK_EQ(lmp_test_shm_count(lmp_runtime_prefix()), 0); /* not in /dev/shm */
  CHECK_EQ(lmp_seg_attach(name, 1, &s), 0);
  CHECK(lmp_seg_size(s) >= (8 << 20));
  CHECK_EQ(((unsigned char *)lmp_seg_data(s))[(8 << 20) - 1], 0x5a);
  lmp_seg_release(s); /* the last reference: the watchdog lets it go */
  CHECK_EQ(lmp_seg_attach(name, 0, &s), -ENOENT);
}

/* The watchdog keeps one descriptor per memfd segment, within a budget
 * taken from RLIMIT_NOFILE; past it creation fails and says why, and
 * nothing kept before is dropped. */
TEST(memfd_budget_refuses_cleanly)
{
  struct rlimit rl = {128, 128}; /* room for a few dozen segments at the watchdog */
  lmp_seg_t *s[64], *x;
  int n = 0;

  if (small_shm(64) < 0)
    return;
  CHECK_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
  CHECK_EQ(lmp_runtime_init(), 0);
  while (n < 64 && lmp_seg_create(128 << 10, &s[n]) == 0)
    n++;
  CHECK(n > 0 && n < 64); /* the watchdog's share of 128 descriptors */
  CHECK_EQ(lmp_seg_create(128 << 10, &x), -ENOSPC);
  CHECK(strstr(lmp_seg_space_error(), "watchdog") != NULL);
  for (int i = 0; i < n; i++) {
    CHECK_EQ(lmp_seg_attach(lmp_seg_name(s[i]), 0, &x), 0);
    lmp_seg_release(x);
  }
  lmp_seg_release(s[0]);
  CHECK_EQ(lmp_seg_create(128 << 10, &x), 0); /* its slot is free again */
  lmp_seg_release(x);
  for (int i = 1; i < n; i++)
    lmp_seg_release(s[i]);
}

/* Names are "<prefix>.<16 hex>": 64 random bits each, nothing another user
 * could count on (no pid, no counter). */
TEST(seg_names_are_random)
{
  char seen[32][LMP_SEG_NAME_MAX];
  lmp_seg_t *s;
  size_t plen;

  CHECK_EQ(lmp_runtime_init(), 0);
  plen = strlen(lmp_runtime_prefix());
  for (int i = 0; i < 32; i++) {
    CHECK_EQ(lmp_seg_create(1, &s), 0);
    snprintf(seen[i], sizeof seen[i], "%s", lmp_seg_name(s));
    lmp_seg_release(s);
    CHECK_EQ(strlen(seen[i]), plen + 17);
    CHECK(seen[i][plen] == '.');
    CHECK_EQ(strspn(seen[i] + plen + 1, "0123456789abcdef"), 16);
    for (int j = 0; j < i; j++)
      CHECK(strcmp(seen[i] + plen, seen[j] + plen) != 0);
  }
}

TEST_LIST = {
  TEST_ENTRY(runtime_init_makes_root),
  TEST_ENTRY(prefork_starts_the_runtime),
  TEST_ENTRY(runtime_setenv_for_exec),
  TEST_ENTRY(adopt_prefix_from_env),
  TEST_ENTRY(seg_create_basics),
  TEST_ENTRY(seg_sizes),
  TEST_ENTRY(seg_attach_same_descriptor),
  TEST_ENTRY(seg_attach_rejects),
  TEST_ENTRY(seg_shared_between_processes),
  TEST_ENTRY(seg_unlinked_by_last_holder),
  TEST_ENTRY(pin_adopted_by_receiver),
  TEST_ENTRY(pin_dropped_when_already_mapped),
  TEST_ENTRY(adopt_without_pin_takes_a_reference),
  TEST_ENTRY(fork_gives_child_references),
  TEST_ENTRY(killed_child_gives_back_when_reaped),
  TEST_ENTRY(release_all_drops_everything),
  TEST_ENTRY(many_segments_leak_nothing),
  TEST_ENTRY(threads_share_the_registry),
  TEST_ENTRY(root_cleanup_at_exit),
  TEST_ENTRY(watchdog_cleans_up_after_sigkill),
  TEST_ENTRY(watchdog_exits_with_clean_root),
  TEST_ENTRY(fd_stash_fetch_in_another_process),
  TEST_ENTRY(fd_stash_outlives_the_sender),
  TEST_ENTRY_T(fd_stash_refuses_past_cap, 60),
  TEST_ENTRY(seg_store_is_reserved_at_creation),
  TEST_ENTRY(seg_falls_back_to_memfd),
  TEST_ENTRY(memfd_budget_refuses_cleanly),
  TEST_ENTRY(seg_names_are_random),
  TEST_END
};

/*
 * pingpong.c -- the floor for a Pipe round trip: a raw socketpair ping-pong.
 *
 * The same shape as lmp's Pipe benchmark without any of lmp: a forked child
 * echoes 16-byte messages over an AF_UNIX stream socketpair, one write(2) and
 * one read(2) per message on each side.  The parent does 2000 round trips
 * per run after a warm-up and prints, as one JSON line, the median over 9
 * runs of the mean round trip in microseconds.
 *
 *   pingpong [NAME [ROUND_TRIPS [RUNS]]]     (NAME defaults to pipe_rt)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG 16
#define MAX_RUNS 64

static double now_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* 0 once all n bytes moved, -1 on error or end of stream. */
static int full_io(int fd, char *p, size_t n, int writing)
{
  while (n > 0) {
    ssize_t r = writing ? write(fd, p, n) : read(fd, p, n);
    if (r <= 0)
      return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static void echo(int fd)
{
  char buf[MSG];
  while (full_io(fd, buf, MSG, 0) == 0 && full_io(fd, buf, MSG, 1) == 0) {
  }
  _exit(0);
}

static int cmp(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int round_trips(int fd, int n)
{
  char buf[MSG] = {0};
  for (int i = 0; i < n; i++) {
    if (full_io(fd, buf, MSG, 1) < 0 || full_io(fd, buf, MSG, 0) < 0)
      return -1;
  }
  return 0;
}

int main(int argc, char **argv)
{
  const char *name = argc > 1 ? argv[1] : "pipe_rt";
  int n = argc > 2 ? atoi(argv[2]) : 2000;
  int runs = argc > 3 ? atoi(argv[3]) : 9;
  if (n < 1 || runs < 1 || runs > MAX_RUNS) {
    fprintf(stderr, "usage: pingpong [NAME [ROUND_TRIPS [RUNS<=%d]]]\n", MAX_RUNS);
    return 2;
  }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
    perror("socketpair");
    return 1;
  }
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    return 1;
  }
  if (pid == 0) {
    close(sv[0]);
    echo(sv[1]);
  }
  close(sv[1]);
  double samples[MAX_RUNS], sorted[MAX_RUNS];
  if (round_trips(sv[0], 200) < 0)
    goto fail;
  for (int r = 0; r < runs; r++) {
    double t0 = now_us();
    if (round_trips(sv[0], n) < 0)
      goto fail;
    samples[r] = sorted[r] = (now_us() - t0) / n;
  }
  close(sv[0]);
  waitpid(pid, NULL, 0);
  qsort(sorted, (size_t)runs, sizeof *sorted, cmp);
  double med = runs % 2 ? sorted[runs / 2] : (sorted[runs / 2 - 1] + sorted[runs / 2]) / 2;
  printf("{\"name\":\"%s\",\"impl\":\"c\",\"value\":%.6g,\"unit\":\"us\",\"samples\":[", name, med);
  for (int r = 0; r < runs; r++)
    printf("%s%.6g", r ? "," : "", samples[r]);
  printf("],\"round_trips\":%d}\n", n);
  return 0;
fail:
  fprintf(stderr, "pingpong: the echo child went away\n");
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  return 1;
}

/*
 * delayproxy.c -- a TCP proxy that holds every chunk of bytes for a fixed
 * delay, in both directions: a network of known latency on one machine.
 *
 *   delayproxy LISTEN_ADDR:PORT TARGET_ADDR:PORT DELAY_MS
 *
 * Each accepted connection gets its own connection to the target.  What is
 * read from one side is queued with the time it may leave (now + DELAY_MS)
 * and written to the other side in order once that time has come, so a
 * request and its reply cost 2 x DELAY_MS more than without the proxy.  An
 * end of file is queued like data: when it comes due, both sides are
 * closed.  An error on either side closes both at once.
 *
 * One thread, epoll, and one timerfd armed (absolute, CLOCK_MONOTONIC) for
 * the earliest chunk due, so delays are exact to the microsecond rather
 * than rounded to epoll_wait's milliseconds.  A direction whose queue holds
 * more than HIGH_WATER bytes stops reading until it drains.  IPv4 only.
 * Prints "delayproxy: listening on ADDR:PORT" on stderr once it accepts.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 65536
#define HIGH_WATER (16 << 20)
#define MAX_EVENTS 64

typedef struct chunk {
  struct chunk *next;
  int64_t due;    /* monotonic ns */
  size_t len, off;
  int eof;        /* the reading side closed: close both when this is due */
  char data[];
} chunk_t;

/* One direction: bytes read from `from`, written to `to`. */
typedef struct dir {
  int from, to;
  chunk_t *head, *tail;
  size_t queued;
} dir_t;

typedef struct conn {
  struct conn *next, *prev;
  int client, target;
  int connecting; /* the target's connect has not completed */
  int closed;
  dir_t up, down; /* client -> target, target -> client */
} conn_t;

/* What an epoll event points at: the listener, the timer or one side. */
typedef struct tag {
  int kind; /* 0 listener, 1 timer, 2 client side, 3 target side */
  conn_t *c;
} tag_t;

static int64_t delay_ns;
static int ep, tfd, lfd;
static struct sockaddr_in target_sa;
static conn_t *conns, *graveyard; /* graveyard: closed in this round, freed after it */
static tag_t listen_tag = {0, NULL}, timer_tag = {1, NULL};

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "delayproxy: %s: %s\n", what, strerror(errno));
  exit(1);
}

static int parse_addr(const char *s, struct sockaddr_in *sa) {
  char host[256];
  const char *colon = strrchr(s, ':');
  if (!colon || (size_t)(colon - s) >= sizeof host) return -1;
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = '\0';
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end || port < 0 || port > 65535) return -1;
  memset(sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  sa->sin_port = htons((uint16_t)port);
  if (host[0] == '\0') return 0;
  return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

/* === connections === */

static void free_dir(dir_t *d) {
  chunk_t *k = d->head;
  while (k) {
    chunk_t *n = k->next;
    free(k);
    k = n;
  }
  d->head = d->tail = NULL;
  d->queued = 0;
}

static void conn_close(conn_t *c) {
  if (c->closed) return;
  c->closed = 1;
  close(c->client);
  close(c->target);
  free_dir(&c->up);
  free_dir(&c->down);
  if (c->prev) c->prev->next = c->next; else conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->next = graveyard; /* later events of this round may still point at it */
  graveyard = c;
}

/* The events each side waits for: readable while its queue has room and no
 * end of file was seen, writable while bytes due for it wait. */
static void conn_watch(conn_t *c, tag_t *ct, tag_t *tt) {
  int64_t t = now_ns();
  uint32_t cev = 0, tev = 0;
  if (c->connecting) {
    tev = EPOLLOUT;
  } else {
    if (c->up.queued < HIGH_WATER && !(c->up.tail && c->up.tail->eof)) cev |= EPOLLIN;
    if (c->down.queued < HIGH_WATER && !(c->down.tail && c->down.tail->eof)) tev |= EPOLLIN;
    if (c->up.head && c->up.head->due <= t && !c->up.head->eof) tev |= EPOLLOUT;
    if (c->down.head && c->down.head->due <= t && !c->down.head->eof) cev |= EPOLLOUT;
  }
  struct epoll_event ev = {.events = cev, .data.ptr = ct};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->client, &ev);
  ev.events = tev;
  ev.data.ptr = tt;
  epoll_ctl(ep, EPOLL_CTL_MOD, c->target, &ev);
}

/* Tags live beside the connection: one allocation for all three. */
typedef struct conn_box {
  conn_t c;
  tag_t ct, tt;
} conn_box_t;

static void watch(conn_t *c) {
  conn_box_t *b = (conn_box_t *)c;
  conn_watch(c, &b->ct, &b->tt);
}

static void accept_one(void) {
  int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) return;
  int t = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (t < 0) {
    close(fd);
    return;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int rc = connect(t, (struct sockaddr *)&target_sa, sizeof target_sa);
  if (rc < 0 && errno != EINPROGRESS) {
    close(fd);
    close(t);
    return;
  }
  conn_box_t *b = calloc(1, sizeof *b);
  if (!b) {
    close(fd);
    close(t);
    return;
  }
  conn_t *c = &b->c;
  c->client = fd;
  c->target = t;
  c->connecting = rc < 0;
  c->up = (dir_t){.from = fd, .to = t};
  c->down = (dir_t){.from = t, .to = fd};
  b->ct = (tag_t){2, c};
  b->tt = (tag_t){3, c};
  c->next = conns;
  if (conns) conns->prev = c;
  conns = c;
  struct epoll_event ev = {.events = 0, .data.ptr = &b->ct};
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  ev.data.ptr = &b->tt;
  epoll_ctl(ep, EPOLL_CTL_ADD, t, &ev);
  watch(c);
}

/* Read what `d.from` has into a new chunk; -1 when the connection ended. */
static int pump_in(dir_t *d) {
  chunk_t *k = malloc(sizeof *k + CHUNK);
  if (!k) return -1;
  ssize_t n = read(d->from, k->data, CHUNK);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
    free(k);
    return 0;
  }
  if (n < 0) {
    free(k);
    return -1;
  }
  k->next = NULL;
  k->due = now_ns() + delay_ns;
  k->len = (size_t)n;
  k->off = 0;
  k->eof = n == 0;
  if (d->tail) d->tail->next = k; else d->head = k;
  d->tail = k;
  d->queued += (size_t)n;
  return 0;
}

/* Write the chunks that are due; -1 when the connection is to be closed. */
static int pump_out(dir_t *d) {
  int64_t t = now_ns();
  while (d->head && d->head->due <= t) {
    chunk_t *k = d->head;
    if (k->eof) return -1;
    ssize_t n = write(d->to, k->data + k->off, k->len - k->off);
    if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : -1;
    k->off += (size_t)n;
    d->queued -= (size_t)n;
    if (k->off < k->len) return 0;
    d->head = k->next;
    if (!d->head) d->tail = NULL;
    free(k);
  }
  return 0;
}

/* === the loop === */

/* Arm the timer for the earliest chunk not yet due (0: disarm). */
static void arm_timer(void) {
  int64_t t = now_ns(), first = 0;
  for (conn_t *c = conns; c; c = c->next) {
    dir_t *ds[2] = {&c->up, &c->down};
    for (int i = 0; i < 2; i++) {
      chunk_t *k = ds[i]->head;
      if (k && k->due > t && (first == 0 || k->due < first)) first = k->due;
    }
  }
  struct itimerspec its = {0};
  if (first) {
    its.it_value.tv_sec = first / 1000000000;
    its.it_value.tv_nsec = first % 1000000000;
  }
  timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* Everything due: written where the other side can take it; due ends of
 * file close their connection. */
static void flush_due(void) {
  conn_t *c = conns;
  while (c) {
    conn_t *next = c->next;
    if (!c->connecting && (pump_out(&c->up) < 0 || pump_out(&c->down) < 0)) {
      conn_close(c);
    } else {
      watch(c);
    }
    c = next;
  }
}

static void on_side(tag_t *tg, uint32_t events) {
  conn_t *c = tg->c;
  if (c->closed) return;
  if (tg->kind == 3 && c->connecting) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->target, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) {
      conn_close(c);
      return;
    }
    c->connecting = 0;
    watch(c);
    return;
  }
  dir_t *in = tg->kind == 2 ? &c->up : &c->down;
  dir_t *out = tg->kind == 2 ? &c->down : &c->up;
  if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) && !(in->tail && in->tail->eof)) {
    if (pump_in(in) < 0) {
      conn_close(c);
      return;
    }
    /* an end of file waits its delay; the side is not watched meanwhile
       (a hung-up socket would report itself without end) */
    if (in->tail && in->tail->eof) epoll_ctl(ep, EPOLL_CTL_DEL, in->from, NULL);
  }
  if ((events & EPOLLOUT) && pump_out(out) < 0) {
    conn_close(c);
    return;
  }
  watch(c);
}

int main(int argc, char **argv) {
  struct sockaddr_in lsa;
  char *end;
  if (argc != 4 || parse_addr(argv[1], &lsa) < 0 || parse_addr(argv[2], &target_sa) < 0) {
    fprintf(stderr, "usage: delayproxy LISTEN_ADDR:PORT TARGET_ADDR:PORT DELAY_MS\n");
    return 2;
  }
  double ms = strtod(argv[3], &end);
  if (*end || ms < 0) {
    fprintf(stderr, "delayproxy: bad delay %s\n", argv[3]);
    return 2;
  }
  delay_ns = (int64_t)(ms * 1e6);
  signal(SIGPIPE, SIG_IGN);
  lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (lfd < 0) die("socket");
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(lfd, (struct sockaddr *)&lsa, sizeof lsa) < 0) die("bind");
  if (listen(lfd, 128) < 0) die("listen");
  ep = epoll_create1(EPOLL_CLOEXEC);
  tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (ep < 0 || tfd < 0) die("epoll");
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &listen_tag};
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  ev.data.ptr = &timer_tag;
  epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);
  fprintf(stderr, "delayproxy: listening on %s\n", argv[1]);
  struct epoll_event evs[MAX_EVENTS];
  for (;;) {
    int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    for (int i = 0; i < n; i++) {
      tag_t *tg = evs[i].data.ptr;
      if (tg->kind == 0) {
        accept_one();
      } else if (tg->kind == 1) {
        uint64_t x;
        (void)!read(tfd, &x, sizeof x);
      } else {
        on_side(tg, evs[i].events);
      }
    }
    flush_due();
    arm_timer();
    while (graveyard) {
      conn_t *c = graveyard;
      graveyard = c->next;
      free(c);
    }
  }
}

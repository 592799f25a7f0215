# bench/py/queue.py -- multiprocessing.Queue throughput between two processes
# (fork).  A child puts N messages as fast as it can once told to go; the
# parent times from the go to the last get.  Messages per second, median.
#   queue_small  100k small integers
#   queue_1k     50k bytes objects of 1 KiB
#   queue_1m     200 bytes objects of 1 MiB
# Usage: python3 bench/py/bench_queue.py queue_small|queue_1k|queue_1m
import multiprocessing as mp

import common as b

CFG = {
    "queue_small": dict(n=b.size(100000, 500), reps=5, nbytes=None),
    "queue_1k": dict(n=b.size(50000, 200), reps=5, nbytes=1024),
    "queue_1m": dict(n=b.size(200, 4), reps=5, nbytes=1 << 20),
}


def producer(go, q, n, nbytes):
    go.get()
    if nbytes:
        msg = b"x" * nbytes
        for _ in range(n):
            q.put(msg)
    else:
        for i in range(n):
            q.put(i)


def main():
    name = b.variant()
    cfg = CFG[name]
    ctx = mp.get_context("fork")
    n = cfg["n"]

    def run(_):
        go, q = ctx.Queue(), ctx.Queue()
        p = ctx.Process(target=producer, args=(go, q, n, cfg["nbytes"]))
        p.start()
        t0 = b.now()
        go.put(True)
        for _ in range(n):
            q.get()
        rate = n / (b.now() - t0)
        p.join()
        return rate
    b.emit(name, "msgs/s", b.repeat(cfg["reps"], run), messages=n,
           bytes=cfg["nbytes"] or 8)


if __name__ == "__main__":
    main()

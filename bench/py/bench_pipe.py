# bench/py/bench_pipe.py -- multiprocessing.Pipe ping-pong round trip (fork).
# A child echoes every object it receives on a duplex Pipe; the parent sends
# a small integer and waits for it back, 2000 times per run after a warm-up.
# The figure is the median over runs of the mean round trip, microseconds.
# Usage: python3 bench/py/bench_pipe.py pipe_rt
import multiprocessing as mp

import common as b


def echo(c):
    while True:
        v = c.recv()
        if v is False:
            break
        c.send(v)


def main():
    name = b.variant()
    n = b.size(2000, 20)
    ctx = mp.get_context("fork")
    a, c = ctx.Pipe()
    p = ctx.Process(target=echo, args=(c,))
    p.start()
    for i in range(200):
        a.send(i)
        a.recv()

    def run(_):
        t0 = b.now()
        for i in range(n):
            a.send(i)
            a.recv()
        return (b.now() - t0) / n * 1e6
    samples = b.repeat(9, run)
    a.send(False)
    p.join()
    b.emit(name, "us", samples, round_trips=n)


if __name__ == "__main__":
    main()

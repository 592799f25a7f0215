# bench/py/bench_event.py -- multiprocessing.Event.is_set() calls per second
# (fork).
#   event_is_set  one process, N e.is_set() in a row on a clear Event
# Median of 5 runs.
# Usage: python3 bench/py/bench_event.py event_is_set
import multiprocessing as mp

import common as b


def calls(e, n):
    for _ in range(n):
        e.is_set()


def main():
    name = b.variant()
    ctx = mp.get_context("fork")
    if name == "event_is_set":
        n = b.size(1000000, 1000)
        samples = b.solo(ctx.Event(), calls, n)
    else:
        raise SystemExit("unknown workload " + name)
    b.emit(name, "calls/s", samples, calls=n)


if __name__ == "__main__":
    main()

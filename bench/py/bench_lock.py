# bench/py/bench_lock.py -- multiprocessing.Lock acquire/release pairs per
# second (fork).
#   lock_uncontended  one process, N pairs in a row
#   lock_contended    2 child processes doing N pairs each on one Lock,
#                     timed from the go to the last finish; total pairs/s
# Median of 5 runs.
# Usage: python3 bench/py/bench_lock.py lock_uncontended|lock_contended
import multiprocessing as mp

import common as b


def pairs(lock, n):
    for _ in range(n):
        lock.acquire()
        lock.release()


def main():
    name = b.variant()
    ctx = mp.get_context("fork")
    if name == "lock_uncontended":
        n = b.size(1000000, 1000)
        samples = b.solo(ctx.Lock(), pairs, n)
    elif name == "lock_contended":
        n = b.size(200000, 1000)
        samples = b.contended(lambda c: c.Lock(), pairs, n)
    else:
        raise SystemExit("unknown workload " + name)
    b.emit(name, "pairs/s", samples, pairs=n)


if __name__ == "__main__":
    main()

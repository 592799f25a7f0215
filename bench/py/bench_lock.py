# bench/py/bench_lock.py -- the sync objects' calls per second (fork):
# multiprocessing.Lock acquire/release pairs, and Semaphore pairs and
# Event.is_set beside them.
#   lock_uncontended  one process, N pairs in a row
#   lock_contended    2 child processes doing N pairs each on one Lock,
#                     timed from the go to the last finish; total pairs/s
#   lock_semaphore    one process, N sem.acquire(); sem.release() pairs in
#                     a row on a Semaphore(1)
#   lock_event        one process, N e.is_set() in a row on a clear Event
# Median of 5 runs.
# Usage: python3 bench/py/bench_lock.py lock_uncontended|lock_contended|lock_semaphore|lock_event
import multiprocessing as mp

import common as b


def pairs(lock, n):
    for _ in range(n):
        lock.acquire()
        lock.release()


def calls(e, n):
    for _ in range(n):
        e.is_set()


def main():
    name = b.variant()
    ctx = mp.get_context("fork")
    unit = "pairs/s"
    if name == "lock_uncontended":
        n = b.size(1000000, 1000)
        samples = b.solo(ctx.Lock(), pairs, n)
    elif name == "lock_contended":
        n = b.size(200000, 1000)
        samples = b.contended(lambda c: c.Lock(), pairs, n)
    elif name == "lock_semaphore":
        n = b.size(1000000, 1000)
        samples = b.solo(ctx.Semaphore(1), pairs, n)
    elif name == "lock_event":
        n = b.size(1000000, 1000)
        samples = b.solo(ctx.Event(), calls, n)
        unit = "calls/s"
    else:
        raise SystemExit("unknown workload " + name)
    if unit == "pairs/s":
        b.emit(name, unit, samples, pairs=n)
    else:
        b.emit(name, unit, samples, calls=n)


if __name__ == "__main__":
    main()

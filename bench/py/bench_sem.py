# bench/py/bench_sem.py -- multiprocessing.Semaphore acquire/release pairs
# per second (fork).
#   sem_uncontended  one process, N pairs in a row on a Semaphore(1)
# Median of 5 runs.
# Usage: python3 bench/py/bench_sem.py sem_uncontended
import multiprocessing as mp

import common as b


def pairs(sem, n):
    for _ in range(n):
        sem.acquire()
        sem.release()


def main():
    name = b.variant()
    ctx = mp.get_context("fork")
    if name == "sem_uncontended":
        n = b.size(1000000, 1000)
        samples = b.solo(ctx.Semaphore(1), pairs, n)
    else:
        raise SystemExit("unknown workload " + name)
    b.emit(name, "pairs/s", samples, pairs=n)


if __name__ == "__main__":
    main()

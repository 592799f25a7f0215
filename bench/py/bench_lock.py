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


def contender(lock, go, done, n):
    go.get()
    pairs(lock, n)
    done.put(True)


def main():
    name = b.variant()
    ctx = mp.get_context("fork")
    if name == "lock_uncontended":
        n = b.size(1000000, 1000)
        lock = ctx.Lock()
        pairs(lock, 1000)

        def run(_):
            t0 = b.now()
            pairs(lock, n)
            return n / (b.now() - t0)
    elif name == "lock_contended":
        n = b.size(200000, 1000)

        def run(_):
            lock, go, done = ctx.Lock(), ctx.Queue(), ctx.Queue()
            procs = [ctx.Process(target=contender, args=(lock, go, done, n))
                     for _ in range(2)]
            for p in procs:
                p.start()
            t0 = b.now()
            go.put(True)
            go.put(True)
            done.get()
            done.get()
            rate = 2 * n / (b.now() - t0)
            for p in procs:
                p.join()
            return rate
    else:
        raise SystemExit("unknown workload " + name)
    b.emit(name, "pairs/s", b.repeat(5, run), pairs=n)


if __name__ == "__main__":
    main()

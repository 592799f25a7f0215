# bench/py/bench_value.py -- additions to a shared multiprocessing.Value per
# second (fork), the way Python programs make them safe:
# `with v.get_lock(): v.value += 1` (Python's Value has no atomic add).
#   value_add            one process, N additions in a row
#   value_add_contended  2 child processes doing N additions each on one
#                        Value, timed from the go to the last finish; total
#                        additions/s
# Median of 5 runs.
# Usage: python3 bench/py/bench_value.py value_add|value_add_contended
import multiprocessing as mp

import common as b


def adds(v, n):
    for _ in range(n):
        with v.get_lock():
            v.value += 1


def contender(v, go, done, n):
    go.get()
    adds(v, n)
    done.put(True)


def main():
    name = b.variant()
    ctx = mp.get_context("fork")
    if name == "value_add":
        n = b.size(1000000, 1000)
        v = ctx.Value("q", 0)
        adds(v, 1000)

        def run(_):
            t0 = b.now()
            adds(v, n)
            return n / (b.now() - t0)
    elif name == "value_add_contended":
        n = b.size(200000, 1000)

        def run(_):
            v, go, done = ctx.Value("q", 0), ctx.Queue(), ctx.Queue()
            procs = [ctx.Process(target=contender, args=(v, go, done, n))
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
            assert v.value == 2 * n
            return rate
    else:
        raise SystemExit("unknown workload " + name)
    b.emit(name, "adds/s", b.repeat(5, run), adds=n)


if __name__ == "__main__":
    main()

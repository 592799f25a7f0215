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


def check(v, total):
    assert v.value == total


def main():
    name = b.variant()
    ctx = mp.get_context("fork")
    if name == "value_add":
        n = b.size(1000000, 1000)
        samples = b.solo(ctx.Value("q", 0), adds, n)
    elif name == "value_add_contended":
        n = b.size(200000, 1000)
        samples = b.contended(lambda c: c.Value("q", 0), adds, n, check)
    else:
        raise SystemExit("unknown workload " + name)
    b.emit(name, "adds/s", samples, adds=n)


if __name__ == "__main__":
    main()

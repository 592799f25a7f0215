# bench/py/bench_map.py -- Pool.map of x*x over 200k integers, default
# chunksize, on multiprocessing Pool(cpu_count), fork.  Items per second,
# median of 5 runs.
# Usage: python3 bench/py/bench_map.py map
import multiprocessing as mp

import common as b


def square(x):
    return x * x


def main():
    name = b.variant()
    n = b.size(200000, 1000)
    xs = list(range(1, n + 1))
    with mp.get_context("fork").Pool(b.ncpu) as pool:
        pool.map(square, [1, 2, 3, 4])

        def run(_):
            t0 = b.now()
            r = pool.map(square, xs)
            rate = n / (b.now() - t0)
            assert len(r) == n and r[-1] == n * n
            return rate
        b.emit(name, "items/s", b.repeat(5, run), items=n)


if __name__ == "__main__":
    main()

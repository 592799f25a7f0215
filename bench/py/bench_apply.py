# bench/py/bench_apply.py -- Pool task round trips on multiprocessing Pool(cpu_count),
# fork start method.
#   apply_rt     pool.apply of a trivial task, one after another: the median
#                of the per-call times, in microseconds.
#   apply_async  20k trivial tasks submitted with apply_async, then every
#                result collected: tasks per second, median of 5 runs.
# Usage: python3 bench/py/bench_apply.py apply_rt|apply_async
import multiprocessing as mp

import common as b


def task(x):
    return x


def main():
    name = b.variant()
    unit = "us" if name == "apply_rt" else "tasks/s"
    with mp.get_context("fork").Pool(b.ncpu) as pool:
        for i in range(20):
            pool.apply(task, (i,))
        if name == "apply_rt":
            n = b.size(3000, 20)
            times = []
            for i in range(n):
                t0 = b.now()
                pool.apply(task, (i,))
                times.append((b.now() - t0) * 1e6)
            slices = [b.median(times[s * n // 5:(s + 1) * n // 5]) for s in range(5)]
            b.emit(name, unit, [b.median(times)] if b.smoke else slices,
                   calls=n, median_all=b.median(times))
        else:
            n = b.size(20000, 100)

            def run(_):
                t0 = b.now()
                res = [pool.apply_async(task, (i,)) for i in range(n)]
                for r in res:
                    r.get()
                return n / (b.now() - t0)
            b.emit(name, unit, b.repeat(5, run), tasks=n)


if __name__ == "__main__":
    main()

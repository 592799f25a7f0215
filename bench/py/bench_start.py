# bench/py/bench_start.py -- process start time per start method.
# Starts a process whose target does nothing and joins it, one after another
# after a warm-up; the figure is the median of start()+join() in
# milliseconds (start() alone is reported beside it).
#   start_fork  start_spawn  start_forkserver
# Usage: python3 bench/py/bench_start.py start_fork|start_spawn|start_forkserver
import multiprocessing as mp

import common as b


def noop():
    pass


def main():
    name = b.variant()
    method = name[len("start_"):]
    if method not in mp.get_all_start_methods():
        b.na(name, "ms", "start method %s not available" % method)
        return
    ctx = mp.get_context(method)
    n = b.size(300 if method == "fork" else 40, 3)
    for _ in range(1 if b.smoke else 10):
        p = ctx.Process(target=noop)
        p.start()
        p.join()
    whole, start = [], []
    for _ in range(n):
        p = ctx.Process(target=noop)
        t0 = b.now()
        p.start()
        t1 = b.now()
        p.join()
        whole.append((b.now() - t0) * 1e3)
        start.append((t1 - t0) * 1e3)
        p.close()
    slices = [b.median(whole)] if b.smoke else \
        [b.median(whole[s * n // 5:(s + 1) * n // 5]) for s in range(5)]
    b.emit(name, "ms", slices, processes=n, median_all=b.median(whole),
           start_only=b.median(start))


if __name__ == "__main__":
    main()

# bench/py/bench_cpu.py -- CPU-bound speedup on all cores (fork).
# The same pure-Python loop as bench/lua/cpu.lua (W iterations in all, split
# into equal parts) runs once on one worker and once on cpu_count workers;
# the figure is the speedup t(1 worker) / t(cpu_count workers), median of 5.
#   cpu_proc  workers are Process children, results back on a Queue
#   cpu_pool  workers are Pool(1) and Pool(cpu_count), pool.map over 4 parts
#             per worker, chunksize 1
# Usage: python3 bench/py/bench_cpu.py cpu_proc|cpu_pool
import multiprocessing as mp

import common as b

W = b.size(50000000, 20000)


def worker(q, mine, n):
    s = 0
    for _ in range(mine):
        s += b.work(n)
    q.put(s)


def run_procs(ctx, nproc, parts):
    q = ctx.Queue()
    t0 = b.now()
    procs = []
    for k in range(nproc):
        mine = parts // nproc + (1 if k < parts % nproc else 0)
        p = ctx.Process(target=worker, args=(q, mine, W // parts))
        p.start()
        procs.append(p)
    for _ in range(nproc):
        q.get()
    t = b.now() - t0
    for p in procs:
        p.join()
    return t


def main():
    name = b.variant()
    ctx = mp.get_context("fork")
    t1s, tns = [], []
    if name == "cpu_proc":
        def run(_):
            t1s.append(run_procs(ctx, 1, b.ncpu))
            tns.append(run_procs(ctx, b.ncpu, b.ncpu))
            return t1s[-1] / tns[-1]
        samples = b.repeat(5, run)
    elif name == "cpu_pool":
        parts = [W // (4 * b.ncpu)] * (4 * b.ncpu)
        with ctx.Pool(1) as one, ctx.Pool(b.ncpu) as every:
            one.map(b.work, [1])
            every.map(b.work, [1, 1])

            def run(_):
                t0 = b.now()
                one.map(b.work, parts, 1)
                t1s.append(b.now() - t0)
                t0 = b.now()
                every.map(b.work, parts, 1)
                tns.append(b.now() - t0)
                return t1s[-1] / tns[-1]
            samples = b.repeat(5, run)
    else:
        raise SystemExit("unknown workload " + name)
    b.emit(name, "x", samples, workers=b.ncpu, iterations=W, t1_s=t1s,
           tn_s=tns)


if __name__ == "__main__":
    main()

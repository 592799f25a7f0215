# bench/py/bench_scale.py -- the twin of bench/lua/scale.lua for
# multiprocessing.Pool (fork): the same model's inputs, measured the way
# Python's Pool allows, and the model checked on 1, 2, 4 and 8 workers.
#
# Python's parent is three threads under one GIL (the caller, the task
# handler that pickles and writes each task to the workers' pipe, the result
# handler that reads and unpickles each reply), so its cost is measured as
# the parent process's CPU time (time.process_time, every thread) per task,
# and per chunk and item for map (fitted as a + b * chunksize at chunk sizes
# 10, 100, 1000 and 10000).  Neither side spins while it waits, so a
# worker's CPU time is its cost too: a task returns the worker's own
# process_time before and after the batch.  Pool(1) throughout; each input
# is the best of 5 repeats, each repeat measuring every input once, and each
# figure of the check the best of 3 (noise only slows a run down).  The pipe the tasks go
# through is a SimpleQueue (a pipe and a lock): its rate is that of small
# integers put by a child and got by the parent.
# Usage: python3 bench/py/bench_scale.py scale
import math
import multiprocessing as mp
import os
import time

import common as b

REPS = 3  # the check's
INPUT_REPS = 5


def task(x):
    return x


def square(x):
    return x * x


def cpu():
    return time.process_time()


def _spinner(go, done, n):
    go.get()
    done.put(b.work(n))


def cpu_share(ctx):
    # the CPUs this run gets: ncpu * t(one loop) / t(one loop per CPU at once)
    n = b.size(300000, 2000)
    t0 = b.now()
    b.work(n)
    one = b.now() - t0
    go, done = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_spinner, args=(go, done, n)) for _ in range(b.ncpu)]
    for p in procs:
        p.start()
    t0 = b.now()
    for _ in procs:
        go.put(True)
    for _ in procs:
        done.get()
    allt = b.now() - t0
    for p in procs:
        p.join()
    return max(1.0, min(b.ncpu, b.ncpu * one / allt))


def _producer(go, q, n):
    go.get()
    for i in range(n):
        q.put(i)


def ring_rate(ctx):
    # messages/s through a SimpleQueue, from a child to the parent
    n = b.size(100000, 500)
    go, q = ctx.SimpleQueue(), ctx.SimpleQueue()
    p = ctx.Process(target=_producer, args=(go, q, n))
    p.start()
    t0 = b.now()
    go.put(True)
    for _ in range(n):
        q.get()
    rate = n / (b.now() - t0)
    p.join()
    return rate


def costs(pool, run, count):
    # parent CPU and worker CPU per unit (task or chunk) of one run()
    w0 = pool.apply(cpu)
    p0 = time.process_time()
    run()
    p1 = time.process_time()
    w1 = pool.apply(cpu)
    return (p1 - p0) / count, (w1 - w0) / count


def interleaved(fns):
    # each repeat measures every input once, as scale.lua does; the best
    # of each
    got = [[] for _ in fns]
    for _ in range(1 if b.smoke else INPUT_REPS):
        for k, fn in enumerate(fns):
            got[k].append(fn())
    return [tuple(min(xs) for xs in zip(*g)) for g in got]


def per(a, b_):
    # a / b_, infinite when b_ is not positive (a fit at smoke size can be 0)
    return a / b_ if b_ > 0 else math.inf


def fit(sizes, ts):
    # t(chunk) = a + b * chunksize, fitted per item as scale.lua does
    xs = [1 / c for c in sizes]
    ys = [t / c for t, c in zip(ts, sizes)]
    n = len(xs)
    sx, sy = sum(xs), sum(ys)
    sxx = sum(x * x for x in xs)
    sxy = sum(x * y for x, y in zip(xs, ys))
    a = (n * sxy - sx * sy) / (n * sxx - sx * sx)
    bi = (sy - a * sx) / n
    if a < 0:
        a, bi = 0.0, sy / n
    if bi < 0:
        a, bi = sxy / sxx, 0.0
    return a, bi


def main():
    name = b.variant()
    ctx = mp.get_context("fork")
    inp = {}
    with ctx.Pool(1) as pool:
        pool.map(square, [1, 2, 3, 4])
        for i in range(20):
            pool.apply(task, (i,))
        nb = b.size(5000, 20)

        def apply_batch():
            res = [pool.apply_async(task, (i,)) for i in range(nb)]
            for r in res:
                r.get()
        sizes = [2, 20] if b.smoke else [10, 100, 1000, 10000]
        fns = [lambda: costs(pool, apply_batch, nb)]
        # The lists are made for each run, not kept: the parent's cost per
        # task grows with its live heap, which its cyclic GC walks.
        def map_run(size):
            xs = list(range(1, min(b.size(200000, 200), 2000 * size) + 1))
            return costs(pool, lambda: pool.map(square, xs, size), (len(xs) + size - 1) // size)
        for size in sizes:
            fns.append(lambda size=size: map_run(size))
        got = interleaved(fns)
        inp["p"], inp["w"] = got[0]
        inp["ap"], inp["bp"] = fit(sizes, [g[0] for g in got[1:]])
        inp["aw"], inp["bw"] = fit(sizes, [g[1] for g in got[1:]])
    inp["ring"] = max(ring_rate(ctx) for _ in range(1 if b.smoke else REPS))

    # The model of scale.lua, with the parent's cost all on one side: the
    # GIL runs its threads one at a time.
    def model_map(n, items, cores, x=0.0):
        size = max(1, (items + 4 * n - 1) // (4 * n))
        k = (items + size - 1) // size
        P = k * inp["ap"] + items * inp["bp"]
        W = k * inp["aw"] + items * (inp["bw"] + x)
        first = inp["ap"] + size * inp["bp"]
        last = P + inp["aw"] + size * (inp["bw"] + x)
        T = max(P, W / n + first, last, (P + W) / cores, k / inp["ring"])
        return items / T, T

    def model_apply(n, tasks, cores, x=0.0):
        P = tasks * inp["p"]
        W = tasks * (inp["w"] + x)
        T = max(P, W / n + inp["p"], (P + W) / cores, tasks / inp["ring"])
        return tasks / T, T

    def saturation(size, x=0.0):
        if size:
            return per(inp["aw"] / size + inp["bw"] + x, inp["ap"] / size + inp["bp"])
        return per(inp["w"] + x, inp["p"])

    items, tasks = b.size(200000, 1000), b.size(20000, 100)
    check = []
    for n in ([1, 2] if b.smoke else [1, 2, 4, 8]):
        mr, ar = [], []
        with ctx.Pool(n) as pool:
            pool.map(square, [1, 2, 3, 4])
            for i in range(4 * n):
                pool.apply(task, (i,))
            for _ in range(1 if b.smoke else REPS):
                xs = list(range(1, items + 1))
                t0 = b.now()
                r = pool.map(square, xs)
                mr.append(items / (b.now() - t0))
                assert len(r) == items and r[-1] == items * items
                del xs, r  # apply_async runs with the heap it would have alone
                t0 = b.now()
                res = [pool.apply_async(task, (i,)) for i in range(tasks)]
                for i, x in enumerate(res):
                    assert x.get() == i
                ar.append(tasks / (b.now() - t0))
        cores = max(cpu_share(ctx) for _ in range(1 if b.smoke else 3))
        check.append({"n": n, "cores": cores, "map": max(mr), "map_model": model_map(n, items, cores)[0],
                      "apply": max(ar), "apply_model": model_apply(n, tasks, cores)[0]})

    big = 1e9
    out = {
        "cpus": b.ncpu, "items": items, "tasks": tasks,
        "apply_parent_ns": inp["p"] * 1e9, "apply_worker_ns": inp["w"] * 1e9,
        "map_parent_chunk_ns": inp["ap"] * 1e9, "map_parent_item_ns": inp["bp"] * 1e9,
        "map_worker_chunk_ns": inp["aw"] * 1e9, "map_worker_item_ns": inp["bw"] * 1e9,
        "ring_msgs_per_s": inp["ring"], "parent_map_items_per_s": per(1, inp["bp"]),
        "parent_apply_tasks_per_s": per(1, inp["p"]),
        "map_saturation": saturation(1000), "apply_saturation": saturation(None),
        "apply_saturation_10us": saturation(None, 1e-5), "apply_saturation_1ms": saturation(None, 1e-3),
        "map_saturation_10us": saturation(1000, 1e-5), "map_saturation_1ms": saturation(1000, 1e-3),
    }
    for c in check:
        for k in ("cores", "map", "map_model", "apply", "apply_model"):
            out["check%d_%s" % (c["n"], k)] = c[k]
        out["check%d_map_error" % c["n"]] = c["map_model"] / c["map"] - 1
        out["check%d_apply_error" % c["n"]] = c["apply_model"] / c["apply"] - 1
    pred = []
    for n in (1, 2, 4, 8, 16, 32, 64):
        row = {"map": model_map(n, items, big)[0], "apply": model_apply(n, tasks, big)[0]}
        for x, key in ((1e-5, "10us"), (1e-3, "1ms")):
            row["map_speedup_" + key] = model_map(1, items, big, x)[1] / model_map(n, items, big, x)[1]
            row["apply_speedup_" + key] = model_apply(1, tasks, big, x)[1] / model_apply(n, tasks, big, x)[1]
        for k, v in row.items():
            out["pred%d_%s" % (n, k)] = v
        pred.append((n, row))

    def say(s):
        os.write(2, s.encode())
    say("scale (Python): inputs (ns)\n")
    say("  apply_async  parent %.0f per task (CPU, all threads); worker %.0f per task\n"
        % (inp["p"] * 1e9, inp["w"] * 1e9))
    say("  map          parent %.0f/chunk + %.1f/item; worker %.0f/chunk + %.1f/item\n"
        % (inp["ap"] * 1e9, inp["bp"] * 1e9, inp["aw"] * 1e9, inp["bw"] * 1e9))
    say("  ring         %.3g msgs/s through a SimpleQueue, child -> parent\n" % inp["ring"])
    say("  parent bound map %.3g items/s, apply_async %.3g tasks/s; saturated from %.2f and %.2f workers\n"
        % (out["parent_map_items_per_s"], out["parent_apply_tasks_per_s"], out["map_saturation"],
           out["apply_saturation"]))
    say("check: best of %d, model on the CPUs the run had (of %d), model/measured - 1\n" % (REPS, b.ncpu))
    say("  workers  CPUs  map items/s     model    err | apply tasks/s     model    err\n")
    for c in check:
        say("  %7d  %4.2f  %11.4g %9.4g %+5.0f%% | %13.4g %9.4g %+5.0f%%\n"
            % (c["n"], c["cores"], c["map"], c["map_model"], (c["map_model"] / c["map"] - 1) * 100,
               c["apply"], c["apply_model"], (c["apply_model"] / c["apply"] - 1) * 100))
    say("predicted with a CPU per worker and one for the parent (speedup for 10 us and 1 ms per item):\n")
    say("  workers   map items/s   x10us    x1ms | apply tasks/s   x10us    x1ms\n")
    for n, r in pred:
        say("  %7d  %12.4g  %6.2f  %6.1f | %13.4g  %6.2f  %6.1f\n"
            % (n, r["map"], r["map_speedup_10us"], r["map_speedup_1ms"], r["apply"],
               r["apply_speedup_10us"], r["apply_speedup_1ms"]))
    b.emit(name, "workers", [out["map_saturation_10us"]], **out)


if __name__ == "__main__":
    main()

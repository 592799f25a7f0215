# bench/py/common.py -- what every Python workload shares: the clock, medians,
# the size switch and the one JSON line a workload prints.
#
# A workload is `python3 bench/py/bench_<group>.py <name>`; it prints
# exactly one line {"name":..,"impl":"python","value":..,"unit":..,...} on
# stdout, the # median of its repeats with every sample beside it.  Every workload uses the
# fork start method unless it measures start methods.  BENCH_SMOKE=1 shrinks
# every size to a single quick pass (tests use it; its numbers mean nothing).
import json
import math
import os
import statistics
import sys
import time

smoke = os.environ.get("BENCH_SMOKE", "") not in ("", "0")
now = time.perf_counter
ncpu = os.cpu_count() or 1


def work(n):
    # the pure CPU loop of the CPU-bound workloads (bench_cpu, bench_scale),
    # the same in bench/lua/common.lua
    s = 0
    for i in range(1, n + 1):
        s = (s + i * i) % 1000003
    return s


def size(full, tiny):
    return tiny if smoke else full


def median(xs):
    return statistics.median(xs) if xs else None


def repeat(reps, fn):
    return [fn(i) for i in range(1 if smoke else reps)]


def _clean(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def emit(name, unit, samples, **extra):
    line = {"name": name, "impl": "python", "value": median(samples),
            "unit": unit, "samples": samples}
    line.update(sorted(extra.items()))
    print(json.dumps(_clean_dict(line), separators=(",", ":")), flush=True)


def _clean_dict(d):
    return {k: _clean(v) for k, v in d.items()}


def na(name, unit, why):
    print(json.dumps({"name": name, "impl": "python", "value": None,
                      "unit": unit, "note": why}, separators=(",", ":")),
          flush=True)


def variant():
    if len(sys.argv) < 2:
        sys.exit("usage: %s NAME" % sys.argv[0])
    return sys.argv[1]


# Operations per second, median of 5: op(obj, n) does n operations on obj.
# solo: this process, n in a row after a warm-up.  contended: two child
# processes (fork) doing n each on one object made by make(), timed from the
# go to the last finish, total per second; check(obj, total) runs after.
def solo(obj, op, n):
    op(obj, 1000)

    def run(_):
        t0 = now()
        op(obj, n)
        return n / (now() - t0)
    return repeat(5, run)


def _contender(op, obj, go, done, n):
    go.get()
    op(obj, n)
    done.put(True)


def contended(make, op, n, check=None):
    import multiprocessing as mp
    ctx = mp.get_context("fork")

    def run(_):
        obj, go, done = make(ctx), ctx.Queue(), ctx.Queue()
        procs = [ctx.Process(target=_contender, args=(op, obj, go, done, n))
                 for _ in range(2)]
        for p in procs:
            p.start()
        t0 = now()
        go.put(True)
        go.put(True)
        done.get()
        done.get()
        rate = 2 * n / (now() - t0)
        for p in procs:
            p.join()
        if check:
            check(obj, 2 * n)
        return rate
    return repeat(5, run)

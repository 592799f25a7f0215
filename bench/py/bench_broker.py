# bench/py/bench_broker.py -- the other task queues on a loopback
# redis-server, as bench/lua/broker.lua measures lmp's broker:
#   bench_broker.py NAME          RQ (python3-rq), two `rq worker` processes
#                                 (impl "python")
#   bench_broker.py NAME celery   Celery 5 (python3-celery, redis transport
#                                 and result backend), two `celery worker`
#                                 processes of one process each (--pool solo)
#                                 (impl "celery")
#   broker_tput  trivial jobs enqueued, then waited for: jobs per second,
#                median of 3 runs (RQ: 1,000 jobs, as it forks per job;
#                Celery: 2,000).
#   broker_rt    one job enqueued and waited for, one after another: the
#                median per job, in microseconds.
# The server is BENCH_REDIS_PORT's or one started here.  n/a without the
# queue's package.
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def echo(x):
    return x


# Celery's side: the app the workers load (`celery -A bench_broker`) and the
# caller uses, configured by BENCH_CELERY_URL.
def celery_app(url):
    from celery import Celery
    app = Celery("bench_broker", broker=url, backend=url)
    app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                    worker_hijack_root_logger=False, result_expires=600)
    return app, app.task(name="bench_broker.cecho")(echo)


if os.environ.get("BENCH_CELERY_URL"):
    try:
        app, cecho = celery_app(os.environ["BENCH_CELERY_URL"])
    except ImportError:
        pass


def na(name, unit, impl, why):
    import json
    print(json.dumps({"name": name, "impl": impl, "value": None, "unit": unit, "note": why},
                     separators=(",", ":")), flush=True)


def start_redis(redis):
    """A port of a redis-server: BENCH_REDIS_PORT's, or one started here
    (then also its directory, to remove after)."""
    port = os.environ.get("BENCH_REDIS_PORT")
    if port:
        return int(port), None
    import random
    tmp = tempfile.mkdtemp()
    for _ in range(20):
        p = random.randint(20000, 60000)
        subprocess.call(["redis-server", "--port", str(p), "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--dir", tmp, "--daemonize", "yes",
                         "--pidfile", tmp + "/r.pid", "--logfile", tmp + "/r.log"])
        time.sleep(0.2)
        try:
            redis.Redis(port=p).ping()
            return p, tmp
        except Exception:
            pass
    raise RuntimeError("cannot start redis-server")


def stop_redis(conn, tmp):
    if tmp:
        try:
            conn.shutdown(nosave=True)
        except Exception:
            pass
        shutil.rmtree(tmp, ignore_errors=True)


def run_celery(name, unit):
    import common
    try:
        import redis
        import celery
        from celery.result import ResultSet
    except ImportError:
        na(name, unit, "celery", "python3-celery or python3-redis is not installed")
        return
    if not shutil.which("redis-server"):
        na(name, unit, "celery", "redis-server is not installed")
        return
    port, tmp = start_redis(redis)
    conn = redis.Redis(port=port)
    url = "redis://127.0.0.1:%d/0" % port
    qname = "bench%d" % os.getpid()
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, BENCH_CELERY_URL=url, PYTHONPATH=here)
    workers = [subprocess.Popen([sys.executable, "-m", "celery", "-A", "bench_broker", "worker", "--pool", "solo",
                                 "-Q", qname, "-n", "w%d-%s@%%h" % (k, qname), "--without-gossip",
                                 "--without-mingle", "--without-heartbeat", "-l", "WARNING"],
                                cwd=here, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for k in range(2)]
    _, task = celery_app(url)
    for i in range(5):
        assert task.apply_async((i,), queue=qname).get(timeout=60) == i  # workers up
    if name == "broker_rt":
        n = common.size(300, 5)
        times = []
        for i in range(n):
            t0 = common.now()
            assert task.apply_async((i,), queue=qname).get(timeout=60) == i
            times.append((common.now() - t0) * 1e6)
        common.emit(name, unit, [common.median(times)], impl="celery", calls=n, version=celery.__version__)
    else:
        n = common.size(2000, 20)

        def run(_):
            t0 = common.now()
            rs = ResultSet([task.apply_async((i,), queue=qname) for i in range(n)])
            got = rs.join_native(timeout=600)
            assert got == list(range(n))
            return n / (common.now() - t0)
        common.emit(name, unit, common.repeat(3, run), impl="celery", tasks=n, workers=2,
                    version=celery.__version__)
    for w in workers:
        w.terminate()
    for w in workers:
        w.wait()
    for k in conn.scan_iter("celery-task-meta-*"):
        conn.delete(k)
    for k in conn.scan_iter("*%s*" % qname):
        conn.delete(k)
    # results still referenced unsubscribe when collected: while the server is up
    import gc
    gc.collect()
    stop_redis(conn, tmp)


def main():
    import common
    name = common.variant()
    unit = "us" if name == "broker_rt" else "tasks/s"
    # Debian's python3-rq and python3-celery are for the system interpreter.
    if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3") \
            and not os.environ.get("BENCH_BROKER_REEXEC"):
        try:
            import redis  # noqa: F401
        except ImportError:
            os.environ["BENCH_BROKER_REEXEC"] = "1"
            os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    if sys.argv[2:] == ["celery"]:
        run_celery(name, unit)
        return
    try:
        import redis
        import rq
    except ImportError:
        common.na(name, unit, "python3-rq is not installed")
        return
    rqbin = shutil.which("rq")
    if not shutil.which("redis-server") or not rqbin:
        common.na(name, unit, "redis-server or rq is not installed")
        return
    port, tmp = start_redis(redis)
    conn = redis.Redis(port=port)
    qname = "bench%d" % os.getpid()
    q = rq.Queue(qname, connection=conn)
    here = os.path.dirname(os.path.abspath(__file__))
    workers = [subprocess.Popen([sys.executable, rqbin, "worker", "--url", "redis://127.0.0.1:%d/0" % port,
                                 "--path", here, "-q", qname],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(2)]

    def wait(job):
        while True:
            st = job.get_status(refresh=True)
            if st == "finished":
                return job.result
            if st == "failed":
                raise RuntimeError("job failed")
            time.sleep(0.0005)

    for i in range(5):
        assert wait(q.enqueue("bench_broker.echo", i)) == i  # workers up
    if name == "broker_rt":
        n = common.size(100, 5)
        times = []
        for i in range(n):
            t0 = common.now()
            wait(q.enqueue("bench_broker.echo", i))
            times.append((common.now() - t0) * 1e6)
        common.emit(name, unit, [common.median(times)], calls=n)
    else:
        n = common.size(1000, 20)
        reg = rq.registry.FinishedJobRegistry(queue=q)

        def run(_):
            before = reg.count
            t0 = common.now()
            for i in range(n):
                q.enqueue("bench_broker.echo", i)
            while reg.count - before < n:
                time.sleep(0.01)
            return n / (common.now() - t0)
        common.emit(name, unit, common.repeat(3, run), tasks=n, workers=2)
    for w in workers:
        w.terminate()
    for w in workers:
        w.wait()
    for k in conn.scan_iter("rq:*%s*" % qname):
        conn.delete(k)
    stop_redis(conn, tmp)


if __name__ == "__main__":
    main()

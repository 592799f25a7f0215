# bench/py/bench_broker.py -- RQ (python3-rq) on a loopback redis-server,
# two `rq worker` processes: the side of bench/lua/broker.lua.
#   broker_tput  trivial jobs enqueued, then waited for: jobs per second,
#                median of 3 runs (1,000 jobs: RQ forks per job).
#   broker_rt    one job enqueued and waited for, one after another: the
#                median per job, in microseconds.
# The server is BENCH_REDIS_PORT's or one started here.  n/a without rq.
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def echo(x):
    return x


def main():
    import common
    name = common.variant()
    unit = "us" if name == "broker_rt" else "tasks/s"
    try:
        import redis
        import rq
    except ImportError:
        # Debian's python3-rq is for the system interpreter.
        if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3") \
                and not os.environ.get("BENCH_BROKER_REEXEC"):
            os.environ["BENCH_BROKER_REEXEC"] = "1"
            os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
        common.na(name, unit, "python3-rq is not installed")
        return
    rqbin = shutil.which("rq")
    if not shutil.which("redis-server") or not rqbin:
        common.na(name, unit, "redis-server or rq is not installed")
        return
    port = os.environ.get("BENCH_REDIS_PORT")
    tmp = None
    if port:
        port = int(port)
    else:
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
                port = p
                break
            except Exception:
                pass
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
    if tmp:
        try:
            conn.shutdown(nosave=True)
        except Exception:
            pass
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

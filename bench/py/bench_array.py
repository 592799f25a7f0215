# bench/py/bench_array.py -- handing shared memory to a running worker (fork).
# A multiprocessing Array cannot cross a Queue (only inheritance), so the
# Python way to hand shared memory to a running worker is used:
# shared_memory.SharedMemory, whose name travels through a Queue; the child
# attaches it, reads the last double, detaches and sends the value back.
# As in bench/lua/array.lua, a 1 MiB and a 64 MiB block go alternately to the
# same worker, 50 times each; put -> reply.  The figure is the median 64 MiB
# hand-off in microseconds; "median_1m" is the 1 MiB one and "vs_1m" the
# first over the second.
# Usage: python3 bench/py/bench_array.py array
import multiprocessing as mp
import struct
from multiprocessing import shared_memory

import common as b


def worker(jobs, replies):
    while True:
        name = jobs.get()
        if name is None:
            break
        shm = shared_memory.SharedMemory(name)
        v = struct.unpack_from("d", shm.buf, shm.size - 8)[0]
        shm.close()
        replies.put(v)


def make(mib):
    shm = shared_memory.SharedMemory(create=True, size=mib << 20)
    struct.pack_into("d", shm.buf, (mib << 20) - 8, mib + 0.5)
    return shm


def main():
    name = b.variant()
    ctx = mp.get_context("fork")
    small, big = make(1), make(64)
    try:
        jobs, replies = ctx.Queue(), ctx.Queue()
        p = ctx.Process(target=worker, args=(jobs, replies))
        p.start()

        def handoff(shm):
            t0 = b.now()
            jobs.put(shm.name)
            v = replies.get()
            return (b.now() - t0) * 1e6, v

        for _ in range(3):
            assert handoff(small)[1] == 1.5 and handoff(big)[1] == 64.5
        t1, t64 = [], []
        for _ in range(b.size(50, 2)):
            t1.append(handoff(small)[0])
            t64.append(handoff(big)[0])
        jobs.put(None)
        p.join()
    finally:
        for shm in (small, big):
            shm.close()
            shm.unlink()
    b.emit(name, "us", t64, bytes=64 << 20, samples_1m=t1,
           median_1m=b.median(t1), vs_1m=b.median(t64) / b.median(t1),
           note="SharedMemory name through a Queue")


if __name__ == "__main__":
    main()

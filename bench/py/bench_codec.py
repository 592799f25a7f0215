# bench/py/bench_codec.py -- pickle.dumps + pickle.loads of the mixed nested
# structure bench/lua/codec.lua builds (the same records, strings, numbers,
# booleans, lists and dicts), in a loop of about half a second.  The figure
# is MB/s of pickled bytes through one dumps and one loads, median of 5;
# round trips per second are beside it (the ratio is taken on those), and
# dumps and loads timed apart (encode_per_s, decode_per_s).
# The default protocol is used, as multiprocessing does.
# Usage: python3 bench/py/bench_codec.py codec
import pickle

import common as b


def record(i):
    return {
        "id": i, "name": "user-%d" % i, "score": i * 0.5 + 0.25,
        "active": i % 2 == 0,
        "tags": ["alpha", "beta", "gamma"],
        "pos": {"x": i, "y": -i, "z": i * 1.5},
        "history": [i, i + 1, i + 2, i + 3, i + 4],
    }


def main():
    name = b.variant()
    doc = {
        "version": 3, "title": "benchmark document",
        "records": [record(i) for i in range(1, 201)],
        "blob": "ab" * 512, "flags": [True, False, True],
        "meta": {"created": 1700000000, "ratio": 0.75,
                 "nested": {"a": {"b": {"c": {"d": "deep"}}}}},
    }
    s = pickle.dumps(doc)
    assert pickle.loads(s)["records"][199]["pos"]["z"] == 300.0
    size = len(s)

    def calibrate(budget):
        k, t0 = 0, b.now()
        while True:
            pickle.loads(pickle.dumps(doc))
            k += 1
            if b.now() - t0 >= budget / 10:
                return max(1, k * 10)

    k = 1 if b.smoke else calibrate(0.5)
    per_s, enc_s, dec_s = [], [], []

    def run(_):
        t0 = b.now()
        for _ in range(k):
            pickle.loads(pickle.dumps(doc))
        t = b.now() - t0
        per_s.append(k / t)
        t0 = b.now()
        for _ in range(k):
            pickle.dumps(doc)
        enc_s.append(k / (b.now() - t0))
        t0 = b.now()
        for _ in range(k):
            pickle.loads(s)
        dec_s.append(k / (b.now() - t0))
        return k * size / t / 1e6
    samples = b.repeat(5, run)
    b.emit(name, "MB/s", samples, encoded_bytes=size, round_trips=k,
           per_s=b.median(per_s), encode_per_s=b.median(enc_s),
           decode_per_s=b.median(dec_s))

if __name__ == "__main__":
    main()

"""hnswlib baseline for `recsys bench index`: same vectors, same parameters,
one thread. Reads raw float32 files written by the Rust side, builds the
index, prints {"build_per_s": ...} as one JSON line, then answers each line
"<ef>" on stdin with one timed pass over all queries:
{"ef": ..., "qps": ..., "recall": ...}. The Rust side interleaves these
passes with its own, so both see the same machine noise."""
import json, sys, time
import numpy as np
import hnswlib

d = json.load(open(sys.argv[1]))
dim, space = d["dim"], d["space"]
data = np.fromfile(d["data"], dtype=np.float32).reshape(-1, dim)
queries = np.fromfile(d["queries"], dtype=np.float32).reshape(-1, dim)
truth = np.fromfile(d["truth"], dtype=np.uint32).reshape(len(queries), -1)
k = d["k"]

index = hnswlib.Index(space=space, dim=dim)
index.init_index(max_elements=len(data), M=d["m"], ef_construction=d["ef_construction"], random_seed=1)
index.set_num_threads(1)
t = time.perf_counter()
index.add_items(data, np.arange(len(data)), num_threads=1)
build_s = time.perf_counter() - t
print(json.dumps({"build_per_s": len(data) / build_s}), flush=True)
for line in sys.stdin:
    ef = int(line)
    index.set_ef(ef)
    t = time.perf_counter()
    labels, _ = index.knn_query(queries, k=k, num_threads=1)
    qps = len(queries) / (time.perf_counter() - t)
    hits = sum(len(set(labels[i]) & set(truth[i][:k])) for i in range(len(queries)))
    print(json.dumps({"ef": ef, "qps": qps, "recall": hits / (k * len(queries))}), flush=True)

"""implicit's ALS on the matrix `recsys bench als` wrote: prints one JSON
line with the seconds of every iteration (implicit 0.7, CPU, float32,
conjugate gradient, the same factors, regularization, alpha and threads)."""
import json, sys, time

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits
import implicit
from implicit.cpu.als import AlternatingLeastSquares

spec = json.load(open(sys.argv[1]))
ptr = np.fromfile(spec["ptr"], dtype=np.int64)
cols = np.fromfile(spec["cols"], dtype=np.int32)
vals = np.fromfile(spec["vals"], dtype=np.float32)
m = sp.csr_matrix((vals, cols, ptr), shape=(len(ptr) - 1, spec["items"]))
stamps = []
with threadpool_limits(1, "blas"):
    model = AlternatingLeastSquares(
        factors=spec["factors"],
        regularization=spec["regularization"],
        alpha=spec["alpha"],
        iterations=spec["iterations"],
        use_cg=True,
        calculate_training_loss=False,
        num_threads=spec["threads"],
        random_state=1,
        dtype=np.float32,
    )
    start = time.perf_counter()
    stamps.append(start)
    model.fit(m, show_progress=False, callback=lambda it, elapsed, loss: stamps.append(time.perf_counter()))
print(json.dumps({
    "version": implicit.__version__,
    "iteration_seconds": [b - a for a, b in zip(stamps, stamps[1:])],
}))

"""Copy me: a catalog, a user, recommendations. Needs a Redis with the module:

    redis-server --loadmodule target/release/librecsys.so
    python examples/quickstart.py [port]
"""

import sys

import numpy as np
import redis

from redis_recsys import Recsys

port = int(sys.argv[1]) if len(sys.argv) > 1 else 6379
rs = Recsys(redis.Redis(port=port, protocol=3))
rng = np.random.default_rng(0)

if rs.client.exists("demo:items"):
    rs.client.delete("demo:items")
rs.create("demo:items", dim=16)
ids = [f"item:{i}" for i in range(1000)]
rs.set_items("demo:items", ids, rng.normal(size=(1000, 16)),
             attrs=[{"price": int(p)} for p in rng.integers(1, 200, 1000)])
for item in ("item:1", "item:2", "item:3"):
    rs.event("demo:items", "demo:user:1", item, type="view")
recs = rs.recommend("demo:items", "demo:user:1", k=5, exclude_seen=True, where="price < 50")
for hit in recs.hits:
    print(f"{hit.id}\t{hit.score:.3f}\t{rs.get_item('demo:items', hit.id).attrs}")

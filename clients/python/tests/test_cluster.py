"""The client through redis-py's RedisCluster, on a real 3-master cluster.

Every helper with catalog and users under one hash tag, then a catalog and
10,000 users with no hash tag: RECOMMEND and EVENT declare only the user
key in a cluster, so RedisCluster sends each to the user's node, which
serves it from its copy of the catalog (docs/cluster.md). The client sends
one-dot command names (RECSYS.ITEM_SET), which RedisCluster accepts; it
refuses two-dot names client-side.
"""

import os
import random
import shutil
import socket
import subprocess
import tempfile
import time

import numpy as np
import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from redis_recsys import Recsys

from .conftest import ROOT, wait_for_server


def _free_cluster_port() -> int:
    """A port that is free, and whose cluster bus port (+10000) is free too."""
    rng = random.Random()
    while True:
        port = rng.randrange(20000, 50000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue


@pytest.fixture(scope="module")
def cluster():
    module = os.environ.get("RECSYS_MODULE") or str(ROOT / "target/release/librecsys.so")
    binary = os.environ.get("RECSYS_REDIS_SERVER") or "redis-server"
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is needed to create the cluster")
    procs, ports = [], []
    with tempfile.TemporaryDirectory() as d:
        try:
            for i in range(3):
                port = _free_cluster_port()
                node_dir = os.path.join(d, str(i))
                os.mkdir(node_dir)
                procs.append(subprocess.Popen(
                    [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                     "--dir", node_dir, "--cluster-enabled", "yes",
                     "--cluster-config-file", "nodes.conf", "--loadmodule", module],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                ports.append(port)
            for port, proc in zip(ports, procs):
                wait_for_server(port, proc)
            subprocess.run([cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in ports],
                            "--cluster-yes"], check=True, capture_output=True)
            deadline = time.time() + 30
            while not all(b"cluster_state:ok" in redis.Redis(port=p).execute_command("CLUSTER", "INFO")
                          for p in ports):
                if time.time() > deadline:
                    raise RuntimeError("cluster did not become ok")
                time.sleep(0.1)
            yield ports
        finally:
            for p in procs:
                p.kill()
                p.wait()


def test_every_helper_through_redis_cluster(cluster):
    rc = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in cluster])
    rs = Recsys(rc)
    rs.create("{shop}:items", dim=4)
    rng = np.random.default_rng(1)
    ids = [f"sku:{i}" for i in range(50)]
    assert rs.set_items("{shop}:items", ids, rng.normal(size=(50, 4)),
                        attrs=[{"price": i} for i in range(50)]) == 50
    assert rs.set_item("{shop}:items", "sku:new", [1, 0, 0, 0]) is True
    rs.set_attrs("{shop}:items", "sku:new", {"price": 1})
    assert rs.get_item("{shop}:items", "sku:new").attrs == {"price": 1}
    assert rs.info("{shop}:items")["items"] == 51
    rs.event("{shop}:items", "{shop}:user:1", "sku:1")
    recs = rs.recommend("{shop}:items", "{shop}:user:1", k=5, exclude_seen=True, where="price < 40")
    assert len(recs.hits) == 5 and "sku:1" not in recs.ids
    assert len(rs.search("{shop}:items", [1, 0, 0, 0], k=3)) == 3
    assert rs.delete_items("{shop}:items", "sku:new") == 1
    rc.close()


def test_users_on_every_node_through_redis_cluster(cluster):
    rc = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", p) for p in cluster])
    rs = Recsys(rc)
    rs.create("shop", dim=8)
    rng = np.random.default_rng(2)
    items = rng.normal(size=(300, 8)).astype(np.float32)
    assert rs.set_items("shop", [f"item:{i}" for i in range(300)], items) == 300
    users = [f"user:{u}" for u in range(10_000)]
    vectors = rng.normal(size=(len(users), 8)).astype(np.float32)
    pipe = rc.pipeline()
    for u, v in zip(users, vectors):
        pipe.hset(u, "emb", v.tobytes())
    pipe.execute()
    # Every master serves the catalog from its copy within a second or so.
    for port in cluster:
        node_user = next(u for u in users if rc.get_node_from_key(u).port == port)
        deadline = time.time() + 30
        while True:
            try:
                if len(rs.recommend("shop", node_user, k=5).ids) == 5:
                    break
            except (redis.exceptions.ResponseError, redis.exceptions.TryAgainError):
                pass
            assert time.time() < deadline, f"no copy serving on {port}"
            time.sleep(0.1)
    moved = sum(_redirections(p) for p in cluster)
    served = 0
    for u in users:
        served += len(rs.recommend("shop", u, k=5).ids) == 5
    assert served == len(users)
    assert sum(_redirections(p) for p in cluster) == moved, "no MOVED or ASK"
    assert len({rc.get_node_from_key(u).port for u in users}) == len(cluster)
    # EVENT lands on the user's node too, and EXCLUDE_SEEN sees it there.
    first = rs.recommend("shop", users[7], k=1).ids[0]
    rs.event("shop", users[7], first)
    assert first not in rs.recommend("shop", users[7], k=5, exclude_seen=True).ids
    rc.close()


def _redirections(port: int) -> int:
    """MOVED and ASK answers a node has given (INFO errorstats)."""
    stats = redis.Redis(port=port).info("errorstats")
    return sum(v["count"] for k, v in stats.items() if k in ("errorstat_MOVED", "errorstat_ASK"))

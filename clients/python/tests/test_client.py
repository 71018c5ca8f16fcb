"""The client against a real server, in RESP2 and RESP3, decoded or not."""

import numpy as np
import pytest
import redis
import redis.asyncio

from pathlib import Path

from redis_recsys import AsyncRecsys, Hit, Item, Recsys

ROOT = Path(__file__).resolve().parents[3]

VECTORS = {
    "sku:1": [0.1, 0.9, 0.0, 0.2],
    "sku:2": [0.2, 0.8, 0.1, 0.1],
    "sku:3": [0.9, 0.1, 0.3, 0.0],
    "sku:4": [0.3, 0.7, 0.2, 0.1],
}
ATTRS = [{"category": "shoes", "price": 59}, None, {"price": 120}, {"category": "socks", "price": 9}]


def shop(rs: Recsys) -> None:
    rs.create("shop", dim=4)
    ids = list(VECTORS)
    assert rs.set_items("shop", ids, np.array(list(VECTORS.values())), attrs=ATTRS) == 4


def test_items_round_trip_as_numpy(client):
    rs = Recsys(client)
    shop(rs)
    it = rs.get_item("shop", "sku:1")
    assert isinstance(it, Item) and it.vector.dtype == np.float32
    v = np.array(VECTORS["sku:1"], dtype=np.float32)
    assert np.allclose(it.vector, v / np.linalg.norm(v), atol=1e-6)
    assert it.attrs == {"category": "shoes", "price": 59}
    assert rs.get_item("shop", "nothing") is None
    assert rs.info("shop")["items"] == 4
    assert rs.set_item("shop", "sku:5", np.ones(4), attrs={"price": 1}) is True
    assert rs.delete_items("shop", "sku:5", "nothing") == 1


def test_search_and_similar_return_scored_hits(client):
    rs = Recsys(client)
    shop(rs)
    found = rs.search("shop", np.array([0.1, 1, 0, 0.1]), k=2)
    assert [h.id for h in found] == ["sku:1", "sku:2"]
    assert all(isinstance(h, Hit) and 0.9 < h.score <= 1.0 for h in found)
    assert rs.similar("shop", "sku:1", k=1)[0].id == "sku:2"


def test_recommend_with_events_filters_and_explain(client):
    rs = Recsys(client)
    shop(rs)
    assert rs.event("shop", "user:42", "sku:1", type="view") == 1
    recs = rs.recommend("shop", "user:42", k=2, exclude_seen=True, where="price < 100")
    assert recs.ids == ["sku:4"]  # sku:2 has no price, sku:3 costs 120
    assert recs.explain is None
    recs = rs.recommend("shop", "user:42", k=2, explain=True)
    assert len(recs.hits) == 2 and recs.explain["user_vector"].startswith("mean of")
    # A vector given by the caller, and a user embedding stored in the hash.
    assert rs.recommend("shop", "anyone", k=1, vector=[0.9, 0.1, 0.3, 0]).ids == ["sku:3"]
    rs.set_user("user:7", embedding=np.array([0.9, 0.1, 0.3, 0.0]), age=31)
    assert rs.recommend("shop", "user:7", k=1).ids == ["sku:3"]
    # EXCLUDE drops listed ids; MIN_SCORE is a similarity floor (cosine <= 1).
    assert "sku:3" not in rs.recommend("shop", "user:7", k=1, exclude=["sku:3", "nope"]).ids
    assert rs.recommend("shop", "user:7", k=2, min_score=1.5).ids == []
    # Examples: "more like sku:3" without a user, never sku:3 itself.
    like = rs.recommend("shop", "-", k=2, positive=["sku:3"], explain=True)
    assert "sku:3" not in like.ids and like.explain["examples_used"] == 1
    both = rs.recommend(
        "shop", "-", k=2, positive={"sku:3": 2.0, "nope": 1}, negative=[("sku:1", 1.0)],
        strategy="BEST_SCORE", explain=True,
    )
    assert both.explain["examples_missing"] == 1 and "sku:1" not in both.ids
    # Sources merged by RRF, each hit saying where it came from; FALLBACK fills K.
    mixed = rs.recommend(
        "shop", "user:7", k=3, sources=[("user", 2), ("popular", 2)], merge="RRF",
        fallback="popular", with_source=True,
    )
    assert len(mixed.hits) == 3 and all(h.source in ("user", "popular", "fallback") for h in mixed.hits)
    # NOREPEAT: a refresh serves new items.
    first = rs.recommend("shop", "user:7", k=2, norepeat=1).ids
    second = rs.recommend("shop", "user:7", k=2, norepeat=1).ids
    assert len(first) == 2 and not set(first) & set(second)


def test_errors_are_redis_errors_with_the_reason(client):
    rs = Recsys(client)
    shop(rs)
    with pytest.raises(redis.ResponseError, match="DIM"):
        rs.search("shop", [1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="finite"):
        rs.set_item("shop", "bad", [np.nan, 0, 0, 0])
    with pytest.raises(TypeError):
        rs.recommend("shop", "u", k="10")


def test_batch_writes_lists(client):
    rs = Recsys(client)
    shop(rs)
    for u in range(5):
        rs.set_user(f"user:{u}", embedding=np.array(VECTORS["sku:3"]))
    job = rs.batch("shop", "user:*", 2, "recs:")
    import time

    for _ in range(200):
        status = rs.batch_status(job)
        if status["state"] != "running":
            break
        time.sleep(0.05)
    assert status["state"] == "done" and status["written"] == 5
    assert status["slots"] == "0-16383"
    assert client.lrange("recs:{user:0}", 0, -1)[0] in (b"sku:3", "sku:3")


@pytest.mark.parametrize("protocol", [2, 3])
async def test_async_client(server, protocol):
    r = redis.asyncio.Redis(port=server, protocol=protocol)
    await r.flushall()
    rs = AsyncRecsys(r)
    await rs.create("shop", dim=4)
    await rs.set_items("shop", list(VECTORS), np.array(list(VECTORS.values())))
    await rs.event("shop", "u", "sku:3")
    recs = await rs.recommend("shop", "u", k=2, exclude_seen=True)
    assert recs.ids[0] != "sku:3" and len(recs.ids) == 2
    await r.aclose()


def test_user_hash_reads_as_text_after_events(client, server):
    """redis-py with decode_responses=True (the common setup) reads the hash RECSYS.EVENT writes."""
    rs = Recsys(client)
    shop(rs)
    rs.event("shop", "user:text", "sku:1")
    rs.event("shop", "user:text", "sku:2")
    text = redis.Redis(port=server, decode_responses=True)
    fields = text.hgetall("user:text")
    assert fields["seen"].startswith("b") and fields["recent"] == '["sku:2","sku:1"]'


def test_ab_test_of_two_plugins(client):
    """An experiment of two plugins: users split by a stable hash, each
    variant's plugin applied, clicks credited by request id, and a report
    that finds the variant users click more."""
    rs = Recsys(client)
    shop(rs)
    dist = ROOT / "plugins" / "dist"
    rs.load_plugin("boost-sponsored", (dist / "boost-sponsored.wasm").read_bytes(), replace=True)
    rs.load_plugin("exclude-attr", (dist / "exclude-attr.wasm").read_bytes(), replace=True)
    rs.set_attrs("shop", "sku:3", {"price": 120, "sponsored": 1})
    assert rs.set_experiment("shop", "plugins", {
        "boost": (50, "ORDER boost-sponsored ARGS sponsored:5"),
        "hide": (50, "FILTER exclude-attr ARGS category=shoes"),
    })
    with pytest.raises(redis.ResponseError, match="no plugin named 'nope'"):
        rs.set_experiment("shop", "bad", {"a": (1, "ORDER nope")})
    served = {"boost": 0, "hide": 0}
    for u in range(400):
        user = f"user:{u}"
        recs = rs.recommend("shop", user, k=2, vector=[0.1, 0.9, 0, 0.2], experiment="plugins")
        assert recs.variant in served and recs.request_id.startswith("plugins:")
        again = rs.recommend("shop", user, k=1, vector=[0.1, 0.9, 0, 0.2], experiment="plugins")
        assert again.variant == recs.variant and again.request_id != recs.request_id
        served[recs.variant] += 1
        if recs.variant == "boost":
            assert recs.ids[0] == "sku:3"  # the sponsored item first
        else:
            assert "sku:1" not in recs.ids  # shoes hidden
        # Simulated users click the boosted list far more often.
        if (recs.variant == "boost" and u % 2 == 0) or (recs.variant == "hide" and u % 10 == 0):
            rs.event("shop", user, recs.ids[0], type="click", request=recs.request_id)
    assert 150 < served["boost"] < 250
    report = rs.experiment_report("shop", "plugins")
    boost, hide = report["variants"]
    assert report["control"] == "boost" and boost["name"] == "boost"
    assert boost["impressions"] + hide["impressions"] == 800  # two requests per user
    assert boost["clicks"] > hide["clicks"] and hide["ctr_significant"] == 1
    assert hide["ctr_lift"] < 0 and hide["ctr_p_value"] < 0.05
    assert boost["ctr_low"] <= boost["ctr"] <= boost["ctr_high"]
    assert rs.delete_experiment("shop", "plugins") == 1

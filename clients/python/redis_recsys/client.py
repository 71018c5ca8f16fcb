"""`Recsys` and `AsyncRecsys`: the RECSYS.* commands as methods.

Each method builds its command and a parser once (in `_Commands`); the sync
client runs them on a `redis.Redis`, the async one on a `redis.asyncio.Redis`.
Numbers are sent as text and vectors as FP32 blobs, so the module's replies
are the only binary data and no reply depends on `decode_responses`.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .types import Hit, Item, Recommendations, as_dict, hits, item, plain, text, to_blob

Plugin = Union[str, Tuple[str, str]]
# Example items: ids, (id, weight) pairs, or a dict id -> weight.
Examples = Union[Sequence[Union[str, Tuple[str, float]]], Dict[str, float]]


def _num(x: Union[int, float]) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise TypeError(f"expected a number, got {x!r}")
    return repr(float(x)) if isinstance(x, (float, np.floating)) else str(int(x))


def _attrs(a: Optional[Dict[str, Any]]) -> Optional[str]:
    return None if a is None else json.dumps(a, separators=(",", ":"))


def _plugin(keyword: str, p: Plugin) -> List[Any]:
    name, args = (p, None) if isinstance(p, str) else p
    return [keyword, name] + (["ARGS", args] if args is not None else [])


def _examples(keyword: str, examples: Examples) -> List[Any]:
    pairs = list(examples.items()) if isinstance(examples, dict) else list(examples)
    if not pairs:
        return []
    a: List[Any] = [keyword, _num(len(pairs))]
    for e in pairs:
        if isinstance(e, str):
            a.append(e)
        else:
            a += [e[0], "WEIGHT", _num(e[1])]
    return a


class _Commands:
    """Command construction and reply parsing shared by both clients."""

    def _run(self, args: List[Any], parse: Callable[[Any], Any]) -> Any:  # pragma: no cover
        raise NotImplementedError

    # Catalogs -------------------------------------------------------------

    def create(
        self,
        key: str,
        dim: int,
        metric: str = "COSINE",
        m: Optional[int] = None,
        ef_construction: Optional[int] = None,
        ef_search: Optional[int] = None,
        quant: Optional[str] = None,
        session: Optional[Tuple[int, float]] = None,
    ) -> Any:
        """RECSYS.CREATE: a catalog of `dim`-dimensional vectors."""
        args: List[Any] = ["RECSYS.CREATE", key, "DIM", _num(dim), "METRIC", metric]
        for kw, v in (("M", m), ("EF_CONSTRUCTION", ef_construction), ("EF_SEARCH", ef_search)):
            if v is not None:
                args += [kw, _num(v)]
        if quant is not None:
            args += ["QUANT", quant]
        if session is not None:
            args += ["SESSION", _num(session[0]), _num(session[1])]
        return self._run(args, lambda r: True)

    def info(self, key: str) -> Any:
        """RECSYS.INFO as a dict."""
        return self._run(["RECSYS.INFO", key], lambda r: plain(as_dict(r)))

    def set_item(self, key: str, id: str, vector: Any, attrs: Optional[Dict[str, Any]] = None) -> Any:
        """RECSYS.ITEM_SET; True when the item is new."""
        args = ["RECSYS.ITEM_SET", key, id, "FP32", to_blob(vector)]
        if attrs is not None:
            args += ["ATTRS", _attrs(attrs)]
        return self._run(args, lambda r: bool(r))

    def set_items(
        self,
        key: str,
        ids: Sequence[str],
        vectors: Any,
        attrs: Optional[Sequence[Optional[Dict[str, Any]]]] = None,
    ) -> Any:
        """RECSYS.ITEM_MSET of a (n, dim) array: all or nothing; returns how many were new."""
        matrix = np.asarray(vectors, dtype="<f4")
        if matrix.ndim != 2 or matrix.shape[0] != len(ids):
            raise ValueError(f"expected {len(ids)} rows of vectors, got shape {matrix.shape}")
        if attrs is not None and len(attrs) != len(ids):
            raise ValueError(f"expected {len(ids)} attribute dicts, got {len(attrs)}")
        args: List[Any] = ["RECSYS.ITEM_MSET", key]
        if attrs is not None:
            args.append("WITHATTRS")
        for i, id in enumerate(ids):
            args += [id, to_blob(matrix[i])]
            if attrs is not None:
                args.append(_attrs(attrs[i]) or "{}")
        return self._run(args, int)

    def set_attrs(self, key: str, id: str, attrs: Dict[str, Any]) -> Any:
        """RECSYS.ITEM_SETATTRS: replaces the attributes, keeps vector and popularity."""
        return self._run(["RECSYS.ITEM_SETATTRS", key, id, _attrs(attrs)], lambda r: True)

    def get_item(self, key: str, id: str) -> Any:
        """RECSYS.ITEM_GET as an `Item`, or None."""
        return self._run(["RECSYS.ITEM_GET", key, id], lambda r: item(id, r))

    def delete_items(self, key: str, *ids: str) -> Any:
        """RECSYS.ITEM_DEL; returns how many existed."""
        return self._run(["RECSYS.ITEM_DEL", key, *ids], int)

    def search(self, key: str, vector: Any, k: int = 10, ef: Optional[int] = None) -> Any:
        """RECSYS.SEARCH: the `k` nearest items, with scores."""
        args: List[Any] = ["RECSYS.SEARCH", key, _num(k), "FP32", to_blob(vector)]
        if ef is not None:
            args += ["EF", _num(ef)]
        return self._run(args + ["WITHSCORES"], lambda r: hits(r, True))

    def similar(self, key: str, id: str, k: int = 10, ef: Optional[int] = None) -> Any:
        """RECSYS.SIMILAR: items nearest to an item, with scores."""
        args: List[Any] = ["RECSYS.SIMILAR", key, id, _num(k)]
        if ef is not None:
            args += ["EF", _num(ef)]
        return self._run(args + ["WITHSCORES"], lambda r: hits(r, True))

    # Users and recommendations ----------------------------------------------

    def set_user(self, user: str, embedding: Any = None, **fields: Any) -> Any:
        """HSET of a user hash: `emb` as an FP32 blob, other fields as text."""
        mapping: Dict[str, Any] = {k: (v if isinstance(v, (str, bytes)) else _num(v)) for k, v in fields.items()}
        if embedding is not None:
            mapping["emb"] = to_blob(embedding)
        if not mapping:
            raise ValueError("nothing to set")
        args: List[Any] = ["HSET", user]
        for k, v in mapping.items():
            args += [k, v]
        return self._run(args, int)

    def event(
        self,
        catalog: str,
        user: str,
        id: str,
        type: Optional[str] = None,
        weight: Optional[float] = None,
        ts: Optional[int] = None,
        request: Optional[str] = None,
    ) -> Any:
        """RECSYS.EVENT: records an interaction; returns the user's recent-item count.

        request: the request id of the recommendation the event answers
        (``Recommendations.request_id``); a click or purchase is credited to
        the experiment variant that served it.
        """
        args: List[Any] = ["RECSYS.EVENT", catalog, user, id]
        if type is not None:
            args += ["TYPE", type]
        if weight is not None:
            args += ["WEIGHT", _num(weight)]
        if ts is not None:
            args += ["TS", _num(ts)]
        if request is not None:
            args += ["REQUEST", request]
        return self._run(args, int)

    @staticmethod
    def _pipeline_options(
        candidates: Optional[int] = None,
        ef: Optional[int] = None,
        where: Optional[str] = None,
        exclude_seen: bool = False,
        rank: Optional[str] = None,
        filters: Iterable[Plugin] = (),
        order: Optional[Plugin] = None,
        fail_open: bool = False,
        softmax: Optional[float] = None,
        seed: Optional[int] = None,
        diversity: Optional[Tuple[str, int]] = None,
        session: Optional[Tuple[int, float]] = None,
        sequence: Optional[float] = None,
        exclude: Sequence[str] = (),
        min_score: Optional[float] = None,
        positive: Examples = (),
        negative: Examples = (),
        strategy: Optional[str] = None,
        sources: Sequence[Tuple[str, int]] = (),
        merge: Optional[str] = None,
        fallback: Optional[str] = None,
    ) -> List[Any]:
        a: List[Any] = []
        if candidates is not None:
            a += ["CANDIDATES", _num(candidates)]
        if ef is not None:
            a += ["EF", _num(ef)]
        if where is not None:
            a += ["WHERE", where]
        if exclude_seen:
            a.append("EXCLUDE_SEEN")
        if rank is not None:
            a += ["RANK", rank]
        for f in filters:
            a += _plugin("FILTER", f)
        if order is not None:
            a += _plugin("ORDER", order)
        if fail_open:
            a.append("FAILOPEN")
        if softmax is not None:
            a += ["SOFTMAX", _num(softmax)]
            if seed is not None:
                a += ["SEED", _num(seed)]
        if diversity is not None:
            a += ["DIVERSITY", diversity[0], _num(diversity[1])]
        if session is not None:
            a += ["SESSION", _num(session[0]), _num(session[1])]
        if sequence is not None:
            a += ["SEQUENCE", _num(sequence)]
        if exclude:
            ids = list(exclude)
            a += ["EXCLUDE", _num(len(ids)), *ids]
        if min_score is not None:
            a += ["MIN_SCORE", _num(min_score)]
        a += _examples("POSITIVE", positive) + _examples("NEGATIVE", negative)
        if strategy is not None:
            a += ["STRATEGY", strategy]
        if sources:
            a += ["SOURCES", _num(len(sources))]
            for name, share in sources:
                a += [name, _num(share)]
        if merge is not None:
            a += ["MERGE", merge]
        if fallback is not None:
            a += ["FALLBACK", fallback]
        return a

    def recommend(
        self,
        catalog: str,
        user: str,
        k: int = 10,
        vector: Any = None,
        explain: bool = False,
        with_source: bool = False,
        experiment: Optional[str] = None,
        norepeat: Optional[int] = None,
        **options: Any,
    ) -> Any:
        """RECSYS.RECOMMEND: user vector, retrieval, filters, ranking, ordering.

        Options: candidates, ef, where, exclude_seen, rank, filters (names or
        (name, args) pairs), order, fail_open, softmax, seed, diversity
        ((attribute, max)), session ((items, weight)), sequence (the sequence
        model's weight), exclude (ids never returned), min_score (a
        similarity floor), positive / negative (example ids: a list of ids,
        of (id, weight) pairs, or a dict id -> weight) and strategy
        ("AVERAGE" or "BEST_SCORE"), sources ((name, share) pairs: "user",
        "similar", "popular"), merge ("RRF" or "SCORE"), fallback
        ("popular" or "latest"). A user key that holds no hash ("-") recommends from the
        examples alone. with_source: each hit's .source says which source
        found it. experiment: serve with this experiment's variant for the
        user; the answer's .request_id and .variant say which (pass
        request_id to event() to credit clicks). norepeat: n, do not serve
        what the user's last n such requests served (a refresh shows new
        items; the module records them in the user hash).
        """
        args: List[Any] = ["RECSYS.RECOMMEND", catalog, user, "K", _num(k)]
        if vector is not None:
            args += ["VECTOR", to_blob(vector)]
        args += self._pipeline_options(**options) + ["WITHSCORES"]
        if with_source:
            args.append("WITHSOURCE")
        if explain:
            args.append("EXPLAIN")
        if experiment is not None:
            args += ["EXPERIMENT", experiment]
        if norepeat is not None:
            args += ["NOREPEAT", _num(norepeat)]

        def parse(r: Any) -> Recommendations:
            if not explain and experiment is None:
                return Recommendations(hits(r, True))
            m = as_dict(r)
            return Recommendations(
                hits(m["items"], True),
                plain(as_dict(m["explain"])) if explain else None,
                text(m["request"]) if experiment is not None else None,
                text(m["variant"]) if experiment is not None else None,
            )

        return self._run(args, parse)

    def batch(self, catalog: str, match: str, k: int, into: str, ttl: Optional[int] = None, **options: Any) -> Any:
        """RECSYS.BATCH: recommendations for every matching user into lists at
        `into{userkey}`; returns the job id (batch_status has the slots it covers)."""
        args: List[Any] = ["RECSYS.BATCH", catalog, "MATCH", match, "K", _num(k), "INTO", into]
        if ttl is not None:
            args += ["TTL", _num(ttl)]
        return self._run(args + self._pipeline_options(**options), lambda r: int(as_dict(r)["id"]))

    def batch_status(self, id: int) -> Any:
        """RECSYS.BATCH_STATUS of one job, as a dict."""
        return self._run(["RECSYS.BATCH_STATUS", _num(id)], lambda r: plain(as_dict(r)))

    # Experiments ---------------------------------------------------------------

    def set_experiment(self, catalog: str, name: str, variants: Mapping[str, Tuple[int, str]]) -> Any:
        """RECSYS.EXPERIMENT_SET: variants as name -> (weight, RECOMMEND options),
        the first being the control; replaces an experiment of that name and
        its counts. Options are checked now (plugins and models must exist)."""
        args: List[Any] = ["RECSYS.EXPERIMENT_SET", catalog, name]
        for variant, (weight, opts) in variants.items():
            args += ["VARIANT", variant, "WEIGHT", _num(weight), "OPTIONS", opts]
        return self._run(args, lambda r: True)

    def experiment_report(self, catalog: str, name: str) -> Any:
        """RECSYS.EXPERIMENT_REPORT as a dict: per variant users, impressions,
        clicks, purchases, ctr with ctr_low / ctr_high (95%), and against the
        control ctr_lift, ctr_p_value, ctr_significant (and the same for
        purchase_rate)."""
        text_fields = ("experiment", "control", "name", "options")

        def numbers(m: Dict[str, Any]) -> Dict[str, Any]:
            # RESP2 sends doubles as text.
            return {k: v if k in text_fields or not isinstance(v, str) else float(v) for k, v in m.items()}

        def parse(r: Any) -> Dict[str, Any]:
            m = as_dict(r)
            out = numbers({k: plain(v) for k, v in m.items() if k != "variants"})
            out["variants"] = [numbers(plain(as_dict(v))) for v in m["variants"]]
            return out

        return self._run(["RECSYS.EXPERIMENT_REPORT", catalog, name], parse)

    def delete_experiment(self, catalog: str, name: str) -> Any:
        """RECSYS.EXPERIMENT_DEL: 1 when it existed."""
        return self._run(["RECSYS.EXPERIMENT_DEL", catalog, name], int)

    # Code: plugins and models -----------------------------------------------

    def load_plugin(self, name: str, component: bytes, replace: bool = False) -> Any:
        """RECSYS.PLUGIN_LOAD of a WebAssembly component."""
        return self._run(["RECSYS.PLUGIN_LOAD", name, component] + (["REPLACE"] if replace else []), lambda r: True)

    def set_model(
        self,
        catalog: str,
        name: str,
        kind: str,
        model: bytes,
        schema: Union[str, Sequence[str]],
        role: str = "RANK",
    ) -> Any:
        """RECSYS.MODEL_SET: an ONNX or DLRM model with its feature schema."""
        tokens = schema.split() if isinstance(schema, str) else list(schema)
        return self._run(
            ["RECSYS.MODEL_SET", catalog, name, kind, model, "ROLE", role, "SCHEMA", *tokens],
            lambda r: True,
        )


class Recsys(_Commands):
    """The RECSYS.* commands over a `redis.Redis` (RESP2 or RESP3)."""

    def __init__(self, client: Any):
        self.client = client

    def _run(self, args: List[Any], parse: Callable[[Any], Any]) -> Any:
        return parse(self.client.execute_command(*args))


class AsyncRecsys(_Commands):
    """The RECSYS.* commands over a `redis.asyncio.Redis`; every method is awaitable."""

    def __init__(self, client: Any):
        self.client = client

    async def _run(self, args: List[Any], parse: Callable[[Any], Any]) -> Any:  # type: ignore[override]
        return parse(await self.client.execute_command(*args))


__all__ = ["Recsys", "AsyncRecsys", "Hit", "Item", "Recommendations", "text"]

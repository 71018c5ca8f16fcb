"""Typed results, and turning either protocol's replies into them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np


class RecsysError(Exception):
    """A reply the client cannot interpret."""


@dataclass(frozen=True)
class Hit:
    """An item id and, when asked for, its score and the source that found it."""

    id: str
    score: Optional[float] = None
    source: Optional[str] = None


@dataclass
class Item:
    """An item as stored: its vector (unit length in COSINE catalogs) and attributes."""

    id: str
    vector: np.ndarray
    attrs: Optional[Dict[str, Any]] = None


@dataclass
class Recommendations:
    """RECSYS.RECOMMEND's answer: ranked hits, EXPLAIN's facts when asked
    for, and with an experiment the request id and the variant served."""

    hits: List[Hit]
    explain: Optional[Dict[str, Any]] = field(default=None)
    request_id: Optional[str] = None
    variant: Optional[str] = None

    @property
    def ids(self) -> List[str]:
        return [h.id for h in self.hits]


def text(v: Any) -> Any:
    """Bytes to str (replies with decode_responses off); other values as they are."""
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", errors="replace")
    return v


def as_dict(v: Any) -> Dict[str, Any]:
    """A RESP3 map (dict) or a RESP2 flat array of pairs, as a dict of str keys."""
    if isinstance(v, dict):
        return {text(k): val for k, val in v.items()}
    if isinstance(v, (list, tuple)) and len(v) % 2 == 0:
        return {text(v[i]): v[i + 1] for i in range(0, len(v), 2)}
    raise RecsysError(f"expected a map reply, got {v!r}")


def to_blob(vector: Any, dim: Optional[int] = None) -> bytes:
    """A vector (numpy array, list) as the FP32 little-endian blob the module reads."""
    arr = np.asarray(vector, dtype="<f4")
    if arr.ndim != 1:
        raise ValueError(f"a vector must be one-dimensional, got shape {arr.shape}")
    if dim is not None and arr.shape[0] != dim:
        raise ValueError(f"vector has {arr.shape[0]} components, the catalog's DIM is {dim}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("vector components must be finite")
    return arr.tobytes()


def hits(reply: Any, with_scores: bool) -> List[Hit]:
    """SEARCH/SIMILAR/RECOMMEND items: ids, or id -> score (map in RESP3, pairs in RESP2)."""
    if with_scores:
        out = []
        for k, s in as_dict(reply).items():
            if isinstance(s, (list, tuple)):  # WITHSOURCE: [score, source]
                out.append(Hit(text(k), float(text(s[0])), text(s[1])))
            else:
                out.append(Hit(text(k), float(text(s))))
        return out
    return [Hit(text(x)) for x in reply]


def item(id: str, reply: Any) -> Optional[Item]:
    if reply is None:
        return None
    m = as_dict(reply)
    vector = np.array([float(text(x)) for x in m["vector"]], dtype=np.float32)
    attrs = m.get("attrs")
    return Item(id, vector, json.loads(text(attrs)) if attrs is not None else None)


def plain(v: Any) -> Any:
    """A reply tree with str keys and values (maps as dicts)."""
    if isinstance(v, (bytes, bytearray)):
        return text(v)
    if isinstance(v, dict):
        return {text(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v

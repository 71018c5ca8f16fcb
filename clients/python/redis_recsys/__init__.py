"""Python client for the redis-recsys Redis module.

    import redis, numpy as np
    from redis_recsys import Recsys

    rs = Recsys(redis.Redis(protocol=3))
    rs.create("shop", dim=4)
    rs.set_item("shop", "sku:1", np.array([0.1, 0.9, 0, 0.2]), attrs={"price": 59})
    rs.recommend("shop", "user:42", k=10, where="price < 100")

`AsyncRecsys` does the same over `redis.asyncio`. Works with RESP2 and RESP3
and with `decode_responses` on or off.
"""

from .client import AsyncRecsys, Recsys
from .types import Hit, Item, Recommendations, RecsysError

__all__ = ["Recsys", "AsyncRecsys", "Hit", "Item", "Recommendations", "RecsysError"]
__version__ = "0.1.0"

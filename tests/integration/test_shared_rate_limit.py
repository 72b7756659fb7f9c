"""The shared token bucket (kaizen_gateway.ratelimit.SharedBuckets) on a real Redis:
many concurrent takers, as replicas are, get exactly what the buckets hold between them."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from kaizen_gateway.ratelimit import SharedBuckets
from kaizen_gateway.redislink import RedisLink


@pytest.mark.parametrize(("total_burst", "allowed"), [(25.0, 20), (15.0, 15)])
def test_concurrent_replicas_share_the_buckets_exactly(
    redis_url: str, total_burst: float, allowed: int
) -> None:
    """Two API keys with a burst of 10 each under one total: 60 concurrent requests
    from three clients (replicas) get min(total, 2 x 10); nothing refills meanwhile."""
    scope = uuid.uuid4().hex
    total = (f"kaizen:rl:v1:{{{scope}}}:total", 0.001, total_burst)
    keys = [(f"kaizen:rl:v1:{{{scope}}}:key:{k}", 0.001, 10.0) for k in ("a", "b")]

    async def scenario() -> list[tuple[float, int]]:
        replicas = [RedisLink(redis_url, timeout=5) for _ in range(3)]
        limits = [SharedBuckets(link.client) for link in replicas]

        async def take(i: int) -> tuple[float, int]:
            link, shared = replicas[i % 3], limits[i % 3]
            buckets = [total, keys[i % 2]]
            return await link.call(lambda c: shared.take(c, buckets))

        try:
            return list(await asyncio.gather(*(take(i) for i in range(60))))
        finally:
            for link in replicas:
                await link.close()

    results = asyncio.run(scenario())
    assert sum(1 for wait, _ in results if wait == 0.0) == allowed
    refused = [(wait, which) for wait, which in results if wait > 0.0]
    assert all(wait > 100 and which in (0, 1) for wait, which in refused)  # ~1/rate
    if total_burst > 20:
        assert {which for _, which in refused} == {1}  # only the keys' buckets ran out

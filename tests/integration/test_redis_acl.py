"""The per-tenant Redis ACL recipe of docs/operations.md, on a real redis-server: a
tenant's Redis user limited to ``~kaizen:*{<namespace>/*`` serves that namespace's
conversation memory and shared rate limits and is refused everything else."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from kaizen_api.v1alpha1.bundle import BundledAgent
from kaizen_gateway.memory import ConversationMemory
from kaizen_gateway.ratelimit import SharedBuckets
from kaizen_gateway.redislink import RedisLink, RedisUnavailable
from localredis import server as localredis

AGENT = BundledAgent.model_validate(
    {
        "name": "helper",
        "revision": 1,
        "hash": "h",
        "spec": {
            "model": {"provider": "mock", "name": "echo"},
            "context": {"memory": {"type": "conversation", "maxTurns": 5}},
        },
    }
)


@pytest.fixture
def tenant_url() -> Iterator[str]:
    root = localredis.private_root(f"acl-{uuid.uuid4().hex[:6]}")
    url = localredis.up(root)
    admin = redis.Redis.from_url(url)
    admin.execute_command(
        "ACL", "SETUSER", "team-a", "on", ">pw-a", "~kaizen:*{team-a/*", "+@all", "-@dangerous"
    )
    admin.close()
    yield url.replace("redis://", "redis://team-a:pw-a@")
    localredis.down(root)


async def no_summary(_: list[dict[str, Any]]) -> str:
    return ""


def test_a_tenants_redis_user_reaches_its_namespace_only(tenant_url: str) -> None:
    async def scenario() -> None:
        link = RedisLink(tenant_url, pause=0)
        memory = ConversationMemory(link)
        own = await memory.recall("team-a/dev", AGENT, "anonymous", "c1")
        assert own.status == "used"
        await memory.remember(
            own, [{"role": "user", "content": "hi"}], {"role": "assistant"}, no_summary
        )
        again = await memory.recall("team-a/dev", AGENT, "anonymous", "c1")
        assert [m["role"] for m in again.messages] == ["user", "assistant"]

        other = await memory.recall("team-b/dev", AGENT, "anonymous", "c1")
        assert other.status == "skipped"  # refused by Redis: served without memory

        shared = SharedBuckets(link.client)
        own_limit = [("kaizen:rl:v1:{team-a/dev}:total", 1.0, 5.0)]
        assert await link.call(lambda c: shared.take(c, own_limit)) == (0.0, -1)
        other_limit = [("kaizen:rl:v1:{team-b/dev}:total", 1.0, 5.0)]
        with pytest.raises(RedisUnavailable):
            await link.call(lambda c: shared.take(c, other_limit))
        await link.close()

    asyncio.run(scenario())

"""Usage records from the gateway's meter to the facade's database through a real Redis
(a private server, so that restarting it disturbs no other test) on SQLite and
PostgreSQL: each record stored once, whatever is redelivered, and attributed to the
organization of the stream's namespace only."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy import Engine

from kaizen_api.metering import UsageRecord, stream_key
from kaizen_api.server.db import engine_for, migrate, session
from kaizen_api.server.models import Organization, Workspace
from kaizen_api.server.usage import GROUP, UsageConsumer, UsageStore
from kaizen_gateway.redislink import RedisLink
from kaizen_gateway.usage import UsageMeter, new_uid
from localredis import server as localredis


@pytest.fixture
def private_redis() -> Iterator[tuple[str, object]]:
    root = localredis.private_root(f"usage-{uuid.uuid4().hex[:6]}")
    url = localredis.up(root)
    yield url, root
    localredis.down(root)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = engine_for(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


def tenant(engine: Engine, namespace: str) -> str:
    """An organization with one workspace in ``namespace``; its id."""
    with session(engine) as db:
        org = Organization(slug=f"o{uuid.uuid4().hex[:8]}", name="o")
        db.add(org)
        db.flush()
        db.add(Workspace(org_id=org.id, name="ml", namespace=namespace))
        return org.id


def record(i: int, *, tokens: int = 10, outcome: str = "ok") -> UsageRecord:
    return UsageRecord(
        uid=new_uid(),
        request_id=f"req-{i}",
        time=time.time(),
        gateway="gw",
        kind="agent",
        name="helper",
        revision=1,
        caller="anonymous",
        model="gpt-4o-mini",
        tokens_in=tokens,
        tokens_out=2 * tokens,
        tool_calls=1,
        latency_ms=5.0,
        cost_usd=0.000123,
        status=200 if outcome == "ok" else 502,
        outcome=outcome,
    )


def append(url: str, namespace: str, records: list[UsageRecord]) -> UsageMeter:
    async def run() -> UsageMeter:
        link = RedisLink(url, timeout=5, pause=0)
        meter = UsageMeter(link)
        for rec in records:
            meter.record(namespace, rec)
        while meter.buffer and await meter.flush():
            pass
        await link.close()
        return meter

    return asyncio.run(run())


def totals(engine: Engine, org_id: str) -> tuple[int, int, int, int]:
    """(raw records, hourly requests, daily requests, daily tokens in) of an org."""
    with engine.connect() as db:
        raw = db.execute(
            sa.text("SELECT count(*) FROM usage_records WHERE org_id = :o"), {"o": org_id}
        ).scalar_one()
        sums = {
            period: db.execute(
                sa.text(
                    "SELECT coalesce(sum(requests), 0), coalesce(sum(tokens_in), 0) "
                    "FROM usage_rollups WHERE org_id = :o AND period = :p"
                ),
                {"o": org_id, "p": period},
            ).one()
            for period in ("hour", "day")
        }
    return int(raw), int(sums["hour"][0]), int(sums["day"][0]), int(sums["day"][1])


def drain(consumer: UsageConsumer, rounds: int = 20) -> None:
    for _ in range(rounds):
        if consumer.poll() == 0 and consumer.stats.stored:
            return


def test_records_are_stored_once_and_attributed_by_stream(
    engine: Engine, private_redis: tuple[str, object]
) -> None:
    url, _ = private_redis
    ns = f"kz-a{uuid.uuid4().hex[:6]}--ml"
    org = tenant(engine, ns)
    records = [record(i) for i in range(120)] + [record(999, outcome="upstream_error")]
    append(url, ns, records)
    # The same record appended twice (a gateway's replay after Redis came back empty).
    append(url, ns, records[:7])
    consumer = UsageConsumer(UsageStore(engine), url, block_ms=100, consumer="c1")
    try:
        drain(consumer)
        assert totals(engine, org) == (121, 121, 121, 121 * 10)
        assert consumer.stats.duplicates == 7
        # Acknowledged entries are deleted: nothing waits in the stream.
        admin = redis.Redis.from_url(url)
        assert admin.xlen(stream_key(ns, "gw")) == 0
        admin.close()
    finally:
        consumer.stop()


def test_a_consumer_that_died_before_acknowledging_is_taken_over_without_double_counting(
    engine: Engine, private_redis: tuple[str, object]
) -> None:
    url, _ = private_redis
    ns = f"kz-b{uuid.uuid4().hex[:6]}--ml"
    org = tenant(engine, ns)
    append(url, ns, [record(i) for i in range(50)])
    # A facade replica read every entry and stored the first 20, then was killed
    # before its XACK: all 50 are pending on it.
    store = UsageStore(engine)
    dead = UsageConsumer(store, url, block_ms=100, consumer="dead")
    dead.discover()
    key = stream_key(ns, "gw")
    entries = dead.client.xreadgroup(GROUP, "dead", {key: ">"}, count=100)[0][1]
    from kaizen_api.metering import decode

    store.ingest([(ns, decode(fields[b"r"])) for _, fields in entries[:20]])
    dead.client.close()
    assert totals(engine, org)[0] == 20
    survivor = UsageConsumer(store, url, block_ms=100, consumer="alive", claim_idle_ms=0)
    try:
        survivor.discover()  # XAUTOCLAIM takes the dead consumer's entries over
        assert survivor.stats.claimed == 50
        assert totals(engine, org) == (50, 50, 50, 500)
        assert survivor.stats.duplicates == 20
        pending = survivor.client.xpending(key, GROUP)
        assert pending["pending"] == 0
    finally:
        survivor.stop()


def test_a_gateway_cannot_have_usage_counted_against_another_organization(
    engine: Engine, private_redis: tuple[str, object]
) -> None:
    """Team A's gateway holds Redis credentials for its own namespace's keys (the ACL
    recipe): writing into team B's stream is refused, and whatever team A writes in its
    own stream is counted for team A, whatever the record says."""
    url, _ = private_redis
    ns_a, ns_b = f"kz-a{uuid.uuid4().hex[:6]}--ml", f"kz-b{uuid.uuid4().hex[:6]}--ml"
    org_a, org_b = tenant(engine, ns_a), tenant(engine, ns_b)
    admin = redis.Redis.from_url(url)
    admin.execute_command(
        "ACL", "SETUSER", "team-a", "on", ">pw-a", f"~kaizen:*{{{ns_a}/*", "+@all", "-@dangerous"
    )
    admin.close()
    team_a = url.replace("redis://", "redis://team-a:pw-a@")
    forged = append(team_a, ns_b, [record(1, tokens=1000)])
    assert len(forged.buffer) == 1  # refused by Redis: still buffered, never delivered
    own = append(team_a, ns_a, [replace(record(2), gateway="gw")])
    assert not own.buffer
    consumer = UsageConsumer(UsageStore(engine), url, block_ms=100, consumer="c1")
    try:
        drain(consumer)
    finally:
        consumer.stop()
    assert totals(engine, org_a)[0] == 1
    assert totals(engine, org_b) == (0, 0, 0, 0)


def test_records_survive_a_redis_restart_through_the_gateways_replay(
    engine: Engine, private_redis: tuple[str, object]
) -> None:
    """Redis restarts empty (no persistence) before the facade read anything: the meter
    notices its marker is gone and appends the recent records again."""
    url, root = private_redis
    ns = f"kz-c{uuid.uuid4().hex[:6]}--ml"
    org = tenant(engine, ns)

    async def scenario() -> None:
        link = RedisLink(url, timeout=5, pause=0)
        meter = UsageMeter(link)
        for i in range(30):
            meter.record(ns, record(i))
        assert await meter.flush()
        localredis.stop(root, kill=True)  # type: ignore[arg-type]
        for i in range(30, 40):  # while Redis is down: buffered
            meter.record(ns, record(i))
        assert not await meter.flush()
        localredis.start(root)  # type: ignore[arg-type]
        while meter.buffer:
            assert await meter.flush()
        await link.close()

    asyncio.run(scenario())
    consumer = UsageConsumer(UsageStore(engine), url, block_ms=100, consumer="c1")
    try:
        drain(consumer)
    finally:
        consumer.stop()
    assert totals(engine, org) == (40, 40, 40, 400)

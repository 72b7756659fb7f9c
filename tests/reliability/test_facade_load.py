"""200 concurrent clients on one live facade (uvicorn, the shared PostgreSQL, the real
apiserver) listing, reading and creating Agents of one workspace for a bounded time:
no request fails. Latency and throughput are recorded, never asserted (a 2-core
machine shared with the apiserver and the clients themselves)."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from localdb import postgres
from tests.reliability.figures import Figures, pick
from tests.support.facade import agent
from tests.support.live_server import Server, live_facade

CLIENTS = 200
SEEDED = 20  # agents there before the load, for the reads
MIX = (("get", 0.5), ("list", 0.3), ("create", 0.2))


@dataclass
class Result:
    op: str
    status: int | None
    seconds: float
    error: str = ""


@dataclass
class Load:
    server: Server
    names: list[str]
    deadline: float
    results: list[Result] = field(default_factory=list)


@pytest.fixture
def load_database(postgres_admin_url: str) -> Iterator[str]:
    name = f"t_load_{uuid.uuid4().hex[:10]}"
    url = postgres.create_database(postgres_admin_url, name)
    yield url
    postgres.drop_database(postgres_admin_url, name)


async def one_client(load: Load, number: int) -> None:
    rng = random.Random(number)  # noqa: S311 - a load mix, not a secret
    ws = f"/orgs/{load.server.org}/workspaces/ml"
    ops, weights = zip(*MIX, strict=True)
    async with httpx.AsyncClient(
        base_url=load.server.api, headers=load.server.headers, timeout=120
    ) as http:
        first = True
        # At least one request per client however slow the machine is, so all 200 are
        # in flight together; then more until the deadline.
        while first or time.monotonic() < load.deadline:
            first = False
            op = rng.choices(ops, weights)[0]
            started = time.perf_counter()
            try:
                if op == "get":
                    response = await http.get(f"{ws}/agents/{rng.choice(load.names)}")
                elif op == "list":
                    response = await http.get(f"{ws}/agents", params={"limit": 20})
                else:
                    name = f"l{number}-{uuid.uuid4().hex[:8]}"
                    response = await http.post(f"{ws}/agents", json=agent(name))
            except httpx.HTTPError as exc:
                load.results.append(
                    Result(op, None, time.perf_counter() - started, f"{type(exc).__name__}: {exc}")
                )
                continue
            error = "" if response.status_code in (200, 201) else response.text[:300]
            load.results.append(
                Result(op, response.status_code, time.perf_counter() - started, error)
            )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_200_concurrent_clients_get_no_errors(
    facade_cluster: Path,
    api_client: client.ApiClient,
    load_database: str,
    tmp_path: Path,
    figures: Figures,
) -> None:
    seconds = pick(10, 60)
    # enterprise: no agent quota, so creates are never refused by the plan
    env = {"KAIZEN_USER_RATE_LIMIT": "1000000"}  # one user's token drives the load
    with live_facade(
        facade_cluster,
        api_client,
        tmp_path,
        load_database,
        env=env,
        plan="enterprise",
        prefix="load",
    ) as server:
        names = [f"seed-{i}" for i in range(SEEDED)]
        with httpx.Client(base_url=server.api, headers=server.headers, timeout=60) as http:
            for name in names:
                created = http.post(f"/orgs/{server.org}/workspaces/ml/agents", json=agent(name))
                assert created.status_code == 201, created.text
        load = Load(server, names, time.monotonic() + seconds)

        async def run() -> float:
            started = time.monotonic()
            await asyncio.gather(*(one_client(load, n) for n in range(CLIENTS)))
            return time.monotonic() - started

        elapsed = asyncio.run(run())
        log = server.process.tail(200)

    results = load.results
    failed = [r for r in results if r.error]
    latencies = [r.seconds * 1000 for r in results]
    figures.record("clients", CLIENTS)
    figures.record("duration", round(elapsed, 1), "s")
    figures.record("requests", len(results))
    for op, _ in MIX:
        figures.record(f"{op} requests", sum(r.op == op for r in results))
    figures.record("error rate", len(failed) / max(1, len(results)))
    figures.record("p50", round(statistics.median(latencies), 1), "ms")
    figures.record("p99", round(percentile(latencies, 0.99), 1), "ms")
    figures.record("max", round(max(latencies), 1), "ms")
    figures.record("throughput", round(len(results) / elapsed, 1), "req/s")
    assert not failed, f"{len(failed)} of {len(results)} failed: {failed[:5]}\n{log[-2000:]}"

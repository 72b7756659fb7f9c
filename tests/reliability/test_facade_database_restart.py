"""PostgreSQL stops and starts again under a live facade (its own private server, so no
other test notices): meanwhile every request answers at once — 503 problem+json
``database-unavailable`` with Retry-After where the database is needed, never a 500 and
never a hang — requests succeed again within seconds of the restart, and every
mutating request made, successful or refused, has exactly one audit record."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from kubernetes import client

from localdb import postgres
from tests.reliability.figures import Figures, pick
from tests.support.facade import PASSWORD, agent
from tests.support.live_server import Server, live_facade

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
TIMEOUT = 15.0  # seconds: a request slower than this counts as hanging
ALLOWED = {200, 201, 204, 404, 422, 503}


@dataclass
class Call:
    phase: str
    method: str
    path: str
    request_id: str
    started: float
    status: int | None = None
    error: str = ""
    code: str = ""
    content_type: str = ""
    retry_after: str | None = None
    elapsed: float = 0.0
    phase_at_end: str = ""  # the phase when the answer came


@dataclass
class Run:
    server: Server
    key: str
    phase: str = "before"
    calls: list[Call] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
def private_postgres() -> Iterator[tuple[Path, str]]:
    """A PostgreSQL server of this test alone (stopping it disturbs nobody)."""
    root = postgres.private_root(f"restart-{uuid.uuid4().hex[:6]}")
    admin = postgres.up(root)
    try:
        yield root, admin
    finally:
        postgres.down(root)


async def call(
    run: Run, http: httpx.AsyncClient, method: str, path: str, **kw: Any
) -> httpx.Response | None:
    entry = Call(run.phase, method, path, uuid.uuid4().hex, time.monotonic())
    run.calls.append(entry)
    headers = {"x-request-id": entry.request_id, **kw.pop("headers", {})}
    try:
        response = await http.request(method, path, headers=headers, **kw)
    except httpx.HTTPError as exc:
        entry.error = f"{type(exc).__name__}: {exc}"
        return None
    finally:
        entry.elapsed = time.monotonic() - entry.started
        entry.phase_at_end = run.phase
    entry.status = response.status_code
    entry.content_type = response.headers.get("content-type", "")
    entry.retry_after = response.headers.get("retry-after")
    if entry.content_type.startswith("application/problem+json"):
        entry.code = response.json().get("code", "")
    return response


async def worker(run: Run, number: int) -> None:
    """One client: creates, refused creates, deletes, reads and logins, in turn."""
    server = run.server
    auth = server.headers if number % 2 == 0 else {"authorization": f"Bearer {run.key}"}
    ws = f"/orgs/{server.org}/workspaces/ml"
    async with (
        httpx.AsyncClient(base_url=server.api, headers=auth, timeout=TIMEOUT) as http,
        httpx.AsyncClient(base_url=server.api, timeout=TIMEOUT) as anonymous,
    ):
        for step in itertools.count():
            if run.stop.is_set():
                return
            op = (step + number) % 6
            if op == 0:
                name = f"a{number}-{uuid.uuid4().hex[:8]}"
                response = await call(run, http, "POST", f"{ws}/agents", json=agent(name))
                if response is not None and response.status_code == 201:
                    run.created.append(name)
            elif op == 1:  # refused by validation: audited all the same
                await call(run, http, "POST", f"{ws}/agents", json={"metadata": {"name": "x"}})
            elif op == 2 and run.created:
                await call(run, http, "DELETE", f"{ws}/agents/{run.created.pop(0)}")
            elif op == 3:
                await call(run, http, "GET", f"{ws}/agents", params={"limit": 5})
            elif op == 4:  # always needs the database
                login = {"email": server.email, "password": PASSWORD}
                await call(run, anonymous, "POST", "/auth/login", json=login)
            else:
                await call(run, http, "GET", f"/orgs/{server.org}")
            await asyncio.sleep(0.02)


async def drive(run: Run, root: Path) -> float:
    """Load before, during and after the outage; returns seconds from the restart until
    a login (which needs the database) succeeded again."""
    workers = [asyncio.create_task(worker(run, n)) for n in range(6)]
    try:
        await asyncio.sleep(2)
        run.phase = "down"
        await asyncio.to_thread(postgres.stop, root, "immediate")
        await asyncio.sleep(pick(7, 30))  # past the 5 s caches of callers and access
        run.phase = "restarting"
        await asyncio.to_thread(postgres.start, root)
        restarted = time.monotonic()
        run.phase = "after"
        recovered = None
        while time.monotonic() - restarted < 30:
            if any(
                c.phase == "after" and c.path == "/auth/login" and c.status == 200
                for c in run.calls
            ):
                recovered = time.monotonic() - restarted
                break
            await asyncio.sleep(0.05)
        assert recovered is not None, "no login succeeded within 30 s of the restart"
        run.phase = "recovered"
        await asyncio.sleep(pick(3, 10))
    finally:
        run.stop.set()
        await asyncio.gather(*workers, return_exceptions=True)
    return recovered


def audit_records(database_url: str, request_ids: list[str]) -> dict[str, list[int]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT request_id, outcome FROM audit_records WHERE request_id = ANY(%s)",
            (request_ids,),
        ).fetchall()
    out: dict[str, list[int]] = {}
    for request_id, outcome in rows:
        out.setdefault(request_id, []).append(outcome)
    return out


def test_database_restart_answers_503_recovers_and_loses_no_audit_record(
    facade_cluster: Path,
    api_client: client.ApiClient,
    private_postgres: tuple[Path, str],
    tmp_path: Path,
    figures: Figures,
) -> None:
    root, admin = private_postgres
    database_url = postgres.create_database(admin, "kaizen")
    env = {"KAIZEN_API_KEY_RATE_LIMIT": "100000", "KAIZEN_USER_RATE_LIMIT": "100000"}
    with live_facade(
        facade_cluster, api_client, tmp_path, database_url, env=env, plan="enterprise"
    ) as server:
        run = Run(server, server.api_key("restart", ["*:*"]))
        recovered = asyncio.run(drive(run, root))
        log = server.process.tail(400)

        calls = run.calls
        hung = [c for c in calls if c.error]
        assert not hung, f"requests failed or hung past {TIMEOUT}s: {hung[:5]}"
        unexpected = [c for c in calls if c.status not in ALLOWED]
        assert not unexpected, f"unexpected answers: {unexpected[:5]}\n{log[-3000:]}"
        unavailable = [c for c in calls if c.status == 503]
        assert unavailable, "no request noticed the outage"
        for c in unavailable:
            assert c.content_type.startswith("application/problem+json"), c
            assert c.code == "database-unavailable", c
            assert c.retry_after and int(c.retry_after) > 0, c
        assert not [c for c in calls if c.phase_at_end == "before" and c.status == 503]
        logins_down = [
            c for c in calls if c.phase == c.phase_at_end == "down" and c.path == "/auth/login"
        ]
        assert logins_down, "no login was tried during the outage"
        assert all(c.status == 503 for c in logins_down), "a login succeeded without a database"
        late = [c for c in calls if c.phase == "recovered" and c.status == 503]
        assert not late, f"503 after the database was back: {late[:5]}"

        # Every mutation has exactly one record, with the outcome the client saw. The
        # records kept during the outage are written by the facade's retry.
        mutations = {c.request_id: c for c in calls if c.method in MUTATING}
        deadline = time.monotonic() + 30
        while True:
            records = audit_records(database_url, list(mutations))
            if len(records) == len(mutations) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        missing = [c for rid, c in mutations.items() if rid not in records]
        assert not missing, f"{len(missing)} mutation(s) without an audit record: {missing[:5]}"
        doubled = {rid: outs for rid, outs in records.items() if len(outs) != 1}
        assert not doubled, f"audit records duplicated: {doubled}"
        wrong = [c for rid, c in mutations.items() if records[rid] != [c.status]]
        assert not wrong, f"audit outcome differs from the answer: {wrong[:5]}"
        assert "unhandled error" not in log

    by_phase = {p: [c for c in calls if c.phase == p] for p in ("down", "after", "recovered")}
    figures.record("requests", len(calls))
    figures.record("requests during outage", len(by_phase["down"]))
    figures.record(
        "answered 503 during outage",
        sum(c.status == 503 for c in by_phase["down"]),
    )
    figures.record(
        "served from caches during outage",
        sum(c.status in (200, 201, 204) for c in by_phase["down"]),
    )
    figures.record("mutations audited", len(mutations))
    figures.record("audit records lost", 0)
    figures.record("recovery after restart", round(recovered, 2), "s")
    slowest = max((c.elapsed for c in by_phase["down"]), default=0.0)
    figures.record("slowest answer during outage", round(slowest * 1000, 1), "ms")

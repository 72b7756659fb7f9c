#!/usr/bin/env python3
"""Benchmark: webhook delivery throughput (events per second) from one and from two
`kaizen-api` replicas sharing a PostgreSQL outbox, to a local receiver process that
verifies every signature with the `standardwebhooks` library.

    KAIZEN_CLUSTER_DIR=... python bench/webhook_delivery.py [--events 1000]

N events of one organization are committed at once (``events.emit_event``, as the
facade's routes do), then the time until the receiver has acknowledged all of them is
measured. Prints events/s per replica count and the ratio; also checks that no event
was delivered twice.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "hack"), str(ROOT), str(ROOT / "api")]

from localdb import postgres  # noqa: E402
from tests.support.live_server import owner, start_facade  # noqa: E402
from tests.support.processes import LocalProcess, free_port, start, wait_port  # noqa: E402
from tests.support.webhook_receiver import received  # noqa: E402

ENV = {
    "KAIZEN_WEBHOOK_WATCH": "false",
    "KAIZEN_WEBHOOK_POLL": "0.05",
    "KAIZEN_USER_RATE_LIMIT": "1000000",
}


def run(replicas: int, events: int, kubeconfig: Path, admin: str, folder: Path) -> float:
    from sqlmodel import select

    from kaizen_api.server.db import engine_for, session
    from kaizen_api.server.events import emit_event
    from kaizen_api.server.models import Organization

    name = f"bench_hooks_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(admin, name)
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    receiver = start(
        [sys.executable, "-m", "tests.support.webhook_receiver", str(folder), str(port)],
        folder / "receiver.log",
    )
    processes: list[LocalProcess] = []
    engine = engine_for(url)
    try:
        wait_port(port, receiver)
        first, api = start_facade(kubeconfig, folder / "r0", url, ENV)
        processes.append(first)
        _, headers, org = owner(api, "bench")
        hook = httpx.post(
            f"{api}/api/v1/orgs/{org}/webhooks",
            json={"url": f"http://127.0.0.1:{port}/", "events": ["member.*"]},
            headers=headers,
            timeout=30,
        ).json()
        (folder / "secrets").write_text(hook["secret"])
        for n in range(1, replicas):
            processes.append(start_facade(kubeconfig, folder / f"r{n}", url, ENV)[0])
        with session(engine) as db:
            found = db.exec(select(Organization).where(Organization.slug == org)).one()
            started = time.perf_counter()
            for n in range(events):
                emit_event(db, found, "member.added", {"n": n})
        while True:
            done = [r for r in received(folder) if r.get("status") == 204]
            if len(done) >= events:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - started
        ids = [r["id"] for r in done]
        if not len(set(ids)) == len(ids) == events:
            raise SystemExit("an event was delivered twice")
        return events / elapsed
    finally:
        for process in processes:
            process.stop()
        receiver.stop()
        engine.dispose()
        postgres.drop_database(admin, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    args = parser.parse_args()
    cluster = Path(os.environ["KAIZEN_CLUSTER_DIR"])
    kubeconfig = cluster / "kubeconfig"
    admin = os.environ.get("KAIZEN_TEST_POSTGRES_URL") or postgres.up()
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    rates = {n: run(n, args.events, kubeconfig, admin, base / f"x{n}") for n in (1, 2)}
    for n, rate in rates.items():
        print(f"{n} replica(s): {rate:8.1f} events/s ({args.events} events, no duplicate)")
    print(f"2 replicas / 1 replica: {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()

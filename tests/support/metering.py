"""Usage metering in tests: gateway processes of a given namespace (the operator's
command, the mock model, a price for it) on a given Redis, a private Redis server, and
logging in to a live facade again."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from localredis import server as localredis
from tests.support.agent_gateway import gateway_bundle, gateway_command, render_dev_gateway
from tests.support.facade import PASSWORD
from tests.support.objects import agent
from tests.support.processes import LocalProcess, free_port, start, wait_http_ok

PRICES = {"echo": [2.0, 8.0]}  # USD per 1M tokens in/out: the mock model's price


@dataclass
class Gateway:
    argv: list[str]
    log: Path
    env: dict[str, str]
    url: str = ""
    process: LocalProcess | None = None

    def start(self) -> None:
        self.process = start(self.argv, self.log, env=self.env)
        wait_http_ok(f"{self.url}/readyz", self.process)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


def gateway_for(tmp: Path, namespace: str, redis_url: str, name: str, replica: int = 0) -> Gateway:
    """A gateway process (``replica``) of Gateway ``name`` in ``namespace`` serving agent
    ``helper`` (the mock model), with the operator's command and the Redis URL its
    Secret holds."""
    plan = render_dev_gateway([agent("helper")], name=name, redis_secret="redis")
    bundle = json.loads(gateway_bundle(plan))
    bundle["namespace"] = namespace  # where the operator would have rendered it
    folder = tmp / f"{name}-{replica}"
    folder.mkdir()
    (folder / "bundle.json").write_text(json.dumps(bundle))
    (folder / "prices.json").write_text(json.dumps(PRICES))
    port = free_port()
    args = [
        a.replace("/etc/kaizen/bundle/bundle.json", str(folder / "bundle.json"))
        for a in gateway_command(plan)
    ]
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    argv = [*args, "--secrets-dir", str(folder), "--prices", str(folder / "prices.json")]
    gw = Gateway(argv, folder / "gateway.log", {"KAIZEN_REDIS_URL": redis_url})
    gw.url = f"http://127.0.0.1:{port}"
    gw.start()
    return gw


def login(url: str, email: str) -> dict[str, str]:
    r = httpx.post(
        f"{url}/api/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=30
    )
    assert r.status_code == 200, r.text
    return {"authorization": f"Bearer {r.json()['access_token']}"}


@contextmanager
def private_redis() -> Iterator[tuple[str, Path]]:
    root = localredis.private_root(f"meter-{uuid.uuid4().hex[:6]}")
    url = localredis.up(root)
    try:
        yield url, root
    finally:
        localredis.down(root)

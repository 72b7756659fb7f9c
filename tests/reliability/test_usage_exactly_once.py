"""Usage metering end to end: real gateway processes (the operator's command) for two
organizations, a real `kaizen-api` consuming their Redis streams into its database,
and a private Redis. What the callers were answered equals what the usage API and the
export report, request for request, across a gateway SIGKILL, a facade SIGKILL and a
Redis restart (empty: no persistence)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from kubernetes import client
from typer.testing import CliRunner

from kaizen_api.cli import usage as _usage_cli  # noqa: F401 - registers `kaizen usage`
from kaizen_api.cli.__main__ import app as cli
from localredis import server as localredis
from tests.support.live_server import live_facade, owner, start_facade
from tests.support.metering import Gateway, gateway_for, login, private_redis


@dataclass
class Sent:
    requests: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    ids: set[str] | None = None

    def cost(self) -> float:
        return round((self.tokens_in * 2.0 + self.tokens_out * 8.0) / 1_000_000, 6)


def send(http: httpx.Client, gw: Gateway, count: int, sent: Sent, stream: bool = False) -> None:
    """``count`` chat requests; what was answered (200) is added to ``sent``."""
    for i in range(count):
        request_id = uuid.uuid4().hex
        body = {"model": "helper", "messages": [{"role": "user", "content": f"hello {i}"}]}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        r = http.post(
            f"{gw.url}/v1/chat/completions", json=body, headers={"x-request-id": request_id}
        )
        assert r.status_code == 200, r.text
        if stream:
            usage = next(
                json.loads(line[6:])["usage"]
                for line in r.text.splitlines()
                if line.startswith("data: {") and '"usage"' in line
            )
        else:
            usage = r.json()["usage"]
        sent.requests += 1
        sent.tokens_in += usage["prompt_tokens"]
        sent.tokens_out += usage["completion_tokens"]
        assert sent.ids is not None
        sent.ids.add(request_id)


def usage_of(url: str, headers: dict[str, str], org: str) -> dict[str, object]:
    r = httpx.get(f"{url}/api/v1/orgs/{org}/usage", headers=headers, timeout=30)
    assert r.status_code == 200, r.text
    return dict(r.json()["totals"])


def wait_for(url: str, headers: dict[str, str], org: str, requests: int) -> dict[str, object]:
    deadline = time.monotonic() + 90
    while True:
        totals = usage_of(url, headers, org)
        if totals["requests"] == requests or time.monotonic() > deadline:
            return totals
        time.sleep(0.5)


@pytest.mark.timeout(600)
def test_usage_matches_what_callers_were_answered_across_kills_and_a_redis_restart(
    facade_cluster: Path,
    api_client: client.ApiClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with private_redis() as (redis_url, redis_root):
        env = {"KAIZEN_USAGE_REDIS_URL": redis_url, "KAIZEN_USAGE_CLAIM_IDLE_MS": "1000"}
        with live_facade(facade_cluster, api_client, tmp_path, env=env) as server:
            email_b, _, org_b = owner(server.url, "bowner")
            gw_a = gateway_for(tmp_path, f"kz-{server.org}--ml", redis_url, "gw-a")
            gw_b = gateway_for(tmp_path, f"kz-{org_b}--ml", redis_url, "gw-b")
            sent_a, sent_b = Sent(ids=set()), Sent(ids=set())
            http = httpx.Client(timeout=30)
            facade = server.process
            try:
                send(http, gw_a, 60, sent_a)
                send(http, gw_b, 25, sent_b, stream=True)

                facade.kill()  # SIGKILL: entries read and not acknowledged are reclaimed
                send(http, gw_a, 40, sent_a)
                (tmp_path / "again").mkdir()
                facade, url = start_facade(
                    facade_cluster, tmp_path / "again", server.database_url, env
                )

                assert gw_a.process is not None
                gw_a.process.kill()  # SIGKILL right after answering
                gw_a.start()
                send(http, gw_a, 40, sent_a, stream=True)

                localredis.stop(redis_root, kill=True)
                send(http, gw_a, 30, sent_a)  # answered; the records wait in the gateway
                send(http, gw_b, 10, sent_b)
                localredis.start(redis_root)
                send(http, gw_a, 10, sent_a)

                # A restarted facade without KAIZEN_JWT_KEY_DIR signs with new keys.
                headers_a, headers_b = login(url, server.email), login(url, email_b)
                totals_a = wait_for(url, headers_a, server.org, sent_a.requests)
                totals_b = wait_for(url, headers_b, org_b, sent_b.requests)
                for totals, sent in ((totals_a, sent_a), (totals_b, sent_b)):
                    assert (totals["requests"], totals["tokens_in"], totals["tokens_out"]) == (
                        sent.requests,
                        sent.tokens_in,
                        sent.tokens_out,
                    )
                    assert round(float(str(totals["cost_usd"])), 6) == sent.cost()

                period = datetime.now(UTC).strftime("%Y-%m")
                exported = httpx.get(
                    f"{url}/api/v1/orgs/{server.org}/usage/export",
                    params={"period": period, "format": "json"},
                    headers=headers_a,
                    timeout=30,
                ).json()["records"]
                ids = [r["request_id"] for r in exported]
                assert len(ids) == len(set(ids)) == sent_a.requests  # none twice
                assert set(ids) == sent_a.ids  # none lost, none of org B's
                assert {r["gateway"] for r in exported} == {"gw-a"}

                # The CLI's table, as the logged-in owner.
                credentials = tmp_path / "credentials.json"
                token = headers_a["authorization"].removeprefix("Bearer ")
                credentials.write_text(
                    json.dumps({"url": url, "access_token": token, "org": server.org})
                )
                monkeypatch.setenv("KAIZEN_CREDENTIALS", str(credentials))
                shown = CliRunner().invoke(cli, ["usage", "show"], catch_exceptions=False)
                assert shown.exit_code == 0, shown.output
                assert "helper" in shown.output and f"{sent_a.requests:,}" in shown.output
            finally:
                http.close()
                gw_a.stop()
                gw_b.stop()
                if facade is not server.process:
                    facade.stop()

"""Budgets end to end: an owner sets a monthly token budget through the facade; once
the usage its gateways reported uses it up, the next request on either replica is
refused 402 with an OpenAI-shaped error naming the budget, the thresholds crossed are
recorded once, and the refusals show in the usage API and the gateway's metrics."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest
from kubernetes import client

from tests.support.agent_gateway import metric_total
from tests.support.live_server import live_facade
from tests.support.metering import gateway_for, private_redis


def ask(url: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "helper", "messages": [{"role": "user", "content": "hello there"}]},
        timeout=30,
    )


@pytest.mark.timeout(300)
def test_a_used_up_budget_stops_the_next_request_on_every_replica(
    facade_cluster: Path, api_client: client.ApiClient, tmp_path: Path
) -> None:
    with private_redis() as (redis_url, _):
        env = {"KAIZEN_USAGE_REDIS_URL": redis_url}
        with live_facade(facade_cluster, api_client, tmp_path, env=env) as server:
            ns = f"kz-{server.org}--ml"
            replicas = [gateway_for(tmp_path, ns, redis_url, "prod", i) for i in (0, 1)]
            http = httpx.Client(base_url=server.api, headers=server.headers, timeout=30)
            try:
                bad = http.put(
                    f"/orgs/{server.org}/budgets/monthly",
                    json={"scope": "agent", "metric": "tokens", "limit": 100},
                )
                assert bad.status_code == 422  # an agent budget names its agent
                first = ask(replicas[0].url).json()["usage"]["total_tokens"]
                limit = first * 5  # used up by the fifth request
                put = http.put(
                    f"/orgs/{server.org}/budgets/monthly",
                    json={
                        "scope": "agent",
                        "target": "helper",
                        "metric": "tokens",
                        "limit": limit,
                        "thresholds": [50, 100],
                    },
                )
                assert put.status_code == 200, put.text
                answered = 1
                deadline = time.monotonic() + 60
                refused = None
                while refused is None and time.monotonic() < deadline:
                    r = ask(replicas[answered % 2].url)
                    if r.status_code == 402:
                        refused = r
                    else:
                        assert r.status_code == 200, r.text
                        answered += 1
                        time.sleep(0.3)  # the facade publishes about every second
                assert refused is not None, "the budget never stopped a request"
                # Used up at the fifth answer; the refusal may lag by about a second.
                assert 5 <= answered <= 12
                error = refused.json()["error"]
                assert error["code"] == "budget_exceeded" and error["type"] == "insufficient_quota"
                assert "'monthly'" in error["message"]
                # The next request is refused on the other replica too (each replica
                # re-reads the used-up budgets at most every 0.5 s), and an OpenAI client
                # sees a status error it does not retry.
                time.sleep(1.0)
                for gw in replicas:
                    sdk = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="-", max_retries=0)
                    with pytest.raises(openai.APIStatusError) as caught:
                        sdk.chat.completions.create(
                            model="helper", messages=[{"role": "user", "content": "hi"}]
                        )
                    assert caught.value.status_code == 402
                budgets = http.get(f"/orgs/{server.org}/budgets").json()
                assert budgets[0]["exceeded"] and budgets[0]["spent"] >= limit
                assert [e["threshold"] for e in budgets[0]["events"]] == [50, 100]
                refusals = 3  # the first one met in the loop, then one per replica

                def seen() -> int:
                    usage = http.get(f"/orgs/{server.org}/usage").json()
                    errors = {e["outcome"]: e["requests"] for e in usage["top_errors"]}
                    return int(errors.get("budget_exceeded", 0))

                deadline = time.monotonic() + 30
                while seen() < refusals and time.monotonic() < deadline:
                    time.sleep(0.3)
                assert seen() == refusals
                assert (
                    sum(
                        metric_total(
                            gw.url, "kaizen_gateway_budget_refusals_total", budget="monthly"
                        )
                        for gw in replicas
                    )
                    == refusals
                )

                # Raised, the budget lets requests through again (within a publish).
                raised = http.put(
                    f"/orgs/{server.org}/budgets/monthly",
                    json={
                        "scope": "agent",
                        "target": "helper",
                        "metric": "tokens",
                        "limit": limit * 100,
                    },
                )
                assert raised.status_code == 200 and not raised.json()["exceeded"]
                deadline = time.monotonic() + 30
                while ask(replicas[0].url).status_code != 200:
                    assert time.monotonic() < deadline, "the raised budget still refuses"
                    time.sleep(0.5)
            finally:
                http.close()
                for gw in replicas:
                    gw.stop()

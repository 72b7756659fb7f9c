"""M1: gateways are not open by default. Outside environment dev, a Gateway without an
auth mode requires API keys: an unauthenticated call is refused 401 with an
OpenAI-shaped error, even when no keys are configured yet. dev stays open unless it
asks for keys. (The NetworkPolicy side, ingress only from the gateway's namespace, the
operator's and the ingress controllers', is in test_h2_gateway_workloads.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.agent_gateway import Served, serve
from tests.support.objects import agent

CHAT = {"model": "hello", "messages": [{"role": "user", "content": "spend their credits"}]}


def agents(_stub: str, _tools: str) -> list[dict[str, Any]]:
    return [agent("hello")]


@pytest.fixture
def gateway_of(tmp_path: Path) -> Iterator[Any]:
    running: list[Iterator[Served]] = []

    def start(environment: str, **spec: Any) -> Served:
        keys = {"keys": {"ci": "kz-right-key"}}
        folder = tmp_path / f"{environment}-{len(running)}"
        folder.mkdir()
        generator = serve(folder, agents, secrets=keys, environment=environment, **spec)
        running.append(generator)
        return next(generator)

    yield start
    for generator in running:
        generator.close()


def chat(served: Served, key: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{served.url}/v1/chat/completions", json=CHAT, headers=headers, timeout=30)


def refused_401(r: httpx.Response) -> str:
    assert r.status_code == 401, r.text
    error = r.json()["error"]
    assert error["type"] == "authentication_error"
    assert error["code"] == "invalid_api_key"
    return str(error["message"])


def test_a_production_gateway_without_auth_refuses_unauthenticated_callers(
    gateway_of: Any,
) -> None:
    production = gateway_of("production")
    message = refused_401(chat(production))
    assert "requires an API key and none is configured" in message
    refused_401(chat(production, "guessed"))


def test_keys_named_without_a_mode_are_required_outside_dev(gateway_of: Any) -> None:
    staging = gateway_of("staging", auth={"apiKeysSecretRef": {"name": "keys"}})
    assert "invalid or missing API key" in refused_401(chat(staging))
    refused_401(chat(staging, "kz-wrong"))
    assert chat(staging, "kz-right-key").status_code == 200


def test_dev_stays_open_and_an_explicit_opt_out_is_honoured(gateway_of: Any) -> None:
    assert chat(gateway_of("dev")).status_code == 200
    assert chat(gateway_of("demo", auth={"mode": "None"})).status_code == 200


def test_an_ingress_or_route_exposes_the_apis_not_metrics_or_readiness() -> None:
    from datetime import UTC, datetime

    from kaizen_operator.gateway.policy import GatewayPolicy
    from kaizen_operator.gateway.render import GatewayInputs, render_gateway
    from tests.support.objects import gateway

    exposure = {
        "ingress": {"host": "ai.example.com"},
        "httpRoute": {"parentRefs": [{"name": "public"}], "hostnames": ["ai.example.com"]},
    }
    policy = GatewayPolicy(ingress_hosts=("*.example.com",))
    plan = render_gateway(
        GatewayInputs(
            gateway("prod", "production", exposure=exposure),
            (),
            {},
            False,
            None,
            None,
            "img",
            datetime.now(UTC),
            policy=policy,
        )
    )
    kinds = {c["kind"]: c for c in plan.children}
    ingress_paths = [p["path"] for p in kinds["Ingress"]["spec"]["rules"][0]["http"]["paths"]]
    route_paths = [m["path"]["value"] for m in kinds["HTTPRoute"]["spec"]["rules"][0]["matches"]]
    for paths in (ingress_paths, route_paths):
        assert paths == ["/v1", "/agents"]  # not "/": /metrics and /readyz stay inside

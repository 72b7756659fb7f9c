"""Hostile destinations (server-side request forgery): a Promotion webhook and agents'
provider base URLs pointed at cloud instance metadata are refused end to end, by the
real operator and a real gateway process, with the guard's message; the explicit
allow switch lifts the refusal."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from kubernetes import client

from kaizen_operator.agent.render import AgentInputs, render_agent
from kaizen_operator.gateway.render import GatewayInputs, render_gateway
from tests.e2e.test_operator_reconciles import apply_yaml, get
from tests.e2e.test_promotions import promotion, stage, wait_phase  # noqa: F401 - fixture
from tests.reliability.figures import Figures
from tests.support.kube import event_reasons, eventually
from tests.support.objects import agent, gateway
from tests.support.processes import LocalProcess, free_port, start, wait_http_ok

SECRET = "sk-never-shown-0123456789"

# agent -> (provider, base URL): each a way to spell "the instance metadata service"
HOSTILE = {
    "imds": ("openai-compatible", "http://169.254.169.254/v1"),
    "imds-mapped": ("openai-compatible", "http://[::ffff:169.254.169.254]/v1"),
    "imds-decimal": ("openai-compatible", "http://2852039166/v1"),
    "imds-hex": ("openai-compatible", "http://0xa9fea9fe/v1"),
    "aws-v6": ("openai-compatible", "http://[fd00:ec2::254]/v1"),
    "eks-pod-identity": ("openai-compatible", "http://[fd00:ec2::23]/v1"),
    "azure-wireserver": ("openai-compatible", "http://168.63.129.16/v1"),
    "link-local-v6": ("openai-compatible", "http://[fe80::1]:8080/v1"),
    "alibaba": ("azure-openai", "http://100.100.100.200"),
    "gcp": ("anthropic", "http://metadata.google.internal"),
    "gcp-short": ("openai", "http://metadata/computeMetadata/v1"),
}


# ------------------------------------------------------------------ operator


def test_a_webhook_gate_at_the_metadata_service_fails_the_promotion(
    crds: Path,
    api_client: client.ApiClient,
    stage: str,  # noqa: F811 - the fixture of tests/e2e/test_promotions.py
    figures: Figures,
) -> None:
    """The gate fails with the guard's message (the Promotion ends Failed as for any
    failed webhook gate), and the failure notification, itself aimed at metadata
    spelled as IPv4-mapped IPv6, is refused too; the bearer token goes nowhere."""
    client.CoreV1Api(api_client).create_namespaced_secret(
        stage,
        client.V1Secret(metadata=client.V1ObjectMeta(name="hook"), string_data={"token": SECRET}),
    )
    ref = {"name": "hook", "key": "token"}
    gate = {"webhook": {"url": "http://169.254.169.254/latest/meta-data", "secretRef": ref}}
    notify = {"webhook": {"url": "http://[::ffff:a9fe:a9fe]/notify", "secretRef": ref}}
    apply_yaml(crds, stage, [promotion("imds", gates=gate, notifications=notify)])
    failed = wait_phase(api_client, stage, "imds", "Failed")
    message = failed["status"]["message"]
    assert message.startswith("webhook destination not allowed: host '169.254.169.254'")
    assert "--allow-link-local-destinations" in message
    ready = next(c for c in failed["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "WebhookGateFailed"
    gates = {g["name"]: g for g in failed["status"]["gates"]}
    assert gates["webhook"]["status"] == "Failed"
    notification = eventually(
        lambda: get(api_client, stage, "promotions", "imds")["status"].get("notification"),
        what="the first notification attempt",
    )
    assert notification["attempts"] >= 1 and not notification.get("deliveredAt")
    assert notification["message"].startswith("webhook destination not allowed: host '::ffff:")
    assert "169.254.169.254" in notification["message"]
    eventually(
        lambda: "NotificationFailed" in event_reasons(api_client, stage, "imds"),
        what="a NotificationFailed Event",
    )
    assert SECRET not in str(get(api_client, stage, "promotions", "imds"))
    figures.record("ssrf destinations refused", 2)


# ------------------------------------------------------------------ gateway


def _bundle(hostile: dict[str, tuple[str, str]] | None = None) -> tuple[list[str], str]:
    """The operator's command and bundle for one gateway serving the hostile agents."""
    hostile = HOSTILE if hostile is None else hostile
    now = datetime.now(UTC)
    agents, revisions = [], {}
    for name, (provider, endpoint) in hostile.items():
        body = agent(
            name,
            model={
                "provider": provider,
                "name": "gpt-4o-mini",
                "endpoint": endpoint,
                "credentialsSecretRef": {"name": "llm", "key": "apiKey"},
            },
        )
        plan = render_agent(AgentInputs(body, (), None, None, now))
        agents.append({**body, "status": plan.status})
        revisions[name] = plan.create
    gw = gateway("dev", agents={"names": list(hostile)})
    plan = render_gateway(GatewayInputs(gw, tuple(agents), revisions, False, None, None, "i", now))
    container = next(c for c in plan.children if c["kind"] == "Deployment")["spec"]["template"][
        "spec"
    ]["containers"][0]
    bundle = next(c for c in plan.children if c["kind"] == "ConfigMap")["data"]["bundle.json"]
    return container["command"] + container["args"], bundle


def _run(
    tmp: Path,
    env: dict[str, str],
    timeout: str = "20",
    retries: str = "2",
    hostile: dict[str, tuple[str, str]] | None = None,
) -> Iterator[tuple[str, LocalProcess]]:
    argv, text = _bundle(hostile)
    bundle = tmp / "bundle.json"
    bundle.write_text(text)
    (tmp / "secrets" / "llm").mkdir(parents=True)
    (tmp / "secrets" / "llm" / "apiKey").write_text(SECRET)
    port = free_port()
    args = [a.replace("/etc/kaizen/bundle/bundle.json", str(bundle)) for a in argv]
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    # (With a long timeout and retries, a connection attempt shows as a slow answer.)
    extra = ["--secrets-dir", str(tmp / "secrets"), "--upstream-timeout", timeout]
    process = start([*args, *extra, "--upstream-retries", retries], tmp / "gateway.log", env)
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/readyz", process)
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.stop()


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[tuple[str, LocalProcess]]:
    yield from _run(tmp_path, {"KAIZEN_GATEWAY_ALLOW_LINK_LOCAL": ""})


def _upstream_errors(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("kaizen_gateway_upstream_errors_total{")
    )


def test_the_gateway_refuses_metadata_upstreams_without_connecting(
    guarded: tuple[str, LocalProcess], figures: Figures
) -> None:
    url, process = guarded
    calls = 0
    with httpx.Client(base_url=url, timeout=30) as http:
        for name in HOSTILE:
            chat = {"model": name, "messages": [{"role": "user", "content": "hi"}]}
            for path, body in (
                ("/v1/chat/completions", chat),
                ("/v1/chat/completions", {**chat, "stream": True}),
                (f"/agents/{name}/invoke", {"input": "hi"}),
            ):
                started = time.monotonic()
                r = http.post(path, json=body)
                calls += 1
                assert time.monotonic() - started < 2, f"{name}: slow, as if it connected"
                assert r.status_code == 502, (name, path, r.text)
                error = r.json()["error"]
                assert error["code"] == "upstream_destination_not_allowed", (name, error)
                assert error["type"] == "upstream_error"
                message = error["message"]
                assert message.startswith("upstream destination not allowed: host "), message
                assert "KAIZEN_GATEWAY_ALLOW_LINK_LOCAL=1" in message
                assert SECRET not in r.text
                if name.startswith("imds"):
                    assert "169.254.169.254" in message, message
        assert http.get("/readyz").status_code == 200
    assert _upstream_errors(url) == 0  # no attempt failed, so none was retried
    assert SECRET not in process.log.read_text()
    figures.record("ssrf destinations refused", len(HOSTILE))
    figures.record("gateway calls to hostile upstreams answered by the guard", calls)


def test_the_allow_switch_lets_the_gateway_try(tmp_path: Path) -> None:
    """With KAIZEN_GATEWAY_ALLOW_LINK_LOCAL=1 a link-local upstream is not refused: the
    gateway tries it (fe80::1 without a zone: the attempt fails at once, locally)."""
    allowed = {"KAIZEN_GATEWAY_ALLOW_LINK_LOCAL": "1"}
    for url, _ in _run(tmp_path, allowed, timeout="2", retries="0"):
        r = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "link-local-v6", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert r.status_code in (502, 504), r.text
        assert r.json()["error"]["code"] == "upstream_failed", r.text

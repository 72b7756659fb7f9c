"""The gateway data plane, run with the exact command and bundle the operator renders,
called with the official `openai` client, against the local OpenAI/Anthropic stub."""

from __future__ import annotations

import concurrent.futures
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.reliability.figures import Figures
from tests.support.agent_gateway import (
    gateway_bundle,
    gateway_command,
    metric_total,
    render_dev_gateway,
)
from tests.support.objects import agent
from tests.support.processes import LocalProcess, free_port, start, wait_http_ok

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Running:
    url: str
    stub: str
    bundle: Path
    process: LocalProcess

    def control(self, **settings: Any) -> None:
        httpx.post(f"{self.stub}/_control", json=settings, timeout=5).raise_for_status()

    def metric(self, name: str, **labels: str) -> float:
        return metric_total(self.url, name, **labels)


def rendered(stub: str, tmp: Path, **gateway_spec: Any) -> tuple[list[str], str]:
    """The Deployment's command and the ConfigMap's bundle, for agents on the stub."""
    bodies = [
        agent(
            "helper",
            prompt="You help.",
            model={
                "provider": "openai-compatible",
                "name": "gpt-4o-mini",
                "endpoint": f"{stub}/v1",
                "credentialsSecretRef": {"name": "oa", "key": "apiKey"},
                "parameters": {"temperature": 0.1},
            },
            tools=[{"name": "lookup", "description": "Look up", "parameters": {"type": "object"}}],
        ),
        agent(
            "claude",
            prompt="Be brief.",
            model={
                "provider": "anthropic",
                "name": "claude-sonnet-4-5",
                "endpoint": stub,
                "credentialsSecretRef": {"name": "an"},
            },
        ),
        agent("echo"),
        agent(
            "resilient",
            model={
                "provider": "openai-compatible",
                "name": "primary-broken",
                "fallbackName": "backup",
                "endpoint": f"{stub}/v1",
            },
        ),
    ]
    plan = render_dev_gateway(bodies, **gateway_spec)
    return gateway_command(plan), gateway_bundle(plan)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    yield from run_gateway(tmp_path_factory.mktemp("gateway"))


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A gateway that requires API keys and limits each key to 2 requests/second."""
    yield from run_gateway(
        tmp_path_factory.mktemp("guarded"),
        auth={"mode": "APIKey", "apiKeysSecretRef": {"name": "gw-keys"}},
        rateLimits={"perApiKey": {"requestsPerSecond": 1, "burst": 2}},
    )


def run_gateway(tmp: Path, **gateway_spec: Any) -> Iterator[Running]:
    stub_port, port = free_port(), free_port()
    stub = start(
        [sys.executable, "-m", "upstream_stub.server", "--port", str(stub_port)],
        tmp / "stub.log",
        env={"PYTHONPATH": str(ROOT / "hack")},
    )
    stub_url = f"http://127.0.0.1:{stub_port}"
    argv, bundle_text = rendered(stub_url, tmp, **gateway_spec)
    bundle = tmp / "bundle" / "bundle.json"
    bundle.parent.mkdir()
    bundle.write_text(bundle_text)
    secrets = tmp / "secrets"
    (secrets / "oa").mkdir(parents=True)
    (secrets / "oa" / "apiKey").write_text("sk-test-openai")
    (secrets / "an").mkdir()
    (secrets / "an" / "apiKey").write_text("sk-test-anthropic")
    (secrets / "gw-keys").mkdir()
    (secrets / "gw-keys" / "team-a").write_text("kaizen-key-a")
    (secrets / "gw-keys" / "team-b").write_text("kaizen-key-b")
    # The pod's exact command, with the pod paths mapped onto this machine.
    args = [a.replace("/etc/kaizen/bundle/bundle.json", str(bundle)) for a in argv]
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    gw = start(
        [*args, "--secrets-dir", str(secrets), "--upstream-retries", "2"], tmp / "gateway.log"
    )
    try:
        wait_http_ok(f"{stub_url}/_control", stub)
        wait_http_ok(f"http://127.0.0.1:{port}/readyz", gw)
        yield Running(f"http://127.0.0.1:{port}", stub_url, bundle, gw)
    finally:
        gw.stop()
        stub.stop()


def client(running: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{running.url}/v1", api_key="unused", max_retries=0)


def test_models_lists_served_agents_with_revisions(running: Running) -> None:
    models = {m.id: m for m in client(running).models.list()}
    assert set(models) == {"helper", "claude", "echo", "resilient"}
    assert models["helper"].model_extra["revision"] == 1


def test_chat_completion_through_openai_compatible_upstream(running: Running) -> None:
    before = running.metric("kaizen_gateway_requests_total", agent="helper", status="200")
    raw = client(running).chat.completions.with_raw_response.create(
        model="helper", messages=[{"role": "user", "content": "hello there"}]
    )
    completion = raw.parse()
    assert completion.model == "helper"
    assert "stub says: hello there" in completion.choices[0].message.content
    assert completion.choices[0].message.content.startswith(
        "[system:9]"
    )  # the agent's prompt was applied
    assert completion.usage.prompt_tokens == 11
    assert raw.headers["x-kaizen-agent-revision"] == "1"
    assert float(raw.headers["x-kaizen-overhead-ms"]) >= 0
    assert (
        running.metric("kaizen_gateway_requests_total", agent="helper", status="200") == before + 1
    )
    assert running.metric("kaizen_gateway_tokens_total", agent="helper", direction="in") >= 11
    sent = httpx.get(f"{running.stub}/_control", timeout=5).json()["requests"][-1]
    assert sent["headers"]["authorization"] == "Bearer sk-test-openai"
    assert sent["body"]["model"] == "gpt-4o-mini"
    assert sent["body"]["temperature"] == 0.1
    assert sent["body"]["tools"][0]["function"]["name"] == "lookup"


def test_streaming_chat_completion(running: Running) -> None:
    stream = client(running).chat.completions.create(
        model="helper", messages=[{"role": "user", "content": "stream me"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "stub says: stream me" in text
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    assert all(c.model == "helper" for c in chunks)
    assert running.metric("kaizen_gateway_time_to_first_token_seconds_count", agent="helper") >= 1


def test_anthropic_upstream_translated_both_ways(running: Running) -> None:
    completion = client(running).chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "bonjour"}]
    )
    assert "stub says: bonjour" in completion.choices[0].message.content
    assert completion.usage.prompt_tokens == 13
    sent = httpx.get(f"{running.stub}/_control", timeout=5).json()["requests"][-1]
    assert sent["path"] == "anthropic"
    assert sent["headers"]["x-api-key"] == "sk-test-anthropic"
    assert sent["body"]["system"] == "Be brief."
    stream = client(running).chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "streamed"}], stream=True
    )
    chunks = list(stream)
    assert "stub says: streamed" in "".join(
        c.choices[0].delta.content or "" for c in chunks if c.choices
    )
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_native_invoke_and_mock_provider(running: Running) -> None:
    resp = httpx.post(f"{running.url}/agents/echo/invoke", json={"input": "ping"})
    assert resp.status_code == 200
    body = resp.json()
    assert body["output"] == "[mock:echo] ping"
    assert body["revision"] == 1 and body["usage"]["total_tokens"] > 0 and body["latencyMs"] >= 0


def test_error_paths_use_the_openai_error_shape(running: Running) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client(running).chat.completions.create(
            model="nope", messages=[{"role": "user", "content": "x"}]
        )
    assert missing.value.body["code"] == "model_not_found"
    bad = httpx.post(
        f"{running.url}/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_json"
    big = httpx.post(f"{running.url}/v1/chat/completions", content=b"x" * 2_000_000)
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    empty = httpx.post(
        f"{running.url}/v1/chat/completions", json={"model": "helper", "messages": []}
    )
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "messages"


def test_upstream_429_is_retried_and_a_dead_upstream_is_a_502(running: Running) -> None:
    running.control(fail=[429, 503])
    ok = client(running).chat.completions.create(
        model="helper", messages=[{"role": "user", "content": "retry"}]
    )
    assert "stub says: retry" in ok.choices[0].message.content
    assert running.metric("kaizen_gateway_upstream_errors_total", agent="helper") >= 2
    running.control(fail=[500, 500, 500])
    with pytest.raises(openai.APIStatusError) as failed:
        client(running).chat.completions.create(
            model="helper", messages=[{"role": "user", "content": "x"}]
        )
    assert failed.value.status_code == 502
    assert failed.value.body["type"] == "upstream_error"


@pytest.mark.reliability  # config swapped under load: also part of `make reliability`
def test_bundle_replaced_mid_traffic_drops_no_request(running: Running, figures: Figures) -> None:
    original = running.bundle.read_text()
    data = json.loads(original)
    next(a for a in data["agents"] if a["name"] == "echo")["revision"] = 2  # echo at a new revision

    def call(i: int) -> str:
        resp = httpx.post(f"{running.url}/agents/echo/invoke", json={"input": f"n{i}"}, timeout=10)
        assert resp.status_code == 200, resp.text
        return resp.headers["x-kaizen-agent-revision"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(call, i) for i in range(300)]
        swapped = running.bundle.with_suffix(".new")
        swapped.write_text(json.dumps(data))
        swapped.replace(running.bundle)  # atomic, as a ConfigMap volume update is
        revisions = [f.result() for f in futures]
    assert set(revisions) <= {"1", "2"}
    deadline = time.monotonic() + 5
    while call(0) != "2":
        assert time.monotonic() < deadline, "bundle was not reloaded"
        time.sleep(0.2)
    running.bundle.write_text(original)
    figures.record("requests while the bundle was replaced (8 clients)", len(revisions))
    figures.record("requests answered by the new revision", revisions.count("2"))


def test_health_readiness_and_metrics_endpoints(running: Running) -> None:
    assert httpx.get(f"{running.url}/healthz").status_code == 200
    assert httpx.get(f"{running.url}/readyz").status_code == 200
    metrics = httpx.get(f"{running.url}/metrics").text
    assert "kaizen_gateway_request_duration_seconds_bucket" in metrics
    assert "kaizen_gateway_agents_served 4.0" in metrics


def test_fallback_model_answers_when_the_primary_is_down(running: Running) -> None:
    running.control(broken_models=["primary-broken"])
    try:
        raw = client(running).chat.completions.with_raw_response.create(
            model="resilient", messages=[{"role": "user", "content": "still there?"}]
        )
        assert "stub says: still there?" in raw.parse().choices[0].message.content
        assert raw.headers["x-kaizen-fallback-model"] == "backup"
    finally:
        running.control(broken_models=[])


def test_api_keys_are_required_when_the_gateway_says_so(guarded: Running) -> None:
    anonymous = httpx.post(
        f"{guarded.url}/v1/chat/completions",
        json={"model": "echo", "messages": [{"role": "user", "content": "x"}]},
    )
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "invalid_api_key"
    wrong = openai.OpenAI(base_url=f"{guarded.url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="echo", messages=[{"role": "user", "content": "x"}])
    ok = openai.OpenAI(base_url=f"{guarded.url}/v1", api_key="kaizen-key-a", max_retries=0)
    assert (
        ok.chat.completions.create(model="echo", messages=[{"role": "user", "content": "hi"}])
        .choices[0]
        .message.content
        == "[mock:echo] hi"
    )


def test_per_key_rate_limit_returns_429_with_retry_after(guarded: Running) -> None:
    def call(key: str) -> httpx.Response:
        return httpx.post(
            f"{guarded.url}/agents/echo/invoke",
            json={"input": "x"},
            headers={"authorization": f"Bearer {key}"},
        )

    statuses = [call("kaizen-key-b").status_code for _ in range(6)]
    assert statuses[:2] == [200, 200]
    limited = call("kaizen-key-b")
    assert limited.status_code == 429
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert int(limited.headers["retry-after"]) >= 1
    # Another key has its own bucket.
    assert call("kaizen-key-a").status_code == 200


def test_tool_calls_pass_through_to_the_caller(running: Running) -> None:
    completion = client(running).chat.completions.create(
        model="helper", messages=[{"role": "user", "content": "please call a tool"}]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls[0].function.name == "lookup"  # the agent's declared tool

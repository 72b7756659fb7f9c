"""Conversation memory and shared rate limits: two real gateway processes (the command
the operator renders) sharing one real Redis, in front of the OpenAI protocol stub.
What the model was given is read back from the stub's record of its requests."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from kaizen_gateway.memory import SUMMARY_INSTRUCTIONS
from localredis import server as localredis
from tests.support.agent_gateway import (
    gateway_bundle,
    gateway_command,
    gateway_pod,
    metric_total,
    render_dev_gateway,
)
from tests.support.objects import agent
from tests.support.processes import LocalProcess, free_port, start, wait_http_ok

ROOT = Path(__file__).resolve().parents[2]
KEY_A, KEY_B = "kaizen-key-a", "kaizen-key-b"
CONV = "x-kaizen-conversation-id"


@dataclass
class Replicas:
    """Gateway processes of one Gateway, the stub behind them and their Redis."""

    urls: list[str]
    stub: str
    redis_root: Path
    processes: list[LocalProcess] = field(default_factory=list)

    def stub_requests(self) -> list[dict[str, Any]]:
        return httpx.get(f"{self.stub}/_control", timeout=5).json()["requests"]

    def last_upstream_messages(self) -> list[dict[str, Any]]:
        """The messages of the last chat request (not of a background summary request)."""
        for r in reversed(self.stub_requests()):
            messages: list[dict[str, Any]] = r["body"]["messages"]
            if messages[0]["content"] != SUMMARY_INSTRUCTIONS:
                return messages
        raise AssertionError("the stub received no chat request")

    def metric(self, index: int, name: str, **labels: str) -> float:
        return metric_total(self.urls[index], name, **labels)


def memory_agent(name: str, memory: dict[str, Any], stub: str) -> dict[str, Any]:
    return agent(
        name,
        prompt="You help.",
        model={"provider": "openai-compatible", "name": "gpt-4o-mini", "endpoint": f"{stub}/v1"},
        context={"memory": memory},
    )


@contextlib.contextmanager
def start_replicas(
    tmp: Path, count: int, redis_root: Path, **gateway_spec: Any
) -> Iterator[Replicas]:
    """``count`` gateway processes with the operator's command and environment (the Redis
    Secret's URL filled in), agents ``chat`` (conversation, 2 turns), ``digest`` (summary,
    2 turns), ``plain`` (no memory) and ``forecaster`` (an http tool on the tool stub),
    API keys KEY_A and KEY_B."""
    redis_url = localredis.up(redis_root)
    stub_port = free_port()
    stub_url = f"http://127.0.0.1:{stub_port}"
    stub = start(
        [sys.executable, "-m", "upstream_stub.server", "--port", str(stub_port)],
        tmp / "stub.log",
        env={"PYTHONPATH": str(ROOT / "hack")},
    )
    tools_port = free_port()
    tools = start(
        [sys.executable, "-m", "upstream_stub.tools", "--port", str(tools_port)],
        tmp / "tools.log",
        env={"PYTHONPATH": str(ROOT / "hack")},
    )
    forecaster = memory_agent("forecaster", {"type": "conversation", "maxTurns": 4}, stub_url)
    forecaster["spec"]["model"]["name"] = "forecaster-model"  # the stub's script key
    forecaster["spec"]["tools"] = [
        {
            "name": "forecast",
            "type": "http",
            "http": {"url": f"http://127.0.0.1:{tools_port}/weather", "method": "GET"},
        }
    ]
    bodies = [
        memory_agent("chat", {"type": "conversation", "maxTurns": 2, "ttl": "10m"}, stub_url),
        memory_agent("digest", {"type": "summary", "maxTurns": 2}, stub_url),
        memory_agent("plain", {"type": "none"}, stub_url),
        forecaster,
    ]
    plan = render_dev_gateway(
        bodies,
        name="memory",
        redis_secret="redis",
        auth={"mode": "APIKey", "apiKeysSecretRef": {"name": "gw-keys"}},
        **gateway_spec,
    )
    container = gateway_pod(plan)["containers"][0]
    # What the kubelet would do with the container's env: the Secret's "url" key.
    env = {e["name"]: redis_url for e in container["env"] if "secretKeyRef" in e["valueFrom"]}
    assert env == {"KAIZEN_REDIS_URL": redis_url}
    bundle = tmp / "bundle.json"
    bundle.write_text(gateway_bundle(plan))
    secrets = tmp / "secrets"
    (secrets / "gw-keys").mkdir(parents=True)
    (secrets / "gw-keys" / "team-a").write_text(KEY_A)
    (secrets / "gw-keys" / "team-b").write_text(KEY_B)
    replicas = Replicas([], stub_url, redis_root)
    try:
        for i in range(count):
            port = free_port()
            args = [
                a.replace("/etc/kaizen/bundle/bundle.json", str(bundle))
                for a in gateway_command(plan)
            ]
            args[args.index("--host") + 1] = "127.0.0.1"
            args[args.index("--port") + 1] = str(port)
            replicas.processes.append(
                start([*args, "--secrets-dir", str(secrets)], tmp / f"gateway-{i}.log", env=env)
            )
            replicas.urls.append(f"http://127.0.0.1:{port}")
        wait_http_ok(f"{stub_url}/_control", stub)
        wait_http_ok(f"http://127.0.0.1:{tools_port}/_requests", tools)
        for url, proc in zip(replicas.urls, replicas.processes, strict=True):
            wait_http_ok(f"{url}/readyz", proc)
        yield replicas
    finally:
        for proc in replicas.processes:
            proc.stop()
        tools.stop()
        stub.stop()
        localredis.down(redis_root)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    root = localredis.private_root(f"mem-{uuid.uuid4().hex[:6]}")
    with start_replicas(tmp_path_factory.mktemp("memory"), 2, root) as replicas:
        yield replicas


def chat(
    url: str, agent_name: str, text: str, conversation: str, key: str = KEY_A
) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": agent_name, "messages": [{"role": "user", "content": text}]},
        headers={"authorization": f"Bearer {key}", CONV: conversation},
        timeout=10,
    )


def conversation(
    url: str, agent_name: str, conv: str, key: str = KEY_A, method: str = "GET"
) -> httpx.Response:
    return httpx.request(
        method,
        f"{url}/agents/{agent_name}/conversations/{conv}",
        headers={"authorization": f"Bearer {key}"},
        timeout=10,
    )


def user_texts(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "user"]


def test_turn_two_on_another_replica_sees_turn_one(pair: Replicas) -> None:
    conv = uuid.uuid4().hex
    first = chat(pair.urls[0], "chat", "my name is Ada", conv)
    assert first.status_code == 200, first.text
    assert first.headers["x-kaizen-memory"] == "used"
    answer_one = first.json()["choices"][0]["message"]["content"]

    second = chat(pair.urls[1], "chat", "what is my name?", conv)
    assert second.status_code == 200, second.text
    sent = pair.last_upstream_messages()
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    assert sent[1]["content"] == "my name is Ada"
    assert sent[2]["content"] == answer_one
    assert sent[3]["content"] == "what is my name?"
    lookups = pair.metric(
        1, "kaizen_gateway_memory_duration_seconds_count", agent="chat", operation="recall"
    )
    assert lookups >= 1  # the lookup latency is exported per agent


def test_only_the_last_max_turns_are_given_to_the_model(pair: Replicas) -> None:
    conv = uuid.uuid4().hex
    for i, url in enumerate([pair.urls[0], pair.urls[1], pair.urls[0]]):
        assert chat(url, "chat", f"turn {i}", conv).status_code == 200
    assert chat(pair.urls[1], "chat", "turn 3", conv).status_code == 200
    # maxTurns 2: turns 1 and 2 are remembered, turn 0 is gone.
    assert user_texts(pair.last_upstream_messages()) == ["turn 1", "turn 2", "turn 3"]
    stored = conversation(pair.urls[0], "chat", conv).json()
    assert [t[0]["content"] for t in stored["turns"]] == ["turn 2", "turn 3"]
    # Expiry (ttl 10m) is set, counted from the last turn.
    assert 0 < stored["expiresInSeconds"] <= 600


def test_summary_memory_asks_the_agents_model_to_summarise_older_turns(pair: Replicas) -> None:
    conv = uuid.uuid4().hex
    for i in range(3):
        assert (
            chat(pair.urls[i % 2], "digest", f"fact {i}: the sky is colour {i}", conv).status_code
            == 200
        )

    # The third turn exceeds maxTurns 2: the oldest one is folded into a summary by one
    # call of the agent's own model (in the background of the turn).
    deadline = time.monotonic() + 20
    stored: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stored = conversation(pair.urls[0], "digest", conv).json()
        if stored.get("summary"):
            break
        time.sleep(0.1)
    assert stored.get("summary"), stored
    asks = [
        r["body"]
        for r in pair.stub_requests()
        if r["body"]["messages"][0]["content"] == SUMMARY_INSTRUCTIONS
        and "fact 0" in str(r["body"]["messages"][1]["content"])
    ]
    assert len(asks) == 1
    assert asks[0]["model"] == "gpt-4o-mini"
    assert "fact 1" not in asks[0]["messages"][1]["content"]  # only the turn beyond maxTurns
    assert [t[0]["content"] for t in stored["turns"]] == [
        "fact 1: the sky is colour 1",
        "fact 2: the sky is colour 2",
    ]

    assert chat(pair.urls[1], "digest", "what do you know?", conv).status_code == 200
    sent = pair.last_upstream_messages()
    assert sent[1]["role"] == "system"
    assert sent[1]["content"] == "Summary of the earlier conversation:\n" + stored["summary"]
    assert user_texts(sent) == [
        "fact 1: the sky is colour 1",
        "fact 2: the sky is colour 2",
        "what do you know?",
    ]


def test_another_api_key_can_neither_read_nor_continue_a_conversation(pair: Replicas) -> None:
    conv = uuid.uuid4().hex
    assert chat(pair.urls[0], "chat", "secret plan: tuesday", conv, KEY_A).status_code == 200
    assert conversation(pair.urls[1], "chat", conv, KEY_B).status_code == 404
    assert conversation(pair.urls[1], "chat", conv, KEY_B, "DELETE").status_code == 404
    assert conversation(pair.urls[1], "chat", conv, "wrong-key").status_code == 401
    # Nor does another agent of the same caller see it.
    assert conversation(pair.urls[0], "digest", conv, KEY_A).status_code == 404

    # The same id under another key is another conversation.
    assert chat(pair.urls[1], "chat", "what is the plan?", conv, KEY_B).status_code == 200
    assert user_texts(pair.last_upstream_messages()) == ["what is the plan?"]
    theirs = conversation(pair.urls[0], "chat", conv, KEY_B).json()
    assert [t[0]["content"] for t in theirs["turns"]] == ["what is the plan?"]
    mine = conversation(pair.urls[1], "chat", conv, KEY_A).json()
    assert [t[0]["content"] for t in mine["turns"]] == ["secret plan: tuesday"]


def test_the_caller_deletes_a_conversation(pair: Replicas) -> None:
    conv = uuid.uuid4().hex
    assert chat(pair.urls[0], "chat", "remember 42", conv).status_code == 200
    assert conversation(pair.urls[1], "chat", conv, method="DELETE").status_code == 204
    assert conversation(pair.urls[0], "chat", conv).status_code == 404
    assert chat(pair.urls[0], "chat", "what number?", conv).status_code == 200
    assert user_texts(pair.last_upstream_messages()) == ["what number?"]


def test_native_invoke_and_streaming_turns_are_remembered(pair: Replicas) -> None:
    conv = uuid.uuid4().hex
    invoked = httpx.post(
        f"{pair.urls[0]}/agents/chat/invoke",
        json={"input": "native hello", "conversationId": conv},
        headers={"authorization": f"Bearer {KEY_A}"},
        timeout=10,
    )
    assert invoked.status_code == 200, invoked.text
    assert invoked.json()["memory"] == "used"
    assert invoked.json()["conversationId"] == conv

    client = openai.OpenAI(base_url=f"{pair.urls[1]}/v1", api_key=KEY_A, max_retries=0)
    stream = client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "streamed hello"}],
        stream=True,
        extra_headers={CONV: conv},
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert user_texts(pair.last_upstream_messages()) == ["native hello", "streamed hello"]

    assert chat(pair.urls[0], "chat", "third", conv).status_code == 200
    sent = pair.last_upstream_messages()
    assert sent[-2] == {"role": "assistant", "content": streamed}


def test_a_turn_with_tool_steps_is_remembered_as_the_question_and_the_final_answer(
    pair: Replicas,
) -> None:
    conv = uuid.uuid4().hex
    script = [
        {"tool_calls": [{"name": "forecast", "arguments": {"city": "Paris"}}]},
        {"content": "Paris: {tools}"},
    ]
    httpx.post(
        f"{pair.stub}/_control", json={"scripts": {"forecaster-model": script}}, timeout=5
    ).raise_for_status()
    first = chat(pair.urls[0], "forecaster", "weather in Paris?", conv)
    assert first.status_code == 200, first.text
    answer = first.json()["choices"][0]["message"]["content"]
    assert "sunny" in answer

    assert chat(pair.urls[1], "forecaster", "and tomorrow?", conv).status_code == 200
    sent = pair.last_upstream_messages()
    # The loop's tool step stays inside turn 1; the model sees the question and the answer.
    assert [(m["role"], m.get("content")) for m in sent[1:]] == [
        ("user", "weather in Paris?"),
        ("assistant", answer),
        ("user", "and tomorrow?"),
    ]


def test_a_turn_too_large_to_store_is_answered_but_not_remembered(pair: Replicas) -> None:
    conv = uuid.uuid4().hex
    before = pair.metric(0, "kaizen_gateway_memory_skipped_total", reason="turn_too_large")
    big = chat(pair.urls[0], "chat", "x" * 300_000, conv)
    assert big.status_code == 200
    assert conversation(pair.urls[0], "chat", conv).status_code == 404
    after = pair.metric(0, "kaizen_gateway_memory_skipped_total", reason="turn_too_large")
    assert after == before + 1


def test_bad_conversation_ids_and_memoryless_agents(pair: Replicas) -> None:
    bad = chat(pair.urls[0], "chat", "hi", "no spaces allowed")
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == CONV
    invoked = httpx.post(
        f"{pair.urls[0]}/agents/chat/invoke",
        json={"input": "hi", "conversationId": "x" * 129},
        headers={"authorization": f"Bearer {KEY_A}"},
        timeout=10,
    )
    assert invoked.status_code == 400
    assert invoked.json()["error"]["param"] == "conversationId"
    plain = chat(pair.urls[0], "plain", "hi", uuid.uuid4().hex)
    assert plain.status_code == 200
    assert plain.headers["x-kaizen-memory"] == "off"


def test_a_hung_redis_costs_a_bounded_wait_then_memory_is_skipped(pair: Replicas) -> None:
    """A Redis that accepts connections but never answers (SIGSTOP): each call gives up
    after --redis-timeout, the request is served without memory, and the next ones skip
    Redis at once for a short pause instead of each waiting again."""
    conv = uuid.uuid4().hex
    assert chat(pair.urls[0], "chat", "before the hang", conv).headers["x-kaizen-memory"] == "used"

    def stored() -> bool:
        answer = conversation(pair.urls[0], "chat", conv)
        return answer.status_code == 200 and len(answer.json()["turns"]) == 1

    # The turn is written as the answer ends: be sure it is in Redis before it hangs.
    deadline = time.monotonic() + 10
    while not stored() and time.monotonic() < deadline:
        time.sleep(0.1)
    pid = int((pair.redis_root / "redis.pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        answers = [chat(pair.urls[i % 2], "chat", f"during {i}", conv) for i in range(6)]
        # A deletion is never silently skipped: the caller is told to retry.
        refused = conversation(pair.urls[0], "chat", conv, method="DELETE")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert [a.status_code for a in answers] == [200] * 6
    assert {a.headers["x-kaizen-memory"] for a in answers} == {"skipped"}
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "memory_unavailable"
    assert refused.headers["retry-after"] == "1"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = chat(pair.urls[0], "chat", "after the hang", conv)
        if after.headers["x-kaizen-memory"] == "used":
            break
        time.sleep(0.2)
    assert after.headers["x-kaizen-memory"] == "used"
    # Turns served while Redis hung were not remembered; the one before was.
    assert user_texts(pair.last_upstream_messages()) == ["before the hang", "after the hang"]


def test_redis_killed_and_restarted_under_load_serves_without_memory_and_never_hangs(
    tmp_path: Path,
) -> None:
    """The rule: while Redis is unavailable requests are served without memory
    (x-kaizen-memory: skipped, kaizen_gateway_memory_skipped_total); none fails or hangs."""
    root = localredis.private_root(f"kill-{uuid.uuid4().hex[:6]}")
    with start_replicas(tmp_path, 2, root) as replicas:
        outcomes: list[tuple[int, str]] = []
        errors: list[str] = []
        stop = threading.Event()

        def load(worker: int) -> None:
            conv = f"load-{worker}-{uuid.uuid4().hex[:6]}"
            with httpx.Client(timeout=5) as http:
                n = 0
                while not stop.is_set():
                    url = replicas.urls[n % 2]
                    n += 1
                    try:
                        r = http.post(
                            f"{url}/v1/chat/completions",
                            json={
                                "model": "chat",
                                "messages": [{"role": "user", "content": f"m{n}"}],
                            },
                            headers={"authorization": f"Bearer {KEY_A}", CONV: conv},
                        )
                        outcomes.append((r.status_code, r.headers.get("x-kaizen-memory", "")))
                    except httpx.HTTPError as exc:  # a timeout here would be a hang
                        errors.append(repr(exc))

        def count(memory: str) -> int:
            return sum(1 for status, m in outcomes if status == 200 and m == memory)

        def wait_for(memory: str, more_than: int) -> None:
            deadline = time.monotonic() + 20
            while count(memory) <= more_than and time.monotonic() < deadline:
                time.sleep(0.05)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            workers = [pool.submit(load, w) for w in range(4)]
            wait_for("used", 20)
            localredis.stop(root, kill=True)
            wait_for("skipped", 20)
            skipped_while_down = count("skipped")
            used_before_restart = count("used")
            localredis.start(root)
            wait_for("used", used_before_restart + 20)
            stop.set()
            for w in workers:
                w.result()

        assert errors == []
        assert {status for status, _ in outcomes} == {200}
        assert skipped_while_down > 20
        assert count("used") > used_before_restart + 20  # memory is back after the restart
        skipped_metric = sum(
            replicas.metric(
                i, "kaizen_gateway_memory_skipped_total", agent="chat", reason="redis_unavailable"
            )
            for i in range(2)
        )
        assert skipped_metric >= skipped_while_down


def test_rate_limits_hold_across_replicas_and_fall_back_per_pod_without_redis(
    tmp_path: Path,
) -> None:
    root = localredis.private_root(f"rl-{uuid.uuid4().hex[:6]}")
    limit = {"total": {"requestsPerSecond": 1, "burst": 10}}
    with start_replicas(tmp_path, 2, root, rateLimits=limit) as replicas:

        def burst(n: int) -> tuple[int, float]:
            started = time.monotonic()
            codes = [
                httpx.post(
                    f"{replicas.urls[i % 2]}/v1/chat/completions",
                    json={"model": "plain", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"authorization": f"Bearer {KEY_A}"},
                    timeout=10,
                ).status_code
                for i in range(n)
            ]
            assert set(codes) <= {200, 429}
            return codes.count(200), time.monotonic() - started

        allowed, took = burst(30)
        # One bucket for both replicas: its burst, plus what refilled meanwhile (1/s);
        # per pod it would have been 2 x 10.
        assert 10 <= allowed <= 10 + int(took) + 1, (allowed, took)

        localredis.stop(root, kill=True)
        allowed, took = burst(30)
        # Redis down: each pod applies the limit on its own (its bucket untouched so far).
        assert 20 <= allowed <= 20 + 2 * (int(took) + 1), (allowed, took)
        assert (
            sum(
                replicas.metric(i, "kaizen_gateway_rate_limit_local_fallback_total")
                for i in range(2)
            )
            >= 30
        )

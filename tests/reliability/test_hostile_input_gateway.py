"""Hostile requests against a real `kaizen-gateway` process: malformed, oversized and
generated bodies never get a 5xx or kill it, and every refusal is an OpenAI-shaped
error body the caller's SDK can read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.test_gateway import Running, run_gateway
from tests.reliability.figures import Figures, pick

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
MESSAGE = st.fixed_dictionaries(
    {
        # Mostly well-formed, so generated requests also travel to the upstream and back.
        "role": st.sampled_from(["user", "user", "user", "system", "assistant", "nobody", 7]),
        "content": st.text(max_size=30) | st.text(max_size=30) | JSON,
    }
)
CHAT = st.fixed_dictionaries(
    {"model": st.sampled_from(["echo", "helper", "claude", "echo", "helper", "nope", "", 3])},
    optional={
        "messages": st.lists(MESSAGE, min_size=1, max_size=3) | JSON,
        "stream": st.booleans() | JSON,
        "temperature": st.floats(-5, 5, allow_nan=False) | JSON,
        "max_tokens": st.integers(-10, 10**9) | JSON,
        "tools": JSON,
        "tool_choice": JSON,
    },
)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    yield from run_gateway(tmp_path_factory.mktemp("hostile-gateway"))


def assert_openai_error(resp: httpx.Response) -> None:
    assert resp.status_code < 500, f"{resp.status_code}: {resp.text[:300]}"
    if resp.status_code >= 400:
        error = resp.json()["error"]
        assert error["message"] and error["type"], resp.text[:300]


def test_generated_chat_bodies_never_get_a_5xx(gateway: Running, figures: Figures) -> None:
    sent = []

    @settings(
        max_examples=pick(150, 2000),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(body=CHAT)
    def check(body: dict[str, Any]) -> None:
        resp = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, timeout=30)
        sent.append(resp.status_code)
        assert_openai_error(resp)

    check()
    assert gateway.process.proc.poll() is None, gateway.process.tail()
    figures.record("generated chat bodies", len(sent))
    figures.record(
        "answered 2xx / 4xx", f"{sum(s < 300 for s in sent)} / {sum(s >= 400 for s in sent)}"
    )


def test_malformed_and_oversized_requests_are_refused_cleanly(
    gateway: Running, figures: Figures
) -> None:
    url = f"{gateway.url}/v1/chat/completions"
    ok = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    # 5,000 nested arrays, written by hand: json.dumps itself cannot nest that deep.
    deep = b'{"model": "echo", "messages": [], "metadata": ' + b"[" * 5000 + b"]" * 5000 + b"}"

    def chunks() -> Iterator[bytes]:
        yield b'{"model": "echo", "messages": [{"role": "user", "content": "'
        for _ in range(400):
            yield b"y" * 16384  # 6.5 MB, never announced by a Content-Length
        yield b'"}]}'

    cases: list[tuple[str, dict[str, Any]]] = [
        ("invalid UTF-8", {"content": b'{"model": "echo\xff\xfe"}'}),
        ("truncated JSON", {"content": b'{"model": "echo", "messages": ['}),
        ("JSON array, not object", {"json": [ok]}),
        ("JSON string", {"json": "hello"}),
        ("NaN and Infinity", {"content": b'{"model": "echo", "temperature": NaN, "messages": []}'}),
        ("5,000 nested arrays", {"content": deep}),
        ("oversized body", {"content": json.dumps({**ok, "pad": "x" * 3_000_000}).encode()}),
        ("oversized chunked body", {"content": chunks()}),
        ("10,000 messages", {"json": {**ok, "messages": ok["messages"] * 10_000}}),
        (
            "wrong content type",
            {"content": b"model=echo", "headers": {"content-type": "text/plain"}},
        ),
        ("huge header", {"json": ok, "headers": {"x-pad": "h" * 60_000}}),
        ("unknown agent with path tricks", {"json": {**ok, "model": "../../etc/passwd"}}),
        ("null bytes", {"json": {**ok, "model": "echo\x00"}}),
    ]
    refused = 0
    for name, kwargs in cases:
        try:
            resp = httpx.post(url, timeout=60, **kwargs)
        except httpx.RemoteProtocolError:
            # The server may close the connection on a header it will not read;
            # that is a refusal too, as long as it stays up.
            refused += 1
            continue
        assert resp.status_code < 500, f"{name}: {resp.status_code} {resp.text[:200]}"
        if resp.status_code >= 400:
            refused += 1
            if resp.headers.get("content-type", "").startswith("application/json"):
                assert resp.json()["error"]["message"], name
    native = httpx.post(f"{gateway.url}/agents/echo/invoke", content=b"[1,2", timeout=10)
    assert native.status_code == 400 and native.json()["error"]["message"]
    after = httpx.post(url, json=ok, timeout=10)
    assert after.status_code == 200, "the gateway stopped answering after hostile input"
    assert gateway.process.proc.poll() is None, gateway.process.tail()
    figures.record("malformed or oversized requests", len(cases) + 1)
    figures.record("refused with a 4xx (or connection closed)", refused + 1)


def test_integers_past_64_bits_are_passed_on_exactly(gateway: Running) -> None:
    """The upstream body is encoded with orjson, which refuses integers past 64 bits; such
    a value (a seed, a tool schema's bound) still reaches the provider unchanged."""
    big = 2**70 + 1
    tool = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "integer", "maximum": big}},
    }
    resp = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={
            "model": "helper",
            "messages": [{"role": "user", "content": "hi"}],
            "seed": big,
            "tools": [tool],
        },
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    raw = httpx.get(f"{gateway.stub}/_control", timeout=5).text
    assert str(big) in raw and f'"seed":{big}' in raw.replace(" ", "")


def test_nan_and_infinity_are_refused_as_malformed_json(gateway: Running) -> None:
    """Python's parser takes NaN and Infinity; JSON and the providers do not."""
    for constant in ("NaN", "Infinity", "-Infinity"):
        body = '{"model": "helper", "messages": [{"role": "user", "content": "hi"}], '
        resp = httpx.post(
            f"{gateway.url}/v1/chat/completions",
            content=body + f'"temperature": {constant}}}',
            headers={"content-type": "application/json"},
            timeout=10,
        )
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["code"] == "invalid_json"
        assert constant.lstrip("-") in resp.json()["error"]["message"]

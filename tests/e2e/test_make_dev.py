"""`make dev` end to end, on a second, private control plane: it starts the cluster,
CRDs, operator, facade and gateway processes, applies the examples, answers a chat
completion through the dev gateway, is safe to run twice, and `down` leaves nothing."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import httpx
import pytest

from tests.support.kube import eventually, local_control_plane_only

ROOT = Path(__file__).resolve().parents[2]
PORTS = (18000, 18081, 18931, 18932, 19090, 19443)  # the dev environment's fixed local ports


def _busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def dev(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "hack" / "dev.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )


@local_control_plane_only
def test_make_dev_from_nothing_to_a_chat_completion_and_back(tmp_path: Path) -> None:
    if any(_busy(p) for p in PORTS):
        pytest.skip("a dev environment already runs on this machine (its ports are taken)")
    env = {
        **os.environ,
        "KAIZEN_CLUSTER_DIR": str(tmp_path / "cluster"),
        "KAIZEN_DEV_DIR": str(tmp_path / "dev"),
    }
    env.pop("KUBECONFIG", None)
    env.pop("KAIZEN_DATABASE_URL", None)
    try:
        up = dev(env, "up")
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        out = up.stdout
        assert "Kaizen Studio dev environment is up." in out
        assert "all Ready" in out and "answered just now: '[mock:echo]" in out
        assert "facade:      http://127.0.0.1:18000/docs" in out
        assert "console:     http://127.0.0.1:18000/ (the web console" in out  # bootstrap built it
        assert "Stop it with: make dev-down" in out
        url = re.search(r"dev = (http://127\.0\.0\.1:\d+)", out).group(1)  # type: ignore[union-attr]
        import openai

        answer = openai.OpenAI(base_url=f"{url}/v1", api_key="-").chat.completions.create(
            model="hello-agent", messages=[{"role": "user", "content": "Hi"}]
        )
        assert answer.choices[0].message.content
        # the demo MCP server runs, and the dev gateway reaches it for agent order-desk
        assert "MCP tools:   demo MCP server http://127.0.0.1:18931/mcp" in out

        def mcp_reachable() -> bool | None:
            servers = httpx.get(f"{url}/readyz", timeout=5).json()["mcpServers"]
            return next(s["reachable"] for s in servers if s["url"].endswith(":18931/mcp"))

        eventually(mcp_reachable, timeout=60, what="the dev gateway to reach the MCP server")
        # order-desk's MCP and http tools run: the mock model calls the tool a message names
        assert "http tools:  demo endpoints http://127.0.0.1:18932" in out
        desk = openai.OpenAI(base_url=f"{url}/v1", api_key="-")
        for ask, expected in (
            ('find_order {"order_id": "A-1001"}', ("A-1001", "total_eur")),
            ('weather {"city": "Paris"}', ("Paris", "sunny")),
        ):
            said = desk.chat.completions.create(
                model="order-desk", messages=[{"role": "user", "content": ask}]
            )
            content = said.choices[0].message.content or ""
            assert all(e in content for e in expected), (ask, content)
        # The example agent keeps conversation memory in the Redis `up` started.
        assert re.search(r"redis: +redis://127\.0\.0\.1:\d+/0", out)
        openai.OpenAI(base_url=f"{url}/v1", api_key="-").chat.completions.create(
            model="hello-agent",
            messages=[{"role": "user", "content": "I am Ada"}],
            extra_headers={"x-kaizen-conversation-id": "demo-1"},
        )
        with urllib.request.urlopen(f"{url}/agents/hello-agent/conversations/demo-1") as resp:  # noqa: S310 - loopback
            turns = json.loads(resp.read())["turns"]
        assert turns[0][0] == {"role": "user", "content": "I am Ada"}
        with urllib.request.urlopen("http://127.0.0.1:18000/openapi.json", timeout=10) as resp:
            assert "/api/v1/orgs" in json.loads(resp.read())["paths"]
        with urllib.request.urlopen("http://127.0.0.1:18000/login", timeout=10) as resp:
            assert '<div id="root">' in resp.read().decode()  # the console's page
        pids = {p.name: int(p.read_text()) for p in (tmp_path / "dev").glob("*.pid")}
        assert set(pids) == {
            "operator.pid",
            "facade.pid",
            "gateways.pid",
            "mcp-toolserver.pid",
            "http-toolserver.pid",
        }

        again = dev(env, "up")  # twice is safe: the same processes keep running
        assert again.returncode == 0, again.stderr[-2000:]
        assert {p.name: int(p.read_text()) for p in (tmp_path / "dev").glob("*.pid")} == pids
    finally:
        down = dev(env, "down")
    assert down.returncode == 0, down.stderr[-2000:]
    for pid in pids.values():
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        )
    assert not any(_busy(p) for p in PORTS)

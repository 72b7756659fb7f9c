"""A gateway process serving given Agents, with the exact command and bundle the operator
renders, in front of the model stub and the tool stub (hack/upstream_stub), each its
own process on 127.0.0.1."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai

from kaizen_operator.agent.render import AgentInputs, render_agent
from kaizen_operator.gateway.render import GatewayInputs, render_gateway
from tests.support.objects import gateway
from tests.support.processes import LocalProcess, free_port, start, wait_http_ok

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Served:
    url: str
    stub: str  # the model stub
    tools: str  # the tool stub
    process: LocalProcess

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0)

    def script(self, model: str, answers: list[Any] | dict[str, Any]) -> None:
        """The model stub's next answers for ``model`` (see hack/upstream_stub/server.py)."""
        httpx.post(
            f"{self.stub}/_control", json={"scripts": {model: answers}}, timeout=5
        ).raise_for_status()

    def model_requests(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.stub}/_control", timeout=5).json()["requests"])

    def model_request_count(self) -> int:
        return int(httpx.get(f"{self.stub}/_control", timeout=5).json()["count"])

    def tool_requests(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.tools}/_requests", timeout=5).json()["requests"])

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


def stub_model(stub: str, name: str) -> dict[str, Any]:
    """An agent's model block on the model stub; ``name`` keys its scripts."""
    return {"provider": "openai-compatible", "name": name, "endpoint": f"{stub}/v1"}


def serve(
    tmp: Path,
    agents: Any,
    secrets: dict[str, dict[str, str]] | None = None,
    env: dict[str, str] | None = None,
    environment: str = "dev",
    **gateway_spec: Any,
) -> Iterator[Served]:
    """Start the stubs and a gateway serving ``agents(stub_url, tools_url)`` (Agent
    bodies); ``secrets`` are mounted as the pod would see them (name -> key -> value);
    ``env`` is added to the gateway's environment; the Gateway has ``environment``
    (serving each agent's latest revision) and ``gateway_spec``."""
    stub_port, tools_port, port = free_port(), free_port(), free_port()
    hack = {"PYTHONPATH": str(ROOT / "hack")}
    stub = start(
        [sys.executable, "-m", "upstream_stub.server", "--port", str(stub_port)],
        tmp / "stub.log",
        env=hack,
    )
    tools = start(
        [sys.executable, "-m", "upstream_stub.tools", "--port", str(tools_port)],
        tmp / "tools.log",
        env=hack,
    )
    stub_url, tools_url = f"http://127.0.0.1:{stub_port}", f"http://127.0.0.1:{tools_port}"
    now = datetime.now(UTC)
    bodies, rendered, revisions = agents(stub_url, tools_url), [], {}
    for body in bodies:
        plan = render_agent(AgentInputs(body, (), None, None, now))
        rendered.append({**body, "status": plan.status})
        revisions[body["metadata"]["name"]] = plan.create
    names = [b["metadata"]["name"] for b in bodies]
    plan = render_gateway(
        GatewayInputs(
            gateway(
                "dev", environment, agents={"names": names}, revisionPolicy="Latest", **gateway_spec
            ),
            tuple(rendered),
            revisions,
            False,
            None,
            None,
            "img",
            now,
        )
    )
    deployment = next(c for c in plan.children if c["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    bundle = tmp / "bundle" / "bundle.json"
    bundle.parent.mkdir()
    bundle.write_text(
        next(c for c in plan.children if c["kind"] == "ConfigMap")["data"]["bundle.json"]
    )
    # Only the Secrets the operator mounts are visible to the gateway.
    mounted = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    folder = tmp / "secrets"
    folder.mkdir()
    for name, keys in (secrets or {}).items():
        if name in mounted:
            (folder / name).mkdir()
            for key, value in keys.items():
                (folder / name / key).write_text(value)
    args = [
        a.replace("/etc/kaizen/bundle/bundle.json", str(bundle))
        for a in container["command"] + container["args"]
    ]
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    gw = start([*args, "--secrets-dir", str(folder)], tmp / "gateway.log", env=env)
    try:
        wait_http_ok(f"{stub_url}/_control", stub)
        wait_http_ok(f"{tools_url}/_requests", tools)
        wait_http_ok(f"http://127.0.0.1:{port}/readyz", gw)
        yield Served(f"http://127.0.0.1:{port}", stub_url, tools_url, gw)
    finally:
        gw.stop()
        tools.stop()
        stub.stop()

"""A gateway process serving given Agents, with the exact command and bundle the operator
renders, in front of the model stub and the tool stub (hack/upstream_stub), each its
own process on 127.0.0.1."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai

from kaizen_operator.agent.render import AgentInputs, render_agent
from kaizen_operator.gateway.render import GatewayInputs, GatewayPlan, render_gateway
from tests.support.objects import gateway
from tests.support.processes import LocalProcess, free_port, start, wait_http_ok

ROOT = Path(__file__).resolve().parents[2]


def render_dev_gateway(
    agents: list[dict[str, Any]],
    *,
    name: str = "dev",
    environment: str = "dev",
    redis_secret: str | None = None,
    **gateway_spec: Any,
) -> GatewayPlan:
    """What the operator renders for a Gateway serving ``agents`` (their first revisions;
    a dev Gateway unless ``environment`` says otherwise)."""
    now = datetime.now(UTC)
    served, revisions = [], {}
    for body in agents:
        plan = render_agent(AgentInputs(body, (), None, None, now))
        served.append({**body, "status": plan.status})
        revisions[body["metadata"]["name"]] = plan.create
    names = [a["metadata"]["name"] for a in agents]
    gw = gateway(name, environment, agents={"names": names}, **gateway_spec)
    return render_gateway(
        GatewayInputs(
            gw, tuple(served), revisions, False, None, None, "img", now, redis_secret=redis_secret
        )
    )


def gateway_pod(plan: GatewayPlan) -> dict[str, Any]:
    """The pod spec of a rendered gateway Deployment."""
    deployment = next(c for c in plan.children if c["kind"] == "Deployment")
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def gateway_command(plan: GatewayPlan) -> list[str]:
    """The gateway container's command line, as rendered."""
    container = gateway_pod(plan)["containers"][0]
    return [*container["command"], *container["args"]]


def gateway_bundle(plan: GatewayPlan) -> str:
    """The rendered bundle (bundle.json of the gateway's ConfigMap)."""
    config_map = next(c for c in plan.children if c["kind"] == "ConfigMap")
    return str(config_map["data"]["bundle.json"])


def metric_total(url: str, name: str, **labels: str) -> float:
    """The sum of a gateway's /metrics samples named ``name`` with these labels."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(
            f'{k}="{v}"' in line for k, v in labels.items()
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


@dataclass
class Served:
    url: str
    stub: str  # the model stub
    tools: str  # the tool stub
    process: LocalProcess
    bundle: Path | None = None  # the bundle file the gateway watches

    def rewrite_bundle(self, change: Callable[[dict[str, Any]], None]) -> None:
        """Change the bundle file as the operator would, and wait until the gateway
        serves the new one (it polls the file)."""
        assert self.bundle is not None
        before = httpx.get(f"{self.url}/readyz", timeout=5).json()["bundle"]
        data = json.loads(self.bundle.read_text())
        change(data)
        self.bundle.write_text(json.dumps(data))
        deadline = time.monotonic() + 30
        while httpx.get(f"{self.url}/readyz", timeout=5).json()["bundle"] == before:
            assert time.monotonic() < deadline, "the gateway did not load the new bundle"
            time.sleep(0.1)

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0)

    def script(self, model: str, answers: list[Any] | dict[str, Any]) -> None:
        """The model stub's next answers for ``model`` (see hack/upstream_stub/server.py)."""
        httpx.post(
            f"{self.stub}/_control", json={"scripts": {model: answers}}, timeout=5
        ).raise_for_status()

    def scripts(self, scripts: dict[str, list[Any] | dict[str, Any]]) -> None:
        """Every model's scripted answers at once (replacing the ones set before), and
        the stub's record of requests emptied."""
        httpx.post(
            f"{self.stub}/_control", json={"scripts": scripts, "requests": []}, timeout=5
        ).raise_for_status()

    def model_requests(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.stub}/_control", timeout=5).json()["requests"])

    def model_request_count(self) -> int:
        return int(httpx.get(f"{self.stub}/_control", timeout=5).json()["count"])

    def tool_requests(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.tools}/_requests", timeout=5).json()["requests"])

    def metric(self, name: str, **labels: str) -> float:
        return metric_total(self.url, name, **labels)


def bundled_pipeline(name: str, spec: dict[str, Any], revision: int = 1) -> dict[str, Any]:
    """A pipeline as the bundle carries it (what the operator writes for a revision)."""
    return {"name": name, "revision": revision, "hash": f"{name}-{revision}", "spec": spec}


def bundled_agent(name: str, model: dict[str, Any], revision: int, prompt: str) -> dict[str, Any]:
    """An agent revision as the bundle carries it (``pinnedAgents`` entries)."""
    spec = {"model": model, "systemPrompt": prompt}
    return {"name": name, "revision": revision, "hash": f"{name}-{revision}", "spec": spec}


def stub_model(stub: str, name: str) -> dict[str, Any]:
    """An agent's model block on the model stub; ``name`` keys its scripts."""
    return {"provider": "openai-compatible", "name": name, "endpoint": f"{stub}/v1"}


def serve(
    tmp: Path,
    agents: Any,
    secrets: dict[str, dict[str, str]] | None = None,
    env: dict[str, str] | None = None,
    environment: str = "dev",
    bundle_extra: Callable[[str], dict[str, Any]] | None = None,
    **gateway_spec: Any,
) -> Iterator[Served]:
    """Start the stubs and a gateway serving ``agents(stub_url, tools_url)`` (Agent
    bodies); ``secrets`` are mounted as the pod would see them (name -> key -> value);
    ``env`` is added to the gateway's environment; the Gateway has ``environment``
    (serving each agent's latest revision) and ``gateway_spec``; ``bundle_extra(stub_url)``
    is merged into the bundle (``pipelines``, ``pinnedAgents``: what the operator adds)."""
    stub_port, tools_port, port = free_port(), free_port(), free_port()
    hack = {"PYTHONPATH": str(ROOT / "hack")}
    stub_url, tools_url = f"http://127.0.0.1:{stub_port}", f"http://127.0.0.1:{tools_port}"
    plan = render_dev_gateway(
        agents(stub_url, tools_url),
        environment=environment,
        revisionPolicy="Latest",
        **gateway_spec,
    )
    pod = gateway_pod(plan)
    bundle = tmp / "bundle" / "bundle.json"
    bundle.parent.mkdir()
    rendered = json.loads(gateway_bundle(plan))
    rendered.update(bundle_extra(stub_url) if bundle_extra else {})
    bundle.write_text(json.dumps(rendered))
    # Only the Secrets the operator mounts are visible to the gateway.
    mounted = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    folder = tmp / "secrets"
    folder.mkdir()
    for name, keys in (secrets or {}).items():
        if name in mounted:
            (folder / name).mkdir()
            for key, value in keys.items():
                (folder / name / key).write_text(value)
    # Started once the plan is rendered: a spec the renderer refuses leaks no process.
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
    args = [a.replace("/etc/kaizen/bundle/bundle.json", str(bundle)) for a in gateway_command(plan)]
    args[args.index("--host") + 1] = "127.0.0.1"
    args[args.index("--port") + 1] = str(port)
    gw = start([*args, "--secrets-dir", str(folder)], tmp / "gateway.log", env=env)
    try:
        wait_http_ok(f"{stub_url}/_control", stub)
        wait_http_ok(f"{tools_url}/_requests", tools)
        wait_http_ok(f"http://127.0.0.1:{port}/readyz", gw)
        yield Served(f"http://127.0.0.1:{port}", stub_url, tools_url, gw, bundle)
    finally:
        gw.stop()
        tools.stop()
        stub.stop()

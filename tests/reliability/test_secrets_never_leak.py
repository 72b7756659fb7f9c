"""Secrets never leak: plant unique secret values everywhere a secret flows (an agent's
LLM credential, a gateway's API keys, a Promotion webhook's bearer token, a facade
password, refresh token and API key), use each one for real, then scan every log,
Event, status, ConfigMap and Deployment for them."""

from __future__ import annotations

import base64
import http.server
import json
import os
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import yaml
from kubernetes import client

from tests.reliability.convergence import GROUP, VERSION
from tests.reliability.figures import Figures
from tests.support.kube import eventually
from tests.support.processes import free_port, start, start_devrunner, start_operator, wait_http_ok

ROOT = Path(__file__).resolve().parents[2]


class Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook gate that says no (so the Promotion fails and notifies), recording
    the Authorization headers it got."""

    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.seen.append(self.headers.get("authorization", ""))
        self.rfile.read(int(self.headers.get("content-length") or 0))
        status = 200 if self.path.endswith("/notify") else 403
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def secret(name: str, data: dict[str, str]) -> client.V1Secret:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return client.V1Secret(metadata=client.V1ObjectMeta(name=name), data=encoded)


def kaizen(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


def everything_written(api_client: client.ApiClient, namespaces: list[str]) -> dict[str, str]:
    """Where a leak would show: Events, statuses, ConfigMaps and Deployments, as text."""
    core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    out: dict[str, str] = {}
    for ns in namespaces:
        for e in core.list_namespaced_event(ns).items:
            out[f"event {ns}/{e.metadata.name}"] = f"{e.reason} {e.message}"
        for cm in core.list_namespaced_config_map(ns).items:
            out[f"configmap {ns}/{cm.metadata.name}"] = json.dumps(cm.data)
        for d in apps.list_namespaced_deployment(ns).items:
            out[f"deployment {ns}/{d.metadata.name}"] = yaml.safe_dump(d.to_dict())
        for plural in ("agents", "gateways", "scalingpolicies", "promotions"):
            for obj in custom.list_namespaced_custom_object(GROUP, VERSION, ns, plural)["items"]:
                out[f"{plural} {ns}/{obj['metadata']['name']}"] = json.dumps(obj)
    return out


def test_no_secret_in_any_log_status_event_or_configmap(
    crds: Path,
    facade_cluster: Path,
    api_client: client.ApiClient,
    own_namespace: str,
    receiver: str,
    tmp_path: Path,
    figures: Figures,
) -> None:
    ns, core = own_namespace, client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    planted = {
        "llm credential": f"sk-leak-{uuid.uuid4().hex}",
        "gateway API key": f"gwk-leak-{uuid.uuid4().hex}",
        "webhook token": f"whk-leak-{uuid.uuid4().hex}",
        "facade password": f"Pw-leak-{uuid.uuid4().hex}",
        "wrong password tried": f"Pw-wrong-{uuid.uuid4().hex}",
    }
    stub_port = free_port()
    stub = start(
        [sys.executable, "-m", "upstream_stub.server", "--port", str(stub_port)],
        tmp_path / "stub.log",
        env={"PYTHONPATH": str(ROOT / "hack")},
    )
    endpoints = tmp_path / "endpoints"
    endpoints.mkdir()
    operator, _ = start_operator(crds, ns, tmp_path / "operator.log", endpoints=endpoints)
    runner = start_devrunner(crds, ns, tmp_path / "gateways", endpoints / f"{ns}.json")
    port = free_port()
    api_env = {
        **os.environ,
        "KUBECONFIG": str(facade_cluster),
        "KAIZEN_DATABASE_URL": f"sqlite:///{tmp_path / 'api.db'}",
    }
    facade = start(
        ["kaizen-api", "--host", "127.0.0.1", "--port", str(port)], tmp_path / "api.log", api_env
    )
    workspace_ns: list[str] = []
    try:
        wait_http_ok(f"http://127.0.0.1:{stub_port}/_control", stub)
        llm = secret("llm", {"apiKey": planted["llm credential"]})
        # The administrator pairs the credential with the model endpoint (docs/security.md).
        llm.metadata.annotations = {
            "kaizen.studio/allowed-destinations": f"http://127.0.0.1:{stub_port}/v1"
        }
        core.create_namespaced_secret(ns, llm)
        core.create_namespaced_secret(ns, secret("gw-keys", {"team": planted["gateway API key"]}))
        hook_secret = secret("hook", {"token": planted["webhook token"]})
        # The administrator pairs the token with the receiver (docs/security.md).
        hook_secret.metadata.annotations = {"kaizen.studio/allowed-destinations": receiver}
        core.create_namespaced_secret(ns, hook_secret)
        model = {
            "provider": "openai-compatible",
            "name": "gpt-4o-mini",
            "endpoint": f"http://127.0.0.1:{stub_port}/v1",
            "credentialsSecretRef": {"name": "llm", "key": "apiKey"},
        }
        auth = {"mode": "APIKey", "apiKeysSecretRef": {"name": "gw-keys"}}
        hook = {"name": "hook", "key": "token"}
        for body in (
            kaizen("Agent", "leaky", {"model": model, "systemPrompt": "Be brief."}),
            kaizen(
                "Gateway",
                "dev",
                {"environment": "dev", "agents": {"names": ["leaky"]}, "auth": auth},
            ),
            kaizen(
                "Gateway",
                "staging",
                {"environment": "staging", "agents": {"names": ["leaky"]}, "auth": auth},
            ),
            kaizen(
                "Promotion",
                "p1",
                {
                    "agentRef": {"name": "leaky"},
                    "revision": 1,
                    "from": "dev",
                    "to": "staging",
                    "gates": {"webhook": {"url": f"{receiver}/gate", "secretRef": hook}},
                    "notifications": {"webhook": {"url": f"{receiver}/notify", "secretRef": hook}},
                },
            ),
        ):
            plural = {"Agent": "agents", "Gateway": "gateways", "Promotion": "promotions"}
            custom.create_namespaced_custom_object(GROUP, VERSION, ns, plural[body["kind"]], body)

        # The gateway uses the LLM credential and checks the caller's key.
        ports = tmp_path / "gateways" / "ports.json"
        url = eventually(
            lambda: ports.exists() and json.loads(ports.read_text()).get("dev"), what="dev gateway"
        )
        chat = {"model": "leaky", "messages": [{"role": "user", "content": "hi"}]}

        def answered() -> httpx.Response | None:
            try:
                resp = httpx.post(
                    f"{url}/v1/chat/completions",
                    json=chat,
                    timeout=10,
                    headers={"authorization": f"Bearer {planted['gateway API key']}"},
                )
            except httpx.TransportError:  # listening a moment after ports.json
                return None
            return resp if resp.status_code == 200 else None

        eventually(answered, timeout=60, what="a chat completion through the dev gateway")
        refused = httpx.post(
            f"{url}/v1/chat/completions",
            json=chat,
            timeout=10,
            headers={"authorization": f"Bearer {planted['wrong password tried']}"},
        )
        assert refused.status_code == 401
        seen = httpx.get(f"http://127.0.0.1:{stub_port}/_control", timeout=5).json()["requests"]
        assert seen[-1]["headers"]["authorization"] == f"Bearer {planted['llm credential']}"

        # The webhook gate says no; the failure is notified, both with the bearer token.
        eventually(
            lambda: (
                (
                    custom.get_namespaced_custom_object(GROUP, VERSION, ns, "promotions", "p1").get(
                        "status"
                    )
                    or {}
                )
                .get("notification", {})
                .get("deliveredAt")
            ),
            timeout=90,
            what="the failed Promotion's notification delivered",
        )
        assert f"Bearer {planted['webhook token']}" in Receiver.seen

        # The facade: a password, a failed login, tokens and an API key, each used.
        wait_http_ok(f"http://127.0.0.1:{port}/healthz", facade)
        email = f"leak-{uuid.uuid4().hex[:6]}@example.com"
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=30) as http:
            http.post(
                "/auth/register", json={"email": email, "password": planted["facade password"]}
            ).raise_for_status()
            bad = http.post(
                "/auth/login", json={"email": email, "password": planted["wrong password tried"]}
            )
            assert bad.status_code == 401
            tokens = http.post(
                "/auth/login", json={"email": email, "password": planted["facade password"]}
            ).json()
            planted["access token"] = tokens["access_token"]
            planted["refresh token"] = tokens["refresh_token"]
            headers = {"authorization": f"Bearer {tokens['access_token']}"}
            org = f"l{uuid.uuid4().hex[:8]}"
            http.post("/orgs", json={"slug": org, "name": org}, headers=headers).raise_for_status()
            ws = http.post(f"/orgs/{org}/workspaces", json={"name": "ml"}, headers=headers)
            ws.raise_for_status()
            workspace_ns.append(ws.json()["namespace"])
            key = http.post(
                f"/orgs/{org}/keys", json={"name": "ci", "permissions": ["*:*"]}, headers=headers
            )
            key.raise_for_status()
            planted["facade API key"] = key.json()["key"]
            listed = http.get(
                f"/orgs/{org}/workspaces/ml/agents",
                headers={"authorization": f"Bearer {planted['facade API key']}"},
            )
            assert listed.status_code == 200, listed.text
            refreshed = http.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
            assert refreshed.status_code == 200, refreshed.text
            http.post(
                f"/orgs/{org}/workspaces/ml/agents",
                json=kaizen(
                    "Agent",
                    "a1",
                    {"model": {"provider": "mock", "name": "echo"}, "systemPrompt": "hi"},
                ),
                headers={"authorization": f"Bearer {planted['facade API key']}"},
            ).raise_for_status()
            audit = http.get(f"/orgs/{org}/audit", headers=headers).text
    finally:
        for proc in (facade, runner, operator, stub):
            proc.stop()
    logs = {
        str(p.relative_to(tmp_path)): p.read_text(errors="replace")
        for p in tmp_path.rglob("*.log")
        if p.name != "stub.log"
    }
    assert {"operator.log", "api.log"} <= set(logs) and any("gateway" in n for n in logs), sorted(
        logs
    )
    written = {
        **logs,
        **everything_written(api_client, [ns, *workspace_ns]),
        "audit records": audit,
    }
    leaks = [
        f"{what} found in {where}"
        for what, value in planted.items()
        for where, text in written.items()
        if value in text
    ]
    assert not leaks, "\n".join(leaks)
    for ws_ns in workspace_ns:
        core.delete_namespace(ws_ns, propagation_policy="Background")
    figures.record("secret values planted and used", len(planted))
    figures.record("places scanned (logs, events, statuses, configmaps, deployments)", len(written))
    figures.record("bytes scanned", sum(len(t) for t in written.values()))
    figures.record("leaks found", len(leaks))

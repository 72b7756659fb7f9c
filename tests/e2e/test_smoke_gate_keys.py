"""The smoke gate against a Gateway that requires API keys: it used to call without a
key and fail with 401, so production Gateways (keyed by default) could not have one.
Now it presents the `kaizen-smoke-gate` entry of the Gateway's own keys Secret, which
the keys' administrator adds on purpose; without it the gate fails saying so. Real
operator, real gateway processes (hack/devrunner.py) that check the keys."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.e2e.test_promotions import promotion, stage, wait_phase  # noqa: F401 - fixture
from tests.support.kube import eventually
from tests.support.processes import start_devrunner

SMOKE_KEY = "sk-smoke-0123456789abcdef"
SMOKE = {"input": "ping", "expectContains": "ping", "timeout": "30s"}


def _keyed(api_client: client.ApiClient, ns: str, **keys: str) -> None:
    """Staging requires API keys from Secret staging-keys (one entry per key holder)."""
    client.CoreV1Api(api_client).create_namespaced_secret(
        ns, {"metadata": {"name": "staging-keys"}, "stringData": keys}
    )
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        "kaizen.studio",
        "v1alpha1",
        ns,
        "gateways",
        "staging",
        {"spec": {"auth": {"mode": "APIKey", "apiKeysSecretRef": {"name": "staging-keys"}}}},
    )


def _staging_url(endpoints: Path, ns: str) -> str | None:
    try:
        urls = json.loads(endpoints.read_text()).get(f"{ns}/staging")
    except (OSError, ValueError):
        return None
    return (urls[0] if isinstance(urls, list) else urls) if urls else None


def _status_without_key(url: str) -> int | None:
    """The gateway's answer to a call without a key; None while it (re)starts."""
    data = b'{"input": "x"}'
    request = urllib.request.Request(f"{url}/agents/hello/invoke", data=data)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def test_the_smoke_gate_presents_the_gateways_smoke_key(
    api_client: client.ApiClient,
    crds: Path,
    operator: Any,
    stage: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    _keyed(api_client, stage, **{"kaizen-smoke-gate": SMOKE_KEY, "team": "sk-team-0123456789"})
    endpoints = operator.endpoints / f"{stage}.json"
    runner = start_devrunner(crds, stage, tmp_path / "gateways", endpoints)
    try:
        url = eventually(lambda: _staging_url(endpoints, stage), what="the staging gateway")
        # The gateway really requires a key.
        eventually(lambda: _status_without_key(url) == 401, what="staging refusing keyless calls")
        client.CustomObjectsApi(api_client).create_namespaced_custom_object(
            "kaizen.studio",
            "v1alpha1",
            stage,
            "promotions",
            promotion("smoke-keyed", revision=2, gates={"smoke": SMOKE}),
        )
        done = wait_phase(api_client, stage, "smoke-keyed", "Succeeded")
        result = next(g for g in done["status"]["gates"] if g["name"] == "smoke")
        assert result["status"] == "Passed" and "revision 2 answered" in result["message"]
        assert SMOKE_KEY not in json.dumps(done)
    finally:
        runner.stop()


def test_without_a_smoke_key_the_gate_says_what_to_add(
    api_client: client.ApiClient,
    stage: str,  # noqa: F811
) -> None:
    _keyed(api_client, stage, team="sk-team-0123456789")
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        "kaizen.studio",
        "v1alpha1",
        stage,
        "promotions",
        promotion("smoke-unkeyed", revision=2, gates={"smoke": SMOKE}),
    )
    failed = wait_phase(api_client, stage, "smoke-unkeyed", "Failed")
    assert (
        "smoke invocation not possible: Gateway 'staging' requires API keys; add an entry "
        "kaizen-smoke-gate (any new key) to Secret 'staging-keys'" in failed["status"]["message"]
    )
    assert "sk-team" not in json.dumps(failed)

"""The `kaizen` CLI on Kubernetes directly (--kube): apply, list, promote --wait,
scale override, status; with the real operator reconciling."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kaizen_api.cli import commands  # noqa: F401 - registers the commands
from kaizen_api.cli.__main__ import app
from tests.support.kube import eventually

MANIFEST = textwrap.dedent(
    """
    apiVersion: kaizen.studio/v1alpha1
    kind: Agent
    metadata: {name: hello}
    spec:
      model: {provider: mock, name: echo}
      systemPrompt: Hi.
    ---
    apiVersion: kaizen.studio/v1alpha1
    kind: Gateway
    metadata: {name: dev}
    spec: {environment: dev, agents: {names: [hello]}}
    ---
    apiVersion: kaizen.studio/v1alpha1
    kind: Gateway
    metadata: {name: staging}
    spec: {environment: staging, agents: {names: [hello]}}
    ---
    apiVersion: kaizen.studio/v1alpha1
    kind: ScalingPolicy
    metadata: {name: staging}
    spec:
      targetRef: {name: staging}
      minReplicas: 1
      maxReplicas: 4
      metrics: [{type: cpu, averageUtilization: 70}]
    """
)


@pytest.fixture
def kaizen(crds: Path, namespace: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("KUBECONFIG", str(crds))
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(app, ["--kube", "-n", namespace, *args], catch_exceptions=False)

    return run


def test_cli_apply_promote_scale_and_status(operator: Any, kaizen: Any, tmp_path: Path) -> None:
    manifest = tmp_path / "hello.yaml"
    manifest.write_text(MANIFEST)
    applied = kaizen("agents", "apply", "-f", str(manifest))
    assert applied.exit_code == 0, applied.output
    assert (
        "agent/hello applied" in applied.output
        and "scalingpolicy/staging applied" in applied.output
    )
    again = kaizen("agents", "apply", "-f", str(manifest))  # idempotent
    assert again.exit_code == 0, again.output

    listed = eventually(
        lambda: (r := kaizen("agents", "list")) and "Ready" in r.output and r, what="hello Ready"
    )
    assert "hello" in listed.output and "mock" in listed.output

    promoted = kaizen("promote", "hello", "--to", "staging", "--wait", "--timeout", "90")
    assert promoted.exit_code == 0, promoted.output
    assert "Succeeded" in promoted.output

    pinned = kaizen(
        "scale", "override", "staging", "--mode", "Pin", "--replicas", "2", "--expires-in", "30"
    )
    assert pinned.exit_code == 0, pinned.output
    got = kaizen("agents", "get", "hello", "-o", "json")
    assert '"latestRevision": 1' in got.output

    status = eventually(
        lambda: (r := kaizen("status")) and "hello@r1" in r.output and r,
        what="staging serving hello r1 in the status",
    )
    assert "Succeeded" in status.output and "scaling" in status.output
    assert kaizen("scale", "clear", "staging").exit_code == 0

    missing = kaizen("approve", "nope")
    assert missing.exit_code == 1 and "404" in missing.output and "Traceback" not in missing.output

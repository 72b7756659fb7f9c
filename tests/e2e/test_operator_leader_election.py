"""High availability: two operator replicas share a Lease; only the leader reconciles,
and when it dies (SIGKILL) the standby takes over and reconciles on its own."""

from __future__ import annotations

import re
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.reliability.figures import Figures
from tests.support.kube import eventually
from tests.support.processes import LocalProcess, start_operator

LEASE = "kaizen-operator-ha"


def reconciles(metrics_port: int) -> float:
    """Total reconciles this replica ran, read from its /metrics."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    pattern = r'^kaizen_operator_reconciles_total\{kind="\w+",result="\w+"\} (\S+)$'
    return sum(float(v) for v in re.findall(pattern, text, re.MULTILINE))


def agent_and_gateway(custom: client.CustomObjectsApi, ns: str, name: str) -> None:
    custom.create_namespaced_custom_object(
        "kaizen.studio",
        "v1alpha1",
        ns,
        "agents",
        {
            "apiVersion": "kaizen.studio/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": name},
            "spec": {"model": {"provider": "mock", "name": "echo"}, "systemPrompt": name},
        },
    )
    custom.create_namespaced_custom_object(
        "kaizen.studio",
        "v1alpha1",
        ns,
        "gateways",
        {
            "apiVersion": "kaizen.studio/v1alpha1",
            "kind": "Gateway",
            "metadata": {"name": name},
            "spec": {"environment": "dev", "agents": {"names": [name]}},
        },
    )


def is_ready(custom: client.CustomObjectsApi, ns: str, plural: str, name: str) -> bool:
    obj = custom.get_namespaced_custom_object("kaizen.studio", "v1alpha1", ns, plural, name)
    conds = (obj.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)


@pytest.fixture
def ha_namespace(api_client: client.ApiClient) -> Iterator[str]:
    ns = f"t-ha-{uuid.uuid4().hex[:8]}"  # not watched by the session's operators
    core = client.CoreV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    yield ns
    core.delete_namespace(ns, propagation_policy="Background")


@pytest.mark.reliability  # HA fault: also part of `make reliability`
def test_only_the_leader_acts_and_the_standby_takes_over_when_it_dies(
    crds: Path, api_client: client.ApiClient, ha_namespace: str, tmp_path: Path, figures: Figures
) -> None:
    ns = ha_namespace
    custom = client.CustomObjectsApi(api_client)
    coordination = client.CoordinationV1Api(api_client)
    args = [
        "--no-webhook",
        "--leader-elect",
        "--leader-election-namespace",
        ns,
        "--leader-election-id",
        LEASE,
        "--leader-election-lease-duration",
        "4",
    ]
    replicas: dict[str, tuple[LocalProcess, int]] = {}
    try:
        for identity in ("replica-a", "replica-b"):
            replicas[identity] = start_operator(
                crds,
                ns,
                tmp_path / f"{identity}.log",
                extra_args=args,
                env={"KAIZEN_OPERATOR_IDENTITY": identity},
            )
        leader = eventually(
            lambda: coordination.read_namespaced_lease(LEASE, ns).spec.holder_identity,
            timeout=30,
            what="a leader",
        )
        standby = next(r for r in replicas if r != leader)

        agent_and_gateway(custom, ns, "first")
        for plural in ("agents", "gateways"):
            eventually(lambda p=plural: is_ready(custom, ns, p, "first"), what=f"{plural} Ready")
        assert reconciles(replicas[leader][1]) > 0
        assert reconciles(replicas[standby][1]) == 0, "the standby reconciled"
        assert "standing by" in replicas[standby][0].log.read_text()

        replicas[leader][0].kill()
        killed = time.monotonic()
        eventually(
            lambda: coordination.read_namespaced_lease(LEASE, ns).spec.holder_identity == standby,
            timeout=30,
            what=f"{standby} to take the lease",
        )
        took_over = time.monotonic() - killed
        lease = coordination.read_namespaced_lease(LEASE, ns)
        assert (
            lease.spec.lease_transitions >= 2
        )  # a's (or b's) first acquisition, then the failover

        agent_and_gateway(custom, ns, "second")
        for plural in ("agents", "gateways"):
            eventually(lambda p=plural: is_ready(custom, ns, p, "second"), what=f"{plural} Ready")
        assert reconciles(replicas[standby][1]) > 0
        serving = time.monotonic() - killed

        # A clean stop gives the lease up at once instead of letting it expire.
        replicas[standby][0].stop()
        assert replicas[standby][0].proc.returncode == 0
        released = coordination.read_namespaced_lease(LEASE, ns)
        assert not released.spec.holder_identity
    finally:
        for proc, _ in replicas.values():
            proc.stop()
    figures.record("lease duration", 4, "s")
    figures.record("standby held the lease after the leader's SIGKILL in", round(took_over, 1), "s")
    figures.record("a new Agent and Gateway Ready after the SIGKILL in", round(serving, 1), "s")

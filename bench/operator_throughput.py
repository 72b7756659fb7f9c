#!/usr/bin/env python3
"""Benchmark: N Agents + N Gateways -> time until every Gateway is Ready, and operator RSS,
next to a baseline measured in the same run: the same child objects written directly
with the Python client (the apiserver write floor, no operator at all).

    python bench/operator_throughput.py --n 100 [--n 1000]

Runs against the local control plane (or $KUBECONFIG); prints one line per N.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "hack"), str(ROOT)]

from kubernetes import client, config, utils  # noqa: E402

from kaizen_operator.agent.render import AgentInputs, render_agent  # noqa: E402
from kaizen_operator.gateway.render import GatewayInputs, render_gateway  # noqa: E402
from localcluster import cluster  # noqa: E402
from tests.support.kube import install_crds  # noqa: E402
from tests.support.processes import start_operator  # noqa: E402

WORKERS = 8


def agent(i: int) -> dict:
    return {
        "apiVersion": "kaizen.studio/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": f"a{i}"},
        "spec": {"model": {"provider": "mock", "name": "echo"}, "systemPrompt": f"agent {i}"},
    }


def gateway(i: int) -> dict:
    return {
        "apiVersion": "kaizen.studio/v1alpha1",
        "kind": "Gateway",
        "metadata": {"name": f"g{i}"},
        "spec": {"environment": "dev", "agents": {"names": [f"a{i}"]}},
    }


def wait_deployments_available(apps: client.AppsV1Api, ns: str, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        # Raw JSON: deserializing 1,000 Deployments into client models takes seconds.
        raw = apps.list_namespaced_deployment(ns, _preload_content=False)
        items = json.loads(raw.data)["items"]
        if sum(1 for d in items if (d.get("status") or {}).get("availableReplicas", 0)) >= n:
            return
        time.sleep(1.0)
    raise TimeoutError(f"{n} Deployments not available within {timeout}s")
    raise SystemExit(f"timed out: fewer than {n} Deployments available in {ns}")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_operator(kubeconfig: Path, api: client.ApiClient, n: int) -> tuple[float, float]:
    ns = f"bench-op-{uuid.uuid4().hex[:6]}"
    core, custom, apps = client.CoreV1Api(api), client.CustomObjectsApi(api), client.AppsV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    proc, _ = start_operator(kubeconfig, ns, Path(tempfile.mkdtemp()) / "operator.log")
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(WORKERS) as pool:
            list(
                pool.map(
                    lambda i: custom.create_namespaced_custom_object(
                        "kaizen.studio", "v1alpha1", ns, "agents", agent(i)
                    ),
                    range(n),
                )
            )
            list(
                pool.map(
                    lambda i: custom.create_namespaced_custom_object(
                        "kaizen.studio", "v1alpha1", ns, "gateways", gateway(i)
                    ),
                    range(n),
                )
            )
        deadline = time.monotonic() + 60 * 30
        while time.monotonic() < deadline:
            items = custom.list_namespaced_custom_object(
                "kaizen.studio", "v1alpha1", ns, "gateways"
            )["items"]
            ready = sum(
                1
                for g in items
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in (g.get("status") or {}).get("conditions", [])
                )
            )
            if ready >= n:
                break
            time.sleep(1.0)
        else:
            raise TimeoutError(f"{n} Gateways not Ready within 30 min")
        elapsed = time.monotonic() - started
        return elapsed, rss_mib(proc.proc.pid)
    finally:
        proc.stop()
        core.delete_namespace(ns)
        del apps


def run_baseline(api: client.ApiClient, n: int) -> float:
    """The same Agents, Gateways and children, written by this script directly."""
    ns = f"bench-floor-{uuid.uuid4().hex[:6]}"
    core, custom, apps = client.CoreV1Api(api), client.CustomObjectsApi(api), client.AppsV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    now = datetime.now(UTC)

    def write_pair(i: int) -> None:
        a = custom.create_namespaced_custom_object(
            "kaizen.studio", "v1alpha1", ns, "agents", agent(i)
        )
        g = custom.create_namespaced_custom_object(
            "kaizen.studio", "v1alpha1", ns, "gateways", gateway(i)
        )
        plan = render_agent(AgentInputs(a, (), None, None, now))
        rev = plan.create[0]
        apps.create_namespaced_controller_revision(ns, rev)
        a["status"] = plan.status
        gplan = render_gateway(
            GatewayInputs(
                g, (a,), {a["metadata"]["name"]: (rev,)}, False, None, None, "bench:1", now
            )
        )
        for child in gplan.children:
            if child["kind"] == "Deployment":
                child["spec"]["replicas"] = 1
            utils.create_from_dict(api, child, namespace=ns)
        custom.patch_namespaced_custom_object_status(
            "kaizen.studio", "v1alpha1", ns, "agents", f"a{i}", {"status": plan.status}
        )
        custom.patch_namespaced_custom_object_status(
            "kaizen.studio", "v1alpha1", ns, "gateways", f"g{i}", {"status": gplan.status}
        )

    try:
        started = time.monotonic()
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(write_pair, range(n)))
        wait_deployments_available(apps, ns, n, 60 * 30)
        return time.monotonic() - started
    finally:
        core.delete_namespace(ns)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--n", type=int, action="append", help="Agent+Gateway pairs (repeatable; default 100)"
    )
    args = parser.parse_args()
    kubeconfig = cluster.ensure_cluster()
    install_crds(kubeconfig)
    api = config.new_client_from_config(config_file=str(kubeconfig))
    print(f"{'N':>6} {'baseline s':>11} {'operator s':>11} {'ratio':>6} {'operator RSS MiB':>17}")
    for n in args.n or [100]:
        floor = run_baseline(api, n)
        elapsed, rss = run_operator(kubeconfig, api, n)
        print(
            f"{n:>6} {floor:>11.1f} {elapsed:>11.1f} {elapsed / floor:>6.2f} {rss:>17.1f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

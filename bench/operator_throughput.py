#!/usr/bin/env python3
"""Benchmark: A Agents served by G Gateways -> time until every Gateway is Ready, and
operator RSS, next to a baseline measured in the same run: the same child objects
written directly with the Python client (the apiserver write floor, no operator at all).
Then, with all of them present, single spec changes: an Agent's prompt edited, timed
until its Gateway serves the new revision (p50 of ``--changes`` edits).

    python bench/operator_throughput.py --n 100 [--n 1000] [--shape 5000:500]

``--n N`` is N Agents and N Gateways (one each); ``--shape A:G`` spreads A Agents over
G Gateways (A/G each). Runs against the local control plane (or $KUBECONFIG); prints
one line per run.
"""

from __future__ import annotations

import argparse
import json
import statistics
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


def agents_of(g: int, per: int) -> list[int]:
    """The Agents Gateway ``g`` serves when each serves ``per``."""
    return list(range(g * per, (g + 1) * per))


def gateway(i: int, per: int = 1) -> dict:
    return {
        "apiVersion": "kaizen.studio/v1alpha1",
        "kind": "Gateway",
        "metadata": {"name": f"g{i}"},
        "spec": {"environment": "dev", "agents": {"names": [f"a{a}" for a in agents_of(i, per)]}},
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


def serves(custom: client.CustomObjectsApi, ns: str, g: int, agent: str, revision: int) -> bool:
    gw = custom.get_namespaced_custom_object("kaizen.studio", "v1alpha1", ns, "gateways", f"g{g}")
    served = (gw.get("status") or {}).get("servedRevisions") or []
    ready = any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in (gw.get("status") or {}).get("conditions", [])
    )
    return ready and {"agent": agent, "revision": revision} in served


def spec_changes(custom: client.CustomObjectsApi, ns: str, agents: int, per: int, k: int) -> float:
    """p50 seconds from an Agent's prompt edit to its Gateway Ready serving revision 2."""
    took = []
    for j in range(k):
        i = (j * 7919) % agents  # spread over the namespace
        patch = {"spec": {"systemPrompt": f"agent {i}, edited"}}
        started = time.monotonic()
        custom.patch_namespaced_custom_object(
            "kaizen.studio", "v1alpha1", ns, "agents", f"a{i}", patch
        )
        while not serves(custom, ns, i // per, f"a{i}", 2):
            if time.monotonic() - started > 60:
                raise TimeoutError(f"a{i} not served at revision 2 within 60s")
            time.sleep(0.01)
        took.append(time.monotonic() - started)
    return statistics.median(took)


def run_operator(
    kubeconfig: Path, api: client.ApiClient, agents: int, gateways: int, changes: int
) -> tuple[float, float, float]:
    per = agents // gateways
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
                    range(agents),
                )
            )
            list(
                pool.map(
                    lambda i: custom.create_namespaced_custom_object(
                        "kaizen.studio", "v1alpha1", ns, "gateways", gateway(i, per)
                    ),
                    range(gateways),
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
            if ready >= gateways:
                break
            time.sleep(1.0)
        else:
            raise TimeoutError(f"{gateways} Gateways not Ready within 30 min")
        elapsed = time.monotonic() - started
        rss = rss_mib(proc.proc.pid)
        change = spec_changes(custom, ns, agents, per, changes) if changes else float("nan")
        return elapsed, max(rss, rss_mib(proc.proc.pid)), change
    finally:
        proc.stop()
        core.delete_namespace(ns)
        del apps


def rolled_out(apps: client.AppsV1Api, ns: str, name: str) -> bool:
    d = apps.read_namespaced_deployment(name, ns)
    st = d.status
    return bool(
        (st.observed_generation or 0) >= (d.metadata.generation or 0)
        and (st.updated_replicas or 0) >= 1
        and (st.available_replicas or 0) >= 1
        and (st.replicas or 0) <= 1
    )


def floor_changes(apps: client.AppsV1Api, ns: str, gateways: int, k: int) -> float:
    """p50 seconds for the platform alone to roll a gateway Deployment to a new bundle:
    the pod template's bundle hash patched directly, timed until the rollout is done
    (what any spec change that reaches the pods waits for, with no operator at all)."""
    took = []
    for j in range(k):
        g = (j * 7919) % gateways
        patch = {"spec": {"template": {"metadata": {"annotations": {"bench/change": str(j)}}}}}
        started = time.monotonic()
        apps.patch_namespaced_deployment(f"g{g}-gateway", ns, patch)
        while not rolled_out(apps, ns, f"g{g}-gateway"):
            if time.monotonic() - started > 60:
                raise TimeoutError(f"g{g}-gateway not rolled out within 60s")
            time.sleep(0.01)
        took.append(time.monotonic() - started)
    return statistics.median(took)


def run_baseline(
    api: client.ApiClient, agents: int, gateways: int, changes: int
) -> tuple[float, float]:
    """The same Agents, Gateways and children, written by this script directly; then
    the floor of one spec change (floor_changes)."""
    per = agents // gateways
    ns = f"bench-floor-{uuid.uuid4().hex[:6]}"
    core, custom, apps = client.CoreV1Api(api), client.CustomObjectsApi(api), client.AppsV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    now = datetime.now(UTC)

    def write_gateway(i: int) -> None:
        served, revisions = [], {}
        for n in agents_of(i, per):
            a = custom.create_namespaced_custom_object(
                "kaizen.studio", "v1alpha1", ns, "agents", agent(n)
            )
            plan = render_agent(AgentInputs(a, (), None, None, now))
            rev = plan.create[0]
            apps.create_namespaced_controller_revision(ns, rev)
            a["status"] = plan.status
            custom.patch_namespaced_custom_object_status(
                "kaizen.studio", "v1alpha1", ns, "agents", f"a{n}", {"status": plan.status}
            )
            served.append(a)
            revisions[a["metadata"]["name"]] = (rev,)
        g = custom.create_namespaced_custom_object(
            "kaizen.studio", "v1alpha1", ns, "gateways", gateway(i, per)
        )
        gplan = render_gateway(
            GatewayInputs(g, tuple(served), revisions, False, None, None, "bench:1", now)
        )
        for child in gplan.children:
            if child["kind"] == "Deployment":
                child["spec"]["replicas"] = 1
            utils.create_from_dict(api, child, namespace=ns)
        custom.patch_namespaced_custom_object_status(
            "kaizen.studio", "v1alpha1", ns, "gateways", f"g{i}", {"status": gplan.status}
        )

    try:
        started = time.monotonic()
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(write_gateway, range(gateways)))
        wait_deployments_available(apps, ns, gateways, 60 * 30)
        elapsed = time.monotonic() - started
        change = floor_changes(apps, ns, gateways, changes) if changes else float("nan")
        return elapsed, change
    finally:
        core.delete_namespace(ns)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--n", type=int, action="append", help="Agent+Gateway pairs (repeatable)")
    parser.add_argument(
        "--shape", action="append", default=[], help="AGENTS:GATEWAYS, e.g. 5000:500 (repeatable)"
    )
    parser.add_argument("--changes", type=int, default=20, help="spec changes timed per run")
    args = parser.parse_args()
    shapes = [(n, n) for n in args.n or []]
    for shape in args.shape:
        agents, gateways = (int(x) for x in shape.split(":"))
        if agents % gateways:
            parser.error(f"--shape {shape}: the Agents must spread evenly over the Gateways")
        shapes.append((agents, gateways))
    kubeconfig = cluster.ensure_cluster()
    install_crds(kubeconfig)
    api = config.new_client_from_config(config_file=str(kubeconfig))
    print(
        f"{'Agents':>7} {'Gateways':>9} {'floor s':>8} {'operator s':>11} {'ratio':>6} "
        f"{'RSS MiB':>8} {'change p50 ms':>14} {'floor change p50 ms':>20}"
    )
    for agents, gateways in shapes or [(100, 100)]:
        floor, floor_change = run_baseline(api, agents, gateways, args.changes)
        elapsed, rss, change = run_operator(kubeconfig, api, agents, gateways, args.changes)
        print(
            f"{agents:>7} {gateways:>9} {floor:>8.1f} {elapsed:>11.1f} {elapsed / floor:>6.2f} "
            f"{rss:>8.1f} {change * 1000:>14.0f} {floor_change * 1000:>20.0f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

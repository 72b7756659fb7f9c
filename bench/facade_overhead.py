#!/usr/bin/env python3
"""Benchmark: Agents created, listed and read through the REST facade vs the same calls
made directly to the kube-apiserver with the Python client, in the same run.

    python bench/facade_overhead.py [--n 200]

The facade runs as its real server process (`kaizen-api`, uvicorn, SQLite); the direct
calls impersonate the same Kubernetes user the facade impersonates, so both sides do
the same RBAC work on the apiserver. Prints p50/p99 per operation and the ratio of
p50s (target: at most 1.3x). The two sides alternate call by call, so a slow moment
of the machine slows both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "hack"), str(ROOT)]

import httpx  # noqa: E402
from kubernetes import client, config  # noqa: E402

from kaizen_api.server.tenancy import render_cluster_roles  # noqa: E402
from localcluster import cluster  # noqa: E402
from tests.support.kube import install_crds, kubectl  # noqa: E402
from tests.support.processes import free_port, start, wait_http_ok  # noqa: E402

Pair = tuple[list[float], list[float]]  # (via the facade, direct) in ms
PASSWORD = "benchmark passphrase"  # noqa: S105 - a throwaway local user


def agent(name: str) -> dict:
    return {
        "apiVersion": "kaizen.studio/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {"model": {"provider": "mock", "name": "echo"}, "systemPrompt": "Be brief."},
    }


def paired(via_facade: Callable[[], object], direct: Callable[[], object], n: int) -> Pair:
    """``n`` calls of each, alternating (which goes first alternates too), so both sides
    see the same machine: a slow moment slows both, not the ratio."""
    out: Pair = ([], [])
    for i in range(n):
        order = ((0, via_facade), (1, direct)) if i % 2 else ((1, direct), (0, via_facade))
        for side, fn in order:
            started = time.perf_counter()
            fn()
            out[side].append((time.perf_counter() - started) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    kubeconfig = cluster.ensure_cluster()
    install_crds(kubeconfig)
    for role in render_cluster_roles():
        kubectl(
            kubeconfig,
            "apply",
            "--server-side",
            "--field-manager=bench",
            "-f",
            "-",
            stdin=json.dumps(role),
        )
    folder = Path(tempfile.mkdtemp(prefix="facade-bench-"))
    port = free_port()
    env = {"KUBECONFIG": str(kubeconfig), "KAIZEN_DATABASE_URL": f"sqlite:///{folder / 'api.db'}"}
    proc = start(
        ["kaizen-api", "--host", "127.0.0.1", "--port", str(port)],
        folder / "api.log",
        {**os.environ, **env},
    )
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=30)
    org = f"b{uuid.uuid4().hex[:8]}"
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/healthz", proc)
        email = f"bench-{org}@example.com"
        api.post("/auth/register", json={"email": email, "password": PASSWORD}).raise_for_status()
        token = api.post("/auth/login", json={"email": email, "password": PASSWORD}).json()
        api.headers["authorization"] = f"Bearer {token['access_token']}"
        api.post("/orgs", json={"slug": org, "name": org, "plan": "enterprise"}).raise_for_status()
        api.post(f"/orgs/{org}/workspaces", json={"name": "facade"}).raise_for_status()
        api.post(f"/orgs/{org}/workspaces", json={"name": "direct"}).raise_for_status()
        # The direct side acts as the same Kubernetes identity the facade impersonates.
        direct = config.new_client_from_config(config_file=str(kubeconfig))
        direct.set_default_header("Impersonate-User", f"kaizen:{email}")
        direct.set_default_header("Impersonate-Group", f"kaizen:org:{org}:org_owner")
        custom = client.CustomObjectsApi(direct)
        ws = f"/orgs/{org}/workspaces/facade/agents"
        ns = f"kz-{org}-direct"
        facade_names, direct_names = (
            (f"f{i}" for i in range(10**9)),
            (f"d{i}" for i in range(10**9)),
        )
        results: dict[str, Pair] = {}
        results["create"] = paired(
            lambda: api.post(ws, json=agent(next(facade_names))).raise_for_status(),
            lambda: custom.create_namespaced_custom_object(
                "kaizen.studio", "v1alpha1", ns, "agents", agent(next(direct_names))
            ),
            args.n,
        )
        results["get"] = paired(
            lambda: api.get(f"{ws}/f0").raise_for_status(),
            lambda: custom.get_namespaced_custom_object(
                "kaizen.studio", "v1alpha1", ns, "agents", "d0"
            ),
            args.n,
        )
        results["list (100)"] = paired(
            lambda: api.get(ws, params={"limit": 100}).raise_for_status(),
            lambda: custom.list_namespaced_custom_object(
                "kaizen.studio", "v1alpha1", ns, "agents", limit=100
            ),
            args.n // 4,
        )
        print(
            f"{'operation':<12} {'direct p50':>11} {'facade p50':>11} {'ratio':>6} "
            f"{'direct p99':>11} {'facade p99':>11}   (ms, n={args.n})"
        )
        for name, (via_facade, straight) in results.items():
            f50, d50 = statistics.median(via_facade), statistics.median(straight)
            print(
                f"{name:<12} {d50:>11.2f} {f50:>11.2f} {f50 / d50:>6.2f} "
                f"{pct(straight, 99):>11.2f} {pct(via_facade, 99):>11.2f}",
                flush=True,
            )
    finally:
        proc.stop()
        core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
        for ns in core.list_namespace(label_selector=f"kaizen.studio/org={org}").items:
            core.delete_namespace(ns.metadata.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

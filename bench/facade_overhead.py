#!/usr/bin/env python3
"""Benchmark: Agents created, listed and read through the REST facade vs the same calls
made directly to the kube-apiserver with the Python client, in the same run.

    python bench/facade_overhead.py [--n 200] [--reference]

The facade runs as its real server process (`kaizen-api`, uvicorn, SQLite); the direct
calls impersonate the same Kubernetes user the facade impersonates, so both sides do
the same RBAC work on the apiserver. Prints p50/p99 per operation and the ratio of
p50s (target: at most 1.3x). The two sides alternate call by call, so a slow moment
of the machine slows both.

--reference adds a third side, bench/reference_facade.py: the same hop with no facade
logic (bare ASGI on uvicorn, the facade's apiserver client, one fixed impersonated
user), i.e. the ratio any Python facade could reach on this machine.
"""

from __future__ import annotations

import argparse
import itertools
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
from tests.support.processes import free_port, start, wait_http_ok, wait_port  # noqa: E402

Calls = dict[str, Callable[[], object]]  # one operation on each side, by side
SIDES = ("facade", "direct", "reference")
PASSWORD = "benchmark passphrase"  # noqa: S105 - a throwaway local user


def agent(name: str) -> dict:
    return {
        "apiVersion": "kaizen.studio/v1alpha1",
        "kind": "Agent",
        "metadata": {"name": name},
        "spec": {"model": {"provider": "mock", "name": "echo"}, "systemPrompt": "Be brief."},
    }


def alternating(calls: Calls, n: int) -> dict[str, list[float]]:
    """``n`` calls on each side in turn, in rotating order, so every side sees the same
    machine: a slow moment slows all of them, not the ratio. Latencies in ms."""
    sides = list(calls)
    out: dict[str, list[float]] = {side: [] for side in sides}
    for i in range(n):
        for k in range(len(sides)):
            side = sides[(i + k) % len(sides)]
            started = time.perf_counter()
            calls[side]()
            out[side].append((time.perf_counter() - started) * 1000)
    return out


server_timings: list[tuple[float, float]] = []  # the facade's (kube, total) ms, in order


def keep(side: str, response: httpx.Response) -> None:
    """Check an answer; for the facade, keep its Server-Timing (kube and total ms)."""
    response.raise_for_status()
    if side == "facade":
        parts = dict(
            item.strip().split(";dur=") for item in response.headers["server-timing"].split(",")
        )
        server_timings.append((float(parts["kube"]), float(parts["total"])))


def print_breakdown(
    results: dict[str, dict[str, list[float]]], timings: dict[str, list[tuple[float, float]]]
) -> None:
    """Where a facade call's time goes, from its Server-Timing header: waiting for the
    apiserver, the facade's own work, and the hop (client, loopback, HTTP server) the
    direct call does not make. Medians of each part, per call."""
    print(
        f"\n{'operation':<12} {'direct p50':>11} {'facade p50':>11} = {'kube':>6} + "
        f"{'facade':>6} + {'hop':>6}   (ms; Server-Timing of each facade call)"
    )
    for op, latencies in results.items():
        parts = [
            (kube, total - kube, latency - total)
            for (kube, total), latency in zip(timings[op], latencies["facade"], strict=True)
        ]
        kube, own, hop = (statistics.median(column) for column in zip(*parts, strict=True))
        print(
            f"{op:<12} {statistics.median(latencies['direct']):>11.2f} "
            f"{statistics.median(latencies['facade']):>11.2f}   {kube:>6.2f}   {own:>6.2f}   "
            f"{hop:>6.2f}"
        )


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--reference", action="store_true", help="add the logic-free side")
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
    env = {
        "KUBECONFIG": str(kubeconfig),
        "KAIZEN_DATABASE_URL": f"sqlite:///{folder / 'api.db'}",
        "KAIZEN_USER_RATE_LIMIT": "100000000",  # the bench measures, it does not throttle
        "KAIZEN_SELF_SERVICE_PLANS": "free,enterprise",  # its org is unlimited
    }
    proc = start(
        ["kaizen-api", "--host", "127.0.0.1", "--port", str(port)],
        folder / "api.log",
        {**os.environ, **env},
    )
    procs = [proc]
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
        ns = f"kz-{org}--direct"
        names = {side: map(f"{side[0]}{{}}".format, itertools.count()) for side in SIDES}
        via = {"facade": (api, ws)}
        if args.reference:
            api.post(f"/orgs/{org}/workspaces", json={"name": "ref"}).raise_for_status()
            ref_port = free_port()
            ref = start(
                [
                    sys.executable,
                    str(ROOT / "bench" / "reference_facade.py"),
                    "--port",
                    str(ref_port),
                    "--user",
                    f"kaizen:{email}",
                    "--group",
                    f"kaizen:org:{org}:org_owner",
                ],
                folder / "reference.log",
                {**os.environ, **env},
            )
            procs.append(ref)
            wait_port(ref_port, ref)
            ref_api = httpx.Client(base_url=f"http://127.0.0.1:{ref_port}", timeout=30)
            via["reference"] = (ref_api, f"/orgs/{org}/workspaces/ref/agents")

        def create(side: str) -> Callable[[], object]:
            if side == "direct":
                return lambda: custom.create_namespaced_custom_object(
                    "kaizen.studio", "v1alpha1", ns, "agents", agent(next(names[side]))
                )
            http, path = via[side]
            return lambda: keep(side, http.post(path, json=agent(next(names[side]))))

        def get(side: str) -> Callable[[], object]:
            if side == "direct":
                return lambda: custom.get_namespaced_custom_object(
                    "kaizen.studio", "v1alpha1", ns, "agents", "d0"
                )
            http, path = via[side]
            return lambda: keep(side, http.get(f"{path}/{side[0]}0"))

        def page(side: str) -> Callable[[], object]:
            if side == "direct":
                return lambda: custom.list_namespaced_custom_object(
                    "kaizen.studio", "v1alpha1", ns, "agents", limit=100
                )
            http, path = via[side]
            return lambda: keep(side, http.get(path, params={"limit": 100}))

        sides = ["facade", "direct", *(["reference"] if args.reference else [])]
        results, timings = {}, {}
        for op, make, n in (
            ("create", create, args.n),
            ("get", get, args.n),
            ("list (100)", page, args.n // 4),
        ):
            results[op] = alternating({side: make(side) for side in sides}, n)
            timings[op], server_timings[:] = list(server_timings), []
        print(
            f"{'operation':<12} {'direct p50':>11} {'facade p50':>11} {'ratio':>6} "
            f"{'direct p99':>11} {'facade p99':>11}"
            + (f" {'reference p50':>14} {'ratio':>6}" if args.reference else "")
            + f"   (ms, n={args.n})"
        )
        for name, latencies in results.items():
            f50, d50 = (
                statistics.median(latencies["facade"]),
                statistics.median(latencies["direct"]),
            )
            line = (
                f"{name:<12} {d50:>11.2f} {f50:>11.2f} {f50 / d50:>6.2f} "
                f"{pct(latencies['direct'], 99):>11.2f} {pct(latencies['facade'], 99):>11.2f}"
            )
            if args.reference:
                r50 = statistics.median(latencies["reference"])
                line += f" {r50:>14.2f} {r50 / d50:>6.2f}"
            print(line, flush=True)
        print_breakdown(results, timings)
    finally:
        for started in procs:
            started.stop()
        core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
        for ns in core.list_namespace(label_selector=f"kaizen.studio/org={org}").items:
            core.delete_namespace(ns.metadata.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

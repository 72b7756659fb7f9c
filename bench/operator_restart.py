#!/usr/bin/env python3
"""Benchmark: what an operator restart costs the apiserver.

    python bench/operator_restart.py [--gateways 100] [--changed-every 10]

Creates ``--gateways`` Gateways with 10 Agents each in a fresh namespace while the
operator runs and lets it converge (the baseline, same run: creates plus convergence),
SIGKILLs it, changes every ``--changed-every``-th Agent while it is down, starts it
again and waits for convergence (timed from the start of the new process). Prints both
convergence times and their ratio, the CPU each control-plane process and the operator
used meanwhile, and the apiserver's requests during the restart by verb and resource
(from its /metrics), largest first. Runs against the local
control plane (`python3 hack/cluster.py up`).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "hack"), str(ROOT)]

from kubernetes import client, config  # noqa: E402

from localcluster import cluster  # noqa: E402
from tests.reliability.convergence import GROUP, VERSION, wait_converged  # noqa: E402
from tests.reliability.test_operator_load import agent, gateway  # noqa: E402
from tests.support.kube import install_crds, kubectl  # noqa: E402
from tests.support.processes import start_operator  # noqa: E402

Counts = collections.Counter[tuple[str, str, str]]


def requests(kubeconfig: Path) -> Counts:
    """The apiserver's request counters by (verb, resource, code)."""
    text = kubectl(kubeconfig, "get", "--raw", "/metrics").stdout
    out: Counts = collections.Counter()
    for line in text.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
            resource = labels.get("resource", "")
            if labels.get("subresource"):
                resource += "/" + labels["subresource"]
            key = (labels.get("verb", ""), resource, labels.get("code", ""))
            out[key] += int(float(line.rsplit(" ", 1)[1]))
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--gateways", type=int, default=100)
    parser.add_argument("--changed-every", type=int, default=10)
    args = parser.parse_args()
    kubeconfig = cluster.ensure_cluster()
    install_crds(kubeconfig)
    api = config.new_client_from_config(config_file=str(kubeconfig))
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    ns = f"restart-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    logs = Path(tempfile.mkdtemp(prefix=f"{ns}-"))
    agents = args.gateways * 10

    def create(body: dict[str, Any]) -> None:
        plural = "agents" if body["kind"] == "Agent" else "gateways"
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, plural, body)

    operator, _ = start_operator(kubeconfig, ns, logs / "first.log")
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(create, [*map(agent, range(agents)), *map(gateway, range(args.gateways))])
            )
        wait_converged(api, ns, timeout=1800)
        cold = time.monotonic() - started
        operator.kill()
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda i: custom.patch_namespaced_custom_object(
                        GROUP, VERSION, ns, "agents", f"a{i}", {"spec": {"systemPrompt": "v2"}}
                    ),
                    range(0, agents, args.changed_every),
                )
            )
        # Everything from here counts: the new process's start, its initial listings and
        # resumes included.
        pids = {name: p["pid"] for name, p in cluster.status()["processes"].items()}
        cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        counts_before = requests(kubeconfig)
        started = time.monotonic()
        operator, _ = start_operator(kubeconfig, ns, logs / "second.log")
        wait_converged(api, ns, timeout=1800)
        warm = time.monotonic() - started
        cpu = {name: (cpu_seconds(pid) - cpu_before[name]) / warm for name, pid in pids.items()}
        cpu["operator"] = cpu_seconds(operator.proc.pid) / warm  # a new process: from 0
        counts = requests(kubeconfig)
        counts.subtract(counts_before)
    finally:
        operator.stop()
        core.delete_namespace(ns)
    print(
        f"{args.gateways} Gateways, {agents} Agents, {len(range(0, agents, args.changed_every))} "
        f"changed while the operator was down"
    )
    print(f"converged from empty (baseline) {cold:.1f} s; after the restart {warm:.1f} s")
    print(f"restart / from empty: {warm / cold:.2f}x")
    print("CPU during the restart: " + ", ".join(f"{n} {c:.2f} cores" for n, c in cpu.items()))
    print(f"apiserver requests during the restart: {sum(v for v in counts.values() if v > 0)}")
    for (verb, resource, code), n in counts.most_common(20):
        if n > 0:
            print(f"{n:>7} {verb} {resource} {code}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

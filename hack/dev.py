#!/usr/bin/env python3
"""`make dev`: the whole platform locally, with the examples applied.

    python hack/dev.py up     # control plane (or $KUBECONFIG's cluster) + CRDs + examples
    python hack/dev.py down   # stop the local control plane

Running `up` twice is safe: every step is idempotent.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "hack"))

from localcluster import cluster  # noqa: E402
from localcluster.versions import cache_root  # noqa: E402

DEV_DIR = cache_root() / "dev"


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def start_operator(kubeconfig: Path) -> tuple[int, Path]:
    """Run `kaizen-operator` in the background (once); its pid and log file."""
    DEV_DIR.mkdir(parents=True, exist_ok=True)
    pid_file, log = DEV_DIR / "operator.pid", DEV_DIR / "operator.log"
    pid = _alive(pid_file)
    if pid:
        return pid, log
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                "kaizen-operator",
                "--all-namespaces",
                "--kubeconfig",
                str(kubeconfig),
                "--health-address",
                "127.0.0.1:18081",
                "--metrics-port",
                "19090",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file.write_text(str(proc.pid))
    return proc.pid, log


def stop_operator() -> None:
    """Stop the background operator, if running."""
    pid = _alive(DEV_DIR / "operator.pid")
    if pid:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if _alive(DEV_DIR / "operator.pid") is None:
                break
            time.sleep(0.1)
    (DEV_DIR / "operator.pid").unlink(missing_ok=True)


DEMO_NAMESPACE = "kaizen-demo"


def _apply_folder(kubeconfig: Path, folder: Path, namespace: str | None = None) -> list[str]:
    files = sorted(folder.glob("*.yaml"))
    if not files:
        return []
    args = ["apply", "--server-side", "--field-manager=kaizen-dev"]
    if namespace:
        args += ["-n", namespace]
    for f in files:
        args += ["-f", str(f)]
    return cluster.kubectl(kubeconfig, *args).splitlines()


def up() -> int:
    kubeconfig = cluster.ensure_cluster()
    crds = _apply_folder(kubeconfig, ROOT / "crds")
    if crds:
        cluster.kubectl(
            kubeconfig,
            "wait",
            "--for=condition=Established",
            "crd",
            "-l",
            "app.kubernetes.io/part-of=kaizen-studio",
            "--timeout=60s",
        )
    namespace = cluster.kubectl(
        kubeconfig, "create", "namespace", DEMO_NAMESPACE, "--dry-run=client", "-o", "yaml"
    )
    cluster.kubectl(kubeconfig, "apply", "-f", "-", stdin=namespace)
    pid, log = start_operator(kubeconfig)
    applied = _apply_folder(kubeconfig, ROOT / "examples", DEMO_NAMESPACE)
    for kind in ("agents", "gateways", "scalingpolicies"):
        cluster.kubectl(
            kubeconfig,
            "wait",
            "-n",
            DEMO_NAMESPACE,
            f"{kind}.kaizen.studio",
            "--all",
            "--for=condition=Ready",
            "--timeout=180s",
        )
    nodes = cluster.kubectl(kubeconfig, "get", "nodes", "--no-headers").splitlines()
    print(
        f"""
Kaizen Studio dev environment is up.
  cluster:     {cluster.status().get("apiserver", "external ($KUBECONFIG)")}
  nodes:       {len(nodes)} ({", ".join(line.split()[0] for line in nodes)})
  CRDs:        {len(crds)} applied
  examples:    {len(applied)} objects applied in namespace {DEMO_NAMESPACE}, all Ready
  operator:    pid {pid}, log {log}
               metrics http://127.0.0.1:19090/metrics, health http://127.0.0.1:18081/healthz

  export KUBECONFIG={kubeconfig}
  kubectl get nodes
  kubectl get kaizen -n {DEMO_NAMESPACE}

Stop it with: make dev-down
"""
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down"])
    args = parser.parse_args()
    try:
        if args.command == "up":
            return up()
        stop_operator()
        cluster.down()
        print("operator and local control plane stopped")
        return 0
    except cluster.ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

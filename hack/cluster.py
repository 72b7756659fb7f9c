#!/usr/bin/env python3
"""Local Kubernetes control plane for Kaizen Studio: up | down | status | env | build | logs.

python hack/cluster.py up       # build (first time) and start; prints the kubeconfig path
eval "$(python hack/cluster.py env)"   # point kubectl at it
python hack/cluster.py status   # pids, health and memory of each process
python hack/cluster.py down     # stop every process (by pid) and remove state
python hack/cluster.py restart etcd kube-apiserver [--kill]   # fault drills
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from localcluster import cluster
from localcluster.build import ensure_binaries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "command", choices=["up", "down", "status", "env", "build", "logs", "restart"]
    )
    parser.add_argument("components", nargs="*", help="for restart: which processes")
    parser.add_argument("--kill", action="store_true", help="for restart: SIGKILL, not SIGTERM")
    args = parser.parse_args(argv)
    if args.components and args.command != "restart":
        parser.error("only restart takes component names")
    try:
        if args.command == "up":
            print(cluster.up())
        elif args.command == "down":
            cluster.down()
            print(
                "local cluster stopped; no process left"
                if not cluster.stray_pids()
                else "stray processes remain"
            )
        elif args.command == "status":
            info = cluster.status()
            print(json.dumps(info, indent=2))
            return 0 if info["running"] else 3
        elif args.command == "env":
            info = cluster.status()
            if not info["running"]:
                print("# local cluster is not running: python hack/cluster.py up", file=sys.stderr)
                return 3
            print(f"export KUBECONFIG={info['kubeconfig']}")
        elif args.command == "build":
            print(ensure_binaries())
        elif args.command == "restart":
            if not args.components:
                parser.error("restart needs component names, e.g. etcd kube-apiserver")
            print(json.dumps(cluster.restart(args.components, kill=args.kill)))
        elif args.command == "logs":
            print(cluster.tail_logs(lines=50))
    except cluster.ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

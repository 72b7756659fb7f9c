#!/usr/bin/env python3
"""Dev-mode gateway runner: kwok pods run no containers, so for `make dev` this runs one
real `kaizen-gateway` process per Gateway, from the bundle ConfigMap the operator
renders (re-written when it changes, which the gateway hot-reloads).

    python hack/devrunner.py --namespace kaizen-demo --kubeconfig K --state DIR

Each gateway listens on 127.0.0.1; DIR/ports.json maps Gateway name -> URL and the
endpoints file maps "<namespace>/<gateway>" -> URL for `kaizen-operator --gateway-endpoints`.
Secrets referenced by the served agents are copied into DIR/<gw>/secrets, and the
knowledge ConfigMaps the bundle mounts into DIR/<gw>/knowledge (kept up to date, as the
kubelet keeps a ConfigMap volume), so the process finds them where a pod would mount
them. Stops its children on SIGTERM.
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

POLL_SECONDS = 2.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Runner:
    """Keeps one gateway process per Gateway in sync with its ConfigMap."""

    def __init__(self, api: client.ApiClient, namespace: str, state: Path, endpoints: Path) -> None:
        self.endpoints = endpoints
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.state = state
        self.procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}

    def _write_secrets(self, gw: str, bundle: dict[str, Any]) -> Path:
        folder = self.state / gw / "secrets"
        names = {
            a["spec"]["model"].get("credentialsSecretRef", {}).get("name")
            for a in bundle.get("agents", [])
        }
        auth = (bundle.get("auth") or {}).get("apiKeysSecretRef", {}).get("name")
        for name in {n for n in (*names, auth) if n}:
            try:
                secret = self.core.read_namespaced_secret(name, self.namespace)
            except ApiException:
                continue
            target = folder / name
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o700)
            for key, value in (secret.data or {}).items():
                path = target / key
                path.write_bytes(base64.b64decode(value))
                path.chmod(0o600)
        return folder

    def _write_knowledge(self, gw: str, bundle: dict[str, Any]) -> Path:
        """Each mounted knowledge ConfigMap's data keys as files, replaced atomically
        when they change (a missing ConfigMap leaves an absent folder, as an optional
        volume that cannot be filled would)."""
        folder = self.state / gw / "knowledge"
        folder.mkdir(parents=True, exist_ok=True)
        for name in bundle.get("knowledgeMounts") or {}:
            try:
                data = self.core.read_namespaced_config_map(name, self.namespace).data or {}
            except ApiException:
                continue
            target = folder / name
            target.mkdir(exist_ok=True)
            for key, text in data.items():
                path = target / key
                if not path.exists() or path.read_text() != text:
                    tmp = target / f".{key}.tmp"
                    tmp.write_text(text)
                    tmp.replace(path)
            for path in target.iterdir():
                if not path.name.startswith(".") and path.name not in data:
                    path.unlink()
        return folder

    def sync(self) -> None:
        gateways = self.custom.list_namespaced_custom_object(
            "kaizen.studio", "v1alpha1", self.namespace, "gateways"
        )["items"]
        wanted = {g["metadata"]["name"] for g in gateways}
        for name in list(self.procs):
            if name not in wanted:
                self._stop(name)
        for name in sorted(wanted):
            try:
                cm = self.core.read_namespaced_config_map(f"{name}-gateway-bundle", self.namespace)
            except ApiException:
                continue
            text = (cm.data or {}).get("bundle.json", "")
            folder = self.state / name
            folder.mkdir(parents=True, exist_ok=True)
            bundle_file = folder / "bundle.json"
            if not bundle_file.exists() or bundle_file.read_text() != text:
                tmp = bundle_file.with_suffix(".tmp")
                tmp.write_text(text)
                tmp.replace(bundle_file)  # atomic, as a ConfigMap volume update
            secrets = self._write_secrets(name, json.loads(text))
            knowledge = self._write_knowledge(name, json.loads(text))
            proc = self.procs.get(name)
            if proc is None or proc[0].poll() is not None:
                port = proc[1] if proc else free_port()
                log = (folder / "gateway.log").open("ab")
                popen = subprocess.Popen(
                    [
                        "kaizen-gateway",
                        "--bundle",
                        str(bundle_file),
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(port),
                        "--secrets-dir",
                        str(secrets),
                        "--knowledge-dir",
                        str(knowledge),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
                self.procs[name] = (popen, port)
        ports = {name: f"http://127.0.0.1:{port}" for name, (_, port) in self.procs.items()}
        (self.state / "ports.json").write_text(json.dumps(ports, indent=2))
        # What `kaizen-operator --gateway-endpoints` reads to reach these processes.
        endpoints = {f"{self.namespace}/{name}": url for name, url in ports.items()}
        tmp = self.endpoints.with_suffix(".tmp")
        tmp.write_text(json.dumps(endpoints, indent=2))
        tmp.replace(self.endpoints)

    def _stop(self, name: str) -> None:
        proc, _ = self.procs.pop(name)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self._stop(name)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--endpoints-file", type=Path, help="Default: STATE/endpoints.json")
    args = parser.parse_args()
    args.state.mkdir(parents=True, exist_ok=True)
    endpoints = args.endpoints_file or args.state / "endpoints.json"
    endpoints.parent.mkdir(parents=True, exist_ok=True)
    api = config.new_client_from_config(config_file=args.kubeconfig)
    runner = Runner(api, args.namespace, args.state, endpoints)
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while not stopping:
            try:
                runner.sync()
            except (ApiException, OSError) as exc:
                print(f"devrunner: sync failed: {exc}", file=sys.stderr, flush=True)
            time.sleep(POLL_SECONDS)
    finally:
        runner.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())

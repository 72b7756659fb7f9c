"""Small helpers for talking to the test cluster."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localcluster import cluster

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "crds"


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run kubectl against the test cluster."""
    return subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        check=check,
        capture_output=True,
        text=True,
    )


def token_kubeconfig(admin_kubeconfig: Path, token: str, path: Path) -> Path:
    """A kubeconfig at ``path`` for the admin kubeconfig's cluster, authenticating with
    ``token`` (a ServiceAccount's, from `kubectl create token`)."""
    cluster = yaml.safe_load(admin_kubeconfig.read_text())["clusters"][0]["cluster"]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "sa", "user": {"token": token}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "sa"}}],
                "current-context": "c",
            }
        )
    )
    return path


def eventually(probe: Callable[[], T | None], timeout: float = 90, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except ApiException as exc:
            if exc.status != 404:
                raise
            last = None  # not created yet
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def install_crds(kubeconfig: Path) -> None:
    """Apply the generated CRDs and wait until they serve."""
    cluster.install_crds(kubeconfig, CRD_DIR)


@contextmanager
def worker_policies(kubeconfig: Path, docs: list[dict[str, Any]], label: str) -> Iterator[str]:
    """Install the chart's ValidatingAdmissionPolicies ``docs`` (and their bindings) as
    this pytest-xdist worker's own copies, bound only to namespaces labelled
    ``label=<worker>``: the apiserver is shared by every test and worker. Yields the
    worker's label value; deletes the copies afterwards."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    docs = [dict(d, metadata=dict(d["metadata"])) for d in docs]
    for d in docs:
        d["metadata"]["name"] += f"-{worker}"
        if d["kind"] == "ValidatingAdmissionPolicyBinding":
            d["spec"] = dict(d["spec"], policyName=d["spec"]["policyName"] + f"-{worker}")
            d["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {label: worker}}}
    text = yaml.safe_dump_all(docs)
    kubectl(kubeconfig, "apply", "-f", "-", stdin=text)
    try:
        yield worker
    finally:
        kubectl(kubeconfig, "delete", "-f", "-", "--ignore-not-found", stdin=text, check=False)


def events_of(api_client: client.ApiClient, namespace: str, name: str) -> list[Any]:
    """The Events recorded about object ``name`` in ``namespace``."""
    selector = f"involvedObject.name={name}"
    return list(
        client.CoreV1Api(api_client).list_namespaced_event(namespace, field_selector=selector).items
    )


def event_reasons(api_client: client.ApiClient, namespace: str, name: str) -> set[str]:
    """The reasons of those Events."""
    return {e.reason for e in events_of(api_client, namespace, name)}


def cluster_cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`hack/cluster.py ARGS` for a second, private control plane kept in ``state``."""
    env = {**os.environ, "KAIZEN_CLUSTER_DIR": str(state)}
    env.pop("KUBECONFIG", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "hack" / "cluster.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


def private_cluster(tmp_path: Path, *args: str) -> str:
    """`hack/cluster.py ARGS` on the private control plane under ``tmp_path``; its output
    (for ``up``: the kubeconfig path on the last line). Fails the test if it fails."""
    done = cluster_cli(tmp_path / "cluster", *args)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout.strip()


@contextmanager
def private_control_plane(tmp_path: Path) -> Iterator[Path]:
    """A second local control plane under ``tmp_path`` for one test (its kubeconfig),
    stopped afterwards whatever happened."""
    kubeconfig = Path(private_cluster(tmp_path, "up").splitlines()[-1])
    try:
        yield kubeconfig
    finally:
        private_cluster(tmp_path, "down")


# Tests that start, pause or restart control plane processes run only on local ones.
local_control_plane_only = pytest.mark.skipif(
    bool(os.environ.get("KUBECONFIG")),
    reason="KUBECONFIG names an external cluster; this test runs its own local control plane",
)

"""Build the control-plane binaries from their published Go modules, once per version.

Binaries are cached under :func:`versions.bin_dir`; a stamp next to each binary
records the inputs it was built from (the Go module files and the Go version), so
a warm start does no work and a changed pin rebuilds exactly what changed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from localcluster.versions import (
    COMPONENTS,
    GATEWAY_API_CRDS,
    GATEWAY_API_VERSION,
    GOMOD_DIR,
    KUBERNETES_VERSION,
    Component,
    bin_dir,
    gateway_api_crd_dir,
)

# kwok's own stage and metric configs, shipped in its module: node heartbeat and
# readiness, pod scheduling/readiness/deletion, kubelet-style resource metrics and
# CPU/memory usage read from pod annotations (metrics-server and HPAs use these).
KWOK_CONFIG_FILES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
    "kustomize/metrics/resource/metrics-resource.yaml",
    "kustomize/metrics/usage/usage-from-annotation.yaml",
)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # The machine's Go is the only toolchain there is: never try to download another.
    env.update({"GOTOOLCHAIN": "local", "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly"})
    return env


def go_version() -> str:
    """The local Go toolchain's version string, e.g. ``go1.26.8``."""
    if shutil.which("go") is None:
        raise SystemExit(
            "Go is required to build the local control plane: install Go >= 1.26 "
            "(https://go.dev/doc/install) or point KUBECONFIG at an existing cluster."
        )
    out = subprocess.run(
        ["go", "env", "GOVERSION"], check=True, capture_output=True, text=True, env=_go_env()
    )
    return out.stdout.strip()


def _stamp(component: Component, go: str) -> str:
    digest = hashlib.sha256()
    folder = GOMOD_DIR / component.gomod
    for path in sorted([folder / "go.mod", folder / "go.sum", *folder.glob("*.go")]):
        digest.update(path.read_bytes())  # our own Go sources (kstatus) count too
    digest.update(f"{component.package}@{component.version}:{go}".encode())
    return digest.hexdigest()[:16]


def _ldflags(component: Component) -> str:
    flags = ["-s", "-w"]
    if component.gomod == "kubernetes":
        major, minor, _ = KUBERNETES_VERSION.lstrip("v").split(".")
        pkg = "k8s.io/component-base/version"
        flags += [
            f"-X {pkg}.gitVersion={KUBERNETES_VERSION}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    if component.gomod == "helm":
        flags += [f"-X helm.sh/helm/v3/internal/version.version={component.version}"]
    return " ".join(flags)


def stale_components(go: str) -> list[Component]:
    """Components whose cached binary is missing or was built from other inputs."""
    stale = []
    for component in COMPONENTS:
        binary = bin_dir() / component.name
        stamp = binary.with_name(component.name + ".stamp")
        if not binary.exists() or not stamp.exists() or stamp.read_text() != _stamp(component, go):
            stale.append(component)
    return stale


def _build_group(gomod: str, components: Iterable[Component], go: str) -> None:
    components = list(components)
    out = bin_dir()
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".build-{gomod}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    cmd = [
        "go",
        "build",
        "-trimpath",
        "-ldflags",
        _ldflags(components[0]),
        "-o",
        str(tmp) + "/",
        *[c.package for c in components],
    ]
    names = ", ".join(c.name for c in components)
    print(f"[build] {names} (Go module hack/cluster/gomod/{gomod}) ...", file=sys.stderr)
    started = time.monotonic()
    subprocess.run(cmd, cwd=GOMOD_DIR / gomod, env=_go_env(), check=True)
    for component in components:
        built = tmp / _binary_name(component.package)
        built.replace(out / component.name)
        (out / (component.name + ".stamp")).write_text(_stamp(component, go))
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"[build] {names} done in {time.monotonic() - started:.0f}s", file=sys.stderr)


def _binary_name(package: str) -> str:
    """The file name `go build -o dir/` gives a package (a /vN major suffix is skipped)."""
    parts = package.split("/")
    last = parts[-1]
    if len(parts) > 1 and last.startswith("v") and last[1:].isdigit():
        return parts[-2]
    return last


def _copy_kwok_configs() -> None:
    out = subprocess.run(
        ["go", "list", "-m", "-json", "sigs.k8s.io/kwok"],
        cwd=GOMOD_DIR / "kwok",
        env=_go_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    module_dir = Path(json.loads(out.stdout)["Dir"])
    target = kwok_config_dir()
    target.mkdir(parents=True, exist_ok=True)
    for rel in KWOK_CONFIG_FILES:
        shutil.copyfile(module_dir / rel, target / Path(rel).name)


def _copy_gateway_api_crds() -> None:
    """The Gateway API CRDs the local cluster installs, from the module's config/crd."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"sigs.k8s.io/gateway-api@{GATEWAY_API_VERSION}"],
        cwd=bin_dir().parent,
        env=_go_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    standard = Path(json.loads(out.stdout)["Dir"]) / "config" / "crd" / "standard"
    target = gateway_api_crd_dir()
    target.mkdir(parents=True, exist_ok=True)
    for name in GATEWAY_API_CRDS:
        shutil.copyfile(standard / name, target / name)


def kwok_config_dir() -> Path:
    """Folder with kwok's stage/metric configs copied out of its Go module."""
    return bin_dir().parent / "kwok-config"


def ensure_binaries() -> Path:
    """Build whatever is missing or stale and return the folder of binaries.

    A file lock makes concurrent callers (`cluster.py build` beside a `cluster.py up`,
    or two test workers) wait for one build instead of compiling everything twice."""
    bin_dir().parent.mkdir(parents=True, exist_ok=True)
    with (bin_dir().parent / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _ensure_binaries_locked()


def _ensure_binaries_locked() -> Path:
    go = go_version()
    stale = stale_components(go)
    groups: dict[str, list[Component]] = {}
    for component in stale:
        groups.setdefault(component.gomod, []).append(component)
    for gomod, components in groups.items():
        _build_group(gomod, components, go)
    if not all((kwok_config_dir() / Path(rel).name).exists() for rel in KWOK_CONFIG_FILES):
        _copy_kwok_configs()
    if not all((gateway_api_crd_dir() / name).exists() for name in GATEWAY_API_CRDS):
        _copy_gateway_api_crds()
    return bin_dir()

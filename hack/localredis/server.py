"""Start and stop a local Redis server on 127.0.0.1 with its files in a private folder.

``up()``/``down()`` manage the one server the test run (or `make dev`) shares;
``up(private_root(name))``, ``stop(root)``, ``start(root)`` and ``down(root)`` manage a
second, private one that a test may kill and restart (a Redis outage) without
disturbing the others. ``start`` brings a stopped server back on the same port.

Debian's ``redis-server`` package provides the binary (``hack/bootstrap.sh`` installs
it). Nothing is persisted: the server runs with ``save ""`` and no append-only file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def _binary() -> str:
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError(
            "redis-server not found: run `bash hack/bootstrap.sh` (apt-get install "
            "redis-server) or set KAIZEN_TEST_REDIS_URL to an existing server."
        )
    return found


def data_root() -> Path:
    """The shared server's folder (per user, under the temporary directory)."""
    return Path(tempfile.gettempdir()) / f"kaizen-studio-redis-{os.geteuid()}"


def private_root(name: str) -> Path:
    """A folder for a second, private server beside the shared one."""
    return data_root().parent / f"{data_root().name}-{name}"


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.parent.mkdir(parents=True, exist_ok=True)
    with (root.parent / f".{root.name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def url(port: int) -> str:
    """The URL of the local server on ``port``."""
    return f"redis://127.0.0.1:{port}/0"


def answers(port: int, timeout: float = 1.0) -> bool:
    """True when a Redis server on ``port`` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _pid(root: Path) -> int | None:
    try:
        return int((root / "redis.pid").read_text())
    except (OSError, ValueError):
        return None


def _start(root: Path) -> None:
    port = json.loads((root / "state.json").read_text())["port"]
    subprocess.run(
        [
            _binary(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(root),
            "--daemonize",
            "yes",
            "--pidfile",
            str(root / "redis.pid"),
            "--logfile",
            str(root / "redis.log"),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        check=True,
        capture_output=True,
    )
    deadline = time.monotonic() + 30
    while not answers(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server did not answer on port {port}; see {root}/redis.log")
        time.sleep(0.05)


def _stop(root: Path, sig: int = signal.SIGTERM) -> None:
    pid = _pid(root)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            os.kill(pid, 0)  # raises ProcessLookupError once it is gone
            time.sleep(0.05)
    (root / "redis.pid").unlink(missing_ok=True)


def up(root: Path | None = None) -> str:
    """Start the server of ``root`` (default: the shared one) unless it already answers;
    return its URL. A free port is chosen the first time and kept."""
    root = root or data_root()
    with _locked(root):
        state_file = root / "state.json"
        if state_file.exists():
            port = json.loads(state_file.read_text())["port"]
            if answers(port):
                return url(port)
            _stop(root)
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        state_file.write_text(json.dumps({"port": port}))
        _start(root)
        return url(port)


def stop(root: Path, *, kill: bool = False) -> None:
    """Stop the server of ``root`` (SIGKILL with ``kill``, as a crash), keeping its port."""
    with _locked(root):
        _stop(root, signal.SIGKILL if kill else signal.SIGTERM)


def start(root: Path) -> str:
    """Start the stopped server of ``root`` again on its port (empty: nothing persisted)."""
    with _locked(root):
        port = json.loads((root / "state.json").read_text())["port"]
        if not answers(port):
            _start(root)
        return url(port)


def down(root: Path | None = None) -> None:
    """Stop the server of ``root`` (default: the shared one) and remove its folder."""
    root = root or data_root()
    with _locked(root):
        _stop(root)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    """``python hack/localredis/server.py up|down``: print the URL / stop the shared server."""
    import sys

    command = sys.argv[1] if len(sys.argv) > 1 else "up"
    if command == "up":
        print(up())
    elif command == "down":
        down()
    else:
        print("usage: server.py up|down", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

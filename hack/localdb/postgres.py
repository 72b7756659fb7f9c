"""Start and stop a local PostgreSQL server on 127.0.0.1 with its data in the cache folder.

``up()``/``down()`` manage the one server the test run shares; ``up(private_root(name))``,
``stop(root)``, ``start(root)`` and ``down(root)`` manage a second, private one that a
test may stop and restart (a database outage) without disturbing the others.

Debian's ``postgresql`` package provides the binaries (``hack/bootstrap.sh``
installs it). PostgreSQL refuses to run as root, so as root the server runs as
the ``postgres`` system user with its data outside root's home.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

SUPERUSER = "kaizen"
PASSWORD = "kaizen-local-only"  # noqa: S105 - loopback-only throwaway server


def _bindir() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version_key)
    if candidates:
        return candidates[-1].parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise RuntimeError(
        "PostgreSQL server binaries not found: run `bash hack/bootstrap.sh` "
        "(apt-get install postgresql) or set KAIZEN_TEST_POSTGRES_URL to an existing server."
    )


def _version_key(path: Path) -> int:
    try:
        return int(path.parent.parent.name)
    except ValueError:
        return 0


def _as_root() -> bool:
    return os.geteuid() == 0


def data_root() -> Path:
    """Where the server keeps its data; outside /root when running as root."""
    if _as_root():
        return Path(tempfile.gettempdir()) / "kaizen-studio-postgres"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kaizen-studio" / "postgres"


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    if _as_root():
        argv = ["runuser", "-u", "postgres", "--", *argv]
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload, no-any-return]


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.parent.mkdir(parents=True, exist_ok=True)
    # The shared server keeps its historical lock name; each private one has its own.
    name = "kaizen-postgres.lock" if root == data_root() else f".{root.name}.lock"
    with (root.parent / name).open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _url(port: int, database: str = "postgres") -> str:
    return f"postgresql://{SUPERUSER}:{PASSWORD}@127.0.0.1:{port}/{database}"


def _answers(port: int) -> bool:
    try:
        with psycopg.connect(_url(port), connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def private_root(name: str) -> Path:
    """A data folder for a second, private server (beside the shared one, where the
    ``postgres`` user can reach it when running as root)."""
    return data_root().parent / f"{data_root().name}-{name}"


def up(root: Path | None = None) -> str:
    """Start the server of ``root`` (default: the shared one) unless it already answers;
    return a superuser URL. A folder whose server does not answer is made anew."""
    root = root or data_root()
    with _locked(root):
        state_file = root / "state.json"
        if state_file.exists():
            port = json.loads(state_file.read_text())["port"]
            if _answers(port):
                return _url(port)
            _stop(root)
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        if _as_root():
            shutil.chown(root, "postgres", "postgres")
        bindir = _bindir()
        pwfile = root / "pw"
        pwfile.write_text(PASSWORD)
        if _as_root():
            shutil.chown(pwfile, "postgres", "postgres")
        _run(
            [
                str(bindir / "initdb"),
                "-D",
                str(root / "data"),
                "-U",
                SUPERUSER,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--no-sync",
            ]
        )
        pwfile.unlink()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        state_file.write_text(json.dumps({"port": port, "bindir": str(bindir)}))
        _start(root)
        return _url(port)


def _start(root: Path) -> None:
    state = json.loads((root / "state.json").read_text())
    port, bindir = state["port"], Path(state["bindir"])
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
    _run(
        [
            str(bindir / "pg_ctl"),
            "-D",
            str(root / "data"),
            "-l",
            str(root / "server.log"),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        ]
    )
    deadline = time.monotonic() + 30
    while not _answers(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"PostgreSQL did not answer on port {port}; see {root}/server.log")
        time.sleep(0.2)


def _stop(root: Path, mode: str = "fast") -> None:
    state_file = root / "state.json"
    if not state_file.exists():
        return
    bindir = Path(json.loads(state_file.read_text())["bindir"])
    with contextlib.suppress(subprocess.CalledProcessError):
        _run([str(bindir / "pg_ctl"), "-D", str(root / "data"), "-m", mode, "-w", "stop"])


def stop(root: Path, mode: str = "fast") -> None:
    """Stop the server of ``root``, keeping its data (``mode``: smart, fast or
    immediate, as ``pg_ctl stop -m``). Meant for private servers: the shared one
    serves every test of the run."""
    with _locked(root):
        _stop(root, mode)


def start(root: Path) -> str:
    """Start the stopped server of ``root`` again, on its port and with its data."""
    with _locked(root):
        port = json.loads((root / "state.json").read_text())["port"]
        if not _answers(port):
            _start(root)
        return _url(port)


def down(root: Path | None = None) -> None:
    """Stop the server of ``root`` (default: the shared one) and remove its data."""
    root = root or data_root()
    with _locked(root):
        _stop(root)
        shutil.rmtree(root, ignore_errors=True)


def create_database(admin_url: str, name: str) -> str:
    """Create an empty database ``name`` and return its URL."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # name is generated by the caller
    return admin_url.rsplit("/", 1)[0] + f"/{name}"


def drop_database(admin_url: str, name: str) -> None:
    """Drop database ``name``, closing its remaining connections."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

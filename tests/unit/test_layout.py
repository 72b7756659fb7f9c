"""The project's layout rules: the stdlib `operator` is never shadowed, entry points exist."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_stdlib_operator_is_not_shadowed_from_the_repo_root() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import operator; print(operator.__file__, operator.itemgetter)"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert str(ROOT / "operator") not in out
    assert "itemgetter" in out


def test_console_scripts_are_installed() -> None:
    scripts = {ep.name for ep in entry_points(group="console_scripts")}
    assert {"kaizen-operator", "kaizen-api", "kaizen-gateway", "kaizen"} <= scripts


def test_the_facade_without_cluster_credentials_says_so(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "KUBECONFIG": str(tmp_path / "missing"),
        "KAIZEN_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
    }
    proc = subprocess.run(["kaizen-api"], capture_output=True, text=True, check=False, env=env)
    assert proc.returncode == 2
    assert "no usable Kubernetes credentials" in proc.stderr and "KUBECONFIG" in proc.stderr
    assert "Traceback" not in proc.stderr

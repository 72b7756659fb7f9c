"""`hack/cluster.py up|status|down` on a second, private cluster: idempotent, leaves no process."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.kube import cluster_cli, local_control_plane_only


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


@local_control_plane_only
def test_up_is_idempotent_and_down_leaves_no_stray_process(
    tmp_path: Path, kubeconfig: Path
) -> None:
    state = tmp_path / "cluster"
    first = cluster_cli(state, "up")
    assert first.returncode == 0, first.stderr
    status = json.loads(cluster_cli(state, "status").stdout)
    assert status["running"], status
    pids = {name: p["pid"] for name, p in status["processes"].items()}
    assert set(pids) == {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
        "metrics-server",
    }
    assert all(p["healthy"] for p in status["processes"].values()), status

    again = cluster_cli(state, "up")
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert {
        n: p["pid"] for n, p in json.loads(cluster_cli(state, "status").stdout)["processes"].items()
    } == pids

    down = cluster_cli(state, "down")
    assert down.returncode == 0, down.stderr
    assert [pid for pid in pids.values() if alive(pid)] == []
    assert not state.exists()
    assert cluster_cli(state, "status").returncode == 3

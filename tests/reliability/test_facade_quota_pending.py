"""The quota controller is late (paused here; in a real cluster: busy, or the CRDs are so
new that its discovery has not seen them). Until it has counted a workspace's quota the
apiserver refuses every create there with "status unknown for quota". The facade waits
that out: a create made while the controller is paused answers 201 once it resumes; one
that outlasts ``quota_wait_seconds`` answers 503 problem+json ``quota-pending`` with
Retry-After, never a 403 that blames RBAC. Its own control plane, so pausing the
controller manager disturbs no other test."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

from fastapi.testclient import TestClient

from kaizen_api.server.app import create_app
from kaizen_api.server.settings import Settings
from kaizen_api.server.tenancy import render_cluster_roles
from localcluster import cluster
from tests.reliability.figures import Figures
from tests.support.facade import Facade, agent
from tests.support.kube import (
    CRD_DIR,
    kubectl,
    local_control_plane_only,
    private_cluster,
    private_control_plane,
)

WAIT = 5  # the facade's quota_wait_seconds (30 by default)
AGENTS = "count/agents.kaizen.studio"


@local_control_plane_only
def test_creates_wait_until_the_quota_controller_has_counted(
    tmp_path: Path, figures: Figures
) -> None:
    with private_control_plane(tmp_path) as kubeconfig:
        for role in render_cluster_roles():
            kubectl(kubeconfig, "apply", "--server-side", "-f", "-", stdin=json.dumps(role))
        status = json.loads(private_cluster(tmp_path, "status"))
        controller_manager = int(status["processes"]["kube-controller-manager"]["pid"])
        settings = Settings(
            database_url=f"sqlite:///{tmp_path / 'kaizen.db'}",
            kubeconfig=str(kubeconfig),
            quota_wait_seconds=WAIT,
        )
        with TestClient(create_app(settings)) as test_client:
            facade = Facade(test_client)
            owner = facade.user("owner")
            org = facade.org(owner)
            agents = f"/orgs/{org}/workspaces/ml/agents"

            # The quota is taken in before the Agent CRD exists: Agents stay uncounted
            # (the workspace is made anyway, after its wait, with a warning).
            started = time.monotonic()
            namespace = facade.workspace(owner, org, "ml")
            workspace_wait = time.monotonic() - started
            quota = quota_status(kubeconfig, namespace)
            assert AGENTS in quota.get("hard", {}) and AGENTS not in quota.get("used", {})

            os.kill(controller_manager, signal.SIGSTOP)
            try:
                cluster.install_crds(kubeconfig, CRD_DIR)
                started = time.monotonic()
                refused = facade.call("POST", agents, owner, json=agent("a"))
                refused_after = time.monotonic() - started
                assert refused.status_code == 503, refused.text
                assert refused.headers["content-type"] == "application/problem+json"
                assert refused.headers["retry-after"] == "5"
                problem = refused.json()
                assert problem["code"] == "quota-pending", problem
                assert "kaizen-plan" in problem["detail"], problem

                # The controller resumes while the next create waits. It learns of the
                # CRD at its next discovery (every 30 s) but recounts an old quota only
                # when told to: the facade tells it, and the create succeeds.
                test_client.app.state.kaizen.kube.quota_wait_seconds = 120  # type: ignore[attr-defined]
                resume = threading.Timer(1.0, os.kill, (controller_manager, signal.SIGCONT))
                resume.start()
                started = time.monotonic()
                created = facade.call("POST", agents, owner, json=agent("a"))
                created_after = time.monotonic() - started
                resume.join()
            finally:
                os.kill(controller_manager, signal.SIGCONT)
            assert created.status_code == 201, created.text
            listed = facade.call("GET", agents, owner).json()
            assert [a["metadata"]["name"] for a in listed["items"]] == ["a"]
            quota = quota_status(kubeconfig, namespace)
            assert quota["hard"][AGENTS] == "10" and quota["used"][AGENTS] == "1", quota
    figures.record("workspace with an uncounted quota created after", round(workspace_wait, 1), "s")
    figures.record("create refused 503 quota-pending after", round(refused_after, 1), "s")
    figures.record(
        "create answered 201 once the controller resumed in", round(created_after, 1), "s"
    )


def quota_status(kubeconfig: Path, namespace: str) -> dict[str, dict[str, str]]:
    done = kubectl(kubeconfig, "get", "resourcequota", "kaizen-plan", "-n", namespace, "-o", "json")
    return dict(json.loads(done.stdout).get("status") or {})

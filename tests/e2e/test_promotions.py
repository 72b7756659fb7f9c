"""Promotions on the real control plane: approvals by authenticated users (kubectl
--as, through the operator's admission webhook), rejections, N-of-M, self-approval,
deadlines, outsiders, rollback, and the soak, metric, smoke and webhook gates."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from kubernetes import client

from tests.e2e.test_operator_reconciles import apply_yaml, gateway, get, mock_agent
from tests.e2e.test_pipelines_operator import bundle_of, pipeline_manifest, served, step
from tests.support.kube import event_reasons, eventually, kubectl
from tests.support.processes import start_devrunner

APPROVER_ROLE = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "promoter"},
        "rules": [
            {
                "apiGroups": ["kaizen.studio"],
                "resources": ["promotions"],
                "verbs": ["get", "list", "watch", "create", "patch", "update"],
            }
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "promoters"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "promoter"},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": k, "name": n}
            for k, n in (
                ("User", "alice"),
                ("User", "bob"),
                ("User", "carol"),
                ("User", "mallory"),
                ("Group", "sre"),
            )
        ],
    },
]


def promotion(name: str, revision: int = 1, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kaizen.studio/v1alpha1",
        "kind": "Promotion",
        "metadata": {"name": name},
        "spec": {
            "agentRef": {"name": "hello"},
            "revision": revision,
            "from": "dev",
            "to": "staging",
            **spec,
        },
    }


@pytest.fixture
def stage(operator: Any, crds: Path, api_client: client.ApiClient, namespace: str) -> str:
    """An agent with two revisions, a dev and a staging Gateway, and approver RBAC."""
    apply_yaml(
        crds,
        namespace,
        [
            mock_agent("hello", "v1"),
            gateway("dev", "dev", ["hello"]),
            # Open on purpose: the smoke gate invokes it without a key (outside dev,
            # gateways require API keys unless told otherwise).
            gateway("staging", "staging", ["hello"], auth={"mode": "None"}),
            *APPROVER_ROLE,
        ],
    )
    eventually(
        lambda: (
            get(api_client, namespace, "agents", "hello").get("status", {}).get("latestRevision")
            == 1
        ),
        what="r1",
    )
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object(
        "kaizen.studio", "v1alpha1", namespace, "agents", "hello", {"spec": {"systemPrompt": "v2"}}
    )
    eventually(
        lambda: (
            get(api_client, namespace, "agents", "hello").get("status", {}).get("latestRevision")
            == 2
        ),
        what="r2",
    )
    return namespace


def phase(api_client: client.ApiClient, ns: str, name: str) -> str | None:
    return (get(api_client, ns, "promotions", name).get("status") or {}).get("phase")


def wait_phase(api_client: client.ApiClient, ns: str, name: str, expected: str) -> dict[str, Any]:
    eventually(
        lambda: phase(api_client, ns, name) == expected, timeout=60, what=f"{name} {expected}"
    )
    return get(api_client, ns, "promotions", name)


def staging_serves(api_client: client.ApiClient, ns: str) -> list[dict[str, Any]]:
    return (get(api_client, ns, "gateways", "staging").get("status") or {}).get(
        "servedRevisions"
    ) or []


def staging_bundle(api_client: client.ApiClient, ns: str) -> list[tuple[str, int]]:
    cm = client.CoreV1Api(api_client).read_namespaced_config_map("staging-gateway-bundle", ns)
    return [(a["name"], a["revision"]) for a in json.loads(cm.data["bundle.json"])["agents"]]


def promote_pipeline(api_client: client.ApiClient, crds: Path, ns: str) -> dict[str, Any]:
    """Pipeline flow (one step pinned to hello r1), selected by dev and staging, promoted
    dev -> staging by Promotion p-flow (targetRef kind Pipeline) past a soak gate."""
    api = client.CustomObjectsApi(api_client)
    for gw in ("dev", "staging"):
        api.patch_namespaced_custom_object(
            "kaizen.studio",
            "v1alpha1",
            ns,
            "gateways",
            gw,
            {"spec": {"pipelines": {"names": ["flow"]}}},
        )
    apply_yaml(crds, ns, [pipeline_manifest("flow", step("answer", "hello", 1))])
    eventually(
        lambda: served(bundle_of(api_client, ns, "dev"), "pipelines") == [("flow", 1)],
        what="dev serving flow r1",
    )
    assert served(bundle_of(api_client, ns, "staging"), "pipelines") == []  # not promoted
    # The new bundle rolls dev's pods; the soak gate wants its source Ready throughout.
    eventually(
        lambda: (get(api_client, ns, "gateways", "dev").get("status") or {}).get(
            "servedPipelineRevisions"
        ),
        what="dev status serving flow",
    )
    kubectl(crds, "rollout", "status", "-n", ns, "deployment/dev-gateway", "--timeout=60s")
    kubectl(
        crds,
        "wait",
        "-n",
        ns,
        "gateways.kaizen.studio/dev",
        "--for=condition=Ready",
        "--timeout=60s",
    )
    spec = {
        "targetRef": {"kind": "Pipeline", "name": "flow"},
        "revision": 1,
        "from": "dev",
        "to": "staging",
        "gates": {"soak": {"duration": "2s"}},
    }
    apply_yaml(
        crds,
        ns,
        [
            {
                "apiVersion": "kaizen.studio/v1alpha1",
                "kind": "Promotion",
                "metadata": {"name": "p-flow"},
                "spec": spec,
            }
        ],
    )
    return wait_phase(api_client, ns, "p-flow", "Succeeded")


def test_a_pipeline_revision_is_promoted_past_a_soak_gate(
    crds: Path, api_client: client.ApiClient, stage: str
) -> None:
    done = promote_pipeline(api_client, crds, stage)
    assert done["status"]["message"] == "staging now serves flow revision 1"
    assert done["status"]["gates"][0]["name"] == "soak"
    eventually(
        lambda: served(bundle_of(api_client, stage, "staging"), "pipelines") == [("flow", 1)],
        what="staging serving flow r1",
    )
    bundle = bundle_of(api_client, stage, "staging")
    assert served(bundle, "agents") == []  # staging serves no agent as a model...
    assert served(bundle, "pinnedAgents") == [("hello", 1)]  # ...but flow's pinned step
    target = get(api_client, stage, "gateways", "staging")
    (entry,) = target["spec"]["promotedPipelineRevisions"]
    assert (entry["pipeline"], entry["revision"], entry["promotion"]) == ("flow", 1, "p-flow")
    assert target["status"]["servedPipelineRevisions"] == [{"pipeline": "flow", "revision": 1}]
    assert "promotedRevisions" not in target["spec"]  # the agents' list is untouched


def annotate(
    kubeconfig: Path, ns: str, name: str, as_user: str, decision: str, reason: str, *groups: str
) -> Any:
    args = [
        "annotate",
        "promotion",
        name,
        "-n",
        ns,
        f"kaizen.studio/{decision}={reason}",
        f"--as={as_user}",
    ]
    args += [f"--as-group={g}" for g in groups]
    return kubectl(kubeconfig, *args, check=False)


def test_promotion_without_approval_switches_the_target(
    crds: Path, api_client: client.ApiClient, stage: str
) -> None:
    assert staging_serves(api_client, stage) == []
    apply_yaml(crds, stage, [promotion("p1")])
    done = wait_phase(api_client, stage, "p1", "Succeeded")
    assert staging_serves(api_client, stage) == [{"agent": "hello", "revision": 1}]
    eventually(lambda: staging_bundle(api_client, stage) == [("hello", 1)], what="staging bundle")
    ready = next(c for c in done["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Promoted")
    assert done["status"]["completedAt"]
    eventually(
        lambda: "Promoted" in event_reasons(api_client, stage, "p1"), what="a Promoted Event"
    )


def test_approval_by_an_allowed_user_is_recorded_with_the_real_actor(
    crds: Path, api_client: client.ApiClient, stage: str
) -> None:
    apply_yaml(
        crds,
        stage,
        [promotion("p2", approval={"required": True, "approvers": {"groups": ["sre"]}})],
    )
    wait_phase(api_client, stage, "p2", "WaitingForApproval")
    assert staging_serves(api_client, stage) == []
    outsider = annotate(crds, stage, "p2", "mallory", "approve", "trust me")
    assert outsider.returncode != 0
    assert "user 'mallory' is not an approver of Promotion p2" in outsider.stderr
    ok = annotate(crds, stage, "p2", "bob", "approve", "error rate flat", "sre")
    assert ok.returncode == 0, ok.stderr
    done = wait_phase(api_client, stage, "p2", "Succeeded")
    assert [(a["user"], a["decision"], a["reason"]) for a in done["status"]["approvals"]] == [
        ("bob", "Approved", "error rate flat")
    ]
    assert staging_serves(api_client, stage) == [{"agent": "hello", "revision": 1}]
    # The ledger is written only by the webhook: forging it is refused.
    forged = kubectl(
        crds,
        "annotate",
        "promotion",
        "p2",
        "-n",
        stage,
        "--overwrite",
        'kaizen.studio/approvals=[{"user":"ceo","decision":"Approved"}]',
        check=False,
    )
    assert forged.returncode != 0 and "recorded by Kaizen Studio" in forged.stderr


def test_rejection_ends_the_promotion_with_actor_and_reason(
    crds: Path, api_client: client.ApiClient, stage: str
) -> None:
    apply_yaml(
        crds,
        stage,
        [promotion("p3", approval={"required": True, "approvers": {"users": ["alice"]}})],
    )
    wait_phase(api_client, stage, "p3", "WaitingForApproval")
    assert annotate(crds, stage, "p3", "alice", "reject", "latency too high").returncode == 0
    done = wait_phase(api_client, stage, "p3", "Rejected")
    assert done["status"]["message"] == "rejected by alice: latency too high"
    assert done["status"]["approvals"][0]["decision"] == "Rejected"
    assert staging_serves(api_client, stage) == []
    late = annotate(crds, stage, "p3", "alice", "approve", "changed my mind")
    assert late.returncode != 0 and "only while it is WaitingForApproval" in late.stderr


def test_two_of_three_approvals_are_needed(
    crds: Path, api_client: client.ApiClient, stage: str
) -> None:
    apply_yaml(
        crds,
        stage,
        [
            promotion(
                "p4",
                approval={
                    "required": True,
                    "minApprovals": 2,
                    "approvers": {"users": ["alice", "bob", "carol"]},
                },
            )
        ],
    )
    wait_phase(api_client, stage, "p4", "WaitingForApproval")
    assert annotate(crds, stage, "p4", "alice", "approve", "ok").returncode == 0
    eventually(
        lambda: (
            "1/2 approvals"
            in (get(api_client, stage, "promotions", "p4").get("status") or {}).get("message", "")
        ),
        what="1/2",
    )
    again = annotate(crds, stage, "p4", "alice", "approve", "twice")
    assert again.returncode != 0 and "already decided" in again.stderr
    assert phase(api_client, stage, "p4") == "WaitingForApproval"
    assert annotate(crds, stage, "p4", "carol", "approve", "ok too").returncode == 0
    done = wait_phase(api_client, stage, "p4", "Succeeded")
    assert sorted(a["user"] for a in done["status"]["approvals"]) == ["alice", "carol"]


def test_the_creator_cannot_approve_their_own_promotion(
    crds: Path, api_client: client.ApiClient, stage: str
) -> None:
    created = kubectl(
        crds,
        "apply",
        "-n",
        stage,
        "--as=alice",
        "-f",
        "-",
        stdin=json.dumps(
            promotion("p5", approval={"required": True, "approvers": {"users": ["alice", "bob"]}})
        ),
        check=False,
    )
    assert created.returncode == 0, created.stderr
    annotations = get(api_client, stage, "promotions", "p5")["metadata"]["annotations"]
    assert annotations["kaizen.studio/created-by"] == "alice"
    wait_phase(api_client, stage, "p5", "WaitingForApproval")
    selfie = annotate(crds, stage, "p5", "alice", "approve", "lgtm")
    assert selfie.returncode != 0 and "created Promotion p5 and cannot approve it" in selfie.stderr
    assert annotate(crds, stage, "p5", "bob", "approve", "lgtm").returncode == 0
    wait_phase(api_client, stage, "p5", "Succeeded")


def test_approval_deadline_fails_the_promotion(
    crds: Path, api_client: client.ApiClient, stage: str
) -> None:
    apply_yaml(
        crds,
        stage,
        [
            promotion(
                "p6",
                approval={"required": True, "timeout": "3s", "approvers": {"users": ["alice"]}},
            )
        ],
    )
    done = wait_phase(api_client, stage, "p6", "Failed")
    ready = next(c for c in done["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ApprovalExpired"
    assert "0/1 approvals before the deadline" in done["status"]["message"]
    assert staging_serves(api_client, stage) == []


def test_rollback_is_a_promotion_of_an_earlier_revision(
    crds: Path, api_client: client.ApiClient, stage: str
) -> None:
    apply_yaml(crds, stage, [promotion("to-r2", revision=2)])
    wait_phase(api_client, stage, "to-r2", "Succeeded")
    eventually(lambda: staging_bundle(api_client, stage) == [("hello", 2)], what="staging on r2")
    apply_yaml(crds, stage, [promotion("back-to-r1", revision=1)])
    done = wait_phase(api_client, stage, "back-to-r1", "Succeeded")
    assert done["status"]["previousRevision"] == 2
    eventually(
        lambda: staging_bundle(api_client, stage) == [("hello", 1)], what="staging back on r1"
    )
    # Ended promotions are never re-run.
    assert phase(api_client, stage, "to-r2") == "Succeeded"


def test_a_promotion_ahead_of_its_agent_waits_for_the_revision(
    crds: Path, api_client: client.ApiClient, stage: str
) -> None:
    apply_yaml(crds, stage, [promotion("p7", revision=9)])
    waiting = eventually(
        lambda: (get(api_client, stage, "promotions", "p7").get("status") or {}).get("message"),
        what="p7 status",
    )
    assert "waiting for revision 9 of Agent 'hello' (latest: 2)" in waiting
    assert phase(api_client, stage, "p7") == "Pending"


@pytest.fixture
def live(stage: str, operator: Any, crds: Path, tmp_path: Path) -> Iterator[str]:
    """Real gateway processes for the stage's Gateways, known to the operator."""
    runner = start_devrunner(
        crds, stage, tmp_path / "gateways", operator.endpoints / f"{stage}.json"
    )
    yield stage
    runner.stop()


def test_smoke_gate_verifies_the_switch(
    crds: Path, api_client: client.ApiClient, live: str
) -> None:
    smoke = {"input": "ping", "expectContains": "ping", "timeout": "30s"}
    apply_yaml(crds, live, [promotion("smoke-ok", revision=2, gates={"smoke": smoke})])
    done = wait_phase(api_client, live, "smoke-ok", "Succeeded")
    result = next(g for g in done["status"]["gates"] if g["name"] == "smoke")
    assert result["status"] == "Passed" and "revision 2 answered" in result["message"]
    assert staging_serves(api_client, live) == [{"agent": "hello", "revision": 2}]


def test_failed_verification_reverts_the_target(
    crds: Path, api_client: client.ApiClient, live: str
) -> None:
    apply_yaml(crds, live, [promotion("base", revision=1)])
    wait_phase(api_client, live, "base", "Succeeded")
    smoke = {"input": "ping", "expectContains": "pong", "timeout": "20s"}
    apply_yaml(crds, live, [promotion("bad", revision=2, gates={"smoke": smoke})])
    failed = wait_phase(api_client, live, "bad", "Failed")
    ready = next(c for c in failed["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "VerificationFailed"
    assert "does not contain 'pong'" in failed["status"]["message"]
    assert "reverted to revision 1" in failed["status"]["message"]
    assert staging_serves(api_client, live) == [{"agent": "hello", "revision": 1}]


class _Hook(http.server.BaseHTTPRequestHandler):
    answers: ClassVar[list[int]] = []
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        _Hook.seen.append(
            {"body": json.loads(self.rfile.read(length)), "auth": self.headers.get("authorization")}
        )
        self.send_response(_Hook.answers.pop(0) if _Hook.answers else 200)
        self.end_headers()
        self.wfile.write(b"decided")

    def log_message(self, *args: Any) -> None:
        pass


def test_webhook_gate_passes_on_2xx_and_fails_otherwise(
    crds: Path, api_client: client.ApiClient, stage: str
) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/gate"
    client.CoreV1Api(api_client).create_namespaced_secret(
        stage,
        client.V1Secret(
            # The administrator pairs the token with the receiver (docs/security.md).
            metadata=client.V1ObjectMeta(
                name="hook-token", annotations={"kaizen.studio/allowed-destinations": url}
            ),
            string_data={"token": "s3cret"},
        ),
    )
    try:
        # gate of hook-ok, gate of hook-no, then hook-no's failure notification twice
        _Hook.answers[:] = [200, 403, 500, 200]
        gate = {"webhook": {"url": url, "secretRef": {"name": "hook-token", "key": "token"}}}
        apply_yaml(crds, stage, [promotion("hook-ok", gates=gate)])
        wait_phase(api_client, stage, "hook-ok", "Succeeded")
        assert (
            _Hook.seen[0]["body"]["agent"] == "hello" and _Hook.seen[0]["auth"] == "Bearer s3cret"
        )
        notify = {"webhook": {"url": url + "/notify", "secretRef": gate["webhook"]["secretRef"]}}
        apply_yaml(
            crds,
            stage,
            [
                promotion(
                    "hook-no", revision=2, gates={"webhook": {"url": url}}, notifications=notify
                )
            ],
        )
        failed = wait_phase(api_client, stage, "hook-no", "Failed")
        assert "webhook answered 403" in failed["status"]["message"]
        assert staging_serves(api_client, stage) == [{"agent": "hello", "revision": 1}]
        # The failure is reported to the notification webhook; a 500 is retried.
        sent = eventually(
            lambda: (
                (
                    get(api_client, stage, "promotions", "hook-no")["status"].get("notification")
                    or {}
                ).get("deliveredAt")
                and get(api_client, stage, "promotions", "hook-no")
            ),
            what="the failure notification",
        )["status"]["notification"]
        assert sent["attempts"] == 2 and sent["message"] == "webhook answered 200"
        body = _Hook.seen[-1]["body"]
        assert (body["phase"], body["reason"], body["to"]) == (
            "Failed",
            "WebhookGateFailed",
            "staging",
        )
        assert body["id"].endswith("/Failed") and _Hook.seen[-1]["auth"] == "Bearer s3cret"
        assert _Hook.seen[-2]["body"]["id"] == body["id"]  # the retry is the same notification
        eventually(
            lambda: (
                {"NotificationFailed", "NotificationSent"}
                <= event_reasons(api_client, stage, "hook-no")
            ),
            what="notification Events",
        )
        time.sleep(3)
        assert len(_Hook.seen) == 4  # delivered: never sent again
    finally:
        server.shutdown()


def _chat(url: str) -> str | None:
    """One chat completion; the revision that answered."""
    request = urllib.request.Request(  # noqa: S310 - loopback test URL
        f"{url}/v1/chat/completions",
        data=json.dumps(
            {"model": "hello", "messages": [{"role": "user", "content": "hi"}]}
        ).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310
        return resp.headers.get("x-kaizen-agent-revision")


def test_metric_gates_read_the_source_gateways_traffic(
    crds: Path, api_client: client.ApiClient, live: str, operator: Any
) -> None:
    endpoints = operator.endpoints / f"{live}.json"
    dev = eventually(
        lambda: endpoints.exists() and json.loads(endpoints.read_text()).get(f"{live}/dev"),
        what="the dev gateway process",
    )
    # Without traffic there is nothing to judge: the gate fails and says so.
    quiet = {"metrics": [{"metric": "errorRate", "max": 1}]}
    apply_yaml(crds, live, [promotion("quiet", revision=2, gates=quiet)])
    failed = wait_phase(api_client, live, "quiet", "Failed")
    assert next(c for c in failed["status"]["conditions"] if c["type"] == "Ready")["reason"] == (
        "MetricGateFailed"
    )
    assert "no requests answered by revision 2 of hello on dev" in failed["status"]["message"]
    assert staging_serves(api_client, live) == []

    eventually(lambda: _chat(dev) == "2", what="dev serving revision 2")
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            _chat(dev)
            time.sleep(0.05)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        healthy = {
            "metrics": [
                {"metric": "errorRate", "max": 1},
                {"metric": "latencyP95", "max": 5000},
                {"metric": "requestsPerSecond", "min": 1},
            ]
        }
        apply_yaml(crds, live, [promotion("healthy", revision=2, gates=healthy)])
        done = wait_phase(api_client, live, "healthy", "Succeeded")
        gate = next(g for g in done["status"]["gates"] if g["name"] == "metrics")
        assert gate["status"] == "Passed"
        assert "errorRate 0%" in gate["message"] and "req/s" in gate["message"]
        # Events are posted after the status is written: wait for it, as a user would.
        eventually(
            lambda: "MetricGatePassed" in event_reasons(api_client, live, "healthy"),
            what="a MetricGatePassed Event",
        )
        assert staging_serves(api_client, live) == [{"agent": "hello", "revision": 2}]

        slow = {"metrics": [{"metric": "latencyP95", "max": "1u"}]}  # one nanosecond
        apply_yaml(crds, live, [promotion("too-slow", revision=2, gates=slow)])
        failed = wait_phase(api_client, live, "too-slow", "Failed")
        assert "is above the maximum 1u" in failed["status"]["message"]
    finally:
        stop.set()
        sender.join()


def test_a_promoted_revision_outlives_fifteen_newer_ones(
    crds: Path, api_client: client.ApiClient, stage: str
) -> None:
    objects = client.CustomObjectsApi(api_client)
    objects.patch_namespaced_custom_object(
        "kaizen.studio", "v1alpha1", stage, "agents", "hello", {"spec": {"revisionHistoryLimit": 2}}
    )
    apply_yaml(crds, stage, [promotion("keep-r1", revision=1)])
    wait_phase(api_client, stage, "keep-r1", "Succeeded")
    eventually(lambda: staging_bundle(api_client, stage) == [("hello", 1)], what="staging on r1")
    for n in range(3, 18):
        objects.patch_namespaced_custom_object(
            "kaizen.studio",
            "v1alpha1",
            stage,
            "agents",
            "hello",
            {"spec": {"systemPrompt": f"v{n}"}},
        )
        eventually(
            lambda n=n: get(api_client, stage, "agents", "hello")["status"]["latestRevision"] == n,
            what=f"r{n}",
        )
    status = get(api_client, stage, "agents", "hello")["status"]
    kept = {r["revision"]: r for r in status["revisions"]}
    # r1: promoted to staging. The dev Gateway may still serve the revision before the
    # newest (it rolls after each change), which is retained too, and says so.
    assert {1, 16, 17} <= set(kept) <= {1, 15, 16, 17}
    assert kept[1]["retainedBy"] == ["served by Gateway 'staging'"]
    assert all(
        kept[r]["retainedBy"] == ["served by Gateway 'dev'"] for r in set(kept) - {1, 16, 17}
    )
    revisions = client.AppsV1Api(api_client).list_namespaced_controller_revision(stage)
    assert {f"hello-r{n}" for n in kept} == {r.metadata.name for r in revisions.items}
    assert staging_bundle(api_client, stage) == [("hello", 1)]
    assert staging_serves(api_client, stage) == [{"agent": "hello", "revision": 1}]


def test_export_then_apply_into_an_empty_namespace_serves_the_same_revisions(
    crds: Path, api_client: client.ApiClient, stage: str, tmp_path: Path
) -> None:
    apply_yaml(crds, stage, [promotion("p1")])
    wait_phase(api_client, stage, "p1", "Succeeded")
    eventually(lambda: staging_bundle(api_client, stage) == [("hello", 1)], what="staging on r1")
    promote_pipeline(api_client, crds, stage)
    target = get(api_client, stage, "gateways", "staging")
    (entry,) = target["spec"]["promotedRevisions"]
    assert (entry["agent"], entry["revision"], entry["promotion"]) == ("hello", 1, "p1")
    writers = {
        f["manager"]
        for f in target["metadata"]["managedFields"]
        if f.get("subresource") == "status"
    }
    assert writers == {"kaizen-operator"}
    promoters = {
        f["manager"]
        for f in target["metadata"]["managedFields"]
        if "f:promotedRevisions" in json.dumps(f.get("fieldsV1", {}))
    }
    assert promoters == {"kaizen-promotion"}

    env = {**os.environ, "KUBECONFIG": str(crds)}
    done = subprocess.run(
        ["kaizen", "export", "-n", stage, "-o", str(tmp_path / "backup")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    exported = (tmp_path / "backup" / f"{stage}.yaml").read_text()
    assert "kind: ControllerRevision" in exported and "promotedRevisions" in exported
    assert "kind: Pipeline" in exported and "promotedPipelineRevisions" in exported

    for kind in ("promotions", "gateways.kaizen.studio", "pipelines", "agents"):
        kubectl(crds, "delete", kind, "--all", "-n", stage, "--wait=true")
    kubectl(crds, "delete", "controllerrevisions", "--all", "-n", stage, "--wait=true")
    apps = client.AppsV1Api(api_client)
    eventually(
        lambda: not apps.list_namespaced_controller_revision(stage).items, what="history gone"
    )

    kubectl(crds, "apply", "-f", str(tmp_path / "backup" / f"{stage}.yaml"))
    eventually(
        lambda: staging_bundle(api_client, stage) == [("hello", 1)],
        timeout=60,
        what="restored staging serving r1",
    )
    eventually(
        lambda: staging_serves(api_client, stage) == [{"agent": "hello", "revision": 1}],
        what="restored staging status",
    )
    restored = get(api_client, stage, "agents", "hello")["status"]
    assert restored["latestRevision"] == 2  # the history came back, not a new revision 1
    assert "RevisionsAdopted" in event_reasons(api_client, stage, "hello")
    # The pipeline too: its promoted revision (and the agent revision it pins) served
    # again from the restored history, adopted rather than made anew.
    eventually(
        lambda: served(bundle_of(api_client, stage, "staging"), "pipelines") == [("flow", 1)],
        timeout=60,
        what="restored staging serving flow r1",
    )
    # staging serves hello r1 as a model itself (p1), so flow's pin needs no extra copy.
    assert served(bundle_of(api_client, stage, "staging"), "pinnedAgents") == []
    eventually(
        lambda: (
            (get(api_client, stage, "gateways", "staging").get("status") or {}).get(
                "pinnedRevisions"
            )
            == [{"agent": "hello", "revision": 1, "pipeline": "flow"}]
        ),
        what="restored staging status pinning hello r1",
    )
    assert "RevisionsAdopted" in event_reasons(api_client, stage, "flow")

"""Webhooks end to end: real `kaizen-api` processes on PostgreSQL, the real apiserver
and operator, and a real receiver process that verifies every message with the
`standardwebhooks` library.

Events come from real changes: an Agent created through the facade gets its revision
from the operator, which the facade's watch turns into ``agent.revision.created``, and
a Promotion the operator moves to a phase becomes ``promotion.<phase>``;
member and API-key changes are the facade's own mutations. Retries use a schedule of
seconds (settings), never long sleeps."""

from __future__ import annotations

import json
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from localdb import postgres
from tests.support.facade import PASSWORD, agent
from tests.support.kube import eventually
from tests.support.live_server import Server, live_facade, owner, start_facade
from tests.support.processes import LocalProcess, free_port, start, start_operator, wait_port
from tests.support.webhook_receiver import received

ENV = {
    "KAIZEN_WEBHOOK_RETRY_SCHEDULE": "0.5,1,2,3,4,5,6,8",  # 29.5 s in all
    "KAIZEN_WEBHOOK_JITTER": "0.1",
    "KAIZEN_WEBHOOK_LEASE": "3",
    "KAIZEN_WEBHOOK_POLL": "0.2",
    "KAIZEN_WEBHOOK_DISABLE_AFTER": "0",
    "KAIZEN_USER_RATE_LIMIT": "100000",
}


@dataclass
class Receiver:
    folder: Path
    url: str
    process: LocalProcess

    def secrets(self, *keys: str) -> None:
        (self.folder / "secrets").write_text("\n".join(keys))

    def seen(self, **match: Any) -> list[dict[str, Any]]:
        return [r for r in received(self.folder) if all(r.get(k) == v for k, v in match.items())]

    def delivered(self) -> Counter[str]:
        """Verified 2xx answers per webhook-id."""
        return Counter(r["id"] for r in self.seen(phase="done", status=204))


def start_receiver(folder: Path) -> Receiver:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = start(
        [sys.executable, "-m", "tests.support.webhook_receiver", str(folder), str(port)],
        folder / "receiver.log",
    )
    wait_port(port, process)
    return Receiver(folder, f"http://127.0.0.1:{port}", process)


@pytest.fixture(scope="module")
def pg_url(postgres_admin_url: str) -> Iterator[str]:
    name = f"t_hooks_{uuid.uuid4().hex[:10]}"
    yield postgres.create_database(postgres_admin_url, name)
    postgres.drop_database(postgres_admin_url, name)


@pytest.fixture(scope="module")
def server(
    facade_cluster: Path,
    api_client: client.ApiClient,
    pg_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("hooks")
    with live_facade(facade_cluster, api_client, folder, pg_url, env=ENV, prefix="hooks") as s:
        yield s


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    handle = start_receiver(tmp_path / "receiver")
    yield handle
    handle.process.stop()


def api(server: Server, method: str, path: str, headers: dict[str, str] | None = None, **kw: Any):  # type: ignore[no-untyped-def]
    return httpx.request(
        method, server.api + path, headers=headers or server.headers, timeout=30, **kw
    )


def subscribe(server: Server, receiver: Receiver, path: str = "/", **body: Any) -> dict[str, Any]:
    r = api(
        server, "POST", f"/orgs/{server.org}/webhooks", json={"url": receiver.url + path, **body}
    )
    assert r.status_code == 201, r.text
    hook: dict[str, Any] = r.json()
    assert hook["secret"].startswith("whsec_")
    return hook


def deliveries(server: Server, hook: dict[str, Any]) -> list[dict[str, Any]]:
    r = api(server, "GET", f"/orgs/{server.org}/webhooks/{hook['id']}/deliveries")
    assert r.status_code == 200, r.text
    return list(r.json())


def new_user(server: Server, name: str) -> tuple[str, dict[str, str]]:
    email = f"{name}-{uuid.uuid4().hex[:6]}@example.com"
    with httpx.Client(base_url=server.api, timeout=30) as http:
        http.post("/auth/register", json={"email": email, "password": PASSWORD}).raise_for_status()
        token = http.post("/auth/login", json={"email": email, "password": PASSWORD}).json()
    return email, {"authorization": f"Bearer {token['access_token']}"}


def test_real_changes_reach_a_verifying_receiver_once_after_failures(
    server: Server, receiver: Receiver, facade_cluster: Path, tmp_path: Path
) -> None:
    # The operator gives Agents their revisions (started first: the receiver's outage
    # below must stay shorter than the retry schedule, or the subscription is disabled).
    operator, _ = start_operator(facade_cluster, f"kz-{server.org}-*", tmp_path / "operator.log")
    try:
        filters = ["agent.*", "member.*", "api_key.*", "promotion.*"]
        hook = subscribe(server, receiver, events=filters)
        receiver.secrets(hook["secret"])
        (receiver.folder / "fail").touch()  # the receiver is down at first

        # Facade mutations: a member joins, a key is made and revoked.
        email, _ = new_user(server, "dev")
        org = f"/orgs/{server.org}"
        r = api(server, "POST", f"{org}/members", json={"email": email, "role": "developer"})
        assert r.status_code == 201, r.text
        key = api(server, "POST", f"{org}/keys", json={"name": "ci", "permissions": ["*:read"]})
        assert key.status_code == 201, key.text
        assert api(server, "DELETE", f"{org}/keys/{key.json()['id']}").status_code == 204

        # A resource change: the operator gives the Agent its first revision.
        ws = f"/orgs/{server.org}/workspaces/ml"
        assert api(server, "POST", f"{ws}/agents", json=agent("helper")).status_code == 201
        eventually(
            lambda: receiver.seen(type="agent.revision.created"),
            timeout=60,
            what="agent.revision.created attempted (operator -> watch -> outbox)",
        )
        # A Promotion the operator moves to a phase (its Gateways do not exist).
        promotion = {
            "metadata": {"name": "ship"},
            "spec": {"agentRef": {"name": "helper"}, "revision": 1, "from": "dev", "to": "prod"},
        }
        r = api(server, "POST", f"{ws}/promotions", json=promotion)
        assert r.status_code == 201, r.text
        eventually(
            lambda: [e for e in receiver.seen() if str(e["type"]).startswith("promotion.")],
            timeout=60,
            what="a promotion phase event attempted",
        )
    finally:
        operator.stop()

    # Failed attempts are in the log with their response code; then the receiver recovers.
    eventually(
        lambda: all(d["attempts"] >= 2 for d in deliveries(server, hook)),
        timeout=30,
        what="every delivery retried",
    )
    failed = deliveries(server, hook)[0]
    assert failed["status"] == "pending" and failed["log"][0]["response_code"] == 503
    (receiver.folder / "fail").unlink()
    expected = {"member.added", "api_key.created", "api_key.revoked", "agent.revision.created"}
    eventually(
        lambda: (
            {d["event_type"] for d in deliveries(server, hook) if d["status"] == "succeeded"}
            >= expected
        ),
        timeout=60,
        what="all delivered after recovery",
    )
    eventually(
        lambda: all(d["status"] == "succeeded" for d in deliveries(server, hook)),
        timeout=60,
        what="every phase event delivered too",
    )
    log = deliveries(server, hook)
    phases = [d["event_type"] for d in log if d["event_type"].startswith("promotion.")]
    assert phases, log
    assert all(d["response_code"] == 204 and d["latency_ms"] is not None for d in log)
    # Every event exactly once with a good signature, by webhook-id.
    delivered = receiver.delivered()
    assert set(delivered) == {d["event_id"] for d in log}
    assert set(delivered.values()) == {1}, delivered
    assert all(r["verified"] == [True] for r in receiver.seen(phase="done"))
    revision = receiver.seen(type="agent.revision.created", status=204)[0]["data"]
    assert revision["name"] == "helper" and revision["revision"] == 1
    assert revision["workspace"] == "ml" and revision["organization"] == server.org


def test_test_events_redelivery_and_rotation_overlap(server: Server, receiver: Receiver) -> None:
    hook = subscribe(server, receiver)
    receiver.secrets(hook["secret"])
    base = f"/orgs/{server.org}/webhooks/{hook['id']}"
    sent = api(server, "POST", f"{base}/test")
    assert sent.status_code == 202, sent.text
    event_id = sent.json()["event_id"]
    eventually(lambda: receiver.delivered()[event_id] == 1, timeout=30, what="test event")
    assert receiver.seen(id=event_id, phase="done")[0]["type"] == "webhook.test"

    # Redelivery: the same webhook-id again (receivers deduplicate by it).
    delivery = sent.json()["id"]
    again = api(server, "POST", f"{base}/deliveries/{delivery}/redeliver")
    assert again.status_code == 202, again.text
    eventually(lambda: receiver.delivered()[event_id] == 2, timeout=30, what="redelivery")

    # Rotation with an overlap: both secrets sign; the receiver checks each alone.
    old = hook["secret"]
    rotated = api(server, "POST", f"{base}/rotate", json={"overlap_seconds": 3600})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    assert new != old and rotated.json()["previous_secret_until"]
    receiver.secrets(old, new)
    during = api(server, "POST", f"{base}/test").json()["event_id"]
    eventually(lambda: receiver.delivered()[during], timeout=30, what="event during overlap")
    assert receiver.seen(id=during, phase="done")[0]["verified"] == [True, True]

    # A rotation without overlap: only the new secret signs.
    newest = api(server, "POST", f"{base}/rotate", json={"overlap_seconds": 0}).json()["secret"]
    receiver.secrets(new, newest)
    after = api(server, "POST", f"{base}/test").json()["event_id"]
    eventually(lambda: receiver.delivered()[after], timeout=30, what="event after overlap")
    assert receiver.seen(id=after, phase="done")[0]["verified"] == [False, True]
    # The secret is never shown again.
    listed = api(server, "GET", f"/orgs/{server.org}/webhooks").json()
    assert all("secret" not in h for h in listed)


def test_persistent_failure_disables_with_an_event_and_an_audit_record(
    server: Server, receiver: Receiver
) -> None:
    watcher = subscribe(server, receiver, "/watcher", events=["webhook.*"])
    receiver.secrets(watcher["secret"])
    dead = api(
        server,
        "POST",
        f"/orgs/{server.org}/webhooks",
        json={"url": f"http://127.0.0.1:{free_port()}/nobody", "events": ["api_key.*"]},
    ).json()
    key = api(
        server, "POST", f"/orgs/{server.org}/keys", json={"name": "x", "permissions": ["*:read"]}
    )
    assert key.status_code == 201
    eventually(
        lambda: (
            not api(server, "GET", f"/orgs/{server.org}/webhooks/{dead['id']}").json()["active"]
        ),
        timeout=90,
        what="the failing subscription disabled",
    )
    state = api(server, "GET", f"/orgs/{server.org}/webhooks/{dead['id']}").json()
    assert "disabled automatically" in state["disabled_reason"]
    failed = deliveries(server, dead)[0]
    assert failed["status"] == "failed" and failed["attempts"] == 9  # 1 + 8 retries
    assert failed["response_code"] is None and "Connect" in failed["error"]

    def notice() -> list[dict[str, Any]]:  # earlier tests' subscriptions may fail too
        seen = receiver.seen(type="webhook.disabled", status=204)
        return [r["data"] for r in seen if r["data"]["webhook"] == dead["id"]]

    told = eventually(notice, timeout=30, what="the webhook.disabled event")
    assert told[0]["url"].endswith("/nobody") and told[0]["failingSince"]
    audit = api(server, "GET", f"/orgs/{server.org}/audit", params={"limit": 500}).json()
    records = audit["items"] if isinstance(audit, dict) else audit
    assert any(
        r["action"] == "webhooks.disable" and r["actor"] == "system:webhooks" for r in records
    )
    # Re-enabled, it is active again.
    back = api(server, "PATCH", f"/orgs/{server.org}/webhooks/{dead['id']}", json={"active": True})
    assert back.json()["active"] is True and back.json()["disabled_reason"] == ""


def test_tenants_never_see_each_others_events_or_webhooks(
    server: Server, receiver: Receiver
) -> None:
    mine = subscribe(server, receiver, "/a")
    _, other_headers, other_org = owner(server.url, "rival")
    theirs = api(
        server,
        "POST",
        f"/orgs/{other_org}/webhooks",
        other_headers,
        json={"url": receiver.url + "/b"},
    )
    assert theirs.status_code == 201, theirs.text
    receiver.secrets(mine["secret"], theirs.json()["secret"])
    for headers, org in ((server.headers, server.org), (other_headers, other_org)):
        r = api(
            server,
            "POST",
            f"/orgs/{org}/keys",
            headers,
            json={"name": "k", "permissions": ["*:read"]},
        )
        assert r.status_code == 201
    eventually(
        lambda: (
            receiver.seen(path="/a", type="api_key.created", status=204)
            and receiver.seen(path="/b", type="api_key.created", status=204)
        ),
        timeout=30,
        what="both tenants' events",
    )
    for entry in receiver.seen(phase="done"):
        if entry["path"] == "/a":
            assert entry["organization"] == server.org and entry["verified"] == [True, False]
        if entry["path"] == "/b":
            assert entry["organization"] == other_org and entry["verified"] == [False, True]
    # Another org's subscription is not found, whatever the verb.
    foreign = f"/orgs/{other_org}/webhooks/{mine['id']}"
    assert api(server, "GET", foreign, other_headers).status_code == 404
    assert api(server, "DELETE", foreign, other_headers).status_code == 404
    assert api(server, "POST", f"{foreign}/test", other_headers).status_code == 404
    mine_there = f"/orgs/{server.org}/webhooks/{mine['id']}"
    assert api(server, "GET", mine_there, other_headers).status_code == 404
    # A developer of the org cannot manage webhooks (org owners and admins do).
    email, dev_headers = new_user(server, "dev")
    api(server, "POST", f"/orgs/{server.org}/members", json={"email": email, "role": "developer"})
    refused = api(
        server, "POST", f"/orgs/{server.org}/webhooks", dev_headers, json={"url": receiver.url}
    )
    assert refused.status_code == 403, refused.text
    # The SSRF guard refuses metadata addresses at once.
    metadata = api(
        server, "POST", f"/orgs/{server.org}/webhooks", json={"url": "http://169.254.169.254/x"}
    )
    assert metadata.status_code == 422 and "link-local" in metadata.text


def test_sigkill_mid_delivery_loses_nothing(
    facade_cluster: Path,
    api_client: client.ApiClient,
    postgres_admin_url: str,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    name = f"t_kill_{uuid.uuid4().hex[:10]}"
    url = postgres.create_database(postgres_admin_url, name)
    try:
        with live_facade(facade_cluster, api_client, tmp_path / "a", url, env=ENV) as first:
            hook = subscribe(first, receiver)
            receiver.secrets(hook["secret"])
            (receiver.folder / "slow").write_text("4")
            made = api(
                first,
                "POST",
                f"/orgs/{first.org}/keys",
                json={"name": "k", "permissions": ["*:read"]},
            )
            assert made.status_code == 201
            eventually(lambda: receiver.seen(phase="started"), timeout=30, what="a POST in flight")
            first.process.kill()  # SIGKILL while the receiver holds the request
            (receiver.folder / "slow").unlink()
            event_id = receiver.seen(phase="started")[0]["id"]
            second, second_url = start_facade(facade_cluster, tmp_path / "b", url, ENV)
            try:
                # The claim's lease ends and the restarted facade sends it again (the
                # first answer went to a dead process), under the same webhook-id.
                eventually(
                    lambda: receiver.delivered()[event_id] >= 2, timeout=60, what="redelivered"
                )
                with httpx.Client(base_url=f"{second_url}/api/v1", timeout=30) as http:
                    login = {"email": first.email, "password": PASSWORD}
                    token = http.post("/auth/login", json=login).json()["access_token"]
                    log = http.get(
                        f"/orgs/{first.org}/webhooks/{hook['id']}/deliveries",
                        headers={"authorization": f"Bearer {token}"},
                    ).json()
                assert [d["status"] for d in log] == ["succeeded"]
            finally:
                second.stop()
    finally:
        postgres.drop_database(postgres_admin_url, name)


def test_cli_manages_webhooks(
    server: Server, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import kaizen_api.cli.commands  # registers `login`
    import kaizen_api.cli.webhooks  # noqa: F401 - registers `webhooks`
    from kaizen_api.cli.__main__ import app

    monkeypatch.setenv("KAIZEN_CREDENTIALS", str(tmp_path / "credentials.json"))
    runner = CliRunner()
    login = ["login", "--url", server.url, "--email", server.email, "--org", server.org]
    assert runner.invoke(app, login, input=f"{PASSWORD}\n").exit_code == 0
    created = runner.invoke(app, ["webhooks", "create", receiver.url, "--events", "webhook.*"])
    assert created.exit_code == 0, created.output
    secret = created.output.split("keep it now): ")[1].split()[0]
    hook = created.output.split()[1]
    receiver.secrets(secret)
    listed = json.loads(runner.invoke(app, ["webhooks", "list", "--json"]).output)
    assert [h["id"] for h in listed if h["id"] == hook] and "secret" not in listed[0]
    sent = runner.invoke(app, ["webhooks", "test", hook])
    assert sent.exit_code == 0 and "queued" in sent.output, sent.output
    eventually(lambda: receiver.seen(type="webhook.test", status=204), timeout=30, what="test")
    log = runner.invoke(app, ["webhooks", "deliveries", hook])
    assert "succeeded" in log.output and "204" in log.output, log.output
    delivery = json.loads(runner.invoke(app, ["webhooks", "deliveries", hook, "--json"]).output)[0]
    assert delivery["status"] == "succeeded" and delivery["response_code"] == 204
    again = runner.invoke(app, ["webhooks", "redeliver", hook, str(delivery["id"])])
    assert again.exit_code == 0 and "queued again" in again.output
    rotated = runner.invoke(app, ["webhooks", "rotate", hook, "--overlap", "60"])
    assert rotated.exit_code == 0 and "also signs until" in rotated.output
    assert runner.invoke(app, ["webhooks", "delete", hook]).exit_code == 0
    gone = runner.invoke(app, ["webhooks", "test", hook])
    assert gone.exit_code == 1 and "404" in gone.output
    bad = runner.invoke(app, ["webhooks", "create", receiver.url, "--events", "nothing.*"])
    assert bad.exit_code == 1 and "matches no event type" in bad.output


def test_two_replicas_share_deliveries_without_duplicates(
    server: Server, receiver: Receiver, facade_cluster: Path, tmp_path: Path
) -> None:
    """A second facade on the same database: both claim due deliveries (SKIP LOCKED),
    both watch the apiserver (an event derived by each is recorded once), and every
    event still reaches the receiver exactly once."""
    hook = subscribe(server, receiver, events=["api_key.*", "agent.*"])
    receiver.secrets(hook["secret"])
    second, _ = start_facade(facade_cluster, tmp_path / "b", server.database_url, ENV)
    operator, _ = start_operator(facade_cluster, f"kz-{server.org}-*", tmp_path / "op.log")
    try:
        ws = f"/orgs/{server.org}/workspaces/ml"
        assert api(server, "POST", f"{ws}/agents", json=agent("twice")).status_code == 201
        for n in range(30):
            r = api(
                server,
                "POST",
                f"/orgs/{server.org}/keys",
                json={"name": f"k{n}", "permissions": ["*:read"]},
            )
            assert r.status_code == 201
        eventually(lambda: len(receiver.delivered()) == 31, timeout=60, what="31 events")
        log = deliveries(server, hook)
        assert [d["status"] for d in log] == ["succeeded"] * 31
        assert [d["attempts"] for d in log] == [1] * 31
        assert set(receiver.delivered().values()) == {1}
        revision = receiver.seen(type="agent.revision.created", status=204)
        assert [r["data"]["name"] for r in revision] == ["twice"]
    finally:
        operator.stop()
        second.stop()


def test_changes_while_no_facade_runs_become_events_after_restart(
    facade_cluster: Path,
    api_client: client.ApiClient,
    postgres_admin_url: str,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    """The watch resumes from its recorded resourceVersion: an Agent revised while the
    facade was down is announced after the restart, and nothing seen before is
    announced again."""
    name = f"t_gap_{uuid.uuid4().hex[:10]}"
    url = postgres.create_database(postgres_admin_url, name)
    crd = client.CustomObjectsApi(api_client)
    try:
        with live_facade(facade_cluster, api_client, tmp_path / "a", url, env=ENV) as first:
            namespace = f"kz-{first.org}--ml"
            operator, _ = start_operator(facade_cluster, f"kz-{first.org}-*", tmp_path / "op.log")
            try:
                hook = subscribe(first, receiver, events=["agent.*"])
                receiver.secrets(hook["secret"])
                ws = f"/orgs/{first.org}/workspaces/ml"
                assert api(first, "POST", f"{ws}/agents", json=agent("before")).status_code == 201
                eventually(lambda: len(receiver.delivered()) == 1, timeout=60, what="first")

                first.process.stop()  # no facade runs now
                body = {"apiVersion": "kaizen.studio/v1alpha1", "kind": "Agent", **agent("during")}
                crd.create_namespaced_custom_object(
                    "kaizen.studio", "v1alpha1", namespace, "agents", body
                )
                eventually(
                    lambda: (
                        crd.get_namespaced_custom_object(
                            "kaizen.studio", "v1alpha1", namespace, "agents", "during"
                        ).get("status")
                        or {}
                    ).get("latestRevision"),
                    timeout=60,
                    what="the operator's revision while the facade is down",
                )
                second, _ = start_facade(facade_cluster, tmp_path / "b", url, ENV)
                try:
                    eventually(lambda: len(receiver.delivered()) == 2, timeout=60, what="gap")
                finally:
                    second.stop()
            finally:
                operator.stop()
        names = [r["data"]["name"] for r in receiver.seen(phase="done", status=204)]
        assert sorted(names) == ["before", "during"], names
        assert set(receiver.delivered().values()) == {1}
    finally:
        postgres.drop_database(postgres_admin_url, name)

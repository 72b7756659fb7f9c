"""docs/backup-restore.md, run as written, on PostgreSQL: state made through a live facade
is backed up (pg_dump, the signing keys, `kaizen export`), destroyed (database dropped,
keys deleted, the workspace's namespace deleted), restored (pg_restore, the keys,
`kaizen-api migrate`, `kaizen-api sync-workspaces`, `kubectl apply`), and the facade
started again serves the same users, keys, tokens, Agents, Secrets and audit trail."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from localdb import postgres
from tests.reliability.figures import Figures
from tests.support.facade import PASSWORD, agent
from tests.support.live_server import delete_namespaces, owner, start_facade

pytestmark = pytest.mark.timeout(400)
DOC = Path(__file__).resolve().parents[2] / "docs" / "backup-restore.md"
CLEAN_METADATA = {"name", "namespace", "labels", "annotations"}


def run(argv: list[str], env: dict[str, str]) -> str:
    """One documented command; its output on failure."""
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def signing_key(folder: Path) -> None:
    folder.mkdir(parents=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (folder / "2025-01.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def gone(core: client.CoreV1Api, namespace: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.read_namespace(namespace)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(0.5)
    raise AssertionError(f"namespace {namespace} still there after {timeout}s")


def audit(
    http: httpx.Client, org: str, headers: dict[str, str] | None = None
) -> list[tuple[str, str, str, int]]:
    page = http.get(f"/orgs/{org}/audit", params={"limit": 500}, headers=headers)
    assert page.status_code == 200, page.text
    body = page.json()
    items = body["items"] if isinstance(body, dict) else body
    return sorted((r["request_id"], r["action"], r["actor"], r["outcome"]) for r in items)


def test_the_documented_backup_and_restore(
    facade_cluster: Path,
    api_client: client.ApiClient,
    postgres_admin_url: str,
    tmp_path: Path,
    figures: Figures,
) -> None:
    doc = DOC.read_text()
    for command in (
        "pg_dump --format=custom --no-owner",
        "kaizen export",
        "pg_restore --no-owner --exit-on-error",
        "kaizen-api migrate",
        "kaizen-api sync-workspaces",
        'kubectl apply -f "$backup/objects/secrets/"',
        'kubectl apply -f "$backup/objects/"',
    ):
        assert command in doc, f"the test runs {command!r}, which the doc no longer says"

    core = client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    name = f"t_backup_{uuid.uuid4().hex[:10]}"
    database_url = postgres.create_database(postgres_admin_url, name)
    keys = tmp_path / "jwt"
    signing_key(keys)
    backup = tmp_path / "backup"
    backup.mkdir()
    env = {
        **os.environ,
        "KUBECONFIG": str(facade_cluster),
        "KAIZEN_DATABASE_URL": database_url,
        "KAIZEN_JWT_KEY_DIR": str(keys),
    }
    namespace = ""
    process = None
    try:
        # ------------------------------------------------------------ state
        process, url = start_facade(facade_cluster, tmp_path / "before", database_url, env)
        email, headers, org = owner(url, "backup", plan="pro")
        namespace = f"kz-{org}--ml"
        ws = f"/orgs/{org}/workspaces/ml"
        with httpx.Client(base_url=url + "/api/v1", headers=headers, timeout=60) as http:
            key = http.post(
                f"/orgs/{org}/keys",
                json={"name": "ci", "workspace": "ml", "permissions": ["agents:*"]},
            )
            assert key.status_code == 201, key.text
            api_key = key.json()["key"]
            core.create_namespaced_secret(
                namespace,
                client.V1Secret(
                    metadata=client.V1ObjectMeta(name="openai"),
                    data={"apiKey": base64.b64encode(b"sk-test-not-real").decode()},
                ),
            )
            bodies: list[dict[str, Any]] = [agent(f"agent-{i}", f"Prompt {i}.") for i in range(3)]
            bodies.append(
                {
                    "metadata": {"name": "writer", "labels": {"team": "content"}},
                    "spec": {
                        "model": {
                            "provider": "openai",
                            "name": "gpt-4o-mini",
                            "credentialsSecretRef": {"name": "openai", "key": "apiKey"},
                        },
                        "systemPrompt": "Write well.",
                    },
                }
            )
            for body in bodies:
                created = http.post(f"{ws}/agents", json=body)
                assert created.status_code == 201, created.text
            refused = http.post(f"{ws}/agents", json={"metadata": {"name": "bad"}})
            assert refused.status_code == 422  # audited too
            promoted = http.post(
                f"{ws}/promotions",
                json={
                    "metadata": {"name": "done"},
                    "spec": {
                        "agentRef": {"name": "agent-0"},
                        "revision": 1,
                        "from": "dev",
                        "to": "staging",
                    },
                },
            )
            assert promoted.status_code == 201, promoted.text
            custom.patch_namespaced_custom_object_status(
                "kaizen.studio",
                "v1alpha1",
                namespace,
                "promotions",
                "done",
                {"status": {"phase": "Succeeded", "message": "promoted"}},
            )
            specs = {
                a["metadata"]["name"]: (a["spec"], a["metadata"].get("labels"))
                for a in http.get(f"{ws}/agents").json()["items"]
            }
            assert len(specs) == 4
            records_before = audit(http, org)
            old_token = headers["authorization"]
        process.stop()
        process = None

        # ------------------------------------------------------------ back up
        started = time.monotonic()
        run(
            [
                "pg_dump",
                "--format=custom",
                "--no-owner",
                f"--file={backup / 'kaizen-api.dump'}",
                database_url,
            ],
            env,
        )
        shutil.copytree(keys, backup / "jwt-keys")
        exported = run(
            [
                "kaizen",
                "export",
                "--namespace",
                namespace,
                "-o",
                str(backup / "objects"),
                "--include-ended",
                "--include-secrets",
            ],
            env,
        )
        backed_up = time.monotonic() - started
        assert "exported 4 object(s)" in exported, exported
        docs = list(yaml.safe_load_all((backup / "objects" / f"{namespace}.yaml").read_text()))
        assert [d["kind"] for d in docs] == ["Namespace"] + ["Agent"] * 4
        assert docs[0]["metadata"]["labels"]["kaizen.studio/org"] == org
        for d in docs:
            assert "status" not in d and set(d["metadata"]) <= CLEAN_METADATA, d
        history = backup / "objects" / "history" / f"{namespace}.promotions.yaml"
        assert yaml.safe_load(history.read_text().split("---", 1)[1])["status"]["phase"] == (
            "Succeeded"
        )
        secrets = backup / "objects" / "secrets" / f"{namespace}.yaml"
        assert oct(secrets.stat().st_mode & 0o777) == "0o600"
        default = run(["kaizen", "export", "-n", namespace], env)  # stdout, no flags
        assert "kind: Promotion" not in default and "kind: Secret" not in default

        # ------------------------------------------------------------ lose everything
        postgres.drop_database(postgres_admin_url, name)
        shutil.rmtree(keys)
        core.delete_namespace(namespace)
        gone(core, namespace)

        # ------------------------------------------------------------ restore
        started = time.monotonic()
        run(["createdb", f"--maintenance-db={postgres_admin_url}", name], env)
        run(
            [
                "pg_restore",
                "--no-owner",
                "--exit-on-error",
                f"--dbname={database_url}",
                str(backup / "kaizen-api.dump"),
            ],
            env,
        )
        keys.mkdir()
        for pem in (backup / "jwt-keys").iterdir():
            shutil.copy2(pem, keys / pem.name)
        run(["kaizen-api", "migrate"], env)
        synced = run(["kaizen-api", "sync-workspaces"], env)
        assert "1 workspace(s) in sync" in synced, synced
        run(["kubectl", "apply", "-f", str(backup / "objects" / "secrets")], env)
        applied = run(["kubectl", "apply", "-f", str(backup / "objects")], env)
        assert "promotion" not in applied.lower(), applied
        restored = time.monotonic() - started

        # ------------------------------------------------------------ all there?
        process, url = start_facade(facade_cluster, tmp_path / "after", database_url, env)
        with httpx.Client(base_url=url + "/api/v1", timeout=60) as http:
            login = http.post("/auth/login", json={"email": email, "password": PASSWORD})
            assert login.status_code == 200, login.text
            me = http.get("/auth/me", headers={"authorization": old_token})
            assert me.status_code == 200, me.text  # a token from before the backup
            by_key = http.get(f"{ws}/agents", headers={"authorization": f"Bearer {api_key}"})
            assert by_key.status_code == 200, by_key.text
            after = {
                a["metadata"]["name"]: (a["spec"], a["metadata"].get("labels"))
                for a in by_key.json()["items"]
            }
            assert after == specs
            fresh = {"authorization": f"Bearer {login.json()['access_token']}"}
            promotions = http.get(f"{ws}/promotions", headers=fresh).json()["items"]
            assert promotions == [], "an ended Promotion was re-applied"
            records_after = audit(http, org, fresh)
            assert set(records_before) <= set(records_after)
            # the restored workspace works: access from the database, quota counted
            created = http.post(f"{ws}/agents", json=agent("after-restore"), headers=fresh)
            assert created.status_code == 201, created.text
        secret = core.read_namespaced_secret("openai", namespace)
        assert base64.b64decode(secret.data["apiKey"]) == b"sk-test-not-real"
        bindings = {
            b.metadata.name
            for b in client.RbacAuthorizationV1Api(api_client)
            .list_namespaced_role_binding(namespace)
            .items
        }
        assert {"kaizen-admin", "kaizen-developer", "kaizen-viewer"} <= bindings

        figures.record("agents restored", len(after))
        figures.record("audit records restored", len(records_before))
        figures.record("backup", round(backed_up, 2), "s")
        figures.record("restore", round(restored, 2), "s")
    finally:
        if process is not None:
            process.stop()
        if namespace:
            delete_namespaces(api_client, {namespace})
        postgres.drop_database(postgres_admin_url, name)


def test_export_keeps_nothing_the_server_set() -> None:
    """The cleaning alone, on an object as the apiserver returns it."""
    from kaizen_api.cli.export import clean, ended, secret_names, with_promoted_state

    served = {
        "apiVersion": "kaizen.studio/v1alpha1",
        "kind": "Gateway",
        "metadata": {
            "name": "prod",
            "namespace": "ns",
            "uid": "u",
            "resourceVersion": "9",
            "generation": 3,
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "managedFields": [{"manager": "x"}],
            "ownerReferences": [{"name": "o"}],
            "finalizers": ["kaizen.studio/cleanup"],
            "labels": {"a": "b"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
        },
        "spec": {
            "environment": "prod",
            "agents": {"names": ["a"]},
            "auth": {"mode": "APIKey", "apiKeysSecretRef": {"name": "keys"}},
        },
        "status": {"servedRevisions": [{"agent": "a", "revision": 2}]},
    }
    cleaned = with_promoted_state(served, clean(served))
    assert list(cleaned) == ["apiVersion", "kind", "metadata", "spec"]
    assert cleaned["metadata"]["labels"] == {"a": "b"}
    assert set(cleaned["metadata"]) == {"name", "namespace", "labels"}
    # Promoted before spec.promotedRevisions existed: the export carries it in spec.
    assert cleaned["spec"]["promotedRevisions"] == [{"agent": "a", "revision": 2}]
    assert secret_names(served) == {"keys"}
    assert ended({"kind": "Promotion", "status": {"phase": "Rejected"}})
    assert not ended({"kind": "Promotion", "status": {"phase": "WaitingForApproval"}})
    assert not ended({"kind": "Promotion"})

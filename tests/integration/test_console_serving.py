"""The facade serves the built console at / without shadowing its API: files as they
are (hashed bundles cached for good), index.html for client routes, the API's own 404
and 405 for API paths, and nothing outside the build."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kaizen_api.server.app import create_app
from kaizen_api.server.settings import Settings

INDEX = "<!doctype html><div id=root></div>"


@pytest.fixture
def client(facade_cluster: Path, tmp_path: Path) -> Iterator[TestClient]:
    dist = tmp_path / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_text(INDEX)
    (dist / "assets" / "index-abc123.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("not for the web")
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'api.db'}",
        kubeconfig=str(facade_cluster),
        console_dir=dist,
    )
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_console_pages_and_files(client: TestClient) -> None:
    for path in ("/", "/login", "/o/acme/w/ml/agents/hello"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert r.text == INDEX
        assert r.headers["cache-control"] == "no-cache"
        assert "script-src 'self'" in r.headers["content-security-policy"]
    bundle = client.get("/assets/index-abc123.js")
    assert bundle.status_code == 200
    assert "immutable" in bundle.headers["cache-control"]
    assert client.get("/assets/missing-123.js").status_code == 404


def test_api_paths_keep_their_answers(client: TestClient) -> None:
    unknown = client.get("/api/v1/no-such-route")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/")
    assert client.get("/api/v1/auth/login").status_code == 405  # POST only
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/openapi.json").json()["info"]["title"] == "Kaizen Studio API"
    assert client.get("/.well-known/jwks.json").status_code == 200
    assert client.post("/o/acme").status_code in (404, 405)  # pages are read-only


def test_nothing_outside_the_build_is_served(client: TestClient) -> None:
    for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/assets/..%2f..%2fsecret.txt"):
        r = client.get(path)
        assert "not for the web" not in r.text, path

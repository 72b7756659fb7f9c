"""Users of a live facade for the security tests: register, log in, call from a chosen
client address (a second loopback address stands for an Ingress controller)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.support.facade import PASSWORD


def client_from(url: str, address: str = "127.0.0.1", **headers: str) -> httpx.Client:
    """An HTTP client whose connections come from ``address`` (any 127.0.0.0/8 one)."""
    return httpx.Client(
        base_url=url + "/api/v1",
        timeout=60,
        headers=headers,
        transport=httpx.HTTPTransport(local_address=address),
    )


def register(url: str, prefix: str = "user", **headers: str) -> str:
    email = f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"
    with client_from(url, **headers) as http:
        r = http.post("/auth/register", json={"email": email, "password": PASSWORD})
        assert r.status_code == 201, r.text
    return email


def login(url: str, email: str, **headers: str) -> dict[str, Any]:
    with client_from(url, **headers) as http:
        r = http.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return dict(r.json())


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"authorization": f"Bearer {tokens['access_token']}"}


def problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The problem+json body of ``r``, which must be ``status`` with ``code``."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["code"] == code, body
    return body

"""Identity: registration, login, rotating refresh tokens, logout, JWKS, and tokens
that are tampered with, expired, or meant for another audience."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.facade import PASSWORD, Facade


def problem(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == code and body["type"].endswith("/" + code)
    return body


def test_register_login_me_and_problem_details(facade: Facade) -> None:
    ann = facade.user("ann")
    me = facade.call("GET", "/auth/me", ann).json()
    assert me["email"] == ann.email and me["organizations"] == []
    problem(
        facade.call("POST", "/auth/register", json={"email": ann.email, "password": PASSWORD}),
        409,
        "email-taken",
    )
    short = problem(
        facade.call("POST", "/auth/register", json={"email": "x@example.com", "password": "short"}),
        422,
        "invalid-request",
    )
    assert short["errors"][0]["field"] == "body.password"
    problem(
        facade.call(
            "POST", "/auth/login", json={"email": ann.email, "password": "wrong password!"}
        ),
        401,
        "invalid-credentials",
    )
    problem(facade.call("GET", "/auth/me"), 401, "unauthorized")


def test_refresh_rotates_and_a_replayed_token_revokes_the_login(facade: Facade) -> None:
    ann = facade.user("ann")
    first = ann.tokens["refresh_token"]
    r = facade.call("POST", "/auth/refresh", json={"refresh_token": first})
    assert r.status_code == 200
    second = r.json()["refresh_token"]
    assert second != first
    assert (
        facade.call(
            "GET", "/auth/me", headers={"authorization": f"Bearer {r.json()['access_token']}"}
        ).status_code
        == 200
    )
    # The spent token again: stolen or replayed. The whole login is revoked.
    problem(
        facade.call("POST", "/auth/refresh", json={"refresh_token": first}), 401, "token-reused"
    )
    problem(
        facade.call("POST", "/auth/refresh", json={"refresh_token": second}), 401, "token-reused"
    )


def test_logout_revokes_the_refresh_token(facade: Facade) -> None:
    ann = facade.user("ann")
    token = ann.tokens["refresh_token"]
    assert facade.call("POST", "/auth/logout", json={"refresh_token": token}).status_code == 204
    assert facade.call("POST", "/auth/refresh", json={"refresh_token": token}).status_code == 401


def _forge(claims: dict[str, Any], key: Any, kid: str, alg: str = "RS256") -> str:
    return jwt.encode(claims, key, alg, headers={"kid": kid})


def test_tampered_expired_and_foreign_tokens_are_refused(facade: Facade) -> None:
    ann = facade.user("ann")
    token = ann.tokens["access_token"]
    jwks = facade.client.get("/.well-known/jwks.json").json()
    kid = jwks["keys"][0]["kid"]
    assert jwks["keys"][0]["kty"] == "RSA" and jwks["keys"][0]["alg"] == "RS256"
    claims = jwt.decode(token, options={"verify_signature": False})

    def refused(bad: str) -> str:
        body = problem(
            facade.call("GET", "/auth/me", headers={"authorization": f"Bearer {bad}"}),
            401,
            "unauthorized",
        )
        return str(body["detail"])

    # alg "none": an unsigned token naming our key
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "kid": kid}).encode()).rstrip(b"=")
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    refused(f"{header.decode()}.{payload.decode()}.")
    # signed with someone else's key under our kid
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused(_forge(claims, stranger, kid))
    # a payload edited after signing (another user)
    head, _, sig = token.split(".")
    edited = base64.urlsafe_b64encode(json.dumps({**claims, "sub": "someone"}).encode()).rstrip(
        b"="
    )
    refused(f"{head}.{edited.decode()}.{sig}")
    # HMAC with the public key as secret (the classic RS/HS confusion)
    refused(_forge(claims, "not-a-secret-but-long-enough-for-hmac-sha256", kid, "HS256"))
    now = datetime.now(UTC)
    private = facade.client.app.state.kaizen.keys  # our own key, to isolate each claim
    expired = {**claims, "iat": now - timedelta(hours=2), "exp": now - timedelta(hours=1)}
    assert "expired" in refused(private.sign(expired)).lower()
    assert "audience" in refused(private.sign({**claims, "aud": "someone-else"})).lower()
    assert "issuer" in refused(private.sign({**claims, "iss": "evil"})).lower()
    refresh_as_access = ann.tokens["refresh_token"]
    assert "not an access token" in refused(refresh_as_access)

"""Hostile input against the REST facade (in process, on SQLite and on PostgreSQL):
oversized and chunked bodies, malformed and wrongly typed JSON, deep nesting, huge
headers and URLs, password brute force and API-key guessing. Nothing is answered 5xx;
the limits answer problem+json with the documented codes; failed authentications are
throttled with Retry-After, even for the right credentials, and still audited.

(Tampered, unsigned, foreign-key, expired and wrong-audience JWTs are covered by
tests/integration/facade/test_auth.py.)"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

from kaizen_api.server.models import AuditRecord
from kaizen_api.server.throttle import AuthThrottle
from tests.reliability.figures import Figures
from tests.support.facade import API, PASSWORD, Facade, agent, rate_hit_rows
from tests.support.kube import eventually

LIMIT = 1_048_576  # Settings.max_body_bytes
FAILURES = 10  # Settings.auth_failure_limit
JSON = {"content-type": "application/json"}


def problem(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["code"] == code and body["status"] == status
    return body


def audited(facade: Facade, path: str) -> list[AuditRecord]:
    """The audit records of requests to ``path`` (under /api/v1), oldest first."""
    with Session(facade.client.app.state.kaizen.engine) as db:
        query = select(AuditRecord).where(AuditRecord.resource == API + path)
        return list(db.exec(query.order_by(col(AuditRecord.id))))


def from_address(facade: Facade, address: str) -> TestClient:
    """Another client of the same running facade, seen from ``address``."""
    return TestClient(facade.client.app, client=(address, 40000))


class Hostile:
    """Counts hostile requests and every 5xx answer among them."""

    def __init__(self) -> None:
        self.sent = 0
        self.server_errors: list[str] = []

    def __call__(self, r: Any) -> Any:
        self.sent += 1
        if r.status_code >= 500:
            self.server_errors.append(f"{r.request.method} {r.request.url.path[:80]}: {r.text}")
        return r


# ------------------------------------------------------------------ bodies


def test_oversized_bodies_are_refused_without_being_read(facade: Facade, figures: Figures) -> None:
    hostile = Hostile()
    big = hostile(
        facade.call(
            "POST",
            "/auth/register",
            json={"email": "big@example.com", "password": "x" * (2 * LIMIT)},
        )
    )
    body = problem(big, 413, "request-too-large")
    assert str(LIMIT) in body["detail"] and big.headers["x-request-id"]

    def chunks() -> Iterator[bytes]:
        yield b'{"email": "chunked@example.com", "password": "'
        for _ in range(40):  # 2.5 MiB, sent without a Content-Length
            yield b"y" * 65536
        yield b'"}'

    chunked = hostile(facade.call("POST", "/auth/register", content=chunks(), headers=JSON))
    assert chunked.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in chunked.request.headers
    problem(chunked, 413, "request-too-large")

    # A body of exactly the limit is read (and refused for what it says, not its size).
    head = json.dumps({"email": "edge@example.com", "password": "p" * 300})
    edge = hostile(
        facade.call(
            "POST", "/auth/register", content=head + " " * (LIMIT - len(head)), headers=JSON
        )
    )
    assert len(edge.request.content) == LIMIT
    problem(edge, 422, "invalid-request")

    # The refused requests are audited like any other mutation.
    def outcomes() -> list[int] | None:
        found = [r.outcome for r in audited(facade, "/auth/register")]
        return found if len(found) >= 3 else None

    assert sorted(eventually(outcomes, timeout=10, what="audit records")) == [413, 413, 422]
    assert not hostile.server_errors
    figures.record("oversized bodies refused 413", 2)


def test_a_streamed_body_is_cut_at_the_limit(facade: Facade, figures: Figures) -> None:
    """Driven at the ASGI level so that the body really arrives in chunks: the facade
    stops reading one chunk past the limit and answers 413 (nothing is buffered whole)."""
    chunk, offered = 65536, 160  # 10 MiB offered
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"z" * chunk, "more_body": pulled < offered}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"{API}/auth/register",
        "raw_path": f"{API}/auth/register".encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
        "client": ("198.51.100.9", 5000),
        "server": ("testserver", 80),
        "state": {},
    }

    async def drive() -> None:
        await facade.client.app(scope, receive, send)

    facade.client.portal.call(drive)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    assert (b"content-type", b"application/problem+json") in start["headers"]
    assert pulled <= LIMIT // chunk + 1, f"read {pulled} chunks of {offered}"
    figures.record("chunks read of a 10 MiB streamed body", pulled)


def test_malformed_and_wrongly_typed_json_is_422(facade: Facade, figures: Figures) -> None:
    hostile = Hostile()
    malformed = [
        b'{"email": "a@example.com", "password": ',
        b"{'email': 'single quotes'}",
        b'{"email": "a@example.com"} trailing',
        b"\xff\xfe not utf-8",
        b"NaN",
        b"",
    ]
    for raw in malformed:
        r = hostile(facade.call("POST", "/auth/login", content=raw, headers=JSON))
        problem(r, 422, "invalid-request")
    wrong_types: list[Any] = [
        {"email": 123, "password": PASSWORD},
        {"email": ["a@example.com"], "password": PASSWORD},
        {"email": "a@example.com", "password": {"$ne": None}},
        {"email": "a@example.com", "password": None},
        {"email": "a@example.com", "password": PASSWORD, "admin": True},
        [],
        "a string",
        12345,
        None,
    ]
    for body in wrong_types:
        r = hostile(facade.call("POST", "/auth/login", json=body))
        errors = problem(r, 422, "invalid-request")["errors"]
        assert errors and all(e["field"].startswith("body") for e in errors), errors
    owner = facade.user("owner")
    org = facade.org(owner)
    typed = hostile(
        facade.call(
            "POST", f"/orgs/{org}/workspaces", owner, json={"name": ["ml"], "quota": "lots"}
        )
    )
    problem(typed, 422, "invalid-request")
    assert not hostile.server_errors
    figures.record("malformed or wrongly typed bodies answered 422", hostile.sent)


def test_deep_nesting_huge_headers_and_urls_never_5xx(facade: Facade, figures: Figures) -> None:
    hostile = Hostile()
    owner = facade.user("owner")
    org = facade.org(owner)
    facade.workspace(owner, org, "ml")
    agents = f"/orgs/{org}/workspaces/ml/agents"

    for depth in (64, 1_000, 100_000):
        arrays = "[" * depth + "]" * depth
        objects = '{"a":' * depth + "1" + "}" * depth
        for raw in (arrays, objects):
            r = hostile(facade.call("POST", "/auth/login", content=raw, headers=JSON))
            assert 400 <= r.status_code < 500, r.text
            r = hostile(facade.call("POST", agents, owner, content=raw, headers=JSON))
            assert 400 <= r.status_code < 500, r.text
    # Deep but well-formed JSON inside a valid Agent: stored up to 100 levels, 422 past
    # that (else it could not be read back), 400 when too deep to parse.
    for depth, status in ((20, 201), (60, 422), (450, 422), (2_000, 400)):
        tool = {"name": "t", "description": "d", "parameters": "PARAMETERS"}
        body = agent(f"deep{depth}")
        body["spec"]["tools"] = [tool]
        nested = '{"type":"object","properties":{"x":' * depth + "{}" + "}}" * depth
        raw = json.dumps(body).replace('"PARAMETERS"', nested)
        r = hostile(facade.call("POST", agents, owner, content=raw, headers=JSON))
        assert r.status_code == status, r.text
    # Nothing stored is too deep to be read back.
    assert facade.call("GET", agents, owner).status_code == 200

    huge = "h" * 64_000
    hostile(facade.call("GET", "/auth/me", owner, headers={"x-filler": huge}))
    hostile(facade.call("GET", "/auth/me", owner, headers={f"x-h{i}": "v" for i in range(2000)}))
    hostile(facade.call("GET", "/auth/me", owner, headers={"x-request-id": huge}))
    hostile(facade.call("GET", "/" + "p" * 60_000))  # httpx allows 64 KiB URLs
    hostile(facade.call("GET", f"/orgs/{org}/workspaces/{'w' * 50_000}", owner))
    hostile(facade.call("GET", agents, owner, params={"labelSelector": "a=" + "b" * 60_000}))
    hostile(facade.call("GET", agents, owner, params={f"q{i}": "v" for i in range(5_000)}))
    hostile(facade.call("GET", f"{agents}/%00%ff%2e%2e%2f..%2F", owner))
    hostile(facade.call("POST", "/auth/login", json={"email": "a@" + "e" * 400 + ".com"}))
    # Huge and absurd credentials (each a failed authentication: counted, then 429).
    for auth in (
        "Bearer " + huge,
        "Bearer ksk_" + "_" * 5000,
        "Bearer " + "a.b.c" * 10_000,
        "Basic " + huge,
        "Bearer",
        "Bearer \x00",
    ):
        hostile(facade.call("GET", "/auth/me", headers={"authorization": auth}))

    assert not hostile.server_errors, "\n".join(hostile.server_errors)
    figures.record("hostile requests (nesting, headers, URLs)", hostile.sent)
    figures.record("hostile requests answered 5xx", len(hostile.server_errors))


# ------------------------------------------------------------------ brute force


def test_password_brute_force_is_throttled_even_for_the_right_password(
    facade: Facade, figures: Figures
) -> None:
    ann, bob = facade.user("ann"), facade.user("bob")
    attacker = from_address(facade, "203.0.113.66")
    tries = 0

    def login(http: TestClient, email: str, password: str) -> Any:
        nonlocal tries
        tries += 1
        return http.post(f"{API}/auth/login", json={"email": email, "password": password})

    for n in range(FAILURES):
        problem(
            login(attacker, ann.email, f"guess-{n}-{secrets.token_hex(4)}"),
            401,
            "invalid-credentials",
        )
    throttled = problem(login(attacker, ann.email, "one more guess"), 429, "too-many-failures")
    retry = int(throttled["detail"].rsplit("retry in ", 1)[1].rstrip("s"))
    assert 0 < int(login(attacker, ann.email, "x").headers["retry-after"]) <= 300
    assert 0 < retry <= 300
    # The right password is refused too while the window lasts, from the attacker's
    # address. The account's owner, from an address that did not guess, still logs in
    # (a guesser must not lock the owner out); a guesser rotating addresses gets one
    # guess per address on the account past its limit.
    problem(login(attacker, ann.email, PASSWORD), 429, "too-many-failures")
    assert login(from_address(facade, "198.51.100.1"), ann.email, PASSWORD).status_code == 200
    rotated = from_address(facade, "198.51.100.9")
    problem(login(rotated, ann.email, "rotated guess"), 401, "invalid-credentials")
    problem(login(rotated, ann.email, PASSWORD), 429, "too-many-failures")
    # The attacker's address is throttled for every account (password spraying) ...
    problem(login(attacker, bob.email, PASSWORD), 429, "too-many-failures")
    # ... while other clients and accounts are not, and their success resets nothing.
    assert login(facade.client, bob.email, PASSWORD).status_code == 200
    assert login(from_address(facade, "198.51.100.2"), bob.email, PASSWORD).status_code == 200
    problem(login(attacker, ann.email, PASSWORD), 429, "too-many-failures")

    # Every attempt, refused or throttled, is in the audit trail with the account tried.
    def records() -> list[AuditRecord] | None:
        found = [r for r in audited(facade, "/auth/login") if r.actor == ann.email]
        return found if len(found) >= FAILURES + 7 else None

    outcomes = [r.outcome for r in eventually(records, timeout=10, what="audit records")]
    assert outcomes.count(401) == FAILURES + 1 and outcomes.count(429) >= 5
    assert {r.ip for r in records() or []} >= {"203.0.113.66", "198.51.100.1"}

    # Once the window has passed, the right password works again (here: 3 per 6 s, long
    # enough for three password hashes on a busy machine).
    state = facade.client.app.state.kaizen
    state.auth_throttle = AuthThrottle(state.engine, 3, 6.0)
    carl = facade.user("carl")
    for _ in range(3):
        login(attacker, carl.email, "wrong password!")
    blocked = login(attacker, carl.email, PASSWORD)
    problem(blocked, 429, "too-many-failures")
    assert 1 <= int(blocked.headers["retry-after"]) <= 6
    time.sleep(int(blocked.headers["retry-after"]) + 0.1)
    assert login(attacker, carl.email, PASSWORD).status_code == 200
    figures.record("login attempts sent", tries)
    figures.record("failed logins allowed before throttling", FAILURES)


def test_api_key_guessing_is_throttled(facade: Facade, figures: Figures) -> None:
    owner = facade.user("owner")
    org = facade.org(owner)
    facade.workspace(owner, org, "ml")
    created = facade.call(
        "POST", f"/orgs/{org}/keys", owner, json={"name": "ci", "permissions": ["agents:*"]}
    )
    assert created.status_code == 201, created.text
    real_key = created.json()["key"]
    prefix = created.json()["prefix"]
    guesser = from_address(facade, "203.0.113.99")
    path = f"{API}/orgs/{org}/workspaces/ml/agents"
    guesses = 0

    def guess(token: str) -> Any:
        nonlocal guesses
        guesses += 1
        return guesser.get(path, headers={"authorization": f"Bearer {token}"})

    for n in range(FAILURES):
        # random keys, and the real key's prefix with a random secret
        token = f"ksk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
        if n % 2:
            token = f"ksk_{prefix}_{secrets.token_urlsafe(32)}"
        problem(guess(token), 401, "unauthorized")
    throttled = problem(guess(f"ksk_{secrets.token_hex(6)}_x"), 429, "too-many-failures")
    assert throttled and 0 < int(guess("ksk_a_b").headers["retry-after"]) <= 300
    # A right guess from the throttled address is refused too (else a 200 among 429s
    # would tell the guesser it found a key) ...
    problem(guess(real_key), 429, "too-many-failures")
    problem(guess(facade.user("eve").tokens["access_token"]), 429, "too-many-failures")
    # ... but the key works from everywhere else.
    ok = facade.client.get(path, headers={"authorization": f"Bearer {real_key}"})
    assert ok.status_code == 200, ok.text

    # Genuine but stale credentials (expired tokens) are not guesses: refreshing
    # clients behind one address are not locked out.
    state = facade.client.app.state.kaizen
    claims = jwt.decode(owner.tokens["access_token"], options={"verify_signature": False})
    now = datetime.now(UTC)
    expired = state.keys.sign(
        {**claims, "iat": now - timedelta(hours=2), "exp": now - timedelta(hours=1)}
    )
    office = from_address(facade, "192.0.2.10")
    for _ in range(FAILURES * 2):
        r = office.get(f"{API}/auth/me", headers={"authorization": f"Bearer {expired}"})
        assert "expired" in problem(r, 401, "unauthorized")["detail"].lower()
    assert office.get(f"{API}/auth/me", headers=owner.headers).status_code == 200
    figures.record("API-key guesses sent", guesses)
    figures.record("API-key guesses allowed before throttling", FAILURES)


def test_throttle_state_is_bounded(database_url: str) -> None:
    """Each failure key is client-chosen (an address, an email): the rows of idle keys
    are deleted once past the window, so a stream of distinct ones cannot grow the
    database without bound."""
    from kaizen_api.server.db import engine_for, migrate
    from kaizen_api.server.ratelimit import PRUNE_EVERY, SlidingWindow

    engine = engine_for(database_url)
    migrate(engine)
    window = SlidingWindow(engine, "auth-failure", 3, 1.0)
    try:
        # 3,000 distinct keys over 60 s of the limiter's clock: the prune at 30 s drops
        # the first half, and nothing that is still in the window.
        for n in range(3_000):
            window.hit(f"login-account:{uuid.uuid4().hex}@example.com", now=1000 + n * 0.02)
        assert 1_450 <= rate_hit_rows(engine, "auth-failure") <= 1_550
        window.hit("login-account:last@example.com", now=1002 + 2 * PRUNE_EVERY)
        assert rate_hit_rows(engine, "auth-failure") == 1
        assert window.wait("never-seen", now=1002 + 2 * PRUNE_EVERY) == 0
    finally:
        engine.dispose()

"""schemathesis' stateful run against a live facade: sequences of calls that follow the
OpenAPI links of the served document (an organization's workspace -> its resources;
create an agent -> read it, replace it with its ETag, delete it; create a key -> revoke
it), as a logged-in organization owner. No answer is a 5xx, and every answer matches
the document (status code, content type, headers, body schema) and the stateful
checks (a created object can be read, a deleted one is gone)."""

from __future__ import annotations

import itertools
import json
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from kubernetes import client
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.reliability.figures import Figures, pick
from tests.support.live_server import Server, live_facade

pytestmark = pytest.mark.timeout(600)
KINDS_WITH_BODIES = {
    # The create body is a free-form object in the document (each kind validates its
    # own), so random bodies are nearly always refused: two creates in three send a
    # valid one, so the links from a created object are followed too.
    "agents": {"spec": {"model": {"provider": "mock", "name": "echo"}, "systemPrompt": "Hi."}},
    "gateways": {"spec": {"environment": "dev", "agents": {"names": ["a"]}}},
}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.fixture
def server(facade_cluster: Path, api_client: client.ApiClient, tmp_path: Path) -> Iterator[Server]:
    """A facade of this test: enterprise plan, so no agent quota fills up over the run
    (an answer that changes with history makes Hypothesis' replays inconsistent)."""
    env = {"KAIZEN_AUTH_FAILURE_LIMIT": "1000000", "KAIZEN_USER_RATE_LIMIT": "1000000"}
    with live_facade(
        facade_cluster, api_client, tmp_path, env=env, plan="enterprise", prefix="stateful"
    ) as handle:
        yield handle


def unique(value: Any, limit: int, tag: str) -> Any:
    """A valid generated name made unique (the same generated input twice — Hypothesis
    replays prefixes — must not answer 201 once and 409 the next time)."""
    if not isinstance(value, str) or not DNS_LABEL.match(value) or len(value) > limit:
        return value  # invalid on purpose: the 422 is the same every time
    return value[: limit - len(tag)].rstrip("-") + tag


def test_stateful_sequences_get_documented_answers(server: Server, figures: Figures) -> None:
    # Only the document's own links: the links schemathesis infers also join a create to
    # calls whose 404 is about a body reference (an unknown team or e-mail), which its
    # "created resource not found" check then misreads.
    config = SchemathesisConfig.from_dict(
        {"phases": {"stateful": {"inference": {"algorithms": []}}}}
    )
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config)
    links = sum(
        len(answer.get("links", {}))
        for item in schema.raw_schema["paths"].values()
        for op in item.values()
        if isinstance(op, dict)
        for answer in op.get("responses", {}).values()
    )
    assert links >= 15, "the document has lost its links"
    # The lifecycles the links describe: organizations -> workspaces -> resources, and
    # API keys (tests/integration/facade/test_live_server.py fuzzes every operation).
    schema = schema.include(path_regex=r"^/api/v1/orgs(/\{org\}(/workspaces.*|/keys.*)?)?$")
    calls: list[tuple[str, int]] = []
    orgs = {server.org}
    workspaces = {(server.org, "ml")}
    counter = itertools.count()

    class Facade(schema.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Any) -> None:
            params = case.path_parameters or {}
            tag = f"x{next(counter)}"
            # Random organization names only ever answer 404: aim at ours instead.
            if "org" in params and params["org"] not in orgs:
                params["org"] = server.org
            if "ws" in params and (params["org"], params["ws"]) not in workspaces:
                # a random workspace: "ml" to read and write in, absent to delete
                params["ws"] = "gone" if case.method == "DELETE" else "ml"
            body = case.body if isinstance(case.body, dict) else {}
            if case.method == "POST" and case.path == "/api/v1/orgs" and "slug" in body:
                body["slug"] = unique(body["slug"], 20, tag)
            if case.method == "POST" and case.path.endswith("/workspaces") and "name" in body:
                body["name"] = unique(body["name"], 30, tag)
            kind = params.get("kind")
            if case.method == "POST" and case.path.endswith("/{kind}") and kind:
                # which creates get a valid body: decided by the generated input alone,
                # so the same input is the same request each time Hypothesis sends it
                drawn = zlib.crc32(json.dumps(case.body, sort_keys=True, default=str).encode())
                if kind in KINDS_WITH_BODIES and drawn % 3:
                    case.body = {"metadata": {"name": f"st{tag}"}, **KINDS_WITH_BODIES[kind]}
                elif isinstance(body.get("metadata"), dict) and "name" in body["metadata"]:
                    body["metadata"]["name"] = unique(body["metadata"]["name"], 63, tag)

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": dict(server.headers), "timeout": 60}

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            calls.append((f"{case.method} {case.path}", response.status_code))
            if response.status_code == 201 and case.path == "/api/v1/orgs":
                orgs.add(response.json()["slug"])
            if response.status_code == 201 and case.path.endswith("/orgs/{org}/workspaces"):
                workspaces.add((case.path_parameters["org"], response.json()["name"]))

        def validate_response(
            self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any
        ) -> None:
            # Every check but "schema-valid data is accepted": cross-field rules (CEL
            # rules of the kinds) cannot be said in JSON Schema, so a 422 can be right.
            case.validate_response(
                response,
                additional_checks=additional_checks,
                excluded_checks=[positive_data_acceptance],
                transport_kwargs=kwargs or None,
                recorder=self.recorder,
            )

    Facade.run(
        settings=settings(
            max_examples=pick(15, 100),
            stateful_step_count=pick(10, 25),
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
            # no shrinking: replaying against a server whose state moved on is not a
            # replay; a failure is reported as found, with schemathesis' curl line
            phases=[Phase.explicit, Phase.generate],
        )
    )
    server_errors = [c for c in calls if c[1] >= 500]
    assert not server_errors, server_errors
    figures.record("calls", len(calls))
    figures.record("operations called", len({c[0] for c in calls}))
    figures.record("links in the document", links)
    figures.record("created (201)", sum(c[1] == 201 for c in calls))
    figures.record(
        "created objects read, replaced or deleted (2xx)",
        sum(c[0].endswith("/{kind}/{name}") and c[1] < 300 for c in calls),
    )
    assert len(calls) > 0


def test_an_if_match_that_is_no_version_is_a_conflict(server: Server) -> None:
    """Found by the stateful run: an If-Match that is not a resourceVersion reached the
    apiserver, which failed parsing it (a 500, answered 502). Now a 409, like any stale
    precondition."""
    ws = f"{server.api}/orgs/{server.org}/workspaces/ml/agents"
    body = {
        "metadata": {"name": "etag"},
        "spec": {"model": {"provider": "mock", "name": "echo"}, "systemPrompt": "Hi."},
    }
    with httpx.Client(headers=server.headers, timeout=30) as http:
        assert http.post(ws, json=body).status_code == 201
        for method, kw in (("PUT", {"json": body}), ("DELETE", {})):
            for etag in ('"sw#-"', "W/1", "\uff11\uff12".encode()):
                answer = http.request(method, f"{ws}/etag", headers={"if-match": etag}, **kw)
                assert answer.status_code == 409, (method, etag, answer.text)
                assert answer.json()["code"] == "conflict"
        stale = http.put(f"{ws}/etag", json=body, headers={"if-match": '"1"'})
        assert stale.status_code == 409
        assert http.get(f"{ws}/etag").status_code == 200

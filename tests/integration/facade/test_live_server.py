"""A real `kaizen-api` process: schemathesis against its served OpenAPI document
(generated requests as an authenticated org owner never get a 5xx, and every response
matches the documented status codes and schemas), and the README's Python example."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.support.facade import PASSWORD
from tests.support.live_server import Server, module_server  # noqa: F401 - fixture `server`


def test_generated_requests_get_documented_answers(server: Server) -> None:
    """Every operation of the document, a dozen generated requests each (derandomized, so
    a failure is reproducible); failures are collected and reported together."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        def run(case: Any) -> None:
            if case.path_parameters and "org" in case.path_parameters:
                case.path_parameters["org"] = server.org  # reach past the tenant check
            # Every check but "schema-valid data is accepted": cross-field rules (Pin needs
            # replicas, CEL rules of the kinds) cannot be said in JSON Schema, so a 422
            # for such a body is right.
            case.call_and_validate(
                headers=server.headers, excluded_checks=[positive_data_acceptance]
            )

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failure
            failures.append(f"{operation.label}: {str(exc)[:600]}")
    assert operations >= 30
    assert not failures, "\n\n".join(failures)


def test_the_readme_python_example_runs(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme.split("## Using the REST facade from Python", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    slug = f"r{uuid.uuid4().hex[:8]}"
    code = (
        code.replace("http://127.0.0.1:18000", server.url)
        .replace("jane@example.com", f"{slug}@example.com")
        .replace('"acme"', f'"{slug}"')
        .replace("/orgs/acme/", f"/orgs/{slug}/")
    )
    exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - our own README
    printed = capsys.readouterr().out.split()
    assert printed[0] == "201" and printed[1].startswith("ksk_")


def test_the_cli_through_the_facade(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from kaizen_api.cli import commands, pipelines  # noqa: F401 - registers the commands
    from kaizen_api.cli.__main__ import app

    monkeypatch.setenv("KAIZEN_CREDENTIALS", str(tmp_path / "credentials.json"))
    runner = CliRunner()
    email = f"cli-{uuid.uuid4().hex[:6]}@example.com"
    with httpx.Client(base_url=server.url + "/api/v1") as http:
        http.post("/auth/register", json={"email": email, "password": PASSWORD}).raise_for_status()
        token = http.post("/auth/login", json={"email": email, "password": PASSWORD}).json()
        headers = {"authorization": f"Bearer {token['access_token']}"}
        slug = f"c{uuid.uuid4().hex[:8]}"
        http.post("/orgs", json={"slug": slug, "name": slug}, headers=headers).raise_for_status()
        http.post(
            f"/orgs/{slug}/workspaces", json={"name": "ml"}, headers=headers
        ).raise_for_status()

    wrong = runner.invoke(
        app, ["login", "--url", server.url, "--email", email, "--password", "nope nope nope"]
    )
    assert wrong.exit_code == 1 and "login refused (401)" in wrong.output
    logged = runner.invoke(
        app,
        ["login", "--url", server.url, "--email", email, "--org", slug, "--workspace", "ml"],
        input=f"{PASSWORD}\n",
    )
    assert logged.exit_code == 0, logged.output
    saved = tmp_path / "credentials.json"
    assert oct(saved.stat().st_mode & 0o777) == "0o600"

    manifest = tmp_path / "agent.yaml"
    manifest.write_text(
        "kind: Agent\nmetadata: {name: hello}\n"
        "spec: {model: {provider: mock, name: echo}, systemPrompt: Hi.}\n"
    )
    applied = runner.invoke(app, ["agents", "apply", "-f", str(manifest)])
    assert applied.exit_code == 0 and "agent/hello applied" in applied.output, applied.output
    manifest.write_text(manifest.read_text().replace("Hi.", "Hello."))
    updated = runner.invoke(app, ["agents", "apply", "-f", str(manifest)])  # PUT with the version
    assert updated.exit_code == 0, updated.output
    got = runner.invoke(app, ["agents", "get", "hello", "-o", "json"])
    assert '"systemPrompt": "Hello."' in got.output
    listed = runner.invoke(app, ["agents", "list"])
    assert "hello" in listed.output and "mock" in listed.output
    denied = runner.invoke(app, ["--workspace", "elsewhere", "agents", "list"])
    assert denied.exit_code == 1 and "404" in denied.output

    flow = tmp_path / "pipeline.yaml"
    flow.write_text(
        "kind: Pipeline\nmetadata: {name: flow}\n"
        "spec: {pattern: Sequential, steps: [{name: greet, agentRef: {name: hello}}]}\n"
    )
    applied = runner.invoke(app, ["pipelines", "apply", "-f", str(flow)])
    assert applied.exit_code == 0 and "pipeline/flow applied" in applied.output, applied.output
    flow.write_text(flow.read_text().replace("{name: hello}}", "{name: hello, revision: 1}}"))
    updated = runner.invoke(app, ["pipelines", "apply", "-f", str(flow)])
    assert updated.exit_code == 0, updated.output
    got = runner.invoke(app, ["pipelines", "get", "flow", "-o", "json"])
    assert json.loads(got.output)["spec"]["steps"][0]["agentRef"] == {
        "name": "hello",
        "revision": 1,
    }
    listed = runner.invoke(app, ["pipelines", "list"])
    assert "flow" in listed.output and "Sequential" in listed.output
    assert "greet (agent/hello@r1)" in listed.output
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text(
        "kind: Pipeline\nmetadata: {name: bad}\nspec: {pattern: Router, steps: [{name: a, "
        "agentRef: {name: hello}}]}\n"
    )
    refused = runner.invoke(app, ["pipelines", "apply", "-f", str(invalid)])
    assert refused.exit_code == 1 and "422" in refused.output and "Traceback" not in refused.output
    said = " ".join(refused.output.split())  # rich wraps long lines
    assert "(spec: Value error, pattern Router needs the router block)" in said
    no_gateway = runner.invoke(app, ["pipelines", "invoke", "flow", "hi", "--gateway", "nope"])
    assert no_gateway.exit_code == 1 and "404" in no_gateway.output


def test_one_access_log_line_per_request_with_its_request_id(server: Server) -> None:
    """Operators correlate a request's log line with its audit record and problem+json
    answers by the request id; the line names method, path and query, never the token."""
    request_id = f"trace-{uuid.uuid4().hex[:12]}"
    path = f"/api/v1/orgs/{server.org}/workspaces/ml/agents"
    answer = httpx.get(
        server.url + path,
        params={"limit": 5},
        headers={**server.headers, "x-request-id": request_id},
    )
    assert answer.status_code == 200 and answer.headers["x-request-id"] == request_id
    refused = httpx.get(server.url + path)  # no token: 401, still one line
    lines: list[str] = []
    for _ in range(50):  # the line is written as the request ends
        log = server.process.log.read_text()
        lines = [line for line in log.splitlines() if request_id in line]
        if lines and refused.headers["x-request-id"] in log:
            break
        time.sleep(0.1)
    assert len(lines) == 1, lines
    assert f'"GET {path}?limit=5" 200 {request_id}' in lines[0]
    assert server.headers["authorization"].split()[1] not in log
    refused_lines = [line for line in log.splitlines() if refused.headers["x-request-id"] in line]
    assert len(refused_lines) == 1 and f'"GET {path}" 401' in refused_lines[0]
    assert "uvicorn.access" not in log and '" 200 OK' not in log  # not logged twice

    # A decoded %0a in a path cannot start a forged line of its own.
    forged = '10.0.0.9 - "DELETE /api/v1/orgs/acme" 204 forged'
    httpx.get(server.url + "/api/v1/x%0a" + forged.replace(" ", "%20").replace('"', "%22"))
    for _ in range(50):
        log = server.process.log.read_text()
        if "/api/v1/x%0A" in log:
            break
        time.sleep(0.1)
    assert "/api/v1/x%0A10.0.0.9%20-%20%22DELETE" in log
    assert not any(line.startswith(forged) for line in log.splitlines())

"""The container image: hadolint-clean, non-root, base pinned, and its entry points are
exactly the console scripts that rendered Deployments run."""

from __future__ import annotations

import re
import subprocess
import tomllib
from datetime import UTC, datetime

from kaizen_operator.gateway.render import GatewayInputs, render_gateway
from tests.support.manifests import ROOT
from tests.support.objects import agent, gateway

DOCKERFILE = (ROOT / "Dockerfile").read_text()
NOW = datetime(2026, 1, 1, tzinfo=UTC)
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        ["hadolint", "--failure-threshold", "info", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_runtime_stage_is_pinned_slim_and_non_root() -> None:
    stages = re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE)
    python = [s for s in stages if s.startswith("python:")]
    assert len(stages) == 3 and len(python) == 2 and len(set(python)) == 1
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", python[0]), python[0]
    # The console's build stage: a pinned Node.js that Vite supports (>= 20.19).
    assert re.fullmatch(r"node:(20\.(19|[2-9]\d)|2[2-9]\.\d+)\.\d+-bookworm-slim", stages[0])
    runtime = DOCKERFILE.split("\nFROM ")[-1]
    assert runtime.startswith(python[1]), "the runtime stage is the last one"
    assert re.search(r"^USER 65532:65532$", runtime, re.MULTILINE)
    assert "PATH=/opt/kaizen/bin:$PATH" in runtime
    assert 'pip install ".[operator,gateway,api]"' in DOCKERFILE
    # The console is built from its lockfile and served by the facade from the image.
    assert "RUN npm ci" in DOCKERFILE and "COPY --from=console" in runtime
    assert "KAIZEN_CONSOLE_DIR=/opt/kaizen/console" in runtime


def test_every_command_a_deployment_runs_is_an_entry_point_of_the_image() -> None:
    plan = render_gateway(
        GatewayInputs(gateway("dev"), (agent(),), {}, False, None, None, "img:1", NOW)
    )
    deployment = next(c for c in plan.children if c["kind"] == "Deployment")
    commands = {c["command"][0] for c in deployment["spec"]["template"]["spec"]["containers"]}
    assert commands == {"kaizen-gateway"}
    assert {"kaizen-operator", "kaizen-api", "kaizen-gateway"} <= set(SCRIPTS)
    assert commands <= set(SCRIPTS)
    # Each package the scripts live in is copied into the build stage.
    for folder in ("api", "operator", "gateway"):
        assert f"COPY {folder} ./{folder}" in DOCKERFILE
    ignored = (ROOT / ".dockerignore").read_text()
    for kept in ("!pyproject.toml", "!api/", "!operator/", "!gateway/"):
        assert kept in ignored

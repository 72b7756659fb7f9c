"""`kaizen pipelines invoke` against a real gateway process: the output, every step with
--steps, the whole answer with -o json, and clear one-line errors (no traceback) for a
pipeline the gateway does not serve or a gateway that cannot be found."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from kaizen_api.cli import pipelines  # noqa: F401 - registers the commands
from kaizen_api.cli.__main__ import app
from tests.support.agent_gateway import Served, serve
from tests.support.objects import agent

MOCK = ("writer", "editor")


def mock_agents(_stub: str, _tools: str) -> list[dict[str, Any]]:
    """Agents on the mock provider, each with its own model name, so an answer says
    which agent wrote it (``[mock:<model>] <input>``)."""
    return [agent(n, model={"provider": "mock", "name": n}) for n in MOCK]


SEQUENTIAL = {
    "pattern": "Sequential",
    "steps": [
        {"name": "draft", "agentRef": {"name": "writer"}},
        {"name": "polish", "agentRef": {"name": "editor"}, "input": "Edit: {{previous}}"},
    ],
}


def with_pipeline(_stub: str) -> dict[str, Any]:
    """What the operator adds to the bundle for a Gateway serving pipeline ``story``."""
    return {"pipelines": [{"name": "story", "revision": 1, "hash": "story-1", "spec": SEQUENTIAL}]}


def kaizen(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from serve(tmp_path, mock_agents)


def test_invoke_errors_are_one_clear_line(
    served: Served, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = kaizen("pipelines", "invoke", "nope", "hello", "--url", served.url)
    assert missing.exit_code == 1 and "404" in missing.output
    assert "Traceback" not in missing.output
    monkeypatch.delenv("KAIZEN_GATEWAY_URL", raising=False)
    monkeypatch.setenv("KAIZEN_CREDENTIALS", str(tmp_path / "none.json"))
    nowhere = kaizen("pipelines", "invoke", "nope", "hello")
    assert nowhere.exit_code == 1 and "--url" in nowhere.output and "--gateway" in nowhere.output
    unreachable = kaizen("pipelines", "invoke", "x", "hi", "--url", "http://127.0.0.1:9")
    assert unreachable.exit_code == 1 and "cannot reach http://127.0.0.1:9" in unreachable.output


def test_invoke_prints_the_output_and_every_step(tmp_path: Path) -> None:
    with contextmanager(serve)(tmp_path, mock_agents, bundle_extra=with_pipeline) as gw:
        plain = kaizen("pipelines", "invoke", "story", "a fox", "--url", gw.url)
        assert plain.exit_code == 0, plain.output
        assert plain.output.strip() == "[mock:editor] Edit: [mock:writer] a fox"

        detailed = kaizen("pipelines", "invoke", "story", "a fox", "--url", gw.url, "--steps")
        assert detailed.exit_code == 0, detailed.output
        for text in ("draft", "polish", "agent/writer", "agent/editor", "ok"):
            assert text in detailed.output, text
        assert "input:  Edit: [mock:writer] a fox" in detailed.output

        raw = kaizen("pipelines", "invoke", "story", "a fox", "--url", gw.url, "-o", "json")
        answer = json.loads(raw.output)
        assert [s["name"] for s in answer["steps"]] == ["draft", "polish"]
        assert answer["usage"]["total_tokens"] > 0

"""Pipelines under faults, against a real gateway process and the scripted model stub:
a step's agent removed from the bundle while traffic flows, a step that hangs, and the
bundle replaced while a pipeline runs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.support.agent_gateway import Served, bundled_pipeline, serve, stub_model
from tests.support.objects import agent


def step(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "agentRef": {"name": name}, **extra}


PIPELINES = {
    "uses-b": {"pattern": "Sequential", "steps": [step("a"), step("b")]},
    "only-a": {"pattern": "Sequential", "steps": [step("a")]},
    "slow-step": {"pattern": "Sequential", "steps": [step("a"), step("hang", timeout="1s")]},
    "slow-run": {"pattern": "Parallel", "steps": [step("a"), step("hang")], "timeout": "2s"},
    "slow-member": {
        "pattern": "Parallel",
        "steps": [step("a"), step("hang", timeout="1s")],
        "parallel": {"minSuccessful": 1},
    },
}


def agents(stub: str, _tools: str) -> list[dict[str, Any]]:
    return [agent(n, model=stub_model(stub, f"{n}-model")) for n in ("a", "b", "hang")]


def extra(_stub: str) -> dict[str, Any]:
    return {"pipelines": [bundled_pipeline(n, s) for n, s in PIPELINES.items()]}


@pytest.fixture
def served(tmp_path: Any) -> Iterator[Served]:
    yield from serve(tmp_path, agents, bundle_extra=extra)


def invoke(served: Served, name: str, text: str = "go") -> httpx.Response:
    return httpx.post(f"{served.url}/pipelines/{name}/invoke", json={"input": text}, timeout=60)


def test_a_step_agent_removed_mid_traffic_fails_clearly_and_spares_other_pipelines(
    served: Served,
) -> None:
    served.scripts({"a-model": {"always": "A"}, "b-model": {"always": "B"}})
    stop = threading.Event()
    results: dict[str, list[httpx.Response]] = {"uses-b": [], "only-a": []}

    def traffic(name: str) -> None:
        while not stop.is_set():
            results[name].append(invoke(served, name))

    with ThreadPoolExecutor(4) as pool:
        for name in ("uses-b", "only-a", "uses-b", "only-a"):
            pool.submit(traffic, name)
        while len(results["uses-b"]) < 10:
            time.sleep(0.05)
        served.rewrite_bundle(
            lambda bundle: bundle.update(agents=[a for a in bundle["agents"] if a["name"] != "b"])
        )
        after = len(results["uses-b"])
        while len(results["uses-b"]) < after + 10:
            time.sleep(0.05)
        stop.set()
    assert all(r.status_code == 200 for r in results["only-a"]), "a pipeline without b failed"
    statuses = [r.status_code for r in results["uses-b"]]
    assert statuses[0] == 200 and statuses[-1] == 502
    assert set(statuses) == {200, 502}, statuses  # no 500, no dropped connection
    failed = results["uses-b"][-1].json()
    assert failed["error"]["code"] == "step_target_missing"
    assert "step 'b'" in failed["error"]["message"] and "agent 'b'" in failed["error"]["message"]
    assert [s["status"] for s in failed["steps"]] == ["ok", "failed"]
    assert httpx.get(f"{served.url}/healthz", timeout=5).status_code == 200
    ready = httpx.get(f"{served.url}/readyz", timeout=5).json()
    assert ready["unresolvedSteps"] == {"uses-b": ["step 'b': agent 'b' is not in the bundle"]}


def test_a_hanging_step_times_out_by_its_step_and_pipeline_timeouts(served: Served) -> None:
    served.scripts(
        {"a-model": {"always": "A"}, "hang-model": {"always": {"content": "late", "delay": 120}}}
    )
    response = invoke(served, "slow-step")
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["code"] == "deadline_exceeded"
    assert "step 'hang'" in error["message"] and "timeout of 1s" in error["message"]
    assert [s["status"] for s in response.json()["steps"]] == ["ok", "failed"]

    response = invoke(served, "slow-run")
    assert response.status_code == 504
    assert "pipeline 'slow-run'" in response.json()["error"]["message"]
    assert "timeout of 2s" in response.json()["error"]["message"]
    steps = {s["name"]: s["status"] for s in response.json()["steps"]}
    assert steps == {"a": "ok", "hang": "cancelled"}
    # A Parallel step's own timeout fails that step only; minSuccessful 1 still holds.
    response = invoke(served, "slow-member")
    assert response.status_code == 200
    assert response.json()["output"] == "## a\n\nA"
    hang = response.json()["steps"][1]
    assert (hang["status"], hang["code"]) == ("failed", "deadline_exceeded")
    # The gateway still serves: the hung upstream calls were given up.
    assert invoke(served, "only-a").status_code == 200


def test_in_flight_runs_finish_on_the_bundle_they_started_with(served: Served) -> None:
    served.scripts(
        {
            "a-model": [{"content": "slow A", "delay": 2}, "fast A"],
            "b-model": {"always": "old b"},
            "b2-model": {"always": "new b"},
        }
    )
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(invoke, served, "uses-b")
        while not served.model_requests():
            time.sleep(0.02)

        def new_b(bundle: dict[str, Any]) -> None:
            b = next(a for a in bundle["agents"] if a["name"] == "b")
            b.update(revision=2, hash="b-2")
            b["spec"]["model"]["name"] = "b2-model"

        served.rewrite_bundle(new_b)
        old = running.result().json()
    assert old["output"] == "old b"
    assert [s["revision"] for s in old["steps"]] == [1, 1]
    new = invoke(served, "uses-b").json()
    assert new["output"] == "new b"
    assert [s["revision"] for s in new["steps"]] == [1, 2]

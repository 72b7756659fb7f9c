#!/usr/bin/env python3
"""Benchmark: what an organization's access policies (Cedar) add to a facade call.

    python bench/policy_overhead.py [--n 300]

One `kaizen-api` process (uvicorn, SQLite) against the local apiserver; three
organizations in it with 0, 10 and 100 policies (a mix of team, email-domain,
source-range, time-window and key-scope conditions, none of which matches, so every
call is allowed after evaluating all of them), and a fourth with 100 policies of which
one reads labels (which makes the facade read the stored object's labels from the
apiserver before deciding). Two series: the same call repeated (the decision is
remembered), and the same call at another minute each time (test clock: every
decision is evaluated by Cedar). Calls alternate between the organizations call by call,
so a slow moment of the machine slows all of them. GET of one Agent.

Prints p50/p99 of the call and p50 of the facade's own time (Server-Timing total
minus kube), and the p50 delta against 0 policies (target: at most +0.3 ms at 100).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "hack"), str(ROOT)]

import httpx  # noqa: E402

from kaizen_api.server.tenancy import render_cluster_roles  # noqa: E402
from localcluster import cluster  # noqa: E402
from tests.support.kube import install_crds, kubectl  # noqa: E402
from tests.support.processes import free_port, start, wait_http_ok  # noqa: E402

PASSWORD = "benchmark passphrase"  # noqa: S105 - a throwaway local user


def policy(i: int) -> str:
    """One of four kinds of condition, never matching the benchmark's caller."""
    kind = i % 5
    if kind == 0:
        return f'forbid (principal in Kaizen::Team::"team-{i}", action, resource);'
    if kind == 1:
        return (
            "forbid (principal, action, resource) "
            f'when {{ principal.emailDomain == "d{i}.example" }};'
        )
    if kind == 2:
        return (
            'forbid (principal, action in Kaizen::Action::"write", resource) '
            f'when {{ context.sourceIp.isInRange(ip("198.51.{i % 250}.0/24")) }};'
        )
    if kind == 3:
        return (
            "forbid (principal, action, resource) "
            f'when {{ resource.workspace == "w{i}" && '
            "(context.hour < 6 || context.dayOfWeek > 6) };"
        )
    return (
        'forbid (principal, action == Kaizen::Action::"delete", resource) '
        f'when {{ principal.keyScopes.contains("kind{i}:*") }};'
    )


LABEL_POLICY = (
    'forbid (principal, action == Kaizen::Action::"delete", resource) '
    'when { resource.hasTag("tier") && resource.getTag("tier") == "critical" };'
)


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1]


Series = dict[str, list[float]]


def measure(
    api: httpx.Client, orgs: dict[str, str], n: int, *, fresh: bool
) -> tuple[Series, Series]:
    """``n`` GETs per organization, alternating call by call: latency and the
    facade's own time (Server-Timing total minus kube), ms. ``fresh``: each call at
    another minute (the test clock), so no decision is remembered: every one is
    evaluated by Cedar."""
    latency: Series = {side: [] for side in orgs}
    own: Series = {side: [] for side in orgs}
    names = list(orgs)
    for i in range(n):
        for k in range(len(names)):
            side = names[(i + k) % len(names)]
            headers = {}
            if fresh:
                moment = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=i)
                headers["x-kaizen-test-time"] = moment.isoformat()
            started = time.perf_counter()
            response = api.get(f"/orgs/{orgs[side]}/workspaces/ml/agents/a0", headers=headers)
            latency[side].append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise RuntimeError(f"unexpected answer: {response.text}")
            parts = dict(
                item.strip().split(";dur=") for item in response.headers["server-timing"].split(",")
            )
            own[side].append(float(parts["total"]) - float(parts["kube"]))
    return latency, own


def report(title: str, n: int, latency: Series, own: Series) -> None:
    base = statistics.median(latency["0"])
    base_own = statistics.median(own["0"])
    print(f"\nGET {title}, n={n} per side (ms)")
    print(
        f"{'policies':<12} {'p50':>7} {'p99':>7} {'delta p50':>10} {'ratio':>6}   "
        f"{'facade own p50':>14} {'delta':>7}"
    )
    for side in latency:
        p50 = statistics.median(latency[side])
        own50 = statistics.median(own[side])
        print(
            f"{side:<12} {p50:>7.2f} {pct(latency[side], 99):>7.2f} {p50 - base:>+10.2f} "
            f"{p50 / base:>6.2f}   {own50:>14.2f} {own50 - base_own:>+7.2f}"
        )
    delta = statistics.median(latency["100"]) - base
    verdict = "within" if delta <= 0.3 else "OVER"
    print(f"100 policies: {delta:+.2f} ms p50 ({verdict} the +0.3 ms target)")


def print_engine_cost() -> None:
    """Why evaluation costs what it does: cedarpy's decision in this process, by the
    number of policies (no HTTP, no database), median of 500."""
    from kaizen_api.server.policy_engine import (
        Circumstances,
        StoredPolicy,
        Subject,
        Target,
        compile_policies,
        decide,
    )

    subject = Subject(id="u", email="bench@example.com", role="org_owner", workspace_role="admin")
    target = Target(kind="agents", name="a0", workspace="ml")
    context = Circumstances("agents:read", "GET", datetime.now(UTC), "127.0.0.1")
    print("\ncedarpy decision in-process (us, median of 500):", end="")
    for count in (1, 10, 100):
        compiled = compile_policies(
            [StoredPolicy(f"p{i}", policy(i)) for i in range(count)], "restrict", 1
        )
        spent = []
        for _ in range(500):
            started = time.perf_counter()
            decide(compiled, subject, target, context)
            spent.append((time.perf_counter() - started) * 1e6)
        print(f"  {count} policies {statistics.median(spent):.0f}", end="")
    print()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    kubeconfig = cluster.ensure_cluster()
    install_crds(kubeconfig)
    for role in render_cluster_roles():
        kubectl(
            kubeconfig,
            "apply",
            "--server-side",
            "--field-manager=bench",
            "-f",
            "-",
            stdin=json.dumps(role),
        )
    folder = Path(tempfile.mkdtemp(prefix="policy-bench-"))
    port = free_port()
    env = {
        "KUBECONFIG": str(kubeconfig),
        "KAIZEN_DATABASE_URL": f"sqlite:///{folder / 'api.db'}",
        "KAIZEN_USER_RATE_LIMIT": "100000000",
        "KAIZEN_SELF_SERVICE_PLANS": "free,enterprise",
        "KAIZEN_POLICY_TEST_CLOCK": "1",  # the evaluated series picks its minute
    }
    proc = start(
        ["kaizen-api", "--host", "127.0.0.1", "--port", str(port)],
        folder / "api.log",
        {**os.environ, **env},
    )
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=30)
    sides = {"0": 0, "10": 10, "100": 100, "100+labels": 100}
    orgs: dict[str, str] = {}
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/healthz", proc)
        email = f"bench-{uuid.uuid4().hex[:6]}@example.com"
        api.post("/auth/register", json={"email": email, "password": PASSWORD}).raise_for_status()
        token = api.post("/auth/login", json={"email": email, "password": PASSWORD}).json()
        api.headers["authorization"] = f"Bearer {token['access_token']}"
        for side, count in sides.items():
            org = f"p{uuid.uuid4().hex[:8]}"
            orgs[side] = org
            api.post(
                "/orgs", json={"slug": org, "name": org, "plan": "enterprise"}
            ).raise_for_status()
            api.post(f"/orgs/{org}/workspaces", json={"name": "ml"}).raise_for_status()
            body = {
                "metadata": {"name": "a0"},
                "spec": {"model": {"provider": "mock", "name": "echo"}, "systemPrompt": "Hi."},
            }
            api.post(f"/orgs/{org}/workspaces/ml/agents", json=body).raise_for_status()
            texts = [policy(i) for i in range(count)]
            if side.endswith("labels"):
                texts[-1] = LABEL_POLICY
            for i, text in enumerate(texts):
                api.put(f"/orgs/{org}/policies/p{i}", json={"cedar": text}).raise_for_status()
        names = list(sides)
        for _ in range(30):  # warm: compiled sets cached, connections open
            for side in names:
                api.get(f"/orgs/{orgs[side]}/workspaces/ml/agents/a0").raise_for_status()
        results = {
            "one Agent (decision remembered)": measure(api, orgs, args.n, fresh=False),
            "one Agent, each call another minute (evaluated)": measure(
                api, orgs, args.n, fresh=True
            ),
        }
    finally:
        proc.stop()
    for title, (latency, own) in results.items():
        report(title, args.n, latency, own)
    print_engine_cost()
    print(
        "\n100+labels: a policy reading labels makes the facade GET the stored object from "
        "the apiserver first (one extra apiserver round trip per named-object request)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reading gateway /metrics pages: counts, quantiles, counter resets and windows; and
the metric gates' verdicts built on them."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from kaizen_api.v1alpha1.promotion import MetricGate
from kaizen_operator.gatewaymetrics import Counts, ScrapeHistory, Window, parse_counts
from kaizen_operator.promotion.gates import evaluate_metric_gates


def page(calls: list[tuple[str, str, str, float]]) -> str:
    """A /metrics page shaped like the gateway's: (agent, revision, status, seconds)."""
    registry = CollectorRegistry()
    requests = Counter(
        "kaizen_gateway_requests_total", "", ["agent", "revision", "status"], registry=registry
    )
    latency = Histogram(
        "kaizen_gateway_request_duration_seconds",
        "",
        ["agent", "revision"],
        registry=registry,
        buckets=(0.01, 0.1, 1),
    )
    for agent, revision, status, seconds in calls:
        requests.labels(agent, revision, status).inc()
        latency.labels(agent, revision).observe(seconds)
    return generate_latest(registry).decode()


def test_counts_filter_by_agent_and_revision_and_count_5xx_as_errors() -> None:
    text = page(
        [("hello", "2", "200", 0.05)] * 8
        + [("hello", "2", "502", 0.5), ("hello", "2", "429", 0.001)]
        + [("hello", "1", "500", 0.05), ("other", "2", "500", 0.05)]
    )
    counts = parse_counts(text, "hello", "2")
    assert (counts.requests, counts.errors) == (10, 1)
    assert counts.error_rate_percent() == 10.0
    assert counts.buckets[0.1] == 9 and counts.buckets[float("inf")] == 10
    assert parse_counts(text).requests == 12


def test_latency_quantile_interpolates_inside_the_bucket_like_prometheus() -> None:
    # 100 requests: 50 under 10 ms, 50 between 10 and 100 ms.
    counts = Counts(100, 0, {0.01: 50, 0.1: 100, 1.0: 100, float("inf"): 100})
    assert counts.latency_quantile_ms(0.5) == pytest.approx(10.0)
    assert counts.latency_quantile_ms(0.95) == pytest.approx(91.0)
    beyond = Counts(10, 0, {0.01: 0, 1.0: 5, float("inf"): 10})
    assert beyond.latency_quantile_ms(0.95) == pytest.approx(1000.0)  # the last finite bound
    assert Counts().latency_quantile_ms(0.95) is None
    assert Counts().error_rate_percent() is None


def test_since_subtracts_and_treats_a_lower_counter_as_a_restart() -> None:
    old = Counts(10, 1, {0.1: 10, float("inf"): 10})
    new = Counts(15, 3, {0.1: 12, float("inf"): 15})
    assert new.since(old) == Counts(5, 2, {0.1: 2, float("inf"): 5})
    restarted = Counts(4, 0, {0.1: 4, float("inf"): 4})
    assert restarted.since(old) == restarted


def test_window_needs_two_scrapes_and_ignores_pods_missing_from_the_older_one() -> None:
    history = ScrapeHistory(keep=60)
    history.record("gw", 100.0, {"a": Counts(10), "b": Counts(50)})
    assert history.window("gw", 30) is None
    history.record("gw", 110.0, {"a": Counts(30), "b": Counts(70), "new": Counts(1000)})
    window = history.window("gw", 30)
    assert window is not None and window.seconds == 10 and window.counts.requests == 40
    assert window.per_second() == 4
    assert history.window("gw", 30, min_seconds=20) is None
    assert history.latest("gw") == Counts(1100)
    history.record("gw", 200.0, {"a": Counts(40)})  # older scrapes fall out after keep
    assert history.window("gw", 300) is None


def gates(*specs: dict[str, object]) -> list[MetricGate]:
    return [MetricGate.model_validate(s) for s in specs]


def test_metric_gate_verdicts() -> None:
    healthy = Counts(100, 0, {0.01: 90, 0.1: 100, float("inf"): 100})
    window = Window(10, Counts(50))
    ok = evaluate_metric_gates(
        gates({"metric": "errorRate", "max": 1}, {"metric": "requestsPerSecond", "min": 2}),
        healthy,
        window,
        "r2 on dev",
    )
    assert ok.passed and ok.final
    assert ok.message == "errorRate 0%, requestsPerSecond 5req/s on r2 on dev (100 requests)"

    failing = Counts(100, 5, healthy.buckets)
    too_many = evaluate_metric_gates(gates({"metric": "errorRate", "max": 1}), failing, None, "x")
    assert not too_many.passed and too_many.final
    assert too_many.message == "errorRate 5% on x is above the maximum 1"

    slow = evaluate_metric_gates(gates({"metric": "latencyP95", "max": "50m"}), healthy, None, "x")
    assert not slow.passed and "latencyP95 55ms on x is above the maximum 50m" in slow.message

    quiet = evaluate_metric_gates(gates({"metric": "errorRate", "max": 1}), Counts(), None, "x")
    assert not quiet.passed and quiet.final and "need traffic" in quiet.message

    measuring = evaluate_metric_gates(
        gates({"metric": "requestsPerSecond", "min": 1}), healthy, None, "x"
    )
    assert not measuring.final

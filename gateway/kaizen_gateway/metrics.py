"""Prometheus metrics of the gateway. ScalingPolicy RPS/latency metrics and Promotion
metric gates read these names."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()
LABELS = ("agent", "revision")

REQUESTS = Counter(
    "kaizen_gateway_requests_total",
    "Requests by agent, revision and HTTP status",
    [*LABELS, "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "kaizen_gateway_request_duration_seconds",
    "Request latency (end to end) by agent and revision",
    LABELS,
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
TTFT = Histogram(
    "kaizen_gateway_time_to_first_token_seconds",
    "Time to the first streamed token",
    LABELS,
    registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TOKENS = Counter(
    "kaizen_gateway_tokens_total",
    "Tokens by agent, revision and direction (in/out)",
    [*LABELS, "direction"],
    registry=REGISTRY,
)
COST = Counter(
    "kaizen_gateway_cost_usd_total",
    "Estimated cost in US dollars",
    LABELS,
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "kaizen_gateway_upstream_errors_total",
    "Failed upstream attempts by agent and reason",
    ["agent", "reason"],
    registry=REGISTRY,
)
TOOL_CALLS = Counter(
    "kaizen_gateway_tool_calls_total",
    "Server-side tool calls by agent, tool and outcome (ok, or the failure's reason)",
    ["agent", "tool", "outcome"],
    registry=REGISTRY,
)
TOOL_LATENCY = Histogram(
    "kaizen_gateway_tool_duration_seconds",
    "Server-side tool call latency by agent and tool",
    ["agent", "tool"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
STEPS = Histogram(
    "kaizen_gateway_steps_per_request",
    "Model calls of the agent loop per answered request",
    ["agent"],
    registry=REGISTRY,
    buckets=(1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100),
)
LOOP_FINISHES = Counter(
    "kaizen_gateway_loop_finishes_total",
    "Answered requests by agent and finish reason (stop, tool_calls, max_steps, ...)",
    ["agent", "finish_reason"],
    registry=REGISTRY,
)
BUNDLE_RELOADS = Counter(
    "kaizen_gateway_bundle_reloads_total",
    "Bundles loaded",
    registry=REGISTRY,
)
AGENTS_SERVED = Gauge(
    "kaizen_gateway_agents_served",
    "Agents in the current bundle",
    registry=REGISTRY,
)
RETRIEVAL_LATENCY = Histogram(
    "kaizen_gateway_retrieval_duration_seconds",
    "Time to retrieve an agent's knowledge chunks for one request (BM25 lookup)",
    ["agent"],
    registry=REGISTRY,
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
)
KNOWLEDGE_CHUNKS = Gauge(
    "kaizen_gateway_knowledge_chunks",
    "Chunks in an agent's knowledge index",
    ["agent"],
    registry=REGISTRY,
)

MEMORY_LATENCY = Histogram(
    "kaizen_gateway_memory_duration_seconds",
    "Conversation-memory Redis round trips by agent and operation (recall, remember)",
    ["agent", "operation"],
    registry=REGISTRY,
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
MEMORY_SKIPPED = Counter(
    "kaizen_gateway_memory_skipped_total",
    "Requests served without their conversation memory, by agent and reason "
    "(redis_unavailable, not_configured; turn_too_large: answered, not stored)",
    ["agent", "reason"],
    registry=REGISTRY,
)
MEMORY_SUMMARIES = Counter(
    "kaizen_gateway_memory_summaries_total",
    "Rolling summaries written by the agent's model, by agent and outcome",
    ["agent", "outcome"],
    registry=REGISTRY,
)
RATE_LIMIT_LOCAL = Counter(
    "kaizen_gateway_rate_limit_local_fallback_total",
    "Rate-limit decisions taken per pod because Redis was unavailable",
    registry=REGISTRY,
)
REDIS_FAILURES = Counter(
    "kaizen_gateway_redis_failures_total",
    "Redis calls that failed or timed out",
    registry=REGISTRY,
)
PIPELINE_LABELS = ("pipeline", "revision")
PIPELINE_REQUESTS = Counter(
    "kaizen_gateway_pipeline_requests_total",
    "Pipeline runs by pipeline, revision and HTTP status",
    [*PIPELINE_LABELS, "status"],
    registry=REGISTRY,
)
PIPELINE_LATENCY = Histogram(
    "kaizen_gateway_pipeline_duration_seconds",
    "Pipeline run latency (end to end) by pipeline and revision",
    PIPELINE_LABELS,
    registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
PIPELINE_STEPS = Counter(
    "kaizen_gateway_pipeline_steps_total",
    "Pipeline steps run by pipeline, step and outcome (ok, failed, cancelled)",
    ["pipeline", "step", "status"],
    registry=REGISTRY,
)
PIPELINE_STEP_LATENCY = Histogram(
    "kaizen_gateway_pipeline_step_duration_seconds",
    "Pipeline step latency by pipeline and step",
    ["pipeline", "step"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PIPELINE_TOKENS = Counter(
    "kaizen_gateway_pipeline_tokens_total",
    "Tokens of every step of a pipeline run, by pipeline, revision and direction (in/out)",
    [*PIPELINE_LABELS, "direction"],
    registry=REGISTRY,
)
PIPELINE_COST = Counter(
    "kaizen_gateway_pipeline_cost_usd_total",
    "Estimated cost in US dollars of every step of a pipeline run",
    PIPELINE_LABELS,
    registry=REGISTRY,
)
PIPELINES_SERVED = Gauge(
    "kaizen_gateway_pipelines_served",
    "Pipelines in the current bundle that this gateway serves",
    registry=REGISTRY,
)
USAGE_BUFFERED = Gauge(
    "kaizen_gateway_usage_buffered",
    "Usage records waiting in this process for Redis (bounded; see usage_dropped)",
    registry=REGISTRY,
)
USAGE_DROPPED = Counter(
    "kaizen_gateway_usage_dropped_total",
    "Usage records lost, by reason (buffer_full while Redis was away, no_redis configured)",
    ["reason"],
    registry=REGISTRY,
)
USAGE_APPENDED = Counter(
    "kaizen_gateway_usage_appended_total",
    "Usage records appended to the Gateway's Redis stream",
    registry=REGISTRY,
)
USAGE_REPLAYED = Counter(
    "kaizen_gateway_usage_replayed_total",
    "Usage records appended again after Redis came back empty (the facade keeps one each)",
    registry=REGISTRY,
)
BUDGET_REFUSALS = Counter(
    "kaizen_gateway_budget_refusals_total",
    "Requests refused (402) because a used-up budget covers them, by agent and budget",
    ["agent", "budget"],
    registry=REGISTRY,
)

# USD per 1M tokens (input, output); overridable with --prices FILE (JSON of the same shape).
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.6),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
}


def cost(
    prices: dict[str, tuple[float, float]], model: str, tokens_in: int, tokens_out: int
) -> float:
    """Estimated cost of one call (0 for unknown models)."""
    price_in, price_out = prices.get(model, (0.0, 0.0))
    return (tokens_in * price_in + tokens_out * price_out) / 1_000_000

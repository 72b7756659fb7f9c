"""Usage records: the one shape gateways write and the facade reads (pure, no I/O).

Each request a gateway serves becomes one record, appended to a Redis stream per
Gateway, ``kaizen:usage:v1:{<namespace>/<gateway>}``. The stream key matches the
per-tenant Redis ACL pattern ``~kaizen:*{<namespace>/*`` (docs/operations.md), so a
gateway can only write to its own namespace's streams; the facade attributes a record
to the organization and workspace *of the stream's namespace*, never to anything the
record (or the caller's request) says. The record's ``uid`` is made by the gateway (not
the caller's ``x-request-id``, which a caller could repeat to have requests counted
once): the facade stores each (namespace, uid) once, whatever Redis redelivers.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

STREAM_PREFIX = "kaizen:usage:v1:"
STREAM_MATCH = STREAM_PREFIX + "{*}"
FIELD = "r"  # the stream entry's one field: the record as JSON
_STREAM = re.compile(r"kaizen:usage:v1:\{([a-z0-9]([-a-z0-9]*[a-z0-9])?)/([a-z0-9][-a-z0-9.]*)\}")
KINDS = ("agent", "pipeline")
MAX_TEXT = 253


def stream_key(namespace: str, gateway: str) -> str:
    """The stream a Gateway's pods append their usage records to."""
    return f"{STREAM_PREFIX}{{{namespace}/{gateway}}}"


def stream_scope(key: str) -> tuple[str, str] | None:
    """(namespace, gateway) of a usage stream's key, None when it is not one."""
    found = _STREAM.fullmatch(key)
    return (found.group(1), found.group(3)) if found else None


@dataclass(frozen=True)
class UsageRecord:
    """One served request (agent or pipeline, answered or failed)."""

    uid: str  # made by the gateway: the idempotency key within the namespace
    request_id: str  # the x-request-id answered (may be the caller's)
    time: float  # seconds since the epoch, when the request finished
    gateway: str
    kind: str  # agent | pipeline
    name: str  # the agent's or the pipeline's name
    revision: int
    caller: str  # hash of the API key, or "anonymous"
    model: str
    tokens_in: int
    tokens_out: int
    tool_calls: int
    latency_ms: float
    cost_usd: float  # estimated from the gateway's price table
    status: int  # the HTTP status answered
    outcome: str  # "ok", or the error's code (rate_limit_exceeded, upstream_error, ...)

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


_TYPES: dict[str, tuple[type, ...]] = {
    f.name: ((int, float) if f.type == "float" else (int,) if f.type == "int" else (str,))
    for f in fields(UsageRecord)
}


def decode(raw: str | bytes) -> UsageRecord:
    """A record read from a stream; ValueError naming what is wrong when it is not one."""
    try:
        data: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("not an object")
    values: dict[str, Any] = {}
    for name, types in _TYPES.items():
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, types):
            raise ValueError(f"field {name!r} missing or of the wrong type")
        if isinstance(value, str) and len(value) > MAX_TEXT:
            raise ValueError(f"field {name!r} longer than {MAX_TEXT} characters")
        if isinstance(value, int | float) and not 0 <= value < 1e15:
            raise ValueError(f"field {name!r} out of range")
        values[name] = value
    if values["kind"] not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    if not values["uid"]:
        raise ValueError("uid is empty")
    return UsageRecord(**values)


# Budgets: the facade writes, into each workspace namespace's key space, the budgets
# that are used up and apply there (hash: budget name -> JSON of ExceededBudget); the
# gateways read it before each upstream call and refuse what a budget covers.
BUDGET_PREFIX = "kaizen:budget:v1:"


def budget_key(namespace: str) -> str:
    """The hash of the used-up budgets that apply in ``namespace``."""
    return f"{BUDGET_PREFIX}{{{namespace}/-}}"


@dataclass(frozen=True)
class ExceededBudget:
    """A used-up budget as a gateway sees it (the facade decided where it applies)."""

    scope: str  # org | workspace | agent | key | plan
    target: str  # the agent's name, the caller (key hash), the plan's name, else ""
    metric: str  # tokens | cost | executions
    limit: float  # tokens, executions, or US dollars
    spent: float

    def encode(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    def applies(self, agent: str, caller: str) -> bool:
        if self.scope == "agent":
            return self.target == agent
        if self.scope == "key":
            return self.target == caller
        return True

    @classmethod
    def decode(cls, raw: str | bytes) -> ExceededBudget:
        data = json.loads(raw)
        return cls(
            scope=str(data["scope"]),
            target=str(data["target"]),
            metric=str(data["metric"]),
            limit=float(data["limit"]),
            spent=float(data["spent"]),
        )

"""Gate checks that talk to the outside world (I/O): the smoke invocation of the target
gateway and the external webhook. Their outcomes feed the pure state machine."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from kaizen_api.netguard import DestinationNotAllowed, check_url
from kaizen_api.netguard_aiohttp import (
    ResponseTooLarge,
    guarded_connector,
    read_capped,
    read_prefix,
)
from kaizen_api.v1alpha1.common import parse_duration, quantity_value
from kaizen_api.v1alpha1.gateway import GatewayAuth, requires_api_key
from kaizen_api.v1alpha1.promotion import (
    GateMetric,
    MetricGate,
    PromotionSpec,
    TargetKind,
    WebhookTarget,
)
from kaizen_operator.endpoints import gateway_urls
from kaizen_operator.gatewaymetrics import Counts, ScrapeHistory, Window, parse_counts, scrape
from kaizen_operator.kube import Kube
from kaizen_operator.secrets import SecretAccessDenied, read_secret

HOW_TO_ALLOW = "start kaizen-operator with --allow-link-local-destinations"
SMOKE_MAX_BYTES = 1024 * 1024
# The entry of a Gateway's API keys Secret (spec.auth.apiKeysSecretRef) the smoke gate
# presents: whoever administers the keys opts in by adding it; no other key is used.
SMOKE_KEY = "kaizen-smoke-gate"


@dataclass(frozen=True)
class GateOutcome:
    """A gate's answer; ``final`` False means "not yet" (e.g. the pods still reload)."""

    passed: bool
    message: str
    final: bool = True


async def smoke_check(
    kube: Kube, overrides: Path | None, spec: PromotionSpec, target: dict[str, Any]
) -> GateOutcome:
    """Invoke the agent on the target gateway; it must answer from the promoted revision."""
    smoke = spec.gates.smoke if spec.gates else None
    if smoke is None:
        return GateOutcome(True, "no smoke gate")
    key, refused = await smoke_key(kube, target)
    if refused:
        return GateOutcome(False, f"smoke invocation not possible: {refused}")
    urls = await gateway_urls(kube, overrides, target)
    if not urls:
        return GateOutcome(False, f"Gateway {spec.to!r} has no ready endpoint yet", final=False)
    kind, target_name = spec.target
    pipeline = kind == TargetKind.PIPELINE
    # A Pipeline is asked as the OpenAI model of its name (what clients call); an
    # Agent on its native invoke route, as before.
    url, payload = (
        (
            f"{urls[0]}/v1/chat/completions",
            {"model": target_name, "messages": [{"role": "user", "content": smoke.input}]},
        )
        if pipeline
        else (f"{urls[0]}/agents/{target_name}/invoke", {"input": smoke.input})
    )
    timeout = aiohttp.ClientTimeout(total=parse_duration(smoke.timeout))
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(
                url,
                json=payload,
                headers={"authorization": f"Bearer {key}"} if key else None,
                allow_redirects=False,  # the target's pods may not point the operator elsewhere
            ) as resp,
        ):
            raw = await read_capped(resp, SMOKE_MAX_BYTES)
            body: Any = json.loads(raw) if raw else None
            served = resp.headers.get(
                "x-kaizen-pipeline-revision" if pipeline else "x-kaizen-agent-revision"
            )
    except ResponseTooLarge as exc:
        return GateOutcome(False, f"smoke invocation failed: {exc}")
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return GateOutcome(False, f"smoke invocation failed: {exc.__class__.__name__}", final=False)
    if 300 <= resp.status < 400:
        return GateOutcome(
            False, f"smoke invocation answered a redirect ({resp.status}), which is not followed"
        )
    if resp.status == 404 or (served is not None and served != str(spec.revision)):
        return GateOutcome(False, f"gateway still serves revision {served or 'none'}", final=False)
    if resp.status != 200:
        message = (body.get("error") or {}).get("message", "") if isinstance(body, dict) else ""
        return GateOutcome(False, f"smoke invocation returned {resp.status}: {message}")
    output = str(body.get("output", "")) if not pipeline else _completion_text(body)
    if smoke.expect_contains and smoke.expect_contains not in output:
        return GateOutcome(
            False, f"answer {output[:200]!r} does not contain {smoke.expect_contains!r}"
        )
    return GateOutcome(True, f"revision {spec.revision} answered: {output[:200]!r}")


async def smoke_key(kube: Kube, target: dict[str, Any]) -> tuple[str | None, str | None]:
    """The API key the smoke gate presents to ``target`` (None when it needs none), or
    why there is none: (key, problem). The key is the ``kaizen-smoke-gate`` entry of
    the Gateway's keys Secret; it is used for the call only, never logged or stored."""
    spec = target.get("spec") or {}
    auth = GatewayAuth.model_validate(spec["auth"]) if spec.get("auth") else None
    if not requires_api_key(auth, str(spec.get("environment", ""))):
        return None, None
    name, ns = target["metadata"]["name"], target["metadata"]["namespace"]
    ref = auth.api_keys_secret_ref if auth else None
    if ref is None:
        return None, f"Gateway {name!r} requires API keys and names no spec.auth.apiKeysSecretRef"
    how = (
        f"add an entry {SMOKE_KEY} (any new key) to Secret {ref.name!r}, the keys of Gateway "
        f"{name!r}, for the smoke gate to present"
    )
    try:
        secret = await read_secret(kube, ns, ref.name)
    except SecretAccessDenied as denied:
        return None, str(denied)
    raw = ((secret or {}).get("data") or {}).get(SMOKE_KEY)
    if not raw:
        return None, f"Gateway {name!r} requires API keys; {how}"
    return base64.b64decode(raw).decode(), None


def _completion_text(body: Any) -> str:
    """The first choice's message content of an OpenAI chat completion ("" if none)."""
    try:
        return str(body["choices"][0]["message"]["content"] or "")
    except (KeyError, IndexError, TypeError):
        return ""


async def post_json(
    target: WebhookTarget,
    payload: dict[str, Any],
    secret: str | None,
    *,
    refused: str | None = None,
    allow_link_local: bool = False,
) -> GateOutcome:
    """POST ``payload`` to ``target`` (bearer token ``secret``); a 2xx answer passes.
    ``refused``: why the target's Secret may not go there (kaizen_api.pairing); then
    nothing is sent.

    Link-local and cloud-metadata destinations are refused before anything is sent
    (kaizen_api.netguard), also when a host name resolves to one at connect time;
    redirects are not followed (they could lead there).
    """
    try:
        check_url(target.url, allow_link_local=allow_link_local, how_to_allow=HOW_TO_ALLOW)
    except DestinationNotAllowed as exc:
        return GateOutcome(False, f"webhook destination not allowed: {exc}")
    if refused:
        return GateOutcome(False, f"webhook secret not allowed: {refused}")
    headers = {"authorization": f"Bearer {secret}"} if secret else {}
    try:
        async with (
            aiohttp.ClientSession(
                connector=guarded_connector(
                    allow_link_local=allow_link_local, how_to_allow=HOW_TO_ALLOW
                ),
                timeout=aiohttp.ClientTimeout(total=parse_duration(target.timeout)),
            ) as session,
            session.post(target.url, json=payload, headers=headers, allow_redirects=False) as resp,
        ):
            text = await read_prefix(resp, 300)  # only this much is shown; the rest is not read
    except DestinationNotAllowed as exc:  # the name resolved to a refused address now
        return GateOutcome(False, f"webhook destination not allowed: {exc}")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return GateOutcome(False, f"webhook {target.url} unreachable: {exc.__class__.__name__}")
    if 200 <= resp.status < 300:
        return GateOutcome(True, f"webhook answered {resp.status}")
    return GateOutcome(False, f"webhook answered {resp.status}: {text}")


def promotion_payload(promotion: dict[str, Any], spec: PromotionSpec) -> dict[str, Any]:
    """What webhooks are told about a Promotion."""
    meta = promotion["metadata"]
    return {
        "namespace": meta["namespace"],
        "name": meta["name"],
        "uid": meta.get("uid"),
        # "agent" as before for Agents; "kind" and "target" name either kind.
        **({"agent": spec.target[1]} if spec.target[0] == TargetKind.AGENT else {}),
        "kind": spec.target[0].value,
        "target": spec.target[1],
        "revision": spec.revision,
        "from": spec.from_,
        "to": spec.to,
    }


async def webhook_check(
    promotion: dict[str, Any],
    spec: PromotionSpec,
    secret: str | None,
    *,
    refused: str | None = None,
    allow_link_local: bool = False,
) -> GateOutcome:
    """POST the Promotion to the external webhook gate; a 2xx answer passes."""
    hook = spec.gates.webhook if spec.gates else None
    if hook is None:
        return GateOutcome(True, "no webhook gate")
    return await post_json(
        hook,
        promotion_payload(promotion, spec),
        secret,
        refused=refused,
        allow_link_local=allow_link_local,
    )


async def notify_failure(
    promotion: dict[str, Any],
    spec: PromotionSpec,
    secret: str | None,
    *,
    refused: str | None = None,
    allow_link_local: bool = False,
) -> GateOutcome:
    """Tell spec.notifications.webhook how the Promotion ended. Receivers may see a
    notification twice (at-least-once); ``id`` is the same each time."""
    hook = spec.notifications.webhook if spec.notifications else None
    if hook is None:
        return GateOutcome(True, "no notification webhook")
    status = promotion.get("status") or {}
    conditions = status.get("conditions") or []
    ready: dict[str, Any] = next((c for c in conditions if c.get("type") == "Ready"), {})
    phase = str(status.get("phase") or "")
    payload = {
        **promotion_payload(promotion, spec),
        "id": f"{promotion['metadata'].get('uid')}/{status.get('phase')}",
        # The event model's type for this phase (docs/webhooks.md), e.g. promotion.failed:
        # the same name a facade webhook subscription receives.
        "type": "promotion." + re.sub(r"(?<!^)(?=[A-Z])", "_", phase).lower(),
        "phase": status.get("phase"),
        "reason": ready.get("reason"),
        "message": status.get("message"),
        "completedAt": status.get("completedAt"),
    }
    return await post_json(
        hook, payload, secret, refused=refused, allow_link_local=allow_link_local
    )


def evaluate_metric_gates(
    gates: Sequence[MetricGate], total: Counts, window: Window | None, where: str
) -> GateOutcome:
    """Check each threshold against the source gateway's counts for the revision (pure).

    errorRate and latencyP95 use everything the source's pods counted for the
    revision; requestsPerSecond uses ``window`` (two scrapes during the promotion). No
    traffic is not a pass: the gate fails saying so.
    """
    if not total.requests:
        return GateOutcome(False, f"no requests answered by {where}; metric gates need traffic")
    values: list[str] = []
    for gate in gates:
        if gate.metric == GateMetric.REQUESTS_PER_SECOND:
            if window is None:
                return GateOutcome(False, "measuring requestsPerSecond", final=False)
            value, unit = window.per_second(), "req/s"
        elif gate.metric == GateMetric.ERROR_RATE:
            value, unit = total.error_rate_percent() or 0.0, "%"
        else:
            value, unit = total.latency_quantile_ms(0.95) or 0.0, "ms"
        shown = f"{gate.metric} {value:.4g}{unit}"
        if gate.max is not None and value > quantity_value(gate.max):
            return GateOutcome(False, f"{shown} on {where} is above the maximum {gate.max}")
        if gate.min is not None and value < quantity_value(gate.min):
            return GateOutcome(False, f"{shown} on {where} is below the minimum {gate.min}")
        values.append(shown)
    return GateOutcome(True, f"{', '.join(values)} on {where} ({int(total.requests)} requests)")


async def metrics_check(
    kube: Kube,
    overrides: Path | None,
    history: ScrapeHistory,
    promotion: dict[str, Any],
    spec: PromotionSpec,
    source: dict[str, Any],
    due: bool,
) -> GateOutcome | None:
    """Scrape the source gateway's pods for the promoted revision (each call adds to the
    history requestsPerSecond is measured over); the verdict once ``due``."""
    gates = spec.gates.metrics if spec.gates else None
    if not gates:
        return None
    urls = await gateway_urls(kube, overrides, source)
    pages = await scrape(urls) if urls else {}
    meta = promotion["metadata"]
    key = ("promotion", meta["namespace"], meta["name"], meta.get("uid"))
    if pages:
        agent, revision = spec.target[1], str(spec.revision)
        history.record(
            key,
            time.monotonic(),
            {url: parse_counts(text, agent, revision) for url, text in pages.items()},
        )
    if not due:
        return None
    if not pages:
        return GateOutcome(
            False, f"Gateway {spec.from_!r} has no pod answering /metrics", final=False
        )
    total = history.latest(key) or Counts()
    where = f"revision {spec.revision} of {spec.target[1]} on {spec.from_}"
    outcome = evaluate_metric_gates(gates, total, history.window(key, 3600, 5.0), where)
    if outcome.final:
        history.forget(key)
    return outcome

"""Promotion reconcile: resolve -> render the state machine -> switch -> status."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf

from kaizen_api.pairing import pairing_refusal
from kaizen_api.v1alpha1.gateway import (
    PROMOTION_FIELD_MANAGER,
    promoted_pipeline_revisions,
    promoted_revisions,
)
from kaizen_api.v1alpha1.promotion import PromotionSpec, TargetKind, WebhookTarget
from kaizen_operator import names
from kaizen_operator.events import record
from kaizen_operator.gateway.reconcile import reconcile_gateway
from kaizen_operator.gatewaymetrics import ScrapeHistory
from kaizen_operator.kube import ApiException, Kube
from kaizen_operator.promotion.gates import (
    metrics_check,
    notify_failure,
    smoke_check,
    webhook_check,
)
from kaizen_operator.promotion.render import (
    PromotionInputs,
    metrics_passed,
    notification_due,
    notification_pending,
    notification_status,
    render_promotion,
    soak_done,
)
from kaizen_operator.runtime import Runtime, write_status
from kaizen_operator.secrets import SecretAccessDenied, read_secret

API = "kaizen.studio/v1alpha1"


async def resolve_promotion(
    kube: Kube,
    promotion: dict[str, Any],
    now: datetime,
    overrides: Path | None = None,
    history: ScrapeHistory | None = None,
    *,
    allow_link_local: bool = False,
) -> PromotionInputs:
    """Read the Agent, the revision and both Gateways, and ask the gates that are due
    (``allow_link_local``: the webhook may be a link-local or metadata address)."""
    ns = promotion["metadata"]["namespace"]
    spec = promotion["spec"]
    kind, target_name = PromotionSpec.model_validate(spec).target
    agent = await kube.get(API, kind.value, ns, target_name)
    revision_name = names.pipeline_revision if kind == TargetKind.PIPELINE else names.agent_revision
    revision = None
    if agent is not None:
        revision = await kube.get(
            "apps/v1", "ControllerRevision", ns, revision_name(target_name, int(spec["revision"]))
        )
    target = await kube.get(API, "Gateway", ns, spec["to"])
    status = promotion.get("status") or {}
    phase = status.get("phase")
    parsed = PromotionSpec.model_validate(spec)
    source = await kube.get(API, "Gateway", ns, spec["from"])
    webhook = smoke = metrics = None
    if (
        phase == "Progressing"
        and parsed.gates
        and parsed.gates.metrics
        and source is not None
        and metrics_passed(status) is None
    ):
        metrics = await metrics_check(
            kube,
            overrides,
            history if history is not None else ScrapeHistory(),
            promotion,
            parsed,
            source,
            due=soak_done(status, parsed, now),
        )
    if (
        phase == "Progressing"
        and parsed.gates
        and parsed.gates.webhook
        and soak_done(status, parsed, now)
    ):
        hook = parsed.gates.webhook
        secret, refused = await read_secret_for(kube, ns, hook)
        webhook = await webhook_check(
            promotion, parsed, secret, refused=refused, allow_link_local=allow_link_local
        )
    if phase == "Verifying" and target is not None:
        smoke = await smoke_check(kube, overrides, parsed, target)
    return PromotionInputs(
        promotion=promotion,
        agent=agent,
        revision_exists=revision is not None,
        revision_hash=((revision or {}).get("metadata") or {})
        .get("labels", {})
        .get(names.REVISION_HASH_LABEL),
        source=source,
        target=target,
        now=now,
        webhook=webhook,
        smoke=smoke,
        metrics=metrics,
    )


async def read_secret_for(
    kube: Kube, namespace: str, target: WebhookTarget | None
) -> tuple[str | None, str | None]:
    """The value of ``target``'s secretRef, for that call only (never logged or stored),
    or why it may not go to ``target.url`` (kaizen_api.pairing): (value, refusal)."""
    ref = target.secret_ref if target else None
    if target is None or ref is None:
        return None, None
    try:
        secret = await read_secret(kube, namespace, ref.name)
    except SecretAccessDenied as denied:  # the gate fails naming the RoleBinding to create
        return None, str(denied)
    if secret is None:
        return None, None
    annotations = (secret.get("metadata") or {}).get("annotations")
    refused = pairing_refusal(ref.name, annotations, target.url)
    if refused:
        return None, refused
    raw = (secret.get("data") or {}).get(ref.key)
    return (base64.b64decode(raw).decode() if raw else None), None


# kind -> (the Gateway spec field of its promoted revisions, its entries' name key)
PROMOTED_FIELD = {
    TargetKind.AGENT: ("promotedRevisions", "agent"),
    TargetKind.PIPELINE: ("promotedPipelineRevisions", "pipeline"),
}


def promoted_after_switch(
    target: dict[str, Any],
    agent: str,
    revision: int | None,
    revision_hash: str | None,
    promotion: str,
    kind: TargetKind = TargetKind.AGENT,
) -> list[dict[str, Any]]:
    """``target``'s spec.promotedRevisions (promotedPipelineRevisions for a Pipeline)
    once ``agent`` serves ``revision`` (None: no longer served), sorted by name."""
    promoted = promoted_pipeline_revisions if kind == TargetKind.PIPELINE else promoted_revisions
    key = PROMOTED_FIELD[kind][1]
    entries = {k: v for k, v in promoted(target).items() if k != agent}
    if revision is not None:
        entry: dict[str, Any] = {key: agent, "revision": revision, "promotion": promotion}
        if revision_hash:
            entry["hash"] = revision_hash
        entries[agent] = entry
    return [entries[k] for k in sorted(entries)]


SWITCH_ATTEMPTS = 5


async def switch_served_revision(
    kube: Kube,
    target: dict[str, Any],
    agent: str,
    revision: int | None,
    revision_hash: str | None,
    promotion: str,
    kind: TargetKind = TargetKind.AGENT,
) -> None:
    """Make ``target`` serve ``revision`` of ``agent`` (a Pipeline for ``kind``
    Pipeline) by writing its spec.promotedRevisions (promotedPipelineRevisions) as the
    promotion controller's own field manager. The write is guarded by resourceVersion
    (two Promotions to one Gateway must not lose each other's switch) on a fresh read,
    retried while the Gateway's status keeps moving it on. The Gateway controller alone
    writes the Gateway's status."""
    meta = target["metadata"]
    for attempt in range(SWITCH_ATTEMPTS):
        # The cache first; after a conflict, afresh (the cache may lag the winner).
        current = await kube.get(API, "Gateway", meta["namespace"], meta["name"], fresh=attempt > 0)
        if current is None:
            return  # deleted meanwhile: the next reconcile reports the missing target
        entries = promoted_after_switch(current, agent, revision, revision_hash, promotion, kind)
        try:
            await kube.patch_guarded(
                API,
                "Gateway",
                meta["namespace"],
                meta["name"],
                {"spec": {PROMOTED_FIELD[kind][0]: entries}},
                current["metadata"]["resourceVersion"],
                manager=PROMOTION_FIELD_MANAGER,
            )
            return
        except ApiException as exc:
            if exc.status != 409 or attempt == SWITCH_ATTEMPTS - 1:
                raise


async def reconcile_promotion(rt: Runtime, namespace: str, name: str) -> None:
    """Advance a Promotion by at most one step of its state machine."""
    async with rt.reconciling("Promotion", namespace, name):
        promotion = await rt.kube.get(API, "Promotion", namespace, name)
        if promotion is None or promotion["metadata"].get("deletionTimestamp"):
            return
        allow_link_local = rt.config.allow_link_local_destinations
        inputs = await resolve_promotion(
            rt.kube,
            promotion,
            datetime.now(UTC),
            rt.config.gateway_endpoints,
            rt.scrapes,
            allow_link_local=allow_link_local,
        )
        plan = render_promotion(inputs)
        if plan.switch and inputs.target is not None:
            agent_name, number = plan.switch
            digest = inputs.revision_hash if number == int(promotion["spec"]["revision"]) else None
            try:
                kind = PromotionSpec.model_validate(promotion["spec"]).target[0]
                await switch_served_revision(
                    rt.kube, inputs.target, agent_name, number, digest, name, kind
                )
            except ApiException as exc:
                if exc.status == 409:
                    raise kopf.TemporaryError(
                        "target Gateway changed; retrying the switch", delay=1
                    ) from exc
                raise
            # Awaited: a Promotion is Succeeded only once its target's status shows it.
            await reconcile_gateway(rt, namespace, inputs.target["metadata"]["name"])
        await write_status(rt.kube, promotion, plan.status)
        for reason, message, warning in plan.events:
            await record(rt.kube, promotion, reason, message, warning=warning)
        ended = {**promotion, "status": plan.status}
        if notification_due(ended, datetime.now(UTC)):
            await deliver_notification(rt.kube, ended, allow_link_local=allow_link_local)
        elif plan.terminal and not notification_pending(ended):
            rt.known.get("Promotion", set()).discard((namespace, name))


async def deliver_notification(
    kube: Kube, promotion: dict[str, Any], *, allow_link_local: bool = False
) -> None:
    """POST the failure notification once and record the attempt in status and Events."""
    meta = promotion["metadata"]
    spec = PromotionSpec.model_validate(promotion["spec"])
    hook = spec.notifications.webhook if spec.notifications else None
    await record(
        kube,
        promotion,
        "DeprecatedField",
        "spec.notifications.webhook is deprecated (it still works): subscribe to promotion.* "
        "events with a signed facade webhook instead (kaizen webhooks create; docs/webhooks.md)",
        warning=True,
    )
    secret, refused = await read_secret_for(kube, meta["namespace"], hook)
    outcome = await notify_failure(
        promotion, spec, secret, refused=refused, allow_link_local=allow_link_local
    )
    await kube.patch_status(
        API,
        "Promotion",
        meta["namespace"],
        meta["name"],
        {"notification": notification_status(promotion, outcome, datetime.now(UTC))},
    )
    if outcome.passed:
        await record(kube, promotion, "NotificationSent", outcome.message)
    else:
        await record(kube, promotion, "NotificationFailed", outcome.message, warning=True)

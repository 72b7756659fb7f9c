"""kopf registrations for Promotions."""

from __future__ import annotations

from typing import Any

import kopf

from kaizen_api.v1alpha1.promotion import TERMINAL_PHASES
from kaizen_operator.cache_feed import forget_deleted
from kaizen_operator.promotion.reconcile import reconcile_promotion
from kaizen_operator.promotion.render import notification_pending
from kaizen_operator.runtime import runtime_of

PROMOTIONS = ("kaizen.studio", "v1alpha1", "promotions")


@kopf.on.resume(*PROMOTIONS)
@kopf.on.create(*PROMOTIONS)
@kopf.on.update(*PROMOTIONS, field="metadata.annotations")
async def promotion_changed(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    """A new Promotion, or a decision recorded by the admission webhook."""
    await reconcile_promotion(runtime_of(memo), str(namespace), name)


@kopf.on.event(*PROMOTIONS)
async def promotion_seen(
    type: str, body: kopf.Body, namespace: str | None, memo: Any, **_: Any
) -> None:
    """Unfinished Promotions are revisited by the resync loop (soak time, deadlines), and
    so are ended ones whose failure notification is not delivered yet."""
    phase = (body.get("status") or {}).get("phase")
    done = phase in TERMINAL_PHASES and not notification_pending(dict(body))
    event = "DELETED" if type == "DELETED" or done else type
    forget_deleted(memo, "Promotion", type, body)
    runtime_of(memo).promotions.observe(type, dict(body))
    runtime_of(memo).track("Promotion", event, str(namespace), body["metadata"]["name"])

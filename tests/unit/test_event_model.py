"""The event model, pure: which events a resource's state implies (and their stable
keys), subscription filters, the retry schedule, and Standard Webhooks signatures that
the `standardwebhooks` library verifies, with both secrets during a rotation."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from kaizen_api.server.events import EVENT_TYPES, derive, matches, valid_filter
from kaizen_api.server.webhook_config import WebhookConfig
from kaizen_api.server.webhooks import new_secret, next_delay, sign

NOW = datetime(2026, 12, 5, 12, tzinfo=UTC)


def meta(uid: str = "u1", generation: int = 1) -> dict[str, Any]:
    return {"name": "x", "namespace": "ns", "uid": uid, "generation": generation}


def types(events: list[Any]) -> list[str]:
    return [e.type for e in events]


def test_agent_revisions_created_and_archived_have_stable_keys() -> None:
    agent = {
        "metadata": meta(),
        "status": {"latestRevision": 4, "revisions": [{"revision": 3}, {"revision": 4}]},
    }
    events = derive("Agent", agent)
    assert types(events) == [
        "agent.revision.created",
        "agent.revision.archived",
        "agent.revision.archived",
    ]
    assert events[0].key == "u1:revision:4" and events[0].data["revision"] == 4
    # An archive is news only when its creation was announced.
    assert events[1].after == "u1:revision:1"
    assert derive("Agent", agent) == events  # the same state, the same events


def test_pipeline_revision_created() -> None:
    pipeline = {"metadata": meta(), "status": {"latestRevision": 2}}
    assert types(derive("Pipeline", pipeline)) == ["pipeline.revision.created"]
    assert derive("Pipeline", {"metadata": meta(), "status": {}}) == []


def test_gateway_ready_then_degraded_only_after_ready() -> None:
    def gw(status: str, since: str) -> dict[str, Any]:
        cond = {"type": "Ready", "status": status, "lastTransitionTime": since, "reason": "r"}
        return {"metadata": meta(), "status": {"conditions": [cond]}}

    ready = derive("Gateway", gw("True", "t1"))
    assert types(ready) == ["gateway.ready"]
    degraded = derive("Gateway", gw("False", "t2"))
    assert types(degraded) == ["gateway.degraded"]
    assert degraded[0].after_type == "gateway.ready"
    # A second outage is a new event; the same one seen again is not.
    assert derive("Gateway", gw("False", "t3"))[0].key != degraded[0].key


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        ("WaitingForApproval", "promotion.waiting_for_approval"),
        ("Progressing", "promotion.progressing"),
        ("Succeeded", "promotion.succeeded"),
        ("Failed", "promotion.failed"),
        ("Rejected", "promotion.rejected"),
    ],
)
def test_promotion_phases(phase: str, expected: str) -> None:
    promotion = {
        "metadata": meta(),
        "spec": {"agentRef": {"name": "a"}, "revision": 2, "from": "dev", "to": "prod"},
        "status": {"phase": phase},
    }
    events = derive("Promotion", promotion)
    assert types(events) == [expected]
    assert events[0].data["to"] == "prod"


def test_promotion_approval_is_its_own_event() -> None:
    promotion = {
        "metadata": meta(),
        "spec": {},
        "status": {
            "phase": "Progressing",
            "approvals": [{"user": "alice", "decision": "Approved", "time": "t"}],
        },
    }
    assert types(derive("Promotion", promotion)) == [
        "promotion.approved",
        "promotion.progressing",
    ]


def test_scaling_override_set_and_expired() -> None:
    override = {"mode": "Pin", "replicas": 3, "expiresAt": "2026-12-05T11:00:00Z"}
    active = {
        "metadata": meta(generation=7),
        "spec": {"targetRef": {"name": "g"}, "override": override},
        "status": {"activeOverride": override},
    }
    assert types(derive("ScalingPolicy", active, NOW)) == ["scaling.override.set"]
    lifted = {**active, "status": {}}
    expired = derive("ScalingPolicy", lifted, NOW)
    assert types(expired) == ["scaling.override.expired"]
    assert derive("ScalingPolicy", lifted, NOW - timedelta(days=1)) == []


def test_filters_with_wildcards() -> None:
    assert matches(["promotion.*"], "promotion.failed")
    assert not matches(["promotion.*"], "agent.revision.created")
    assert matches(["*"], "member.added")
    assert matches(["agent.*"], "agent.revision.archived")
    assert valid_filter("promotion.*") is None
    assert "matches no event type" in (valid_filter("nothing.*") or "")
    assert "not an event type" in (valid_filter("Promotion Failed") or "")
    assert all(valid_filter(t) is None for t in EVENT_TYPES)


def test_retry_schedule_backs_off_with_jitter_and_ends() -> None:
    config = WebhookConfig(retry_schedule=(10.0, 100.0), jitter=0.2)
    rng = random.Random(1)  # noqa: S311 - jitter, not secrets
    first = next_delay(config, 1, rng)
    second = next_delay(config, 2, rng)
    assert first is not None and 8 <= first <= 12
    assert second is not None and 80 <= second <= 120
    assert next_delay(config, 3, rng) is None
    default = WebhookConfig().retry_schedule
    assert 20 * 3600 <= sum(default) <= 28 * 3600  # about a day


def test_signatures_verify_with_standardwebhooks_during_rotation() -> None:
    old, new = new_secret(), new_secret()
    body = '{"data":{},"timestamp":"t","type":"webhook.test"}'
    now = datetime.now(UTC)
    headers = {
        "webhook-id": "evt_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": sign("evt_1", now, body, [new, old]),
    }
    assert Webhook(new).verify(body, headers)["type"] == "webhook.test"
    assert Webhook(old).verify(body, headers)["type"] == "webhook.test"
    headers["webhook-signature"] = sign("evt_1", now, body, [new])
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body, headers)

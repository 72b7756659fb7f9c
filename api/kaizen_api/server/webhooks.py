"""Delivery of events to webhook subscriptions, Standard Webhooks style.

Each delivery is a row (``webhook_deliveries``): every facade replica runs a worker
that claims due rows (``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so replicas
never take the same row; the claim also moves ``next_attempt_at`` one lease ahead and
bumps ``attempts`` under a compare-and-set, which is what keeps SQLite's single writer
safe with several processes). A replica killed mid-POST leaves the row due again when
its lease ends: a receiver may see a message twice (at-least-once, same
``webhook-id``), never zero times.

A POST carries ``webhook-id`` (the event's id, the same on every retry and redelivery),
``webhook-timestamp`` and ``webhook-signature`` (HMAC-SHA256 with the subscription's
secret, ``v1,<base64>``; during a rotation's overlap the previous secret's signature
follows, space-separated, as the specification allows). 2xx is success; anything
else is retried on the schedule, with jitter; after the last retry the delivery fails,
and a subscription failing for ``disable_after_seconds`` is disabled (a
``webhook.disabled`` event and an audit record say so).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from sqlalchemy import Engine, update
from sqlmodel import col, select
from standardwebhooks import Webhook

from kaizen_api.netguard import DestinationNotAllowed, check_url, display_url
from kaizen_api.netguard_aiohttp import guarded_connector, read_prefix
from kaizen_api.server.db import aware, session
from kaizen_api.server.events import emit_event
from kaizen_api.server.models import AuditRecord, Organization
from kaizen_api.server.webhook_config import WebhookConfig
from kaizen_api.server.webhook_tables import (
    Event,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
)

log = logging.getLogger("kaizen_api.webhooks")
HOW_TO_ALLOW = "set KAIZEN_WEBHOOK_ALLOW_LINK_LOCAL=true on the facade"
USER_AGENT = "kaizen-studio-webhooks/1"


def new_secret() -> str:
    """A signing secret in the Standard Webhooks form (``whsec_`` + base64 of 32 bytes)."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def signing_secrets(sub: WebhookSubscription, now: datetime) -> list[str]:
    """The secrets that sign now: the current one, and the previous during its overlap."""
    out = [sub.secret]
    if (
        sub.previous_secret
        and sub.previous_secret_until is not None
        and aware(sub.previous_secret_until) > now
    ):
        out.append(sub.previous_secret)
    return out


def sign(msg_id: str, timestamp: datetime, body: str, keys: list[str]) -> str:
    """The ``webhook-signature`` header: one ``v1,<sig>`` per secret, space-separated."""
    return " ".join(Webhook(k).sign(msg_id, timestamp, body) for k in keys)


def check_destination(url: str, config: WebhookConfig) -> None:
    """Refuse receivers the SSRF guard refuses (names are checked again on connect)."""
    check_url(url, allow_link_local=config.allow_link_local, how_to_allow=HOW_TO_ALLOW)


def next_delay(
    config: WebhookConfig, attempts: int, rng: random.Random | None = None
) -> float | None:
    """Seconds until the retry after ``attempts`` failed attempts (None: none left)."""
    if attempts > len(config.retry_schedule):
        return None
    base = config.retry_schedule[attempts - 1]
    factor = 1.0 + (rng or random).uniform(-config.jitter, config.jitter)
    return max(0.0, base * factor)


@dataclass(frozen=True)
class Job:
    """A claimed delivery: everything its POST needs, read in the claim's transaction."""

    delivery_id: int
    attempts: int  # including this one
    url: str
    keys: list[str]
    event_id: str
    body: str


def claim(engine: Engine, config: WebhookConfig, limit: int) -> list[Job]:
    """Take up to ``limit`` due deliveries of active subscriptions for this replica."""
    now = datetime.now(UTC)
    lease = now + timedelta(seconds=config.lease_seconds)
    jobs: list[Job] = []
    with session(engine) as db:
        rows = db.exec(
            select(WebhookDelivery, WebhookSubscription, Event)
            .join(
                WebhookSubscription,
                col(WebhookSubscription.id) == col(WebhookDelivery.subscription_id),
            )
            .join(Event, col(Event.id) == col(WebhookDelivery.event_id))
            .where(
                WebhookDelivery.status == "pending",
                col(WebhookDelivery.next_attempt_at) <= now,
                col(WebhookSubscription.active).is_(True),
            )
            .order_by(col(WebhookDelivery.next_attempt_at))
            .limit(limit)
            .with_for_update(skip_locked=True, of=WebhookDelivery)
        ).all()
        for delivery, sub, event in rows:
            # Read before the UPDATE: the session writes the new value into ``delivery``.
            attempts = delivery.attempts
            taken = db.execute(
                update(WebhookDelivery)
                .where(
                    col(WebhookDelivery.id) == delivery.id,
                    col(WebhookDelivery.attempts) == attempts,
                    col(WebhookDelivery.status) == "pending",
                )
                .values(attempts=attempts + 1, next_attempt_at=lease)
                .returning(col(WebhookDelivery.id))
            ).first()
            if taken is None:  # another process claimed it between our read and write
                continue
            jobs.append(
                Job(
                    delivery_id=int(delivery.id or 0),
                    attempts=attempts + 1,
                    url=sub.url,
                    keys=signing_secrets(sub, now),
                    event_id=event.id,
                    body=json.dumps(event.payload, separators=(",", ":"), sort_keys=True),
                )
            )
    return jobs


@dataclass(frozen=True)
class Outcome:
    code: int | None
    latency_ms: float
    error: str

    @property
    def ok(self) -> bool:
        return self.code is not None and 200 <= self.code < 300


async def post(http: aiohttp.ClientSession, job: Job, config: WebhookConfig) -> Outcome:
    """One signed POST; the receiver's answer is read up to a small cap."""
    now = datetime.now(UTC)
    headers = {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": job.event_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": sign(job.event_id, now, job.body, job.keys),
    }
    started = time.perf_counter()
    try:
        check_destination(job.url, config)
        async with http.post(
            job.url,
            data=job.body.encode(),
            headers=headers,
            allow_redirects=False,  # a redirect could lead past the guard's first check
            timeout=aiohttp.ClientTimeout(total=config.timeout_seconds),
        ) as resp:
            answer = await read_prefix(resp, config.max_response_bytes)
            code = resp.status
        latency = (time.perf_counter() - started) * 1000
        error = "" if 200 <= code < 300 else f"HTTP {code}: {answer[:300]}"
        return Outcome(code, latency, error)
    except DestinationNotAllowed as exc:
        return Outcome(None, 0.0, f"refused by the SSRF guard: {exc}"[:500])
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        latency = (time.perf_counter() - started) * 1000
        return Outcome(None, latency, f"{type(exc).__name__}: {exc}"[:500])


def record(engine: Engine, config: WebhookConfig, job: Job, outcome: Outcome) -> None:
    """Write an attempt's outcome: success, a retry at the next step, or the end; and
    disable a subscription that has failed for too long."""
    now = datetime.now(UTC)
    with session(engine) as db:
        delivery = db.get(WebhookDelivery, job.delivery_id)
        if delivery is None or delivery.attempts != job.attempts:
            return  # deleted, or redelivered meanwhile: that run owns the row now
        db.add(
            WebhookAttempt(
                delivery_id=job.delivery_id,
                at=now,
                response_code=outcome.code,
                latency_ms=round(outcome.latency_ms, 2),
                error=outcome.error[:500],
            )
        )
        delivery.last_attempt_at = now
        delivery.response_code = outcome.code
        delivery.latency_ms = round(outcome.latency_ms, 2)
        delivery.error = outcome.error[:500]
        sub = db.get(WebhookSubscription, delivery.subscription_id)
        if outcome.ok:
            delivery.status = "succeeded"
            if sub is not None and sub.failing_since is not None:
                sub.failing_since = None
                db.add(sub)
        else:
            delay = next_delay(config, job.attempts)
            if delay is None:
                delivery.status = "failed"
            else:
                delivery.next_attempt_at = now + timedelta(seconds=delay)
            if sub is not None:
                if sub.failing_since is None:
                    sub.failing_since = now
                    db.add(sub)
                if (
                    delay is None
                    and sub.active
                    and aware(sub.failing_since)
                    <= now - timedelta(seconds=config.disable_after_seconds)
                ):
                    disable(db, sub, now)
        db.add(delivery)


def disable(db: Any, sub: WebhookSubscription, now: datetime) -> None:
    """Turn off a subscription that keeps failing: an event for the organization's other
    subscriptions and an audit record."""
    since = aware(sub.failing_since or now)
    sub.active = False
    sub.disabled_reason = (
        f"disabled automatically at {now.isoformat()}: every delivery failed since "
        f"{since.isoformat()}"
    )
    db.add(sub)
    org = db.get(Organization, sub.org_id)
    emit_event(
        db,
        org or sub.org_id,
        "webhook.disabled",
        {"webhook": sub.id, "url": display_url(sub.url), "failingSince": since.isoformat()},
    )
    db.add(
        AuditRecord(
            org=org.slug if org else None,
            actor="system:webhooks",
            action="webhooks.disable",
            resource=f"/api/v1/orgs/{org.slug if org else ''}/webhooks/{sub.id}",
            outcome=200,
            request_id=f"webhook-disable-{sub.id}"[:64],
        )
    )
    log.warning(
        "webhook %s of %s disabled: %s", sub.id, org.slug if org else "", sub.disabled_reason
    )


class Deliverer:
    """The delivery worker of one replica: claims, POSTs, records, until stopped."""

    def __init__(self, engine: Engine, config: WebhookConfig) -> None:
        self.engine, self.config = engine, config
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="webhook-deliveries")

    def wake(self) -> None:
        """Look for due deliveries now (a route just queued some)."""
        self._wake.set()

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=self.config.timeout_seconds + 2)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        connector = guarded_connector(
            allow_link_local=self.config.allow_link_local,
            how_to_allow=HOW_TO_ALLOW,
            limit=self.config.concurrency,
        )
        async with aiohttp.ClientSession(connector=connector, trust_env=False) as http:
            while not self._stop.is_set():
                try:
                    jobs = await loop.run_in_executor(
                        None, claim, self.engine, self.config, self.config.batch
                    )
                except Exception:  # the database is away: try again shortly
                    log.exception("claiming webhook deliveries failed")
                    jobs = []
                if jobs:
                    await asyncio.gather(*(self._one(http, job) for job in jobs))
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.config.poll_seconds)

    async def _one(self, http: aiohttp.ClientSession, job: Job) -> None:
        outcome = await post(http, job, self.config)
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, record, self.engine, self.config, job, outcome
            )
        except Exception:  # the lease ends and another attempt runs: at-least-once
            log.exception("recording webhook delivery %s failed", job.delivery_id)

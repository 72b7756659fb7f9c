"""Usage metering, the facade's side: read the gateways' usage streams from Redis and
store each record exactly once (kaizen_api.metering describes the records).

Delivery: every Gateway appends to its own stream; the facade reads them all through
one consumer group (``kaizen-facade``; each replica is a consumer). A record is
acknowledged (XACK, then XDEL) only after the transaction that inserted it committed.
The insert is idempotent on (namespace, uid), and the hourly and daily rollups are
incremented in the same transaction only for records that were new, so a record read
twice (the facade died between commit and XACK; a gateway appended again after Redis
came back empty) is counted once. Entries a dead consumer read but never acknowledged
are taken over with XAUTOCLAIM once idle for ``claim_idle_ms``.

Attribution: a record belongs to the organization and workspace whose namespace names
its stream. The per-tenant Redis ACL lets a gateway write only to its namespace's keys,
so a tenant cannot have usage counted against another organization.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from kaizen_api.metering import FIELD, STREAM_MATCH, UsageRecord, decode, stream_scope
from kaizen_api.server.budgets import BudgetPublisher
from kaizen_api.server.models import UsageRollup, UsageRow, Workspace

log = logging.getLogger("kaizen_api.usage")
GROUP = "kaizen-facade"
RECORDS = UsageRow.__table__  # type: ignore[attr-defined]
ROLLUPS = UsageRollup.__table__  # type: ignore[attr-defined]
DIMENSIONS = ("org_id", "workspace", "gateway", "kind", "name", "caller", "model", "outcome")
COUNTERS = ("requests", "tokens_in", "tokens_out", "tool_calls", "latency_ms", "cost_micro_usd")


def _hour(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def _day(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


PERIODS = {"hour": _hour, "day": _day}


def micro_usd(cost: float) -> int:
    return round(cost * 1_000_000)


class UsageStore:
    """The database side: idempotent inserts, rollups, retention."""

    def __init__(self, engine: Engine, mapping_ttl: float = 30.0) -> None:
        self.engine = engine
        self.mapping_ttl = mapping_ttl
        self._workspaces: dict[str, tuple[str, str]] = {}
        self._loaded = 0.0

    def workspace_of(self, namespace: str) -> tuple[str, str] | None:
        """(organization id, workspace name) of a workspace's namespace."""
        found = self._workspaces.get(namespace)
        # A namespace not known yet may be a workspace made since: reload, but at most
        # every few seconds (a gateway outside any workspace must not cost a query each).
        stale = time.monotonic() - self._loaded > (self.mapping_ttl if found else 5.0)
        if stale:
            with self.engine.connect() as db:
                table = Workspace.__table__  # type: ignore[attr-defined]
                rows = db.execute(select(table.c.namespace, table.c.org_id, table.c.name))
                self._workspaces = {ns: (org, name) for ns, org, name in rows}
            self._loaded = time.monotonic()
            found = self._workspaces.get(namespace)
        return found

    def _insert(self) -> Any:
        return postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert

    def ingest(self, records: Iterable[tuple[str, UsageRecord]]) -> int:
        """Store (namespace, record) pairs in one transaction; how many were new."""
        insert = self._insert()
        sums: dict[tuple[Any, ...], list[float]] = {}
        new = 0
        with self.engine.begin() as db:
            for namespace, rec in records:
                owner = self.workspace_of(namespace)
                at = datetime.fromtimestamp(rec.time, UTC)
                row = {
                    "uid": rec.uid,
                    "namespace": namespace,
                    "org_id": owner[0] if owner else None,
                    "workspace": owner[1] if owner else "",
                    "gateway": rec.gateway,
                    "kind": rec.kind,
                    "name": rec.name,
                    "revision": rec.revision,
                    "caller": rec.caller,
                    "model": rec.model,
                    "request_id": rec.request_id,
                    "time": at,
                    "tokens_in": rec.tokens_in,
                    "tokens_out": rec.tokens_out,
                    "tool_calls": rec.tool_calls,
                    "latency_ms": rec.latency_ms,
                    "cost_micro_usd": micro_usd(rec.cost_usd),
                    "status": rec.status,
                    "outcome": rec.outcome,
                }
                stmt = insert(RECORDS).values(**row)
                stmt = stmt.on_conflict_do_nothing(index_elements=["namespace", "uid"])
                inserted = db.execute(stmt.returning(RECORDS.c.id)).first() is not None
                if not inserted or owner is None:
                    continue  # seen before (redelivered), or outside every organization
                new += 1
                values = (
                    1,
                    rec.tokens_in,
                    rec.tokens_out,
                    rec.tool_calls,
                    rec.latency_ms,
                    micro_usd(rec.cost_usd),
                )
                dims = (owner[0], owner[1], rec.gateway, rec.kind, rec.name, rec.caller)
                for period, floor in PERIODS.items():
                    key = (period, floor(at), *dims, rec.model, rec.outcome)
                    acc = sums.setdefault(key, [0, 0, 0, 0, 0.0, 0])
                    for i, v in enumerate(values):
                        acc[i] += v
            # In a fixed order: two replicas updating the same buckets never deadlock.
            for key in sorted(sums, key=lambda k: (k[0], k[1].isoformat(), *k[2:])):
                counts = dict(zip(COUNTERS, sums[key], strict=True))
                stmt = insert(ROLLUPS).values(
                    period=key[0],
                    start=key[1],
                    **dict(zip(DIMENSIONS, key[2:], strict=True)),
                    **counts,
                )
                db.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["period", "start", *DIMENSIONS],
                        set_={c: ROLLUPS.c[c] + stmt.excluded[c] for c in COUNTERS},
                    )
                )
        return new

    def purge(self, retention_days: int) -> int:
        """Delete raw records older than ``retention_days`` (rollups are kept)."""
        cutoff = datetime.now(UTC) - timedelta(days=retention_days)
        with self.engine.begin() as db:
            return int(db.execute(delete(RECORDS).where(RECORDS.c.time < cutoff)).rowcount)


@dataclass
class ConsumerStats:
    stored: int = 0  # new records
    duplicates: int = 0  # read again, already stored
    rejected: int = 0  # not usage records (acknowledged and dropped, logged)
    claimed: int = 0  # taken over from a consumer that died


class UsageConsumer:
    """Reads every usage stream through the consumer group; run() in a thread."""

    def __init__(
        self,
        store: UsageStore,
        redis_url: str,
        *,
        consumer: str | None = None,
        batch: int = 500,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
        scan_seconds: float = 5.0,
        retention_days: int = 0,
        budget_seconds: float = 1.0,
    ) -> None:
        self.store = store
        self.budgets = BudgetPublisher(store.engine)
        self.budget_seconds = budget_seconds
        self._published = 0.0
        self._published_stored = -1
        self.client: Any = redis.Redis.from_url(
            redis_url, socket_timeout=max(5.0, block_ms / 1000 + 2), socket_connect_timeout=5
        )
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.batch, self.block_ms = batch, block_ms
        self.claim_idle_ms, self.scan_seconds = claim_idle_ms, scan_seconds
        self.retention_days = retention_days
        self.streams: set[str] = set()
        self.stats = ConsumerStats()
        self._scanned = 0.0
        self._purged = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ one round

    def discover(self) -> None:
        """Find the gateways' streams (SCAN), join each to the group, and take over
        entries another consumer read and never acknowledged."""
        found = {
            k.decode() if isinstance(k, bytes) else k
            for k in self.client.scan_iter(match=STREAM_MATCH, count=1000, _type="stream")
        }
        for key in sorted(found - self.streams):
            if stream_scope(key) is None:
                continue
            try:
                self.client.xgroup_create(key, GROUP, id="0")
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self.streams.add(key)
        for key in sorted(self.streams):
            start = "0-0"
            while True:
                answer = self.client.xautoclaim(
                    key, GROUP, self.consumer, self.claim_idle_ms, start, count=self.batch
                )
                start, entries = answer[0], answer[1]
                if entries:
                    self.stats.claimed += len(entries)
                    self.handle(key, entries)
                if start in (b"0-0", "0-0") or not entries:
                    break
        self._scanned = time.monotonic()

    def poll(self) -> int:
        """One round: new streams every ``scan_seconds``, then one blocking read; the
        number of entries handled."""
        if time.monotonic() - self._scanned >= self.scan_seconds or not self.streams:
            self.discover()
        if not self.streams:
            time.sleep(min(self.block_ms / 1000, 0.5))
            return 0
        try:
            answer = self.client.xreadgroup(
                GROUP,
                self.consumer,
                dict.fromkeys(sorted(self.streams), ">"),
                count=self.batch,
                block=self.block_ms,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.streams.clear()  # Redis lost the group (a restart): join again
            return 0
        handled = 0
        for key, entries in answer or []:
            handled += self.handle(key.decode() if isinstance(key, bytes) else key, entries)
        return handled

    def handle(self, key: str, entries: list[tuple[Any, Any]]) -> int:
        """Store a stream's entries, then acknowledge and delete them."""
        scope = stream_scope(key)
        namespace = scope[0] if scope else ""
        records, ids = [], []
        for entry_id, fields in entries:
            ids.append(entry_id)
            if fields is None:  # deleted while pending
                continue
            raw = fields.get(FIELD.encode()) or fields.get(FIELD)
            try:
                records.append((namespace, decode(raw or b"")))
            except ValueError as exc:
                self.stats.rejected += 1
                log.warning("dropped a malformed usage entry %s of %s: %s", entry_id, key, exc)
        new = self.store.ingest(records)
        self.stats.stored += new
        self.stats.duplicates += len(records) - new
        if ids:
            pipe = self.client.pipeline(transaction=False)
            pipe.xack(key, GROUP, *ids)
            pipe.xdel(key, *ids)
            pipe.execute()
        return len(ids)

    def publish_budgets(self, force: bool = False) -> None:
        """Used-up budgets to Redis: at most every ``budget_seconds`` after new records,
        and every 15 s anyway (budgets changed, a month began, a key was deleted)."""
        since = time.monotonic() - self._published
        fresh = self.stats.stored != self._published_stored
        if force or (fresh and since >= self.budget_seconds) or since >= 15:
            self.budgets.publish(self.client)
            self._published = time.monotonic()
            self._published_stored = self.stats.stored

    # ------------------------------------------------------------ the thread

    def run(self) -> None:
        """Poll until stop(); Redis or database failures are logged and retried."""
        down = False
        while not self._stop.is_set():
            try:
                self.poll()
                self.publish_budgets()
                if self.retention_days and time.monotonic() - self._purged > 3600:
                    self._purged = time.monotonic()
                    removed = self.store.purge(self.retention_days)
                    if removed:
                        log.info("purged %d usage record(s) past retention", removed)
                if down:
                    log.warning("usage consumer: reading again")
                    down = False
            except (RedisError, OSError, RedisConnectionError) as exc:
                if not down:
                    log.warning("usage consumer: redis unavailable (%r); retrying", exc)
                down = True
                self.streams.clear()  # groups may be gone after a Redis restart
                self._stop.wait(1.0)
            except Exception:  # the database: nothing acknowledged, read again later
                log.exception("usage consumer: storing failed; retrying")
                down = True
                self._stop.wait(1.0)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="usage-consumer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.block_ms / 1000 + 10)
        self.client.close()

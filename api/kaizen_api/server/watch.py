"""Events from the resources' real state changes: a watch on the apiserver per kind.

Every replica watches (no leader election needed): the events an object's state implies
have ids made from that state (``events.derive``), so two replicas, or one replica
after a relist, record each event once (``INSERT ... ON CONFLICT DO NOTHING``) and
queue its deliveries once.

Restarts leave no gap: the resourceVersion up to which a kind was turned into events
is kept in ``watch_cursors``, written in the same transaction as the events of that
change, and the watch resumes from it. When the apiserver no longer has that version
(``410 Gone``), the kind is listed again and every object's current state derived
(already-recorded events are skipped). The first start of all lists without
delivering: what already exists is a baseline, not news.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, select

from kaizen_api.server.db import session
from kaizen_api.server.events import derive, emit_derived
from kaizen_api.server.kube import Kube, KubeError
from kaizen_api.server.models import Workspace
from kaizen_api.server.webhook_tables import WatchCursor

log = logging.getLogger("kaizen_api.watch")
GROUP = "/apis/kaizen.studio/v1alpha1"
# kind -> plural (Pipeline may not be installed yet: its watch waits for the CRD)
KINDS = {
    "Agent": "agents",
    "Pipeline": "pipelines",
    "Gateway": "gateways",
    "Promotion": "promotions",
    "ScalingPolicy": "scalingpolicies",
}
WATCH_SECONDS = 290
MISSING_KIND_RETRY = 30.0


class Gone(Exception):
    """The recorded resourceVersion is too old (410): list again."""


def load_cursor(engine: Engine, kind: str) -> str | None:
    with session(engine) as db:
        row = db.get(WatchCursor, kind)
        return row.resource_version if row else None


def save_cursor(db: Session, kind: str, resource_version: str) -> None:
    """Upsert (both replicas write it; either value is a correct resume point)."""
    values = {"kind": kind, "resource_version": resource_version, "updated_at": datetime.now(UTC)}
    table = WatchCursor.__table__  # type: ignore[attr-defined]
    if db.get_bind().dialect.name == "postgresql":
        stmt: Any = postgresql.insert(table).values(**values)
    else:
        stmt = sqlite.insert(table).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["kind"],
        set_={"resource_version": resource_version, "updated_at": values["updated_at"]},
    )
    db.execute(stmt)


def observe(
    engine: Engine,
    kind: str,
    obj: dict[str, Any] | None,
    resource_version: str | None,
    *,
    deliver: bool = True,
) -> int:
    """Record the events ``obj``'s state implies and move the cursor, in one
    transaction; how many events were new."""
    new = 0
    with session(engine) as db:
        if obj is not None:
            meta = obj.get("metadata") or {}
            ws = db.exec(
                select(Workspace).where(Workspace.namespace == meta.get("namespace", ""))
            ).first()
            if ws is not None:  # namespaces outside workspaces belong to no tenant
                new = emit_derived(
                    db, ws, str(meta.get("uid", "")), derive(kind, obj), deliver=deliver
                )
        if resource_version:
            save_cursor(db, kind, resource_version)
    return new


class Watcher:
    """One watch per kind, resumed from its cursor; runs until stopped."""

    def __init__(self, engine: Engine, kube: Kube, on_new: Any = None) -> None:
        self.engine, self.kube = engine, kube
        self.on_new = on_new  # called when events were queued (wakes the deliverer)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        for kind, plural in KINDS.items():
            self._tasks.append(asyncio.create_task(self._run(kind, plural), name=f"watch-{kind}"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _db(self, fn: Any, *args: Any, **kw: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: fn(*args, **kw))

    async def _run(self, kind: str, plural: str) -> None:
        path = f"{GROUP}/{plural}"
        while True:
            try:
                rv = await self._db(load_cursor, self.engine, kind)
                if rv is None:
                    rv = await self._relist(kind, path, deliver=False)
                await self._watch(kind, path, rv)
            except Gone:
                log.info("watch of %s: resourceVersion gone, listing again", kind)
                await self._relist(kind, path, deliver=True)
            except asyncio.CancelledError:
                raise
            except KubeError as exc:
                if exc.status == 404:  # the kind's CRD is not installed (yet)
                    await asyncio.sleep(MISSING_KIND_RETRY)
                else:
                    log.warning("watch of %s: %s", kind, exc)
                    await asyncio.sleep(2)
            except Exception:
                log.exception("watch of %s failed; starting again", kind)
                await asyncio.sleep(2)

    async def _relist(self, kind: str, path: str, *, deliver: bool) -> str:
        token: str | None = None
        new = 0
        while True:
            params = {"limit": "500", **({"continue": token} if token else {})}
            page, _ = await self.kube.arequest("GET", path, params=params)
            for item in page.get("items") or []:
                new += await self._db(observe, self.engine, kind, item, None, deliver=deliver)
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                rv = str((page.get("metadata") or {}).get("resourceVersion", ""))
                break
        await self._db(observe, self.engine, kind, None, rv)
        if new and self.on_new:
            self.on_new()
        return rv

    async def _watch(self, kind: str, path: str, rv: str) -> None:
        params = {
            "watch": "1",
            "resourceVersion": rv,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_SECONDS),
        }
        async for line in self.kube.watch_lines(path, params, WATCH_SECONDS):
            if not line.strip():
                continue
            event = orjson.loads(line)
            obj = event.get("object") or {}
            if event.get("type") == "ERROR":
                if obj.get("code") == 410:
                    raise Gone()
                raise KubeError(int(obj.get("code") or 500), "WatchError", str(obj.get("message")))
            version = str((obj.get("metadata") or {}).get("resourceVersion", ""))
            if event.get("type") in ("ADDED", "MODIFIED"):
                new = await self._db(observe, self.engine, kind, obj, version)
                if new and self.on_new:
                    self.on_new()
            else:  # BOOKMARK, DELETED: only the cursor moves
                await self._db(observe, self.engine, kind, None, version)

"""Usage metering: one record per served request, appended to the Gateway's Redis stream
(``kaizen_api.metering``) for the facade to store exactly once.

``UsageMeter.record`` never waits: the record joins a bounded buffer that a background
task appends to Redis at once (a pipeline of XADDs per batch). While Redis is away the
buffer holds up to ``max_buffer`` records (the oldest are dropped past that, counted in
``kaizen_gateway_usage_dropped_total``; ``kaizen_gateway_usage_buffered`` says how many
wait). ``DeliveredBeforeAnswer`` holds the last bytes of each response until that
request's record is in Redis (one batched round trip), so a gateway killed after
answering has not lost the record; while Redis is unavailable answers do not wait.

Records appended in the last ``replay_seconds`` are kept too: when Redis comes
back *empty* (restarted without persistence: this replica's marker key is gone) they
are appended again, and the facade's idempotent insert drops the ones it already had.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from contextvars import ContextVar
from typing import Any

from kaizen_api.metering import FIELD, UsageRecord, stream_key
from kaizen_gateway import metrics
from kaizen_gateway.redislink import RedisLink, RedisUnavailable

log = logging.getLogger("kaizen_gateway.usage")
BATCH = 500
MARKER_TTL_SECONDS = 86_400
Entry = tuple[str, UsageRecord, "asyncio.Future[bool] | None"]
# The records of the request being served (see DeliveredBeforeAnswer).
_PENDING: ContextVar[list[asyncio.Future[bool]] | None] = ContextVar("usage", default=None)


def new_uid() -> str:
    """The record's idempotency key: random, made here (never the caller's request id)."""
    return f"{random.getrandbits(128):032x}"


def outcome_label(status: int, code: str | None) -> str:
    """ "ok", or what went wrong: the error's code, else ``http_<status>``."""
    if status < 400:
        return "ok"
    return code or f"http_{status}"


class UsageMeter:
    """Buffers this process's usage records and appends them to Redis."""

    def __init__(
        self,
        link: RedisLink | None,
        *,
        max_buffer: int = 100_000,
        replay_seconds: float = 300.0,
    ) -> None:
        self.link = link
        self.max_buffer = max_buffer
        self.replay_seconds = replay_seconds
        self.buffer: deque[Entry] = deque()
        self.sent: deque[tuple[float, str, UsageRecord]] = deque()  # kept for a replay
        self.marker = f"{random.getrandbits(64):016x}"  # this replica's
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._marked = False  # the marker was set once: its absence means Redis was emptied

    def record(self, namespace: str, rec: UsageRecord) -> None:
        """Queue one record for the stream of ``namespace``/``rec.gateway``."""
        if self.link is None:
            metrics.USAGE_DROPPED.labels("no_redis").inc()
            return
        if len(self.buffer) >= self.max_buffer:
            _, _, dropped = self.buffer.popleft()
            _settle(dropped, False)
            metrics.USAGE_DROPPED.labels("buffer_full").inc()
        waiting = _PENDING.get()
        done: asyncio.Future[bool] | None = None
        if waiting is not None:
            done = asyncio.get_running_loop().create_future()
            waiting.append(done)
        self.buffer.append((stream_key(namespace, rec.gateway), rec, done))
        metrics.USAGE_BUFFERED.set(len(self.buffer))
        self._wake.set()

    def start(self) -> None:
        if self.link is not None and self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self, grace: float = 2.0) -> None:
        """Append what is buffered (within ``grace`` seconds), then stop."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                while self.buffer and await self.flush():
                    pass
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self.buffer:
            log.warning("%d usage record(s) not appended at shutdown", len(self.buffer))

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self.buffer:
                if not await self.flush():
                    await asyncio.sleep(self.link.pause if self.link else 1.0)

    async def flush(self) -> bool:
        """Append up to one batch; False when Redis is unavailable (the batch stays)."""
        if self.link is None or not self.buffer:
            return True
        batch = [self.buffer[i] for i in range(min(BATCH, len(self.buffer)))]
        marker = f"{batch[0][0]}:meter:{self.marker}"
        try:
            emptied = await self.link.call(lambda client: self._append(client, marker, batch))
        except RedisUnavailable:
            for _, _, done in batch:  # the answers go out; the records stay buffered
                _settle(done, False)
            return False
        for _, _, done in batch:
            self.buffer.popleft()
            _settle(done, True)
        now = time.monotonic()
        self.sent.extend((now, key, rec) for key, rec, _ in batch)
        while self.sent and (
            self.sent[0][0] < now - self.replay_seconds or len(self.sent) > self.max_buffer
        ):
            self.sent.popleft()
        if emptied:
            self._replay(now)
        metrics.USAGE_BUFFERED.set(len(self.buffer))
        metrics.USAGE_APPENDED.inc(len(batch))
        return True

    async def _append(self, client: Any, marker: str, batch: list[Entry]) -> bool:
        pipe = client.pipeline(transaction=False)
        pipe.exists(marker)
        for key, rec, _ in batch:
            pipe.xadd(key, {FIELD: rec.encode()})
        pipe.set(marker, "1", ex=MARKER_TTL_SECONDS)
        answers = await pipe.execute()
        emptied = self._marked and not answers[0]
        self._marked = True
        return emptied

    def _replay(self, now: float) -> None:
        """Redis lost its data: append the recently sent records again (before the ones
        still buffered); the facade keeps one of each."""
        again: list[Entry] = [
            (key, rec, None) for stamp, key, rec in self.sent if stamp >= now - self.replay_seconds
        ]
        log.warning("redis came back empty: appending %d recent usage records again", len(again))
        metrics.USAGE_REPLAYED.inc(len(again))
        self.sent.clear()
        self.buffer.extendleft(reversed(again))
        self._wake.set()


def _settle(done: asyncio.Future[bool] | None, appended: bool) -> None:
    if done is not None and not done.done():
        done.set_result(appended)


class DeliveredBeforeAnswer:
    """ASGI middleware: the last body message of a response waits (at most ``wait``
    seconds) until the usage records made while serving it are appended to Redis, or
    Redis was found unavailable (then they stay buffered and the answer goes out)."""

    def __init__(self, app: Any, meter: UsageMeter, wait: float) -> None:
        self.app, self.meter, self.wait = app, meter, wait

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.meter.link is None:
            await self.app(scope, receive, send)
            return
        pending: list[asyncio.Future[bool]] = []
        token = _PENDING.set(pending)

        async def guarded(message: Any) -> None:
            last = message["type"] == "http.response.body" and not message.get("more_body")
            if last and pending:
                await asyncio.wait(list(pending), timeout=self.wait)
                pending.clear()
            await send(message)

        try:
            await self.app(scope, receive, guarded)
        finally:
            _PENDING.reset(token)

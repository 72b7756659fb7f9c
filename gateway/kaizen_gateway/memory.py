"""Conversation memory in Redis: the last ``maxTurns`` turns of a conversation and, for
``memory.type: summary``, a rolling summary of older turns written by the agent's model.

A conversation is named by the caller (``x-kaizen-conversation-id`` header, or
``conversationId`` in the native invoke body) and stored under a key made of the
Gateway (namespace/name), the agent, the caller's identity and that name, so another
agent, gateway or API key never reads or continues it. Each turn (the caller's new
messages and the answer) is one element of a Redis list; every write re-arms the
conversation's TTL. Redis failures raise ``RedisUnavailable`` from ``RedisLink``;
``recall``/``remember`` turn them into "skipped" (the request is served without
memory), the documented fail-open rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from kaizen_api.v1alpha1.agent import MemorySpec, MemoryType
from kaizen_api.v1alpha1.bundle import BundledAgent
from kaizen_api.v1alpha1.common import parse_duration
from kaizen_gateway import metrics
from kaizen_gateway.errors import GatewayError
from kaizen_gateway.redislink import RedisLink, RedisUnavailable

log = logging.getLogger("kaizen_gateway.memory")

CONVERSATION_HEADER = "x-kaizen-conversation-id"
MEMORY_HEADER = "x-kaizen-memory"  # used | skipped | off
CONVERSATION_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
ANONYMOUS = "anonymous"  # the caller identity when the Gateway's auth mode is None
KEPT_FIELDS = ("role", "content", "name", "tool_calls", "tool_call_id")
# Older turns kept while summaries cannot be written (the model down): bounded anyway.
SUMMARY_BACKLOG = 50
SUMMARY_LOCK_MS = 120_000
# A turn larger than this is answered but not stored: a conversation then holds at most
# maxTurns x 256 KiB, and one caller cannot fill a shared Redis with megabyte turns.
MAX_TURN_BYTES = 256 * 1024

SUMMARY_INSTRUCTIONS = (
    "You keep the memory of a conversation between a user and an assistant. Rewrite the "
    "summary so far to also cover the new turns. Keep every fact, name, number, decision, "
    "preference and open question the assistant needs to continue the conversation; drop "
    "small talk. Answer with the summary only, in at most 200 words."
)

Summarise = Callable[[list[dict[str, Any]]], Awaitable[str]]


def caller_identity(api_key: str | None) -> str:
    """Whose conversations these are: a hash of the API key, or ``anonymous`` when the
    Gateway does not authenticate callers (then only the conversation id separates them)."""
    if not api_key:
        return ANONYMOUS
    return hashlib.sha256(api_key.encode()).hexdigest()[:32]


def check_conversation_id(value: Any, param: str) -> str:
    """The caller's conversation id, or the caller's 400 naming ``param``."""
    if not isinstance(value, str) or not CONVERSATION_ID.fullmatch(value):
        raise GatewayError(
            400,
            f"{param} must be 1 to 128 characters of letters, digits, '.', '_', ':' or '-'",
            param=param,
        )
    return value


@dataclass(frozen=True)
class Conversation:
    """One conversation of one caller with one agent on one Gateway."""

    agent: str
    key: str  # Redis key prefix: <prefix>:turns, <prefix>:summary, <prefix>:lock
    spec: MemorySpec
    ttl_seconds: int

    @property
    def turns_key(self) -> str:
        return f"{self.key}:turns"

    @property
    def summary_key(self) -> str:
        return f"{self.key}:summary"


@dataclass
class Recall:
    """What memory gives one request: messages to put before the caller's, and how."""

    status: str  # used | skipped | off ("" when no conversation was named)
    messages: list[dict[str, Any]] = field(default_factory=list)
    conversation: Conversation | None = None

    def headers(self) -> dict[str, str]:
        return {MEMORY_HEADER: self.status} if self.status else {}

    def native(self, conversation_id: Any) -> dict[str, Any]:
        """The native answer's memory fields."""
        return {"conversationId": conversation_id, "memory": self.status} if self.status else {}


def _turn(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: m[k] for k in KEPT_FIELDS if k in m} for m in messages]


def _recalled(summary: bytes | None, raw_turns: list[bytes]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if summary:
        messages.append(
            {
                "role": "system",
                "content": "Summary of the earlier conversation:\n" + summary.decode(),
            }
        )
    # One parse of all turns (each stored as a JSON list of messages), not one per turn.
    turns = [m for turn in orjson.loads(b"[" + b",".join(raw_turns) + b"]") for m in turn]
    # A trimmed history must not start with tool results whose call was cut off.
    while turns and turns[0].get("role") == "tool":
        turns.pop(0)
    return messages + turns


def _transcript(turns: list[list[dict[str, Any]]]) -> str:
    lines = []
    for turn in turns:
        for m in turn:
            content = m.get("content")
            if isinstance(content, list):
                content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            if content:
                lines.append(f"{m.get('role')}: {content}")
    return "\n".join(lines)


def summary_request(
    previous: str | None, turns: list[list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """The messages that ask the agent's model for the new rolling summary."""
    return [
        {"role": "system", "content": SUMMARY_INSTRUCTIONS},
        {
            "role": "user",
            "content": f"Summary so far:\n{previous or '(none)'}\n\nNew turns:\n"
            + _transcript(turns),
        },
    ]


class ConversationMemory:
    """Recall and remember turns; ``link`` is None when the gateway has no Redis."""

    def __init__(self, link: RedisLink | None, prefix: str = "kaizen:mem:v1") -> None:
        self.link = link
        self.prefix = prefix
        self._tasks: set[asyncio.Task[None]] = set()

    def conversation(
        self, scope: str, agent: BundledAgent, caller: str, conversation_id: str
    ) -> Conversation | None:
        """The conversation's keys, or None when the agent keeps no memory."""
        spec = agent.spec.context.memory if agent.spec.context else None
        if spec is None or spec.type == MemoryType.NONE:
            return None
        # The {...} hash tag keeps a conversation's keys in one Redis Cluster slot.
        key = f"{self.prefix}:{{{scope}:{agent.name}:{caller}:{conversation_id}}}"
        return Conversation(agent.name, key, spec, int(parse_duration(spec.ttl)))

    async def recall(
        self, scope: str, agent: BundledAgent, caller: str, conversation_id: str | None
    ) -> Recall:
        """The remembered messages of a conversation (fail open: skipped when Redis is not)."""
        if conversation_id is None:
            return Recall("")
        conv = self.conversation(scope, agent, caller, conversation_id)
        if conv is None:
            return Recall("off")
        if self.link is None:
            metrics.MEMORY_SKIPPED.labels(agent.name, "not_configured").inc()
            return Recall("skipped")
        started = time.perf_counter()

        async def read(client: Any) -> tuple[bytes | None, list[bytes]]:
            if conv.spec.type != MemoryType.SUMMARY:  # one command, no pipeline: faster
                return None, await client.lrange(conv.turns_key, -conv.spec.max_turns, -1)
            async with client.pipeline(transaction=False) as pipe:
                pipe.get(conv.summary_key)
                pipe.lrange(conv.turns_key, -conv.spec.max_turns, -1)
                summary, turns = await pipe.execute()
            return summary, turns

        try:
            summary, turns = await self.link.call(read)
        except RedisUnavailable:
            metrics.MEMORY_SKIPPED.labels(agent.name, "redis_unavailable").inc()
            return Recall("skipped")
        metrics.MEMORY_LATENCY.labels(agent.name, "recall").observe(time.perf_counter() - started)
        return Recall("used", _recalled(summary, turns), conv)

    async def remember(
        self,
        recall: Recall,
        new_messages: list[dict[str, Any]],
        answer: dict[str, Any],
        summarise: Summarise,
    ) -> None:
        """Append one turn (the caller's non-system messages and the answer); in summary
        mode, fold turns beyond maxTurns into the summary in the background."""
        conv = recall.conversation
        if conv is None or self.link is None or recall.status != "used":
            return
        turn = _turn([m for m in new_messages if m.get("role") != "system"] + [answer])
        try:
            encoded = orjson.dumps(turn)
        except TypeError:  # e.g. an integer past 64 bits, which orjson refuses
            encoded = json.dumps(turn).encode()
        if len(encoded) > MAX_TURN_BYTES:
            metrics.MEMORY_SKIPPED.labels(conv.agent, "turn_too_large").inc()
            log.warning("agent %s: a %d-byte turn was not remembered", conv.agent, len(encoded))
            return
        keep = conv.spec.max_turns
        if conv.spec.type == MemoryType.SUMMARY:
            keep += SUMMARY_BACKLOG
        started = time.perf_counter()

        async def write(client: Any) -> int:
            # One round trip, no MULTI: another replica's turn landing in between is
            # harmless (every trim keeps the newest turns, every expiry is the same).
            async with client.pipeline(transaction=False) as pipe:
                pipe.rpush(conv.turns_key, encoded)
                pipe.ltrim(conv.turns_key, -keep, -1)
                pipe.expire(conv.turns_key, conv.ttl_seconds)
                if conv.spec.type == MemoryType.SUMMARY:
                    pipe.expire(conv.summary_key, conv.ttl_seconds)
                length, *_ = await pipe.execute()
            return int(length)

        try:
            length = await self.link.call(write)
        except RedisUnavailable:
            metrics.MEMORY_SKIPPED.labels(conv.agent, "redis_unavailable").inc()
            return
        metrics.MEMORY_LATENCY.labels(conv.agent, "remember").observe(time.perf_counter() - started)
        if conv.spec.type == MemoryType.SUMMARY and length > conv.spec.max_turns:
            task = asyncio.create_task(self._summarise(self.link, conv, summarise))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _summarise(self, link: RedisLink, conv: Conversation, summarise: Summarise) -> None:
        """Fold the turns beyond the newest maxTurns into the summary: one model call.
        A lock keeps two replicas from folding the same turns twice."""
        lock = f"{conv.key}:lock"
        try:
            if not await link.call(lambda c: c.set(lock, b"1", nx=True, px=SUMMARY_LOCK_MS)):
                return  # another request is folding this conversation right now

            async def read(client: Any) -> tuple[bytes | None, list[bytes]]:
                async with client.pipeline(transaction=False) as pipe:
                    pipe.get(conv.summary_key)
                    pipe.lrange(conv.turns_key, 0, -conv.spec.max_turns - 1)
                    summary, old = await pipe.execute()
                return summary, old

            summary, old = await link.call(read)
            if not old:
                await link.call(lambda c: c.delete(lock))
                return
            previous = summary.decode() if summary else None
            turns = [json.loads(raw) for raw in old]
            try:
                text = (await summarise(summary_request(previous, turns))).strip()
            except GatewayError as exc:
                metrics.MEMORY_SUMMARIES.labels(conv.agent, "model_error").inc()
                log.warning("agent %s: summary not written: %s", conv.agent, exc.message)
                await link.call(lambda c: c.delete(lock))
                return

            async def fold(client: Any) -> None:
                # Turns are only appended at the tail, and only this lock holder removes
                # from the head, so the first len(old) elements are the ones summarised.
                async with client.pipeline(transaction=True) as pipe:
                    pipe.set(conv.summary_key, text.encode(), ex=conv.ttl_seconds)
                    pipe.ltrim(conv.turns_key, len(old), -1)
                    pipe.delete(lock)
                    await pipe.execute()

            await link.call(fold)
            metrics.MEMORY_SUMMARIES.labels(conv.agent, "written").inc()
        except RedisUnavailable:
            metrics.MEMORY_SUMMARIES.labels(conv.agent, "redis_unavailable").inc()
        except Exception:  # a background task: log it rather than lose it (the lock expires)
            metrics.MEMORY_SUMMARIES.labels(conv.agent, "error").inc()
            log.exception("agent %s: summary not written", conv.agent)

    async def read(self, conv: Conversation) -> dict[str, Any] | None:
        """The stored conversation (summary, turns, seconds to expiry), None if absent."""
        if self.link is None:
            raise RedisUnavailable("no Redis configured")

        async def get(client: Any) -> tuple[bytes | None, list[bytes], int]:
            async with client.pipeline(transaction=False) as pipe:
                pipe.get(conv.summary_key)
                pipe.lrange(conv.turns_key, 0, -1)
                pipe.ttl(conv.turns_key)
                summary, turns, ttl = await pipe.execute()
            return summary, turns, int(ttl)

        summary, turns, ttl = await self.link.call(get)
        if not turns and not summary:
            return None
        return {
            "summary": summary.decode() if summary else None,
            "turns": [json.loads(raw) for raw in turns],
            "expiresInSeconds": ttl,
        }

    async def forget(self, conv: Conversation) -> bool:
        """Delete a conversation; True when there was one."""
        if self.link is None:
            raise RedisUnavailable("no Redis configured")
        deleted = await self.link.call(
            lambda c: c.delete(conv.turns_key, conv.summary_key, f"{conv.key}:lock")
        )
        return bool(deleted)

    async def close(self, timeout: float = 10.0) -> None:
        """Let summaries in flight finish (bounded)."""
        if self._tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*self._tasks, return_exceptions=True), timeout
                )

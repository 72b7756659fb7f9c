"""Token-bucket rate limits, for all callers and per API key: in this process
(``TokenBucket``), or shared by all replicas in Redis (``SharedBuckets``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` at once."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    stamp: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = self.burst
        self.stamp = time.monotonic()

    def take(self) -> float:
        """Take one token; 0.0 when allowed, else seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class KeyedBuckets:
    """One bucket per key, created on first use."""

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self.buckets: dict[str, TokenBucket] = {}

    def take(self, key: str) -> float:
        bucket = self.buckets.pop(key, None)
        if bucket is None:
            if len(self.buckets) >= self.max_keys:
                # Bounded memory under key floods: the least recently used key goes,
                # one at a time (clearing all would reset every caller's limit).
                del self.buckets[next(iter(self.buckets))]
            bucket = TokenBucket(self.rate, self.burst)
        self.buckets[key] = bucket  # most recently used last
        return bucket.take()


# One token bucket per KEYS[i] with (rate, burst) in ARGV[2i-1], ARGV[2i], refilled from
# the Redis server's clock (so replicas' clocks do not matter). A token is taken only
# when every bucket has one, so a request refused by one limit costs the others nothing.
# Returns "<seconds to wait> <1-based index of the limiting bucket>", "0 0" when allowed
# (a string: Lua numbers returned to Redis become integers).
SHARED_BUCKETS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state, wait, which = {}, 0, 0
for i, key in ipairs(KEYS) do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local b = redis.call('HMGET', key, 'tokens', 'stamp')
  local tokens = tonumber(b[1]) or burst
  local stamp = tonumber(b[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
  state[i] = tokens
  if tokens < 1 and (1 - tokens) / rate > wait then
    wait, which = (1 - tokens) / rate, i
  end
end
for i, key in ipairs(KEYS) do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local tokens = state[i]
  if wait == 0 then tokens = tokens - 1 end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'stamp', tostring(now))
  redis.call('PEXPIRE', key, math.ceil(burst / rate * 1000) + 1000)
end
return tostring(wait) .. ' ' .. which
"""


class SharedBuckets:
    """Token buckets in Redis, shared by every replica of a Gateway."""

    def __init__(self, client: Any) -> None:
        self.script = client.register_script(SHARED_BUCKETS)

    async def take(
        self, client: Any, buckets: Sequence[tuple[str, float, float]]
    ) -> tuple[float, int]:
        """Take one token from each (key, rate, burst): (0.0, -1) when allowed, else the
        seconds to wait and the index of the bucket that refused. ``client`` is the one
        ``RedisLink.call`` hands over."""
        args = [v for _, rate, burst in buckets for v in (rate, burst)]
        answer = await self.script(keys=[k for k, _, _ in buckets], args=args, client=client)
        wait, which = answer.split()
        return float(wait), int(which) - 1

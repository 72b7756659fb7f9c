"""How the facade delivers webhooks and watches resources (``Settings.webhooks``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

# About a day: 5s, 30s, 2m, 10m, 30m, 1h, 2h, 4h, 8h, 8h (23.4 h in all), each +-20%.
DEFAULT_SCHEDULE = (5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 28800.0)


def _floats(raw: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in raw.split(",") if v.strip())
    except ValueError as exc:
        raise ValueError(
            f"KAIZEN_WEBHOOK_RETRY_SCHEDULE={raw!r}: give seconds between attempts, "
            "comma-separated (e.g. 5,30,120)"
        ) from exc
    if not values or any(v < 0 for v in values):
        raise ValueError(f"KAIZEN_WEBHOOK_RETRY_SCHEDULE={raw!r}: at least one delay, none < 0")
    return values


@dataclass(frozen=True)
class WebhookConfig:
    """Retries, leases, limits and the watch of the event model."""

    # Seconds before each retry; after the last one a delivery is failed.
    retry_schedule: tuple[float, ...] = DEFAULT_SCHEDULE
    jitter: float = 0.2  # each delay is multiplied by a random factor in [1-j, 1+j]
    # A claimed delivery is due again after this long (a replica died mid-POST).
    lease_seconds: float = 60.0
    timeout_seconds: float = 10.0  # per POST
    max_response_bytes: int = 4096  # read of a receiver's answer (kept in the error)
    # A subscription whose deliveries have failed without a success for this long is
    # disabled when one more delivery uses up its retries.
    disable_after_seconds: float = 5 * 24 * 3600.0
    poll_seconds: float = 1.0  # how often an idle replica looks for due deliveries
    batch: int = 20  # deliveries one replica claims at a time
    concurrency: int = 20  # POSTs in flight per replica
    rotation_overlap_seconds: float = 24 * 3600.0  # default overlap of a rotation
    watch: bool = True  # derive events from the apiserver's resources
    deliver: bool = True  # run the delivery worker in this process
    # Receivers may be link-local or metadata addresses (an operator's explicit choice).
    allow_link_local: bool = False

    @classmethod
    def from_env(cls) -> WebhookConfig:
        """KAIZEN_WEBHOOK_* (docs/webhooks.md lists them)."""
        env = os.environ.get
        schedule = env("KAIZEN_WEBHOOK_RETRY_SCHEDULE")
        return cls(
            retry_schedule=_floats(schedule) if schedule else cls.retry_schedule,
            jitter=float(env("KAIZEN_WEBHOOK_JITTER", cls.jitter)),
            lease_seconds=float(env("KAIZEN_WEBHOOK_LEASE", cls.lease_seconds)),
            timeout_seconds=float(env("KAIZEN_WEBHOOK_TIMEOUT", cls.timeout_seconds)),
            disable_after_seconds=float(
                env("KAIZEN_WEBHOOK_DISABLE_AFTER", cls.disable_after_seconds)
            ),
            poll_seconds=float(env("KAIZEN_WEBHOOK_POLL", cls.poll_seconds)),
            watch=env("KAIZEN_WEBHOOK_WATCH", "true").lower() not in ("0", "false", "no"),
            deliver=env("KAIZEN_WEBHOOK_DELIVER", "true").lower() not in ("0", "false", "no"),
            allow_link_local=env("KAIZEN_WEBHOOK_ALLOW_LINK_LOCAL", "").lower()
            in ("1", "true", "yes"),
        )

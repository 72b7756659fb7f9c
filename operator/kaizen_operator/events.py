"""Kubernetes Events about our objects (posted by kopf in the background)."""

from __future__ import annotations

from typing import Any, cast

import kopf


def record(obj: dict[str, Any], reason: str, message: str, *, warning: bool = False) -> None:
    """Post an Event on ``obj``; never put secret values in ``message``."""
    kopf.event(
        cast(kopf.Body, obj),
        type="Warning" if warning else "Normal",
        reason=reason,
        message=message[:1024],
    )

"""The agent bundle file: load, validate with the API models, and hot-reload on change.

A ConfigMap volume changes by swapping a symlink, so the watcher compares the
file's content hash, not its mtime. A bundle that fails validation is rejected
and the last good one keeps serving (the error is logged and counted).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from kaizen_api.v1alpha1.bundle import AgentBundle, BundledAgent

log = logging.getLogger("kaizen_gateway.bundle")


@dataclass(frozen=True)
class LoadedBundle:
    """A validated bundle and its content hash."""

    bundle: AgentBundle
    digest: str
    agents: dict[str, BundledAgent] = field(default_factory=dict)


def load_bundle(path: Path) -> LoadedBundle:
    """Read and validate the bundle file (raises ValueError with the reason)."""
    raw = path.read_bytes()
    try:
        bundle = AgentBundle.model_validate(json.loads(raw))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ValueError(f"invalid bundle {path}: {exc}") from exc
    return LoadedBundle(
        bundle, hashlib.sha256(raw).hexdigest()[:16], {a.name: a for a in bundle.agents}
    )


class BundleHolder:
    """The bundle currently served; swapped atomically, so in-flight requests keep theirs."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.current: LoadedBundle | None = None
        self.last_error: str | None = None
        self.reloads = 0

    def reload(self) -> bool:
        """Load the file if it changed; True when a new bundle is now served."""
        try:
            loaded = load_bundle(self.path)
        except (OSError, ValueError) as exc:
            self.last_error = str(exc)
            log.error("bundle not loaded: %s", exc)
            return False
        self.last_error = None
        if self.current is not None and self.current.digest == loaded.digest:
            return False
        self.current = loaded
        self.reloads += 1
        log.info("serving bundle %s with agents %s", loaded.digest, sorted(loaded.agents))
        return True

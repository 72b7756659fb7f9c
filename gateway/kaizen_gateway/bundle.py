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

from kaizen_api.v1alpha1.bundle import AgentBundle, BundledAgent, BundledPipeline

log = logging.getLogger("kaizen_gateway.bundle")


@dataclass(frozen=True)
class LoadedBundle:
    """A validated bundle and its content hash."""

    bundle: AgentBundle
    digest: str
    agents: dict[str, BundledAgent] = field(default_factory=dict)
    pipelines: dict[str, BundledPipeline] = field(default_factory=dict)
    pinned: dict[tuple[str, int], BundledAgent] = field(default_factory=dict)
    # Pipelines the bundle carries but this gateway refuses to serve, with the reason
    # (reported on /readyz).
    refused: dict[str, str] = field(default_factory=dict)

    def agent_at(self, name: str, revision: int | None) -> BundledAgent | None:
        """An agent as a pipeline step calls it: the served one (unpinned, or pinned at
        the revision served), else the pinned revision the bundle carries."""
        served = self.agents.get(name)
        if served is not None and (revision is None or served.revision == revision):
            return served
        return self.pinned.get((name, revision)) if revision is not None else None

    def unresolved(self) -> dict[str, list[str]]:
        """Served pipelines whose steps call what this bundle does not have, with the
        steps (reported on /readyz; such a step fails when it runs)."""
        found: dict[str, list[str]] = {}
        for pipeline in self.pipelines.values():
            for step in pipeline.spec.targets():
                ref = step.agent_ref
                if ref is not None and self.agent_at(ref.name, ref.revision) is None:
                    at = f" at revision {ref.revision}" if ref.revision else ""
                    missing = f"step {step.name!r}: agent {ref.name!r}{at} is not in the bundle"
                elif step.pipeline_ref is not None and step.pipeline_ref.name not in self.pipelines:
                    missing = (
                        f"step {step.name!r}: pipeline {step.pipeline_ref.name!r} is not served"
                    )
                else:
                    continue
                found.setdefault(pipeline.name, []).append(missing)
        return found


def _pipelines(bundle: AgentBundle) -> tuple[dict[str, BundledPipeline], dict[str, str]]:
    """The pipelines served, and the refused ones: a pipeline named like a served agent
    is refused, because the agent already answers to that model name."""
    served, refused = {}, {}
    agents = {a.name for a in bundle.agents}
    for pipeline in bundle.pipelines:
        if pipeline.name in agents:
            refused[pipeline.name] = (
                f"an agent of this gateway is named {pipeline.name!r}: the agent is served "
                "under that model name and the pipeline is not (rename one of them)"
            )
        else:
            served[pipeline.name] = pipeline
    return served, refused


def load_bundle(path: Path) -> LoadedBundle:
    """Read and validate the bundle file (raises ValueError with the reason)."""
    raw = path.read_bytes()
    try:
        bundle = AgentBundle.model_validate(json.loads(raw))
    except (json.JSONDecodeError, ValidationError) as exc:
        raise ValueError(f"invalid bundle {path}: {exc}") from exc
    pipelines, refused = _pipelines(bundle)
    return LoadedBundle(
        bundle,
        hashlib.sha256(raw).hexdigest()[:16],
        {a.name: a for a in bundle.agents},
        pipelines,
        {(a.name, a.revision): a for a in bundle.pinned_agents},
        refused,
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
        log.info(
            "serving bundle %s with agents %s and pipelines %s",
            loaded.digest,
            sorted(loaded.agents),
            sorted(loaded.pipelines),
        )
        for name, reason in loaded.refused.items():
            log.error("pipeline %s not served: %s", name, reason)
        return True

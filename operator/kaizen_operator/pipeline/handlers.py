"""kopf registrations for Pipelines: every trigger runs the same level-based reconcile."""

from __future__ import annotations

from typing import Any

import kopf

from kaizen_operator.cache_feed import forget_deleted
from kaizen_operator.gateway.reconcile import reconcile_gateways_of_pipeline
from kaizen_operator.pipeline.reconcile import reconcile_pipeline, reconcile_pipelines_calling
from kaizen_operator.runtime import runtime_of

PIPELINES = ("kaizen.studio", "v1alpha1", "pipelines")


@kopf.on.resume(*PIPELINES)
@kopf.on.create(*PIPELINES)
@kopf.on.update(*PIPELINES, field="spec")
@kopf.on.update(*PIPELINES, field="metadata.labels")
async def pipeline_changed(
    body: kopf.Body, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    """Revisions and status, then the Gateways that select or serve the Pipeline and the
    Pipelines that call it."""
    rt = runtime_of(memo)
    await reconcile_pipeline(rt, str(namespace), name)
    reconcile_gateways_of_pipeline(rt, str(namespace), dict(body))
    reconcile_pipelines_calling(rt, str(namespace), "Pipeline", name)


@kopf.on.event(*PIPELINES)
async def pipeline_seen(
    type: str,
    body: kopf.Body,
    namespace: str | None,
    memo: Any,
    **_: Any,
) -> None:
    """Track the Pipeline for resyncs; a deleted one leaves the Gateways that served it
    and its callers say so."""
    rt = runtime_of(memo)
    forget_deleted(memo, "Pipeline", type, body)
    rt.track("Pipeline", type, str(namespace), body["metadata"]["name"])
    if type == "DELETED":
        reconcile_gateways_of_pipeline(rt, str(namespace), dict(body))
        reconcile_pipelines_calling(rt, str(namespace), "Pipeline", body["metadata"]["name"])

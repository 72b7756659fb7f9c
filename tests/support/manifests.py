"""Loading example manifests and mapping kinds to their models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kaizen_api.v1alpha1.agent import Agent
from kaizen_api.v1alpha1.common import KaizenModel
from kaizen_api.v1alpha1.gateway import Gateway
from kaizen_api.v1alpha1.pipeline import Pipeline
from kaizen_api.v1alpha1.promotion import Promotion
from kaizen_api.v1alpha1.scaling import ScalingPolicy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
MODELS: dict[str, type[KaizenModel]] = {
    "Agent": Agent,
    "Pipeline": Pipeline,
    "Gateway": Gateway,
    "ScalingPolicy": ScalingPolicy,
    "Promotion": Promotion,
}


def example_files() -> list[Path]:
    """Every YAML file a user applies from examples/ (the GitOps tree is separate)."""
    return sorted(EXAMPLES.glob("*.yaml"))


def example_documents() -> list[dict[str, Any]]:
    """Every object in the example files."""
    return [doc for f in example_files() for doc in yaml.safe_load_all(f.read_text()) if doc]

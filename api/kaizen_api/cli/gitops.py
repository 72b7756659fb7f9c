"""GitOps integration: Argo CD health checks and custom actions for the four kinds.

The Lua scripts live next to this module (``argocd/``); ``argocd_cm_data`` turns them
into the ``argocd-cm`` keys Argo CD reads (``resource.customizations.health.<group>_<Kind>``
and ``resource.customizations.actions.<group>_<Kind>``). Flux needs nothing: the kinds'
Ready/Reconciling/Stalled conditions with observedGeneration are what kstatus reads.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import yaml

GROUP = "kaizen.studio"
SCRIPTS = files("kaizen_api.cli") / "argocd"
HEALTH = {
    "Agent": "conditions.lua",
    "Pipeline": "conditions.lua",
    "Gateway": "conditions.lua",
    "ScalingPolicy": "conditions.lua",
    "Promotion": "promotion.lua",
}
ACTIONS = {
    "Promotion": ("approve", "reject"),
    "ScalingPolicy": ("pin-current", "freeze-scale-down", "clear-override"),
}


def health_script(kind: str) -> str:
    return (SCRIPTS / "health" / HEALTH[kind]).read_text()


def action_script(kind: str, name: str) -> str:
    """``discovery`` or an action's Lua."""
    return (SCRIPTS / "actions" / kind / f"{name}.lua").read_text()


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the scripts) as readable ``|`` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def _dump(value: Any) -> str:
    return yaml.dump(value, Dumper=_BlockDumper, sort_keys=False, width=1000)


def argocd_cm_data() -> dict[str, str]:
    """The argocd-cm entries for Kaizen Studio's kinds."""
    data = {
        f"resource.customizations.health.{GROUP}_{kind}": health_script(kind) for kind in HEALTH
    }
    for kind, names in ACTIONS.items():
        actions: dict[str, Any] = {
            "discovery.lua": action_script(kind, "discovery"),
            "definitions": [
                {"name": name, "action.lua": action_script(kind, name)} for name in names
            ],
        }
        data[f"resource.customizations.actions.{GROUP}_{kind}"] = _dump(actions)
    return data


def argocd_cm_patch(namespace: str = "argocd") -> str:
    """A ConfigMap patch (``kubectl patch --patch-file`` or a Kustomize patch)."""
    return _dump(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "argocd-cm", "namespace": namespace},
            "data": argocd_cm_data(),
        }
    )

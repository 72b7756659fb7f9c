"""Running the Argo CD health and action scripts the way Argo CD does: Lua 5.1 (Argo
CD uses gopher-lua, a Lua 5.1), with the object as the global ``obj``."""

from __future__ import annotations

from typing import Any

from lupa import lua51

from kaizen_api.cli.gitops import action_script, health_script


def _to_lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: _to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_to_lua(runtime, v) for v in value])
    return value


def _from_lua(value: Any) -> Any:
    if lua51.lua_type(value) != "table":
        return value
    keys = list(value.keys())
    if keys and all(isinstance(k, int) for k in keys):
        return [_from_lua(value[k]) for k in sorted(keys)]
    return {k: _from_lua(v) for k, v in value.items()}


def _run(script: str, obj: dict[str, Any]) -> Any:
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = _to_lua(runtime, obj)
    return _from_lua(runtime.execute(script))


def health(obj: dict[str, Any]) -> dict[str, str]:
    """{status, message} as Argo CD would show them."""
    result: dict[str, str] = _run(health_script(obj["kind"]), obj)
    return result


def actions(obj: dict[str, Any]) -> dict[str, bool]:
    """Action name -> enabled."""
    found = _run(action_script(obj["kind"], "discovery"), obj)
    return {name: not spec.get("disabled", False) for name, spec in found.items()}


def run_action(obj: dict[str, Any], name: str) -> dict[str, Any]:
    """The object after the action (what Argo CD would patch)."""
    result: dict[str, Any] = _run(action_script(obj["kind"], name), obj)
    return result


def kstatus(*objs: dict[str, Any]) -> dict[str, str]:
    """name -> the status Flux computes (sigs.k8s.io/cli-utils kstatus: Current,
    InProgress, Failed, ...), from the small Go tool hack/ builds with the cluster."""
    import json
    import subprocess

    from localcluster.versions import bin_dir

    out = subprocess.run(
        [str(bin_dir() / "kstatus")],
        input=json.dumps(list(objs)),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {r["name"]: r["status"] for r in map(json.loads, out.splitlines())}

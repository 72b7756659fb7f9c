"""One writer per status: only the Gateway controller writes a Gateway's status.

Promotions used to patch the target Gateway's status.servedRevisions; a restore then
brought production back serving nothing. This contract fails if any module outside
kaizen_operator.gateway writes a Gateway's status again."""

from __future__ import annotations

import ast
from pathlib import Path

import kaizen_operator

STATUS_WRITERS = {"write_status", "patch_status", "patch_status_guarded"}
PACKAGE = Path(kaizen_operator.__file__).parent


def _gateway_status_writes(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name not in STATUS_WRITERS:
            continue
        for arg in node.args:
            literal = isinstance(arg, ast.Constant) and arg.value == "Gateway"
            variable = isinstance(arg, ast.Name) and arg.id in ("gateway", "target", "source")
            if literal or variable:
                lines.append(node.lineno)
    return lines


def test_only_the_gateway_controller_writes_gateway_status() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent.name == "gateway":
            continue
        for line in _gateway_status_writes(ast.parse(path.read_text())):
            offenders.append(f"{path.relative_to(PACKAGE)}:{line}")
    assert offenders == [], f"Gateway status written outside kaizen_operator.gateway: {offenders}"


def test_the_contract_catches_the_old_second_writer() -> None:
    old = 'async def f(kube):\n    await kube.patch_status_guarded(API, "Gateway", ns, n, {}, rv)\n'
    assert _gateway_status_writes(ast.parse(old)) == [2]

"""Server-side tools the gateway runs inside the agent loop: the interface every runner
implements (http here, mcp in its own module).

A runner never raises for a tool's failure (timeout, refused address, bad status, an
answer too large): it returns ``ToolResult(ok=False, reason=...)`` and the loop gives the
content to the model as the tool's result. Only a bug raises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from kaizen_api.v1alpha1.agent import Tool, ToolType


@dataclass(frozen=True)
class ToolResult:
    """What one tool call gave back."""

    content: str  # text given back to the model as the tool message
    ok: bool
    # short machine reason when not ok: timeout, too_large, refused, http_502, ...
    reason: str | None = None


@runtime_checkable
class ToolRunner(Protocol):
    """One server-side tool of an agent, ready to be called."""

    name: str  # the function name the model sees (Tool.name)

    def spec(self) -> dict[str, Any]:
        """The OpenAI tool object the model sees:
        {"type": "function", "function": {name, description, parameters}}."""
        ...

    async def call(self, arguments: dict[str, Any], *, timeout: float) -> ToolResult:
        """Run the tool with the model's arguments. ``timeout`` is what is left of the
        request's deadline; a runner with its own per-call timeout applies the smaller."""
        ...


def failed(reason: str, message: str) -> ToolResult:
    """A failed call, worded for the model: it reads the content, a metric reads the reason."""
    return ToolResult(content=f"tool error ({reason}): {message}", ok=False, reason=reason)


RunnerFactory = Callable[[Tool], ToolRunner]
"""Makes the runner of one tool of one type (the gateway holds one factory per type)."""


class Unavailable:
    """A server-side tool this gateway has no runner for: every call fails, and says so."""

    def __init__(self, tool: Tool) -> None:
        self.name = tool.name
        self._spec = {
            "type": "function",
            "function": {
                "name": tool.name,
                "description": tool.description,
                "parameters": tool.parameters or {"type": "object", "properties": {}},
            },
        }
        self._reason = f"{tool.type} tools are not supported by this gateway"

    def spec(self) -> dict[str, Any]:
        return self._spec

    async def call(self, arguments: dict[str, Any], *, timeout: float) -> ToolResult:
        return failed("unavailable", self._reason)


def runners_for(
    tools: list[Tool] | None, factories: Mapping[str, RunnerFactory]
) -> dict[str, ToolRunner]:
    """The server-side tools (every type but ``function``) of an agent, by name."""
    return {
        tool.name: factories.get(tool.type, Unavailable)(tool)
        for tool in tools or []
        if tool.type != ToolType.FUNCTION
    }

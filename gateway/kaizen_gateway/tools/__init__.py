"""Server-side tools the gateway runs inside the agent loop: the interface every runner
implements (http here, mcp in its own module).

A runner never raises for a tool's failure (timeout, refused address, bad status, an
answer too large): it returns ``ToolResult(ok=False, reason=...)`` and the loop gives the
content to the model as the tool's result. Only a bug raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


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
        """Run the tool with the model's arguments, within ``timeout`` seconds."""
        ...


def failed(reason: str, message: str) -> ToolResult:
    """A failed call, worded for the model: it reads the content, a metric reads the reason."""
    return ToolResult(content=f"tool error ({reason}): {message}", ok=False, reason=reason)

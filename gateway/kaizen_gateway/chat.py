"""What the gateway accepts as a chat request: the OpenAI API's parameter and message
types, checked before anything is forwarded (a wrong type is the caller's 400, not an
upstream's 502)."""

from __future__ import annotations

import json
from typing import Any

from kaizen_gateway.errors import GatewayError

PARAM_KEYS = ("temperature", "top_p", "max_tokens", "stop")


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _dicts(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, dict) for x in v)


# What each passed-through parameter must look like (the OpenAI API's types): a wrong
# type is the caller's 400, not something to forward and answer with an upstream 502.
PARAM_TYPES: dict[str, tuple[str, Any]] = {
    "temperature": ("a number", _number),
    "top_p": ("a number", _number),
    "presence_penalty": ("a number", _number),
    "frequency_penalty": ("a number", _number),
    "max_tokens": ("an integer", _integer),
    "max_completion_tokens": ("an integer", _integer),
    "seed": ("an integer", _integer),
    "n": ("an integer", _integer),
    "stop": (
        "a string or a list of strings",
        lambda v: (
            isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
        ),
    ),
    "tools": ("a list of tool objects", _dicts),
    "tool_choice": ("a string or an object", lambda v: isinstance(v, str | dict)),
    "response_format": ("an object", lambda v: isinstance(v, dict)),
    "user": ("a string", lambda v: isinstance(v, str)),
    "parallel_tool_calls": ("a boolean", lambda v: isinstance(v, bool)),
    "stream": ("a boolean", lambda v: isinstance(v, bool)),
}


# The caller's parameters sent on to the provider ("stream" picks the answer's form).
PASSTHROUGH = tuple(key for key in PARAM_TYPES if key != "stream")


def refuse_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (Python's parser takes them; providers do not)."""
    raise json.JSONDecodeError(f"{name} is not a JSON value", name, 0)


def check_params(body: dict[str, Any]) -> None:
    """Refuse a request parameter of the wrong type, naming it (null means unset)."""
    for key, (kind, valid) in PARAM_TYPES.items():
        value = body.get(key)
        if value is not None and not valid(value):
            raise GatewayError(400, f"{key} must be {kind}", param=key)


MESSAGE_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def check_message(index: int, message: dict[str, Any]) -> None:
    """Refuse a chat message no provider would take (400 naming the field), instead of
    forwarding it and answering the upstream's failure as a 502."""
    role, content = message.get("role"), message.get("content")
    if role not in MESSAGE_ROLES:
        raise GatewayError(
            400,
            f"messages[{index}].role must be one of {', '.join(MESSAGE_ROLES)}",
            param=f"messages[{index}].role",
        )
    parts_ok = isinstance(content, list) and all(
        isinstance(p, dict) and isinstance(p.get("type"), str) for p in content
    )
    if not (content is None or isinstance(content, str) or parts_ok):
        raise GatewayError(
            400,
            f"messages[{index}].content must be a string, null or a list of typed parts",
            param=f"messages[{index}].content",
        )

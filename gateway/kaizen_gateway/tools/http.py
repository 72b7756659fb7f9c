"""``http`` tools: the gateway calls a URL with the model's arguments.

GET sends the arguments as the query string, the other methods as a JSON body. Extra
headers come from ``headersSecretRef`` (a mounted Secret key holding a JSON object; its
value is never logged nor given to the model). The destination passes the same SSRF
guard as model upstreams, redirects are not followed, and the answer is read in chunks
up to a size cap, so a tool answering 50 MB costs the gateway the cap, not 50 MB.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from kaizen_api.mounted import MountedFiles
from kaizen_api.netguard import DestinationNotAllowed, check_url
from kaizen_api.v1alpha1.agent import Tool
from kaizen_api.v1alpha1.common import parse_duration
from kaizen_gateway.providers import HOW_TO_ALLOW
from kaizen_gateway.tools import ToolResult, failed

MAX_ANSWER_BYTES = 1_048_576  # what the gateway reads of a tool's answer
SHOWN_OF_FAILURE = 2000  # characters of a failed answer given to the model
NO_ARGUMENTS_SCHEMA = {"type": "object", "properties": {}}
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # no header may carry CR, LF or other controls


def function_spec(tool: Tool) -> dict[str, Any]:
    """The OpenAI tool object of an Agent's tool, as the model sees it."""
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters or NO_ARGUMENTS_SCHEMA,
        },
    }


def query(arguments: dict[str, Any]) -> dict[str, str]:
    """GET arguments as query parameters: strings as they are, everything else as JSON
    (true, 3, ["a","b"]), so no argument is silently dropped."""
    return {
        k: v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
        for k, v in arguments.items()
        if v is not None
    }


class HTTPToolRunner:
    """One ``http`` tool of an agent."""

    def __init__(
        self,
        tool: Tool,
        session: Callable[[], aiohttp.ClientSession],
        *,
        secrets_dir: Path,
        secrets: MountedFiles,
        allow_link_local: bool = False,
        max_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        assert tool.http is not None  # noqa: S101 - Tool's validator guarantees it
        self.name = tool.name
        self.http = tool.http
        self._spec = function_spec(tool)
        self._session = session
        self._secrets_dir, self._secrets = secrets_dir, secrets
        self.timeout = parse_duration(tool.http.timeout)
        self.max_bytes = max_bytes
        # The URL is fixed, so its static check is done once; names are checked again by
        # the addresses they resolve to, where the session's connector resolves them.
        self._refused: str | None = None
        try:
            check_url(tool.http.url, allow_link_local=allow_link_local, how_to_allow=HOW_TO_ALLOW)
        except DestinationNotAllowed as exc:
            self._refused = str(exc)

    def spec(self) -> dict[str, Any]:
        return self._spec

    def _headers(self) -> dict[str, str] | ToolResult:
        ref = self.http.headers_secret_ref
        if ref is None:
            return {}
        try:
            headers = json.loads(self._secrets.read(self._secrets_dir / ref.name / ref.key))
        except OSError:
            return failed(
                "headers_unavailable", f"Secret {ref.name!r} key {ref.key!r} is not mounted"
            )
        except ValueError:
            headers = None
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and not CONTROL.search(k + v)
            for k, v in headers.items()
        ):
            # Never quote the value: it holds credentials.
            return failed(
                "headers_invalid",
                f"Secret {ref.name!r} key {ref.key!r} must hold a JSON object of strings "
                "without control characters",
            )
        return headers

    async def call(self, arguments: dict[str, Any], *, timeout: float) -> ToolResult:
        if self._refused is not None:
            return failed("refused", self._refused)
        headers = self._headers()
        if isinstance(headers, ToolResult):
            return headers
        method = str(self.http.method)
        limit = min(self.timeout, timeout)
        options: dict[str, Any] = (
            {"params": query(arguments)} if method == "GET" else {"json": arguments}
        )
        try:
            async with self._session().request(
                method,
                self.http.url,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=limit),
                allow_redirects=False,
                **options,
            ) as resp:
                body, whole = await self._read(resp)
                status = resp.status
        except DestinationNotAllowed as exc:
            return failed("refused", str(exc))
        except TimeoutError:
            return failed("timeout", f"no answer within {limit:g}s")
        except aiohttp.ClientError as exc:
            return failed("unreachable", exc.__class__.__name__)
        text = body.decode("utf-8", errors="replace")
        if 300 <= status < 400:
            return failed(f"http_{status}", "the tool answered a redirect, which is not followed")
        if status >= 400:
            return failed(f"http_{status}", text[:SHOWN_OF_FAILURE])
        if not whole:
            return failed(
                "too_large",
                f"the answer exceeded {self.max_bytes} bytes and was cut; its beginning: "
                + text[:SHOWN_OF_FAILURE],
            )
        return ToolResult(text, ok=True)

    async def _read(self, resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        """At most ``max_bytes`` of the answer, and whether that was all of it."""
        declared = resp.content_length
        if declared is not None and declared > self.max_bytes:
            return await resp.content.read(SHOWN_OF_FAILURE), False
        parts, size = [], 0
        async for chunk in resp.content.iter_any():
            parts.append(chunk)
            size += len(chunk)
            if size > self.max_bytes:
                return b"".join(parts)[: self.max_bytes], False
        return b"".join(parts), True

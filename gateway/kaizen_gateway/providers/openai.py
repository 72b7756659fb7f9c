"""OpenAI, OpenAI-compatible and Azure OpenAI chat completions."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from kaizen_api.v1alpha1.agent import ModelSpec
from kaizen_gateway.providers import (
    ChatRequest,
    UpstreamConfig,
    post_json,
    read_secret,
    sse_with_retries,
    with_retries,
)

OPENAI_BASE = "https://api.openai.com/v1"
AZURE_API_VERSION = "2024-10-21"


class OpenAIProvider:
    """Speaks /chat/completions; Azure uses deployment URLs and the api-key header."""

    def __init__(
        self, spec: ModelSpec, cfg: UpstreamConfig, on_retry: Callable[[str], None]
    ) -> None:
        self.spec, self.cfg, self.on_retry = spec, cfg, on_retry

    def _target(self) -> tuple[str, dict[str, str]]:
        key = read_secret(self.cfg, self.spec)
        headers: dict[str, str] = {}  # content-type: post_json/sse_lines, which encode
        if self.spec.provider == "azure-openai":
            parts = urlsplit((self.spec.endpoint or "").rstrip("/"))  # required for azure-openai
            version = parse_qs(parts.query).get("api-version", [AZURE_API_VERSION])[0]
            path = parts.path
            if "/openai/deployments/" not in path:
                path = f"{path}/openai/deployments/{self.spec.name}"
            url = urlunsplit(
                (
                    parts.scheme,
                    parts.netloc,
                    f"{path}/chat/completions",
                    f"api-version={version}",
                    "",
                )
            )
            if key:
                headers["api-key"] = key
            return url, headers
        base = (self.spec.endpoint or OPENAI_BASE).rstrip("/")
        if key:
            headers["authorization"] = f"Bearer {key}"
        return f"{base}/chat/completions", headers

    def _body(self, req: ChatRequest, stream: bool) -> dict[str, Any]:
        body = {"model": req.model, "messages": req.messages, **req.params}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    async def complete(self, req: ChatRequest) -> dict[str, Any]:
        url, headers = self._target()
        return await with_retries(
            self.cfg,
            lambda: post_json(self.cfg, url, self._body(req, False), headers),
            self.on_retry,
        )

    async def stream(self, req: ChatRequest) -> AsyncIterator[dict[str, Any]]:
        url, headers = self._target()
        body = self._body(req, True)
        async for data in sse_with_retries(self.cfg, url, body, headers, self.on_retry):
            if data == "[DONE]":
                return
            yield json.loads(data)

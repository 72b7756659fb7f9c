"""Errors in the OpenAI error shape, with the HTTP status a client expects."""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """An error the caller sees as ``{"error": {...}}`` with ``status``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body, as OpenAI's API returns errors."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class UpstreamError(GatewayError):
    """The model provider failed (after retries)."""

    def __init__(
        self, status: int, message: str, *, retryable: bool, upstream_status: int | None = None
    ) -> None:
        super().__init__(status, message, type_="upstream_error", code="upstream_failed")
        self.retryable = retryable
        self.upstream_status = upstream_status

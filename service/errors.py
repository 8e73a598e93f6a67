"""The one error type signaling and control requests fail with: a status, a reason, a message."""

from __future__ import annotations


class RelayError(Exception):
    """A refused request; rendered as ``{"error": reason, "detail": detail}`` with ``status``."""

    def __init__(
        self, status: int, reason: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.headers = headers or {}

"""The one error type signaling and control requests fail with: a status, a reason, a message."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


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


def describe_validation_errors(errors: Sequence[Mapping[str, Any]]) -> str:
    """pydantic's errors as one line: ``field.path: message; …`` (``body`` for the whole)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in errors
    )

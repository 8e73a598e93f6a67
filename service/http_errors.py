"""Every refusal of the HTTP face as ``{"error": reason, "detail": message}``, counted by reason.

The relay's own refusals (:class:`RelayError`), FastAPI's (unknown path 404, wrong method 405,
a body that does not validate) and an unexpected exception (a bug: JSON 500 ``internal``, one
log line) all take that shape. Starlette re-raises an exception after its 500 is sent, and
uvicorn then closes the keep-alive connection under the client's next request; the app here
swallows it once the answer is complete.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import RelayError, describe_validation_errors

log = logging.getLogger(__name__)


def error_response(
    status: int, reason: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A refused request: ``{"error": reason, "detail": detail}`` with its status and headers."""
    return JSONResponse({"error": reason, "detail": detail}, status, headers=headers)


def status_reason(status: int) -> str:
    """A status's reason in the errors' style: 405 → ``method_not_allowed``."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        return "http_error"
    return phrase.lower().replace(" ", "_").replace("-", "_")


def describe_bug(error: BaseException) -> str:
    """One line for a log: the exception and where it was raised."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"{type(error).__name__}: {str(error)[:200]}{where}"


def install_error_handlers(app: FastAPI, count: Callable[[str], None]) -> None:
    """Render every refusal of ``app`` as ``{error, detail}``; ``count(reason)`` each. An
    exception re-raised after its answer is sent ends at :class:`KeepConnection`."""
    build = app.build_middleware_stack  # Starlette builds the stack at the first request
    app.build_middleware_stack = lambda: KeepConnection(build())  # type: ignore[method-assign]

    def refused(error: RelayError) -> JSONResponse:
        count(error.reason)
        return error_response(error.status, error.reason, error.detail, error.headers)

    @app.exception_handler(RelayError)
    async def relay_error(request: Request, error: RelayError) -> JSONResponse:
        return refused(error)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        detail = describe_validation_errors(error.errors())
        return refused(RelayError(422, "invalid_request", detail))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        reason = status_reason(error.status_code)
        detail = error.detail if isinstance(error.detail, str) else reason.replace("_", " ")
        return refused(RelayError(error.status_code, reason, detail, dict(error.headers or {})))

    @app.exception_handler(Exception)
    async def internal(request: Request, error: Exception) -> JSONResponse:
        if isinstance(error, RelayError):  # raised by a middleware, outside the handlers above
            return refused(error)
        log.error(
            "internal error on %s %s: %s", request.method, request.url.path, describe_bug(error)
        )
        log.debug("internal error", exc_info=error)
        count("internal")
        return error_response(500, "internal", f"unexpected {type(error).__name__} (a bug)")


class KeepConnection:
    """ASGI wrapper: an exception raised after its answer was sent ends there, so the server
    neither logs it again nor drops the connection (Starlette re-raises after its 500)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        complete = False

        async def watch(message: Message) -> None:
            nonlocal complete
            if message["type"] == "http.response.body" and not message.get("more_body"):
                complete = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            if not complete:
                raise

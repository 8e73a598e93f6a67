"""Signaling on any node: a request for a room that lives on another node is sent there.

WHIP clients get a ``307`` to the owner's URL (RFC 9725 allows redirects; the resource URL in
the answer's ``Location`` is then the owner's). ``POST /offer`` and the control requests on a
room are proxied (a browser would need CORS to follow a redirect to another origin). A request
that was already forwarded once is always served where it arrives, so no request loops.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
from starlette.datastructures import Headers
from starlette.responses import Response

from service.errors import RelayError
from service.http_errors import error_response
from service.json_body import parse_json_body
from service.metrics import RelayMetrics
from service.node import ClusterNode
from service.relay import ROOM_NAME

log = logging.getLogger(__name__)
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FORWARDED_HEADER = "x-pnr-forwarded"  # names the node that forwarded the request
FORWARDED_REQUEST_HEADERS = ("content-type", "authorization", "x-participant-key")
FORWARDED_RESPONSE_HEADERS = ("content-type", "location", "retry-after", "www-authenticate")

# (method, path pattern, how: "redirect" or "proxy", may the request place a new room)
_ROUTES: list[tuple[str, re.Pattern[str], str, bool]] = [
    ("POST", re.compile(r"/wh[ie]p/(?P<room>[^/]+)"), "redirect", True),
    ("DELETE", re.compile(r"/wh[ie]p/(?P<room>[^/]+)/[^/]+"), "redirect", False),
    ("PATCH", re.compile(r"/wh[ie]p/(?P<room>[^/]+)/[^/]+"), "redirect", False),
    ("PUT", re.compile(r"/rooms/(?P<room>[^/]+)"), "proxy", True),
    ("GET", re.compile(r"/rooms/(?P<room>[^/]+)"), "proxy", False),
    ("DELETE", re.compile(r"/rooms/(?P<room>[^/]+)"), "proxy", False),
    ("PATCH", re.compile(r"/rooms/(?P<room>[^/]+)/participants/[^/]+"), "proxy", False),
    ("DELETE", re.compile(r"/rooms/(?P<room>[^/]+)/participants/[^/]+"), "proxy", False),
]


def match_route(method: str, path: str) -> tuple[str, str, bool] | None:
    """(room, how, may place) for a request about one room named in its path."""
    for route_method, pattern, how, places in _ROUTES:
        found = pattern.fullmatch(path) if method == route_method else None
        if found:
            return found["room"], how, places
    return None


def room_of_offer(body: bytes) -> str | None:
    """The ``room`` field of an ``/offer`` body; None when there is none to read (the node's
    own handler then answers the malformed request)."""
    try:
        data = parse_json_body(body)  # within limits: 30,000 '[' must not reach json's recursion
    except RelayError:
        return None
    room = data.get("room") if isinstance(data, dict) else None
    return room if isinstance(room, str) else None


class RoutingMiddleware:
    """Sends each signaling or control request about a room to the node that owns the room."""

    def __init__(
        self,
        app: ASGIApp,
        node: ClusterNode,
        metrics: RelayMetrics,
        max_body_bytes: int,
        auto_create_rooms: bool,
    ) -> None:
        self.app = app
        self.node = node
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.auto_create_rooms = auto_create_rooms

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or FORWARDED_HEADER in Headers(scope=scope):
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        body: bytes | None = None
        if method == "POST" and path == "/offer":
            body, receive = await self._buffer(receive)
            room, how, places = room_of_offer(body), "proxy", self.auto_create_rooms
        else:
            route = match_route(method, path)
            if route is None:
                await self.app(scope, receive, send)
                return
            room, how, places = (
                route[0],
                route[1],
                route[2] and (method == "PUT" or self.auto_create_rooms),
            )
        if room is None or not ROOM_NAME.fullmatch(room):
            await self.app(scope, receive, send)  # the handler explains what is wrong
            return
        try:
            owner = await self.node.owner_url(room, create=places)
        except RelayError as error:
            self.metrics.signaling_errors.labels(error.reason).inc()
            response: Response = error_response(
                error.status, error.reason, error.detail, error.headers
            )
            await response(scope, receive, send)
            return
        if owner is None:
            await self.app(scope, receive, send)
            return
        self.metrics.signaling_forwarded.labels(how).inc()
        if how == "redirect":
            query = scope.get("query_string", b"").decode("latin-1")
            location = owner + path + (f"?{query}" if query else "")
            response = Response(status_code=307, headers={"Location": location})
        else:
            if body is None:
                body, receive = await self._buffer(receive)
            response = await self._proxy(scope, owner, body)
        await response(scope, receive, send)

    async def _buffer(self, receive: Receive) -> tuple[bytes, Receive]:
        """The body (up to one byte past the limit, so the handler still refuses it) and a
        ``receive`` that hands the app the same messages."""
        messages: list[Message] = []
        size, more = 0, True
        while more and size <= self.max_body_bytes:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        return body, replay

    async def _proxy(self, scope: Scope, owner: str, body: bytes) -> Response:
        incoming = Headers(scope=scope)
        headers = {k: v for k, v in incoming.items() if k in FORWARDED_REQUEST_HEADERS}
        headers[FORWARDED_HEADER] = self.node.node_id
        client = scope.get("client")
        if client:
            headers["x-forwarded-for"] = str(client[0])
        url = owner + scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        try:
            answer = await self.node.http.request(
                scope["method"], url + (f"?{query}" if query else ""), headers=headers, content=body
            )
        except httpx.HTTPError as error:
            self.metrics.signaling_errors.labels("node_unavailable").inc()
            detail = f"the room's node did not answer: {error or type(error).__name__}"
            return error_response(503, "node_unavailable", detail, {"Retry-After": "1"})
        kept = {k: v for k, v in answer.headers.items() if k in FORWARDED_RESPONSE_HEADERS}
        return Response(answer.content, answer.status_code, headers=kept)

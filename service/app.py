"""The HTTP face of the relay: signaling (/offer, WHIP), control plane, health, metrics, page."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from model.runtime import ModelRuntime
from service.errors import RelayError, describe_validation_errors
from service.http_errors import error_response, install_error_handlers
from service.json_body import parse_json_body
from service.limits import RateLimiter
from service.node import ClusterNode
from service.relay import Relay, check_room_name
from service.routing import RoutingMiddleware
from service.sdp import offer_sends_audio
from service.settings import Settings
from service.tokens import same_secret

log = logging.getLogger(__name__)
STATIC = resources.files("service") / "static"


class OfferRequest(BaseModel):
    """Body of ``POST /offer``."""

    model_config = ConfigDict(extra="forbid")
    sdp: str
    type: str = "offer"
    room: str
    name: str | None = Field(None, max_length=64)
    token: str | None = None
    echo: bool = False


class SettingsPatch(BaseModel):
    """Body of ``PATCH /rooms/{room}/participants/{id}``: any subset of the settings."""

    model_config = ConfigDict(extra="forbid")
    enhance: bool | None = None
    attenuation_limit_db: float | None = Field(None, ge=0, le=200)
    postfilter: bool | None = None


SDP_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/sdp": {"schema": {"type": "string"}}},
    }
}


def json_request_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a route that reads ``model`` from its JSON body itself (within limits)."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _too_large(limit: int) -> str:
    return f"request bodies are limited to {limit} bytes"


def add_body_limit(app: FastAPI, limit: int, on_refused: Callable[[], None] | None = None) -> None:
    """Refuse (413) every request that declares a body over ``limit`` bytes, unread; bodies
    without a declared length are bounded while read (:func:`read_body`)."""

    @app.middleware("http")
    async def limit_declared_body(request: Request, call_next: Any) -> Response:
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit() or int(declared) > limit:
            if on_refused is not None:
                on_refused()
            return error_response(413, "body_too_large", _too_large(limit))
        return await call_next(request)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 once it grows beyond ``limit`` bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RelayError(413, "body_too_large", _too_large(limit))
    return bytes(body)


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if any."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


def client_address(request: Request) -> str:
    """The client's address (a trusted proxy's ``X-Forwarded-For`` already applied)."""
    return request.client.host if request.client else "unknown"


def valid_room(room: str) -> str:
    """The ``{room}`` of a path, checked like every room name (400 ``invalid_room``)."""
    return check_room_name(room)


RoomName = Annotated[str, Depends(valid_room)]


def add_cors(app: FastAPI, settings: Settings) -> None:
    """Let the configured web origins call signaling and control (WHIP clients on other sites)."""
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Participant-Key"],
            expose_headers=["Location", "Retry-After"],
        )


def add_page(app: FastAPI) -> None:
    """The browser client: ``/`` and ``/static``."""
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))


def new_app(**options: Any) -> FastAPI:
    """A FastAPI app whose ``/docs`` and ``/redoc`` pages load their scripts, styles and icon
    from this installation (fastapi-offline ships them), never from a CDN: they work offline."""
    return FastAPIOffline(swagger_ui_parameters={"validatorUrl": None}, **options)


def create_app(settings: Settings | None = None, runtime: ModelRuntime | None = None) -> FastAPI:
    """The relay application; the relay starts (model, kernels) in the background at startup."""
    settings = settings or Settings()
    relay = Relay(settings, runtime)
    node = ClusterNode(settings, relay)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        starting = asyncio.create_task(relay.start(), name="relay-start")
        await node.start()
        try:
            yield
        finally:
            if not starting.done():
                starting.cancel()
                with contextlib.suppress(BaseException):
                    await starting
            if relay.state != "closed":
                await relay.close()
            await node.close()

    app = new_app(
        title="percepnet-relay",
        summary="WebRTC rooms with per-speaker PercepNet noise suppression",
        lifespan=lifespan,
    )
    app.state.relay = relay
    app.state.node = node
    if node.shared:  # inside CORS and the body limit, so forwarded answers get both
        app.add_middleware(
            RoutingMiddleware,
            node=node,
            metrics=relay.metrics,
            max_body_bytes=settings.max_body_bytes,
            auto_create_rooms=settings.auto_create_rooms,
        )
    add_cors(app, settings)
    limiter = RateLimiter(settings.signaling_rate_per_second, settings.signaling_burst)
    if settings.token_secret is not None and settings.admin_token is None:
        log.warning("tokens are on and PNR_ADMIN_TOKEN is unset: room control (/rooms) is off")

    add_body_limit(
        app, settings.max_body_bytes, relay.metrics.signaling_errors.labels("body_too_large").inc
    )

    add_page(app)
    install_error_handlers(app, lambda reason: relay.metrics.signaling_errors.labels(reason).inc())

    def limit_signaling(request: Request) -> None:
        limiter.check(client_address(request))

    signaling_limited = [Depends(limit_signaling)]

    def require_admin(request: Request) -> None:
        secret = settings.admin_token
        if secret is None:
            if settings.token_secret is None:
                return
            raise RelayError(
                403,
                "admin_token_not_configured",
                "tokens are on: room control needs PNR_ADMIN_TOKEN to be set on the relay",
            )
        if not same_secret(bearer_token(request), secret.get_secret_value()):
            raise RelayError(
                401,
                "invalid_admin_token",
                "this needs the admin bearer token",
                {"WWW-Authenticate": 'Bearer realm="percepnet-relay"'},
            )

    # ---- page, health, metrics -------------------------------------------------------------
    @app.get("/livez", tags=["health"])
    async def livez() -> dict[str, str]:
        """The process is up and its event loop answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        """Model loaded and kernels compiled, and not draining."""
        body = {"ready": relay.ready, "state": relay.state, "ready_seconds": relay.ready_seconds}
        return JSONResponse(body, 200 if relay.ready else 503)

    @app.get("/metrics", tags=["health"])
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(relay.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/metrics/targets", tags=["health"])
    async def metrics_targets() -> list[dict[str, Any]]:
        """Every node's ``/metrics`` address, for Prometheus ``http_sd_configs``: ``serve`` runs
        a node per core, each on its own port, and a cluster more on other hosts."""
        return await node.scrape_targets()

    # ---- signaling -------------------------------------------------------------------------
    @app.post(
        "/offer",
        tags=["signaling"],
        dependencies=signaling_limited,
        openapi_extra=json_request_body(OfferRequest),
    )
    async def offer(request: Request) -> dict[str, Any]:
        """Join a room with an SDP offer (aiortc's convention); returns the answer."""
        data = parse_json_body(await read_body(request, settings.max_body_bytes))
        try:
            body = OfferRequest.model_validate(data)
        except ValidationError as error:
            problems = describe_validation_errors(error.errors())
            raise RelayError(422, "invalid_offer_request", problems) from error
        if body.type != "offer":
            raise RelayError(422, "invalid_offer_request", "type must be 'offer'")
        participant, answer = await relay.join(
            body.room,
            body.sdp,
            body.name,
            body.echo,
            body.token or bearer_token(request),
            client_address(request),
        )
        return {
            "sdp": answer,
            "type": "answer",
            "participant_id": participant.id,
            "participant_key": participant.key,
        }

    async def sdp_offer(request: Request) -> str:
        """The body of a WHIP or WHEP request: an ``application/sdp`` offer."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/sdp":
            raise RelayError(415, "unsupported_media_type", "offers are application/sdp")
        raw = await read_body(request, settings.max_body_bytes)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise RelayError(400, "malformed_sdp", "the offer is not UTF-8 text") from error

    async def sdp_session(
        kind: str, room: str, sdp: str, request: Request, name: str | None
    ) -> Response:
        """Join ``room`` with a WHIP/WHEP offer: ``201`` + Location + the answer."""
        participant, answer = await relay.join(
            room, sdp, name, False, bearer_token(request), client_address(request)
        )
        location = f"/{kind}/{room}/{participant.id}"
        return Response(answer, 201, media_type="application/sdp", headers={"Location": location})

    @app.post(
        "/whip/{room}",
        tags=["signaling"],
        status_code=201,
        dependencies=signaling_limited,
        openapi_extra=SDP_BODY,
    )
    async def whip_ingest(room: RoomName, request: Request, name: str | None = None) -> Response:
        """WHIP (RFC 9725): an ``application/sdp`` offer in, ``201`` + Location + answer out."""
        return await sdp_session("whip", room, await sdp_offer(request), request, name)

    @app.delete("/whip/{room}/{participant_id}", tags=["signaling"], dependencies=signaling_limited)
    async def whip_delete(room: RoomName, participant_id: str) -> Response:
        """End a WHIP session."""
        relay.find(room, participant_id)
        await relay.leave(room, participant_id, "whip_delete")
        return Response(status_code=200)

    @app.post(
        "/whep/{room}",
        tags=["signaling"],
        status_code=201,
        dependencies=signaling_limited,
        openapi_extra=SDP_BODY,
    )
    async def whep_egress(room: RoomName, request: Request, name: str | None = None) -> Response:
        """WHEP: a receive-only ``application/sdp`` offer in, ``201`` + Location + answer out;
        the session hears the room's mix of every speaker's enhanced voice."""
        sdp = await sdp_offer(request)
        if offer_sends_audio(sdp):
            raise RelayError(
                400, "not_receive_only", "a WHEP offer receives only (a=recvonly audio)"
            )
        return await sdp_session("whep", room, sdp, request, name)

    @app.delete("/whep/{room}/{participant_id}", tags=["signaling"], dependencies=signaling_limited)
    async def whep_delete(room: RoomName, participant_id: str) -> Response:
        """End a WHEP session."""
        relay.find(room, participant_id)
        await relay.leave(room, participant_id, "whep_delete")
        return Response(status_code=200)

    @app.patch("/whip/{room}/{participant_id}", tags=["signaling"], dependencies=signaling_limited)
    @app.patch("/whep/{room}/{participant_id}", tags=["signaling"], dependencies=signaling_limited)
    async def whip_patch(room: RoomName, participant_id: str) -> Response:
        """Trickle ICE and ICE restarts are not supported: the offer must carry candidates."""
        relay.find(room, participant_id)
        raise RelayError(
            422, "trickle_not_supported", "trickle ICE and ICE restarts are not supported"
        )

    # ---- control plane ---------------------------------------------------------------------
    @app.get("/rooms", tags=["control"])
    async def list_rooms(request: Request) -> list[dict[str, object]]:
        """Every open room of the cluster, how many are in it and which node serves it."""
        require_admin(request)
        return await node.cluster_rooms()

    @app.get("/nodes", tags=["control"])
    async def list_nodes(request: Request) -> list[dict[str, object]]:
        """The cluster's live nodes as the directory holds them: URL, state, load, rooms."""
        require_admin(request)
        return await node.cluster_nodes()

    @app.put("/rooms/{room}", tags=["control"])
    async def create_room(room: RoomName, request: Request) -> dict[str, object]:
        """Open a room (rooms open themselves on the first join unless auto-create is off)."""
        require_admin(request)
        return relay.create_room(room).describe(with_participants=True)

    @app.get("/rooms/{room}", tags=["control"])
    async def get_room(room: RoomName, request: Request) -> dict[str, object]:
        """A room with its participants, their settings and frame counts."""
        require_admin(request)
        found = relay.rooms.get(room)
        if found is None:
            raise RelayError(404, "unknown_room", f"room {room!r} does not exist")
        return found.describe(with_participants=True)

    @app.delete("/rooms/{room}", tags=["control"], status_code=204)
    async def delete_room(room: RoomName, request: Request) -> Response:
        """Close a room: its participants are removed (connections closed)."""
        require_admin(request)
        await relay.close_room(room)
        return Response(status_code=204)

    def require_admin_or_owner(request: Request, room: str, participant_id: str) -> None:
        participant = relay.find(room, participant_id)
        if same_secret(request.headers.get("x-participant-key"), participant.key):
            return
        require_admin(request)

    @app.patch(
        "/rooms/{room}/participants/{participant_id}",
        tags=["control"],
        openapi_extra=json_request_body(SettingsPatch),
    )
    async def patch_participant(
        room: RoomName, participant_id: str, request: Request
    ) -> dict[str, object]:
        """Change enhancement on/off, attenuation limit (dB, null: none) or postfilter."""
        require_admin_or_owner(request, room, participant_id)
        participant = relay.find(room, participant_id)
        data = parse_json_body(await read_body(request, settings.max_body_bytes))
        try:
            patch = SettingsPatch.model_validate(data)
        except ValidationError as error:
            detail = describe_validation_errors(error.errors())
            raise RelayError(422, "invalid_request", detail) from error
        changes = patch.model_dump(exclude_unset=True)
        for flag in ("enhance", "postfilter"):
            if flag in changes and changes[flag] is None:
                raise RelayError(422, "invalid_request", f"{flag} must be true or false")
        participant.settings = participant.settings.updated(**changes)
        return participant.describe()

    @app.get("/rooms/{room}/participants/{participant_id}/speakers", tags=["control"])
    async def room_speakers(
        room: RoomName, participant_id: str, request: Request
    ) -> list[dict[str, object]]:
        """Who in the room is speaking, for one of its participants (``X-Participant-Key``):
        name, speaking flag and level (dBFS) of everyone, ``you`` marking the asker."""
        require_admin_or_owner(request, room, participant_id)
        return [
            {
                "name": p.name,
                "you": p.id == participant_id,
                "speaking": p.voice.speaking,
                "level_db": round(p.voice.level_db, 1),
            }
            for p in relay.rooms[room].participants.values()
        ]

    @app.delete("/rooms/{room}/participants/{participant_id}", tags=["control"])
    async def remove_participant(room: RoomName, participant_id: str, request: Request) -> Response:
        """Remove a participant (their connection is closed)."""
        require_admin_or_owner(request, room, participant_id)
        await relay.leave(room, participant_id, "removed")
        return Response(status_code=204)

    return app

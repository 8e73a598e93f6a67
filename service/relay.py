"""The media core: admits peers into rooms, enhances each speaker once, cleans up after them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
import secrets
import time

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.exceptions import InvalidAccessError, InvalidStateError, OperationError
from aiortc.mediastreams import MediaStreamTrack

from model.runtime import ModelRuntime
from service import aiortc_patches
from service.batching import EnhancerPool
from service.errors import RelayError
from service.limits import PendingPeers, check_fd_headroom, fd_limit, open_fd_count
from service.metrics import RelayMetrics
from service.opus import OpusSettings
from service.participant import Participant
from service.room import Room
from service.sdp import check_offer_sdp, request_inband_fec
from service.settings import Settings
from service.speaker import EnhancementSettings, SpeakerPipeline
from service.tokens import TokenClaims, TokenError, verify_token
from service.tracks import MixedAudioTrack
from service.voice_activity import VoiceActivity
from service.warm_up import warm_up

log = logging.getLogger(__name__)

OPUS_ONLY = [
    codec
    for codec in RTCRtpSender.getCapabilities("audio").codecs
    if codec.mimeType.lower() == "audio/opus"
]
ROOM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ROOM_NAME_RULE = "room names are 1–64 of A-Z a-z 0-9 _ . -, starting with a letter or digit"
WATCHDOG_SECONDS = 0.5
STATS_SECONDS = 5.0
RETRY_AFTER_SECONDS = "5"
# what aiortc raises, by design, for an offer it cannot negotiate (service.sdp refuses what
# its parser cannot read before it runs; anything else from it is a bug: a 500 `internal`)
NEGOTIATION_ERRORS = (ValueError, InvalidAccessError, InvalidStateError, OperationError)


def check_room_name(name: str) -> str:
    """``name`` if it is 1–64 of A-Z a-z 0-9 _ . - starting with a letter or digit (so never
    ``.``, ``..`` or a path); 400 ``invalid_room`` otherwise."""
    if not ROOM_NAME.fullmatch(name):
        raise RelayError(400, "invalid_room", ROOM_NAME_RULE)
    return name


def _remote_candidates(pc: RTCPeerConnection) -> int:
    """How many of the peer's ICE candidates its transports kept (valid, resolved)."""
    return sum(
        len(t.receiver.transport.transport.getRemoteCandidates()) for t in pc.getTransceivers()
    )


class Relay:
    """Rooms, participants, the shared model runtime and the enhancement shards."""

    def __init__(
        self,
        settings: Settings,
        runtime: ModelRuntime | None = None,
        metrics: RelayMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or RelayMetrics()
        self.runtime = runtime
        self.rooms: dict[str, Room] = {}
        self.state = "starting"  # starting → ready → draining → closed
        self.pool = EnhancerPool(
            threads=settings.worker_threads,
            clock_seconds=settings.batch_clock_ms / 1000.0,
            on_batch=self.metrics.batch_size.observe,
        )
        self.started_at = time.monotonic()
        self.ready_seconds: float | None = None
        self._pending_joins: dict[str, int] = {}  # per room: joins still negotiating
        self.pending = PendingPeers(settings.max_pending_peers, settings.max_pending_per_address)
        self._background: list[asyncio.Task[None]] = []
        aiortc_patches.restrict_host_addresses(settings.ice_host_addresses)
        aiortc_patches.limit_gathering(settings.ice_gather_timeout_seconds)
        aiortc_patches.use_receive_buffer(
            None if settings.aiortc_jitter_buffer else settings.jitter_buffer_packets
        )
        self.opus = OpusSettings(
            settings.opus_bitrate,
            settings.opus_complexity,
            settings.opus_channels,
            settings.opus_application,
        )

    # ---- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the model and compile the kernels in a worker thread, then accept joins."""
        try:
            await asyncio.to_thread(self._warm_up)
        except Exception:
            log.exception("relay failed to start")
            self.state = "failed"
            raise
        # Start-up's objects (modules, the model, the compiled kernels: about 200 000) live as
        # long as the process. Out of the collector's reach, a full collection, which holds the
        # GIL and so stops the media, looks at the calls' objects only (at 24 participants on
        # one core: 8 ms instead of 99-124 ms, long enough to drop frames).
        gc.collect()
        gc.freeze()
        if self.state == "starting":
            self.state = "ready"
            self.metrics.ready.set(1)
        self.ready_seconds = time.monotonic() - self.started_at
        loop = asyncio.get_running_loop()  # /metrics is served on this loop
        self.metrics.asyncio_tasks.set_function(lambda: len(asyncio.all_tasks(loop)))
        calls = "two hops" if self.runtime and self.runtime.two_hop_session else "one hop"
        self.metrics.info.info({"model": self.settings.model_path.name, "model_calls": calls})
        self._background.append(asyncio.create_task(self._watchdog(), name="relay-watchdog"))
        self._background.append(asyncio.create_task(self._poll_stats(), name="relay-stats"))
        log.info("relay ready in %.2f s", self.ready_seconds)

    def _warm_up(self) -> None:
        if self.runtime is None:
            self.runtime = ModelRuntime(
                self.settings.model_path, two_hops=self.settings.two_hop_model
            )
        warm_up(self.runtime)

    @property
    def ready(self) -> bool:
        """True when joins are accepted."""
        return self.state == "ready"

    async def drain(self, grace_seconds: float) -> None:
        """Refuse new joins, let calls go on for up to ``grace_seconds``, then end them."""
        if self.state in ("draining", "closed"):
            return
        self.state = "draining"
        self.metrics.ready.set(0)
        log.info("draining: %d participants, up to %.1f s", self.participant_count, grace_seconds)
        deadline = time.monotonic() + grace_seconds
        while self.participant_count and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await self.close()

    async def close(self) -> None:
        """End every call and stop the background tasks."""
        self.state = "closed"
        self.metrics.ready.set(0)
        for task in self._background:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._background.clear()
        for room in list(self.rooms.values()):
            for participant_id in list(room.participants):
                await self.leave(room.name, participant_id, "shutdown")
        await self.pool.aclose()

    # ---- joining and leaving ---------------------------------------------------------------
    @property
    def participant_count(self) -> int:
        """Participants in all rooms."""
        return sum(len(room.participants) for room in self.rooms.values())

    def _refuse_if_not_ready(self) -> None:
        if self.state == "ready":
            return
        reason = "draining" if self.state in ("draining", "closed") else "not_ready"
        detail = "the relay is shutting down" if reason == "draining" else "the relay is starting"
        raise RelayError(503, reason, detail, {"Retry-After": RETRY_AFTER_SECONDS})

    def check_token(self, room: str, token: str | None) -> TokenClaims | None:
        """Verify a join token when a secret is configured; 401 otherwise."""
        secret = self.settings.token_secret
        if secret is None:
            return None
        try:
            return verify_token(secret.get_secret_value(), token, room)
        except TokenError as error:
            raise RelayError(
                401,
                "invalid_token",
                str(error),
                {"WWW-Authenticate": 'Bearer realm="percepnet-relay"'},
            ) from error

    def _room_for_join(self, name: str) -> Room:
        check_room_name(name)
        room = self.rooms.get(name)
        if room is None:
            if not self.settings.auto_create_rooms:
                raise RelayError(404, "unknown_room", f"room {name!r} does not exist")
            room = self.create_room(name)
        if len(room.participants) >= self.settings.max_participants_per_room:
            raise RelayError(
                503, "room_full", f"room {name!r} is full", {"Retry-After": RETRY_AFTER_SECONDS}
            )
        return room

    def create_room(self, name: str) -> Room:
        """Open a room (joins open theirs unless auto-create is off); the room if it exists."""
        check_room_name(name)
        if name not in self.rooms:
            if len(self.rooms) >= self.settings.max_rooms:
                raise RelayError(
                    503,
                    "too_many_rooms",
                    "the relay has no room for another room",
                    {"Retry-After": RETRY_AFTER_SECONDS},
                )
            self.rooms[name] = Room(
                name,
                self.metrics,
                self.settings.mix_buffer_frames,
                self.opus,
                self.settings.mix_align_margin_ms / 1000.0,
            )
            self.metrics.rooms.set(len(self.rooms))
        return self.rooms[name]

    def _peer_connection(self) -> RTCPeerConnection:
        servers = [
            RTCIceServer(
                urls=s.urls,
                username=s.username,
                credential=s.credential.get_secret_value() if s.credential else None,
            )
            for s in self.settings.ice_servers
        ]
        return RTCPeerConnection(RTCConfiguration(iceServers=servers))

    async def join(
        self,
        room_name: str,
        offer_sdp: object,
        name: str | None = None,
        echo: bool = False,
        token: str | None = None,
        client_address: str = "unknown",
    ) -> tuple[Participant, str]:
        """Admit a peer from its SDP offer; returns the participant and the SDP answer.

        The peer counts as pending (against the global and ``client_address``'s caps) until it
        connects or goes."""
        self._refuse_if_not_ready()
        claims = self.check_token(room_name, token)
        sdp = check_offer_sdp(offer_sdp)
        check_room_name(room_name)
        check_fd_headroom(self.settings.fd_reserve, open_fd_count(), fd_limit())
        participant_id = secrets.token_urlsafe(12)
        self.pending.admit(participant_id, client_address)
        try:
            room = self._room_for_join(room_name)
            pending = self._pending_joins.get(room.name, 0)
            if len(room.participants) + pending >= self.settings.max_participants_per_room:
                raise RelayError(
                    503,
                    "room_full",
                    f"room {room_name!r} is full",
                    {"Retry-After": RETRY_AFTER_SECONDS},
                )
            return await self._negotiate(room, participant_id, sdp, name, echo, claims)
        except BaseException:
            self.pending.release(participant_id)
            raise

    async def _negotiate(
        self,
        room: Room,
        participant_id: str,
        sdp: str,
        name: str | None,
        echo: bool,
        claims: TokenClaims | None,
    ) -> tuple[Participant, str]:
        """Make the peer connection, apply the offer and answer it; the participant joins
        ``room`` when the answer carries ICE candidates and the room is still open."""
        assert self.runtime is not None
        pending = self._pending_joins.get(room.name, 0)
        defaults = EnhancementSettings(
            enhance=self.settings.default_enhance,
            attenuation_limit_db=self.settings.default_attenuation_limit_db,
            postfilter=self.settings.default_postfilter,
        )
        pc = self._peer_connection()
        participant = Participant(
            id=participant_id,
            key=secrets.token_urlsafe(18),
            name=(name or (claims.name if claims else None) or "guest")[:64],
            room=room,
            pc=pc,
            pipeline=SpeakerPipeline(self.runtime, defaults),
            output=MixedAudioTrack(self.settings.mix_buffer_frames, self.settings.opus_dtx),
            voice=VoiceActivity(
                self.settings.voice_activity_threshold, rule=self.settings.voice_activity_rule
            ),
            echo=echo,
            metrics=self.metrics,
            pool=self.pool,
            shard=self.pool.assign_shard(),
            max_queued_frames=self.settings.max_queued_frames,
        )

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                transceivers = pc.getTransceivers()
                participant.start_receiving(
                    next(t.receiver for t in transceivers if t.receiver.track is track)
                )

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            state = pc.connectionState
            if state == "connected" and participant.connected_at is None:
                self.pending.release(participant.id)
                participant.connected_at = time.monotonic()
                participant.last_audio_at = participant.connected_at
            elif state in ("failed", "closed"):
                await self.leave(room.name, participant.id, f"connection_{state}")

        self._pending_joins[room.name] = pending + 1
        failed = True
        try:
            # the relay speaks Opus only: a transceiver made before the offer is applied keeps
            # its codec preferences, whatever the offer prefers
            pc.addTransceiver(participant.output, direction="sendrecv").setCodecPreferences(
                OPUS_ONLY
            )
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
                await pc.setLocalDescription(await pc.createAnswer())
            except NEGOTIATION_ERRORS as error:
                raise RelayError(
                    400, "negotiation_failed", f"the offer could not be negotiated: {error}"
                ) from error
            if "a=candidate:" not in pc.localDescription.sdp:
                if "a=end-of-candidates" in sdp and not _remote_candidates(pc):
                    # aioice gathers nothing for components the peer ended without a usable
                    # candidate (RFC 8838 §14): the client's doing, not a shortage here
                    raise RelayError(
                        400,
                        "no_usable_candidates",
                        "the offer ends its ICE candidates without one the relay can use "
                        "(unresolvable mDNS names, or none at all)",
                    )
                log.warning("refused a join: ICE gathered no candidate")
                raise RelayError(
                    503,
                    "no_ice_candidates",
                    "the relay could not gather an ICE candidate (out of sockets?)",
                    {"Retry-After": RETRY_AFTER_SECONDS},
                )
            participant.listens = any(
                t.sender.track is participant.output
                and t.currentDirection in ("sendrecv", "sendonly")
                for t in pc.getTransceivers()
            )
            failed = False
        finally:
            left = self._pending_joins.pop(room.name, 1) - 1
            if left:
                self._pending_joins[room.name] = left
            if failed:  # its media tasks may have started with the offer's track
                await participant.close()
                self._forget_room_if_empty(room)
        if self.state != "ready":  # drained while negotiating
            await participant.close()
            self._forget_room_if_empty(room)
            self._refuse_if_not_ready()
        if self.rooms.get(room.name) is not room:  # closed while negotiating
            await participant.close()
            raise RelayError(404, "unknown_room", f"room {room.name!r} was closed")
        room.add(participant)
        self.metrics.participants.set(self.participant_count)
        self.metrics.joins.inc()
        log.info("participant %s joined room %s", participant.id, room.name)
        return participant, request_inband_fec(pc.localDescription.sdp)

    def _forget_room_if_empty(self, room: Room) -> None:
        if self.settings.auto_create_rooms and self._is_idle(room):
            self._forget_room(room)

    def _is_idle(self, room: Room) -> bool:
        """Nobody in ``room`` nor joining it, and it is still open."""
        return (
            not room.participants
            and not self._pending_joins.get(room.name)
            and self.rooms.get(room.name) is room
        )

    def _forget_room(self, room: Room) -> None:
        del self.rooms[room.name]
        self.metrics.rooms.set(len(self.rooms))

    async def close_room(self, name: str) -> None:
        """Close a room: every participant leaves (connections closed); 404 if unknown."""
        room = self.rooms.get(name)
        if room is None:
            raise RelayError(404, "unknown_room", f"room {name!r} does not exist")
        for participant_id in list(room.participants):
            await self.leave(name, participant_id, "room_closed")
        await room.stop_clock()
        if self.rooms.get(name) is room:
            self._forget_room(room)
        log.info("room %s closed", name)

    def find(self, room_name: str, participant_id: str) -> Participant:
        """A participant by room and id; 404 otherwise."""
        room = self.rooms.get(room_name)
        if room is None:
            raise RelayError(404, "unknown_room", f"room {room_name!r} does not exist")
        participant = room.participants.get(participant_id)
        if participant is None:
            raise RelayError(
                404,
                "unknown_participant",
                f"no participant {participant_id!r} in room {room_name!r}",
            )
        return participant

    async def leave(self, room_name: str, participant_id: str, reason: str) -> bool:
        """Remove a participant and close their connection; False if already gone."""
        room = self.rooms.get(room_name)
        participant = room.remove(participant_id) if room else None
        if room is None or participant is None:
            return False
        self.pending.release(participant_id)
        self.metrics.leaves.labels(reason).inc()
        self.metrics.participants.set(self.participant_count)
        log.info("participant %s left room %s (%s)", participant_id, room_name, reason)
        await participant.close()
        if not room.participants:
            await room.stop_clock()
            self._forget_room_if_empty(room)
        return True

    # ---- housekeeping ----------------------------------------------------------------------
    async def _watchdog(self) -> None:
        """Remove peers that never connect or whose audio stopped (vanished without a BYE)."""
        settings = self.settings
        period = min(
            WATCHDOG_SECONDS,
            settings.connect_timeout_seconds / 4,
            settings.media_timeout_seconds / 4,
            settings.empty_room_ttl_seconds / 4,
        )
        while True:
            await asyncio.sleep(period)
            for room_name, participant_id, reason in self._expired_participants():
                await self.leave(room_name, participant_id, reason)
            for room in self._expired_rooms():
                self._forget_room(room)
                await room.stop_clock()
                log.info(
                    "room %s closed: empty for %.0f s",
                    room.name,
                    self.settings.empty_room_ttl_seconds,
                )

    def _expired_rooms(self) -> list[Room]:
        """Rooms nobody has been in, nor joined, for ``empty_room_ttl_seconds``."""
        now = time.monotonic()
        return [
            room
            for room in self.rooms.values()
            if self._is_idle(room)
            and room.empty_since is not None
            and now - room.empty_since > self.settings.empty_room_ttl_seconds
        ]

    def _expired_participants(self) -> list[tuple[str, str, str]]:
        """(room, id, reason) of every peer past a timeout (ids only: no lingering references)."""
        now = time.monotonic()
        expired = []
        for room in self.rooms.values():
            for participant in room.participants.values():
                if participant.connected_at is None:
                    if now - participant.joined_at > self.settings.connect_timeout_seconds:
                        expired.append((room.name, participant.id, "connect_timeout"))
                elif participant.has_inbound_audio and participant.last_audio_at is not None:
                    if now - participant.last_audio_at > self.settings.media_timeout_seconds:
                        expired.append((room.name, participant.id, "media_timeout"))
        return expired

    async def _poll_stats(self) -> None:
        """Packet loss, jitter and RTT from aiortc's stats, into the metrics, every 5 s."""
        seen: dict[tuple[str, str], tuple[int, int]] = {}
        while True:
            await asyncio.sleep(STATS_SECONDS)
            seen = await self._sample_stats(seen)

    async def _sample_stats(
        self, seen: dict[tuple[str, str], tuple[int, int]]
    ) -> dict[tuple[str, str], tuple[int, int]]:
        """One pass over every connection; returns the packet counts it saw."""
        current: dict[tuple[str, str], tuple[int, int]] = {}
        connections = [
            (p.id, p.pc) for room in self.rooms.values() for p in room.participants.values()
        ]
        for participant_id, pc in connections:
            try:
                report = await pc.getStats()
            except Exception:  # connection closing under us
                continue
            for stat in report.values():
                if stat.type == "inbound-rtp":
                    key = (participant_id, stat.id)
                    received, lost = stat.packetsReceived, max(stat.packetsLost, 0)
                    before = seen.get(key, (0, 0))
                    self.metrics.packets_received.inc(max(received - before[0], 0))
                    self.metrics.packets_lost.inc(max(lost - before[1], 0))
                    self.metrics.jitter_seconds.observe(stat.jitter / 48000.0)
                    current[key] = (received, lost)
                elif stat.type == "remote-inbound-rtp" and stat.roundTripTime:
                    self.metrics.rtt_seconds.observe(stat.roundTripTime)
        return current

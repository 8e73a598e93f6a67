"""One participant: their peer connection, the frames they send and the track they hear."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from aiortc import RTCPeerConnection, RTCRtpReceiver

from service import aiortc_patches
from service.audio_frames import FRAME_SAMPLES
from service.batching import EnhancerPool, Outcome
from service.inbound import InboundAudio, Received
from service.metrics import RelayMetrics
from service.speaker import EnhancementSettings, SpeakerPipeline
from service.tracks import MixedAudioTrack
from service.voice_activity import VoiceActivity

if TYPE_CHECKING:
    from service.room import Room

log = logging.getLogger(__name__)


@dataclass
class ParticipantCounters:
    """What one participant's media did (reported by ``GET /rooms/{room}``)."""

    frames_received: int = 0
    frames_concealed: int = 0  # of those, stand-ins for lost packets
    frames_enhanced: int = 0
    frames_passed_through: int = 0
    frames_dropped: int = 0


@dataclass
class Participant:
    """A peer in a room. Its inbound audio is enhanced once and fed to the room's mixer: its
    receiver hands the Opus packets to an :class:`InboundAudio`, decoded and enhanced on the
    participant's shard, and each result comes back to :meth:`_on_audio` (no task of its own)."""

    id: str
    key: str
    name: str
    room: Room
    pc: RTCPeerConnection
    pipeline: SpeakerPipeline
    output: MixedAudioTrack
    echo: bool
    metrics: RelayMetrics
    pool: EnhancerPool
    shard: int
    max_queued_frames: int
    voice: VoiceActivity = field(default_factory=lambda: VoiceActivity(0.0))
    joined_at: float = field(default_factory=time.monotonic)
    connected_at: float | None = None
    last_audio_at: float | None = None
    has_inbound_audio: bool = False
    listens: bool = True  # False for send-only peers (WHIP ingest): nothing is mixed for them
    counters: ParticipantCounters = field(default_factory=ParticipantCounters)
    inbound: InboundAudio | None = None
    _leftover: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    closed: bool = False

    @property
    def settings(self) -> EnhancementSettings:
        """Current enhancement settings."""
        return self.pipeline.settings

    @settings.setter
    def settings(self, value: EnhancementSettings) -> None:
        self.pipeline.settings = value

    def start_receiving(self, receiver: RTCRtpReceiver) -> None:
        """Enhance and mix the audio ``receiver`` gets (call it on the ``track`` event)."""
        if self.has_inbound_audio or self.closed:
            return
        self.has_inbound_audio = True
        self.last_audio_at = time.monotonic()
        self.inbound = InboundAudio(
            self.pipeline,
            self.pool,
            self.shard,
            self.max_queued_frames,
            self._on_audio,
            self._count_dropped,
        )
        aiortc_patches.take_encoded_frames(receiver, self._on_packet)

    def _on_packet(self, frame: object) -> None:
        if frame is not None:
            self.last_audio_at = time.monotonic()
        assert self.inbound is not None
        self.inbound.put(frame)  # type: ignore[arg-type]

    def _count_dropped(self, reason: str) -> None:
        self.counters.frames_dropped += 1
        self.metrics.frames_dropped.labels(reason).inc()

    def _on_audio(self, received: Received, outcome: Outcome) -> None:
        """One stretch of this speaker's audio back from the shard (or its failure)."""
        counters, metrics = self.counters, self.metrics
        counters.frames_received += received.frames
        if received.concealed:
            counters.frames_concealed += received.concealed
            metrics.frames_concealed.inc(received.concealed)
        if isinstance(outcome, Exception):  # never lose the voice to an enhancer fault
            log.error("participant %s: enhancement failed", self.id, exc_info=outcome)
            counters.frames_passed_through += received.frames
            metrics.frames_passed.labels("error").inc(received.frames)
            self._to_mixer(received.samples, None, None)
            return
        if outcome.enhanced:
            counters.frames_enhanced += received.frames
            metrics.frames_enhanced.inc(received.frames)
            metrics.hop_seconds.observe(outcome.seconds_per_hop)
        else:
            counters.frames_passed_through += received.frames
            metrics.frames_passed.labels("disabled").inc(received.frames)
        metrics.lag_seconds.observe(time.monotonic() - received.arrival)
        self._to_mixer(outcome.samples, outcome.speech_probability, outcome.kept_to_noise_db)

    def _to_mixer(
        self, samples: np.ndarray, speech_probability: float | None, kept_db: float | None
    ) -> None:
        """Cut the stream into 20 ms frames for the mixer (clients may use other ptimes), each
        marked speaking or not (from the enhancer's mean gain and kept-to-noise ratio; None:
        not enhanced, by level)."""
        if samples.shape[0] == FRAME_SAMPLES and not self._leftover.size:
            frames = [samples]
        else:
            data = np.concatenate((self._leftover, samples))
            whole = data.shape[0] // FRAME_SAMPLES
            frames = [data[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] for i in range(whole)]
            self._leftover = data[whole * FRAME_SAMPLES :].copy()
        mixed = False
        for frame in frames:
            was_speaking = self.voice.speaking
            speaking = self.voice.update(frame, speech_probability, kept_db)
            if speaking != was_speaking:
                self.metrics.speaking.inc(1 if speaking else -1)
            mixed |= speaking
            dropped = self.room.mixer.push(self.id, frame, speaking)
            for _ in range(dropped):
                self._count_dropped("mixer_overflow")
        self.room.frame_arrived(self.id, mixed)

    async def close(self) -> None:
        """Stop the media and the peer connection (idempotent)."""
        if self.closed:
            return
        self.closed = True
        if self.inbound is not None:
            self.inbound.closed = True
        if self.voice.speaking:
            self.voice.speaking = False
            self.metrics.speaking.dec()
        self.output.stop()
        with contextlib.suppress(Exception):
            await self.pc.close()

    def describe(self) -> dict[str, object]:
        """The participant as the control plane shows it."""
        now = time.monotonic()
        return {
            "id": self.id,
            "name": self.name,
            "connection_state": self.pc.connectionState,
            "echo": self.echo,
            "sending_audio": self.has_inbound_audio,
            "speaking": self.voice.speaking,
            "level_db": round(self.voice.level_db, 1),
            "listening": self.listens,
            "seconds_in_room": round(now - self.joined_at, 3),
            "settings": {
                "enhance": self.settings.enhance,
                "attenuation_limit_db": self.settings.attenuation_limit_db,
                "postfilter": self.settings.postfilter,
            },
            "frames": {
                "received": self.counters.frames_received,
                "concealed": self.counters.frames_concealed,
                "enhanced": self.counters.frames_enhanced,
                "passed_through": self.counters.frames_passed_through,
                "dropped": self.counters.frames_dropped,
                "output_dropped": self.output.dropped_frames,
            },
        }

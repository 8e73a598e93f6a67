"""One participant: their peer connection, the frames they send and the track they hear."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import av
import numpy as np
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from service.audio_frames import FRAME_SAMPLES, frame_to_mono
from service.batching import EnhancerPool
from service.concealment import is_concealed
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
    """A peer in a room. Its inbound audio is enhanced once and fed to the room's mixer."""

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
    _queue: deque[tuple[np.ndarray, float]] = field(default_factory=deque)
    _wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _leftover: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    closed: bool = False

    @property
    def settings(self) -> EnhancementSettings:
        """Current enhancement settings."""
        return self.pipeline.settings

    @settings.setter
    def settings(self, value: EnhancementSettings) -> None:
        self.pipeline.settings = value

    def start_receiving(self, track: MediaStreamTrack) -> None:
        """Enhance and mix the audio arriving on ``track``."""
        if self.has_inbound_audio or self.closed:
            return
        self.has_inbound_audio = True
        self.last_audio_at = time.monotonic()
        self._tasks.append(asyncio.create_task(self._read(track), name=f"read-{self.id}"))
        self._tasks.append(asyncio.create_task(self._process(), name=f"enhance-{self.id}"))

    async def _read(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            arrival = time.monotonic()
            self.last_audio_at = arrival
            self.counters.frames_received += 1
            if is_concealed(frame):
                self.counters.frames_concealed += 1
                self.metrics.frames_concealed.inc()
            try:
                if not isinstance(frame, av.AudioFrame):
                    raise ValueError(f"not an audio frame: {type(frame).__name__}")
                samples = frame_to_mono(frame)
            except ValueError as error:
                log.warning("participant %s: unusable frame: %s", self.id, error)
                self._count_dropped("bad_frame")
                continue
            if len(self._queue) >= self.max_queued_frames:
                self._queue.popleft()  # enhancement is behind real time: lose the oldest
                self._count_dropped("behind")
            self._queue.append((samples, arrival))
            self._wakeup.set()

    def _count_dropped(self, reason: str) -> None:
        self.counters.frames_dropped += 1
        self.metrics.frames_dropped.labels(reason).inc()

    async def _process(self) -> None:
        while True:
            while not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
            samples, arrival = self._queue.popleft()
            try:
                result = await self.pool.enhance(self.shard, self.pipeline, samples)
            except Exception:  # never lose the voice to an enhancer fault: pass it through
                log.exception("participant %s: enhancement failed", self.id)
                self.counters.frames_passed_through += 1
                self.metrics.frames_passed.labels("error").inc()
                self._to_mixer(samples, None)
                continue
            if result.enhanced:
                self.counters.frames_enhanced += 1
                self.metrics.frames_enhanced.inc()
                self.metrics.hop_seconds.observe(result.seconds_per_hop)
            else:
                self.counters.frames_passed_through += 1
                self.metrics.frames_passed.labels("disabled").inc()
            self.metrics.lag_seconds.observe(time.monotonic() - arrival)
            self._to_mixer(result.samples, result.speech_probability)

    def _to_mixer(self, samples: np.ndarray, speech_probability: float | None) -> None:
        """Cut the stream into 20 ms frames for the mixer (clients may use other ptimes), each
        marked speaking or not (``speech_probability``: the enhancer's, None: by level)."""
        if samples.shape[0] == FRAME_SAMPLES and not self._leftover.size:
            frames = [samples]
        else:
            data = np.concatenate((self._leftover, samples))
            whole = data.shape[0] // FRAME_SAMPLES
            frames = [data[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] for i in range(whole)]
            self._leftover = data[whole * FRAME_SAMPLES :].copy()
        for frame in frames:
            was_speaking = self.voice.speaking
            speaking = self.voice.update(frame, speech_probability)
            if speaking != was_speaking:
                self.metrics.speaking.inc(1 if speaking else -1)
            dropped = self.room.mixer.push(self.id, frame, speaking)
            for _ in range(dropped):
                self._count_dropped("mixer_overflow")

    async def close(self) -> None:
        """Stop the media tasks and the peer connection (idempotent)."""
        if self.closed:
            return
        self.closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
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

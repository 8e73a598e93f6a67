"""Mix-minus for one room: each listener hears everyone else's latest enhanced frames.

Pure logic, no clock: the room calls :meth:`RoomMixer.tick` every 20 ms. Each speaker has a
short FIFO of enhanced frames; a tick takes at most one frame from each, so a speaker whose
packets stop contributes silence at once, and a FIFO that overflows loses its oldest frame
(latency stays bounded). A FIFO that never empties for 1 s (a backlog left by a burst, or by
the concealment of a loss) loses the frames that stood in it all that second, so the delay
returns to its minimum within a second of the network calming down.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from service.audio_frames import FRAME_SAMPLES


@dataclass
class _Channel:
    frames: deque[np.ndarray]
    echo: bool
    last: np.ndarray | None = field(default=None)
    standing_ticks: int = 0
    standing_frames: int = 0  # fewest frames left waiting after a tick, while standing


TRIM_AFTER_TICKS = 50  # one second


class RoomMixer:
    """Mix-minus over a room's participants."""

    def __init__(self, buffer_frames: int = 3, frame_samples: int = FRAME_SAMPLES) -> None:
        self.buffer_frames = buffer_frames
        self.trimmed_frames = 0
        self.frame_samples = frame_samples
        self._channels: dict[str, _Channel] = {}
        self._silence = np.zeros(frame_samples, dtype=np.float32)

    def __contains__(self, participant_id: str) -> bool:
        return participant_id in self._channels

    def __len__(self) -> int:
        return len(self._channels)

    def add(self, participant_id: str, echo: bool = False) -> None:
        """A participant who listens (and may speak); ``echo`` also plays their own voice."""
        self._channels[participant_id] = _Channel(deque(), echo)

    def remove(self, participant_id: str) -> None:
        """Forget a participant (no-op if absent)."""
        self._channels.pop(participant_id, None)

    def push(self, participant_id: str, samples: np.ndarray) -> int:
        """Queue one enhanced frame of a speaker; returns how many old frames were dropped."""
        channel = self._channels.get(participant_id)
        if channel is None:
            return 0
        if samples.shape != (self.frame_samples,):
            raise ValueError(f"mixer frames have {self.frame_samples} samples, got {samples.shape}")
        channel.frames.append(samples)
        dropped = 0
        while len(channel.frames) > self.buffer_frames:
            channel.frames.popleft()
            dropped += 1
        return dropped

    def tick(self) -> dict[str, np.ndarray]:
        """One 20 ms step: every participant's output frame (float32, clipped to ±1)."""
        total = np.zeros(self.frame_samples, dtype=np.float32)
        for channel in self._channels.values():
            channel.last = channel.frames.popleft() if channel.frames else None
            if channel.last is not None:
                total += channel.last
            waiting = len(channel.frames)
            if not waiting:
                channel.standing_ticks = 0
            elif channel.standing_ticks == 0:
                channel.standing_ticks, channel.standing_frames = 1, waiting
            else:
                channel.standing_ticks += 1
                channel.standing_frames = min(channel.standing_frames, waiting)
            if channel.standing_ticks >= TRIM_AFTER_TICKS:
                for _ in range(channel.standing_frames):  # the oldest: the newest play next
                    channel.frames.popleft()
                self.trimmed_frames += channel.standing_frames
                channel.standing_ticks = 0
        outputs = {}
        for participant_id, channel in self._channels.items():
            if channel.last is None or channel.echo:
                mix = total.copy()
            else:
                mix = total - channel.last
            np.clip(mix, -1.0, 1.0, out=mix)
            outputs[participant_id] = mix
        return outputs

"""Mix-minus for one room: each listener hears everyone else's latest enhanced frames.

Pure logic, no clock: the room calls :meth:`RoomMixer.tick` every 20 ms. Each speaker has a
short FIFO of enhanced frames; a tick takes at most one frame from each, so a speaker whose
packets stop contributes silence at once, and a FIFO that overflows loses its oldest frame
(latency stays bounded). A frame that comes after its tick has been played as silence (late)
still plays, behind it: it is most often the concealment of a lost packet, which the receive
buffer can only make once the next packet has come (dropping it would turn every concealed
loss back into silence; `tests/test_playout.py`). A backlog also sheds its frames that hold
no speech as they come due: nobody hears them (only speech is mixed), so the delay drops back
at the speaker's next pause at no cost. A FIFO that never empties for 1 s all the same (a
backlog left by a burst, or by the concealment of a loss, while the speaker talks on) loses
the frames that stood in it all that second, so the delay returns to its minimum within a
second of the network calming down.

Only frames marked as speech are mixed (a speaker who is not talking adds nothing but
suppressed noise), so listeners who hear the same set of active speakers get the very same
mix: one array, encoded once by the room. :attr:`RoomMixer.heard` names that set per listener.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from service.audio_frames import FRAME_SAMPLES


@dataclass
class _Channel:
    frames: deque[tuple[np.ndarray, bool]]  # (samples, speaking)
    echo: bool
    last: np.ndarray | None = field(default=None)  # this tick's frame, if it is mixed
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
        self.heard: dict[str, frozenset[str]] = {}  # per listener: the speakers in its mix

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

    def push(self, participant_id: str, samples: np.ndarray, speaking: bool = True) -> int:
        """Queue one enhanced frame of a speaker (``speaking``: it holds speech, so it is
        mixed); returns how many old frames were dropped."""
        channel = self._channels.get(participant_id)
        if channel is None:
            return 0
        if samples.shape != (self.frame_samples,):
            raise ValueError(f"mixer frames have {self.frame_samples} samples, got {samples.shape}")
        channel.frames.append((samples, speaking))
        dropped = 0
        while len(channel.frames) > self.buffer_frames:
            channel.frames.popleft()
            dropped += 1
        return dropped

    def tick(self) -> dict[str, np.ndarray]:
        """One 20 ms step: every participant's output frame (float32, clipped to ±1).
        Listeners who hear the same speakers share one array (do not write into it)."""
        total = np.zeros(self.frame_samples, dtype=np.float32)
        speakers = []
        for participant_id, channel in self._channels.items():
            samples, speaking = self._next_frame(channel)
            channel.last = samples if speaking else None
            if channel.last is not None:
                total += channel.last
                speakers.append(participant_id)
            self._trim(channel)
        everyone = frozenset(speakers)
        mixes: dict[frozenset[str], np.ndarray] = {}
        outputs = {}
        self.heard = {}
        for participant_id, channel in self._channels.items():
            own = channel.last is not None and not channel.echo
            key = everyone - {participant_id} if own else everyone
            mix = mixes.get(key)
            if mix is None:
                mix = total - channel.last if own else total.copy()  # type: ignore[operator]
                np.clip(mix, -1.0, 1.0, out=mix)
                mixes[key] = mix
            outputs[participant_id] = mix
            self.heard[participant_id] = key
        return outputs

    def _next_frame(self, channel: _Channel) -> tuple[np.ndarray | None, bool]:
        """The frame this tick plays for ``channel``: the oldest waiting; while others wait
        behind it, a frame that holds no speech is dropped (unheard)."""
        frames = channel.frames
        if not frames:
            return None, False
        while len(frames) > 1 and not frames[0][1]:  # unheard: only speech is mixed
            frames.popleft()
            self.trimmed_frames += 1
        return frames.popleft()

    def _trim(self, channel: _Channel) -> None:
        """Drop a backlog that stood in ``channel`` for a whole second."""
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

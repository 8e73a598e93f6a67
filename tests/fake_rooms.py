"""A room whose participants are stand-ins (no peer connections): its clock, mixer, encoders
and each listener's outgoing track are real."""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

from service.metrics import RelayMetrics
from service.opus import OpusSettings
from service.room import Room
from service.tracks import MixedAudioTrack


def room_of(names: Iterable[str], dtx: bool, **room_options: Any) -> Room:
    """Room "r" with a connected listener (and speaker) per name, each track queueing up to
    100 packets (``dtx``: silent mixes pause them)."""
    room = Room("r", RelayMetrics(), opus=OpusSettings(), **room_options)
    for name in names:
        room.mixer.add(name)
        room.participants[name] = SimpleNamespace(  # type: ignore[assignment]
            listens=True,
            connected_at=0.0,
            closed=False,
            output=MixedAudioTrack(max_frames=100, dtx=dtx),
        )
    return room

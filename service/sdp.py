"""Checks on a client's SDP offer before aiortc sees it: clear reasons instead of stack traces."""

from __future__ import annotations

import re

from service.errors import RelayError

_MEDIA = re.compile(r"^m=(\w+) (\d+)(?:/\d+)? (\S+)(?: (.*))?$")
_RTPMAP = re.compile(r"^a=rtpmap:(\d+) ([^/\s]+)/(\d+)", re.IGNORECASE)


def check_offer_sdp(sdp: object) -> str:
    """Return the offer if it is SDP with an active audio section offering Opus/48000.

    Raises :class:`RelayError` 400 with reason ``malformed_sdp``, ``no_audio`` or ``no_opus``.
    """
    if not isinstance(sdp, str) or not sdp.strip():
        raise RelayError(400, "malformed_sdp", "the offer has no SDP text")
    lines = [line.strip() for line in sdp.strip().splitlines()]
    if lines[0] != "v=0" or not any(line.startswith("o=") for line in lines):
        raise RelayError(400, "malformed_sdp", "the offer is not SDP (no 'v=0'/'o=' lines)")
    sections: list[tuple[str, int, list[str]]] = []
    for line in lines:
        if line.startswith("m="):
            match = _MEDIA.match(line)
            if match is None:
                raise RelayError(400, "malformed_sdp", f"malformed media line: {line[:80]!r}")
            sections.append((match.group(1), int(match.group(2)), []))
        elif sections:
            sections[-1][2].append(line)
    audio = [
        attributes
        for kind, port, attributes in sections
        if kind == "audio" and port != 0 and "a=inactive" not in attributes
    ]
    if not audio:
        raise RelayError(400, "no_audio", "the offer has no active audio section")
    for attributes in audio:
        for line in attributes:
            match = _RTPMAP.match(line)
            if match and match.group(2).lower() == "opus" and match.group(3) == "48000":
                return sdp
    raise RelayError(
        400,
        "no_opus",
        "the offer's audio does not include Opus/48000 (the only codec the relay speaks)",
    )

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


_FMTP = re.compile(r"^a=fmtp:(\d+) (.*)$")


def request_inband_fec(answer_sdp: str) -> str:
    """The answer with ``useinbandfec=1`` on every Opus format: a sender that honours it
    (Chromium does) then puts FEC for each packet into the next, which the relay's decoder
    uses to rebuild a lost packet (RFC 7587 §7: the receiver's fmtp asks for it)."""
    lines = answer_sdp.split("\r\n")
    rtpmaps = [m for line in lines if (m := _RTPMAP.match(line))]
    opus = {m.group(1) for m in rtpmaps if m.group(2).lower() == "opus"}
    out: list[str] = []
    for line in lines:
        match = _FMTP.match(line)
        if match and match.group(1) in opus:
            parameters = [p for p in match.group(2).split(";") if p.strip()]
            if not any(p.strip().startswith("useinbandfec=") for p in parameters):
                line = f"a=fmtp:{match.group(1)} " + ";".join([*parameters, "useinbandfec=1"])
            opus.discard(match.group(1))
            out.append(line)
            continue
        out.append(line)
        rtpmap = _RTPMAP.match(line)
        if rtpmap and rtpmap.group(1) in opus and not _has_fmtp(lines, rtpmap.group(1)):
            out.append(f"a=fmtp:{rtpmap.group(1)} useinbandfec=1")
    return "\r\n".join(out)


def _has_fmtp(lines: list[str], payload_type: str) -> bool:
    return any(line.startswith(f"a=fmtp:{payload_type} ") for line in lines)

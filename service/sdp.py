"""Checks on a client's SDP offer, line by line, before aiortc sees it.

aiortc's parser (``aiortc.sdp.SessionDescription.parse``, 1.16) asserts, indexes and unpacks
its way through an offer: a line it cannot read raises ``AssertionError``, ``AttributeError``,
``StopIteration``…, deep inside the request. So every line it interprets is held here to the
grammar it expects (RFC 8866, 8839, 8843, 3264 as browsers write them), and the offer as a whole
to what the relay can negotiate. A refusal is a :class:`RelayError` 400 whose reason says what
is wrong (``malformed_sdp``, ``no_audio``, ``no_opus``, ``no_fingerprint``,
``unsupported_media``, ``unsupported_codecs``, ``sdp_too_large``) and whose detail names the
line. The relay's answer, in turn, asks senders for Opus in-band FEC.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from aiortc.codecs import CODECS
from aiortc.rtcpeerconnection import find_common_codecs
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from service.errors import RelayError

MAX_LINES = 1024
MAX_SECTIONS = 4  # audio, video, data, and one to spare: each unbundled section opens sockets
MAX_CANDIDATES_PER_SECTION = 32  # each one is paired with every local candidate and checked
MAX_FORMATS_PER_SECTION = 64
FORBIDDEN_PAYLOAD_TYPES = range(72, 77)  # RTCP packet types (RFC 5761), as aiortc.rtp has them
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
DIGEST_ALGORITHMS = ("sha-256", "sha-384", "sha-512")  # what aiortc's DTLS can verify
RTP_PROTOS = ("UDP/TLS/RTP/SAVPF", "TCP/TLS/RTP/SAVPF", "RTP/SAVPF", "UDP/TLS/RTP/SAVP", "RTP/SAVP")
SCTP_PROTOS = ("UDP/DTLS/SCTP", "TCP/DTLS/SCTP", "DTLS/SCTP")
# aiortc.sdp.FMTP_INT_PARAMETERS: int() is called on each
FMTP_INT_PARAMETERS = frozenset(
    ("apt", "max-fr", "max-fs", "maxplaybackrate", "minptime", "stereo", "useinbandfec")
)

_LINE = re.compile(r"([a-z])=(.*)")
_SESSION_TYPES = frozenset("vosiuepcbtrzka")
_MEDIA_TYPES = frozenset("icbka")
_ATTRIBUTE = re.compile(r"a=([A-Za-z0-9][A-Za-z0-9_.+-]{0,63})(?::(.*))?")
_MEDIA = re.compile(r"m=(\w+) ([0-9]{1,5}) ([A-Z/]+) (\S+(?: \S+)*)")
_CONNECTION = re.compile(r"IN IP[46] [^ ]+")
_TOKEN = r"[!#$%&'*+.^_`{|}~0-9A-Za-z-]"
_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]+")
_MDNS_HOST = re.compile(r"[a-zA-Z0-9-]{1,63}\.local")  # as aioice.mdns recognises them
_RTPMAP = re.compile(r"([0-9]{1,3}) ([A-Za-z0-9_.-]{1,32})/([0-9]{1,9})(?:/([0-9]{1,2}))?")
_FMTP = re.compile(r"([0-9]{1,3}) (\S.*)")

# the value each attribute aiortc interprets must have (None: a flag, any value ignored)
_VALUES: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern)
    for name, pattern in {
        "fingerprint": r"[a-zA-Z0-9-]{1,16} [0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){15,63}",
        "group": rf"{_TOKEN}{{1,32}}(?: {_TOKEN}{{1,32}})*",
        "msid-semantic": rf" ?{_TOKEN}{{1,32}}(?: \S{{1,64}})*",
        "setup": r"actpass|active|passive",
        "ice-ufrag": r"[A-Za-z0-9+/]{4,256}",
        "ice-pwd": r"[A-Za-z0-9+/]{22,256}",
        "ice-options": r"\S{1,64}(?: \S{1,64})*",
        "extmap": r"[0-9]{1,3}(?:/(?:sendrecv|sendonly|recvonly|inactive))? \S{1,256}",
        "max-message-size": r"[0-9]{1,10}",
        "mid": rf"{_TOKEN}{{1,32}}",
        "msid": r"\S{1,64}(?: \S{1,64})?",
        "rtcp": r"[0-9]{1,5}(?: IN IP[46] [^ ]+)?",
        "sctpmap": r"[0-9]{1,5} \S{1,64}(?: [0-9]{1,5})?",
        "sctp-port": r"[0-9]{1,5}",
        "ssrc-group": rf"{_TOKEN}{{1,32}}(?: [0-9]{{1,10}})*",
        "ssrc": rf"[0-9]{{1,10}} {_TOKEN}{{1,32}}:.*",
        "rtcp-fb": r"(?:\*|[0-9]{1,3}) \S{1,64}(?: \S.*)?",
        "candidate": r".+",  # then checked field by field
        "rtpmap": r".+",
        "fmtp": r".+",
    }.items()
}


def _refuse(reason: str, detail: str) -> RelayError:
    return RelayError(400, reason, detail)


def _where(number: int, line: str) -> str:
    return f"line {number} ({line[:80]!r})"


@dataclass
class _Section:
    """What the checks need to know of one media section."""

    kind: str
    port: int
    formats: list[str]
    where: str
    mids: list[str] = field(default_factory=list)
    rtpmaps: dict[int, tuple[str, int, int | None]] = field(default_factory=dict)
    fmtps: dict[int, str] = field(default_factory=dict)
    candidates: int = 0
    rtcp_mux: bool = False
    direction: str | None = None
    ice_ufrag: bool = False
    ice_pwd: bool = False
    setup: bool = False
    fingerprints: list[str] = field(default_factory=list)


@dataclass
class _Offer:
    """The session-level facts, and the sections."""

    origin: bool = False
    ice_ufrag: bool = False
    ice_pwd: bool = False
    setup: bool = False
    fingerprints: list[str] = field(default_factory=list)
    bundles: list[list[str]] = field(default_factory=list)
    sections: list[_Section] = field(default_factory=list)


def check_offer_sdp(sdp: object) -> str:
    """Return the offer if aiortc can parse it and the relay can negotiate it.

    Raises :class:`RelayError` 400 naming the first problem (see the module docstring).
    """
    if not isinstance(sdp, str) or not sdp.strip():
        raise _refuse("malformed_sdp", "the offer has no SDP text")
    lines = sdp.splitlines()  # as aiortc splits them
    if len(lines) > MAX_LINES:
        raise _refuse("sdp_too_large", f"the offer has over {MAX_LINES} lines")
    if lines[0] != "v=0":
        raise _refuse("malformed_sdp", "the offer is not SDP (its first line is not 'v=0')")
    offer = _Offer()
    for number, line in enumerate(lines, start=1):
        if line:
            _check_line(offer, number, line)
    if not offer.origin:
        raise _refuse("malformed_sdp", "the offer is not SDP (it has no 'o=' line)")
    _check_sections(offer)
    return sdp


def _check_line(offer: _Offer, number: int, line: str) -> None:
    where = _where(number, line)
    if not line.isprintable() or _LINE.fullmatch(line) is None:
        raise _refuse("malformed_sdp", f"{where} is not an SDP line")
    kind = line[0]
    section = offer.sections[-1] if offer.sections else None
    if kind == "m":
        offer.sections.append(_media_section(line, where))
        if len(offer.sections) > MAX_SECTIONS:
            raise _refuse("sdp_too_large", f"the offer has over {MAX_SECTIONS} media sections")
    elif kind not in (_SESSION_TYPES if section is None else _MEDIA_TYPES):
        raise _refuse("malformed_sdp", f"{where}: no '{kind}=' line belongs there")
    elif kind == "v" and number > 1:
        raise _refuse("malformed_sdp", f"{where}: a second 'v=' line")
    elif kind == "o":
        if offer.origin:
            raise _refuse("malformed_sdp", f"{where}: a second 'o=' line")
        offer.origin = True
    elif kind == "c" and _CONNECTION.fullmatch(line[2:]) is None:
        raise _refuse("malformed_sdp", f"{where}: connection lines are 'c=IN IP4|IP6 ADDRESS'")
    elif kind == "a":
        _attribute(offer, section, line, where)


def _media_section(line: str, where: str) -> _Section:
    match = _MEDIA.fullmatch(line)
    if match is None:
        raise _refuse("malformed_sdp", f"{where}: media lines are 'm=KIND PORT PROTO FORMATS'")
    kind, port, proto, formats = match[1], int(match[2]), match[3], match[4].split(" ")
    if port > 65535:
        raise _refuse("malformed_sdp", f"{where}: port {port} is out of range")
    if kind not in ("audio", "video", "application"):
        raise _refuse("unsupported_media", f"{where}: the relay takes audio, video and data")
    if proto not in (SCTP_PROTOS if kind == "application" else RTP_PROTOS):
        raise _refuse("unsupported_media", f"{where}: unknown transport protocol {proto!r}")
    if len(formats) > MAX_FORMATS_PER_SECTION:
        raise _refuse("sdp_too_large", f"{where}: over {MAX_FORMATS_PER_SECTION} formats")
    if kind != "application" or proto == "DTLS/SCTP":
        for text in formats:
            if not text.isdigit() or len(text) > 3 or int(text) > 127:
                raise _refuse("malformed_sdp", f"{where}: payload types are 0–127, not {text!r}")
            if kind != "application" and int(text) in FORBIDDEN_PAYLOAD_TYPES:
                raise _refuse("malformed_sdp", f"{where}: payload type {text} is reserved")
    return _Section(kind, port, formats, where)


def _attribute(offer: _Offer, section: _Section | None, line: str, where: str) -> None:
    match = _ATTRIBUTE.fullmatch(line)
    if match is None:
        raise _refuse("malformed_sdp", f"{where}: attributes are 'a=NAME' or 'a=NAME:VALUE'")
    name, value = match[1], match[2]
    grammar = _VALUES.get(name)
    if grammar is not None and (value is None or grammar.fullmatch(value) is None):
        raise _refuse("malformed_sdp", f"{where}: a malformed '{name}' attribute")
    if value is None:
        _flag(offer, section, name)
        return
    handler = _SESSION_HANDLERS.get(name) if section is None else _MEDIA_HANDLERS.get(name)
    if handler is not None:
        handler(offer, section, value, where)


def _flag(offer: _Offer, section: _Section | None, name: str) -> None:
    if section is not None and name == "rtcp-mux":
        section.rtcp_mux = True
    elif section is not None and name in DIRECTIONS:
        section.direction = name


def _ice_ufrag(offer: _Offer, section: _Section | None, value: str, where: str) -> None:
    (section or offer).ice_ufrag = True


def _ice_pwd(offer: _Offer, section: _Section | None, value: str, where: str) -> None:
    (section or offer).ice_pwd = True


def _setup(offer: _Offer, section: _Section | None, value: str, where: str) -> None:
    (section or offer).setup = True


def _fingerprint(offer: _Offer, section: _Section | None, value: str, where: str) -> None:
    (section or offer).fingerprints.append(value.split(" ")[0])


def _group(offer: _Offer, section: _Section | None, value: str, where: str) -> None:
    semantic, *mids = value.split(" ")
    if semantic == "BUNDLE":
        if len(set(mids)) != len(mids):
            raise _refuse("malformed_sdp", f"{where}: a mid bundled twice")
        offer.bundles.append(mids)


def _mid(offer: _Offer, section: _Section | None, value: str, where: str) -> None:
    assert section is not None
    section.mids.append(value)


def _extmap(offer: _Offer, section: _Section | None, value: str, where: str) -> None:
    ext_id = int(value.split(" ")[0].split("/")[0])
    if not 1 <= ext_id <= 255:
        raise _refuse("malformed_sdp", f"{where}: header extension ids are 1–255")


def _rtcp(offer: _Offer, section: _Section | None, value: str, where: str) -> None:
    if int(value.split(" ")[0]) > 65535:
        raise _refuse("malformed_sdp", f"{where}: port out of range")


def _rtpmap(offer: _Offer, section: _Section | None, value: str, where: str) -> None:
    assert section is not None
    match = _RTPMAP.fullmatch(value)
    if match is None:
        raise _refuse("malformed_sdp", f"{where}: rtpmaps are 'PT NAME/RATE[/CHANNELS]'")
    payload_type = int(match[1])
    if match[1] not in section.formats:
        raise _refuse("malformed_sdp", f"{where}: payload type {payload_type} is not offered")
    if payload_type in section.rtpmaps:
        raise _refuse("malformed_sdp", f"{where}: payload type {payload_type} mapped twice")
    channels = int(match[4]) if match[4] else None
    section.rtpmaps[payload_type] = (match[2], int(match[3]), channels)


def _fmtp(offer: _Offer, section: _Section | None, value: str, where: str) -> None:
    assert section is not None
    match = _FMTP.fullmatch(value)
    if match is None:
        raise _refuse("malformed_sdp", f"{where}: fmtp lines are 'PT PARAMETERS'")
    for parameter in match[2].split(";"):
        key, equals, number = parameter.partition("=")
        if key in FMTP_INT_PARAMETERS and equals and not re.fullmatch("[0-9]{1,9}", number):
            raise _refuse("malformed_sdp", f"{where}: {key} must be a whole number")
    section.fmtps[int(match[1])] = match[2]


def _candidate(offer: _Offer, section: _Section | None, value: str, where: str) -> None:
    problem = candidate_problem(value)
    if problem is not None:
        raise _refuse("malformed_sdp", f"{where}: {problem}")
    if section is not None:
        section.candidates += 1
        if section.candidates > MAX_CANDIDATES_PER_SECTION:
            raise _refuse("sdp_too_large", f"{where}: over {MAX_CANDIDATES_PER_SECTION} candidates")


_Handler = Callable[[_Offer, "_Section | None", str, str], None]
_SESSION_HANDLERS: dict[str, _Handler] = {
    "ice-ufrag": _ice_ufrag,
    "ice-pwd": _ice_pwd,
    "setup": _setup,
    "fingerprint": _fingerprint,
    "group": _group,
}
_MEDIA_HANDLERS: dict[str, _Handler] = {
    "ice-ufrag": _ice_ufrag,
    "ice-pwd": _ice_pwd,
    "setup": _setup,
    "fingerprint": _fingerprint,
    "mid": _mid,
    "extmap": _extmap,
    "rtcp": _rtcp,
    "rtpmap": _rtpmap,
    "fmtp": _fmtp,
    "candidate": _candidate,
}


def candidate_problem(value: str) -> str | None:
    """What is wrong with an ``a=candidate:`` value (RFC 8839 §5.1), or None."""
    bits = value.split(" ")
    if len(bits) < 8 or bits[6] != "typ":
        return "candidates are 'FOUNDATION COMPONENT TRANSPORT PRIORITY ADDRESS PORT typ TYPE'"
    foundation, component, transport, priority, address, port, _, kind = bits[:8]
    if len(foundation) > 32 or not _ICE_CHARS.fullmatch(foundation):
        return "a candidate's foundation is 1–32 of A-Z a-z 0-9 + /"
    if not _whole(component, 1, 256):
        return "a candidate's component is 1–256"
    if transport.lower() not in ("udp", "tcp"):
        return "a candidate's transport is UDP or TCP"
    if not _whole(priority, 0, 2**32 - 1):
        return "a candidate's priority is 0–4294967295"
    if not _is_address(address) or not _whole(port, 0, 65535):
        return "a candidate's address is an IP address or an mDNS name, and its port 0–65535"
    if kind not in ("host", "srflx", "prflx", "relay"):
        return "a candidate's type is host, srflx, prflx or relay"
    extensions = bits[8:]
    if len(extensions) % 2 or not all(extensions):
        return "a candidate's extensions are NAME VALUE pairs"
    for name, extension in zip(extensions[::2], extensions[1::2], strict=True):
        if name == "raddr" and not _is_address(extension):
            return "a candidate's raddr is an IP address or an mDNS name"
        if name == "rport" and not _whole(extension, 0, 65535):
            return "a candidate's rport is 0–65535"
    return None


def _whole(text: str, low: int, high: int) -> bool:
    return text.isdigit() and len(text) <= 10 and low <= int(text) <= high


def _is_address(text: str) -> bool:
    if _MDNS_HOST.fullmatch(text):
        return True
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check_sections(offer: _Offer) -> None:
    mids: set[str] = set()
    for section in offer.sections:
        _check_section(offer, section)
        if section.mids[0] in mids:
            raise _refuse("malformed_sdp", f"{section.where}: mid {section.mids[0]!r} repeated")
        mids.add(section.mids[0])
    for bundle in offer.bundles:
        if bundle and not set(bundle) <= mids:
            raise _refuse("malformed_sdp", "a=group:BUNDLE names a mid no section has")
    if not any(s.kind == "audio" and s.port and s.direction != "inactive" for s in offer.sections):
        raise _refuse("no_audio", "the offer has no active audio section")
    for section in offer.sections:
        _check_codecs(section)


def _check_section(offer: _Offer, section: _Section) -> None:
    where = section.where
    if len(section.mids) != 1:
        raise _refuse("malformed_sdp", f"the section at {where} needs exactly one a=mid")
    if not (section.ice_ufrag or offer.ice_ufrag) or not (section.ice_pwd or offer.ice_pwd):
        raise _refuse("malformed_sdp", f"the section at {where} has no a=ice-ufrag/a=ice-pwd")
    if not (section.setup or offer.setup):
        raise _refuse("malformed_sdp", f"the section at {where} has no a=setup")
    algorithms = offer.fingerprints + section.fingerprints
    if not any(algorithm in DIGEST_ALGORITHMS for algorithm in algorithms):
        raise _refuse(
            "no_fingerprint",
            f"the section at {where} has no a=fingerprint of {', '.join(DIGEST_ALGORITHMS)} "
            "(DTLS cannot be authenticated without one)",
        )
    if section.kind == "application":
        return
    if not section.rtcp_mux:
        raise _refuse("malformed_sdp", f"the section at {where} lacks a=rtcp-mux")
    if section.direction is None:  # aiortc assumes no default (RFC 3264's is sendrecv)
        raise _refuse("malformed_sdp", f"the section at {where} needs a={'/'.join(DIRECTIONS)}")
    for payload_type in section.fmtps:
        if payload_type not in section.rtpmaps:
            raise _refuse(
                "malformed_sdp", f"the section at {where}: fmtp for unmapped {payload_type}"
            )


def _check_codecs(section: _Section) -> None:
    """Refuse a section aiortc could not agree a codec for (the relay answers every one)."""
    if section.kind == "application":
        return
    offered = [
        RTCRtpCodecParameters(
            mimeType=f"{section.kind}/{name}",
            clockRate=rate,
            channels=channels,
            payloadType=payload_type,
            parameters=_fmtp_parameters(section.fmtps.get(payload_type, "")),
        )
        for payload_type, (name, rate, channels) in section.rtpmaps.items()
    ]
    if section.kind == "audio":
        if not any(c.mimeType.lower() == "audio/opus" and c.clockRate == 48000 for c in offered):
            raise _refuse(
                "no_opus",
                f"the audio section at {section.where} does not include Opus/48000 "
                "(the only codec the relay speaks)",
            )
    elif not find_common_codecs(CODECS[section.kind], offered):
        raise _refuse(
            "unsupported_codecs",
            f"the {section.kind} section at {section.where} offers no codec the relay knows",
        )


def _fmtp_parameters(text: str) -> dict[str, int | str | None]:
    """fmtp parameters as aiortc reads them (``aiortc.sdp.parameters_from_sdp``)."""
    parameters: dict[str, int | str | None] = {}
    for parameter in text.split(";") if text else []:
        key, equals, value = parameter.partition("=")
        if not equals:
            parameters[parameter] = None
        else:
            parameters[key] = int(value) if key in FMTP_INT_PARAMETERS else value
    return parameters


# ---- the answer -----------------------------------------------------------------------------
_ANSWER_RTPMAP = re.compile(r"^a=rtpmap:(\d+) ([^/\s]+)/(\d+)", re.IGNORECASE)
_ANSWER_FMTP = re.compile(r"^a=fmtp:(\d+) (.*)$")


def request_inband_fec(answer_sdp: str) -> str:
    """The answer with ``useinbandfec=1`` on every Opus format: a sender that honours it
    (Chromium does) then puts FEC for each packet into the next, which the relay's decoder
    uses to rebuild a lost packet (RFC 7587 §7: the receiver's fmtp asks for it)."""
    lines = answer_sdp.split("\r\n")
    rtpmaps = [m for line in lines if (m := _ANSWER_RTPMAP.match(line))]
    opus = {m.group(1) for m in rtpmaps if m.group(2).lower() == "opus"}
    out: list[str] = []
    for line in lines:
        match = _ANSWER_FMTP.match(line)
        if match and match.group(1) in opus:
            parameters = [p for p in match.group(2).split(";") if p.strip()]
            if not any(p.strip().startswith("useinbandfec=") for p in parameters):
                line = f"a=fmtp:{match.group(1)} " + ";".join([*parameters, "useinbandfec=1"])
            opus.discard(match.group(1))
            out.append(line)
            continue
        out.append(line)
        rtpmap = _ANSWER_RTPMAP.match(line)
        if rtpmap and rtpmap.group(1) in opus and not _has_fmtp(lines, rtpmap.group(1)):
            out.append(f"a=fmtp:{rtpmap.group(1)} useinbandfec=1")
    return "\r\n".join(out)


def _has_fmtp(lines: list[str], payload_type: str) -> bool:
    return any(line.startswith(f"a=fmtp:{payload_type} ") for line in lines)


def offer_sends_audio(sdp: str) -> bool:
    """Whether any audio section of an offer would send (``sendrecv``, RFC 3264's default, or
    ``sendonly``); a WHEP viewer's offer only receives."""
    directions: list[str] = []  # one per audio section
    kind: str | None = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            kind = line[2:].split(" ", 1)[0]
            if kind == "audio":
                directions.append("sendrecv")
        elif kind == "audio" and line.startswith("a=") and line[2:] in DIRECTIONS:
            directions[-1] = line[2:]
    return any(direction in ("sendrecv", "sendonly") for direction in directions)

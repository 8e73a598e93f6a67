"""Fuzz the relay's signaling and control plane as a hostile client would.

Two sources of requests, taken in turns: schemathesis cases generated from the served OpenAPI
schema (valid ones and ones that break it), and hypothesis mutations of a real aiortc offer
sent to ``POST /offer``, ``POST /whip/{room}`` and ``POST /whep/{room}`` with a valid token, a
broken one or none.
Two real ``percepnet-relay serve`` processes on 127.0.0.1 take them: one with tokens off, one
with join tokens and the admin token on. Every request goes over one keep-alive connection per
relay. Printed: requests, answers by status (and reason), 5xx other than the documented 503s,
connection resets, answers not shaped ``{error, detail}`` (each must be 0) and ``/readyz``
afterwards (must be 200)::

    python -m loadtest.fuzz_signaling --requests 10000

Accepted offers leave peers that never connect; the relays reap them after
``--connect-timeout`` seconds, and per-room and pending caps answer 503/429 meanwhile (both
fine). The per-address rate limit is off (every request comes from 127.0.0.1) and empty rooms
expire after a second; ``--set PNR_X=Y`` passes more settings to both relays.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

ROOMS = ("fuzz-0", "fuzz-1", "fuzz-2")
SECRET = "fuzz-token-secret"
ADMIN = "fuzz-admin-token"

# values that broke or might break a parser: numbers at and past every limit, wrong cases,
# separators, non-ASCII, control characters
INTERESTING = (
    "", "0", "-1", "72", "127", "128", "255", "256", "300", "65535", "65536", "4294967296",
    "9" * 40, "9" * 4400, "x", "X", "é", "\x00", "\t", " ", "IP9", "IP6", "::", "*", ":", "/",
    "=", ";", "udp", "UDP", "typ", "host", "sha-1", "actpass", "BUNDLE", "opus", "H265", "\u2028",
)  # fmt: skip
# lines that crashed aiortc 1.16's parser, or come close
BAD_LINES = (
    "a=group", "a=group:", "a=group:BUNDLE 9", "a=msid", "a=msid-semantic", "a=ssrc:1",
    "a=ssrc:1 cname", "a=ssrc-group:FID x", "a=fmtp:99 x", "a=fmtp:96 minptime=x",
    "a=rtpmap:96", "a=rtpmap:96 opus", "a=rtpmap:500 opus/48000/2", "a=rtcp-fb:96",
    "a=candidate:1 1 udp 1 1.2.3.4 5", "a=candidate", "a=setup:foo", "a=setup", "a=extmap:x y",
    "a=extmap:1 a b", "c=IN IP9 x", "c=IN IP4", "a=rtcp:x", "a=rtcp:9 IN IP9 x",
    "a=sctp-port:x", "a=max-message-size:x", "a=fingerprint:sha-256", "a=fingerprint:x",
    "a=mid", "a=mid:0", "a=ice-ufrag", "a=ice-pwd", "a=sctpmap:x y", "m=text 9 RTP/AVP 0",
    "m=video 9 UDP/TLS/RTP/SAVPF 97", "a=rtpmap:97 H265/90000",
    "m=application 9 DTLS/SCTP x", "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
    "m=audio 9 udp/tls/rtp/savpf 96", "m=audio 9/2 UDP/TLS/RTP/SAVPF 96", "v=0", "o=- 1 1 IN",
)  # fmt: skip
MUTATIONS = ("delete", "duplicate", "insert", "token", "number", "case", "truncate", "section")


def _tokens(line: str) -> list[str]:
    return re.split(r"([ :/=;.,])", line)


@st.composite
def _mutated(draw: st.DrawFn, offer: str) -> str:
    lines = offer.splitlines()
    for _ in range(draw(st.integers(1, 3))):
        mutation = draw(st.sampled_from(MUTATIONS))
        at = draw(st.integers(0, max(len(lines) - 1, 0)))
        line = lines[at] if lines else ""
        if mutation == "delete" and lines:
            del lines[at]
        elif mutation == "duplicate":
            lines.insert(at, line)
        elif mutation == "insert":
            text = st.text(max_size=40).map(lambda t: "a=" + t)
            lines.insert(at, draw(st.sampled_from(BAD_LINES) | text))
        elif mutation == "token" and lines:
            parts = _tokens(line)
            index = draw(st.integers(0, len(parts) - 1))
            parts[index] = draw(st.sampled_from(INTERESTING) | st.text(max_size=8))
            lines[at] = "".join(parts)
        elif mutation == "number" and lines:
            runs = list(re.finditer(r"\d+", line))
            if runs:
                run = runs[draw(st.integers(0, len(runs) - 1))]
                number = str(draw(st.integers(-(2**70), 2**70)))
                lines[at] = line[: run.start()] + number + line[run.end() :]
        elif mutation == "case" and lines:
            lines[at] = draw(st.sampled_from((line.upper(), line.lower(), line.swapcase())))
        elif mutation == "truncate" and lines:
            lines[at] = line[: draw(st.integers(0, len(line)))]
        elif mutation == "section":
            starts = [i for i, text in enumerate(lines) if text.startswith("m=")]
            if starts:
                start = draw(st.sampled_from(starts))
                end = next((i for i in starts if i > start), len(lines))
                lines.extend(lines[start:end])
    newline = draw(st.sampled_from(("\r\n", "\n", "\r")))
    return newline.join(lines) + newline


def mutated_offers(offer: str) -> st.SearchStrategy[str]:
    """``offer`` with one to three things changed: lines removed, repeated, cut, inserted
    (known crashers among them), tokens and numbers swapped, case flipped, sections repeated."""
    return _mutated(offer)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def token_variants(room: str) -> list[str | None]:
    """Tokens a client might send for ``room``: a valid one, none, and broken ones."""
    from service.tokens import mint_token

    valid = mint_token(SECRET, room)
    payload = valid.split(".")[0]
    empty_key = hmac.new(b"", payload.encode(), hashlib.sha256).digest()
    return [
        valid,
        None,
        "é.x",
        f"{payload}.é",
        "a.b",
        f"{payload}.{_b64(empty_key)}",  # signed with the empty key
        mint_token("another-secret", room),
        valid + "x",
    ]


@dataclass
class Tally:
    """What the relays answered."""

    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    undocumented_5xx: int = 0
    resets: int = 0
    timeouts: int = 0
    bad_shape: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, problem: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(problem[:300])

    def record(self, label: str, response: httpx.Response) -> None:
        """Count one answer; 5xx other than documented 503s and shapeless refusals are noted."""
        self.requests += 1
        status = response.status_code
        self.statuses[status] += 1
        if status < 400:
            return
        try:
            body = response.json()
        except ValueError:
            body = None
        shaped = isinstance(body, dict) and set(body) == {"error", "detail"}
        reason = str(body["error"]) if shaped and isinstance(body, dict) else "?"
        self.reasons[f"{status} {reason}"] += 1
        if not shaped:
            self.bad_shape += 1
            self.note(f"{label}: {status} not {{error, detail}}: {response.text[:120]!r}")
        documented = status == 503 and reason != "internal" and "retry-after" in response.headers
        if status >= 500 and not documented:
            self.undocumented_5xx += 1
            self.note(f"{label}: {status} {response.text[:160]!r}")


class Prober:
    """One relay, one keep-alive connection; transport failures are counted, never raised."""

    def __init__(self, name: str, base_url: str, tally: Tally) -> None:
        self.name = name
        self.base_url = base_url
        self.tally = tally
        self.client = httpx.Client(base_url=base_url, timeout=30.0)

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response | None:
        label = f"{self.name} {method} {path[:60]}"
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.TimeoutException as error:
            self.tally.requests += 1
            self.tally.timeouts += 1
            self.tally.note(f"{label}: timeout {error!r}")
            return None
        except httpx.TransportError as error:
            self.tally.requests += 1
            self.tally.resets += 1
            self.tally.note(f"{label}: connection lost {error!r}")
            return None
        self.tally.record(label, response)
        return response

    def close(self) -> None:
        self.client.close()


def _fuzz_settings(examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )


def offer_round(prober: Prober, offer: str, tokens_on: bool, examples: int) -> None:
    """``examples`` mutated offers to /offer, /whip/{room} and /whep/{room}, with token
    variants."""
    variants = {room: token_variants(room) for room in ROOMS} if tokens_on else {}

    @_fuzz_settings(examples)
    @given(sdp=mutated_offers(offer), room=st.sampled_from(ROOMS), data=st.data())
    def one(sdp: str, room: str, data: st.DataObject) -> None:
        token = data.draw(st.sampled_from(variants[room])) if tokens_on else None
        route = data.draw(st.sampled_from(("offer", "whip", "whip", "whep")))
        if route == "offer":
            body: dict[str, object] = {"sdp": sdp, "type": "offer", "room": room}
            if token is not None:
                body["token"] = token
            content = json.dumps(body).encode()
            headers = {"content-type": "application/json"}
            prober.send("POST", "/offer", content=content, headers=headers)
        else:
            raw_headers = [(b"content-type", b"application/sdp")]
            if token is not None:  # the header carries the token's UTF-8 bytes as they are
                raw_headers.append((b"authorization", b"Bearer " + token.encode()))
            if route == "whep":  # a viewer's offer receives only
                sdp = sdp.replace("a=sendrecv", "a=recvonly")
            prober.send(
                "POST",
                f"/{route}/{room}",
                content=sdp.encode("utf-8", "surrogatepass"),
                headers=raw_headers,
            )

    one()


def schema_round(prober: Prober, strategy: Any, admin: bool, examples: int) -> None:
    """``examples`` schemathesis cases; with ``admin``, half carry the admin bearer token."""

    @_fuzz_settings(examples)
    @given(case=strategy, with_admin=st.booleans())
    def one(case: Any, with_admin: bool) -> None:
        kwargs = case.as_transport_kwargs(base_url=prober.base_url)
        headers = {
            k: v
            for k, v in (kwargs.get("headers") or {}).items()
            if k.lower() not in ("connection", "content-length", "host")
        }
        if admin and with_admin:
            headers["Authorization"] = f"Bearer {ADMIN}"
        request: dict[str, Any] = {"headers": headers, "params": kwargs.get("params")}
        if "json" in kwargs:
            request["json"] = kwargs["json"]
        elif isinstance(kwargs.get("data"), str | bytes):
            request["content"] = kwargs["data"]
        elif kwargs.get("data") is not None:
            request["data"] = kwargs["data"]
        path = kwargs["url"].removeprefix(prober.base_url)
        prober.send(kwargs["method"], path, **request)

    one()


def schema_strategy(base_url: str) -> Any:
    """Cases from the relay's served OpenAPI schema, valid ones and ones that break it."""
    import schemathesis
    from schemathesis import GenerationMode

    with contextlib.suppress(ValueError):  # registered once per process
        schemathesis.serializer.alias("application/sdp", "text/plain")
    schema = schemathesis.openapi.from_dict(httpx.get(base_url + "/openapi.json").json())
    return schema.as_strategy(GenerationMode.POSITIVE) | schema.as_strategy(GenerationMode.NEGATIVE)


def real_offer() -> str:
    """A fresh offer from an aiortc peer with a microphone track."""
    import numpy as np

    from loadtest.peers import Peer

    async def build() -> str:
        peer = Peer(np.zeros(960, dtype=np.float32))
        sdp = await peer.offer_sdp()
        await peer.pc.close()
        return sdp

    return asyncio.run(build())


@dataclass
class Target:
    """A relay under fuzz: its URL and whether tokens (join and admin) are on."""

    name: str
    base_url: str
    tokens_on: bool


def fuzz(targets: Sequence[Target], requests: int, offers: Sequence[str], batch: int = 50) -> Tally:
    """Send about ``requests`` requests, in turns of ``batch``, spread over ``targets``."""
    tally = Tally()
    probers = [Prober(t.name, t.base_url, tally) for t in targets]
    strategies = [schema_strategy(t.base_url) for t in targets]
    turn = 0
    try:
        while tally.requests < requests:
            index = turn % len(targets)
            prober, target = probers[index], targets[index]
            examples = min(batch, requests - tally.requests)
            if turn % 5 < 2:
                schema_round(prober, strategies[index], target.tokens_on, examples)
            else:
                offer = offers[(turn // len(targets)) % len(offers)]
                offer_round(prober, offer, target.tokens_on, examples)
            turn += 1
    finally:
        for prober in probers:
            prober.close()
    return tally


def report(tally: Tally, ready_after: dict[str, int]) -> str:
    """The figures as a small table."""
    lines = [
        f"requests                      {tally.requests}",
        "answers by status             "
        + ", ".join(f"{s}: {n}" for s, n in sorted(tally.statuses.items())),
        "refusals by reason            "
        + ", ".join(f"{r}: {n}" for r, n in sorted(tally.reasons.items())),
        f"5xx other than documented 503 {tally.undocumented_5xx}",
        f"connection resets             {tally.resets}",
        f"timeouts                      {tally.timeouts}",
        f"not {{error, detail}} shaped    {tally.bad_shape}",
        "/readyz after                 "
        + ", ".join(f"{name}: {status}" for name, status in ready_after.items()),
    ]
    lines += [f"  e.g. {example}" for example in tally.examples]
    return "\n".join(lines)


def passed(tally: Tally, ready_after: dict[str, int]) -> bool:
    """The issue's bar: no undocumented 5xx, no resets or timeouts, all shaped, all ready."""
    return (
        tally.undocumented_5xx == 0
        and tally.resets == 0
        and tally.timeouts == 0
        and tally.bad_shape == 0
        and all(status == 200 for status in ready_after.values())
    )


# ---- the command: two real relays --------------------------------------------------------------
def _free_port() -> int:
    from loadtest.server import free_port

    return free_port()


@contextlib.contextmanager
def served_relay(env: dict[str, str], timeout_seconds: float = 180.0) -> Iterator[str]:
    """``percepnet-relay serve`` on a free loopback port with ``env``; yields its URL."""
    port = _free_port()
    full_env = (
        os.environ
        | {
            "PNR_HOST": "127.0.0.1",
            "PNR_PORT": str(port),
            "PNR_PROCESSES": "1",
            "PNR_ICE_HOST_ADDRESSES": "127.0.0.1",
            "PNR_LOG_LEVEL": "WARNING",
        }
        | env
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve"], env=full_env, stdin=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_seconds
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the relay exited with {process.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/readyz", timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("the relay did not become ready")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def main(argv: Sequence[str] | None = None) -> int:
    """Fuzz two served relays; exit 1 when any figure misses the bar."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--connect-timeout", type=float, default=3.0)
    parser.add_argument("--set", action="append", default=[], metavar="PNR_X=VALUE")
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.set)
    common = {
        "PNR_CONNECT_TIMEOUT_SECONDS": str(args.connect_timeout),
        "PNR_EMPTY_ROOM_TTL_SECONDS": "1",  # rooms the fuzz opens by PUT do not pile up
        "PNR_SIGNALING_RATE_PER_SECOND": "0",  # one address sends it all: no rate limit
    } | extra
    with contextlib.ExitStack() as stack:
        open_url = stack.enter_context(served_relay(common))
        locked_url = stack.enter_context(
            served_relay(common | {"PNR_TOKEN_SECRET": SECRET, "PNR_ADMIN_TOKEN": ADMIN})
        )
        targets = [Target("open", open_url, False), Target("tokens", locked_url, True)]
        started = time.monotonic()
        tally = fuzz(targets, args.requests, [real_offer()])
        elapsed = time.monotonic() - started
        ready_after = {t.name: httpx.get(t.base_url + "/readyz").status_code for t in targets}
    print(report(tally, ready_after))
    print(f"elapsed                       {elapsed:.0f} s")
    return 0 if passed(tally, ready_after) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark (not a test): how steadily the relay sends a listener's RTP packets.

A receiver's jitter buffer grows with the spread of its packets' arrival times against their
RTP timestamps, so this measures that spread where it starts: the relay runs under
:mod:`loadtest.relay_trace`, an aiortc peer speaks the bursts of :mod:`loadtest.browser_delay`
into a room and an aiortc listener times what it gets. For the listener's stream, from the
relay's own send times: the RFC 3550 interarrival jitter, the offset of each packet (send time
less RTP timestamp) above the lowest offset of the 2 s before it (the "relative delay" that
libwebrtc's NetEq sizes its buffer by), and each step of the offset between consecutive
packets larger than ``--step-ms``, put down to what the relay did just before it: a move of
the room clock's phase, a mixing tick that ran late, frames the mixer shed or trimmed, the
end of a DTX pause, or nothing the trace shows ("other"). The relay's defaults and the plain
pass-through of ``browser_delay`` are measured in the same run, alternately with ``--rounds``.

    python -m loadtest.send_timing [--seconds 20] [--rounds 1] [--a PNR_X=1 --b PNR_X=2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from aiortc.rtp import RtpPacket

from loadtest.browser_delay import CONFIGURATIONS, _settings, burst_signal
from loadtest.peers import Peer
from loadtest.relay_trace import describe, stream_figures
from loadtest.server import serve_on_loopback
from service.aiortc_patches import count_packets_only


@dataclass
class Listened:
    """What one run saw of the listener's stream: the relay's trace and the listener's
    arrivals (time, sequence number, RTP timestamp)."""

    events: dict[str, list[list]]
    arrivals: list[tuple[float, int, int, int]]


def run(extra_env: dict[str, str], seconds: float) -> Listened:
    """One relay process under the trace, a speaker and a listener for ``seconds``."""
    with tempfile.TemporaryDirectory(prefix="pnr-send-timing-") as folder:
        trace = Path(folder) / "trace.json"
        served = serve_on_loopback(
            {"PNR_LOG_LEVEL": "WARNING", "PNR_DRAIN_SECONDS": "0", **extra_env},
            runner=("-m", "loadtest.relay_trace", str(trace)),
        )
        arrivals: list[tuple[float, int, int, int]] = []

        def arrived(packet: RtpPacket) -> None:
            arrivals.append(
                (time.monotonic(), packet.sequence_number, packet.timestamp, packet.ssrc)
            )

        async def call() -> None:
            listener = Peer(None, decode=False)
            for transceiver in listener.pc.getTransceivers():
                count_packets_only(transceiver.receiver, arrived)
            await listener.join(served.url, "timing")
            speaker = Peer(burst_signal(seconds + 2))
            await speaker.join(served.url, "timing")
            await asyncio.gather(listener.wait_connected(), speaker.wait_connected())
            await asyncio.sleep(seconds)
            await speaker.close()
            await listener.close()

        try:
            asyncio.run(call())
        finally:
            served.stop()
        events = json.loads(trace.read_text())
    return Listened(events, arrivals)


def main(argv: list[str] | None = None) -> None:
    """Measure and print each run's figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--step-ms", type=float, default=2.0)
    parser.add_argument("--skip-seconds", type=float, default=3.0)
    parser.add_argument("--a", action="append", default=[], metavar="PNR_NAME=VALUE")
    parser.add_argument("--b", action="append", default=[], metavar="PNR_NAME=VALUE")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.a or args.b:
        try:
            sides = {f"A {args.a}": _settings(args.a), f"B {args.b}": _settings(args.b)}
        except ValueError as error:
            parser.error(str(error))
    else:
        plain = "plain aiortc pass-through relay"
        sides = {"this relay (defaults)": {}, plain: CONFIGURATIONS[plain]}
    results = []
    names = list(sides)
    for round_index in range(args.rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            started = time.strftime("%H:%M:%S", time.gmtime())
            listened = run(sides[name], args.seconds)
            figures = stream_figures(
                listened.events, listened.arrivals[0][3], args.step_ms / 1000, args.skip_seconds
            )
            results.append({"side": name, "utc": started, **figures})
            print(f"{started} UTC {name}: {describe(figures)}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Network-fault benchmark (not a test): one speaker's uplink degraded, what does the listener hear?

Runs in a private network namespace (``unshare --net``; root), so nothing outside it is touched:
``percepnet-relay serve`` on its loopback (enhancement off: the benchmark measures the wire, and
a denoiser would remove the noise floor that tells a gap from a pause), a listener, and a
speaker that sends speech over a steady noise floor as Opus with in-band FEC (as Chromium
does). Per condition, on the speaker's uplink only (its UDP source port) from second 4:

- clean: nothing;
- 10 % random loss for 6 s, and a 2 s outage (every packet dropped): nftables rules in the
  namespace, so the kernel drops the packets;
- 50 ms jitter with reordering for 6 s (each packet held 0-100 ms, as netem's ``delay 50ms
  50ms``): this machine's kernel has no netem qdisc, so the speaker's client holds each packet
  back before its socket send, and later packets overtake it on the real UDP path.

Prints the listener's PESQ-WB against the clean speech (from the fault's start to 2 s after its
end), the longest gap, the mouth-to-ear delay before the fault and from 1 s after it, and how
soon after the fault the delay settled back (within 25 ms of before). ``loadtest.playout_sim``
is its deterministic twin, which CI runs.

    python -m loadtest.netem
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np

from loadtest.continuity import (
    FRAME,
    RATE,
    delays_over_time,
    longest_gap_seconds,
    median_delay,
    ms_text,
    pesq_against,
    settled_after,
)
from loadtest.server import serve_on_loopback
from loadtest.speech import speech_over_floor

INSIDE = "PNR_NETEM_NAMESPACE"
TABLE = "pnr_netem"
START_SECONDS = 4.0
AFTER_SECONDS = 5.0


@dataclass(frozen=True)
class Fault:
    """One condition on the speaker's uplink."""

    name: str
    seconds: float = 0.0
    loss_percent: int = 0  # nftables: this share of packets dropped at random
    jitter_seconds: float = 0.0  # each packet held uniform [0, 2 x jitter] before sending

    @property
    def end(self) -> float:
        return START_SECONDS + self.seconds


FAULTS = (
    Fault("clean"),
    Fault("10 % random loss", seconds=6.0, loss_percent=10),
    Fault("50 ms jitter, reordering", seconds=6.0, jitter_seconds=0.050),
    Fault("2 s outage", seconds=2.0, loss_percent=100),
)


@dataclass
class Measured:
    """One condition's row."""

    fault: Fault
    pesq: float
    gap_seconds: float
    before: float | None
    after: float | None
    settle: float | None
    concealed: int


def _nft(*words: str) -> None:
    subprocess.run(["nft", *words], check=True)


def _drop_rule(port: int, loss_percent: int) -> list[str]:
    """nft words of a rule dropping ``loss_percent`` % of UDP packets from ``port``."""
    match = ["udp", "sport", str(port)]
    if loss_percent >= 100:
        return [*match, "drop"]
    return [*match, "numgen", "random", "mod", "100", "<", str(loss_percent), "drop"]


Send = Callable[[bytes], Coroutine[Any, Any, None]]


def _hold_back(send: Send, jitter_seconds: float, seed: int) -> Send:
    """``send`` with every RTP packet held for uniform [0, 2 x jitter] seconds first."""
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    held: set[asyncio.Task[None]] = set()

    async def held_send(data: bytes) -> None:
        if 192 <= data[1] <= 223:  # RTCP goes at once
            await send(data)
            return
        delay = rng.uniform(0.0, 2.0 * jitter_seconds)

        def release() -> None:
            task = loop.create_task(send(data))
            held.add(task)
            task.add_done_callback(held.discard)

        loop.call_later(delay, release)

    return held_send


async def _measure(url: str, fault: Fault, clean: np.ndarray, sent: np.ndarray) -> Measured:
    from loadtest.peers import Peer

    room = "netem-" + "".join(c for c in fault.name if c.isalnum())
    listener, speaker = Peer(None), Peer(sent, fec_loss_percent=10)
    await listener.join(url, room)
    answer = await speaker.join(url, room)
    await asyncio.gather(listener.wait_connected(), speaker.wait_connected())
    assert speaker.sender is not None
    dtls = speaker.pc.getSenders()[0].transport
    port = dtls.transport.iceGatherer.getLocalCandidates()[0].port

    async def sent_until(seconds: float) -> None:
        while len(speaker.sender.send_times) < seconds * RATE / FRAME:  # type: ignore[union-attr]
            await asyncio.sleep(0.005)

    await sent_until(START_SECONDS)
    original_send = dtls._send_rtp
    if fault.loss_percent:
        _nft("add", "rule", "inet", TABLE, "uplink", *_drop_rule(port, fault.loss_percent))
    if fault.jitter_seconds:
        held = _hold_back(original_send, fault.jitter_seconds, 1)
        dtls._send_rtp = held  # type: ignore[method-assign,assignment]
    await sent_until(fault.end)
    _nft("flush", "chain", "inet", TABLE, "uplink")
    dtls._send_rtp = original_send  # type: ignore[method-assign]
    await sent_until(fault.end + AFTER_SECONDS)
    await asyncio.sleep(0.5)  # the last frames on their way
    import httpx

    async with httpx.AsyncClient() as client:
        described = (await client.get(f"{url}/rooms/{room}")).json()
    me = next(p for p in described["participants"] if p["id"] == answer["participant_id"])
    await speaker.close()
    await listener.close()
    heard = listener.recorder.samples
    samples = delays_over_time(clean, speaker.sender.send_times, heard, listener.recorder.arrivals)
    before = median_delay(samples, 1.0, START_SECONDS)
    return Measured(
        fault=fault,
        pesq=pesq_against(clean, heard, START_SECONDS, fault.end + 2.0),
        gap_seconds=longest_gap_seconds(heard),
        before=before,
        after=median_delay(samples, fault.end + 1.0, float("inf")),
        settle=settled_after(samples, START_SECONDS, fault.end),
        concealed=int(me["frames"]["concealed"]),
    )


def _print(rows: list[Measured]) -> None:
    print(
        f"{'condition':<26} {'PESQ-WB':>7} {'longest gap':>11} {'delay before':>12} "
        f"{'delay after':>11} {'settled in':>10} {'concealed':>9}"
    )
    for row in rows:
        print(
            f"{row.fault.name:<26} {row.pesq:>7.2f} {ms_text(row.gap_seconds):>11} "
            f"{ms_text(row.before):>12} {ms_text(row.after):>11} {ms_text(row.settle):>10} "
            f"{row.concealed:>9}",
            flush=True,
        )


def _inside(args: argparse.Namespace) -> None:
    """The benchmark proper, in the fresh namespace."""
    from service.aiortc_patches import restrict_host_addresses, use_receive_buffer
    from service.settings import Settings

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    _nft("add", "table", "inet", TABLE)
    _nft("add", "chain", "inet", TABLE, "uplink", "{ type filter hook output priority 0 ; }")
    restrict_host_addresses(["127.0.0.1"])
    use_receive_buffer(Settings().jitter_buffer_packets)  # the listener: a low-delay client
    served = serve_on_loopback({"PNR_DEFAULT_ENHANCE": "false", "PNR_LOG_LEVEL": "WARNING"})
    clean, sent = speech_over_floor(START_SECONDS + max(f.seconds for f in FAULTS) + 8.0)
    rows = []
    try:
        for fault in FAULTS:
            if args.only and args.only not in fault.name:
                continue
            rows.append(asyncio.run(_measure(served.url, fault, clean, sent)))
    finally:
        served.stop()
    _print(rows)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: re-runs itself in a new network namespace."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run the conditions whose name contains this")
    args = parser.parse_args(argv)
    if os.environ.get(INSIDE) == "1":
        _inside(args)
        return
    missing = [tool for tool in ("unshare", "ip", "nft") if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        why = f"missing {', '.join(missing)}" if missing else "needs root"
        print(f"error: the benchmark runs in its own network namespace: {why}", file=sys.stderr)
        raise SystemExit(2)
    rest = sys.argv[1:] if argv is None else argv
    command = ["unshare", "--net", "--", sys.executable, "-m", "loadtest.netem", *rest]
    raise SystemExit(subprocess.run(command, env=os.environ | {INSIDE: "1"}).returncode)


if __name__ == "__main__":
    main()

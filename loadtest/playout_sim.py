"""The relay's receive path on a simulated clock: the deterministic twin of ``loadtest.netem``.

One speaker's Opus packets (sent every 20 ms) reach the relay's receive buffer at times a
network condition decides (seeded loss, jitter with reordering, an outage); what the buffer
releases is decoded by the relay's concealing decoder and queued in the room mixer, whose 20 ms
ticks are the listener's audio. Same classes as in the relay, no sockets and no sleeps, so the
result depends only on the condition and its seed (CI runs it as a test).

    python -m loadtest.playout_sim
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
from aiortc.rtp import RtpPacket

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
from loadtest.speech import speech_over_floor
from service.audio_frames import frame_to_mono
from service.concealment import ConcealingOpusDecoder, is_concealed
from service.jitter import AudioJitterBuffer
from service.mixer import RoomMixer
from service.opus import OpusPacketEncoder, OpusSettings

PACKET_SECONDS = FRAME / RATE
BASE_DELAY_SECONDS = 0.001  # loopback


@dataclass(frozen=True)
class Condition:
    """What the network does to the speaker's packets between ``start`` and ``end`` seconds."""

    name: str
    loss: float = 0.0  # probability that a packet is lost
    jitter_seconds: float = 0.0  # extra delay, uniform in [0, 2 x jitter]: netem "delay J J"
    outage: bool = False  # every packet lost
    stall: bool = False  # every packet held back, then all delivered at ``end`` (a burst)
    start: float = 4.0
    end: float = 10.0
    seed: int = 0

    def arrival(self, index: int, rng: np.random.Generator) -> float | None:
        """When packet ``index`` arrives (None: lost)."""
        sent = index * PACKET_SECONDS
        delay = BASE_DELAY_SECONDS
        if self.start <= sent < self.end:
            if self.outage or rng.random() < self.loss:
                return None
            if self.stall:
                return self.end + delay + index * 1e-6  # in order, all at once
            delay += rng.uniform(0.0, 2.0 * self.jitter_seconds)
        return sent + delay


CONDITIONS = (
    Condition("clean"),
    Condition("10 % random loss", loss=0.10),
    Condition("50 ms jitter, reordering", jitter_seconds=0.050),
    Condition("2 s outage", outage=True, start=6.0, end=8.0),
    Condition("2 s stall, then a burst", stall=True, start=6.0, end=8.0),
)
SCORED = (4.0, 12.0)  # PESQ-WB over the faults and 2 s after, the same speech for each


@dataclass
class Playout:
    """What the listener heard (one frame per mixer tick) and what happened on the way."""

    condition: Condition
    clean: np.ndarray
    heard: np.ndarray
    tick_times: list[float]
    send_times: list[float]
    lost: int
    concealed: int
    mixer_drops: int
    longest_loss_seconds: float  # longest run of packets the network lost

    def longest_gap(self) -> float:
        return longest_gap_seconds(self.heard)

    def delays(self) -> tuple[float | None, float | None, float | None]:
        """Median delay before the fault, median from 1 s after it, and how long after the
        fault the delay took to settle back within 25 ms of its value before."""
        samples = delays_over_time(self.clean, self.send_times, self.heard, self.tick_times)
        before = median_delay(samples, 1.0, self.condition.start)
        after = median_delay(samples, self.condition.end + 1.0, float("inf"))
        settle = settled_after(samples, self.condition.start, self.condition.end)
        return before, after, settle

    def pesq(self) -> float:
        return pesq_against(self.clean, self.heard, *SCORED)


def encode(signal: np.ndarray, fec_loss_percent: int = 0) -> list[bytes]:
    """Opus packets of 20 ms, as a browser sends them (VoIP mode, 32 kb/s)."""
    settings = OpusSettings(bitrate=32000, application="voip", fec_loss_percent=fec_loss_percent)
    encoder = OpusPacketEncoder(settings)
    frames = signal.shape[0] // FRAME
    return [encoder.encode(signal[index * FRAME : (index + 1) * FRAME]) for index in range(frames)]


def simulate(
    condition: Condition,
    clean: np.ndarray,
    packets: list[bytes],
    depth: int = 0,
    mix_buffer_frames: int = 3,
    tick_phase_seconds: float = 0.0105,
    conceal: bool = True,
) -> Playout:
    """Play ``packets`` through the receive buffer, the decoder and the mixer under
    ``condition``; ticks fall ``tick_phase_seconds`` into each 20 ms. ``conceal=False``: lost
    packets leave silence (the relay before it concealed them)."""
    rng = np.random.default_rng(condition.seed)
    events = []
    run = longest_run = 0
    for index in range(len(packets)):
        arrival = condition.arrival(index, rng)
        run = run + 1 if arrival is None else 0
        longest_run = max(longest_run, run)
        if arrival is not None:
            events.append((arrival, index))
    events.sort()
    buffer = AudioJitterBuffer(depth=depth)
    decoder = ConcealingOpusDecoder()
    mixer = RoomMixer(buffer_frames=mix_buffer_frames)
    mixer.add("speaker")
    mixer.add("listener")
    heard: list[np.ndarray] = []
    tick_times: list[float] = []
    concealed = drops = 0
    ticks = len(packets) + 10
    position = 0
    for tick in range(ticks):
        now = tick * PACKET_SECONDS + tick_phase_seconds
        while position < len(events) and events[position][0] <= now:
            index = events[position][1]
            position += 1
            rtp = RtpPacket(payload_type=111, sequence_number=index, timestamp=index * FRAME)
            rtp._data = packets[index]  # type: ignore[attr-defined]
            _, released = buffer.add(rtp)
            if released is None:
                continue
            if not conceal:
                released.lost_before = 0
            for frame in decoder.decode(released):
                concealed += is_concealed(frame)
                drops += mixer.push("speaker", frame_to_mono(frame))  # type: ignore[arg-type]
        heard.append(mixer.tick()["listener"])
        tick_times.append(now)
    return Playout(
        condition=condition,
        clean=clean,
        heard=np.concatenate(heard),
        tick_times=tick_times,
        send_times=[index * PACKET_SECONDS for index in range(len(packets))],
        lost=buffer.lost,
        concealed=concealed,
        mixer_drops=drops,
        longest_loss_seconds=longest_run * PACKET_SECONDS,
    )


def run_all(
    seconds: float = 14.0,
    fec_loss_percent: int = 10,
    seed: int = 0,
    depth: int = 0,
    conceal: bool = True,
) -> list[tuple[Playout, float, tuple[float | None, float | None, float | None]]]:
    """Every condition on the same speech; (playout, longest gap, delays) each."""
    clean, sent = speech_over_floor(seconds, seed)
    packets = encode(sent, fec_loss_percent)
    results = []
    for condition in CONDITIONS:
        playout = simulate(condition, clean, packets, depth=depth, conceal=conceal)
        results.append((playout, playout.longest_gap(), playout.delays()))
    return results


def main(argv: list[str] | None = None) -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=14.0)
    parser.add_argument("--fec-loss-percent", type=int, default=10, help="0: no FEC sent")
    parser.add_argument("--depth", type=int, default=0, help="receive buffer patience, packets")
    parser.add_argument("--silence", action="store_true", help="no concealment: silence")
    args = parser.parse_args(argv)
    print(
        f"{'condition':<26} {'PESQ-WB':>7} {'longest gap':>11} {'delay before':>12} "
        f"{'delay after':>11} {'settled in':>10} {'lost':>5} {'concealed':>9}"
    )
    for playout, gap, (before, after, settle) in run_all(
        args.seconds, args.fec_loss_percent, depth=args.depth, conceal=not args.silence
    ):
        print(
            f"{playout.condition.name:<26} {playout.pesq():>7.2f} {ms_text(gap):>11} "
            f"{ms_text(before):>12} {ms_text(after):>11} {ms_text(settle):>10} {playout.lost:>5} "
            f"{playout.concealed:>9}"
        )


if __name__ == "__main__":
    main()

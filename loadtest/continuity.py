"""Is a listener's audio continuous? Gaps, mouth-to-ear delay over time, and PESQ-WB against the
clean speech, for the network-fault benchmark (``loadtest.netem``) and its simulated twin
(``loadtest.playout_sim``).

The speaker sends speech over a steady noise floor, so every frame it sends has sound in it: a
20 ms frame the listener gets at -80 dBFS or below is a frame of the speaker missing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loadtest.relay_load import lag_of

RATE = 48000
FRAME = 960
GAP_RMS = 1e-4  # -80 dBFS
WINDOW_SECONDS = 0.5
MIN_CORRELATION = 0.5  # a window matched worse than this is not counted (e.g. inside a gap)


def frame_rms(samples: np.ndarray) -> np.ndarray:
    """RMS of each whole 20 ms frame."""
    frames = samples[: samples.shape[0] // FRAME * FRAME].reshape(-1, FRAME)
    return np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))


def longest_gap_seconds(received: np.ndarray, after_seconds: float = 0.0) -> float:
    """Longest run of silent frames in ``received`` from ``after_seconds`` on, between its first
    and last frames with sound (before: the join; after: the speaker has stopped)."""
    silent = frame_rms(received) < GAP_RMS
    start = int(after_seconds * RATE / FRAME)
    sounding = np.flatnonzero(~silent[start:])
    if sounding.size == 0:
        return float("inf")
    longest = run = 0
    for is_silent in silent[start + sounding[0] : start + sounding[-1]]:
        run = run + 1 if is_silent else 0
        longest = max(longest, run)
    return longest * FRAME / RATE


@dataclass(frozen=True)
class DelaySample:
    """Mouth-to-ear delay of the reference window starting ``sent_seconds`` into the signal."""

    sent_seconds: float
    delay_seconds: float


def delays_over_time(
    reference: np.ndarray,
    send_times: list[float],
    received: np.ndarray,
    arrivals: list[float],
    max_delay_seconds: float = 1.0,
) -> list[DelaySample]:
    """Each half-second window of ``reference`` (frame k handed to the sender at
    ``send_times[k]``) found again in ``received`` (frame j arrived at ``arrivals[j]``): the
    delay from handing to hearing. Each window is aligned on its own, so frames lost or
    inserted on the way shift only the windows after them."""
    size = int(WINDOW_SECONDS * RATE)
    search = int(max_delay_seconds * RATE) + size
    samples = []
    for start in range(0, reference.shape[0] - size, size):
        sent_frame = start // FRAME
        if sent_frame >= len(send_times):
            break
        # where in the received stream could this window be? after it was sent, not long after
        first = np.searchsorted(arrivals, send_times[sent_frame]) - 1
        low = max(int(first) * FRAME, 0)
        window = received[low : low + search + size]
        if window.shape[0] < 2 * size:
            break
        lag, correlation = lag_of(reference[start : start + size], window, window.shape[0] - size)
        if correlation < MIN_CORRELATION:
            continue
        position = low + lag  # sample of the received stream where the window begins
        frame = position // FRAME
        if frame >= len(arrivals):
            break
        heard = arrivals[frame] + (position % FRAME) / RATE  # a frame starts playing on arrival
        samples.append(DelaySample(start / RATE, heard - send_times[sent_frame]))
    return samples


def median_delay(samples: list[DelaySample], start: float, end: float) -> float | None:
    """Median delay of the windows sent between ``start`` and ``end`` (seconds)."""
    values = [s.delay_seconds for s in samples if start <= s.sent_seconds < end]
    return float(np.median(values)) if values else None


def settled_after(
    samples: list[DelaySample], start: float, end: float, tolerance: float = 0.025
) -> float | None:
    """Seconds after ``end`` from which every window's delay stays within ``tolerance`` of the
    median before ``start`` (widened by the largest deviation before ``start``: on a busy
    machine the delay wanders even without a fault); None if it never does."""
    earlier = [s.delay_seconds for s in samples if 1.0 <= s.sent_seconds < start]
    if not earlier:
        return None
    normal = float(np.median(earlier))
    tolerance += max(abs(value - normal) for value in earlier)
    later = [s for s in samples if s.sent_seconds >= end]
    for index, sample in enumerate(later):
        if all(abs(s.delay_seconds - normal) <= tolerance for s in later[index:]):
            return max(sample.sent_seconds - end, 0.0)
    return None


def pesq_against(clean: np.ndarray, received: np.ndarray, start: float, end: float) -> float:
    """PESQ-WB of the received audio against the clean speech sent between ``start`` and
    ``end`` seconds (aligned at that stretch's best lag)."""
    from model.evaluate import pesq_wb

    part = clean[int(start * RATE) : int(end * RATE)]
    lag, _ = lag_of(part, received, received.shape[0] - part.shape[0])
    return pesq_wb(part, received[lag : lag + part.shape[0]])


def ms_text(seconds: float | None) -> str:
    """A duration for a table: whole milliseconds, or ``n/a`` when there is none."""
    return "n/a" if seconds is None else f"{1000 * seconds:.0f} ms"

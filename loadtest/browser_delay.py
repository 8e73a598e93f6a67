"""Benchmark (not a test): mouth-to-ear delay through the relay to a browser, on loopback.

An aiortc peer speaks voiced bursts (200 ms every second) into a room; headless Chromium
listens from the served page with ``?measure=1``, whose audio worklet logs the wall-clock time
of each burst onset it hears. Delay = onset heard − burst handed to the speaker's encoder. Two
relays are measured in the same run: this relay with its defaults (enhancement, low-delay
receive buffer, mono voice Opus), and a plain aiortc pass-through relay (the same server with
enhancement off, aiortc's own jitter buffer and aiortc's default Opus settings).

    python -m loadtest.browser_delay [--seconds 15] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from loadtest.browsers import CHROMIUM, chromium_command
from loadtest.peers import Peer
from loadtest.server import serve_on_loopback

RATE = 48000
FRAME = 960
BURST_EVERY_FRAMES = 50  # one second
SETTLE_SECONDS = 3.0
CONFIGURATIONS = {
    "this relay (defaults)": {},
    "plain aiortc pass-through relay": {
        "PNR_DEFAULT_ENHANCE": "false",
        "PNR_AIORTC_JITTER_BUFFER": "true",
        "PNR_OPUS_BITRATE": "96000",
        "PNR_OPUS_CHANNELS": "2",
        "PNR_OPUS_COMPLEXITY": "10",
        "PNR_OPUS_APPLICATION": "voip",
    },
}
ONSET = re.compile(r"pnr-onset ([0-9.]+)")


def burst_signal(seconds: float) -> np.ndarray:
    """Voiced 200 ms bursts (150 Hz and harmonics, 2 ms fades) every second, silence between."""
    n = int(seconds * RATE)
    t = np.arange(int(0.2 * RATE)) / RATE
    envelope = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.002)  # 2 ms fades: a sharp onset
    burst = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 12)) * envelope
    burst = (0.4 * burst / np.max(np.abs(burst))).astype(np.float32)
    signal = np.zeros(n, dtype=np.float32)
    for start in range(0, n - burst.size, BURST_EVERY_FRAMES * FRAME):
        signal[start : start + burst.size] = burst
    return signal


def measure(extra_env: dict[str, str], seconds: float) -> list[float]:
    """Delays (seconds) of every burst heard by the browser through one relay."""
    served = serve_on_loopback({"PNR_LOG_LEVEL": "WARNING", **extra_env})
    url = served.url
    onsets: list[float] = []
    profile = tempfile.mkdtemp(prefix="pnr-chromium-")
    browser = None
    try:
        browser = subprocess.Popen(
            chromium_command(
                f"{served.url}/?room=delay&name=browser&autojoin=1&measure=1",
                Path(profile),
                log_console=True,
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        reader = threading.Thread(target=_collect, args=(browser, onsets), daemon=True)
        reader.start()
        _wait_for_browser(url)

        async def speak() -> list[float]:
            speaker = Peer(burst_signal(seconds + 2))
            await speaker.join(url, "delay")
            await speaker.wait_connected()
            await asyncio.sleep(seconds)
            await speaker.close()
            assert speaker.sender is not None
            return speaker.sender.send_times

        send_times = asyncio.run(speak())
        to_epoch = time.time() - time.monotonic()
    finally:
        if browser is not None:
            browser.terminate()
            browser.wait(15)
        served.stop()
        shutil.rmtree(profile, ignore_errors=True)
    bursts = [to_epoch + send_times[i] for i in range(0, len(send_times), BURST_EVERY_FRAMES)]
    first = bursts[0] + SETTLE_SECONDS if bursts else 0.0
    delays = []
    for onset_ms in onsets:
        onset = onset_ms / 1000.0
        earlier = [b for b in bursts if b <= onset]
        if earlier and earlier[-1] >= first and onset - earlier[-1] < 0.8:
            delays.append(onset - earlier[-1])
    return delays


def _collect(browser: subprocess.Popen, onsets: list[float]) -> None:
    assert browser.stderr is not None
    for line in browser.stderr:
        match = ONSET.search(line)
        if match:
            onsets.append(float(match.group(1)))


def _wait_for_browser(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        room = httpx.get(url + "/rooms/delay", timeout=2)
        if room.status_code == 200 and any(
            p["connection_state"] == "connected" for p in room.json()["participants"]
        ):
            return
        time.sleep(0.2)
    raise TimeoutError("the browser did not join")


def main(argv: list[str] | None = None) -> None:
    """Measure both relays and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if CHROMIUM is None:
        parser.error("this benchmark needs Chromium (Debian package 'chromium')")
    results = {}
    for name, extra_env in CONFIGURATIONS.items():
        delays = measure(extra_env, args.seconds)
        results[name] = {
            "bursts": len(delays),
            "median_ms": 1000 * float(np.median(delays)) if delays else None,
            "p95_ms": 1000 * float(np.percentile(delays, 95)) if delays else None,
        }
    print("| relay | bursts heard | mouth-to-ear median | p95 |")
    print("|---|---|---|---|")
    for name, row in results.items():
        median = f"{row['median_ms']:.0f} ms" if row["median_ms"] is not None else "n/a"
        p95 = f"{row['p95_ms']:.0f} ms" if row["p95_ms"] is not None else "n/a"
        print(f"| {name} | {row['bursts']} | {median} | {p95} |")
    ours, plain = (results[n]["median_ms"] for n in CONFIGURATIONS)
    if ours and plain:
        print(f"ratio: {ours / plain:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""Headless Chromium as a WebRTC client of the relay's page (browser tests and benchmarks)."""

from __future__ import annotations

import shutil
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_command(
    url: str, profile: Path, microphone_wav: Path | None = None, log_console: bool = False
) -> list[str]:
    """Chromium opening ``url`` headless with a fake microphone (a WAV file, or its generated
    beep), loopback ICE candidates allowed, no background networking, and optionally the page's
    console messages on stderr."""
    if CHROMIUM is None:
        raise FileNotFoundError("Chromium is not installed (Debian package 'chromium')")
    command = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        f"--user-data-dir={profile}",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--autoplay-policy=no-user-gesture-required",
    ]
    if microphone_wav is not None:
        command.append(f"--use-file-for-fake-audio-capture={microphone_wav}")
    if log_console:
        command += ["--enable-logging=stderr", "--log-level=0"]
    return [*command, url]

"""End to end with a real browser: headless Chromium joins from the served page with a fake
microphone fed from a WAV file; an aiortc peer in the same room receives its enhanced voice."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from relay_peers import Peer, running_relay
from test_cluster import place_rooms
from test_relay_media import noisy_speech
from tls_relay import serve_over_https

from loadtest import browser_delay
from loadtest.browsers import CHROMIUM, chromium_command
from loadtest.server import serve_on_loopback
from model.runtime import DEFAULT_MODEL

pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Chromium is not installed (.ci/run installs Debian's chromium package)",
    ),
    pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model"),
]


async def browser_participant(
    url: str, room: str, name: str, timeout: float, verify: ssl.SSLContext | bool = True
) -> dict[str, object]:
    """The browser's participant once the relay has enhanced 3 s of its voice ({} if never)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(verify=verify) as client:
        while time.monotonic() < deadline:
            described = (await client.get(f"{url}/rooms/{room}")).json()
            found = [p for p in described["participants"] if p["name"] == name]
            if found and found[0]["frames"]["enhanced"] >= 150:  # 3 s of voice
                return found[0]
            await asyncio.sleep(0.2)
    return {}


def browser_heard_by_a_peer(
    relay_url: str,
    room: str,
    name: str,
    command: Callable[[str], list[str]],
    timeout: float,
    verify: ssl.SSLContext | bool = True,
) -> tuple[dict[str, object], Peer]:
    """An aiortc peer joins ``room``, then the browser started by ``command(page_url)`` joins as
    ``name``; returns the browser's participant (see :func:`browser_participant`) and the peer,
    closed, with what it recorded. ``verify`` checks the relay's certificate over HTTPS."""

    async def listen() -> tuple[dict[str, object], Peer]:
        listener = Peer(None)  # aiortc objects belong to the loop that runs them
        await listener.join(relay_url, room, verify=verify)
        await listener.wait_connected()
        page = f"{relay_url}/?room={room}&name={name}&autojoin=1"
        browser = subprocess.Popen(
            command(page), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            return await browser_participant(relay_url, room, name, timeout, verify), listener
        finally:
            browser.terminate()
            browser.wait(15)
            await listener.close()

    return asyncio.run(listen())


def assert_heard(state: dict[str, object], listener: Peer, what: str) -> None:
    """The browser joined (``what`` says how, when it did not) and the peer heard it."""
    assert state, f"{what} never joined and sent audio"
    assert state["connection_state"] == "connected"
    assert len(listener.recorder.arrivals) > 100


def test_chromium_joins_from_the_page_and_a_peer_hears_it_enhanced(tmp_path: Path) -> None:
    clean, noisy = noisy_speech(6.0, snr_db=5.0)
    wav = tmp_path / "microphone.wav"
    sf.write(wav, noisy, 48000, subtype="PCM_16")
    with running_relay() as relay:
        state, listener = browser_heard_by_a_peer(
            relay.url,
            "browser",
            "chromium",
            lambda page: chromium_command(page, tmp_path / "profile", microphone_wav=wav),
            120.0,  # a bound: a loaded machine starts a browser slowly
        )
    assert state, "Chromium never joined and sent enhanced audio"
    assert state["connection_state"] == "connected"
    received = listener.recorder.samples
    assert received.shape[0] > 3 * 48000
    # the listener heard the browser's voice: energy, and the speech envelope of the file
    tail = received[-3 * 48000 :]
    assert np.sqrt(np.mean(tail**2)) > 0.005
    frames = 3 * 48000 // 960
    envelope = np.sqrt((tail[: frames * 960].reshape(frames, 960) ** 2).mean(axis=1))
    source = np.sqrt((clean[: (clean.shape[0] // 960) * 960].reshape(-1, 960) ** 2).mean(axis=1))
    best = max(
        np.corrcoef(envelope, np.roll(source, -shift)[:frames])[0, 1]
        for shift in range(source.shape[0])
    )
    print(f"\nbrowser: {state['frames']}, envelope correlation with the clean speech {best:.2f}")
    assert best > 0.5


def test_chromium_joins_through_one_node_a_room_on_another(tmp_path: Path) -> None:
    """``serve`` with two nodes: the page comes from the first, the room lives on the second
    (its signaling proxied there), and media flows between Chromium and the second."""
    served = serve_on_loopback({"PNR_DRAIN_SECONDS": "1"}, nodes=2, timeout=180)
    try:
        placed = place_rooms(served.url, ["here", "there"])
        (elsewhere,) = [room for room, node in placed.items() if node != served.url]
        state, listener = browser_heard_by_a_peer(
            served.url,
            elsewhere,
            "chromium",
            lambda page: chromium_command(page, tmp_path / "profile"),
            120.0,
        )
    finally:
        served.stop()
    assert_heard(state, listener, "Chromium (the other node's room)")


def test_chromium_hears_every_voice_burst_after_a_dtx_pause() -> None:
    """Voice bursts through the relay to Chromium (the page's ``?measure=1`` logs each onset
    it hears): nobody talks between them, so the relay sends the listener nothing (DTX) for
    most of each pause. Chromium still hears every burst after its pause, counts no packet
    lost (the sequence numbers ran on; only the timestamps jumped) and plays the pauses as
    DTX, not as losses to conceal (about a quarter of its frames never came)."""
    measured = browser_delay.measure({}, seconds=10.0)
    row = measured.row()
    print(f"\nDTX to Chromium: {row}")
    assert measured.unsent_frames >= 100, "the relay sent every frame: no DTX"
    assert measured.bursts >= 5
    assert len(measured.delays) >= measured.bursts - 1, row  # a slow start may lose one
    assert measured.stats.get("packetsLost") == 0, measured.stats
    concealed = row["concealed_percent"]
    assert isinstance(concealed, float) and concealed < 10, row


def test_chromium_joins_from_the_page_over_https(tmp_path: Path) -> None:
    """A second machine reaches the page over HTTPS (browsers give the microphone only to
    secure origins): the relay serves TLS with a self-signed certificate, which this Chromium
    is told to accept, and the page joins and is heard."""
    served, trusted = serve_over_https(tmp_path, timeout=180)
    try:
        assert served.url.startswith("https://")
        state, listener = browser_heard_by_a_peer(
            served.url,
            "secure",
            "chromium",
            lambda page: [
                *chromium_command(page, tmp_path / "profile")[:-1],
                "--ignore-certificate-errors",
                page,
            ],
            120.0,
            verify=trusted,
        )
    finally:
        served.stop()
    assert_heard(state, listener, "Chromium (over HTTPS)")


FIREFOX = next((shutil.which(n) for n in ("firefox-esr", "firefox") if shutil.which(n)), None)
FIREFOX_PREFS = {
    "media.navigator.streams.fake": "true",  # a generated tone as the microphone
    "media.navigator.permission.disabled": "true",
    "media.peerconnection.ice.loopback": "true",
    "media.peerconnection.ice.obfuscate_host_addresses": "false",
    "media.autoplay.default": "0",
    "browser.shell.checkDefaultBrowser": "false",
    "datareporting.policy.dataSubmissionEnabled": "false",
    "toolkit.telemetry.reportingpolicy.firstRun": "false",
    "app.update.disabledForTesting": "true",
    "network.connectivity-service.enabled": "false",
    "network.captive-portal-service.enabled": "false",
    "browser.safebrowsing.update.enabled": "false",
}


@pytest.mark.skipif(FIREFOX is None, reason="Firefox is not installed (Debian: firefox-esr)")
def test_firefox_joins_from_the_page(tmp_path: Path) -> None:
    profile = tmp_path / "firefox-profile"
    profile.mkdir()
    (profile / "user.js").write_text(
        "".join(f'user_pref("{key}", {value});\n' for key, value in FIREFOX_PREFS.items())
    )
    assert FIREFOX is not None
    firefox = FIREFOX
    with running_relay() as relay:
        state, listener = browser_heard_by_a_peer(
            relay.url,
            "firefox",
            "firefox",
            lambda page: [firefox, "--headless", "--no-remote", "--profile", str(profile), page],
            120.0,
        )
    assert_heard(state, listener, "Firefox")
    print(f"\nfirefox: {state['frames']}")

"""WHEP egress against the real server on 127.0.0.1: a receive-only offer to ``POST
/whep/{room}`` gets a listen-only session that hears the room's enhanced voices."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest
from aiortc import RTCSessionDescription
from relay_peers import Peer, RunningRelay, running_relay, wait_until
from test_relay_media import noisy_speech

from model.runtime import DEFAULT_MODEL
from service.sdp import offer_sends_audio

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model")

SDP = {"content-type": "application/sdp"}


def assert_error(response: httpx.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == reason


def test_which_offers_send_audio() -> None:
    audio = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    assert offer_sends_audio(audio)  # no direction: sendrecv
    assert offer_sends_audio(audio + "a=sendonly\r\n")
    assert not offer_sends_audio(audio + "a=recvonly\r\n")
    assert not offer_sends_audio(audio + "a=inactive\r\n")
    video_then_audio = "v=0\r\nm=video 9 X 96\r\na=sendrecv\r\nm=audio 9 X 111\r\na=recvonly\r\n"
    assert not offer_sends_audio(video_then_audio)
    assert offer_sends_audio(audio + "a=recvonly\r\nm=audio 9 X 111\r\n")
    assert not offer_sends_audio("not sdp")


async def _speaker_and_viewer(relay: RunningRelay, seconds: float) -> tuple[Peer, str]:
    """A speaker, and a WHEP viewer that listens until it has ``seconds`` of audio; the speaker
    talks on past that however late the viewer connects."""
    _, noisy = noisy_speech(seconds + 20, snr_db=5.0)
    speaker = Peer(noisy.astype(np.float32))
    await speaker.join(relay.url, "egress")
    viewer = Peer(None)  # receive-only, as a WHEP player offers
    async with httpx.AsyncClient() as client:
        refused = await client.post(
            relay.url + "/whep/egress", content=await Peer(np.zeros(960)).offer_sdp(), headers=SDP
        )
        assert_error(refused, 400, "not_receive_only")
        response = await client.post(
            relay.url + "/whep/egress", content=await viewer.offer_sdp(), headers=SDP
        )
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/sdp")
    await viewer.pc.setRemoteDescription(RTCSessionDescription(response.text, "answer"))
    await viewer.wait_connected()
    await wait_until(lambda: viewer.recorder.samples.shape[0] >= seconds * 48000, 60, "audio")
    location = response.headers["location"]
    async with httpx.AsyncClient(base_url=relay.url) as client:
        patched = await client.patch(location, content=b"a=candidate")
        assert_error(patched, 422, "trickle_not_supported")
        assert (await client.delete(location)).status_code == 200
    await speaker.close()
    await viewer.close()
    return viewer, location


def test_a_whep_viewer_hears_the_room_and_leaves_with_delete() -> None:
    with running_relay() as relay:
        viewer, location = asyncio.run(_speaker_and_viewer(relay, 4.0))
        assert location.startswith("/whep/egress/")
        heard = viewer.recorder.samples
        assert heard.shape[0] > 2 * 48000
        assert np.sqrt(np.mean(heard[-2 * 48000 :] ** 2)) > 0.005  # the speaker's voice
        assert_error(httpx.delete(relay.url + location), 404, "unknown_room")

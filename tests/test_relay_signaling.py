"""Signaling and control plane against the real server on 127.0.0.1: every refusal path
answers a 4xx/5xx JSON error naming the problem and leaves nothing behind."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import httpx
import pytest
from relay_peers import Peer, RunningRelay, emptied_after_each_test, running_relay

from model.runtime import DEFAULT_MODEL
from service.tokens import mint_token

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model")


def make_offer(recvonly: bool = False) -> str:
    """A real aiortc offer with one audio section."""

    async def build() -> str:
        peer = Peer(None) if recvonly else Peer(__import__("numpy").zeros(960))
        sdp = await peer.offer_sdp()
        await peer.pc.close()
        return sdp

    return asyncio.run(build())


@pytest.fixture(scope="module")
def served_relay() -> Iterator[RunningRelay]:
    with running_relay(max_body_bytes=4096) as running:
        yield running


@pytest.fixture
def relay(served_relay: RunningRelay) -> Iterator[RunningRelay]:
    yield from emptied_after_each_test(served_relay)


@pytest.fixture(scope="module")
def offer() -> str:
    return make_offer()


def assert_error(response: httpx.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == reason and body["detail"], body


def test_health_metrics_and_docs(relay: RunningRelay) -> None:
    assert httpx.get(relay.url + "/livez").json() == {"status": "ok"}
    ready = httpx.get(relay.url + "/readyz").json()
    assert ready["ready"] is True and ready["state"] == "ready"
    text = httpx.get(relay.url + "/metrics").text
    for name in (
        "pnr_rooms",
        "pnr_participants",
        "pnr_hop_processing_seconds_bucket",
        "pnr_processing_lag_seconds_bucket",
        "pnr_frames_enhanced_total",
        "pnr_frames_concealed_total",
        "pnr_asyncio_tasks",
        "pnr_rtp_packets_lost_total",
        "pnr_rtt_seconds_bucket",
        "pnr_ready 1.0",
    ):
        assert name in text
    # the shipped model's two-hop graph serves a packet's two hops in one call
    assert 'pnr_build_info{model="percepnet-int8.onnx",model_calls="two hops"} 1.0' in text
    assert httpx.get(relay.url + "/openapi.json").json()["paths"]["/offer"]
    assert httpx.get(relay.url + "/docs").status_code == 200
    page = httpx.get(relay.url + "/")
    assert page.status_code == 200 and "client.js" in page.text
    assert httpx.get(relay.url + "/static/client.js").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{not json", 400, "malformed_json"),
        (b"[1, 2]", 422, "invalid_offer_request"),
        (b'{"sdp": "v=0"}', 422, "invalid_offer_request"),
        (b'{"sdp": "x", "room": "a", "type": "answer"}', 422, "invalid_offer_request"),
        (b'{"sdp": "x", "room": "a", "bogus": 1}', 422, "invalid_offer_request"),
        (b'{"sdp": "hello", "room": "a"}', 400, "malformed_sdp"),
        (b'{"sdp": "v=0\\no=- 1 1 IN IP4 0.0.0.0\\ns=-\\nt=0 0\\n", "room": "a"}', 400, "no_audio"),
        (b"x" * 5000, 413, "body_too_large"),
    ],
)
def test_bad_offer_bodies(relay: RunningRelay, body: bytes, status: int, reason: str) -> None:
    response = httpx.post(
        relay.url + "/offer", content=body, headers={"content-type": "application/json"}
    )
    assert_error(response, status, reason)
    assert not relay.relay.rooms


def test_every_endpoint_refuses_oversized_bodies(relay: RunningRelay) -> None:
    response = httpx.patch(
        relay.url + "/rooms/r/participants/p",
        content=b"{" + b" " * 5000 + b"}",
        headers={"content-type": "application/json"},
    )
    assert_error(response, 413, "body_too_large")


def test_offers_without_opus_or_with_a_bad_room_name(relay: RunningRelay, offer: str) -> None:
    no_opus = re.sub(r"a=rtpmap:\d+ opus/48000/2\r?\n", "", offer)
    response = httpx.post(relay.url + "/offer", json={"sdp": no_opus, "room": "a"})
    assert_error(response, 400, "no_opus")
    response = httpx.post(relay.url + "/offer", json={"sdp": offer, "room": "../etc"})
    assert_error(response, 400, "invalid_room")
    garbled = offer.replace("a=fingerprint:sha-256", "a=fingerprint:sha-256 zz")
    response = httpx.post(relay.url + "/offer", json={"sdp": garbled, "room": "a"})
    assert response.status_code == 400, response.text
    assert not relay.relay.rooms


def test_join_describe_patch_and_remove(relay: RunningRelay, offer: str) -> None:
    response = httpx.post(relay.url + "/offer", json={"sdp": offer, "room": "r1", "name": "ada"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["type"] == "answer" and answer["sdp"].startswith("v=0")
    assert "opus/48000" in answer["sdp"]
    pid, key = answer["participant_id"], answer["participant_key"]
    rooms = httpx.get(relay.url + "/rooms").json()
    assert rooms[0]["room"] == "r1" and rooms[0]["participants"] == 1
    room = httpx.get(relay.url + "/rooms/r1").json()
    assert room["participants"][0]["name"] == "ada"
    assert room["participants"][0]["listening"] is True
    assert room["participants"][0]["speaking"] is False  # no audio yet
    assert room["participants"][0]["level_db"] == -100.0
    speakers = httpx.get(
        f"{relay.url}/rooms/r1/participants/{pid}/speakers", headers={"X-Participant-Key": key}
    )
    assert speakers.json() == [{"name": "ada", "you": True, "speaking": False, "level_db": -100.0}]
    assert_error(
        httpx.get(f"{relay.url}/rooms/r1/participants/nobody/speakers"), 404, "unknown_participant"
    )
    url = f"{relay.url}/rooms/r1/participants/{pid}"
    patched = httpx.patch(url, json={"enhance": False, "attenuation_limit_db": 12})
    assert patched.status_code == 200, patched.text
    assert patched.json()["settings"] == {
        "enhance": False,
        "attenuation_limit_db": 12.0,
        "postfilter": True,
    }
    assert_error(httpx.patch(url, json={"attenuation_limit_db": -1}), 422, "invalid_request")
    assert_error(httpx.patch(url, json={"enhance": None}), 422, "invalid_request")
    assert_error(httpx.patch(url, json={"volume": 3}), 422, "invalid_request")
    assert_error(
        httpx.patch(f"{relay.url}/rooms/r1/participants/nobody", json={}),
        404,
        "unknown_participant",
    )
    assert_error(httpx.get(relay.url + "/rooms/nowhere"), 404, "unknown_room")
    removed = httpx.delete(url, headers={"X-Participant-Key": key})
    assert removed.status_code == 204
    assert_error(httpx.delete(url), 404, "unknown_room")
    assert not relay.relay.rooms


def test_whip_ingest_location_delete_and_patch(relay: RunningRelay) -> None:
    sendonly = make_offer().replace("a=sendrecv", "a=sendonly")
    wrong_type = httpx.post(
        relay.url + "/whip/w1", content=sendonly, headers={"content-type": "text/plain"}
    )
    assert_error(wrong_type, 415, "unsupported_media_type")
    response = httpx.post(
        relay.url + "/whip/w1", content=sendonly, headers={"content-type": "application/sdp"}
    )
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/sdp")
    location = response.headers["location"]
    assert location.startswith("/whip/w1/") and "a=recvonly" in response.text
    described = httpx.get(relay.url + "/rooms/w1").json()["participants"][0]
    assert described["listening"] is False  # send-only: nothing is mixed (or dropped) for it
    assert_error(
        httpx.patch(relay.url + location, content=b"a=candidate"), 422, "trickle_not_supported"
    )
    assert httpx.delete(relay.url + location).status_code == 200
    assert_error(httpx.delete(relay.url + location), 404, "unknown_room")
    bad = httpx.post(
        relay.url + "/whip/w1", content=b"\xff\xfe", headers={"content-type": "application/sdp"}
    )
    assert_error(bad, 400, "malformed_sdp")
    assert not relay.relay.rooms


def test_signaling_errors_are_counted_by_reason(relay: RunningRelay) -> None:
    httpx.post(relay.url + "/offer", content=b"{", headers={"content-type": "application/json"})
    text = httpx.get(relay.url + "/metrics").text
    assert re.search(r'pnr_signaling_errors_total\{reason="malformed_json"\} [1-9]', text)


def test_tokens_admin_token_unknown_rooms_and_full_rooms(offer: str) -> None:
    secret = "test-secret-123"
    with running_relay(
        token_secret=secret,
        admin_token="admin-1",
        auto_create_rooms=False,
        max_participants_per_room=1,
        max_rooms=1,
    ) as relay:
        good = mint_token(secret, "r1")
        assert_error(
            httpx.post(relay.url + "/offer", json={"sdp": offer, "room": "r1"}),
            401,
            "invalid_token",
        )
        forged = mint_token("wrong", "r1")
        assert_error(
            httpx.post(relay.url + "/offer", json={"sdp": offer, "room": "r1", "token": forged}),
            401,
            "invalid_token",
        )
        other_room = mint_token(secret, "r2")
        assert_error(
            httpx.post(
                relay.url + "/offer", json={"sdp": offer, "room": "r1", "token": other_room}
            ),
            401,
            "invalid_token",
        )
        assert_error(
            httpx.post(relay.url + "/offer", json={"sdp": offer, "room": "r1", "token": good}),
            404,
            "unknown_room",
        )
        assert_error(httpx.put(relay.url + "/rooms/r1"), 401, "invalid_admin_token")
        assert_error(httpx.get(relay.url + "/rooms"), 401, "invalid_admin_token")
        admin = {"Authorization": "Bearer admin-1"}
        assert httpx.put(relay.url + "/rooms/r1", headers=admin).status_code == 200
        assert_error(httpx.put(relay.url + "/rooms/r2", headers=admin), 503, "too_many_rooms")
        joined = httpx.post(relay.url + "/offer", json={"sdp": offer, "room": "r1", "token": good})
        assert joined.status_code == 200, joined.text
        full = httpx.post(
            relay.url + "/whip/r1",
            content=offer,
            headers={"content-type": "application/sdp", "Authorization": f"Bearer {good}"},
        )
        assert_error(full, 503, "room_full")
        assert full.headers["retry-after"].isdigit()
        pid = joined.json()["participant_id"]
        url = f"{relay.url}/rooms/r1/participants/{pid}"
        assert_error(httpx.patch(url, json={"enhance": False}), 401, "invalid_admin_token")
        assert_error(
            httpx.patch(url, json={"enhance": False}, headers={"X-Participant-Key": "guess"}),
            401,
            "invalid_admin_token",
        )
        assert httpx.patch(url, json={"enhance": False}, headers=admin).status_code == 200
        speakers = f"{url}/speakers"
        assert_error(
            httpx.get(speakers, headers={"X-Participant-Key": "guess"}), 401, "invalid_admin_token"
        )
        joined_key = {"X-Participant-Key": joined.json()["participant_key"]}
        assert httpx.get(speakers, headers=joined_key).json()[0]["you"] is True
        assert httpx.get(relay.url + "/rooms", headers=admin).json()[0]["participants"] == 1
        assert httpx.delete(url, headers=admin).status_code == 204
        # the explicitly created room stays open, empty
        assert httpx.get(relay.url + "/rooms/r1", headers=admin).json()["participants"] == []


def test_cross_origin_whip_clients_when_allowed() -> None:
    with running_relay(cors_origins="https://studio.example") as relay:
        preflight = httpx.options(
            relay.url + "/whip/c1",
            headers={
                "Origin": "https://studio.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://studio.example"
        response = httpx.post(
            relay.url + "/whip/c1",
            content=make_offer(),
            headers={"content-type": "application/sdp", "Origin": "https://studio.example"},
        )
        assert response.status_code == 201
        assert "location" in response.headers["access-control-expose-headers"].lower()
        httpx.delete(relay.url + response.headers["location"])
        other = httpx.options(
            relay.url + "/whip/c1",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in other.headers


def test_the_relay_answers_with_opus_only_whatever_the_offer_prefers(
    relay: RunningRelay, offer: str
) -> None:
    lines = offer.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("m=audio"):
            head, payloads = line.split(" ")[:3], line.split(" ")[3:]
            lines[index] = " ".join(head + sorted(payloads, key=lambda p: p != "0"))  # PCMU first
    pcmu_first = "\r\n".join(lines) + "\r\n"
    response = httpx.post(relay.url + "/offer", json={"sdp": pcmu_first, "room": "codec"})
    assert response.status_code == 200, response.text
    answer = response.json()["sdp"]
    assert "opus/48000" in answer and "PCMU" not in answer and "PCMA" not in answer
    opus = re.search(r"a=rtpmap:(\d+) opus/48000", answer)
    assert opus and f"a=fmtp:{opus.group(1)} " in answer  # the sender is asked for in-band FEC
    assert "useinbandfec=1" in answer.split(f"a=fmtp:{opus.group(1)} ")[1].splitlines()[0]
    httpx.delete(f"{relay.url}/rooms/codec/participants/{response.json()['participant_id']}")

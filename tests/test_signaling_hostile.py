"""Hostile signaling against the real server on 127.0.0.1 (issue 26): each of the twelve inputs
that once answered 500 now gets a 4xx ``{error, detail}`` on both ``POST /offer`` and
``POST /whip/{room}``, counted by reason, over a connection that stays open; FastAPI's own
refusals take the same shape; a bug answers a JSON 500 without dropping the connection."""

from __future__ import annotations

import http.client
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from relay_peers import RunningRelay, emptied_after_each_test, running_relay
from sdp_offers import OFFERS

from loadtest.fuzz_signaling import real_offer
from model.runtime import DEFAULT_MODEL
from service.tokens import mint_token

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model")
SECRET = "hostile-secret"


@pytest.fixture(scope="module")
def offer() -> str:
    return real_offer()


@pytest.fixture(scope="module")
def served_relay() -> Iterator[RunningRelay]:
    with running_relay() as running:
        yield running


@pytest.fixture
def relay(served_relay: RunningRelay) -> Iterator[RunningRelay]:
    yield from emptied_after_each_test(served_relay)


@pytest.fixture(scope="module")
def served_locked() -> Iterator[RunningRelay]:
    with running_relay(token_secret=SECRET) as running:
        yield running


@pytest.fixture
def locked(served_locked: RunningRelay) -> Iterator[RunningRelay]:
    yield from emptied_after_each_test(served_locked)


@dataclass
class Answer:
    status: int
    body: dict[str, object]
    same_connection: bool  # a second request went over the same socket and was answered


def exchange(url: str, method: str, path: str, body: bytes, headers: dict[str, bytes]) -> Answer:
    """One request, then ``GET /livez`` on the same keep-alive socket."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        status, text = response.status, response.read()
        sock = connection.sock
        connection.request("GET", "/livez")
        again = connection.getresponse()
        same = sock is not None and connection.sock is sock and again.status == 200
        again.read()
    finally:
        connection.close()
    return Answer(status, json.loads(text), same)


def post_offer(url: str, body: bytes, authorization: bytes | None = None) -> Answer:
    headers = {"Content-Type": b"application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return exchange(url, "POST", "/offer", body, headers)


def post_whip(url: str, sdp: bytes, room: str = "w1", authorization: bytes | None = None) -> Answer:
    headers = {"Content-Type": b"application/sdp"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return exchange(url, "POST", f"/whip/{room}", sdp, headers)


def offer_body(sdp: str, room: str = "r1", **fields: object) -> bytes:
    return json.dumps({"sdp": sdp, "room": room, **fields}).encode()


def assert_refused(answer: Answer, status: int, reason: str) -> None:
    assert (answer.status, answer.body.get("error")) == (status, reason), answer.body
    assert set(answer.body) == {"error", "detail"} and answer.body["detail"], answer.body
    assert answer.same_connection, "the connection was dropped after the answer"


def counted(relay: RunningRelay, reason: str) -> float:
    text = httpx.get(relay.url + "/metrics").text
    match = re.search(rf'pnr_signaling_errors_total\{{reason="{reason}"\}} (\S+)', text)
    return float(match.group(1)) if match else 0.0


def _sub(pattern: str, replacement: str, sdp: str) -> str:
    changed = re.sub(pattern, replacement, sdp, count=1, flags=re.MULTILINE)
    assert changed != sdp, pattern
    return changed


def extra_h265_section(sdp: str) -> str:
    audio = sdp[sdp.index("m=audio") :]
    video = _sub(r"^m=audio (\d+) (\S+) .*$", r"m=video \1 \2 97", audio)
    video = re.sub(r"^a=(rtpmap|fmtp|ssrc|msid|extmap):.*\r?\n", "", video, flags=re.MULTILINE)
    video = _sub(r"^a=mid:0", "a=mid:1", video)
    return (
        sdp.replace("a=group:BUNDLE 0", "a=group:BUNDLE 0 1")
        + video
        + ("a=rtpmap:97 H265/90000\r\n")
    )


# the cases 3–9: a valid aiortc offer with one thing changed, and the reason refused
SDP_CASES = {
    "3 proto in lower case": (
        lambda s: s.replace("UDP/TLS/RTP/SAVPF", "udp/tls/rtp/savpf"),
        "malformed_sdp",
    ),
    "4 payload type 300": (lambda s: _sub(r"(m=audio \d+ \S+) \d+", r"\1 300", s), "malformed_sdp"),
    "5 c=IN IP9 x": (lambda s: _sub(r"^c=IN IP4 \S+", "c=IN IP9 x", s), "malformed_sdp"),
    "6 candidate without typ": (lambda s: s.replace(" typ host", ""), "malformed_sdp"),
    "7 empty a=group": (lambda s: _sub(r"^a=group:BUNDLE[^\r\n]*", "a=group", s), "malformed_sdp"),
    "8 audio section twice": (lambda s: s + s[s.index("m=audio") :], "malformed_sdp"),
    "9 extra H265-only video": (extra_h265_section, "unsupported_codecs"),
    "part 4: no fingerprint": (
        lambda s: re.sub(r"^a=fingerprint:[^\r\n]*\r?\n", "", s, flags=re.MULTILINE),
        "no_fingerprint",
    ),
}


@pytest.mark.parametrize("case", sorted(SDP_CASES))
def test_the_sdp_cases_are_refused_on_offer_and_whip(
    relay: RunningRelay, offer: str, case: str
) -> None:
    change, reason = SDP_CASES[case]
    sdp = change(offer)
    before = counted(relay, reason)
    assert_refused(post_offer(relay.url, offer_body(sdp)), 400, reason)
    assert_refused(post_whip(relay.url, sdp.encode()), 400, reason)
    assert counted(relay, reason) == before + 2
    assert not relay.relay.rooms


def test_case_1_nesting_30000_deep(relay: RunningRelay) -> None:
    deep = b"[" * 30000 + b"]" * 30000
    assert_refused(post_offer(relay.url, deep), 400, "malformed_json")
    assert_refused(post_whip(relay.url, deep), 400, "malformed_sdp")
    nested_field = b'{"sdp": "x", "room": ' + b"[" * 30000 + b"]" * 30000 + b"}"
    assert_refused(post_offer(relay.url, nested_field), 400, "malformed_json")


def test_case_2_an_integer_of_4301_digits(relay: RunningRelay, offer: str) -> None:
    digits = "1" * 4301
    body = b'{"sdp": "x", "room": ' + digits.encode() + b"}"
    assert_refused(post_offer(relay.url, body), 400, "malformed_json")
    assert_refused(post_offer(relay.url, b'{"sdp": "x", "room": 1e999}'), 400, "malformed_json")
    assert_refused(post_offer(relay.url, b'{"sdp": "x", "room": NaN}'), 400, "malformed_json")
    assert_refused(post_whip(relay.url, offer.encode(), room=digits), 400, "invalid_room")


def test_lone_surrogates_in_json_strings(relay: RunningRelay) -> None:
    body = b'{"sdp": "x", "room": "r", "name": "\\ud800"}'
    assert_refused(post_offer(relay.url, body), 400, "malformed_json")


@pytest.mark.parametrize(
    "case", ["10 token é.x", "11 valid payload with é signature", "12 latin-1 bearer"]
)
def test_the_token_cases_are_refused_on_offer_and_whip(
    locked: RunningRelay, offer: str, case: str
) -> None:
    payload = mint_token(SECRET, "r1").split(".")[0]
    token = {
        "10 token é.x": "é.x",
        "11 valid payload with é signature": f"{payload}.é",
        "12 latin-1 bearer": f"{payload}.\xe9\xff",
    }[case]
    before = counted(locked, "invalid_token")
    assert_refused(post_offer(locked.url, offer_body(offer, token=token)), 401, "invalid_token")
    for encoding in ("utf-8", "latin-1"):
        bearer = b"Bearer " + token.encode(encoding)
        answer = post_offer(locked.url, offer_body(offer), authorization=bearer)
        assert_refused(answer, 401, "invalid_token")
        answer = post_whip(locked.url, offer.encode(), room="r1", authorization=bearer)
        assert_refused(answer, 401, "invalid_token")
    assert counted(locked, "invalid_token") == before + 5
    assert not locked.relay.rooms


def test_a_valid_token_still_joins(locked: RunningRelay, offer: str) -> None:
    token = mint_token(SECRET, "r1")
    response = httpx.post(locked.url + "/offer", json={"sdp": offer, "room": "r1", "token": token})
    assert response.status_code == 200, response.text
    pid = response.json()["participant_id"]
    locked.call(lambda: locked.relay.leave("r1", pid, "test"))


@pytest.mark.parametrize("client", sorted(OFFERS))
def test_real_clients_offers_are_answered(relay: RunningRelay, client: str) -> None:
    response = httpx.post(relay.url + "/offer", json={"sdp": OFFERS[client], "room": "real"})
    assert response.status_code == 200, response.text
    assert "opus/48000" in response.json()["sdp"]
    relay.call(lambda: relay.relay.leave("real", response.json()["participant_id"], "test"))


def test_candidates_ended_without_a_usable_one_are_the_clients_fault(relay: RunningRelay) -> None:
    mdns_only = re.sub(r"^a=candidate:1 .*\r\n", "", OFFERS["firefox"], flags=re.MULTILINE)
    assert "typ srflx" not in mdns_only
    for sdp in (mdns_only, re.sub(r"^a=candidate:.*\r\n", "", OFFERS["aiortc"], flags=re.M)):
        assert_refused(post_offer(relay.url, offer_body(sdp)), 400, "no_usable_candidates")
        assert_refused(post_whip(relay.url, sdp.encode()), 400, "no_usable_candidates")
    assert not relay.relay.rooms


def test_fastapi_refusals_take_the_same_shape(relay: RunningRelay) -> None:
    for method, path, status, reason in [
        ("GET", "/nowhere", 404, "not_found"),
        ("GET", "/static/nothing.js", 404, "not_found"),
        ("DELETE", "/livez", 405, "method_not_allowed"),
        ("PUT", "/offer", 405, "method_not_allowed"),
    ]:
        answer = exchange(relay.url, method, path, b"", {})
        assert_refused(answer, status, reason)
    assert counted(relay, "not_found") >= 2
    nobody = "/rooms/r/participants/p"  # the participant is looked up before the body is read
    answer = exchange(relay.url, "PATCH", nobody, b"{", {"Content-Type": b"application/json"})
    assert_refused(answer, 404, "unknown_room")
    response = httpx.post(relay.url + "/offer", json={"sdp": real_offer(), "room": "shape"})
    pid = response.json()["participant_id"]
    url = f"/rooms/shape/participants/{pid}"
    for body, status, reason in [
        (b"{", 400, "malformed_json"),
        (b"[" * 100 + b"]" * 100, 400, "malformed_json"),
        (b'{"attenuation_limit_db": ' + b"9" * 5000 + b"}", 400, "malformed_json"),
        (b'{"attenuation_limit_db": "loud"}', 422, "invalid_request"),
        (b"[]", 422, "invalid_request"),
    ]:
        answer = exchange(relay.url, "PATCH", url, body, {"Content-Type": b"application/json"})
        assert_refused(answer, status, reason)
    relay.call(lambda: relay.relay.leave("shape", pid, "test"))


def test_a_bug_answers_json_500_keeps_the_connection_and_logs_one_line(
    relay: RunningRelay,
    offer: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken_join(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(relay.relay, "join", broken_join)
    before = counted(relay, "internal")
    with caplog.at_level(logging.INFO):
        answer = post_offer(relay.url, offer_body(offer))
    assert_refused(answer, 500, "internal")
    assert "KeyError" in str(answer.body["detail"])
    assert counted(relay, "internal") == before + 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "KeyError" in errors[0].getMessage() and "\n" not in errors[0].getMessage()
    assert errors[0].exc_info is None  # no traceback at ERROR: the line says where

"""The signaling fuzz, short (issue 26): schemathesis cases from the served OpenAPI schema and
hypothesis mutations of real offers, with and without tokens, against two relays on 127.0.0.1.
No 5xx but documented 503s, no dropped connection, every refusal ``{error, detail}``, both
relays ready afterwards. ``python -m loadtest.fuzz_signaling`` is the long run."""

from __future__ import annotations

import httpx
import pytest
from relay_peers import running_relay
from sdp_offers import OFFERS

from loadtest.fuzz_signaling import ADMIN, SECRET, Target, fuzz, passed, real_offer, report
from model.runtime import DEFAULT_MODEL

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model")
REQUESTS = 1000


def test_a_thousand_hostile_requests_get_no_5xx_and_keep_their_connection() -> None:
    # (the browsers' samples carry mDNS candidates: each accepted one waits ~1 s to resolve them)
    offers = [real_offer(), OFFERS["libdatachannel"]]
    # peers that never connect go in 2 s; small rooms keep the accepted (costly) offers few
    quick = {
        "connect_timeout_seconds": 2.0,
        "empty_room_ttl_seconds": 1.0,
        "max_participants_per_room": 4,
    }
    with (
        running_relay(**quick) as open_relay,
        running_relay(token_secret=SECRET, admin_token=ADMIN, **quick) as locked,
    ):
        targets = [Target("open", open_relay.url, False), Target("tokens", locked.url, True)]
        tally = fuzz(targets, REQUESTS, offers)
        ready = {t.name: httpx.get(t.base_url + "/readyz").status_code for t in targets}
    print(report(tally, ready))
    assert tally.requests >= REQUESTS
    assert passed(tally, ready), report(tally, ready)
    assert tally.statuses[200] + tally.statuses[201] > 0, "no offer was ever accepted"
    assert sum(n for s, n in tally.statuses.items() if 400 <= s < 500) > REQUESTS // 2

"""`percepnet-relay serve` over HTTPS with a self-signed certificate made here: an aiortc peer
joins and connects; a certificate without its key, or one that cannot be read, stops the
start-up with one ``error:`` line."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from relay_peers import Peer
from tls_relay import self_signed_certificate, serve_over_https

from model.runtime import DEFAULT_MODEL


@pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model")
def test_a_peer_joins_over_https(tmp_path: Path) -> None:
    served, trusted = serve_over_https(tmp_path, timeout=90)
    try:
        assert served.url.startswith("https://")

        async def scenario() -> None:
            peer = Peer(np.zeros(48000 * 5, np.float32))
            answer = await peer.join(served.url, "secure", verify=trusted)
            assert answer["type"] == "answer"
            await peer.wait_connected(20)
            await peer.close()

        asyncio.run(scenario())
        with pytest.raises(httpx.ConnectError):  # the self-signed certificate is not trusted
            httpx.get(served.url + "/livez")
        plain = served.url.replace("https://", "http://")
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
            httpx.get(plain + "/livez")
    finally:
        served.stop()


def serve_once(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", "0"],
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("problem", ["cert_only", "key_only", "unreadable", "not_pem", "mismatch"])
def test_bad_tls_settings_stop_the_start_up(tmp_path: Path, problem: str) -> None:
    cert_file, key_file = self_signed_certificate(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, other_key = self_signed_certificate(other)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    env = {
        "cert_only": {"PNR_TLS_CERT_FILE": str(cert_file)},
        "key_only": {"PNR_TLS_KEY_FILE": str(key_file)},
        "unreadable": {
            "PNR_TLS_CERT_FILE": str(tmp_path / "missing.pem"),
            "PNR_TLS_KEY_FILE": str(key_file),
        },
        "not_pem": {"PNR_TLS_CERT_FILE": str(garbage), "PNR_TLS_KEY_FILE": str(key_file)},
        "mismatch": {"PNR_TLS_CERT_FILE": str(cert_file), "PNR_TLS_KEY_FILE": str(other_key)},
    }[problem]
    result = serve_once(env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: bad settings: "), result.stderr
    assert "tls" in lines[0].lower() and "Traceback" not in result.stderr

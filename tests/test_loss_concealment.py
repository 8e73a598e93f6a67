"""Lost packets on a speaker's uplink, over an in-memory link with a fixed loss pattern: the relay
loses only what the network lost, fills it with Opus concealment (PLC, or FEC when the sender
sends it) in place, and the audio keeps its timing."""

from __future__ import annotations

import asyncio
import functools

import numpy as np
import pytest
from lossy_link import LinkResult, relay_receive_path, send_over_lossy_link
from signals import add_white_noise, speech_like

from service.concealment import ConcealingOpusDecoder, ReleasedFrame, is_concealed
from service.sdp import request_inband_fec

FRAME = 960
BURST = range(100, 103)  # three in a row
ISOLATED = {i for i in range(30, 380, 17)}  # about 6 % of the packets, one at a time


def lost(index: int) -> bool:
    return index in BURST or index in ISOLATED


@functools.cache
def speech() -> np.ndarray:
    return add_white_noise(speech_like(8.0, seed=4), snr_db=25.0).astype(np.float32)


@functools.cache
def over_the_link(fec_loss_percent: int, lossless: bool = False) -> LinkResult:
    pattern = (lambda _: False) if lossless else lost
    with relay_receive_path():
        return asyncio.run(send_over_lossy_link(speech(), pattern, fec_loss_percent))


def test_packet_loss_costs_only_the_lost_packets() -> None:
    """Every lost packet is given up when the next one arrives and stood in for by a concealed
    frame (at most two in a row; the oldest of a burst of three stays silent): the receiver
    delivers every sent frame but one, each at its own timestamp, so the delay does not move."""
    signal = speech()
    result = over_the_link(0)
    sent = signal.shape[0] // FRAME
    dropped = [i for i in range(sent) if lost(i)]
    assert result.rtp_dropped == len(dropped)
    timestamps = [t // FRAME for t in result.timestamps if t // FRAME < sent]
    assert timestamps == sorted(set(timestamps))  # in order, no duplicates
    missing = sorted(set(range(sent)) - set(timestamps))
    assert missing == [BURST[0]]  # only the oldest of the burst of three is not concealed
    concealed = [t // FRAME for t, c in zip(result.timestamps, result.concealed, strict=True) if c]
    assert concealed == sorted(set(dropped) - {BURST[0]})
    # the audio is where it belongs: each real frame matches the sent signal at lag 0
    received = np.zeros(sent * FRAME, np.float32)
    for frame, t in zip(result.frames, result.timestamps, strict=True):
        if t // FRAME < sent:
            received[t : t + FRAME] = frame
    decoded_lag = _lag(signal[: sent * FRAME], received)
    assert abs(decoded_lag) < 400  # the codec's own look-ahead, a few ms, the same throughout
    for start in range(FRAME * 25, sent * FRAME - 48000, 48000):
        part = slice(start, start + 48000)
        assert abs(_lag(signal[part], received[part]) - decoded_lag) <= 2


def _lag(reference: np.ndarray, received: np.ndarray, max_lag: int = 960) -> int:
    size = 1 << int(np.ceil(np.log2(2 * reference.shape[0])))
    spectrum = np.fft.rfft(received, size) * np.conj(np.fft.rfft(reference, size))
    correlation = np.fft.irfft(spectrum, size)
    lags = np.r_[np.arange(0, max_lag + 1), np.arange(-max_lag, 0)]
    values = np.r_[correlation[: max_lag + 1], correlation[-max_lag:]]
    return int(lags[int(np.argmax(values))])


def concealment_snr_db(fec_loss_percent: int) -> tuple[float, float]:
    """SNR of the concealed voiced frames against the same frames decoded without loss, and
    their energy relative to those frames."""
    reference = over_the_link(fec_loss_percent, lossless=True)
    clean = dict(zip(reference.timestamps, reference.frames, strict=True))
    errors, clean_energy, concealed_energy = 0.0, 0.0, 0.0
    result = over_the_link(fec_loss_percent)
    for frame, t, concealed in zip(result.frames, result.timestamps, result.concealed, strict=True):
        sent = clean[t]
        if concealed and np.sqrt(np.mean(sent**2)) > 0.05:
            errors += float(np.sum((frame - sent) ** 2))
            clean_energy += float(np.sum(sent**2))
            concealed_energy += float(np.sum(frame**2))
    assert clean_energy > 0, "no voiced packet was lost: the loss pattern misses the speech"
    return 10 * np.log10(clean_energy / errors), concealed_energy / clean_energy


@pytest.mark.parametrize("fec", [False, True], ids=["plc", "fec"])
def test_concealment_fills_a_lost_packet_with_audio(fec: bool) -> None:
    """Where a voiced packet was lost, the listener gets audio of about the right level, not
    silence (0 energy, an SNR of 0 dB); with the sender's in-band FEC it is much closer to what
    was sent than PLC's guess."""
    snr_db, energy = concealment_snr_db(10 if fec else 0)
    name = "FEC" if fec else "PLC"
    print(f"\n{name}: concealed voiced frames {snr_db:.1f} dB SNR, {energy:.2f} of the energy")
    assert energy > 0.2
    assert snr_db > 1.0
    if fec:
        assert snr_db > concealment_snr_db(0)[0] + 3.0


def test_an_undecodable_packet_is_concealed_not_fatal() -> None:
    decoder = ConcealingOpusDecoder()
    frames = decoder.decode(ReleasedFrame(b"", timestamp=0))
    assert len(frames) == 1 and is_concealed(frames[0]) and decoder.corrupt == 1
    frames = decoder.decode(ReleasedFrame(bytes([0xFF, 0xFF, 0xFF]), 960, lost_before=5))
    assert [is_concealed(f) for f in frames] == [True, True, True]  # two lost, then itself
    assert [f.pts for f in frames] == [-960, 0, 960]


def test_answers_ask_the_sender_for_in_band_fec() -> None:
    answer = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:111 opus/48000/2\r\n"
    assert "a=fmtp:111 useinbandfec=1\r\n" in request_inband_fec(answer)
    with_fmtp = answer + "a=fmtp:111 minptime=10\r\n"
    assert "a=fmtp:111 minptime=10;useinbandfec=1\r\n" in request_inband_fec(with_fmtp)
    assert request_inband_fec(request_inband_fec(with_fmtp)) == request_inband_fec(with_fmtp)

"""Unit tests of the relay's pure parts: tokens, mixer, frames, speaker pipeline,
settings."""

from __future__ import annotations

import asyncio
import gc
import importlib.util

import av
import numpy as np
import pytest
from relay_peers import running_relay

from model.runtime import DEFAULT_MODEL, ModelRuntime
from service.audio_frames import frame_to_mono, mono_to_frame
from service.errors import RelayError
from service.mixer import RoomMixer
from service.relay import Relay
from service.settings import Settings
from service.speaker import EnhancementSettings, SpeakerPipeline
from service.tokens import TokenError, mint_token, verify_token


# ---- tokens ---------------------------------------------------------------------------------
def test_token_round_trip_names_room_and_expiry() -> None:
    token = mint_token("s3cret", "lobby", ttl_seconds=60, name="ada", now=1000.0)
    claims = verify_token("s3cret", token, "lobby", now=1030.0)
    assert (claims.room, claims.expires, claims.name) == ("lobby", 1060, "ada")


@pytest.mark.parametrize(
    ("token", "room", "now", "message"),
    [
        (None, "lobby", 0.0, "required"),
        ("", "lobby", 0.0, "required"),
        ("no-dot", "lobby", 0.0, "malformed"),
        ("abc.def", "lobby", 0.0, "signature"),
        (mint_token("other", "lobby", now=0.0), "lobby", 0.0, "signature"),
        (mint_token("s3cret", "lobby", now=0.0), "kitchen", 0.0, "another room"),
        (mint_token("s3cret", "lobby", ttl_seconds=10, now=0.0), "lobby", 11.0, "expired"),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(
    token: str | None, room: str, now: float, message: str
) -> None:
    with pytest.raises(TokenError, match=message):
        verify_token("s3cret", token, room, now=now)


def test_tampered_claims_break_the_signature() -> None:
    token = mint_token("s3cret", "lobby", now=0.0)
    other = mint_token("s3cret", "kitchen", now=0.0)
    forged = other.split(".")[0] + "." + token.split(".")[1]
    with pytest.raises(TokenError, match="signature"):
        verify_token("s3cret", forged, "kitchen", now=0.0)


@pytest.mark.parametrize("bad", ["é.x", "ab.é", "é", "\ud800.x", "a.\x00"])
def test_non_ascii_tokens_are_malformed_not_a_crash(bad: str) -> None:
    good = mint_token("s3cret", "lobby", now=0.0)
    for token in (bad, good.split(".")[0] + "." + bad):
        with pytest.raises(TokenError):
            verify_token("s3cret", token, "lobby", now=0.0)


def test_a_token_signed_with_the_empty_key_is_never_accepted() -> None:
    import base64
    import hashlib
    import hmac
    import json

    payload = base64.urlsafe_b64encode(json.dumps({"room": "lobby", "exp": 10**10}).encode())
    payload_text = payload.rstrip(b"=").decode()
    signature = hmac.new(b"", payload_text.encode(), hashlib.sha256).digest()
    forged = payload_text + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
    with pytest.raises(TokenError, match="no token secret"):
        verify_token("", forged, "lobby")
    with pytest.raises(TokenError, match="signature"):
        verify_token("s3cret", forged, "lobby")
    with pytest.raises(ValueError, match="empty"):
        mint_token("", "lobby")


def test_secrets_compare_as_ascii_bytes() -> None:
    from service.tokens import same_secret

    assert same_secret("admin-1", "admin-1")
    assert not same_secret("admin-2", "admin-1")
    assert not same_secret("Ã©", "Ã©")  # a header's latin-1 text is never a secret
    assert not same_secret("", "")
    assert not same_secret(None, "admin-1")


# ---- mixer ----------------------------------------------------------------------------------
def _frame(value: float) -> np.ndarray:
    return np.full(960, value, dtype=np.float32)


def test_mix_minus_leaves_out_each_listeners_own_voice() -> None:
    mixer = RoomMixer()
    for pid in "abc":
        mixer.add(pid)
    mixer.push("a", _frame(0.1))
    mixer.push("b", _frame(0.2))
    out = mixer.tick()
    np.testing.assert_allclose(out["a"], 0.2, atol=1e-7)
    np.testing.assert_allclose(out["b"], 0.1, atol=1e-7)
    np.testing.assert_allclose(out["c"], 0.3, atol=1e-7)


def test_echo_participants_hear_themselves_too() -> None:
    mixer = RoomMixer()
    mixer.add("a", echo=True)
    mixer.push("a", _frame(0.25))
    np.testing.assert_allclose(mixer.tick()["a"], 0.25)


def test_a_speaker_whose_packets_stop_contributes_silence_not_stale_audio() -> None:
    mixer = RoomMixer()
    mixer.add("a")
    mixer.add("b")
    mixer.push("a", _frame(0.5))
    assert mixer.tick()["b"].max() == pytest.approx(0.5)
    assert not mixer.tick()["b"].any()


def test_a_speaker_fifo_is_bounded_and_drops_the_oldest() -> None:
    mixer = RoomMixer(buffer_frames=2)
    mixer.add("a")
    mixer.add("b")
    dropped = sum(mixer.push("a", _frame(v)) for v in (0.1, 0.2, 0.3, 0.4))
    assert dropped == 2
    assert mixer.tick()["b"][0] == pytest.approx(0.3)
    assert mixer.tick()["b"][0] == pytest.approx(0.4)


def test_a_standing_backlog_is_trimmed_after_a_while() -> None:
    from service.mixer import TRIM_AFTER_TICKS

    mixer = RoomMixer(buffer_frames=3)
    mixer.add("a")
    mixer.add("b")
    mixer.push("a", _frame(0.1))  # a burst leaves one frame waiting behind every tick's frame
    for _ in range(TRIM_AFTER_TICKS - 1):
        mixer.push("a", _frame(0.1))
        mixer.tick()
    assert mixer.trimmed_frames == 0
    mixer.push("a", _frame(0.1))
    mixer.tick()
    assert mixer.trimmed_frames == 1
    mixer.push("a", _frame(0.2))
    assert mixer.tick()["b"][0] == pytest.approx(0.2)  # the newest frame plays at once


def test_a_late_frame_still_plays_so_a_concealed_loss_is_heard() -> None:
    mixer = RoomMixer(buffer_frames=3)
    mixer.add("a")
    mixer.add("b")
    mixer.push("a", _frame(0.1))
    assert mixer.tick()["b"][0] == pytest.approx(0.1)
    assert not mixer.tick()["b"].any()  # frame 2 lost: its concealment comes with frame 3
    mixer.push("a", _frame(0.2))  # the concealment, late
    mixer.push("a", _frame(0.3))
    assert mixer.tick()["b"][0] == pytest.approx(0.2)  # heard, not dropped
    assert mixer.tick()["b"][0] == pytest.approx(0.3)
    assert mixer.trimmed_frames == 0


def test_a_backlog_sheds_the_frames_without_speech_as_they_come_due() -> None:
    mixer = RoomMixer(buffer_frames=3)
    mixer.add("a")
    mixer.add("b")
    mixer.push("a", _frame(0.1))  # a burst: two frames of speech stand in line
    mixer.push("a", _frame(0.2))
    assert mixer.tick()["b"][0] == pytest.approx(0.1)
    mixer.push("a", _frame(0.0), speaking=False)  # the talker pauses
    assert mixer.tick()["b"][0] == pytest.approx(0.2)  # speech is never shed
    mixer.push("a", _frame(0.0), speaking=False)
    assert not mixer.tick()["b"].any() and mixer.trimmed_frames == 1  # one pause frame shed
    mixer.push("a", _frame(0.3))
    assert mixer.tick()["b"][0] == pytest.approx(0.3)  # no backlog left: heard at once
    assert mixer.trimmed_frames == 1


def test_the_mix_is_clipped_and_frames_of_the_wrong_size_are_refused() -> None:
    mixer = RoomMixer()
    for pid in "abc":
        mixer.add(pid)
    mixer.push("a", _frame(0.9))
    mixer.push("b", _frame(0.9))
    assert mixer.tick()["c"].max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="960"):
        mixer.push("a", np.zeros(480, np.float32))
    assert mixer.push("nobody", _frame(0.1)) == 0


# ---- frames ---------------------------------------------------------------------------------
def test_stereo_s16_frames_average_to_mono_float() -> None:
    left = np.full(960, 16384, np.int16)
    right = np.zeros(960, np.int16)
    packed = np.stack([left, right], axis=1).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(packed, format="s16", layout="stereo")
    frame.sample_rate = 48000
    mono = frame_to_mono(frame)
    assert mono.dtype == np.float32 and mono.shape == (960,)
    np.testing.assert_allclose(mono, 0.25)


def test_planar_float_frames_and_the_way_back() -> None:
    planes = np.stack([np.full(960, 0.5, np.float32), np.full(960, -0.5, np.float32)])
    frame = av.AudioFrame.from_ndarray(planes, format="fltp", layout="stereo")
    frame.sample_rate = 48000
    np.testing.assert_allclose(frame_to_mono(frame), 0.0)
    samples = np.array([0.5, -2.0, np.nan, 1.0] * 240, np.float32)
    out = mono_to_frame(samples, pts=960)
    assert out.pts == 960 and out.sample_rate == 48000
    back = frame_to_mono(out)
    np.testing.assert_allclose(back[:4], [0.5, -1.0, 0.0, 1.0], atol=1e-4)


def test_frames_at_other_rates_are_refused() -> None:
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 320), np.int16), format="s16", layout="mono")
    frame.sample_rate = 16000
    with pytest.raises(ValueError, match="48000"):
        frame_to_mono(frame)


# ---- speaker pipeline -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def runtime() -> ModelRuntime:
    if not DEFAULT_MODEL.exists():
        pytest.skip("no shipped model under model/weights")
    return ModelRuntime(DEFAULT_MODEL)


def test_pipeline_keeps_length_for_any_packet_size(runtime: ModelRuntime) -> None:
    pipeline = SpeakerPipeline(runtime, EnhancementSettings())
    rng = np.random.default_rng(1)
    total_in = total_out = 0
    for size in (960, 480, 1440, 960, 2880, 100, 860):
        samples = (0.05 * rng.standard_normal(size)).astype(np.float32)
        result = pipeline.process(samples)
        assert result.samples.shape == (size,) and np.isfinite(result.samples).all()
        total_in += size
        total_out += result.samples.shape[0]
    assert total_in == total_out


def test_settings_take_effect_on_the_next_frame(runtime: ModelRuntime) -> None:
    pipeline = SpeakerPipeline(runtime, EnhancementSettings())
    noise = (0.1 * np.random.default_rng(2).standard_normal(960 * 20)).astype(np.float32)
    frames = noise.reshape(20, 960)
    for frame in frames[:10]:
        assert pipeline.process(frame).enhanced
    pipeline.settings = pipeline.settings.updated(enhance=False)
    off = pipeline.process(frames[10])
    assert not off.enhanced
    np.testing.assert_array_equal(off.samples, frames[10])
    pipeline.settings = pipeline.settings.updated(enhance=True, attenuation_limit_db=6.0)
    for frame in frames[11:]:
        limited = pipeline.process(frame)
    assert pipeline.enhancer.attenuation_limit_db == pytest.approx(6.0)
    # with at most 6 dB of attenuation, white noise keeps at least half its amplitude
    rms_in, rms_out = np.sqrt(np.mean(frames[-1] ** 2)), np.sqrt(np.mean(limited.samples**2))
    assert rms_out >= 0.4 * rms_in


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="attenuation"):
        EnhancementSettings(attenuation_limit_db=-3.0)
    with pytest.raises(ValueError, match="attenuation"):
        EnhancementSettings().updated(attenuation_limit_db=float("nan"))


# ---- settings -------------------------------------------------------------------------------
def test_settings_come_from_pnr_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PNR_PORT", "9000")
    monkeypatch.setenv("PNR_ICE_HOST_ADDRESSES", "127.0.0.1, ::1")
    monkeypatch.setenv(
        "PNR_ICE_SERVERS",
        '[{"urls": "turn:turn.example:3478", "username": "u", "credential": "p"}]',
    )
    monkeypatch.setenv("PNR_TOKEN_SECRET", "hunter2-token")
    settings = Settings()
    assert settings.port == 9000
    assert settings.ice_host_addresses == ["127.0.0.1", "::1"]
    assert settings.ice_servers[0].urls == "turn:turn.example:3478"
    assert settings.token_secret is not None
    assert "hunter2" not in repr(settings) and "'p'" not in repr(settings)


@pytest.mark.parametrize("variable", ["PNR_TOKEN_SECRET", "PNR_ADMIN_TOKEN", "pnr_token_secret"])
def test_an_empty_secret_variable_is_a_start_up_error(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, "")
    with pytest.raises(ValueError, match=f"{variable.upper()} is set but empty"):
        Settings()


@pytest.mark.parametrize("field", ["token_secret", "admin_token"])
@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_secret_value_is_refused(field: str, value: str) -> None:
    with pytest.raises(ValueError, match="empty secret"):
        Settings(**{field: value})  # type: ignore[arg-type]


def test_other_empty_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PNR_PORT", "")
    monkeypatch.setenv("PNR_CORS_ORIGINS", "")
    monkeypatch.setenv("PNR_MODEL_PATH", "")
    settings = Settings()
    assert settings.port == 8080 and settings.cors_origins == []
    assert settings.model_path == DEFAULT_MODEL


def test_serve_stops_at_once_on_an_empty_token_secret(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli import main

    monkeypatch.setenv("PNR_TOKEN_SECRET", "")
    for argv in (["serve", "--port", "0"], ["token", "lobby"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert "PNR_TOKEN_SECRET is set but empty" in err


def test_invalid_settings_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PNR_WORKER_THREADS", "-1")
    with pytest.raises(ValueError, match="worker_threads"):
        Settings()


@pytest.mark.parametrize("name", ["", "a\n", "a b", "../x", "x" * 65, "é"])
def test_room_names_outside_the_alphabet_are_refused(name: str) -> None:
    from service.relay import check_room_name

    with pytest.raises(RelayError) as caught:
        check_room_name(name)
    assert caught.value.reason == "invalid_room"
    check_room_name("team-42_x.y")


def test_the_outgoing_track_hands_aiortc_opus_packets_on_a_continuous_timeline() -> None:
    import asyncio

    from service.mix_encoding import MixEncoders
    from service.opus import OpusSettings
    from service.tracks import MixedAudioTrack

    encoders = MixEncoders(OpusSettings())

    async def run() -> list[av.Packet]:
        track = MixedAudioTrack()
        for value in (0.0, 0.1, np.nan, 2.0):
            mix = np.full(960, value, np.float32)
            track.put(encoders.encode({frozenset({"a"}): mix})[frozenset({"a"})])
        packets = [await track.recv() for _ in range(3)]
        track.stop()
        return packets

    packets = asyncio.run(run())
    assert all(isinstance(p, av.Packet) and bytes(p) for p in packets)
    first_pts = packets[0].pts
    assert first_pts is not None
    assert [p.pts for p in packets][1:] == [first_pts + 960, first_pts + 1920]
    decoder = av.CodecContext.create("libopus", "r")
    decoded = [f for p in packets for f in decoder.decode(p)]
    assert decoded and all(f.sample_rate == 48000 for f in decoded)


@pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model")
@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_test_relay_runs_on_the_configured_event_loop(loop: str) -> None:
    with running_relay(event_loop=loop) as relay:
        assert relay.loop is not None
        assert type(relay.loop).__module__.split(".")[0] == loop


def test_uvloop_asked_for_where_it_is_missing_is_a_settings_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a)
    )
    with pytest.raises(ValueError, match="uvloop is not installed"):
        Settings(event_loop="uvloop")
    assert Settings(event_loop="auto").event_loop == "auto"


@pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model")
def test_start_up_objects_are_out_of_the_collectors_reach() -> None:
    # a full collection holds the GIL: it must not walk the modules, model and kernels
    made_before_start = [object()]

    async def start_and_close() -> None:
        relay = Relay(Settings(), ModelRuntime())
        await relay.start()
        assert relay.ready
        await relay.close()

    asyncio.run(start_and_close())
    assert all(o is not made_before_start for o in gc.get_objects())


@pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model")
@pytest.mark.parametrize(("two_hops", "calls"), [(True, "two hops"), (False, "one hop")])
def test_the_two_hop_setting_decides_how_a_packet_reaches_the_model(
    two_hops: bool, calls: str
) -> None:
    async def start_and_close() -> Relay:
        relay = Relay(Settings(two_hop_model=two_hops))
        await relay.start()
        await relay.close()
        return relay

    relay = asyncio.run(start_and_close())
    assert relay.runtime is not None
    assert (relay.runtime.two_hop_session is not None) is two_hops
    labels = {"model": DEFAULT_MODEL.name, "model_calls": calls}
    assert relay.metrics.registry.get_sample_value("pnr_build_info", labels) == 1.0

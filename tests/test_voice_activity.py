"""Voice activity from the gains: the kept-to-noise ratio per hop and the rule's hysteresis."""

from __future__ import annotations

import math

import numpy as np
import pytest
from signals import harmonic_tone, pink_noise

from dsp.constants import NUM_BANDS
from dsp.speech_presence import FLOOR_DB, NOISE_SMOOTHING, kept_to_noise_db, new_tracker
from model.runtime import DEFAULT_MODEL, ModelRuntime
from service.audio_frames import FRAME_SAMPLES
from service.speaker import EnhancementSettings, SpeakerPipeline
from service.voice_activity import (
    BRIEF_HOLD_FRAMES,
    CONFIRM_DB,
    CONFIRM_FRAMES,
    HOLD_FRAMES,
    START_DB,
    START_GAIN,
    STAY_DB,
    STAY_GAIN,
    WARM_UP_FRAMES,
    VoiceActivity,
)

LOUD = np.full(FRAME_SAMPLES, 0.1, np.float32)  # -20 dBFS
INAUDIBLE = np.full(FRAME_SAMPLES, 1e-4, np.float32)  # -80 dBFS


def test_the_ratio_sets_kept_energy_against_the_mean_removed_energy() -> None:
    energy, tracker = np.ones(NUM_BANDS), new_tracker()
    half = np.full(NUM_BANDS, 0.5, np.float32)  # keeps a quarter of the energy
    assert kept_to_noise_db(half, energy, tracker) == pytest.approx(10 * math.log10(1 / 3))
    assert kept_to_noise_db(np.zeros(NUM_BANDS), energy, tracker) == FLOOR_DB
    mean_removed = NOISE_SMOOTHING * 0.75 * NUM_BANDS + (1 - NOISE_SMOOTHING) * NUM_BANDS
    assert tracker[0] == pytest.approx(mean_removed)
    for _ in range(2000):  # steady noise, all removed: the mean converges to it
        kept_to_noise_db(np.zeros(NUM_BANDS), 4 * energy, tracker)
    assert tracker[0] == pytest.approx(4 * NUM_BANDS, rel=1e-6)
    speech = np.full(NUM_BANDS, 0.9, np.float32)  # 20 dB over the noise, 81 % of it kept
    expected = 10 * math.log10(81 / (NOISE_SMOOTHING * 4 + (1 - NOISE_SMOOTHING) * 19))
    assert kept_to_noise_db(speech, 100 * energy, tracker) == pytest.approx(expected, abs=1e-5)


def test_the_ratio_reads_gains_as_the_synthesis_does() -> None:
    energy = np.ones(NUM_BANDS)
    wild = np.full(NUM_BANDS, np.nan, np.float32)  # a non-finite gain passes its band
    wild[:17] = 7.0  # clamped to 1
    tracker = new_tracker()
    assert kept_to_noise_db(wild, energy, tracker) > 100.0  # keeps all, removed nothing
    assert tracker[0] == 0.0


NOISE = (START_DB - 20, 0.05)  # (kept-to-noise dB, mean gain) of noise the model removes


def _run(voice: VoiceActivity, evidence: list[tuple[float, float]]) -> list[bool]:
    return [voice.update(LOUD, gain, kept_db) for kept_db, gain in evidence]


def _settled() -> VoiceActivity:
    """A speaker past the warm-up, not speaking."""
    voice = VoiceActivity(0.1)
    assert not any(_run(voice, [NOISE] * WARM_UP_FRAMES))
    return voice


def test_until_the_noise_mean_settles_the_gains_also_start_speech() -> None:
    onset = (START_DB - 10, 0.2)  # a word the noise in other bands masks: the gains see it
    assert _run(VoiceActivity(0.1), [NOISE, onset]) == [False, True]
    assert _run(_settled(), [onset]) == [False]
    assert _run(_settled(), [(START_DB - 10, START_GAIN + 0.01)]) == [True]
    resumed = _settled()  # enhancement off for a while, then on: the noise mean starts over
    assert not resumed.update(np.zeros(FRAME_SAMPLES, np.float32), None, None)
    assert _run(resumed, [onset]) == [True]


def test_a_burst_the_model_kept_costs_a_brief_hold_and_speech_the_full_hangover() -> None:
    noise, burst = NOISE, (START_DB + 1, 0.1)  # burst: under CONFIRM_DB
    held = _run(_settled(), [noise, burst, *[noise] * 10])
    assert held == [False, True, *[True] * BRIEF_HOLD_FRAMES, *[False] * (10 - BRIEF_HOLD_FRAMES)]
    word = (CONFIRM_DB + 1, 0.6)
    held = _run(_settled(), [*[word] * CONFIRM_FRAMES, *[noise] * (HOLD_FRAMES + 1)])
    assert held == [True] * (CONFIRM_FRAMES + HOLD_FRAMES) + [False]
    # one word frame short of confirmation: still a brief hold
    held = _run(_settled(), [*[word] * (CONFIRM_FRAMES - 1), *[noise] * 5])
    assert held[CONFIRM_FRAMES - 1 + BRIEF_HOLD_FRAMES :] == [False] * (5 - BRIEF_HOLD_FRAMES)


def test_weaker_frames_keep_speech_going_but_do_not_start_it() -> None:
    weak, soft_gain = (STAY_DB + 1, 0.05), (STAY_DB - 10, STAY_GAIN + 0.05)
    assert _run(_settled(), [weak, soft_gain]) == [False, False]
    word = (CONFIRM_DB + 1, 0.6)
    gap = [weak, soft_gain] * (HOLD_FRAMES + 5)  # longer than any hangover: kept by the rule
    assert all(_run(_settled(), [*[word] * CONFIRM_FRAMES, *gap]))
    # below both: only the hangover holds it
    held = _run(_settled(), [word, *[(STAY_DB - 1, STAY_GAIN - 0.01)] * (BRIEF_HOLD_FRAMES + 1)])
    assert held == [True] * (1 + BRIEF_HOLD_FRAMES) + [False]


def test_inaudible_frames_never_start_speech_and_threshold_0_mixes_everything() -> None:
    voice = VoiceActivity(0.1)
    assert not voice.update(INAUDIBLE, 0.97, 30.0)  # kept digital hiss, a muted microphone
    assert voice.evidence(-80.0, 0.97, 30.0) == (False, False)
    assert VoiceActivity(0.0).update(INAUDIBLE, 0.0, FLOOR_DB)
    assert voice.update(LOUD, None, None)  # not enhanced: loud enough is speech
    gain_rule = VoiceActivity(0.1, rule="gain")
    assert not gain_rule.update(LOUD, 0.05, START_DB + 30)  # the gain rule ignores the ratio
    assert gain_rule.update(LOUD, 0.2, FLOOR_DB)


def test_the_pipeline_scores_a_voiced_burst_over_noise_and_the_rule_follows_it() -> None:
    seconds = 4.5  # 2 s of noise after the burst: its hangover, then what the rule does
    noise = 0.01 * pink_noise(seconds, seed=2)  # -40 dBFS
    burst = np.zeros_like(noise)
    on, off = int(1.5 * 48_000), int(2.5 * 48_000)
    burst[on:off] = harmonic_tone(np.linspace(140, 180, off - on), 1.0, seed=3)  # -17 dBFS
    pipeline = SpeakerPipeline(ModelRuntime(DEFAULT_MODEL), EnhancementSettings())
    voice = VoiceActivity(0.1)
    kept, speaking = [], []
    for frame in (noise + burst).astype(np.float32).reshape(-1, FRAME_SAMPLES):
        result = pipeline.process(frame)
        assert result.kept_to_noise_db is not None
        kept.append(result.kept_to_noise_db)
        speaking.append(
            voice.update(result.samples, result.speech_probability, result.kept_to_noise_db)
        )
    first = on // FRAME_SAMPLES + 2  # the output runs 30 ms behind
    last = off // FRAME_SAMPLES
    assert np.median(kept[first:last]) > CONFIRM_DB + 10
    settled = 40  # the noise mean takes a few hundred ms to settle after the start
    # The noise alone, which the model removes: its typical frame stays below the ratio that
    # starts speech (how often the rule still counts such noise: the test below).
    assert np.median(kept[settled : first - 3]) < START_DB
    assert all(speaking[first:last])
    # After the burst's hangover the flag is off for most of the noise that follows (it still
    # starts now and then for a brief hold on this quiet pink noise: the test below).
    after = speaking[last + HOLD_FRAMES + 3 :]
    assert len(after) > 60 and sum(after) < len(after) / 2


def test_quiet_stationary_noise_alone_counts_as_speech_in_at_most_three_fourths_of_frames() -> None:
    """A rule with fixed ratios starts too easily on quiet stationary noise, and how often
    varies with the weights: once a frame starts speech, the noise's louder frames keep it
    going, so one stream is counted almost wholly or in part by chance. Over eight 12-s streams
    of −40 dBFS pink noise (docs/performance.md's measure) the shipped weights (the 256-unit
    network fine-tuned with the log-mel term) count 60 % of frames, the distilled weights before
    them 84 %, the 384-unit ones 74 % (−50 dBFS: 78, 94 and 87 %; −30 dBFS: 3.5, 6 and 7 %); on
    the relay's real noises alone the share is about a seventh (0.145, 0.151 and 0.142,
    ``loadtest.voice_activity_rates --per-snr 12 --seed 1``). The bound: three quarters.
    Re-measure and re-pin when the shipped model changes."""
    shares = []
    for seed in range(20, 28):
        noise = (0.01 * pink_noise(12.0, seed=seed)).astype(np.float32)
        pipeline = SpeakerPipeline(ModelRuntime(DEFAULT_MODEL), EnhancementSettings())
        voice = VoiceActivity(0.1)
        speaking = [
            voice.update(result.samples, result.speech_probability, result.kept_to_noise_db)
            for result in map(pipeline.process, noise.reshape(-1, FRAME_SAMPLES))
        ]
        shares.append(np.mean(speaking))
    assert np.mean(shares) <= 0.75

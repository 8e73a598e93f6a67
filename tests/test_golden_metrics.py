"""Golden metrics: the shipped int8 model, through the ``denoise`` command, must keep improving
a generated speech-like mixture by a pinned margin. A regression anywhere in the DSP, the
export, the quantisation or the file path fails here. Margins are pinned a little below what
the shipped model measured (see the constants) so that noise in the metrics does not flake."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from signals import SAMPLE_RATE, pink_noise, speech_like

from model.evaluate import pesq_wb, si_sdr
from model.runtime import DEFAULT_MODEL
from service.cli import main

SNR_DB = 5.0
# The shipped model (the 256-unit network distilled from the 384-unit weights, fine-tuned on its
# own output audio with a log-mel term, its comb strengths calibrated × 1.5; uncalibrated it
# measured +0.497 and +5.74 dB, the distilled weights +0.502 and +5.40 dB, the 384-unit ones
# +0.473 and +5.21 dB) measured +0.512 PESQ-WB and +5.79 dB SI-SDR on this
# mixture with 7-bit activation codes (the run is deterministic where the CPU sums the integer
# products exactly, which 7-bit codes make every x86 CPU do: model/quantise.py); the pins leave
# room for other CPUs' and onnxruntime builds' rounding only. Re-measure and re-pin when the
# shipped model changes.
PINNED_PESQ_GAIN = 0.47
PINNED_SI_SDR_GAIN_DB = 5.3


@pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="no shipped model under model/weights")
def test_denoise_improves_a_generated_mixture_by_the_pinned_margin(tmp_path: Path) -> None:
    clean = speech_like(4.0, seed=3)
    noise = pink_noise(4.0, seed=4)
    noisy = clean + noise * np.sqrt(np.mean(clean**2) / 10 ** (SNR_DB / 10))
    sf.write(tmp_path / "noisy.wav", noisy, SAMPLE_RATE, subtype="FLOAT")
    assert main(["denoise", str(tmp_path / "noisy.wav"), "-o", str(tmp_path / "out.wav")]) == 0
    enhanced, rate = sf.read(tmp_path / "out.wav")
    assert rate == SAMPLE_RATE and enhanced.shape == noisy.shape
    pesq_gain = pesq_wb(clean, enhanced) - pesq_wb(clean, noisy)
    sdr_gain = si_sdr(clean, enhanced) - si_sdr(clean, noisy)
    print(f"\ngolden: PESQ-WB +{pesq_gain:.3f}, SI-SDR +{sdr_gain:.2f} dB")
    assert pesq_gain >= PINNED_PESQ_GAIN
    assert sdr_gain >= PINNED_SI_SDR_GAIN_DB

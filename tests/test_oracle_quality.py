"""With oracle gains and strengths the chain must beat the noisy input by a wide margin; this
is the ceiling the network chases. Also reports the comb-filter and postfilter ablation.

Speech: three RAVDESS utterances by three actors (fullband). Noise: every 48 kHz recording of
at least 3 s in ../shared/data for the quality floor; an equal-energy blend of restaurant
babble, train interior and waterfall for the ablation."""

from __future__ import annotations

import numpy as np
import pytest
from shared_data import fullband_noises, looped, mix_at_snr, speech_and_noise

from dsp.enhancer import ReplayGains
from dsp.offline import compute_oracle_targets, enhance_signal, enhance_with_oracle
from model.evaluate import pesq_wb, si_sdr

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def speech_noise(shared_data_dir):
    return speech_and_noise(shared_data_dir)


@pytest.mark.parametrize("snr_db", [0.0, 10.0])
def test_oracle_improves_pesq_and_si_sdr(shared_data_dir, snr_db: float) -> None:
    """Over every fullband noise recording (≥ 3 s): mean gains of at least +0.8 PESQ-WB and
    +8 dB SI-SDR, and no single noise below +0.8 PESQ or +5 dB SI-SDR (babble-like noises
    share the speech's bands, so band gains help least there)."""
    clean, _ = speech_and_noise(shared_data_dir)
    pesq_gains, sdr_gains = [], []
    print(f"\noracle at {snr_db:+.0f} dB SNR: noise, PESQ-WB gain, SI-SDR gain")
    for name, noise in fullband_noises(shared_data_dir):
        noisy = mix_at_snr(clean, looped(noise, clean.shape[0]), snr_db)
        enhanced = enhance_with_oracle(noisy, clean).astype(np.float64)
        pesq_gains.append(pesq_wb(clean, enhanced) - pesq_wb(clean, noisy))
        sdr_gains.append(si_sdr(clean, enhanced) - si_sdr(clean, noisy))
        print(f"  {name:32} +{pesq_gains[-1]:.2f}  +{sdr_gains[-1]:.1f} dB")
    print(
        f"  mean over {len(sdr_gains)} noises: +{np.mean(pesq_gains):.2f} PESQ-WB, "
        f"+{np.mean(sdr_gains):.1f} dB SI-SDR"
    )
    assert len(sdr_gains) >= 5
    assert np.mean(pesq_gains) >= 0.8 and np.mean(sdr_gains) >= 8.0
    assert min(pesq_gains) >= 0.8 and min(sdr_gains) >= 5.0


def test_comb_filter_and_postfilter_each_help(speech_noise) -> None:
    """Comb: judged with exact oracle targets. Postfilter: its job is to deepen bands a network
    under-suppresses, so it is judged on oracle gains compressed to g**0.5 (a stand-in for an
    estimator's typical error); on exact oracle gains it is reported, not asserted."""
    clean, noise = speech_noise
    print("\nsnr  gains        comb  postfilter  PESQ-WB  SI-SDR")
    for snr_db in (0.0, 10.0):
        noisy = mix_at_snr(clean, noise, snr_db)
        targets = compute_oracle_targets(noisy, clean)
        scores = {}
        for label, gains in (("oracle", targets.gains), ("oracle**0.5", np.sqrt(targets.gains))):
            for comb, postfilter in ((True, True), (False, True), (True, False)):
                strengths = targets.strengths if comb else np.zeros_like(targets.strengths)
                out = enhance_signal(noisy, ReplayGains(gains, strengths), postfilter=postfilter)
                out = out.astype(np.float64)
                key = (label, comb, postfilter)
                scores[key] = (pesq_wb(clean, out), si_sdr(clean, out))
                print(
                    f"{snr_db:+4.0f}  {label:12} {comb!s:5} {postfilter!s:10}  "
                    f"{scores[key][0]:7.2f}  {scores[key][1]:6.1f}"
                )
        full, no_comb = scores[("oracle", True, True)], scores[("oracle", False, True)]
        assert full[0] > no_comb[0] + 0.05 and full[1] > no_comb[1]
        with_pf = scores[("oracle**0.5", True, True)]
        without_pf = scores[("oracle**0.5", True, False)]
        assert with_pf[0] > without_pf[0] + 0.1 and with_pf[1] > without_pf[1]

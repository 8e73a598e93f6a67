"""The model card: what it says of the training (data, licences, loss) comes from the training
record of the very weights beside it, the acceptance checks and the gap to DeepFilterNet3 from
the evaluation, and nothing on the shipped path imports the DNSMOS fine-tune."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from model.model_card import (
    DEV_HEADING,
    _gap_table,
    _init_note,
    _license_section,
    _loss_note,
    _option_flags,
    _predictor_sentence,
    _shipped_epoch_label,
    _verdict,
)
from model.training_record import best_epoch

ROOT = Path(__file__).resolve().parents[1]


def _row(system: str, snr_db: float | None, pesq: float, cpu: float = 100.0) -> dict:
    return {
        "system": system,
        "snr_db": snr_db,
        "pesq_wb": pesq,
        "stoi": 0.8,
        "si_sdr_db": 9.0,
        "dnsmos_p808": None if system == "rnnoise" else 3.0,
        "dnsmos_ovrl": 2.6,
        "cpu_us_per_hop": cpu,
    }


def _write_results(eval_dir: Path) -> None:
    summary = [
        _row("rnnoise", 0.0, 1.5, 400.0),
        _row("percepnet_int8", 0.0, 1.4, 150.0),
        _row("deepfilternet3", 0.0, 1.9),
        _row("rnnoise", None, 1.7, 400.0),
        _row("percepnet_int8", None, 2.0, 150.0),
        _row("deepfilternet3", None, 2.3),
    ]
    (eval_dir / "results.json").write_text(json.dumps({"summary": summary}))


def test_the_verdict_has_the_issues_checks(tmp_path: Path) -> None:
    _write_results(tmp_path)
    lines = _verdict(tmp_path).splitlines()
    assert "| PESQ-WB ≥ RNNoise + 0.25 | 2.000 | 1.950 | yes |" in lines
    assert "| PESQ-WB ≥ RNNoise at +0 dB | 1.400 | 1.500 | **no** |" in lines
    assert "| DNSMOS P.808 ≥ RNNoise | 3.000 | n/a | **no** |" in lines  # unknown is not met
    assert "| CPU µs / 10 ms (DSP + int8 model) ≤ 0.5 × RNNoise's | 150 | 200 | yes |" in lines


def _bench(int8: Path, enhancer_us: float, rnnoise_us: float, step_us: float) -> dict:
    """A ``loadtest.bench_dsp`` result with these medians, its targets checked as it checks them."""
    from loadtest.bench_dsp import cpu_targets
    from model.runtime import sha256_of

    bench = {
        "model_sha256": sha256_of(int8),
        "enhancer": {"median_us": enhancer_us},
        "rnnoise": {"median_us": rnnoise_us},
        "model_int8": {"median_us": step_us},
        "enhancer_ratio_median": enhancer_us / rnnoise_us,
    }
    return bench | {"targets": cpu_targets(bench)}


def test_the_cpu_checks_come_from_the_benchmark_when_given(tmp_path: Path) -> None:
    _write_results(tmp_path)
    int8 = tmp_path / "model.onnx"
    int8.write_bytes(b"weights")
    lines = _verdict(tmp_path, _bench(int8, 90.0, 200.0, 160.0)).splitlines()
    assert (
        "| (DSP + int8 model) / RNNoise ≤ 0.5, one hop a call (`loadtest.bench_dsp`, medians) "
        "| 0.450 (90.0 µs) "
        "| RNNoise 200.0 µs | yes |"
    ) in lines
    assert (
        "| int8 step at batch 1 ≤ 150 µs per hop, one hop a call (`loadtest.bench_dsp`, medians) "
        "| 160.0 µs |  | **no** |" in lines
    )
    assert not any(line.startswith("| CPU µs / 10 ms") for line in lines)  # not the eval's
    assert lines[-1].endswith(
        "150 µs against RNNoise's 400 (0.38 ×); per hop, as the issue measures it, 0.450 × one "
        "hop a call."
    )


def test_the_cpu_checks_name_the_machine_the_benchmark_ran_on(tmp_path: Path) -> None:
    _write_results(tmp_path)
    int8 = tmp_path / "model.onnx"
    int8.write_bytes(b"weights")
    bench = _bench(int8, 90.0, 200.0, 160.0)
    bench["platform"] = {"cpu": "AMD EPYC", "cpu_count": 2, "int8_instructions": ["avx2"]}
    assert _verdict(tmp_path, bench).endswith(
        "0.450 × one hop a call (timed on AMD EPYC, 2 logical CPUs; int8 instructions: avx2)."
    )
    bench["platform"]["int8_instructions"] = []
    assert _verdict(tmp_path, bench).endswith("; int8 instructions: none).")
    bench["platform"]["l2_cache_kib"] = 2048
    assert _verdict(tmp_path, bench).endswith("; int8 instructions: none; L2 cache 2,048 KiB).")
    del bench["platform"]["int8_instructions"], bench["platform"]["l2_cache_kib"]  # older results
    assert _verdict(tmp_path, bench).endswith(
        "0.450 × one hop a call (timed on AMD EPYC, 2 logical CPUs)."
    )


def test_the_cpu_checks_give_two_hops_a_call_where_the_benchmark_timed_them(
    tmp_path: Path,
) -> None:
    from loadtest.bench_dsp import cpu_targets

    _write_results(tmp_path)
    int8 = tmp_path / "model.onnx"
    int8.write_bytes(b"weights")
    bench = _bench(int8, 90.0, 200.0, 160.0)
    bench |= {
        "enhancer_two_hop": {"median_us": 80.0},
        "model_int8_two_hop": {"median_us": 140.0},
        "enhancer_two_hop_ratio_median": 0.4,
    }
    bench["targets"] = cpu_targets(bench)
    verdict = _verdict(tmp_path, bench)
    lines = verdict.splitlines()
    assert (
        "| (DSP + int8 model) / RNNoise ≤ 0.5, two hops a call (`loadtest.bench_dsp`, medians) "
        "| 0.400 (80.0 µs) | RNNoise 200.0 µs | yes |"
    ) in lines
    assert (
        "| int8 step at batch 1 ≤ 150 µs per hop, two hops a call (`loadtest.bench_dsp`, "
        "medians) | 140.0 µs |  | yes |"
    ) in lines
    assert verdict.endswith(
        "0.450 × one hop a call, and 0.400 × with a 20 ms packet's two hops in one call (the "
        "two-hop graph, as the relay runs it)."
    )


def test_the_card_refuses_a_benchmark_it_cannot_use(tmp_path: Path) -> None:
    from model.export import INT8_NAME
    from model.model_card import main, read_bench

    int8 = tmp_path / INT8_NAME
    int8.write_bytes(b"weights")
    path = tmp_path / "bench.json"
    with pytest.raises(ValueError, match="cannot read the benchmark"):
        read_bench(path, int8)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read the benchmark"):
        read_bench(path, int8)
    path.write_text(json.dumps({"enhancer": {"median_us": 1.0}}))  # run without pyrnnoise
    with pytest.raises(ValueError, match="holds no whole-enhancer, RNNoise and int8-step"):
        read_bench(path, int8)
    bench = _bench(int8, 90.0, 200.0, 120.0)
    path.write_text(json.dumps(bench))
    assert read_bench(path, int8) == bench
    int8.write_bytes(b"other weights")
    with pytest.raises(ValueError, match="timed other weights"):
        read_bench(path, int8)
    with pytest.raises(SystemExit, match="^error: .*timed other weights"):
        main(["--eval", str(tmp_path), "--out", str(tmp_path), "--bench", str(path)])


def test_the_gap_to_deepfilternet3_per_snr_and_overall(tmp_path: Path) -> None:
    _write_results(tmp_path)
    lines = _gap_table(tmp_path, "deepfilternet3").splitlines()
    assert lines[2].startswith("| +0 | -0.50 | +0.000 | +0.0 | +0.00 | +0.00 |")
    assert lines[3].startswith("| all | -0.30 |")
    assert "lacks" in _gap_table(tmp_path, "nobody")


def _record(licenses: list[dict], predictors: list[str] | None, parent=...) -> dict:
    """A training record with the fields the card's data and loss sentences read."""
    record: dict = {
        "data": {"licenses": licenses},
        "loss": None
        if predictors is None
        else {"targets": "oracle targets", "terms": ["a term"], "quality_predictors": predictors},
        "init_from": None,
    }
    if parent is not ...:
        record["init_from"] = {
            "path": "/somewhere/parent.onnx",
            "sha256": "ab" * 32,
            "record": parent,
        }
    return record


def _licence(corpus: str, license_: str, minutes: float) -> dict:
    return {"kind": "noise", "corpus": corpus, "license": license_, "minutes": minutes}


def test_the_card_states_the_licences_and_loss_of_the_weights_whole_lineage() -> None:
    parent = _record([_licence("urbansound8k", "CC BY-NC 3.0", 70.0)], ["DNSMOS P.835 OVRL"])
    child = _record(
        [_licence("sonicpi", "CC0 1.0", 3.0), _licence("esc50", "CC BY-NC 3.0", 1.0)], [], parent
    )
    licences = _license_section(child)
    own, before = licences.split("Before that, the weights fine-tuned from were trained on:")
    assert "| noise | sonicpi | CC0 1.0 | 3.0 |" in own
    assert "| noise | urbansound8k | CC BY-NC 3.0 | 70.0 |" in before  # the parent's data
    assert licences.startswith(
        "Non-commercial data (esc50: CC BY-NC 3.0; urbansound8k: CC BY-NC 3.0)"
    )
    assert "DNSMOS P.835 OVRL was in these weights' loss" in _predictor_sentence(child)
    assert "A quality-predictor network was in the loss: DNSMOS P.835 OVRL" in _loss_note(child)
    clean = _record([_licence("sonicpi", "CC0 1.0", 3.0)], [])
    assert _license_section(clean).startswith("No file is under a non-commercial licence.")
    assert "no quality-predictor network" in _predictor_sentence(clean)
    assert "fine-tuned from" not in _predictor_sentence(clean)
    assert "No quality-predictor network" in _loss_note(clean)


def test_a_run_on_the_same_data_as_the_one_before_it_gets_no_second_table() -> None:
    data = [_licence("sonicpi", "CC0 1.0", 3.0)]
    grandparent = _record([_licence("esc50", "CC BY-NC 3.0", 1.0)], [])
    child = _record(list(data), [], _record(list(data), [], grandparent))
    licences = _license_section(child)
    assert licences.count("| noise | sonicpi | CC0 1.0 | 3.0 |") == 1
    assert "Before that, 1 more run of the weights' lineage, on the same data." in licences
    own, before = licences.split("Before that, the weights fine-tuned from were trained on:")
    assert "the same data" in own  # said before the next table
    assert "| noise | esc50 | CC BY-NC 3.0 | 1.0 |" in before  # different data: its own table


def test_the_card_says_what_a_record_does_not_know() -> None:
    orphan = _record([_licence("sonicpi", "CC0 1.0", 3.0)], [], parent=None)
    assert "licences of their data are unknown" in _license_section(orphan)
    assert "does not say what every run" in _predictor_sentence(orphan)
    assert "an earlier run's is unknown" in _loss_note(orphan)
    assert "recorded no description of its loss" in _loss_note(_record([], None))


def _export_tiny_network(folder: Path, seed: int) -> None:
    import torch

    from model.export import FP32_NAME, export_fp32
    from model.network import NetworkConfig, PercepNet

    torch.manual_seed(seed)
    folder.mkdir(exist_ok=True)
    export_fp32(PercepNet(NetworkConfig(gru_size=8, gru_layers=1)).eval(), folder / FP32_NAME)


def test_the_card_refuses_weights_without_their_own_record(tmp_path: Path) -> None:
    from model.model_card import main
    from model.training_record import read_record, weights_identity, write_record

    _export_tiny_network(tmp_path, seed=0)
    with pytest.raises(ValueError, match="is missing"):
        read_record(tmp_path)
    with pytest.raises(SystemExit, match="^error: .*training_record.json is missing"):
        main(["--eval", str(tmp_path / "no-eval"), "--out", str(tmp_path)])
    write_record({"weights": weights_identity(tmp_path), "options": {}}, tmp_path)
    assert read_record(tmp_path)["options"] == {}
    _export_tiny_network(tmp_path, seed=1)  # other weights, the old record left beside them
    with pytest.raises(ValueError, match="describes other weights"):
        read_record(tmp_path)


SHIPPED = ROOT / "model" / "weights"


def test_the_shipped_card_says_what_the_shipped_weights_record_says() -> None:
    from model.model_card import _ancestry_note, _license_section, _training_section
    from model.training_record import read_record

    record = read_record(SHIPPED)  # describes the shipped weights
    card = (SHIPPED / "MODEL_CARD.md").read_text()
    training = card.split("## Training\n", 1)[1].split(DEV_HEADING, 1)[0]
    assert training == (
        f"{_training_section(record)}{_ancestry_note(record)}\n"
        "## Licenses of the training data\n"
        f"{_license_section(record)}\n"
    )
    assert _predictor_sentence(record) in card


def test_the_shipped_records_licences_are_those_of_its_files() -> None:
    from shared_data import find_shared_data

    from model.splits import Split, read_manifest
    from model.training_record import data_record, read_record

    data_dir = find_shared_data()
    if data_dir is None:
        pytest.skip("needs the shared data's manifest")
    data = read_record(SHIPPED)["data"]
    by_path = {f.relative_path: f for f in read_manifest(data_dir)}
    files = Split(
        *(tuple(by_path[p] for p in data["files"][role]) for role in ("speech", "noise", "rooms"))
    )
    recomputed = data_record(files)
    assert recomputed["licenses"] == data["licenses"]
    assert recomputed["speakers"] == data["speakers"]


@pytest.mark.slow
def test_nothing_on_the_shipped_path_imports_the_research_tools() -> None:
    shipped = (
        "service.cli, service.app, model.runtime, model.train, model.audio_finetune, "
        "model.export, model.model_card"
    )
    code = (
        f"import sys, {shipped}, model.evaluate\n"
        "bad = [m for m in sys.modules if m.startswith('model.research')]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def test_a_checkpoint_from_before_records_gets_its_files_and_loss_at_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from model import training_record
    from model.splits import AudioFile, Split
    from model.train import loss_record, parse_args

    weights = tmp_path / "weights"
    _export_tiny_network(weights, seed=0)
    speech = AudioFile(tmp_path / "a.flac", "clean/c/a.flac", "clean", "s1", 48000, 60.0, "CC0", "")
    monkeypatch.setattr(
        training_record, "split_named", lambda data_dir, name: Split((speech,), (), ())
    )
    options = vars(parse_args(["--pause-stage-minutes", "10", "--pause-stage-weight", "4"]))
    old = {"config": {}, "args": options, "elapsed": 600.0, "epoch": 3, "history": []}
    torch.save(old, tmp_path / "checkpoint.pt")
    record = training_record.record_from_run(tmp_path / "checkpoint.pt", weights, tmp_path)
    assert record["data"]["files"]["speech"] == ["clean/c/a.flac"]
    assert record["data"]["licenses"] == [
        {"kind": "clean", "corpus": "c", "license": "CC0", "minutes": 1.0}
    ]
    assert record["data"]["recorded_at"].startswith("export")
    assert record["loss"]["terms"][-1].endswith("costs 5×")
    assert "recorded at export, from the run's options (none in" in _loss_note(record)
    assert record["hardware"] is None and record["init_from"] is None
    # a checkpoint whose loss description older code wrote: the options decide
    stale = {"targets": "the oracle's", "terms": [], "quality_predictors": []}
    teacher = vars(parse_args(["--on-the-fly", "--teacher-blend", "0.5"]))
    torch.save(old | {"args": teacher, "loss": stale}, tmp_path / "checkpoint.pt")
    record = training_record.record_from_run(tmp_path / "checkpoint.pt", weights, tmp_path)
    assert "DeepFilterNet3's output" in record["loss"]["targets"]
    assert 'said the targets were "the oracle\'s"' in record["loss"]["recorded_at"]
    # one that agrees with the options is kept as the run's own
    agreed = loss_record(argparse.Namespace(**teacher))
    torch.save(old | {"args": teacher, "loss": agreed}, tmp_path / "checkpoint.pt")
    record = training_record.record_from_run(tmp_path / "checkpoint.pt", weights, tmp_path)
    assert record["loss"] == agreed and "recorded_at" not in record["loss"]


def test_the_training_path_reaches_no_quality_predictor() -> None:
    """The loss of shipped weights may hold no DNSMOS-like network (issue 25): the training
    modules load no quality predictor on import and name none of the scorers."""
    training = (
        "model.train, model.teacher, model.onthefly, model.feature_cache, model.network, "
        "model.clean_speech, model.audio_finetune, model.differentiable_synthesis, "
        "model.spectral_loss"
    )
    code = (
        f"import sys, {training}\n"
        "bad = [m for m in sys.modules if m.startswith(('speechmos', 'model.research'))]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""
    for module in training.replace("model.", "").split(", "):
        source = (ROOT / "model" / f"{module}.py").read_text()
        assert "DnsmosScorer" not in source and "speechmos" not in source, module


def test_the_card_says_when_a_fine_tune_grew_the_network_it_started_from() -> None:
    parent = _record([], []) | {"network": {"gru_size": 256}}
    grown = _record([], [], parent) | {"network": {"gru_size": 320}}
    assert "its 256-unit GRUs grown to 320 first" in _init_note(grown)
    same = _record([], [], parent) | {"network": {"gru_size": 256}}
    assert "grown" not in _init_note(same) and "Fine-tuned from" in _init_note(same)
    assert _init_note(_record([], [])) == ""


def test_the_card_says_how_the_shipped_epoch_was_chosen() -> None:
    history = [
        {"epoch": 0, "stage": "start", "dev_pesq": 2.007},
        {"epoch": 1, "stage": "crops", "dev_pesq": 1.975},
        {"epoch": 2, "stage": "crops", "dev_pesq": 2.006},
        {"epoch": 3, "stage": "crops", "dev_pesq": 1.950},
    ]
    start_best = best_epoch(history)
    assert start_best == {"epoch": 0, "stage": "start", "dev_pesq": 2.007}
    assert best_epoch([{"epoch": 1}]) is None

    def record(shipped: int, best: dict | None, exported_last: bool = False) -> dict:
        return {"shipped_epoch": {"epoch": shipped, "best": not exported_last}, "run_best": best}

    label = _shipped_epoch_label(record(2, start_best))
    assert "best dev PESQ-WB of the trained epochs" in label and "2.007 before training" in label
    trained_best = best_epoch(history[1:])
    assert _shipped_epoch_label(record(2, trained_best)) == "Shipped epoch (best dev PESQ-WB)"
    assert "chosen by hand; the best dev PESQ-WB was epoch 2's" in _shipped_epoch_label(
        record(1, trained_best)
    )
    assert _shipped_epoch_label(record(3, trained_best, exported_last=True)) == "Final epoch"
    # records from before run_best was kept
    assert _shipped_epoch_label(record(2, None)) == "Shipped epoch (best dev PESQ-WB)"


def test_the_training_command_writes_an_option_of_several_values_as_the_shell_takes_it() -> None:
    flags = _option_flags({"teacher_extra_pools": ["<elsewhere>/a", "<elsewhere>/b"], "seed": 3})
    assert flags == "--teacher-extra-pools <elsewhere>/a <elsewhere>/b --seed 3"
    assert _option_flags({"teacher_extra_pools": []}) == ""  # the default: no flag


def test_the_card_names_the_two_hop_graph_beside_the_int8_one(tmp_path: Path) -> None:
    from model.export import INT8_NAME, TWO_HOP_INT8_NAME
    from model.model_card import _two_hop_sentence
    from model.runtime import sha256_of

    int8 = tmp_path / INT8_NAME
    int8.write_bytes(b"weights")
    assert _two_hop_sentence(int8) == ""  # none beside it: nothing said
    (tmp_path / TWO_HOP_INT8_NAME).write_bytes(b"two hops")
    digest = sha256_of(tmp_path / TWO_HOP_INT8_NAME)
    assert f"`{TWO_HOP_INT8_NAME}` (SHA-256 `{digest}`)" in _two_hop_sentence(int8)
    shipped = (SHIPPED / "MODEL_CARD.md").read_text()
    assert " ".join(_two_hop_sentence(SHIPPED / INT8_NAME).split()) in " ".join(shipped.split())


def _distilled(record: dict, teacher: dict | None) -> dict:
    """``record`` with a network distilled into it (``--distil-from``)."""
    return record | {
        "distil_from": {"path": "model/weights/percepnet-fp32.onnx", "sha256": "cd" * 32}
        | {"record": teacher}
    }


def test_the_card_counts_a_distilled_network_s_training_as_the_weights_own() -> None:
    from model.model_card import _distil_note

    teacher = _record([_licence("urbansound8k", "CC BY-NC 3.0", 70.0)], ["DNSMOS P.808"])
    student = _distilled(_record([_licence("sonicpi", "CC0 1.0", 3.0)], []), teacher)
    # the teacher's predictor and non-commercial data reach the student's card
    assert "DNSMOS P.808 was in these weights' loss" in _predictor_sentence(student)
    licences = _license_section(student)
    assert licences.startswith("Non-commercial data (urbansound8k: CC BY-NC 3.0)")
    assert "distilled into these weights was trained in 1 runs on urbansound8k" in licences
    clean_teacher = _record([_licence("sonicpi", "CC0 1.0", 3.0)], []) | {
        "network": {"gru_size": 384}
    }
    clean = _distilled(_record([_licence("sonicpi", "CC0 1.0", 3.0)], []), clean_teacher)
    sentence = _predictor_sentence(clean)
    assert "no quality-predictor network" in sentence and "network distilled into them" in sentence
    note = _distil_note(clean)
    assert "Distilled from `model/weights/percepnet-fp32.onnx` (SHA-256 `cdcdcdcd" in note
    assert "a 384-unit network of this project" in note
    # a teacher without a record leaves the loss and licences unknown
    orphan = _distilled(_record([_licence("sonicpi", "CC0 1.0", 3.0)], []), None)
    assert "does not say what every run" in _predictor_sentence(orphan)
    assert "licences of their data are unknown" in _license_section(orphan)
    assert "without a training record" in _distil_note(orphan)
    assert _distil_note(_record([], [])) == ""


def test_the_card_totals_the_training_of_every_run_the_weights_carry_once() -> None:
    from model.model_card import _ancestry_note

    def run(minutes: float, parent=...) -> dict:
        hardware = {"cpu": "x86_64", "cpu_cores": 2, "threads": 1, "accelerator": None}
        return _record([], [], parent) | {"minutes": minutes, "hardware": hardware}

    shared = run(40.0)  # the start of both the student and its teacher's lineage
    teacher = run(100.0, parent=run(60.0, parent=shared))
    student = _distilled(run(120.0, parent=shared), teacher)
    note = _ancestry_note(student)
    assert "carry 4 training runs" in note  # the shared start counted once
    assert "320 minutes of training on 2-core x86_64 CPUs, no accelerator." in note
    orphan = _distilled(run(120.0, parent=shared), None)
    assert "2 training runs" in _ancestry_note(orphan)
    assert "and 1 earlier runs without a record" in _ancestry_note(orphan)
    assert _ancestry_note(run(120.0)) == ""  # one run: its own lines say it all

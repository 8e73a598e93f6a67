"""Write ``model/weights/MODEL_CARD.md`` from the weights, their training record and the
evaluation.

    python -m model.model_card --eval out/eval --out model/weights

What the card says of the training (data and licences, loss, command, time, hardware) is read
from ``training_record.json`` beside the weights (``model.training_record``), which describes
those very weights by hash; nothing is taken from the data folder as it is today, and nothing is
typed by hand.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from model.audio_finetune import SNR_RANGE_DB as AUDIO_SNR_RANGE_DB
from model.devset import default_data_dir
from model.export import INT8_NAME, weight_counts
from model.mixtures import MixtureRecipe
from model.network import NetworkConfig, PercepNet, count_parameters
from model.runtime import sha256_of, two_hop_twin
from model.splits import split_files
from model.train import (
    FULL_SEQUENCE_LR_FACTOR,
    NON_TRAINING_OPTIONS,
    PAUSE_STAGE_LR_FACTOR,
    SEQUENCES_PER_SHARD,
    parse_args,
    schedule_minutes,
)
from model.training_record import (
    ancestry,
    distil_teachers,
    lineage,
    read_record,
    trains_by_epochs,
)

NON_COMMERCIAL_MARK = "NC"  # in a Creative Commons licence's name: BY-NC, BY-NC-SA, BY-NC-ND


def _same_data_note(runs: int) -> str:
    """The line that stands for ``runs`` earlier runs on the data of the table above it."""
    if runs == 0:
        return ""
    plural = "s" if runs > 1 else ""
    return f"\nBefore that, {runs} more run{plural} of the weights' lineage, on the same data.\n"


def _license_section(record: dict[str, Any]) -> str:
    """The licences of the data the weights were trained on, run by run through their lineage
    (a fine-tune's own data, then that of the weights it started from), and what they allow."""
    runs = lineage(record)
    taught = ancestry(record)[len(runs) :]  # the distilled networks' runs
    if any((run.get("data") or {}).get("licenses") is None for run in runs + taught):
        return (
            "A run in these weights' training recorded no list of its files, so the licences "
            "of their data are unknown: treat them as non-commercial.\n"
        )
    restricted = sorted(
        {
            f"{row['corpus']}: {row['license']}"
            for run in runs + taught
            for row in run["data"]["licenses"]
            if NON_COMMERCIAL_MARK in row["license"]
        }
    )
    terms = (
        f"Non-commercial data ({'; '.join(restricted)}): these weights, trained on them, are "
        "for non-commercial use only. Retrain without them for commercial use."
        if restricted
        else "No file is under a non-commercial licence."
    )
    tables = []
    repeats = 0  # runs in a row on the same data as the last table's
    for depth, run in enumerate(runs):
        rows = run["data"]["licenses"]
        if depth > 0 and rows == runs[depth - 1]["data"]["licenses"]:
            repeats += 1
            continue
        tables.append(_same_data_note(repeats))
        repeats = 0
        title = "\nBefore that, the weights fine-tuned from were trained on:\n\n" * (depth > 0)
        table = ["| kind | corpus | license | minutes |", "|---|---|---|---|"] + [
            f"| {r['kind']} | {r['corpus']} | {r['license']} | {r['minutes']:.1f} |" for r in rows
        ]
        tables.append(title + "\n".join(table) + "\n")
    tables.append(_same_data_note(repeats))
    if taught:
        corpora = sorted({row["corpus"] for run in taught for row in run["data"]["licenses"]})
        tables.append(
            f"\nThe network distilled into these weights was trained in {len(taught)} runs on "
            f"{', '.join(corpora)} (its tables: its own model card, or its runs under "
            "`distil_from` in `training_record.json`).\n"
        )
    return f"{terms}\n\n" + "".join(tables)


PESQ_MARGIN_OVER_RNNOISE = 0.25
CPU_SHARE_OF_RNNOISE = 0.5
MODEL_ROW = "percepnet_int8"


def _summary_rows(eval_dir: Path) -> dict[tuple[str, float | None], dict[str, Any]]:
    """The evaluation's means by (system, SNR; None for all SNRs); empty when not run."""
    path = eval_dir / "results.json"
    if not path.exists():
        return {}
    return {(r["system"], r["snr_db"]): r for r in json.loads(path.read_text())["summary"]}


def _verdict(eval_dir: Path, bench: dict[str, Any] | None = None) -> str:
    """The issue's acceptance checks against RNNoise, from the evaluation's means; the CPU
    checks from ``bench`` (``loadtest.bench_dsp``'s result, per hop, the issue's measure) when
    given, else from the evaluation's per-file CPU."""
    rows = _summary_rows(eval_dir)
    model, rnnoise = rows.get((MODEL_ROW, None)), rows.get(("rnnoise", None))
    if model is None or rnnoise is None:
        return f"(the evaluation lacks {MODEL_ROW} or rnnoise)"
    checks: list[tuple[str, float, float]] = [
        (
            f"PESQ-WB ≥ RNNoise + {PESQ_MARGIN_OVER_RNNOISE:g}",
            model["pesq_wb"],
            rnnoise["pesq_wb"] + PESQ_MARGIN_OVER_RNNOISE,
        )
    ]
    snrs = sorted({snr for _, snr in rows if snr is not None})
    checks += [
        (
            f"PESQ-WB ≥ RNNoise at {snr:+g} dB",
            rows[(MODEL_ROW, snr)]["pesq_wb"],
            rows[("rnnoise", snr)]["pesq_wb"],
        )
        for snr in snrs
        if (MODEL_ROW, snr) in rows and ("rnnoise", snr) in rows
    ]
    for key, name in (
        ("stoi", "STOI"),
        ("si_sdr_db", "SI-SDR (dB)"),
        ("dnsmos_p808", "DNSMOS P.808"),
        ("dnsmos_ovrl", "DNSMOS P.835 OVRL"),
    ):
        checks.append((f"{name} ≥ RNNoise", model[key], rnnoise[key]))
    lines = ["| check | int8 model | reference | met |", "|---|---|---|---|"]
    for name, ours, theirs in checks:
        met = ours is not None and theirs is not None and ours >= theirs
        lines.append(f"| {name} | {_cell(ours)} | {_cell(theirs)} | {'yes' if met else '**no**'} |")
    ours, theirs = model["cpu_us_per_hop"], rnnoise["cpu_us_per_hop"]
    if bench is None:
        lines.append(
            f"| CPU µs / 10 ms (DSP + int8 model) ≤ {CPU_SHARE_OF_RNNOISE:g} × RNNoise's "
            f"| {ours:.0f} | {CPU_SHARE_OF_RNNOISE * theirs:.0f} | "
            f"{'yes' if ours <= CPU_SHARE_OF_RNNOISE * theirs else '**no**'} |"
        )
        return "\n".join(lines)
    for target in bench["targets"]:  # the share of RNNoise's, or the step's µs
        timed = f"{bench[target['row']]['median_us']:.1f} µs"
        share = target["row"].startswith("enhancer")
        measured = f"{target['measured']:.3f} ({timed})" if share else timed
        reference = f"RNNoise {bench['rnnoise']['median_us']:.1f} µs" if share else ""
        lines.append(
            f"| {target['target']} (`loadtest.bench_dsp`, medians) | {measured} | {reference} "
            f"| {'yes' if target['met'] else '**no**'} |"
        )
    ratios = {t["row"]: t["measured"] for t in bench["targets"]}
    two_hops = (
        f", and {ratios['enhancer_two_hop']:.3f} × with a 20 ms packet's two hops in one call"
        " (the two-hop graph, as the relay runs it)"
        if "enhancer_two_hop" in ratios
        else ""
    )
    return "\n".join(lines) + (
        f"\n\nIn this evaluation (the file path: each call's Python overhead and resampling, "
        f"RNNoise through pyrnnoise's wrapper) the model's CPU per 10 ms was {ours:.0f} µs "
        f"against RNNoise's {theirs:.0f} ({ours / theirs:.2f} ×); per hop, as the issue measures "
        f"it, {ratios['enhancer']:.3f} × one hop a call{two_hops}{_bench_machine(bench)}."
    )


def _bench_machine(bench: dict[str, Any]) -> str:
    """Where the benchmark ran, as far as its result says: the int8 step's speed depends on
    the CPU's int8 instruction sets (VNNI, AMX) and on whether the weights fit its L2 cache
    more than on anything in this project."""
    platform = bench.get("platform") or {}
    if "cpu" not in platform:
        return ""
    flags = platform.get("int8_instructions")
    named = f"; int8 instructions: {', '.join(flags) or 'none'}" if flags is not None else ""
    l2 = platform.get("l2_cache_kib")
    cache = f"; L2 cache {l2:,} KiB" if l2 else ""
    return f" (timed on {platform['cpu']}, {platform.get('cpu_count')} logical CPUs{named}{cache})"


def read_bench(path: Path, int8: Path) -> dict[str, Any]:
    """``loadtest.bench_dsp``'s JSON result, checked to have timed the weights in ``int8``
    against RNNoise; ValueError says what is wrong."""
    try:
        bench = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the benchmark {path}: {exc}") from None
    if (
        not isinstance(bench, dict)
        or not all(
            isinstance(bench.get(key), dict) and "median_us" in bench[key]
            for key in ("enhancer", "rnnoise", "model_int8")
        )
        or not {"enhancer", "model_int8"}
        <= {target.get("row") for target in bench.get("targets", ())}
    ):
        raise ValueError(
            f"{path} holds no whole-enhancer, RNNoise and int8-step timings: write it with "
            "`python -m loadtest.bench_dsp --json PATH`, pyrnnoise installed"
        )
    if bench.get("model_sha256") != sha256_of(int8):
        raise ValueError(
            f"{path} timed other weights than {int8} (SHA-256 {bench.get('model_sha256')}): "
            "run the benchmark again with these"
        )
    return bench


GAP_METRICS = (
    ("pesq_wb", "PESQ-WB", 2),
    ("stoi", "STOI", 3),
    ("si_sdr_db", "SI-SDR (dB)", 1),
    ("dnsmos_p808", "DNSMOS P.808", 2),
    ("dnsmos_ovrl", "DNSMOS OVRL", 2),
)


def _gap_table(eval_dir: Path, other: str) -> str:
    """This model's means minus ``other``'s, per SNR and over all."""
    rows = _summary_rows(eval_dir)
    if (MODEL_ROW, None) not in rows or (other, None) not in rows:
        return f"(the evaluation lacks {MODEL_ROW} or {other})"
    header = " | ".join(name for _, name, _ in GAP_METRICS)
    lines = [f"| SNR (dB) | {header} |", "|---" * (len(GAP_METRICS) + 1) + "|"]
    snrs: list[float | None] = [*sorted({s for _, s in rows if s is not None}), None]
    for snr in snrs:
        ours, theirs = rows[(MODEL_ROW, snr)], rows[(other, snr)]
        cells = " | ".join(
            "n/a"
            if ours[key] is None or theirs[key] is None
            else f"{ours[key] - theirs[key]:+.{digits}f}"
            for key, _, digits in GAP_METRICS
        )
        lines.append(f"| {'all' if snr is None else f'{snr:+g}'} | {cells} |")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _stage_text(stages: list[dict[str, Any]]) -> str:
    """Epochs and minutes per training stage (``training_record.stage_summary``)."""
    return "; ".join(f"{s['stage']}: {s['epochs']} epochs, {s['minutes']:.0f} min" for s in stages)


def _portable(path: str) -> str:
    """A path as the card shows it: an absolute one (a machine's) by its file name alone."""
    return Path(path).name if Path(path).is_absolute() else path


def _flag(key: str, value: object) -> str:
    """One option as written on the command line (a switch alone when it is on)."""
    flag = "--" + key.replace("_", "-")
    if key == "init_from" and isinstance(value, str):
        value = _portable(value)
    if isinstance(value, list):  # nargs="+": the values one after another
        value = " ".join(str(item) for item in value)
    return flag if value is True else f"{flag} {value}"


def _option_flags(options: dict[str, object]) -> str:
    """The flags of every training option that differs from its default; an option that
    ``model.train`` no longer has counts only when a run set it (a checkpoint older than its
    removal records it off)."""
    defaults = vars(parse_args([]))
    return " ".join(
        _flag(key, value)
        for key, value in options.items()
        if key not in NON_TRAINING_OPTIONS
        and value is not None
        and value != defaults.get(key)
        and (key in defaults or value)
    )


def _noise_augmentation_note(recipe: dict[str, Any]) -> str:
    """A sentence on how the real noises were varied (``--augment-noise``), or nothing."""
    augmentation = recipe.get("noise_augmentation")
    if not augmentation:
        return ""
    low, high = augmentation["speed_range"]
    return (
        f"\n  Real noises made new: resampled {low:g}–{high:g}× (pitch and tempo) in "
        f"{augmentation['speed_share']:.0%} of segments, EQ'd in {augmentation['eq_share']:.0%}, "
        f"reversed in {augmentation['reverse_share']:.0%}, a second recording blended in "
        f"{augmentation['second_noise_share']:.0%} of examples (`--augment-noise`)."
    )


def _noise_events_note(recipe: dict[str, Any]) -> str:
    """A sentence on the synthetic noise events (``--noise-events``), or nothing."""
    events = recipe.get("noise_events")
    if not events:
        return ""
    low, high = events["babble_talkers"]
    return (
        f"\n  Synthetic noise events added to {events['share']:.0%} of noisy examples, one of: "
        f"decaying bursts (some with a pitched ring), harmonic sounds with a gliding pitch, "
        f"babble of {low}–{high} training talkers (`--noise-events`)."
    )


def _mid_speech_start_note(recipe: dict[str, Any]) -> str:
    """A sentence on the examples that open mid-utterance (``--mid-speech-starts``), or nothing."""
    share = recipe.get("mid_speech_start_share")
    if not share:
        return ""
    return (
        f"\n  {share:.0%} of examples open inside an utterance (past its leading pause, up to its "
        "middle), so speech is there from the first frame (`--mid-speech-starts`)."
    )


def _speech_speed_note(recipe: dict[str, Any]) -> str:
    """A sentence on a speech speed range other than the recipe's default (``--speech-speed``),
    or nothing."""
    speeds = recipe.get("speed_range")
    if speeds is None or tuple(speeds) == MixtureRecipe().speed_range:
        return ""
    slow, fast = speeds
    return (
        f"\n  Each example's speech played {slow:g}–{fast:g}× as fast (pitch, formants and tempo: "
        "other talkers; `--speech-speed`)."
    )


def _init_note(record: dict[str, Any]) -> str:
    """A sentence on the weights a fine-tune started from, or nothing."""
    init_from = record.get("init_from")
    if not init_from:
        return ""
    parent = init_from.get("record")
    known = (
        "whose own training is part of these weights' (its data's licences below, its run "
        "under `init_from` in `training_record.json`)"
        if parent
        else "which have no training record: their data, loss and licences are unknown here"
    )
    grown_from = (parent or {}).get("network", {}).get("gru_size")
    grown = (
        f"; its {grown_from}-unit GRUs grown to {record['network']['gru_size']} first "
        "(`model/widen.py`: the new units read in but are not read, so the grown network "
        "started out computing what those weights did)"
        if grown_from and grown_from != record["network"]["gru_size"]
        else ""
    )
    return (
        f"\n  Fine-tuned from `{_portable(init_from['path'])}` "
        f"(SHA-256 `{init_from['sha256'][:16]}…`), {known}{grown}; the minutes and "
        f"{'epochs' if trains_by_epochs(record) else 'steps'} "
        "here are the fine-tune's."
    )


def _distil_note(record: dict[str, Any]) -> str:
    """A sentence on the network distilled into these weights (``--distil-from``), or nothing."""
    source = record.get("distil_from")
    if not source:
        return ""
    teacher = source.get("record") or {}
    size = teacher.get("network", {}).get("gru_size")
    known = (
        f"a {size}-unit network of this project, whose own training is part of these weights' "
        "(its data's licences below, its runs under `distil_from` in `training_record.json`)"
        if teacher
        else "a network without a training record: its data, loss and licences are unknown here"
    )
    return (
        f"\n  Distilled from `{_portable(source['path'])}` (SHA-256 `{source['sha256'][:16]}…`), "
        f"{known}: its gains and strengths on each batch were the targets."
    )


def _ancestry_note(record: dict[str, Any]) -> str:
    """A line on the whole training the weights carry (their lineage and every network distilled
    into them, each run once), or nothing for weights trained in one run."""
    runs = ancestry(record)
    distinct = {json.dumps(run, sort_keys=True): run for run in runs if run}  # shared runs once
    unknown = sum(1 for run in runs if not run)
    if len(distinct) + unknown <= 1:
        return ""
    minutes = sum(run.get("minutes") or 0.0 for run in distinct.values())
    machines = sorted(
        {
            f"{hardware['cpu_cores']}-core {hardware['cpu']} CPUs, "
            f"{hardware.get('accelerator') or 'no accelerator'}"
            for run in distinct.values()
            if (hardware := run.get("hardware"))
        }
    )
    unrecorded = len(distinct) - sum(1 for run in distinct.values() if run.get("hardware"))
    return (
        f"\nIn all, these weights carry {len(distinct)} training runs (this one, those of the "
        f"weights it started from and of any network distilled into it, each counted once): "
        f"{minutes:.0f} minutes of training on {'; '.join(machines) or 'unrecorded hardware'}"
        + (f" ({unrecorded} runs' hardware unrecorded)" if unrecorded and machines else "")
        + (f", and {unknown} earlier runs without a record" if unknown else "")
        + ".\n"
    )


def _quality_predictors(record: dict[str, Any]) -> tuple[list[str], bool]:
    """The quality-predictor networks in the loss of any run of the weights' ancestry (their
    lineage and any network distilled into it), and whether every run of it recorded its loss
    (otherwise the list may be short)."""
    found: list[str] = []
    complete = True
    for run in ancestry(record):  # a distilled network's training counts too
        loss = run.get("loss")
        if not loss:
            complete = False
            continue
        found += [p for p in loss.get("quality_predictors", []) if p not in found]
    return found, complete


def _loss_note(record: dict[str, Any]) -> str:
    """What the loss compared, as the record states it, and whether a quality predictor was in
    it anywhere in the lineage."""
    loss = record.get("loss")
    if not loss:
        return "The run recorded no description of its loss."
    predictors, complete = _quality_predictors(record)
    if predictors:
        verdict = (
            f"**A quality-predictor network was in the loss: {', '.join(predictors)}**; scores "
            "by that predictor are not independent of the training."
        )
    elif complete:
        verdict = "No quality-predictor network (DNSMOS or similar) was in the loss."
    else:
        verdict = "This run's loss had no quality-predictor network; an earlier run's is unknown."
    recorded_at = f" (recorded at {loss['recorded_at']})" if loss.get("recorded_at") else ""
    return f"the network's outputs against {loss['targets']}: " + (
        "; ".join(loss["terms"]) + f". {verdict}{recorded_at}"
    )


def _hardware_note(record: dict[str, Any]) -> str:
    """The machine and precision of the run, as recorded."""
    hardware = record.get("hardware")
    precision = (
        " (training steps in bfloat16 autocast, weights and optimiser in fp32)"
        if record["options"].get("bf16")
        else ""
    )
    if not hardware:
        return f"not recorded{precision}"
    accelerator = hardware.get("accelerator") or "no accelerator"
    return (
        f"{hardware['cpu']}, {hardware['threads']} training "
        f"thread{'s' * (hardware['threads'] != 1)} on "
        f"{hardware['cpu_cores']} CPU cores, {accelerator}{precision}"
    )


def _options_at_start(options: dict[str, Any], resumes: list[dict]) -> dict[str, Any]:
    """A run's options as its first command gave them: its final options with each resume's
    changes undone."""
    first = dict(options)
    for resume in reversed(resumes):
        first.update({key: change["before"] for key, change in resume["changed"].items()})
    return first


def _resume_changes(resumes: list[dict]) -> list[str]:
    """Each resume as "at N min (epoch E, or step S) with" the options it changed."""
    return [
        f"at {resume['minutes']:.0f} min ("
        + (f"epoch {resume['epoch']}" if "epoch" in resume else f"step {resume['step']}")
        + ") with "
        + " ".join(_flag(key, change["after"]) for key, change in resume["changed"].items())
        for resume in resumes
    ]


def _resumed_note(changes: str) -> str:
    """The sentence on a run's resumes, or nothing."""
    if not changes:
        return ""
    return f"\n  Resumed as the same command with these options changed: {changes}."


def _training_commands(run_args: dict[str, object], resumes: list[dict]) -> tuple[str, str]:
    """(the command that started the run, the options each resume changed), from a checkpoint's
    final options and its record of resumes; the last command exports the weights."""
    first = _options_at_start(run_args, resumes)
    command = f"python -m model.train --out runs/default {_option_flags(first)}".rstrip()
    steps = _resume_changes(resumes)
    export = " --export model/weights"
    if steps:
        steps[-1] += export
    else:
        command += export
    return command, "; ".join(steps)


def _evaluation_config(eval_dir: Path) -> dict:
    """The evaluation's recorded options; refuses one drawn from the training split, whose
    scores must never be quoted as dev-set scores (evaluations before ``--split`` are dev),
    and one whose speech was narrowed to some corpora (``--speech-sources``)."""
    path = eval_dir / "results.json"
    config = json.loads(path.read_text()).get("config", {}) if path.exists() else {}
    if config.get("split", "dev") != "dev":
        raise ValueError(
            f"{path} was drawn from the {config['split']!r} split; the card needs a dev evaluation"
        )
    if config.get("speech_sources"):
        raise ValueError(
            f"{path} draws its speech from {', '.join(config['speech_sources'])} only; the card "
            "needs an evaluation of the whole dev split"
        )
    return config


def _stream_note(checkpoint: dict[str, Any]) -> str:
    """What an on-the-fly run trained on (``model.onthefly``): how many mixtures, how much
    audio, whether fresh or from the teacher's pool, and how much of it Opus-coded."""
    stream = checkpoint["stream"]
    mixtures = checkpoint["stream_batches"] * stream["batch"]
    hours = mixtures * stream["recipe"]["segment_seconds"] / 3600
    opus = stream.get("opus")
    coded = (
        f", {opus['share']:.0%} of the inputs coded by Opus (libopus, 20 ms frames, VoIP "
        f"mode) at {'/'.join(str(b) for b in opus['bitrates_kbps'])} kb/s before analysis, "
        "as the relay hears them; the targets uncoded"
        if opus
        else ""
    )
    teacher = stream.get("teacher")
    if teacher:  # ``model.teacher``: batch k of the stream is batch k mod cycle of fixed pools
        extra = teacher.get("extra_pools", {}).values()
        extra_batches = sum(pool["batches"] for pool in extra)
        cycle = teacher["pool_batches"] + extra_batches
        distinct = min(checkpoint["stream_batches"], cycle) * stream["batch"]
        earlier = (
            f" and {len(extra)} earlier runs' pools ({extra_batches:,} batches: "
            + "; ".join(_extra_pool_note(pool, stream) for pool in extra)
            + ")"
            if extra
            else ""
        )
        drawn = (
            f"cycling over a pool of {teacher['pool_batches']} batches made once{earlier} "
            f"({distinct:,} distinct mixtures, each with {teacher['teacher']}'s targets)"
        )
    else:
        drawn = "each mixed fresh for its step (no cache, none seen twice)"
    return (
        f"{mixtures:,} mixtures of {stream['recipe']['segment_seconds']:g} s ({hours:.1f} h "
        f"of audio), {drawn}{coded}"
    )


def _extra_pool_note(pool: dict[str, Any], stream: dict[str, Any]) -> str:
    """An extra teacher pool's size and stream: its seed and where its recipe or coding
    differ from the run's own stream (unknown for a pool that does not describe itself)."""
    made = pool.get("stream")
    if not made:
        return f"{pool['batches']:,} batches of an undescribed stream"
    own, theirs = stream["recipe"], made["recipe"]
    differences = [
        f"{key} {'off' if theirs.get(key) is None else theirs[key]}"
        for key in sorted(own.keys() | theirs.keys())
        if own.get(key) != theirs.get(key)
    ]
    if made.get("opus") != stream.get("opus"):
        differences.append(f"opus {made.get('opus')}")
    differs = f", unlike this stream's: {', '.join(differences)}" if differences else ""
    return f"seed {made['seed']}, {pool['batches']:,} batches{differs}"


def _epoch_note(epoch: dict[str, Any], dev_files: int) -> str:
    """The exported epoch's number, losses and dev PESQ-WB."""
    nan = float("nan")
    return (
        f"epoch {epoch.get('epoch', 0):.0f}, train loss {epoch.get('train_loss', nan):.4f}, "
        f"dev loss {epoch.get('dev_loss', nan):.4f}, dev PESQ-WB {epoch.get('dev_pesq', nan):.3f} "
        f"({dev_files} fixed dev mixtures)"
    )


def _shipped_epoch_label(record: dict[str, Any]) -> str:
    """How the exported epoch was chosen: the run's last, its best by the training-time dev
    PESQ-WB, the best of its trained epochs (a fine-tune's starting weights scored higher), or
    another (chosen by hand); records from before ``run_best`` was kept say "best"."""
    shipped = record.get("shipped_epoch", {})
    if not shipped.get("best"):
        return "Final epoch"
    best = record.get("run_best")
    if best is None or float(best["epoch"]) == float(shipped.get("epoch", -1)):
        return "Shipped epoch (best dev PESQ-WB)"
    if best.get("stage") == "start":
        return (
            "Shipped epoch (best dev PESQ-WB of the trained epochs; the weights fine-tuned from "
            f"scored {best['dev_pesq']:.3f} before training)"
        )
    return (
        "Shipped epoch (chosen by hand; the best dev PESQ-WB was epoch "
        f"{float(best['epoch']):.0f}'s, {best['dev_pesq']:.3f})"
    )


def _audio_finetune_command(record: dict[str, Any]) -> str:
    """The command that started an audio fine-tune: its options before any resume changed
    them, every training option written out (so the command stays whole if the defaults move)."""
    options = _options_at_start(record["options"], record.get("resumes", []))
    flags = " ".join(
        _flag(key, value)
        for key, value in options.items()
        if key not in NON_TRAINING_OPTIONS and value is not None and value is not False
    )
    return f"python -m {record['trainer']} --out runs/default {flags}"


def _audio_finetune_section(record: dict[str, Any]) -> str:
    """The "Training" section of weights fine-tuned on their own output audio
    (``model.audio_finetune``), followed by that of the run they started from."""
    options = record["options"]
    resumed = _resumed_note("; ".join(_resume_changes(record.get("resumes", []))))
    files = record["data"].get("files")
    drawn_from = (
        f"{len(files['speech'])} training utterances from {record['data']['speakers']} "
        f"speakers and {len(files['noise'])} noise recordings"
        if files
        else "training files the run did not record"
    )
    remade = record["data"].get("augmentation")
    if remade:
        slow, fast = remade["speech_speed_range"]
        low_shift, high_shift = remade.get("formant_shift_range", (1.0, 1.0))
        formants = (
            f", its formants moved {low_shift:g}–{high_shift:g}× on their own"
            if (low_shift, high_shift) != (1.0, 1.0)
            else ""
        )
        drawn_from += (
            f"; each mixture remade by `model/augment_mixture.py` (the speech played "
            f"{slow:g}–{fast:g}× as fast{formants} and EQ'd in {remade['speech_eq_share']:.0%} of "
            "them, the noise resampled, EQ'd and reversed, a synthetic noise event added to "
            f"{remade['events']['share']:.0%}) and mixed again at its SNR and level"
        )
    low, high = (f"{value:g}".replace("-", "−") for value in AUDIO_SNR_RANGE_DB)
    steps = record.get("steps") or 0
    last = record.get("shipped_epoch", {})
    last_note = (
        f"step {last['step']}: band loss {last.get('anchor', float('nan')):.4f}, spectral loss "
        f"{last.get('spectral', float('nan')):.4f} (means over the last progress window)"
        if "step" in last
        else "no progress line recorded"
    )
    parent = (record.get("init_from") or {}).get("record")
    before = (
        "\n### The run the fine-tune started from\n" + _training_section(parent) if parent else ""
    )
    export = "python -m model.export --checkpoint runs/default/checkpoint.pt --out model/weights"
    return f"""- Commands: `{_audio_finetune_command(record)}`, then `{export}`{resumed}{
        _init_note(record)
    }
  (seed {options.get("seed")}, AdamW). Each step: {options.get("batch")} whole utterances, each
  mixed with a noise at an SNR drawn from {low}…{high} dB, run through the network and the
  enhancer's own synthesis written in torch (`model/differentiable_synthesis.py`, held to the
  enhancer by a test), so the loss reaches the gains through the audio they make; lr
  {options.get("lr")} with cosine decay over the budget.
- Hardware: {_hardware_note(record)};
  {record["minutes"]:.0f} minutes of training, {steps} steps ({steps * options.get("batch", 0):,}
  mixtures, each drawn fresh).
- Data: drawn from {drawn_from} of the training split (`model/devset.py`, `split="train"`;
  no rooms).
- Loss: {_loss_note(record)}
- Final step exported: {last_note}.
{before}"""


def _training_section(record: dict[str, Any]) -> str:
    """The card's "Training" section (without its heading) from the weights' record."""
    if not trains_by_epochs(record):
        return _audio_finetune_section(record)
    run_args = record["options"]
    last = record.get("shipped_epoch", {})
    full_minutes = run_args.get("full_sequence_minutes", 0.0)
    pause_minutes = run_args.get("pause_stage_minutes", 0.0)
    train_command, resumed = _training_commands(run_args, record.get("resumes", []))
    resumed_note = _resumed_note(resumed)
    weighted_note = " (train loss: the pause-weighted objective)" * (last.get("stage") == "pause")
    stopped = (
        "; stopped before the budget: the run resumes from its checkpoint"
        if record["minutes"] < schedule_minutes(run_args) - 1
        else ""
    )
    data = record["data"]
    recipe = data.get("recipe", {})
    files = data.get("files")
    drawn_from = (
        f"{len(files['speech'])} training utterances from {data['speakers']} speakers, "
        f"{len(files['noise'])} noise recordings, {len(files['rooms'])} measured rooms"
        if files
        else "training files the run did not record"
    )
    recorded_at = f" (files as listed at {data['recorded_at']})" if data.get("recorded_at") else ""
    reconstructed = (
        f"- **Reconstructed record**: {record['reconstructed']}\n"
        if record.get("reconstructed")
        else ""
    )
    stream = data.get("stream") or {}
    mixtures = "mixtures from the teacher's pool" if stream.get("teacher") else "fresh mixtures"
    stages = [
        f"Batches of {run_args.get('batch')} whole {mixtures}, lr {run_args.get('lr')} with "
        f"cosine decay over the budget, a dev evaluation every {run_args.get('epoch_steps')} steps."
        if run_args.get("on_the_fly")
        else f"First stage: batch {run_args.get('batch')}, random crops of "
        f"{run_args.get('frames')} frames, lr {run_args.get('lr')} with cosine decay over the "
        "stage."
    ]
    if full_minutes:
        stages.append(
            f"Second stage: whole 3-s sequences, batch {run_args.get('full_sequence_batch')}, lr "
            f"from {FULL_SEQUENCE_LR_FACTOR:g}× the first stage's with its own decay, so the "
            "GRUs learn to carry what they heard over the whole sequence."
        )
    if pause_minutes:
        stages.append(
            f"Third stage: whole sequences again, lr from {PAUSE_STAGE_LR_FACTOR:g}× the first "
            "stage's with its own decay, with a gain above its target in frames without speech "
            f"costing {1 + run_args.get('pause_stage_weight', 0.0):g}× as much (residual noise "
            "in pauses)."
        )
    schedule = "\n  ".join(stages)
    return f"""{reconstructed}- Command: `{train_command}`{resumed_note}{_init_note(record)}{
        _distil_note(record)
    }
  (seed {run_args.get("seed")}, AdamW). {schedule}
- Hardware: {_hardware_note(record)};
  {record["minutes"]:.0f} minutes of training, {record["epochs"]} epochs
  ({_stage_text(record.get("stages", []))}){stopped}.
- Data: {
        _stream_note(data)
        if data.get("stream")
        else f"{run_args.get('train_shards')} shards of {SEQUENCES_PER_SHARD} mixtures of 3 s each"
    }, drawn from
  {drawn_from}{recorded_at}, mixed by
  `model/mixtures.py` (feature-cache key `{data.get("cache_key")}`): SNR −5…30 dB with noise-free
  examples, synthetic noises with random spectral shapes, random level, EQ, low-pass and speed,
  measured and simulated rooms with early reflections (50 ms) kept in the target.{
        _noise_augmentation_note(recipe)
        + _noise_events_note(recipe)
        + _mid_speech_start_note(recipe)
        + _speech_speed_note(recipe)
    }
- Loss: {_loss_note(record)}
- {_shipped_epoch_label(record)}: {_epoch_note(last, run_args.get("dev_files", 8))}{
        weighted_note
    }. Curve: `training_curve.png`.
"""


DEV_HEADING = "## Dev-set evaluation\n"


def write_card(eval_dir: Path, out: Path, data_dir: Path, bench: Path | None = None) -> Path:
    """Compose the card of the weights in ``out`` from their training record, the evaluation
    in ``eval_dir`` and, when given, ``loadtest.bench_dsp``'s result (the CPU checks); returns
    its path."""
    eval_config = _evaluation_config(eval_dir)  # first: a train-split evaluation stops here
    bench_result = read_bench(bench, out / INT8_NAME) if bench is not None else None
    record = read_record(out)
    _, dev = split_files(data_dir)
    path = out / "MODEL_CARD.md"
    text = _card_head(record, out / INT8_NAME) + _evaluation_section(
        eval_dir, eval_config, dev, record, bench_result
    )
    path.write_text(text)
    return path


def _two_hop_sentence(int8: Path) -> str:
    """The two-hop graph beside the int8 one, where there is one."""
    twin = two_hop_twin(int8)
    if not twin.is_file():
        return ""
    return (
        f" Beside it `{twin.name}` (SHA-256 `{sha256_of(twin)}`), the same weights two hops a"
        " call: the relay enhances a 20 ms packet's two hops in one call of it, each weight read"
        " once per packet; the exporter writes it only once its outputs equal two one-hop calls"
        " bit for bit."
    )


def _card_head(record: dict[str, Any], int8: Path) -> str:
    """What the weights are, how they were trained and their data's licences, from their
    training record."""
    config = NetworkConfig.from_dict(record["network"])
    parameters = count_parameters(PercepNet(config))
    integer, total = weight_counts(int8)
    layout = (
        f"conv 5 ({config.conv1_channels}) → conv 3 ({config.conv2_channels}) → "
        f"{config.gru_layers} GRU × {config.gru_size} → gain and strength heads"
    )
    int8_row = (
        f"{int8.stat().st_size:,} bytes; {integer / max(total, 1):.1%} of the weights "
        "in integer matmuls"
    )
    scale = f"{config.strength_scale:g}"
    strength_row = (
        ""
        if config.strength_scale == 1.0
        else f"| comb strengths | the strength head's output × {scale}, capped at 1 (calibrated "
        f"at export: `model.export --strength-scale {scale}`) |\n"
    )
    return f"""# PercepNet-relay model card

## What it is
A PercepNet-style network (Valin et al., Interspeech 2020) that reads 70 features per 10 ms hop
of 48 kHz audio and predicts 34 band gains and 34 comb-filter strengths for the frame 20 ms
earlier, inside the `dsp/` enhancer. Shipped as a single-step streaming ONNX graph with explicit
state, quantised to int8 with each stream of a batch quantised on its own (so batching never
changes a stream's output) and activation codes kept to 7 bits (so the integer sums are exact
on every x86 CPU, AVX2 without VNNI included; `model/quantise.py`): `{INT8_NAME}` (SHA-256
`{sha256_of(int8)}`), and its fp32 original for reference.{_two_hop_sentence(int8)} Its
training record: `training_record.json`.

| | |
|---|---|
| layout | {layout} |
| parameters | {parameters:,} |
| int8 file | {int8_row} |
| look-ahead | 2 hops (20 ms); total algorithmic delay 30 ms |
| weight clip | ±{config.weight_clip} during training |
{strength_row}
## Training
{_training_section(record)}{_ancestry_note(record)}
## Licenses of the training data
{_license_section(record)}
"""


def _evaluation_section(
    eval_dir: Path,
    eval_config: dict,
    dev: Any,
    record: dict[str, Any],
    bench: dict[str, Any] | None = None,
) -> str:
    """The card's dev-set evaluation: the split, the tables, the acceptance checks and the gap
    to DeepFilterNet3."""
    results_md = (
        (eval_dir / "results.md").read_text()
        if (eval_dir / "results.md").exists()
        else "(evaluation not run)"
    )
    eval_options = " ".join(
        _flag(k, v) for k, v in eval_config.items() if k in ("per_snr", "seed") and v is not None
    )
    mixtures = len(eval_config.get("mixtures", []))
    results = eval_dir / "results.json"
    systems = json.loads(results.read_text()).get("systems", []) if results.exists() else []
    if systems:
        eval_options = f"{eval_options} --systems {','.join(systems)}".strip()
    cpu_source = (
        "CPU per 10 ms hop from `python -m loadtest.bench_dsp`, which times this model's whole "
        "enhancer and RNNoise in one run"
        if bench is not None
        else "CPU from the same run"
    )
    return f"""{DEV_HEADING}The committed dev split `model/dev_split.json`: held-out speakers
({len({f.speaker_id for f in dev.speech})}), noises ({len(dev.noise)}) and rooms
({len(dev.rooms)}), and {mixtures} pinned mixtures; `percepnet-relay eval {eval_options}`
(PESQ-WB via `pesq`, STOI via `pystoi`, SI-SDR, DNSMOS P.835 and P.808 via `speechmos`
offline, CPU per 10 ms of audio including resampling and Python call overhead).
{_predictor_sentence(record)}

{results_md}
Acceptance against RNNoise (issue 25; means over the files; {cpu_source}):

{_verdict(eval_dir, bench)}

Gap to DeepFilterNet3 (this model − DeepFilterNet3; negative: DeepFilterNet3 is ahead):

{_gap_table(eval_dir, "deepfilternet3")}
"""


def _predictor_sentence(record: dict[str, Any]) -> str:
    """How far the DNSMOS columns are independent of the weights' training, from the record."""
    predictors, complete = _quality_predictors(record)
    if predictors:
        return (
            f"**{', '.join(predictors)} was in these weights' loss: read its column as a "
            "training objective, not as an independent score.**"
        )
    if complete:
        ancestors = ", nor in that of the weights they were fine-tuned from" * (
            len(lineage(record)) > 1
        ) + ", nor in that of the network distilled into them" * bool(distil_teachers(record))
        return (
            "By the training record, no quality-predictor network (DNSMOS or similar) was in "
            f"these weights' loss{ancestors}."
        )
    return "The training record does not say what every run of these weights had in its loss."


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m model.model_card``."""
    parser = argparse.ArgumentParser(description="Write the model card")
    parser.add_argument("--eval", type=Path, default=Path("out/eval"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "weights")
    parser.add_argument("--data-dir", type=Path, default=default_data_dir())
    parser.add_argument(
        "--bench",
        type=Path,
        help="`python -m loadtest.bench_dsp --json` result: its per-hop medians decide the CPU "
        "checks (default: the evaluation's per-file CPU)",
    )
    args = parser.parse_args(argv)
    try:
        print(write_card(args.eval, args.out, args.data_dir, args.bench))
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()

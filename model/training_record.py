"""The training record kept beside exported weights (``training_record.json``): what the
weights were trained on (every file, its licence), with what loss, by which command, for how
long and on what hardware. ``model.export`` writes it from the checkpoint of ``model.train`` or
``model.audio_finetune`` (``model.train`` also on its own export); ``model.model_card``
reads nothing else about the training, so the card describes the weights' own run and never the
data folder as it is today.

A fine-tune's record holds the record of the weights it started from (found beside them, by
hash), so the card can sum the licences and the loss terms of the whole lineage.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

from model.export import FP32_NAME
from model.splits import AudioFile, Split, split_named

RECORD_NAME = "training_record.json"
RECORD_FORMAT = 1
EPOCH_TRAINER = "model.train"  # trains by epochs and stages; a checkpoint naming no trainer


def trains_by_epochs(state: dict[str, Any]) -> bool:
    """Whether a checkpoint or record comes from ``model.train`` (epochs, stages, a loss it
    can describe from its options) rather than a trainer that counts steps
    (``model.audio_finetune``); one that names no trainer predates the others."""
    return state.get("trainer", EPOCH_TRAINER) == EPOCH_TRAINER


def corpus_of(file: AudioFile) -> str:
    """The corpus a manifest path belongs to: its folder under the kind (``clean/ravdess/…`` →
    ``ravdess``), or its own name for a file directly under the kind (``rir/hall.flac`` →
    ``hall``, a room recorded on its own)."""
    parts = file.relative_path.split("/")
    return parts[1] if len(parts) > 2 else Path(parts[-1]).stem


def data_record(files: Split) -> dict[str, Any]:
    """The training files by role (manifest paths) and their minutes per kind, corpus and
    licence, largest first."""
    minutes: dict[tuple[str, str, str], float] = {}
    for file in (*files.speech, *files.noise, *files.rooms):
        key = (file.kind, corpus_of(file), file.license)
        minutes[key] = minutes.get(key, 0.0) + file.seconds / 60
    return {
        "files": {
            "speech": sorted(f.relative_path for f in files.speech),
            "noise": sorted(f.relative_path for f in files.noise),
            "rooms": sorted(f.relative_path for f in files.rooms),
        },
        "speakers": len({f.speaker_id for f in files.speech}),
        "licenses": [
            {"kind": kind, "corpus": corpus, "license": license_, "minutes": round(total, 2)}
            for (kind, corpus, license_), total in sorted(
                minutes.items(), key=lambda item: (-round(item[1], 2), item[0])
            )
        ],
    }


def hardware_record(threads: int) -> dict[str, Any]:
    """The machine a run trains on: CPU, cores, the threads training used, accelerator."""
    accelerator = None
    try:
        import torch

        if torch.cuda.is_available():
            accelerator = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - training always has torch
        pass
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "threads": threads,
        "accelerator": accelerator,
    }


def network_digest(fp32: Path) -> str:
    """SHA-256 of the trained weights a fp32 graph holds (every tensor of the network it maps
    back to, by name): it names the weights whatever graph layout or int8 quantisation a later
    export gives them."""
    from model.export import load_onnx_network

    network = load_onnx_network(fp32)
    digest = hashlib.sha256()
    for name, tensor in sorted(network.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
    if network.config.strength_scale != 1.0:  # part of what the graph computes
        digest.update(f"strength_scale={network.config.strength_scale!r}".encode())
    return digest.hexdigest()


def weights_identity(weights_dir: Path) -> dict[str, str]:
    """What names the weights in ``weights_dir``: the digest of the trained network their fp32
    graph holds (the graphs' own bytes change with each export and quantisation)."""
    return {"network_sha256": network_digest(weights_dir / FP32_NAME)}


def find_record(weights_file: Path) -> dict[str, Any] | None:
    """The record beside a fp32 graph that describes its weights, if any (none for a
    checkpoint: a run's checkpoint carries its own record of its start)."""
    path = weights_file.parent / RECORD_NAME
    if weights_file.suffix != ".onnx" or not weights_file.exists() or not path.exists():
        return None
    record = json.loads(path.read_text())
    try:
        digest = network_digest(weights_file)
    except ValueError:  # an int8 graph, or not ours
        return None
    return record if record.get("weights", {}).get("network_sha256") == digest else None


def stage_summary(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Epochs and minutes per training stage, in order, from a run's per-epoch history."""
    stages: dict[str, dict[str, Any]] = {}
    previous = 0.0
    for epoch in history:
        if epoch.get("stage") == "start":  # a fine-tune's starting weights, scored, not trained
            continue
        name = str(epoch.get("stage", "crops"))  # runs from before stages were recorded
        stage = stages.setdefault(name, {"stage": name, "epochs": 0, "minutes": 0.0})
        stage["epochs"] += 1
        stage["minutes"] += float(epoch["minutes"]) - previous
        previous = float(epoch["minutes"])
    return list(stages.values())


def best_epoch(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The epoch of a run's history (its starting weights included) with the highest dev
    PESQ-WB, as its number, stage and score; None for a history without scores."""
    scored = [epoch for epoch in history if "dev_pesq" in epoch]
    if not scored:
        return None
    best = max(scored, key=lambda epoch: float(epoch["dev_pesq"]))
    return {
        "epoch": best.get("epoch", 0),
        "stage": best.get("stage", "crops"),
        "dev_pesq": float(best["dev_pesq"]),
    }


def record_from_checkpoints(
    run_state: dict[str, Any],
    shipped_state: dict[str, Any],
    weights_dir: Path,
    parent: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of weights exported to ``weights_dir`` from ``shipped_state`` (the epoch
    exported), whose run's last checkpoint is ``run_state``. ``parent`` is the record of the
    weights the run started from, when it was a fine-tune and they had one. A checkpoint from
    before runs recorded their data, loss or hardware has none of them; the record says so."""
    history = shipped_state.get("history", [])
    return {
        "format": RECORD_FORMAT,
        "reconstructed": None,
        "trainer": run_state.get("trainer", EPOCH_TRAINER),
        "weights": weights_identity(weights_dir),
        "network": run_state["config"],
        "options": run_state.get("args", {}),
        "resumes": run_state.get("resumes", []),
        "init_from": _init_record(run_state.get("init_from"), parent),
        "distil_from": run_state.get("distil_from"),
        "hardware": run_state.get("hardware"),
        "minutes": run_state.get("elapsed", 0.0) / 60,
        "epochs": run_state.get("epoch"),
        "steps": run_state.get("step"),
        # model.train's history is by epoch and stage; another trainer's by progress line
        "stages": stage_summary(run_state.get("history", []))
        if trains_by_epochs(run_state)
        else [],
        "shipped_epoch": {
            **(history[-1] if history else {}),
            "best": shipped_state is not run_state,
        },
        "run_best": best_epoch(run_state.get("history", [])),
        "data": {
            **(run_state.get("data") or {"files": None, "licenses": None}),
            "recipe": run_state.get("recipe", {}),
            "cache_key": run_state.get("train_cache"),
            "stream": run_state.get("stream"),
            "stream_batches": run_state.get("stream_batches", 0),
        },
        "loss": run_state.get("loss"),
    }


def _init_record(
    init_from: dict[str, Any] | None, parent: dict[str, Any] | None
) -> dict[str, Any] | None:
    if not init_from:
        return None
    return {"path": init_from["path"], "sha256": init_from["sha256"], "record": parent}


def record_from_run(checkpoint: Path, weights_dir: Path, data_dir: Path) -> dict[str, Any]:
    """The record of weights exported to ``weights_dir`` from ``checkpoint``; the run's totals
    come from ``checkpoint.pt`` beside it. The record of the weights a fine-tune started from is
    the one its checkpoint kept, else the one still beside that file (by hash). A checkpoint
    from before runs recorded their files gets the training split of ``data_dir`` as it is now.
    A ``model.train`` run's loss is described from its options by this code, and where that
    differs from the description the checkpoint kept, the record says so; another trainer's
    (``model.audio_finetune``) is the one its checkpoint kept."""
    import torch

    def load(path: Path) -> dict[str, Any]:
        return dict(torch.load(path, weights_only=False, map_location="cpu"))

    shipped = load(checkpoint)
    run_path = checkpoint.with_name("checkpoint.pt")
    run = load(run_path) if run_path.exists() and run_path != checkpoint else shipped
    if not run.get("data"):
        run["data"] = {
            **data_record(split_named(data_dir, "train")),
            "recorded_at": "export (the checkpoint predates recording its files)",
        }
    if run.get("args") and trains_by_epochs(run):
        # The loss's description is a function of the run's options; the code exporting knows
        # every option the code that trained did, and maybe newer ones it failed to describe.
        from model.train import loss_record, parse_args

        options = vars(parse_args([])) | run["args"]
        derived = loss_record(argparse.Namespace(**options))
        stored = run.get("loss")
        if stored is None:
            derived["recorded_at"] = "export, from the run's options (none in the checkpoint)"
        elif stored != derived:
            derived["recorded_at"] = (
                "export, from the run's options (the checkpoint's, written by older code, said "
                f"the targets were {stored.get('targets')!r})"
            )
        run["loss"] = derived
    init_from = run.get("init_from")
    parent = None
    if init_from:
        parent = init_from.get("record") or find_record(Path(init_from["path"]))
    return record_from_checkpoints(run, shipped, weights_dir, parent)


def with_strength_scale(
    record: dict[str, Any], weights_dir: Path, network: dict[str, Any]
) -> dict[str, Any]:
    """``record``, for its trained weights exported to ``weights_dir`` as ``network`` (a
    ``NetworkConfig`` dict) with another strength scale (``model.export --strength-scale``):
    the network and the weights' identity as exported, the calibration named."""
    scale = network["strength_scale"]
    return {
        **record,
        "network": network,
        "weights": weights_identity(weights_dir),
        "calibration": {"strength_scale": scale, "by": "model.export --strength-scale"},
    }


def write_record(record: dict[str, Any], weights_dir: Path) -> Path:
    """Write ``record`` beside the weights it describes."""
    path = weights_dir / RECORD_NAME
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return path


def read_record(weights_dir: Path) -> dict[str, Any]:
    """The record beside the weights in ``weights_dir``; ValueError when there is none or it
    describes other trained weights than the fp32 graph there holds."""
    path = weights_dir / RECORD_NAME
    if not path.exists():
        raise ValueError(f"{path} is missing: the weights have no training record")
    record = json.loads(path.read_text())
    if record.get("weights", {}).get("network_sha256") != network_digest(weights_dir / FP32_NAME):
        raise ValueError(f"{path} describes other weights than {weights_dir / FP32_NAME}")
    return dict(record)


def distil_teachers(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The records of the networks distilled into the weights' lineage (``distil_from``), each
    once, in lineage order; a teacher without a record is ``{}`` (unknown)."""
    teachers: list[dict[str, Any]] = []
    for run in lineage(record):
        source = run.get("distil_from")
        if source:
            teacher = source.get("record") or {}
            if teacher not in teachers or not teacher:
                teachers.append(teacher)
    return teachers


def ancestry(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run whose training is part of the weights': their lineage, then, for each network
    distilled into it, that network's ancestry; an unknown run is ``{}``. A run two branches
    share (a student started from its teacher's ancestor) appears in each: count distinct runs
    by equality."""
    runs = list(lineage(record))
    for teacher in distil_teachers(record):
        runs += ancestry(teacher) if teacher else [{}]
    return runs


def lineage(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The record and those of the weights it was fine-tuned from, newest first; a run started
    from weights without a record ends the list with ``{}`` (unknown)."""
    chain = [record]
    while chain[-1].get("init_from"):
        parent = chain[-1]["init_from"].get("record")
        chain.append(parent or {})
        if not parent:
            break
    return chain

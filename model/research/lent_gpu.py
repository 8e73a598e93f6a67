"""A training run on a lent GPU machine (issue 25, lever 4): pack the data here, train there.

Such a machine is lent for minutes, takes a working tree of at most 64 MiB, reaches no package
index and has no PyAV. So:

``pack`` (here) writes the training split, coded as Ogg Opus, into a folder with its own
manifest. Speech and noise recordings are coded at ``--speech-kbps`` / ``--noise-kbps``
(files already in Opus at about that rate are copied as they are); room responses are copied as
they are (a codec would smear an impulse); ``--keep CORPUS=SHARE`` keeps a fixed, hash-chosen
share of a corpus' files. The manifest keeps each file's real bandwidth and lists the dev
split's rows without their audio, so that the committed dev list still resolves and no dev file
can train.

``train`` (there) runs ``model.train`` with the arguments after ``--``. Where PyAV is missing,
the Opus coding of the training inputs calls libopus itself (``--libopus``: the copy PyAV's wheel
bundles) with the settings PyAV gives it. Afterwards the kept epochs' checkpoints (train
with ``--keep-epochs``) are written to ``--weights-out`` without their optimiser state, small
enough to come back, and ``model.export --checkpoint`` reads them as they are.

    python -m model.research.lent_gpu pack --out .gpu/data
    python -m model.research.lent_gpu train --weights-out $OUT --last 5 -- --device cuda ...

docs/training.md, "Training on a lent GPU", has the whole procedure.
"""

from __future__ import annotations

import argparse
import csv
import ctypes
import ctypes.util
import hashlib
import importlib.util
import io
import shutil
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from model.mixtures import SAMPLE_RATE

OPUS_RATES = (8_000, 12_000, 16_000, 24_000, 48_000)  # the input rates Ogg Opus takes
OPUS_APPLICATION_VOIP = 2048  # libopus' constants (opus_defines.h)
OPUS_SET_BITRATE = 4002
OPUS_SET_COMPLEXITY = 4010
OPUS_SET_VBR_CONSTRAINT = 4020
MAX_PACKET_BYTES = 4000
RECODE_ABOVE = 1.25  # an Opus file above this times the asked bitrate is coded again
MAX_RETURNED_BYTES = 15e6  # a lent machine returns files of at most 16 MB
# libsndfile maps its compression level linearly onto the Opus bitrate; measured on noise at
# 48 kHz, 1 - (1.1 * kbps - 8) / 256 gives about the asked bitrate from 16 to 64 kb/s
LEVEL_OFFSET_KBPS, LEVEL_SPAN_KBPS, LEVEL_BITRATE_FACTOR = 8.0, 256.0, 1.1


def opus_level(bitrate_kbps: float) -> float:
    """libsndfile's compression level for about ``bitrate_kbps`` of Opus."""
    level = 1.0 - (LEVEL_BITRATE_FACTOR * bitrate_kbps - LEVEL_OFFSET_KBPS) / LEVEL_SPAN_KBPS
    return float(np.clip(level, 0.0, 1.0))


def opus_bytes(signal: np.ndarray, sample_rate: int, bitrate_kbps: float) -> bytes:
    """``signal`` (mono) as an Ogg Opus file at about ``bitrate_kbps``."""
    buffer = io.BytesIO()
    sf.write(
        buffer,
        signal.astype(np.float32),
        sample_rate,
        format="OGG",
        subtype="OPUS",
        compression_level=opus_level(bitrate_kbps),
    )
    return buffer.getvalue()


class LibOpus:
    """The few calls of libopus' C API that a coding round trip needs, through ctypes (PyAV
    reaches the same library through FFmpeg, but does not fit a lent machine's working tree;
    its wheel bundles the library, 0.4 MB, which does)."""

    def __init__(self, path: str) -> None:
        lib = ctypes.CDLL(path)
        pointer, integer = ctypes.c_void_p, ctypes.c_int
        lib.opus_encoder_create.restype = pointer
        lib.opus_encoder_create.argtypes = [ctypes.c_int32, integer, integer, ctypes.c_void_p]
        lib.opus_decoder_create.restype = pointer
        lib.opus_decoder_create.argtypes = [ctypes.c_int32, integer, ctypes.c_void_p]
        lib.opus_encode_float.restype = ctypes.c_int32
        lib.opus_encode_float.argtypes = [
            pointer,
            ctypes.c_void_p,
            integer,
            pointer,
            ctypes.c_int32,
        ]
        lib.opus_decode_float.restype = integer
        lib.opus_decode_float.argtypes = [
            pointer,
            pointer,
            ctypes.c_int32,
            pointer,
            integer,
            integer,
        ]
        lib.opus_encoder_ctl.restype = integer  # variadic; every request used here takes an int
        lib.opus_encoder_ctl.argtypes = [pointer, integer, integer]
        lib.opus_encoder_destroy.argtypes = lib.opus_decoder_destroy.argtypes = [pointer]
        self.lib = lib

    def round_trip(self, signal: np.ndarray, bitrate_kbps: int) -> np.ndarray:
        """``model.onthefly.opus_round_trip`` through this library: ``signal`` (48 kHz mono)
        coded as PyAV's libopus encoder codes it there (VoIP, 20 ms frames, complexity 10,
        unconstrained VBR) and decoded, aligned with it and of its length."""
        from model.onthefly import OPUS_FRAME_SAMPLES, OPUS_LOOKAHEAD_SAMPLES, opus_frames

        lib, error = self.lib, ctypes.c_int()
        encoder = lib.opus_encoder_create(
            SAMPLE_RATE, 1, OPUS_APPLICATION_VOIP, ctypes.byref(error)
        )
        if not encoder:
            raise RuntimeError(f"libopus could not make an encoder (error {error.value})")
        decoder = lib.opus_decoder_create(SAMPLE_RATE, 1, ctypes.byref(error))
        try:
            if not decoder:
                raise RuntimeError(f"libopus could not make a decoder (error {error.value})")
            lib.opus_encoder_ctl(encoder, OPUS_SET_BITRATE, bitrate_kbps * 1000)
            lib.opus_encoder_ctl(encoder, OPUS_SET_COMPLEXITY, 10)
            lib.opus_encoder_ctl(encoder, OPUS_SET_VBR_CONSTRAINT, 0)  # FFmpeg's "vbr on"
            padded = opus_frames(signal)
            packet = ctypes.create_string_buffer(MAX_PACKET_BYTES)
            decoded = np.zeros_like(padded)
            for start in range(0, padded.shape[0], OPUS_FRAME_SAMPLES):
                frame = padded[start : start + OPUS_FRAME_SAMPLES]
                size = lib.opus_encode_float(
                    encoder, frame.ctypes.data, OPUS_FRAME_SAMPLES, packet, MAX_PACKET_BYTES
                )
                out = decoded[start : start + OPUS_FRAME_SAMPLES]
                got = lib.opus_decode_float(
                    decoder, packet, size, out.ctypes.data, OPUS_FRAME_SAMPLES, 0
                )
                if size < 0 or got != OPUS_FRAME_SAMPLES:
                    raise RuntimeError(f"libopus failed on a frame ({size}, {got})")
        finally:
            lib.opus_encoder_destroy(encoder)
            if decoder:
                lib.opus_decoder_destroy(decoder)
        trimmed = decoded[OPUS_LOOKAHEAD_SAMPLES : OPUS_LOOKAHEAD_SAMPLES + signal.shape[0]]
        return trimmed.astype(np.float64)


def use_libopus_without_pyav(path: str | None) -> bool:
    """Where PyAV is missing: a placeholder ``av`` module, so that ``model.onthefly`` imports,
    and its Opus coding through the libopus at ``path`` (default: the system's). True when it
    was needed. Call before anything imports ``model.onthefly``; DataLoader workers forked
    later inherit it. SystemExit with an ``error:`` line when there is no libopus."""
    if "av" in sys.modules or importlib.util.find_spec("av") is not None:
        return False
    found = path or ctypes.util.find_library("opus")
    if not found:
        raise SystemExit("error: PyAV is missing and no libopus was found: give --libopus PATH")
    try:
        coder = LibOpus(found)
    except OSError as exc:
        raise SystemExit(f"error: --libopus: {exc}") from None
    sys.modules["av"] = types.ModuleType("av")  # never called: the coding below replaces it
    import model.onthefly

    model.onthefly.opus_round_trip = coder.round_trip
    return True


def kept(relative_path: str, share: float) -> bool:
    """Whether a file is in the fixed ``share`` of its corpus (by a hash of its path)."""
    digest = hashlib.sha256(relative_path.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def _packed_audio(source: Path, kind: str, kbps: float, seconds: float) -> tuple[str, bytes]:
    """(suffix, content) of one packed file: room responses, and Opus files within a quarter
    above ``kbps``, as they are; the rest coded as Opus at ``kbps``."""
    size_kbps = source.stat().st_size * 8 / 1000 / max(seconds, 1e-3)
    if kind == "rir" or (source.suffix == ".opus" and size_kbps <= RECODE_ABOVE * kbps):
        return source.suffix, source.read_bytes()
    audio, rate = sf.read(source, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if rate not in OPUS_RATES:
        mono = soxr.resample(mono, rate, SAMPLE_RATE).astype(np.float32)
        rate = SAMPLE_RATE
    return ".opus", opus_bytes(mono, rate, kbps)


def pack(
    data_dir: Path,
    out: Path,
    speech_kbps: float = 20.0,
    noise_kbps: float = 20.0,
    keep: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Write the training split of ``data_dir`` to ``out`` as described above; returns the
    files, minutes and megabytes written."""
    from model.splits import MANIFEST_FILE, load_dev_list, split_files
    from model.training_record import corpus_of

    train, _ = split_files(data_dir)
    training = {f.relative_path: f for f in (*train.speech, *train.noise, *train.rooms)}
    dev = load_dev_list()
    dev_paths = {*dev.speech, *dev.noise, *dev.rooms}
    shares = dict(keep or {})
    with open(data_dir / MANIFEST_FILE, newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = list(reader.fieldnames or []), list(reader)
    out.mkdir(parents=True, exist_ok=True)
    written: list[dict[str, str]] = []
    summary = {"files": 0.0, "minutes": 0.0, "megabytes": 0.0}
    for row in rows:
        path = row["path"]
        if path in dev_paths:
            written.append(row)  # named by the dev list; its audio stays behind
            continue
        if path not in training or not kept(path, shares.get(corpus_of(training[path]), 1.0)):
            continue
        kbps = speech_kbps if row["kind"] == "clean" else noise_kbps
        suffix, content = _packed_audio(data_dir / path, row["kind"], kbps, float(row["seconds"]))
        packed = str(Path(path).with_suffix(suffix))
        (out / packed).parent.mkdir(parents=True, exist_ok=True)
        (out / packed).write_bytes(content)
        written.append(
            row | {"path": packed} | ({"bytes": str(len(content))} if "bytes" in row else {})
        )
        summary["files"] += 1
        summary["minutes"] += float(row["seconds"]) / 60
        summary["megabytes"] += len(content) / 1e6
    with open(out / MANIFEST_FILE, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(written)
    return {key: round(value, 2) for key, value in summary.items()}


def strip_checkpoints(
    run: Path, out: Path, last: int, max_bytes: float = MAX_RETURNED_BYTES
) -> list[Path]:
    """The last ``last`` ``epoch_NNN.pt`` of ``run``, written to ``out`` without their
    optimiser state (weights on the CPU, in float16 where float32 would exceed ``max_bytes``);
    returns their paths."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(run.glob("epoch_*.pt"))[-last:] if last > 0 else []:
        state = torch.load(path, weights_only=False, map_location="cpu")
        state.pop("optimizer", None)
        weights = state["model"]
        if sum(t.numel() * t.element_size() for t in weights.values()) > max_bytes:
            state["model"] = {
                k: t.half() if t.is_floating_point() else t for k, t in weights.items()
            }
        target = out / path.name
        torch.save(state, target)
        written.append(target)
    return written


def parse_keep(text: str) -> tuple[str, float]:
    """``CORPUS=SHARE`` of ``--keep``."""
    corpus, _, share = text.partition("=")
    try:
        value = float(share)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CORPUS=SHARE, got {text!r}") from None
    if not corpus or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected CORPUS=SHARE with SHARE in [0, 1]: {text!r}")
    return corpus, value


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m model.research.lent_gpu``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, train_args = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="write the training split as Opus (here)")
    packing.add_argument("--data-dir", type=Path, default=None)
    packing.add_argument("--out", type=Path, required=True)
    packing.add_argument("--speech-kbps", type=float, default=20.0)
    packing.add_argument("--noise-kbps", type=float, default=20.0)
    packing.add_argument("--keep", type=parse_keep, action="append", default=[])
    training = commands.add_parser("train", help="model.train with the arguments after --")
    training.add_argument("--weights-out", type=Path, required=True)
    training.add_argument("--last", type=int, default=5, help="kept epochs to write out")
    training.add_argument("--libopus", default=None, help="libopus, where PyAV is missing")
    args = parser.parse_args(argv)
    if args.command == "pack":
        from model.devset import require_data_dir

        try:
            data_dir = require_data_dir(args.data_dir)
        except FileNotFoundError as exc:
            raise SystemExit(f"error: no data manifest to pack ({exc})") from None
        if args.out.exists() and any(args.out.iterdir()):
            raise SystemExit(f"error: {args.out} is not empty")
        try:
            summary = pack(data_dir, args.out, args.speech_kbps, args.noise_kbps, dict(args.keep))
        except ValueError as exc:
            raise SystemExit(f"error: {exc}") from None
        print(summary)
        return
    if not train_args:
        raise SystemExit("error: give model.train's arguments after --")
    if use_libopus_without_pyav(args.libopus):
        print("PyAV is missing: the inputs' Opus coding calls libopus itself", flush=True)
    from model import train

    options = train.parse_args(train_args)
    train.main(train_args)
    for path in strip_checkpoints(Path(options.out), args.weights_out, args.last):
        print(f"weights: {path}", flush=True)
    history = Path(options.out) / "history.json"
    if history.exists():
        shutil.copyfile(history, args.weights_out / "history.json")


if __name__ == "__main__":
    main()

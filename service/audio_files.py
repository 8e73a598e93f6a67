"""Audio files in and out of the 48 kHz DSP chain: read, check, resample, write.

Everything soundfile (libsndfile) reads is accepted at any rate and channel count. Samples are
float64 ``[frames, channels]``; :func:`to_48k` and :func:`from_48k` move them to the chain's
rate and back with soxr, keeping the original frame count. Every problem with a file is an
:class:`AudioFileError` whose message is one line, fit for ``error: <message>`` on a CLI.
"""

from __future__ import annotations

import os
import secrets
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from dsp.constants import SAMPLE_RATE_HZ

RESAMPLE_QUALITY = "VHQ"  # soxr's best: passband to 0.95 × Nyquist, ~170 dB stopband
_FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})
# Extensions that do not spell a libsndfile format name.
_EXTENSION_ALIASES = {"aif": "AIFF", "aifc": "AIFF", "oga": "OGG", "opus": "OGG", "wave": "WAV"}
_UNKNOWN_SIZE_32 = 0xFFFFFFFF  # streaming writers leave this (or 0) when they cannot seek back


class AudioFileError(ValueError):
    """A file that cannot be used: missing, unreadable, truncated, empty or mismatched."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))  # always one line


@dataclass(frozen=True)
class AudioClip:
    """A whole decoded file and what is needed to write a result in the same format."""

    path: Path
    samples: np.ndarray  # float64 [frames, channels], full scale ±1
    sample_rate_hz: int
    format: str  # libsndfile major format, e.g. "WAV"
    subtype: str  # e.g. "PCM_16"
    endian: str  # "FILE", "LITTLE", "BIG" or "CPU"

    @property
    def frames(self) -> int:
        """Samples per channel."""
        return int(self.samples.shape[0])

    @property
    def channels(self) -> int:
        """Channel count."""
        return int(self.samples.shape[1])

    @property
    def seconds(self) -> float:
        """Duration in seconds."""
        return self.frames / self.sample_rate_hz


def read_audio(path: str | os.PathLike[str]) -> AudioClip:
    """Read a whole file as float64 ``[frames, channels]``.

    :raises AudioFileError: the file is missing, not audio, unsupported, truncated, empty, or
        holds NaN/infinite samples.
    """
    path = Path(path)
    if not path.exists():
        raise AudioFileError(f"no such file: {path}")
    if path.is_dir():
        raise AudioFileError(f"{path} is a directory, not an audio file")
    try:
        with sf.SoundFile(path) as f:
            samples = f.read(dtype="float64", always_2d=True)
            declared_frames = int(f.frames)
            sample_rate_hz = int(f.samplerate)
            fmt, subtype, endian = str(f.format), str(f.subtype), str(f.endian)
    except sf.LibsndfileError as exc:
        raise AudioFileError(f"cannot read {path}: {exc.error_string}") from exc
    except (sf.SoundFileError, RuntimeError, OSError) as exc:
        raise AudioFileError(f"cannot read {path}: {exc}") from exc
    if samples.shape[0] != declared_frames:
        raise AudioFileError(
            f"{path} is truncated: it declares {declared_frames} frames but only "
            f"{samples.shape[0]} could be decoded"
        )
    _check_data_chunk(path)
    if samples.shape[0] == 0:
        raise AudioFileError(f"{path} is empty (0 frames)")
    nonfinite = int(np.count_nonzero(~np.isfinite(samples)))
    if nonfinite:
        raise AudioFileError(f"{path} holds {nonfinite} NaN or infinite samples")
    return AudioClip(path, samples, sample_rate_hz, fmt, subtype, endian)


def _check_data_chunk(path: Path) -> None:
    """Raise if the container header promises more audio bytes than the file holds.

    libsndfile quietly shortens such files to the bytes present (it only notes it in its log),
    so a WAV cut short in a copy would otherwise pass as a shorter, valid recording.
    """
    file_bytes = path.stat().st_size
    with open(path, "rb") as f:
        declared_end = _declared_data_end(f, file_bytes)
    if declared_end is not None and declared_end > file_bytes:
        raise AudioFileError(
            f"{path} is truncated: its header declares audio data up to byte {declared_end} "
            f"but the file has {file_bytes} bytes"
        )


def _declared_data_end(f: BinaryIO, file_bytes: int) -> int | None:
    """Byte offset where the header says the audio data ends, or None if not stated."""
    head = f.read(16)
    if len(head) < 12:
        return None
    magic = head[:4]
    if magic in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return _riff_data_end(f, file_bytes, "<" if magic != b"RIFX" else ">")
    if magic == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return _walk_chunks(f, file_bytes, 12, ">4sI", b"SSND", header_bytes=8, align=2)
    if magic == b"caff":
        return _walk_chunks(f, file_bytes, 8, ">4sq", b"data", header_bytes=12, align=1)
    if magic == b"riff" and len(head) == 16:  # Sony Wave64: 16-byte GUIDs, sizes include header
        return _walk_chunks(f, file_bytes, 40, "<16sQ", b"data", header_bytes=0, align=8)
    if magic == b".snd":
        offset, size = struct.unpack(">II", head[4:12])
        return None if size in (0, _UNKNOWN_SIZE_32) else offset + size
    return None


def _riff_data_end(f: BinaryIO, file_bytes: int, endian: str) -> int | None:
    """End of the ``data`` chunk of a RIFF/RIFX/RF64 WAVE file (RF64 sizes from ``ds64``)."""
    pos = 12
    ds64_data_bytes: int | None = None
    while pos + 8 <= file_bytes:
        f.seek(pos)
        chunk_id, size = struct.unpack(endian + "4sI", f.read(8))
        if chunk_id == b"ds64":
            body = f.read(16)
            if len(body) == 16:
                ds64_data_bytes = struct.unpack("<QQ", body)[1]
        elif chunk_id == b"data":
            if size == _UNKNOWN_SIZE_32 and ds64_data_bytes is not None:
                size = ds64_data_bytes
            elif size in (0, _UNKNOWN_SIZE_32):
                return None
            return pos + 8 + size
        pos += 8 + size + (size & 1)  # chunks are padded to an even size
    return None


def _walk_chunks(
    f: BinaryIO,
    file_bytes: int,
    start: int,
    layout: str,
    data_id: bytes,
    header_bytes: int,
    align: int,
) -> int | None:
    """End of the first chunk whose id starts with ``data_id`` (AIFF, CAF, Wave64 layouts).

    ``header_bytes`` is what a chunk header adds to its stated size (0 where the size already
    includes the header); chunks start on multiples of ``align``.
    """
    header_len = struct.calcsize(layout)
    pos = start
    while pos + header_len <= file_bytes:
        f.seek(pos)
        chunk_id, size = struct.unpack(layout, f.read(header_len))
        if size < 0:  # CAF: -1 on the last chunk means "to the end of the file"
            return None
        end = pos + header_bytes + size
        if end <= pos:  # a malformed zero size would never advance
            return None
        if chunk_id.startswith(data_id):
            return end if size > 0 else None
        pos = end + (-end % align)
    return None


def check_same_timing(reference: AudioClip, other: AudioClip) -> None:
    """Require equal sample rates and frame counts (e.g. a noisy file and its clean source).

    :raises AudioFileError: on any mismatch.
    """
    if other.sample_rate_hz != reference.sample_rate_hz:
        raise AudioFileError(
            f"sample rates differ: {reference.path} is {reference.sample_rate_hz} Hz, "
            f"{other.path} is {other.sample_rate_hz} Hz"
        )
    if other.frames != reference.frames:
        raise AudioFileError(
            f"lengths differ: {reference.path} has {reference.frames} frames, "
            f"{other.path} has {other.frames}"
        )


def check_output_path(
    output: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]]
) -> Path:
    """Return ``output`` as a Path if it can be written and is none of the input files
    (compared after resolving symlinks, and by inode where both exist, so hard links count).

    :raises AudioFileError: the output would overwrite an input, is a directory, has an
        extension no writable format goes by, or its folder does not exist.
    """
    output = Path(output)
    for source in map(Path, inputs):
        same = output.resolve() == source.resolve() or (
            output.exists() and source.exists() and os.path.samefile(output, source)
        )
        if same:
            raise AudioFileError(f"refusing to overwrite the input file {source}")
    if output.is_dir():
        raise AudioFileError(f"output {output} is a directory")
    check_output_extension(output)
    if not output.parent.is_dir():
        raise AudioFileError(f"output folder {output.parent} does not exist")
    return output


def _format_of_extension(ext: str) -> str | None:
    """The libsndfile format an extension (without the dot) names, if any."""
    known = {name.lower(): name for name in sf.available_formats()}
    return known.get(ext.lower()) or _EXTENSION_ALIASES.get(ext.lower())


def check_output_extension(output: Path) -> None:
    """Refuse an output file name whose extension names no format that can be written
    (no extension at all keeps the input's format).

    :raises AudioFileError: e.g. ``out.xyz``.
    """
    ext = output.suffix.lstrip(".")
    if ext and _format_of_extension(ext) is None:
        known = sorted({name.lower() for name in sf.available_formats()} | set(_EXTENSION_ALIASES))
        raise AudioFileError(
            f"cannot write {output}: no audio format goes by the extension '.{ext}' "
            f"(use one of {', '.join('.' + name for name in known)}, or none to keep the "
            "input's format)"
        )


def prepare_output_folder(folder: Path) -> None:
    """Create ``folder`` if needed and make sure a file can be created in it.

    :raises AudioFileError: it cannot be created or written to.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise AudioFileError(
            f"cannot write to the output folder {folder}: {exc.strerror or exc}"
        ) from exc


def to_48k(clip: AudioClip) -> np.ndarray:
    """The clip's samples at 48 kHz, float64 ``[frames_48k, channels]``, time-aligned."""
    if clip.sample_rate_hz == SAMPLE_RATE_HZ:
        return clip.samples
    return np.asarray(
        soxr.resample(clip.samples, clip.sample_rate_hz, SAMPLE_RATE_HZ, RESAMPLE_QUALITY),
        dtype=np.float64,
    )


def from_48k(samples_48k: np.ndarray, sample_rate_hz: int, frames: int) -> np.ndarray:
    """Resample 48 kHz ``[frames_48k, channels]`` back to ``sample_rate_hz``, exactly ``frames``
    long (soxr's length can differ from the original by a sample; the tail is trimmed or
    zero-padded)."""
    samples_48k = np.asarray(samples_48k, dtype=np.float64)
    if sample_rate_hz == SAMPLE_RATE_HZ:
        out = samples_48k
    else:
        out = soxr.resample(samples_48k, SAMPLE_RATE_HZ, sample_rate_hz, RESAMPLE_QUALITY)
    fitted = np.zeros((frames, samples_48k.shape[1]), dtype=np.float64)
    kept = min(frames, out.shape[0])
    fitted[:kept] = out[:kept]
    return fitted


def output_format(output: Path, like: AudioClip) -> tuple[str, str, str]:
    """(format, subtype, endian) for writing ``output`` in the format of ``like``.

    The input's format is kept unless the output's extension names another one (``-o x.flac``
    from a WAV writes FLAC); the subtype is kept wherever the format accepts it.

    :raises AudioFileError: libsndfile cannot write that combination.
    """
    ext = output.suffix.lower().lstrip(".")
    fmt = _format_of_extension(ext) or like.format
    if fmt == like.format:
        chosen = fmt, like.subtype, like.endian
    elif ext == "opus" and sf.check_format(fmt, "OPUS"):
        chosen = fmt, "OPUS", "FILE"
    else:
        subtype = like.subtype if sf.check_format(fmt, like.subtype) else sf.default_subtype(fmt)
        chosen = fmt, subtype, "FILE"
    if not sf.check_format(*chosen):
        raise AudioFileError(
            f"cannot write {chosen[0]}/{chosen[1]} ({chosen[2]} endian) to {output}"
        )
    return chosen


def write_audio(
    output: str | os.PathLike[str], samples: np.ndarray, sample_rate_hz: int, like: AudioClip
) -> int:
    """Write ``[frames, channels]`` samples in the format/subtype of ``like``.

    Integer and compressed subtypes are clipped to ±1 first (libsndfile would wrap around).
    The file appears only once complete (written beside it, then renamed).

    :returns: the number of samples that were clipped.
    :raises AudioFileError: the format/subtype cannot be written or the write failed.
    """
    output = Path(output)
    fmt, subtype, endian = output_format(output, like)
    samples = np.asarray(samples, dtype=np.float64)
    clipped = 0
    if subtype not in _FLOAT_SUBTYPES:
        over = np.abs(samples) > 1.0
        clipped = int(np.count_nonzero(over))
        if clipped:
            samples = np.clip(samples, -1.0, 1.0)
    # Created by libsndfile itself so that the usual umask applies.
    tmp_name = output.with_name(f".{output.name}.{secrets.token_hex(4)}.part")
    try:
        sf.write(tmp_name, samples, sample_rate_hz, subtype, endian, fmt)
        os.replace(tmp_name, output)
    except (sf.SoundFileError, RuntimeError, OSError, ValueError, TypeError) as exc:
        tmp_name.unlink(missing_ok=True)
        reason = exc.error_string if isinstance(exc, sf.LibsndfileError) else str(exc)
        raise AudioFileError(f"cannot write {output} as {fmt}/{subtype}: {reason}") from exc
    return clipped

"""How clean each speech recording is, so that noisy "clean" recordings are not training targets.

An utterance that carries its own background (microphone hiss, room tone, a fan) puts that
background into the oracle targets, and the network learns to keep it. On the dev split most
of the DNSMOS OVRL gap to RNNoise lay on the 16 kHz recordings, several of which DNSMOS itself
rates BAK 3.0–3.5 as they are, while RNNoise removes their background along with the added
noise. The measure is DNSMOS P.835 BAK of the recording alone, as the DNS Challenge picked its
clean speech; a model-free measure (loud over quiet frame levels) ranked the files too poorly
(correlation with BAK 0.44–0.48 within a corpus) to use.

Scores are kept in one JSON table in the feature-cache folder, keyed by the file's path and
size, so each recording is scored once (about 0.5 s of one core each).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from model.splits import AudioFile

if TYPE_CHECKING:  # the evaluation (pesq, pystoi, speechmos) loads only when scoring
    from model.evaluate import DnsmosScorer

SCORES_FILE = "speech-dnsmos-bak.json"


def scores_path(cache_dir: Path) -> Path:
    """Where the score table of a cache folder lives."""
    return cache_dir / SCORES_FILE


def _score_key(file: AudioFile) -> str:
    return f"{file.relative_path}:{file.path.stat().st_size}"


@lru_cache(maxsize=1)
def _dnsmos() -> DnsmosScorer:
    """One DNSMOS session per scoring process."""
    from model.evaluate import DnsmosScorer

    return DnsmosScorer()


def recording_bak(path: Path) -> float:
    """DNSMOS P.835 BAK of one recording, mono at 16 kHz, as the evaluation scores audio."""
    from model.devset import read_mono_48k
    from model.evaluate import to_metric_rate

    return _dnsmos()(to_metric_rate(read_mono_48k(path)))[1]


def read_scores(cache_dir: Path) -> dict[str, float]:
    """The score table of a cache folder (empty when none was written)."""
    path = scores_path(cache_dir)
    return json.loads(path.read_text()) if path.exists() else {}


def score_recordings(
    files: Iterable[AudioFile], cache_dir: Path, workers: int = 2
) -> dict[str, float]:
    """Score every file not yet in the table (in parallel, with a progress bar), save the table
    and return it."""
    table = read_scores(cache_dir)
    missing = [f for f in files if _score_key(f) not in table]
    if missing:
        with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
            scores = pool.map(recording_bak, [f.path for f in missing], chunksize=8)
            for file, score in tqdm(
                zip(missing, scores, strict=True), total=len(missing), desc="speech DNSMOS BAK",
                unit="file",
            ):
                table[_score_key(file)] = float(score)
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = scores_path(cache_dir).with_suffix(".partial")
        partial.write_text(json.dumps(table, indent=0, sort_keys=True))
        partial.replace(scores_path(cache_dir))
    return table


def clean_recordings(
    files: Iterable[AudioFile], min_bak: float | None, scores: Mapping[str, float]
) -> list[AudioFile]:
    """The files whose BAK in ``scores`` is at least ``min_bak`` (every file for ``None``)."""
    files = list(files)
    if min_bak is None:
        return files
    unscored = [f.relative_path for f in files if _score_key(f) not in scores]
    if unscored:
        raise ValueError(f"{len(unscored)} recordings have no score, e.g. {unscored[0]}")
    kept = [f for f in files if scores[_score_key(f)] >= min_bak]
    if not kept:
        raise ValueError(f"no speech recording has a DNSMOS BAK of {min_bak} or more")
    return kept

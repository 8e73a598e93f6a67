"""Load the model and compile the numba kernels once: ``python -m service.warm_up [MODEL]``.

The relay does this at start-up before it reports ready; the Docker image runs it at build time
so the kernels' on-disk cache ships in the image.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from dsp.constants import HOP_SAMPLES
from model.runtime import DEFAULT_MODEL, ModelFileError, ModelRuntime
from service.speaker import EnhancementSettings, SpeakerPipeline


def warm_up(runtime: ModelRuntime) -> None:
    """Run a few hops through the whole chain (compiles or loads every kernel)."""
    pipeline = SpeakerPipeline(runtime, EnhancementSettings())
    # five hops: two pairs (the two-hop graph) and one hop alone (the one-hop graph)
    noise = np.random.default_rng(0).standard_normal(5 * HOP_SAMPLES).astype(np.float32)
    pipeline.process(0.01 * noise)


def main() -> None:
    """Entry point: warm up with the given or the shipped model and say how long it took."""
    start = time.perf_counter()
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_MODEL
    try:
        runtime = ModelRuntime(path)
    except ModelFileError as exc:
        raise SystemExit(f"error: {exc}") from exc
    warm_up(runtime)
    print(f"warm: {path.name}, {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

"""PercepNet signal processing: numba kernels and the streaming enhancer.

numba's on-disk cache keys a function on its own source file only, so a kernel that inlines a
callee from another module would keep stale machine code after that module changes. Before any
kernel is compiled, the caches of this package are dropped whenever any of its sources differ
from those the caches were built from.
"""

import hashlib
from pathlib import Path


def _drop_stale_kernel_cache() -> None:
    package = Path(__file__).parent
    digest = hashlib.sha256()
    for source in sorted(package.glob("*.py")):
        digest.update(source.name.encode())
        digest.update(source.read_bytes())
    cache_dir = package / "__pycache__"
    stamp = cache_dir / "numba-sources.sha256"
    try:
        if stamp.exists() and stamp.read_text() == digest.hexdigest():
            return
        for cached in [*cache_dir.glob("*.nbi"), *cache_dir.glob("*.nbc")]:
            cached.unlink(missing_ok=True)
        cache_dir.mkdir(exist_ok=True)
        stamp.write_text(digest.hexdigest())
    except OSError:  # read-only install: numba then caches elsewhere or not at all
        pass


_drop_stale_kernel_cache()

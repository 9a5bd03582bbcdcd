"""Digests of files and of source code, for checkpoint fingerprints and cache keys; seeds derived from keys.

A result made by older code or from other weights must never be reused: every training checkpoint, the
evaluation's image cache and the NFE sweep's sample cache are keyed by the digests of what they depend on.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import zlib
from pathlib import Path

import numpy as np

WEIGHT_SUFFIXES = (".safetensors", ".json", ".bin", ".txt")


def file_digest(*files: Path) -> str:
    """md5 over files, or over the weight and config files of folders (e.g. the pipeline a run starts from)."""
    h = hashlib.md5()
    for f in files:
        for p in sorted(Path(f).rglob("*")) if Path(f).is_dir() else [Path(f)]:
            if p.is_file() and p.suffix in WEIGHT_SUFFIXES:
                h.update(p.name.encode())
                h.update(hashlib.md5(p.read_bytes()).digest())
    return h.hexdigest()


def source_digest(*objs) -> str:
    """md5 over the source files that define `objs`: module names, or classes and instances (with every class they
    inherit from inside this package). Callers name the modules their result depends on beyond the objects' own
    (the training loop names itself, the sampling math and the pipeline wrapper)."""
    files: set[str] = set()
    for obj in objs:
        if isinstance(obj, str):
            files.add(inspect.getsourcefile(importlib.import_module(obj)))
            continue
        cls = obj if isinstance(obj, type) else type(obj)
        for c in cls.__mro__:
            if c.__module__.split(".")[0] == "replication":
                files.add(inspect.getsourcefile(c))
    h = hashlib.md5()
    for f in sorted(files):
        h.update(Path(f).name.encode())
        h.update(Path(f).read_bytes())
    return h.hexdigest()


def derive_seed(seed: int, *keys) -> int:
    """A 63-bit seed from an image's seed and any keys (ints or strings), independent of batching."""
    ints = [int(seed)] + [k if isinstance(k, int) else zlib.crc32(str(k).encode()) for k in keys]
    return int(np.random.SeedSequence([abs(i) for i in ints]).generate_state(1, np.uint64)[0] % (2**63 - 1))


def candidate_seed(seed: int, candidate: int) -> int:
    """The seed of an image's candidate j: j = 0 is the image's own seed, j > 0 one derived from it (best-of-N's
    candidates; the evaluation generates them with `evaluate.generate_rows(..., candidate=j)`)."""
    return int(seed) if candidate == 0 else derive_seed(seed, "initial-noise", candidate)

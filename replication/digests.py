"""Digests of files and of source code, for checkpoint fingerprints and cache keys.

A result made by older code or from other weights must never be reused: every training checkpoint, the
evaluation's image cache and the NFE sweep's sample cache are keyed by the digests of what they depend on.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from pathlib import Path

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

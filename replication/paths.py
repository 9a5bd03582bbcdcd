"""Where things live. Every path resolves from the repository root, so a notebook runs the same
from JupyterLab (cwd = notebooks/) and from papermill or a test (cwd = the root)."""

from __future__ import annotations

import os
from pathlib import Path


def root() -> Path:
    """The repository root: $REPLICATION_ROOT, else the nearest parent holding dvc.yaml and params.yaml."""
    env = os.environ.get("REPLICATION_ROOT")
    if env:
        return Path(env).resolve()
    for base in (Path.cwd(), Path(__file__).resolve().parent):
        for p in (base, *base.parents):
            if (p / "dvc.yaml").exists() and (p / "params.yaml").exists():
                return p
    raise FileNotFoundError(
        "cannot find the repository root (a folder with dvc.yaml and params.yaml); "
        "run from inside the repository or set REPLICATION_ROOT"
    )


def data() -> Path:
    return root() / "data"


def models() -> Path:
    return root() / "models"


def results() -> Path:
    return root() / "results"


def train_logs() -> Path:
    return results() / "train"


def generated() -> Path:
    """Data sets a stage generates and others read (DVC-cached outputs: judged pairs, sweep images)."""
    return root() / "generated"


def figures() -> Path:
    return root() / "paper_figures"


def checkpoints() -> Path:
    """Resumable training state; outside every DVC output, so `dvc repro` never deletes it."""
    return root() / ".checkpoints"


def cache() -> Path:
    """Generated-image cache of the evaluation (keyed by model hash, prompts and sampler settings)."""
    return root() / ".cache" / "images"


def resolve(p: str | os.PathLike) -> Path:
    """A path from params.yaml: absolute as is, relative to the repository root otherwise."""
    p = Path(p)
    return p if p.is_absolute() else root() / p


def model_source(name: str) -> str | Path:
    """A params.yaml model reference: a repository folder (models/..., ./..., /...) or a hub id."""
    return resolve(name) if name.startswith(("models", ".", "/")) else name


def display(p: str | os.PathLike) -> str:
    """A path as result files record it: relative to the repository root when inside it (results are committed
    and must not depend on where the repository was cloned), else as given."""
    p = Path(p)
    try:
        return p.resolve().relative_to(root()).as_posix()
    except ValueError:
        return str(p)


def write_json(path: Path, obj) -> Path:
    """A result file: sorted keys, two-space indent, a final newline (stable bytes for git and DVC)."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    return path


def strip_local_paths(folder: Path) -> list[Path]:
    """Drop `_name_or_path` from the JSON configs under folder where it is an absolute path.

    diffusers and transformers record the folder a model was loaded from in every saved config
    ("/work/main/models/base/unet"), which makes a saved model's bytes, and so its DVC hash, depend on
    where the checkout lives. Hub ids ("stabilityai/...") are kept. Returns the files rewritten."""
    import json

    changed = []
    for f in sorted(Path(folder).rglob("*.json")):
        try:
            cfg = json.loads(f.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(cfg, dict) and os.path.isabs(str(cfg.get("_name_or_path", ""))):
            del cfg["_name_or_path"]
            changed.append(write_json(f, cfg))
    return changed

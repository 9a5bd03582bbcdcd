"""Datasets and prompt sets of both scales.

Tiny world (``data/``, pinned by ``data.dvc``): three image-caption training sets in the roles
of the paper's SFT datasets, and four prompt sets. Generation is deterministic (PCG64 streams,
integer rendering, canonical JSON), so a fresh clone regenerates the exact bytes that
``data.dvc`` pins; ``python -m replication.data ensure`` does that and fails loudly if the hash
differs.

| name        | role (paper)                 | content                                            |
|-------------|------------------------------|----------------------------------------------------|
| t2i2m       | Text-to-Image-2M (large)     | 1-3 objects, short captions stating random subsets |
| journeydb   | JourneyDB (detailed prompts) | 2-3 objects, every attribute and relation stated   |
| pokemon     | Pokemon-BLIP (narrow domain) | one large centred object on white, BLIP-like text  |
| drawbench   | DrawBench (200 prompts)      | colours, counting, positional, descriptions, ...   |
| compbench   | T2I-CompBench                | 7 categories, seen and held-out compositions       |
| rlhf_pool   | RLHF prompts                 | prompts of every style, no held-out, no eval text  |

Paper scale: ``load_hf_image_text`` reads a Hugging Face image-text dataset (JourneyDB,
Text-to-Image-2M, pokemon-blip-captions) with the `datasets` library (extra ``[sdxl]``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import paths
from .world import Sampler, render_batch, sample_captioned, vocab

CANVAS = 32
WORLD_VERSION = 2


@dataclass(frozen=True)
class ImageSetSpec:
    role: str
    style: str
    size: int
    seed: int


IMAGE_SETS: dict[str, ImageSetSpec] = {
    "t2i2m": ImageSetSpec("Text-to-Image-2M", "generic", 16000, 11),
    "journeydb": ImageSetSpec("JourneyDB", "detailed", 4000, 12),
    "pokemon": ImageSetSpec("Pokemon-BLIP-captions", "pokemon", 1000, 13),
}

# DrawBench-like: 200 prompts over seven categories (DrawBench's own has 11 with 200 prompts).
DRAWBENCH = {
    "colors": ("color", 30),
    "counting": ("numeracy", 30),
    "positional": ("spatial", 30),
    "descriptions": ("detailed", 30),
    "textures": ("texture", 25),
    "comparisons": ("non_spatial", 25),
    "rare": ("complex", 30),
}
COMPBENCH_PER_SPLIT = 100
RLHF_POOL = 2000
PROMPT_SEEDS = {"drawbench": 21, "compbench": 22, "rlhf_pool": 23}
RLHF_STYLES = ("generic", "detailed", "pokemon") + vocab.CATEGORIES  # the RLHF pool draws a style per prompt


def _dumps(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(_dumps(r) + "\n" for r in rows))


# ----------------------------------------------------------------------------- building
def build_image_set(name: str) -> tuple[np.ndarray, list[dict]]:
    spec = IMAGE_SETS[name]
    s = Sampler(np.random.default_rng(spec.seed), CANVAS)
    rows, scenes = [], []
    for i in range(spec.size):
        scene, text, claims = sample_captioned(s, spec.style, heldout=False)
        scenes.append(scene)
        rows.append({"id": i, "caption": text, "spec": claims.to_json(), "scene": scene.to_json()})
    return render_batch(scenes), rows


def build_prompt_sets() -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    s = Sampler(np.random.default_rng(PROMPT_SEEDS["drawbench"]), CANVAS, allow_heldout=True)
    rows = []
    for cat, (style, k) in DRAWBENCH.items():
        for _ in range(k):
            _, text, claims = sample_captioned(s, style, heldout=True if cat == "rare" else False)
            rows.append({"category": cat, "prompt": text, "spec": claims.to_json()})
    out["drawbench"] = rows

    s = Sampler(np.random.default_rng(PROMPT_SEEDS["compbench"]), CANVAS, allow_heldout=True)
    rows = []
    for cat in vocab.CATEGORIES:
        for split in ("seen", "heldout"):
            if split == "heldout" and cat == "shape":
                continue  # shape prompts state sizes and shapes only: no held-out colour/texture pairing
            for _ in range(COMPBENCH_PER_SPLIT):
                scene, text, claims = sample_captioned(s, cat, heldout=split == "heldout")
                # the scene the prompt was drawn from: its render is the prompt's oracle image (the VAE's
                # ceiling per category, oracle fine-tuning data)
                rows.append(
                    {
                        "category": cat,
                        "split": split,
                        "prompt": text,
                        "spec": claims.to_json(),
                        "scene": scene.to_json(),
                    }
                )
    out["compbench"] = rows

    evaluation = {r["prompt"] for r in out["drawbench"]} | {r["prompt"] for r in out["compbench"]}
    s = Sampler(np.random.default_rng(PROMPT_SEEDS["rlhf_pool"]), CANVAS)
    rows = []
    seen = set()
    for _ in range(50 * RLHF_POOL):
        if len(rows) == RLHF_POOL:
            break
        style = s.choice(RLHF_STYLES)  # random, so a style with few distinct prompts (shape) cannot stall the pool
        _, text, claims = sample_captioned(s, style, heldout=False)
        if text in evaluation or text in seen:
            continue
        seen.add(text)
        rows.append({"style": style, "prompt": text, "spec": claims.to_json()})
    if len(rows) < RLHF_POOL:
        raise RuntimeError(f"only {len(rows)} distinct RLHF prompts could be drawn")
    out["rlhf_pool"] = rows
    for rows in out.values():
        for i, r in enumerate(rows):
            r["id"] = i
    return out


def build(out_dir: Path) -> None:
    """Write the whole tiny-world data folder (deterministic bytes)."""
    tmp = out_dir.with_name(out_dir.name + ".building")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    manifest = {"world_version": WORLD_VERSION, "canvas": CANVAS, "image_sets": {}, "prompt_sets": {}}
    for name, spec in IMAGE_SETS.items():
        images, rows = build_image_set(name)
        d = tmp / name
        d.mkdir()
        np.save(d / "images.npy", images, allow_pickle=False)
        _write_jsonl(d / "captions.jsonl", rows)
        manifest["image_sets"][name] = {"role": spec.role, "style": spec.style, "size": spec.size, "seed": spec.seed}
    (tmp / "prompts").mkdir()
    for name, rows in build_prompt_sets().items():
        _write_jsonl(tmp / "prompts" / f"{name}.jsonl", rows)
        manifest["prompt_sets"][name] = {"size": len(rows), "seed": PROMPT_SEEDS[name]}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


# ----------------------------------------------------------------------------- DVC hash check
def dvc_dir_md5(path: Path) -> str:
    """DVC 3's md5 of a directory: md5 of the JSON list of (relpath, md5) of its files, plus '.dir'."""
    entries = []
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        entries.append({"md5": hashlib.md5(f.read_bytes()).hexdigest(), "relpath": f.relative_to(path).as_posix()})
    entries.sort(key=lambda e: e["relpath"])  # dvc_data's Tree.as_list sorts by the relpath string
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def pinned_md5(dvc_file: Path) -> str:
    import yaml

    outs = yaml.safe_load(dvc_file.read_text())["outs"]
    return outs[0]["md5"]


def ensure(data_dir: Path | None = None, dvc_file: Path | None = None, rebuild: bool = False) -> str:
    """Make sure `data/` holds exactly what data.dvc pins; regenerate it if absent or different."""
    data_dir = data_dir or paths.data()
    dvc_file = dvc_file or paths.root() / "data.dvc"
    want = pinned_md5(dvc_file)
    if data_dir.exists() and not rebuild:
        got = dvc_dir_md5(data_dir)
        if got == want:
            print(f"data: {data_dir} matches {dvc_file.name} ({want})")
            return got
        print(f"data: {data_dir} differs from {dvc_file.name} ({got} != {want}); regenerating")
    print("data: generating the tiny world's datasets and prompt sets ...", flush=True)
    build(data_dir)
    got = dvc_dir_md5(data_dir)
    if got != want:
        raise SystemExit(
            f"\nDATA HASH MISMATCH: regenerated {data_dir} hashes to {got}, but {dvc_file.name} pins {want}.\n"
            f"The generator's output changed (code edit, or a numpy/platform difference). If the change is\n"
            f"intended, record it with `dvc add data` and commit data.dvc; otherwise investigate before\n"
            f"trusting any result built on this data."
        )
    print(f"data: regenerated {data_dir}, hash {got} matches {dvc_file.name}")
    return got


# ----------------------------------------------------------------------------- loading
@dataclass
class ImageText:
    name: str
    images: np.ndarray  # (N, H, W, 3) uint8
    captions: list[str]
    specs: list[dict]

    def __len__(self) -> int:
        return len(self.captions)


def _require(p: Path) -> Path:
    if not p.exists():
        raise FileNotFoundError(f"{p} is missing: run `make data` (or `python -m replication.data ensure`)")
    return p


@lru_cache(maxsize=8)
def load_image_set(name: str) -> ImageText:
    if name not in IMAGE_SETS:
        raise KeyError(f"unknown dataset {name!r}; tiny-world datasets: {', '.join(IMAGE_SETS)}")
    d = paths.data() / name
    images = np.load(_require(d / "images.npy"), allow_pickle=False)
    rows = [json.loads(line) for line in _require(d / "captions.jsonl").read_text().splitlines()]
    return ImageText(name, images, [r["caption"] for r in rows], [r["spec"] for r in rows])


@lru_cache(maxsize=8)
def load_prompts(name: str) -> list[dict]:
    p = paths.data() / "prompts" / f"{name}.jsonl"
    if name not in PROMPT_SEEDS:
        raise KeyError(f"unknown prompt set {name!r}; known: {', '.join(PROMPT_SEEDS)}")
    return [json.loads(line) for line in _require(p).read_text().splitlines()]


def load_hf_image_text(
    name: str, split: str = "train", image_column: str = "image", caption_column: str = "text", limit: int | None = None
):
    """A Hugging Face image-text dataset for the paper-scale path (needs `pip install .[sdxl]`)."""
    try:
        import datasets
    except ImportError as e:
        raise ImportError("paper-scale datasets need the `datasets` package: pip install -e '.[sdxl]'") from e
    ds = datasets.load_dataset(name, split=split)
    if limit:
        ds = ds.select(range(min(limit, len(ds))))
    missing = [c for c in (image_column, caption_column) if c not in ds.column_names]
    if missing:
        raise KeyError(f"dataset {name} has no column(s) {missing}; columns: {ds.column_names}")
    return ds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m replication.data", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("ensure", help="regenerate data/ if needed and check it against data.dvc")
    e.add_argument("--rebuild", action="store_true")
    b = sub.add_parser("build", help="write the data folder (no hash check)")
    b.add_argument("--out", default=None)
    h = sub.add_parser("hash", help="print the DVC md5 of a data folder")
    h.add_argument("dir", nargs="?", default=None)
    a = ap.parse_args(argv)
    if a.cmd == "ensure":
        ensure(rebuild=a.rebuild)
    elif a.cmd == "build":
        build(Path(a.out) if a.out else paths.data())
    else:
        print(dvc_dir_md5(Path(a.dir) if a.dir else paths.data()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Score your own images: one JSON line per image.

    python -m replication.rewards --reward clip --images DIR --prompts FILE

DIR holds PNG/JPEG images; FILE has one prompt per line, matched to the images in sorted
filename order (or a single line used for every image). Images are resized by the reward's own
preprocessing; pass --source to use another model (a folder or a hub id).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ..tensors import to_float

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def load_images(folder: Path) -> tuple[list[Path], list[torch.Tensor]]:
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"error: no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    tensors = []
    for p in files:  # file decoding happens once, outside any hot path
        tensors.append(to_float(np.asarray(Image.open(p).convert("RGB"), dtype=np.uint8)[None])[0])
    return files, tensors


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m replication.rewards", description=__doc__.split("\n")[0])
    ap.add_argument("--reward", default="clip", help="reward name or weighted mix, e.g. clip or clip:0.5,...")
    ap.add_argument("--images", required=True, type=Path)
    ap.add_argument("--prompts", required=True, type=Path)
    ap.add_argument("--source", default=None, help="model folder or hub id (default: the tiny world's model)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=64)
    a = ap.parse_args(argv)

    from .registry import load_reward

    files, tensors = load_images(a.images)
    prompts = [line.strip() for line in a.prompts.read_text().splitlines() if line.strip()]
    if len(prompts) == 1:
        prompts = prompts * len(files)
    if len(prompts) != len(files):
        raise SystemExit(
            f"error: {len(files)} images in {a.images} but {len(prompts)} prompts in {a.prompts}; "
            f"give one prompt per image (sorted by filename) or a single prompt"
        )
    name = a.reward.split(":")[0].split(",")[0]
    reward = load_reward(a.reward, a.device, sources={name: a.source} if a.source else None)
    sizes = {tuple(t.shape) for t in tensors}
    for start in range(0, len(files), a.batch_size):
        chunk = tensors[start : start + a.batch_size]
        if len(sizes) == 1:
            batch = torch.stack(chunk)
        else:  # mixed sizes: bring each to the first image's size so the batch stacks
            h, w = chunk[0].shape[-2:]
            batch = torch.stack(
                [
                    torch.nn.functional.interpolate(t[None], size=(h, w), mode="bilinear", antialias=True)[0]
                    for t in chunk
                ]
            )
        scores = reward(batch.to(a.device), prompts[start : start + a.batch_size])
        for f, p, s in zip(files[start:], prompts[start:], scores.tolist()):
            print(json.dumps({"image": f.name, "prompt": p, "reward": a.reward, "score": round(s, 6)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

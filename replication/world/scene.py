"""Scenes of the tiny world and the sampler that makes them.

A scene is a canvas size, a background and a few objects. Geometry is kept in integers:
an object's centre is given in half-pixel units (``x2 = 2 * x_centre``) and its extent ``d``
in pixels, so that rendering is exact integer arithmetic and every machine draws the same
bytes (``data.dvc`` pins them by md5).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np

from . import vocab


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    texture: str
    size: str  # "small" | "big"
    x2: int = 0  # centre, half-pixel units
    y2: int = 0

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.shape, self.color, self.texture, self.size)


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    canvas: int = 32
    background: str = "gray"
    meta: dict = field(default_factory=dict, compare=False)

    def to_json(self) -> dict:
        return {
            "canvas": self.canvas,
            "background": self.background,
            "objects": [asdict(o) for o in self.objects],
        }

    @staticmethod
    def from_json(d: dict) -> Scene:
        return Scene(tuple(Obj(**o) for o in d["objects"]), d["canvas"], d["background"])


def extent(size: str, canvas: int) -> int:
    """Object extent in pixels: 9 (small) or 13 (big) on a 32-pixel canvas, scaled with it."""
    return round(canvas * (9 if size == "small" else 13) / 32)


def spatial_relation(dx: float, dy: float) -> str:
    """The spatial relation of a to b from b's centre minus a's, by the dominant axis
    (T2I-CompBench's rule; image y grows downwards)."""
    if abs(dx) >= abs(dy):
        return "to the left of" if dx > 0 else "to the right of"
    return "above" if dy > 0 else "below"


def relation(a: Obj, b: Obj) -> str:
    return spatial_relation(b.x2 - a.x2, b.y2 - a.y2)


def holds(a, rel: str, b, position=lambda o: (o.x2, o.y2)) -> bool:
    """Whether `a rel b` holds for two objects with .size and .color (rendered `Obj`s, or the parser's
    detections with another `position`)."""
    if rel in vocab.SPATIAL:
        (ax, ay), (bx, by) = position(a), position(b)
        return spatial_relation(bx - ax, by - ay) == rel
    if rel == "bigger than":
        return a.size == "big" and b.size == "small"
    if rel == "smaller than":
        return a.size == "small" and b.size == "big"
    if rel == "the same color as":
        return a.color == b.color
    raise ValueError(f"unknown relation {rel!r}; known: {vocab.RELATIONS}")


class Sampler:
    """Draws objects and layouts with a numpy Generator (PCG64: identical on every platform)."""

    def __init__(self, rng: np.random.Generator, canvas: int = 32, allow_heldout: bool = False):
        self.rng = rng
        self.canvas = canvas
        self.allow_heldout = allow_heldout

    def choice(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def obj(self, size: str | None = None, **fixed) -> Obj:
        """A random object; `fixed` pins attributes. Held-out compositions are redrawn unless allowed."""
        for _ in range(1000):
            o = Obj(
                shape=fixed.get("shape") or self.choice(vocab.SHAPES),
                color=fixed.get("color") or self.choice(vocab.COLORS),
                texture=fixed.get("texture") or self.choice(vocab.TEXTURES),
                size=size or self.choice(vocab.SIZES),
            )
            if self.allow_heldout or not vocab.is_heldout(o.color, o.shape, o.texture):
                return o
        raise ValueError(f"no non-held-out object satisfies {fixed}")

    def place(
        self, objs: list[Obj], relations: tuple[tuple[int, str, int], ...] = (), gap: int = 2, tries: int = 400
    ) -> tuple[Obj, ...] | None:
        """Random non-overlapping centres for `objs` such that every spatial relation holds.

        Returns None if no layout was found (the caller then changes sizes or objects).
        """
        s2 = 2 * self.canvas
        for _ in range(tries):
            placed: list[Obj] = []
            for o in objs:
                d = extent(o.size, self.canvas)
                lo, hi = d, s2 - d  # centre range (half pixels) that keeps the object on the canvas
                o = replace(o, x2=int(self.rng.integers(lo, hi + 1)), y2=int(self.rng.integers(lo, hi + 1)))
                if all(self._apart(o, p, gap) and self._unambiguous(o, p) for p in placed):
                    placed.append(o)
                else:
                    break
            if len(placed) == len(objs) and all(
                holds(placed[i], r, placed[j]) for i, r, j in relations if r in vocab.SPATIAL
            ):
                return tuple(placed)
        return None

    @staticmethod
    def _unambiguous(a: Obj, b: Obj, margin: int = 4) -> bool:
        """The dominant axis between two centres is clear by `margin` half pixels (no near-diagonals)."""
        return abs(abs(a.x2 - b.x2) - abs(a.y2 - b.y2)) >= margin

    def _apart(self, a: Obj, b: Obj, gap: int) -> bool:
        da, db = extent(a.size, self.canvas), extent(b.size, self.canvas)
        need = da + db + 2 * gap  # half-pixel units: half extents are d, gap is in pixels
        return abs(a.x2 - b.x2) >= need or abs(a.y2 - b.y2) >= need

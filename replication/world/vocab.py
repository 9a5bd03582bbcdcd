"""The closed vocabulary of the tiny world.

Every attribute that T2I-CompBench tests has a counterpart here:
colour, shape and texture (attribute binding), spatial relations, non-spatial relations,
complex mixtures, and counts (numeracy). Colours are spread over the hue circle and the
background is unsaturated, so that a pixel's hue and saturation alone say whether it belongs
to an object and which colour it has, even in the blurry images a small generator makes.
"""

from __future__ import annotations

COLORS: tuple[str, ...] = ("red", "yellow", "green", "cyan", "blue", "purple")
# sRGB of the plain object colour; the texture pattern uses half of it (same hue and saturation).
RGB: dict[str, tuple[int, int, int]] = {
    "red": (214, 40, 40),
    "yellow": (226, 196, 30),
    "green": (38, 168, 58),
    "cyan": (30, 186, 198),
    "blue": (44, 72, 222),
    "purple": (152, 56, 204),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
TEXTURES: tuple[str, ...] = ("plain", "striped", "checkered")
SIZES: tuple[str, ...] = ("small", "big")
SPATIAL: tuple[str, ...] = ("to the left of", "to the right of", "above", "below")
NONSPATIAL: tuple[str, ...] = ("bigger than", "smaller than", "the same color as")
RELATIONS: tuple[str, ...] = SPATIAL + NONSPATIAL
NUMBERS: tuple[str, ...] = ("one", "two", "three", "four")
PLURAL: dict[str, str] = {s: s + "s" for s in SHAPES}

BACKGROUNDS: dict[str, tuple[int, int, int]] = {"gray": (224, 224, 224), "white": (255, 255, 255)}

# Compositions that no training image shows: they only appear in the held-out half of the
# CompBench-like prompt set, which measures compositional generalisation.
HELDOUT_COLOR_SHAPE: frozenset[tuple[str, str]] = frozenset(
    {("red", "triangle"), ("green", "diamond"), ("blue", "circle"), ("yellow", "square"), ("purple", "circle")}
)
HELDOUT_TEXTURE_SHAPE: frozenset[tuple[str, str]] = frozenset({("checkered", "circle"), ("striped", "diamond")})

CATEGORIES: tuple[str, ...] = ("color", "shape", "texture", "spatial", "non_spatial", "complex", "numeracy")


def is_heldout(color: str | None, shape: str, texture: str | None) -> bool:
    """True if an object with these attributes uses a held-out composition."""
    return (color, shape) in HELDOUT_COLOR_SHAPE or (texture, shape) in HELDOUT_TEXTURE_SHAPE

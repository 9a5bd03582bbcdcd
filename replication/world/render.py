"""Renderer: scenes -> uint8 RGB images, in exact integer arithmetic.

Shapes are tested at pixel centres in half-pixel units (u = 2x + 1 - x2), so no floating
point is involved and the bytes are the same on every machine. Textures alternate the object
colour with its half-brightness shade (same hue and saturation) in bands anchored to the
object's top-left corner: horizontal stripes, or a checkerboard.
"""

from __future__ import annotations

import numpy as np

from . import vocab
from .scene import Obj, Scene, extent


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray, d: int) -> np.ndarray:
    """Inside-test of a shape of extent d (pixels) at offsets u, v (half pixels) from its centre."""
    au, av = np.abs(u), np.abs(v)
    if shape == "square":
        return (au <= d) & (av <= d)
    if shape == "circle":
        return u * u + v * v <= d * d - d  # the -d keeps small circles round, not square-ish
    if shape == "diamond":
        return au + av <= d
    if shape == "triangle":  # apex up, base 2d half pixels wide at the bottom
        return (av <= d) & (2 * au <= v + d)
    raise ValueError(f"unknown shape {shape!r}; known: {vocab.SHAPES}")


def texture_dark(texture: str, x: np.ndarray, y: np.ndarray, left: int, top: int, canvas: int) -> np.ndarray:
    """Which pixels of an object take the dark shade.

    Stripes are 2 pixels high on a 32-pixel canvas; checks are 3 pixels wide, coarse enough that a
    VAE with 4x4-pixel latent cells can keep them (2-pixel checks blur to grey in its latents).
    """
    shape = np.broadcast(x, y).shape
    if texture == "plain":
        return np.zeros(shape, dtype=bool)
    if texture == "striped":
        band = max(1, round(canvas * 2 / 32))
        return np.broadcast_to(((y - top) // band) % 2 == 1, shape)
    if texture == "checkered":
        band = max(1, round(canvas * 3 / 32))
        return (((y - top) // band + (x - left) // band) % 2) == 1
    raise ValueError(f"unknown texture {texture!r}; known: {vocab.TEXTURES}")


def draw(img: np.ndarray, o: Obj) -> None:
    """Draw one object into an (S, S, 3) uint8 image in place."""
    s = img.shape[0]
    y = np.arange(s)[:, None]
    x = np.arange(s)[None, :]
    d = extent(o.size, s)
    inside = shape_mask(o.shape, 2 * x + 1 - o.x2, 2 * y + 1 - o.y2, d)
    if not inside.any():
        return
    ys, xs = np.nonzero(inside)
    dark = texture_dark(o.texture, x, y, int(xs.min()), int(ys.min()), s) & inside
    rgb = np.array(vocab.RGB[o.color], dtype=np.uint8)
    img[inside] = rgb
    img[dark] = rgb // 2


def render(scene: Scene) -> np.ndarray:
    img = np.empty((scene.canvas, scene.canvas, 3), dtype=np.uint8)
    img[:] = np.array(vocab.BACKGROUNDS[scene.background], dtype=np.uint8)
    for o in scene.objects:
        draw(img, o)
    return img


def render_batch(scenes: list[Scene]) -> np.ndarray:
    """(N, S, S, 3) uint8 images of scenes that share one canvas size."""
    if not scenes:
        return np.zeros((0, 32, 32, 3), np.uint8)
    sizes = {s.canvas for s in scenes}
    if len(sizes) != 1:
        raise ValueError(f"render_batch needs one canvas size, got {sorted(sizes)}")
    return np.stack([render(s) for s in scenes])

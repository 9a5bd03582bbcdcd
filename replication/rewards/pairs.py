"""Comparisons: the training data of every pairwise reward model.

A comparison says that one (image, prompt) item is better than another. Two kinds exist:

* **image side** (ImageReward, Pick-a-Pic): two images for the same prompt, one preferred;
* **text side** (IterComp's composition-aware pairs): one image with its prompt against the same
  image with a prompt that differs in one compositional detail (an attribute replaced, attributes
  swapped between objects, a relation flipped, a count changed). Whether the changed prompt really
  fits the image worse is decided by a judge (the scene parser), never assumed.

`Comparisons` stores a pool of uint8 images, a list of texts and index pairs, so an image shared by
many comparisons is stored once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..world import caption, vocab
from ..world.caption import Phrase, Spec, parse_prompt, spec_text

_OPPOSITE = {
    "to the left of": "to the right of",
    "to the right of": "to the left of",
    "above": "below",
    "below": "above",
    "bigger than": "smaller than",
    "smaller than": "bigger than",
}
FILLERS = ("",) + caption._PREFIXES
SUFFIXES = ("",) + caption._SUFFIXES
CORRUPTIONS = ("attribute", "binding", "relation", "count")


@dataclass
class Comparisons:
    """M comparisons over a pool of N images and T texts: item `win[i]` = (image, text) is better than
    item `lose[i]`. `kind[i]` is 0 for image-side and 1 for text-side comparisons."""

    images: np.ndarray  # (N, H, W, 3) uint8
    texts: list[str]
    win: np.ndarray  # (M, 2) int64: image index, text index
    lose: np.ndarray  # (M, 2)
    kind: np.ndarray  # (M,) int8

    def __post_init__(self):
        self.win = np.asarray(self.win, dtype=np.int64).reshape(-1, 2)
        self.lose = np.asarray(self.lose, dtype=np.int64).reshape(-1, 2)
        self.kind = np.asarray(self.kind, dtype=np.int8).reshape(-1)
        if not (len(self.win) == len(self.lose) == len(self.kind)):
            raise ValueError(f"comparisons disagree in length: {len(self.win)}, {len(self.lose)}, {len(self.kind)}")
        for side in (self.win, self.lose):
            if len(side) and (side[:, 0].max() >= len(self.images) or side[:, 1].max() >= len(self.texts)):
                raise ValueError("a comparison points past the image pool or the text list")

    def __len__(self) -> int:
        return len(self.win)

    def subset(self, idx) -> Comparisons:
        idx = np.asarray(idx, dtype=np.int64)
        return Comparisons(self.images, self.texts, self.win[idx], self.lose[idx], self.kind[idx])

    @staticmethod
    def concat(parts: Sequence[Comparisons]) -> Comparisons:
        """One pool from several (image and text indices are shifted)."""
        images, texts, win, lose, kind = [], [], [], [], []
        n_img = n_txt = 0
        for c in parts:
            shift = np.array([n_img, n_txt])
            images.append(c.images)
            texts += c.texts
            win.append(c.win + shift)
            lose.append(c.lose + shift)
            kind.append(c.kind)
            n_img += len(c.images)
            n_txt += len(c.texts)
        return Comparisons(
            np.concatenate(images), texts, np.concatenate(win), np.concatenate(lose), np.concatenate(kind)
        )

    def counts(self) -> dict[str, int]:
        return {
            "comparisons": len(self),
            "image_side": int((self.kind == 0).sum()),
            "text_side": int((self.kind == 1).sum()),
            "images": len(self.images),
            "texts": len(self.texts),
        }


# ----------------------------------------------------------------------------- prompt corruption
def _stated(p: Phrase) -> list[str]:
    return [k for k in ("color", "texture", "size") if getattr(p, k) is not None]


_VALUES = {"color": vocab.COLORS, "texture": vocab.TEXTURES, "size": vocab.SIZES, "shape": vocab.SHAPES}


def corrupt(
    spec: Spec, rng: np.random.Generator, kinds: Sequence[str] = CORRUPTIONS, allow_heldout: bool = True
) -> Spec | None:
    """A prompt differing from `spec` in one compositional detail, or None if no corruption applies.

    `allow_heldout=False` (training data) never returns a prompt stating a held-out composition (up to 16
    draws; None if every draw does): otherwise those compositions appear in training only inside the
    worse item of a comparison, and a model learns "held-out composition = wrong", the opposite of what the
    held-out split tests.

    attribute: one stated colour/texture/size or a shape replaced by another value;
    binding: one attribute exchanged between two phrases that state different values (the classic
    attribute-binding error); relation: left<->right, above<->below, bigger<->smaller, or a
    'the same color as' relation made a spatial one; count: a stated number changed.
    """
    for _ in range(1 if allow_heldout else 16):
        out = _corrupt_once(spec, rng, kinds)
        if out is None or allow_heldout or not out.heldout:
            return out
    return None


def _corrupt_once(spec: Spec, rng: np.random.Generator, kinds: Sequence[str]) -> Spec | None:
    options = []
    for kind in kinds:
        if kind == "attribute":
            options += [("attribute", i, a) for i, p in enumerate(spec.phrases) for a in _stated(p) + ["shape"]]
        elif kind == "binding":
            for i in range(len(spec.phrases)):
                for j in range(i + 1, len(spec.phrases)):
                    a, b = spec.phrases[i], spec.phrases[j]
                    for attr in ("color", "texture", "size", "shape"):
                        va, vb = getattr(a, attr), getattr(b, attr)
                        if va is not None and vb is not None and va != vb:
                            options.append(("binding", i, (j, attr)))
        elif kind == "relation":
            options += [("relation", k, None) for k in range(len(spec.relations))]
        elif kind == "count":
            options += [("count", i, None) for i, p in enumerate(spec.phrases) if p.count is not None]
        else:
            raise ValueError(f"unknown corruption {kind!r}; choose from {CORRUPTIONS}")
    if not options:
        return None
    kind, i, arg = options[int(rng.integers(len(options)))]
    phrases = list(spec.phrases)
    relations = list(spec.relations)
    if kind == "attribute":
        old = getattr(phrases[i], arg)
        new = [v for v in _VALUES[arg] if v != old]
        phrases[i] = replace(phrases[i], **{arg: new[int(rng.integers(len(new)))]})
    elif kind == "binding":
        j, attr = arg
        va, vb = getattr(phrases[i], attr), getattr(phrases[j], attr)
        phrases[i], phrases[j] = replace(phrases[i], **{attr: vb}), replace(phrases[j], **{attr: va})
    elif kind == "relation":
        a, rel, b = relations[i]
        if rel in _OPPOSITE:
            relations[i] = (a, _OPPOSITE[rel], b)
        else:  # 'the same color as' has no opposite: state a spatial relation instead
            relations[i] = (a, vocab.SPATIAL[int(rng.integers(len(vocab.SPATIAL)))], b)
    else:
        p = phrases[i]
        new = [n for n in range(2, len(vocab.NUMBERS) + 1) if n != p.count]
        phrases[i] = replace(p, count=new[int(rng.integers(len(new)))])
    out = Spec(tuple(phrases), tuple(relations))
    return None if out == spec else out


def phrase_style(rng: np.random.Generator) -> dict:
    """Random filler words the world's prompts use (the parser ignores them)."""
    return {
        "prefix": FILLERS[int(rng.integers(len(FILLERS)))],
        "suffix": SUFFIXES[int(rng.integers(len(SUFFIXES)))],
        "postfix_texture": bool(rng.random() < 0.3),
    }


# ----------------------------------------------------------------------------- judged comparisons
def _as_spec(s) -> Spec:
    return s if isinstance(s, Spec) else Spec.from_json(s) if isinstance(s, dict) else parse_prompt(s)


def alignment_of(dets: list, specs: Sequence[Spec]) -> np.ndarray:
    """Share of each spec's claims that hold in the detections of its image (the parser's score)."""
    from ..world.parser import claims_satisfied

    return np.array([claims_satisfied(s, d) / s.n_claims for s, d in zip(specs, dets)])


def text_side(
    images: np.ndarray,
    specs: Sequence,
    rng: np.random.Generator,
    per_image: int = 1,
    dets: list | None = None,
    rater=None,
    gen: torch.Generator | None = None,
    allow_heldout: bool = True,
    kinds: Sequence[str] = CORRUPTIONS,
) -> Comparisons:
    """Each image with its prompt against the same image with `per_image` corrupted prompts. The judge is the
    parser (the item whose prompt has more satisfied claims wins; equal counts are dropped) or, with `rater`,
    the simulated rater's noisy choice between the two items' utilities (ties dropped; `gen` seeds it).

    `kinds` restricts the corruptions (`corrupt`); training data passes `allow_heldout=False`, so that no
    corrupted prompt states a held-out composition (see `corrupt`), while held-out tests keep the default."""
    from ..world.parser import detect

    specs = [_as_spec(s) for s in specs]
    dets = dets if dets is not None else detect(images)
    true_align = alignment_of(dets, specs)
    rows, bad_specs = [], []
    for i, spec in enumerate(specs):
        for _ in range(per_image):
            bad = corrupt(spec, rng, kinds, allow_heldout=allow_heldout)
            if bad is not None:
                rows.append((i, spec_text(spec, **(style := phrase_style(rng))), spec_text(bad, **style)))
                bad_specs.append(bad)
    idx = np.array([r[0] for r in rows], dtype=np.int64)
    bad_align = alignment_of([dets[i] for i in idx], bad_specs) if rows else np.zeros(0)
    if rater is None:
        choice = np.sign(true_align[idx] - bad_align).astype(np.int8)
    else:  # the quality half of the utility is the same image's on both sides: only alignment differs
        from ..world.rater import ALIGNMENT_WEIGHT

        u_true = torch.from_numpy(ALIGNMENT_WEIGHT * true_align[idx])  # host: the world's rater runs on the host
        u_bad = torch.from_numpy(ALIGNMENT_WEIGHT * bad_align)  # host: the world's rater runs on the host
        choice = rater.compare_utilities(u_true, u_bad, gen or torch.Generator().manual_seed(0)).numpy().astype(np.int8)
    texts: list[str] = []
    win, lose = [], []
    for (i, t_ok, t_bad), c in zip(rows, choice):
        if c == 0:
            continue
        a, b = len(texts), len(texts) + 1
        texts += [t_ok, t_bad]
        win.append((i, a) if c > 0 else (i, b))
        lose.append((i, b) if c > 0 else (i, a))
    return Comparisons(
        images,
        texts,
        np.array(win, dtype=np.int64).reshape(-1, 2),
        np.array(lose, dtype=np.int64).reshape(-1, 2),
        np.ones(len(win), dtype=np.int8),
    )


def image_side(
    images: np.ndarray, group: np.ndarray, texts: Sequence[str], pairs: np.ndarray, choice: np.ndarray
) -> Comparisons:
    """Image-side comparisons from judged pairs of images: `pairs` (M, 2) image indices showing the same
    prompt `texts[group[i]]`; `choice` +1 first preferred, -1 second, 0 comparable (dropped)."""
    pairs = np.asarray(pairs).reshape(-1, 2)
    choice = np.asarray(choice)
    keep = choice != 0
    p, c = pairs[keep], choice[keep]
    first = c > 0
    w = np.where(first, p[:, 0], p[:, 1])
    l = np.where(first, p[:, 1], p[:, 0])
    win = np.stack([w, group[w]], 1)
    lose = np.stack([l, group[l]], 1)
    return Comparisons(images, list(texts), win, lose, np.zeros(len(w), dtype=np.int8))


def within_groups(group: np.ndarray) -> np.ndarray:
    """All unordered pairs (i, j), i < j, of images that share a group (prompt)."""
    out = []
    for g in np.unique(group):
        idx = np.nonzero(group == g)[0]
        out += [(a, b) for k, a in enumerate(idx) for b in idx[k + 1 :]]
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def judge_by(
    score: Callable[[np.ndarray, Sequence[str]], np.ndarray],
    images: np.ndarray,
    texts: Sequence[str],
    group: np.ndarray,
    pairs: np.ndarray,
) -> np.ndarray:
    """+1 / -1 / 0 choices of a noiseless judge (e.g. the parser's alignment) on image pairs."""
    s = np.asarray(score(images, [texts[g] for g in group]), dtype=np.float64)
    return np.sign(s[pairs[:, 0]] - s[pairs[:, 1]]).astype(np.int8)


__all__ = [
    "Comparisons",
    "corrupt",
    "text_side",
    "image_side",
    "within_groups",
    "judge_by",
    "alignment_of",
    "CORRUPTIONS",
    "phrase_style",
]

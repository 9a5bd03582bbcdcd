"""Captioner and prompt parser of the tiny world.

A caption makes *claims* about an image; `Spec` is the structured form of those claims:
noun phrases (shape plus any stated colour, texture, size and count) and relations between
consecutive phrases. `describe` writes a true caption of a scene in one of several styles;
`parse_prompt` turns any text of the world's grammar back into its `Spec`, so that images can
be scored against user prompts as well as against generated ones.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from . import vocab
from .scene import Obj, Sampler, Scene, holds, relation

STYLES: tuple[str, ...] = ("generic", "detailed", "pokemon") + vocab.CATEGORIES

_TEXTURE_POSTFIX = {"plain": "with no pattern", "striped": "with stripes", "checkered": "with a checkered pattern"}
_PREFIXES = ("a picture of", "an image showing", "a drawing of", "a cartoon of")
_SUFFIXES = ("on a gray background", "on a white background", "with a white background")


class PromptError(ValueError):
    """A prompt outside the tiny world's grammar."""


@dataclass(frozen=True)
class Phrase:
    shape: str
    color: str | None = None
    texture: str | None = None
    size: str | None = None
    count: int | None = None  # None: "a"/"an" (at least one such object); k: exactly k

    def matches(self, o) -> bool:
        """Whether an object (rendered `Obj` or parsed detection) has every stated attribute."""
        return (
            o.shape == self.shape
            and self.color in (None, o.color)
            and self.texture in (None, o.texture)
            and self.size in (None, o.size)
        )

    @property
    def heldout(self) -> bool:
        return vocab.is_heldout(self.color, self.shape, self.texture)


@dataclass(frozen=True)
class Spec:
    phrases: tuple[Phrase, ...]
    relations: tuple[tuple[int, str, int], ...] = ()

    @property
    def n_claims(self) -> int:
        return len(self.phrases) + len(self.relations)

    @property
    def heldout(self) -> bool:
        return any(p.heldout for p in self.phrases)

    def to_json(self) -> dict:
        return {"phrases": [asdict(p) for p in self.phrases], "relations": [list(r) for r in self.relations]}

    @staticmethod
    def from_json(d: dict) -> Spec:
        return Spec(tuple(Phrase(**p) for p in d["phrases"]), tuple((int(i), r, int(j)) for i, r, j in d["relations"]))


# ----------------------------------------------------------------------------- text from specs
def phrase_text(p: Phrase, postfix_texture: bool = False) -> str:
    words = [w for w in (p.size, p.color) if w]
    if p.texture and not postfix_texture:
        words.append(p.texture)
    words.append(vocab.PLURAL[p.shape] if (p.count or 1) > 1 else p.shape)
    if p.count is None:
        det = "an" if words[0][0] in "aeiou" else "a"
    else:
        det = vocab.NUMBERS[p.count - 1]
    text = det + " " + " ".join(words)
    if p.texture and postfix_texture:
        text += " " + _TEXTURE_POSTFIX[p.texture]
    return text


def spec_text(spec: Spec, prefix: str = "", suffix: str = "", postfix_texture: bool = False) -> str:
    rel = {i: r for i, r, j in spec.relations}
    parts = []
    for i, p in enumerate(spec.phrases):
        parts.append(phrase_text(p, postfix_texture))
        if i + 1 < len(spec.phrases):
            parts.append(rel.get(i, "and"))
    return " ".join(w for w in (prefix, " ".join(parts), suffix) if w)


# ----------------------------------------------------------------------------- text to specs
_WORD_SETS = {
    "size": set(vocab.SIZES),
    "color": set(vocab.COLORS),
    "texture": set(vocab.TEXTURES),
}
_SINGULAR = {vocab.PLURAL[s]: s for s in vocab.SHAPES} | {s: s for s in vocab.SHAPES}
_POSTFIX = {tuple(v.split()): k for k, v in _TEXTURE_POSTFIX.items()}
_RELATIONS = {tuple(r.split()): r for r in vocab.RELATIONS}
_FILLERS = [tuple(f.split()) for f in _PREFIXES + _SUFFIXES]


def _match(words: list[str], i: int, table) -> tuple[tuple[str, ...], int] | None:
    for key in sorted(table, key=len, reverse=True):
        if tuple(words[i : i + len(key)]) == key:
            return key, i + len(key)
    return None


def parse_prompt(text: str) -> Spec:
    """Parse a prompt of the tiny world's grammar into the claims it makes.

    Raises PromptError naming the first word the grammar does not know.
    """
    words = re.sub(r"[^a-z ]", " ", text.lower()).split()
    phrases: list[Phrase] = []
    relations: list[tuple[int, str, int]] = []
    pending: str | None = None
    i = 0
    while i < len(words):
        if (m := _match(words, i, _FILLERS)) is not None:
            i = m[1]
            continue
        if (m := _match(words, i, _RELATIONS)) is not None:
            if not phrases or pending is not None:
                raise PromptError(f"relation {' '.join(m[0])!r} must stand between two objects in {text!r}")
            pending, i = _RELATIONS[m[0]], m[1]
            continue
        if words[i] == "and":
            i += 1
            continue
        phrase, i = _parse_phrase(words, i, text)
        if pending is not None:
            relations.append((len(phrases) - 1, pending, len(phrases)))
            pending = None
        phrases.append(phrase)
    if pending is not None:
        raise PromptError(f"relation {pending!r} has no object after it in {text!r}")
    if not phrases:
        raise PromptError(f"no object in {text!r}; objects are {', '.join(vocab.SHAPES)}")
    return Spec(tuple(phrases), tuple(relations))


def _parse_phrase(words: list[str], i: int, text: str) -> tuple[Phrase, int]:
    det = words[i]
    if det in ("a", "an"):
        count = None
    elif det in vocab.NUMBERS:
        count = vocab.NUMBERS.index(det) + 1
    else:
        raise PromptError(
            f"unknown word {det!r} in {text!r}: the tiny world knows shapes {vocab.SHAPES}, colours "
            f"{vocab.COLORS}, textures {vocab.TEXTURES}, sizes {vocab.SIZES}, relations {vocab.RELATIONS}"
        )
    attrs: dict[str, str] = {}
    i += 1
    while i < len(words) and words[i] not in _SINGULAR:
        kind = next((k for k, s in _WORD_SETS.items() if words[i] in s), None)
        if kind is None or kind in attrs:
            raise PromptError(f"unexpected word {words[i]!r} in {text!r} (expected an attribute or a shape)")
        attrs[kind] = words[i]
        i += 1
    if i == len(words):
        raise PromptError(f"phrase without a shape in {text!r}; shapes are {vocab.SHAPES}")
    shape = _SINGULAR[words[i]]
    plural = words[i] != shape
    if plural != ((count or 1) > 1):
        raise PromptError(f"number and noun disagree ({det!r} ... {words[i]!r}) in {text!r}")
    i += 1
    if (m := _match(words, i, _POSTFIX)) is not None:
        if "texture" in attrs:
            raise PromptError(f"texture stated twice in {text!r}")
        attrs["texture"] = _POSTFIX[m[0]]
        i = m[1]
    return Phrase(shape=shape, count=count, **attrs), i


# ----------------------------------------------------------------------------- scenes with captions
def true_relations(a: Obj, b: Obj, kinds=("spatial", "non_spatial")) -> list[str]:
    out = []
    if "spatial" in kinds:
        out.append(relation(a, b))
    if "non_spatial" in kinds:
        out += [r for r in vocab.NONSPATIAL if holds(a, r, b)]
    return out


def sample_captioned(sampler: Sampler, style: str, heldout: bool | None = None) -> tuple[Scene, str, Spec]:
    """A random scene with a true caption in `style`.

    `heldout=True` asks for a prompt that states a held-out composition (CompBench-like held-out
    split), `False` for one that states none, None for either. Whether the *scene* may contain
    held-out objects at all is the sampler's `allow_heldout` (training sets never do).
    """
    if style not in STYLES:
        raise ValueError(f"unknown caption style {style!r}; known: {STYLES}")
    for _ in range(200):
        out = _sample_once(sampler, style)
        if out is None:
            continue
        scene, text, spec = out
        if heldout is None or spec.heldout == heldout:
            return scene, text, spec
    raise RuntimeError(f"could not sample a {style!r} scene with heldout={heldout}")


def _sample_once(s: Sampler, style: str):
    r = s.rng
    canvas = s.canvas
    if style == "pokemon":
        o = s.obj(size="big")
        jitter = r.integers(-2, 3, size=2)
        o = Obj(o.shape, o.color, o.texture, o.size, canvas + int(jitter[0]) * 2, canvas + int(jitter[1]) * 2)
        scene = Scene((o,), canvas, "white")
        spec = Spec((Phrase(o.shape, o.color, o.texture if r.random() < 0.7 else None),))
        prefix = s.choice(("a drawing of", "a cartoon of"))
        return scene, spec_text(spec, prefix, "with a white background", postfix_texture=r.random() < 0.5), spec

    if style == "numeracy" or (style == "generic" and r.random() < 0.12):
        k = int(r.integers(2, 5))
        base = s.obj(size="small")
        objs = [base] * k
        extra = None
        if r.random() < 0.5:
            extra = s.obj(size="small")
            if extra.shape == base.shape:
                return None
            objs.append(extra)
        placed = s.place(objs)
        if placed is None:
            return None
        col = base.color if (style == "numeracy" or r.random() < 0.8) else None
        phrases = [Phrase(base.shape, col, None, None, k)]
        if extra is not None:
            phrases.append(Phrase(extra.shape, extra.color, None, None, 1))
        spec = Spec(tuple(phrases))
        return Scene(placed, canvas), spec_text(spec), spec

    if style == "generic":
        n = int(r.choice([1, 2, 3], p=[0.3, 0.5, 0.2]))
    elif style in ("detailed", "complex"):
        n = int(r.choice([2, 3], p=[0.6, 0.4]))
    else:
        n = 2

    # Objects first (relation-specific constraints), then a layout that keeps spatial relations true.
    want_rel = None
    if style == "spatial":
        want_rel = s.choice(vocab.SPATIAL)
    elif style == "non_spatial":
        want_rel = s.choice(vocab.NONSPATIAL)
    objs = [s.obj() for _ in range(n)]
    if want_rel == "bigger than":
        objs = [Obj(*objs[0].key[:3], "big"), Obj(*objs[1].key[:3], "small")]
    elif want_rel == "smaller than":
        objs = [Obj(*objs[0].key[:3], "small"), Obj(*objs[1].key[:3], "big")]
    elif want_rel == "the same color as":
        objs[1] = s.obj(color=objs[0].color, size=objs[1].size)
    if n == 3 and sum(o.size == "big" for o in objs) > 1:
        objs = [Obj(*o.key[:3], "small") if i else o for i, o in enumerate(objs)]
    if len({o.key for o in objs}) < len(objs):
        return None  # identical objects are the numeracy style's business
    rels = ((0, want_rel, 1),) if want_rel in vocab.SPATIAL else ()
    placed = s.place(objs, rels)
    if placed is None:
        return None
    scene = Scene(placed, canvas)

    def ph(o: Obj, c=False, t=False, z=False) -> Phrase:
        return Phrase(o.shape, o.color if c else None, o.texture if t else None, o.size if z else None)

    relations: list[tuple[int, str, int]] = []
    postfix, prefix, suffix = False, "", ""
    if style == "color":
        phrases = [ph(o, c=True) for o in placed]
    elif style == "shape":
        phrases = [ph(o, z=True) for o in placed]
    elif style == "texture":
        phrases = [ph(o, t=True) for o in placed]
    elif style == "spatial":
        phrases = [ph(o, c=True) for o in placed]
        relations = [(0, want_rel, 1)]
    elif style == "non_spatial":
        same = want_rel == "the same color as"
        phrases = [ph(o, c=not same, t=same) for o in placed]
        relations = [(0, want_rel, 1)]
    elif style == "complex":
        phrases = [ph(o, c=True, t=r.random() < 0.7, z=r.random() < 0.4) for o in placed]
        rel = s.choice(true_relations(placed[0], placed[1]))
        relations = [(0, rel, 1)]
    elif style == "detailed":
        phrases = [ph(o, c=True, t=True, z=True) for o in placed]
        relations = [(i, s.choice(true_relations(placed[i], placed[i + 1])), i + 1) for i in range(n - 1)]
        postfix = r.random() < 0.5
        prefix = s.choice(("a picture of", "an image showing"))
        suffix = "on a gray background"
    else:  # generic
        phrases = [ph(o, c=r.random() < 0.8, t=r.random() < 0.45, z=r.random() < 0.35) for o in placed]
        for i in range(n - 1):
            if r.random() < 0.6:
                kinds = ("spatial",) if r.random() < 0.75 else ("non_spatial",)
                options = true_relations(placed[i], placed[i + 1], kinds)
                if options:
                    relations.append((i, s.choice(options), i + 1))
    spec = Spec(tuple(phrases), tuple(relations))
    return scene, spec_text(spec, prefix, suffix, postfix), spec

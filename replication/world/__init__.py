"""The tiny synthetic compositional world: scenes, renderer, captioner, prompt and scene parsers."""

from . import vocab
from .caption import STYLES, Phrase, PromptError, Spec, parse_prompt, sample_captioned
from .parser import detect, score
from .render import render, render_batch
from .scene import Obj, Sampler, Scene

__all__ = [
    "vocab",
    "STYLES",
    "Phrase",
    "PromptError",
    "Spec",
    "parse_prompt",
    "sample_captioned",
    "detect",
    "score",
    "render",
    "render_batch",
    "Obj",
    "Sampler",
    "Scene",
]

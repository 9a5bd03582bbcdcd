"""T2I-CompBench's evaluators for the CompBench columns at paper scale (the tiny world uses its exact parser).

* colour, shape, texture: BLIP-VQA. Each noun phrase of the prompt becomes a question "<phrase>?"; the
  score is the product over phrases of P("yes") (`transformers.BlipForQuestionAnswering`, answers
  ranked by their likelihood under the answer decoder, as BLIP's VQA ranks candidate answers).
* spatial: an open-vocabulary detector (`transformers.OwlViTForObjectDetection`; T2I-CompBench uses
  UniDet) finds the two objects; T2I-CompBench's rule scores their positions (dominant axis, box IoU
  under 0.1) and adds a quarter of each detection's confidence; totals under 0.5 count as 0.
* non-spatial: CLIP cosine (T2I-CompBench uses CLIP ViT-B/32).
* complex: the mean of the three (T2I-CompBench's "3-in-1").
* numeracy: the detector's count of each counted object against the number in the prompt.

T2I-CompBench splits prompts with spaCy; here a rule-based splitter (`noun_phrases`, `relation_objects`)
handles its templates ("a red book and a blue vase", "a cat on the left of a dog"), so spaCy is not needed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..tensors import resolve_device
from .base import ImagePreprocess

SPATIAL_WORDS = (
    "on the left of",
    "on the right of",
    "on the top of",
    "on top of",
    "on the bottom of",
    "on side of",
    "next to",
    "near",
    "to the left of",
    "to the right of",
    "above",
    "below",
)
NUMBERS = {
    w: i for i, w in enumerate(("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"))
}
_SPLIT = re.compile(r",|\band\b|\bwith\b|" + "|".join(r"\b" + re.escape(w) + r"\b" for w in SPATIAL_WORDS))


def noun_phrases(prompt: str) -> list[str]:
    """The prompt's noun phrases: the pieces between 'and', 'with', commas and spatial relations."""
    return [p.strip(" .") for p in _SPLIT.split(prompt.lower()) if p and p.strip(" .")]


def relation_objects(prompt: str) -> tuple[str, str, str] | None:
    """(first object noun, relation, second object noun) of a spatial prompt, or None."""
    text = prompt.lower()
    for rel in SPATIAL_WORDS:
        m = re.search(r"\b" + re.escape(rel) + r"\b", text)
        if m:
            left, right = text[: m.start()].split(), text[m.end() :].split()
            if left and right:
                return left[-1].strip(".,"), rel, right[-1].strip(".,")
    return None


def _preprocess(source, size: int) -> ImagePreprocess:
    folder = Path(str(source))
    if folder.is_dir():
        return ImagePreprocess.from_folder(folder, size)
    try:
        from huggingface_hub import hf_hub_download

        cfg = Path(hf_hub_download(str(source), "preprocessor_config.json"))
        return ImagePreprocess.from_folder(cfg.parent, size)
    except Exception:  # noqa: BLE001 - no config on the hub: CLIP's normalisation
        return ImagePreprocess(size)


class BlipVQA:
    """P(answer 'yes') of BLIP's VQA model for (image, question) pairs, batched."""

    def __init__(self, model, tokenizer, preprocess: ImagePreprocess, device=None):
        device = resolve_device(device)
        self.model = model.to(device).eval().requires_grad_(False)
        self.tokenizer, self.preprocess, self.device = tokenizer, preprocess, torch.device(device)

    @classmethod
    def load(cls, source="Salesforce/blip-vqa-base", device=None) -> BlipVQA:
        from transformers import AutoTokenizer, BlipForQuestionAnswering

        model = BlipForQuestionAnswering.from_pretrained(str(source))
        return cls(
            model,
            AutoTokenizer.from_pretrained(str(source)),
            _preprocess(source, model.config.vision_config.image_size),
            device,
        )

    def _answer_nll(self, answer: str, question_states, question_mask) -> torch.Tensor:
        n = question_states.shape[0]
        tok = self.tokenizer([answer] * n, padding="longest", return_tensors="pt").to(self.device)
        ids = tok.input_ids.clone()
        ids[:, 0] = self.model.decoder_start_token_id
        labels = ids.masked_fill(tok.attention_mask == 0, -100)
        out = self.model.text_decoder(
            input_ids=ids,
            attention_mask=tok.attention_mask,
            encoder_hidden_states=question_states,
            encoder_attention_mask=question_mask,
            labels=labels,
            reduction="none",
        )
        return out.loss

    @torch.no_grad()
    def p_yes(self, images: torch.Tensor, questions: Sequence[str]) -> torch.Tensor:
        px = self.preprocess(images.to(self.device, torch.float32))
        img = self.model.vision_model(pixel_values=px).last_hidden_state
        q = self.tokenizer(list(questions), padding="longest", truncation=True, return_tensors="pt").to(self.device)
        states = self.model.text_encoder(
            input_ids=q.input_ids,
            attention_mask=q.attention_mask,
            encoder_hidden_states=img,
            encoder_attention_mask=torch.ones(img.shape[:2], dtype=torch.long, device=self.device),
        ).last_hidden_state
        nll = torch.stack([self._answer_nll(a, states, q.attention_mask) for a in ("yes", "no")], 1)
        return torch.softmax(-nll, 1)[:, 0]

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> np.ndarray:
        """Product over each prompt's noun phrases of P(yes | image, '<phrase>?')."""
        owner, questions = [], []
        for i, p in enumerate(prompts):
            for phrase in noun_phrases(p) or [p]:
                owner.append(i)
                questions.append(phrase + "?")
        probs = self.p_yes(images[torch.tensor(owner, device=images.device)], questions).cpu().numpy()
        out = np.ones(len(prompts))
        np.multiply.at(out, np.array(owner), probs)
        return out


class Detector:
    """Open-vocabulary boxes and confidences for named objects (OWL-ViT), batched over images."""

    def __init__(self, model, tokenizer, preprocess: ImagePreprocess, device=None, threshold: float = 0.1):
        device = resolve_device(device)
        self.model = model.to(device).eval().requires_grad_(False)
        self.tokenizer, self.preprocess = tokenizer, preprocess
        self.device, self.threshold = torch.device(device), threshold

    @classmethod
    def load(cls, source="google/owlvit-base-patch32", device=None, threshold: float = 0.1) -> Detector:
        from transformers import AutoTokenizer, OwlViTForObjectDetection

        model = OwlViTForObjectDetection.from_pretrained(str(source))
        return cls(
            model,
            AutoTokenizer.from_pretrained(str(source)),
            _preprocess(source, model.config.vision_config.image_size),
            device,
            threshold,
        )

    @torch.no_grad()
    def detect(self, images: torch.Tensor, queries: Sequence[Sequence[str]]) -> list[list[dict]]:
        """Per image and per query: every box above the threshold as {'score', 'box' (x0, y0, x1, y1) in 0-1}."""
        q = max(len(x) for x in queries)
        flat = [list(x) + [""] * (q - len(x)) for x in queries]
        tok = self.tokenizer(
            [t for x in flat for t in x],
            padding="max_length",
            truncation=True,
            max_length=self.tokenizer.model_max_length if self.tokenizer.model_max_length < 1000 else 16,
            return_tensors="pt",
        ).to(self.device)
        px = self.preprocess(images.to(self.device, torch.float32))
        out = self.model(input_ids=tok.input_ids, attention_mask=tok.attention_mask, pixel_values=px)
        scores = torch.sigmoid(out.logits)  # (B, boxes, q)
        cx, cy, w, h = out.pred_boxes.unbind(-1)
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
        result = []
        for b in range(len(queries)):
            per = []
            for j in range(len(queries[b])):
                keep = scores[b, :, j] > self.threshold
                per.append(
                    [
                        {"score": float(s), "box": boxes[b, k].tolist()}
                        for s, k in zip(scores[b, keep, j], torch.nonzero(keep).flatten())
                    ]
                )
            result.append(per)
        return result


def position_score(rel: str, a: list[float], b: list[float], iou_threshold: float = 0.1) -> float:
    """T2I-CompBench's rule for 'a rel b' from boxes (x0, y0, x1, y1): the dominant axis decides; overlapping
    boxes (IoU >= threshold) are scaled down by threshold / IoU."""
    ca, cb = ((a[0] + a[2]) / 2, (a[1] + a[3]) / 2), ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
    dx, dy = cb[0] - ca[0], cb[1] - ca[1]
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    iou = inter / union if union > 0 else 0.0
    if rel in ("next to", "near", "on side of"):
        return 1.0
    horizontal = {
        "on the left of": dx > 0,
        "to the left of": dx > 0,
        "on the right of": dx < 0,
        "to the right of": dx < 0,
    }
    vertical = {
        "on the top of": dy > 0,
        "on top of": dy > 0,
        "above": dy > 0,
        "on the bottom of": dy < 0,
        "below": dy < 0,
    }
    if rel in horizontal:
        ok, dominant = horizontal[rel], abs(dx) > abs(dy)
    elif rel in vertical:
        ok, dominant = vertical[rel], abs(dy) > abs(dx)
    else:
        return 0.0
    if not (ok and dominant):
        return 0.0
    return 1.0 if iou < iou_threshold else iou_threshold / iou


class CompBenchScorer:
    """The CompBench columns at paper scale from BLIP-VQA, a detector and a CLIP (any may be missing if its
    columns are not asked for)."""

    def __init__(self, vqa: BlipVQA | None = None, detector: Detector | None = None, clip=None):
        self.vqa, self.detector, self.clip = vqa, detector, clip
        self.device = torch.device("cpu")
        for m in (vqa, detector, clip):
            if m is not None:
                self.device = m.device

    @classmethod
    def load(cls, sources: dict, device=None) -> CompBenchScorer:
        from .clip import CLIPScore

        return cls(
            BlipVQA.load(sources["blip_vqa"], device) if sources.get("blip_vqa") else None,
            Detector.load(sources["detector"], device) if sources.get("detector") else None,
            CLIPScore.load(sources["clip_b32"], device, scale=1.0) if sources.get("clip_b32") else None,
        )

    def _need(self, what: str, column: str):
        m = getattr(self, what)
        if m is None:
            key = {"vqa": "blip_vqa", "detector": "detector", "clip": "clip_b32"}[what]
            raise KeyError(f"column {column!r} needs evaluate_base.evaluators.{key} (a model folder or hub id)")
        return m

    def spatial(self, images: torch.Tensor, prompts: Sequence[str]) -> np.ndarray:
        det = self._need("detector", "spatial")
        rels = [relation_objects(p) for p in prompts]
        found = det.detect(images, [[r[0], r[2]] if r else ["object"] for r in rels])
        out = np.zeros(len(prompts))
        for i, (r, d) in enumerate(zip(rels, found)):
            if r is None:
                continue
            best = [max(x, key=lambda e: e["score"]) if x else None for x in d]
            if best[0] and best[1]:
                s = (
                    0.25 * best[0]["score"]
                    + 0.25 * best[1]["score"]
                    + position_score(r[1], best[0]["box"], best[1]["box"]) / 2
                )
            else:
                s = 0.25 * max((b["score"] for b in best if b), default=0.0)
            out[i] = s if s >= 0.5 else 0.0
        return out

    def numeracy(self, images: torch.Tensor, prompts: Sequence[str]) -> np.ndarray:
        det = self._need("detector", "numeracy")
        counted = [
            [
                (NUMBERS[p.split()[0]], p.split()[-1].rstrip("s"))
                for p in noun_phrases(t)
                if p.split() and p.split()[0] in NUMBERS
            ]
            for t in prompts
        ]
        found = det.detect(images, [[n for _, n in c] or ["object"] for c in counted])
        out = np.zeros(len(prompts))
        for i, (c, d) in enumerate(zip(counted, found)):
            if c:
                out[i] = np.mean([len(boxes) == k for (k, _), boxes in zip(c, d)])
        return out

    def score(self, column: str, images: torch.Tensor, prompts: Sequence[str]) -> np.ndarray:
        if column in ("color", "shape", "texture"):
            return self._need("vqa", column).score(images, prompts)
        if column == "spatial":
            return self.spatial(images, prompts)
        if column == "non_spatial":
            return self._need("clip", column).cosine(images, list(prompts)).cpu().numpy()
        if column == "complex":
            parts = [
                self._need("vqa", column).score(images, prompts),
                self.spatial(images, prompts),
                self._need("clip", column).cosine(images, list(prompts)).cpu().numpy(),
            ]
            return np.mean(parts, 0)
        if column == "numeracy":
            return self.numeracy(images, prompts)
        raise KeyError(f"no CompBench evaluator for column {column!r}")


__all__ = ["BlipVQA", "Detector", "CompBenchScorer", "noun_phrases", "relation_objects", "position_score"]

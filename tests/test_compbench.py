"""Paper-scale CompBench evaluators on tiny random configs saved locally: BLIP-VQA, OWL-ViT, T2I-CompBench's rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from replication.models import build_tokenizer
from replication.rewards.compbench import (
    BlipVQA,
    CompBenchScorer,
    Detector,
    noun_phrases,
    position_score,
    relation_objects,
)


def test_prompt_splitting_follows_compbench_templates():
    assert noun_phrases("a red book and a yellow vase") == ["a red book", "a yellow vase"]
    assert noun_phrases("A blue bench with a green car.") == ["a blue bench", "a green car"]
    assert relation_objects("a cat on the left of a dog") == ("cat", "on the left of", "dog")
    assert relation_objects("a red book and a yellow vase") is None


def test_position_rule():
    left, right = [0.0, 0.4, 0.2, 0.6], [0.6, 0.4, 0.8, 0.6]
    assert position_score("on the left of", left, right) == 1.0
    assert position_score("on the right of", left, right) == 0.0
    assert position_score("on the top of", left, right) == 0.0, "the horizontal axis dominates"
    overlapping = [0.1, 0.4, 0.3, 0.6]
    iou = (0.1 * 0.2) / (2 * 0.04 - 0.1 * 0.2)
    assert position_score("on the left of", left, overlapping) == pytest.approx(0.1 / iou)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from transformers import BlipConfig, BlipForQuestionAnswering, OwlViTConfig, OwlViTForObjectDetection

    d = tmp_path_factory.mktemp("compbench")
    tok = build_tokenizer(max_length=16)
    torch.manual_seed(0)
    text = dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        sep_token_id=tok.eos_token_id,
    )
    vqa = BlipForQuestionAnswering(
        BlipConfig(
            text_config={**text, "encoder_hidden_size": 32},
            vision_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=32,
                patch_size=8,
            ),
        )
    )
    vqa.save_pretrained(str(d / "vqa"))
    tok.save_pretrained(str(d / "vqa"))
    owl = OwlViTForObjectDetection(
        OwlViTConfig(
            text_config={**text, "max_position_embeddings": 16},
            vision_config=dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=32,
                patch_size=8,
            ),
            projection_dim=32,
        )
    )
    owl.save_pretrained(str(d / "owl"))
    tok.save_pretrained(str(d / "owl"))
    return d


def test_blip_vqa_loads_and_multiplies_phrase_probabilities(tiny_models):
    vqa = BlipVQA.load(tiny_models / "vqa")
    x = torch.rand(3, 3, 32, 32)
    p = vqa.p_yes(x, ["a red circle?", "a blue square?", "a cat?"])
    assert p.shape == (3,) and ((p > 0) & (p < 1)).all()
    prompts = ["a red circle and a blue square", "a cat", "a green car with a red bench"]
    score = vqa.score(x, prompts)
    first = vqa.p_yes(x[:1].repeat(2, 1, 1, 1), ["a red circle?", "a blue square?"])
    assert score.shape == (3,) and score[0] == pytest.approx(float(first.prod()), rel=1e-4)


def test_detector_and_scorer_columns(tiny_models):
    det = Detector.load(tiny_models / "owl", threshold=0.0)
    x = torch.rand(2, 3, 32, 32)
    found = det.detect(x, [["cat", "dog"], ["car"]])
    assert len(found) == 2 and len(found[0]) == 2 and len(found[1]) == 1
    assert all(0 <= b["score"] <= 1 and len(b["box"]) == 4 for per in found for boxes in per for b in boxes)
    scorer = CompBenchScorer(BlipVQA.load(tiny_models / "vqa"), det, None)
    spatial = scorer.score("spatial", x, ["a cat on the left of a dog", "a car"])
    assert spatial.shape == (2,) and spatial[1] == 0 and ((spatial == 0) | (spatial >= 0.5)).all()
    numeracy = scorer.score("numeracy", x, ["three cats", "a car"])
    assert numeracy.shape == (2,) and set(np.unique(numeracy)) <= {0.0, 1.0}
    assert scorer.score("color", x, ["a red car", "a blue cat"]).shape == (2,)
    with pytest.raises(KeyError, match="clip_b32"):
        scorer.score("non_spatial", x, ["a cat bigger than a dog", "a car"])

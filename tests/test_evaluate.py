"""The metric suite: every Table-1 column on the rows it applies to, cached generation per prompt set, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from replication import evaluate, metrics
from replication.evaluate import GenerationParams
from replication.models import build_tokenizer
from replication.rewards.aesthetic import AestheticScore
from replication.rewards.base import ImagePreprocess
from replication.rewards.clip import ClipArch, build_tiny_clip
from replication.rewards.parts import PreferenceHead
from replication.rewards.preference import build_clip_preference


@pytest.fixture(scope="module")
def evaluators(tmp_path_factory):
    """Randomly initialised evaluator folders in the formats the stages write (scores are arbitrary)."""
    d = tmp_path_factory.mktemp("evaluators")
    tok = build_tokenizer()
    clip = build_tiny_clip(ClipArch(width=32, layers=1, heads=2, embed_dim=32), tok, seed=0)
    clip.save_pretrained(str(d / "clip"))
    tok.save_pretrained(str(d / "clip"))
    (d / "clip" / "preprocessor_config.json").write_text(json.dumps(ImagePreprocess(32).config()))
    build_clip_preference(d / "clip", "image_reward", quality_head=True).save(d / "ir")
    AestheticScore(clip, PreferenceHead(32), ImagePreprocess(32)).save(d / "aes")
    return {"clip": str(d / "clip"), "image_reward": str(d / "ir"), "aesthetic": str(d / "aes")}


def test_rows_and_columns():
    rows = metrics.select_rows("table1", per_category=1, drawbench_limit=3)
    sets = [r["set"] for r in rows]
    assert sets[:3] == ["drawbench"] * 3 and sets.count("compbench") == 13  # 7 categories, shape has no held-out split
    assert metrics.applies("clip", rows).sum() == 3 and metrics.applies("color", rows).sum() == 2
    assert set(metrics.EVALUATORS) == set(metrics.COLUMNS)
    with pytest.raises(KeyError, match="table1"):
        metrics.select_rows("everything")


def test_suite_scores_every_column_where_it_applies(micro_sd_dir, evaluators):
    rows = metrics.select_rows("table1", per_category=1, drawbench_limit=3)
    g = GenerationParams(num_steps=2, guidance_scale=5.0, batch_size=64)
    images, nfe = evaluate.generate_rows(micro_sd_dir, rows, g, seed=0)
    assert images.shape == (16, 32, 32, 3) and nfe == 4
    comp = [i for i, r in enumerate(rows) if r["set"] == "compbench"]
    cached, _ = evaluate.generate_cached(
        micro_sd_dir, [rows[i]["prompt"] for i in comp], evaluate.seeds_for(len(comp), 0), g
    )
    assert np.array_equal(cached, images[comp]), "each prompt set keeps its own seeds (shared cache)"
    with metrics.MetricSuite.load(metrics.COLUMNS, sources=evaluators) as suite:
        per_image = suite.score(images, rows)
    for col in metrics.COLUMNS:
        mask = metrics.applies(col, rows)
        assert np.isfinite(per_image[col][mask]).all() and np.isnan(per_image[col][~mask]).all(), col
    assert np.array_equal(
        per_image["color"][metrics.applies("color", rows)],
        evaluate.parser_scores(
            images[metrics.applies("color", rows)],
            [r["spec"] for r, m in zip(rows, metrics.applies("color", rows)) if m],
        ),
    )
    mllm = per_image["mllm"][metrics.applies("mllm", rows)]
    assert ((0 <= mllm) & (mllm <= 1)).all()
    summary = metrics.summarise_columns(per_image, n_boot=100)
    assert set(summary) == set(metrics.COLUMNS)
    assert all(v["ci_low"] <= v["mean"] <= v["ci_high"] for v in summary.values())


def test_cli_writes_json_with_confidence_intervals(micro_sd_dir, evaluators, tmp_path):
    out = tmp_path / "res.json"
    cmd = [
        sys.executable,
        "-m",
        "replication.metrics",
        "--pipeline",
        str(micro_sd_dir),
        "--prompts",
        "table1",
        "--out",
        str(out),
        "--columns",
        "clip,color,spatial,mllm",
        "--per-category",
        "1",
        "--drawbench-limit",
        "2",
        "--steps",
        "2",
        "--bootstrap",
        "50",
        "--source",
        f"clip={evaluators['clip']}",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert set(res["columns"]) == {"clip", "color", "spatial", "mllm"}
    for v in res["columns"].values():
        assert {"mean", "ci_low", "ci_high", "n"} <= set(v)
    assert res["columns"]["clip"]["n"] == 2 and res["columns"]["color"]["n"] == 2
    assert "parser" in res["evaluators"]["color"] and "clip" in r.stdout


def test_cli_errors_name_the_fix(micro_sd_dir, tmp_path, capsys):
    out = str(tmp_path / "x.json")
    assert metrics.main(["--pipeline", str(micro_sd_dir), "--out", out, "--columns", "beauty"]) == 2
    assert "unknown column" in capsys.readouterr().err
    assert metrics.main(["--pipeline", str(tmp_path), "--out", out]) == 2
    assert "model_index.json" in capsys.readouterr().err


def test_clip_evaluation_pairs_every_system(monkeypatch):
    """Paired differences against the first system and between every other pair, on the same prompts and seeds."""
    import torch

    shift = {"base": 0.0, "a": 0.2, "b": 0.1}

    def fake_generate(model_dir, prompts, seeds, g, device="cpu", model=None):
        return np.full((len(prompts), 4, 4, 3), int(100 * shift[str(model_dir)]) + 50, np.uint8), 2.0 * g.num_steps

    class Evaluator:
        device = "cpu"

        def cosine(self, images, prompts):
            noise = torch.linspace(-0.05, 0.05, len(prompts))  # shared per prompt, so it cancels in pairs
            return images.mean(dim=(1, 2, 3)) + noise

    monkeypatch.setattr(evaluate, "generate_cached", fake_generate)
    res = evaluate.clip_evaluation(
        {k: k for k in shift}, "drawbench", GenerationParams(num_steps=3), Evaluator(), n_boot=200, limit=40
    )
    assert set(res["vs_base"]) == {"a", "b"} and set(res["paired"]) == {"a - b"}
    d = res["paired"]["a - b"]
    assert d["mean"] == pytest.approx(0.1 / 2.55, abs=2e-3) and d["ci_low"] == pytest.approx(d["mean"], abs=1e-6)
    assert res["vs_base"]["a"]["mean"] > res["vs_base"]["b"]["mean"] > 0
    assert res["systems"]["a"]["nfe_per_image"] == 6.0

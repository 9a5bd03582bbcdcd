"""The MLLM grader: rubric parsing, the world's grading function, the HTTP client against the local
grader (retries, malformed answers, unreachable endpoints, keys, budget), speed, and no key on disk."""

from __future__ import annotations

import json
import logging
import re
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from replication.rewards.mllm import (
    KEYS,
    OVERALL_WEIGHTS,
    GraderBudgetError,
    GraderClient,
    GraderError,
    GraderParseError,
    LocalGrader,
    MLLMGrader,
    grade_world,
    parse_grade,
    rubric_text,
)
from replication.rewards.registry import load_reward
from replication.world import Sampler, render_batch, sample_captioned

ROOT = Path(__file__).resolve().parents[1]
SENTINEL = "sk-test-" + "Z" * 32


@pytest.fixture(scope="module")
def renders():
    s = Sampler(np.random.default_rng(3))
    items = [sample_captioned(s, style) for style in ("color", "spatial", "texture", "complex") * 16]
    return render_batch([i[0] for i in items]), [i[1] for i in items]


@pytest.fixture(scope="module")
def grader():
    g = MLLMGrader.load("local", max_retries=1, backoff=0.01)
    yield g
    g.close()


def test_parse_grade_accepts_the_rubric_and_nothing_else():
    good = {
        "accuracy": 7,
        "creativity": 5.5,
        "quality": "8",
        "consistency": 6,
        "emotion": 4,
        "overall": 6.5,
        "reason": "fine",
    }
    assert parse_grade(json.dumps(good))["quality"] == 8.0
    assert parse_grade("```json\n" + json.dumps(good) + "\n```")["overall"] == 6.5
    for bad in (
        "I would say 7/10",
        "{not json}",
        json.dumps({k: 5 for k in KEYS if k != "emotion"}),
        json.dumps({**good, "overall": 11}),
        json.dumps({**good, "accuracy": "high"}),
        json.dumps({**good, "accuracy": True}),
        "[1, 2]",
    ):
        with pytest.raises(GraderParseError):
            parse_grade(bad)


def test_world_grades_order_correct_images_first(renders):
    images, prompts = renders
    right = grade_world(images, prompts)
    wrong = grade_world(images, prompts[1:] + prompts[:1])  # each image against another image's prompt
    for k in KEYS:
        assert ((0 <= right[k]) & (right[k] <= 10)).all()
    assert (right["accuracy"] == 10).all() and right["quality"].min() > 9.0
    assert (right["overall"] > wrong["overall"]).mean() > 0.9
    expected = sum(w * right[k] for k, w in OVERALL_WEIGHTS.items())
    assert np.allclose(right["overall"], expected, atol=0.011)


def test_client_round_trip_equals_the_world_function_and_is_fast(grader, renders):
    images, prompts = renders
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    t0 = time.perf_counter()
    scores = grader.grade(x, prompts)
    elapsed = time.perf_counter() - t0
    direct = grade_world(images, prompts)
    for k in KEYS:
        assert np.allclose(scores[k], direct[k])
    assert elapsed < 2.0, f"grading 64 images took {elapsed:.2f} s"
    r = grader(x, prompts)
    assert r.shape == (64,) and torch.allclose(r.double(), torch.from_numpy(direct["overall"]))


def test_rubric_names_the_five_aspects_and_carries_the_prompt():
    text = rubric_text("a red circle")
    for k in KEYS:
        assert f'"{k}"' in text
    assert 'Prompt: "a red circle"' in text


def test_malformed_answer_is_retried_then_raised_never_defaulted(renders):
    with LocalGrader(reply_override=lambda n: "Score: about seven") as server:
        client = GraderClient(server.base_url, server.model, api_key_env=None, max_retries=2, backoff=0.0)
        with pytest.raises(GraderParseError, match="no default score"):
            client.grade(renders[0][:1], renders[1][:1])
        assert server.calls == 3


def test_transient_errors_are_retried(renders):
    with LocalGrader(reply_override=lambda n: 503 if n == 1 else None) as server:
        client = GraderClient(server.base_url, server.model, api_key_env=None, max_retries=2, backoff=0.0)
        out = client.grade(renders[0][:1], renders[1][:1])
        assert server.calls == 2 and out["accuracy"][0] == 10


def test_unreachable_endpoint_names_the_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    client = GraderClient(f"http://127.0.0.1:{port}/v1", "m", api_key_env=None, max_retries=1, backoff=0.0, timeout=2)
    with pytest.raises(GraderError, match=f"cannot reach the grader at http://127.0.0.1:{port}/v1"):
        client.grade(np.zeros((1, 8, 8, 3), np.uint8), ["a red circle"])
    assert client.requests_made == 2


def test_missing_key_for_a_remote_endpoint(monkeypatch):
    monkeypatch.delenv("REPLICATION_TEST_KEY", raising=False)
    with pytest.raises(GraderError, match="REPLICATION_TEST_KEY"):
        GraderClient("https://api.example.com/v1", "gpt-4o", api_key_env="REPLICATION_TEST_KEY")
    with pytest.raises(ValueError, match="http"):
        MLLMGrader.load("gpt-4o")


def test_key_comes_from_the_environment_and_never_shows(monkeypatch, renders, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    with LocalGrader(api_key=SENTINEL) as server:
        monkeypatch.setenv("REPLICATION_TEST_KEY", SENTINEL)
        client = GraderClient(server.base_url, server.model, api_key_env="REPLICATION_TEST_KEY", max_retries=0)
        assert client.grade(renders[0][:2], renders[1][:2])["accuracy"].tolist() == [10.0, 10.0]
        monkeypatch.setenv("REPLICATION_TEST_KEY", "sk-wrong")
        wrong = GraderClient(server.base_url, server.model, api_key_env="REPLICATION_TEST_KEY", max_retries=0)
        with pytest.raises(GraderError, match="REPLICATION_TEST_KEY") as err:
            wrong.grade(renders[0][:1], renders[1][:1])
        assert "sk-wrong" not in str(err.value)
        seen = repr(client) + str(vars(client)) + caplog.text + capsys.readouterr().out
        assert SENTINEL not in seen


def test_request_budget(renders):
    with LocalGrader() as server:
        client = GraderClient(server.base_url, server.model, api_key_env=None, max_requests=3, concurrency=1)
        with pytest.raises(GraderBudgetError, match="max_requests"):
            client.grade(renders[0][:5], renders[1][:5])


def test_load_reward_starts_and_stops_the_local_grader(renders):
    r = load_reward("mllm")
    url = r.client.base_url
    x = torch.from_numpy(renders[0][:4]).permute(0, 3, 1, 2).float() / 255
    assert r(x, renders[1][:4]).shape == (4,)
    r.close()
    with pytest.raises(GraderError):
        GraderClient(url, "m", api_key_env=None, max_retries=0, timeout=2).grade(renders[0][:1], renders[1][:1])


KEY_PATTERN = re.compile(r"sk-[A-Za-z0-9_-]{16,}|Bearer\s+\S{8,}")


def test_no_api_key_in_notebooks_params_logs_or_dvc_lock():
    import os

    import yaml

    files = [ROOT / "params.yaml", ROOT / "dvc.yaml", ROOT / "dvc.lock"]
    for pattern in (
        "notebooks/*.ipynb",
        "executed/*.ipynb",
        "results/**/*.json",
        "results/train/*.csv",
        ".checkpoints/*/metrics.csv",
        "benchmarks/results/*.json",
    ):
        files += sorted(ROOT.glob(pattern))
    env_name = yaml.safe_load((ROOT / "params.yaml").read_text())["mllm"]["api_key_env"]
    real_key = os.environ.get(env_name, "")  # whatever format the user's key has, its value never lands here
    checked = 0
    for f in files:
        if f.is_file():
            text = f.read_text(errors="ignore")
            assert not KEY_PATTERN.search(text), f"{f} contains something that looks like an API key"
            assert SENTINEL not in text
            assert len(real_key) < 8 or real_key not in text, f"{f} contains the value of ${env_name}"
            checked += 1
    assert checked >= 3
    mllm = yaml.safe_load((ROOT / "params.yaml").read_text())["mllm"]
    assert set(mllm) >= {"base_url", "model", "api_key_env"} and "api_key" not in mllm
    assert re.fullmatch(r"[A-Z][A-Z0-9_]*", mllm["api_key_env"]), "params name the variable, never hold the key"

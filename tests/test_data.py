"""The tiny world's datasets: DVC-compatible hashing, regeneration matching data.dvc, contents, loaders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from replication import data as D
from replication.world import Scene, Spec, parse_prompt, score, vocab

DVC_ENV = {
    **os.environ,
    "DVC_NO_ANALYTICS": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}


# ----------------------------------------------------------------------------- DVC's directory hash
def dvc_add_md5(tmp: Path, layout: dict[str, bytes]) -> tuple[str, str]:
    """(md5 that `dvc add` records, dvc_dir_md5) for a folder with `layout` (relpath -> bytes)."""
    repo = tmp / "repo"
    d = repo / "d"
    for rel, content in layout.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(content)
    ours = D.dvc_dir_md5(d)  # before dvc touches anything
    venv_dvc = Path(sys.executable).parent / "dvc"  # the test interpreter's own DVC, activated or not
    dvc = str(venv_dvc) if venv_dvc.exists() else shutil.which("dvc") or "dvc"
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"], [dvc, "add", "-q", "d"]):
        r = subprocess.run(cmd, cwd=repo, env=DVC_ENV, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"{cmd}: {r.stdout}{r.stderr}"
    outs = yaml.safe_load((repo / "d.dvc").read_text())["outs"]
    assert outs[0]["nfiles"] == len(layout)
    return outs[0]["md5"], ours


def test_dvc_dir_md5_matches_dvc(tmp_path):
    layout = {
        "top.txt": b"hello\n",
        "crlf.txt": b"line one\r\nline two\r\n",  # DVC 3 hashes raw bytes (no dos2unix)
        "sub/deeper/blob.bin": bytes(range(256)) * 3,
        "sub/x.json": b'{"a": 1}',
        "zeta/empty": b"",
        "Upper.txt": b"case sorts before lower\n",
    }
    theirs, ours = dvc_add_md5(tmp_path, layout)
    assert ours == theirs
    assert ours.endswith(".dir") and len(ours) == 36


def test_dvc_dir_md5_matches_dvc_with_prefix_names(tmp_path):
    layout = {"a/b/z.bin": b"z", "a/y.txt": b"y", "a-b.txt": b"ab", "a.json": b"{}", "a0": b"0"}
    theirs, ours = dvc_add_md5(tmp_path, layout)
    assert ours == theirs


# ----------------------------------------------------------------------------- regeneration
@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A fresh build of data/ in a temporary repository root (empty dvc.yaml and params.yaml)."""
    root = tmp_path_factory.mktemp("root")
    (root / "dvc.yaml").write_text("")
    (root / "params.yaml").write_text("")
    D.build(root / "data")
    return root


def test_regenerated_data_matches_data_dvc(built, repo_root):
    got = D.dvc_dir_md5(built / "data")
    want = D.pinned_md5(repo_root / "data.dvc")
    assert got == want, f"regenerated data hashes to {got}, data.dvc pins {want}"
    assert not (built / "data.building").exists()
    files = sorted(p.relative_to(built / "data").as_posix() for p in (built / "data").rglob("*") if p.is_file())
    pinned = yaml.safe_load((repo_root / "data.dvc").read_text())["outs"][0]
    assert len(files) == pinned["nfiles"]
    assert sum((built / "data" / f).stat().st_size for f in files) == pinned["size"]


def test_ensure_accepts_matching_data_without_rebuilding(built, repo_root, monkeypatch, capsys):
    def no_build(_):
        raise AssertionError("ensure rebuilt data that already matched")

    monkeypatch.setattr(D, "build", no_build)
    got = D.ensure(data_dir=built / "data", dvc_file=repo_root / "data.dvc")
    assert got == D.pinned_md5(repo_root / "data.dvc")
    assert "matches" in capsys.readouterr().out


def test_ensure_fails_loudly_on_hash_mismatch(built, repo_root, tmp_path, monkeypatch):
    pinned = yaml.safe_load((repo_root / "data.dvc").read_text())
    pinned["outs"][0]["md5"] = "0" * 32 + ".dir"  # a tampered pin
    fake = tmp_path / "data.dvc"
    fake.write_text(yaml.safe_dump(pinned))
    calls = []
    monkeypatch.setattr(D, "build", calls.append)  # the rebuild would give the same bytes: skip its 10 s
    with pytest.raises(SystemExit) as e:
        D.ensure(data_dir=built / "data", dvc_file=fake)
    msg = str(e.value.code)
    assert "DATA HASH MISMATCH" in msg
    assert "0" * 32 + ".dir" in msg and D.dvc_dir_md5(built / "data") in msg
    assert calls == [built / "data"]  # it regenerated once before giving up


# ----------------------------------------------------------------------------- contents
def read_jsonl(p: Path) -> list[dict]:
    return [json.loads(line) for line in p.read_text().splitlines()]


@pytest.fixture(scope="module")
def contents(built):
    d = built / "data"
    out = {"manifest": json.loads((d / "manifest.json").read_text())}
    for name in D.IMAGE_SETS:
        out[name] = (np.load(d / name / "images.npy", allow_pickle=False), read_jsonl(d / name / "captions.jsonl"))
    for name in D.PROMPT_SEEDS:
        out[name] = read_jsonl(d / "prompts" / f"{name}.jsonl")
    return out


def test_image_set_sizes(contents):
    man = contents["manifest"]
    assert man["canvas"] == 32 and man["world_version"] == D.WORLD_VERSION
    for name, spec in D.IMAGE_SETS.items():
        images, rows = contents[name]
        assert images.shape == (spec.size, 32, 32, 3) and images.dtype == np.uint8, name
        assert len(rows) == spec.size and [r["id"] for r in rows] == list(range(spec.size))
        assert man["image_sets"][name]["size"] == spec.size
    assert {n: s.size for n, s in D.IMAGE_SETS.items()} == {"t2i2m": 16000, "journeydb": 4000, "pokemon": 1000}


def test_prompt_set_sizes(contents):
    db = contents["drawbench"]
    assert len(db) == 200 and sum(k for _, k in D.DRAWBENCH.values()) == 200
    assert Counter(r["category"] for r in db) == {c: k for c, (_, k) in D.DRAWBENCH.items()}
    cb = contents["compbench"]
    per = Counter((r["category"], r["split"]) for r in cb)
    expected = {
        (c, s): D.COMPBENCH_PER_SPLIT
        for c in vocab.CATEGORIES
        for s in ("seen", "heldout")
        if (c, s) != ("shape", "heldout")
    }
    assert per == expected
    assert {r["category"] for r in cb} == set(vocab.CATEGORIES) and len(cb) == 1300
    pool = contents["rlhf_pool"]
    assert len(pool) == D.RLHF_POOL == 2000
    assert len({r["prompt"] for r in pool}) == 2000  # distinct
    for name in D.PROMPT_SEEDS:
        assert [r["id"] for r in contents[name]] == list(range(len(contents[name])))
        assert contents["manifest"]["prompt_sets"][name]["size"] == len(contents[name])


def test_rlhf_pool_disjoint_from_evaluation(contents):
    evaluation = {r["prompt"] for r in contents["drawbench"]} | {r["prompt"] for r in contents["compbench"]}
    pool = {r["prompt"] for r in contents["rlhf_pool"]}
    assert not pool & evaluation, sorted(pool & evaluation)[:5]
    assert not any(Spec.from_json(r["spec"]).heldout for r in contents["rlhf_pool"])


def test_heldout_splits(contents):
    for r in contents["compbench"]:
        assert Spec.from_json(r["spec"]).heldout == (r["split"] == "heldout"), r
    for r in contents["drawbench"]:
        assert Spec.from_json(r["spec"]).heldout == (r["category"] == "rare"), r


def test_training_sets_never_show_heldout(contents):
    for name in D.IMAGE_SETS:
        _, rows = contents[name]
        for r in rows:
            assert not parse_prompt(r["caption"]).heldout, (name, r["caption"])
            for o in Scene.from_json(r["scene"]).objects:
                assert not vocab.is_heldout(o.color, o.shape, o.texture), (name, r["id"], o)


def test_stored_specs_equal_parsed_text(contents):
    n = 0
    for name in D.IMAGE_SETS:
        for r in contents[name][1]:
            assert Spec.from_json(r["spec"]) == parse_prompt(r["caption"]), (name, r["caption"])
            n += 1
    for name in D.PROMPT_SEEDS:
        for r in contents[name]:
            assert Spec.from_json(r["spec"]) == parse_prompt(r["prompt"]), (name, r["prompt"])
            n += 1
    assert n == 21000 + 200 + 1300 + 2000


def test_captions_true_of_stored_images(contents):
    """The stored images show what their captions say (the parser reads them back)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in D.IMAGE_SETS:
            images, rows = contents[name]
            s = score(images[:200], [Spec.from_json(r["spec"]) for r in rows[:200]])
            assert float(s["exact"].mean()) >= 0.99, name
    finally:
        torch.set_num_threads(prev)


# ----------------------------------------------------------------------------- loaders
@pytest.fixture
def fresh_loaders():
    D.load_image_set.cache_clear()
    D.load_prompts.cache_clear()
    yield
    D.load_image_set.cache_clear()
    D.load_prompts.cache_clear()


def test_loaders_read_built_data(built, monkeypatch, fresh_loaders):
    monkeypatch.setenv("REPLICATION_ROOT", str(built))
    ds = D.load_image_set("pokemon")
    assert len(ds) == 1000 and ds.images.shape == (1000, 32, 32, 3) and ds.name == "pokemon"
    assert all(parse_prompt(c) == Spec.from_json(s) for c, s in zip(ds.captions[:50], ds.specs[:50]))
    assert len(D.load_prompts("drawbench")) == 200


def test_loaders_unknown_names(fresh_loaders):
    with pytest.raises(KeyError, match="unknown dataset 'imagenet'.*t2i2m, journeydb, pokemon"):
        D.load_image_set("imagenet")
    with pytest.raises(KeyError, match="unknown prompt set 'parti'.*drawbench"):
        D.load_prompts("parti")


def test_loaders_missing_data(tmp_path, monkeypatch, fresh_loaders):
    (tmp_path / "dvc.yaml").write_text("")
    (tmp_path / "params.yaml").write_text("")
    monkeypatch.setenv("REPLICATION_ROOT", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="make data") as e:
        D.load_image_set("t2i2m")
    assert str(tmp_path / "data" / "t2i2m" / "images.npy") in str(e.value)
    with pytest.raises(FileNotFoundError, match="make data") as e:
        D.load_prompts("compbench")
    assert "compbench.jsonl" in str(e.value)

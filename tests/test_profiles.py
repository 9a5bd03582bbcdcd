"""Profiles never clobber each other: a profile other than the default runs in its own copy of the repository, so
the results, figures, dvc.lock and params.yaml that git keeps are only ever written by the default profile."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from replication import pipeline


@pytest.fixture
def repo(repo_root, tmp_path) -> Path:
    """A git repository holding the working tree's files (data/ linked), with one committed result file."""
    dst = tmp_path / "repo"
    for f in pipeline.tracked_files(repo_root):
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo_root / f, dst / f)
    (dst / "data").mkdir()
    (dst / "data" / "manifest.json").write_text("{}\n")
    subprocess.run(["git", "init", "-q"], cwd=dst, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dst, check=True)
    return dst


def fake_dvc(bin_dir: Path) -> None:
    """A `dvc` that records where it ran and writes a result there, as `dvc repro` would."""
    bin_dir.mkdir()
    script = bin_dir / "dvc"
    script.write_text(
        '#!/bin/sh\nmkdir -p results\necho "$PWD $REPLICATION_ROOT" > results/ran_here.txt\n'
        'grep "^profile:" params.yaml >> results/ran_here.txt\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def snapshot(root: Path) -> dict[str, bytes]:
    return {f: (root / f).read_bytes() for f in pipeline.tracked_files(root)}


def test_a_profile_runs_in_its_own_copy_and_leaves_the_tree_as_it_was(repo, tmp_path, monkeypatch):
    fake_dvc(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    before = snapshot(repo)
    assert pipeline.repro("smoke", repo) == 0
    assert snapshot(repo) == before, "the smoke profile changed a file of the working tree"
    copy = repo / ".profiles" / "smoke"
    ran = (copy / "results" / "ran_here.txt").read_text().split()
    assert ran[:2] == [str(copy), str(copy)] and ran[2:] == ["profile:", "smoke"]
    assert not (repo / "results" / "ran_here.txt").exists()
    assert (copy / "params.yaml").read_text() == (repo / "params.yaml").read_text().replace(
        "\nprofile: tiny\n", "\nprofile: smoke\n", 1
    )

    # the copy keeps its own outputs and lock across runs; code edits and removals reach it
    (copy / "dvc.lock").write_text("smoke's own lock\n")
    (repo / "replication" / "extra_module.py").write_text("X = 1\n")
    (repo / "replication" / "tensors.py").write_text((repo / "replication" / "tensors.py").read_text() + "\n# edit\n")
    pipeline.sync_copy("smoke", repo)
    assert (copy / "replication" / "extra_module.py").exists()
    assert (copy / "replication" / "tensors.py").read_text().endswith("# edit\n")
    assert (copy / "dvc.lock").read_text() == "smoke's own lock\n" and (copy / "results" / "ran_here.txt").exists()
    (repo / "replication" / "extra_module.py").unlink()
    pipeline.sync_copy("smoke", repo)
    assert not (copy / "replication" / "extra_module.py").exists()


def test_the_default_profile_runs_in_place_and_refuses_a_file_set_to_another(repo, tmp_path, monkeypatch):
    from replication import config

    config.set_profile("smoke", repo / "params.yaml")
    with pytest.raises(config.ConfigError, match="Set it back to tiny"):
        pipeline.repro("tiny", repo)
    with pytest.raises(config.ConfigError, match="'huge' is unknown"):
        pipeline.repro("huge", repo)

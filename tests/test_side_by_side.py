"""`make repro JOBS=N`: stages run side by side as queued DVC experiments, then come back through the run-cache.

A toy DVC project (seconds of work) is enough to check the mechanism: the upstream stage runs first, the
independent stages run once each in DVC's queue with the cores shared out, the workspace takes each run
(outputs and dvc.lock entry, git-kept results included), `dvc repro` does not run them again, and no
experiment is left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from replication import experiments, pipeline

pytestmark = pytest.mark.skipif(shutil.which("dvc") is None or shutil.which("git") is None, reason="needs dvc, git")

WRITE = (
    "import os, sys; open(sys.argv[2], 'w').write(open(sys.argv[1]).read() + sys.argv[3]); "
    "open({log!r}, 'a').write(sys.argv[3] + ' ' + os.environ.get('OMP_NUM_THREADS', '-') + chr(10))"
)


def toy_project(tmp_path: Path, identity: bool = True) -> tuple[Path, Path]:
    repo, log = tmp_path / "repo", tmp_path / "runs.log"
    repo.mkdir()
    py = f'{sys.executable} -c "{WRITE.format(log=str(log))}"'
    stages = {
        "up": {"cmd": f"{py} seed.txt up.txt up", "deps": ["seed.txt"], "outs": ["up.txt"]},
        "a": {"cmd": f"{py} up.txt a.txt a", "deps": ["up.txt"], "outs": ["a.txt"]},
        "b": {"cmd": f"{py} up.txt b.txt b", "deps": ["up.txt"], "plots": [{"b.txt": {"cache": False}}]},
        "c": {"cmd": f"{py} a.txt c.txt c", "deps": ["a.txt", "b.txt", "d.json"], "outs": ["c.txt"]},
        # results kept in git (cache: false), as results/controls.json and the training logs: DVC's run-cache
        # would rerun these stages
        "d": {"cmd": f"{py} up.txt d.json d", "deps": ["up.txt"], "outs": [{"d.json": {"cache": False}}]},
    }
    (repo / "dvc.yaml").write_text(json.dumps({"stages": stages}))  # JSON is YAML
    (repo / "seed.txt").write_text("seed")
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")  # tracked, as the project's is
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "toy"]):
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)
    if identity:  # DVC's experiments are commits: they need git's user.name and user.email
        for k, v in (("user.name", "t"), ("user.email", "t@t")):
            subprocess.run(["git", "config", k, v], cwd=repo, check=True)
    return repo, log


def test_producers_are_the_direct_upstream():
    dvc = {
        "stages": {
            "up": {"outs": ["m/base"]},
            "a": {"deps": ["m/base/x.json", "code.py"], "outs": ["m/a"]},
            "b": {"deps": ["m/base"], "outs": [{"r.json": {"cache": False}}]},
            "c": {"deps": ["m/a"]},
        }
    }
    assert pipeline.producers(dvc, ["a", "b"]) == ["up"]
    assert pipeline.producers(dvc, ["c"]) == ["a"]


def test_side_by_side_runs_each_stage_once_and_the_workspace_takes_its_result(tmp_path):
    repo, log = toy_project(tmp_path)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    env.pop("OMP_NUM_THREADS", None)
    assert pipeline.side_by_side(["d", "a", "b"], 2, repo, env) == 0
    runs = log.read_text().split("\n")[:-1]
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    # the upstream stage ran here, the three queued ones in the queue with the cores shared out
    assert sorted(runs) == sorted(["up -", f"a {threads}", f"b {threads}", f"d {threads}"])
    # each run taken into the workspace: outputs and dvc.lock entries
    assert [(repo / f).read_text() for f in ("a.txt", "b.txt", "d.json")] == ["seedupa", "seedupb", "seedupd"]
    assert json.loads(experiments.dvc("status", "--json", "up", "a", "b", "d", cwd=repo).stdout) == {}
    r = subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, text=True, check=True)
    assert "Running stage 'c'" in r.stdout
    assert log.read_text().split("\n")[:-1] == runs + ["c -"]  # a, b and d were not run again
    assert (repo / "c.txt").read_text() == "seedupac"
    assert not experiments.dvc("exp", "list", "-A", "--name-only", cwd=repo).stdout.split()  # none left behind
    # up to date: a second call queues nothing
    assert pipeline.side_by_side(["d", "a", "b"], 2, repo, env) == 0
    assert len(log.read_text().split("\n")[:-1]) == 5


def test_without_a_git_identity_the_stages_run_one_at_a_time(tmp_path, capsys):
    repo, log = toy_project(tmp_path, identity=False)
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1"}
    env.pop("GIT_CONFIG_GLOBAL", None)
    assert pipeline.side_by_side(["d", "a", "b"], 2, repo, env) == 0
    assert "git config --global user.name" in capsys.readouterr().out
    assert log.read_text().split("\n")[:-1] == ["up -"]  # nothing queued
    subprocess.run(["dvc", "repro"], cwd=repo, env=env, capture_output=True, check=True)
    assert sorted(log.read_text().split("\n")[:-1]) == ["a -", "b -", "c -", "d -", "up -"]


def test_a_run_left_queued_by_an_interrupted_repro_is_waited_for_not_queued_twice(tmp_path):
    repo, log = toy_project(tmp_path)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["dvc", "repro", "up"], cwd=repo, env=env, capture_output=True, check=True)
    experiments.dvc("exp", "run", "--queue", "-s", "-n", "repro-a", "a", cwd=repo)  # queued, never started
    assert pipeline.side_by_side(["d", "a", "b"], 2, repo, env) == 0
    # a ran once: the queued task was run and taken, not queued a second time
    assert sorted(r.split()[0] for r in log.read_text().split("\n")[:-1]) == ["a", "b", "d", "up"]
    assert (repo / "a.txt").read_text() == "seedupa"

"""The DVC pipeline's code dependencies and parameters, derived from the code, and profile runs that never touch
the committed results.

A stage's notebook imports its stage module, `replication.stages.<stage>`. The stage's code dependencies are
the import closure of what the notebook imports: every module named by an `import` or `from ... import`
anywhere in a module (at module level or inside a function), resolved to this package's files, together with
the `__init__.py` of every package on the way (importing a module runs them). Its parameters are the sections
the stage module declares (`params.sections`), each with the profile overrides params.yaml has for it, and
`profile`. Nothing of either is written by hand:

    python -m replication.pipeline write            write every stage's code deps and params into dvc.yaml
                                                    (and tuning/dvc.yaml, the search run as experiments)
    python -m replication.pipeline check            exit 1, naming each difference, if dvc.yaml is not what
                                                    `write` would make (the test suite runs this)
    python -m replication.pipeline closure STAGE    print one stage's closure
    python -m replication.pipeline repro [--profile smoke]

`repro` runs the default profile in place (`dvc repro`, then the compute report and the README's results
block). Any other profile runs in an isolated copy under `.profiles/<profile>/` (the working tree's code,
notebooks and params.yaml with the profile set; its own dvc.lock, results and figures; DVC's cache shared), so
the results, figures and dvc.lock in git are only ever written by the default profile.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import config, paths

PACKAGE = "replication"
CODE_PREFIX = f"{PACKAGE}/"
DEFAULT_PROFILE = "tiny"
# ./dvc.yaml is the default `dvc repro`; tuning/dvc.yaml (per-method search) runs as DVC experiments only. Both
# run from the repository root (tuning's stage has `wdir: ..`), so their paths read the same.
PIPELINES = ("dvc.yaml", "tuning/dvc.yaml")


# ----------------------------------------------------------------------------- the import closure
def module_file(module: str, root: Path | None = None) -> Path | None:
    """The file of a module of this package (a .py file or a package's __init__.py), or None."""
    root = root or paths.root()
    base = root.joinpath(*module.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def _resolve(importer: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute module a `from ... import` statement names."""
    if node.level == 0:
        return node.module or ""
    parts = importer.split(".") if is_package else importer.split(".")[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def imported_modules(source: str, importer: str = "", is_package: bool = False, root: Path | None = None) -> set[str]:
    """The modules of this package that `source` (the code of module `importer`) imports, anywhere in it."""
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(importer, node, is_package)
            for a in node.names:  # `from pkg import sub` imports the submodule pkg.sub when there is one
                sub = f"{base}.{a.name}"
                out.add(sub if a.name != "*" and module_file(sub, root) else base)
    return {m for m in out if m == PACKAGE or m.startswith(PACKAGE + ".")}


def direct_imports(module: str, root: Path | None = None) -> set[str]:
    """The modules of this package that `module` names in its import statements."""
    f = module_file(module, root)
    if f is None:
        raise ModuleNotFoundError(f"{module} is imported but has no file under {root or paths.root()}")
    return imported_modules(f.read_text(), module, f.name == "__init__.py", root)


def closure(modules, root: Path | None = None) -> set[str]:
    """Every module that importing `modules` can run: their imports, transitively, and the parent packages."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b first
        todo += sorted(direct_imports(m, root))
    return seen


def notebook_imports(notebook: Path) -> set[str]:
    """The modules of this package the code cells of a notebook import."""
    nb = json.loads(notebook.read_text())
    out = set()
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            src = "".join(cell["source"])
            src = "\n".join(line for line in src.splitlines() if not line.lstrip().startswith(("%", "!")))
            out |= imported_modules(src)
    return out


def code_deps(notebook: Path, root: Path | None = None) -> list[str]:
    """The files of the import closure of a notebook, relative to the repository root, sorted."""
    root = root or paths.root()
    files = {module_file(m, root).relative_to(root).as_posix() for m in closure(notebook_imports(notebook), root)}
    return sorted(files)


# ----------------------------------------------------------------------------- parameters
def stage_params(sections, raw: dict) -> list[str]:
    """`profile`, each section the stage reads, and each profile's override of it that params.yaml has."""
    out = ["profile"]
    for key in sections:
        out.append(key)
        out += [f"profiles.{p}.{key}" for p in config.PROFILES if config.has_key(raw, f"profiles.{p}.{key}")]
    return out


# ----------------------------------------------------------------------------- dvc.yaml
def _yaml():
    from ruamel.yaml import YAML

    y = YAML()
    y.preserve_quotes = True
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    return y


def notebook_of(stage: dict) -> Path:
    """The notebook a stage's command runs (papermill notebooks/X.ipynb executed/X.ipynb ...)."""
    return paths.root() / stage["cmd"].split()[1]


def derived(dvc: dict) -> dict[str, dict[str, list[str]]]:
    """For every stage: its code deps and params as the code says they are."""
    from .stages.__main__ import stage_module

    raw = config.read()
    out = {}
    for name, st in dvc["stages"].items():
        out[name] = {
            "code": code_deps(notebook_of(st)),
            "params": stage_params(stage_module(name).params.sections, raw),
        }
    return out


def all_stages(root: Path | None = None) -> dict[str, dict]:
    """Every stage of every pipeline file (stage names are unique across them)."""
    root = root or paths.root()
    out: dict[str, dict] = {}
    for f in PIPELINES:
        for name, st in (_yaml().load((root / f).read_text())["stages"] or {}).items():
            if name in out:
                raise ValueError(f"stage {name!r} is defined in two pipeline files")
            out[name] = st
    return out


def _entry_name(e) -> str:
    return e if isinstance(e, str) else next(iter(e))


def differences(dvc: dict) -> list[str]:
    """What dvc.yaml lacks or has too much, stage by stage (empty when it is what `write` makes)."""
    out = []
    for name, want in derived(dvc).items():
        st = dvc["stages"][name]
        code = [d for d in map(_entry_name, st.get("deps") or []) if d.startswith(CODE_PREFIX)]
        for f in sorted(set(want["code"]) - set(code)):
            out.append(f"stage {name}: code dep {f} is missing (its notebook imports it, directly or not)")
        for f in sorted(set(code) - set(want["code"])):
            out.append(f"stage {name}: code dep {f} is not imported by its notebook")
        params = [_entry_name(p) for p in st.get("params") or []]
        if params != want["params"]:
            out.append(f"stage {name}: params are {params}, the stage reads {want['params']}")
    return out


def write(path: Path | None = None) -> bool:
    """Rewrite every stage's code deps (keeping its other deps first) and params in dvc.yaml; True if it changed."""
    path = path or paths.root() / "dvc.yaml"
    y = _yaml()
    doc = y.load(path.read_text())
    for name, want in derived(doc).items():
        st = doc["stages"][name]
        others = [d for d in st.get("deps") or [] if not _entry_name(d).startswith(CODE_PREFIX)]
        st["deps"] = others + want["code"]
        st["params"] = want["params"]
    from io import StringIO

    buf = StringIO()
    y.dump(doc, buf)
    changed = buf.getvalue() != path.read_text()
    if changed:
        path.write_text(buf.getvalue())
    return changed


# ----------------------------------------------------------------------------- running a profile
OUTPUT_DIRS = ("results", "paper_figures")  # outputs git keeps: never copied into a profile's copy


def tracked_files(root: Path) -> list[str]:
    """The working tree's files as git sees them: tracked, and untracked but not ignored."""
    r = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=root, capture_output=True, text=True
    )
    if r.returncode != 0:
        raise RuntimeError(f"git ls-files failed in {root}: {r.stderr.strip()}")
    return [f for f in r.stdout.splitlines() if (root / f).is_file()]


def sync_copy(profile: str, root: Path | None = None) -> Path:
    """Bring `.profiles/<profile>/` up to date with the working tree: its code, notebooks, params.yaml (profile
    set), data/ (hard links); not its outputs or dvc.lock, which are the profile's own. DVC's cache is shared."""
    root = root or paths.root()
    dst = root / ".profiles" / profile
    files = [f for f in tracked_files(root) if f != "dvc.lock" and f.split("/")[0] not in OUTPUT_DIRS]
    for f in files:
        src, out = root / f, dst / f
        if not out.exists() or out.read_bytes() != src.read_bytes():
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, out)
    keep = set(files)
    for top in ("replication", "notebooks", "tests", "benchmarks"):  # code removed from the tree leaves the copy
        for f in (dst / top).rglob("*") if (dst / top).exists() else []:
            if f.is_file() and f.relative_to(dst).as_posix() not in keep and "__pycache__" not in f.parts:
                f.unlink()
    if (root / "data").is_dir():
        shutil.rmtree(dst / "data", ignore_errors=True)
        shutil.copytree(root / "data", dst / "data", copy_function=os.link)
    local = dst / ".dvc" / "config.local"
    local.write_text(f"[core]\n    no_scm = true\n[cache]\n    dir = {root / '.dvc' / 'cache'}\n")
    config.set_profile(profile, dst / "params.yaml")
    return dst


def outputs(stage: dict) -> list:
    """Every output entry of a stage: its outs, metrics and plots (each a path or {path: options})."""
    return [e for key in ("outs", "metrics", "plots") for e in stage.get(key) or []]


def producers(dvc: dict, stages) -> list[str]:
    """The stages outside `stages` whose outputs the given stages depend on (their direct upstream)."""
    made_by = {_entry_name(o): n for n, st in dvc["stages"].items() for o in outputs(st)}
    up = set()
    for s in stages:
        for d in map(_entry_name, dvc["stages"][s].get("deps") or []):
            up |= {n for o, n in made_by.items() if d == o or d.startswith(o + "/")}
    return sorted(up - set(stages))


def uncached_outs(stage: dict) -> list[str]:
    """A stage's outputs kept in git (`cache: false`)."""
    return [
        _entry_name(e) for e in outputs(stage) if isinstance(e, dict) and next(iter(e.values())).get("cache") is False
    ]


IDENTITY = ("user.name", "user.email")


def side_by_side_stages() -> tuple[str, ...]:
    """What `make repro JOBS=N` runs side by side, longest first: the controls (about a quarter of a default run),
    then Table 1's fine-tuning runs. None needs another's output (tests/test_pipeline_static.py checks it)."""
    from .tables import FINETUNED

    return ("controls", *FINETUNED)


def side_by_side(stages, jobs: int, where: Path, env: dict) -> int:
    """Bring the stages' upstream up to date, then run those of `stages` that are not as queued DVC experiments,
    `jobs` at a time (in the order given: longest first), each process with cpu_count // jobs threads, and take
    each finished run into the workspace (`take_result`), so that the `dvc repro` that follows finds them up to
    date. The stages must be independent of each other. A run that fails here is simply run again by that
    `dvc repro`, one at a time, where its error shows."""
    from . import experiments

    dvc = _yaml().load((where / "dvc.yaml").read_text())
    up = producers(dvc, stages)
    if up and (r := subprocess.run(["dvc", "repro", *up], cwd=where, env=env).returncode):
        return r
    status = json.loads(experiments.dvc("status", "--json", *stages, cwd=where, env=env).stdout or "{}")
    stale = [s for s in stages if s in {k.split(":")[-1] for k in status}]
    if not stale:
        return 0
    who = [subprocess.run(["git", "config", k], cwd=where, env=env, capture_output=True).returncode for k in IDENTITY]
    if any(who):
        print(
            "side by side: DVC's experiments are git commits and git has no user.name/user.email here (git config "
            f"--global user.name ...; user.email ...); running {len(stale)} stage(s) one at a time instead",
            flush=True,
        )
        return 0
    names = {s: experiments.exp_name(s, "repro-") for s in stale}
    live = {n for n, state in experiments.tasks(where) if state in ("Queued", "Running")}
    if foreign := sorted(live - set(names.values())):
        print(
            f"side by side: the experiment queue holds other queued or running tasks ({', '.join(foreign)}); running "
            f"{len(stale)} stage(s) one at a time instead (`dvc queue status`; `dvc queue remove --queued`)",
            flush=True,
        )
        return 0
    todo = [s for s in stale if names[s] not in live]  # the others are still queued by an interrupted run
    existing = set(experiments.dvc("exp", "list", "-A", "--name-only", cwd=where, env=env).stdout.split())
    if old := sorted(existing & {names[s] for s in todo}):
        experiments.dvc("exp", "remove", *old, cwd=where, env=env)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    print(f"side by side: {len(stale)} stage(s), {jobs} at a time, {threads} thread(s) each: {', '.join(stale)}")
    for s in todo:
        experiments.dvc("exp", "run", "--queue", "-s", "-n", names[s], s, cwd=where, env=env)
    wenv = {**env, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    wenv.pop("REPLICATION_ROOT", None)  # each experiment's root is its own temporary copy
    # not through a pipe: the queue's workers are daemons that would hold it open
    if r := subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=where, env=wenv).returncode:
        return r
    done = experiments.wait(list(names.values()), cwd=where, show_progress=True)
    failed = [s for s in stale if done[names[s]] != "Success"]
    if failed:
        print(
            f"side by side: {', '.join(failed)} did not finish ({done}); `dvc queue logs <name>` says why", flush=True
        )
    for s in stale:
        if s not in failed:
            try:
                take_result(s, experiments.commit_of(names[s], where), where, env)
            except (RuntimeError, subprocess.CalledProcessError, KeyError) as e:  # dvc repro runs it instead
                print(f"side by side: could not take {s}'s run into the workspace ({e}); it runs again", flush=True)
    existing = set(experiments.dvc("exp", "list", "-A", "--name-only", cwd=where, env=env).stdout.split())
    if ours := sorted(existing & set(names.values())):
        experiments.dvc("exp", "remove", *ours, cwd=where, env=env)  # their outputs stay in the cache
    return 0


def take_result(stage: str, rev: str, where: Path, env: dict) -> None:
    """Bring one stage's run from an experiment's commit into the workspace: its git-kept outputs, its dvc.lock
    entry (the rest of the workspace's dvc.lock is left as it is), then its cached outputs (`dvc checkout`).
    (DVC's run-cache restores a stage whose outputs are all cached but reran one with a `cache: false` file among
    its `outs` (tests/test_side_by_side.py), and `dvc exp apply` rewrites the whole dvc.lock.)"""
    from . import experiments

    dvc = _yaml().load((where / "dvc.yaml").read_text())
    for out in uncached_outs(dvc["stages"][stage]):
        blob = subprocess.run(["git", "show", f"{rev}:{out}"], cwd=where, capture_output=True, check=True).stdout
        (where / out).parent.mkdir(parents=True, exist_ok=True)
        (where / out).write_bytes(blob)
    y = _yaml()
    theirs = y.load(
        subprocess.run(["git", "show", f"{rev}:dvc.lock"], cwd=where, capture_output=True, check=True).stdout
    )
    lock = where / "dvc.lock"
    ours = y.load(lock.read_text()) if lock.exists() else {"schema": theirs["schema"], "stages": {}}
    ours["stages"][stage] = theirs["stages"][stage]
    with lock.open("w") as f:
        y.dump(ours, f)
    experiments.dvc("checkout", stage, cwd=where, env=env)


def repro(profile: str = DEFAULT_PROFILE, root: Path | None = None, jobs: int = 1) -> int:
    """`dvc repro` of a profile: in place for the default profile (then the compute report and the README's
    results block), in `.profiles/<profile>/` for any other. With jobs > 1 (the default profile only: DVC's
    experiments need a git workspace) the controls and Table 1's fine-tuning stages run side by side first
    (`side_by_side`)."""
    root = root or paths.root()
    if profile not in config.PROFILES:
        raise config.ConfigError(f"profile {profile!r} is unknown; choose one of {', '.join(config.PROFILES)}")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    if profile != DEFAULT_PROFILE:
        where = sync_copy(profile, root)
        env.update(REPLICATION_ROOT=str(where), PYTHONPATH=str(where))
        print(
            f"profile {profile}: running in {where.relative_to(root)} (results/, paper_figures/ and dvc.lock of "
            f"the working tree stay as they are)",
            flush=True,
        )
    else:
        where = root
        if config.read(root / "params.yaml").get("profile", DEFAULT_PROFILE) != DEFAULT_PROFILE:
            raise config.ConfigError(
                f"params.yaml sets `profile:` to another profile; the committed results are the {DEFAULT_PROFILE} "
                f"profile's. Set it back to {DEFAULT_PROFILE} and run `make repro PROFILE=<profile>` for the others"
            )
    py = [sys.executable, "-m"]
    r = subprocess.run([*py, f"{PACKAGE}.stages", "check"], cwd=where, env=env)
    if r.returncode:
        return r.returncode
    if jobs > 1 and profile == DEFAULT_PROFILE:
        if r := side_by_side(side_by_side_stages(), jobs, where, env):
            return r
    elif jobs > 1:
        print(f"profile {profile}: its copy is not a git workspace, so stages run one at a time", flush=True)
    r = subprocess.run(["dvc", "repro"], cwd=where, env=env)
    if r.returncode:
        return r.returncode
    if profile == DEFAULT_PROFILE:
        for cmd in ([*py, f"{PACKAGE}.report", "compute"], [*py, f"{PACKAGE}.report", "readme"]):
            r = subprocess.run(cmd, cwd=where, env=env)
            if r.returncode:
                return r.returncode
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m replication.pipeline", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("write", help="write the derived code deps and params of every stage into its pipeline file")
    sub.add_parser("check", help="fail if a pipeline file's code deps or params differ from the derived ones")
    c = sub.add_parser("closure", help="print the code deps of one stage")
    c.add_argument("stage")
    r = sub.add_parser("repro", help="dvc repro of a profile (others than the default run in an isolated copy)")
    r.add_argument("--profile", default=DEFAULT_PROFILE)
    r.add_argument(
        "--jobs", type=int, default=1, help="Table 1's fine-tuning stages this many at a time (default profile only)"
    )
    a = ap.parse_args(argv)
    files = [paths.root() / f for f in PIPELINES]
    if a.cmd == "write":
        for f in files:
            print(f"{f.relative_to(paths.root())}: " + ("updated" if write(f) else "already current"))
    elif a.cmd == "check":
        diffs = [d for f in files for d in differences(_yaml().load(f.read_text()))]
        for d in diffs:
            print(d, file=sys.stderr)
        if diffs:
            print("run `python -m replication.pipeline write`", file=sys.stderr)
            return 1
        print(f"{', '.join(PIPELINES)}: every stage's code deps and params are the derived ones")
    elif a.cmd == "closure":
        print("\n".join(code_deps(notebook_of(all_stages()[a.stage]))))
    else:
        try:
            return repro(a.profile, jobs=a.jobs)
        except config.ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

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


def repro(profile: str = DEFAULT_PROFILE, root: Path | None = None) -> int:
    """`dvc repro` of a profile: in place for the default profile (then the compute report and the README's
    results block), in `.profiles/<profile>/` for any other."""
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
    for cmd in ([*py, f"{PACKAGE}.stages", "check"], ["dvc", "repro"]):
        r = subprocess.run(cmd, cwd=where, env=env)
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
            return repro(a.profile)
        except config.ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

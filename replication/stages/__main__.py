"""python -m replication.stages <stage> [--profile P]   run one stage without its notebook
python -m replication.stages check                     validate params.yaml against every stage's sections"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys

from .. import config

NOT_STAGES = {"common"}


def stage_names() -> list[str]:
    """Every stage module of this package (dvc.yaml has one stage per module, of the same name)."""
    here = importlib.import_module(__package__).__path__
    return sorted(m.name for m in pkgutil.iter_modules(here) if m.name not in NOT_STAGES and not m.name.startswith("_"))


def stage_module(name: str):
    if name not in stage_names():
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(stage_names())}")
    return importlib.import_module(f"{__package__}.{name}")


def schemas() -> dict:
    """Every section (or dotted key) any stage reads, with its schema."""
    out: dict = {}
    for name in stage_names():
        for key, schema in stage_module(name).params.sections.items():
            if out.setdefault(key, schema) is not schema:
                raise TypeError(f"stages declare section {key!r} with two schemas: {out[key]} and {schema}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m replication.stages", description=__doc__.split("\n")[0])
    ap.add_argument("stage", help=f"check, or one of: {', '.join(stage_names())}")
    ap.add_argument("--profile", default=None)
    a = ap.parse_args(argv)
    try:
        if a.stage == "check":
            config.check(schemas())
            print(f"params.yaml: valid for profiles {', '.join(config.PROFILES)}")
            return 0
        module = stage_module(a.stage)
        out = module.run(module.params(a.profile))
    except (config.ConfigError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

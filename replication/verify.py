"""Compare the result files of a fresh run with committed ones: every number that moved beyond the tolerance and
every verdict that changed.

    python -m replication.verify [--ref HEAD] [--tolerance 1.0] [--rtol 0.05] [--out results/verify.json]

`make verify` runs `make repro` first, so on a fresh clone it compares a run made from nothing with the results
the repository ships. What is compared:

* estimates (a result with a 95% CI: `{mean, ci_low, ci_high}` or `{delta, ci}`): the shift of the point
  estimate in units of the committed CI's half-width; beyond `--tolerance` (default 1: the fresh point lies outside
  the committed CI) it is listed;
* other numbers (counts, losses, accuracies without a CI): relative difference beyond `--rtol`; wall times and the
  machine description are skipped, and so are results/compute.json and this tool's own output;
* verdicts: every claim and control of `replication.claims` on both folders, matched by id; a changed verdict
  makes the exit status 1.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .claims import claims

SKIP_FILES = {"compute.json", "verify.json"}
SKIP_KEYS = ("seconds", "duration", "machine", "wall")


@dataclass
class Estimate:
    value: float
    low: float
    high: float


def _estimate(node: dict) -> Estimate | None:
    if {"mean", "ci_low", "ci_high"} <= node.keys():
        return Estimate(node["mean"], node["ci_low"], node["ci_high"])
    ci = node.get("ci")
    if "delta" in node and isinstance(ci, list) and len(ci) == 2:
        return Estimate(node["delta"], ci[0], ci[1])
    return None


def flatten(obj, prefix: str = "") -> dict[str, float | bool | Estimate]:
    """Leaves of a result file keyed by their path; a node with a CI is one Estimate (not descended into)."""
    out: dict = {}
    if isinstance(obj, dict):
        est = _estimate(obj)
        if est is not None:
            out[prefix] = est
            return out
        for k, v in obj.items():
            if any(s in str(k).lower() for s in SKIP_KEYS):
                continue
            out.update(flatten(v, f"{prefix}/{k}" if prefix else str(k)))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}[{i}]"))
    elif isinstance(obj, bool) or (isinstance(obj, (int, float)) and obj is not None):
        out[prefix] = obj
    return out


def committed_results(ref: str, dest: Path) -> Path:
    """results/ as committed at `ref`, extracted under `dest`."""
    root = paths.root()
    try:
        archive = subprocess.run(
            ["git", "-C", str(root), "archive", ref, "results"], check=True, capture_output=True
        ).stdout
    except FileNotFoundError as e:
        raise RuntimeError("git is needed to read the committed results: install git") from e
    except subprocess.CalledProcessError as e:
        raise RuntimeError(
            f"cannot read results/ at {ref!r}: {e.stderr.decode().strip()} (pass --ref with a commit that has them)"
        ) from e
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "results"


def compare(ref_dir: Path, new_dir: Path, tolerance: float = 1.0, rtol: float = 0.05) -> dict:
    """Numbers and verdicts of `new_dir` against `ref_dir` (two results/ folders)."""
    estimates, numbers, missing = [], [], []
    for path in sorted(ref_dir.glob("*.json")):
        if path.name in SKIP_FILES:
            continue
        new_path = new_dir / path.name
        if not new_path.exists():
            missing.append(path.name)
            continue
        ref, new = (flatten(json.loads(p.read_text())) for p in (path, new_path))
        for key, r in ref.items():
            where = f"{path.name}:{key}"
            n = new.get(key)
            if (
                n is None
                or type(n) is not type(r)
                and not (isinstance(r, (int, float)) and isinstance(n, (int, float)))
            ):
                missing.append(where)
            elif isinstance(r, Estimate):
                half = (r.high - r.low) / 2
                shift = abs(n.value - r.value)
                ratio = shift / half if half > 0 else (0.0 if shift == 0 else math.inf)
                estimates.append(
                    {
                        "key": where,
                        "committed": r.value,
                        "fresh": n.value,
                        "half_width": half,
                        "shift_in_half_widths": ratio,
                        "outside": ratio > tolerance,
                    }
                )
            else:
                a, b = float(r), float(n)
                rel = abs(a - b) / max(abs(a), abs(b)) if a != b else 0.0
                numbers.append({"key": where, "committed": r, "fresh": n, "relative": rel, "outside": rel > rtol})
    ref_claims = {c.id: c for c in claims(ref_dir, controls=True)}
    new_claims = {c.id: c for c in claims(new_dir, controls=True)}
    verdicts = [
        {
            "id": k,
            "artefact": c.artefact,
            "statement": c.statement,
            "committed": c.verdict,
            "fresh": new_claims[k].verdict if k in new_claims else None,
            "committed_ours": c.ours,
            "fresh_ours": new_claims[k].ours if k in new_claims else None,
        }
        for k, c in ref_claims.items()
    ]
    ratios = sorted(e["shift_in_half_widths"] for e in estimates)
    return {
        "tolerance": {"ci_half_widths": tolerance, "rtol": rtol},
        "summary": {
            "estimates": len(estimates),
            "estimates_identical": sum(e["committed"] == e["fresh"] for e in estimates),
            "estimates_outside": sum(e["outside"] for e in estimates),
            "median_shift_in_half_widths": ratios[len(ratios) // 2] if ratios else None,
            "max_shift_in_half_widths": ratios[-1] if ratios else None,
            "numbers": len(numbers),
            "numbers_identical": sum(x["relative"] == 0 for x in numbers),
            "numbers_outside": sum(x["outside"] for x in numbers),
            "verdicts": len(verdicts),
            "verdicts_changed": sum(v["committed"] != v["fresh"] for v in verdicts),
            "missing": len(missing),
        },
        "estimates_outside": [e for e in estimates if e["outside"]],
        "numbers_outside": [x for x in numbers if x["outside"]],
        "verdicts_changed": [v for v in verdicts if v["committed"] != v["fresh"]],
        "missing": missing,
        "verdicts": verdicts,
    }


def render(res: dict, ref: str) -> str:
    s, tol = res["summary"], res["tolerance"]
    lines = [
        f"fresh results/ against {ref}:",
        f"  estimates with a CI: {s['estimates']} ({s['estimates_identical']} identical); "
        f"{s['estimates_outside']} moved more than {tol['ci_half_widths']:g} CI half-width(s) "
        f"(median shift {s['median_shift_in_half_widths'] or 0:.2f}, largest {s['max_shift_in_half_widths'] or 0:.2f})",
        f"  other numbers: {s['numbers']} ({s['numbers_identical']} identical); {s['numbers_outside']} moved more "
        f"than {tol['rtol']:.0%}",
        f"  verdicts: {s['verdicts']}; {s['verdicts_changed']} changed; {s['missing']} missing in the fresh run",
    ]
    for e in res["estimates_outside"]:
        lines.append(
            f"  ESTIMATE {e['key']}: {e['committed']:.4g} -> {e['fresh']:.4g} "
            f"({e['shift_in_half_widths']:.2f} half-widths)"
        )
    for x in res["numbers_outside"]:
        lines.append(f"  NUMBER {x['key']}: {x['committed']:.4g} -> {x['fresh']:.4g} ({x['relative']:.1%})")
    for v in res["verdicts_changed"]:
        lines.append(
            f"  VERDICT {v['id']}: {v['committed']} -> {v['fresh']} ({v['committed_ours']} -> {v['fresh_ours']})"
        )
    for m in res["missing"]:
        lines.append(f"  MISSING {m}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", default="HEAD", help="the commit whose results/ are the reference (default HEAD)")
    ap.add_argument("--tolerance", type=float, default=1.0, help="estimates: allowed shift in CI half-widths")
    ap.add_argument("--rtol", type=float, default=0.05, help="numbers without a CI: allowed relative difference")
    ap.add_argument("--out", default="results/verify.json", help="where the comparison is written ('' for nowhere)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        res = compare(committed_results(a.ref, Path(tmp)), paths.results(), a.tolerance, a.rtol)
    sha = subprocess.run(
        ["git", "-C", str(paths.root()), "rev-parse", "--short", a.ref], capture_output=True, text=True
    )
    res["reference"] = sha.stdout.strip() or a.ref
    if a.out:
        paths.write_json(paths.resolve(a.out), res)
    print(render(res, a.ref))
    return 1 if res["summary"]["verdicts_changed"] else 0


if __name__ == "__main__":
    sys.exit(main())

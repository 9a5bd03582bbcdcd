"""params.yaml validation: every profile loads, errors name the key path and the fix, profiles merge
key by key, set_profile edits one line, and the command line check passes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from replication import config
from replication.config import ConfigError
from replication.stages.__main__ import schemas, stage_module
from replication.tables import FINETUNED


def load_all(path=None, profile=None, overrides=None) -> config.Params:
    """Every section any stage reads (what `python -m replication.stages check` validates)."""
    return config.load(schemas(), profile, overrides, path)


@pytest.fixture
def params_text(repo_root) -> str:
    return (repo_root / "params.yaml").read_text()


def write_params(tmp_path: Path, raw: dict | str) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False))
    return p


# ----------------------------------------------------------------------------- the repository's params
@pytest.mark.parametrize("profile", config.PROFILES)
def test_repository_params_load(repo_root, profile):
    p = load_all(repo_root / "params.yaml", profile=profile)
    assert p.profile == profile
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    # the file's values arrive (checked on keys no profile overrides)
    assert p.sft_sharpening.n == raw["sft_sharpening"]["n"] == 3
    assert p.sft_sharpening.m == raw["sft_sharpening"]["m"] == 3
    assert p.clip.evaluator.arch.layers == 4 and p.clip.reward.arch.layers == 4
    assert p.evaluate.systems == tuple(raw["evaluate"]["systems"])
    assert p.base_model.arch.vae_channels == tuple(raw["base_model"]["arch"]["vae_channels"])
    over = (raw.get("profiles") or {}).get(profile) or {}
    steps = over.get("sft_sharpening", {}).get("train", {}).get("steps", raw["sft_sharpening"]["train"]["steps"])
    assert p.sft_sharpening.train.steps == steps
    assert load_all(repo_root / "params.yaml").profile == raw["profile"]


def leaves(d: dict, prefix: tuple = ()):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from leaves(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def get(obj, path: tuple):
    for k in path:
        obj = obj[k] if isinstance(obj, dict) else getattr(obj, k)  # dict-typed fields (evaluators) hold mappings
    return obj


def norm(v):
    return tuple(v) if isinstance(v, list) else v


@pytest.mark.parametrize("profile", config.PROFILES)
def test_every_leaf_arrives_merged(repo_root, profile):
    """Each value of params.yaml reaches the loaded Params; the profile's values win where it has them."""
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    over = dict(leaves((raw.get("profiles") or {}).get(profile) or {}))
    p = load_all(repo_root / "params.yaml", profile=profile)
    n_base = n_over = 0
    for path, v in leaves({k: raw[k] for k in raw if k not in ("profile", "profiles")}):
        want = over.get(path, v)
        assert get(p, path) == norm(want), (profile, ".".join(path))
        n_base += path not in over
    for path, v in over.items():
        assert get(p, path) == norm(v), (profile, ".".join(path))
        n_over += 1
    assert n_base > 50 and (n_over > 5 or profile == "tiny")


def test_profile_specific_values(repo_root):
    sdxl = load_all(repo_root / "params.yaml", profile="sdxl")
    assert sdxl.base_model.source != "tiny"  # paper scale materialises a hub model
    tiny = load_all(repo_root / "params.yaml", profile="tiny")
    assert tiny.base_model.source == "tiny" and tiny.sft_sharpening.train.mixed_precision == "no"


# ----------------------------------------------------------------------------- errors
def error_of(**kw) -> str:
    with pytest.raises(ConfigError) as e:
        load_all(**kw)
    return str(e.value)


def test_unknown_key_names_path_and_valid_keys(repo_root):
    msg = error_of(path=repo_root / "params.yaml", overrides={"sft_sharpening": {"train": {"stpes": 5}}})
    assert "'sft_sharpening.train.stpes'" in msg
    assert "Valid keys under 'sft_sharpening.train'" in msg
    for k in ("steps", "batch_size", "lr", "seed", "checkpoint_every"):
        assert k in msg
    msg = error_of(path=repo_root / "params.yaml", overrides={"clip": {"evaluator": {"arch": {"layerz": 2}}}})
    assert "'clip.evaluator.arch.layerz'" in msg and "layers" in msg and "embed_dim" in msg
    msg = error_of(path=repo_root / "params.yaml", overrides={"sharpening": {"n": 2}})
    assert "'sharpening'" in msg and "sft_sharpening" in msg and "base_model" in msg


@pytest.mark.parametrize(
    "override, path, words",
    [
        ({"sft_sharpening": {"n": "3"}}, "sft_sharpening.n", "whole number"),
        ({"sft_sharpening": {"n": 3.5}}, "sft_sharpening.n", "whole number"),
        ({"sft_sharpening": {"n": True}}, "sft_sharpening.n", "whole number"),
        ({"sft_sharpening": {"train": {"lr": "fast"}}}, "sft_sharpening.train.lr", "must be a number"),
        ({"evaluate": {"confidence": [0.9]}}, "evaluate.confidence", "must be a number"),
        (
            {"sft_sharpening": {"train": {"gradient_checkpointing": 1}}},
            "sft_sharpening.train.gradient_checkpointing",
            "true or false",
        ),
        (
            {"sft_sharpening": {"train": {"gradient_checkpointing": "yes"}}},
            "sft_sharpening.train.gradient_checkpointing",
            "true or false",
        ),
        ({"evaluate": {"systems": "base"}}, "evaluate.systems", "must be a list"),
        ({"evaluate": {"systems": ["base", 3]}}, "evaluate.systems[1]", "must be a string"),
        ({"clip": {"reward": 5}}, "clip.reward", "must be a mapping"),
    ],
)
def test_wrong_types(repo_root, override, path, words):
    msg = error_of(path=repo_root / "params.yaml", overrides=override)
    assert f"'{path}'" in msg and words in msg, msg


@pytest.mark.parametrize(
    "override, path, choices",
    [
        ({"sft_sharpening": {"aggregate": "max"}}, "sft_sharpening.aggregate", ("'sum'", "'mean'")),
        ({"sft_sharpening": {"x0": "exact"}}, "sft_sharpening.x0", ("'tweedie'", "'ode'")),
        (
            {"sft_sharpening": {"train": {"mixed_precision": "fp32"}}},
            "sft_sharpening.train.mixed_precision",
            ("'no'", "'fp16'", "'bf16'"),
        ),
    ],
)
def test_bad_literal(repo_root, override, path, choices):
    msg = error_of(path=repo_root / "params.yaml", overrides=override)
    assert f"'{path}'" in msg and all(c in msg for c in choices), msg


def test_unknown_profile(repo_root, tmp_path, params_text):
    msg = error_of(path=repo_root / "params.yaml", profile="huge")
    assert "'huge'" in msg and all(p in msg for p in config.PROFILES)
    p = write_params(tmp_path, params_text.replace("\nprofile: tiny\n", "\nprofile: medium\n"))
    msg = error_of(path=p)
    assert "'medium'" in msg and "tiny, smoke, sdxl" in msg
    raw = yaml.safe_load(params_text)
    raw["profiles"]["large"] = {"figures": {"dpi": 300}}
    msg = error_of(path=write_params(tmp_path, raw))
    assert "'profiles.large'" in msg and "tiny, smoke, sdxl" in msg


def _smoke_typo(params_text: str) -> dict:
    raw = yaml.safe_load(params_text)
    assert raw["profile"] == "tiny"
    raw["profiles"]["smoke"]["base_model"]["vae"]["train"]["stesp"] = 5
    return raw


def test_unknown_key_under_inactive_profile(tmp_path, params_text):
    p = write_params(tmp_path, _smoke_typo(params_text))
    msg = error_of(path=p)  # the active profile is tiny: the smoke typo is still caught
    assert "stesp" in msg and "base_model.vae.train.stesp" in msg
    assert "Valid keys under" in msg and "steps" in msg and "batch_size" in msg
    raw = yaml.safe_load(params_text)
    raw["profiles"]["sdxl"]["sft_sharpening"]["train"]["lr"] = "tiny"
    msg = error_of(path=write_params(tmp_path, raw), profile="smoke")
    assert "sft_sharpening.train.lr" in msg and "must be a number" in msg


def test_unknown_key_under_inactive_profile_names_full_path(tmp_path, params_text):
    p = write_params(tmp_path, _smoke_typo(params_text))
    msg = error_of(path=p)
    assert "'profiles.smoke.base_model.vae.train.stesp'" in msg, msg


def test_missing_params_file(tmp_path):
    msg = error_of(path=tmp_path / "nope.yaml")
    assert "does not exist" in msg


# ----------------------------------------------------------------------------- merging and YAML quirks
def test_profile_overrides_merge_key_by_key(repo_root):
    raw = yaml.safe_load((repo_root / "params.yaml").read_text())
    over = raw["profiles"]["smoke"]["clip"]["evaluator"]["train"]
    assert set(over) == {"steps", "batch_size", "checkpoint_every"}  # the override touches only these
    tiny = load_all(repo_root / "params.yaml", profile="tiny")
    smoke = load_all(repo_root / "params.yaml", profile="smoke")
    ev = smoke.clip.evaluator
    assert (ev.train.steps, ev.train.batch_size, ev.train.checkpoint_every) == (
        over["steps"],
        over["batch_size"],
        over["checkpoint_every"],
    )
    assert ev.train.steps != tiny.clip.evaluator.train.steps
    assert ev.train.seed == 1  # the evaluator's own seed survives the override of its train section
    assert ev.arch.layers == 4  # and so does its architecture
    assert ev.train.lr == tiny.clip.evaluator.train.lr == 1e-3
    assert ev.train.weight_decay == 0.1 and ev.train.lr_warmup_steps == 50
    assert smoke.clip.reward.train.seed == 0 and smoke.clip.reward.arch.layers == 4
    assert tiny.clip.evaluator.train.steps == raw["clip"]["evaluator"]["train"]["steps"]
    # the sft override keeps the file's own non-default values (adam_beta1 0.0, lr 1e-5 where the default is 1e-4)
    assert smoke.sft_sharpening.train.adam_beta1 == 0.0 and smoke.sft_sharpening.train.lr == pytest.approx(1e-5)
    sft_over = raw["profiles"]["smoke"]["sft_sharpening"]["train"]
    assert smoke.sft_sharpening.train.steps == sft_over["steps"] != tiny.sft_sharpening.train.steps
    assert smoke.base_model.generation.guidance_scale == tiny.base_model.generation.guidance_scale


def test_overrides_apply_last(repo_root):
    p = load_all(
        repo_root / "params.yaml", profile="smoke", overrides={"sft_sharpening": {"n": 5, "train": {"steps": 2}}}
    )
    assert p.sft_sharpening.n == 5 and p.sft_sharpening.train.steps == 2
    smoke = load_all(repo_root / "params.yaml", profile="smoke")
    assert p.sft_sharpening.train.batch_size == smoke.sft_sharpening.train.batch_size  # merged under it
    assert p.sft_sharpening.m == 3


def test_yaml_exponent_without_dot_is_a_float(tmp_path, params_text):
    text = params_text.replace("lr: 1.0e-5, adam_beta1", "lr: 1e-5, adam_beta1", 1).replace(
        "kl_weight: 1.0e-6", "kl_weight: 1e-6"
    )
    assert text.count("1e-5") == 1 and "kl_weight: 1e-6" in text
    raw = yaml.safe_load(text)
    assert raw["sft_sharpening"]["train"]["lr"] == "1e-5"  # PyYAML reads it as a string
    p = load_all(write_params(tmp_path, text), profile="tiny")
    assert isinstance(p.sft_sharpening.train.lr, float) and p.sft_sharpening.train.lr == 1e-5
    assert p.base_model.vae.kl_weight == 1e-6


# ----------------------------------------------------------------------------- set_profile and the CLI
def test_set_profile_rewrites_only_the_profile_line(tmp_path, params_text):
    p = write_params(tmp_path, params_text)
    config.set_profile("smoke", p)
    new = p.read_text()
    assert new == params_text.replace("\nprofile: tiny\n", "\nprofile: smoke\n", 1)
    assert new != params_text
    old_lines, new_lines = params_text.splitlines(keepends=True), new.splitlines(keepends=True)
    assert len(old_lines) == len(new_lines)
    changed = [i for i, (a, b) in enumerate(zip(old_lines, new_lines)) if a != b]
    assert len(changed) == 1 and new_lines[changed[0]] == "profile: smoke\n"
    assert (
        sum(line.lstrip().startswith("#") for line in new_lines)
        == sum(line.lstrip().startswith("#") for line in old_lines)
        > 0
    )
    assert load_all(p).profile == "smoke"
    assert load_all(p) == load_all(p, profile="smoke")
    config.set_profile("tiny", p)
    assert p.read_text() == params_text


def test_set_profile_keeps_trailing_comment(tmp_path):
    p = write_params(tmp_path, "# head\nprofile: tiny   # the scale\nprofiles: {}\n")
    config.set_profile("sdxl", p)
    assert p.read_text() == "# head\nprofile: sdxl   # the scale\nprofiles: {}\n"


def test_set_profile_rejects_unknown(tmp_path, params_text):
    p = write_params(tmp_path, params_text)
    with pytest.raises(ConfigError, match="'huge'.*tiny, smoke, sdxl"):
        config.set_profile("huge", p)
    assert p.read_text() == params_text
    (tmp_path / "other").mkdir()
    q = write_params(tmp_path / "other", "profiles: {}\n")
    with pytest.raises(ConfigError, match="no top-level 'profile:' line"):
        config.set_profile("smoke", q)


def run_python(repo_root, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """This interpreter on `args` in a fresh process rooted at the repository (its output captured)."""
    env = {**(os.environ if env is None else env), "REPLICATION_ROOT": str(repo_root)}
    return subprocess.run([sys.executable, *args], cwd=repo_root, env=env, capture_output=True, text=True, timeout=120)


def test_cli_check(repo_root):
    r = run_python(repo_root, "-m", "replication.stages", "check")
    assert r.returncode == 0, r.stderr
    assert re.search(r"valid for profiles tiny, smoke, sdxl", r.stdout)


FINETUNE = FINETUNED


@pytest.mark.parametrize("name", FINETUNE)
def test_fine_tuning_sections_embed_the_methods_spec_and_hand_it_over(repo_root, monkeypatch, name):
    """A fine-tuning section is its method's spec dataclass plus run settings (each setting declared once), and
    the stage builder hands the section itself to the method as its spec, with the section's LoRA settings."""
    import dataclasses
    import inspect
    from types import SimpleNamespace

    mod = stage_module(name)
    section = mod.params.sections[name]
    method_cls = getattr(mod, inspect.signature(mod.build).return_annotation)
    spec_type = inspect.signature(method_cls).parameters.get("spec")
    if spec_type is not None:  # standard fine-tuning has no method spec
        spec_cls = getattr(inspect.getmodule(method_cls), str(spec_type.annotation).split(" | ")[0])
        assert issubclass(section, spec_cls), f"{name}: its section does not embed {spec_cls.__name__}"
        own = {f.name for f in dataclasses.fields(spec_cls)}
        assert own <= {f.name for f in dataclasses.fields(section)}
    p = mod.params("tiny", {name: {"lora": {"rank": 4}}})
    seen = {}

    def spy(*args, **kwargs):
        seen.update(args=args, kwargs=kwargs)
        return "built"

    monkeypatch.setattr(mod, "load_model", lambda sec: (SimpleNamespace(image_size=32, device="cpu"), {}))
    # the stage builds the method itself or through a helper of the method's module (draft: reward_backprop)
    for where in (mod, inspect.getmodule(method_cls)):
        if hasattr(where, method_cls.__name__):
            monkeypatch.setattr(where, method_cls.__name__, spy)
        for helper in ("image_text_source", "prompt_source", "pair_source", "file_digest"):
            if hasattr(where, helper):
                monkeypatch.setattr(where, helper, lambda *a, **k: None)
        if hasattr(where, "registry"):
            monkeypatch.setattr(
                where, "registry", SimpleNamespace(load_reward=lambda *a, **k: None, fingerprint=lambda s: {})
            )
    assert mod.build(p) == "built"
    sec = getattr(p, name)
    assert seen["kwargs"]["lora"] is sec.lora and sec.lora.rank == 4, f"{name}: its builder drops {name}.lora"
    if spec_type is not None:
        assert any(a is sec for a in seen["args"]), f"{name}: the section is not the method's spec"


def test_value_checks_name_the_section_and_the_fix(repo_root):
    with pytest.raises(ConfigError, match=r"'evaluate'.*limit is 1.*at least 2 prompts"):
        load_all(repo_root / "params.yaml", profile="tiny", overrides={"evaluate": {"limit": 1}})
    assert load_all(repo_root / "params.yaml", profile="smoke").evaluate.limit == 48
    assert load_all(repo_root / "params.yaml", profile="tiny").evaluate.limit is None


def test_params_rewritten_by_dvc_exp_run_read_the_same(repo_root, tmp_path):
    """`dvc exp run -S` rewrites params.yaml with ruamel (YAML 1.2), which writes the string "no" without quotes;
    read as YAML 1.1 it became False and every section with `mixed_precision: "no"` failed to load."""
    from ruamel.yaml import YAML

    y = YAML()
    doc = y.load((repo_root / "params.yaml").read_text())
    doc["sft_sharpening"]["n"] = 4
    with (tmp_path / "params.yaml").open("w") as f:
        y.dump(doc, f)
    assert 'mixed_precision: "no"' not in (tmp_path / "params.yaml").read_text()  # the quotes are gone
    for profile in config.PROFILES:
        before = config.effective(config.read(repo_root / "params.yaml"), profile)
        after = config.effective(config.read(tmp_path / "params.yaml"), profile)
        assert after["sft_sharpening"]["n"] == 4 and before["sft_sharpening"]["n"] == 3
        assert after["sft_sharpening"]["train"]["mixed_precision"] in ("no", "bf16")  # a string, never False
        after["sft_sharpening"]["n"] = before["sft_sharpening"]["n"]
        assert after == before


def test_a_stage_loads_its_params_without_importing_the_hub_libraries_and_still_silences_them(repo_root, tmp_path):
    """Loading a stage's params quiets diffusers/transformers without importing them (4-5 s per stage); the
    libraries come up silent when imported later, a user's own setting wins, and `load_pipeline` turns off
    diffusers' loading bar, whose switch has no environment variable."""
    code = """
import os, sys
from replication.stages import fig4
fig4.params()
print(sorted(m for m in ("diffusers", "transformers", "torch") if m in sys.modules))
import diffusers.utils.logging as d
import transformers.utils.logging as t
print(t.is_progress_bar_enabled(), t.get_verbosity(), d.get_verbosity(), os.environ["DIFFUSERS_VERBOSITY"])
from replication.models import load_pipeline
try:
    load_pipeline(sys.argv[1])
except FileNotFoundError:
    pass
print(d.is_progress_bar_enabled())
"""
    env = {k: v for k, v in os.environ.items() if k not in {"HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY"}}
    env["DIFFUSERS_VERBOSITY"] = "warning"
    r = run_python(repo_root, "-c", code, str(tmp_path / "no_pipeline"), env=env)
    assert r.returncode == 0, r.stderr
    imported, levels, bar = r.stdout.strip().splitlines()
    assert imported == "[]"
    assert levels == "False 40 30 warning"  # transformers: no bar, errors only; diffusers keeps the user's level
    assert bar == "False"

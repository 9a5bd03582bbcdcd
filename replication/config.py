"""Typed parameters: params.yaml -> validated dataclasses, with profiles.

params.yaml holds one section per concern plus ``profile`` (tiny | smoke | sdxl) and ``profiles``:
per-profile overrides of the sections, merged on load. There is no central schema: each stage declares the
sections it reads as a mapping from section name to dataclass (`loader({...})`), and a method's section
embeds the method's own spec dataclass, so every setting is declared once, where it is used. Values are
checked key by key against those dataclasses; a typo or a wrong type fails with the key's full path and the
valid alternatives, and a spec's own `__post_init__` check names the section it failed in.

`python -m replication.stages check` validates every section of params.yaml for every profile against the
schemas of all stages (the Makefile runs it before `dvc repro`).
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from . import paths, quiet_hub_progress

PROFILES = ("tiny", "smoke", "sdxl")


class ConfigError(ValueError):
    """params.yaml does not fit the schema; the message names the key and the fix."""


# ----------------------------------------------------------------------------- building dataclasses from YAML
def _fmt(where: str) -> str:
    return where or "<top level>"


def build(cls, data: Any, where: str, base=None):
    """Dataclass `cls` from the mapping `data`, merged key by key over `base` (default: the class defaults)."""
    if not isinstance(data, dict):
        raise ConfigError(f"params: '{_fmt(where)}' must be a mapping of keys to values, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        path = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"params: unknown key '{path}'. Valid keys under '{_fmt(where)}': {', '.join(names)}")
    base = base if base is not None else cls()
    kwargs = {}
    for name, value in data.items():
        path = f"{where}.{name}" if where else name
        current = getattr(base, name)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            kwargs[name] = build(type(current), value, path, current)  # nested sections merge over defaults
        else:
            kwargs[name] = coerce(hints[name], value, path)
    try:
        return dataclasses.replace(base, **kwargs)
    except ValueError as e:  # a __post_init__ check
        raise ConfigError(f"params: '{_fmt(where)}': {e}") from None


def coerce(tp, v, where: str):
    """`v` as type `tp` (the annotation of a dataclass field), or a ConfigError naming `where`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return coerce(a, v, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if origin is Literal:
        if v not in args:
            raise ConfigError(f"params: '{where}' is {v!r}; choose one of {', '.join(map(repr, args))}")
        return v
    if dataclasses.is_dataclass(tp):
        return build(tp, v, where)
    if tp is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"params: '{where}' must be true or false, got {v!r}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"params: '{where}' must be a whole number, got {v!r}")
        return v
    if tp is float:
        if isinstance(v, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                return float(v)
            except ValueError:
                pass
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"params: '{where}' must be a number, got {v!r}")
        return float(v)
    if tp is str:
        if not isinstance(v, str):
            raise ConfigError(f"params: '{where}' must be a string, got {v!r}")
        return v
    if origin is tuple:
        if not isinstance(v, (list, tuple)):
            raise ConfigError(f"params: '{where}' must be a list, got {v!r}")
        return tuple(coerce(args[0], x, f"{where}[{i}]") for i, x in enumerate(v))
    if tp is dict or origin is dict:
        if not isinstance(v, dict):
            raise ConfigError(f"params: '{where}' must be a mapping, got {v!r}")
        return v
    raise TypeError(f"schema type {tp} at {where} is not supported")


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ----------------------------------------------------------------------------- the file and its profiles
class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where `no`, `off`, `yes`, `on` are booleans; `dvc exp run -S` rewrites params.yaml as
    YAML 1.2 (ruamel), where they are strings, and drops the quotes of `"no"`. Booleans are read as YAML 1.2 does."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def read(path: str | Path | None = None) -> dict:
    """params.yaml as a mapping (not yet validated)."""
    path = Path(path) if path else paths.root() / "params.yaml"
    if not path.exists():
        raise ConfigError(f"params: {path} does not exist; run from the repository (or pass its params.yaml)")
    raw = yaml.load(path.read_text(), Loader=_Yaml12Loader) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"params: {path} must be a mapping at the top level")
    profiles = raw.get("profiles") or {}
    unknown = [p for p in profiles if p not in PROFILES]
    if unknown:
        raise ConfigError(f"params: 'profiles.{unknown[0]}' is not a profile; choose one of {', '.join(PROFILES)}")
    for name, over in profiles.items():
        bad = [k for k in (over or {}) if k in ("profile", "profiles")]
        if bad:
            raise ConfigError(f"params: 'profiles.{name}.{bad[0]}' cannot be overridden by a profile")
    return raw


def effective(raw: dict, profile: str, overrides: dict | None = None) -> dict:
    """The file's values with the profile's overrides and then `overrides` merged over them."""
    if profile not in PROFILES:
        raise ConfigError(f"params: profile {profile!r} is unknown; choose one of {', '.join(PROFILES)}")
    merged = deep_merge(raw, (raw.get("profiles") or {}).get(profile) or {})
    return {**deep_merge(merged, overrides or {}), "profile": profile}


def _lookup(tree: dict, key: str):
    node = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"params: '{key}' is missing from params.yaml")
        node = node[part]
    return node


def has_key(tree: dict, key: str) -> bool:
    """Whether a dotted key exists in a parameter tree."""
    try:
        _lookup(tree, key)
        return True
    except ConfigError:
        return False


def build_key(tree: dict, key: str, schema, where: str | None = None) -> Any:
    """The value of section (or dotted key) `key` of a parameter tree, checked against `schema`; errors name
    `where` (default: the key)."""
    where = where or key
    if dataclasses.is_dataclass(schema):
        return build(schema, _lookup(tree, key) if has_key(tree, key) else {}, where)
    return coerce(schema, _lookup(tree, key), where)


def check_profiles(raw: dict, sections: dict[str, Any]) -> None:
    """Every profile's overrides of these sections on their own (errors name profiles.<profile>.<key>), then
    merged over the file's values, so a typo under an inactive profile fails too."""
    for name, over in (raw.get("profiles") or {}).items():
        for key, schema in sections.items():
            if has_key(over or {}, key):
                build_key(over, key, schema, f"profiles.{name}.{key}")
        tree = effective(raw, name)
        for key, schema in sections.items():
            build_key(tree, key, schema)


class Params:
    """The sections one stage reads: `p.<section>` (a dotted key `a.b` reads as `p.a.b`) and `p.profile`."""

    def __init__(self, profile: str, values: dict[str, Any]):
        self.profile, self.values = profile, dict(values)
        for key, value in values.items():
            head, *rest = key.split(".")
            if not rest:
                setattr(self, head, value)
                continue
            node = self.__dict__.setdefault(head, types.SimpleNamespace())
            for part in rest[:-1]:
                node = node.__dict__.setdefault(part, types.SimpleNamespace())
            setattr(node, rest[-1], value)

    def describe(self) -> str:
        """The effective parameters as YAML (what the stage will use)."""
        return yaml.safe_dump({k: as_dict(v) for k, v in self.values.items()}, sort_keys=False)

    def __repr__(self) -> str:
        return f"Params(profile={self.profile!r}, sections={list(self.values)})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Params) and (self.profile, self.values) == (other.profile, other.values)


def load(
    sections: dict[str, Any], profile: str | None = None, overrides: dict | None = None, path: str | Path | None = None
) -> Params:
    """The given sections of params.yaml, validated, with the active profile's overrides applied.

    `sections` maps a section name (or a dotted key) to its schema (a dataclass, or a plain type for a dotted
    key). `profile` (default: the file's `profile`) and `overrides` (a nested dict, applied last) let a
    notebook's parameters cell change a run without editing the file. Every profile's overrides of these
    sections are validated too, so a typo under an inactive profile fails now.
    """
    raw = read(path)
    prof = profile or raw.get("profile", "tiny")
    extra = [k for k in (overrides or {}) if k not in {s.split(".")[0] for s in sections}]
    if extra:
        raise ConfigError(
            f"params: overrides name section(s) {extra} that this stage does not read (it reads {', '.join(sections)})"
        )
    where = f"(in {Path(path).name if path else 'params.yaml'}, profile {prof!r})"
    try:
        check_profiles(raw, sections)
        tree = effective(raw, prof, overrides)
        return Params(prof, {key: build_key(tree, key, schema) for key, schema in sections.items()})
    except ConfigError as e:
        raise ConfigError(f"{e} {where}") from None


def loader(sections: dict[str, Any]):
    """`params(profile=None, overrides=None) -> Params` for a stage that reads `sections`; the mapping stays
    readable as `params.sections` (the pipeline's parameter lists are derived from it)."""

    def params(profile: str | None = None, overrides: dict | None = None) -> Params:
        quiet_hub_progress()  # a stage starts here: the hub libraries' loading bars would flood papermill's log
        return load(sections, profile, overrides)

    params.sections = dict(sections)
    return params


def check(schemas: dict[str, Any], path: str | Path | None = None) -> None:
    """Validate every section of params.yaml under every profile; every top-level key must have a schema."""
    raw = read(path)
    known = {k.split(".")[0] for k in schemas} | {"profile", "profiles"}
    for where, tree in [("", raw), *((f"profiles.{p}.", o or {}) for p, o in (raw.get("profiles") or {}).items())]:
        unknown = [k for k in tree if k not in known]
        if unknown:
            raise ConfigError(
                f"params: unknown section '{where}{unknown[0]}'. Sections: "
                f"{', '.join(sorted(known - {'profile', 'profiles'}))}"
            )
    check_profiles(raw, schemas)
    for prof in PROFILES:
        tree = effective(raw, prof)
        for key, schema in schemas.items():
            try:
                build_key(tree, key, schema)
            except ConfigError as e:
                raise ConfigError(f"{e} (profile {prof!r})") from None


def as_dict(obj):
    """A section (or a value of a dotted key) as plain JSON-able data."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    return json.loads(json.dumps(obj, default=str))


def set_profile(profile: str, path: str | Path | None = None) -> None:
    """Rewrite the `profile:` line of a params.yaml, keeping comments and layout."""
    if profile not in PROFILES:
        raise ConfigError(f"profile {profile!r} is unknown; choose one of {', '.join(PROFILES)}")
    path = Path(path) if path else paths.root() / "params.yaml"
    text = path.read_text()
    new, n = re.subn(r"(?m)^profile:\s*\S+", f"profile: {profile}", text, count=1)
    if n != 1:
        raise ConfigError(f"params: no top-level 'profile:' line in {path}")
    if new != text:
        path.write_text(new)

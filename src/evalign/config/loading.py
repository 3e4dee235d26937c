"""Reading a config: YAML files, shipped presets, ``--set`` overrides, one-line errors.

``--set a.b=v`` overrides any field (the value is parsed as YAML, so ``--set
solver.num_samples=6`` is an int) and ``--preset NAME`` loads a config shipped in
``evalign/presets``. A validation error becomes one ConfigError line naming the key.
"""

from __future__ import annotations

import difflib
import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from evalign.config.schema import Config
from evalign.errors import ConfigError


def preset_names() -> list[str]:
    root = resources.files("evalign") / "presets"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    path = resources.files("evalign") / "presets" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown preset '{name}'; available: {', '.join(preset_names())}"
        )
    return path.read_text(encoding="utf-8")


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader (no object tags) that refuses a key repeated in one mapping:
    ``safe_load`` would silently keep the last value."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # keys merged in with << may be overridden, as YAML allows
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: the base constructor says so
            break
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}' (first on line {first.start_mark.line + 1}); "
                "keep one of them", key_node.start_mark)
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def parse_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{origin}:{where}: malformed YAML ({problem}); fix the syntax there") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[str, Any]:
    """``a.b=value`` -> ("a.b", parsed value). Values are YAML, so 4 is int, true is bool."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set solver.num_samples=6")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        raise ConfigError(f"--set {item!r}: '{key}' is not a dotted key like solver.train.beta")
    try:
        value = yaml.load(raw, Loader=_UniqueKeyLoader) if raw.strip() else ""  # noqa: S506
    except yaml.YAMLError:
        value = raw
    return key, value


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any] | list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with dotted-key overrides applied (validated later)."""
    out = json.loads(json.dumps(data, default=str))
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(s) for s in overrides)
    for key, value in items:
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {key}: '{part}' is a value, not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def validate(data: dict[str, Any], origin: str = "config") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, origin)) from None


def load_config(
    path: str | Path | None = None,
    *,
    preset: str | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> Config:
    """Load a config from a file and/or a preset (file keys override the preset's), then
    apply ``--set`` overrides. With neither, the defaults."""
    data: dict[str, Any] = {}
    origin = "defaults"
    if preset:
        data = parse_yaml(preset_text(preset), f"preset {preset}")
        origin = f"preset {preset}"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist; pass a YAML file or use --preset NAME")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{p}: not valid UTF-8 text; save the config as UTF-8") from None
        data = _deep_merge(data, parse_yaml(text, str(p)))
        origin = str(p)
    if overrides:
        data = apply_overrides(data, overrides)
    return validate(data, origin)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """Field names of the section at ``loc`` (for 'did you mean' hints)."""
    model: Any = Config
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        inner = getattr(ann, "__args__", None)
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        elif inner:
            cands = [a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)]
            if not cands:
                return []
            model = cands[0]
        else:
            return []
    return sorted(getattr(model, "model_fields", {}))


def _format_validation_error(exc: ValidationError, origin: str) -> str:
    parts = []
    for err in exc.errors()[:3]:
        loc = tuple(err.get("loc", ()))
        key = ".".join(str(p) for p in loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc)
            hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            msg = f"unknown key '{key}'"
            if hint:
                msg += f" (did you mean '{'.'.join(str(p) for p in loc[:-1] + (hint[0],))}'?)"
            elif allowed:
                msg += f"; allowed here: {', '.join(allowed)}"
        elif not loc and err["type"] == "value_error":  # a check across sections says it all itself
            msg = str(err["msg"]).removeprefix("Value error, ")
        else:
            got = err.get("input")
            shown = repr(got) if not isinstance(got, dict) else "a mapping"
            if len(shown) > 60:
                shown = shown[:57] + "..."
            msg = f"{key}: {err['msg']} (got {shown})"
        parts.append(msg)
    more = len(exc.errors()) - len(parts)
    tail = f"; and {more} more" if more > 0 else ""
    return f"{origin}: " + "; ".join(parts) + tail

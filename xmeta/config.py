"""Typed config dataclasses loaded from YAML with ``a.b=value`` overrides.

The dataclasses are the single source of truth: YAML files and command-line overrides only
override their fields, and any key a dataclass does not declare is an error that names it.

A config file may start from another one: ``extends: <base>`` names one base file (a path relative
to the extending file, or a packaged config's name as ``--config`` takes it, e.g. ``protonet``),
which may extend another in turn. Each file is deep-merged over its base (mappings merge key by
key; lists and scalars replace), and ``key=value`` overrides apply last.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from xmeta.errors import XmetaError, writing
from xmeta.registry import did_you_mean

C = TypeVar("C")


class ConfigError(XmetaError, ValueError):
    """A config file or override that does not fit its dataclass."""


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: cannot convert {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{where}.")
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_convert(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            out = tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
        if tp is int and isinstance(value, float) and out != value:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return out
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[C], data: Mapping[str, Any], prefix: str = "") -> C:
    """Build dataclass ``cls`` from a mapping; unknown keys and bad values raise ConfigError."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(did_you_mean(f"{prefix}{key}", [f"{prefix}{k}" for k in fields], "config key"))
        kwargs[key] = _convert(value, hints[key], f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except ValueError as err:
        raise ConfigError(f"{prefix or ''}{err}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data view of a config (tuples become lists) for YAML/JSON output."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "c=x"]`` into a nested dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


EXTENDS = "extends"  # the key that names a config file's base


def load_config(cls: type[C], path: str | Path | None = None, overrides: Sequence[str] = ()) -> C:
    """Load ``cls`` from an optional YAML file (merged over its ``extends:`` bases) plus ``key=value`` overrides.

    Raises:
        ConfigError: a missing or invalid file, a base that cannot be found, files that extend each
            other in a cycle, an unknown key (naming the file that has it) or a bad value.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        data = _load_file(cls, path, ())
    data = _merge(data, parse_overrides(overrides))
    try:
        return from_dict(cls, data)
    except ConfigError as err:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{err}") from None


def dump_config(cfg: Any) -> str:
    """The YAML text of a resolved config (what ``save_config`` writes and ``--print-config`` shows)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)


def _load_file(cls: type, path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """``path``'s mapping merged over its bases; ``chain`` holds the files that extend it."""
    if path.resolve() in {p.resolve() for p in chain}:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"config files extend each other in a cycle: {cycle}")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping")
    data = dict(loaded)
    base = data.pop(EXTENDS, None)
    try:  # each file's keys are checked on their own, so a typo names the file that has it
        _check_keys(cls, data)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: {EXTENDS} must name one config file, got {base!r}")
    return _merge(_load_file(cls, _base_path(base.strip(), path), (*chain, path)), data)


def _base_path(ref: str, child: Path) -> Path:
    """The file ``extends: ref`` in ``child`` names: relative to ``child``, else a packaged config."""
    local = Path(ref).expanduser()
    local = local if local.is_absolute() else child.parent / local
    suffixed = ref.endswith((".yaml", ".yml"))
    for candidate in (local,) if suffixed else (local.with_name(f"{local.name}.yaml"), local):
        if candidate.is_file():
            return candidate
    if "/" in ref or "\\" in ref:  # meant as a path: a name never contains a separator
        raise ConfigError(f"{child}: {EXTENDS}: base config file not found: {ref} (relative to {child.parent})")
    from xmeta.errors import InputError
    from xmeta.recipes_index import config_path  # torch-free; the one place that knows packaged configs

    try:  # a bare name, always the packaged config (like --config NAME), never one in the cwd
        return config_path(ref.removesuffix(".yml").removesuffix(".yaml"))
    except InputError as err:
        raise ConfigError(f"{child}: {EXTENDS}: {err}") from None


def _check_keys(cls: type, data: Mapping[str, Any], prefix: str = "") -> None:
    """Refuse a key ``cls`` (or a nested config dataclass) does not declare, as ``from_dict`` would."""
    fields = {f.name for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(did_you_mean(f"{prefix}{key}", [f"{prefix}{k}" for k in fields], "config key"))
        if dataclasses.is_dataclass(hints[key]) and isinstance(value, Mapping):
            _check_keys(hints[key], value, f"{prefix}{key}.")


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically (raises WriteError on a full disk or a refused write)."""
    with writing(path, atomic=True) as tmp:
        tmp.write_text(dump_config(cfg), encoding="utf-8")

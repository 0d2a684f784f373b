"""Typed-config helpers: `key.sub=value` overrides onto nested dataclasses, unknown keys rejected."""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key or value the user must fix."""


def _coerce(value: str, typ: Any) -> Any:
    origin = typing.get_origin(typ)
    if typ is bool:
        low = value.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"expected a boolean, got {value!r}")
    if typ in (int, float, str):
        return typ(value)
    if origin in (list, tuple):
        items = json.loads(value) if value.startswith("[") else [v for v in value.split(",") if v]
        (inner, *_) = typing.get_args(typ) or (str,)
        out = [_coerce(str(v), inner) for v in items]
        return tuple(out) if origin is tuple else out
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if value.lower() in ("none", "null"):
            return None
        return _coerce(value, args[0])
    if origin is typing.Literal:
        if value not in typing.get_args(typ):
            raise ConfigError(f"expected one of {typing.get_args(typ)}, got {value!r}")
        return value
    return json.loads(value)


def apply_overrides(cfg: T, overrides: list[str] | dict[str, Any]) -> T:
    """Return a copy of a (nested) dataclass with `a.b=value` overrides applied and validated."""
    items = overrides.items() if isinstance(overrides, dict) else (_split(o) for o in overrides)
    for key, value in items:
        cfg = _set(cfg, key.split("."), value, key)
    return cfg


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not key=value")
    k, v = item.split("=", 1)
    return k.strip(), v.strip()


def _set(obj: Any, path: list[str], value: Any, full: str) -> Any:
    if not dataclasses.is_dataclass(obj):
        raise ConfigError(f"cannot set {full!r}: {type(obj).__name__} has no fields")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    name = path[0]
    if name not in fields:
        raise ConfigError(f"unknown config key {full!r}; valid keys here: {', '.join(sorted(fields))}")
    current = getattr(obj, name)
    if len(path) > 1:
        new = _set(current, path[1:], value, full)
    else:
        hints = typing.get_type_hints(type(obj))
        try:
            new = _coerce(value, hints[name]) if isinstance(value, str) else value
        except (ValueError, json.JSONDecodeError) as exc:
            raise ConfigError(f"bad value for {full!r}: {exc}") from None
    return dataclasses.replace(obj, **{name: new})


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a (nested) dataclass from a dict, rejecting unknown keys."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ConfigError(f"unknown keys for {cls.__name__}: {sorted(unknown)}; valid: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for k, v in data.items():
        t = hints[k]
        if dataclasses.is_dataclass(t) and isinstance(v, dict):
            v = from_dict(t, v)
        elif typing.get_origin(t) is tuple and isinstance(v, list):
            v = tuple(v)
        kwargs[k] = v
    return cls(**kwargs)

"""Typed configuration sections: a dataclass built from a YAML mapping, every key and value checked.

Shared by the run configuration (`smaug.config`) and the benchmarks YAML (`smaug.data.benchmarks.config`), so
both name a bad key the same way: `ConfigError("optim.lr: expected a number, got 'fast'")`.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal


class ConfigError(ValueError):
    """A bad configuration value; the message names the offending dotted key."""


def raise_all(problems: list[str]) -> None:
    """One ConfigError for all `problems`: a single one as its message, several each on a line of its own."""
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))


def check_type(key: str, value, tp):
    """Return value coerced to `tp` where lossless (int->float, numeric str->float, list->tuple); else raise."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return check_type(key, value, a)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError("; ".join(errors))
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if tp in (tuple, list) or origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
            value = [check_type(f"{key}[{i}]", v, a) for i, (v, a) in enumerate(zip(value, args))]
        elif args:
            value = [check_type(f"{key}[{i}]", v, args[0]) for i, v in enumerate(value)]
        return tuple(value) if (tp is tuple or origin is tuple) else list(value)
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    return value  # unannotated / complex types: the owning dataclass validates


def build_section(prefix: str, cls, values: dict):
    """Instantiate dataclass `cls` from `values`, naming `prefix.key` on any error."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for k in values:
        if k not in known:
            close = [n for n in known if n.split("_")[0] == str(k).split("_")[0]]
            hint = f" (did you mean {', '.join(sorted(close))}?)" if close else ""
            raise ConfigError(f"{prefix}.{k}: unknown key{hint}")
    # `null` for a field whose default is computed (e.g. data.shards_root from $SMAUG_SHARDS) means "the default"
    computed = {f.name for f in dataclasses.fields(cls) if f.default_factory is not dataclasses.MISSING}
    values = {k: v for k, v in values.items() if not (v is None and k in computed)}
    kwargs = {k: check_type(f"{prefix}.{k}", v, hints.get(k, Any)) for k, v in values.items()}
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{prefix}: {e}") from e

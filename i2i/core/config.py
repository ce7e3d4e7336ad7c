"""The one loader from plain data (JSON, TOML) into dataclass configs, on pydantic.

Every config goes through ``from_dict``: the model and training configs, the daily run's file and
the index manifest. Values are checked against the field types (and converted where that loses
nothing: a list to a tuple, a str to a Path), and one policy holds for all of them: a key the
dataclass does not have is an error that names the key, as is a missing required key.
"""
from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any, Iterator, TypeVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

from i2i.core.errors import InputError

T = TypeVar("T")
_FORBID_UNKNOWN = ConfigDict(extra="forbid")


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """An instance of dataclass ``cls`` from ``data``; ``where`` names the source in errors (a section, a file)."""
    if not isinstance(data, dict):
        raise InputError(f"config section {where or 'root'} must be a table of keys (a JSON object), "
                         f"got {type(data).__name__}")
    try:
        return _adapter(cls).validate_python(data)
    except ValidationError as exc:
        raise InputError(describe(exc, where)) from None


def describe(exc: ValidationError, where: str = "") -> str:
    """One line: the unknown keys, the missing keys, then the values of the wrong type, each by name."""
    unknown: dict[str, list[str]] = {}
    missing: dict[str, list[str]] = {}
    wrong: list[str] = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        section = ".".join(part for part in [where, *loc[:-1]] if part) or "root"
        key = loc[-1] if loc else ""
        if error["type"] == "unexpected_keyword_argument":
            unknown.setdefault(section, []).append(key)
        elif error["type"] in ("missing", "missing_argument"):
            missing.setdefault(section, []).append(key)
        else:
            wrong.append(f"{section}.{key}: {error['msg'].lower()} (got {error.get('input')!r})")
    parts = [f"unknown config key(s) {', '.join(keys)} in {section}" for section, keys in unknown.items()]
    parts += [f"missing config key(s) {', '.join(keys)} in {section}" for section, keys in missing.items()]
    return "; ".join(parts + wrong)


@functools.cache
def _adapter(cls: type) -> TypeAdapter:
    _forbid_unknown_keys(cls)
    return TypeAdapter(cls)


def _forbid_unknown_keys(cls: type) -> None:
    """Gives ``cls`` and every dataclass nested in its fields the forbid-unknown-keys policy."""
    if "__pydantic_config__" in cls.__dict__:
        return
    cls.__pydantic_config__ = _FORBID_UNKNOWN
    for hint in typing.get_type_hints(cls).values():
        for nested in _dataclasses_in(hint):
            _forbid_unknown_keys(nested)


def _dataclasses_in(hint: Any) -> Iterator[type]:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        yield hint
    for arg in typing.get_args(hint):
        yield from _dataclasses_in(arg)

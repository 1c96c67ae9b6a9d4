"""Typed stage configs filled from `params.yaml`.

Every stage takes a dataclass config. The DVC stages pass params on the command line
(templated from params.yaml); `load_config` fills a config from a params file directly,
for stages with many knobs (training) and for scripts.
"""

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cg3d.errors import UsageError

T = TypeVar("T")


def read_params(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--params: no such file {path}")
    return yaml.safe_load(path.read_text()) or {}


def from_dict(cls: type[T], values: dict[str, Any], where: str) -> T:
    """Build dataclass `cls` from `values`; an unknown key is a UsageError naming it."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UsageError(
            f"{where}: unknown parameter {unknown[0]!r} (known: {', '.join(sorted(names))})"
        )
    return cls(**values)


def from_arguments(cls: type[T], arguments: dict[str, Any]) -> T:
    """`cls` from a command's arguments (its `locals()`): each field from the argument of the
    same name, so a command never lists its config's fields a second time."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{name: value for name, value in arguments.items() if name in names})


def load_config(cls: type[T], section: str, params_file: Path, **overrides: Any) -> T:
    """`cls` from `params_file[section]`, then non-None keyword overrides (CLI options)."""
    values = dict(read_params(params_file).get(section) or {})
    values.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(cls, values, f"{params_file}:{section}")

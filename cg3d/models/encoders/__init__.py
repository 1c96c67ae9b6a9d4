"""Point encoders behind a registry of architectures and their named sizes (as timm's models).

An architecture is an `nn.Module` built as `cls(out_dim=..., **params)` that maps (B, N, 3)
points to (B, out_dim) features, and says how many points a cloud needs
(`cls.points_needed(params)`, checked against n_points before anything is built);
`@register_encoder("name")` makes it buildable by its name with its own defaults. A size is a name for one set of its params, e.g.
`register_size("pointtransformer-tiny", "pointtransformer", width=128, depth=4, ...)`, so
params files say `encoder: pointtransformer-tiny` and keep `encoder_params` for overrides.

A registered size never changes: checkpoints name it, and rebuild their encoder from it. A new
size gets a new name. A new architecture is one module of this package listed in `_MODULES`.
"""

import importlib
import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from cg3d.errors import UsageError

_ARCHITECTURES: dict[str, type[nn.Module]] = {}
_SIZES: dict[str, tuple[str, dict[str, Any]]] = {}
_MODULES = ("pointbert", "pointtransformer", "pointnet2", "ulip", "ppat", "uni3d")


def register_encoder(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make the architecture buildable by `name` (with its own defaults)."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        _ARCHITECTURES[name] = cls
        return cls

    return add


def register_size(name: str, architecture: str, **params: Any) -> None:
    """Name `params` of `architecture` (registered before) as the encoder `name`."""
    if architecture not in _ARCHITECTURES:
        raise ValueError(f"size {name!r}: no architecture {architecture!r} registered")
    _SIZES[name] = (architecture, params)


def _import_all() -> None:
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")


def encoder_names() -> list[str]:
    """Every name `build_encoder` takes: the architectures and their sizes."""
    _import_all()
    return sorted(_ARCHITECTURES.keys() | _SIZES.keys())


def _size_list() -> str:
    """The registered sizes for a one-line message: four or more sharing a stem (the part
    before the last '-') as one `stem-{a,b,...}`, e.g. uni3d-{b,g,l,s,ti}."""
    stems: dict[str, list[str]] = {}
    for size in sorted(_SIZES):
        stems.setdefault(size.rsplit("-", 1)[0], []).append(size)
    names = []
    for stem, sizes in stems.items():
        if len(sizes) >= 4:
            names.append(f"{stem}-{{{','.join(s.rsplit('-', 1)[1] for s in sizes)}}}")
        else:
            names.extend(sizes)
    return ", ".join(sorted(names))


def resolve_encoder(name: str, overrides: dict[str, Any] | None = None) -> tuple[str, dict]:
    """The architecture of encoder `name` and its params: the size's, updated by `overrides`.

    An unknown name, or an override the architecture does not take, is a one-line UsageError.
    """
    _import_all()
    if name in _SIZES:
        architecture, params = _SIZES[name]
    elif name in _ARCHITECTURES:
        architecture, params = name, {}
    else:
        raise UsageError(f"encoder: unknown encoder {name!r} (sizes: {_size_list()})")
    accepted = set(inspect.signature(_ARCHITECTURES[architecture]).parameters) - {"out_dim"}
    unknown = sorted(set(overrides or {}) - accepted)
    if unknown:
        raise UsageError(
            f"encoder_params: {architecture} has no parameter {unknown[0]!r} "
            f"(its parameters: {', '.join(sorted(accepted))})"
        )
    return architecture, params | (overrides or {})


def points_needed(name: str, overrides: dict[str, Any] | None = None) -> int:
    """Points per cloud encoder `name` needs: each architecture's `points_needed(params)`
    (its farthest-point centres and neighbourhoods), given every param, defaults included."""
    architecture, params = resolve_encoder(name, overrides)
    cls = _ARCHITECTURES[architecture]
    defaults = {
        p.name: p.default
        for p in inspect.signature(cls).parameters.values()
        if p.default is not inspect.Parameter.empty
    }
    try:
        return int(cls.points_needed(defaults | params))
    except (TypeError, ValueError, LookupError) as error:  # e.g. centres: 512, not a pair
        raise UsageError(f"encoder {name!r}: bad encoder_params {params} ({error!r})") from None


def build_encoder(name: str, out_dim: int, overrides: dict[str, Any] | None = None) -> nn.Module:
    """The encoder `name` (with `overrides` of its params) projecting to `out_dim`."""
    architecture, params = resolve_encoder(name, overrides)
    try:
        return _ARCHITECTURES[architecture](out_dim=out_dim, **params)
    except (TypeError, ValueError, AssertionError) as error:  # e.g. width not divisible by heads
        raise UsageError(f"encoder {name!r}: bad encoder_params {params} ({error})") from None

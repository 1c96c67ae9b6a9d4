"""Point encoders behind a registry: a new encoder is one module that registers itself.

An encoder is an `nn.Module` built as `cls(out_dim=..., **params)` that maps (B, N, 3) points
to (B, out_dim) features. Register it with `@register_encoder("name")` in a module of this
package and add the module name to `_MODULES`.
"""

import importlib
from collections.abc import Callable
from typing import Any

from torch import nn

from cg3d.errors import UsageError

_ENCODERS: dict[str, type[nn.Module]] = {}
_MODULES = ("pointtransformer", "pointnet2")


def register_encoder(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: make the encoder buildable by `name`."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        _ENCODERS[name] = cls
        return cls

    return add


def encoder_names() -> list[str]:
    """Names of all registered encoders."""
    for module in _MODULES:
        importlib.import_module(f"{__name__}.{module}")
    return sorted(_ENCODERS)


def build_encoder(name: str, out_dim: int, params: dict[str, Any] | None = None) -> nn.Module:
    """The encoder `name` projecting to `out_dim`; a wrong name or param is a UsageError."""
    names = encoder_names()
    if name not in _ENCODERS:
        raise UsageError(f"--encoder: unknown encoder {name!r} (known: {', '.join(names)})")
    try:
        return _ENCODERS[name](out_dim=out_dim, **(params or {}))
    except TypeError as error:
        raise UsageError(f"encoder {name!r}: bad parameter ({error})") from None

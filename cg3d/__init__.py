"""CG3D: CLIP goes 3D, reproducibly.

The Python API (README, "Python API"):

    import cg3d
    model = cg3d.load("runs/train/last.pt")
    model.classify("chair.glb", labels=["chair", "table", "lamp"])
    index = cg3d.open_index("runs/index", model)
    index.search(text="a wooden chair", top=5)

The names below are imported on first use, so `import cg3d` (and `cg3d --help`) does not import
torch; a pipeline stage, which never asks for them, does not depend on `cg3d.app`.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load": "cg3d.app.api",
    "Model": "cg3d.app.api",
    "Prediction": "cg3d.app.api",
    "open_index": "cg3d.app.index",
    "build_index": "cg3d.app.index",
    "Index": "cg3d.app.index",
    "Hit": "cg3d.app.index",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])

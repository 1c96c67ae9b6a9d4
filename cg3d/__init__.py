"""CG3D: CLIP goes 3D, reproducibly."""

__version__ = "0.1.0"

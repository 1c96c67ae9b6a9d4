"""An object's surface as the importer of record read it: triangles, and what colours them.

The Blender worker (`cg3d.render.surface`) fills a `Surface` from the evaluated scene; the
fast path (`cg3d.geometry.meshio`) fills one with triangles only. The colour at a point is
looked up, in this order, from the texture through the point's UV (bilinear, or nearest when
the material says so; wrap or clamp as its texture says), the vertex colours, the material's
base colour; a point with none of them gets `NO_COLOR` and the object `has_color: false` when no
point had one. Colours are display (sRGB-encoded) values in [0, 1], as the rendered PNGs are.

Pure numpy: the Blender workers and the pipeline both import it.
"""

from dataclasses import dataclass, field

import numpy as np

from cg3d.formats.points import NO_COLOR


def srgb_from_linear(linear: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 encoding of linear values in [0, 1]."""
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


def linear_from_srgb(srgb: np.ndarray) -> np.ndarray:
    srgb = np.clip(srgb, 0.0, 1.0)
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


@dataclass
class Material:
    """What colours the triangles of one material: base colour, and a texture when it has one."""

    base_color: np.ndarray  # (3,) sRGB
    texture: np.ndarray | None = None  # (H, W, 3) float32 sRGB, row 0 at v = 0 (Blender's)
    factor: np.ndarray = field(default_factory=lambda: np.ones(3))  # linear, multiplies it
    uv_transform: np.ndarray = field(default_factory=lambda: np.eye(3))  # 2D affine on UVs
    nearest: bool = False
    clamp: bool = False  # EXTEND (clamp to the edge) rather than REPEAT
    uses_vertex_colors: bool = False


@dataclass
class Surface:
    """Triangles (F, 3, 3) with per-corner UVs and colours (None when absent) and a material
    index per triangle (-1: no material) into `materials`."""

    triangles: np.ndarray
    material: np.ndarray | None = None
    corner_uv: np.ndarray | None = None  # (F, 3, 2)
    corner_color: np.ndarray | None = None  # (F, 3, 3) sRGB, NaN where a triangle has none
    materials: list[Material] = field(default_factory=list)

    def transformed(self, matrix: np.ndarray) -> "Surface":
        """The same surface with its triangles moved by a 4×4 affine `matrix`."""
        flat = self.triangles.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3]
        return Surface(
            flat.reshape(-1, 3, 3),
            self.material,
            self.corner_uv,
            self.corner_color,
            self.materials,
        )

    def colors_at(self, face: np.ndarray, bary: np.ndarray) -> tuple[np.ndarray, bool]:
        """(n, 3) colours of the points `bary` (n, 3) in triangles `face`, and whether any
        point had a colour of its own (else every point is NO_COLOR)."""
        rgb = np.full((len(face), 3), np.nan)
        material = self.material[face] if self.material is not None else np.full(len(face), -1)
        for index, spec in enumerate(self.materials):
            chosen = material == index
            if spec.texture is not None and self.corner_uv is not None and chosen.any():
                uv = np.einsum("nk,nkj->nj", bary[chosen], self.corner_uv[face[chosen]])
                rgb[chosen] = texture_lookup(spec, uv)
        if self.corner_color is not None:
            todo = np.isnan(rgb[:, 0])
            corner = self.corner_color[face[todo]]
            rgb[todo] = np.einsum("nk,nkj->nj", bary[todo], corner)
        for index, spec in enumerate(self.materials):
            todo = np.isnan(rgb[:, 0]) & (material == index)
            rgb[todo] = spec.base_color
        missing = np.isnan(rgb[:, 0])
        has_color = not missing.all()
        rgb[missing] = NO_COLOR
        return np.clip(rgb, 0.0, 1.0), has_color


def texture_lookup(material: Material, uv: np.ndarray) -> np.ndarray:
    """sRGB colours of `material`'s texture at (n, 2) UVs (Blender's: v = 0 at the bottom row)."""
    texture = material.texture
    height, width = texture.shape[:2]
    uv = np.c_[uv, np.ones(len(uv))] @ material.uv_transform.T
    x = uv[:, 0] * width - 0.5
    y = uv[:, 1] * height - 0.5

    def wrap(i: np.ndarray, size: int) -> np.ndarray:
        return np.clip(i, 0, size - 1) if material.clamp else np.mod(i, size)

    if material.nearest:
        colour = texture[
            wrap(np.round(y).astype(int), height), wrap(np.round(x).astype(int), width)
        ]
    else:
        x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
        fx, fy = (x - x0)[:, None], (y - y0)[:, None]
        xs, ys = (wrap(x0, width), wrap(x0 + 1, width)), (wrap(y0, height), wrap(y0 + 1, height))
        top = texture[ys[0], xs[0]] * (1 - fx) + texture[ys[0], xs[1]] * fx
        bottom = texture[ys[1], xs[0]] * (1 - fx) + texture[ys[1], xs[1]] * fx
        colour = top * (1 - fy) + bottom * fy
    if np.allclose(material.factor, 1.0):
        return colour
    return srgb_from_linear(linear_from_srgb(colour) * material.factor)

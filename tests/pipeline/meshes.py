"""Small OBJ meshes and a manifest over them, for the sample stage's tests and others."""

from pathlib import Path

import trimesh

from cg3d.files import file_sha256
from cg3d.formats.manifest import MeshRecord, write_manifest

SMALL = {"points": 64, "seed": 0, "workers": 1}


def make_meshes(
    root: Path, shapes: dict[str, trimesh.Trimesh], up_axis: str = "y", hashed: bool = False
) -> Path:
    """Write each shape as OBJ under root/meshes and a manifest listing them (with each
    file's sha256 when `hashed`, as the meshes stage writes it)."""
    meshes_dir = root / "meshes"
    meshes_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for name, shape in shapes.items():
        shape.export(meshes_dir / f"{name}.obj")
        records.append(
            MeshRecord(
                id=name,
                source="test",
                path=f"{name}.obj",
                class_name="thing",
                split="train",
                up_axis=up_axis,
                sha256=file_sha256(meshes_dir / f"{name}.obj") if hashed else "",
            )
        )
    write_manifest(records, meshes_dir)
    return meshes_dir


def shapes(count: int) -> dict[str, trimesh.Trimesh]:
    out = {}
    for i in range(count):
        box = trimesh.creation.box(extents=[1 + i, 2, 0.5])
        box.apply_translation([10 * i, -3, 2])
        out[f"obj{i:02d}"] = (
            box if i % 2 else trimesh.creation.icosphere(subdivisions=2, radius=3 + i)
        )
    return out

"""A mesh saved compressed (`chair.ply.gz`: no importer here reads it) is refused in one line
that says how to decompress it; never decompressed (a 1 MB .gz can inflate to gigabytes)."""

import gzip
from pathlib import Path

from cg3d.formats.manifest import manifest_rows
from cg3d.params import MeshesConfig
from cg3d.pipeline.sources import build_manifest

SQUARE = b"v 0 0 0\nv 1 0 0\nv 1 1 0\nf 1 2 3\n"


def test_a_compressed_mesh_is_refused_naming_its_format_and_the_command(tmp_path):
    root = tmp_path / "src" / "chair"
    root.mkdir(parents=True)
    (root / "a.obj.gz").write_bytes(gzip.compress(SQUARE))
    (root / "b.PLY.xz").write_bytes(b"\xfd7zXZ\0")
    (root / "c.tar.gz").write_bytes(gzip.compress(b"x"))  # an archive: no mesh suffix inside
    out = tmp_path / "meshes"
    build_manifest(MeshesConfig(source="folder", root=str(root.parent), workers=1), out)
    rows = {Path(row["path"]).name: (row["status"], row["error"]) for row in manifest_rows(out)}
    assert rows == {
        "a.obj.gz": (
            "unsupported_format",
            "a .obj file compressed with gzip: `gunzip` it (no importer reads it so)",
        ),
        "b.PLY.xz": (
            "unsupported_format",
            "a .ply file compressed with xz: `unxz` it (no importer reads it so)",
        ),
        "c.tar.gz": ("unsupported_format", ".gz is not one of .obj .off .ply .stl .glb .gltf"),
    }

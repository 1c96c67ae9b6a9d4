"""The meshes stage's `references_sha256` reads a file that many objects reference (one MTL and
texture shared by a whole folder of OBJs) once per version of it, not once per object: a
texture 10,000 objects share was read whole 10,000 times. A new version (rewritten at the
same size, its mtime set back) is read again."""

import os
import time

from cg3d import files
from cg3d.geometry import meshio
from cg3d.geometry.meshio import validate_file
from tests.pipeline.texturefiles import SQUARE, png_declaring, write


def test_a_texture_many_objects_share_is_hashed_once_per_version(tmp_path, monkeypatch):
    write(tmp_path / "shared.mtl", "newmtl m\nmap_Kd skin.png\n")
    texture = png_declaring(tmp_path / "skin.png", 4, 4)
    objs = [
        write(tmp_path / f"o{n}.obj", "mtllib shared.mtl\nusemtl m\n" + SQUARE) for n in range(3)
    ]
    hashed = []
    hash_file = files.file_sha256

    def counted(path):
        hashed.append(path.name)
        return hash_file(path)

    for module in (files, meshio):  # whichever of the two the stage calls
        monkeypatch.setattr(module, "file_sha256", counted)

    first = {validate_file(obj, tmp_path, geometry=False)[1] for obj in objs}
    assert len(first) == 1 and "" not in first
    assert sorted(hashed) == ["shared.mtl", "skin.png"]

    before = texture.stat()
    time.sleep(0.05)  # past the kernel's coarse timestamp tick: the ctime moves
    texture.write_bytes(texture.read_bytes()[:-1] + b"\x01")
    os.utime(texture, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert texture.stat().st_size == before.st_size
    assert {validate_file(objs[0], tmp_path, geometry=False)[1]} != first
    assert sorted(hashed) == ["shared.mtl", "skin.png", "skin.png"]

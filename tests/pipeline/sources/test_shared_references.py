"""The meshes stage's `references_sha256` reads a file that many objects reference (one MTL and
texture shared by a whole folder of OBJs) once per version of it, not once per object: a
texture 10,000 objects share was read whole 10,000 times. A new version (rewritten at the
same size, its mtime set back) is read again."""

import os
import struct
import time

from cg3d import files
from cg3d.formats.manifest import manifest_rows
from cg3d.geometry import meshio
from cg3d.geometry.meshio import validate_file
from cg3d.params import MeshesConfig
from cg3d.pipeline.sources import build_manifest
from tests.pipeline.texturefiles import SQUARE, glb_with_image, png_declaring, write


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


def test_two_gltf_of_one_json_beside_different_bin_files_are_two_objects(tmp_path):
    """A .gltf's geometry lies in its .bin: the same JSON (same counts, same bounds) beside
    different buffers was marked a duplicate of the first and dropped. Two OBJ files of the
    same bytes stay one object whatever their MTLs say."""
    root = tmp_path / "src"
    for name, corner in (("a", 1.0), ("b", 0.5), ("c", 1.0)):
        folder = root / "shapes" / name
        glb_with_image(
            folder / "scene.gltf",
            png_declaring(tmp_path / "t.png", 4, 4).read_bytes(),
            stored="file",
        )
        data = bytearray((folder / "buffer.bin").read_bytes())
        data[12:16] = struct.pack("<f", corner)  # the second vertex's x: inside the bounds
        (folder / "buffer.bin").write_bytes(bytes(data))
        write(folder / "chair.obj", "mtllib m.mtl\nusemtl m\n" + SQUARE)
        write(folder / "m.mtl", f"newmtl m\nKd {corner} 0 0\n")
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), tmp_path / "out")
    status = {
        row["path"].split("src/")[-1]: row["status"] for row in manifest_rows(tmp_path / "out")
    }
    assert status == {
        "shapes/a/scene.gltf": "ok",
        "shapes/b/scene.gltf": "ok",
        "shapes/c/scene.gltf": "duplicate",  # a's JSON and .bin
        "shapes/a/chair.obj": "ok",
        "shapes/b/chair.obj": "duplicate",
        "shapes/c/chair.obj": "duplicate",
    }

import json
from pathlib import Path

from cg3d.formats.manifest import CLASSES_NAME, mesh_file, read_manifest
from cg3d.pipeline.sources import MeshesConfig, build_manifest
from tests.pipeline.sources.helpers import box, write_mesh, write_off


def make_folder(root: Path) -> None:
    model = root / "armchair" / "Fauteuil été 2"
    write_mesh(model / "model.obj", box((1, 1, 1)))
    (model / "model.mtl").write_text("newmtl m\nmap_Kd textures/wood.png\n")
    (model / "textures").mkdir()
    (model / "textures" / "wood.png").write_bytes(b"\x89PNG\r\n")
    write_mesh(root / "armchair" / "chaise longue.glb", box((1, 2, 1)))
    write_mesh(root / "vase" / "花瓶.ply", box((1, 3, 1)))
    write_mesh(root / "vase" / "tall vase.stl", box((1, 4, 1)))
    write_off(root / "vase" / "old" / "v.off", box((1, 5, 1)))
    (root / "vase" / ".DS_Store").write_bytes(b"\0")


def test_classes_nested_models_and_odd_names(tmp_path: Path) -> None:
    root, out = tmp_path / "my meshes", tmp_path / "out"
    make_folder(root)
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), out)
    records = read_manifest(out)
    assert json.loads((out / CLASSES_NAME).read_text()) == ["armchair", "vase"]
    names = {Path(r.path).name: r for r in records}
    assert set(names) == {"model.obj", "chaise longue.glb", "花瓶.ply", "tall vase.stl", "v.off"}
    assert all(r.status == "ok" for r in records), [(r.path, r.error) for r in records]
    assert names["花瓶.ply"].class_name == "vase" and names["model.obj"].class_name == "armchair"
    assert all(mesh_file(out, r).is_file() for r in records)
    assert all(r.split in {"train", "test"} for r in records)


def test_split_depends_on_the_seed_only(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for i in range(12):
        write_mesh(root / "box" / f"b{i}.stl", box((1, 1, 1 + i)))

    def splits(seed: int, out: str) -> dict[str, str]:
        build_manifest(
            MeshesConfig(source="folder", root=str(root), seed=seed, workers=1), tmp_path / out
        )
        return {r.id: r.split for r in read_manifest(tmp_path / out)}

    first = splits(1, "a")
    assert splits(1, "b") == first
    assert list(first.values()).count("test") == 2
    assert splits(2, "c") != first

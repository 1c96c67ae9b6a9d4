import json
import unicodedata
from pathlib import Path

import pytest

from cg3d.errors import UsageError
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


def _rows(out: Path) -> dict[str, object]:
    return {Path(r.path).name: r for r in read_manifest(out)}


def test_nothing_outside_the_root_is_read(tmp_path: Path) -> None:
    """Symlinks, mtllib, MTL maps and glTF URIs that escape the root are refused, unhashed."""
    root, out, outside = tmp_path / "root", tmp_path / "out", tmp_path / "outside"
    write_mesh(outside / "secret.obj", box((1, 1, 1)))
    (outside / "secret.mtl").write_text("newmtl m\n")
    (outside / "secret.png").write_bytes(b"\x89PNG\r\n")
    (root / "c").mkdir(parents=True)
    (root / "c" / "linked.obj").symlink_to(outside / "secret.obj")
    (root / "c" / "passwd.stl").symlink_to("/etc/passwd")
    write_mesh(root / "c" / "mtllib.obj", box((1, 1, 2)))
    with open(root / "c" / "mtllib.obj", "a") as obj:
        obj.write("mtllib ../../outside/secret.mtl\n")
    write_mesh(root / "c" / "maps.obj", box((1, 1, 3)))
    with open(root / "c" / "maps.obj", "a") as obj:
        obj.write("mtllib maps.mtl\n")
    (root / "c" / "maps.mtl").write_text(f"newmtl m\nmap_Kd -s 1 1 1 {outside / 'secret.png'}\n")
    write_mesh(root / "c" / "image.gltf", box((1, 1, 4)))
    document = json.loads((root / "c" / "image.gltf").read_text())
    document["images"] = [{"uri": "../../outside/secret.png"}]
    (root / "c" / "image.gltf").write_text(json.dumps(document))
    write_mesh(root / "c" / "fine.obj", box((1, 1, 5)))
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), out)
    rows = _rows(out)
    refused = {name: r for name, r in rows.items() if r.status == "outside_root"}
    assert sorted(refused) == ["image.gltf", "maps.obj", "mtllib.obj", "passwd", "secret.obj"]
    assert all(r.sha256 == "" for r in refused.values())
    assert refused["passwd"].error == "the file resolves to /etc/passwd, outside the source root"
    assert refused["mtllib.obj"].error == (
        "../../outside/secret.mtl resolves outside the source root"
    )
    assert rows["fine.obj"].status == "ok"


def test_failure_reasons_name_the_cause(tmp_path: Path) -> None:
    root, out = tmp_path / "root", tmp_path / "out"
    write_mesh(root / "c" / "external.gltf", box((1, 1, 1)))
    document = json.loads((root / "c" / "external.gltf").read_text())
    document["buffers"][0]["uri"] = "model.bin"
    (root / "c" / "external.gltf").write_text(json.dumps(document))
    write_mesh(root / "c" / "draco.gltf", box((1, 1, 2)))
    document = json.loads((root / "c" / "draco.gltf").read_text())
    document["extensionsRequired"] = ["EXT_meshopt_compression"]
    (root / "c" / "draco.gltf").write_text(json.dumps(document))
    (root / "c" / "lines.obj").write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nl 1 2 3\n")
    for suffix in (".fbx", ".dae", ".3mf"):
        (root / "c" / f"model{suffix}").write_bytes(b"not empty")
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), out)
    rows = {name: (r.status, r.error) for name, r in _rows(out).items()}
    assert rows["external.gltf"] == (
        "missing_file",
        "model.bin (referenced by the file) does not exist",
    )
    assert rows["draco.gltf"] == (
        "unsupported_format",
        "the file requires the glTF extension EXT_meshopt_compression, not read here",
    )
    assert rows["lines.obj"] == ("no_faces", "the file holds only lines, no faces")
    assert rows["model.fbx"] == (
        "unsupported_format",
        "FBX is not read here: convert it to glTF/GLB",
    )
    assert rows["model.dae"][0] == "unsupported_format" and "COLLADA" in rows["model.dae"][1]
    assert rows["model.3mf"][0] == "unsupported_format" and "3MF" in rows["model.3mf"][1]


def test_up_axis_param_overrides_the_source(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_mesh(root / "c" / "a.glb", box((1, 1, 1)))
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), tmp_path / "a")
    assert [r.up_axis for r in read_manifest(tmp_path / "a")] == ["y"]
    config = MeshesConfig(source="folder", root=str(root), workers=1, up_axis="-z")
    build_manifest(config, tmp_path / "b")
    assert [r.up_axis for r in read_manifest(tmp_path / "b")] == ["-z"]


ALIKE_CLASSES = {
    "NFC and NFD": (unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")),
    "case": ("Chair", "chair"),
    "underscores": ("night_stand", "night  stand"),
}


@pytest.mark.parametrize("case", sorted(ALIKE_CLASSES))
def test_two_class_folders_that_are_one_text_to_clip_are_refused(tmp_path: Path, case) -> None:
    """Before: classes.json listed 'café' twice (NFC, NFD), or Chair and chair, whose captions
    and zero-shot prompts are the same words to CLIP: nothing told the two apart."""
    root, out = tmp_path / "root", tmp_path / "out"
    for size, name in enumerate(ALIKE_CLASSES[case], start=1):
        write_mesh(root / name / "a.obj", box((1, 1, size)))
    write_mesh(root / "table" / "a.obj", box((3, 1, 1)))
    with pytest.raises(UsageError, match="are one text to CLIP") as caught:
        build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), out)
    if case == "NFC and NFD":  # told apart in the line, which would show 'café' twice
        assert "'cafe\\u0301' and 'caf\\xe9'" in str(caught.value)
    assert not out.exists()


def test_files_whose_names_differ_in_case_or_normalisation_only_are_two_objects(
    tmp_path: Path,
) -> None:
    """Files whose names differ in case or normalisation only are two objects (two ids)."""
    root, out = tmp_path / "root", tmp_path / "out"
    names = ["Case.obj", "case.obj", unicodedata.normalize("NFD", "é.obj"), "é.obj"]
    for size, name in enumerate(names, start=1):
        write_mesh(root / "chair" / name, box((1, 1, size)))
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), out)
    rows = read_manifest(out)
    assert [r.status for r in rows] == ["ok"] * 4
    assert len({r.id for r in rows}) == 4


@pytest.mark.parametrize("per_class", [0, 4])
def test_the_same_files_named_in_nfd_split_and_cap_as_in_nfc(tmp_path: Path, per_class) -> None:
    """Before: a folder unpacked from a zip made on a Mac (names in NFD) split otherwise than
    the same folder with its names in NFC, for the same seed: sorted by code points, `é` in
    NFD (e + U+0301) sat among the `e`s and in NFC after `z`, and a test object of one was
    a training object of the other."""
    names = ["cafe.obj", "café.obj", "cafz.obj", "crème.obj", "cremz.obj", "créa.obj"]
    splits = []
    for form in ("NFC", "NFD"):
        root, out = tmp_path / form / "root", tmp_path / form / "out"
        for size, name in enumerate(names, start=1):
            write_mesh(root / "chair" / unicodedata.normalize(form, name), box((1, 1, size)))
        config = MeshesConfig(
            source="folder", root=str(root), workers=1, test_fraction=0.5, per_class=per_class
        )
        build_manifest(config, out)
        rows = read_manifest(out)
        splits.append({unicodedata.normalize("NFC", Path(r.path).name): r.split for r in rows})
    assert len(splits[0]) == (per_class or len(names))
    assert set(splits[0].values()) == {"train", "test"}
    assert splits[0] == splits[1]

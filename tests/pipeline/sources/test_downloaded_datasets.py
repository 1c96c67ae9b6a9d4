"""Datasets as researchers download them: a clone without `git lfs pull` or `git annex get`,
a download that saved the server's error page or a gzip stream under the mesh's name, a
downloader's leftovers beside a half file, an archive given as the root, and the real
layouts of ShapeNetCore v2, ModelNet10, Thingi10K and Objaverse-XL's mixed folders. Each row
names the real cause (before: "the file holds no geometry", "a PLY header with no
end_header", "cannot open the file", or nothing at all)."""

import gzip
import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
import trimesh
from PIL import Image

from cg3d.errors import UsageError
from cg3d.formats.manifest import read_manifest
from cg3d.pipeline.sources import MeshesConfig, build_manifest
from tests.formats.images import png_declaring
from tests.pipeline.sources.helpers import TAXONOMY, box, write_mesh, write_off

LFS_POINTER = (
    b"version https://git-lfs.github.com/spec/v1\n"
    b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    b"size 1843211\n"
)
ANNEX_POINTER = (
    b"/annex/objects/SHA256E-s1843211--"
    b"4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393.glb\n"
)
GITHUB_404 = (
    b'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
    b"<title>Page not found &middot; GitHub</title>\n</head><body>404</body></html>\n"
)
S3_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message><RequestId>X1</RequestId></Error>"
)
GITHUB_API_404 = b'{"message":"Not Found","documentation_url":"https://docs.github.com/rest"}'
MESH_SUFFIXES = [".obj", ".off", ".ply", ".stl", ".glb", ".gltf"]


def rows_by_name(out: Path) -> dict[str, dict]:
    return {Path(r.path).name: vars(r) for r in read_manifest(out)}


def folder_manifest(root: Path, out: Path) -> dict[str, dict]:
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), out)
    return rows_by_name(out)


def test_pointers_and_error_pages_under_mesh_names_are_named_as_such(tmp_path: Path) -> None:
    root = tmp_path / "clone"
    chair = root / "chair"
    chair.mkdir(parents=True)
    for suffix in MESH_SUFFIXES:
        (chair / f"lfs{suffix}").write_bytes(LFS_POINTER)
    (chair / "annexed.glb").write_bytes(ANNEX_POINTER)
    (chair / "github.glb").write_bytes(GITHUB_404)
    (chair / "github.obj").write_bytes(GITHUB_404)
    (chair / "s3.ply").write_bytes(S3_DENIED)
    (chair / "api.glb").write_bytes(GITHUB_API_404)
    (chair / "api.gltf").write_bytes(GITHUB_API_404)
    (chair / "ok.obj").write_bytes(trimesh.exchange.obj.export_obj(box()).encode())
    (chair / "gzipped.obj").write_bytes(gzip.compress((chair / "ok.obj").read_bytes()))
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("model.obj", (chair / "ok.obj").read_bytes())
    (chair / "zipped.stl").write_bytes(zipped.getvalue())
    rows = folder_manifest(root, tmp_path / "out")

    for suffix in MESH_SUFFIXES:
        row = rows[f"lfs{suffix}"]
        assert row["status"] == "missing_file", suffix
        assert "a Git LFS pointer" in row["error"] and "`git lfs pull`" in row["error"], suffix
        assert "1843211 bytes" in row["error"]
    assert rows["annexed.glb"]["status"] == "missing_file"
    assert "git-annex pointer" in rows["annexed.glb"]["error"]
    assert "`git annex get`" in rows["annexed.glb"]["error"]
    for name in ("github.glb", "github.obj"):
        assert rows[name]["status"] == "unreadable"
        assert "an HTML page (titled 'Page not found &middot; GitHub')" in rows[name]["error"]
    assert "an XML error response (AccessDenied: Access Denied)" in rows["s3.ply"]["error"]
    for name in ("api.glb", "api.gltf"):
        assert "an error answer (no 'asset'; its 'message': 'Not Found')" in rows[name]["error"]
    assert rows["gzipped.obj"]["status"] == "unsupported_format"
    assert "not a .obj file but gzip-compressed: `gunzip` it" in rows["gzipped.obj"]["error"]
    assert "not a .stl file but a zip archive" in rows["zipped.stl"]["error"]
    assert rows["ok.obj"]["status"] == "ok"


@pytest.mark.parametrize("head", [b"<!DOCTYPE html><title>x</title>", b"\x1f\x8b", b"PK\x03\x04"])
def test_a_binary_stl_whose_free_header_starts_like_a_stand_in_is_still_an_stl(
    tmp_path: Path, head: bytes
) -> None:
    """A binary STL's 80 header bytes are anything: its size fitting its count decides."""
    data = trimesh.exchange.stl.export_stl(box())
    path = tmp_path / "root" / "part" / "a.stl"
    path.parent.mkdir(parents=True)
    path.write_bytes(head.ljust(80, b" ") + data[80:])
    assert folder_manifest(tmp_path / "root", tmp_path / "out")["a.stl"]["status"] == "ok"


def test_git_annex_links_name_the_command_or_the_root_to_use(tmp_path: Path) -> None:
    """git-annex links each file's name to .git/annex/objects/…: dangling until `git annex
    get`, and out of a root that is a folder below the repository's top."""
    repo = tmp_path / "repo"
    objects = repo / ".git" / "annex" / "objects" / "Xx" / "Yy"
    key = "SHA256E-s1000--abc.obj"
    chair = repo / "data" / "chair"
    chair.mkdir(parents=True)
    (objects / key).mkdir(parents=True)
    write_mesh(objects / key / key, box())
    fetched = Path("../../.git/annex/objects/Xx/Yy") / key / key
    (chair / "fetched.obj").symlink_to(fetched)
    (chair / "unfetched.obj").symlink_to(Path("../../.git/annex/objects/Zz/Ww/K.obj/K.obj"))

    rows = folder_manifest(repo / "data", tmp_path / "below")
    assert rows["unfetched.obj"]["status"] == "missing_file"
    assert "a git-annex link to 'K.obj'" in rows["unfetched.obj"]["error"]
    assert "`git annex get`" in rows["unfetched.obj"]["error"]
    fetched_row = next(r for r in rows.values() if r["path"].endswith(key))
    assert fetched_row["status"] == "outside_root"
    assert (
        "a git-annex link; point the root at the repository's top folder" in (fetched_row["error"])
    )
    # the repository's top as the root: the object lies inside it and is read (.git is
    # hidden: its objects are no objects of their own)
    build_manifest(MeshesConfig(source="folder", root=str(repo), workers=1), tmp_path / "top")
    statuses = sorted(r.status for r in read_manifest(tmp_path / "top"))
    assert statuses == ["missing_file", "ok"]


def test_downloader_leftovers_are_no_objects_and_mark_the_half_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write_mesh(root / "lamp" / "whole.glb", box())
    write_mesh(root / "lamp" / "half.glb", box((1, 2, 1)))
    (root / "lamp" / "half.glb.aria2").write_bytes(b"\0\1" * 40)
    (root / "lamp" / "firefox.obj").write_bytes(b"")
    (root / "lamp" / "firefox.obj.part").write_bytes(b"v 0 0 0\n")
    (root / "lamp" / "chrome.glb.crdownload").write_bytes(b"glTF")
    (root / "lamp" / "again.GLB.1").write_bytes((root / "lamp" / "whole.glb").read_bytes())
    rows = folder_manifest(root, tmp_path / "out")

    names = {"whole.glb", "half.glb", "firefox.obj", "chrome.glb.crdownload", "again.GLB.1"}
    assert set(rows) == names
    assert rows["again.GLB.1"]["status"] == "unsupported_format"
    assert "a numbered copy of a .glb file, as wget names" in rows["again.GLB.1"]["error"]
    assert rows["whole.glb"]["status"] == "ok"
    assert rows["half.glb"]["status"] == "unreadable"
    assert (
        "an unfinished download (aria2's .aria2 file 'half.glb.aria2'" in rows["half.glb"]["error"]
    )
    assert "Firefox's or wget2's .part file 'firefox.obj.part'" in rows["firefox.obj"]["error"]
    chrome = rows["chrome.glb.crdownload"]
    assert chrome["status"] == "unreadable"
    assert "Chrome's .crdownload file of a download that never finished" in chrome["error"]


def archives(folder: Path) -> dict[str, Path]:
    """ShapeNetCore.v2 packed as it is downloaded: a zip, a .tar.gz, a plain tar."""
    tree = folder / "ShapeNetCore.v2"
    write_mesh(tree / "03001627" / "c1" / "models" / "model_normalized.obj", box())
    made = {}
    with zipfile.ZipFile(folder / "ShapeNetCore.v2.zip", "w") as archive:
        archive.write(tree / "03001627" / "c1" / "models" / "model_normalized.obj", "x.obj")
    made["zip archive"] = folder / "ShapeNetCore.v2.zip"
    for name, mode in (("ShapeNetCore.v2.tar.gz", "w:gz"), ("ShapeNetCore.v2.tar", "w")):
        with tarfile.open(folder / name, mode) as archive:
            archive.add(tree, "ShapeNetCore.v2")
    made["gzip-compressed archive"] = folder / "ShapeNetCore.v2.tar.gz"
    made["tar archive"] = folder / "ShapeNetCore.v2.tar"
    return made


@pytest.mark.parametrize("source", ["shapenet", "folder"])
def test_an_archive_as_the_root_is_one_line_saying_to_extract_it(tmp_path, source) -> None:
    for what, archive in archives(tmp_path).items():
        config = MeshesConfig(source=source, root=str(archive), workers=1)
        with pytest.raises(UsageError) as caught:
            build_manifest(config, tmp_path / "out")
        message = str(caught.value)
        assert f"meshes.root: '{archive}' is a {what}, not a folder: extract it" in message
        assert "\n" not in message


def test_shapenet_core_v2_as_downloaded(tmp_path: Path) -> None:
    """ShapeNetCore.v2's files around each mesh (its .mtl naming `../images/` textures, the
    model's .json and binvox files), a model folder without its mesh, and one in v1's layout."""
    root = tmp_path / "ShapeNetCore.v2"
    root.mkdir()
    (root / "taxonomy.json").write_text(json.dumps(TAXONOMY))
    models = {"03001627": "1a6f615e8b1b5ae4dbbc9440457e303e", "03211117": "1a92363b38b6a0e1"}
    for k, (synset, model) in enumerate(models.items()):
        folder = root / synset / model / "models"
        write_mesh(folder / "model_normalized.obj", box((1, 1 + k, 1)))
        text = (folder / "model_normalized.obj").read_text()
        (folder / "model_normalized.obj").write_text(f"mtllib model_normalized.mtl\n{text}")
        (folder / "model_normalized.mtl").write_text("newmtl m\nmap_Kd ../images/texture0.jpg\n")
        (folder / "model_normalized.json").write_text('{"centroid": [0, 0, 0]}')
        (folder / "model_normalized.solid.binvox").write_bytes(b"#binvox 1\n")
        (folder.parent / "images").mkdir()
        Image.new("RGB", (4, 4)).save(folder.parent / "images" / "texture0.jpg", format="JPEG")
    (root / "03211117" / "partial" / "models").mkdir(parents=True)
    write_mesh(root / "03211117" / "v1model" / "model.obj", box((3, 1, 1)))
    out = tmp_path / "out"
    build_manifest(MeshesConfig(source="shapenet", root=str(root), workers=1), out)
    rows = {Path(r.path).parent.parent.name: r for r in read_manifest(out)}

    assert sorted(rows) == sorted([*models.values(), "partial", "v1model"])
    for model in models.values():  # its texture found through `../images/`: none missing
        assert rows[model].status == "ok" and rows[model].missing == []
    assert rows[models["03001627"]].class_name == "chair"
    assert rows[models["03211117"]].class_name == "monitor"
    assert rows["partial"].status == "missing_file"
    assert "holds no models/model_normalized.obj" in rows["partial"].error
    assert rows["v1model"].status == "missing_file"
    assert "ShapeNetCore v1's layout (<model>/model.obj)" in rows["v1model"].error
    assert {r.split for r in rows.values()} <= {"train", "test"}


def test_modelnet10_is_read_with_its_own_class_list(tmp_path: Path) -> None:
    names = ["bathtub", "bed", "chair", "desk", "dresser"]
    names += ["monitor", "night_stand", "sofa", "table", "toilet"]
    root = tmp_path / "ModelNet10"
    for k, name in enumerate(names):
        for split in ("train", "test"):
            write_off(
                root / name / split / f"{name}_0001.off",
                box((1 + k, 1, 2 if split == "test" else 1)),
            )
    (root / "README.txt").write_text("ModelNet10\n")
    out = tmp_path / "out"
    build_manifest(MeshesConfig(source="modelnet", root=str(root), workers=1), out)
    classes = json.loads((out / "classes.json").read_text())
    assert classes == [name.replace("_", " ") for name in names]
    rows = read_manifest(out)
    assert len(rows) == 20 and {r.status for r in rows} == {"ok"}
    assert {(r.class_name, r.split) for r in rows if "night_stand" in r.path} == {
        ("night stand", "train"),
        ("night stand", "test"),
    }


def test_thingi10k_raw_meshes(tmp_path: Path) -> None:
    """Thingi10K's flat `raw_meshes/<id>.stl`, ASCII and binary, one with 0 faces: its parent
    is the root (one class); the folder itself as the root says so in one line."""
    raw = tmp_path / "Thingi10K" / "raw_meshes"
    raw.mkdir(parents=True)
    (raw / "100026.stl").write_bytes(trimesh.exchange.stl.export_stl(box()))
    (raw / "100027.stl").write_text(trimesh.exchange.stl.export_stl_ascii(box((1, 2, 3))))
    header = b"Exported from Thingiverse".ljust(80, b" ")
    (raw / "100028.stl").write_bytes(header + (0).to_bytes(4, "little"))
    rows = folder_manifest(tmp_path / "Thingi10K", tmp_path / "out")
    assert {name: row["status"] for name, row in rows.items()} == {
        "100026.stl": "ok",
        "100027.stl": "ok",
        "100028.stl": "empty",
    }
    assert {row["class_name"] for row in rows.values()} == {"raw_meshes"}
    with pytest.raises(UsageError, match=r"holds 3 mesh files itself: point --root at the folder"):
        build_manifest(MeshesConfig(source="folder", root=str(raw), workers=1), tmp_path / "o2")


def test_objaverse_xl_mixed_formats_are_objects_by_their_uid(tmp_path: Path) -> None:
    """Objaverse-XL's GitHub and Thingiverse files are `<uid>.stl`, `.obj`, `.fbx`…: before,
    only `.glb` files were objects and the others were left out unsaid."""
    root = tmp_path / "objaverse-xl"
    write_mesh(root / "sketchfab" / "aa11.glb", box())
    write_mesh(root / "thingiverse" / "bb22.stl", box((1, 2, 1)))
    write_mesh(root / "github" / "cc33.obj", box((1, 3, 1)))
    (root / "github" / "dd44.fbx").write_bytes(b"Kaydara FBX Binary  \0")
    (root / "github" / "dd44.png").write_bytes(b"\x89PNG")  # a thumbnail: no object
    (root / "annotations.json").write_text(json.dumps({"mug": ["aa11", "bb22", "cc33", "dd44"]}))
    out = tmp_path / "out"
    build_manifest(MeshesConfig(source="objaverse", root=str(root), workers=1), out)
    rows = {Path(r.path).name: r for r in read_manifest(out)}
    assert sorted(rows) == ["aa11.glb", "bb22.stl", "cc33.obj", "dd44.fbx"]
    assert [rows[n].status for n in ("aa11.glb", "bb22.stl", "cc33.obj")] == ["ok"] * 3
    assert rows["dd44.fbx"].status == "unsupported_format"
    assert "FBX is not read here" in rows["dd44.fbx"].error
    assert rows["bb22.stl"].id.startswith("objaverse-bb22-")


def test_objaverse_downloader_leftovers_mark_the_half_file_or_are_rows(tmp_path: Path) -> None:
    """Objaverse passed over downloader leftovers unsaid: the `.glb` aria2 was still writing
    into was an ok object, and a download that never finished was not named."""
    root = tmp_path / "objaverse"
    glbs = root / "glbs" / "000-001"
    write_mesh(glbs / "aa11.glb", box())
    write_mesh(glbs / "bb22.glb", box((1, 2, 1)))
    (glbs / "bb22.glb.aria2").write_bytes(b"\0\1" * 40)
    (glbs / "cc33.glb.crdownload").write_bytes(b"glTF")
    (glbs / "dd44.stl.part").write_bytes(b"solid")
    (glbs / "ee55.glb.tmp").write_bytes(b"glTF")  # not annotated: no object, no row
    labels = {"mug": ["aa11", "bb22", "cc33"], "vase": ["dd44"]}
    (root / "annotations.json").write_text(json.dumps(labels))
    out = tmp_path / "out"
    build_manifest(MeshesConfig(source="objaverse", root=str(root), workers=1), out)
    rows = {Path(r.path).name: r for r in read_manifest(out)}
    assert sorted(rows) == ["aa11.glb", "bb22.glb", "cc33.glb.crdownload", "dd44.stl.part"]
    assert rows["aa11.glb"].status == "ok"
    assert rows["bb22.glb"].status == "unreadable"
    assert "an unfinished download (aria2's .aria2 file 'bb22.glb.aria2'" in rows["bb22.glb"].error
    chrome, firefox = rows["cc33.glb.crdownload"], rows["dd44.stl.part"]
    assert chrome.status == firefox.status == "unreadable"
    assert "Chrome's .crdownload file of a download that never finished" in chrome.error
    assert (chrome.class_name, firefox.class_name) == ("mug", "vase")
    assert "Firefox's or wget2's .part file of a download" in firefox.error


def test_an_objaverse_leftover_beside_a_second_file_of_its_uid_is_no_row(tmp_path: Path) -> None:
    """`aa11.obj.part` beside `aa11.obj`, the uid's second file (its .glb is the object): it
    was a row saying that its download never finished, "its mesh then takes the name", though
    that file lies beside it; the .obj's own row (duplicate) says what it is."""
    root = tmp_path / "objaverse"
    write_mesh(root / "glbs" / "aa11.glb", box())
    write_mesh(root / "glbs" / "aa11.obj", box((1, 2, 1)))
    (root / "glbs" / "aa11.obj.part").write_text("v 0 0 0\n")
    (root / "annotations.json").write_text(json.dumps({"mug": ["aa11"]}))
    out = tmp_path / "out"
    build_manifest(MeshesConfig(source="objaverse", root=str(root), workers=1), out)
    rows = {Path(r.path).name: r.status for r in read_manifest(out)}
    assert rows == {"aa11.glb": "ok", "aa11.obj": "duplicate"}


def test_an_objaverse_half_glb_gives_way_to_a_finished_file_of_its_uid(tmp_path: Path) -> None:
    """`aa11.glb` half written (`aa11.glb.aria2` beside it) and a whole `aa11.obj`: the .glb
    was the object, an unfinished-download row, and the finished .obj a duplicate naming it.
    Both half: the .glb stays the object (an unfinished row)."""
    root = tmp_path / "objaverse"
    write_mesh(root / "glbs" / "aa11.glb", box())
    (root / "glbs" / "aa11.glb.aria2").write_bytes(b"\0\1" * 40)
    write_mesh(root / "xl" / "aa11.obj", box((1, 2, 1)))
    write_mesh(root / "glbs" / "bb22.glb", box())
    (root / "glbs" / "bb22.glb.part").write_bytes(b"")
    write_mesh(root / "glbs" / "bb22.stl", box())
    (root / "glbs" / "bb22.stl.part").write_bytes(b"")
    (root / "annotations.json").write_text(json.dumps({"mug": ["aa11", "bb22"]}))
    out = tmp_path / "out"
    build_manifest(MeshesConfig(source="objaverse", root=str(root), workers=1), out)
    rows = {Path(r.path).name: r for r in read_manifest(out)}
    statuses = {name: row.status for name, row in rows.items()}
    assert statuses == {
        "aa11.obj": "ok",
        "aa11.glb": "duplicate",
        "bb22.glb": "unreadable",
        "bb22.stl": "duplicate",
    }
    assert rows["aa11.obj"].id.startswith("objaverse-aa11-")
    half = rows["aa11.glb"].error
    assert "aa11.obj, the one taken (a finished download first" in half
    assert "this one is an unfinished download (aria2's .aria2 file 'aa11.glb.aria2'" in half


def test_a_dangling_annex_link_is_no_symlink_loop_nor_outside(tmp_path: Path) -> None:
    """The listing's own check of a link (`not_a_file`), without the stage."""
    from cg3d.pipeline.sources import not_a_file

    (tmp_path / "x.glb").symlink_to(tmp_path / ".git" / "annex" / "objects" / "a" / "K" / "K")
    failure = not_a_file(Path(os.fspath(tmp_path / "x.glb")), tmp_path)
    assert failure is not None and failure.kind == "missing_file"
    assert "git-annex link" in failure.reason


def test_a_class_neither_list_holds_names_both_lists(tmp_path: Path) -> None:
    """ModelNet10 is read as well as ModelNet40: the line said "not ModelNet40 classes"."""
    write_off(tmp_path / "ModelNet10" / "spaceship" / "train" / "spaceship_0001.off", box())
    config = MeshesConfig(source="modelnet", root=str(tmp_path / "ModelNet10"), workers=1)
    with pytest.raises(UsageError, match="spaceship not ModelNet10 or ModelNet40 classes in"):
        build_manifest(config, tmp_path / "out")


def test_a_gltf_whose_buffer_is_an_lfs_pointer_is_no_object(tmp_path: Path) -> None:
    """The pointer's 130 bytes were read as the buffer: this box passed as `ok`."""
    folder = tmp_path / "root" / "crate"
    folder.mkdir(parents=True)
    for name, data in trimesh.exchange.gltf.export_gltf(trimesh.Scene(box())).items():
        (folder / name).write_bytes(LFS_POINTER if name.endswith(".bin") else data)
    row = folder_manifest(tmp_path / "root", tmp_path / "out")["model.gltf"]
    assert row["status"] == "missing_file"
    assert "gltf_buffer_0.bin (referenced by the file) is a Git LFS pointer" in row["error"]


def test_a_uids_glb_stays_its_object_beside_other_formats_of_it(tmp_path: Path) -> None:
    """Path order took `<uid>.fbx` kept beside `<uid>.glb` as the object (an unsupported row
    where the .glb had been ok), and the .glb a duplicate; a point cloud `<uid>.ply` beside a
    .glb, or a `.dae` beside an `.stl`, likewise."""
    root = tmp_path / "objaverse"
    write_mesh(root / "glbs" / "000-001" / "aa11.glb", box())
    (root / "glbs" / "000-001" / "aa11.fbx").write_bytes(b"Kaydara FBX Binary  \0")
    write_mesh(root / "glbs" / "000-001" / "bb22.ply", box((1, 2, 1)))
    write_mesh(root / "glbs" / "000-001" / "bb22.glb", box((1, 3, 1)))
    (root / "xl" / "cc33.dae").parent.mkdir(parents=True)
    (root / "xl" / "cc33.dae").write_bytes(b"<?xml version='1.0'?><COLLADA/>")
    write_mesh(root / "xl" / "cc33.stl", box((1, 4, 1)))
    (root / "annotations.json").write_text(json.dumps({"mug": ["aa11", "bb22", "cc33"]}))
    out = tmp_path / "out"
    build_manifest(MeshesConfig(source="objaverse", root=str(root), workers=1), out)
    rows = {Path(r.path).name: r for r in read_manifest(out)}
    assert {name: rows[name].status for name in rows} == {
        "aa11.glb": "ok",
        "aa11.fbx": "duplicate",
        "bb22.glb": "ok",
        "bb22.ply": "duplicate",
        "cc33.stl": "ok",
        "cc33.dae": "duplicate",
    }
    assert rows["aa11.glb"].id.startswith("objaverse-aa11-")
    assert (
        "aa11.glb, the one taken (a finished download first, then a .glb" in rows["aa11.fbx"].error
    )


def test_textures_that_are_lfs_pointers_are_listed_as_missing(tmp_path: Path) -> None:
    """A clone without `git lfs pull` holds its texture maps as pointers: the object stays ok
    (read without them) but they are listed as lacking, saying why; Blender rendered it
    untextured without a word. An MTL that is a pointer likewise; a real texture is not."""
    folder = tmp_path / "root" / "crate"
    write_mesh(folder / "crate.obj", box())
    (folder / "crate.obj").write_text("mtllib crate.mtl\n" + (folder / "crate.obj").read_text())
    (folder / "crate.mtl").write_text("newmtl m\nmap_Kd wood.png\nmap_Bump bump.png\n")
    (folder / "wood.png").write_bytes(LFS_POINTER)
    (folder / "bump.png").write_bytes(png_declaring(4, 4))
    write_mesh(folder / "lamp.obj", box())
    (folder / "lamp.obj").write_text("mtllib lamp.mtl\n" + (folder / "lamp.obj").read_text())
    (folder / "lamp.mtl").write_bytes(ANNEX_POINTER)
    rows = folder_manifest(tmp_path / "root", tmp_path / "out")
    assert rows["crate.obj"]["status"] == "ok" and rows["lamp.obj"]["status"] == "ok"
    (crate,) = rows["crate.obj"]["missing"]
    assert crate.startswith("wood.png (a Git LFS pointer (to an object of 1843211 bytes")
    (lamp,) = rows["lamp.obj"]["missing"]
    assert lamp.startswith("lamp.mtl (a git-annex pointer")


def test_a_texture_that_is_a_saved_html_page_of_any_size_is_listed_as_missing(
    tmp_path: Path,
) -> None:
    """Only files under 1 KB were read for stand-ins: GitHub's 404 page (5 KB, say) saved as
    `wood.png` passed as a texture, and Blender rendered the object untextured unsaid."""
    folder = tmp_path / "root" / "crate"
    write_mesh(folder / "crate.obj", box())
    (folder / "crate.obj").write_text("mtllib crate.mtl\n" + (folder / "crate.obj").read_text())
    (folder / "crate.mtl").write_text("newmtl m\nmap_Kd wood.png\nmap_Bump bump.png\n")
    page = GITHUB_404.replace(b"404</body>", b"<p>" + b"x" * 5000 + b"</p>404</body>")
    (folder / "wood.png").write_bytes(page)
    (folder / "bump.png").write_bytes(png_declaring(4, 4) + bytes(5000))  # a real one
    row = folder_manifest(tmp_path / "root", tmp_path / "out")["crate.obj"]
    assert row["status"] == "ok"
    (wood,) = row["missing"]
    assert wood.startswith("wood.png (an HTML page (titled 'Page not found &middot; GitHub')")


def test_a_mesh_and_a_root_are_known_as_packed_by_one_table(tmp_path: Path) -> None:
    """Two tables of magic bytes disagreed: a mesh that was a tar or bzip2 stream was read as
    its format (an OBJ "holding no geometry"), a RAR root was "a file, not a folder". An OBJ
    whose text puts "ustar" at byte 257 (no NUL after it) is no tar."""
    import bz2

    root = tmp_path / "root"
    shelf = root / "shelf"
    shelf.mkdir(parents=True)
    obj = trimesh.exchange.obj.export_obj(box()).encode()
    (shelf / "packed.obj").write_bytes(bz2.compress(obj))
    with tarfile.open(shelf / "tarred.ply", "w") as archive:
        archive.add(shelf / "packed.obj", "model.ply")
    mustard = b"# " + b"x" * 251 + b"\no mustard\n"
    assert mustard[257:262] == b"ustar"
    (shelf / "mustard.obj").write_bytes(mustard + obj)
    rows = folder_manifest(root, tmp_path / "out")
    assert rows["packed.obj"]["status"] == "unsupported_format"
    assert "not a .obj file but bzip2-compressed: `bunzip2` it" in rows["packed.obj"]["error"]
    assert "not a .ply file but a tar archive: extract it" in rows["tarred.ply"]["error"]
    assert rows["mustard.obj"]["status"] == "ok"

    rar = tmp_path / "ModelNet40.rar"
    rar.write_bytes(b"Rar!\x1a\x07\x01\x00" + bytes(600))
    with pytest.raises(UsageError, match=r"is a RAR archive, not a folder: extract it \(`unrar x"):
        build_manifest(MeshesConfig(source="folder", root=str(rar), workers=1), tmp_path / "o2")


def test_a_gltf_document_named_glb_is_read_as_the_gltf_it_is(tmp_path: Path) -> None:
    """A glTF's JSON saved as `.glb` is read by its bytes (here and by Blender): it was said
    to be "JSON, not a .glb file", a server's answer to download again."""
    files = trimesh.exchange.gltf.export_gltf(trimesh.Scene(box()), embed_buffers=True)
    (tmp_path / "root" / "crate").mkdir(parents=True)
    (tmp_path / "root" / "crate" / "named.glb").write_bytes(files["model.gltf"])
    row = folder_manifest(tmp_path / "root", tmp_path / "out")["named.glb"]
    assert row["status"] == "ok", row["error"]

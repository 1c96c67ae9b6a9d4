"""A file a mesh references (MTL, texture, glTF .bin) deleted or rewritten between `cg3d meshes`
and `cg3d sample`/`render`: the object was read without it, or with other bytes under the
listed chunk key, and no row said so until the next meshes run. Now a `changed_since_listed`
row naming it. Checked before Blender reads the object: these tests need no bpy."""

from pathlib import Path

import pytest
import trimesh
from PIL import Image

from cg3d.formats.failures import read_failures
from cg3d.formats.manifest import read_manifest
from cg3d.formats.renders import PART_SUFFIX
from cg3d.geometry.meshio import MeshError, listed_references
from cg3d.params import RenderConfig, SampleConfig
from cg3d.pipeline import sample as sample_module
from cg3d.pipeline.chunks import ChunkedOutput
from cg3d.pipeline.sources import MeshesConfig, build_manifest
from cg3d.render.stage import render_chunk
from tests.pipeline.meshes import SMALL


def textured(root: Path, name: str) -> None:
    """`root/box/{name}.obj` naming `{name}.mtl`, whose map_Kd is `{name}.png`."""
    folder = root / "box"
    folder.mkdir(parents=True, exist_ok=True)
    corners = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nvt 0 0\nvt 1 0\nvt 0 1\n"
    faces = "usemtl m\nf 1/1 3/3 2/2\nf 1/1 2/2 4/3\nf 1/1 4/3 3/3\nf 2/1 3/2 4/3\n"
    (folder / f"{name}.obj").write_text(f"mtllib {name}.mtl\n{corners}{faces}")
    (folder / f"{name}.mtl").write_text(f"newmtl m\nKd 1 0 0\nmap_Kd {name}.png\n")
    Image.new("RGB", (8, 8), (200, 10, 10)).save(folder / f"{name}.png")


def listed(tmp_path: Path, names: list[str]) -> tuple[Path, Path]:
    root, meshes = tmp_path / "src", tmp_path / "meshes"
    for name in names:
        textured(root, name)
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), meshes)
    return root / "box", meshes


def test_a_texture_or_mtl_gone_since_listed_is_a_sample_row_naming_it(tmp_path, monkeypatch):
    folder, meshes = listed(tmp_path, ["a", "b", "c"])
    (folder / "a.png").unlink()
    (folder / "b.mtl").unlink()
    Image.new("RGB", (8, 8), (10, 200, 10)).save(folder / "c.png")  # same size, new colour
    monkeypatch.setattr(sample_module, "require", lambda name: None)  # no Blender is started
    config = SampleConfig(**SMALL, chunk_size=1, colors=True)
    sample_module.sample_points(meshes, tmp_path / "points", config)
    names = {record.id: Path(record.path).stem for record in read_manifest(meshes)}
    rows = read_failures(tmp_path / "points" / "failures.parquet")
    reasons = {names[row["id"]]: row["reason"] for row in rows}
    assert reasons["a"].startswith("changed_since_listed: a.png, referenced by a.obj, is missing")
    assert reasons["b"].startswith("changed_since_listed: b.mtl, referenced by b.obj, is missing")
    assert reasons["c"].startswith("changed_since_listed: a file c.obj references (an MTL")


def test_the_points_only_fast_path_reads_no_texture_and_checks_none(tmp_path):
    folder, meshes = listed(tmp_path, ["a"])
    (folder / "a.png").unlink()
    summary = sample_module.sample_points(meshes, tmp_path / "points", SampleConfig(**SMALL))
    assert (summary.sampled, summary.failures) == (1, [])


class StubWorker:
    """Records the objects handed to Blender, renders none."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.asked: list[str] = []

    def render(self, object_id: str, *args) -> str:
        self.asked.append(object_id)
        return "stub: not rendered"


def test_a_texture_gone_since_listed_is_a_render_row_naming_it(tmp_path):
    folder, meshes = listed(tmp_path, ["a", "b"])
    (folder / "a.png").unlink()
    records = sorted(read_manifest(meshes), key=lambda record: record.id)
    output = ChunkedOutput(tmp_path / "views", PART_SUFFIX, "render")
    output.failure_part(0).parent.mkdir(parents=True)
    worker = StubWorker(tmp_path / "worker")
    render_chunk(worker, meshes, output, 0, records, RenderConfig(views=1, resolution=32))
    reasons = [row["reason"] for row in read_failures(output.failure_part(0))]
    assert reasons[0].startswith("changed_since_listed: a.png, referenced by a.obj, is missing")
    assert reasons[1] == "stub: not rendered"
    assert worker.asked == [records[1].id]  # only the unchanged one went to Blender


def test_a_missing_file_already_listed_as_missing_is_no_change(tmp_path):
    folder, meshes = listed(tmp_path, ["a"])
    (folder / "a.png").unlink()
    build_manifest(MeshesConfig(source="folder", root=str(tmp_path / "src"), workers=1), meshes)
    (record,) = read_manifest(meshes)
    assert record.missing == ["a.png"]
    row = (record.sha256, record.references_sha256, record.missing)
    listed_references(folder / "a.obj", tmp_path / "src", *row)
    (folder / "a.mtl").write_text("newmtl m\nKd 0 1 0\n")
    with pytest.raises(MeshError, match="^changed_since_listed: a file a.obj references"):
        listed_references(folder / "a.obj", tmp_path / "src", *row)
    # the mesh itself rewritten (naming another MTL): its own change is the one named
    (folder / "a.obj").write_text("mtllib other.mtl\nv 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(MeshError, match="^changed_since_listed: .* not the file the manifest"):
        listed_references(folder / "a.obj", tmp_path / "src", *row)


def test_a_gltf_buffer_gone_since_listed_names_it(tmp_path):
    folder = tmp_path / "src" / "crate"
    folder.mkdir(parents=True)
    for name, data in trimesh.exchange.gltf.export_gltf(
        trimesh.Scene(trimesh.creation.box())
    ).items():
        (folder / name).write_bytes(data)
    build_manifest(
        MeshesConfig(source="folder", root=str(tmp_path / "src"), workers=1), tmp_path / "m"
    )
    (record,) = read_manifest(tmp_path / "m")
    buffer = folder / "gltf_buffer_1.bin"
    buffer.unlink()
    row = (record.sha256, record.references_sha256, record.missing)
    with pytest.raises(MeshError, match=f"^missing_file: .*{buffer.name}"):
        listed_references(folder / "model.gltf", tmp_path / "src", *row)


def test_a_file_listed_missing_that_appeared_since_is_named(tmp_path):
    # read with it under the chunk key of the object without it: a row that found no file (its
    # references_sha256 "") was not checked at all. One that found some: its hash differs.
    folder, meshes = listed(tmp_path, ["a", "b"])
    (folder / "a.mtl").rename(tmp_path / "a.mtl")
    (folder / "b.png").rename(tmp_path / "b.png")
    build_manifest(MeshesConfig(source="folder", root=str(tmp_path / "src"), workers=1), meshes)
    rows = {Path(record.path).stem: record for record in read_manifest(meshes)}
    assert (rows["a"].missing, rows["a"].references_sha256) == (["a.mtl"], "")
    assert rows["b"].missing == ["b.png"] and rows["b"].references_sha256
    for name in ("a", "b"):
        row = (rows[name].sha256, rows[name].references_sha256, rows[name].missing)
        listed_references(folder / f"{name}.obj", tmp_path / "src", *row)  # as listed
    (tmp_path / "a.mtl").rename(folder / "a.mtl")
    (tmp_path / "b.png").rename(folder / "b.png")
    for name, said in (("a", "a.mtl, referenced by a.obj, was listed missing"), ("b", "a file")):
        row = (rows[name].sha256, rows[name].references_sha256, rows[name].missing)
        with pytest.raises(MeshError, match=f"^changed_since_listed: {said}"):
            listed_references(folder / f"{name}.obj", tmp_path / "src", *row)

"""A mesh that names an MTL or a texture the source lacks is `ok` (read without it), and says
so: the manifest's `missing` column, the meshes stage's summary line, `cg3d inspect`. A
manifest written before the column existed still reads, as lacking nothing."""

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.formats.manifest import (
    MANIFEST_NAME,
    SCHEMA,
    manifest_batches,
    manifest_rows,
    manifest_tables,
    read_manifest,
)
from cg3d.params import MeshesConfig
from cg3d.pipeline.inspect import inspect_folder
from cg3d.pipeline.sources import build_manifest
from tests.pipeline.texturefiles import SQUARE, gltf_naming_image, png_declaring, write


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A folder source: every kind of missing reference, and objects that lack nothing."""
    root = tmp_path / "src"
    write(root / "chair" / "no_mtl.obj", "mtllib gone.mtl\nusemtl m\n" + SQUARE)
    write(root / "chair" / "no_map.obj", "mtllib here.mtl\nusemtl m\n" + SQUARE)
    # one texture named twice, by two statements: listed once
    write(
        root / "chair" / "here.mtl", "newmtl m\nKd 1 0 0\nmap_Kd tex/wood.png\nbump tex/wood.png\n"
    )
    write(root / "chair" / "whole.obj", "mtllib whole.mtl\nusemtl w\n" + SQUARE)
    write(root / "chair" / "whole.mtl", "newmtl w\nmap_Kd grain.png\n")
    png_declaring(root / "chair" / "grain.png", 4, 4)  # its header is read, no pixel
    write(root / "table" / "plain.obj", SQUARE)
    gltf_naming_image(root / "table" / "no_image.gltf", "maps/base%20colour.png")
    gltf_naming_image(root / "table" / "image.gltf", "img.png")
    png_declaring(root / "table" / "img.png", 4, 4)
    return root


def run_meshes(root: Path, out: Path):
    return build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), out)


def test_each_missing_mtl_texture_or_image_is_listed_on_an_ok_row(source, tmp_path):
    out = tmp_path / "meshes"
    summary = run_meshes(source, out)
    rows = {Path(row["path"]).name: row for row in manifest_rows(out)}
    assert {name: (row["status"], row["missing"]) for name, row in rows.items()} == {
        "no_mtl.obj": ("ok", ["gone.mtl"]),
        "no_map.obj": ("ok", ["tex/wood.png"]),
        "whole.obj": ("ok", []),
        "plain.obj": ("ok", []),
        "no_image.gltf": ("ok", ["maps/base colour.png"]),  # the URI as a file name
        "image.gltf": ("ok", []),
    }
    assert summary.counts == {"ok": 6} and summary.lacking == 3


def test_a_reference_outside_the_root_is_still_a_failure_not_a_missing_file(tmp_path):
    root = tmp_path / "src"
    write(root / "chair" / "out.obj", "mtllib ../../elsewhere.mtl\n" + SQUARE)
    write(tmp_path / "elsewhere.mtl", "newmtl m\n")
    write(root / "chair" / "gone_outside.obj", "mtllib ../../nowhere.mtl\n" + SQUARE)
    out = tmp_path / "meshes"
    summary = run_meshes(root, out)
    rows = {Path(row["path"]).name: row for row in manifest_rows(out)}
    for name in ("out.obj", "gone_outside.obj"):  # existing or not: outside is outside
        assert rows[name]["status"] == "outside_root" and rows[name]["missing"] == []
    assert summary.lacking == 0


def test_the_summary_line_and_inspect_name_them(source, tmp_path):
    out = tmp_path / "meshes"
    ran = CliRunner().invoke(
        app, ["meshes", "--out", str(out), "--source", "folder", "--root", str(source)]
    )
    assert ran.exit_code == 0, ran.output
    line = " ".join(ran.output.split())
    assert "ok 6 (3 naming an MTL or texture the source lacks" in line
    assert f"`cg3d inspect {out}` lists them" in line

    found = inspect_folder(out)
    by_id = {row["id"]: row for row in manifest_rows(out)}
    assert sorted(by_id[row["id"]]["path"].rsplit("/", 1)[-1] for row in found.lacking) == [
        "no_image.gltf",
        "no_map.obj",
        "no_mtl.obj",
    ]
    shown = CliRunner().invoke(app, ["inspect", str(out)])
    text = " ".join(shown.output.split())
    assert "3 ok objects name files the source lacks" in text
    assert "gone.mtl" in text and "tex/wood.png" in text and "maps/base colour.png" in text
    bounded = CliRunner().invoke(app, ["inspect", str(out), "--failures", "1"])
    listed = [m for m in ("gone.mtl", "tex/wood.png", "base colour") if m in bounded.output]
    assert len(listed) == 1 and "… 2 more (--failures 0: all)" in bounded.output


def old_manifest(out: Path) -> list[dict]:
    """A manifest as the meshes stage wrote it before the `missing` column (and the later
    `references_sha256`): SCHEMA without them."""
    newer = ("missing", "references_sha256")
    older = pa.schema([column for column in SCHEMA if column.name not in newer])
    rows = [
        {
            "id": f"folder-chair_{i}",
            "source": "folder",
            "path": f"{i}.obj",
            "class_name": "chair",
            "synonyms": [],
            "name": "",
            "split": "train",
            "up_axis": "y",
            "sha256": "ab",
            "status": "ok",
            "error": "",
        }  # fmt: skip
        for i in range(3)
    ]
    out.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=older), out / MANIFEST_NAME)
    return rows


def test_a_manifest_from_before_the_column_reads_as_lacking_nothing(tmp_path):
    out = tmp_path / "meshes"
    rows = old_manifest(out)
    assert [r.missing for r in read_manifest(out)] == [[], [], []]
    assert [r.references_sha256 for r in read_manifest(out)] == ["", "", ""]
    assert [r.id for r in read_manifest(out)] == [row["id"] for row in rows]
    assert [row["missing"] for row in manifest_rows(out, ["id", "missing"])] == [[], [], []]
    assert [row["id"] for batch in manifest_batches(out) for row in batch] == [
        row["id"] for row in rows
    ]
    (table,) = list(manifest_tables(out, ["id", "missing", "references_sha256"]))
    assert table.column("missing").to_pylist() == [[], [], []]
    assert table.column("references_sha256").to_pylist() == ["", "", ""]
    assert table.column("id").to_pylist() == [row["id"] for row in rows]
    found = inspect_folder(out)
    assert found.ids == [row["id"] for row in rows] and found.lacking == []


def test_the_mtl_beside_an_obj_is_read_after_the_named_ones_as_blender_does(tmp_path):
    """Blender's importer reads `<stem>.mtl` beside the OBJ too, last (its materials win):
    `mtllib Chair.MTL` beside a `chair.mtl` (a Windows tool's case) was read with no material
    while Blender alone reads chair.mtl's. The named file is still listed as missing."""
    from cg3d.geometry.meshio import blender_input, defined_materials, references

    root = tmp_path / "src"
    obj = write(root / "chair" / "chair.obj", "mtllib Chair.MTL\nusemtl m\n" + SQUARE)
    write(root / "chair" / "chair.mtl", "newmtl m\nKd 1 0 0\n")
    found, missing = references(obj, root)
    assert found == [root / "chair" / "chair.mtl"] and missing == ["Chair.MTL"]
    copy = blender_input(obj, root, "", tmp_path / "copy")
    assert defined_materials(copy) == {"m": True}

    # named and beside: the one beside comes last; named under its own name: read once
    write(root / "table" / "t.obj", "mtllib other.mtl\nusemtl m\n" + SQUARE)
    write(root / "table" / "other.mtl", "newmtl m\nKd 0 1 0\n")
    write(root / "table" / "t.mtl", "newmtl m\nKd 1 0 0\n")
    copy = blender_input(root / "table" / "t.obj", root, "", tmp_path / "copy2")
    libraries = [
        line.split()[1] for line in copy.read_text().splitlines() if line.startswith("mtllib")
    ]
    texts = [(copy.parent / name).read_text() for name in libraries]
    assert texts == ["newmtl m\nKd 0 1 0\n", "newmtl m\nKd 1 0 0\n"]
    write(root / "table" / "t.obj", "mtllib t.mtl\nusemtl m\n" + SQUARE)
    assert references(root / "table" / "t.obj", root) == ([root / "table" / "t.mtl"], [])


def test_a_texture_named_with_backslashes_is_found_as_blender_finds_it(tmp_path):
    """Blender 5.0 on Linux loads `tex\\a.png` as tex/a.png, and `C:\\Users\\me\\b.png` as the
    b.png beside the MTL; both were listed missing and read without. `..\\` still escapes."""
    from cg3d.geometry.meshio import blender_input, references

    root = tmp_path / "src"
    obj = write(root / "chair" / "w.obj", "mtllib w.mtl\nusemtl m\n" + SQUARE)
    write(
        root / "chair" / "w.mtl",
        "newmtl m\r\nmap_Kd tex\\a.png\r\nmap_Ks C:\\Users\\me\\b.png\r\nbump tex\\gone.png\r\n",
    )
    png_declaring(root / "chair" / "tex" / "a.png", 4, 4)
    png_declaring(root / "chair" / "b.png", 4, 4)
    chair = (root / "chair").resolve()
    found, missing = references(obj, root)
    assert found == [chair / "w.mtl", chair / "tex" / "a.png", chair / "b.png"]
    assert missing == ["tex\\gone.png"]
    copy = blender_input(obj, root, "", tmp_path / "copy")
    (library,) = [line.split()[1] for line in copy.read_text().splitlines() if "mtllib" in line]
    maps = (copy.parent / library).read_text().splitlines()[1:]
    assert maps == [
        f"map_Kd {chair / 'tex' / 'a.png'}",
        f"map_Ks {chair / 'b.png'}",
        f"bump {copy.parent / 'no-such-image'}",
    ]
    write(root / "chair" / "w.mtl", "newmtl m\nmap_Kd ..\\..\\..\\secret.png\n")
    write(tmp_path / "secret.png", "x")
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), tmp_path / "m")
    assert [row["status"] for row in manifest_rows(tmp_path / "m")] == ["outside_root"]


def test_an_mtllib_after_a_byte_order_mark_is_read_and_copied_for_blender(tmp_path):
    """A Windows tool's OBJ begins with a UTF-8 byte-order mark, often right before `mtllib`:
    the library was read as named by "\\ufeffmtllib", no statement, so Blender's copy had no
    material (the importer's grey) and a missing MTL was not listed either."""
    from cg3d.geometry.meshio import blender_input, defined_materials, references

    root = tmp_path / "src"
    bom = "\ufeff"  # written as UTF-8: EF BB BF
    obj = write(root / "chair" / "chair.obj", f"{bom}mtllib mats.mtl\nusemtl m\n" + SQUARE)
    write(root / "chair" / "mats.mtl", "newmtl m\nKd 1 0 0\n")
    assert obj.read_bytes()[:3] == b"\xef\xbb\xbf"
    assert references(obj, root) == ([root / "chair" / "mats.mtl"], [])
    copy = blender_input(obj, root, "", tmp_path / "copy")
    assert defined_materials(copy) == {"m": True}
    assert copy.read_bytes().startswith(b"mtllib material-0.mtl\n")

    lacking = write(root / "table" / "t.obj", f"{bom}mtllib gone.mtl\nusemtl m\n" + SQUARE)
    assert references(lacking, root) == ([], ["gone.mtl"])


def test_latin1_library_and_texture_names_are_found_as_blender_finds_them(tmp_path):
    """A Windows tool writes names in Latin-1: `mtllib café.mtl` (byte E9) beside that very
    file. Blender reads names as bytes and found it (red, its texture on it); read as UTF-8
    with U+FFFD it was listed missing, and Blender's copy had no material (grey)."""
    from cg3d.geometry.meshio import blender_input, defined_materials, references

    root = tmp_path / "src"
    folder = root / "chair"
    folder.mkdir(parents=True)
    mtl, texture = os.fsdecode(b"caf\xe9.mtl"), os.fsdecode(b"t\xe9xture.png")
    (folder / "chair.obj").write_bytes(b"mtllib caf\xe9.mtl\nusemtl rouge\n" + SQUARE.encode())
    (folder / mtl).write_bytes(b"newmtl rouge\nKd 1 0 0\nmap_Kd t\xe9xture.png\n")
    png_declaring(folder / texture, 4, 4)
    assert references(folder / "chair.obj", root) == ([folder / mtl, folder / texture], [])
    copy = blender_input(folder / "chair.obj", root, "", tmp_path / "copy")
    assert defined_materials(copy) == {"rouge": True}
    library = (copy.parent / "material-0.mtl").read_bytes()
    assert library.endswith(b"map_Kd " + bytes(folder / texture) + b"\n")


def test_an_mtl_beginning_with_a_byte_order_mark_defines_its_first_material(tmp_path):
    """Blender's importer read "\\ufeffnewmtl red" as no statement: `usemtl red` got its default
    grey. Blender is given a copy of the MTL, written without the mark: the author's red."""
    from cg3d.geometry.meshio import blender_input, defined_materials

    root = tmp_path / "src"
    obj = write(root / "chair" / "chair.obj", "mtllib m.mtl\nusemtl red\n" + SQUARE)
    (root / "chair" / "m.mtl").write_bytes(b"\xef\xbb\xbfnewmtl red\nKd 1 0 0\n")
    copy = blender_input(obj, root, "", tmp_path / "copy")
    assert defined_materials(copy) == {"red": True}
    assert (copy.parent / "material-0.mtl").read_bytes() == b"newmtl red\nKd 1 0 0\n"

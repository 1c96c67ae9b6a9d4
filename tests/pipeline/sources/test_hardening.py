"""The meshes stage's sources under hostile layouts (issue 25 §1 and §3).

- Confinement does not depend on how `meshes.root` is spelled: every source, with the root
  absolute, relative, through a symlink or with `..`, gives the same rows, and refuses the same
  files (a mesh symlinked out, a reference that climbs out) as `outside_root`.
- Nothing is left out unsaid: a symlinked folder (inside or outside the root) or a broken link
  is a failure row; an Objaverse uid found twice, or annotated under two categories, is a
  failure row, never a silent drop or relabel.
"""

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from cg3d.errors import UsageError
from cg3d.formats.manifest import read_manifest
from cg3d.pipeline.sources import (
    MeshesConfig,
    build_manifest,
    iter_sorted_entries,
    not_a_file,
)
from tests.pipeline.sources.helpers import box, make_glbs, make_shapenet, write_mesh, write_off

SPELLINGS = ["absolute", "relative", "symlink", "relative_dotdot", "dotdot_through_symlink"]


def spelled(tmp_path: Path, real: Path, how: str) -> Path:
    """`real` (under tmp_path, the current folder) spelled the way `how` says."""
    link = tmp_path / "links" / "link"
    if how in ("symlink", "dotdot_through_symlink") and not link.is_symlink():
        link.parent.mkdir()
        link.symlink_to(real, target_is_directory=True)
    (tmp_path / "elsewhere").mkdir(exist_ok=True)
    return {
        "absolute": real,
        "relative": real.relative_to(tmp_path),
        "symlink": link,
        "relative_dotdot": Path("elsewhere/..") / real.relative_to(tmp_path),
        "dotdot_through_symlink": Path("links/link/..") / real.name,  # link/.. is real's parent
    }[how]


def _folder(root: Path, outside: Path) -> list[str]:
    write_mesh(root / "chair" / "fine.obj", box((1, 1, 2)))
    (root / "chair" / "linked.obj").symlink_to(outside / "secret.obj")
    write_mesh(root / "chair" / "mtllib.obj", box((1, 1, 3)))
    with open(root / "chair" / "mtllib.obj", "a") as obj:
        obj.write("mtllib ../../outside/secret.mtl\n")
    return ["secret.obj", "mtllib.obj"]


def _objaverse(root: Path, outside: Path) -> list[str]:
    make_glbs(root)
    write_mesh(outside / "ee55.glb", box((1, 2, 3)))
    (root / "glbs" / "000-000" / "ee55.glb").symlink_to(outside / "ee55.glb")
    (root / "annotations.json").write_text(json.dumps({"mug": ["aa11", "bb22", "ee55"]}))
    return ["ee55.glb"]


def _modelnet(root: Path, outside: Path) -> list[str]:
    write_off(root / "chair/train/chair_0001.off", box((1, 1, 2)))
    write_off(outside / "chair_0002.off", box((1, 2, 2)))
    (root / "chair/train/chair_0002.off").symlink_to(outside / "chair_0002.off")
    return ["chair_0002.off"]


def _shapenet(root: Path, outside: Path) -> list[str]:
    make_shapenet(root)
    model = root / "03001627" / "c1" / "models"
    (model / "model_normalized.mtl").write_text("newmtl m\nmap_Kd ../../../../outside/x.png\n")
    with open(model / "model_normalized.obj", "a") as obj:
        obj.write("mtllib model_normalized.mtl\n")
    return ["model_normalized.obj"]


SOURCES: dict[str, Callable[[Path, Path], list[str]]] = {
    "folder": _folder,
    "objaverse": _objaverse,
    "modelnet": _modelnet,
    "shapenet": _shapenet,
}


def rows(out: Path) -> set[tuple[str, str, str, str]]:
    """(id, file name, status, error) of every row, failures included."""
    return {(r.id, Path(r.path).name, r.status, r.error) for r in read_manifest(out)}


@pytest.mark.parametrize("how", SPELLINGS)
@pytest.mark.parametrize("source", list(SOURCES))
def test_every_source_refuses_the_same_files_however_the_root_is_spelled(
    tmp_path, monkeypatch, source, how
):
    outside = tmp_path / "outside"
    write_mesh(outside / "secret.obj", box((1, 1, 1)))
    (outside / "secret.mtl").write_text("newmtl m\n")
    (outside / "x.png").write_bytes(b"\x89PNG\r\n")
    refused = SOURCES[source](tmp_path / "root", outside)
    monkeypatch.chdir(tmp_path)
    build_manifest(MeshesConfig(source=source, root=str(tmp_path / "root"), workers=1), "a")
    root = spelled(tmp_path, tmp_path / "root", how)
    build_manifest(MeshesConfig(source=source, root=str(root), workers=1), "b")
    assert rows(Path("b")) == rows(Path("a"))
    statuses = [(name, status) for _, name, status, _ in rows(Path("b"))]
    assert {name for name, status in statuses if status == "outside_root"} == set(refused)
    assert "ok" in {status for _, status in statuses}


def _failures(out: Path) -> dict[str, tuple[str, str]]:
    """The manifest's failure rows by file name: (status, error)."""
    return {Path(r.path).name: (r.status, r.error) for r in read_manifest(out) if r.status != "ok"}


@pytest.mark.parametrize("where", ["inside", "outside", "broken"])
@pytest.mark.parametrize("depth", ["nested", "class"])
def test_a_symlinked_folder_of_the_folder_source_is_a_row(tmp_path, where, depth):
    root, out = tmp_path / "root", tmp_path / "out"
    write_mesh(root / "chair" / "a" / "fine.obj", box((1, 1, 2)))
    write_mesh(tmp_path / "elsewhere" / "more.obj", box((1, 1, 3)))
    target = {"inside": root / "chair" / "a", "outside": tmp_path / "elsewhere"}.get(
        where, root / "gone"
    )
    link = root / "chair" / "linked" if depth == "nested" else root / "sofa"
    link.symlink_to(target, target_is_directory=True)
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), out)
    failures = _failures(out)
    expected = {"inside": "duplicate", "outside": "outside_root", "broken": "missing_file"}[where]
    assert failures[link.name][0] == expected, failures
    assert str(target) in failures[link.name][1]  # the reason says where the link leads
    names = {Path(r.path).name for r in read_manifest(out) if r.status == "ok"}
    assert names == {"fine.obj"}  # the link was not entered: nothing listed twice or from out


@pytest.mark.parametrize("where", ["inside", "outside"])
def test_a_symlinked_folder_of_the_objaverse_source_is_a_row(tmp_path, where):
    root, out = tmp_path / "root", tmp_path / "out"
    make_glbs(root)
    make_glbs(tmp_path / "elsewhere")
    (root / "annotations.json").write_text(json.dumps({"mug": ["aa11", "bb22", "cc33"]}))
    target = root / "glbs" if where == "inside" else tmp_path / "elsewhere" / "glbs"
    (root / "more").symlink_to(target, target_is_directory=True)
    build_manifest(MeshesConfig(source="objaverse", root=str(root), workers=1), out)
    expected = "duplicate" if where == "inside" else "outside_root"
    assert _failures(out)["more"][0] == expected


def test_an_objaverse_uid_found_twice_is_a_duplicate_row_naming_both(tmp_path):
    root, out = tmp_path / "root", tmp_path / "out"
    make_glbs(root)
    first = root / "glbs" / "000-000" / "aa11.glb"
    second = root / "other" / "deeper" / "aa11.glb"
    write_mesh(second, box((3, 3, 3)))
    (root / "annotations.json").write_text(json.dumps({"mug": ["aa11", "bb22"]}))
    build_manifest(MeshesConfig(source="objaverse", root=str(root), workers=1), out)
    everything = [r for r in read_manifest(out) if Path(r.path).stem == "aa11"]
    assert sorted(r.status for r in everything) == ["duplicate", "ok"]
    kept = next(r for r in everything if r.status == "ok")
    dropped = next(r for r in everything if r.status == "duplicate")
    assert Path(kept.path).resolve() == first.resolve()  # the first in path order
    assert str(first) in dropped.error and Path(dropped.path).resolve() == second.resolve()


@pytest.mark.parametrize(
    "annotations",
    [
        {"mug": ["aa11", "bb22"], "cup": ["aa11"]},  # LVIS form: one uid in two lists
        {"mug": ["bb22", "aa11"], "cup": ["cc33", "aa11"]},
    ],
)
def test_an_objaverse_uid_under_two_categories_is_a_row_not_a_relabel(tmp_path, annotations):
    root, out = tmp_path / "root", tmp_path / "out"
    make_glbs(root)
    (root / "annotations.json").write_text(json.dumps(annotations))
    build_manifest(MeshesConfig(source="objaverse", root=str(root), workers=1), out)
    aa11 = [r for r in read_manifest(out) if Path(r.path).stem == "aa11"]
    assert [r.status for r in aa11] == ["ambiguous_label"]
    assert "cup" in aa11[0].error and "mug" in aa11[0].error
    assert {r.class_name for r in read_manifest(out) if r.status == "ok"} <= {"mug", "cup"}


@pytest.mark.parametrize(
    "text",
    [
        '{"aa11": "mug", "bb22": "cup", "aa11": "lamp"}',  # {uid: category}: last would win
        '{"mug": ["aa11"], "cup": ["bb22"], "mug": ["cc33"]}',  # LVIS: a category twice
    ],
)
def test_an_annotation_key_written_twice_is_one_line(tmp_path, text):
    root = tmp_path / "root"
    make_glbs(root)
    (root / "annotations.json").write_text(text)
    with pytest.raises(UsageError, match=r"annotations.json names the key '(aa11|mug)' twice"):
        build_manifest(MeshesConfig(source="objaverse", root=str(root), workers=1), tmp_path / "o")


def _symlinked_out(root: Path, name: str, outside: Path) -> None:
    outside.mkdir(exist_ok=True)
    (outside / name).write_bytes((root / name).read_bytes())
    (root / name).unlink()
    (root / name).symlink_to(outside / name)


@pytest.mark.parametrize("how", SPELLINGS)
@pytest.mark.parametrize(
    "source, name, make",
    [
        ("objaverse", "annotations.json", make_glbs),
        ("shapenet", "taxonomy.json", make_shapenet),
    ],
)
def test_a_sources_own_index_file_symlinked_out_is_one_line(
    tmp_path, monkeypatch, how, source, name, make
):
    root = tmp_path / "root"
    make(root)
    if source == "objaverse":
        (root / name).write_text(json.dumps({"mug": ["aa11"]}))
    _symlinked_out(root, name, tmp_path / "outside")
    monkeypatch.chdir(tmp_path)
    config = MeshesConfig(source=source, root=str(spelled(tmp_path, root, how)), workers=1)
    with pytest.raises(UsageError, match=f"{name} resolves outside"):
        build_manifest(config, tmp_path / "out")


@pytest.mark.parametrize(
    "taxonomy",
    [
        [{"synsetId": "03001627"}],
        [{"name": "chair"}],
        [{"synsetId": 3001627, "name": "chair"}],
        ["03001627"],
        [{"synsetId": "03001627", "name": ", ,"}],
    ],
)
def test_a_malformed_taxonomy_is_one_line(tmp_path, taxonomy):
    root = tmp_path / "root"
    make_shapenet(root)
    (root / "taxonomy.json").write_text(json.dumps(taxonomy))
    with pytest.raises(UsageError, match="taxonomy.json: entry 0 is not an object"):
        build_manifest(MeshesConfig(source="shapenet", root=str(root), workers=1), tmp_path / "o")


@pytest.mark.parametrize("how", SPELLINGS)
def test_the_synthetic_source_rooted_at_its_output_folder_however_it_is_spelled(
    tmp_path, monkeypatch, how
):
    """The synthetic source's root is its output folder: spelled any way, the rows are the
    same and every object is inside it (none refused as outside_root)."""
    monkeypatch.chdir(tmp_path)
    build_manifest(MeshesConfig(per_class=2, workers=1), tmp_path / "a")
    (tmp_path / "b").mkdir()
    build_manifest(MeshesConfig(per_class=2, workers=1), spelled(tmp_path, tmp_path / "b", how))
    assert rows(tmp_path / "b") == rows(tmp_path / "a")
    assert {status for _, _, status, _ in rows(tmp_path / "b")} == {"ok"}


def _entries_by_name(root: Path) -> dict:
    return {entry.name: entry for entry in iter_sorted_entries(root)}


def test_what_is_no_file_is_named_whatever_it_is(tmp_path):
    """`not_a_file` on the walk's entries: files (a symlink to one included: the stage checks
    where it leads) are objects; links to folders, broken links and special files are not."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "plain.obj").write_text("v 0 0 0\n")
    (outside / "far.obj").write_text("v 0 0 0\n")
    (root / "to_file_in.obj").symlink_to(root / "plain.obj")
    (root / "to_file_out.obj").symlink_to(outside / "far.obj")
    (root / "to_folder_in").symlink_to(root / "sub", target_is_directory=True)
    (root / "to_folder_out").symlink_to(outside, target_is_directory=True)
    (root / "broken.obj").symlink_to(root / "gone.obj")
    os.mkfifo(root / "pipe.obj")
    kinds = {
        name: (failure.kind if failure else None)
        for name, entry in _entries_by_name(root).items()
        for failure in [not_a_file(entry, root)]
    }
    assert kinds == {
        "plain.obj": None,
        "to_file_in.obj": None,
        "to_file_out.obj": None,  # a file: refused `outside_root` by the validation, unread
        "to_folder_in": "duplicate",
        "to_folder_out": "outside_root",
        "broken.obj": "missing_file",
        "pipe.obj": "unsupported_format",
    }
    # a path gives the same answers as its entry (the folder source asks of its class folders)
    for name, kind in kinds.items():
        failure = not_a_file(root / name, root)
        assert (failure.kind if failure else None) == kind, name


def test_a_fifo_is_a_row_and_never_opened(tmp_path):
    root, out = tmp_path / "root", tmp_path / "out"
    write_mesh(root / "chair" / "fine.obj", box((1, 1, 2)))
    os.mkfifo(root / "chair" / "pipe.obj")  # opening it to read would block the stage forever
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), out)
    assert _failures(out) == {"pipe.obj": ("unsupported_format", "not a file nor a folder")}


def test_listing_plain_files_costs_no_stat_per_file(tmp_path, monkeypatch):
    """At Objaverse scale (800k files) a `stat` per file is minutes on a network disk: the
    file type `os.scandir` reads with each name is enough for a plain file."""
    for folder in range(4):
        for number in range(25):
            (tmp_path / f"glbs-{folder}").mkdir(exist_ok=True)
            (tmp_path / f"glbs-{folder}" / f"{number:03d}.glb").write_bytes(b"glTF")
    calls = []
    for name in ("stat", "lstat"):
        real = getattr(os, name)
        counted = lambda *args, _real=real, _name=name, **kwargs: (  # noqa: E731
            calls.append((_name, args[0])) or _real(*args, **kwargs)
        )
        monkeypatch.setattr(os, name, counted)
    failures = [not_a_file(entry, tmp_path) for entry in iter_sorted_entries(tmp_path)]
    monkeypatch.undo()
    assert len(failures) == 100 and failures == [None] * 100
    assert calls == []


def test_a_file_name_that_is_not_utf8_is_a_row_naming_it_escaped(tmp_path):
    """Before: a UnicodeEncodeError traceback (the id's hash, then Parquet) ended the stage."""
    root, out = tmp_path / "root", tmp_path / "out"
    write_mesh(root / "chair" / "good.obj", box())
    write_mesh(root / "chair" / os.fsdecode(b"caf\xe9.obj"), box((2, 2, 2)))  # Latin-1 name
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), out)
    rows = {Path(r.path).name: r for r in read_manifest(out)}
    assert rows["good.obj"].status == "ok"
    bad = rows["caf\\xe9.obj"]  # the byte written as \xe9: every manifest string is UTF-8
    assert (bad.status, bad.error) == ("unreadable", "the file name is not UTF-8; rename it")
    assert len({r.id for r in rows.values()}) == 2


def test_a_root_whose_name_is_not_utf8_is_one_line_before_any_work(tmp_path):
    """Before: every mesh validated, then the root's surrogate (the manifest holds the root)
    ended the stage, its work folder left behind."""
    root, out = tmp_path / os.fsdecode(b"root\xff"), tmp_path / "out"
    write_mesh(root / "chair" / "good.obj", box())
    with pytest.raises(UsageError, match=r"^meshes.root: .* is not a UTF-8 name"):
        build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), out)
    assert not out.exists()


def test_a_class_name_that_is_not_utf8_is_one_line(tmp_path):
    root = tmp_path / "root"
    write_mesh(root / "chair" / "good.obj", box())
    write_mesh(root / os.fsdecode(b"sof\xe4") / "good.obj", box())
    with pytest.raises(UsageError, match=r"--root: the class name 'sof\\\\xe4' .* is not UTF-8"):
        build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), tmp_path / "o")
    make_glbs(tmp_path / "objaverse")  # a JSON escape makes the same half character
    (tmp_path / "objaverse" / "annotations.json").write_text('{"aa11": "m\\udce4g"}')
    with pytest.raises(UsageError, match=r"the class name 'm\\\\xe4g'"):
        config = MeshesConfig(source="objaverse", root=str(tmp_path / "objaverse"), workers=1)
        build_manifest(config, tmp_path / "o2")


@pytest.mark.parametrize("which", ["annotations", "taxonomy", "exclude"])
def test_a_source_json_nested_too_deep_is_one_line(tmp_path, which):
    """Before: a RecursionError traceback from json (100,000 `[`)."""
    deep = "[" * 100_000
    if which == "annotations":
        make_glbs(tmp_path / "root")
        (tmp_path / "root" / "annotations.json").write_text(deep)
        config = MeshesConfig(source="objaverse", root=str(tmp_path / "root"), workers=1)
    elif which == "taxonomy":
        make_shapenet(tmp_path / "root")
        (tmp_path / "root" / "taxonomy.json").write_text(deep)
        config = MeshesConfig(source="shapenet", root=str(tmp_path / "root"), workers=1)
    else:
        (tmp_path / "exclude.json").write_text(deep)
        config = MeshesConfig(per_class=1, workers=1, exclude=str(tmp_path / "exclude.json"))
    with pytest.raises(UsageError, match=r"is not valid JSON: the JSON nests too deep$"):
        build_manifest(config, tmp_path / "out")


@pytest.mark.parametrize(
    ("category", "problem"),
    [
        ("", "is empty or blank"),
        ("   ", "is empty or blank"),
        ("mug\n", r"holds the unprintable character '\\n'"),
        ("mu\tg", r"holds the unprintable character '\\t'"),
    ],
    ids=["empty", "blank", "newline", "tab"],
)
def test_a_class_name_that_is_no_name_is_one_line(tmp_path, category, problem):
    """An annotations key "" became the class "" (captions "a photo of a ."); a newline split
    the class list's lines."""
    root = tmp_path / "root"
    make_glbs(root)
    (root / "annotations.json").write_text(json.dumps({category: ["aa11"], "cup": ["bb22"]}))
    with pytest.raises(UsageError, match=f"^--root: the class name .* {problem}.*; rename it$"):
        build_manifest(MeshesConfig(source="objaverse", root=str(root)), tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def test_a_class_folder_named_with_a_newline_is_one_line(tmp_path):
    root = tmp_path / "root"
    write_mesh(root / "mug\n" / "a.obj", box())
    with pytest.raises(UsageError, match=r"'mug\\n' .* holds the unprintable character"):
        build_manifest(MeshesConfig(source="folder", root=str(root)), tmp_path / "out")


def test_class_names_with_spaces_slashes_and_accents_are_names(tmp_path):
    root = tmp_path / "root"
    make_glbs(root)
    names = {"tea cup": ["aa11"], "a/b": ["bb22"], "café": ["cc33"]}
    (root / "annotations.json").write_text(json.dumps(names))
    build_manifest(MeshesConfig(source="objaverse", root=str(root), workers=1), tmp_path / "out")
    assert sorted(json.loads((tmp_path / "out" / "classes.json").read_text())) == sorted(names)

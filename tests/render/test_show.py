"""`cg3d show`: the contact sheet goes where `--out` says, never into the working directory."""

import io
import json
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.errors import UsageError
from cg3d.formats import renders as renders_format
from cg3d.formats.renders import Rendered, write_render_part
from cg3d.params import RenderConfig
from cg3d.render.cameras import cameras_of

SIZE = 24


def write_renders(folder, object_id: str, views: int = 2, part: int = 0) -> None:
    cameras = cameras_of(RenderConfig(views=views, resolution=SIZE), object_id)
    pngs = {}
    for view in cameras["views"]:
        buffer = io.BytesIO()
        Image.new("RGBA", (SIZE, SIZE), (200, 30, 30, 255)).save(buffer, format="PNG")
        pngs[view["name"]] = buffer.getvalue()
    folder.mkdir(parents=True, exist_ok=True)
    write_render_part(
        folder / f"part-{part:05d}.tar", {object_id: Rendered(pngs, json.dumps(cameras).encode())}
    )


def test_show_writes_into_out_folder_or_file_not_the_working_directory(tmp_path, monkeypatch):
    write_renders(tmp_path / "renders", "chair_1")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    into_folder = ["show", "chair_1", "--renders", str(tmp_path / "renders")]
    result = CliRunner().invoke(app, [*into_folder, "--out", str(tmp_path / "sheets")])
    assert result.exit_code == 0, result.output
    sheet = Image.open(tmp_path / "sheets" / "chair_1.png")
    assert sheet.width == 2 * SIZE  # both views side by side
    named = CliRunner().invoke(app, [*into_folder, "--out", str(tmp_path / "a" / "b.png")])
    assert named.exit_code == 0, named.output
    assert (tmp_path / "a" / "b.png").is_file()
    assert list(work.iterdir()) == []


@pytest.mark.parametrize("out", ["taken", "taken/sheet.png", "taken/deeper/sheet.png"])
def test_an_out_whose_folder_is_a_file_is_check_out_dirs_one_line(tmp_path, out):
    """The folder check is check_out_dir's, as every command's (show had its own twin, which
    said only "is not a folder"), from the command and from `show` called directly."""
    from cg3d.render.show import show

    write_renders(tmp_path / "renders", "chair_1")
    (tmp_path / "taken").write_text("a file where the folder goes")
    before = tree(tmp_path)
    command = ["show", "chair_1", "--renders", str(tmp_path / "renders")]
    result = CliRunner().invoke(app, [*command, "--out", str(tmp_path / out)])
    with pytest.raises(UsageError) as called:
        show("chair_1", tmp_path / "renders", tmp_path / out)
    for error in (result.exception, called.value):
        assert isinstance(error, UsageError), error
        message = str(error)
        assert "\n" not in message and message.startswith("--out: "), message
        if out == "taken/deeper/sheet.png":  # the file is above the folder: mkdir's reason
            assert (
                message == f"--out: cannot write into {tmp_path / 'taken/deeper'}: Not a directory"
            )
        else:
            assert message == f"--out: {tmp_path / 'taken'} is a file, not a folder"
    assert tree(tmp_path) == before


def test_show_requires_out():
    result = CliRunner().invoke(app, ["show", "chair_1", "--renders", "r"])
    # click's usage error leaves the app as ours: `cg3d.cli.main` prints it, exit 2
    assert isinstance(result.exception, UsageError)
    assert "Missing option '--out'" in str(result.exception)


def test_show_lists_the_render_parts_once_and_reads_only_the_objects_part(tmp_path, monkeypatch):
    """`cg3d show` globs the renders folder once (finding the id), walks each part's headers
    once, and then opens only the part that holds the object to read its views."""
    renders = tmp_path / "renders"
    for part, object_id in enumerate(["a-chair-1", "a-sofa-2", "a-table-3"]):
        write_renders(renders, object_id, part=part)
    globs, opened = [], []
    real_glob = Path.glob
    monkeypatch.setattr(
        Path,
        "glob",
        lambda self, pattern: (
            (globs.append(self) if self == renders else None) or real_glob(self, pattern)
        ),
    )
    monkeypatch.setattr(
        renders_format,
        "open",
        lambda path, *args: opened.append(Path(path).name) or open(path, *args),  # noqa: SIM115
        raising=False,  # the module's `open` is the builtin: shadow it there only
    )
    result = CliRunner().invoke(
        app, ["show", "sofa", "--renders", str(renders), "--out", str(tmp_path / "sheets")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sheets" / "a-sofa-2.png").is_file()
    assert globs == [renders]
    # each part's headers once, then the views from the one part that holds a-sofa-2
    assert sorted(opened) == [
        "part-00000.tar",
        "part-00001.tar",
        "part-00001.tar",
        "part-00002.tar",
    ]


def with_cameras(folder, edit, object_id: str = "chair_1") -> None:
    """`write_renders`, then the cameras.json rewritten by `edit(document)` (a hand edit)."""
    from cg3d.formats.renders import read_render_part

    write_renders(folder, object_id)
    ((_, rendered),) = list(read_render_part(folder / "part-00000.tar"))
    cameras = json.loads(rendered.cameras)
    data = edit(cameras)
    data = data if isinstance(data, bytes) else json.dumps(cameras).encode()
    write_render_part(folder / "part-00000.tar", {object_id: Rendered(rendered.views, data)})


def setter(key, value, view: int | None = None):
    return lambda c: (c if view is None else c["views"][view]).__setitem__(key, value)


CAMERA_EDITS = {
    "views not a list": (setter("views", "x"), "'views' is not a list"),
    "a width of 10^6": (setter("width", 10**6), "width 1000000 is not a size of 1 to 4096"),
    "a height as text": (setter("height", "24"), "height 24 is not a size"),
    "no K": (lambda c: c["views"][1].pop("K"), "view 1: K is not a finite 3×3"),
    "a NaN in world_to_camera": (
        lambda c: c["views"][0]["world_to_camera"][0].__setitem__(0, float("nan")),
        "view 0: world_to_camera is not a finite 4×4",
    ),
    "a ragged K": (setter("K", [[1, 2], [3]], 0), "view 0: K is not a finite 3×3"),
    "an azimuth as text": (setter("azimuth_deg", "north", 0), "view 0: azimuth_deg is not"),
    "not JSON": (lambda c: b"{", "its cameras.json not JSON"),
    "nested 100,000 deep": (
        lambda c: b"[" * 100_000,
        "its cameras.json not JSON (the JSON nests too deep)",
    ),
    "a view name that is no string": (setter("name", 3, 0), "view 0 is not an object with a name"),
    "views of another size": (setter("width", SIZE * 2), "view_00 is not 48×24"),
}


@pytest.mark.parametrize("case", sorted(CAMERA_EDITS))
def test_a_hand_edited_cameras_json_is_one_line(tmp_path, case):
    """Before: a TypeError/KeyError traceback, or a contact sheet sized by the file."""
    edit, line = CAMERA_EDITS[case]
    with_cameras(tmp_path / "renders", edit)
    command = ["show", "chair_1", "--renders", str(tmp_path / "renders")]
    result = CliRunner().invoke(app, [*command, "--out", str(tmp_path / "sheet.png")])
    assert isinstance(result.exception, UsageError), result.exception
    message = str(result.exception)
    assert message.startswith("--renders: object 'chair_1': ") and line in message, message
    assert not (tmp_path / "sheet.png").exists()


def tree(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.mark.parametrize("error", ["unknown id", "damaged cameras.json", "no renders folder"])
@pytest.mark.parametrize("out", ["sheets", "new/deeper/sheets", "new/sheet.png", "kept"])
def test_a_refused_show_leaves_no_folder_behind(tmp_path, error, out):
    """Before: the lock on --out made the folder (and its parents) before the id was checked,
    so every error left them behind, empty. A folder that was there before is kept."""
    renders = tmp_path / "renders"
    if error == "damaged cameras.json":
        with_cameras(renders, setter("views", "x"))
    elif error == "unknown id":
        write_renders(renders, "chair_1")
    (tmp_path / "kept").mkdir()
    before = tree(tmp_path)
    query = "table" if error == "unknown id" else "chair_1"
    command = ["show", query, "--renders", str(renders), "--out", str(tmp_path / out)]
    result = CliRunner().invoke(app, command)
    assert isinstance(result.exception, UsageError), (result.exception, result.output)
    assert tree(tmp_path) == before


@pytest.mark.parametrize("sheet", ["", "sheet.png"])
def test_a_sheet_into_a_stage_output_folder_is_refused_and_the_folder_kept(tmp_path, sheet):
    """Before: `cg3d show --out data/render` put its PNG into the render stage's folder (a DVC
    output: its hash changed, so the next `dvc repro` reran the stage). The owner rule of
    every stage's --out (`check_owner`) now refuses it before anything is written."""
    from cg3d.files import output_lock
    from cg3d.pipeline.chunks import ChunkedOutput

    renders = tmp_path / "renders"
    with output_lock(renders):  # the render stage's plan: the folder is its
        ChunkedOutput(renders, ".tar", "render", {"stage": "render"}).prepare()
    write_renders(renders, "chair_1")
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    (meshes / "manifest.parquet").write_bytes(b"")  # the meshes stage's file: its folder
    for folder, owner in [(renders, "render"), (meshes, "meshes")]:
        before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
        out = folder / sheet if sheet else folder
        command = ["show", "chair_1", "--renders", str(renders), "--out", str(out)]
        result = CliRunner().invoke(app, command)
        assert isinstance(result.exception, UsageError), result.output
        assert str(result.exception) == (
            f"--out: {folder} holds the output of `cg3d {owner}`; `cg3d show` would add its "
            "PNG to it: choose another folder"
        )
        assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    # a folder of our own sheets, or a new one, takes them
    for out in (tmp_path / "sheets", tmp_path / "sheets"):
        result = CliRunner().invoke(
            app, ["show", "chair_1", "--renders", str(renders), "--out", str(out)]
        )
        assert result.exit_code == 0, result.output

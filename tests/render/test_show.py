"""`cg3d show`: the contact sheet goes where `--out` says, never into the working directory."""

import io
import json
from pathlib import Path

from PIL import Image
from typer.testing import CliRunner

from cg3d.cli import app
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


def test_show_requires_out():
    result = CliRunner().invoke(app, ["show", "chair_1", "--renders", "r"])
    assert result.exit_code == 2
    assert "--out" in result.output


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

"""`cg3d show`: the contact sheet goes where `--out` says, never into the working directory."""

import io
import json

from PIL import Image
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.formats.renders import Rendered, write_render_part
from cg3d.params import RenderConfig
from cg3d.render.cameras import cameras_of

SIZE = 24


def write_renders(folder, object_id: str, views: int = 2) -> None:
    cameras = cameras_of(RenderConfig(views=views, resolution=SIZE), object_id)
    pngs = {}
    for view in cameras["views"]:
        buffer = io.BytesIO()
        Image.new("RGBA", (SIZE, SIZE), (200, 30, 30, 255)).save(buffer, format="PNG")
        pngs[view["name"]] = buffer.getvalue()
    folder.mkdir(parents=True)
    write_render_part(
        folder / "part-00000.tar", {object_id: Rendered(pngs, json.dumps(cameras).encode())}
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

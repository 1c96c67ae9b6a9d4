import dataclasses

import pytest
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.config import from_arguments
from cg3d.pipeline.sample import SampleConfig
from cg3d.pipeline.sources import MeshesConfig
from cg3d.render.config import RenderConfig


@dataclasses.dataclass
class Example:
    size: int = 1
    name: str = "a"


def test_from_arguments_takes_the_fields_by_name_and_leaves_the_rest():
    config = from_arguments(Example, {"size": 5, "out": "folder", "rprint": print})
    assert config == Example(size=5, name="a")


class Captured(Exception):
    """Stops a command right after it built its config."""


@pytest.mark.parametrize(
    "module,stage,arguments,expected",
    [
        (
            "cg3d.render.stage",
            "render_meshes",
            ["render", "--views", "3", "--fov-deg", "50", "--background", "transparent"],
            RenderConfig(views=3, fov_deg=50.0, background="transparent"),
        ),
        (
            "cg3d.pipeline.sample",
            "sample_points",
            ["sample", "--points", "100", "--normals", "true", "--workers", "1"],
            SampleConfig(points=100, normals=True, workers=1),
        ),
        (
            "cg3d.pipeline.sources",
            "build_manifest",
            ["meshes", "--source", "modelnet", "--root", "r", "--test-fraction", "0.5"],
            MeshesConfig(source="modelnet", root="r", test_fraction=0.5),
        ),
    ],
)
def test_commands_hand_every_option_to_their_stage_config(
    monkeypatch, tmp_path, module, stage, arguments, expected
):
    def capture(*args):
        raise Captured(next(a for a in args if dataclasses.is_dataclass(a)))

    monkeypatch.setattr(f"{module}.{stage}", capture)
    inputs = [] if arguments[0] == "meshes" else ["--meshes", str(tmp_path)]
    result = CliRunner().invoke(app, [*arguments, *inputs, "--out", str(tmp_path / "out")])
    assert isinstance(result.exception, Captured), result.output
    assert result.exception.args[0] == expected

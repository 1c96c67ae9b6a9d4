"""Issue 25's bounds at the app's edges: images, labels, non-finite features, `top`."""

from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.errors import UsageError
from tests.formats.test_images import png_declaring


def test_search_with_an_oversized_image_is_one_line(tmp_path, tiny_index):
    image = tmp_path / "bomb.png"
    image.write_bytes(png_declaring(40_000, 40_000))
    result = CliRunner().invoke(app, ["search", str(tiny_index), "--image", str(image)])
    # UsageError: `cg3d.cli.main` prints it as one line and exits 2
    assert isinstance(result.exception, UsageError), result.output
    message = str(result.exception)
    assert "bomb.png: 40000 × 40000 pixels is larger than the limit" in message
    assert "\n" not in message


def test_the_demo_search_says_why_an_image_is_refused(tmp_path, tiny_checkpoint, tiny_index):
    from cg3d.app.api import load
    from cg3d.app.demo import Demo
    from cg3d.app.index import open_index
    from cg3d.params import DemoConfig

    image = tmp_path / "bomb.png"
    image.write_bytes(png_declaring(40_000, 40_000))
    model = load(tiny_checkpoint)
    demo = Demo(model, open_index(tiny_index, model), DemoConfig(), tmp_path)
    gallery, status = demo.search("", str(image))
    assert gallery == [] and "larger than the limit" in status

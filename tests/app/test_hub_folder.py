"""classify and index take a hub folder (`cg3d export --format hub`) as they take a checkpoint."""

import numpy as np
import pytest
from typer.testing import CliRunner

import cg3d
from cg3d.cli import app
from tests.models.helpers import export_hub_folder as export

pytestmark = pytest.mark.filterwarnings("ignore::cg3d.models.clip.RandomClipWarning")


def test_classify_and_index_commands_take_a_hub_folder(tiny_checkpoint, tiny_shards, tmp_path):
    from cg3d.app.index import build_index, open_index
    from cg3d.params import IndexConfig

    hub = tmp_path / "hub"
    export(tiny_checkpoint, hub)
    shape = tmp_path / "shape.npy"
    np.save(shape, np.random.default_rng(2).uniform(-1, 1, (200, 3)))
    outputs = []
    for checkpoint in (hub, tiny_checkpoint):
        args = ["classify", "--checkpoint", str(checkpoint), str(shape), "--labels", "cube,cone"]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        outputs.append(result.output)
    assert outputs[0] == outputs[1] and "cube" in outputs[0]
    config = IndexConfig(batch_size=4, thumbnail=0)
    build_index(hub, tiny_shards, tmp_path / "by-hub", config)
    build_index(tiny_checkpoint, tiny_shards, tmp_path / "by-file", config)
    by_hub = np.load(tmp_path / "by-hub" / "points.npy")
    assert np.array_equal(by_hub, np.load(tmp_path / "by-file" / "points.npy"))
    index = open_index(tmp_path / "by-hub")  # its recorded model is the folder, loaded again
    hits = index.search(text="a cube", top=3)
    expected = by_hub @ cg3d.load(hub).embed_text(["a cube"])[0]
    assert [hit.row for hit in hits] == list(np.argsort(-expected, kind="stable")[:3])

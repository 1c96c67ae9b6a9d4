"""`cg3d export --format hub`: config.json, model.safetensors (no pickle), README.md; and every
consumer (cg3d.load, classify, index) takes the folder like a checkpoint file (issue 23 §4)."""

import json
import struct

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import cg3d
from cg3d.cli import app
from cg3d.errors import UsageError
from cg3d.models.checkpoint import read_checkpoint, save_checkpoint
from cg3d.models.model import build_model
from tests.models.helpers import export_hub_folder as export
from tests.models.helpers import save_random_clip, tiny_model_config

pytestmark = pytest.mark.filterwarnings("ignore::cg3d.models.clip.RandomClipWarning")


@pytest.fixture
def trained(tmp_path):
    """Our run's checkpoint: CLIP from a weights file, prompts trained, a run identity."""
    weights = save_random_clip(tmp_path / "clip-micro.pt", seed=1)
    model = build_model(tiny_model_config(clip_pretrained=str(weights), classes=["cube", "cone"]))
    with torch.no_grad():
        model.visual.prompts.add_(1.0)
    path = tmp_path / "run" / "last.pt"
    run = {"config": {"shards": "data/shards"}, "data": "f1e2d3c4" * 8}
    save_checkpoint(path, model, training={"epoch": 3, "run": run})
    return path


def safetensors_header(path) -> dict:
    """The file's JSON header, read by its documented layout (u64 length, then JSON)."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length])


def test_a_hub_folder_holds_config_weights_and_card_and_loads_as_the_checkpoint(trained, tmp_path):
    out = tmp_path / "hub"
    measured = tmp_path / "lvis.json"  # a benchmark result, with the audit it was run with
    audit = {
        "folder": "runs/audit",
        "train": "data/shards",
        "test": "lvis",
        "leaked_test_shapes": 0,
    }
    result = {"dataset": "objaverse-lvis", "metrics": {"acc1": 0.5125}, "audit": audit}
    measured.write_text(json.dumps(result))
    printed = export(trained, out, "--measured", str(measured))
    assert "config.json, model.safetensors, README.md" in printed
    config = json.loads((out / "config.json").read_text())
    for key in ("encoder", "encoder_params", "n_points", "point_channels", "up_axis"):
        assert key in config
    assert config["normalisation"] and config["protocol"] == "cg3d"
    assert config["teacher"]["model"] == "CG3D-ViT-Micro-32"
    assert config["teacher"]["pretrained"] == "clip-micro.pt" and config["embed_dim"] == 64
    # the weights: the trained part only (CLIP is named), as tensors with no pickle
    header = safetensors_header(out / "model.safetensors")
    names = {name for name in header if name != "__metadata__"}
    stored = read_checkpoint(trained)["model"]
    assert names == set(stored) and not any(n.startswith("clip.transformer") for n in names)
    assert b"\x80\x04" not in (out / "model.safetensors").read_bytes()[:16]
    card = (out / "README.md").read_text()
    assert "f1e2d3c4" * 8 in card and "data/shards" in card  # the data fingerprint
    assert "objaverse-lvis: leakage audit (`cg3d audit`, runs/audit): none of its" in card
    assert "| objaverse-lvis | – | 51.2 |" in card
    # loaded from the folder: the same model
    folder, file = cg3d.load(out), cg3d.load(trained)
    shape = np.random.default_rng(0).uniform(-1, 1, (300, 3))
    assert np.array_equal(folder.embed_points(shape), file.embed_points(shape))
    assert np.array_equal(folder.embed_text(["a cube"]), file.embed_text(["a cube"]))
    image = np.full((32, 32, 3), 200, dtype=np.uint8)
    assert np.array_equal(folder.embed_images(image), file.embed_images(image))
    assert folder.classify(shape, top=2) == file.classify(shape, top=2)
    assert folder.sha256 != file.sha256  # an index tells the two apart


def test_a_random_clip_model_stores_all_of_clip_and_needs_no_weights(tiny_checkpoint, tmp_path):
    export(tiny_checkpoint, tmp_path / "hub")
    names = set(safetensors_header(tmp_path / "hub" / "model.safetensors")) - {"__metadata__"}
    assert any(n.startswith("clip.transformer.") for n in names)
    folder, file = cg3d.load(tmp_path / "hub"), cg3d.load(tiny_checkpoint)
    assert np.array_equal(folder.embed_text(["a cone"]), file.embed_text(["a cone"]))


def test_a_broken_hub_folder_is_one_line_naming_the_file(tiny_checkpoint, tmp_path):
    hub = tmp_path / "hub"
    export(tiny_checkpoint, hub)
    (hub / "model.safetensors").write_bytes(b"not tensors")
    with pytest.raises(UsageError, match=r"model\.safetensors: not a readable safetensors"):
        cg3d.load(hub)
    (hub / "config.json").write_text("{}")
    with pytest.raises(UsageError, match=r"config\.json: not a CG3D hub config"):
        cg3d.load(hub)
    result = CliRunner().invoke(
        app, ["export", "--format", "zip", "--checkpoint", "x", "--out", "y"]
    )
    assert result.exit_code != 0

import pytest
import torch

from cg3d.errors import UsageError
from cg3d.models.checkpoint import FORMAT, load_model, read_checkpoint, save_checkpoint
from cg3d.models.clip import RandomClipWarning
from cg3d.models.model import build_model, tiny_model_config

pytestmark = pytest.mark.filterwarnings("ignore::cg3d.models.clip.RandomClipWarning")


def test_a_saved_model_reloads_to_the_same_features(tmp_path):
    model = build_model(tiny_model_config())
    with torch.no_grad():
        model.visual.prompts.add_(1.0)  # as if trained
    path = tmp_path / "model.pt"
    save_checkpoint(path, model)
    with pytest.warns(RandomClipWarning, match="model.pt"):
        loaded = load_model(path)
    assert not loaded.training
    assert loaded.config == model.config
    assert loaded.config["clip_pretrained_loaded"] is False
    points, images = torch.randn(2, 256, 3), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.encode_points(points), model.encode_points(points))
        assert torch.equal(loaded.encode_image(images), model.encode_image(images))
        assert torch.equal(loaded.encode_text(["a cube"]), model.encode_text(["a cube"]))
        features = loaded.encode_points(points)
    assert torch.allclose(features.norm(dim=-1), torch.ones(2))
    # random-init CLIP: the whole CLIP state travels in the file
    assert any(name.startswith("clip.transformer.") for name in read_checkpoint(path)["model"])


def test_missing_corrupt_and_foreign_files_are_one_line_errors_naming_the_file(tmp_path):
    with pytest.raises(UsageError, match="absent.pt"):
        load_model(tmp_path / "absent.pt")
    truncated = tmp_path / "truncated.pt"
    save_checkpoint(truncated, build_model(tiny_model_config()))
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(UsageError, match="truncated.pt"):
        load_model(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(1)}, foreign)
    with pytest.raises(UsageError, match=f"foreign.pt.*{FORMAT}"):
        load_model(foreign)

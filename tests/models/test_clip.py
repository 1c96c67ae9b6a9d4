import pytest
import torch

from cg3d.errors import UsageError
from cg3d.models.clip import RandomClipWarning, load_clip, vit_tower
from cg3d.models.prompts import PromptedViT

MICRO = "CG3D-ViT-Micro-32"


@pytest.fixture(scope="module")
def clip():
    with pytest.warns(RandomClipWarning, match="RANDOMLY INITIALISED"):
        return load_clip(MICRO, "none")


def test_zero_prompts_give_exactly_clips_image_features(clip):
    images = torch.randn(3, 3, 32, 32)
    wrapper = PromptedViT(vit_tower(clip.model), prompts=0)
    with torch.no_grad():
        assert torch.equal(wrapper(images), clip.model.encode_image(images))


@pytest.mark.parametrize("deep", [True, False])
def test_prompts_change_the_features_and_deep_ones_get_one_set_per_block(clip, deep):
    images = torch.randn(2, 3, 32, 32)
    wrapper = PromptedViT(vit_tower(clip.model), prompts=3, deep=deep)
    layers = len(clip.model.visual.transformer.resblocks)
    assert wrapper.prompts.shape == (layers if deep else 1, 3, clip.model.visual.transformer.width)
    with torch.no_grad():
        prompted = wrapper(images)
        assert prompted.shape == clip.model.encode_image(images).shape
        assert not torch.allclose(prompted, clip.model.encode_image(images))
    wrapper(images).sum().backward()
    # every deep prompt set feeds a block, so every one gets a gradient
    assert (wrapper.prompts.grad.abs().sum(dim=(1, 2)) > 0).all()


def test_bad_model_names_tags_and_files_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="--clip-model"):
        load_clip("ViT-Nonexistent", "none")
    with pytest.raises(UsageError, match="not-a-tag"):
        load_clip(MICRO, "not-a-tag")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(UsageError, match="broken.pt"):
        load_clip(MICRO, str(broken))
    with pytest.raises(UsageError, match="--require-pretrained"):
        load_clip(MICRO, "none", require_pretrained=True)


def test_a_local_checkpoint_file_is_loaded_as_real_weights(clip, tmp_path):
    path = tmp_path / "micro.pt"
    torch.save(clip.model.state_dict(), path)
    loaded = load_clip(MICRO, str(path))
    assert loaded.pretrained_loaded
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.model.encode_image(images), clip.model.encode_image(images))

import pytest
import torch

from cg3d.errors import UsageError
from cg3d.models.cards import get_card
from cg3d.models.clip import (
    RandomClipWarning,
    check_weights_named,
    load_clip,
    loaded_weights_name,
    vit_tower,
)
from cg3d.models.peers import teacher_weights
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


def refusal(call) -> str:
    with pytest.raises(UsageError) as caught:
        call()
    return str(caught.value)


def test_a_name_that_is_no_tag_is_refused_in_the_same_line_by_every_check(tmp_path):
    # load_clip, the checkpoint loader's check before loading, and a converted peer's teacher
    bigg = [
        refusal(lambda: load_clip("ViT-bigG-14", "laion400m")),  # refused before any build
        refusal(lambda: check_weights_named("ViT-bigG-14", "laion400m")),
        refusal(lambda: teacher_weights(get_card("ulip2-pointbert"), "laion400m")),
    ]
    assert bigg[0] == bigg[1] == bigg[2] and "\n" not in bigg[0]
    start = "--clip-pretrained: 'laion400m' is neither a file nor a tag of ViT-bigG-14 (tags: "
    assert bigg[0].startswith(start) and "laion2b_s39b_b160k" in bigg[0]
    micro = "--clip-pretrained: 'not-a-tag' is neither a file nor a tag of CG3D-ViT-Micro-32"
    for call in (load_clip, check_weights_named):  # a model with no tags says so
        assert refusal(lambda call=call: call(MICRO, "not-a-tag")) == f"{micro} (tags: none)"
    weights = tmp_path / "laion400m"  # a file by that name is weights, not a tag
    weights.write_bytes(b"hashed, not loaded")
    assert teacher_weights(get_card("ulip2-pointbert"), str(weights))[1]["kind"] == "file"
    check_weights_named("ViT-bigG-14", str(weights))


def test_a_local_checkpoint_file_is_loaded_as_real_weights(clip, tmp_path):
    path = tmp_path / "micro.pt"
    torch.save(clip.model.state_dict(), path)
    loaded = load_clip(MICRO, str(path))
    assert loaded.pretrained_loaded
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.model.encode_image(images), clip.model.encode_image(images))


@pytest.mark.parametrize(
    "recorded, said",
    [
        # asked for a tag, fell back to random: never the tag
        (
            {"clip_pretrained_loaded": False, "clip_weights": {"kind": "random"}},
            "none (random init)",
        ),
        (
            {"clip_pretrained_loaded": True, "clip_weights": {"kind": "tag", "tag": "openai"}},
            "openai",
        ),
        # a file is named by its name, which travels, not the path it was read from
        (
            {
                "clip_pretrained_loaded": True,
                "clip_weights": {
                    "kind": "file",
                    "name": "w.pt",
                    "sha256": "0" * 64,
                    "path": "/a/w.pt",
                },
            },
            "w.pt",
        ),
        # an older checkpoint: loaded, no identity recorded, so the weights it was given
        ({"clip_pretrained_loaded": True}, "openai"),
        ({}, "none (random init)"),  # older still: nothing says weights were loaded
    ],
)
def test_the_weights_named_are_those_loaded_not_those_asked_for(recorded, said):
    config = {"clip_model": "ViT-B-32", "clip_pretrained": "openai"} | recorded
    assert loaded_weights_name(config) == said

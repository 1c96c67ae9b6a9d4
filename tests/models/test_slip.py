"""SLIP ViT-B/16 as a backbone: its released file's layout, features equal to independent
forwards (timm's own ViT, open_clip's text tower), visual prompts as the public CG3D code
inserts them, and the training and checkpoint paths on it."""

import argparse
import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cg3d.errors import UsageError
from cg3d.models.checkpoint import load_model, read_checkpoint, save_checkpoint
from cg3d.models.clip import RandomClipWarning, load_clip
from cg3d.models.model import build_model, model_config
from cg3d.models.slip import SLIP_CONFIGS, create_slip
from cg3d.models.text import class_text_features
from tests.models.helpers import TINY_MODEL, tiny_model_config
from tests.models.public_networks import (
    MICRO,
    file_state,
    open_clip_text_tower,
    public_prompted_image_features,
    random_slip_state,
    slip_layout,
    timm_vit,
    write_slip_file,
)


@pytest.fixture(scope="module")
def slip_file(tmp_path_factory):
    return write_slip_file(tmp_path_factory.mktemp("slip") / "slip_micro.pt")


def slip_cg3d(slip_file, **overrides):
    values = dict(clip_model=MICRO, clip_pretrained=str(slip_file), prompts=0)
    return build_model(tiny_model_config(**values | overrides))


def test_the_full_size_model_has_exactly_the_released_files_tensors():
    config = SLIP_CONFIGS["SLIP-ViT-B-16"]
    with torch.device("meta"):  # shapes only: no 150M-parameter initialisation
        model = create_slip("SLIP-ViT-B-16")
    ours = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    public = slip_layout(config)
    assert ours == {k: v for k, v in public.items() if not k.startswith("image_mlp.")}
    assert (config.vision_width, config.vision_layers, config.patch_size) == (768, 12, 16)
    assert public["image_projection"] == (768, 512) and public["visual.pos_embed"] == (1, 197, 768)


def test_a_file_in_slips_layout_loads_with_its_weights_and_records_its_sha256(slip_file):
    loaded = load_clip(MICRO, str(slip_file))
    assert loaded.pretrained_loaded
    state = file_state(slip_file)
    for name, tensor in loaded.model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    digest = hashlib.sha256(slip_file.read_bytes()).hexdigest()
    assert loaded.weights == {
        "kind": "file", "name": "slip_micro.pt", "sha256": digest, "path": str(slip_file),
    }  # fmt: skip


def test_with_no_prompts_image_features_are_timms_vit_then_the_projection(slip_file):
    state = file_state(slip_file)
    config = SLIP_CONFIGS[MICRO]
    images = torch.randn(3, 3, 32, 32)
    model = slip_cg3d(slip_file)
    with torch.no_grad():
        expected = timm_vit(config, state)(images) @ state["image_projection"]
        ours = model.visual(images)
        assert expected.norm(dim=-1).min() > 0.1  # not a comparison of near-zeros
        torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.encode_image(images), F.normalize(expected, dim=-1))


def test_deep_prompts_go_in_as_the_public_code_inserts_them(slip_file):
    state = file_state(slip_file)
    model = slip_cg3d(slip_file, prompts=5)
    assert model.visual.prompts.shape == (2, 5, 64)  # prompt_embeddings + deep_prompt_embeddings
    images = torch.randn(2, 3, 32, 32)
    prompts = model.visual.prompts.detach()
    with torch.no_grad():
        expected = public_prompted_image_features(
            timm_vit(SLIP_CONFIGS[MICRO], state),
            state["image_projection"],
            prompts[:1],
            prompts[1:],
            images,
        )
        torch.testing.assert_close(model.visual(images), expected, rtol=1e-5, atol=1e-5)
        unprompted = timm_vit(SLIP_CONFIGS[MICRO], state)(images) @ state["image_projection"]
        assert not torch.allclose(expected, unprompted, atol=1e-3)


def test_text_features_equal_open_clips_text_tower_with_quickgelu(slip_file):
    state = file_state(slip_file)
    model = slip_cg3d(slip_file)
    captions = ["a chair", "a photo of a lamp.", "an airplane in the sky"]
    tokens = model.tokenize(captions)
    with torch.no_grad():
        expected = open_clip_text_tower(SLIP_CONFIGS[MICRO], state)(tokens)
        assert expected.norm(dim=-1).min() > 0.1
        torch.testing.assert_close(model.clip.encode_text(tokens), expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.encode_text(captions), F.normalize(expected, dim=-1))
    # QuickGELU, not GELU: the same weights through GELU blocks give other features
    for block in model.clip.transformer.resblocks:
        block.mlp.gelu = torch.nn.GELU()
    with torch.no_grad():
        assert not torch.allclose(model.clip.encode_text(tokens), expected, atol=1e-4)


def test_only_argparse_namespace_is_allowed_beyond_tensors(tmp_path):
    # a global other than Namespace in the file: refused, one line naming the file
    evil = write_slip_file(tmp_path / "evil.pt", extra=argparse.ArgumentParser)
    with pytest.raises(UsageError, match=r"evil.pt.*Unsupported global.*ArgumentParser") as error:
        load_clip(MICRO, str(evil))
    assert "\n" not in str(error.value) and "Please use" not in str(error.value)
    # the allowance is for the load only: torch's own default is untouched afterwards
    with pytest.raises(Exception, match="Namespace"):
        torch.load(write_slip_file(tmp_path / "plain.pt"), weights_only=True)


def test_a_wrong_layout_names_the_first_missing_or_mismatched_tensor(tmp_path):
    state = random_slip_state(SLIP_CONFIGS[MICRO])
    del state["visual.blocks.1.attn.qkv.weight"]
    torch.save({"state_dict": state}, tmp_path / "missing.pt")
    with pytest.raises(UsageError, match=r"missing.pt .*missing visual.blocks.1.attn.qkv.weight"):
        load_clip(MICRO, str(tmp_path / "missing.pt"))
    state = random_slip_state(SLIP_CONFIGS[MICRO]) | {"image_projection": torch.zeros(64, 32)}
    torch.save({"state_dict": state}, tmp_path / "shape.pt")
    with pytest.raises(UsageError, match=r"image_projection is \(64, 32\), not \(64, 64\)"):
        load_clip(MICRO, str(tmp_path / "shape.pt"))
    torch.save({"model": state}, tmp_path / "other.pt")
    with pytest.raises(UsageError, match=r"other.pt is not in SLIP's layout"):
        load_clip(MICRO, str(tmp_path / "other.pt"))
    with pytest.raises(UsageError, match=r"--clip-pretrained: no file 'openai'"):
        load_clip("SLIP-ViT-B-16", "openai")


def test_none_gives_random_weights_of_the_same_shapes(slip_file):
    with pytest.warns(RandomClipWarning, match="RANDOMLY INITIALISED"):
        random = load_clip(MICRO, "none")
    assert not random.pretrained_loaded and random.weights == {"kind": "random"}
    loaded = load_clip(MICRO, str(slip_file)).model.state_dict()
    shapes = {name: tensor.shape for name, tensor in random.model.state_dict().items()}
    assert shapes == {name: tensor.shape for name, tensor in loaded.items()}


def test_images_are_preprocessed_as_slips_loaders_do(slip_file):
    from cg3d.train.data import ClipPreprocess

    loaded = load_clip(MICRO, str(slip_file))
    pixels = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    # the training loader's own implementation agrees with the API's torchvision transform
    loader = ClipPreprocess.of_model(loaded.model.visual)
    torch.testing.assert_close(loader(image), loaded.preprocess(image), rtol=0, atol=1e-4)
    white = loaded.preprocess(Image.new("RGB", (32, 32), (255, 255, 255)))[:, 0, 0]
    imagenet = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(white, imagenet)


def test_training_a_slip_model_keeps_its_temperature_and_towers_frozen(slip_file, tmp_path):
    from cg3d.train.loop import TrainConfig, Trainer
    from tests.train.helpers import make_batches

    train = dict(batch_size=8, clip_model=MICRO, clip_pretrained=str(slip_file), device="cpu")
    config = TrainConfig(**TINY_MODEL | train | dict(schedule="alternating"))
    model = build_model(model_config(config, ["cube", "sphere"])).train()
    trainer = Trainer(model, config, updates_per_epoch=4, device=torch.device("cpu"))
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    batch = next(iter(make_batches(1, 8)))
    trainer.update([batch], step=0)
    trainer.update([batch], step=1)
    after = model.state_dict()
    moved = {name.split(".")[0] for name in before if not torch.equal(before[name], after[name])}
    assert moved == {"point_encoder", "visual"}  # never clip.* (logit scale, towers)
    assert set(trainer.texts.features) == set(batch["caption"])  # the text cache
    prototypes = class_text_features(model, ["cube", "sphere"], ["a {}.", "a photo of a {}."])
    assert prototypes.shape == (2, 64)
    torch.testing.assert_close(prototypes.norm(dim=-1), torch.ones(2))


def test_a_checkpoint_reloads_slip_from_its_file_and_refuses_another(slip_file, tmp_path):
    model = slip_cg3d(slip_file, prompts=2)
    with torch.no_grad():
        model.visual.prompts.add_(0.5)
    path = tmp_path / "model.pt"
    save_checkpoint(path, model)
    payload = read_checkpoint(path)
    assert not payload["full_clip"]  # SLIP's weights stay in their file
    assert payload["config"]["clip_weights"]["sha256"] == (
        hashlib.sha256(slip_file.read_bytes()).hexdigest()
    )
    images, points = torch.randn(2, 3, 32, 32), torch.randn(2, 256, 3)
    loaded = load_model(path)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(images), model.encode_image(images))
        assert torch.equal(loaded.encode_points(points), model.encode_points(points))
    other = write_slip_file(tmp_path / "other_slip.pt", seed=1)
    with pytest.raises(UsageError, match="sha256"):
        load_model(path, clip_pretrained=str(other))


@pytest.mark.slow
def test_full_size_image_features_equal_timms_vit_base_patch16_224(tmp_path):
    import timm

    model = create_slip("SLIP-ViT-B-16").eval()
    reference = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    reference.load_state_dict(
        {k[7:]: v for k, v in model.state_dict().items() if k.startswith("visual.")}
    )
    images = torch.randn(1, 3, 224, 224)
    from cg3d.models.clip import vit_tower
    from cg3d.models.prompts import PromptedViT

    with torch.no_grad():
        expected = reference.eval()(images) @ model.image_projection
        ours = PromptedViT(vit_tower(model), prompts=0)(images)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_an_export_with_slip_embedded_loads_without_the_file(tmp_path):
    from cg3d.models.checkpoint import export_checkpoint

    slip_file = write_slip_file(tmp_path / "moving_slip.pt", seed=2)
    model = slip_cg3d(slip_file, prompts=2)
    save_checkpoint(tmp_path / "run.pt", model)
    export_checkpoint(tmp_path / "run.pt", tmp_path / "export.pt", embed_clip=True)
    slip_file.unlink()
    with pytest.raises(UsageError, match="moving_slip.pt"):
        load_model(tmp_path / "run.pt")  # it needs the file, named
    exported = load_model(tmp_path / "export.pt")
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(exported.encode_image(images), model.encode_image(images))
        assert torch.equal(exported.encode_text(["a lamp"]), model.encode_text(["a lamp"]))

"""SLIP ViT-B/16 as a backbone: its released file's layout, features equal to independent
forwards (timm's own ViT, open_clip's text tower), visual prompts as the public CG3D code
inserts them, and the training and checkpoint paths on it."""

import argparse
import dataclasses
import hashlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cg3d.errors import UsageError
from cg3d.models.checkpoint import load_model, read_checkpoint, save_checkpoint
from cg3d.models.clip import RandomClipWarning, load_clip
from cg3d.models.model import build_model, tiny_model_config
from cg3d.models.slip import SLIP_CONFIGS, SlipConfig, create_slip
from cg3d.models.text import class_text_features

MICRO = "CG3D-SLIP-Micro-32"


def slip_layout(c: SlipConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of SLIP's `SLIP_VITB16`-style state dict, from the public code: timm's
    VisionTransformer with num_classes=0, CLIP's text tower, the two projections, the logit
    scale, and the SSL head (Linear, SyncBatchNorm, ReLU ×2, Linear)."""
    w, p, e = c.vision_width, c.patch_size, c.embed_dim
    shapes = {
        "visual.cls_token": (1, 1, w),
        "visual.pos_embed": (1, (c.image_size // p) ** 2 + 1, w),
        "visual.patch_embed.proj.weight": (w, 3, p, p),
        "visual.patch_embed.proj.bias": (w,),
        "visual.norm.weight": (w,),
        "visual.norm.bias": (w,),
    }
    for i in range(c.vision_layers):
        block = {
            "norm1.weight": (w,),
            "norm1.bias": (w,),
            "attn.qkv.weight": (3 * w, w),
            "attn.qkv.bias": (3 * w,),
            "attn.proj.weight": (w, w),
            "attn.proj.bias": (w,),
            "norm2.weight": (w,),
            "norm2.bias": (w,),
            "mlp.fc1.weight": (4 * w, w),
            "mlp.fc1.bias": (4 * w,),
            "mlp.fc2.weight": (w, 4 * w),
            "mlp.fc2.bias": (w,),
        }
        shapes |= {f"visual.blocks.{i}.{name}": shape for name, shape in block.items()}
    t = c.transformer_width
    shapes |= {
        "token_embedding.weight": (c.vocab_size, t),
        "positional_embedding": (c.context_length, t),
        "ln_final.weight": (t,),
        "ln_final.bias": (t,),
        "image_projection": (w, e),
        "text_projection": (t, e),
        "logit_scale": (),
    }
    for i in range(c.transformer_layers):
        block = {
            "attn.in_proj_weight": (3 * t, t),
            "attn.in_proj_bias": (3 * t,),
            "attn.out_proj.weight": (t, t),
            "attn.out_proj.bias": (t,),
            "ln_1.weight": (t,),
            "ln_1.bias": (t,),
            "mlp.c_fc.weight": (4 * t, t),
            "mlp.c_fc.bias": (4 * t,),
            "mlp.c_proj.weight": (t, 4 * t),
            "mlp.c_proj.bias": (t,),
            "ln_2.weight": (t,),
            "ln_2.bias": (t,),
        }
        shapes |= {f"transformer.resblocks.{i}.{name}": shape for name, shape in block.items()}
    m, s = c.ssl_mlp_dim, c.ssl_emb_dim
    shapes |= {"image_mlp.layer1.weight": (m, w), "image_mlp.layer1.bias": (m,)}
    shapes |= {"image_mlp.layer2.weight": (m, m), "image_mlp.layer2.bias": (m,)}
    shapes |= {"image_mlp.layer3.weight": (s, m), "image_mlp.layer3.bias": (s,)}
    for bn in ("bn1", "bn2"):
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"image_mlp.{bn}.{name}"] = (m,)
        shapes[f"image_mlp.{bn}.num_batches_tracked"] = ()
    return shapes


def random_slip_state(config: SlipConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random values in every tensor of SLIP's layout, at scales a trained model has."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in slip_layout(config).items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(1000)
        elif name == "logit_scale":
            state[name] = torch.tensor(math.log(1 / 0.07))
        elif any(part in name for part in ("norm", "ln_", ".bn")):  # normalisation layers
            base = 1.0 if name.endswith(("weight", "running_var")) else 0.0
            state[name] = base + 0.1 * torch.randn(shape, generator=generator)
        else:
            state[name] = 0.05 * torch.randn(shape, generator=generator)
    return state


def write_slip_file(path, config: SlipConfig = SLIP_CONFIGS[MICRO], seed: int = 0, **extra):
    """A file in `slip_base_100ep.pt`'s layout: `module.`-prefixed names, epoch, run args."""
    state = {f"module.{name}": value for name, value in random_slip_state(config, seed).items()}
    args = argparse.Namespace(
        model="SLIP_VITB16", ssl_mlp_dim=config.ssl_mlp_dim, ssl_emb_dim=config.ssl_emb_dim,
        ssl_scale=1.0, ssl_temp=0.1, betas=(0.9, 0.98), lr=3e-3, wd=0.1, resume="",
    )  # fmt: skip
    torch.save({"state_dict": state, "epoch": 100, "args": args, **extra}, path)
    return path


@pytest.fixture(scope="module")
def slip_file(tmp_path_factory):
    return write_slip_file(tmp_path_factory.mktemp("slip") / "slip_micro.pt")


def file_state(path) -> dict[str, torch.Tensor]:
    with torch.serialization.safe_globals([argparse.Namespace]):
        state = torch.load(path, weights_only=True)["state_dict"]
    return {name.removeprefix("module."): value for name, value in state.items()}


def timm_vit(config: SlipConfig, state: dict[str, torch.Tensor]):
    """timm's own ViT (`vit_base_patch16_224` for B/16) with `num_classes=0`, from `state`."""
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(
        img_size=config.image_size, patch_size=config.patch_size, embed_dim=config.vision_width,
        depth=config.vision_layers, num_heads=config.vision_heads, num_classes=0,
    )  # fmt: skip
    vit.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("visual.")})
    return vit.eval()


def public_prompted_image_features(vit, projection, prompt, deep_prompts, images):
    """The public CG3D code's prompted forward (its modified timm `VisionTransformerPromptDeep`
    then `@ image_projection`), written out: prompts after the CLS token once the positional
    embedding is added, then `norm_pre`; block i > 0 gets deep_prompts[i - 1] in their place;
    the final norm over every token; the CLS token."""
    x = vit.patch_embed(images)
    x = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + vit.pos_embed
    n = prompt.shape[1]
    x = torch.cat([x[:, :1], prompt.expand(x.shape[0], -1, -1), x[:, 1:]], dim=1)
    x = vit.norm_pre(x)
    for i, block in enumerate(vit.blocks):
        if i > 0:
            deep = deep_prompts[i - 1].expand(x.shape[0], -1, -1)
            x = torch.cat([x[:, :1], deep, x[:, 1 + n :]], dim=1)
        x = block(x)
    return vit.norm(x)[:, 0] @ projection


def open_clip_text_tower(config: SlipConfig, state: dict[str, torch.Tensor]):
    """open_clip's `TextTransformer` built with QuickGELU: an independent text forward."""
    from open_clip.model import QuickGELU
    from open_clip.transformer import TextTransformer

    tower = TextTransformer(
        context_length=config.context_length, vocab_size=config.vocab_size,
        width=config.transformer_width, heads=config.transformer_heads,
        layers=config.transformer_layers, output_dim=config.embed_dim, act_layer=QuickGELU,
    )  # fmt: skip
    names = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_proj")
    tower.load_state_dict({k: v for k, v in state.items() if k.startswith(names)})
    return tower.eval()


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

    tiny = tiny_model_config()
    config = TrainConfig(
        batch_size=8, encoder=tiny.encoder, clip_model=MICRO, clip_pretrained=str(slip_file),
        prompts=2, n_points=tiny.n_points, device="cpu", schedule="alternating",
    )  # fmt: skip
    model = build_model(
        dataclasses.replace(tiny, clip_model=MICRO, clip_pretrained=str(slip_file))
    ).train()
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

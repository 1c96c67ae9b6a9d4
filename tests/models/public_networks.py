"""Networks and files written from the public code, independently of ours: the layouts of
Point-BERT's `PointTransformerProject` and of SLIP's released file, files in those layouts with
random values, and reference forwards (Point-BERT in float64, timm's ViT with CG3D's prompts,
open_clip's text tower with QuickGELU) that the tests compare our models against."""

import argparse
import math

import torch
import torch.nn.functional as F

from cg3d.models.slip import SLIP_CONFIGS, SlipConfig

MICRO = "CG3D-SLIP-Micro-32"


def public_point_transformer_project() -> dict[str, tuple[int, ...]]:
    """Every state-dict key and shape of the public CG3D `PointTransformerProject` as configured
    by cfgs/ShapeNet55_models/PointTransformerVPT.yaml (trans_dim 384, depth 12, encoder_dims
    256, cls_dim 55), written from models/Point_Transformer.py and models/dvae.py."""
    keys: dict[str, tuple[int, ...]] = {"cls_token": (1, 1, 384), "cls_pos": (1, 1, 384)}
    # dvae.Encoder: first_conv Conv1d(3,128) BN(128) ReLU Conv1d(128,256);
    # second_conv Conv1d(512,512) BN(512) ReLU Conv1d(512,256)
    for conv, (inputs, hidden, outputs) in {
        "first_conv": (3, 128, 256),
        "second_conv": (512, 512, 256),
    }.items():
        prefix = f"encoder.{conv}"
        keys[f"{prefix}.0.weight"] = (hidden, inputs, 1)
        keys[f"{prefix}.0.bias"] = (hidden,)
        for buffer in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{prefix}.1.{buffer}"] = (hidden,)
        keys[f"{prefix}.1.num_batches_tracked"] = ()
        keys[f"{prefix}.3.weight"] = (outputs, hidden, 1)
        keys[f"{prefix}.3.bias"] = (outputs,)
    keys |= {
        "reduce_dim.weight": (384, 256),
        "reduce_dim.bias": (384,),
        "projection.weight": (512, 768),
        "projection.bias": (512,),
        "pos_embed.0.weight": (128, 3),
        "pos_embed.0.bias": (128,),
        "pos_embed.2.weight": (384, 128),
        "pos_embed.2.bias": (384,),
        "norm.weight": (384,),
        "norm.bias": (384,),
        "cls_head_finetune.0.weight": (256, 768),
        "cls_head_finetune.0.bias": (256,),
        "cls_head_finetune.3.weight": (55, 256),
        "cls_head_finetune.3.bias": (55,),
    }
    for block in range(12):
        prefix = f"blocks.blocks.{block}"
        keys |= {
            f"{prefix}.norm1.weight": (384,),
            f"{prefix}.norm1.bias": (384,),
            f"{prefix}.attn.qkv.weight": (1152, 384),  # qkv_bias=False
            f"{prefix}.attn.proj.weight": (384, 384),
            f"{prefix}.attn.proj.bias": (384,),
            f"{prefix}.norm2.weight": (384,),
            f"{prefix}.norm2.bias": (384,),
            f"{prefix}.mlp.fc1.weight": (1536, 384),
            f"{prefix}.mlp.fc1.bias": (1536,),
            f"{prefix}.mlp.fc2.weight": (384, 1536),
            f"{prefix}.mlp.fc2.bias": (384,),
        }
    return keys


def reference_fps(xyz: torch.Tensor, count: int) -> torch.Tensor:
    """pointnet2's furthest_point_sample, one cloud at a time: from point 0, each next point
    the one farthest from all chosen so far."""
    chosen, nearest = [0], ((xyz - xyz[0]) ** 2).sum(-1)
    for _ in range(count - 1):
        chosen.append(int(nearest.argmax()))
        nearest = torch.minimum(nearest, ((xyz - xyz[chosen[-1]]) ** 2).sum(-1))
    return torch.tensor(chosen)


def kernel_fps(xyz: torch.Tensor, count: int) -> torch.Tensor:
    """pointnet2_ops' furthest_point_sampling_kernel for one cloud: idxs[0] = 0; then, each
    step, every point of squared norm above 1e-3 (`if (mag <= 1e-3) continue;`) has its
    distance to the chosen set updated, and the first farthest of them is chosen (best starts
    at -1 and besti at 0: with no such point, index 0)."""
    temp = torch.full((xyz.shape[0],), 1e10, dtype=xyz.dtype)
    counted = (xyz**2).sum(-1) > 1e-3
    chosen = [0]
    for _ in range(count - 1):
        distance = ((xyz - xyz[chosen[-1]]) ** 2).sum(-1)
        temp = torch.where(counted, torch.minimum(temp, distance), temp)
        chosen.append(int(torch.where(counted, temp, -1.0).argmax()) if counted.any() else 0)
    return torch.tensor(chosen)


def reference_point_transformer_project(
    weights: dict[str, torch.Tensor], clouds: torch.Tensor, heads: int = 6, kernel: bool = True
) -> torch.Tensor:
    """The public PointTransformerProject's `out_feature` (eval mode), from its state dict,
    in float64, written from the public code (misc.fps, knn_point, Encoder, blocks, norm).
    `kernel`: the centres by pointnet2_ops' kernel, as the public Group's misc.fps picks them;
    off: plain FPS from point 0 (our encoder's default)."""
    w = {key: value.double() for key, value in weights.items()}
    depth = len({key.split(".")[2] for key in w if key.startswith("blocks.blocks.")})

    def conv_bn_relu_conv(prefix: str, x: torch.Tensor) -> torch.Tensor:  # x: (M, C, K)
        x = F.conv1d(x, w[f"{prefix}.0.weight"], w[f"{prefix}.0.bias"])
        x = F.batch_norm(
            x,
            w[f"{prefix}.1.running_mean"],
            w[f"{prefix}.1.running_var"],
            w[f"{prefix}.1.weight"],
            w[f"{prefix}.1.bias"],
            training=False,
            eps=1e-5,
        )
        return F.conv1d(torch.relu(x), w[f"{prefix}.3.weight"], w[f"{prefix}.3.bias"])

    def layer_norm(prefix: str, x: torch.Tensor) -> torch.Tensor:
        mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
        return (x - mean) / torch.sqrt(var + 1e-5) * w[f"{prefix}.weight"] + w[f"{prefix}.bias"]

    def gelu(x: torch.Tensor) -> torch.Tensor:  # nn.GELU(): the exact, erf form
        return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))

    features = []
    for xyz in clouds.double():
        # Group: 64 FPS centres, the 32 nearest points of each, relative to their centre
        centres = xyz[(kernel_fps if kernel else reference_fps)(xyz, 64)]
        nearest = torch.cdist(centres, xyz).argsort(dim=-1)[:, :32]
        patches = xyz[nearest] - centres[:, None]  # (64, 32, 3)
        # Encoder
        x = conv_bn_relu_conv("encoder.first_conv", patches.transpose(1, 2))
        x = torch.cat([x.max(-1, keepdim=True).values.expand_as(x), x], dim=1)
        tokens = conv_bn_relu_conv("encoder.second_conv", x).max(-1).values  # (64, 256)
        tokens = tokens @ w["reduce_dim.weight"].T + w["reduce_dim.bias"]
        pos = gelu(centres @ w["pos_embed.0.weight"].T + w["pos_embed.0.bias"])
        pos = pos @ w["pos_embed.2.weight"].T + w["pos_embed.2.bias"]
        x = torch.cat([w["cls_token"][0], tokens])
        pos = torch.cat([w["cls_pos"][0], pos])
        for block in range(depth):
            b = f"blocks.blocks.{block}"
            x = x + pos  # before every block
            h = layer_norm(f"{b}.norm1", x)
            q, k, v = (h @ w[f"{b}.attn.qkv.weight"].T).reshape(65, 3, heads, -1).unbind(1)
            scores = torch.einsum("ihd,jhd->hij", q, k) / math.sqrt(q.shape[-1])
            attended = torch.einsum("hij,jhd->ihd", scores.softmax(-1), v).reshape(65, -1)
            x = x + attended @ w[f"{b}.attn.proj.weight"].T + w[f"{b}.attn.proj.bias"]
            h = layer_norm(f"{b}.norm2", x)
            h = gelu(h @ w[f"{b}.mlp.fc1.weight"].T + w[f"{b}.mlp.fc1.bias"])
            x = x + h @ w[f"{b}.mlp.fc2.weight"].T + w[f"{b}.mlp.fc2.bias"]
        x = layer_norm("norm", x)
        concat = torch.cat([x[0], x[1:].max(0).values])
        features.append(concat @ w["projection.weight"].T + w["projection.bias"])
    return torch.stack(features)


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


def released_base_model(out_dim: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """`PointTransformerProject`'s state dict as saved under DDP (`module.` names), its
    fine-tuning head included, projecting to `out_dim`, with trained-like values."""
    layout = public_point_transformer_project()
    layout |= {"projection.weight": (out_dim, 768), "projection.bias": (out_dim,)}
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in layout.items():
        if name.endswith("num_batches_tracked"):
            value = torch.tensor(5000)
        elif name.endswith("running_var"):
            value = torch.rand(shape, generator=generator) + 0.5
        else:
            value = torch.randn(shape, generator=generator) * (0.2 if len(shape) >= 2 else 1.0)
        state[f"module.{name}"] = value
    return state


def write_release(path, slip_file, seed: int = 0, drop: str = "", **replace):
    """A released checkpoint for the SLIP file `slip_file`: its ViT tower, 5 prompts before
    the first block and 5 for each later one; `drop` removes a tensor, `replace` swaps some."""
    config = SLIP_CONFIGS[MICRO]
    generator = torch.Generator().manual_seed(seed + 1)
    width, layers = config.vision_width, config.vision_layers
    tower = {k[7:]: v for k, v in file_state(slip_file).items() if k.startswith("visual.")}
    tower["prompt_embeddings"] = torch.randn(1, 5, width, generator=generator)
    tower["deep_prompt_embeddings"] = torch.randn(layers - 1, 5, width, generator=generator)
    base = released_base_model(config.embed_dim, seed)
    for sections in (tower, base):
        sections.pop(drop, None)
        sections.update({k: v for k, v in replace.items() if k in sections})
    payload = {
        "base_model": base,
        "visual_clip_model": tower,
        "optimizer": {"state": {}, "param_groups": [{"lr": 5e-5, "params": [0, 1]}]},
        "epoch": 299,
        "metrics": {"acc": 48.7},
        "best_metrics": {"acc": 50.1},
    }
    torch.save(payload, path)
    return path

"""ULIP, ULIP-2, OpenShape and Uni3D as their public code builds them, independently of ours:
every state-dict key and shape of their released files, files in those layouts with random
values, and reference forwards in float64 (eval mode) that the tests compare our converted
models against.

Written from salesforce/ULIP (models/ULIP_models.py, models/pointbert/point_encoder.py, dvae.py),
Colin97/OpenShape_code (src/models/ppat.py, pointnet_util.py) and baaivision/Uni3D
(models/point_encoder.py, models/uni3d.py with timm 0.9.7's Eva: eva.py, layers/mlp.py).
Farthest point sampling is pointnet2_ops' CUDA kernel for ULIP and Uni3D (from point 0, never
picking a point of squared norm ≤ 1e-3); OpenShape's dgl sampler starts at a random point, so
its reference starts at 0 as ours does.
"""

import math

import torch
import torch.nn.functional as F

from tests.models.public_networks import kernel_fps, reference_fps

Layout = dict[str, tuple[int, ...]]


# --- layouts -------------------------------------------------------------------------------


def _batch_norm(keys: Layout, prefix: str, channels: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        keys[f"{prefix}.{name}"] = (channels,)
    keys[f"{prefix}.num_batches_tracked"] = ()


def _linear(keys: Layout, prefix: str, inputs: int, outputs: int, bias: bool = True) -> None:
    keys[f"{prefix}.weight"] = (outputs, inputs)
    if bias:
        keys[f"{prefix}.bias"] = (outputs,)


def _norm(keys: Layout, prefix: str, channels: int) -> None:
    keys[f"{prefix}.weight"] = (channels,)
    keys[f"{prefix}.bias"] = (channels,)


def pointbert_patch_layout(prefix: str, in_dim: int, encoder_dims: int) -> Layout:
    """dvae.Encoder (ULIP; Uni3D's Encoder): Conv1d(in,128) BN ReLU Conv1d(128,256);
    Conv1d(512,512) BN ReLU Conv1d(512, encoder_dims)."""
    keys: Layout = {}
    for conv, (inputs, hidden, outputs) in {
        "first_conv": (in_dim, 128, 256),
        "second_conv": (512, 512, encoder_dims),
    }.items():
        keys[f"{prefix}{conv}.0.weight"] = (hidden, inputs, 1)
        keys[f"{prefix}{conv}.0.bias"] = (hidden,)
        _batch_norm(keys, f"{prefix}{conv}.1", hidden)
        keys[f"{prefix}{conv}.3.weight"] = (outputs, hidden, 1)
        keys[f"{prefix}{conv}.3.bias"] = (outputs,)
    return keys


def ulip_layout(depth: int, in_dim: int, out_dim: int, width: int = 384) -> Layout:
    """A ULIP / ULIP-2 file's `state_dict` (point side): `module.point_encoder.*` of
    PointTransformer(_Colored) (encoder_dims 256), `module.pc_projection`, `module.logit_scale`."""
    p = "module.point_encoder."
    keys = pointbert_patch_layout(f"{p}encoder.", in_dim, 256)
    keys[f"{p}cls_token"] = (1, 1, width)
    keys[f"{p}cls_pos"] = (1, 1, width)
    _linear(keys, f"{p}reduce_dim", 256, width)
    _linear(keys, f"{p}pos_embed.0", 3, 128)
    _linear(keys, f"{p}pos_embed.2", 128, width)
    for block in range(depth):
        b = f"{p}blocks.blocks.{block}"
        _norm(keys, f"{b}.norm1", width)
        _linear(keys, f"{b}.attn.qkv", width, 3 * width, bias=False)  # qkv_bias=False
        _linear(keys, f"{b}.attn.proj", width, width)
        _norm(keys, f"{b}.norm2", width)
        _linear(keys, f"{b}.mlp.fc1", width, 4 * width)
        _linear(keys, f"{b}.mlp.fc2", 4 * width, width)
    _norm(keys, f"{p}norm", width)
    keys["module.pc_projection"] = (2 * width, out_dim)
    keys["module.logit_scale"] = ()
    return keys


def ppat_layout(
    width: int = 512,
    depth: int = 12,
    mlp: int = 1536,
    sa_dim: int = 256,
    in_dim: int = 6,
    heads: int = 8,
    head_dim: int = 64,
    out_dim: int = 1280,
) -> Layout:
    """An OpenShape file's `state_dict`: `Projected(PointPatchTransformer, Linear)` under DDP."""
    keys: Layout = {"module.ppat.cls_token": (width,)}
    last = in_dim + 3
    for index, channels in enumerate([64, 64, sa_dim]):
        keys[f"module.ppat.sa.mlp_convs.{index}.weight"] = (channels, last, 1, 1)
        keys[f"module.ppat.sa.mlp_convs.{index}.bias"] = (channels,)
        _batch_norm(keys, f"module.ppat.sa.mlp_bns.{index}", channels)
        last = channels
    keys["module.ppat.lift.0.weight"] = (width, sa_dim + 3, 1)
    keys["module.ppat.lift.0.bias"] = (width,)
    _norm(keys, "module.ppat.lift.2", width)  # lift.1 is the parameter-free permute
    inner = heads * head_dim
    for layer in range(depth):
        a, f = (
            f"module.ppat.transformer.layers.{layer}.0",
            f"module.ppat.transformer.layers.{layer}.1",
        )
        _norm(keys, f"{a}.norm", width)
        _linear(keys, f"{a}.fn.to_qkv", width, 3 * inner, bias=False)
        _linear(keys, f"{a}.fn.to_out.0", inner, width)
        _norm(keys, f"{f}.norm", width)
        _linear(keys, f"{f}.fn.net.0", width, mlp)
        _linear(keys, f"{f}.fn.net.3", mlp, width)
    _linear(keys, "module.proj", width, out_dim)
    return keys


def uni3d_layout(
    width: int,
    depth: int,
    mlp_ratio: float,
    mlp: str,  # "plain" (GELU Mlp), "glu" (packed SwiGLU, GluMlp), "swiglu" (SwiGLU + norm)
    qkv_fused: bool,
    img_size: int,
    num_classes: int,
    patch_size: int = 14,
    encoder_dims: int = 512,
    out_dim: int = 1024,
) -> Layout:
    """A Uni3D file's `module` state dict: `point_encoder.*` (PointcloudEncoder with the timm
    0.9.7 Eva as `visual`) and `logit_scale`."""
    p = "point_encoder."
    keys = pointbert_patch_layout(f"{p}encoder.", 6, encoder_dims)
    _linear(keys, f"{p}encoder2trans", encoder_dims, width)
    _linear(keys, f"{p}trans2embed", width, out_dim)
    keys[f"{p}cls_token"] = (1, 1, width)
    keys[f"{p}cls_pos"] = (1, 1, width)
    _linear(keys, f"{p}pos_embed.0", 3, 128)
    _linear(keys, f"{p}pos_embed.2", 128, width)
    v = f"{p}visual."
    grid = (img_size // patch_size) ** 2
    keys[f"{v}cls_token"] = (1, 1, width)
    keys[f"{v}pos_embed"] = (1, grid + 1, width)
    keys[f"{v}patch_embed.proj.weight"] = (width, 3, patch_size, patch_size)
    keys[f"{v}patch_embed.proj.bias"] = (width,)
    hidden = int(width * mlp_ratio)
    for block in range(depth):
        b = f"{v}blocks.{block}"
        _norm(keys, f"{b}.norm1", width)
        if qkv_fused:  # EvaAttention: qkv without bias, q_bias and v_bias (k_bias: a buffer)
            keys[f"{b}.attn.q_bias"] = (width,)
            keys[f"{b}.attn.v_bias"] = (width,)
            _linear(keys, f"{b}.attn.qkv", width, 3 * width, bias=False)
        else:
            _linear(keys, f"{b}.attn.q_proj", width, width)
            _linear(keys, f"{b}.attn.k_proj", width, width, bias=False)
            _linear(keys, f"{b}.attn.v_proj", width, width)
        _linear(keys, f"{b}.attn.proj", width, width)
        _norm(keys, f"{b}.norm2", width)
        if mlp == "plain":
            _linear(keys, f"{b}.mlp.fc1", width, hidden)
        elif mlp == "glu":
            _linear(keys, f"{b}.mlp.fc1", width, 2 * hidden)
        else:
            _linear(keys, f"{b}.mlp.fc1_g", width, hidden)
            _linear(keys, f"{b}.mlp.fc1_x", width, hidden)
            _norm(keys, f"{b}.mlp.norm", hidden)
        _linear(keys, f"{b}.mlp.fc2", hidden, width)
    _norm(keys, f"{v}fc_norm", width)  # global_pool "avg": fc_norm, and `norm` an Identity
    if num_classes:
        _linear(keys, f"{v}head", width, num_classes)
    keys["logit_scale"] = ()
    return keys


def random_state(layout: Layout, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors in `layout`: weights scaled by fan-in, norms near 1, positive variances."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in layout.items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            state[name] = torch.tensor(7)
            continue
        noise = torch.randn(shape, generator=generator)
        if leaf == "running_var":
            noise = torch.rand(shape, generator=generator) + 0.5
        elif leaf == "running_mean":
            noise = 0.1 * noise
        elif leaf == "weight" and len(shape) == 1:  # LayerNorm / BatchNorm scale
            noise = 1 + 0.1 * noise
        elif "pc_projection" in name:
            noise = noise / math.sqrt(shape[0])
        elif len(shape) >= 2 and leaf == "weight":
            noise = noise / math.sqrt(math.prod(shape[1:]))
        elif leaf in ("bias", "q_bias", "v_bias"):
            noise = 0.1 * noise
        elif name.endswith("logit_scale"):
            noise = torch.tensor(math.log(1 / 0.05))
        state[name] = noise
    return state


# --- reference forwards (float64, one cloud at a time) ---------------------------------------


def _gelu(x: torch.Tensor) -> torch.Tensor:  # nn.GELU(): the exact, erf form
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _layer_norm(w: dict, prefix: str, x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w[f"{prefix}.weight"] + w[f"{prefix}.bias"]


def _dense(w: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    weight = w[f"{prefix}.weight"]
    out = x @ weight.reshape(weight.shape[0], -1).T  # 1×1 convolutions are dense layers too
    return out + w[f"{prefix}.bias"] if f"{prefix}.bias" in w else out


def _bn(w: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:  # eval mode, channels last
    scale = w[f"{prefix}.weight"] / torch.sqrt(w[f"{prefix}.running_var"] + 1e-5)
    return (x - w[f"{prefix}.running_mean"]) * scale + w[f"{prefix}.bias"]


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """(T, heads·d) queries, keys and values → softmax(q kᵀ · d^-½) v, heads concatenated."""
    tokens = q.shape[0]
    q, k, v = (t.reshape(tokens, heads, -1) for t in (q, k, v))
    scores = torch.einsum("ihd,jhd->hij", q, k) / math.sqrt(q.shape[-1])
    return torch.einsum("hij,jhd->ihd", scores.softmax(-1), v).reshape(tokens, -1)


def _pointbert_patches(
    w: dict, prefix: str, cloud: torch.Tensor, groups: int, group_size: int, channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """ULIP's / Uni3D's Group and Encoder: (groups, encoder_dims) tokens and the centres."""
    xyz = cloud[:, :3]
    centres = xyz[kernel_fps(xyz, groups)]  # misc.fps / Group's fps: the CUDA kernel
    # knn_point: the group_size smallest squared distances (their order does not matter: the
    # encoder max-pools over the group)
    nearest = ((centres[:, None] - xyz[None]) ** 2).sum(-1).topk(group_size, largest=False)
    patch = cloud[nearest.indices][..., :channels].clone()
    patch[..., :3] -= centres[:, None]  # xyz relative to the centre, rgb as it is
    x = _dense(w, f"{prefix}first_conv.0", patch)
    x = _dense(w, f"{prefix}first_conv.3", torch.relu(_bn(w, f"{prefix}first_conv.1", x)))
    x = torch.cat([x.max(1, keepdim=True).values.expand_as(x), x], dim=-1)
    x = _dense(w, f"{prefix}second_conv.0", x)
    x = _dense(w, f"{prefix}second_conv.3", torch.relu(_bn(w, f"{prefix}second_conv.1", x)))
    return x.max(1).values, centres


def reference_ulip(
    state: dict[str, torch.Tensor],
    clouds: torch.Tensor,
    groups: int,
    group_size: int = 32,
    heads: int = 6,
    channels: int = 3,
) -> torch.Tensor:
    """ULIP's `encode_pc`: `point_encoder(pc) @ pc_projection`, from a ULIP file's state dict."""
    p = "module.point_encoder."
    w = {key: value.double() for key, value in state.items()}
    depth = len({key.split(".")[4] for key in w if key.startswith(f"{p}blocks.blocks.")})
    features = []
    for cloud in clouds.double():
        tokens, centres = _pointbert_patches(w, f"{p}encoder.", cloud, groups, group_size, channels)
        tokens = _dense(w, f"{p}reduce_dim", tokens)
        pos = _dense(w, f"{p}pos_embed.2", _gelu(_dense(w, f"{p}pos_embed.0", centres)))
        x = torch.cat([w[f"{p}cls_token"][0], tokens])
        pos = torch.cat([w[f"{p}cls_pos"][0], pos])
        for block in range(depth):
            b = f"{p}blocks.blocks.{block}"
            x = x + pos  # TransformerEncoder: the position added before every block
            q, k, v = (_layer_norm(w, f"{b}.norm1", x) @ w[f"{b}.attn.qkv.weight"].T).chunk(3, -1)
            x = x + _dense(w, f"{b}.attn.proj", _attend(q, k, v, heads))
            h = _gelu(_dense(w, f"{b}.mlp.fc1", _layer_norm(w, f"{b}.norm2", x)))
            x = x + _dense(w, f"{b}.mlp.fc2", h)
        x = _layer_norm(w, f"{p}norm", x)
        pooled = torch.cat([x[0], x[1:].max(0).values])
        features.append(pooled @ w["module.pc_projection"])
    return torch.stack(features)


def public_ball_query(radius: float, k: int, xyz: torch.Tensor, centres: torch.Tensor):
    """pointnet_util.query_ball_point for one cloud: every index, those farther than `radius`
    set to N, sorted, the first k kept, N replaced by the first."""
    n = xyz.shape[0]
    squared = ((centres[:, None] - xyz[None]) ** 2).sum(-1)
    index = torch.arange(n).repeat(centres.shape[0], 1)
    index[squared > radius**2] = n
    index = index.sort(dim=-1).values[:, :k]
    first = index[:, :1].expand_as(index)
    return torch.where(index == n, first, index)


def reference_ppat(
    state: dict[str, torch.Tensor],
    clouds: torch.Tensor,
    patches: int,
    radius: float,
    group_size: int,
    heads: int = 8,
) -> torch.Tensor:
    """OpenShape's `Projected(ppat, proj)` of (xyz, features = xyz ‖ rgb), from its state dict."""
    w = {key.removeprefix("module."): value.double() for key, value in state.items()}
    depth = len({key.split(".")[3] for key in w if key.startswith("ppat.transformer.layers.")})
    features = []
    for cloud in clouds.double():
        xyz = cloud[:, :3]
        centres = xyz[reference_fps(xyz, patches)]
        index = public_ball_query(radius, group_size, xyz, centres)
        x = torch.cat([xyz[index] - centres[:, None], cloud[index]], dim=-1)  # (S, k, 3 + 6)
        for layer in range(3):
            x = _dense(w, f"ppat.sa.mlp_convs.{layer}", x)
            x = torch.relu(_bn(w, f"ppat.sa.mlp_bns.{layer}", x))
        x = torch.cat([centres, x.max(1).values], dim=-1)  # lift: centroids first
        x = _layer_norm(w, "ppat.lift.2", _dense(w, "ppat.lift.0", x))
        x = torch.cat([w["ppat.cls_token"][None], x])
        for layer in range(depth):
            a, f = f"ppat.transformer.layers.{layer}.0", f"ppat.transformer.layers.{layer}.1"
            q, k, v = (_layer_norm(w, f"{a}.norm", x) @ w[f"{a}.fn.to_qkv.weight"].T).chunk(3, -1)
            x = _dense(w, f"{a}.fn.to_out.0", _attend(q, k, v, heads)) + x
            h = _gelu(_dense(w, f"{f}.fn.net.0", _layer_norm(w, f"{f}.norm", x)))
            x = _dense(w, f"{f}.fn.net.3", h) + x
        features.append(_dense(w, "proj", x[0]))  # the CLS token, no final norm
    return torch.stack(features)


def reference_eva_block(w: dict, b: str, x: torch.Tensor, heads: int) -> torch.Tensor:
    """timm 0.9.7 EvaBlock without rotary embedding (as Uni3D calls it), LayerNorm eps 1e-6."""
    h = _layer_norm(w, f"{b}.norm1", x, eps=1e-6)
    if f"{b}.attn.qkv.weight" in w:  # fused: bias (q_bias, 0, v_bias)
        zeros = torch.zeros_like(w[f"{b}.attn.q_bias"])
        bias = torch.cat([w[f"{b}.attn.q_bias"], zeros, w[f"{b}.attn.v_bias"]])
        q, k, v = (h @ w[f"{b}.attn.qkv.weight"].T + bias).chunk(3, -1)
    else:
        q, k, v = (_dense(w, f"{b}.attn.{name}_proj", h) for name in "qkv")
    x = x + _dense(w, f"{b}.attn.proj", _attend(q, k, v, heads))
    h = _layer_norm(w, f"{b}.norm2", x, eps=1e-6)
    if f"{b}.mlp.fc1_g.weight" in w:  # SwiGLU: silu(gate) · x, LayerNorm, fc2
        h = F.silu(_dense(w, f"{b}.mlp.fc1_g", h)) * _dense(w, f"{b}.mlp.fc1_x", h)
        h = _layer_norm(w, f"{b}.mlp.norm", h, eps=1e-6)
    elif w[f"{b}.mlp.fc1.weight"].shape[0] == 2 * w[f"{b}.mlp.fc2.weight"].shape[1]:
        gate, value = _dense(w, f"{b}.mlp.fc1", h).chunk(2, -1)  # GluMlp, gate first
        h = F.silu(gate) * value
    else:
        h = _gelu(_dense(w, f"{b}.mlp.fc1", h))
    return x + _dense(w, f"{b}.mlp.fc2", h)


def reference_uni3d(
    state: dict[str, torch.Tensor],
    clouds: torch.Tensor,
    groups: int,
    group_size: int,
    heads: int,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Uni3D's `encode_pc` of (xyz ‖ rgb) clouds, from a Uni3D file's `module` state dict
    (in `dtype`: float32 for full sizes, where float64 takes tens of seconds on a CPU)."""
    p = "point_encoder."
    w = {key.removeprefix("module."): value.to(dtype) for key, value in state.items()}
    depth = len({key.split(".")[3] for key in w if key.startswith(f"{p}visual.blocks.")})
    features = []
    for cloud in clouds.to(dtype):
        tokens, centres = _pointbert_patches(w, f"{p}encoder.", cloud, groups, group_size, 6)
        tokens = _dense(w, f"{p}encoder2trans", tokens)
        pos = _dense(w, f"{p}pos_embed.2", _gelu(_dense(w, f"{p}pos_embed.0", centres)))
        x = torch.cat([w[f"{p}cls_token"][0], tokens]) + torch.cat([w[f"{p}cls_pos"][0], pos])
        for block in range(depth):  # the position added once, before the first block
            x = reference_eva_block(w, f"{p}visual.blocks.{block}", x, heads)
        cls = _layer_norm(w, f"{p}visual.fc_norm", x[0], eps=1e-6)
        features.append(_dense(w, f"{p}trans2embed", cls))
    return torch.stack(features)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row cosine similarity of two (B, D) feature batches, in float64."""
    return F.cosine_similarity(a.double(), b.double(), dim=-1)

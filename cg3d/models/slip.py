"""SLIP (facebookresearch/SLIP): the vision–language model the public CG3D code trains with.

Its layout, kept name for name so that SLIP's released file loads as it is:
  visual.*            timm's `VisionTransformer` (ViT-B/16: `vit_base_patch16_224`) with
                      `num_classes=0`: GELU, no pre-norm, the CLS token after the final norm
  image_projection    (vision width, embed dim): image features are `visual(x) @ image_projection`
  token_embedding, positional_embedding, transformer.resblocks.*, ln_final, text_projection
                      CLIP's text tower with QuickGELU and a causal mask, pooled at the EOT token
  logit_scale         the log temperature
  image_mlp.*         SLIP's self-supervised head: zero-shot does not use it, loading drops it

`slip_base_100ep.pt` holds `{"state_dict": {"module.<name>": tensor}, "epoch": int,
"args": argparse.Namespace(...)}`. `read_slip_state` loads it with `weights_only=True`,
allowing exactly `argparse.Namespace` beyond plain tensors and containers.

Images are preprocessed as SLIP was trained and the public CG3D loaders do: resize of the short
side to 224 (bilinear), centre crop 224, ImageNet mean and std.
"""

import argparse
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import nn

from cg3d.errors import UsageError
from cg3d.files import file_stand_in, zero_ends
from cg3d.models.prompts import VitTower

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SSL_HEAD = "image_mlp."  # SLIP's SimCLR head: in the file, not in the model


@dataclass(frozen=True)
class SlipConfig:
    """A SLIP model's sizes (the arguments of SLIP's `SLIP_VIT*` constructors)."""

    embed_dim: int
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_heads: int
    context_length: int
    vocab_size: int
    transformer_width: int
    transformer_heads: int
    transformer_layers: int
    ssl_mlp_dim: int  # the SSL head's sizes: only what a file in SLIP's layout holds
    ssl_emb_dim: int


SLIP_CONFIGS = {
    # SLIP_VITB16 with SLIP's default SSL head (--ssl-mlp-dim 4096 --ssl-emb-dim 256)
    "SLIP-ViT-B-16": SlipConfig(512, 224, 16, 768, 12, 12, 77, 49408, 512, 8, 12, 4096, 256),
    # a model small enough for unit tests (32 px images, 64-d features)
    "CG3D-SLIP-Micro-32": SlipConfig(64, 32, 8, 64, 2, 2, 16, 49408, 32, 2, 1, 32, 16),
}


class SLIP(nn.Module):
    """SLIP's image and text towers (without the SSL head), with SLIP's parameter names."""

    def __init__(self, config: SlipConfig):
        super().__init__()
        from open_clip.model import QuickGELU
        from open_clip.transformer import LayerNorm, Transformer
        from timm.models.vision_transformer import VisionTransformer

        self.config = config
        self.visual = VisionTransformer(
            img_size=config.image_size,
            patch_size=config.patch_size,
            embed_dim=config.vision_width,
            depth=config.vision_layers,
            num_heads=config.vision_heads,
            num_classes=0,
        )
        width = config.transformer_width
        self.transformer = Transformer(
            width, config.transformer_layers, config.transformer_heads, act_layer=QuickGELU
        )
        self.token_embedding = nn.Embedding(config.vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(config.context_length, width))
        self.ln_final = LayerNorm(width)
        self.image_projection = nn.Parameter(torch.empty(config.vision_width, config.embed_dim))
        self.text_projection = nn.Parameter(torch.empty(width, config.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        causal = torch.full((config.context_length,) * 2, float("-inf")).triu_(1)
        self.register_buffer("attn_mask", causal, persistent=False)  # not in SLIP's file
        self._initialise()

    def _initialise(self) -> None:
        """SLIP's initialisation of the text tower and projections (timm inits the ViT)."""
        width, layers = self.config.transformer_width, self.config.transformer_layers
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width**-0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.image_projection, std=self.config.vision_width**-0.5)
        nn.init.normal_(self.text_projection, std=width**-0.5)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) preprocessed images → (B, D) unnormalised features."""
        return self.visual(images) @ self.image_projection

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        """(B, context) token ids → (B, D) unnormalised features, taken at the EOT token (the
        highest id in each row)."""
        x = self.token_embedding(text) + self.positional_embedding
        x = self.ln_final(self.transformer(x, attn_mask=self.attn_mask))
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection

    def vit_tower(self) -> VitTower:
        """The timm tower for visual prompts: as the public CG3D code, they go in after the
        positional embedding and before `norm_pre`."""
        visual = self.visual

        def embed(images: torch.Tensor) -> torch.Tensor:
            return visual.patch_drop(visual._pos_embed(visual.patch_embed(images)))

        def head(tokens: torch.Tensor) -> torch.Tensor:
            return visual.forward_head(visual.norm(tokens)) @ self.image_projection

        return VitTower(
            embed=embed,
            norm_pre=visual.norm_pre,
            blocks=list(visual.blocks),
            head=head,
            width=self.config.vision_width,
            patch_area=self.config.patch_size**2,
            image_size=self.config.image_size,
        )


def preprocess_cfg(config: SlipConfig) -> dict[str, Any]:
    """SLIP's image preprocessing, in open_clip's `preprocess_cfg` terms (the loader reads it)."""
    return {
        "size": config.image_size,
        "mode": "RGB",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "interpolation": "bilinear",
        "resize_mode": "shortest",
    }


def _rgb(image: Any) -> Any:
    return image.convert("RGB")


def image_transform(config: SlipConfig) -> Any:
    """PIL image → (3, S, S) tensor, as SLIP's and the public CG3D code's loaders."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(config.image_size),  # torchvision's default: bilinear
            transforms.CenterCrop(config.image_size),
            _rgb,
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def tokenizer(config: SlipConfig) -> Any:
    """CLIP's BPE tokenizer (SLIP's), padding to the text tower's context length."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=config.context_length)


def create_slip(model_name: str) -> SLIP:
    """SLIP `model_name` with random weights."""
    model = SLIP(SLIP_CONFIGS[model_name])
    model.visual.preprocess_cfg = preprocess_cfg(model.config)  # as open_clip's towers carry it
    return model


def load_error_reason(error: Exception, path: Path | str | None = None) -> tuple[str, bool]:
    """What went wrong in a `torch.load` of `path`, from its (long) error: one line, and whether
    it is a weights-only load refusing pickled content (which `--allow-pickle` reads, where a
    command has one). Every reader of a torch file says it this way (checkpoints, releases,
    SLIP). A file of zeros or cut short (`torch_file_damage`) says so, not torch's words."""
    # first: zeros read as a pickle are "Unsupported operand 0", not a refused object
    damage = torch_file_damage(Path(path)) if path is not None else ""
    if damage:
        return damage, False
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    # An object the file would build: "Unsupported global: GLOBAL x was not an allowed global",
    # "Trying to load unsupported GLOBAL posix.system whose module posix is blocked" (where a
    # reduce to os.system lands); or an opcode of a plain pickle: "Unsupported operand 149".
    refused = [line for line in lines if "GLOBAL " in line or "Unsupported operand" in line]
    if refused:
        # torch goes on to suggest allow-listing the class: not advice for a weights file
        return refused[0].split(". Please")[0].removesuffix("."), True
    # its first sentence (torch's advice follows): "PytorchStreamReader failed reading zip
    # archive: failed finding central directory" of a file cut short
    first = lines[0].split(". ")[0].removesuffix(".")[:200] if lines else ""
    return (f"{type(error).__name__}: {first}" if first else type(error).__name__), False


ZIP_LOCAL, ZIP_CENTRAL, ZIP_END = b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06"
ZIP_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # signature ... name and extra lengths
ZIP_END_SEARCH = 22 + 0xFFFF  # the end record, and the longest comment that may follow it
MAX_ZIP_MEMBERS = 1_000_000  # a checkpoint holds one per tensor storage: thousands


def torch_file_damage(path: Path) -> str:
    """ "" unless the torch file at `path` is zeros or a zip cut short; then why, in words for
    a reason: torch's own ("legacy .tar format", "failed finding central directory") name
    neither. Called only when a load failed, so a whole file is never walked; reads the ends
    and one header per member, whatever the file's size."""
    if stand_in := file_stand_in(path):  # an LFS pointer was "Unsupported operand 118"
        return stand_in
    try:
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                return "empty: 0 bytes"  # torch says "EOFError"
            if handle.read(4) != ZIP_LOCAL:
                return zero_ends(path, tail=False)  # a legacy file may end in zero weights
            zeros = zero_ends(path)
            return zeros or _zip_cut_short(handle, os.fstat(handle.fileno()).st_size)
    except OSError:
        return ""  # torch's error says it


def _zip_cut_short(handle: BinaryIO, size: int) -> str:
    """ "" when the zip in `handle` has its end record; else "truncated: …" saying where the
    file stops: in its central directory, in a member (where the local headers hold the sizes;
    torch's writer puts them in a descriptor after the data instead), or before the directory."""
    handle.seek(max(0, size - ZIP_END_SEARCH))
    tail = handle.read()
    if ZIP_END in tail:
        return ""  # whole at the end: another damage, said by torch
    if ZIP_CENTRAL in tail:
        return (
            f"truncated: the file ({size} bytes) ends inside its zip's central directory; "
            "the zip's end record is gone"
        )
    position, last = 0, None
    for _ in range(MAX_ZIP_MEMBERS):
        handle.seek(position)
        header = handle.read(ZIP_LOCAL_HEADER.size)
        if len(header) < ZIP_LOCAL_HEADER.size or header[:4] != ZIP_LOCAL:
            break
        _, _, flags, _, _, _, _, stored, _, name_length, extra_length = ZIP_LOCAL_HEADER.unpack(
            header
        )
        name = handle.read(name_length).decode("utf-8", "replace")
        extra = handle.read(extra_length)
        if flags & 0x8:
            break  # sizes in a descriptor after the data: not walkable from here
        if stored == 0xFFFFFFFF:
            stored = _zip64_stored_size(extra, header)
        end = position + ZIP_LOCAL_HEADER.size + name_length + extra_length + stored
        if end > size:
            return f"truncated: its member {name!r} runs to byte {end}, the file holds {size}"
        position, last = end, name
    after = f" (after its member {last!r})" if last else ""
    return (
        f"truncated: the file ({size} bytes) ends{after} before its zip's central directory, "
        "the index a whole zip ends with"
    )


def _zip64_stored_size(extra: bytes, header: bytes) -> int:
    """The stored size of a member past 4 GB: in its zip64 extra field (id 1), after the
    uncompressed size where that too is marked 0xFFFFFFFF."""
    plain = ZIP_LOCAL_HEADER.unpack(header)[8]
    offset = 0
    while offset + 4 <= len(extra):
        kind, length = struct.unpack_from("<HH", extra, offset)
        if kind == 1:
            at = offset + 4 + (8 if plain == 0xFFFFFFFF else 0)
            return struct.unpack_from("<Q", extra, at)[0] if at + 8 <= len(extra) else 0
        offset += 4 + length
    return 0


def read_slip_state(path: str) -> dict[str, torch.Tensor]:
    """The weights in a file of SLIP's layout, `module.` prefixes stripped, SSL head included.

    Loads with `weights_only=True` allowing only `argparse.Namespace` (SLIP stores its run's
    arguments as one): any other object in the file is refused, with a one-line UsageError
    naming the file, as is a file without a `state_dict` of tensors.
    """
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # not a torch file, truncated, or a global we do not allow
        raise UsageError(
            f"--clip-pretrained: {path} is not a loadable SLIP file ({load_error_reason(error, path)[0]})"
        ) from None
    state = payload.get("state_dict") if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not all(
        isinstance(name, str) and isinstance(value, torch.Tensor) for name, value in state.items()
    ):
        raise UsageError(
            f"--clip-pretrained: {path} is not in SLIP's layout (no 'state_dict' of tensors)"
        )
    return {name.removeprefix("module."): value for name, value in state.items()}


def check_state_fits(
    model: nn.Module, state: dict[str, torch.Tensor], what: str, ignore: tuple[str, ...] = ()
) -> None:
    """`state` must hold exactly `model`'s tensors (names starting with `ignore` aside), in
    shape; otherwise a one-line UsageError naming `what` and the first missing or mismatched
    name."""
    expected = model.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            raise UsageError(f"{what}: missing {name} {tuple(tensor.shape)}")
        if state[name].shape != tensor.shape:
            raise UsageError(
                f"{what}: {name} is {tuple(state[name].shape)}, not {tuple(tensor.shape)}"
            )
    extra = [name for name in state if name not in expected and not name.startswith(ignore)]
    if extra:
        more = f" (+{len(extra) - 1} more)" if len(extra) > 1 else ""
        raise UsageError(f"{what}: unexpected {extra[0]}{more}")


def load_slip(model_name: str, path: str) -> SLIP:
    """SLIP `model_name` with the weights of the SLIP file `path` (its SSL head dropped)."""
    model = create_slip(model_name)
    state = read_slip_state(path)
    check_state_fits(
        model, state, f"--clip-pretrained: {path} does not fit {model_name}", (SSL_HEAD,)
    )
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith(SSL_HEAD)})
    return model

"""CLIP through open_clip, and deep visual prompt tuning of its ViT image tower.

`load_clip` takes any open_clip model name (plus the small configs shipped in
`cg3d/data/clip/`) and a pretrained tag or a local checkpoint file. Real weights are used
whenever they can be had; where they cannot (no network, no cache), CLIP is randomly
initialised with a loud `RandomClipWarning`, unless `require_pretrained` makes that an error.
`LoadedClip.weights` says which weights were loaded in a form that travels between machines
(`weights_identity`): a checkpoint records it, and loading checks the weights found against it.

`PromptedViT` runs open_clip's `VisionTransformer` with `prompts` learnable tokens inserted
right after the CLS token (after the positional embedding and `ln_pre`). Deep prompts are
replaced by a fresh set before every block, shallow ones are inserted once; either way they
are dropped before pooling, so with 0 prompts the output is exactly CLIP's image features.
"""

import functools
import math
import os
import warnings
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch
from torch import nn

from cg3d.errors import UsageError
from cg3d.files import file_sha256

NO_WEIGHTS = ("", "none", "random")


class RandomClipWarning(UserWarning):
    """CLIP runs with random weights: its embedding space means nothing outside this run."""


@dataclass
class LoadedClip:
    model: nn.Module
    preprocess: Any
    tokenizer: Any
    pretrained_loaded: bool
    weights: dict[str, str]  # weights_identity of what was loaded ({"kind": "random"} if none)


RANDOM_WEIGHTS = {"kind": "random"}


def weights_identity(pretrained: str) -> dict[str, str]:
    """How a checkpoint names the CLIP weights `pretrained` (a tag or a file) on any machine.

    A tag is its own name ({"kind": "tag", "tag": "openai"}: open_clip knows where to get it);
    a file is known by its name and content hash, plus the path it was read from
    ({"kind": "file", "name", "sha256", "path"}), since the path rarely survives a move.
    """
    if pretrained.lower() in NO_WEIGHTS:
        return dict(RANDOM_WEIGHTS)
    if not os.path.isfile(pretrained):
        return {"kind": "tag", "tag": pretrained}
    path = os.path.abspath(pretrained)
    stat = os.stat(path)
    sha256 = _sha256(path, stat.st_size, stat.st_mtime_ns)
    return {"kind": "file", "name": os.path.basename(path), "sha256": sha256, "path": path}


IDENTITY_KEYS = {"random": (), "tag": ("tag",), "file": ("name", "sha256", "path")}


def is_weights_identity(value: Any) -> bool:
    """Whether `value` is a `weights_identity` (say, read back from a checkpoint)."""
    return (
        isinstance(value, dict)
        and value.get("kind") in IDENTITY_KEYS
        and all(isinstance(value.get(key), str) for key in IDENTITY_KEYS[value["kind"]])
    )


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """A file's sha256, hashed once per version of the file (CLIP files are ~0.6 GB)."""
    return file_sha256(path)


def describe_weights(identity: dict[str, str]) -> str:
    """`identity` for a message: "tag 'openai'", "vit.pt (sha256 1f2e…)", "random weights"."""
    if identity.get("kind") == "file":
        return f"{identity['name']} (sha256 {identity['sha256']})"
    if identity.get("kind") == "tag":
        return f"open_clip tag {identity['tag']!r}"
    return "random weights"


def register_cg3d_configs() -> None:
    """Make the model configs shipped in `cg3d/data/clip/*.json` known to open_clip."""
    import open_clip

    folder = resources.files("cg3d.data").joinpath("clip")
    if str(folder) not in {str(path) for path in open_clip.factory._MODEL_CONFIG_PATHS}:
        open_clip.add_model_config(str(folder))


def load_clip(model_name: str, pretrained: str, require_pretrained: bool = False) -> LoadedClip:
    """open_clip model `model_name` with weights `pretrained` (tag, file path, or "none")."""
    import open_clip

    register_cg3d_configs()
    if model_name not in open_clip.list_models():
        raise UsageError(f"--clip-model: unknown open_clip model {model_name!r}")
    pretrained = pretrained or ""
    is_file = os.path.isfile(pretrained)
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained.lower() in NO_WEIGHTS:
        reason = "no pretrained weights were asked for (--clip-pretrained none)"
    elif not is_file and pretrained not in tags:
        known = ", ".join(tags) or "none"
        raise UsageError(
            f"--clip-pretrained: {pretrained!r} is neither a file nor a tag of {model_name} (tags: {known})"
        )
    else:
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained
            )
            tokenizer = open_clip.get_tokenizer(model_name)
            return LoadedClip(model, preprocess, tokenizer, True, weights_identity(pretrained))
        except Exception as error:  # open_clip raises RuntimeError/OSError/KeyError alike
            if is_file:
                raise UsageError(
                    f"--clip-pretrained: cannot load {pretrained} into {model_name}: {error}"
                ) from None
            reason = f"the weights {model_name}/{pretrained} cannot be had here ({error})"
    if require_pretrained:
        raise UsageError(f"--require-pretrained: {reason}")
    warnings.warn(
        f"CLIP {model_name} is RANDOMLY INITIALISED: {reason}. Results are not comparable "
        "with any published number (metrics say clip_pretrained: false).",
        RandomClipWarning,
        stacklevel=2,
    )
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=None)
    tokenizer = open_clip.get_tokenizer(model_name)
    return LoadedClip(model, preprocess, tokenizer, False, dict(RANDOM_WEIGHTS))


class PromptedViT(nn.Module):
    """Visual prompt tuning around an open_clip `VisionTransformer` (whose weights stay frozen)."""

    def __init__(self, visual: nn.Module, prompts: int = 5, deep: bool = True):
        super().__init__()
        if not hasattr(visual, "transformer") or not hasattr(visual, "_embeds"):
            raise UsageError(
                "visual prompts need an open_clip ViT image tower (not a ResNet/timm one)"
            )
        # not registered as a submodule: its weights belong to (and move with) the CLIP model
        self.__dict__["visual"] = visual
        self.count, self.deep = prompts, deep
        width = visual.transformer.width
        layers = len(visual.transformer.resblocks) if deep else 1
        patch = visual.patch_size
        patch_area = patch[0] * patch[1] if isinstance(patch, tuple) else patch * patch
        # VPT's initialisation: uniform, scaled like a Xavier init of the patch projection
        bound = math.sqrt(6.0 / float(3 * patch_area + width))
        self.prompts = nn.Parameter(torch.empty(layers, prompts, width).uniform_(-bound, bound))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        visual = self.visual
        x = visual._embeds(images)
        n = self.count
        if n:
            batch = x.shape[0]
            first = self.prompts[0].to(x.dtype).expand(batch, -1, -1)
            x = torch.cat([x[:, :1], first, x[:, 1:]], dim=1)
        batch_first = getattr(visual.transformer, "batch_first", True)
        for index, block in enumerate(visual.transformer.resblocks):
            if n and self.deep and index > 0:
                fresh = self.prompts[index].to(x.dtype).expand(x.shape[0], -1, -1)
                x = torch.cat([x[:, :1], fresh, x[:, 1 + n :]], dim=1)
            x = block(x) if batch_first else block(x.transpose(0, 1)).transpose(0, 1)
        if n:
            x = torch.cat([x[:, :1], x[:, 1 + n :]], dim=1)
        pooled, _ = visual._pool(x)
        return pooled @ visual.proj if visual.proj is not None else pooled

"""CLIP through open_clip or SLIP, and the image tower that visual prompts tune.

`load_clip` takes any open_clip model name (plus the small configs shipped in
`cg3d/data/clip/`) and a pretrained tag or a local checkpoint file, or a SLIP model
(cg3d.models.slip: SLIP-ViT-B-16, the public CG3D code's default) and SLIP's weights file. Real weights are used
whenever they can be had; where they cannot (no network, no cache), CLIP is randomly
initialised with a loud `RandomClipWarning`, unless `require_pretrained` makes that an error.
`LoadedClip.weights` says which weights were loaded in a form that travels between machines
(`weights_identity`): a checkpoint records it, and loading checks the weights found against it.

`vit_tower` gives either model's ViT image tower to cg3d.models.prompts.PromptedViT.
"""

import functools
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch
from torch import nn

from cg3d.errors import ConfigWarning, UsageError
from cg3d.files import file_sha256, file_version
from cg3d.models.prompts import VitTower
from cg3d.models.slip import SLIP, SLIP_CONFIGS, create_slip, image_transform, load_slip, tokenizer

NO_WEIGHTS = ("", "none", "random")


class RandomClipWarning(ConfigWarning):
    """CLIP runs with random weights: its embedding space means nothing outside this run."""


@dataclass
class LoadedClip:
    model: nn.Module
    preprocess: Any
    tokenizer: Any
    pretrained_loaded: bool
    weights: dict[str, str]  # weights_identity of what was loaded ({"kind": "random"} if none)


RANDOM_WEIGHTS = {"kind": "random"}
NO_WEIGHTS_LOADED = "none (random init)"  # about.json's clip_weights when CLIP holds none


def clip_about(config: dict[str, Any]) -> dict[str, Any]:
    """What an about.json says of a model's CLIP (training's and every eval's: one spelling):
    the CLIP model, whether pretrained weights were loaded, and which: their name as given (an
    open_clip tag or a file), or NO_WEIGHTS_LOADED when none were, also when the weights asked
    for could not be had and CLIP fell back to a random init. `config`: a model's config."""
    loaded = bool(config["clip_pretrained_loaded"])
    return {
        "clip_model": config["clip_model"],
        "clip_pretrained": loaded,
        "clip_weights": config["clip_pretrained"] if loaded else NO_WEIGHTS_LOADED,
    }


def loaded_weights_name(config: dict[str, Any]) -> str:
    """The name of the CLIP weights a model's config says were loaded, for a record a user
    reads (the benchmark's teacher, a hub card): the open_clip tag or the file's name, or
    NO_WEIGHTS_LOADED (clip_about's spelling) when CLIP fell back to a random init; never the
    tag asked for but not had. An older config with no identity names the weights it was given."""
    if not config.get("clip_pretrained_loaded"):
        return NO_WEIGHTS_LOADED
    weights = config.get("clip_weights") or {}
    return weights.get("tag") or weights.get("name") or str(config["clip_pretrained"])


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
    sha256 = _sha256(path, file_version(path))
    return {"kind": "file", "name": os.path.basename(path), "sha256": sha256, "path": path}


IDENTITY_KEYS = {"random": (), "tag": ("tag",), "file": ("name", "sha256", "path")}


def weights_content(identity: dict[str, str]) -> dict[str, str]:
    """A `weights_identity` less where the file was read from (`path`, `relative`): what the
    weights are, the same for a project moved or copied elsewhere, which reads its own copy."""
    return {key: value for key, value in identity.items() if key not in ("path", "relative")}


def same_weights(one: dict[str, str], other: dict[str, str]) -> bool:
    """Whether two `weights_identity`s name the same weights (`weights_content`)."""
    return weights_content(one) == weights_content(other)


def is_weights_identity(value: Any) -> bool:
    """Whether `value` is a `weights_identity` (say, read back from a checkpoint)."""
    return (
        isinstance(value, dict)
        and value.get("kind") in IDENTITY_KEYS
        and all(isinstance(value.get(key), str) for key in IDENTITY_KEYS[value["kind"]])
    )


@functools.lru_cache(maxsize=8)
def _sha256(path: str, version: tuple[int, ...]) -> str:
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
    """CLIP model `model_name` with weights `pretrained` (a tag, a file path, or "none").

    `model_name` is an open_clip model (plus the configs in `cg3d/data/clip/`) or a SLIP model
    (`SLIP_CONFIGS`: SLIP-ViT-B-16, whose weights are a file such as slip_base_100ep.pt).
    """
    pretrained = pretrained or ""
    if model_name in SLIP_CONFIGS:
        loaded, reason = _load_slip(model_name, pretrained)
    else:
        loaded, reason = _load_open_clip(model_name, pretrained)
    if loaded is not None:
        return loaded
    if require_pretrained:
        raise UsageError(f"--require-pretrained: {reason}")
    warnings.warn(
        f"CLIP {model_name} is RANDOMLY INITIALISED: {reason}. Results are not comparable "
        "with any published number (metrics say clip_pretrained: false).",
        RandomClipWarning,
        stacklevel=2,
    )
    if model_name in SLIP_CONFIGS:
        model = create_slip(model_name)
        return LoadedClip(*_slip_parts(model), False, dict(RANDOM_WEIGHTS))
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=None)
    tokenizer = open_clip.get_tokenizer(model_name)
    return LoadedClip(model, preprocess, tokenizer, False, dict(RANDOM_WEIGHTS))


def clip_embed_dim(model_name: str) -> int:
    """The joint embedding size of CLIP `model_name`, read from its config: nothing is built
    (a bigG or EVA-E tower is gigabytes; a point encoder needs only this number)."""
    if model_name in SLIP_CONFIGS:
        return SLIP_CONFIGS[model_name].embed_dim
    import open_clip

    register_cg3d_configs()
    config = open_clip.get_model_config(model_name)
    if config is None or "embed_dim" not in config:
        known = ", ".join(SLIP_CONFIGS)
        raise UsageError(
            f"--clip-model: unknown model {model_name!r} (neither open_clip's nor SLIP's: {known})"
        )
    return int(config["embed_dim"])


def check_weights_named(model_name: str, pretrained: str) -> None:
    """What `load_clip` refuses before loading anything: a SLIP file that is not there, or
    neither a file nor a tag of the open_clip model (a UsageError worded as load_clip's)."""
    if pretrained.lower() in NO_WEIGHTS or os.path.isfile(pretrained):
        return
    if model_name in SLIP_CONFIGS:
        _load_slip(model_name, pretrained)  # raises: no such file
    clip_embed_dim(model_name)  # an unknown model name fails here
    check_clip_tag(model_name, pretrained)


def check_clip_tag(model_name: str, pretrained: str) -> None:
    """`pretrained` must be a file or one of open_clip's pretrained tags of `model_name` (an
    open_clip model): else a one-line UsageError about --clip-pretrained listing the tags."""
    if os.path.isfile(pretrained):
        return
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained not in tags:
        known = ", ".join(tags) or "none"
        raise UsageError(
            f"--clip-pretrained: {pretrained!r} is neither a file nor a tag of {model_name} (tags: {known})"
        )


NOT_ASKED = "no pretrained weights were asked for (--clip-pretrained none)"


def _load_open_clip(model_name: str, pretrained: str) -> tuple[LoadedClip | None, str]:
    """open_clip's model with its weights, or None and why they cannot be had here."""
    import open_clip

    register_cg3d_configs()
    if model_name not in open_clip.list_models():
        known = ", ".join(SLIP_CONFIGS)
        raise UsageError(
            f"--clip-model: unknown model {model_name!r} (neither open_clip's nor SLIP's: {known})"
        )
    if pretrained.lower() in NO_WEIGHTS:
        return None, NOT_ASKED
    check_clip_tag(model_name, pretrained)
    is_file = os.path.isfile(pretrained)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained
        )
        tokenizer = open_clip.get_tokenizer(model_name)
        return LoadedClip(model, preprocess, tokenizer, True, weights_identity(pretrained)), ""
    except Exception as error:  # open_clip raises RuntimeError/OSError/KeyError alike
        if is_file:
            raise UsageError(
                f"--clip-pretrained: cannot load {pretrained} into {model_name}: {error}"
            ) from None
        return None, f"the weights {model_name}/{pretrained} cannot be had here ({error})"


def _load_slip(model_name: str, pretrained: str) -> tuple[LoadedClip | None, str]:
    """SLIP with the weights of file `pretrained` (SLIP has no download tags)."""
    if pretrained.lower() in NO_WEIGHTS:
        return None, NOT_ASKED
    if not os.path.isfile(pretrained):
        raise UsageError(
            f"--clip-pretrained: no file {pretrained!r}; {model_name} takes a SLIP weights file "
            "(slip_base_100ep.pt from facebookresearch/SLIP) or none"
        )
    model = load_slip(model_name, pretrained)
    return LoadedClip(*_slip_parts(model), True, weights_identity(pretrained)), ""


def _slip_parts(model: SLIP) -> tuple[SLIP, Any, Any]:
    return model, image_transform(model.config), tokenizer(model.config)


def vit_tower(clip_model: nn.Module) -> VitTower:
    """The image tower of `clip_model` (open_clip's or SLIP's) as visual prompts see it."""
    if isinstance(clip_model, SLIP):
        return clip_model.vit_tower()
    visual = clip_model.visual
    if not hasattr(visual, "transformer") or not hasattr(visual, "_embeds"):
        raise UsageError("visual prompts need a ViT image tower (not a ResNet one)")
    batch_first = getattr(visual.transformer, "batch_first", True)

    def run(block: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
        if batch_first:
            return block
        return lambda x: block(x.transpose(0, 1)).transpose(0, 1)

    def head(tokens: torch.Tensor) -> torch.Tensor:
        pooled, _ = visual._pool(tokens)
        return pooled @ visual.proj if visual.proj is not None else pooled

    patch, size = visual.patch_size, visual.image_size
    return VitTower(
        embed=visual._embeds,  # ln_pre included: open_clip's prompts go in after it
        norm_pre=nn.Identity(),
        blocks=[run(block) for block in visual.transformer.resblocks],
        head=head,
        width=visual.transformer.width,
        patch_area=patch[0] * patch[1] if isinstance(patch, tuple) else patch * patch,
        image_size=size[0] if isinstance(size, tuple) else size,
    )

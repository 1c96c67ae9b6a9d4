"""Convert other projects' released point encoders (ULIP, ULIP-2, OpenShape, Uni3D) into ours.

Each released file holds a state dict whose point side is, name for name, one of our registered
encoders (cg3d.models.encoders: ulip, ppat, uni3d) behind a prefix:

  ulip-pointbert, ulip2-pointbert   `state_dict`: module.point_encoder.*, module.pc_projection,
                                    module.logit_scale (and, for ULIP, SLIP's towers: ignored)
  openshape-pointbert               `state_dict`: module.ppat.*, module.proj.* (the logit scale
                                    is a separate `logit_scale` state dict)
  uni3d-{ti,s,b,l,g}                `module`: point_encoder.*, logit_scale (DDP's `module.`
                                    prefix where saved under it)

Conversion renames prefixes only; every tensor of the point side is checked by name and shape
first, the first missing, mismatched or unexpected one named in one line. The file written is
our checkpoint format (cg3d.models.checkpoint) holding the point side and the logit scale only:
the teacher (the text and image towers: SLIP ViT-B/16, OpenCLIP ViT-bigG-14, EVA02-E-14-plus)
is named by its open_clip model and pretrained tag, never embedded and never built here (a
bigG or EVA-E tower is gigabytes). `config` records the model card and the zero-shot protocol
(`card`, `protocol`); `source` the released file's name and sha256.
"""

import argparse
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cg3d.errors import UsageError
from cg3d.files import file_sha256
from cg3d.models.cards import ModelCard, get_card
from cg3d.models.slip import load_error_reason

# The width of each teacher's image tower: our checkpoint's (empty) visual prompts are
# (1, 0, width). Read from the towers' configs: open_clip ViT-bigG-14 vision_cfg.width,
# timm eva02_enormous_patch14_clip_224 (EVA02-E-14-plus) embed_dim, SLIP ViT-B/16.
TOWER_WIDTHS = {"ViT-bigG-14": 1664, "EVA02-E-14-plus": 1792, "SLIP-ViT-B-16": 768}
CLIP_LOGIT_SCALE = math.log(1 / 0.07)  # every project's initial value, where a file has none


@dataclass(frozen=True)
class PeerLayout:
    """Where a project's file keeps the point encoder, and how its names become ours."""

    section: str  # the payload key holding the state dict
    rename: Callable[[str], str | None]  # public name (no `module.`) → ours, None: not ours
    public: Callable[[str], str]  # our name → the public one (no `module.`), for messages
    logit_scale: Callable[[dict[str, Any]], torch.Tensor | None]
    description: str  # for messages: "a ULIP-2 checkpoint"


def _ulip_name(name: str) -> str | None:
    if name.startswith("point_encoder."):
        return name.removeprefix("point_encoder.")
    return name if name == "pc_projection" else None


def _ulip_public(name: str) -> str:
    return name if name == "pc_projection" else f"point_encoder.{name}"


def _openshape_name(name: str) -> str | None:
    return name if name.startswith(("ppat.", "proj.")) else None


def _uni3d_name(name: str) -> str | None:
    return name.removeprefix("point_encoder.") if name.startswith("point_encoder.") else None


def _scale_in(state_key: str, name: str) -> Callable[[dict[str, Any]], torch.Tensor | None]:
    """The logit scale at `payload[state_key][name]` (DDP's `module.` prefix or not)."""

    def find(payload: dict[str, Any]) -> torch.Tensor | None:
        state = payload.get(state_key)
        if not isinstance(state, dict):
            return None
        found = state.get(name, state.get(f"module.{name}"))
        return found if isinstance(found, torch.Tensor) and found.numel() == 1 else None

    return find


LAYOUTS = {
    "ulip-pointbert": PeerLayout(
        "state_dict",
        _ulip_name,
        _ulip_public,
        _scale_in("state_dict", "logit_scale"),
        "a ULIP checkpoint",
    ),
    "ulip2-pointbert": PeerLayout(
        "state_dict",
        _ulip_name,
        _ulip_public,
        _scale_in("state_dict", "logit_scale"),
        "a ULIP-2 checkpoint",
    ),
    "openshape-pointbert": PeerLayout(
        "state_dict",
        _openshape_name,
        str,
        _scale_in("logit_scale", "logit_scale"),
        "an OpenShape PointBERT checkpoint",
    ),
    **{
        f"uni3d-{size}": PeerLayout(
            "module",
            _uni3d_name,
            "point_encoder.".__add__,
            _scale_in("module", "logit_scale"),
            f"a Uni3D-{size} checkpoint",
        )
        for size in ("ti", "s", "b", "l", "g")
    },
}


def load_released(path: Path, allow_pickle: bool = False) -> Any:
    """What another project's released `--checkpoint` file holds (ULIP, OpenShape, Uni3D, the
    CG3D authors' release), read once, with `weights_only=True` allowing exactly
    `argparse.Namespace` beyond tensors and containers (ULIP, like SLIP, saves its run's `args`
    beside the weights); `allow_pickle` reads any object (trusted files only). A missing or
    unreadable file is one line naming it, with the --allow-pickle hint where that would read it."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--checkpoint: no file {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as error:
        reason, refused = load_error_reason(error, path)
        hint = "; --allow-pickle for a trusted file" if refused and not allow_pickle else ""
        raise UsageError(
            f"--checkpoint: {path} is not a readable checkpoint ({reason}{hint})"
        ) from None


def read_payload(path: Path, allow_pickle: bool = False) -> dict[str, Any]:
    """The dict a released file holds (`load_released`)."""
    payload = load_released(path, allow_pickle)
    if not isinstance(payload, dict):
        raise UsageError(f"--checkpoint: {path} is not a checkpoint dict")
    return payload


def card_encoder(card: ModelCard, encoder_params: dict[str, Any] | None = None) -> nn.Module:
    """The encoder of `card` (with `encoder_params` overrides of its size), randomly initialised;
    build it under `torch.device("meta")` for its layout alone."""
    from cg3d.models.encoders import build_encoder

    params = {"in_channels": card.point_channels} | (encoder_params or {})
    return build_encoder(card.encoder, card.embed_dim, params)


def expected_layout(
    card: ModelCard, encoder_params: dict[str, Any] | None = None
) -> dict[str, tuple[int, ...]]:
    """Our encoder's tensors (name → shape) for `card`, built on the meta device: no memory."""
    with torch.device("meta"):
        encoder = card_encoder(card, encoder_params)
    return {name: tuple(tensor.shape) for name, tensor in encoder.state_dict().items()}


def point_encoder(checkpoint: dict[str, Any]) -> nn.Module:
    """The point encoder of a converted checkpoint dict (`peer_checkpoint`'s, or read back with
    `read_checkpoint`), with its weights, in eval mode: point features without any tower."""
    config = checkpoint["config"]
    card = get_card(config["card"])
    encoder = card_encoder(card, config["encoder_params"])
    prefix = "point_encoder."
    state = {k[len(prefix) :]: v for k, v in checkpoint["model"].items() if k.startswith(prefix)}
    encoder.load_state_dict(state)
    return encoder.eval()


def point_state(
    name: str, payload: dict[str, Any], path: Path, encoder_params: dict[str, Any] | None = None
) -> dict[str, torch.Tensor]:
    """The point encoder's tensors of a released `name` file under our names, checked against
    our encoder: the first missing, mismatched or unexpected tensor is a one-line UsageError."""
    card, layout = get_card(name), LAYOUTS[name]
    state = payload.get(layout.section)
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise UsageError(
            f"--checkpoint: {path} is not {layout.description} (no {layout.section!r} state dict)"
        )
    ours: dict[str, torch.Tensor] = {}
    public: dict[str, str] = {}  # our name → the file's, for messages
    for key, tensor in state.items():
        renamed = layout.rename(key.removeprefix("module."))
        if renamed is not None:
            ours[renamed], public[renamed] = tensor, key
    expected = expected_layout(card, encoder_params)
    prefix = "module." if any(k.startswith("module.") for k in state) else ""
    for key, shape in expected.items():
        if key not in ours:
            raise UsageError(
                f"--checkpoint: {path} is not {layout.description}: "
                f"no tensor {prefix}{layout.public(key)} in {layout.section!r}"
            )
        tensor = ours[key]
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape:
            found = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor)
            raise UsageError(
                f"--checkpoint: {path} is not {layout.description}: "
                f"{public[key]} is {found}, not {shape}"
            )
    unexpected = [public[key] for key in ours if key not in expected]
    if unexpected:
        raise UsageError(
            f"--checkpoint: {path} is not {layout.description}: unexpected tensor {unexpected[0]}"
        )
    return {key: ours[key].detach().clone().contiguous() for key in expected}


def teacher_weights(card: ModelCard, clip_pretrained: str | None) -> tuple[str, dict[str, str]]:
    """What the converted checkpoint names as its teacher's weights, and their identity: the
    card's open_clip tag, another tag of that model, or a local weights file (known by name and
    sha256, as a trained run records it: SLIP's, or an offline copy of the open_clip file).

    Nothing is loaded: a file is hashed, a tag checked against open_clip's list. ULIP's teacher
    is SLIP's file; without one the card's file name is recorded, and loading the model needs
    `--clip-pretrained` pointing at it.
    """
    from cg3d.models.clip import check_clip_tag, weights_identity
    from cg3d.models.slip import SLIP_CONFIGS

    wanted = clip_pretrained or card.teacher_pretrained
    if os.path.isfile(wanted):
        identity = weights_identity(wanted)
        return identity["path"], identity
    if clip_pretrained is not None and clip_pretrained != card.teacher_pretrained:
        if card.teacher_model in SLIP_CONFIGS:
            raise UsageError(f"--clip-pretrained: no file {clip_pretrained} (SLIP's weights file)")
        check_clip_tag(card.teacher_model, clip_pretrained)
    return wanted, {"kind": "tag", "tag": wanted}


def peer_checkpoint(
    name: str,
    path: Path,
    allow_pickle: bool = False,
    encoder_params: dict[str, Any] | None = None,
    clip_pretrained: str | None = None,
) -> dict[str, Any]:
    """Our checkpoint dict (cg3d.models.checkpoint's format) for the released `name` file.

    `clip_pretrained` names the teacher's weights (see `teacher_weights`; default: the card's
    tag). `encoder_params` overrides the card's encoder size (recorded in the config, so the
    model is rebuilt the same): for files of smaller widths or depths, as the tests write.
    """
    from cg3d.models.checkpoint import FORMAT

    card = get_card(name)
    path = Path(path)
    payload = read_payload(path, allow_pickle)
    points = point_state(name, payload, path, encoder_params)
    pretrained, identity = teacher_weights(card, clip_pretrained)
    scale = LAYOUTS[name].logit_scale(payload)
    logit_scale = (
        scale.detach().float().reshape(()).clone()
        if scale is not None
        else torch.tensor(CLIP_LOGIT_SCALE)
    )
    config = {
        # ModelConfig's fields (cg3d.models.model)
        "encoder": card.encoder,
        "encoder_params": dict(encoder_params or {}),
        "clip_model": card.teacher_model,
        "clip_pretrained": pretrained,
        "require_pretrained": True,
        "prompts": 0,
        "deep_prompts": False,
        "train_logit_scale": False,
        "n_points": card.n_points,
        "point_channels": card.point_channels,
        "classes": [],
        # what the checkpoint adds: the teacher's weights by name (open_clip fetches a tag)
        "clip_pretrained_loaded": True,
        "clip_weights": identity,
        # a converted model: its card (published numbers, licence) and zero-shot protocol
        "card": card.name,
        "protocol": card.protocol,
    }
    width = TOWER_WIDTHS[card.teacher_model]
    model = {f"point_encoder.{key}": tensor for key, tensor in points.items()}
    model["visual.prompts"] = torch.zeros(1, 0, width)
    model["clip.logit_scale"] = logit_scale
    return {
        "format": FORMAT,
        "config": config,
        "full_clip": False,
        "model": model,
        # the released file it came from (beside the config, which holds the model's fields)
        "source": {"name": path.name, "sha256": file_sha256(path), "repository": card.repository},
    }


def convert_peer(
    name: str,
    path: Path,
    out: Path,
    allow_pickle: bool = False,
    encoder_params: dict[str, Any] | None = None,
    clip_pretrained: str | None = None,
) -> dict[str, Any]:
    """Write the released `name` file at `path` to `out` as our checkpoint; returns its dict."""
    from cg3d.models.checkpoint import weights_beside, write_payload

    checkpoint = peer_checkpoint(name, path, allow_pickle, encoder_params, clip_pretrained)
    # a teacher file in the project is spelled from `out`'s folder too, as `save_checkpoint`
    # does: the project moved or copied, the checkpoint reads its own copy of the file
    weights = weights_beside(checkpoint, Path(out))
    checkpoint["config"] = {**checkpoint["config"], "clip_weights": weights}
    write_payload(Path(out), checkpoint)
    return checkpoint

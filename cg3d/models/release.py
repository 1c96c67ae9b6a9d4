"""Import the CG3D authors' released pre-training checkpoints as our checkpoints.

A released file (`tools/builder.save_checkpoint` of deeptibhegde/CLIP-goes-3D) is a dict:
  base_model          `PointTransformerProject`'s state dict (Point-BERT; `module.`-prefixed
                      when saved under DDP), its fine-tuning head `cls_head_finetune.*` included
  visual_clip_model   the prompted SLIP image tower's state dict: timm ViT-B/16's tensors, plus
                      `prompt_embeddings` (1, 5, 768), inserted before the first block, and
                      `deep_prompt_embeddings` (11, 5, 768), one set for each later block
  optimizer, epoch, metrics, best_metrics    (not needed here)

The rest of the model (SLIP's text tower, projections and temperature) is SLIP's file, which the
converted checkpoint names by sha256 like any CLIP weights file. Our `pointtransformer-base` is
`PointTransformerProject` key for key and our deep prompts are the two prompt tensors stacked,
so the conversion renames nothing but `module.`; every tensor is checked by name and shape
first, and the tower's ViT weights against SLIP's (they are frozen in CG3D's training).
"""

from pathlib import Path

import torch

from cg3d.errors import UsageError
from cg3d.models.model import CG3D, build_model, model_config
from cg3d.models.peers import load_released
from cg3d.models.slip import check_state_fits
from cg3d.params import TrainConfig
from cg3d.protocol import class_names

ENCODER = "pointtransformer-base"  # Point-BERT's PointTransformerProject (issue 17.2)
CLIP_MODEL = "SLIP-ViT-B-16"
SECTIONS = ("base_model", "visual_clip_model")
PROMPT = "prompt_embeddings"
DEEP_PROMPTS = "deep_prompt_embeddings"
FINETUNE_HEAD = "cls_head_finetune."  # the classification head: not part of the features


def read_release(path: Path, allow_pickle: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """The two state dicts of a released checkpoint, `module.` prefixes stripped.

    Read as every released file is (`peers.load_released`: `weights_only=True` unless
    `allow_pickle`, for a trusted file holding other objects, e.g. numpy scalars in its
    metrics). A missing file, a file torch cannot read, or one without the release's sections is
    a one-line UsageError naming the file.
    """
    path = Path(path)
    payload = load_released(path, allow_pickle)
    sections = {}
    for section in SECTIONS:
        state = payload.get(section) if isinstance(payload, dict) else None
        if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
        ):
            raise UsageError(
                f"--checkpoint: {path} is not a released CG3D checkpoint (no {section!r} state dict)"
            )
        sections[section] = {name.removeprefix("module."): value for name, value in state.items()}
    return sections


def release_layout(model: CG3D) -> dict[str, dict[str, tuple[int, ...]]]:
    """The tensors (name → shape) a release must hold for `model`, section by section."""
    visual = {name: tuple(t.shape) for name, t in model.clip.visual.state_dict().items()}
    layers, count, width = model.visual.prompts.shape
    visual[PROMPT] = (1, count, width)
    if model.visual.deep:
        visual[DEEP_PROMPTS] = (layers - 1, count, width)
    points = {name: tuple(t.shape) for name, t in model.point_encoder.state_dict().items()}
    return {"base_model": points, "visual_clip_model": visual}


def release_model(
    path: Path,
    clip_pretrained: str,
    n_points: int = 8192,
    clip_model: str = CLIP_MODEL,
    encoder: str = ENCODER,
    allow_pickle: bool = False,
) -> CG3D:
    """Our CG3D model holding the released checkpoint `path`, on the SLIP file `clip_pretrained`.

    A tensor missing, unexpected or of another shape, or a tower whose weights are not the SLIP
    file's, is a one-line UsageError naming the first such tensor.
    """
    release = read_release(path, allow_pickle)
    prompt = release["visual_clip_model"].get(PROMPT)
    if prompt is None or prompt.ndim != 3:
        raise UsageError(f"--checkpoint: {path}: visual_clip_model has no {PROMPT} (1, P, W)")
    params = TrainConfig(
        encoder=encoder,
        # the released weights chose their centres by the public misc.fps (pointnet2_ops)
        encoder_params={"kernel_fps": True},
        clip_model=clip_model,
        clip_pretrained=clip_pretrained,
        require_pretrained=True,
        prompts=prompt.shape[1],
        deep_prompts=DEEP_PROMPTS in release["visual_clip_model"],
        n_points=n_points,
    )
    config = model_config(params, class_names("shapenet55"))  # what the authors trained on
    model = build_model(config)
    layout = release_layout(model)
    points = {k: v for k, v in release["base_model"].items() if not k.startswith(FINETUNE_HEAD)}
    check_state_fits(model.point_encoder, points, f"--checkpoint: {path}: base_model")
    tower, expected = release["visual_clip_model"], layout["visual_clip_model"]
    for name in (PROMPT, DEEP_PROMPTS):
        if name in expected and tuple(tower[name].shape) != expected[name]:
            raise UsageError(
                f"--checkpoint: {path}: visual_clip_model: {name} is "
                f"{tuple(tower[name].shape)}, not {expected[name]}"
            )
    vit = {k: v for k, v in tower.items() if k not in (PROMPT, DEEP_PROMPTS)}
    check_state_fits(model.clip.visual, vit, f"--checkpoint: {path}: visual_clip_model")
    for name, tensor in model.clip.visual.state_dict().items():
        if not torch.equal(vit[name].to(tensor.dtype), tensor):
            raise UsageError(
                f"--checkpoint: {path}: visual_clip_model {name} is not {clip_pretrained}'s: "
                "the release was trained on other SLIP weights (--clip-pretrained)"
            )
    model.point_encoder.load_state_dict(points)
    stacked = torch.cat([tower[PROMPT], tower.get(DEEP_PROMPTS, tower[PROMPT][:0])])
    with torch.no_grad():
        model.visual.prompts.copy_(stacked)
    return model

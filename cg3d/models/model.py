"""The CG3D model: a point encoder trained into the embedding space of a prompt-tuned CLIP.

CLIP's text tower and image weights are frozen; only the point encoder and the visual prompts
train (and the logit scale, if `train_logit_scale`). All three encoders return L2-normalised
features in CLIP's joint space, so zero-shot classification is a dot product with text features.
"""

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cg3d.errors import UsageError
from cg3d.models.clip import LoadedClip, clip_embed_dim, load_clip, vit_tower
from cg3d.models.encoders import build_encoder, points_needed
from cg3d.models.prompts import PromptedViT
from cg3d.params import TrainConfig


def check_cuda(value: str, name: str) -> None:
    """One line naming parameter `name` when its device `value` (cuda, cuda:N) is one this
    torch cannot reach, and why: a torch built without CUDA (pip's CPU wheel, an HPC module's
    CPU build), no GPU or driver seen, or fewer GPUs than N. torch's own error came at the
    first tensor moved, a traceback ("Found no NVIDIA driver", "Torch not compiled with CUDA
    enabled")."""
    if not value.startswith("cuda"):
        return
    if torch.version.cuda is None:
        raise UsageError(
            f"{name}: {value} asked for, but this torch ({torch.__version__}) is built without"
            " CUDA: install a CUDA build of torch (pytorch.org's install selector) or set"
            f" {name}: cpu"
        )
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = torch.device(value).index or 0
    if index >= count:
        seen = f"{count} GPU(s), cuda:0 to cuda:{count - 1}" if count else "no GPU"
        raise UsageError(
            f"{name}: {value} asked for, but torch {torch.__version__} (CUDA"
            f" {torch.version.cuda}) sees {seen} (a driver, CUDA_VISIBLE_DEVICES, the job's"
            f" GPUs); set {name}: cpu"
        )


@dataclass
class ModelConfig:
    """Everything needed to rebuild the model (stored in every checkpoint as `model.config`).

    Every field but `classes` is the `train:` param of the same name (`TrainConfig`), checked
    by its rules; there are no defaults here: a config comes from a run's params
    (`model_config`) or from a checkpoint's stored one (`checkpoint_config`).
    """

    encoder: str  # a registered encoder name (encoder_names())
    encoder_params: dict[str, Any]  # overrides of its size
    clip_model: str  # an open_clip model, or SLIP's (cg3d.models.slip)
    clip_pretrained: str  # an open_clip tag, a weights file, or "none"
    require_pretrained: bool
    prompts: int
    deep_prompts: bool
    train_logit_scale: bool
    n_points: int
    point_channels: int  # 3: xyz; 6: xyz and rgb (points sampled with sample.colors)
    classes: list[str]

    def __post_init__(self) -> None:
        """Wrong types or ranges are a one-line UsageError naming the field."""
        values = {name: getattr(self, name) for name in train_fields()}
        try:
            TrainConfig(**values)  # checked as the train params they are: types and bounds
        except UsageError as error:
            raise UsageError(f"model config: {error}") from None
        if not isinstance(self.classes, list) or not all(
            isinstance(name, str) for name in self.classes
        ):
            raise UsageError("model config: classes must be a list of names")
        if self.point_channels not in (3, 6):
            raise UsageError("model config: point_channels must be 3 (xyz) or 6 (xyz, rgb)")
        needed = points_needed(self.encoder, self.encoder_params)  # a wrong name fails here too
        if self.n_points < needed:
            raise UsageError(
                f"n_points: encoder {self.encoder!r} needs at least {needed} points per shape "
                f"(its sampled centres and neighbours), got {self.n_points}"
            )


def train_fields() -> list[str]:
    """The fields of ModelConfig that are `train:` params (all but the classes)."""
    return [f.name for f in dataclasses.fields(ModelConfig) if f.name != "classes"]


# What CLIP's towers provide: a lazily built model builds them on first use of any of these.
TOWER_ATTRIBUTES = ("clip", "visual", "preprocess", "tokenizer")
# Opens a lazy model's towers: attaches them (`attach_towers`) and loads their weights.
TowerOpener = Callable[["CG3D"], None]
# Held while a lazy model's towers are built: a second thread that asked for them meanwhile (a
# web service's concurrent first requests) found the opener taken and no tower yet, and raised
# AttributeError: "'CG3D' object has no attribute 'clip'". Reentrant: the opener reads them.
_TOWERS_OPENING = threading.RLock()


TRAINED = ("point_encoder.", "visual.prompts", "clip.logit_scale")  # what training changes


class CG3D(nn.Module):
    """Point encoder + frozen CLIP with visual prompts. `config` is a plain dict (see ModelConfig).

    Built for training (`towers` None), CLIP is loaded at once. Loaded from a checkpoint, the
    towers are opened by `towers` on first use of `clip`, `visual`, `preprocess` or `tokenizer`
    (text, images, the logit scale): point features need no CLIP, and a bigG teacher's tower is
    gigabytes that embedding points never touches.
    """

    def __init__(self, config: ModelConfig, towers: TowerOpener | None = None):
        super().__init__()
        self.tower_state: dict[str, torch.Tensor] = {}  # a lazy model's tower weights, to load
        if towers is None:
            # Eager: CLIP first, then the prompts, then the point encoder, the order (and so the
            # random draws) of every model trained so far.
            clip = load_clip(config.clip_model, config.clip_pretrained, config.require_pretrained)
            self.attach_towers(clip, config)
            identity = {
                "clip_pretrained_loaded": clip.pretrained_loaded,
                "clip_weights": clip.weights,
            }
        else:
            identity = {}  # the checkpoint's own record is put in by whoever loads it
        self.point_encoder = build_encoder(
            config.encoder,
            clip_embed_dim(config.clip_model),
            {**config.encoder_params, "in_channels": config.point_channels},
        )
        # what a checkpoint needs beyond the config: were CLIP's weights real, and which ones
        self.config = dataclasses.asdict(config) | identity
        self._model_config = config
        self._open_towers = towers
        self.eval()

    def attach_towers(self, clip: LoadedClip, config: ModelConfig) -> None:
        """Put CLIP's towers and the visual prompts on this model (frozen, as in training)."""
        self.clip = clip.model
        self.preprocess = clip.preprocess
        self.tokenizer = clip.tokenizer
        self.clip.requires_grad_(False)
        self.visual = PromptedViT(vit_tower(self.clip), config.prompts, config.deep_prompts)
        self.clip.logit_scale.requires_grad_(config.train_logit_scale)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: a tower not built yet is built here, once.
        if name in TOWER_ATTRIBUTES and name not in self.__dict__.get("_modules", {}):
            with _TOWERS_OPENING:  # another thread may be building them: wait for it
                self._build_towers()
            if name in self.__dict__ or name in self.__dict__.get("_modules", {}):
                return getattr(self, name)
        return super().__getattr__(name)

    def _build_towers(self) -> None:
        """Open a lazy model's towers, unless they are already (under `_TOWERS_OPENING`)."""
        opener = self.__dict__.get("_open_towers")
        if opener is None:
            return
        device = self.device()
        self.__dict__["_open_towers"] = None  # attach_towers reads self.clip back
        try:
            opener(self)
        except BaseException:
            self.__dict__["_open_towers"] = opener  # a retry fails the same way
            raise
        self.tower_state = {}
        for tower in (self.clip, self.visual):  # frozen in eval mode, where points are
            tower.to(device).eval()

    def open_towers(self) -> "CG3D":
        """Build CLIP's towers now if they are not yet (text and images build them anyway)."""
        self.clip  # noqa: B018 (the attribute's lookup builds them)
        return self

    @property
    def towers_built(self) -> bool:
        """Whether CLIP's towers exist yet (a lazily loaded model builds them on first use)."""
        return self.__dict__.get("_open_towers") is None

    @property
    def logit_scale(self) -> torch.Tensor:
        """CLIP's temperature, exp of the stored log value (frozen unless train_logit_scale)."""
        return self.clip.logit_scale.exp()

    def train(self, mode: bool = True) -> "CG3D":
        """Only the point encoder switches to training mode: CLIP stays frozen in eval mode."""
        super().train(False)
        self.point_encoder.train(mode)
        self.training = mode
        return self

    def device(self) -> torch.device:
        return next(self.point_encoder.parameters()).device

    def encode_points(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, C) points (xyz, and rgb when `point_channels` is 6) → (B, D) normalised
        features."""
        return F.normalize(self.point_encoder(points).float(), dim=-1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) images, already `preprocess`ed → (B, D) normalised, through the prompts."""
        return F.normalize(self.visual(images).float(), dim=-1)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts).to(self.device())

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Captions → (B, D) normalised CLIP text features (the text tower is frozen)."""
        return F.normalize(self.clip.encode_text(self.tokenize(texts)).float(), dim=-1)

    def encode_text_raw(self, texts: list[str]) -> torch.Tensor:
        """Captions → (B, D) CLIP text features before normalisation (the public eval.py
        compares points with these: the `cg3d-public` protocol)."""
        return self.clip.encode_text(self.tokenize(texts)).float()

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The weights training changes: point encoder, prompts and the logit scale (a lazy
        model's from the weights it will load: nothing is built to list them)."""
        # tower_state holds a lazy model's tower weights until its towers are built (then {})
        state = self.state_dict() | self.tower_state
        return {name: tensor for name, tensor in state.items() if name.startswith(TRAINED)}


def build_model(config: ModelConfig, towers: TowerOpener | None = None) -> CG3D:
    """The CG3D model for `config`, in eval mode on the CPU; with `towers`, CLIP's towers are
    opened by it on first use (see CG3D)."""
    return CG3D(config, towers)


def model_config(params: TrainConfig, classes: list[str]) -> ModelConfig:
    """The model config of a training run's params (`train:`) and its classes: the one place a
    ModelConfig is made from params (a field TrainConfig lacks is an error, never a default)."""
    return ModelConfig(
        **{name: getattr(params, name) for name in train_fields()}, classes=list(classes)
    )

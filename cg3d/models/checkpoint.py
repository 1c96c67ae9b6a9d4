"""Checkpoints: `torch.save` of plain state dicts and a config dict, read with weights_only=True.

Layout of a checkpoint file (a dict):
  format       "cg3d-checkpoint-1"
  config       the model's config dict: ModelConfig fields, plus `clip_pretrained_loaded` and
               `clip_weights`, the identity of CLIP's weights (clip.weights_identity: an open_clip
               tag, or a file's name and sha256; checkpoints before it lack this key)
  full_clip    True when `model` holds CLIP's whole state: always for a randomly initialised
               CLIP (a fresh random init would differ), and for a self-contained export
               (`export_checkpoint(..., embed_clip=True)`). Otherwise only the trained part
               (point encoder, prompts, logit scale) is stored and CLIP is reloaded from the
               weights `clip_weights` names, checked against it
  model        the state dict (see above)
  training     optional: optimisers, schedulers, RNG states, position (what `--resume` needs)
"""

import dataclasses
import os
import re
import warnings
from pathlib import Path
from typing import Any, BinaryIO

import torch

from cg3d.errors import UsageError
from cg3d.files import atomic_path
from cg3d.models.clip import (
    RANDOM_WEIGHTS,
    RandomClipWarning,
    describe_weights,
    is_weights_identity,
    weights_identity,
)
from cg3d.models.model import CG3D, ModelConfig, build_model

FORMAT = "cg3d-checkpoint-1"
# keys of a stored config that CG3D adds to ModelConfig's fields
DERIVED_KEYS = ("clip_pretrained_loaded", "clip_weights")
# Model config keys added after the first checkpoints were written, with the value their absence
# meant then (ModelConfig has no defaults: a default that moved would change an old model).
ADDED_KEYS = {"point_channels": 3}
POINT_AT_WEIGHTS = "point at them with --clip-pretrained PATH"


def save_checkpoint(
    path: Path, model: CG3D, training: dict[str, Any] | None = None, embed_clip: bool = False
) -> None:
    """Write `model` (and optional training state) to `path` atomically.

    `embed_clip` stores CLIP's weights too, so the file loads with no CLIP weights around.
    """
    full_clip = embed_clip or not model.config["clip_pretrained_loaded"]
    state = model.state_dict() if full_clip else model.trainable_state()
    payload = {
        "format": FORMAT,
        "config": model.config,
        "full_clip": full_clip,
        "model": {name: tensor.detach().cpu() for name, tensor in state.items()},
    }
    if training is not None:
        payload["training"] = training
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Saved through an open handle, not the temp path: torch names the zip's records after the
    # file it is given (`.last.pt.<pid>.tmp/data/0`), a handle gets the fixed name `archive/`,
    # so one run gives the same bytes every time. Streamed: no second copy in memory.
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        writer = _WriteErrors(handle)
        try:
            torch.save(payload, writer)
        except RuntimeError:
            if writer.error is None:
                raise
            raise writer.error from None  # atomic_path names `path` in it, for one line


class _WriteErrors:
    """A file handle that keeps the OSError its write raised: torch.save reports a failed
    write (a full disk) as a RuntimeError with no errno and no file name."""

    def __init__(self, handle: BinaryIO):
        self.handle, self.error = handle, None

    def write(self, data: bytes) -> int:
        try:
            return self.handle.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.handle.flush()


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint dict at `path`; a missing, corrupt or foreign file is a UsageError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, not a torch file, unsafe pickle content
        raise UsageError(f"{path}: not a readable checkpoint ({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UsageError(f"{path}: not a CG3D checkpoint (no {FORMAT!r} format tag)")
    state = payload.get("model")
    if not isinstance(state, dict) or not all(
        isinstance(name, str) and isinstance(tensor, torch.Tensor) for name, tensor in state.items()
    ):
        raise UsageError(f"{path}: broken CG3D checkpoint (its 'model' is not a state dict)")
    if not isinstance(payload.get("config"), dict) or not isinstance(
        payload.get("full_clip"), bool
    ):
        raise UsageError(f"{path}: broken CG3D checkpoint (no 'config' dict or 'full_clip' flag)")
    check_config_shape(payload["config"], path)
    for name, tensor in state.items():  # NaN weights answer NaN for everything, with exit 0
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UsageError(f"{path}: the weight {name} holds NaN or infinite values")
    return payload


# A checkpoint's config is data from the file: its shape is bounded before anything walks it.
# Real ones are a few levels deep and hold a few thousand values (LVIS: 1,156 class names).
MAX_CONFIG_DEPTH = 16
MAX_CONFIG_VALUES = 200_000
PLAIN_VALUES = (str, int, float, bool, type(None))


def check_config_shape(config: Any, path: Path) -> None:
    """UsageError naming `path` unless the config is plain data (dicts, lists, tuples of
    strings, numbers, booleans, None) at most MAX_CONFIG_DEPTH deep with at most
    MAX_CONFIG_VALUES values counted as a walk meets them: a pickle can share one list
    many times over (`[[x] * 10] * 10`...), so a 1 KB file expands to 10^30 values for any
    recursive walk, which this count stops at the bound. Iterative: no RecursionError."""
    stack, seen = [(config, 1)], 1
    while stack:
        value, depth = stack.pop()
        if isinstance(value, PLAIN_VALUES):
            continue
        if not isinstance(value, dict | list | tuple):
            raise UsageError(f"{path}: its model config holds a {type(value).__name__}")
        if depth > MAX_CONFIG_DEPTH:
            raise UsageError(f"{path}: its model config nests deeper than {MAX_CONFIG_DEPTH}")
        seen += 2 * len(value) if isinstance(value, dict) else len(value)
        if seen > MAX_CONFIG_VALUES:
            raise UsageError(f"{path}: its model config holds more than {MAX_CONFIG_VALUES} values")
        items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        stack.extend((item, depth + 1) for item in items)


def _first(names: list[str], limit: int = 3) -> str:
    """`names` for a one-line message: the first `limit`, then how many more."""
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def checkpoint_config(payload: dict[str, Any], path: Path) -> ModelConfig:
    """The ModelConfig a checkpoint's config describes; unknown keys or bad values name the file."""
    values = ADDED_KEYS | {
        key: value for key, value in payload["config"].items() if key not in DERIVED_KEYS
    }
    names = {item.name for item in dataclasses.fields(ModelConfig)}
    unknown, missing = sorted(set(values) - names), sorted(names - set(values))
    if unknown:
        raise UsageError(f"{path}: its model config has unknown keys: {_first(unknown)}")
    if missing:
        raise UsageError(f"{path}: its model config lacks the keys: {_first(missing)}")
    stored = payload["config"]
    if not isinstance(stored.get("clip_pretrained_loaded", False), bool) or not (
        is_weights_identity(stored.get("clip_weights", RANDOM_WEIGHTS))
    ):
        raise UsageError(f"{path}: its model config has a malformed clip_weights record")
    try:
        return ModelConfig(**values)
    except UsageError as error:
        raise UsageError(f"{path}: {error}") from None


def recorded_weights(config: dict[str, Any]) -> dict[str, str] | None:
    """The identity of the CLIP weights a checkpoint was trained with; None where not recorded."""
    if "clip_weights" in config:
        return config["clip_weights"]
    # older checkpoints: only "was it random", and the path or tag the run was given
    return None if config.get("clip_pretrained_loaded") else dict(RANDOM_WEIGHTS)


def check_given_weights(recorded: dict[str, str] | None, given: str, path: Path) -> None:
    """`given` (a tag or a file) must be the weights `recorded`: a mismatch is a UsageError."""
    if recorded is None:
        return  # an older checkpoint: nothing to check against
    found = weights_identity(given)
    if {found["kind"], recorded["kind"]} == {"tag", "file"}:  # no hash to compare
        warnings.warn(
            f"--clip-pretrained: cannot check {describe_weights(found)} against the "
            f"{describe_weights(recorded)} {path} was trained with; using them unchecked",
            stacklevel=3,
        )
        return
    same = {"random": "kind", "tag": "tag", "file": "sha256"}[recorded["kind"]]
    if found["kind"] != recorded["kind"] or found.get(same) != recorded.get(same):
        raise UsageError(
            f"--clip-pretrained: {path} was trained with {describe_weights(recorded)}, "
            f"not {describe_weights(found)}"
        )


def weights_to_load(payload: dict[str, Any], path: Path, clip_pretrained: str | None) -> str:
    """The tag or file to rebuild CLIP from, for a checkpoint that does not hold CLIP itself."""
    config = payload["config"]
    recorded = recorded_weights(config)
    if clip_pretrained is not None:
        check_given_weights(recorded, clip_pretrained, path)
        return clip_pretrained
    if recorded is None or recorded["kind"] == "tag":
        return config["clip_pretrained"] if recorded is None else recorded["tag"]
    if recorded["kind"] == "random":  # random weights are stored, or they are lost
        raise UsageError(f"{path}: broken checkpoint (a random CLIP, but not its weights)")
    needed = f"{path} needs the CLIP weights {describe_weights(recorded)}"
    if not os.path.isfile(recorded["path"]):
        raise UsageError(f"{needed}, no longer at {recorded['path']}: {POINT_AT_WEIGHTS}")
    found = weights_identity(recorded["path"])
    if found["sha256"] != recorded["sha256"]:
        raise UsageError(
            f"{needed}, but {recorded['path']} now holds {describe_weights(found)}: "
            f"{POINT_AT_WEIGHTS}"
        )
    return recorded["path"]


def check_weights_fit(
    model: CG3D, state: dict[str, torch.Tensor], full_clip: bool, path: Path
) -> None:
    """`state` must hold exactly the tensors of `model` it should (with CLIP's or not), in shape.

    A mismatch is one line naming the first few names, not torch's dump of every key.
    """
    expected = model.state_dict() if full_clip else model.trainable_state()
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    reshaped = [
        f"{name} {tuple(state[name].shape)} for {tuple(expected[name].shape)}"
        for name in expected
        if name in state and state[name].shape != expected[name].shape
    ]
    problems = [
        f"{kind}: {_first(names)}"
        for kind, names in (("missing", missing), ("unexpected", unexpected), ("shape", reshaped))
        if names
    ]
    if problems:
        raise UsageError(
            f"{path}: weights do not fit the model it describes ({'; '.join(problems)})"
        )


def model_from_checkpoint(
    payload: dict[str, Any], path: Path, clip_pretrained: str | None = None
) -> CG3D:
    """Rebuild the model a checkpoint dict describes and load its weights.

    `clip_pretrained` (a tag or a file) says where CLIP's weights are when they moved; it is
    checked against the weights the checkpoint records.
    """
    config = checkpoint_config(payload, path)
    recorded = recorded_weights(payload["config"])
    if payload["full_clip"]:
        if clip_pretrained is not None:
            check_given_weights(recorded, clip_pretrained, path)  # not needed, but must agree
        # CLIP's weights are in the file: build without looking for any
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomClipWarning)
            model = build_model(dataclasses.replace(config, clip_pretrained="none"))
        if recorded == RANDOM_WEIGHTS:
            warnings.warn(
                f"{path} was trained with a RANDOMLY INITIALISED CLIP (its weights are in the file)",
                RandomClipWarning,
                stacklevel=3,
            )
    else:
        weights = weights_to_load(payload, path, clip_pretrained)
        try:
            model = build_model(
                dataclasses.replace(config, clip_pretrained=weights, require_pretrained=True)
            )
        except UsageError as error:
            if clip_pretrained is not None:
                raise  # about the user's own option, which it names
            needed = describe_weights(recorded) if recorded else repr(weights)
            # load_clip names the option it assumes; this user gave none
            reason = re.sub(r"^--[a-z-]+: ", "", str(error).splitlines()[0])
            raise UsageError(
                f"{path} needs the CLIP weights {needed}, not to be had here ({reason}): "
                f"{POINT_AT_WEIGHTS}"
            ) from None
    check_weights_fit(model, payload["model"], payload["full_clip"], path)
    model.load_state_dict(payload["model"], strict=payload["full_clip"])
    model.config = ADDED_KEYS | payload["config"]  # an old checkpoint's, completed
    return model


def load_model(
    path: Path, device: str | torch.device = "cpu", clip_pretrained: str | None = None
) -> CG3D:
    """The trained CG3D model in `path`, in eval mode on `device`.

    `clip_pretrained` (an open_clip tag or a weights file) overrides where CLIP's weights are
    read from; it must be the weights the checkpoint was trained with. Raises UsageError naming
    the file when it is missing, corrupt, not a CG3D checkpoint, or its CLIP weights are not
    to be had.
    """
    model = model_from_checkpoint(read_checkpoint(path), Path(path), clip_pretrained)
    return model.to(device).eval()


def export_checkpoint(
    src: Path, dst: Path, embed_clip: bool = True, clip_pretrained: str | None = None
) -> None:
    """Write the model of checkpoint `src` to `dst` without its training state.

    With `embed_clip`, `dst` holds CLIP's weights too: it loads anywhere, with no CLIP weights
    around. `clip_pretrained` is where to read them from when they moved (as for load_model).
    """
    model = model_from_checkpoint(read_checkpoint(src), Path(src), clip_pretrained)
    save_checkpoint(dst, model, embed_clip=embed_clip)

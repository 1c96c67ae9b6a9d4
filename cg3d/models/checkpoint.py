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
import logging
import os
import re
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import torch

from cg3d.errors import ConfigWarning, UsageError
from cg3d.files import (
    atomic_path,
    folder_for,
    repository,
    require_regular_file,
    same_file,
    stored_spelling,
)
from cg3d.formats.versions import version_problem
from cg3d.models.clip import (
    RANDOM_WEIGHTS,
    RandomClipWarning,
    check_weights_named,
    describe_weights,
    is_weights_identity,
    load_clip,
    weights_identity,
)
from cg3d.models.model import CG3D, ModelConfig, TowerOpener, build_model
from cg3d.models.slip import load_error_reason

FORMAT = "cg3d-checkpoint-1"
# keys of a stored config that CG3D adds to ModelConfig's fields
DERIVED_KEYS = ("clip_pretrained_loaded", "clip_weights")
# optional keys naming what a converted or released model is: its model card
# (cg3d.models.cards) and the zero-shot protocol it is evaluated under (cg3d.eval.protocols)
METADATA_KEYS = ("card", "protocol")
# Model config keys added after the first checkpoints were written, with the value their absence
# meant then (ModelConfig has no defaults: a default that moved would change an old model).
ADDED_KEYS = {"point_channels": 3}
# What rewrites a checkpoint of another cg3d's format with this one
RETRAIN = "train it again with this cg3d"
POINT_AT_WEIGHTS = "point at them with --clip-pretrained PATH"


def save_checkpoint(
    path: Path, model: CG3D, training: dict[str, Any] | None = None, embed_clip: bool = False
) -> None:
    """Write `model` (and optional training state) to `path` atomically.

    `embed_clip` stores CLIP's weights too, so the file loads with no CLIP weights around.
    """
    payload = checkpoint_payload(model, embed_clip)
    if not payload["full_clip"]:
        payload["config"] = {**payload["config"], "clip_weights": weights_beside(payload, path)}
    if training is not None:
        payload["training"] = training
    write_payload(path, payload)


def checkpoint_payload(model: CG3D, embed_clip: bool = False) -> dict[str, Any]:
    """The checkpoint dict of `model` (no training state): CLIP's whole state when it must be
    stored (random, or `embed_clip`), else the trained part only, with no tower built."""
    full_clip = embed_clip or not model.config["clip_pretrained_loaded"]
    state = model.open_towers().state_dict() if full_clip else model.trainable_state()
    # The towers first, as a model built whole lists them: a model loaded from a checkpoint
    # opens its towers after its point encoder (a resumed run), and the same weights must give
    # the same bytes (sorted() is stable: each side keeps its own order).
    ordered = sorted(state.items(), key=lambda item: _is_point_side(item[0]))
    return {
        "format": FORMAT,
        "config": model.config,
        "full_clip": full_clip,
        "model": {name: tensor.detach().cpu() for name, tensor in ordered},
    }


def weights_beside(payload: dict[str, Any], path: Path) -> dict[str, str]:
    """The payload's CLIP weights identity, with the weights file spelled relative to the
    checkpoint's folder (`relative`) when one project holds both (`stored_spelling`), so that
    the project moved or copied elsewhere (`cp -a`, `rsync -a`, a tar on another cluster)
    loads its own weights file, never the one at the old place (`weights_to_load`)."""
    identity = payload["config"]["clip_weights"]
    if identity.get("kind") != "file":
        return identity
    weights = Path(identity["path"]).resolve()
    spelled = stored_spelling(weights, Path(path).parent.resolve())
    kept = {key: value for key, value in identity.items() if key != "relative"}
    return kept if os.path.isabs(spelled) else {**kept, "relative": spelled}


def write_payload(path: Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint dict (the layout above) to `path` atomically.

    For a converter that writes a peer's point side without building its teacher's towers.
    """
    path = Path(path)
    # Saved through an open handle, not the temp path: torch names the zip's records after the
    # file it is given (`.last.pt.<pid>.tmp/data/0`), a handle gets the fixed name `archive/`,
    # so one run gives the same bytes every time. Streamed: no second copy in memory.
    with folder_for(path), atomic_path(path) as tmp, open(tmp, "wb") as handle:
        writer = _WriteErrors(handle)
        try:
            torch.save(_canonical(payload), writer)
        except RuntimeError:
            if writer.error is None:
                raise
            raise writer.error from None  # atomic_path names `path` in it, for one line


def _canonical(value: Any) -> Any:
    """`value` with every dict, list and tuple rebuilt and every string interned.

    Pickle writes an object it met before as a reference to it, so the bytes depend on which
    equal strings and containers happen to be one object: a resumed run's, whose config was
    read back from its checkpoint, are not the fresh run's. Rebuilt so, equal values pickle
    alike, and the same run gives the same bytes however often it was stopped."""
    if type(value) is str:  # exact types: a subclass (torch.Size, a named tuple) stays as is
        return sys.intern(value)
    if type(value) is dict:
        return {_canonical(key): _canonical(item) for key, item in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_canonical(item) for item in value)
    return value


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
    """The checkpoint dict at `path` (a file, or a folder `cg3d export --format hub` wrote);
    a missing, corrupt or foreign one is a UsageError naming it (for a folder, the file in it).
    Either way its config's shape is bounded and its weights finite."""
    from cg3d.models.hub import CONFIG, WEIGHTS, is_hub_folder, read_hub

    path = Path(path)
    if is_hub_folder(path):
        payload, config_at, weights_at = read_hub(path), path / CONFIG, path / WEIGHTS
    else:
        payload = _read_checkpoint_file(path)
        config_at = weights_at = path
    check_config_shape(payload["config"], config_at)
    for name, tensor in payload["model"].items():  # NaN weights answer NaN, with exit 0
        # A pickled tensor is a view: its shape and strides are the file's word, so a 7 MB
        # file can claim 10^12 values over one stored float (stride 0). Refused before any
        # check below (or load_state_dict) materialises it.
        stored = tensor.untyped_storage().nbytes() // max(tensor.element_size(), 1)
        if tensor.numel() > stored:
            raise UsageError(
                f"{weights_at}: the weight {name} claims shape {tuple(tensor.shape)} "
                f"({tensor.numel()} values) over {stored} stored values"
            )
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise UsageError(f"{weights_at}: the weight {name} holds NaN or infinite values")
    return payload


def _read_checkpoint_file(path: Path) -> dict[str, Any]:
    """The checkpoint dict of file `path`, its layout checked (read with weights_only=True)."""
    require_regular_file(path, f"no checkpoint at {path}")  # a FIFO would block the read
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, not a torch file, unsafe pickle content
        reason, refused = load_error_reason(error, path)
        # ours hold tensors and plain values only: pickled objects in one are never loaded
        never = "; a CG3D checkpoint holds no pickled objects, and they are never loaded"
        raise UsageError(
            f"{path}: not a readable checkpoint ({reason}{never if refused else ''})"
        ) from None
    if isinstance(payload, dict) and (
        problem := version_problem(payload.get("format"), FORMAT, RETRAIN)
    ):
        raise UsageError(f"{path}: {problem}")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        # ULIP's, OpenShape's and Uni3D's files are dicts of weights too: the line says what
        # turns them into ours, where it only said what the file lacked
        convert = (
            "; another project's checkpoint (ULIP, OpenShape, Uni3D, the CG3D release) is "
            "turned into one by `cg3d convert`"
            if isinstance(payload, dict)
            else ""
        )
        raise UsageError(f"{path}: not a CG3D checkpoint (no {FORMAT!r} format tag{convert})")
    state = payload.get("model")
    if not isinstance(state, dict) or not all(
        isinstance(name, str) and isinstance(tensor, torch.Tensor) for name, tensor in state.items()
    ):
        raise UsageError(f"{path}: broken CG3D checkpoint (its 'model' is not a state dict)")
    if not isinstance(payload.get("config"), dict) or not isinstance(
        payload.get("full_clip"), bool
    ):
        raise UsageError(f"{path}: broken CG3D checkpoint (no 'config' dict or 'full_clip' flag)")
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
        key: value
        for key, value in payload["config"].items()
        if key not in DERIVED_KEYS + METADATA_KEYS
    }
    names = {item.name for item in dataclasses.fields(ModelConfig)}
    unknown, missing = sorted(set(values) - names), sorted(names - set(values))
    if unknown:
        # every key builds the model: one this cg3d does not know (a newer cg3d's, or a hand
        # edit) is refused, never passed over (docs/formats.md, Versions)
        raise UsageError(
            f"{path}: its model config has unknown keys: {_first(unknown)} (a newer cg3d's "
            "model? upgrade cg3d to load it)"
        )
    if missing:
        raise UsageError(f"{path}: its model config lacks the keys: {_first(missing)}")
    stored = payload["config"]
    if not isinstance(stored.get("clip_pretrained_loaded", False), bool) or not (
        is_weights_identity(stored.get("clip_weights", RANDOM_WEIGHTS))
    ):
        raise UsageError(f"{path}: its model config has a malformed clip_weights record")
    if not all(isinstance(stored.get(key, ""), str) for key in METADATA_KEYS):
        raise UsageError(f"{path}: its model config's {' and '.join(METADATA_KEYS)} must be names")
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
            ConfigWarning,
            stacklevel=3,
        )
        return
    same = {"random": "kind", "tag": "tag", "file": "sha256"}[recorded["kind"]]
    if found["kind"] != recorded["kind"] or found.get(same) != recorded.get(same):
        raise UsageError(
            f"--clip-pretrained: {path} was trained with {describe_weights(recorded)}, "
            f"not {describe_weights(found)}"
        )


def weights_to_load(
    payload: dict[str, Any], path: Path, clip_pretrained: str | None, checked: bool = False
) -> str:
    """The tag or file to rebuild CLIP from, for a checkpoint that does not hold CLIP itself.
    `checked`: `clip_pretrained` was checked against the recorded weights before the read
    (`check_before_reading`)."""
    config = payload["config"]
    recorded = recorded_weights(config)
    if clip_pretrained is not None:
        if not checked:
            check_given_weights(recorded, clip_pretrained, path)
        return clip_pretrained
    if recorded is None or recorded["kind"] == "tag":
        return config["clip_pretrained"] if recorded is None else recorded["tag"]
    if recorded["kind"] == "random":  # random weights are stored, or they are lost
        raise UsageError(f"{path}: broken checkpoint (a random CLIP, but not its weights)")
    needed = f"{path} needs the CLIP weights {describe_weights(recorded)}"
    weights = recorded_weights_file(recorded, path)
    beside = recorded_file_beside(recorded, path)
    if beside is not None and beside != weights:  # there, but other weights: said, not hidden
        needed += f" (not {describe_weights(weights_identity(beside))} at {beside})"
    if not os.path.isfile(weights):
        raise UsageError(f"{needed}, no longer at {weights}: {POINT_AT_WEIGHTS}")
    found = weights_identity(weights)
    if found["sha256"] != recorded["sha256"]:
        raise UsageError(
            f"{needed}, but {weights} now holds {describe_weights(found)}: {POINT_AT_WEIGHTS}"
        )
    return weights


def recorded_weights_file(recorded: dict[str, str], path: Path) -> str:
    """Where checkpoint `path` finds its CLIP weights file: beside it as it was saved
    (`weights_beside`: the same project, wherever it now lies) when that file holds the
    recorded weights, else the absolute path recorded (a file outside the project, an older
    checkpoint, or a copy whose file beside it was replaced while the old place kept them)."""
    beside = recorded_file_beside(recorded, path)
    if beside is not None and weights_identity(beside)["sha256"] == recorded["sha256"]:
        return beside
    return recorded["path"]


def recorded_file_beside(recorded: dict[str, str], path: Path) -> str | None:
    """The regular file `recorded["relative"]` names from checkpoint `path`'s real folder (a
    symlinked checkpoint is spelled from its target's, as `weights_beside` wrote it); None
    where there is none: no `relative` (an older checkpoint, a file outside the project, a hub
    folder), one that is no relative path, too long a name, or a file outside the repository
    the checkpoint lies in, where `stored_spelling` never points (a hostile checkpoint's
    "../../etc/x" is not read)."""
    relative = recorded.get("relative")
    if not isinstance(relative, str) or os.path.isabs(relative):
        return None
    try:
        real = Path(path).resolve()
        project = repository(real.parent)
        beside = (real.parent / relative).resolve()
        inside = project is not None and beside.is_relative_to(project)
        return str(beside) if real.is_file() and inside and beside.is_file() else None
    except (OSError, ValueError):  # a name too long for the system, a NUL byte in it
        return None


def recorded_config(path: Path) -> dict[str, Any] | None:
    """The model config checkpoint `path` records, read without its weights: a hub folder's
    config.json, or a checkpoint file's pickle alone, its tensors memory-mapped and never read
    (torch's zip format). None where it cannot be had so (a file in torch's legacy format, a
    damaged or foreign one): `read_checkpoint` then reads the file whole and says what is
    wrong, in its words."""
    from cg3d.models.hub import is_hub_folder, read_hub_config

    path = Path(path)
    try:
        if is_hub_folder(path):
            config = read_hub_config(path)["model"]
        elif path.is_file():  # a FIFO would block the read; `read_checkpoint` says so
            payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            is_ours = isinstance(payload, dict) and payload.get("format") == FORMAT
            config = payload.get("config") if is_ours else None
        else:
            return None
    except Exception:  # noqa: BLE001 - any failure here is read_checkpoint's to say
        return None
    return config if isinstance(config, dict) else None


def check_before_reading(path: Path, clip_pretrained: str) -> bool:
    """Check `clip_pretrained` (--clip-pretrained) against the CLIP weights checkpoint `path`
    records, from its config alone (`recorded_config`), before its weights are read: a
    mismatch is one line in the time the config takes, not after a multi-GB read and the
    weights' checks. Whether it was checked; if not, `model_from_checkpoint` checks after."""
    config = recorded_config(path)
    if config is None:
        return False
    recorded = recorded_weights(config)
    if recorded is not None and not is_weights_identity(recorded):
        return False  # a malformed record: `read_checkpoint` names it
    check_given_weights(recorded, clip_pretrained, Path(path))
    return True


def read_model(path: Path, clip_pretrained: str | None = None) -> CG3D:
    """The model of checkpoint `path` (`read_checkpoint`, `model_from_checkpoint`), with
    `clip_pretrained` checked before the weights are read where it can be (`check_before_reading`)."""
    checked = clip_pretrained is not None and check_before_reading(path, clip_pretrained)
    return model_from_checkpoint(read_checkpoint(path), Path(path), clip_pretrained, checked)


def check_weights_fit(
    expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], path: Path
) -> None:
    """`state` must hold exactly the tensors `expected` names, in shape.

    A mismatch is one line naming the first few names, not torch's dump of every key.
    """
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


def _is_point_side(name: str) -> bool:
    return name.startswith("point_encoder.")


def _tower_opener(
    payload: dict[str, Any],
    path: Path,
    config: ModelConfig,
    clip_pretrained: str | None,
    checked: bool = False,
) -> TowerOpener:
    """What builds a loaded model's CLIP towers on first use and loads the checkpoint's tower
    weights into them (all of CLIP's for a `full_clip` file; else the prompts, logit scale).

    Which weights to build from is settled now, at load (`weights_to_load`: a moved or
    changed weights file is an error at once); only the building waits.
    """
    full_clip = payload["full_clip"]
    recorded = recorded_weights(payload["config"])
    weights = "none" if full_clip else weights_to_load(payload, path, clip_pretrained, checked)

    def needs(error: UsageError) -> UsageError:
        if clip_pretrained is not None:
            return error  # about the user's own option, which it names
        needed = describe_weights(recorded) if recorded else repr(weights)
        # load_clip names the option it assumes; this user gave none
        reason = re.sub(r"^--[a-z-]+: ", "", str(error).splitlines()[0])
        return UsageError(
            f"{path} needs the CLIP weights {needed}, not to be had here ({reason}): "
            f"{POINT_AT_WEIGHTS}"
        )

    try:
        check_weights_named(config.clip_model, weights)  # what can be told without loading
    except UsageError as error:
        raise needs(error) from None

    def open_towers(model: CG3D) -> None:
        if full_clip:  # CLIP's weights are in the file: build without looking for any
            with warnings.catch_warnings(), _without_open_clip_weights_line():
                warnings.simplefilter("ignore", RandomClipWarning)
                clip = load_clip(config.clip_model, "none")
        else:
            try:
                clip = load_clip(config.clip_model, weights, require_pretrained=True)
            except UsageError as error:
                raise needs(error) from None
        model.attach_towers(clip, config)
        towers = {n: t for n, t in model.state_dict().items() if not _is_point_side(n)}
        expected = towers if full_clip else {n: t for n, t in towers.items() if n in TRAINED_TOWER}
        state = dict(model.tower_state)
        if not full_clip:
            # a converted peer stores no prompts when it has none (0 of them), and may leave
            # the teacher's own temperature in place
            for name in ("visual.prompts", "clip.logit_scale"):
                if name not in state and (name == "clip.logit_scale" or not config.prompts):
                    expected.pop(name, None)
        check_weights_fit(expected, state, path)
        model.load_state_dict(state, strict=False)

    return open_towers


TRAINED_TOWER = ("visual.prompts", "clip.logit_scale")  # the tower side of trainable_state


class _NoWeightsLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


@contextmanager
def _without_open_clip_weights_line() -> Iterator[None]:
    """open_clip logs "No pretrained weights loaded" on the root logger when it builds a CLIP
    without weights; a checkpoint's CLIP weights are loaded right after (a random-init CLIP is
    said by cg3d's own RandomClipWarning), so here the line is wrong (issue 26)."""
    line = _NoWeightsLine()
    logging.getLogger().addFilter(line)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(line)


def model_from_checkpoint(
    payload: dict[str, Any], path: Path, clip_pretrained: str | None = None, checked: bool = False
) -> CG3D:
    """Rebuild the model a checkpoint dict describes and load its weights.

    The point encoder is built and loaded now; CLIP's towers when first used (see CG3D).
    `clip_pretrained` (a tag or a file) says where CLIP's weights are when they moved; it is
    checked against the weights the checkpoint records, unless `checked` already
    (`check_before_reading`, by `read_model`).
    """
    config = checkpoint_config(payload, path)
    recorded = recorded_weights(payload["config"])
    if payload["full_clip"] and clip_pretrained is not None and not checked:
        check_given_weights(recorded, clip_pretrained, path)  # not needed, but must agree
    opener = _tower_opener(payload, path, config, clip_pretrained, checked)
    # Checked now: the point side in full, and that nothing else is foreign to the towers
    # (the towers' own names and shapes are checked when they are built). The shapes come from
    # the model built on the meta device (no memory, no random draws): a config can describe
    # terabytes of weights within the params' bounds (depth and width 4096), and building that
    # for real had the kernel kill the process before any check could name the file.
    with torch.device("meta"):
        shapes = build_model(config, opener).point_encoder.state_dict()
    tower_names = ("clip.", "visual.") if payload["full_clip"] else TRAINED_TOWER
    checked = {n: t for n, t in payload["model"].items() if not n.startswith(tower_names)}
    check_weights_fit({f"point_encoder.{n}": t for n, t in shapes.items()}, checked, path)
    model = build_model(config, opener)
    model.point_encoder.load_state_dict(_unprefixed(checked))
    model.tower_state = {n: t for n, t in payload["model"].items() if not _is_point_side(n)}
    if payload["full_clip"] and recorded == RANDOM_WEIGHTS:
        warnings.warn(
            f"{path} was trained with a RANDOMLY INITIALISED CLIP (its weights are in the file)",
            RandomClipWarning,
            stacklevel=3,
        )
    # an old checkpoint's, completed; the stored order kept (a resumed run saves the same bytes)
    added = {key: value for key, value in ADDED_KEYS.items() if key not in payload["config"]}
    model.config = payload["config"] | added
    if recorded and recorded["kind"] == "file" and not payload["full_clip"]:
        # where the weights are read from now (a moved project's own file), so that a resumed
        # run saves that place, and `weights_beside` spells it from the checkpoint's new folder
        where = (
            clip_pretrained
            if clip_pretrained is not None
            else recorded_weights_file(recorded, path)
        )
        # (the recorded file however spelled keeps its record: a run resumed in place saves
        # the bytes an unbroken run saves)
        if os.path.isfile(where) and not same_file(where, recorded["path"]):
            model.config["clip_weights"] = {**recorded, "path": os.path.abspath(where)}
    return model


def _unprefixed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name.removeprefix("point_encoder."): tensor for name, tensor in state.items()}


def load_model(
    path: Path, device: str | torch.device = "cpu", clip_pretrained: str | None = None
) -> CG3D:
    """The trained CG3D model in `path`, in eval mode on `device`.

    `clip_pretrained` (an open_clip tag or a weights file) overrides where CLIP's weights are
    read from; it must be the weights the checkpoint was trained with. Raises UsageError naming
    the file when it is missing, corrupt, not a CG3D checkpoint, or its CLIP weights are not
    to be had.
    """
    return read_model(path, clip_pretrained).to(device).eval()


def export_checkpoint(
    src: Path, dst: Path, embed_clip: bool = True, clip_pretrained: str | None = None
) -> None:
    """Write the model of checkpoint `src` to `dst` without its training state.

    With `embed_clip`, `dst` holds CLIP's weights too: it loads anywhere, with no CLIP weights
    around. `clip_pretrained` is where to read them from when they moved (as for load_model).
    """
    save_checkpoint(dst, read_model(src, clip_pretrained), embed_clip=embed_clip)

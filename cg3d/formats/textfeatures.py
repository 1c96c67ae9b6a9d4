"""Class text features on disk: one (C, D) float32 `.npy` and a JSON sidecar naming its rows.

    FILE.npy    (C, D) float32, row i the class text feature (prototype) of class i, as
                `np.save` writes it with allow_pickle=False (OpenShape ships its Objaverse-LVIS
                and ModelNet40 features so)
    FILE.json   {"format": "cg3d-text-features-1", "classes": [C names], and what made them:
                "clip_model", "clip_weights", "protocol", "templates", "normalised"}

Only "classes" is required in the sidecar, so a released `.npy` becomes usable with a JSON
written by hand: {"classes": ["airplane", ...]} in the `.npy`'s row order. Nothing here is ever
unpickled. `cg3d eval text-features` writes these; `cg3d eval zeroshot --text-features FILE`
reads them, and takes the rows by class name, whatever the benchmark's class order.
"""

import hashlib
import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cg3d.errors import UsageError
from cg3d.files import folder_for, loads_json, require_regular_file, write_json
from cg3d.formats.npy import open_npy, read_npy, write_npy
from cg3d.formats.versions import version_problem

FORMAT = "cg3d-text-features-1"
OPTION = "--text-features"
# The sidecar's keys that say what made the features, as `cg3d eval text-features` writes them
MADE_BY = ("clip_model", "clip_weights", "protocol", "templates", "normalised", "checkpoint")


def sidecar(path: Path) -> Path:
    """The JSON that names the rows of the features at `path` (FILE.npy → FILE.json)."""
    return Path(path).with_suffix(".json")


def write_text_features(
    path: Path, features: np.ndarray, classes: list[str], about: dict[str, Any] | None = None
) -> None:
    """Write (C, D) `features` of `classes` to `path` (.npy) and its sidecar, atomically."""
    path = Path(path)
    features = np.asarray(features, dtype=np.float32)
    if path.suffix != ".npy":
        raise UsageError(f"{OPTION}: {path} must end in .npy")
    if features.ndim != 2 or features.shape[0] != len(classes):
        raise ValueError(f"features {features.shape} do not match {len(classes)} classes")
    # The sidecar names the rows: an earlier one left beside new rows (a kill or a full disk
    # between the two writes) gave them its classes, in silence when the counts agreed. Without
    # it the reader refuses the file until the writer finishes.
    sidecar(path).unlink(missing_ok=True)
    with folder_for(path):
        write_npy(path, features)
        record = {"format": FORMAT, "classes": list(classes), **(about or {})}
        write_json(sidecar(path), record)  # class names kept readable ("стул", not \u0441…)


@dataclass(frozen=True)
class TextFeatures:
    """A text-features file read once (`read_text_features`): what a command needs of it."""

    path: Path
    features: np.ndarray  # (C, D) float32
    classes: list[str]  # the sidecar's names of the rows
    about: dict[str, Any]  # the whole sidecar
    sha256: str  # of the .npy's bytes as read


def read_text_features(path: Path) -> TextFeatures:
    """The features, classes and sidecar of the file at `path`, its bytes read once.

    A missing file or sidecar, a pickled or non-2-D array, non-finite values, a row of zeros
    (it scores every shape 0: the class is never predicted, or always on a tie), or a class
    list of another length or with repeats is a UsageError naming the file.
    """
    path = Path(path)
    names = sidecar(path)
    require_regular_file(path, f"{OPTION}: no file {path}", OPTION)
    require_regular_file(
        names,
        f'{OPTION}: no {names.name} beside {path}: write {{"classes": [...]}} there, '
        "one name per row of the .npy, in order",
        OPTION,
    )
    try:
        # Its header first: a file that is no .npy (a checkpoint of GBs given by mistake) is
        # refused before its bytes are read. Then the bytes, hashed and parsed once (small:
        # LVIS's are 1,156 x 1,280 floats).
        with open_npy(path) as npy:
            npy.handle.seek(0)
            data = npy.handle.read()
        features = read_npy(data)
    except (OSError, ValueError) as error:  # a pickled array is a ValueError here
        raise UsageError(f"{OPTION}: {path} is not a plain .npy array ({error})") from None
    try:
        about = loads_json(names.read_bytes())
    except (OSError, ValueError) as error:
        raise UsageError(f"{OPTION}: {names} is not readable JSON ({error})") from None
    if isinstance(about, dict) and (
        problem := version_problem(about.get("format"), FORMAT, "rerun `cg3d eval text-features`")
    ):
        raise UsageError(f"{OPTION}: {names}: {problem}")
    if isinstance(about, dict) and about.get("format", FORMAT) != FORMAT:
        # a hand-written sidecar has no format; one of another kind or a broken tag (2,
        # "cg3d-text-features-01") is no sidecar of ours: its rows were read silently
        found = repr(about["format"])[:60]
        raise UsageError(f"{OPTION}: {names}: its format is {found}, not {FORMAT!r}")
    classes = about.get("classes") if isinstance(about, dict) else None
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise UsageError(f'{OPTION}: {names} has no "classes" list of names')
    if len(set(classes)) != len(classes):
        raise UsageError(f"{OPTION}: {names} names a class twice")
    if features.ndim != 2 or features.shape[0] != len(classes) or features.dtype.kind != "f":
        raise UsageError(
            f"{OPTION}: {path} holds {features.dtype} {features.shape}, not ({len(classes)}, D) "
            f"floats for the {len(classes)} classes of {names.name}"
        )
    if not np.isfinite(features).all():
        raise UsageError(f"{OPTION}: {path} holds non-finite values")
    zero = np.flatnonzero(~features.any(axis=1))
    if len(zero):
        raise UsageError(f"{OPTION}: {path}: the row of class {classes[zero[0]]!r} is all zeros")
    sha256 = hashlib.sha256(data).hexdigest()
    return TextFeatures(path, features.astype(np.float32), classes, about, sha256)


def features_for(
    found: TextFeatures,
    classes: list[str],
    embed_dim: int,
    spell=lambda name: name,
    clip_model: str | None = None,
) -> np.ndarray:
    """The rows of the file `found` for `classes`, in that order, as stored (a protocol
    that does not normalise text features keeps their lengths, which change the argmax).

    A class is found by its name as given, or as `spell` writes it (a protocol's class names:
    night_stand as "night stand"). A class the file lacks, features of another size than
    the model's `embed_dim`, or a sidecar whose `clip_model` is not the model's `clip_model`
    (another teacher's text space: its rows score in a space the points are not in, with no
    error when the widths agree) is a UsageError naming the file. A sidecar that names no
    `clip_model` (written by hand) is taken at its word.
    """
    path, features, names = found.path, found.features, found.classes
    made_by = found.about.get("clip_model")
    if clip_model is not None and made_by is not None and made_by != clip_model:
        raise UsageError(
            f"{OPTION}: {sidecar(path).name} says CLIP {made_by!r} made these features; the "
            f"model's teacher is {clip_model!r}: write them with `cg3d eval text-features` "
            "and this checkpoint"
        )
    if features.shape[1] != embed_dim:
        raise UsageError(
            f"{OPTION}: {path} holds {features.shape[1]}-d features; the model's are {embed_dim}-d"
        )
    row = {name: index for index, name in enumerate(names)}
    # and in either Unicode form: `café` typed (NFC) in --classes, the benchmark's class from
    # a Mac's folder (NFD) printed alike and was "lacking"; one text to CLIP all the same
    by_form = {unicodedata.normalize("NFC", name): index for index, name in enumerate(names)}
    picked, missing = [], []
    for name in classes:
        index = row.get(name, row.get(spell(name)))
        if index is None:
            forms = (unicodedata.normalize("NFC", n) for n in (name, spell(name)))
            index = next((by_form[form] for form in forms if form in by_form), None)
        missing += [name] if index is None else []
        picked.append(index)
    if missing:
        more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        raise UsageError(
            f"{OPTION}: {sidecar(path).name} lacks the classes {', '.join(missing[:3])}{more}"
        )
    return features[picked]


def features_about(found: TextFeatures) -> dict[str, Any]:
    """What a result scored from the features `found` records of them: the file's name and
    sha256, and what its sidecar says made them (`MADE_BY`; a hand-written sidecar may say
    nothing). A value longer than 1,000 characters of JSON is left out: a sidecar is the
    user's file, and a result stays small."""
    made_by = {
        key: found.about[key]
        for key in MADE_BY
        if key in found.about and len(json.dumps(found.about[key])) <= 1000
    }
    return {"file": found.path.name, "sha256": found.sha256, **made_by}

"""`cg3d audit`: training and test shapes that are the same file or the same shape.

Three kinds of pair, each cheap to find at scale:
  same_file   both sides know their mesh file's sha256 (our shards' meta.json) and it is equal
  same_uid    a training mesh's file stem is the test shape's key (an Objaverse uid, a ModelNet
              name such as airplane_0627): the same object under another copy of the file
  same_shape  near-duplicate geometry: shape descriptors closer than `threshold`

The shape descriptor is computed on the points alone and does not move when a shape is
resampled (another point count, other random samples), rotated about the up axis (+Y),
rescaled, shifted or slightly noised: the points are centred on their mean and scaled to unit
RMS radius (all unchanged by those), then two histograms are taken, each invariant to rotation
about Y:
  - occupancy over (distance from the up axis, height): 12 × 12 cells,
  - D2, the distances between random pairs of points: 24 bins,
each smoothed by a Gaussian of one bin. The descriptor is the square roots of the two normalised histograms (unit norm, so the
Euclidean distance between two is a Hellinger distance in [0, 2]). BENCHMARKS.md ("Leakage
audit") says how the default threshold was chosen and what it catches.

Output (OUT/): `pairs.csv` (train_key, test_key, kind, distance), `audit.json` (counts, the
threshold and the inputs), `leaked_train.txt` (the training ids in a pair: usable as
`meshes.exclude` when the training set is rebuilt) and `leaked_test.txt`.

ShapeNet lists (`--train-list`, `--test-list`), by id alone, no geometry: CG3D's
`train_img.txt` and Point-BERT's ShapeNet-55 `test.txt` both list `<synsetId>-<modelId>.npy`,
one a line. Two kinds of pair:
  same_id     the same line in both lists: the same object
  same_model  the same modelId under another synset (ShapeNet files a few models in two
              categories: the same mesh)
The public CG3D code trains on `train_img.txt`, which shares 8,439 ids with the `test.txt`
shipped in the same folder (data/shapenet_render/), so ShapeNet-55 numbers of a model trained
on it are not zero-shot on those shapes.
"""

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from cg3d.errors import UsageError
from cg3d.files import atomic_path, loads_json, read_small_text, require_regular_file, write_json
from cg3d.formats.owner import check_owner, claim
from cg3d.formats.shards import (
    Skipped,
    decode_sample,
    not_a_view,
    raw_samples,
    read_index,
    split_entry,
)
from cg3d.formats.tables import write_csv
from cg3d.formats.tar import FormatError

AUDIT_NAME = "audit.json"
AUDIT_HARM = "would write its pairs.csv and audit.json there"
PAIRS_NAME = "pairs.csv"
DEFAULT_THRESHOLD = 0.04  # chosen in bench/bench_audit.py (BENCHMARKS.md)
DESCRIPTOR = (
    "cyl12x12+d24 smoothed v1"  # names the descriptor: audits with another are not comparable
)
RADIAL_BINS, HEIGHT_BINS, D2_BINS = 12, 12, 24
RADIAL_MAX, HEIGHT_MAX, D2_MAX = 2.5, 2.5, 5.0  # in units of the RMS radius
D2_PAIRS = 8192
SMOOTHING = 1.0  # Gaussian sigma, in bins
BLOCK = 2048  # test descriptors compared with all training ones at a time


@dataclass
class AuditShape:
    key: str
    points: np.ndarray
    sha256: str = ""  # of the mesh file, when known
    uid: str = ""  # the mesh file's stem, when known


def shape_descriptor(points: np.ndarray) -> np.ndarray:
    """(D,) float32 unit-norm descriptor of a cloud's shape (module docstring)."""
    xyz = np.asarray(points, dtype=np.float64)[:, :3]
    xyz = xyz[np.isfinite(xyz).all(axis=1)]
    if len(xyz) < 2:
        raise ValueError("fewer than two finite points")
    xyz = xyz - xyz.mean(axis=0)
    rms = np.sqrt((xyz**2).sum(axis=1).mean())
    if rms <= 0:
        raise ValueError("all points coincide")
    xyz /= rms
    radial = np.hypot(xyz[:, 0], xyz[:, 2])
    occupancy, _, _ = np.histogram2d(
        np.minimum(radial, RADIAL_MAX - 1e-9),
        np.clip(xyz[:, 1], -HEIGHT_MAX, HEIGHT_MAX - 1e-9),
        bins=(RADIAL_BINS, HEIGHT_BINS),
        range=((0, RADIAL_MAX), (-HEIGHT_MAX, HEIGHT_MAX)),
    )
    # Pairs drawn by a fixed generator: the same cloud always gives the same descriptor.
    rng = np.random.default_rng(0)
    first, second = rng.integers(len(xyz), size=(2, D2_PAIRS))
    distances = np.linalg.norm(xyz[first] - xyz[second], axis=1)
    d2, _ = np.histogram(np.minimum(distances, D2_MAX - 1e-9), bins=D2_BINS, range=(0, D2_MAX))
    # Smoothed by a one-bin Gaussian: a few thousand points leave sampling noise in 144 cells
    # that would otherwise outweigh the difference between two distinct shapes.
    smoothed = [
        gaussian_filter(h.astype(np.float64), SMOOTHING, mode="constant") for h in (occupancy, d2)
    ]
    parts = [np.sqrt(h.ravel() / h.sum()) for h in smoothed]
    return (np.concatenate(parts) / np.sqrt(2.0)).astype(np.float32)


def shard_shapes(shards: str, split: str, skipped: Skipped) -> Iterator[AuditShape]:
    """The points and mesh identity of every sample of a split (views are seeked over)."""
    entry = split_entry(read_index(shards), split)
    order = range(len(entry["shards"]))
    samples = raw_samples(
        shards, entry["shards"], entry["counts"], order, skipped, read_data=not_a_view
    )
    for raw in samples:
        try:
            sample = decode_sample(raw, views=False)
        except FormatError as error:
            skipped.add(f"sample {raw['__key__']}", str(error))
            continue
        meta = sample["meta"]
        uid = Path(str(meta.get("path") or "")).stem
        yield AuditShape(sample["key"], sample["points"], str(meta.get("sha256") or ""), uid)


def benchmark_shapes(benchmark, skipped: Skipped) -> Iterator[AuditShape]:
    for shape in benchmark.shapes():
        yield AuditShape(shape.key, shape.points)
    refused = benchmark.refused()
    skipped.add(f"{benchmark.name} shapes", "unreadable", benchmark.skipped() - refused)
    skipped.add(f"{benchmark.name} shapes", "outside --root", refused)


@dataclass
class Side:
    """One side of the audit: keys, descriptors (N, D) and the file identities."""

    keys: list[str]
    descriptors: np.ndarray
    sha256: list[str]
    uids: list[str]
    unreadable: int


def describe(shapes: Iterator[AuditShape], skipped: Skipped) -> Side:
    keys, descriptors, hashes, uids = [], [], [], []
    for shape in shapes:
        try:
            descriptors.append(shape_descriptor(shape.points))
        except ValueError as error:
            skipped.add(f"shape {shape.key}", str(error))
            continue
        keys.append(shape.key)
        hashes.append(shape.sha256)
        uids.append(shape.uid)
    matrix = np.stack(descriptors) if descriptors else np.zeros((0, 1), np.float32)
    return Side(keys, matrix, hashes, uids, skipped.total)


def identity_pairs(train: Side, test: Side) -> list[dict]:
    """same_file and same_uid pairs, by dictionary look-ups (linear in both sides)."""
    by_hash: dict[str, list[int]] = {}
    by_uid: dict[str, list[int]] = {}
    for i, (sha, uid) in enumerate(zip(train.sha256, train.uids, strict=True)):
        if sha:
            by_hash.setdefault(sha, []).append(i)
        if uid:
            by_uid.setdefault(uid, []).append(i)
    pairs = []
    for j, (key, sha) in enumerate(zip(test.keys, test.sha256, strict=True)):
        same_file = set(by_hash.get(sha, [])) if sha else set()
        pairs += [_pair(train, test, i, j, "same_file", 0.0) for i in sorted(same_file)]
        same_uid = set(by_uid.get(test.uids[j] or key, [])) - same_file
        pairs += [_pair(train, test, i, j, "same_uid", 0.0) for i in sorted(same_uid)]
    return pairs


def shape_pairs(train: Side, test: Side, threshold: float) -> list[dict]:
    """same_shape pairs: descriptors within `threshold`, test shapes a block at a time."""
    pairs = []
    if not len(train.keys) or not len(test.keys):
        return pairs
    for start in range(0, len(test.keys), BLOCK):
        block = test.descriptors[start : start + BLOCK]
        # Unit vectors: |a - b|² = 2 - 2 a·b.
        squared = np.maximum(2.0 - 2.0 * (block @ train.descriptors.T), 0.0)
        rows, columns = np.nonzero(squared < threshold**2)
        for j, i in zip(rows, columns, strict=True):
            distance = float(np.sqrt(squared[j, i]))
            pairs.append(_pair(train, test, int(i), start + int(j), "same_shape", distance))
    return pairs


def _pair(train: Side, test: Side, i: int, j: int, kind: str, distance: float) -> dict:
    return {
        "train_key": train.keys[i],
        "test_key": test.keys[j],
        "kind": kind,
        "distance": round(distance, 5),
    }


def open_test(
    test_shards: str | None, dataset: str | None, root: str | None, allow_pickle: bool
) -> tuple[str, Iterator[AuditShape], Skipped]:
    """(what the test set is, its shapes, their skip counter) from --test or --dataset/--root."""
    skipped = Skipped()
    if bool(test_shards) == bool(dataset):
        raise UsageError("give either --test SHARDS or --dataset NAME with --root DIR")
    if test_shards:
        return f"shards {test_shards} (test)", shard_shapes(test_shards, "test", skipped), skipped
    if not root:
        raise UsageError("--dataset needs --root: the benchmark's files")
    from cg3d.eval.readers import open_benchmark

    benchmark = open_benchmark(dataset, Path(root), allow_pickle=allow_pickle)
    name = f"{benchmark.name} {benchmark.variant} ({root})"
    return name, benchmark_shapes(benchmark, skipped), skipped


# modelIds are mostly hex, some uuid-like with dashes of their own (u6028f63e-4111-...)
SHAPENET_LINE = re.compile(r"(\d{8})-([A-Za-z0-9_-]+?)(\.npy)?")


def read_shapenet_list(path: Path, option: str) -> list[str]:
    """The `<synsetId>-<modelId>` ids of a ShapeNet list file, in order, each once; a line in
    another format is one error naming the file and the line."""
    path = Path(path)
    require_regular_file(path, f"{option}: no such file {path}", option)  # a folder, a FIFO
    lines = read_small_text(path, option).splitlines()
    ids: dict[str, None] = {}
    for number, line in enumerate(lines, start=1):
        line = line.strip()
        if not line:
            continue
        match = SHAPENET_LINE.fullmatch(line)
        if match is None:
            raise UsageError(
                f"{option}: {path} line {number} is not <synsetId>-<modelId>.npy: {line!r:.80}"
            )
        ids[f"{match[1]}-{match[2]}"] = None
    return list(ids)


def list_pairs(train_ids: list[str], test_ids: list[str]) -> list[dict]:
    """same_id and same_model pairs of two ShapeNet lists, by dictionary look-ups."""
    train_set = set(train_ids)
    by_model: dict[str, list[str]] = {}
    for key in train_ids:
        by_model.setdefault(key.split("-", 1)[1], []).append(key)
    pairs = []
    for key in test_ids:
        if key in train_set:
            pairs.append({"train_key": key, "test_key": key, "kind": "same_id", "distance": 0.0})
        for other in by_model.get(key.split("-", 1)[1], []):
            if other != key:
                pairs.append(
                    {"train_key": other, "test_key": key, "kind": "same_model", "distance": 0.0}
                )
    return pairs


def audit_lists(train_list: Path, test_list: Path, out: Path) -> dict:
    """The overlap of a training and a test ShapeNet list by id: OUT/pairs.csv, audit.json,
    leaked_train.txt and leaked_test.txt, as `audit` writes them."""
    check_owner(Path(out), "audit", AUDIT_HARM)  # before the lists are read
    train_ids = read_shapenet_list(train_list, "--train-list")
    test_ids = read_shapenet_list(test_list, "--test-list")
    pairs = list_pairs(train_ids, test_ids)
    summary = {
        "train": f"list {train_list}",
        "test": f"list {test_list}",
        "train_shapes": len(train_ids),
        "test_shapes": len(test_ids),
        "descriptor": "none (ids only)",
        "threshold": None,
        "pairs": {
            kind: sum(p["kind"] == kind for p in pairs) for kind in ("same_id", "same_model")
        },
        "leaked_test_shapes": len({p["test_key"] for p in pairs}),
        "leaked_train_shapes": len({p["train_key"] for p in pairs}),
    }
    write_outputs(Path(out), summary, pairs)
    return summary


def audit(
    train_shards: str,
    out: Path,
    *,
    test_shards: str | None = None,
    dataset: str | None = None,
    root: str | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    allow_pickle: bool = False,
) -> dict:
    """Find the pairs, write OUT/pairs.csv, audit.json, leaked_train.txt, leaked_test.txt."""
    if not 0.0 < threshold < 2.0:
        raise UsageError(f"--threshold must be in (0, 2), got {threshold}")
    check_owner(Path(out), "audit", AUDIT_HARM)  # before the shapes are read
    test_name, test_iter, test_skipped = open_test(test_shards, dataset, root, allow_pickle)
    train_skipped = Skipped()
    train = describe(shard_shapes(train_shards, "train", train_skipped), train_skipped)
    test = describe(test_iter, test_skipped)
    identical = identity_pairs(train, test)
    seen = {(p["train_key"], p["test_key"]) for p in identical}
    similar = [
        p
        for p in shape_pairs(train, test, threshold)
        if (p["train_key"], p["test_key"]) not in seen
    ]
    pairs = identical + similar
    summary = {
        "train": f"shards {train_shards} (train)",
        "test": test_name,
        "train_shapes": len(train.keys),
        "test_shapes": len(test.keys),
        "unreadable": {"train": train.unreadable, "test": test.unreadable},
        "descriptor": DESCRIPTOR,
        "threshold": threshold,
        "pairs": {
            kind: sum(p["kind"] == kind for p in pairs)
            for kind in ("same_file", "same_uid", "same_shape")
        },
        "leaked_test_shapes": len({p["test_key"] for p in pairs}),
        "leaked_train_shapes": len({p["train_key"] for p in pairs}),
    }
    write_outputs(Path(out), summary, pairs)
    return summary


def write_outputs(out: Path, summary: dict, pairs: list[dict]) -> None:
    """The audit's files, audit.json last; an earlier audit.json is removed first, so a run
    killed part way never leaves the earlier counts beside this run's pairs."""
    claim(out, "audit", AUDIT_HARM)  # before its first file: one command's folder (`claim`)
    (out / AUDIT_NAME).unlink(missing_ok=True)
    write_csv(out / PAIRS_NAME, pairs, ["train_key", "test_key", "kind", "distance"])
    for name, column in (("leaked_train.txt", "train_key"), ("leaked_test.txt", "test_key")):
        with atomic_path(out / name) as tmp:
            keys = sorted({p[column] for p in pairs})
            tmp.write_text("".join(f"{key}\n" for key in keys), encoding="utf-8")
    write_json(out / AUDIT_NAME, summary)  # last: an audit.json means a finished audit


def read_audit(folder: Path, option: str = "--audit") -> dict:
    """What an eval's metrics say about its audit: the folder, inputs and counts. A problem is
    one line naming `option` (benchmark's --audits)."""
    path = Path(folder) / AUDIT_NAME
    missing = f"{option}: no {AUDIT_NAME} in {folder}: run `cg3d audit --out {folder}`"
    require_regular_file(path, missing)  # a FIFO or a folder is named as such
    try:
        summary = loads_json(path.read_bytes())
    except (OSError, ValueError) as error:
        raise UsageError(f"{option}: {path} does not read ({error}): rerun `cg3d audit`") from None
    problem = audit_problem(summary)
    if problem:
        raise UsageError(
            f"{option}: {path} is not an audit summary ({problem}): rerun `cg3d audit`"
        )
    keys = ("train", "test", "threshold", "pairs", "leaked_test_shapes")
    return {"folder": str(folder), **{k: summary.get(k) for k in keys}}


def audit_problem(summary: object) -> str | None:
    """What is wrong with the keys an eval copies from an audit.json, as `write_outputs` writes
    them, or None: a hand-edited count ("many", a list) or a 100 KB threshold string went into
    the eval's about.json as the audit's word."""
    if not isinstance(summary, dict):
        return f"a {type(summary).__name__}, not an object"

    def count(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    for key in ("train", "test"):
        if not isinstance(summary.get(key), str) or len(summary[key]) > 4096:
            return f"{key} is not the name of its shapes"
    threshold = summary.get("threshold")
    if threshold is not None and not (
        isinstance(threshold, int | float)
        and not isinstance(threshold, bool)
        and math.isfinite(threshold)
        and threshold >= 0
    ):
        return f"threshold is {str(threshold)[:40]!r}, not a distance"
    pairs = summary.get("pairs")
    if not isinstance(pairs, dict) or not all(
        isinstance(kind, str) and count(n) for kind, n in pairs.items()
    ):
        return "pairs is not a count per kind"
    if not count(summary.get("leaked_test_shapes")):
        return "leaked_test_shapes is not a count"
    return None

"""Readers for the standard benchmark files and for our own labelled shards.

Every reader streams `Shape`s (one file or record at a time, never the whole set in memory)
with raw xyz in the benchmark's own frame; `prepare_points` then brings a shape into the
model's input as the zero-shot protocol says (`cg3d.eval.protocols`). Under our `cg3d`
protocol: canonical +Y-up axes, normalised into the unit sphere the way our pipeline does
(bounding-box centre, 1 / max radius, `cg3d.geometry.frame`), farthest point sampled from a
seeded start to the model's `n_points` (fewer points are topped up by repeating random ones,
as the public protocols do; every metrics file counts such shapes, `topped_up_shapes`).
The readers themselves never normalise: the protocol decides (`cg3d-public`: the centroid,
as the public `pc_normalize`, and pointnet2_ops' FPS from index 0, `pointnet2_fps`).

Colour (models with `point_channels` 6 take xyz + rgb in [0, 1]): a shape carries `colors`
where its benchmark has them, and `prepare_points` gives every other shape the constant
`NO_COLOR` (0.5 grey), the value the sample stage gives objects without colour. What each set
holds, said in every result's about.json as `color` (`Benchmark.color`):
  modelnet40 / modelnet10  x,y,z,nx,ny,nz: no colour
  ulip_modelnet40          (8192, 6) x,y,z,nx,ny,nz: no colour
  shapenet55               (8192, 3) xyz: no colour
  scanobjectnn             h5 `data` (N, 2048, 3) xyz: no colour in any variant (the authors'
                           h5 files keep x, y, z of their `object_dataset` .bin files, which
                           also hold normals and rgb; those are not read here)
  objaverse-lvis           OpenShape's .npy: `rgb` in [0, 1] (a file without it gets the
                           constant); our shards: rgb when sampled with `sample.colors`
  shards                   rgb when sampled with `sample.colors`, by meta.json's `channels`

Axis conventions (all need no rotation, since our canonical frame is +Y up):
  modelnet40 / modelnet10  `modelnet40_normal_resampled` txt files: Y up (ShapeNet-style)
  ulip_modelnet40          ULIP's cached FPS pickle of the same files: Y up
  shapenet55               Point-BERT's `shapenet_pc/*.npy`: ShapeNetCore v2 frame, Y up
  scanobjectnn             h5 files: Y is the gravity axis (the authors' training code rotates
                           about Y, hkust-vgd/scanobjectnn issue #33), Y up
  objaverse-lvis           our shards: Y up (the pipeline's frame). OpenShape's per-shape .npy:
                           sampled from the Objaverse GLBs in glTF's frame, Y up; OpenShape's
                           loader swaps y and z when its `y_up` flag is set because its models
                           work Z up. Ours work Y up, so no swap is applied: the file's frame is
                           already ours.
"""

import logging
import pickle
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cg3d.errors import UsageError
from cg3d.eval.protocols import CG3D, Protocol
from cg3d.files import (
    OutsideRoot,
    confined_path,
    file_stand_in,
    inside_root,
    loads_json,
    read_small_file,
    read_small_text,
    require_folder,
    resolved_root,
    shown_name,
    stopping_error,
    why_not_a_file,
)
from cg3d.formats.npy import open_npy, read_npy
from cg3d.formats.shards import (
    INDEX_NAME,
    Skipped,
    is_remote,
    iter_samples,
    label_problem,
    read_index,
    sample_has_color,
    split_channels,
    split_entry,
)
from cg3d.geometry.fps import farthest_point_sample, pointnet2_fps
from cg3d.geometry.frame import (
    canonical_rotation,
    centroid_normalize,
    normalization,
    normalize,
    to_canonical_axes,
)
from cg3d.protocol import check_class_list, class_names, index_classes, shapenet_renames

log = logging.getLogger(__name__)

LVIS_CLASSES = 1156  # the benchmark's categories; a smaller set is said so in the variant
# Where OpenShape's release keeps the LVIS split under its data folder.
OPENSHAPE_SPLITS = ("lvis.json", "split/lvis.json", "meta_data/split/lvis.json")
# An OpenShape shape file is 10,000 points of xyz and rgb (about 250 KB). Its pickle is loaded
# whole, so a file past this size is refused before loading (the pickle cannot be bounded
# from outside, as an array's header can).
OPENSHAPE_MAX_BYTES = 64 << 20
SCANOBJECTNN_FILES = {
    "obj_only": "main_split_nobg/{split}_objectdataset.h5",
    "obj_bg": "main_split/{split}_objectdataset.h5",
    "pb_t50_rs": "main_split/{split}_objectdataset_augmentedrot_scale75.h5",
}
# ShapeNetCore synset → the first name of its taxonomy.json entry, the name the CG3D code
# looks up in its class list (after the display/vessel/ashcan renames, `shapenet_renames`).
SHAPENET_SYNSETS = {
    "02691156": "airplane", "02747177": "ashcan", "02773838": "bag", "02801938": "basket",
    "02808440": "bathtub", "02818832": "bed", "02828884": "bench", "02843684": "birdhouse",
    "02871439": "bookshelf", "02876657": "bottle", "02880940": "bowl", "02924116": "bus",
    "02933112": "cabinet", "02942699": "camera", "02946921": "can", "02954340": "cap",
    "02958343": "car", "02992529": "cellular telephone", "03001627": "chair", "03046257": "clock",
    "03085013": "computer keyboard", "03207941": "dishwasher", "03211117": "display",
    "03261776": "earphone", "03325088": "faucet", "03337140": "file", "03467517": "guitar",
    "03513137": "helmet", "03593526": "jar", "03624134": "knife", "03636649": "lamp",
    "03642806": "laptop", "03691459": "loudspeaker", "03710193": "mailbox",
    "03759954": "microphone", "03761084": "microwave", "03790512": "motorcycle", "03797390": "mug",
    "03928116": "piano", "03938244": "pillow", "03948459": "pistol", "03991062": "pot",
    "04004475": "printer", "04074963": "remote control", "04090263": "rifle", "04099429": "rocket",
    "04225987": "skateboard", "04256520": "sofa", "04330267": "stove", "04379243": "table",
    "04401088": "telephone", "04460130": "tower", "04468005": "train", "04530566": "vessel",
    "04554684": "washer",
}  # fmt: skip


COLOR_FROM_BENCHMARK = "rgb from the benchmark"
COLOR_CONSTANT = "constant 0.5 (the benchmark has no colour)"
COLOR_FROM_SHARDS = "rgb from the shards (an object without colour: constant 0.5)"
COLOR_NOT_SAMPLED = "constant 0.5 (the shards were sampled without colours)"


@dataclass
class Shape:
    key: str
    points: np.ndarray  # (N, 3+) raw, in the file's frame: xyz first
    label: int
    colors: np.ndarray | None = None  # (N, 3) rgb in [0, 1]; None: no colour of its own


@dataclass
class Benchmark:
    """A labelled evaluation set: class names in label order and a fresh stream of shapes."""

    name: str
    variant: str
    classes: list[str]
    size: int
    shapes: Callable[[], Iterator[Shape]]
    up_axis: str = "y"
    normalised: bool = False  # points already in our unit-sphere frame (our shards): keep it
    skipped: Callable[[], int] = lambda: 0  # samples the last pass left out (undecodable)
    refused: Callable[[], int] = lambda: 0  # of those, named by a path outside --root
    color: str = COLOR_CONSTANT  # where a colour model's rgb comes from (module docstring)
    # The class names as the benchmark's own files write them (ModelNet's folders: night_stand),
    # in label order, for protocols that put them in prompts as they are; None: as `classes`.
    folder_names: list[str] | None = None

    def __post_init__(self) -> None:
        """Each pass over `shapes` counts the shapes without colour of their own, and starts
        `topped_up` and `unusable` afresh: the shapes of the pass that whoever prepares them
        (zero-shot, fine-tuning) found short of the model's points (`prepare_counted`), or could
        not use at all (`skip`). `skipped()` counts the reader's skipped shapes and the unusable."""
        produce, read_skipped = self.shapes, self.skipped
        self.uncolored, self.topped_up, self.unusable = 0, 0, 0
        self.unusable_reasons: set[str] = set()

        def counted() -> Iterator[Shape]:
            self.uncolored, self.topped_up, self.unusable = 0, 0, 0
            self.unusable_reasons = set()
            for shape in produce():
                self.uncolored += shape.colors is None
                yield shape

        self.shapes = counted
        self.skipped = lambda: read_skipped() + self.unusable

    def check_choice(self, task: str) -> None:
        """A UsageError naming `task` if the benchmark has fewer than two classes: every shape is
        then right (a top-1 of 100 % that says nothing), in zero-shot and a fine-tuned head."""
        if len(self.classes) < 2:
            raise UsageError(
                f"{self.name}: one class ({', '.join(map(shown_name, self.classes))}): {task} "
                "needs two classes or more to choose between"
            )

    def skip(self, key: str, reason: str) -> None:
        """Count shape `key`, read but unusable for `reason` (no finite point, all points at
        one place: `prepare_points`' ValueError), as skipped. The reason is logged with the
        first shape that has it: a scan with many empty clouds is one line, not thousands."""
        self.unusable += 1
        if reason not in self.unusable_reasons:
            self.unusable_reasons.add(reason)
            log.warning(
                "skipping %s shape %s: %s (other shapes skipped for this reason are counted in "
                "skipped_samples, not logged)",
                self.name,
                key,
                reason,
            )

    def prepared(
        self, compute: Callable[[], tuple[np.ndarray, bool]], key: str
    ) -> np.ndarray | None:
        """The prepared points of shape `key` that `compute()` (`prepare_counted`) gives, or
        None when it cannot be prepared (no finite point, all points at one place): then it is
        skipped and counted (`skip`), as the readers skip an unreadable file, and the
        evaluation goes on. Shapes used and topped up are counted in `topped_up`."""
        try:
            points, topped_up = compute()
        except ValueError as error:
            self.skip(key, str(error))
            return None
        self.topped_up += topped_up
        return points

    def no_shapes(self, message: str) -> UsageError:
        """The error when no shape of a pass could be used: `message`, and how many were
        skipped."""
        skipped = self.skipped()
        why = f" ({skipped} skipped, their reasons logged above)" if skipped else ""
        return UsageError(f"{message}{why}")


def color_summary(
    point_channels: int, color: str, uncolored: int
) -> tuple[dict[str, int], dict[str, str]]:
    """What a result says about colour, as (numbers for metrics.json, description for
    about.json): how many shapes got the constant `NO_COLOR` (`uncolored`, of a benchmark's last
    pass or a retrieval split), and where the rgb fed came from (`color`, e.g.
    `Benchmark.color`). A model that takes xyz is fed no colour: no count, and about says so."""
    if point_channels != 6:
        return {}, {"color": "not fed (the model takes xyz)"}
    return {"shapes_without_color": uncolored}, {"color": color}


def log_topped_up(what: str, topped_up: int, shapes: int, n_points: int) -> None:
    """One line per run (not one per shape) when some shapes were topped up
    (`prepare_counted`); the metrics count them as `topped_up_shapes`."""
    if topped_up:
        log.warning(
            "%s: %d of %d shapes had fewer than %d points and were topped up by repeating "
            "points (topped_up_shapes in metrics.json)",
            what,
            topped_up,
            shapes,
            n_points,
        )


def prepare_points(
    points: np.ndarray,
    n_points: int,
    up_axis: str = "y",
    seed: int = 0,
    normalise: bool = True,
    colors: np.ndarray | None = None,
    point_channels: int = 3,
    protocol: Protocol = CG3D,
) -> np.ndarray:
    """(n_points, point_channels) float32: the model's axes, unit sphere, FPS (or padding) to
    `n_points`, each as `protocol` says; with 6 channels, each kept point's rgb follows it
    (`colors`, or the protocol's constant colour).

    `normalise=False` keeps coordinates as they are (shapes already in our frame, whose
    normalisation came from the mesh vertices, which the points alone cannot reproduce).
    """
    args = (up_axis, seed, normalise, colors, point_channels, protocol)
    return prepare_counted(points, n_points, *args)[0]


def prepare_counted(
    points: np.ndarray,
    n_points: int,
    up_axis: str = "y",
    seed: int = 0,
    normalise: bool = True,
    colors: np.ndarray | None = None,
    point_channels: int = 3,
    protocol: Protocol = CG3D,
) -> tuple[np.ndarray, bool]:
    """`prepare_points`, and whether it topped the cloud up: fewer finite points (xyz) than
    the `n_points` fed, so some are repeated (random ones under our protocol, one point under
    pointnet2_ops' FPS of the public ones, `cg3d.eval.protocols`). One call gives both, so a
    pool worker returns the count with the points and its caller keeps no raw cloud."""
    xyz = np.asarray(points, dtype=np.float64)[:, :3]
    finite = np.isfinite(xyz).all(axis=1)
    topped_up = int(finite.sum()) < n_points  # the cloud's own points, whatever its colours
    if point_channels == 6:
        constant = (protocol.constant_color,) * 3
        rgb = constant if colors is None else np.asarray(colors, dtype=np.float64)
        xyz = np.concatenate([xyz, np.broadcast_to(rgb, xyz.shape)], axis=1)
        finite &= np.isfinite(xyz[:, 3:]).all(axis=1)
    xyz = xyz[finite]  # rgb rides along as columns 3:6
    if len(xyz) == 0:
        raise ValueError("empty: no finite points")
    xyz[:, :3] = to_model_axes(xyz[:, :3], up_axis, protocol.up_axis)
    if normalise and protocol.point_normalisation == "centroid":
        xyz = xyz.astype(np.float32)  # pc_normalize runs on the float32 points it is given
        xyz[:, :3] = centroid_normalize(xyz[:, :3])
    elif normalise:
        centre, scale = normalization(xyz[:, :3])
        xyz[:, :3] = normalize(xyz[:, :3], centre, scale)
    if protocol.min_points_fed and len(xyz) <= n_points:
        if len(xyz) >= protocol.min_points_fed:  # as it is, in its order, as its loader feeds it
            return np.ascontiguousarray(xyz, dtype=np.float32), False
        n_points = protocol.min_points_fed  # topped up to what the encoder needs, no further
    if protocol.fps_start == "first":
        xyz = xyz[pointnet2_fps(xyz[:, :3], n_points)]
        return np.ascontiguousarray(xyz, dtype=np.float32), topped_up
    rng = np.random.default_rng(seed)
    if len(xyz) > n_points:
        xyz = xyz[farthest_point_sample(xyz[:, :3], n_points, int(rng.integers(len(xyz))))]
    elif len(xyz) < n_points:
        xyz = np.concatenate([xyz, xyz[rng.integers(len(xyz), size=n_points - len(xyz))]])
    return np.ascontiguousarray(xyz, dtype=np.float32), topped_up


def to_model_axes(xyz: np.ndarray, up_axis: str, model_up: str = "y") -> np.ndarray:
    """xyz turned from the benchmark's `up_axis` into the model's `model_up` (through our
    canonical +Y-up frame: a permutation with signs, so exact)."""
    canonical = to_canonical_axes(xyz, up_axis)
    return canonical if model_up == "y" else canonical @ canonical_rotation(model_up)


def _require_file(root: Path, path: Path, what: str) -> Path:
    """`path` (a whole path, not one relative to `root`), a file the reader needs, if it lies
    inside `root` (symlinks followed)."""
    try:
        inside_root(root, path)
    except ValueError as error:  # OutsideRoot, or a NUL byte in a name a list file gave
        raise UsageError(f"{what}: {error}") from None
    why = why_not_a_file(path)
    if why == "does not exist":
        # under a --root that is a file or FIFO, name that, not the file it cannot hold
        require_folder(root, what, missing=f"{what}: missing file {path}")
        raise UsageError(f"{what}: missing file {path}")
    if why:
        raise UsageError(f"{what}: {shown_name(path)} {why}")
    return path


def _list_lines(path: Path, what: str) -> list[str]:
    """The non-blank lines of a benchmark's list file, stripped; a file that is not UTF-8
    text is one line naming it (a UnicodeDecodeError traceback), one past
    files.MAX_LIST_BYTES too, from its size (it was read whole, however large)."""
    text = read_small_text(path, what)
    return [line.strip() for line in text.splitlines() if line.strip()]


class Refusals:
    """Shapes of one pass whose file lies outside --root: left unread, logged and counted."""

    def __init__(self) -> None:
        self.count = 0

    def path(self, root: Path, base: Path, reference: str, key: str) -> Path | None:
        """The confined path of `reference`, or None (counted) when it escapes `root`."""
        try:
            return confined_path(root, base, reference)
        except OutsideRoot as error:
            self.refuse(key, str(error))
            return None
        except ValueError as error:  # a NUL byte: a list file's line that names no file
            raise UsageError(f"--root: {error}") from None

    def refuse(self, key: str, reason: str) -> None:
        self.count += 1
        log.warning("refused %s: %s", key, reason)


def _check_classes(found: list[str], dataset: str, source: Path) -> list[str]:
    """The protocol's class list, after checking that the files list the same names in order."""
    expected = class_names(dataset)
    if [name.replace("_", " ") for name in found] != expected:
        raise UsageError(f"{source}: class names differ from the {dataset} protocol list")
    return expected


def modelnet(root: Path, classes: int = 40, split: str = "test") -> Benchmark:
    """`modelnet40_normal_resampled`: `<class>/<class>_XXXX.txt` rows of x,y,z,nx,ny,nz."""
    root = resolved_root(root)
    dataset = f"modelnet{classes}"
    names_file = _require_file(root, root / f"{dataset}_shape_names.txt", "--root")
    found = _list_lines(names_file, "--root")
    names = _check_classes(found, dataset, names_file)
    list_file = _require_file(root, root / f"{dataset}_{split}.txt", "--root")
    ids = _list_lines(list_file, "--root")
    label_of = {folder: index for index, folder in enumerate(found)}
    refusals, unreadable = [Refusals()], [0]

    def shapes() -> Iterator[Shape]:
        refusals[0] = refused = Refusals()
        unreadable[0] = 0
        for shape_id in ids:
            folder = shape_id.rsplit("_", 1)[0]  # night_stand_0001 → night_stand
            if folder not in label_of:
                raise UsageError(f"{list_file}: {shape_id!r} names no class of {names_file.name}")
            path = refused.path(root, root / folder, f"{shape_id}.txt", shape_id)
            if path is None:
                continue
            path = _require_file(root, path, "--root")
            try:
                points = read_modelnet_txt(path)
            except ValueError as error:  # one bad file is one skipped shape, with its reason
                unreadable[0] += 1
                log.warning("skipping %s: %s", shape_id, error)
                continue
            yield Shape(shape_id, points, label_of[folder])

    return Benchmark(
        dataset,
        split,
        names,
        len(ids),
        shapes,
        skipped=lambda: refusals[0].count + unreadable[0],
        refused=lambda: refusals[0].count,
        folder_names=found,
    )


def read_modelnet_txt(path: Path) -> np.ndarray:
    """(N, 3+) float32 rows `x,y,z[,nx,ny,nz]` of one ModelNet shape; ValueError naming the
    file and its fault when it holds anything else (text, too few columns, no rows)."""
    try:
        with warnings.catch_warnings():  # an empty file: said below, as one skipped shape
            warnings.simplefilter("ignore", UserWarning)
            points = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
    except ValueError as error:  # UnicodeDecodeError included: a binary file
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{path}: not rows of comma-separated numbers ({first})") from None
    if points.shape[0] == 0 or points.shape[1] < 3:
        raise ValueError(f"{path}: {points.shape[0]} rows of {points.shape[1]} values, not x,y,z")
    return points


# ULIP's file holds 2,468 clouds of (8192, 6) float32, about 485 MB (twice that as float64); it
# is unpickled whole, so a file far past that is refused before loading.
ULIP_MAX_BYTES = 4 << 30


def ulip_modelnet40(path: Path, allow_pickle: bool = False) -> Benchmark:
    """ULIP's `modelnet40_test_8192pts_fps.dat`: a pickle of [list of (8192, 6) arrays, labels].

    Unpickling runs whatever code the file names, so a tampered file could take over this
    process: it is only read with an explicit `--allow-pickle`, for files from a trusted source.
    """
    path = Path(path)
    root = resolved_root(path if path.is_dir() else path.parent)
    if path.is_dir():
        path = root / "modelnet40_test_8192pts_fps.dat"
    _require_file(root, path, "--root")
    if not allow_pickle:
        raise UsageError(
            f"{path} is a pickle, which can run arbitrary code when loaded: pass --allow-pickle "
            "only if you trust where it came from"
        )
    size = path.stat().st_size
    if size > ULIP_MAX_BYTES:
        raise UsageError(
            f"{path}: {size:,} bytes, more than ULIP's file ({ULIP_MAX_BYTES:,} at most)"
        )
    not_ulips = f"{path}: not ULIP's pickle of [point sets, labels]"
    try:
        with path.open("rb") as handle:
            data = pickle.load(handle)
    except MemoryError:  # a pickle that unpacks to more than this machine holds
        raise UsageError(f"{path}: unpickles to more than this machine's memory") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise UsageError(f"{not_ulips} ({type(error).__name__})") from None
    sized = isinstance(data, list | tuple) and all(hasattr(part, "__len__") for part in data)
    if not (sized and len(data) == 2):
        raise UsageError(f"{not_ulips} (it holds {type(data).__name__})")
    points, labels = data
    if len(points) != len(labels):
        raise UsageError(f"{path}: {len(points)} point sets but {len(labels)} labels")

    def shapes() -> Iterator[Shape]:
        for index, (cloud, label) in enumerate(zip(points, labels, strict=True)):
            yield Shape(f"modelnet40_test_{index:04d}", np.asarray(cloud), int(np.ravel(label)[0]))

    return Benchmark(
        "ulip_modelnet40", "test_8192pts_fps", class_names("modelnet40"), len(points), shapes
    )


def scanobjectnn_file(root: Path, variant: str, split: str) -> Path:
    """The variant's h5 under `root`: the download's `h5_files/` (or the folder holding it) or
    the variant's own folder (`main_split`, `main_split_nobg`), told apart by the folder's
    name, since two variants share `main_split`."""
    if variant not in SCANOBJECTNN_FILES:
        raise UsageError(
            f"--variant must be one of {', '.join(SCANOBJECTNN_FILES)}, got {variant!r}"
        )
    relative = Path(SCANOBJECTNN_FILES[variant].format(split=split))
    root = Path(root)
    # the name as given or as resolved (a root that is a symlink named either way)
    if relative.parent.name in (root.name, resolved_root(root).name):
        return _require_file(root, root / relative.name, "--root")
    if not (root / relative).exists() and (root / "h5_files" / relative).exists():
        # the folder the download's h5_files.zip was unpacked in: it said "missing file"
        return _require_file(root, root / "h5_files" / relative, "--root")
    return _require_file(root, root / relative, "--root")


# An h5 file's shapes are its word (a 12 KB file can declare a chunked (5, 10^9, 3) dataset of
# fill values): bounded before a slice of it is read. ScanObjectNN's clouds have 2048 points.
SCANOBJECTNN_MAX_POINTS = 1 << 20
SCANOBJECTNN_MAX_CHANNELS = 16
SCANOBJECTNN_MAX_SHAPES = 10_000_000
SCANOBJECTNN_BLOCK_BYTES = 64 << 20  # read in slices of at most this much


def scanobjectnn(root: Path, variant: str, split: str = "test") -> Benchmark:
    """ScanObjectNN h5 (`data` (N, 2048, 3), `label` (N,)) of one variant, read in slices."""
    import h5py

    path = scanobjectnn_file(root, variant, split)
    try:
        with h5py.File(path, "r") as h5:
            labels = _scanobjectnn_labels(h5, path)
            points, channels = h5["data"].shape[1:]
    except OSError as error:  # not HDF5, truncated: h5py's message names no file
        # a Git LFS pointer was "file signature not found", which names no cause
        reason = file_stand_in(path) or str(error)
        raise UsageError(f"{path}: not a readable HDF5 file ({reason})") from None
    size = len(labels)
    rows = max(1, SCANOBJECTNN_BLOCK_BYTES // (points * channels * 8))

    def shapes() -> Iterator[Shape]:
        with h5py.File(path, "r") as h5:
            data = h5["data"]
            for start in range(0, size, rows):
                block = data[start : start + rows]
                for offset, cloud in enumerate(block):
                    index = start + offset
                    yield Shape(f"{variant}_{split}_{index:05d}", cloud, int(labels[index]))

    return Benchmark("scanobjectnn", variant, class_names("scanobjectnn"), size, shapes)


def _scanobjectnn_labels(h5: Any, path: Path) -> np.ndarray:
    """The (N,) labels of an open ScanObjectNN h5, after its `data` and `label` datasets are
    checked: stored in the file itself, shapes bounded and agreeing, numbers, labels of the
    15 classes."""
    data, labels = _h5_dataset_in_file(h5, "data", path), _h5_dataset_in_file(h5, "label", path)
    shape = data.shape
    if len(shape) != 3 or shape[2] < 3 or data.dtype.kind not in "fiu":
        raise UsageError(f"{path}: 'data' is {data.dtype} {shape}, not (N, points, 3+) numbers")
    if (
        shape[1] > SCANOBJECTNN_MAX_POINTS
        or shape[2] > SCANOBJECTNN_MAX_CHANNELS
        or (shape[0] > SCANOBJECTNN_MAX_SHAPES)
    ):
        raise UsageError(
            f"{path}: 'data' declares shape {shape}, over the bounds "
            f"({SCANOBJECTNN_MAX_SHAPES}, {SCANOBJECTNN_MAX_POINTS}, {SCANOBJECTNN_MAX_CHANNELS})"
        )
    if labels.dtype.kind not in "iu" or labels.shape not in ((shape[0],), (shape[0], 1)):
        raise UsageError(
            f"{path}: 'label' is {labels.dtype} {labels.shape}, not {shape[0]} integers "
            "(one per cloud of 'data')"
        )
    values = np.ravel(labels[()])
    count = len(class_names("scanobjectnn"))
    wrong = np.flatnonzero((values < 0) | (values >= count))
    if len(wrong):
        raise UsageError(
            f"{path}: label {values[wrong[0]]} of cloud {wrong[0]} is not a class (0 to {count - 1})"
        )
    return values


def _h5_dataset_in_file(h5: Any, name: str, path: Path) -> Any:
    """The dataset `name` of the open h5 file `path`, if its values are stored in that file:
    HDF5 lets a file point elsewhere (an external link to another file's dataset, a dataset
    whose raw bytes live in an external file, a virtual dataset mapped from others), and h5py
    follows each silently, which would read files outside --root. Refused by name, before any
    value is read; so is a soft link (ScanObjectNN's files hold plain datasets)."""
    import h5py

    link = h5.get(name, getlink=True)
    if isinstance(link, h5py.ExternalLink):
        raise UsageError(
            f"{path}: '{name}' links to {link.filename}, another file (a benchmark is read "
            "from its own files under --root)"
        )
    if isinstance(link, h5py.SoftLink):
        raise UsageError(f"{path}: '{name}' is a soft link (to {link.path}), not a dataset")
    dataset = h5.get(name)
    if not isinstance(dataset, h5py.Dataset):
        raise UsageError(f"{path}: needs datasets 'data' and 'label' (no {name!r} dataset)")
    if dataset.external or dataset.is_virtual:
        where = dataset.external[0][0] if dataset.external else "other files (a virtual dataset)"
        raise UsageError(
            f"{path}: '{name}' keeps its values in {where!s}, outside the file (a benchmark is "
            "read from its own files under --root)"
        )
    return dataset


def shapenet55(root: Path, split: str = "test") -> Benchmark:
    """Point-BERT's ShapeNet-55: `<split>.txt` lists `<synset>-<model>.npy` in `shapenet_pc/`.

    The label of a synset is the index of its (CG3D-renamed) taxonomy name in the protocol's
    shapenet55 list, as the CG3D code does.
    """
    root = resolved_root(root)
    list_file = next(
        (p for p in (root / f"{split}.txt", root / "ShapeNet-55" / f"{split}.txt") if p.is_file()),
        None,
    )
    if list_file is None:
        missing = f"--root: missing file {root / f'{split}.txt'} (nor ShapeNet-55/{split}.txt)"
        require_folder(root, "--root", missing=missing)
        raise UsageError(missing)
    _require_file(root, list_file, "--root")
    cloud_dir = root / "shapenet_pc"
    if not cloud_dir.is_dir():
        raise UsageError(f"--root: missing folder {cloud_dir}")
    names = class_names("shapenet55")
    renames = shapenet_renames()
    files = _list_lines(list_file, "--root")

    def label(file_name: str) -> int:
        synset = file_name.split("-", 1)[0]
        if synset not in SHAPENET_SYNSETS:
            raise UsageError(f"{list_file}: {file_name!r} has unknown synset {synset!r}")
        name = SHAPENET_SYNSETS[synset]
        return names.index(renames.get(name, name))

    refusals = [Refusals()]

    def shapes() -> Iterator[Shape]:
        refusals[0] = refused = Refusals()
        for file_name in files:
            path = refused.path(root, cloud_dir, file_name, file_name)
            if path is None:
                continue
            points = read_npy(_require_file(root, path, "--root"))
            yield Shape(file_name.removesuffix(".npy"), points, label(file_name))

    count = lambda: refusals[0].count  # noqa: E731 - read after each pass
    return Benchmark("shapenet55", split, names, len(files), shapes, skipped=count, refused=count)


def shards(path: str | Path, split: str = "test") -> Benchmark:
    """Our own labelled shards (`cg3d pack` output, a folder, URL or `pipe:` prefix): points
    already normalised, Y up. Undecodable samples are skipped and counted (`skipped`)."""
    index = read_index(path)
    classes = index_classes(index, path)
    size = int(split_entry(index, split)["samples"])
    if size == 0:
        raise UsageError(f"{path}: no samples in split {split!r}")
    last_pass = [Skipped()]

    def shapes() -> Iterator[Shape]:
        last_pass[0] = skipped = Skipped()
        for sample in iter_samples(path, split, skipped):
            # a label the index names no class for (an index edited, or another pack's):
            # an IndexError traceback at the metrics, after every shape was encoded
            if reason := label_problem(sample["cls"], classes):
                skipped.add(f"sample {sample['key']}", reason)
                continue
            yield sample_shape(sample)

    layout = split_channels(path, split) or []
    return Benchmark(
        "shards",
        split,
        classes,
        size,
        shapes,
        normalised=True,
        skipped=lambda: last_pass[0].total,
        color=COLOR_FROM_SHARDS if "r" in layout else COLOR_NOT_SAMPLED,
    )


def sample_shape(sample: dict) -> Shape:
    """A decoded shard sample (`decode_sample`) as a Shape: its xyz and, when the object had
    colour of its own, its rgb, both by the sample's layout."""
    points, channels = sample["points"], sample["channels"]
    colors = None
    if sample_has_color(sample["meta"], channels):
        start = channels.index("r")
        colors = points[:, start : start + 3]
    return Shape(sample["key"], points[:, :3], int(sample["cls"]), colors)


def objaverse_lvis(root: str | Path, allow_pickle: bool = False) -> Benchmark:
    """Objaverse-LVIS: our shards of the LVIS objects (`cg3d meshes --source objaverse
    --annotations lvis-annotations.json`, then sample … pack), every split of them, since the
    whole LVIS set is the test set; or OpenShape's released split JSON and .npy files."""
    if is_remote(root) or (Path(root) / INDEX_NAME).is_file():
        index = read_index(root)
        splits = sorted(index.get("splits", {}))
        parts = [shards(root, split) for split in splits if index["splits"][split]["samples"]]
        if not parts:
            raise UsageError(f"{root}: no samples in the shard index")
        return Benchmark(
            "objaverse-lvis",
            f"shards ({'+'.join(splits)}; {len(parts[0].classes)} of {LVIS_CLASSES} classes)",
            parts[0].classes,
            sum(part.size for part in parts),
            lambda: (shape for part in parts for shape in part.shapes()),
            normalised=True,
            skipped=lambda: sum(part.skipped() for part in parts),
            color=parts[0].color,
        )
    return openshape_lvis(Path(root), allow_pickle)


def openshape_lvis(root: Path, allow_pickle: bool = False) -> Benchmark:
    """OpenShape's LVIS test set: a split JSON (a list of `{category, data_path, uid, ...}`)
    and per-shape `.npy` files that hold a pickled dict with `xyz` (N, 3) and `rgb` (N, 3).

    Reading them means unpickling, so only with `--allow-pickle`. Categories are sorted, as
    OpenShape labels them. `data_path` is taken as written when it exists, else under `--root`
    (its leading folders dropped one by one); a shape whose file is missing or holds no `xyz`
    is skipped and counted. Points are xyz in the file's Y-up frame, with the file's rgb.
    """
    split_file = (
        root
        if root.is_file()
        else next((root / name for name in OPENSHAPE_SPLITS if (root / name).is_file()), None)
    )
    if split_file is None:
        missing = (
            f"--root: {root} holds neither our shards (index.json) nor OpenShape's LVIS split "
            f"({', '.join(OPENSHAPE_SPLITS)})"
        )
        require_folder(root, "--root", missing=missing)  # a FIFO is named as what it is
        raise UsageError(missing)
    if root.is_dir():
        _require_file(root, split_file, "--root")
    if not allow_pickle:
        raise UsageError(
            f"{split_file}: OpenShape's .npy files are pickles, which can run arbitrary code when "
            "loaded: pass --allow-pickle only if you trust where they came from"
        )
    entries = read_lvis_split(split_file)
    classes = check_class_list(sorted({e["category"] for e in entries}), str(split_file))
    label_of = {name: i for i, name in enumerate(classes)}
    base = resolved_root(root if root.is_dir() else root.parent)
    skipped, refusals = [0], [Refusals()]

    def shapes() -> Iterator[Shape]:
        skipped[0], refusals[0] = 0, Refusals()
        for entry in entries:
            key = str(entry.get("uid") or Path(entry["data_path"]).stem)
            try:
                xyz, rgb = read_openshape_npy(locate(entry["data_path"], base))
            except OutsideRoot as error:
                skipped[0] += 1
                refusals[0].refuse(key, str(error))
                continue
            except (OSError, ValueError, KeyError) as error:
                if stopping_error(error):  # the disk's (ESTALE, ETIMEDOUT), not the shape's:
                    raise  # a skipped shape would put a network blip into the accuracy
                skipped[0] += 1
                log.warning("skipping %s: %s", key, error)
                continue
            yield Shape(key, xyz, label_of[entry["category"]], rgb)

    variant = f"openshape ({len(classes)} of {LVIS_CLASSES} classes)"
    return Benchmark(
        "objaverse-lvis",
        variant,
        classes,
        len(entries),
        shapes,
        skipped=lambda: skipped[0],
        refused=lambda: refusals[0].count,
        color=COLOR_FROM_BENCHMARK,
    )


def read_lvis_split(path: Path) -> list[dict]:
    """OpenShape's split JSON: a list of objects, each with a string `category` and
    `data_path`; a truncated or malformed file is one line naming it and the first bad entry,
    one past files.MAX_LIST_BYTES too (OpenShape's is 5 MB)."""
    try:
        entries = loads_json(read_small_file(path, "--root"))
    except (OSError, ValueError) as error:  # JSONDecodeError and UnicodeDecodeError included
        raise UsageError(f"{path}: not a readable LVIS split JSON ({error})") from None
    if not isinstance(entries, list):
        raise UsageError(f"{path}: expected a list of shapes, got a {type(entries).__name__}")
    for number, entry in enumerate(entries):
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(name), str) and entry[name] for name in ("category", "data_path")
        ):
            raise UsageError(
                f"{path}: entry {number} is not an object with string category and data_path "
                f"(got {entry!r:.80})"
            )
    return entries


def locate(data_path: str, base: Path) -> Path:
    """The file `data_path` names, inside `base` (--root): itself when it lies there, else
    under `base` with its leading folders dropped one at a time (OpenShape's JSON names the
    authors' own mount points). Nothing outside `base` is opened: OutsideRoot when the path
    as written escapes and no file of its trailing parts is inside, FileNotFoundError when
    nothing is found."""
    path = Path(data_path)
    candidates = [path] + [Path(*path.parts[start:]) for start in range(1, len(path.parts))]
    escaped = False
    for candidate in candidates:
        try:
            found = confined_path(base, base, candidate)
        except OutsideRoot:
            escaped = True
            continue
        if found.is_file():
            return found
    if escaped:
        raise OutsideRoot(f"{data_path} lies outside --root {base} (nor is it found under it)")
    raise FileNotFoundError(f"no file {data_path} (nor under {base})")


def read_openshape_npy(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(xyz (N, 3), rgb (N, 3) in [0, 1] or None when the file has none) of one shape file.

    A shape without `rgb` gets our constant `NO_COLOR` downstream, not OpenShape's 0.4 grey:
    every set fed to one model must mean the same thing by "no colour". rgb stored as 0–255 is
    scaled to [0, 1]. Every fault, memory included, is a ValueError naming `path` (one skipped
    shape): the file is opened once and its header read first, a plain array is read bounded
    (its header cannot claim more than the file holds, as `read_npy`), and only a pickled dict
    (a 0-d object array) of at most OPENSHAPE_MAX_BYTES is unpickled."""
    try:
        with open_npy(path) as npy:
            if not npy.dtype.hasobject:
                data: Any = npy.array()
            elif npy.shape != ():
                raise ValueError(f"an object array of shape {npy.shape}, not a pickled dict")
            elif npy.size > OPENSHAPE_MAX_BYTES:
                raise ValueError(
                    f"{npy.size} bytes, over the {OPENSHAPE_MAX_BYTES} of an OpenShape file"
                )
            else:
                npy.handle.seek(0)
                data = np.load(npy.handle, allow_pickle=True).item()
    except MemoryError:  # a pickle that unpacks to more than this machine holds
        raise ValueError(f"{path}: too large to load into memory") from None
    except (pickle.UnpicklingError, EOFError) as error:  # a damaged pickle
        raise ValueError(f"{path}: not a readable pickle ({type(error).__name__})") from None
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    if not isinstance(data, dict) or "xyz" not in data:
        raise ValueError(f"{path}: not a dict with 'xyz'")
    try:
        xyz = np.asarray(data["xyz"], dtype=np.float32)
        rgb = None if data.get("rgb") is None else np.asarray(data["rgb"], dtype=np.float32)
    except (TypeError, ValueError) as error:  # a string, a dict, ragged lists
        raise ValueError(f"{path}: xyz or rgb is not numbers ({error})") from None
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"{path}: xyz {xyz.shape} is not (N, 3)")
    if rgb is None:
        return xyz, None
    if rgb.shape != xyz.shape:
        raise ValueError(f"{path}: rgb {rgb.shape} does not match xyz {xyz.shape}")
    if rgb.size and rgb.max() > 1.0:
        rgb = rgb / 255.0
    return xyz, np.clip(rgb, 0.0, 1.0)


@dataclass(frozen=True)
class BenchmarkReader:
    """A `--dataset`: its reader, called as read(root, split, variant, allow_pickle)."""

    read: Callable[[Path, str, str, bool], Benchmark]
    variants: bool = False  # whether it takes --variant (ScanObjectNN's three)


# Every benchmark by its `--dataset` name: a new one is an entry here, as encoders register.
BENCHMARKS: dict[str, BenchmarkReader] = {
    "modelnet40": BenchmarkReader(lambda root, split, variant, allow: modelnet(root, 40, split)),
    "modelnet10": BenchmarkReader(lambda root, split, variant, allow: modelnet(root, 10, split)),
    "ulip_modelnet40": BenchmarkReader(
        lambda root, split, variant, allow: ulip_modelnet40(root, allow)
    ),
    "scanobjectnn": BenchmarkReader(
        lambda root, split, variant, allow: scanobjectnn(root, variant or "pb_t50_rs", split),
        variants=True,
    ),
    "shapenet55": BenchmarkReader(lambda root, split, variant, allow: shapenet55(root, split)),
    "objaverse-lvis": BenchmarkReader(
        lambda root, split, variant, allow: objaverse_lvis(root, allow)
    ),
    "shards": BenchmarkReader(lambda root, split, variant, allow: shards(root, split)),
}


def open_benchmark(
    dataset: str,
    root: Path,
    variant: str = "",
    split: str = "test",
    allow_pickle: bool = False,
) -> Benchmark:
    """The labelled set `dataset` under `root`; a wrong name or missing file is a UsageError."""
    reader = BENCHMARKS.get(dataset)
    if reader is None:
        raise UsageError(f"--dataset must be one of {', '.join(BENCHMARKS)}, got {dataset!r}")
    if not is_remote(root) and not Path(root).exists():
        # The commands take our shards as --shards (--root is for the benchmarks' files).
        option = "--shards" if dataset == "shards" else "--root"
        raise UsageError(f"{option}: no such file or folder {root}")
    if variant and not reader.variants:
        raise UsageError(f"--variant applies to scanobjectnn only, not {dataset}")
    return reader.read(root, split, variant, allow_pickle)

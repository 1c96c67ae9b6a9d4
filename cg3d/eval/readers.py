"""Readers for the standard benchmark files and for our own labelled shards.

Every reader streams `Shape`s (one file or record at a time, never the whole set in memory)
with raw xyz in the benchmark's own frame; `prepare_points` then brings a shape into the
model's input: canonical +Y-up axes, normalised into the unit sphere the way our pipeline
does (bounding-box centre, 1 / max radius, `cg3d.pipeline.geometry`), farthest point sampled
to the model's `n_points` (fewer points are topped up by repeating random ones).

Axis conventions (all need no rotation, since our canonical frame is +Y up):
  modelnet40 / modelnet10  `modelnet40_normal_resampled` txt files: Y up (ShapeNet-style)
  ulip_modelnet40          ULIP's cached FPS pickle of the same files: Y up
  shapenet55               Point-BERT's `shapenet_pc/*.npy`: ShapeNetCore v2 frame, Y up
  scanobjectnn             h5 files: Y is the gravity axis (the authors' training code rotates
                           about Y, hkust-vgd/scanobjectnn issue #33), Y up
"""

import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cg3d.errors import UsageError
from cg3d.formats.shards import Skipped, is_remote, iter_samples, read_index, split_entry
from cg3d.pipeline.fps import farthest_point_sample
from cg3d.pipeline.geometry import normalization, normalize, to_canonical_axes
from cg3d.protocol import class_names, shapenet_renames

DATASETS = ("modelnet40", "modelnet10", "ulip_modelnet40", "scanobjectnn", "shapenet55", "shards")
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


@dataclass
class Shape:
    key: str
    points: np.ndarray  # (N, 3+) raw, in the file's frame
    label: int


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


def prepare_points(
    points: np.ndarray, n_points: int, up_axis: str = "y", seed: int = 0, normalise: bool = True
) -> np.ndarray:
    """(n_points, 3) float32: canonical axes, unit sphere, FPS (or padding) to `n_points`.

    `normalise=False` keeps coordinates as they are (shapes already in our frame, whose
    normalisation came from the mesh vertices, which the points alone cannot reproduce).
    """
    xyz = np.asarray(points, dtype=np.float64)[:, :3]
    xyz = xyz[np.isfinite(xyz).all(axis=1)]
    if len(xyz) == 0:
        raise ValueError("empty: no finite points")
    xyz = to_canonical_axes(xyz, up_axis)
    if normalise:
        centre, scale = normalization(xyz)
        xyz = normalize(xyz, centre, scale)
    rng = np.random.default_rng(seed)
    if len(xyz) > n_points:
        xyz = xyz[farthest_point_sample(xyz, n_points, int(rng.integers(len(xyz))))]
    elif len(xyz) < n_points:
        xyz = np.concatenate([xyz, xyz[rng.integers(len(xyz), size=n_points - len(xyz))]])
    return np.ascontiguousarray(xyz, dtype=np.float32)


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise UsageError(f"{what}: missing file {path}")
    return path


def _check_classes(found: list[str], dataset: str, source: Path) -> list[str]:
    """The protocol's class list, after checking that the files list the same names in order."""
    expected = class_names(dataset)
    if [name.replace("_", " ") for name in found] != expected:
        raise UsageError(f"{source}: class names differ from the {dataset} protocol list")
    return expected


def modelnet(root: Path, classes: int = 40, split: str = "test") -> Benchmark:
    """`modelnet40_normal_resampled`: `<class>/<class>_XXXX.txt` rows of x,y,z,nx,ny,nz."""
    root = Path(root)
    dataset = f"modelnet{classes}"
    names_file = _require_file(root / f"{dataset}_shape_names.txt", "--root")
    found = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
    names = _check_classes(found, dataset, names_file)
    list_file = _require_file(root / f"{dataset}_{split}.txt", "--root")
    ids = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
    label_of = {folder: index for index, folder in enumerate(found)}

    def shapes() -> Iterator[Shape]:
        for shape_id in ids:
            folder = shape_id.rsplit("_", 1)[0]  # night_stand_0001 → night_stand
            if folder not in label_of:
                raise UsageError(f"{list_file}: {shape_id!r} names no class of {names_file.name}")
            path = _require_file(root / folder / f"{shape_id}.txt", "--root")
            points = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
            yield Shape(shape_id, points, label_of[folder])

    return Benchmark(dataset, split, names, len(ids), shapes)


def ulip_modelnet40(path: Path, allow_pickle: bool = False) -> Benchmark:
    """ULIP's `modelnet40_test_8192pts_fps.dat`: a pickle of [list of (8192, 6) arrays, labels].

    Unpickling runs whatever code the file names, so a tampered file could take over this
    process: it is only read with an explicit `--allow-pickle`, for files from a trusted source.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "modelnet40_test_8192pts_fps.dat"
    _require_file(path, "--root")
    if not allow_pickle:
        raise UsageError(
            f"{path} is a pickle, which can run arbitrary code when loaded: pass --allow-pickle "
            "only if you trust where it came from"
        )
    with path.open("rb") as handle:
        points, labels = pickle.load(handle)
    if len(points) != len(labels):
        raise UsageError(f"{path}: {len(points)} point sets but {len(labels)} labels")

    def shapes() -> Iterator[Shape]:
        for index, (cloud, label) in enumerate(zip(points, labels, strict=True)):
            yield Shape(f"modelnet40_test_{index:04d}", np.asarray(cloud), int(np.ravel(label)[0]))

    return Benchmark(
        "ulip_modelnet40", "test_8192pts_fps", class_names("modelnet40"), len(points), shapes
    )


def scanobjectnn(root: Path, variant: str, split: str = "test") -> Benchmark:
    """ScanObjectNN h5 (`data` (N, 2048, 3), `label` (N,)) of one variant, read in slices."""
    import h5py

    if variant not in SCANOBJECTNN_FILES:
        raise UsageError(
            f"--variant must be one of {', '.join(SCANOBJECTNN_FILES)}, got {variant!r}"
        )
    path = _require_file(Path(root) / SCANOBJECTNN_FILES[variant].format(split=split), "--root")
    with h5py.File(path, "r") as h5:
        if "data" not in h5 or "label" not in h5:
            raise UsageError(f"{path}: needs datasets 'data' and 'label'")
        size = len(h5["label"])

    def shapes() -> Iterator[Shape]:
        with h5py.File(path, "r") as h5:
            data, labels = h5["data"], h5["label"]
            for start in range(0, size, 256):
                block, block_labels = (
                    data[start : start + 256],
                    np.ravel(labels[start : start + 256]),
                )
                for offset, (cloud, label) in enumerate(zip(block, block_labels, strict=True)):
                    yield Shape(f"{variant}_{split}_{start + offset:05d}", cloud, int(label))

    return Benchmark("scanobjectnn", variant, class_names("scanobjectnn"), size, shapes)


def shapenet55(root: Path, split: str = "test") -> Benchmark:
    """Point-BERT's ShapeNet-55: `<split>.txt` lists `<synset>-<model>.npy` in `shapenet_pc/`.

    The label of a synset is the index of its (CG3D-renamed) taxonomy name in the protocol's
    shapenet55 list, as the CG3D code does.
    """
    root = Path(root)
    list_file = next(
        (p for p in (root / f"{split}.txt", root / "ShapeNet-55" / f"{split}.txt") if p.is_file()),
        None,
    )
    if list_file is None:
        raise UsageError(
            f"--root: missing file {root / f'{split}.txt'} (nor ShapeNet-55/{split}.txt)"
        )
    cloud_dir = root / "shapenet_pc"
    if not cloud_dir.is_dir():
        raise UsageError(f"--root: missing folder {cloud_dir}")
    names = class_names("shapenet55")
    renames = shapenet_renames()
    files = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]

    def label(file_name: str) -> int:
        synset = file_name.split("-", 1)[0]
        if synset not in SHAPENET_SYNSETS:
            raise UsageError(f"{list_file}: {file_name!r} has unknown synset {synset!r}")
        name = SHAPENET_SYNSETS[synset]
        return names.index(renames.get(name, name))

    def shapes() -> Iterator[Shape]:
        for file_name in files:
            points = np.load(_require_file(cloud_dir / file_name, "--root"), allow_pickle=False)
            yield Shape(file_name.removesuffix(".npy"), points, label(file_name))

    return Benchmark("shapenet55", split, names, len(files), shapes)


def shards(path: str | Path, split: str = "test") -> Benchmark:
    """Our own labelled shards (`cg3d pack` output, a folder, URL or `pipe:` prefix): points
    already normalised, Y up. Undecodable samples are skipped and counted (`skipped`)."""
    index = read_index(path)
    classes = list(index.get("classes") or [])
    if not classes:
        raise UsageError(f"{path}: the shard index lists no classes")
    size = int(split_entry(index, split)["samples"])
    if size == 0:
        raise UsageError(f"{path}: no samples in split {split!r}")
    last_pass = [Skipped()]

    def shapes() -> Iterator[Shape]:
        last_pass[0] = skipped = Skipped()
        for sample in iter_samples(path, split, skipped):
            yield Shape(sample["key"], sample["points"], int(sample["cls"]))

    return Benchmark(
        "shards", split, classes, size, shapes, normalised=True, skipped=lambda: last_pass[0].total
    )


def open_benchmark(
    dataset: str,
    root: Path,
    variant: str = "",
    split: str = "test",
    allow_pickle: bool = False,
) -> Benchmark:
    """The labelled set `dataset` under `root`; a wrong name or missing file is a UsageError."""
    if dataset not in DATASETS:
        raise UsageError(f"--dataset must be one of {', '.join(DATASETS)}, got {dataset!r}")
    if not is_remote(root) and not Path(root).exists():
        raise UsageError(f"--root: no such file or folder {root}")
    if dataset == "scanobjectnn":
        return scanobjectnn(root, variant or "pb_t50_rs", split)
    if variant:
        raise UsageError(f"--variant applies to scanobjectnn only, not {dataset}")
    if dataset in ("modelnet40", "modelnet10"):
        return modelnet(root, int(dataset.removeprefix("modelnet")), split)
    if dataset == "ulip_modelnet40":
        return ulip_modelnet40(root, allow_pickle)
    if dataset == "shapenet55":
        return shapenet55(root, split)
    return shards(root, split)


POINT_SUFFIXES = (".npy", ".txt", ".xyz", ".csv", ".pts")


def read_point_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(vertices or points (N, 3), faces (F, 3) or None) of a user's file.

    npy/txt/xyz/csv/pts hold points (xyz in the first three columns, comma or space separated);
    PLY is read with trimesh and gives faces when it has any. Other suffixes are meshes: the
    caller loads them with the pipeline's `load_mesh`.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such file {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix in POINT_SUFFIXES:
            text = path.read_text()
            array = np.loadtxt(text.replace(",", " ").splitlines(), dtype=np.float64, ndmin=2)
        elif suffix == ".ply":
            import trimesh

            loaded = trimesh.load(path, process=False)
            faces = getattr(loaded, "faces", None)
            has_faces = faces is not None and len(faces) > 0
            return np.asarray(loaded.vertices, dtype=np.float64), (
                np.asarray(faces) if has_faces else None
            )
        else:
            raise UsageError(
                f"{path}: not a point file (use one of {', '.join(POINT_SUFFIXES)}, .ply)"
            )
    except (ValueError, OSError) as error:
        raise UsageError(f"{path}: unreadable point file ({error})") from None
    if array.ndim != 2 or array.shape[1] < 3 or len(array) == 0:
        raise UsageError(f"{path}: expected an (N, 3+) array of points, got shape {array.shape}")
    return np.asarray(array[:, :3], dtype=np.float64), None

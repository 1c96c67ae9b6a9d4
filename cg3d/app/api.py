"""The Python API: a trained CG3D checkpoint as a few typed calls (also what `cg3d classify` runs).

    import cg3d
    model = cg3d.load("runs/train/last.pt")
    model.classify("chair.glb", labels=["chair", "table", "lamp"], top=3)  # [Prediction, ...]
    model.embed_points("chair.glb")      # (1, D) float32, unit norm, in CLIP's space
    model.embed_text(["a wooden chair"])  # (1, D)
    model.embed_images(["photo.png"])     # (1, D), through the visual prompts

A shape is a mesh file (obj, off, ply, stl, glb, gltf: the sample stage's loader, canonical axes,
vertex-based unit-sphere normalisation, area-weighted surface samples, FPS, so it reaches the
model exactly as training shapes did), a point file (npy, txt, xyz, csv, pts, a PLY without
faces), or an (N, 3+) array of points (normalised into the unit sphere by their bounding box,
then farthest point sampled: the benchmark path). Classification scores are CLIP-style
probabilities: softmax of logit_scale × cosine over the labels, each label the renormalised
mean of its prompt templates (64 by default).
"""

import threading
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from cg3d.errors import UsageError
from cg3d.eval.protocols import get_protocol
from cg3d.eval.readers import prepare_points
from cg3d.files import (
    read_small_text,
    require_regular_file,
    sorted_entries,
    why_not_a_folder,
    why_unlisted,
)
from cg3d.formats.images import ImageError, check_image_size, open_image
from cg3d.formats.pointfiles import POINT_SUFFIXES, check_points_array, read_point_file
from cg3d.formats.shards import rgb_on_white
from cg3d.geometry.frame import float32_quantization
from cg3d.models.model import CG3D
from cg3d.models.text import check_class_features, check_distinct_features
from cg3d.params import MAX_LABELS
from cg3d.protocol import same_text_classes

ShapeInput = str | Path | np.ndarray
ImageInput = str | Path | Image.Image | np.ndarray
# Class features a model keeps, per (label, templates): 2 KB each at D=512. The demo and a
# session's repeated classify calls re-ask the same labels; a new list costs only its new ones.
CLASS_CACHE_SIZE = 20_000


class Prediction(NamedTuple):
    """One label of a classification and its probability."""

    label: str
    score: float


def parse_labels(
    labels: str | Sequence[str] | None, default: Sequence[str], max_labels: int = MAX_LABELS
) -> list[str]:
    """Labels from a list or a comma-separated string; None or a blank string = `default`.

    A string is always text, never a file name: the demo passes what a visitor typed, so
    `/etc/passwd` is one label, not a file to read (a labels file: `read_labels_file`).
    A label given twice is refused (its probability would be split between the two), as are
    two that are one text to CLIP (`Chair` and `chair`: `same_text_classes`) and more than
    `max_labels` labels, the checkpoint's own classes included.
    """
    if isinstance(labels, str):
        found = [label.strip() for label in labels.split(",") if label.strip()]
        if labels.strip() and not found:  # ",,," is a mistake, not a request for the defaults
            raise UsageError(f"--labels: {labels!r:.40} names no label (separate labels by commas)")
    elif labels is not None and not isinstance(labels, Sequence):
        raise UsageError(f"--labels: expected text or a list of labels, got {labels!r:.60}")
    else:
        found = [str(label).strip() for label in labels or [] if str(label).strip()]
        if labels is not None and not found:  # a list that came out empty: a caller's bug,
            # which read as "the checkpoint's classes" and answered a question not asked
            raise UsageError(
                "--labels: the list of labels is empty (give None for the checkpoint's classes)"
            )
    given = bool(found)
    found = found or list(default)
    if not found:
        raise UsageError("--labels: no labels given and the checkpoint lists no classes")
    where = "--labels" if given else "the checkpoint's classes"
    max_labels = check_top(max_labels, "--max-labels")  # -5 read "3 labels, more than -5"
    if len(found) > max_labels:
        raise UsageError(
            f"{where}: {len(found)} labels, more than the limit of {max_labels} "
            "(max_labels, --max-labels)"
        )
    seen: set[str] = set()
    for label in found:
        if label in seen:
            raise UsageError(
                f"{where}: {label!r:.60} is given twice (its probability would be split); "
                "give each label once"
            )
        seen.add(label)
    if alike := same_text_classes(found):  # as the sources stage refuses such classes
        first, second = (repr(label)[:60] for label in alike)
        if unicodedata.normalize("NFC", first) == unicodedata.normalize("NFC", second):
            # `café` in NFC and in NFD print alike: their code points tell them apart
            first, second = (ascii(label)[:60] for label in alike)
        raise UsageError(
            f"{where}: {first} and {second} are one text to CLIP (it reads case, '_' and a "
            "space, and Unicode forms alike; their probability would be split); give one of them"
        )
    return found


def check_top(top: object, name: str = "top") -> int:
    """`top` as a count of results: an integer ≥ 1 (not a bool, not 2.5); UsageError otherwise."""
    if not isinstance(top, int | np.integer) or isinstance(top, bool) or top < 1:
        raise UsageError(f"{name} must be an integer ≥ 1, got {top!r:.40}")
    return int(top)


def check_finite(features: np.ndarray | torch.Tensor, what: str) -> None:
    """UsageError unless every value of `features` is finite: NaN scores would sort in an
    arbitrary order and show as `nan` probabilities (a checkpoint with NaN weights)."""
    finite = (
        torch.isfinite(features).all()
        if isinstance(features, torch.Tensor)
        else np.isfinite(features).all()
    )
    if not finite:
        raise UsageError(f"{what} holds NaN or infinite values")


def read_labels_file(path: Path) -> list[str]:
    """The labels of a file, one a line (blank lines skipped): `cg3d classify --labels-file`."""
    path = Path(path)
    require_regular_file(path, f"--labels-file: no such file {path}", "--labels-file")
    text = read_small_text(path, "--labels-file")
    found = [line.strip() for line in text.splitlines() if line.strip()]
    if not found:
        raise UsageError(f"--labels-file: {path} holds no labels")
    return found


def input_points(
    path: Path,
    n_points: int,
    up_axis: str = "y",
    seed: int = 0,
    point_channels: int = 3,
    reader=None,
) -> np.ndarray:
    """(n_points, point_channels) model input from a mesh or point file, as the pipeline
    prepares shapes: a mesh through the sample stage's own reading (Blender's for glTF and for
    colour), a point file normalised and farthest point sampled (rgb: the constant NO_COLOR).
    `reader`: an open `PointsReader` of this very config to reuse (many shapes, one Blender);
    none: one for this shape."""
    from cg3d.files import file_sha256
    from cg3d.geometry.meshio import MeshError
    from cg3d.pipeline.sample import PointsReader, SampleConfig

    check_up_axis(up_axis)
    path = check_shape_file(path)
    suffix = path.suffix.lower()
    faces = None
    if suffix in (*POINT_SUFFIXES, ".ply"):
        vertices, faces = read_point_file(path)  # a PLY with faces is a mesh: read it as below
    try:
        if suffix in POINT_SUFFIXES or (suffix == ".ply" and faces is None):
            return prepare_points(vertices, n_points, up_axis, seed, point_channels=point_channels)
        config = SampleConfig(points=n_points, seed=seed, colors=point_channels == 6)
        # the sampling seed comes from the bytes, not the name: a renamed copy of a file
        # scores the same (issue 26: chair.obj and my_chair.obj scored 0.354 and 0.394)
        content = f"sha256:{file_sha256(path)}"
        if reader is not None:
            cloud = reader(path, up_axis, content)[0]  # xyz, then rgb when asked
        else:
            with PointsReader(config) as read:
                cloud = read(path, up_axis, content)[0]
        return np.ascontiguousarray(cloud[:, :point_channels])
    except (MeshError, ValueError) as error:
        raise UsageError(f"{path}: {error}") from None


def check_shape_file(path: str | Path) -> Path:
    """`path` if it is a file of a format read here; UsageError naming it (and, for FBX and the
    like, the conversion to make) otherwise. Cheap: callers check before loading a model."""
    from cg3d.geometry.meshio import MeshError, check_suffix

    path = Path(path)
    # a folder a walk could not list (`_shape_paths`); `why_not_a_folder` never raises
    if not why_not_a_folder(path) and sorted_entries(path) is None:
        raise UsageError(f"{path}: {why_unlisted(path)}")
    require_regular_file(path, f"no such file {path}")
    if path.stat().st_size == 0:  # said before a model loads (issue 26)
        suffix = path.suffix.lower()
        kind = {".npy": "unreadable point file", ".ply": "unreadable point file"}.get(
            suffix, "no points" if suffix in POINT_SUFFIXES else "unreadable mesh"
        )
        raise UsageError(f"{path}: {kind}: the file is empty (0 bytes)")
    if path.suffix.lower() == ".npz":
        # never opened: np.load inflates a member whole (1 MB of zip can hold 10 GB of zeros)
        raise UsageError(f"{path}: an .npz archive is not read here; save its points with np.save")
    if path.suffix.lower() not in POINT_SUFFIXES:
        try:
            check_suffix(path, also=POINT_SUFFIXES)
        except MeshError as error:
            raise UsageError(f"{path}: {error}") from None
    return path


def check_up_axis(up_axis: str) -> None:
    from cg3d.geometry.frame import UP_AXES

    if up_axis not in UP_AXES:
        raise UsageError(f"--up-axis must be one of {', '.join(UP_AXES)}, got {up_axis!r}")


def array_points(
    points: np.ndarray,
    n_points: int,
    up_axis: str = "y",
    normalise: bool = True,
    colors: np.ndarray | None = None,
    point_channels: int = 3,
) -> np.ndarray:
    """(n_points, point_channels) model input from an (N, 3+) array of xyz (`normalise=False`:
    already in the model's frame, as in our shards, and only resampled to `n_points`); with 6
    channels each point's rgb is `colors` (N, 3) in [0, 1], or the constant NO_COLOR."""
    check_up_axis(up_axis)
    points = as_array(points, "points")
    check_points_array(points, "points")
    quantized = float32_quantization(points) if points.dtype == np.float32 else None
    if quantized and normalise:
        raise UsageError(f"points: {quantized}; pass float64, or points nearer the origin")
    if colors is not None and np.shape(colors) != (len(points), 3):
        raise UsageError(f"colors: expected a ({len(points)}, 3) array, got {np.shape(colors)}")
    try:
        return prepare_points(
            points, n_points, up_axis, 0, normalise, colors=colors, point_channels=point_channels
        )
    except ValueError as error:
        raise UsageError(f"points: {error}") from None


def as_array(values: object, what: str) -> np.ndarray:
    """`values` (an array, or nested lists of numbers) as an array; UsageError naming `what`."""
    try:
        return np.asarray(values)
    except (ValueError, TypeError) as error:  # ragged lists
        raise UsageError(f"{what}: not an array of numbers ({error})") from None


def read_image(image: ImageInput) -> Image.Image:
    """An RGB PIL image from a PIL image, an image file or an (H, W[, 3|4]) uint8 array;
    transparency on white, as the views the model was trained on."""
    try:
        if isinstance(image, Image.Image):
            check_image_size(*image.size, "image")
            return rgb_on_white(image)
        if isinstance(image, np.ndarray):
            if image.ndim >= 2:
                check_image_size(image.shape[1], image.shape[0], "image")
            try:
                return rgb_on_white(Image.fromarray(np.asarray(image, dtype=np.uint8)))
            except (TypeError, ValueError) as error:
                raise UsageError(f"image: not an (H, W[, 3]) array ({error})") from None
        path = Path(image)
        require_regular_file(path, f"no such file {path}")  # a FIFO would block the read
        with open_image(path) as opened:
            return rgb_on_white(opened)
    except ImageError as error:  # too large, or not an image: one line naming it
        raise UsageError(str(error)) from None


class Model:
    """A loaded CG3D checkpoint: embeddings of points, text and images, and classification.

    Every `embed_*` returns a (B, D) float32 array of L2-normalised features in CLIP's joint
    space, so a cosine similarity is a dot product. `network` is the underlying `CG3D` module.
    """

    def __init__(self, network: CG3D, checkpoint: Path, sha256: str):
        self.network = network
        self.checkpoint = Path(checkpoint)
        self.sha256 = sha256
        self._class_cache: dict[tuple[str, str], torch.Tensor] = {}  # (name, protocol)
        # Held while the cache is read or changed (the encoding runs outside it): threads of a
        # service that evicted at once popped one key twice (KeyError) or iterated a dict
        # another had changed (RuntimeError), a failed request.
        self._class_cache_lock = threading.Lock()
        # The reader `reading_shapes` keeps open, for its own thread only: one model serves a
        # service's threads, and another thread's shape went through a Blender worker this
        # one was using, or one it closed when its block ended.
        self._reading = threading.local()

    @contextmanager
    def reading_shapes(self) -> Iterator[None]:
        """Shape files prepared inside share one points reader: one Blender worker, started
        on first need, for a whole batch instead of one for each glTF or colour mesh."""
        from cg3d.pipeline.sample import PointsReader, SampleConfig

        config = SampleConfig(points=self.n_points, seed=0, colors=self.point_channels == 6)
        with PointsReader(config) as reader:
            self._reading.reader = reader
            try:
                yield
            finally:
                self._reading.reader = None

    @property
    def classes(self) -> list[str]:
        """The classes the checkpoint was trained on (the default labels)."""
        return list(self.network.config.get("classes") or [])

    @property
    def n_points(self) -> int:
        """Points per shape the model takes."""
        return int(self.network.config["n_points"])

    @property
    def point_channels(self) -> int:
        """3: the encoder takes xyz; 6: xyz and rgb."""
        return int(self.network.config["point_channels"])

    @property
    def identity(self) -> dict:
        """What an index records to know it was built by this model: the checkpoint's sha256
        and the CLIP weights it runs with (an override changes text and image features)."""
        return {
            "checkpoint_sha256": self.sha256,
            "clip_weights": self.network.config["clip_weights"],
        }

    def prepare(
        self,
        shape: ShapeInput,
        up_axis: str = "y",
        normalise: bool = True,
        colors: np.ndarray | None = None,
    ) -> np.ndarray:
        """(n_points, point_channels) model input of one shape: a mesh or point file, or an
        (N, 3+) array of xyz (its rgb, for a colour model, in `colors`)."""
        if not isinstance(shape, str | Path):  # an array, or nested lists of xyz
            return array_points(
                shape, self.n_points, up_axis, normalise, colors, self.point_channels
            )
        return input_points(
            Path(shape),
            self.n_points,
            up_axis,
            0,
            self.point_channels,
            getattr(self._reading, "reader", None),
        )

    def embed_points(
        self,
        shapes: ShapeInput | Sequence[ShapeInput],
        up_axis: str = "y",
        normalise: bool = True,
        batch_size: int = 32,
    ) -> np.ndarray:
        """(B, D) features of shapes: one file or (N, 3+) array, a (B, N, 3+) array, or a list.

        `normalise=False` takes arrays as already in the model's frame (unit sphere, Y up, as
        in our shards) and only resamples them to `n_points`.
        """
        if not isinstance(shapes, str | Path | np.ndarray | list | tuple):
            raise UsageError(
                f"points: expected a file, an array or a list, got {type(shapes).__name__}"
            )
        if isinstance(shapes, str | Path) or (isinstance(shapes, np.ndarray) and shapes.ndim == 2):
            shapes = [shapes]  # one shape; a list is a list of shapes
        prepared = [self.prepare(shape, up_axis, normalise) for shape in shapes]
        if not prepared:
            raise UsageError("points: no shapes given")
        return self.embed_prepared(np.stack(prepared), batch_size)

    @torch.inference_mode()
    def embed_prepared(self, points: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """(B, D) features of (B, n_points, point_channels) inputs made by `prepare`."""
        points = as_array(points, "points")
        expected = (self.n_points, self.point_channels)
        if points.ndim != 3 or points.shape[1:] != expected or points.dtype.kind not in "iuf":
            raise UsageError(
                f"points: expected (B, {', '.join(map(str, expected))}) prepared points (numbers, "
                f"from Model.prepare), got {points.dtype} of shape {points.shape}"
            )
        points = points.astype(np.float32)
        device = self.network.device()
        return _batched(
            list(points),
            batch_size,
            lambda part: self.network.encode_points(torch.from_numpy(np.stack(part)).to(device)),
        )

    @torch.inference_mode()
    def embed_text(self, texts: str | Sequence[str], batch_size: int = 256) -> np.ndarray:
        """(B, D) CLIP text features of the given strings, encoded as written."""
        texts = [texts] if isinstance(texts, str) else [str(text) for text in texts]
        if not texts:
            raise UsageError("text: no texts given")
        return _batched(texts, batch_size, self.network.encode_text)

    @torch.inference_mode()
    def embed_images(
        self, images: ImageInput | Sequence[ImageInput], batch_size: int = 32
    ) -> np.ndarray:
        """(B, D) image features (CLIP's preprocessing, then the prompt-tuned image tower)."""
        if isinstance(images, str | Path | Image.Image) or (
            isinstance(images, np.ndarray) and images.ndim in (2, 3)
        ):
            images = [images]
        pixels = [self.network.preprocess(read_image(image)) for image in images]
        if not pixels:
            raise UsageError("image: no images given")
        device = self.network.device()
        return _batched(
            pixels, batch_size, lambda part: self.network.encode_image(torch.stack(part).to(device))
        )

    @torch.inference_mode()
    def label_features(self, labels: Sequence[str], protocol: str = "cg3d") -> torch.Tensor:
        """(C, D) class prototypes of `labels` as the zero-shot `protocol` makes them (its
        templates, class-name writing and text normalisation). Each label's is cached (per
        protocol): a list that adds one label to the last encodes one label's captions, in
        batches (`Protocol.class_features`)."""
        chosen = get_protocol(protocol)
        names = chosen.written_names(list(labels))
        with self._class_cache_lock:
            found = {name: self._class_cache.get((name, chosen.name)) for name in names}
        missing = [name for name, feature in found.items() if feature is None]
        if missing:
            features = chosen.class_features(self.network, missing)
            check_class_features(features, missing, f"{self.checkpoint}")
            with self._class_cache_lock:
                for name, feature in zip(missing, features, strict=True):
                    found[name] = feature
                    if len(self._class_cache) >= CLASS_CACHE_SIZE:  # the oldest first
                        self._class_cache.pop(next(iter(self._class_cache)))
                    self._class_cache[(name, chosen.name)] = feature
        # beyond parse_labels' rule: labels whose prompts agree in CLIP's 77 tokens
        return check_distinct_features(
            torch.stack([found[name] for name in names]), list(labels), "--labels"
        )

    @torch.inference_mode()
    def classify(
        self,
        shape: ShapeInput,
        labels: str | Sequence[str] | None = None,
        top: int = 5,
        up_axis: str = "y",
        protocol: str = "cg3d",
        prepared: bool = False,
        max_labels: int = MAX_LABELS,
    ) -> list[Prediction]:
        """The `top` labels of one shape with their probabilities, best first.

        `labels`: a list or a comma-separated string (never read as a file name); none means
        the checkpoint's classes. `protocol` names how the labels' text features are made
        (`cg3d.eval.protocols`: "cg3d-public" is the public eval.py's "This is a " + label,
        not normalised); the shape itself is prepared as `prepare` does, whatever the protocol.
        `prepared=True` takes `shape` as the model's input already (`Model.prepare`).
        """
        top = check_top(top, "--top")
        names = parse_labels(labels, self.classes, max_labels)
        text = self.label_features(names, protocol)
        points = shape if prepared else self.prepare(shape, up_axis)
        feature = torch.from_numpy(self.embed_prepared(as_array(points, "points")[None]))
        feature = feature.to(text.device)
        probabilities = (self.network.logit_scale * feature @ text.T).softmax(dim=-1)[0].cpu()
        check_finite(probabilities, f"{self.checkpoint}: the probabilities")  # logit_scale
        # stable: labels of equal probability (identical prompts: CLIP's tokenizer reads "R&amp;D"
        # as "R&D") keep the given order, as eval's rankings do; unstable, it changed by size
        best = probabilities.argsort(descending=True, stable=True)[:top]
        return [Prediction(names[i], float(probabilities[i])) for i in best]


def _batched(items: list, batch_size: int, encode) -> np.ndarray:
    """`encode` over consecutive batches of `items`, as one float32 numpy array: where every
    feature leaves the model, so each is checked finite here (NaN weights give NaN features)."""
    parts = [
        encode(items[i : i + batch_size]).float().cpu() for i in range(0, len(items), batch_size)
    ]
    features = torch.cat(parts).numpy()
    check_finite(features, "the model's features (NaN or infinite weights?)")
    # Finite weights that overflow give rows of zeros once normalised: every label and every
    # object of an index then scored 0 (and an index built of them is refused when opened).
    lengths = np.linalg.norm(features.astype(np.float64), axis=-1)
    if not (np.abs(lengths - 1) <= 1e-3).all():
        raise UsageError(
            "the model's features are not unit vectors (rows of zeros: weights that overflow?)"
        )
    return features


def load(checkpoint: str | Path, device: str = "cpu", clip_pretrained: str | None = None) -> Model:
    """A CG3D checkpoint (`cg3d train`'s last.pt, an export, a converted model, or a hub
    folder of `cg3d export --format hub`) ready to embed and classify. CLIP's towers are built
    only when text or images are asked for: embedding points needs none.

    `clip_pretrained` loads other CLIP weights than those the checkpoint names (an open_clip
    tag or a file), checked against them as `cg3d eval` does.
    """
    from cg3d.models.checkpoint import load_model
    from cg3d.models.hub import model_sha256

    path = Path(checkpoint)
    network = load_model(path, device=device, clip_pretrained=clip_pretrained or None)
    return Model(network, path, model_sha256(path))

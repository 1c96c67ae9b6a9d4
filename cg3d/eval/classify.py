"""`cg3d classify PATH`: a user's mesh or point cloud → the top labels with scores.

A mesh goes through the sample stage's own code (pipeline `load_mesh`, canonical axes,
`sample_object`: vertex-based unit-sphere normalisation, area-weighted surface samples, FPS),
so it reaches the model exactly as training shapes did. A point cloud is normalised and
farthest-point sampled by `readers.prepare_points`, the benchmark path.
Scores are CLIP-style probabilities: softmax of logit_scale × cosine over the label set.
"""

from pathlib import Path

import numpy as np
import torch

from cg3d.errors import UsageError
from cg3d.eval.prompts import class_text_features, prompt_templates
from cg3d.eval.readers import POINT_SUFFIXES, prepare_points, read_point_file


def parse_labels(labels: str, default: list[str]) -> list[str]:
    """A file with one label per line, or a comma-separated list; "" = `default`."""
    if not labels:
        found = list(default)
    elif Path(labels).is_file():
        found = [line.strip() for line in Path(labels).read_text().splitlines() if line.strip()]
    else:
        found = [label.strip() for label in labels.split(",") if label.strip()]
    if not found:
        raise UsageError("--labels: no labels given and the checkpoint lists no classes")
    return found


def input_points(path: Path, n_points: int, up_axis: str = "y", seed: int = 0) -> np.ndarray:
    """(n_points, 3) model input from a mesh or point file, as the pipeline prepares shapes."""
    from cg3d.pipeline.geometry import UP_AXES, to_canonical_axes
    from cg3d.pipeline.sample import SampleConfig, sample_object

    if up_axis not in UP_AXES:
        raise UsageError(f"--up-axis must be one of {', '.join(UP_AXES)}, got {up_axis!r}")
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such file {path}")
    suffix = path.suffix.lower()
    faces = None
    if suffix in (*POINT_SUFFIXES, ".ply"):
        vertices, faces = read_point_file(path)  # a PLY with faces is a mesh: read it as below
    if suffix not in POINT_SUFFIXES and (suffix != ".ply" or faces is not None):
        from cg3d.pipeline.meshio import MeshError
        from cg3d.pipeline.sample import PointsReader

        # the sample stage's reading (Blender's for glTF), so the shape is what training saw
        try:
            with PointsReader(SampleConfig(points=n_points, seed=seed)) as read:
                return read(path, up_axis, path.stem)[0]
        except (MeshError, ValueError) as error:
            raise UsageError(f"{path}: {error}") from None
    if faces is None:
        try:
            return prepare_points(vertices, n_points, up_axis, seed)
        except ValueError as error:
            raise UsageError(f"{path}: {error}") from None
    vertices = to_canonical_axes(vertices, up_axis)
    try:
        return sample_object(
            vertices, faces, SampleConfig(points=n_points), np.random.default_rng(seed)
        )
    except ValueError as error:
        raise UsageError(f"{path}: {error}") from None


@torch.no_grad()
def classify(
    path: Path,
    checkpoint: Path,
    labels: str = "",
    top: int = 5,
    up_axis: str = "y",
    single_prompt: str = "",
    clip_pretrained: str = "",
) -> list[tuple[str, float]]:
    """The `top` (label, probability) pairs for the shape in `path`, best first."""
    from cg3d.models.checkpoint import load_model

    if top < 1:
        raise UsageError(f"--top must be ≥ 1, got {top}")
    model = load_model(Path(checkpoint), clip_pretrained=clip_pretrained or None)
    names = parse_labels(labels, model.config.get("classes") or [])
    points = input_points(Path(path), int(model.config["n_points"]), up_axis)
    text = class_text_features(model, names, prompt_templates(single_prompt))
    feature = model.encode_points(torch.from_numpy(points)[None].to(model.device()))
    probabilities = (model.logit_scale * feature @ text.T).softmax(dim=-1)[0].cpu()
    best = probabilities.argsort(descending=True)[:top]
    return [(names[i], float(probabilities[i])) for i in best]

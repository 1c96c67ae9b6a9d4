"""`cg3d eval zeroshot --protocol cg3d-public` is the public CG3D eval.py, shape for shape.

A release in the authors' layout (random values, the public encoder's full size, a micro SLIP)
is converted at 1024 and 8192 points and evaluated on ModelNet40 files in the
`modelnet40_normal_resampled` layout. The reference below is written from the public code,
not from ours: `ModelNet._get_item` (np.loadtxt → float32, xyz only, `pc_normalize`),
`misc.fps` (pointnet2_ops' furthest_point_sample kernel, simulated step by step with its
thread layout), `PointTransformerProject` (tests/models/public_networks), SLIP's text tower
(open_clip's TextTransformer) on `"This is a " + c` with c the shape_names.txt line, the text
features left unnormalised (eval.py:300), `logit_scale · point_n @ text.T`, argmax.
"""

import csv
import json
from dataclasses import replace

import numpy as np
import open_clip
import pytest
import torch
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.eval.protocols import CG3D_PUBLIC, register_protocol
from cg3d.eval.readers import open_benchmark, prepare_points
from cg3d.eval.zeroshot import ZeroShotConfig, score_benchmark
from cg3d.geometry.fps import farthest_point_sample
from cg3d.models.checkpoint import load_model
from cg3d.models.slip import SLIP_CONFIGS
from cg3d.protocol import class_names
from tests.eval.files import write_modelnet_shapes
from tests.models.public_networks import (
    MICRO,
    file_state,
    open_clip_text_tower,
    reference_point_transformer_project,
    write_release,
    write_slip_file,
)

# cg3d-public with one point choice changed: the scores must move beyond the test's tolerance
BBOX_CENTRED = register_protocol(
    replace(CG3D_PUBLIC, name="test-public-bbox-centred", point_normalisation="bbox")
)
SEEDED_FPS = register_protocol(replace(CG3D_PUBLIC, name="test-public-seeded", fps_start="seeded"))
POINTS_PER_FILE = 8500  # more than 8192, as the resampled files' 10,000
CENTRE_POINTS = 12  # points at a shape's centre: the kernel never picks them


def public_pc_normalize(pc: np.ndarray) -> np.ndarray:
    centroid = np.mean(pc, axis=0)
    pc = pc - centroid
    return pc / np.max(np.sqrt(np.sum(pc**2, axis=1)))


def public_kernel_fps(xyz: np.ndarray, count: int, threads: int = 512) -> np.ndarray:
    """furthest_point_sampling_kernel (sampling_gpu.cu), one step at a time: temp starts at
    1e10; a point with x²+y²+z² <= 1e-3 (float, against the double 1e-3) is skipped; each
    thread keeps its first k of the largest distance, the reduction the lowest thread."""
    n = len(xyz)
    x, y, z = (xyz[:, i].astype(np.float32) for i in range(3))
    eligible = (x * x + y * y + z * z).astype(np.float64) > 1e-3
    temp = np.full(n, 1e10, dtype=np.float32)
    preference = np.lexsort((np.arange(n), np.arange(n) % threads))  # thread, then k
    picked, old = [0], 0
    for _ in range(1, count):
        d = (x - x[old]) * (x - x[old]) + (y - y[old]) * (y - y[old]) + (z - z[old]) * (z - z[old])
        temp = np.where(eligible, np.minimum(d, temp), temp)
        candidate = np.where(eligible, temp, np.float32(-1))
        ties = candidate[preference] == candidate.max()
        old = int(preference[np.argmax(ties)]) if candidate.max() >= 0 else 0
        picked.append(old)
    return np.array(picked)


def public_eval(root, release, slip_file, npoints: int) -> tuple[list[str], torch.Tensor]:
    """What `validate_ZS` predicts for every shape of modelnet40_test.txt, in order, and its
    `point_n @ text.T` before the logit scale."""
    # the public `[line.rstrip() for line in open(...)]`
    names = [line.rstrip() for line in (root / "modelnet40_shape_names.txt").open()]
    ids = [line.rstrip() for line in (root / "modelnet40_test.txt").open()]
    clouds = []
    for shape_id in ids:
        folder = "_".join(shape_id.split("_")[0:-1])
        point_set = np.loadtxt(root / folder / f"{shape_id}.txt", delimiter=",").astype(np.float32)
        point_set[:, 0:3] = public_pc_normalize(point_set[:, 0:3])
        xyz = point_set[:, 0:3]
        clouds.append(xyz[public_kernel_fps(xyz, npoints)])
    base = {k.replace("module.", ""): v for k, v in torch.load(release)["base_model"].items()}
    # The model's own Group FPS also runs the kernel; on points the kernel already sampled it
    # starts at their point 0 and finds no other point it would skip, so plain FPS is its pick.
    latent_point = reference_point_transformer_project(base, torch.from_numpy(np.stack(clouds)))
    latent_point = latent_point / latent_point.norm(dim=-1, keepdim=True)
    state = file_state(slip_file)
    config = SLIP_CONFIGS[MICRO]
    tokens = open_clip.tokenize(["This is a " + c for c in names], config.context_length)
    with torch.no_grad():
        text_features = open_clip_text_tower(config, state)(tokens).double()
    logits = state["logit_scale"].exp() * latent_point @ text_features.t()
    return [names[i] for i in logits.argmax(-1).tolist()], latent_point @ text_features.t()


def box_with_centre_points(rng, scale, centre_first: bool = False) -> np.ndarray:
    """(POINTS_PER_FILE, 6): a box surface, `CENTRE_POINTS` points at its centre (first when
    `centre_first`), random unit normals."""
    n = POINTS_PER_FILE - CENTRE_POINTS
    surface = rng.uniform(-1, 1, (n, 3))
    face = rng.integers(3, size=n)
    surface[np.arange(n), face] = np.sign(surface[np.arange(n), face])
    surface *= scale
    centre = rng.normal(0, 0.003, (CENTRE_POINTS, 3))
    xyz = np.concatenate([centre, surface] if centre_first else [surface, centre])
    normals = rng.normal(size=xyz.shape)
    return np.concatenate([xyz + 0.3, normals / np.linalg.norm(normals, axis=1, keepdims=True)], 1)


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    rng = np.random.default_rng(7)
    shapes = {
        "night_stand": [box_with_centre_points(rng, (1, 1.2, 0.8), centre_first=True)],
        "flower_pot": [box_with_centre_points(rng, (0.5, 1.5, 0.5))],
        "tv_stand": [box_with_centre_points(rng, (2, 0.6, 0.7))],
        "airplane": [box_with_centre_points(rng, (3, 0.3, 1.5))],
    }
    root = tmp_path_factory.mktemp("modelnet40_normal_resampled")
    write_modelnet_shapes(root, shapes)
    return root


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    folder = tmp_path_factory.mktemp("release")
    slip_file = write_slip_file(folder / "slip_base_100ep.pt")
    return slip_file, write_release(folder / "ckpt.pth", slip_file, seed=3)


def converted(release, out, n_points: int):
    slip_file, checkpoint = release
    arguments = ["convert", "cg3d-release", "--checkpoint", str(checkpoint)]
    arguments += ["--clip-pretrained", str(slip_file), "--out", str(out)]
    arguments += ["--clip-model", MICRO, "--n-points", str(n_points)]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("npoints", [1024, 8192])
def test_the_public_protocol_predicts_what_the_public_eval_py_predicts(
    benchmark, release, tmp_path, npoints
):
    checkpoint = converted(release, tmp_path / "cg3d_release.pt", npoints)
    out = tmp_path / "eval"
    arguments = ["eval", "zeroshot", "--checkpoint", str(checkpoint), "--out", str(out)]
    arguments += ["--dataset", "modelnet40", "--root", str(benchmark), "--protocol", "cg3d-public"]
    arguments += ["--text-cache", str(tmp_path / "text"), "--batch-size", "2"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    with (out / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    expected, public_scores = public_eval(benchmark, release[1], release[0], npoints)
    spaced = {name.replace(" ", "_"): name for name in class_names("modelnet40")}
    assert [row["predicted"] for row in rows] == [spaced[name] for name in expected]
    # and every score, not only the argmax (random weights favour one class for every shape)
    config = ZeroShotConfig(dataset="modelnet40", root=str(benchmark), protocol="cg3d-public")
    model = load_model(checkpoint)
    scores, _, _ = score_benchmark(model, open_benchmark("modelnet40", benchmark), config)
    np.testing.assert_allclose(scores, public_scores.numpy(), rtol=0, atol=1e-5)
    if npoints == 1024:  # the tolerance tells the protocol's point choices apart (measured:
        # the bounding-box centre moves scores 1e-4, a seeded FPS start 1e-3; ours 5e-7)
        for changed in (BBOX_CENTRED, SEEDED_FPS):
            config = ZeroShotConfig(dataset=config.dataset, root=config.root, protocol=changed.name)
            other, _, _ = score_benchmark(model, open_benchmark("modelnet40", benchmark), config)
            assert np.abs(other - public_scores.numpy()).max() > 5e-5, changed.name
    assert {row["protocol"] for row in rows} == {"cg3d-public"}
    metrics = json.loads((out / "metrics.json").read_text())
    about = json.loads((out / "about.json").read_text())
    assert (about["protocol"], about["n_points"], metrics["n_shapes"]) == (
        "cg3d-public",
        npoints,
        4,
    )


def centre_points_kept(points: np.ndarray, centre: np.ndarray) -> list[bool]:
    return (points[:, None, :] == centre[None]).all(-1).any(0).tolist()


def test_the_protocols_points_are_the_kernels_picks_and_skip_the_centre(benchmark):
    """prepare_points under cg3d-public: the public points, index for index, which leave out
    the points at the centre that FPS without the kernel's skip would pick."""
    for shape_id, first in (("night_stand_0001", True), ("flower_pot_0001", False)):
        cloud = np.loadtxt(
            benchmark / shape_id.rsplit("_", 1)[0] / f"{shape_id}.txt", delimiter=","
        )
        cloud = cloud.astype(np.float32)
        ours = prepare_points(cloud, 8192, protocol=CG3D_PUBLIC)
        xyz = public_pc_normalize(cloud[:, :3])
        np.testing.assert_array_equal(ours, xyz[public_kernel_fps(xyz, 8192)])
        centre = xyz[:CENTRE_POINTS] if first else xyz[-CENTRE_POINTS:]
        plain = xyz[farthest_point_sample(xyz, 8192, 0)]
        if first:  # the file's point 0 is at the centre: picked first whatever its norm
            assert centre_points_kept(ours, centre) == [True] + [False] * (CENTRE_POINTS - 1)
        else:
            assert not any(centre_points_kept(ours, centre))
            assert any(centre_points_kept(plain, centre))  # what the skip leaves out

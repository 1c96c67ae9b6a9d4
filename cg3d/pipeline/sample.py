"""The `sample` stage: meshes → point clouds in the shared object frame, chunked Parquet parts.

Per object, one reading of the file (docs/design.md): Blender's, the one the views are
rendered from — a persistent Blender worker imports the file, puts it in the canonical Y-up
frame normalised by its triangles' vertices, and samples there (`cg3d.render.worker`) — or,
for the formats trimesh and Blender read alike (`meshio.FAST_SUFFIXES`, without colours), the
same frame computed here from trimesh's reading. Then area-weighted surface samples, farthest
point sampling down to N, and with `colors` the colour at each point (`cg3d.pipeline.surface`).
Each object has its own random generator seeded from (seed, object id), so the points do
not depend on chunking, worker count, executor or which reading was used.

Output (docs/design.md): `OUT/part-XXXXX.parquet` (`cg3d.formats.points`: `id`, `points` float32
N×C flattened — xyz, rgb with colours, normals — `n_points`, `has_color`, the channel layout
in the metadata), plus `OUT/failures.parquet` (id, stage, reason).
"""

import hashlib
import math
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from cg3d.files import locks_out_dir
from cg3d.formats.manifest import MeshRecord, manifest_tables, mesh_file
from cg3d.formats.points import PART_SUFFIX, channel_names, write_points_part
from cg3d.params import SampleConfig
from cg3d.pipeline.chunks import ChunkedOutput, default_workers, plan_chunks, run_chunks
from cg3d.pipeline.fps import fps_indices
from cg3d.pipeline.geometry import normalization, to_canonical_axes
from cg3d.pipeline.meshio import FAST_SUFFIXES, MeshError, load_mesh
from cg3d.pipeline.surface import Surface

STAGE = "sample"
# FPS picks N of max(10k, 1.25 N) surface samples: 10k → 8192 as in ULIP / Point-BERT data,
# and enough candidates for FPS to spread 1024 points better than a random subset would.
MIN_SURFACE_SAMPLES = 10_000
# Config fields that change how fast the points come, not which: left out of the resume plan.
RESULT_NEUTRAL = ("workers", "executor", "timeout")


@dataclass
class SampleSummary:
    objects: int  # manifest rows with status ok
    sampled: int
    failures: list[dict]
    skipped_upstream: int  # manifest rows already marked failed by the meshes stage
    chunks_run: int  # chunks computed by this run (the rest were already done)
    chunks_total: int


def surface_sample_count(n_points: int) -> int:
    return max(MIN_SURFACE_SAMPLES, math.ceil(1.25 * n_points))


def object_rng(seed: int, object_id: str) -> np.random.Generator:
    """A generator that depends only on (seed, object id)."""
    digest = int.from_bytes(hashlib.sha256(object_id.encode()).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


def sample_triangles(
    triangles: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`count` points uniform over the area of (F, 3, 3) triangles: (face, barycentric (n, 3),
    xyz (n, 3))."""
    cross = face_cross(triangles)
    doubled_area = np.linalg.norm(cross, axis=1)
    total = doubled_area.sum()
    if not np.isfinite(total) or total <= 0.0:
        raise ValueError("degenerate: the mesh has no surface area")
    face = rng.choice(len(triangles), size=count, p=doubled_area / total)
    # Uniform barycentric coordinates: fold the unit square's upper half onto the triangle.
    u, v = rng.random((2, count))
    outside = u + v > 1.0
    u[outside], v[outside] = 1.0 - u[outside], 1.0 - v[outside]
    bary = np.stack([1.0 - u - v, u, v], axis=1)
    return face, bary, np.einsum("nk,nkj->nj", bary, triangles[face])


def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, count: int, rng: np.random.Generator, normals: bool
) -> np.ndarray:
    """`count` points uniform over a mesh's surface, (count, 3), or (count, 6) with normals."""
    triangles = np.asarray(vertices, dtype=np.float64)[np.asarray(faces)]
    face, _, xyz = sample_triangles(triangles, count, rng)
    if not normals:
        return xyz
    cross = face_cross(triangles[face])
    return np.concatenate([xyz, cross / np.linalg.norm(cross, axis=1, keepdims=True)], axis=1)


def face_cross(triangles: np.ndarray) -> np.ndarray:
    return np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])


def points_from_surface(
    surface: Surface, config: SampleConfig, rng: np.random.Generator
) -> tuple[np.ndarray, bool]:
    """(N, C) float32 points of a surface already in the normalised frame (channels as
    `channel_names`), and whether any point had a colour of its own."""
    count = surface_sample_count(config.points)
    face, bary, xyz = sample_triangles(surface.triangles, count, rng)
    picked = fps_indices(xyz, config.points, int(rng.integers(count)), config.fps)
    columns, has_color = [xyz[picked]], False
    if config.colors:
        rgb, has_color = surface.colors_at(face[picked], bary[picked])
        columns.append(rgb)
    if config.normals:
        cross = face_cross(surface.triangles[face[picked]])
        columns.append(cross / np.linalg.norm(cross, axis=1, keepdims=True))
    return np.concatenate(columns, axis=1).astype(np.float32), has_color


def normalised_surface(vertices: np.ndarray, faces: np.ndarray) -> Surface:
    """The triangles of a mesh already in the canonical axes, normalised by the vertices its
    faces use (as the Blender reading normalises its triangles)."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if len(faces) == 0:
        raise ValueError("empty: the mesh has no faces")
    triangles = vertices[faces]
    if not np.isfinite(triangles).all():
        raise ValueError("non_finite: the mesh has NaN or infinite vertex coordinates")
    try:
        centre, scale = normalization(triangles.reshape(-1, 3))
    except ValueError as error:
        raise ValueError(f"degenerate: {error}") from error
    return Surface((triangles - centre) * scale)


def sample_object(
    vertices: np.ndarray, faces: np.ndarray, config: SampleConfig, rng: np.random.Generator
) -> np.ndarray:
    """(N, C) float32 points of a mesh already in the canonical frame, inside the unit sphere
    (colours, when asked for, are NO_COLOR: a bare mesh has none)."""
    return points_from_surface(normalised_surface(vertices, faces), config, rng)[0]


def needs_blender(path: Path, config: SampleConfig) -> bool:
    """Whether the points of `path` must come from Blender's reading (see meshio)."""
    return config.colors or Path(path).suffix.lower() not in FAST_SUFFIXES


class PointsReader:
    """Reads the points of objects: Blender's reading (a persistent worker, started on first
    need) or, for the formats trimesh reads alike, the fast path. Close it when done."""

    def __init__(self, config: SampleConfig) -> None:
        self.config = config
        self.worker = None

    def __call__(self, path: Path, up_axis: str, object_id: str) -> tuple[np.ndarray, bool]:
        """(cloud, has_color) of one object; MeshError/ValueError with the reason if unusable."""
        config = self.config
        if not needs_blender(path, config):
            mesh = load_mesh(path)
            vertices = to_canonical_axes(np.asarray(mesh.vertices, dtype=np.float64), up_axis)
            return points_from_surface(
                normalised_surface(vertices, mesh.faces), config, object_rng(config.seed, object_id)
            )
        if self.worker is None:
            from cg3d.render.supervisor import BlenderWorker

            self.worker = BlenderWorker({"role": "points"}, config.timeout)
        sampling = {
            "points": config.points,
            "normals": config.normals,
            "colors": config.colors,
            "seed": config.seed,
        }
        cloud, has_color, reason = self.worker.points(object_id, Path(path), up_axis, sampling)
        if reason is not None:
            raise ValueError(reason)
        return cloud, has_color

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None

    def __enter__(self) -> "PointsReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def failure_reason(error: Exception) -> str:
    """`kind: words`, the kind first so that failure counts group by it."""
    if isinstance(error, MeshError | ValueError):
        return str(error)
    return f"error: {type(error).__name__}: {error}"


def sample_chunk(
    meshes_dir: Path,
    output: ChunkedOutput,
    index: int,
    records: list[MeshRecord],
    config: SampleConfig,
) -> int:
    """Sample one chunk of objects into its part file; a bad mesh becomes a failure row."""
    ids, clouds, colored, failures = [], [], [], []
    with PointsReader(config) as read_points:
        for record in records:
            try:
                cloud, has_color = read_points(
                    mesh_file(meshes_dir, record), record.up_axis, record.id
                )
            except Exception as error:  # any bad file: a row with a reason, the chunk goes on
                failures.append({"id": record.id, "reason": failure_reason(error)})
                continue
            ids.append(record.id)
            clouds.append(cloud)
            colored.append(has_color)
    output.write_chunk_failures(index, failures)
    channels = channel_names(config.colors, config.normals)
    write_points_part(output.part(index), ids, clouds, channels, colored)
    return len(ids)


def plan_fingerprint(config: SampleConfig) -> dict:
    """How the parts were sampled: every config field except RESULT_NEUTRAL ones, so a new
    param is part of the plan without being listed here. Which objects form which part is the
    chunk membership table's job (`plan_chunks`): a grown manifest keeps the finished parts."""
    params = {k: v for k, v in asdict(config).items() if k not in RESULT_NEUTRAL}
    return {"stage": STAGE, **params, "surface_samples": surface_sample_count(config.points)}


@locks_out_dir
def sample_points(meshes_dir: Path, out_dir: Path, config: SampleConfig) -> SampleSummary:
    """The stage: sample every `ok` object of the meshes stage's manifest into `out_dir`."""
    config.validate()
    meshes_dir = Path(meshes_dir)
    output = ChunkedOutput(Path(out_dir), PART_SUFFIX, STAGE, plan_fingerprint(config))
    output.prepare()
    plan = plan_chunks(partial(manifest_tables, meshes_dir), output, config.chunk_size)
    sizes = plan.sizes()
    jobs = (
        (meshes_dir, output, i, [MeshRecord(**row) for row in rows], config)
        for i, rows in plan.jobs(plan.recomputed)
    )
    run_chunks(
        sample_chunk,
        jobs,
        lambda job: len(job[3]),
        total=sum(sizes[i] for i in plan.recomputed),
        workers=config.workers or default_workers(),
        executor=config.executor,
        description="sampling points",
    )
    failures = output.finalize(plan.chunks)
    ok = plan.members.num_rows
    return SampleSummary(
        objects=ok,
        sampled=ok - len(failures),
        failures=failures,
        skipped_upstream=plan.manifest_rows - ok,
        chunks_run=len(plan.recomputed),
        chunks_total=len(plan.chunks),
    )

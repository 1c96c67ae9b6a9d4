"""The `sample` stage: meshes → point clouds in the shared object frame, chunked Parquet parts.

Per object: load the mesh, rotate it into the canonical Y-up frame, normalise it with the
frame computed from its vertices (the renderer does the same, so points land on rendered
pixels), draw area-weighted surface samples, then farthest point sampling down to N.
Each object has its own random generator seeded from (seed, object id), so the points do
not depend on chunking, worker count or executor.

Output (docs/design.md): `OUT/part-XXXXX.parquet` (`cg3d.formats.points`: `id`, `points` float32
N×3 flattened, N×6 with normals, and `n_points`), plus `OUT/failures.parquet` (id, stage, reason).
"""

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cg3d.formats.manifest import OK, MeshRecord, mesh_file, read_manifest
from cg3d.formats.points import PART_SUFFIX, write_points_part
from cg3d.params import SampleConfig
from cg3d.pipeline.chunks import (
    ChunkedOutput,
    default_workers,
    run_chunks,
    split_into_chunks,
)
from cg3d.pipeline.fps import farthest_point_sample
from cg3d.pipeline.geometry import normalization, to_canonical_axes
from cg3d.pipeline.meshio import MeshError, load_mesh

STAGE = "sample"
# FPS picks N of max(10k, 1.25 N) surface samples: 10k → 8192 as in ULIP / Point-BERT data,
# and enough candidates for FPS to spread 1024 points better than a random subset would.
MIN_SURFACE_SAMPLES = 10_000


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


def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, count: int, rng: np.random.Generator, normals: bool
) -> np.ndarray:
    """`count` points uniform over the surface area, (count, 3), or (count, 6) with face normals."""
    triangles = vertices[faces]  # (F, 3, 3)
    cross = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
    doubled_area = np.linalg.norm(cross, axis=1)
    total = doubled_area.sum()
    if not np.isfinite(total) or total <= 0.0:
        raise ValueError("degenerate: the mesh has no surface area")
    face = rng.choice(len(faces), size=count, p=doubled_area / total)
    # Uniform barycentric coordinates: fold the unit square's upper half onto the triangle.
    u, v = rng.random((2, count))
    outside = u + v > 1.0
    u[outside], v[outside] = 1.0 - u[outside], 1.0 - v[outside]
    tri = triangles[face]
    xyz = tri[:, 0] + u[:, None] * (tri[:, 1] - tri[:, 0]) + v[:, None] * (tri[:, 2] - tri[:, 0])
    if not normals:
        return xyz
    unit_normals = cross[face] / doubled_area[face, None]
    return np.concatenate([xyz, unit_normals], axis=1)


def sample_object(
    vertices: np.ndarray, faces: np.ndarray, config: SampleConfig, rng: np.random.Generator
) -> np.ndarray:
    """(N, 3|6) float32 points of a mesh already in the canonical frame, inside the unit sphere."""
    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    if len(faces) == 0:
        raise ValueError("empty: the mesh has no faces")
    if not np.isfinite(vertices).all():
        raise ValueError("non_finite: the mesh has NaN or infinite vertex coordinates")
    try:
        centre, scale = normalization(vertices)
    except ValueError as error:
        raise ValueError(f"degenerate: {error}") from error
    # Normalise the mesh first: the same frame as normalising the points, and FPS then works
    # in unit-sphere coordinates whatever the file's units.
    vertices = (vertices - centre) * scale
    candidates = sample_surface(
        vertices, faces, surface_sample_count(config.points), rng, config.normals
    )
    picked = farthest_point_sample(candidates, config.points, int(rng.integers(len(candidates))))
    return candidates[picked].astype(np.float32)


def points_for_record(meshes_dir: Path, record: MeshRecord, config: SampleConfig) -> np.ndarray:
    mesh = load_mesh(mesh_file(meshes_dir, record))
    vertices = to_canonical_axes(np.asarray(mesh.vertices, dtype=np.float64), record.up_axis)
    return sample_object(vertices, mesh.faces, config, object_rng(config.seed, record.id))


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
    ids, clouds, failures = [], [], []
    for record in records:
        try:
            cloud = points_for_record(meshes_dir, record, config)
        except Exception as error:  # any bad file: a row with a reason, the chunk goes on
            failures.append({"id": record.id, "reason": failure_reason(error)})
            continue
        ids.append(record.id)
        clouds.append(cloud)
    output.write_chunk_failures(index, failures)
    write_points_part(output.part(index), ids, clouds)
    return len(ids)


def sample_points(meshes_dir: Path, out_dir: Path, config: SampleConfig) -> SampleSummary:
    """The stage: sample every `ok` object of the meshes stage's manifest into `out_dir`."""
    config.validate()
    meshes_dir = Path(meshes_dir)
    records = read_manifest(meshes_dir)
    ok = [r for r in records if r.status == OK]
    chunks = split_into_chunks(ok, config.chunk_size)
    # The plan: which objects, in which chunks, sampled how. Workers and executor do not
    # change the result, so they are not part of it.
    objects = hashlib.sha256(
        "\n".join(f"{r.id} {r.sha256} {r.path} {r.up_axis}" for r in ok).encode()
    ).hexdigest()
    fingerprint = {
        "stage": STAGE,
        "objects": objects,
        "points": config.points,
        "normals": config.normals,
        "seed": config.seed,
        "chunk_size": config.chunk_size,
        "surface_samples": surface_sample_count(config.points),
    }
    output = ChunkedOutput(Path(out_dir), PART_SUFFIX, STAGE, fingerprint)
    output.prepare()
    pending = output.pending(len(chunks))
    run_chunks(
        sample_chunk,
        [(meshes_dir, output, i, chunks[i], config) for i in pending],
        [len(chunks[i]) for i in pending],
        workers=config.workers or default_workers(),
        executor=config.executor,
        description="sampling points",
    )
    failures = output.finalize(len(chunks))
    return SampleSummary(
        objects=len(ok),
        sampled=len(ok) - len(failures),
        failures=failures,
        skipped_upstream=len(records) - len(ok),
        chunks_run=len(pending),
        chunks_total=len(chunks),
    )

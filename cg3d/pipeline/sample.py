"""The `sample` stage: meshes → point clouds in the shared object frame, chunked Parquet parts.

Per object, one reading of the file (docs/design.md): Blender's, the one the views are
rendered from — a persistent Blender worker imports the file, puts it in the canonical Y-up
frame normalised by its triangles' vertices, and samples there (`cg3d.render.worker`) — or,
for the formats trimesh and Blender read alike (`meshio.FAST_SUFFIXES`, without colours), the
same frame computed here from trimesh's reading. Then area-weighted surface samples, farthest
point sampling down to N, and with `colors` the colour at each point (`cg3d.geometry.surface`).
Each object has its own random generator seeded from (seed, object id), so the points do
not depend on chunking, worker count, executor or which reading was used.

Output (docs/design.md): `OUT/part-XXXXX.parquet` (`cg3d.formats.points`: `id`, `points` float32
N×C flattened — xyz, rgb with colours, normals — `n_points`, `has_color`, the channel layout
in the metadata), plus `OUT/failures.parquet` (id, stage, reason).
"""

from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from cg3d.errors import require
from cg3d.files import locks_out_dir, stopping_error
from cg3d.formats.manifest import (
    OK,
    MeshRecord,
    manifest_file,
    manifest_root,
    manifest_rows,
    manifest_tables,
    mesh_file,
)
from cg3d.formats.points import PART_SUFFIX, channel_names, write_points_part
from cg3d.geometry.frame import to_canonical_axes
from cg3d.geometry.meshio import (
    FAST_SUFFIXES,
    MeshError,
    listed_file,
    listed_references,
    load_mesh,
    lone_file_root,
)
from cg3d.geometry.sampling import (
    normalised_surface,
    object_rng,
    points_from_surface,
    surface_sample_count,
)
from cg3d.params import SampleConfig
from cg3d.pipeline.chunks import (
    MEMBERS_NAME,
    ChunkedOutput,
    bound_workers,
    plan_chunks,
    run_chunks,
)

STAGE = "sample"
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


def needs_blender(path: Path, config: SampleConfig) -> bool:
    """Whether the points of `path` must come from Blender's reading (see meshio)."""
    return config.colors or Path(path).suffix.lower() not in FAST_SUFFIXES


def any_needs_blender(meshes_dir: Path, config: SampleConfig) -> bool:
    """Whether an `ok` object of the manifest must be read by Blender (`needs_blender`): a glTF,
    or every object when colours are asked for. One pass over two columns of the manifest."""
    rows = manifest_rows(meshes_dir, ["path", "status"])
    return any(row["status"] == OK and needs_blender(row["path"], config) for row in rows)


class PointsReader:
    """Reads the points of objects: Blender's reading (a persistent worker, started on first
    need) or, for the formats trimesh reads alike, the fast path. Close it when done."""

    def __init__(self, config: SampleConfig, scratch: Path | None = None) -> None:
        """`scratch`: the folder of its Blender worker's temp folder (a stage's
        `ChunkedOutput.scratch`); None: the system's."""
        self.config = config
        self.scratch = scratch
        self.worker = None

    def __call__(
        self, path: Path, up_axis: str, object_id: str, root: Path | None = None, sha256: str = ""
    ) -> tuple[np.ndarray, bool]:
        """(cloud, has_color) of one object; MeshError/ValueError with the reason if unusable.
        The file is checked as it is opened: inside `root` (a manifest's source root; a lone
        file's own folder by default), and the bytes the manifest's `sha256` names, if given
        (`meshio.listed_file`; Blender's reading: `meshio.blender_input`)."""
        config = self.config
        if not needs_blender(path, config):
            root = lone_file_root(path) if root is None else root
            mesh = load_mesh(listed_file(path, root, sha256))
            vertices = to_canonical_axes(np.asarray(mesh.vertices, dtype=np.float64), up_axis)
            return points_from_surface(
                normalised_surface(vertices, mesh.faces), config, object_rng(config.seed, object_id)
            )
        if self.worker is None:
            from cg3d.render.supervisor import BlenderWorker, worker_memory_bytes

            # Each of the stage's processes may run one Blender: they share the machine's memory.
            workers = bound_workers(config.workers, config.executor)
            memory = worker_memory_bytes(0, workers)
            self.worker = BlenderWorker({"role": "points"}, config.timeout, memory, self.scratch)
        # The whole config travels: the worker samples with every field as given (`fps` too).
        cloud, has_color, reason = self.worker.points(
            object_id, Path(path), up_axis, asdict(config), root, sha256
        )
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
    root = manifest_root(meshes_dir)
    with PointsReader(config, output.scratch) as read_points:
        for record in records:
            try:
                path = mesh_file(meshes_dir, record)
                if needs_blender(path, config):  # the fast path reads no MTL nor texture
                    listed_references(
                        path, root, record.sha256, record.references_sha256, record.missing
                    )
                cloud, has_color = read_points(path, record.up_axis, record.id, root, record.sha256)
            except Exception as error:  # any bad file: a row with a reason, the chunk goes on
                if stop := stopping_error(error):  # the disk's fault, not the object's: stop
                    raise stop from None
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
    manifest_file(meshes_dir)  # before the folder is made: a refused run leaves none behind
    output = ChunkedOutput(
        Path(out_dir), PART_SUFFIX, STAGE, plan_fingerprint(config), code=__name__
    )
    # bpy (a glTF, or colours asked for) is asked for before any work: its Blender worker
    # started on the first such object, --out made, another plan's parts removed. A run that
    # resumes (same plan and code) asks only if a chunk left to compute needs it: one whose
    # glTF objects are all done needs none.
    started = (Path(out_dir) / MEMBERS_NAME).is_file() and not output.stale()
    if not started and any_needs_blender(meshes_dir, config):
        require("bpy")
    output.prepare()
    # the cut follows the workers asked for, not those this machine runs (`plan_chunks`)
    plan = plan_chunks(
        partial(manifest_tables, meshes_dir), output, config.chunk_size, config.workers
    )
    if started and any(
        needs_blender(row["path"], config) for _, rows in plan.jobs(plan.recomputed) for row in rows
    ):
        require("bpy")
    workers = bound_workers(config.workers, config.executor)
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
        workers=workers,
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

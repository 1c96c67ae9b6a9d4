"""The `render` stage: every `ok` object of the manifest, rendered from several views.

Output (docs/design.md): `OUT/part-XXXXX.tar` chunks (`cg3d.formats.renders`) whose members are
`<id>.view_XX.png` (RGB on white, or RGBA with `background: transparent`) and
`<id>.cameras.json` (see `cameras.py` for the convention), plus `OUT/failures.parquet` (id,
stage, reason). A chunk is the unit of parallel work and of resume: a part that exists is done, and a rerun after a kill renders
only the missing ones.

Workers: `workers` persistent Blender processes (`supervisor.BlenderWorker`), each fed whole
chunks, either by threads of this process (`executor: local`; the work is in the Blender
processes) or by Ray actors that each keep their Blender alive (`executor: ray`).
Never imports torch.
"""

import io
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from PIL import Image

from cg3d.errors import UsageError
from cg3d.files import locks_out_dir, stopping_error
from cg3d.formats.images import open_image
from cg3d.formats.manifest import (
    MeshRecord,
    manifest_file,
    manifest_root,
    manifest_tables,
    mesh_file,
)
from cg3d.formats.renders import PART_SUFFIX, Rendered, dumps_cameras, write_render_part
from cg3d.geometry.meshio import MeshError, listed_references
from cg3d.params import RenderConfig, cpu_count
from cg3d.pipeline.chunks import (
    ChunkedOutput,
    bound_workers,
    plan_chunks,
    progress_bar,
    raise_task_cause,
    ray_stage,
)
from cg3d.render.cameras import cameras_of
from cg3d.render.supervisor import BlenderWorker, worker_memory_bytes
from cg3d.stopping import Stopwatch

log = logging.getLogger(__name__)

STAGE = "render"
# zlib level of the views on white: PNG is lossless, so only size and time differ. Level 6
# (PIL's default) took 24 ms of CPU a 224 px textured view, level 1 takes 7 ms for 15 % more
# bytes; the thread driving a Blender process does it between objects (bench/bench_png.py).
PNG_COMPRESS_LEVEL = 1


@dataclass
class RenderSummary:
    objects: int  # manifest rows with status ok
    rendered: int
    views: int  # views rendered by this run
    failures: list[dict]
    skipped_upstream: int
    chunks_run: int
    chunks_total: int
    seconds: float


def finished_png(path: Path, background: str) -> bytes:
    """The worker's RGBA render as the stage's PNG: on white (RGB), or kept transparent."""
    if background == "transparent":
        return path.read_bytes()
    with open_image(path) as image:
        rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    buffer = io.BytesIO()
    Image.alpha_composite(white, rgba).convert("RGB").save(
        buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL
    )
    return buffer.getvalue()


def render_chunk(
    worker: BlenderWorker,
    meshes_dir: Path,
    output: ChunkedOutput,
    index: int,
    records: list[MeshRecord],
    config: RenderConfig,
    on_object: Callable[[int], None] = lambda views: None,
) -> int:
    """Render one chunk into its tar; a failed object becomes a failure row. Returns views."""
    rendered: dict[str, Rendered] = {}
    failures = []
    root = manifest_root(meshes_dir)
    for record in records:
        cameras = cameras_of(config, record.id)
        pngs = [worker.out_dir / f"{record.id}.{view['name']}.png" for view in cameras["views"]]
        path = mesh_file(meshes_dir, record)
        try:  # a file it references gone or changed since listed: a row, Blender not asked
            listed_references(path, root, record.sha256, record.references_sha256, record.missing)
        except MeshError as error:
            if stop := stopping_error(error):  # the disk's fault, not the object's: stop
                raise stop from None
            reason = str(error)
        else:
            reason = worker.render(
                record.id, path, record.up_axis, cameras["views"], root, record.sha256
            )
        if reason is None:
            views = {
                view["name"]: finished_png(png, config.background)
                for view, png in zip(cameras["views"], pngs, strict=True)
            }
            rendered[record.id] = Rendered(views, dumps_cameras(cameras))
        else:
            failures.append({"id": record.id, "reason": reason})
        for png in pngs:
            png.unlink(missing_ok=True)
        on_object(0 if reason else len(pngs))
    output.write_chunk_failures(index, failures)
    write_render_part(output.part(index), rendered)
    return config.views * (len(records) - len(failures))


@locks_out_dir
def render_meshes(meshes_dir: Path, out_dir: Path, config: RenderConfig) -> RenderSummary:
    """The stage: render every `ok` object of the meshes stage's manifest into `out_dir`."""
    config.validate()
    clock = Stopwatch()
    meshes_dir = Path(meshes_dir)
    # The plan: how it is rendered (workers, executor and timeout do not change the result);
    # which objects form which part is the chunk membership table's (`plan_chunks`).
    # Cycles' device is where, not what: CPU and GPU Cycles draw the same image up to sampling
    # noise (as CPUs of other kinds may), so a render resumed on another machine keeps its
    # parts, and a device refused at start has deleted none.
    where = ("workers", "executor", "timeout", "cycles_device", "worker_memory")
    plan = {k: v for k, v in asdict(config).items() if k not in where}
    if config.engine != "cycles":
        plan.pop("samples")
    manifest_file(meshes_dir)  # before the folder is made: a refused run leaves none behind
    output = ChunkedOutput(
        Path(out_dir), PART_SUFFIX, STAGE, {"stage": STAGE, **plan}, code=__name__
    )
    output.prepare()
    # the cut follows the workers asked for, not those this machine runs (`plan_chunks`)
    chunks = plan_chunks(
        partial(manifest_tables, meshes_dir), output, config.chunk_size, config.workers
    )
    workers = bound_workers(config.workers, config.executor)
    sizes = chunks.sizes()
    pending = chunks.recomputed
    jobs = (
        (meshes_dir, output, i, [MeshRecord(**row) for row in rows], config)
        for i, rows in chunks.jobs(pending)
    )
    workers = min(workers, max(len(pending), 1))
    total_views = config.views * sum(sizes[i] for i in pending)
    with progress_bar("views") as progress:
        task = progress.add_task(f"rendering ({config.engine})", total=total_views, rate="")
        lock = threading.Lock()
        done = 0

        def advance(views: int) -> None:
            nonlocal done
            with lock:
                done += views
                rate = done / clock.seconds()
                progress.update(task, advance=views, rate=f"{rate:.1f} views/s")

        if pending and config.executor == "ray":
            views = _run_ray(jobs, workers, config, advance, output.scratch)
        elif pending:
            views = _run_threads(jobs, workers, config, advance, output.scratch)
        else:
            views = 0
    failures = output.finalize(chunks.chunks)
    ok = chunks.members.num_rows
    return RenderSummary(
        objects=ok,
        rendered=ok - len(failures),
        views=views,
        failures=failures,
        skipped_upstream=chunks.manifest_rows - ok,
        chunks_run=len(pending),
        chunks_total=len(chunks.chunks),
        seconds=clock.seconds(),
    )


def _run_threads(
    jobs: Iterator[tuple], workers: int, config: RenderConfig, advance, scratch: Path
) -> int:
    """`workers` threads, each driving its own Blender process through the chunk queue (a
    streamed plan: each thread takes the next job when it is free). `scratch`: the folder
    of the workers' temp folders (`ChunkedOutput.scratch`)."""
    todo = _SharedQueue(jobs)
    results: list[int] = []
    errors: list[BaseException] = []
    memory = worker_memory_bytes(config.worker_memory, workers)  # the same for every thread
    share = max(cpu_count() // workers, 1)  # the CPUs each Blender's threads may take

    blenders: list[BlenderWorker] = []  # each thread's, for `stop`
    # Set as each thread ends. Waited on instead of Thread.join: a KeyboardInterrupt that lands
    # in join() marks the thread as ended while it runs (Python 3.11), so a second join()
    # returned at once and the process exited before the thread's cleanup.
    ended = [threading.Event() for _ in range(workers)]

    def drive(number: int) -> None:
        try:
            settings, timeout, threads = config.worker_settings(), config.timeout, share
            with BlenderWorker(
                settings, timeout, memory, scratch, threads, thread_outlives_it=True
            ) as worker:
                blenders.append(worker)
                while not errors:
                    job = todo.next()
                    if job is None:
                        return
                    try:
                        results.append(render_chunk(worker, *job, on_object=advance))
                    except BaseException as error:  # stop the other threads too, re-raised below
                        errors.append(error)
        except BaseException as error:  # its Blender could not start (a full disk): the same
            errors.append(error)
        finally:
            ended[number].set()

    threads = [threading.Thread(target=drive, args=(i,), daemon=True) for i in range(workers)]
    for thread in threads:
        thread.start()
    try:
        for event in ended:
            event.wait()
    except BaseException as error:
        # Ctrl-C, SIGTERM or SIGHUP (in this main thread): stop the threads' Blenders, whose
        # chunks then write no part, and wait for the threads, which remove their temp folders.
        # Left to run, a thread took its killed Blender for a crash and wrote a failure row.
        errors.append(error)
        for blender in list(blenders):
            blender.stop()
        for event in ended:
            event.wait()
        raise
    if errors:
        raise errors[0]
    return sum(results)


class _SharedQueue:
    """The next job of an iterator, for several threads (None when none is left)."""

    def __init__(self, jobs: Iterator[tuple]) -> None:
        self.jobs, self.lock = iter(jobs), threading.Lock()
        self.returned: list[tuple] = []

    def next(self) -> tuple | None:
        with self.lock:
            if self.returned:
                return self.returned.pop()
            return next(self.jobs, None)

    def put_back(self, job: tuple) -> None:
        """A job whose worker was lost, to be handed out again first."""
        with self.lock:
            self.returned.append(job)


class _RenderActor:
    """A Ray actor that keeps one Blender process alive across the chunks it is given."""

    def __init__(self, settings: dict, timeout: float, memory_bytes: int, scratch: Path) -> None:
        self.worker = BlenderWorker(settings, timeout, memory_bytes, scratch)

    def render_chunk(self, *job) -> tuple[int, str]:
        """The chunk's views, and the id of the node that rendered them."""
        import ray

        return render_chunk(self.worker, *job), ray.get_runtime_context().get_node_id()

    def close(self) -> None:
        self.worker.close()


def _run_ray(
    jobs: Iterator[tuple], workers: int, config: RenderConfig, advance, scratch: Path
) -> int:
    """`workers` Ray actors, each keeping one Blender alive, fed from the chunk queue. An actor
    whose node dies takes no more work and its chunk goes back to the queue for the others:
    a part is written whole or not at all, so nothing is lost or duplicated, and a lost
    actor never leaves the stage waiting for a CPU that is gone."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    todo = _SharedQueue(jobs)
    running: dict = {}
    views = 0
    nodes: dict[str, int] = {}

    def give(actor) -> None:
        job = todo.next()
        if job is not None:
            running[actor.render_chunk.remote(*job)] = (actor, job)

    with ray_stage(workers):
        actor_class = ray.remote(num_cpus=1)(_RenderActor)
        # The limit is worked out on this machine: on a cluster, set render.worker_memory.
        memory = worker_memory_bytes(config.worker_memory, workers)
        settings = config.worker_settings()
        actors = [
            actor_class.remote(settings, config.timeout, memory, scratch) for _ in range(workers)
        ]
        for actor in actors:
            give(actor)
        try:
            while running:
                (ref,), _ = ray.wait(list(running), num_returns=1)
                actor, job = running.pop(ref)
                try:
                    chunk_views, node = ray.get(ref)
                except RayActorError as error:
                    actors.remove(actor)
                    if not actors:
                        raise RuntimeError(
                            f"render: every Ray actor died; the last: {error}"
                        ) from None
                    log.warning("render: a Ray actor died (%s); its chunk goes to another", error)
                    todo.put_back(job)
                    if len(running) < len(actors):  # an idle survivor takes it now
                        give(
                            next(a for a in actors if all(a is not r for r, _ in running.values()))
                        )
                    continue
                except UsageError as error:  # a worker refused its settings at start; Ray wraps it
                    raise UsageError(str(getattr(error, "cause", error))) from None
                except RayTaskError as error:  # a full disk's OSError naming the file, or a bug
                    raise_task_cause(error)
                views += chunk_views
                nodes[node] = nodes.get(node, 0) + 1
                advance(config.views * len(job[3]))
                give(actor)
        except BaseException:
            running.clear()  # dropped while Ray's reports of them are off
            raise
    ray.get([actor.close.remote() for actor in actors])
    for actor in actors:
        ray.kill(actor)
    log.info("ray: %d chunks rendered on %d nodes %s", sum(nodes.values()), len(nodes), nodes)
    return views

"""Chunked stage outputs and the executors that fill them.

A stage's work is cut into chunks of objects (docs/design.md): each chunk becomes one part file,
written atomically (temp then rename) by the worker that made it. A part file that exists is
a finished chunk, so a rerun after a kill redoes only the missing ones, and the ones that are
not whole (`cg3d.formats.intact`: a part cut short by a full disk or a bad copy is checked,
reported and recomputed, never counted as done). Each chunk's failures are written just
before its part, to `_failures/`, and merged into `failures.parquet` at the end.

Which objects form which chunk is kept in `chunks.parquet` (`plan_chunks`): a rerun on a grown
manifest keeps every chunk whose members did not change and puts the new objects into new
chunks, so adding 1 % of objects recomputes about 1 % of the chunks. A damaged table is
reported and replaced by a fresh plan (`previous_members`).

One run at a time per output folder: a stage holds an exclusive lock on its `out_dir` while it
runs (`locks_out_dir`), so two runs with different params cannot mix their parts, nor remove
each other's temp files in `prepare`.
"""

import contextlib
import functools
import gc
import hashlib
import itertools
import logging
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from cg3d.errors import UsageError
from cg3d.files import atomic_path, holds_lock, json_text
from cg3d.formats.failures import FAILURES_NAME, read_failures, write_failures
from cg3d.formats.intact import parquet_problem, part_problem
from cg3d.formats.manifest import OK
from cg3d.formats.owner import PLAN_NAME, check_owner, read_plan
from cg3d.params import EXECUTORS, bound_workers
from cg3d.pipeline import closure
from cg3d.stopping import (
    Stopwatch,
    pool_stops_whole,
    run_task,
    start_pool_worker,
    start_resource_tracker,
    workers_start_deaf,
)
from cg3d.terminal import LoggedProgress, console

log = logging.getLogger(__name__)
_console = console(stderr=True, highlight=False)

MEMBERS_NAME = "chunks.parquet"  # the chunk membership table: id, chunk, content
MEMBERS_SCHEMA = pa.schema([("id", pa.string()), ("chunk", pa.int32()), ("content", pa.int64())])
FAILURE_PARTS = "_failures"
# The Blender workers' temp folders (`BlenderWorker`'s `tmp_root`): under the stage's own
# locked folder, not /tmp, so that a run after a SIGKILL may remove what the killed one left
# (in /tmp, a sweep could not tell a dead run's folder from a live one of another process).
WORKER_TEMP = ".workers"
# Which code wrote the parts (`code_digest`), beside the plan: parts are reused (a killed run
# resumed, a grown manifest's old chunks kept) only by the code that wrote them. Kept apart
# from .plan.json, which is part of the stage's output, so that a code change that changes no
# output changes no output's bytes (dvc.yaml's copy to data/ leaves this file out).
CODE_NAME = ".code.json"
SOURCE_ROOT = closure.SOURCE_ROOT  # the folder that holds cg3d/ (a test points it at a copy)


@functools.cache
def code_digest(module: str | None = None) -> str:
    """sha256 over the source and data files (names and bytes) that `module` runs: its
    `cg3d.pipeline.closure` (imports, transitively; the Blender worker it launches; the package
    data); None: the whole cg3d package. A stage's chunk plan names its inputs and params, not
    the code: after a code change that changes the points or views (a colour rule, a reader),
    `dvc repro` reran the stage and reused every chunk the old code wrote. Scoped to what the
    stage runs, so that an edit to the training code does not recompute every chunk of a sample
    or render rerun (a grown manifest then recomputes only its new chunks). The versions of the
    libraries those files import count too (`closure.library_versions`): after an upgrade of
    Blender or trimesh, `dvc repro -f render` copied the old Blender's views."""
    root = SOURCE_ROOT
    if module is None:
        files = [p for p in (root / closure.PACKAGE).rglob("*") if p.is_file()]
        files = [p for p in files if p.suffix != ".pyc" and "__pycache__" not in p.parts]
    else:
        files = closure.closure_files(closure.module_closure({module}, root), root)
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    for distribution, version in closure.library_versions(files).items():
        digest.update(f"{distribution}=={version}\0".encode())
    return digest.hexdigest()


def written_by(out_dir: Path) -> str | None:
    """The `code_digest` of the code that wrote `out_dir`'s parts (its CODE_NAME); None for
    parts of unknown code (a folder of a cg3d before the mark, or of none)."""
    code = read_plan(Path(out_dir) / CODE_NAME).get("code")
    return code if isinstance(code, str) else None


def mark_code(out_dir: Path, code: str) -> None:
    """Record in `out_dir` (CODE_NAME) that `code` writes its parts from now on."""
    with atomic_path(Path(out_dir) / CODE_NAME) as tmp:
        tmp.write_text(json_text({"code": code}), encoding="utf-8")


def split_into_chunks(items: Sequence[Any], chunk_size: int) -> list[list[Any]]:
    """Consecutive chunks of at most `chunk_size` items, in the given (stable) order."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    return [list(items[i : i + chunk_size]) for i in range(0, len(items), chunk_size)]


@dataclass
class ChunkedOutput:
    """A stage's output folder: `part-XXXXX<suffix>` files plus per-chunk failure tables.

    `fingerprint` names what the chunks were planned from (inputs and params); when it differs
    from the one a previous run left, the old parts are stale and are removed before work starts.
    """

    out_dir: Path
    suffix: str
    stage: str
    fingerprint: dict = field(default_factory=dict)
    # The module whose code writes the parts (the stage's, `__name__`): its `code_digest` is
    # kept in .code.json. None: the whole package's (any change in cg3d/ recomputes the parts).
    code: str | None = None
    # (file, why) of the damaged parts `pending` found and dropped, for the stage's report
    damaged: list[tuple[Path, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)

    def part(self, index: int) -> Path:
        return self.out_dir / f"part-{index:05d}{self.suffix}"

    def failure_part(self, index: int) -> Path:
        return self.out_dir / FAILURE_PARTS / f"part-{index:05d}.parquet"

    @property
    def scratch(self) -> Path:
        """Where this run's Blender workers keep their temp folders (`WORKER_TEMP`)."""
        return self.out_dir / WORKER_TEMP

    def prepare(self) -> None:
        """Create the folder; clear this stage's files when they belong to a different plan.

        Only the files this class writes are removed (never the whole folder: `--out` may
        name a folder that holds other things), and so are temp files a killed run left.
        The caller holds the folder's lock (`locks_out_dir`): no other run is writing there.
        """
        if not holds_lock(self.out_dir):
            raise RuntimeError(f"{self.out_dir}: prepare() needs output_lock held on the folder")
        check_owner(self.out_dir, self.stage)
        plan_file = self.out_dir / PLAN_NAME
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for folder in (self.out_dir, self.out_dir / FAILURE_PARTS):
            for leftover in folder.glob(".*.tmp"):
                leftover.unlink()
        # A killed run's workers' folders: the lock says no live run of this folder uses them.
        shutil.rmtree(self.scratch, ignore_errors=True)
        code = code_digest(self.code)
        if self.stale():
            for stale in self.out_dir.glob(f"part-*{self.suffix}"):
                stale.unlink()
            shutil.rmtree(self.out_dir / FAILURE_PARTS, ignore_errors=True)
            (self.out_dir / MEMBERS_NAME).unlink(missing_ok=True)
        # `finalize` writes failures.parquet last: a folder holding it holds a finished run
        # (`cg3d pack` checks), so a run that starts, and may be killed, removes it first.
        (self.out_dir / FAILURES_NAME).unlink(missing_ok=True)
        (self.out_dir / FAILURE_PARTS).mkdir(exist_ok=True)
        write_plan(plan_file, self.fingerprint)
        mark_code(self.out_dir, code)

    def stale(self) -> bool:
        """Whether the parts in the folder (if any) are another plan's or another code's:
        `prepare` removes them."""
        planned = previous_plan_digest(self.out_dir / PLAN_NAME) == plan_digest(self.fingerprint)
        return not planned or written_by(self.out_dir) != code_digest(self.code)

    def pending(self, chunks: int | Iterable[int]) -> list[int]:
        """The chunks (numbers, or `range(chunks)`) whose part is not written yet, or is not
        whole: a damaged part (or its failure table) is reported, removed and recomputed."""
        indices = range(chunks) if isinstance(chunks, int) else chunks
        return [i for i in indices if not self.done(i)]

    def done(self, index: int) -> bool:
        """Whether chunk `index` is finished: its part exists and it, and its failure table
        when there is one, are whole (their footers or tar ends read: cheap, no data read)."""
        if not self.part(index).exists():
            return False
        for path in (self.part(index), self.failure_part(index)):
            problem = part_problem(path) if path.exists() else None
            if problem:
                self.damaged.append((path, problem))
                _console.print(f"{path} is damaged ({problem}): recomputing it")
                self.drop(index)
                return False
        return True

    def drop(self, index: int) -> None:
        """Remove a chunk's part and failures (a chunk whose members changed)."""
        self.part(index).unlink(missing_ok=True)
        self.failure_part(index).unlink(missing_ok=True)

    def chunks_on_disk(self) -> set[int]:
        return {int(p.name[5:10]) for p in self.out_dir.glob(f"part-[0-9]*{self.suffix}")}

    def write_chunk_failures(self, index: int, rows: list[dict]) -> None:
        """Called by a worker before it renames its part into place."""
        write_failures([{**r, "stage": self.stage} for r in rows], self.failure_part(index))

    def finalize(self, chunks: int | Iterable[int]) -> list[dict]:
        """Merge the chunk failure tables (of `range(chunks)`, or of these chunk numbers)
        into `failures.parquet`; return the rows."""
        indices = range(chunks) if isinstance(chunks, int) else chunks
        rows = [r for i in indices for r in read_failures(self.failure_part(i), self.stage)]
        shutil.rmtree(self.scratch, ignore_errors=True)  # emptied by the workers as they closed
        write_failures(rows, self.out_dir / FAILURES_NAME)
        return rows


def plan_digest(fingerprint: dict) -> str:
    """The sha256 of a plan's fingerprint (its JSON, keys sorted): a stage's `.plan.json`
    records it, and a rerun keeps the parts or shards of the same digest."""
    return hashlib.sha256(json_text(fingerprint, sort_keys=True).encode()).hexdigest()


def write_plan(plan_file: Path, fingerprint: dict) -> str:
    """Record the plan in `plan_file` (`.plan.json`: {"digest", "plan"}); returns its digest."""
    digest = plan_digest(fingerprint)
    with atomic_path(plan_file) as tmp:
        tmp.write_text(
            json_text({"digest": digest, "plan": fingerprint}, sort_keys=True), encoding="utf-8"
        )
    return digest


def previous_plan_digest(plan_file: Path) -> str | None:
    """The plan digest a previous run left in `plan_file`; None when there is none (`read_plan`):
    its parts then count as another plan's."""
    digest = read_plan(plan_file).get("digest")
    return digest if isinstance(digest, str) else None


def content_key(record_fields: str) -> int:
    """A 64-bit digest of what a chunk's work reads of one object (its file, path, up axis and
    the files it references: `manifest.SCHEMA`'s `references_sha256`)."""
    return int.from_bytes(
        hashlib.sha256(record_fields.encode()).digest()[:8], "little", signed=True
    )


# The manifest read as Arrow tables of some columns (all when None), in id order, a row group at
# a time: `cg3d.formats.manifest.manifest_tables` of a meshes folder. Passed in, not imported,
# so that train and eval, which import this module, do not depend on the manifest's code.
ManifestTables = Callable[[list[str] | None], Iterator[pa.Table]]


@dataclass
class ChunkPlan:
    """Which good (status `OK`) objects of a manifest form which chunk: `members`
    (MEMBERS_SCHEMA) sorted by id, so it lines up row for row with the manifest's good rows."""

    tables: ManifestTables
    members: pa.Table
    manifest_rows: int  # rows of the manifest, failed ones included
    recomputed: list[int]  # chunks that have no part yet (new, changed, or never finished)

    @property
    def chunks(self) -> list[int]:
        return sorted(pc.unique(self.members.column("chunk")).to_pylist())

    def sizes(self) -> dict[int, int]:
        counts = self.members.column("chunk").value_counts().to_pylist()
        return {entry["values"]: entry["counts"] for entry in counts}

    def jobs(self, chunks: Iterable[int]) -> Iterator[tuple[int, list[dict]]]:
        """(chunk, its manifest rows in id order) for `chunks`, from one streamed pass over the
        manifest: a chunk is handed out as soon as its last member is read, so only chunks
        whose members are spread over the id range (new objects) are held until the end."""
        wanted = np.array(sorted(chunks), dtype=np.int32)
        sizes = self.sizes()
        waiting: dict[int, list] = {}
        position = 0
        for table in self.tables(None):
            ok = table.filter(pc.equal(table.column("status"), OK))
            members = self.members.slice(position, ok.num_rows)
            position += ok.num_rows
            if not ok.column("id").equals(members.column("id")):
                raise RuntimeError("the manifest changed while the stage ran")
            chunk_of = members.column("chunk").to_numpy()
            keep = np.isin(chunk_of, wanted)
            rows = ok.filter(pa.array(keep)).to_pylist()
            for row, chunk in zip(rows, chunk_of[keep].tolist(), strict=True):
                waiting.setdefault(chunk, []).append(row)
                if len(waiting[chunk]) == sizes[chunk]:
                    yield chunk, waiting.pop(chunk)


def plan_chunks(
    tables: ManifestTables, output: "ChunkedOutput", chunk_size: int, workers: int = 1
) -> ChunkPlan:
    """The chunks of the manifest's good objects (status `OK`), stable under additions (call it
    after `output.prepare()`).

    The membership table a previous run left in `output` (`chunks.parquet`) is kept: an object
    stays in its chunk; new objects go, in id order, into new chunks numbered after the last;
    a chunk whose members changed (file, path, up axis or a file they reference) or lost one
    (removed from the manifest) is dropped and recomputed with the members it has left; a chunk left empty goes.
    The first run, a run after a params change (`prepare` removed the table) or after the table
    was damaged (`previous_members`) cuts the sorted ids into consecutive chunks. Memory: ids and two integers per object, in Arrow.

    New objects are cut into chunks of `new_chunk_size`: fewer than `workers` × `chunk_size`
    of them still make at least `workers` chunks, so every worker has one (only new chunks
    are cut: the kept ones, and so the stability under additions, do not depend on it).
    `workers` is the param as asked, never bounded by this machine's CPUs, and 0 ("one per
    CPU") spreads over SPREAD: the part files depend on the params, not on the machine.
    """
    ids, contents, rows = [], [], 0
    for table in tables(["id", "path", "up_axis", "sha256", "references_sha256", "status"]):
        rows += table.num_rows
        good = table.filter(pc.equal(table.column("status"), OK))
        keys = pc.binary_join_element_wise(
            good.column("id"),
            good.column("sha256"),
            good.column("path"),
            good.column("up_axis"),
            good.column("references_sha256"),
            " ",
        )
        ids.append(good.column("id"))
        contents.append(pa.array([content_key(k) for k in keys.to_pylist()], pa.int64()))
    objects = pa.table(
        {
            "id": pa.chunked_array(ids, pa.string()),
            "content": pa.chunked_array(contents, pa.int64()),
        }
    )
    previous = previous_members(output).rename_columns(["id", "chunk", "old"])
    joined = objects.join(previous, "id", join_type="left outer").sort_by("id")
    kept = joined.filter(pc.is_valid(joined.column("chunk")))
    changed = kept.filter(pc.not_equal(kept.column("content"), kept.column("old")))
    removed = previous.join(objects.select(["id"]), "id", join_type="left anti")
    dirty = set(changed.column("chunk").to_pylist()) | set(removed.column("chunk").to_pylist())
    new = joined.filter(pc.is_null(joined.column("chunk")))
    first_new = (pc.max(previous.column("chunk")).as_py() + 1) if previous.num_rows else 0
    size = new_chunk_size(new.num_rows, chunk_size, workers)
    new_chunks = first_new + np.arange(new.num_rows, dtype=np.int32) // size
    members = pa.concat_tables(
        [
            kept.select(["id", "chunk", "content"]).cast(MEMBERS_SCHEMA),
            pa.table(
                [new.column("id"), pa.array(new_chunks, pa.int32()), new.column("content")],
                schema=MEMBERS_SCHEMA,
            ),
        ]
    ).sort_by("id")
    planned = set(pc.unique(members.column("chunk")).to_pylist())
    on_disk = output.chunks_on_disk()
    for index in (on_disk - planned) | (on_disk & dirty):
        output.drop(index)
    with atomic_path(output.out_dir / MEMBERS_NAME) as tmp:
        pq.write_table(members, tmp)
    plan = ChunkPlan(tables, members, rows, [])
    plan.recomputed = output.pending(sorted(planned))
    return plan


def previous_members(output: ChunkedOutput) -> pa.Table:
    """The membership table (MEMBERS_SCHEMA) a previous run left in `output`; empty when there
    is none (parts without a table are from an unfinished first plan, which a fresh plan
    repeats).

    A damaged table (cut short, or not this schema) is a plan that cannot be read: like a
    damaged `.plan.json`, it means a fresh plan. Only the table knew which objects each part
    on disk holds, so every part is reported with it and dropped, to be recomputed.
    """
    path = output.out_dir / MEMBERS_NAME
    if not path.is_file():
        return MEMBERS_SCHEMA.empty_table()
    problem = parquet_problem(path)
    if problem is None and not pq.read_schema(path).equals(MEMBERS_SCHEMA):
        problem = f"its columns are not {', '.join(MEMBERS_SCHEMA.names)}"
    if problem is None:
        return pq.read_table(path)
    output.damaged.append((path, problem))
    _console.print(f"{path} is damaged ({problem}): planning every chunk afresh")
    for index in output.chunks_on_disk():
        output.drop(index)
    return MEMBERS_SCHEMA.empty_table()


# The workers a small set is spread over when the param says 0 ("one per CPU"). A constant, not
# the CPUs: a 2-core and an 8-core machine cut the default 600 objects into other part files,
# and DVC saw other points and renders (the same shards).
SPREAD = 16


def new_chunk_size(objects: int, chunk_size: int, workers: int) -> int:
    """Objects per chunk for `objects` new ones: `chunk_size`, or fewer when that would leave
    some of the `workers` (the param; 0: SPREAD) without a chunk (a small set, or a small
    addition)."""
    return max(1, min(chunk_size, -(-objects // (workers or SPREAD))))


def progress_bar(unit: str = "objects") -> Progress:
    """One progress style for every long stage: bar, count, rate and time left (on a log
    file, a line each tenth: `terminal.LoggedProgress`)."""
    return LoggedProgress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        transient=False,
    )


def run_chunks(
    work: Callable[..., int],
    jobs: Iterable[tuple],
    sizes: Sequence[int] | Callable[[tuple], int],
    *,
    workers: int,
    executor: str = "local",
    description: str = "working",
    unit: str = "objects",
    total: int | None = None,
) -> int:
    """Run `work(*job)` for every job, in parallel, with a progress bar; return the sum of sizes.

    `work` must be a top-level function (it is sent to other processes); it writes its own
    part file and returns how many units it finished. `sizes` gives how many units each job
    holds: a list in job order, or a function of the job. `jobs` may be a generator: it is
    read only as workers free up (a few jobs ahead), so a plan streamed from disk stays
    streamed. `total` (the progress bar's) defaults to the sum of a list of sizes.
    `workers` 0 or 1 runs everything in this process (a pool of one only adds start-up time).
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if workers > 1:  # 0 or 1: this process, as documented below
        known = len(jobs) if isinstance(jobs, Sequence) else None
        workers = bound_workers(workers, executor, known)
    if callable(sizes):
        sized = ((job, sizes(job)) for job in jobs)
    else:
        total = sum(sizes) if total is None else total
        sized = zip(jobs, sizes, strict=True)
    done = 0
    clock = Stopwatch()
    with progress_bar(unit) as progress:
        task = progress.add_task(description, total=total, rate="")

        def advance(n: int) -> None:
            nonlocal done
            done += n
            rate = done / clock.seconds()
            progress.update(task, advance=n, rate=f"{rate:.1f} {unit}/s")

        if executor == "ray":
            _run_ray(work, sized, workers, advance)
        elif workers <= 1:
            for job, size in sized:
                work(*job)
                advance(size)
        else:
            _run_pool(work, sized, workers, advance)
    return done


def _run_pool(work, sized: Iterator[tuple[tuple, int]], workers: int, advance) -> None:
    """Run the jobs in a spawn process pool. Its resource tracker is started here, one that a
    SIGHUP cannot kill, and stopped when this process exits (`start_resource_tracker`): one
    for the process, however many pools it runs."""
    sized = iter(sized)
    first = list(itertools.islice(sized, 2 * workers))
    if len(first) <= 1:  # one job: a pool would only add start-up time
        for job, size in first:
            work(*job)
            advance(size)
        return
    start_resource_tracker()
    _pool_loop(work, first, sized, workers, advance)


def _pool_loop(work, first: list, sized: Iterator[tuple[tuple, int]], workers: int, advance):
    # spawn, not fork: pyarrow and torch keep threads that a fork would copy mid-state.
    size = min(workers, len(first))
    with ProcessPoolExecutor(
        max_workers=size,
        mp_context=get_context("spawn"),
        initializer=start_pool_worker,
        initargs=(os.getpid(), size),
    ) as pool:
        futures = {}
        # The submits inside: a Ctrl-C or SIGTERM landing while the pool starts left the
        # pool's `with` to run the chunks submitted so far whole.
        with pool_stops_whole(pool):
            with workers_start_deaf():
                for job, size in first:
                    futures[pool.submit(run_task, work, *job)] = size
            while futures:
                finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()
                    advance(futures.pop(future))
                # Keep two jobs a worker queued: the rest of the plan stays unread.
                with workers_start_deaf():
                    for job, size in itertools.islice(sized, 2 * workers - len(futures)):
                        futures[pool.submit(run_task, work, *job)] = size


def _run_ray(work, sized: Iterator[tuple[tuple, int]], workers: int, advance) -> None:
    """Ray tasks, a few ahead per CPU. A task whose node dies is retried elsewhere by Ray
    (`max_retries`): its part is written whole or not at all, so a redone chunk is never
    duplicated."""
    import ray
    from ray.exceptions import RayTaskError

    nodes: dict[str, int] = {}
    with ray_stage(workers):
        remote = ray.remote(num_cpus=1, max_retries=3)(_on_node)
        sized = iter(sized)
        ahead = 2 * max(workers, 1) if not os.environ.get("RAY_ADDRESS") else 64
        pending = {remote.remote(work, *job): size for job, size in itertools.islice(sized, ahead)}
        try:
            while pending:
                finished, _ = ray.wait(list(pending), num_returns=1)
                for ref in finished:
                    try:
                        node = ray.get(ref)
                    except RayTaskError as error:
                        raise_task_cause(error)
                    nodes[node] = nodes.get(node, 0) + 1
                    advance(pending.pop(ref))
                for job, size in itertools.islice(sized, ahead - len(pending)):
                    pending[remote.remote(work, *job)] = size
        except BaseException:
            pending.clear()  # dropped while Ray's reports of them are off; `ray_stage` stops them
            raise
    log.info("ray: %d chunks on %d nodes %s", sum(nodes.values()), len(nodes), nodes)


def raise_task_cause(error: Exception) -> None:
    """Raise the exception a Ray task raised (a full disk's OSError naming the part, a
    UsageError), chained to Ray's wrapper, which keeps the remote traceback. The wrapper itself
    passes for the cause's class but without its fields (an OSError's errno and file name) and
    with the traceback as its text: the stage's one line was the whole remote traceback. The
    other chunks' errors after this one are its echoes (the same disk): Ray would print each as
    an "Unhandled error" traceback once their results are dropped: call it inside
    `ray_echoes_quiet`."""
    cause = getattr(error, "cause", None)
    if not isinstance(cause, BaseException):
        raise error
    raise cause from error


RAY_QUIET = "RAY_IGNORE_UNHANDLED_ERRORS"  # read by Ray's driver as each result is dropped


@contextlib.contextmanager
def ray_echoes_quiet() -> Iterator[None]:
    """Ray prints a task's error as an "Unhandled error" traceback when its result is dropped
    unread; after a stage raised the first (`raise_task_cause`), the others are its echoes (the
    same full disk). Set for the stage's Ray loop only, which drops its results before the
    end, and restored after: a program that calls a stage from Python keeps Ray's behaviour
    for its own tasks (the variable was left set for the rest of the process)."""
    before = os.environ.get(RAY_QUIET)
    os.environ[RAY_QUIET] = "1"
    try:
        yield
    finally:
        gc.collect()  # the dropped results, should a cycle hold one
        if before is None:
            os.environ.pop(RAY_QUIET, None)
        else:
            os.environ[RAY_QUIET] = before


@contextlib.contextmanager
def ray_stage(workers: int) -> Iterator[None]:
    """A stage's Ray loop: connected (`connect_ray`), Ray's echoes of its errors off
    (`ray_echoes_quiet`), and, when the loop raises (a chunk's error, Ctrl-C), the tasks still
    running stopped by disconnecting the driver that owns them (Ray ends a leaving driver's
    tasks and actors) if cg3d connected it. Never by `ray.cancel`: a cancel landing as a task's
    reply arrives aborts the driver inside Ray ("task_manager.cc: Check failed: Tried to
    complete task that was not pending", ray-project/ray#54738), which CI met under load. A Ray
    the program connected itself stays up: its tasks run to their end, each part written whole
    or not at all."""
    import ray

    connect_ray(workers)
    with ray_echoes_quiet():
        try:
            yield
        except BaseException:
            if _ray_is_ours():
                ray.shutdown()
            raise


# The Ray connection `connect_ray` made, if any: node and job ids (a job id alone restarts at 1
# with each new local Ray, and the driver's id is made from it).
_OUR_RAY: list[tuple[str, str]] = []


def _ray_is_ours() -> bool:
    """Whether the Ray this process is connected to is the session `connect_ray` started (not
    one the program started itself, nor one after ours was shut down)."""
    import ray

    return ray.is_initialized() and [_ray_connection()] == _OUR_RAY


def _ray_connection() -> tuple[str, str]:
    import ray

    context = ray.get_runtime_context()
    return context.get_node_id(), context.get_job_id()


def require_executor(executor: str) -> None:
    """For a command, before its --out is made: `executor` "ray" needs the package and a
    working folder Ray's workers can run this cg3d from (`check_ray_working_folder`)."""
    from cg3d.errors import require

    if executor == "ray":
        require("ray")
        check_ray_working_folder()


def check_ray_working_folder() -> None:
    """UsageError where the working folder holds a cg3d other than this process's: Ray puts
    the driver's working folder first on every worker's sys.path, so run from another
    checkout's root (or any folder holding a cg3d/ package) the tasks imported that code, a
    RaySystemError traceback ("No module named 'cg3d.pipeline'") or another version's stage."""
    import cg3d

    here = Path.cwd()
    own = Path(cg3d.__file__).resolve().parent
    for found in (here / "cg3d" / "__init__.py", here / "cg3d.py"):
        if found.is_file() and found.resolve().parent != own:
            raise UsageError(
                f"--executor ray: the working folder {here} holds another cg3d ({found}), which "
                f"Ray's workers would import, not this command's ({own}): run from another folder"
            )


def connect_ray(workers: int) -> None:
    """Join the cluster RAY_ADDRESS names, and only that one; without it, start a private local
    Ray of `workers` CPUs. `address="local"` is what keeps it private: a bare `ray.init()`
    attaches to any cluster `ray start --head` left running on this machine (found through
    /tmp/ray), someone else's, and then refuses our num_cpus."""
    import ray

    if ray.is_initialized():
        return
    check_ray_working_folder()
    common = {"ignore_reinit_error": True, "log_to_driver": False, "include_dashboard": False}
    address = os.environ.get("RAY_ADDRESS", "").strip()
    with sigterm_kept():
        if address:
            ray.init(address=address, **common)
        else:
            ray.init(address="local", num_cpus=max(workers, 1), **common)
    _OUR_RAY[:] = [_ray_connection()]


@contextlib.contextmanager
def sigterm_kept() -> Iterator[None]:
    """The process's SIGTERM handler (cg3d's `stopping.Interrupt`) as it was, after what runs
    inside. `ray.init` replaces it twice: with `sys.exit`, then, as its driver connects, with a
    crash handler (abseil's: "*** SIGTERM received", then the process ends as if killed), so
    `kill PID` of a Ray stage ran no cleanup (.cg3d.lock left, Ray's tasks orphaned) and printed
    no line of ours (exit 15 or -6, not 143)."""
    if threading.current_thread() is not threading.main_thread():  # only it sets handlers
        yield
        return
    held = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if held is not None:  # None: not set from Python, nothing to put back
            signal.signal(signal.SIGTERM, held)


def _on_node(work: Callable, *job) -> str:
    """Run one chunk in a Ray task; the id of the node it ran on (logged per stage)."""
    import ray

    work(*job)
    return ray.get_runtime_context().get_node_id()

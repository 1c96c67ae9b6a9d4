"""The pack stage: points, views and captions of every good object into WebDataset shards.

`OUT/{split}/shard-%06d.tar` and `OUT/index.json` in the format of `cg3d.formats.shards`;
`meta.json` holds the class name, source, split, free-text name, mesh path and sha256, point
count and view count.

The shard plan: shard k of a split holds the k-th run of `shard_size` objects of that split, in
id order, among the objects no earlier stage failed (the manifest's status and the upstream
failure tables say which). It is read from the streamed manifest, so it does not depend on
`workers`. An object that turns out unpackable only while its shard is written (missing from
an input without a failure row, bad points, no views, no captions) is left out of that shard,
which is then shorter: no later shard moves. With consistent inputs this is exactly the
sequential pack's layout, byte for byte.

Shards are written in parallel (`pack.workers`, `run_chunks`), each atomically, and each
leaves `_shards/{split}-XXXXXX.json` (count, size, sha256, failures, point shapes) once renamed
into place: a rerun after a kill skips those shards, once each is checked whole (its size is the
recorded one and its tar reads to the end, `cg3d.formats.intact`); a damaged one is rewritten.
`.plan.json` names the inputs (each file's name and sha256) and params the shards came from;
when it differs, the old shards go. It records content, never mtimes: the output (and DVC's hash
of it) is the same bytes for the same inputs, whenever and wherever they were written.
Tars are written with fixed member order, mtime 0 and owner 0/"": unchanged inputs give
identical bytes. Objects that failed any stage are left out and listed in
`OUT/failures.parquet` and the index.
"""

import bisect
import functools
import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cg3d.errors import UsageError
from cg3d.files import FileTooLarge, file_sha256, locks_out_dir, require_folder
from cg3d.formats.captions import CAPTIONS_NAME, CaptionsFile
from cg3d.formats.failures import FAILURES_NAME, read_failures, write_failures
from cg3d.formats.intact import tar_problem
from cg3d.formats.manifest import (
    CLASSES_NAME,
    MANIFEST_NAME,
    OK,
    failure_reason,
    manifest_rows,
    read_classes,
)
from cg3d.formats.owner import PLAN_NAME, check_owner
from cg3d.formats.points import PointsLookup, points_channels, points_parts
from cg3d.formats.renders import Rendered, RendersLookup, read_renders, render_parts
from cg3d.formats.shards import (
    INDEX_NAME,
    SHARD_RECORDS,
    check_index_fits,
    read_shard_record,
    sample_members,
    shard_index,
    shard_path,
    shard_record_path,
    write_index,
    write_shard,
    write_shard_record,
)
from cg3d.formats.tar import FormatError
from cg3d.params import PackConfig
from cg3d.pipeline.chunks import (
    bound_workers,
    code_digest,
    mark_code,
    plan_digest,
    previous_plan_digest,
    run_chunks,
    write_plan,
    written_by,
)
from cg3d.terminal import console

_console = console(stderr=True, highlight=False)
SPLITS = ("train", "test")
MANIFEST_COLUMNS = [
    "id",
    "source",
    "path",
    "class_name",
    "name",
    "split",
    "sha256",
    "status",
    "error",
]


@dataclass
class PackSummary:
    samples: dict[str, int]
    shards: dict[str, int]
    failures: list[dict]
    shards_written: int = 0  # by this run (the others were finished by an earlier one)


class CaptionsLookup:
    """Captions by id over the captions file's row groups (in id order), read as needed."""

    def __init__(self, captions_dir: Path):
        self.file = CaptionsFile(captions_dir)
        self.highest = [max(self.file.group_ids(g), default="") for g in range(self.file.groups)]

    def get_many(self, ids: list[str]) -> dict[str, list[str]]:
        wanted, found = set(ids), {}
        groups = {bisect.bisect_left(self.highest, key) for key in wanted}
        for group in sorted(g for g in groups if g < self.file.groups):
            found.update((k, v) for k, v in self.file.read_group(group).items() if k in wanted)
        return found


@dataclass
class PackInputs:
    """What the pack stage merges, besides the manifest: each upstream stage's values by id."""

    classes: dict[str, int]  # class name → label
    failed: dict[str, dict]  # id → the first upstream failure row
    points: PointsLookup
    captions: CaptionsLookup
    channels: list[str]  # the points' channel layout (xyz, rgb, normals), in meta.json

    def close(self) -> None:
        self.captions.file.close()  # the one file held open (points and renders: per read)


def check_input_folders(points_dir: Path, renders_dir: Path) -> None:
    """A missing points or renders folder, or one whose stage started and did not finish (a
    killed run: its .plan.json, written first, without failures.parquet, written last), is a
    UsageError naming its option. Before, a killed sample run's 13 of 20 parts were packed,
    the rest "missing: no points"."""
    for flag, folder, stage in (
        ("--points", points_dir, "sample"),
        ("--renders", renders_dir, "render"),
    ):
        require_folder(folder, flag)
        started = (Path(folder) / PLAN_NAME).is_file()
        if started and not (Path(folder) / FAILURES_NAME).is_file():
            raise UsageError(
                f"{flag}: {folder} holds no finished `cg3d {stage}` output (no {FAILURES_NAME}, "
                f"which it writes last): run `cg3d {stage}` to finish it"
            )


def open_inputs(meshes_dir: Path, points_dir: Path, renders_dir: Path, captions_dir: Path):
    """The classes, upstream failures and lookups (after `check_input_folders`)."""
    failed: dict[str, dict] = {}
    for folder, stage in (
        (points_dir, "sample"),
        (renders_dir, "render"),
        (captions_dir, "caption"),
    ):
        for row in read_failures(Path(folder) / FAILURES_NAME, stage):
            failed.setdefault(row["id"], row)
    classes = read_classes(meshes_dir)
    return PackInputs(
        {name: i for i, name in enumerate(classes)},
        failed,
        PointsLookup(points_dir),
        CaptionsLookup(captions_dir),
        points_channels(points_dir),
    )


@functools.lru_cache(maxsize=1)
def opened_inputs(dirs: tuple[str, str, str, str], digest: str) -> PackInputs:
    """The inputs of plan `digest`, opened once per process (the stage's, or a pool worker's,
    which writes many shards of the plan); a new plan opens them afresh."""
    return open_inputs(*map(Path, dirs))


def plan_fingerprint(dirs: tuple[str, str, str, str], config: PackConfig) -> dict:
    """What the shards are made from: every input file's name and sha256, and the params that
    change the shards (not `workers`). Content, not size and mtime: a DVC checkout or a fresh
    clone's run (new mtimes, same bytes) keeps the shards and writes the same `.plan.json`.
    Hashing reads each input once more, which the shards' writing reads anyway."""
    meshes, points, renders, captions = map(Path, dirs)
    files = [meshes / MANIFEST_NAME, meshes / CLASSES_NAME, Path(captions) / CAPTIONS_NAME]
    files += [Path(folder) / FAILURES_NAME for folder in (points, renders, captions)]
    files += points_parts(points) + render_parts(renders)
    digest = hashlib.sha256()
    for file in files:
        seen = file_sha256(file) if file.is_file() else "absent"
        digest.update(f"{file.parent.name}/{file.name} {seen}\n".encode())
    return {"stage": "pack", "shard_size": config.shard_size, "inputs": digest.hexdigest()}


def prepare_output(out_dir: Path, fingerprint: dict) -> str:
    """Create the folders; keep the finished shards of the same plan and code, clear another
    plan's, or another cg3d's (a shard of the same inputs written by other code, one before an
    upgrade, is packed again: the chunked stages' rule, `chunks.code_digest`). Returns the
    plan's digest. The index goes first: no index, no set."""
    check_owner(out_dir, "pack")
    digest = plan_digest(fingerprint)
    plan_file = out_dir / PLAN_NAME
    code = code_digest(__name__)
    previous = previous_plan_digest(plan_file) if written_by(out_dir) == code else None
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / INDEX_NAME).unlink(missing_ok=True)
    if previous != digest:
        shutil.rmtree(out_dir / SHARD_RECORDS, ignore_errors=True)
        (out_dir / FAILURES_NAME).unlink(missing_ok=True)
    for folder in [out_dir / split for split in SPLITS] + [out_dir / SHARD_RECORDS]:
        folder.mkdir(exist_ok=True)
        for leftover in folder.glob(".*.tmp"):  # a killed run's half-written file
            leftover.unlink()
        if previous != digest:
            for stale in folder.glob("shard-*.tar"):
                stale.unlink()
    write_plan(plan_file, fingerprint)
    mark_code(out_dir, code)
    return digest


def shard_done(out_dir: Path, split: str, index: int) -> bool:
    """A shard is finished when its record exists (written after the shard's rename) and the
    shard is whole: the size the record holds, and a tar that reads to its end. A damaged one
    is reported and rewritten."""
    record, shard = shard_record_path(out_dir, split, index), shard_path(out_dir, split, index)
    if not record.is_file() or not shard.exists():
        return False
    try:
        size, written = read_shard_record(out_dir, split, index)["size"], shard.stat().st_size
        problem = f"{written} bytes where {size} were written" if written != size else None
    except ValueError:  # cut short, edited ("[]"), nested too deep: rewrite it
        problem = f"its record {record.name} does not parse"
    problem = problem or tar_problem(shard)
    if problem:
        _console.print(f"{shard} is damaged ({problem}): packing it again")
        record.unlink()
        return False
    return True


def objects_to_pack(meshes_dir: Path, inputs: PackInputs) -> dict[str, int]:
    """The objects the plan will hand out, by split (one columnar pass over the manifest,
    before any shard is written): the shard count's and the progress bar's source."""
    counts = dict.fromkeys(SPLITS, 0)
    for row in manifest_rows(meshes_dir, MANIFEST_COLUMNS):
        if planned_failure(row, inputs) is None:
            counts[row["split"]] += 1
    return counts


def too_many_shards(shard_size: int, shards: int, error: FileTooLarge) -> UsageError:
    """The one line of a pack whose index its readers would refuse."""
    return UsageError(
        f"--shard-size {shard_size} makes {shards:,} shards: {error}"
        " by its readers; pack with a larger --shard-size"
    )


def planned_failure(row: dict, inputs: PackInputs) -> dict | None:
    """The failure row of an object the plan leaves out (known before any shard is written)."""
    key = row["id"]
    if row["status"] != OK:
        return {"id": key, "stage": "meshes", "reason": failure_reason(row)}
    if key in inputs.failed:
        return inputs.failed[key]
    if row["class_name"] not in inputs.classes:
        reason = f"unknown_class: {row['class_name']!r} is not in {CLASSES_NAME}"
        return {"id": key, "stage": "pack", "reason": reason}
    if row["split"] not in SPLITS:
        return {"id": key, "stage": "pack", "reason": f"unknown_split: {row['split']!r}"}
    return None


def plan_shards(
    meshes_dir: Path, inputs: PackInputs, shard_size: int, failures: list, planned: dict
) -> Iterator[tuple[str, int, list[dict]]]:
    """(split, shard number, manifest rows) of every shard, from one pass over the manifest;
    the objects left out are appended to `failures`, the shard counts kept in `planned`."""
    rows: dict[str, list[dict]] = {split: [] for split in SPLITS}
    for row in manifest_rows(meshes_dir, MANIFEST_COLUMNS):
        failure = planned_failure(row, inputs)
        if failure is not None:
            failures.append(failure)
            continue
        split = row["split"]
        rows[split].append(row)
        if len(rows[split]) == shard_size:
            yield split, planned[split], rows[split]
            planned[split] += 1
            rows[split] = []
    for split in SPLITS:
        if rows[split]:
            yield split, planned[split], rows[split]
            planned[split] += 1


def missing_reason(points, renders: Rendered | None, captions) -> str:
    """Why an object that no stage reported as failed cannot be packed ("" when it can)."""
    if points is None:
        return "missing: no points"
    if points.ndim != 2 or points.shape[1] not in (3, 6, 9) or not np.isfinite(points).all():
        return f"bad_points: shape {points.shape} or non-finite values"
    if renders is None or not renders.views:
        return "missing: no rendered views"
    if not captions:
        return "missing: no captions"
    return ""


def object_meta(row: dict, points: np.ndarray, views: int) -> dict:
    return {
        "id": row["id"],
        "class_name": row["class_name"],
        "source": row["source"],
        "split": row["split"],
        "name": row["name"] or "",
        "path": row["path"],
        "sha256": row["sha256"],
        "n_points": int(points.shape[0]),
        "views": views,
    }


def pack_shard(
    dirs: tuple[str, str, str, str],
    digest: str,
    out_dir: str,
    split: str,
    index: int,
    rows: list,
    parts: list[tuple[str, str, str]],
) -> int:
    """Write one planned shard and its record; returns the objects it holds. `parts`: the
    render parts that may hold its objects (`RendersLookup.near`), read here."""
    inputs = opened_inputs(dirs, digest)
    ids = [row["id"] for row in rows]
    clouds, renders = inputs.points.get_many(ids), read_renders(parts, ids)
    captions = inputs.captions.get_many(ids)
    failures, shapes = [], set()

    def samples():
        for row in rows:
            key = row["id"]
            stored, rendered, texts = clouds.get(key), renders.get(key), captions.get(key)
            cloud = stored.points if stored else None
            reason = missing_reason(cloud, rendered, texts)
            if reason:
                failures.append({"id": key, "stage": "pack", "reason": reason})
                continue
            shapes.add(cloud.shape)
            meta = object_meta(row, cloud, len(rendered.views))
            meta |= {"channels": inputs.channels, "has_color": stored.has_color}
            cls = inputs.classes[row["class_name"]]
            yield key, sample_members(cloud, rendered.views, rendered.cameras, texts, cls, meta)

    count, sha256 = write_shard(shard_path(out_dir, split, index), samples())
    size = shard_path(out_dir, split, index).stat().st_size
    record = {
        "count": count,
        "size": size,
        "sha256": sha256,
        "failures": failures,
        "shapes": sorted(shapes),
    }
    write_shard_record(out_dir, split, index, record)
    return count


@locks_out_dir
def pack_shards(
    meshes_dir: Path,
    points_dir: Path,
    renders_dir: Path,
    captions_dir: Path,
    out_dir: Path,
    config: PackConfig,
) -> PackSummary:
    """Run the pack stage into `out_dir` ({train,test}/shard-*.tar, index.json, failures)."""
    if config.shard_size < 1:
        raise UsageError("--shard-size must be ≥ 1")
    out_dir = Path(out_dir)
    dirs = tuple(str(Path(d)) for d in (meshes_dir, points_dir, renders_dir, captions_dir))
    failures: list[dict] = []
    planned = dict.fromkeys(SPLITS, 0)
    written = 0  # shards written by this run: counted as the plan hands them out
    inputs = None
    try:
        check_input_folders(points_dir, renders_dir)
        fingerprint = plan_fingerprint(dirs, config)
        # Opened before the output is touched (a bad input leaves the old shards); the shards
        # written in this process reuse them.
        inputs = opened_inputs(dirs, plan_digest(fingerprint))
        # Each part's headers read here only, a damaged part refused before the output is
        # touched; a shard's job carries its few parts to the worker that writes it.
        renders = RendersLookup(Path(renders_dir))
        objects = objects_to_pack(Path(meshes_dir), inputs)
        shards = sum(-(-n // config.shard_size) for n in objects.values())  # the plan's count
        try:  # before packing: at Objaverse scale, hours of shards an index could not list
            check_index_fits(shards)
        except FileTooLarge as error:
            raise too_many_shards(config.shard_size, shards, error) from None
        digest = prepare_output(out_dir, fingerprint)
        plan = plan_shards(Path(meshes_dir), inputs, config.shard_size, failures, planned)

        def unfinished():
            nonlocal written
            for split, index, rows in plan:
                if not shard_done(out_dir, split, index):
                    written += 1
                    near = renders.near(row["id"] for row in rows)
                    yield dirs, digest, str(out_dir), split, index, rows, near

        run_chunks(
            pack_shard,
            unfinished(),
            lambda job: len(job[5]),
            workers=bound_workers(config.workers),
            description="packing",
            # the bar read "600/?"; none when a killed run left shards this one does not redo
            total=None if any((out_dir / SHARD_RECORDS).glob("*.json")) else sum(objects.values()),
        )
    except FormatError as error:  # a damaged render part: one line naming the part and member
        raise UsageError(f"--renders: {error}") from None
    finally:
        # Closed and forgotten once the shards are written (or failed): they kept the captions
        # file open, and the lookups in memory, until the process's next pack (a notebook's,
        # a sweep's, for good). The pool workers' own copies go with their processes.
        opened_inputs.cache_clear()
        if inputs is not None:
            inputs.close()
    records = {
        split: [read_shard_record(out_dir, split, i) for i in range(n)]
        for split, n in planned.items()
    }
    failures += [row for rs in records.values() for r in rs for row in r["failures"]]
    failures.sort(key=lambda row: row["id"])  # manifest order, as the rows are written
    write_failures(failures, out_dir / FAILURES_NAME)
    # The params that shape the shards, not `workers`: a pack with another worker count writes
    # the same bytes (else DVC would see new shards and retrain on the same samples)
    shaping = {"shard_size": config.shard_size}
    try:
        write_index(out_dir, shard_index(list(inputs.classes), records, failures, shaping))
    except FileTooLarge as error:  # the readers would refuse it: no index, no set
        raise too_many_shards(config.shard_size, sum(planned.values()), error) from None
    return PackSummary(
        {split: sum(r["count"] for r in rs) for split, rs in records.items()},
        dict(planned),
        failures,
        written,
    )

import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from shutil import ignore_patterns

import numpy as np
import pytest

from cg3d.errors import UsageError
from cg3d.files import (
    LOCK_NAME,
    STAGE_PREFIX,
    atomic_files,
    atomic_path,
    locks_out_dir,
    output_lock,
)
from cg3d.formats.failures import FAILURES_NAME, read_failures, summarize
from cg3d.formats.manifest import MeshRecord, manifest_tables, write_manifest
from cg3d.formats.points import write_points_part
from cg3d.formats.tar import write_tar
from cg3d.pipeline.chunks import ChunkedOutput, plan_chunks, run_chunks, split_into_chunks
from tests.pipeline.disks import cg3d, mounted


@pytest.fixture
def locked(tmp_path):
    """Write under tmp_path as a stage does: holding the folder's lock."""
    with output_lock(tmp_path):
        yield


def write_part(output: ChunkedOutput, index: int, items: list[str]) -> int:
    """A chunk's work as a stage does it: failures first, then the part, atomically."""
    output.write_chunk_failures(
        index, [{"id": i, "reason": "bad: odd"} for i in items if "odd" in i]
    )
    with atomic_path(output.part(index)) as tmp:
        tmp.write_text("\n".join(items))
    return len(items)


def test_split_keeps_order_and_sizes():
    chunks = split_into_chunks(list(range(7)), 3)
    assert chunks == [[0, 1, 2], [3, 4, 5], [6]]
    assert split_into_chunks([], 3) == []
    with pytest.raises(ValueError):
        split_into_chunks([1], 0)


def plan(tmp_path: Path, ids: list[str], chunk_size: int, workers: int) -> dict[int, list[str]]:
    """The chunks (number: member ids) `plan_chunks` gives a manifest of `ids` in tmp_path."""
    meshes = tmp_path / "meshes"
    meshes.mkdir(parents=True, exist_ok=True)
    write_manifest([MeshRecord(i, "test", f"{i}.obj", "thing", "train") for i in ids], meshes)
    output = ChunkedOutput(tmp_path / "out", ".txt", "test")
    with output_lock(output.out_dir):
        output.prepare()
        members = plan_chunks(
            lambda columns: manifest_tables(meshes, columns), output, chunk_size, workers
        ).members
    chunks: dict[int, list[str]] = {}
    for row in members.to_pylist():
        chunks.setdefault(row["chunk"], []).append(row["id"])
    return chunks


def test_a_set_smaller_than_a_chunk_gives_every_worker_a_chunk(tmp_path):
    ids = [f"obj{i:02d}" for i in range(10)]
    chunks = plan(tmp_path, ids, chunk_size=1000, workers=4)
    assert [len(members) for members in chunks.values()] == [3, 3, 3, 1]
    assert sorted(i for members in chunks.values() for i in members) == ids
    # a large set keeps chunks of chunk_size
    large = plan(tmp_path / "large", [f"obj{i:03d}" for i in range(100)], chunk_size=10, workers=4)
    assert {len(members) for members in large.values()} == {10}


def test_workers_0_cuts_a_small_set_into_16_chunks(tmp_path):
    ids = [f"obj{i:02d}" for i in range(40)]
    chunks = plan(tmp_path, ids, chunk_size=1000, workers=0)
    assert [len(members) for members in chunks.values()] == [3] * 13 + [1]


@pytest.mark.parametrize("workers", [0, 3])
def test_the_sample_stage_writes_the_same_parts_whatever_the_machine_cpus(
    tmp_path, monkeypatch, workers
):
    """`sample.workers: 0` (params.yaml's, one per CPU), or more than the CPUs: the cut of a
    small set followed the workers this machine ran, so a 1-CPU and a 2-CPU machine wrote
    other part files and chunk tables (another data/points for DVC; the same shards)."""
    import cg3d.params
    from cg3d.params import MeshesConfig, SampleConfig
    from cg3d.pipeline.sample import sample_points
    from cg3d.pipeline.sources import build_manifest

    meshes = tmp_path / "meshes"
    build_manifest(MeshesConfig(source="synthetic", per_class=2, workers=1), meshes)
    outs = []
    for cpus in (1, 2):
        monkeypatch.setattr(cg3d.params, "cpu_count", lambda cpus=cpus: cpus)
        outs.append(tmp_path / f"points-{cpus}")
        sample_points(meshes, outs[-1], SampleConfig(points=64, chunk_size=200, workers=workers))
    files = [{p.relative_to(o): p.read_bytes() for p in o.rglob("*") if p.is_file()} for o in outs]
    assert files[0] == files[1]
    assert len([name for name in files[0] if name.name.startswith("part-")]) > 1


def test_parts_are_reused_only_by_the_code_that_wrote_them(tmp_path, locked, monkeypatch):
    """Before: the plan named the inputs and params only, so after a code change that changes
    the points (a colour rule), `dvc repro` reran the stage and kept every old chunk."""
    import cg3d.pipeline.chunks as chunks

    out = tmp_path / "out"
    output = ChunkedOutput(out, ".txt", "test", {"points": 1})
    output.prepare()
    write_part(output, 0, ["a", "b_odd"])
    ChunkedOutput(out, ".txt", "test", {"points": 1}).prepare()
    assert output.pending(2) == [1]  # the same code resumes

    monkeypatch.setattr(chunks, "code_digest", lambda module=None: "another code")
    ChunkedOutput(out, ".txt", "test", {"points": 1}).prepare()
    assert output.pending(2) == [0, 1]
    write_part(output, 0, ["a", "b_odd"])
    (out / chunks.CODE_NAME).unlink()  # parts whose code nobody recorded
    ChunkedOutput(out, ".txt", "test", {"points": 1}).prepare()
    assert output.pending(2) == [0, 1]


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """A copy of the cg3d package that the code digest reads instead of the real one."""
    import cg3d.pipeline.chunks as chunks

    root = tmp_path / "src"
    shutil.copytree(
        chunks.SOURCE_ROOT / "cg3d", root / "cg3d", ignore=ignore_patterns("__pycache__")
    )
    monkeypatch.setattr(chunks, "SOURCE_ROOT", root)
    chunks.code_digest.cache_clear()
    yield root / "cg3d"
    chunks.code_digest.cache_clear()


def edit(file: Path) -> None:
    """A change to a module's code (its digest is read afresh next time)."""
    import cg3d.pipeline.chunks as chunks

    file.write_text(file.read_text() + "\nCHANGED = 1\n")
    chunks.code_digest.cache_clear()


def test_the_code_digest_follows_only_the_code_the_stage_runs(package_copy):
    """Before: the digest covered the whole package, so an edit to the training code recomputed
    every chunk of the next sample or render run."""
    from cg3d.pipeline.chunks import code_digest

    before = {m: code_digest(m) for m in ("cg3d.pipeline.sample", "cg3d.render.stage", None)}
    edit(package_copy / "train" / "loop.py")
    assert code_digest("cg3d.pipeline.sample") == before["cg3d.pipeline.sample"]
    assert code_digest("cg3d.render.stage") == before["cg3d.render.stage"]
    assert code_digest(None) != before[None]  # the whole package's digest still sees it
    edit(package_copy / "formats" / "points.py")  # a writer the sample stage imports
    assert code_digest("cg3d.pipeline.sample") != before["cg3d.pipeline.sample"]
    # the Blender worker, launched as `python -m cg3d.render.worker`, not imported
    rendered = code_digest("cg3d.render.stage")
    edit(package_copy / "render" / "worker.py")
    assert code_digest("cg3d.render.stage") != rendered


def test_a_change_outside_the_stage_keeps_its_chunks(tmp_path, locked, package_copy):
    out = tmp_path / "out"
    output = ChunkedOutput(out, ".txt", "test", {"points": 1}, code="cg3d.pipeline.sample")
    output.prepare()
    write_part(output, 0, ["a"])
    edit(package_copy / "train" / "loop.py")
    edit(package_copy / "models" / "hub.py")
    ChunkedOutput(out, ".txt", "test", {"points": 1}, code="cg3d.pipeline.sample").prepare()
    assert output.pending(2) == [1]  # kept
    edit(package_copy / "pipeline" / "sample.py")
    ChunkedOutput(out, ".txt", "test", {"points": 1}, code="cg3d.pipeline.sample").prepare()
    assert output.pending(2) == [0, 1]
    write_part(output, 0, ["a"])
    edit(package_copy / "formats" / "manifest.py")  # a reader the stage imports
    ChunkedOutput(out, ".txt", "test", {"points": 1}, code="cg3d.pipeline.sample").prepare()
    assert output.pending(2) == [0, 1]


def test_an_upgrade_of_a_library_the_stage_runs_recomputes_its_chunks(
    tmp_path, locked, package_copy, monkeypatch
):
    """`dvc repro -f render` after an upgrade of Blender reused every chunk the old Blender had
    rendered: the digest named our files only. A library that only draws progress (rich) keeps
    them."""
    import importlib.metadata

    import cg3d.pipeline.chunks as chunks

    installed = importlib.metadata.version

    def upgraded(name: str):
        chunks.code_digest.cache_clear()  # read afresh, as by the next command
        return lambda distribution: "99.0" if distribution == name else installed(distribution)

    out = tmp_path / "out"
    output = ChunkedOutput(out, ".txt", "test", {"views": 1}, code="cg3d.render.stage")
    output.prepare()
    write_part(output, 0, ["a"])
    monkeypatch.setattr(importlib.metadata, "version", upgraded("rich"))
    ChunkedOutput(out, ".txt", "test", {"views": 1}, code="cg3d.render.stage").prepare()
    assert output.pending(2) == [1]  # kept
    monkeypatch.setattr(importlib.metadata, "version", upgraded("bpy"))
    ChunkedOutput(out, ".txt", "test", {"views": 1}, code="cg3d.render.stage").prepare()
    assert output.pending(2) == [0, 1]


def test_small_chunks_keep_the_plan_stable_under_additions(tmp_path):
    first = plan(tmp_path, [f"obj{i:02d}" for i in range(0, 20, 2)], chunk_size=1000, workers=4)
    grown = plan(tmp_path, [f"obj{i:02d}" for i in range(20)], chunk_size=1000, workers=4)
    assert {k: grown[k] for k in first} == first  # every chunk kept as it was
    added = [grown[k] for k in sorted(set(grown) - set(first))]
    assert [len(members) for members in added] == [3, 3, 3, 1]  # the 10 new ones, spread
    assert sorted(i for members in added for i in members) == [
        f"obj{i:02d}" for i in range(1, 20, 2)
    ]


def test_atomic_path_leaves_nothing_when_the_block_fails(tmp_path):
    target = tmp_path / "part-00000.txt"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"
    assert list(tmp_path.iterdir()) == [target]


def test_prepare_keeps_parts_of_the_same_plan_and_clears_another(tmp_path, locked):
    out = tmp_path / "out"
    output = ChunkedOutput(out, ".txt", "test", {"points": 1})
    output.prepare()
    write_part(output, 0, ["a", "b_odd"])
    (out / "notes.md").write_text("not ours")
    (out / ".part-00001.txt.999.tmp").write_text("left by a killed run")

    ChunkedOutput(out, ".txt", "test", {"points": 1}).prepare()
    assert output.part(0).is_file()
    assert not (out / ".part-00001.txt.999.tmp").exists()
    assert output.pending(3) == [1, 2]

    ChunkedOutput(out, ".txt", "test", {"points": 2}).prepare()
    assert not output.part(0).exists()
    assert not output.failure_part(0).exists()
    assert (out / "notes.md").read_text() == "not ours"
    assert output.pending(3) == [0, 1, 2]


def test_a_folder_of_another_stage_is_refused_and_its_files_kept(tmp_path, locked):
    """Before: another plan's parts were cleared whatever stage wrote them, so `cg3d index
    --out data/points` removed the sampled points (both write part-*.parquet), and `cg3d pack
    --out data/points` replaced the points' .plan.json and failures.parquet."""
    from cg3d.pipeline.pack import prepare_output

    points = tmp_path / "points"
    sampled = ChunkedOutput(points, ".parquet", "sample", {"stage": "sample", "points": 64})
    sampled.prepare()
    write_part(sampled, 0, ["a", "b"])
    sampled.finalize(1)
    before = {p: p.read_bytes() for p in points.rglob("*") if p.is_file()}
    with pytest.raises(UsageError) as error:
        ChunkedOutput(points, ".parquet", "index", {"stage": "index"}).prepare()
    assert str(error.value) == (
        f"--out: {points} holds the output of `cg3d sample`; `cg3d index` would replace its "
        "files: choose another folder"
    )
    with pytest.raises(UsageError, match="holds the output of `cg3d sample`; `cg3d pack`"):
        prepare_output(points, {"stage": "pack"})
    assert {p: p.read_bytes() for p in points.rglob("*") if p.is_file()} == before
    # a folder without a plan is known by the file its command writes
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"")
    with pytest.raises(UsageError, match="holds the output of `cg3d train`; `cg3d sample`"):
        ChunkedOutput(tmp_path / "run", ".parquet", "sample", {"stage": "sample"}).prepare()
    # and an evaluation's by the files beside its metrics.json (the one owner rule: a stage
    # into runs/eval/zeroshot added its parts to the results, a DVC output)
    (tmp_path / "zeroshot").mkdir()
    for name in ("metrics.json", "about.json", "predictions.csv"):
        (tmp_path / "zeroshot" / name).write_text("{}\n")
    with pytest.raises(UsageError, match="output of `cg3d eval zeroshot`; `cg3d sample`"):
        ChunkedOutput(tmp_path / "zeroshot", ".parquet", "sample", {"stage": "sample"}).prepare()
    assert sorted(p.name for p in (tmp_path / "zeroshot").iterdir()) == [
        "about.json",
        "metrics.json",
        "predictions.csv",
    ]
    # its own folder, a new one and one of other files are the stage's to write
    ChunkedOutput(points, ".parquet", "sample", {"stage": "sample", "points": 64}).prepare()
    (tmp_path / "mine" / "notes").mkdir(parents=True)
    ChunkedOutput(tmp_path / "mine", ".parquet", "index", {"stage": "index"}).prepare()


def test_finalize_merges_chunk_failures_with_the_stage_name(tmp_path, locked):
    output = ChunkedOutput(tmp_path, ".txt", "sample")
    output.prepare()
    write_part(output, 1, ["z_odd", "y"])
    write_part(output, 0, ["c_odd", "a_odd"])
    rows = output.finalize(2)
    assert [r["id"] for r in rows] == ["a_odd", "c_odd", "z_odd"]
    assert read_failures(tmp_path / FAILURES_NAME) == [
        {"id": i, "stage": "sample", "reason": "bad: odd"} for i in ("a_odd", "c_odd", "z_odd")
    ]


@pytest.mark.parametrize("workers", [1, 2])
def test_run_chunks_runs_every_job_in_process_or_in_a_pool(tmp_path, locked, workers):
    output = ChunkedOutput(tmp_path, ".txt", "test")
    output.prepare()
    chunks = split_into_chunks([f"item{i}" for i in range(10)], 3)
    jobs = [(output, i, chunk) for i, chunk in enumerate(chunks)]
    done = run_chunks(write_part, jobs, [len(c) for c in chunks], workers=workers)
    assert done == 10
    assert output.pending(len(chunks)) == []
    assert output.part(3).read_text() == "item9"


def test_a_stage_writes_a_plain_line_each_tenth_to_a_log_file(tmp_path, locked, capsys):
    """On a log file (a batch job's output, no terminal) rich's bar wrote nothing until the
    stage ended: a 2,000-object sample stage's log was its final bar and summary alone."""
    output = ChunkedOutput(tmp_path, ".txt", "test")
    output.prepare()
    jobs = [(output, i, [f"item{i}"]) for i in range(20)]
    run_chunks(write_part, jobs, [1] * 20, workers=1, description="testing")
    out = capsys.readouterr().out
    *logged, bar = out.splitlines()
    assert [line.split(") ")[0] for line in logged] == [
        f"testing: {2 * k}/20 ({10 * k}%" for k in range(1, 10)
    ]
    assert bar.startswith("testing ") and "20/20" in bar and "\r" not in out


@pytest.mark.parametrize("items, shown", [(1, []), (3, ["testing: 1/3 (33%", "testing: 2/3 (66%"])])
def test_a_small_stage_logs_the_share_done_not_the_tenth_passed(
    tmp_path, locked, capsys, items, shown
):
    """A line said `2/6 (30%)` (the tenth passed) in a 3-object render's log."""
    output = ChunkedOutput(tmp_path, ".txt", "test")
    output.prepare()
    jobs = [(output, i, [f"item{i}"]) for i in range(items)]
    run_chunks(write_part, jobs, [1] * items, workers=1, description="testing")
    *logged, bar = capsys.readouterr().out.splitlines()
    assert [line.split(")")[0] for line in logged] == shown
    assert bar.startswith("testing ") and f"{items}/{items}" in bar


def test_run_chunks_stops_on_a_failing_chunk_and_keeps_finished_parts(tmp_path, locked):
    output = ChunkedOutput(tmp_path, ".txt", "test")
    output.prepare()
    jobs = [(output, 0, ["a"]), (output, 1, None), (output, 2, ["c"])]
    with pytest.raises(TypeError):
        run_chunks(write_part, jobs, [1, 1, 1], workers=1)
    assert output.part(0).is_file()
    assert output.pending(3) == [1, 2]
    assert not any(p.name.endswith(".tmp") for p in Path(tmp_path).rglob("*"))


def test_run_chunks_rejects_an_unknown_executor(tmp_path):
    with pytest.raises(ValueError, match="executor"):
        run_chunks(write_part, [], [], workers=1, executor="dask")


def test_prepare_refuses_to_run_without_the_folder_lock(tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("unlocked")
    with pytest.raises(RuntimeError, match="output_lock"):
        ChunkedOutput(elsewhere / "out", ".txt", "test").prepare()
    with output_lock(elsewhere):  # a lock on a folder above counts (the meshes stage's parts)
        ChunkedOutput(elsewhere / "out", ".txt", "test").prepare()


def test_a_second_lock_on_the_folder_fails_at_once_naming_it(tmp_path, locked):
    # flock locks belong to open files, so a second open in this process conflicts like
    # another process would; the `locked` fixture holds tmp_path's lock.
    with pytest.raises(UsageError, match="another run") as error, output_lock(tmp_path):
        pass
    assert str(tmp_path) in str(error.value) and "\n" not in str(error.value)


def test_the_lock_file_goes_when_the_run_ends_and_the_folder_is_free_again(tmp_path_factory):
    folder = tmp_path_factory.mktemp("free")

    @locks_out_dir
    def stage(out_dir: Path, fail: bool) -> None:
        assert (out_dir / LOCK_NAME).is_file()
        if fail:
            raise ValueError("a failed run")

    with pytest.raises(ValueError):
        stage(folder, fail=True)
    assert not (folder / LOCK_NAME).exists()
    stage(out_dir=folder, fail=False)
    stage(folder, False)
    assert list(folder.iterdir()) == []


def test_a_lock_file_left_by_a_killed_run_does_not_block(tmp_path_factory):
    folder = tmp_path_factory.mktemp("killed")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from cg3d.files import output_lock\n"
            f"with output_lock({str(folder)!r}):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UsageError, match="another run"), output_lock(folder):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (folder / LOCK_NAME).is_file()  # a kill -9 cannot clean up: the file stays
    with output_lock(folder):  # but its flock died with the process
        pass
    assert not (folder / LOCK_NAME).exists()


# Issue 18: what resume skips is checked whole; a folder that cannot be written, or a disk
# that fills, ends in one line naming the path, leaving no partial part.


def cut(path: Path, size: int | None = None) -> None:
    """Cut a file short: to `size` bytes, or to half."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2 if size is None else size])


def test_pending_recomputes_a_part_or_failure_table_cut_short_and_keeps_whole_ones(
    tmp_path, locked
):
    output = ChunkedOutput(tmp_path, ".parquet", "sample", {"points": 4})
    output.prepare()
    for index in range(4):
        output.write_chunk_failures(index, [{"id": f"f{index}", "reason": "bad: x"}])
        write_points_part(output.part(index), [f"o{index}"], [np.zeros((4, 3))])
    cut(output.part(1))
    cut(output.failure_part(2))
    assert output.pending(4) == [1, 2]
    assert [path for path, _ in output.damaged] == [output.part(1), output.failure_part(2)]
    assert not output.part(1).exists() and not output.part(2).exists()
    assert output.pending(4) == [1, 2]  # still to do, not reported twice
    assert len(output.damaged) == 2


@pytest.mark.timeout(60)
@pytest.mark.parametrize("suffix", [".parquet", ".tar"])
def test_pending_recomputes_a_part_that_is_a_fifo_without_opening_it(tmp_path, locked, suffix):
    """Before: the resume check opened it and blocked forever (a `cg3d sample` rerun hung)."""
    output = ChunkedOutput(tmp_path, suffix, "sample", {"points": 4})
    output.prepare()
    for index in range(2):
        if suffix == ".parquet":
            write_points_part(output.part(index), [f"o{index}"], [np.zeros((4, 3))])
        else:
            write_tar(output.part(index), {f"o{index}.view_00.png": b"x"})
    output.part(1).unlink()
    os.mkfifo(output.part(1))
    assert output.pending(2) == [1]
    assert output.damaged == [(output.part(1), "is a FIFO, not a file")]
    assert not output.part(1).exists()  # dropped, to be written again


@pytest.mark.timeout(60)
def test_a_plan_file_that_is_a_fifo_is_one_line_not_a_hang(tmp_path, locked):
    """Before: reading the previous plan (and the folder's owner) opened it and blocked for
    ever, so `cg3d sample --out` such a folder hung."""
    os.mkfifo(tmp_path / ".plan.json")
    with pytest.raises(UsageError, match=r"\.plan\.json is a FIFO, not a file"):
        ChunkedOutput(tmp_path, ".parquet", "sample", {"points": 4}).prepare()


@pytest.mark.parametrize("damage", ["halved", "other columns"])
def test_a_damaged_chunk_table_means_a_fresh_plan(tmp_path, damage):
    """chunks.parquet is the stage's own plan: a damaged one is planned afresh, not a
    traceback; the parts it described are recomputed (only it knew their members)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = [f"obj{i:02d}" for i in range(6)]
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    write_manifest([MeshRecord(i, "test", f"{i}.obj", "thing", "train") for i in ids], meshes)
    output = ChunkedOutput(tmp_path / "out", ".txt", "test")
    table = output.out_dir / "chunks.parquet"

    def plan_now():
        with output_lock(output.out_dir):
            output.prepare()
            return plan_chunks(lambda columns: manifest_tables(meshes, columns), output, 2, 1)

    first = plan_now()
    for chunk in first.chunks:
        write_part(output, chunk, [])
    if damage == "halved":
        cut(table)
    else:
        pq.write_table(pa.table({"id": ids}), table)
    again = plan_now()
    assert [path for path, _ in output.damaged] == [table]
    assert again.recomputed == first.chunks == [0, 1, 2]
    assert output.chunks_on_disk() == set()
    assert again.members.equals(first.members)
    assert pq.read_table(table).equals(first.members)  # the fresh plan, written whole


def test_pending_recomputes_a_tar_part_cut_on_a_block_boundary(tmp_path, locked):
    output = ChunkedOutput(tmp_path, ".tar", "render", {"views": 1})
    output.prepare()
    for index in range(2):
        write_tar(output.part(index), {"a.view_00.png": b"x" * 600, "b.view_00.png": b"y"})
    cut(output.part(0), 2048)  # a's header and data: a stop between members, no end blocks
    assert output.pending(2) == [0]


def test_sample_recomputes_a_halved_part_instead_of_counting_it_done(tmp_path):
    """The issue's case: `cg3d sample` said "1 already done" and kept the broken part."""
    from cg3d.params import SampleConfig
    from cg3d.pipeline.sample import sample_points
    from tests.pipeline.meshes import SMALL, make_meshes, shapes

    meshes_dir = make_meshes(tmp_path, shapes(4))
    config = SampleConfig(**SMALL, chunk_size=2)
    out = tmp_path / "points"
    sample_points(meshes_dir, out, config)
    part = out / "part-00001.parquet"
    whole = part.read_bytes()
    cut(part)
    summary = sample_points(meshes_dir, out, config)
    assert summary.chunks_run == 1 and summary.sampled == 4
    assert part.read_bytes() == whole


@pytest.mark.parametrize("damage", ["halved", "block_boundary", "record"])
def test_pack_rewrites_a_damaged_shard_instead_of_counting_it_done(tmp_path, damage):
    from cg3d.formats.shards import shard_path, shard_record_path
    from cg3d.params import PackConfig
    from cg3d.pipeline.pack import pack_shards
    from tests.pipeline.fakes import fake_pipeline

    fake_pipeline(tmp_path, per_class=4, shard_size=3)
    shard = shard_path(tmp_path / "shards", "train", 1)
    whole = shard.read_bytes()
    if damage == "halved":
        cut(shard)
    elif damage == "block_boundary":
        cut(shard, 1024)
    else:
        cut(shard_record_path(tmp_path / "shards", "train", 1))
    dirs = [tmp_path / name for name in ("meshes", "points", "renders", "captions", "shards")]
    summary = pack_shards(*dirs, PackConfig(shard_size=3))
    assert summary.shards_written == 1
    assert shard.read_bytes() == whole


def test_a_failed_write_names_the_file_asked_for_and_leaves_nothing(tmp_path):
    from cg3d.files import os_error_line

    target = tmp_path / "part-00000.parquet"
    with pytest.raises(OSError) as caught, atomic_path(target) as tmp:
        tmp.write_bytes(b"half a part")
        # what pyarrow raises on a full disk: an errno, no file name
        raise OSError(errno.ENOSPC, "Error writing bytes to file. [errno 28] No space left")
    assert caught.value.filename == str(target) and caught.value.errno == errno.ENOSPC
    assert os_error_line(caught.value) == f"{target}: No space left on device (ENOSPC)"
    assert list(tmp_path.iterdir()) == []


def test_an_error_about_another_file_keeps_its_name(tmp_path):
    with pytest.raises(FileNotFoundError) as caught, atomic_path(tmp_path / "out.txt"):
        (tmp_path / "input.txt").read_text()
    assert caught.value.filename == str(tmp_path / "input.txt")


def test_atomic_files_change_all_or_none_of_a_set(tmp_path):
    """`atomic_files`: a block that fails, or leaves one of its files unwritten, changes none of
    the set; a staging folder a killed writer left is removed; a block that writes all of them
    replaces all, leaving nothing else behind."""
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("old")
    (tmp_path / f"{STAGE_PREFIX}999999.tmp").mkdir()  # a killed writer's: never committed
    names = ["a.txt", "b.txt"]
    with pytest.raises(RuntimeError), atomic_files(tmp_path, names) as paths:
        paths["a.txt"].write_text("new")
        raise RuntimeError("killed")
    with pytest.raises(FileNotFoundError) as caught, atomic_files(tmp_path, names) as paths:
        paths["a.txt"].write_text("new")
    assert caught.value.filename == str(tmp_path / "b.txt")  # the file the set lacked
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"a.txt": "old", "b.txt": "old"}
    with atomic_files(tmp_path, names) as paths:
        for path in paths.values():
            path.write_text("new")
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"a.txt": "new", "b.txt": "new"}


def test_an_output_folder_under_a_file_is_one_line_before_any_work(tmp_path):
    from cg3d.files import check_out_dir

    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match=r"^--out: .*file.*(not a folder|Not a directory)"):
        check_out_dir(tmp_path / "file")
    with pytest.raises(UsageError, match=r"^--out: cannot write into .*: Not a directory$"):
        check_out_dir(tmp_path / "file" / "out")


def test_a_read_only_output_folder_is_one_line_before_any_work(tmp_path):
    from tests.pipeline.meshes import make_meshes, shapes

    meshes_dir = make_meshes(tmp_path, shapes(1))
    with mounted(tmp_path / "ro", "ro,size=64k") as read_only:
        result = cg3d("sample", "--meshes", meshes_dir, "--out", read_only / "points")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: --out: cannot write into {read_only / 'points'}: Read-only file system"
    ]


def test_a_full_disk_is_one_line_and_leaves_no_partial_part(tmp_path):
    from cg3d.formats.intact import part_problem
    from tests.pipeline.meshes import make_meshes, shapes

    meshes_dir = make_meshes(tmp_path, shapes(4))
    with mounted(tmp_path / "disk", "size=128k") as disk:
        out = disk / "points"
        args = ["--points", 8192, "--chunk-size", 1, "--workers", 1]
        result = cg3d("sample", "--meshes", meshes_dir, "--out", out, *args)
        left = sorted(path.name for path in out.rglob("*"))
        whole = [part_problem(path) for path in out.glob("part-*.parquet")]
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {out}/") and line.endswith("No space left on device (ENOSPC)")
    assert not [name for name in left if name.endswith(".tmp")]
    assert whole == [None] * len(whole) and len(whole) < 4


@pytest.mark.parametrize(
    "command",
    [
        ["meshes", "--source", "synthetic"],
        ["sample", "--meshes", "{missing}"],
        ["render", "--meshes", "{missing}"],
        ["caption", "--meshes", "{missing}"],
        ["pack", "--meshes", "{missing}", "--points", "{missing}"]
        + ["--renders", "{missing}", "--captions", "{missing}"],
        ["index", "--checkpoint", "{missing}", "--shards", "{missing}"],
        ["eval", "zeroshot", "--checkpoint", "{missing}", "--shards", "{missing}"],
        ["eval", "retrieval", "--checkpoint", "{missing}", "--shards", "{missing}"],
        ["finetune", "--checkpoint", "{missing}", "--shards", "{missing}"],
        ["scene-query", "{missing}", "--text", "a chair", "--checkpoint", "{missing}"],
        ["audit", "--train", "{missing}", "--test", "{missing}"],
    ],
    ids=lambda command: "-".join(command[:2]) if command[0] == "eval" else command[0],
)
def test_every_stage_checks_its_output_folder_before_any_work(tmp_path, command):
    """A folder that cannot be written is one line naming --out, before inputs are read (or a
    checkpoint loaded): eval, finetune and audit failed only after all the work."""
    from typer.testing import CliRunner

    from cg3d.cli import app

    (tmp_path / "file").write_text("")
    args = [arg.replace("{missing}", str(tmp_path / "missing")) for arg in command]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "file" / "out")])
    assert isinstance(result.exception, UsageError), result.output
    assert str(result.exception).startswith(f"--out: cannot write into {tmp_path / 'file'}")


def test_export_checks_its_output_folder_before_loading_the_checkpoint(tmp_path):
    from typer.testing import CliRunner

    from cg3d.cli import app

    (tmp_path / "file").write_text("")
    args = ["export", "--checkpoint", str(tmp_path / "missing.pt")]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "file" / "model.pt")])
    assert isinstance(result.exception, UsageError), result.output
    assert str(result.exception) == f"--out: {tmp_path / 'file'} is a file, not a folder"


@pytest.mark.parametrize(
    ("folder", "file", "stage"),
    [
        ("points", "part-00000.parquet", "sample"),
        ("meshes", "manifest.parquet", "meshes"),
        ("captions", "captions.parquet", "caption"),
        ("renders", "part-00000.tar", "render"),
    ],
)
def test_pack_on_a_damaged_input_is_one_line_naming_it_and_its_stage(tmp_path, folder, file, stage):
    """Never `ArrowInvalid: Parquet magic bytes not found` (issue 18)."""
    from typer.testing import CliRunner

    from cg3d.cli import app
    from tests.pipeline.fakes import fake_pipeline

    fake_pipeline(tmp_path, per_class=2, shard_size=3)
    damaged = tmp_path / folder / file
    cut(damaged)
    args = ["pack", "--out", str(tmp_path / "repacked")]
    for name in ("meshes", "points", "renders", "captions"):
        args += [f"--{name}", str(tmp_path / name)]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, UsageError), result.output
    message = str(result.exception)
    assert str(damaged) in message and f"rerun `cg3d {stage}`" in message and "\n" not in message


# Runs `cg3d sample` as a child of a process that adopts orphans (a child subreaper, as an
# init or a container runtime is): any process the stage leaves behind becomes its child.
LEFT_BEHIND = """
import ctypes, subprocess, sys
import psutil
PR_SET_CHILD_SUBREAPER = 36
assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
stage = subprocess.run([sys.executable, "-m", "cg3d", *sys.argv[1:]], capture_output=True)
assert stage.returncode == 0, stage.stderr.decode()[-2000:]
print([child.pid for child in psutil.Process().children()])
"""


def test_the_sample_stage_leaves_no_process_behind(tmp_path):
    import trimesh

    from tests.pipeline.meshes import make_meshes

    shapes = {f"box{i}": trimesh.creation.box([1.0, 1.0 + i, 2.0]) for i in range(4)}
    meshes_dir = make_meshes(tmp_path, shapes)
    command = ["sample", "--meshes", str(meshes_dir), "--out", str(tmp_path / "points")]
    options = ["--workers", "2", "--chunk-size", "1", "--points", "64"]
    run = subprocess.run(
        [sys.executable, "-c", LEFT_BEHIND, *command, *options],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"  # a pool's resource tracker used to outlive the stage


def test_a_stages_failures_are_summed_up_by_kind_most_first():
    """One `summarize` for the reports of sample, render and pack (each spelt the counts
    itself): a reason's kind is the part before its ":", in brackets, most first."""
    rows = [
        {"reason": "too_big: 3 GB", "stage": "meshes"},
        {"reason": "no_faces: empty", "stage": "sample"},
        {"reason": "too_big: 2 GB", "stage": "sample"},
    ]
    assert summarize(rows) == " (too_big 2, no_faces 1)"
    assert summarize(rows, "stage") == " (sample 2, meshes 1)"
    assert summarize([]) == ""

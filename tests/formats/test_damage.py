"""Damaged files (issue 18 §2): cut short, badly named, garbage. Nothing is lost without a
count, one bad object is one skip with its real cause, and a damaged file read by a later
stage is one line naming it and the stage that rebuilds it."""

import io
import subprocess
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cg3d.errors import UsageError
from cg3d.formats.captions import CAPTIONS_NAME, CaptionsFile, captions_writer
from cg3d.formats.failures import read_failures, write_failures
from cg3d.formats.manifest import (
    MANIFEST_NAME,
    MeshRecord,
    manifest_rows,
    manifest_size,
    read_manifest,
    write_manifest,
)
from cg3d.formats.points import PointsLookup, read_points_part, write_points_part
from cg3d.formats.retrieval import OBJECT_COLUMNS, read_arrays
from cg3d.formats.shards import (
    SHARD_PATTERN,
    Skipped,
    iter_samples,
    npy_bytes,
    raw_samples,
    sample_members,
    split_entry_of,
    write_index,
    write_shard,
)
from cg3d.formats.tar import FormatError, tar_members, tar_samples, write_tar
from tests.descriptors import mapped_under, open_under
from tests.pipeline.fakes import png_bytes, rewrite_tar
from tests.stopping import stopped_for

SAMPLES = 10


def shard_set(root, samples: int = SAMPLES):
    """One test shard of `samples` objects (ids o00, o01, …) and its index."""
    rng = np.random.default_rng(0)
    keys = [f"o{i:02d}" for i in range(samples)]

    def members(key):
        points = rng.normal(size=(16, 3)).astype(np.float32)
        views = {"view_00": png_bytes(int(key[1:]), size=8)}
        meta = {"id": key, "class_name": "chair", "channels": ["x", "y", "z"]}
        return sample_members(points, views, b"{}", [f"a {key}"], 0, meta)

    shard = root / "test" / SHARD_PATTERN.format(0)
    shard.parent.mkdir(parents=True)
    count, digest = write_shard(shard, ((key, members(key)) for key in keys))
    index = {"classes": ["chair"], "splits": {"test": split_entry_of("test", [count], [digest])}}
    write_index(root, index)
    return shard


def sample_starts(shard) -> list[int]:
    """The byte offset of each sample's first member header (tarfile's own reading)."""
    starts, last = [], None
    with tarfile.open(shard) as tar:
        for info in tar:
            key = info.name.partition(".")[0]
            if key != last:
                starts.append(info.offset)
                last = key
    return starts


def test_a_tar_cut_between_members_is_truncated_not_finished(tmp_path):
    path = tmp_path / "x.tar"
    write_tar(path, {"a.cls": b"0", "b.cls": b"1"})
    path.write_bytes(path.read_bytes()[:1024])  # header + data of a.cls: a clean-looking stop
    with open(path, "rb") as stream, pytest.raises(FormatError, match="end-of-archive"):
        list(tar_members(stream, read_data=False))
    from cg3d.formats.intact import part_problem  # new with the check

    assert "end-of-archive" in part_problem(path)


def test_a_shard_cut_on_a_block_boundary_counts_the_samples_it_lost(tmp_path):
    """The issue's case: 3 of 10 samples vanished from eval and index with no count."""
    shard = shard_set(tmp_path)
    cut = sample_starts(shard)[7]  # after 7 whole samples: a 512-byte boundary
    assert cut % 512 == 0
    shard.write_bytes(shard.read_bytes()[:cut])
    skipped = Skipped()
    keys = [sample["key"] for sample in iter_samples(tmp_path, "test", skipped)]
    assert keys == [f"o{i:02d}" for i in range(7)]  # the whole ones are kept
    assert skipped.total == 3
    (reason,) = skipped.reasons
    assert "end-of-archive" in reason


def test_a_shard_shorter_than_its_index_counts_the_difference(tmp_path):
    """A whole tar that holds fewer samples than index.json says (rewritten without them)."""
    shard = shard_set(tmp_path)
    rewrite_tar(shard, lambda name, data: None if name.startswith("o09.") else (name, data))
    skipped = Skipped()
    assert len(list(iter_samples(tmp_path, "test", skipped))) == 9
    assert skipped.total == 1
    assert "9 of the 10 samples" in next(iter(skipped.reasons))


@pytest.mark.parametrize("bad_name", ["o04captions", "o04", "o04captions.json"])
def test_one_bad_member_inside_a_sample_is_one_skip_naming_it(tmp_path, bad_name):
    """Main split the sample around it: 3 skips, two of them 'meta.json is missing'. A dotless
    name, or a name of another object, inside one sample is that one sample's fault."""
    shard = shard_set(tmp_path)
    rename = {"o04.captions.json": bad_name}
    rewrite_tar(shard, lambda name, data: (rename.get(name, name), data))
    skipped = Skipped()
    keys = [sample["key"] for sample in iter_samples(tmp_path, "test", skipped)]
    assert "o04" not in keys and len(keys) == SAMPLES - 1
    assert skipped.total == 1
    (reason,) = skipped.reasons
    assert repr(bad_name) in reason and "inside sample o04" in reason


def test_two_badly_named_members_between_samples_are_each_one_skip(tmp_path):
    path = tmp_path / "x.tar"
    members = {"a.cls": b"0", "a.meta.json": b"{}", "b.cls": b"1"}
    with tarfile.open(path, "w") as tar:  # the order written, not sorted
        for name, data in [*members.items(), ("junk", b"?"), ("more", b"?"), ("c.cls", b"2")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with open(path, "rb") as stream:
        samples = list(tar_samples(stream))
    assert [s["__key__"] for s in samples] == ["a", "b", "junk", "more", "c"]
    assert [("__error__" in s) for s in samples] == [False, False, True, True, False]
    assert samples[0] == {"__key__": "a", "cls": b"0", "meta.json": b"{}"}


@pytest.mark.parametrize(
    ("data", "cause"),
    [
        (b"\x00garbage, not an array" * 4, "not an .npy array"),
        (b"", "empty"),
        (None, "holds <U3 values, not numbers"),  # a string-dtype .npy
    ],
    ids=["garbage", "empty", "strings"],
)
def test_a_bad_points_npy_names_its_real_cause_not_pickle(tmp_path, data, cause):
    if data is None:
        buffer = io.BytesIO()
        np.save(buffer, np.array([["abc"] * 3] * 4))
        data = buffer.getvalue()
    shard = shard_set(tmp_path)
    rewrite_tar(shard, lambda name, old: (name, data) if name == "o03.points.npy" else (name, old))
    skipped = Skipped()
    assert len(list(iter_samples(tmp_path, "test", skipped))) == SAMPLES - 1
    (reason,) = skipped.reasons
    assert reason.startswith("points.npy does not decode") and cause in reason
    assert "pickle" not in reason


def cut_in_half(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_a_damaged_manifest_is_one_line_naming_it_and_the_meshes_stage(tmp_path):
    write_manifest(
        [MeshRecord(f"m{i}", "folder", f"{i}.obj", "chair", "train") for i in range(9)], tmp_path
    )
    cut_in_half(tmp_path / MANIFEST_NAME)
    for read in (read_manifest, manifest_size, lambda d: list(manifest_rows(d))):
        with pytest.raises(UsageError) as caught:
            read(tmp_path)
        message = str(caught.value)
        assert str(tmp_path / MANIFEST_NAME) in message and "`cg3d meshes`" in message
        assert "\n" not in message


def test_a_damaged_parquet_files_error_keeps_the_file_closed(tmp_path):
    """The error of a damaged table kept pyarrow's as its `__context__` (`raise ... from None`
    in the `except` only hides it), whose traceback held the file pyarrow had opened: open for
    as long as the error lived (a notebook's last error, a list of failures kept)."""
    write_manifest([MeshRecord("m", "folder", "m.obj", "chair", "train")], tmp_path)
    with captions_writer(tmp_path) as captions:
        captions.write(["m"], [["a chair"]])
    cut_in_half(tmp_path / MANIFEST_NAME)
    cut_in_half(tmp_path / CAPTIONS_NAME)
    errors = []
    for read in (read_manifest, manifest_size, CaptionsFile, read_manifest):
        with pytest.raises(UsageError) as caught:
            read(tmp_path)
        errors.append(caught.value)  # kept, as a caller keeps an error it reports later
    assert open_under(tmp_path) == []


def test_damaged_points_captions_and_failures_name_the_stage_that_rebuilds_them(tmp_path):
    part = tmp_path / "points" / "part-00000.parquet"
    part.parent.mkdir()
    write_points_part(part, ["a", "b"], [np.zeros((4, 3)), np.ones((4, 3))])
    with captions_writer(tmp_path) as captions:
        captions.write(["a"], [["a chair"]])
    failures = tmp_path / "failures.parquet"
    write_failures([{"id": "a", "stage": "render", "reason": "x"}], failures)
    for path in (part, tmp_path / CAPTIONS_NAME, failures):
        cut_in_half(path)
    cases = [
        (lambda: PointsLookup(part.parent), "`cg3d sample`"),
        (lambda: list(read_points_part(part)), "`cg3d sample`"),
        (lambda: CaptionsFile(tmp_path), "`cg3d caption`"),
        (lambda: read_failures(failures, "render"), "`cg3d render`"),
    ]
    for read, stage in cases:
        with pytest.raises(UsageError, match=stage):
            read()


def test_a_shard_cut_short_and_zero_filled_says_so_in_every_reader(tmp_path):
    """A copy cut short into a preallocated file, its zeros from sample o05 on: before, it read
    as a whole tar that stops where the zeros start ("short shard (it holds 5 of the 10
    samples…)"; cut inside o05, verify said "o05: member meta.json is missing"), the cause
    unnamed."""
    from cg3d.formats.intact import part_problem
    from cg3d.pipeline.verify import verify_shards

    shard = shard_set(tmp_path)
    whole = shard.read_bytes()
    stop = sample_starts(shard)[5]
    shard.write_bytes(whole[:stop] + bytes(len(whole) - stop))
    line = (
        f"truncated and zero-filled: its members stop at byte {stop} and {len(whole) - stop} "
        "zero bytes follow (a tar's end is at most 10240 bytes), as a copy cut short into a "
        "preallocated file leaves"
    )
    skipped = Skipped()
    keys = [sample["key"] for sample in iter_samples(tmp_path, "test", skipped)]
    assert keys == [f"o{i:02d}" for i in range(5)]
    assert skipped.reasons == {f"unreadable shard (FormatError: {line})": 5}
    assert part_problem(shard) == line  # the pack stage's resume rebuilds it
    problems = verify_shards(tmp_path).problems
    assert f"{shard.relative_to(tmp_path)}: unreadable tar (FormatError: {line})" in problems


def test_tars_whole_with_their_writers_end_padding_pass(tmp_path):
    """No false "zero-filled": a tar's end blocks and record padding (tarfile's and GNU
    tar's, up to 10240 bytes in all) are a whole tar's, however few its members."""
    import subprocess

    from cg3d.formats.intact import part_problem

    (tmp_path / "a.cls").write_bytes(b"0")
    gnu = tmp_path / "gnu.tar"
    subprocess.run(["tar", "-cf", gnu, "-C", tmp_path, "a.cls"], check=True)
    python = tmp_path / "python.tar"
    with tarfile.open(python, "w") as tar:
        tar.add(tmp_path / "a.cls", "a.cls")
    for path in (gnu, python):
        assert path.stat().st_size == 10240  # one member: a record, almost all zeros
        assert part_problem(path) is None
        with open(path, "rb") as stream:
            assert [name for name, _ in tar_members(stream)] == ["a.cls"]


@pytest.mark.parametrize("blocking", [64, 2048])
def test_a_whole_tar_padded_to_a_larger_record_passes(tmp_path, blocking):
    """`tar -b N` pads a tar's end to a record of N blocks (tapes, disks: 64 is 32 KiB, 2048
    1 MiB): whole, yet more zeros than tarfile's 10240 bytes follow its end block, and it was
    refused as "truncated and zero-filled"."""
    from cg3d.formats.intact import part_problem

    (tmp_path / "a.cls").write_bytes(b"0" * 3000)
    path = tmp_path / "blocked.tar"
    subprocess.run(["tar", "-b", str(blocking), "-cf", path, "-C", tmp_path, "a.cls"], check=True)
    assert path.stat().st_size == blocking * 512  # the member and its end: one record
    assert part_problem(path) is None
    with open(path, "rb") as stream:
        assert [name for name, _ in tar_members(stream)] == ["a.cls"]


def test_whole_parts_pass_the_check(tmp_path):
    from cg3d.formats.intact import part_problem

    part = tmp_path / "part-00000.parquet"
    write_points_part(part, ["a"], [np.zeros((4, 3))])
    tar = tmp_path / "part-00000.tar"
    write_tar(tar, {"a.view_00.png": png_bytes(0, 8)})
    assert part_problem(part) is None and part_problem(tar) is None


def test_a_server_that_stops_sending_fails_the_shard_after_the_timeout(tmp_path):
    """Issue 18 §3: a server that stalls (not closing) hung training forever."""
    import threading
    import time

    from tests.formats.server import serve

    shard = shard_set(tmp_path)
    name = "test/" + SHARD_PATTERN.format(0)
    skipped, read = Skipped(), []
    stall = sample_starts(shard)[3] + 512  # 3 samples, then the header of the 4th

    def reading(url: str) -> None:
        for raw in raw_samples(url, [name], [SAMPLES], [0], skipped, timeout=1.0):
            read.append(raw["__key__"])

    with serve(tmp_path, stall_after=stall) as url:
        start = time.monotonic()
        thread = threading.Thread(target=reading, args=(url,), daemon=True)
        thread.start()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the reader still waits on the stalled server"
    assert time.monotonic() - start < 20
    assert read == ["o00", "o01", "o02"] and skipped.total == SAMPLES - 3
    (reason,) = skipped.reasons
    assert reason == "unreadable shard (TimeoutError: no data for 1 s (the source stopped sending))"


def test_a_pipe_that_stops_sending_fails_the_shard_after_the_timeout(tmp_path):
    import time

    shard = shard_set(tmp_path)
    skipped = Skipped()
    # the name goes where `{}` is; `sleep` holds the pipe open, sending nothing
    command = f"pipe:head -c {sample_starts(shard)[3] + 512} {shard}; sleep 30; echo {{}}"
    start = time.monotonic()
    read = list(raw_samples(command, ["x"], [SAMPLES], [0], skipped, timeout=1.0))
    assert time.monotonic() - start < 20
    assert len(read) == 3 and skipped.total == SAMPLES - 3
    assert "TimeoutError" in next(iter(skipped.reasons))


# Reads the shard command argv[1] under a 3 s timeout; prints the samples read and skipped.
# argv[2] "handled": SIGCHLD has a Python handler, as in every loader worker that torch starts
# after its first loader put one in the main process (the held-out loader's workers).
PAUSED_READER = """
import signal, sys
from cg3d.formats.shards import Skipped, raw_samples
if sys.argv[2] == "handled":
    signal.signal(signal.SIGCHLD, lambda *_: None)
skipped = Skipped()
read = list(raw_samples(sys.argv[1], ["x"], [10], [0], skipped, timeout=3.0))
print(len(read), skipped.total, *skipped.reasons)
"""


@pytest.mark.parametrize("sigchld", ["default", "handled"])
def test_a_reader_stopped_with_its_pipe_past_the_timeout_reads_on(tmp_path, sigchld):
    """Ctrl-Z then `fg`, a Slurm suspend (SIGSTOP to the job's every process, later SIGCONT):
    the pause is no stall of the source. One select for the whole timeout held this only
    while no handled signal came: with SIGCHLD handled (torch's handler, inherited by a
    later loader's workers), the pipe command's going on interrupted it, Python's retry
    counted the pause, and the shard was skipped with a TimeoutError."""
    import os
    import signal
    import sys
    import time
    from pathlib import Path

    shard = shard_set(tmp_path)
    started = tmp_path / "started"
    # sends nothing for 1 s, then the shard; `{}` (the name) goes in a shell comment
    command = f"pipe:touch {started}; sleep 1; cat {shard} #{{}}"
    repo = Path(__file__).resolve().parents[2]
    reader = subprocess.Popen(
        [sys.executable, "-c", PAUSED_READER, command, sigchld],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a job's
    )
    try:
        for _ in range(600):
            if started.exists() or reader.poll() is not None:
                break
            time.sleep(0.05)
        stopped_for(5, reader.pid)  # the reader and its pipe, as Slurm does
        out, _ = reader.communicate(timeout=60)
    finally:
        if reader.poll() is None:
            os.killpg(reader.pid, signal.SIGKILL)
            reader.wait()
    assert out.split() == [str(SAMPLES), "0"]


# Reads the shard command argv[1] with every descriptor below 1100 taken, as in a process with
# many open files (a loader's workers, Blender pipes, shards; the limit raised to 65536 by
# `params.open_files_raised`); prints the number of the pipe's descriptor, samples read, skipped.
MANY_FILES_READER = """
import os, resource, sys
from cg3d.formats.shards import Skipped, raw_samples
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
skipped = Skipped()
read = list(raw_samples(sys.argv[1], ["x"], [10], [0], skipped, timeout=30.0))
print(os.open(os.devnull, os.O_RDONLY) > 1024, len(read), skipped.total, *skipped.reasons)
"""


def test_a_pipe_read_by_a_process_with_many_open_files_reads_whole(tmp_path):
    """CI: with 1,024 descriptors open, the pipe's descriptor was past select()'s range and
    every shard and index through curl or a pipe was "damaged (ValueError: filedescriptor out
    of range in select())"."""
    import os
    import resource
    import sys
    from pathlib import Path

    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < 1200:
        pytest.skip("the hard limit of open files is under 1200")
    shard = shard_set(tmp_path)
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", MANY_FILES_READER, f"pipe:cat {shard} #{{}}"],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.stdout.split() == ["True", str(SAMPLES), "0"], out.stderr


@pytest.mark.parametrize(
    ("member", "data", "cause"),
    [
        ("points.npy", npy_bytes(np.full((4, 3), np.nan)), "NaN or infinite"),
        ("meta.json", b"[1, 2]", "a JSON list, not an object"),
        ("captions.json", b'{"a": 1}', "not a list of strings"),
    ],
    ids=["nan_points", "meta_list", "captions_dict"],
)
def test_a_member_of_the_wrong_kind_is_one_skip_naming_it(tmp_path, member, data, cause):
    shard = shard_set(tmp_path)
    target = f"o05.{member}"
    rewrite_tar(shard, lambda name, old: (name, data if name == target else old))
    skipped = Skipped()
    assert len(list(iter_samples(tmp_path, "test", skipped))) == SAMPLES - 1
    (reason,) = skipped.reasons
    assert reason.startswith(f"{member} does not decode") and cause in reason


def test_a_member_that_appears_twice_is_one_skip(tmp_path):
    path = tmp_path / "x.tar"
    with tarfile.open(path, "w") as tar:
        for name in ("a.cls", "a.cls", "b.cls"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"1"))
    with open(path, "rb") as stream:
        first, second = tar_samples(stream)
    assert first["__error__"] == "member 'a.cls' appears twice in sample a"
    assert "__error__" not in second


def test_a_damaged_plan_record_index_or_class_list_is_no_traceback(tmp_path):
    from cg3d.files import output_lock
    from cg3d.formats.manifest import CLASSES_NAME, read_classes, write_classes
    from cg3d.formats.shards import INDEX_NAME, read_index
    from cg3d.pipeline.chunks import PLAN_NAME, ChunkedOutput

    shard_set(tmp_path)
    cut_in_half(tmp_path / INDEX_NAME)
    with pytest.raises(UsageError, match=r"index\.json is damaged .*rerun `cg3d pack`"):
        read_index(tmp_path)
    write_classes(["chair", "table"], tmp_path)
    cut_in_half(tmp_path / CLASSES_NAME)
    with pytest.raises(UsageError, match=r"classes\.json is damaged .*rerun `cg3d meshes`"):
        read_classes(tmp_path)
    out = tmp_path / "points"
    with output_lock(out):
        ChunkedOutput(out, ".parquet", "sample", {"points": 1}).prepare()
        write_points_part(out / "part-00000.parquet", ["a"], [np.zeros((2, 3))])
        cut_in_half(out / PLAN_NAME)
        ChunkedOutput(out, ".parquet", "sample", {"points": 1}).prepare()  # a plan unknown
    assert not (out / "part-00000.parquet").exists()


@pytest.mark.timeout(120)  # before: every reader's open() of the FIFO blocked for ever
def test_a_fifo_where_a_shard_should_be_is_skipped_by_every_reader(tmp_path):
    import os

    from cg3d.formats.shards import check_shards
    from cg3d.pipeline.verify import verify_shards

    shard = shard_set(tmp_path)
    shard.unlink()
    os.mkfifo(shard)
    skipped = Skipped()
    assert list(iter_samples(tmp_path, "test", skipped)) == []
    assert skipped.reasons == {
        f"unreadable shard (UsageError: {shard}: not a regular file)": SAMPLES
    }
    with pytest.raises(UsageError, match=f"^{shard}: not a regular file$"):
        check_shards(tmp_path, "test")  # train's check before it starts
    assert verify_shards(tmp_path).problems == [
        "test/shard-000000.tar: is a FIFO, not a file"  # was "missing"
    ]


@pytest.mark.parametrize(
    ("kind", "named"),
    [
        (tarfile.SYMTYPE, "a symbolic link"),
        (tarfile.LNKTYPE, "a hard link"),
        (tarfile.CHRTYPE, "a character device"),
        (tarfile.BLKTYPE, "a block device"),
        (tarfile.DIRTYPE, "a folder"),
        (tarfile.FIFOTYPE, "a FIFO"),
    ],
)
def test_a_member_that_is_a_link_or_device_is_named_not_dropped(tmp_path, kind, named):
    """Before: a view member that was a symlink to /etc/passwd (or a hard link, a device, a
    folder, a FIFO) was skipped without a word: the sample decoded with one view less, and
    `cg3d verify` said "ok"."""
    shard = shard_set(tmp_path)
    with open(shard, "rb") as stream:
        members = list(tar_members(stream))
    with tarfile.open(shard, "w") as tar:  # tarfile writes the special member as asked
        for name, data in members:
            info = tarfile.TarInfo(name)
            if name == "o05.view_00.png":
                info.type, info.linkname = kind, "/etc/passwd"
                data = b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    skipped = Skipped()
    read = list(iter_samples(tmp_path, "test", skipped))
    assert [sample["meta"]["id"] for sample in read] == ["o00", "o01", "o02", "o03", "o04"]
    assert skipped.total == SAMPLES - 5  # o05, whose member is named, and those after it
    reason = " ".join(skipped.reasons)
    assert (
        f"tar member 'o05.view_00.png{'/' * (kind == tarfile.DIRTYPE)}' is {named}, not a file"
        in reason
    )


@pytest.mark.parametrize("length", [300, 5000])
def test_an_index_naming_a_shard_too_long_for_a_name_is_skipped_naming_it_once(tmp_path, length):
    """A shard name over NAME_MAX (or a path over PATH_MAX): every sample skipped, the reason
    the system's words. Before: the reason repeated the path in the OSError's text, a warning
    line of 10,000 characters for a name of 5,000."""
    import json

    shard_set(tmp_path)
    index = json.loads((tmp_path / "index.json").read_text())
    index["splits"]["test"]["shards"] = [f"test/{'x' * length}.tar"]
    (tmp_path / "index.json").write_text(json.dumps(index))
    skipped = Skipped()
    assert list(iter_samples(tmp_path, "test", skipped)) == []
    assert skipped.reasons == {"unreadable shard (OSError: File name too long)": SAMPLES}


def test_a_damaged_index_files_error_keeps_no_array_mapped(tmp_path):
    """An index whose views.npy disagrees with retrieval.json: the error's traceback held the
    frames that had memory-mapped points.npy and views.npy, mapped for as long as a notebook
    kept the error of `open_index`."""
    pq.write_table(
        pa.table({name: ["x", "y"] for name in OBJECT_COLUMNS}), tmp_path / "objects.parquet"
    )
    np.save(tmp_path / "points.npy", np.eye(2, 4, dtype=np.float32))
    np.save(tmp_path / "views.npy", np.eye(3, 4, dtype=np.float32))  # 2 rows were written
    np.save(tmp_path / "view_object.npy", np.arange(2, dtype=np.int64))
    with pytest.raises(UsageError, match="views.npy") as caught:
        read_arrays(tmp_path, {"objects": 2, "views": 2, "dim": 4})
    error = caught.value  # kept, as a notebook keeps its last error
    assert mapped_under(tmp_path) == [] and open_under(tmp_path) == []
    assert "damaged index file" in str(error)

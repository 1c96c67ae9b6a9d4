"""Data roots on shared cluster file systems (NFS, Lustre, GPFS, BeeGFS), simulated here by
monkeypatching the system calls (no such file system exists on a test machine): a disk that
takes no file locks, the `.nfsXXXX` files an NFS client keeps of a file removed while open, and
a network disk's errors (ESTALE, ETIMEDOUT) while a stage reads an object or writes a file."""

import errno
import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cg3d import files
from cg3d.errors import UsageError
from cg3d.files import (
    STAGE_PREFIX,
    atomic_files,
    atomic_path,
    file_lock,
    is_condition,
    make_live_folder,
    os_error_line,
    output_lock,
    remove_dead_folders,
    remove_live_folder,
)
from cg3d.formats.failures import read_failures
from cg3d.formats.manifest import read_manifest
from cg3d.formats.owner import check_owner, claim
from cg3d.geometry.meshio import MeshError
from cg3d.params import SampleConfig
from cg3d.pipeline import sample, sources
from cg3d.pipeline.sample import sample_points
from cg3d.pipeline.sources import MeshesConfig, build_manifest
from tests.pipeline.disks import stage_files
from tests.pipeline.meshes import SMALL, make_meshes, shapes
from tests.pipeline.sources.helpers import box, write_mesh

NO_LOCKS = [errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL]


def refuse_locks(monkeypatch, code: int) -> None:
    def flock(fd, operation):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(fcntl, "flock", flock)


@pytest.mark.parametrize("code", NO_LOCKS)
def test_an_output_folder_on_a_disk_without_locks_is_refused_in_one_line(
    tmp_path, monkeypatch, code
):
    refuse_locks(monkeypatch, code)
    out = tmp_path / "new" / "out"
    with pytest.raises(UsageError) as raised, output_lock(out):
        pytest.fail("the block ran without the lock")
    line = str(raised.value)
    assert f"--out: {out}: its file system takes no file locks" in line
    assert errno.errorcode[code] in line and "\n" not in line
    assert not (tmp_path / "new").exists()  # a refused run leaves nothing behind

    refused = f"--out: {tmp_path / 'out.npy'}: its file system"
    with pytest.raises(UsageError, match=refused), file_lock(tmp_path / "out.npy"):
        pytest.fail("the block ran without the lock")
    assert os.listdir(tmp_path) == []  # the lock file it made is gone too


def write_mountinfo(path: Path, mounts: list[tuple[str, str, str]]) -> Path:
    """A /proc/self/mountinfo of (mount point, its options, its file system's options)."""
    lines = [
        f"{i + 20} 1 0:{i} / {point.replace(' ', chr(92) + '040')} {options} - fs dev {super_}"
        for i, (point, options, super_) in enumerate(mounts)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_lock_that_holds_on_one_node_only_is_told_by_the_mount_that_holds_the_folder(tmp_path):
    """Lustre's localflock and NFS's local_lock make flock succeed on each node alone: the
    mount that holds the folder (the deepest, the last of equals) decides."""
    scratch, home = tmp_path / "lus tre", tmp_path / "lus tre" / "home"
    info = write_mountinfo(
        tmp_path / "mountinfo",
        [
            ("/", "rw", "rw"),
            (str(scratch), "rw,noatime", "rw,localflock,lazystatfs"),
            (str(home), "rw", "rw,vers=4.2,local_lock=none"),
        ],
    )
    assert files.node_local_lock_option(scratch / "data", info) == "localflock"
    assert files.node_local_lock_option(home / "data", info) is None
    assert files.node_local_lock_option(tmp_path / "lus", info) is None  # a prefix, not inside
    again = write_mountinfo(
        tmp_path / "again", [("/", "rw", "rw"), (str(home), "rw", "rw,local_lock=flock")]
    )
    assert files.node_local_lock_option(home / "data", again) == "local_lock=flock"
    assert files.node_local_lock_option(home, tmp_path / "missing") is None


def test_an_output_lock_on_a_node_local_mount_is_said_once(tmp_path, monkeypatch, caplog):
    out = (tmp_path / "out").resolve()
    info = write_mountinfo(
        tmp_path / "mountinfo", [("/", "rw", "rw"), (str(tmp_path), "rw", "rw,localflock")]
    )
    monkeypatch.setattr(files, "MOUNTINFO", info)
    monkeypatch.setattr(files, "_said_node_local", set())
    for _ in range(2):
        with output_lock(out):
            pass
    said = [r.getMessage() for r in caplog.records if "this node only" in r.getMessage()]
    assert len(said) == 1 and str(out) in said[0] and "localflock" in said[0]


def test_a_network_disks_error_on_the_lock_names_the_lock_file(tmp_path, monkeypatch):
    refuse_locks(monkeypatch, errno.ESTALE)
    with pytest.raises(OSError) as raised, output_lock(tmp_path / "out"):
        pytest.fail("the block ran without the lock")
    assert is_condition(raised.value)  # one line, no traceback
    assert os_error_line(raised.value) == (
        f"{tmp_path / 'out' / files.LOCK_NAME}: Stale file handle (ESTALE)"
    )


@pytest.mark.parametrize("code", NO_LOCKS)
def test_a_live_folder_on_a_disk_without_locks_lives_and_no_sweep_removes_it(
    tmp_path, monkeypatch, code
):
    refuse_locks(monkeypatch, code)
    folder, lock = make_live_folder("cg3d-x-", tmp_path)
    assert (folder / files.LIVE_LOCK).is_file()
    remove_dead_folders(tmp_path, "cg3d-x-")  # another run's sweep cannot tell: it keeps it
    assert folder.is_dir()
    remove_live_folder(folder, lock)
    assert not folder.exists()


def nfs_keeps_busy(monkeypatch) -> list[str]:
    """Make the removal of an `.nfs…` file fail EBUSY, as an NFS client does while the removed
    file it stands for is open; return the names refused."""
    real_unlink = os.unlink
    refused = []

    def unlink(path, *args, **kwargs):
        if os.path.basename(path).startswith(".nfs"):
            refused.append(os.path.basename(path))
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), path)
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    return refused


def test_the_meshes_stage_ends_well_when_nfs_keeps_a_file_of_its_work_folder(tmp_path, monkeypatch):
    root, out = tmp_path / "root", tmp_path / "out"
    write_mesh(root / "chair" / "a.obj", box((1, 2, 1)))
    write_mesh(root / "table" / "b.obj", box((2, 1, 1)))
    refused = nfs_keeps_busy(monkeypatch)
    real_merge = sources.merge_parts

    def merge_then_a_reader_holds_a_file(parts, work, *args, **kwargs):
        # merge_parts removes its `work` at its start (errors ignored) and at its end
        work.mkdir(parents=True, exist_ok=True)
        (work / ".nfs000000000123abcd00000002").write_bytes(b"a sorted run still open")
        result = real_merge(parts, work, *args, **kwargs)
        (work.parent / ".nfs000000000123abcd00000001").write_bytes(b"a part still open")
        return result

    monkeypatch.setattr(sources, "merge_parts", merge_then_a_reader_holds_a_file)
    config = MeshesConfig(source="folder", root=str(root), workers=1)
    summary = build_manifest(config, out)
    assert summary.counts == {"ok": 2}
    assert len(refused) >= 2  # the removals did meet the busy files
    assert [r.status for r in read_manifest(out)] == ["ok", "ok"]
    build_manifest(config, out)  # a rerun into the folder, the files still there


def test_an_nfs_leftover_does_not_make_a_claimed_folder_look_used(tmp_path):
    out = tmp_path / "out"
    claim(out, "eval zeroshot")
    (out / ".nfs00000000000a1b2c00000003").write_bytes(b"metrics.json, removed while open")
    check_owner(out, "finetune")  # `rm out/*` emptied it: nothing of zeroshot's to protect
    (out / "metrics.json").write_text("{}")
    with pytest.raises(UsageError, match="holds the output of `cg3d eval zeroshot`"):
        check_owner(out, "finetune")


def test_remove_tree_raises_any_other_error(tmp_path, monkeypatch):
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "part.parquet").write_bytes(b"x")
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if os.path.basename(path) == "part.parquet":
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(PermissionError):
        files.remove_tree(folder)


@pytest.mark.parametrize("code", [errno.ESTALE, errno.ETIMEDOUT])
def test_a_network_disks_error_reading_an_object_stops_sampling_and_a_rerun_resumes(
    tmp_path, monkeypatch, code
):
    meshes_dir = make_meshes(tmp_path, shapes(4))
    config = SampleConfig(**SMALL, chunk_size=1)
    sample_points(meshes_dir, tmp_path / "whole", config)

    real_read = sample.PointsReader.__call__
    calls = []

    def stale_from_the_third(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) >= 3:  # the reader's own words, its OSError as the cause
            cause = OSError(code, os.strerror(code), str(path))
            raise MeshError("unreadable", f"cannot open the file: {cause.strerror}") from cause
        return real_read(self, path, *args, **kwargs)

    monkeypatch.setattr(sample.PointsReader, "__call__", stale_from_the_third)
    out = tmp_path / "points"
    with pytest.raises(OSError) as raised:
        sample_points(meshes_dir, out, config)
    assert raised.value.errno == code and raised.value.filename == str(calls[2])
    assert is_condition(raised.value)
    assert len(calls) == 3  # it stopped there
    failure_parts = sorted((out / "_failures").glob("*.parquet"))
    assert [read_failures(part, "sample") for part in failure_parts] == [[], []]  # no row

    monkeypatch.setattr(sample.PointsReader, "__call__", real_read)
    summary = sample_points(meshes_dir, out, config)
    assert (summary.chunks_run, summary.chunks_total) == (2, 4)
    assert stage_files(out) == stage_files(tmp_path / "whole")


def test_a_network_disks_error_hashing_a_mesh_stops_the_meshes_stage(tmp_path, monkeypatch):
    root, out = tmp_path / "root", tmp_path / "out"
    write_mesh(root / "chair" / "a.obj", box((1, 2, 1)))
    real_hash = sources.file_sha256

    def stale(path):
        raise OSError(errno.ESTALE, os.strerror(errno.ESTALE), str(path))

    monkeypatch.setattr(sources, "file_sha256", stale)
    config = MeshesConfig(source="folder", root=str(root), workers=1)
    with pytest.raises(OSError) as raised:
        build_manifest(config, out)
    assert raised.value.errno == errno.ESTALE  # not an "unreadable" row kept for good
    assert not (out / "manifest.parquet").exists()
    monkeypatch.setattr(sources, "file_sha256", real_hash)
    assert build_manifest(config, out).counts == {"ok": 1}


@pytest.mark.parametrize("code", [errno.ESTALE, errno.EIO, errno.ETIMEDOUT])
@pytest.mark.parametrize("step", ["write", "rename"])
def test_a_network_disks_error_mid_write_names_the_file_and_leaves_no_temp(
    tmp_path, monkeypatch, code, step
):
    target = tmp_path / "metrics.json"
    target.write_text('{"old": 1}')
    real_replace = os.replace

    def replace(source, destination, *args, **kwargs):
        if step == "rename":
            raise OSError(code, os.strerror(code), str(source), None, str(destination))
        return real_replace(source, destination, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError) as raised, atomic_path(target) as tmp:
        tmp.write_text('{"new": 1}')
        if step == "write":
            raise OSError(code, os.strerror(code))  # a write to an open handle: no name
    assert raised.value.errno == code and is_condition(raised.value)
    assert os_error_line(raised.value).startswith(f"{target}: ")
    assert os.listdir(tmp_path) == ["metrics.json"]  # no temp file left
    assert target.read_text() == '{"old": 1}'  # the previous file, never half of the new


def test_a_network_disks_error_with_no_file_named_is_one_line():
    assert is_condition(OSError(errno.ESTALE, os.strerror(errno.ESTALE)))


def test_a_set_of_files_is_written_beside_folders_nfs_keeps(tmp_path, monkeypatch):
    """`atomic_files`: a killed writer's staging folder NFS keeps (a file in it was open), even
    one named after this process (pids are reused), and a commit folder holding an `.nfs…`
    file: the set is written whole, the leftovers left where they are."""
    refused = nfs_keeps_busy(monkeypatch)
    kept = tmp_path / f"{STAGE_PREFIX}{os.getpid()}.tmp"
    kept.mkdir()
    (kept / ".nfs0000000000000a0100000001").write_bytes(b"a staged file still open")
    names = ["a.txt", "b.txt"]
    with atomic_files(tmp_path, names) as paths:
        for path in paths.values():
            path.write_text("one")
    commit = tmp_path / files.COMMIT_NAME
    commit.mkdir()  # a commit a kill cut short: one file renamed in, one still there
    (commit / "b.txt").write_text("two")
    (commit / ".nfs0000000000000a0100000002").write_bytes(b"a committed file still open")
    with atomic_files(tmp_path, names) as paths:
        for path in paths.values():
            path.write_text("three")
    assert (tmp_path / "a.txt").read_text() == (tmp_path / "b.txt").read_text() == "three"
    assert refused  # the leftovers were met, and left
    assert not list(tmp_path.glob(".nfs*"))  # never moved among the set's files


def test_dvc_hashes_no_nfs_leftover_of_an_output():
    """A `.nfs…` file in a stage's output folder (a part removed while a reader held it) is no
    output: DVC hashing it changed the output's hash, and removing it (a checkout) failed."""
    root = Path(__file__).resolve().parents[1]
    names = ["data/points/.nfs000000000123abcd00000001", "data/points/part-00000.parquet"]
    run = subprocess.run(
        [sys.executable, "-m", "dvc", "check-ignore", *names],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert run.stdout.split() == names[:1]


def test_clip_weights_rewritten_in_place_within_the_mtime_step_are_hashed_again(tmp_path):
    """A file rewritten in place at the same size, its mtime the same (a 1 s or 2 s mtime step
    on a network disk, or set back by `rsync -t`): its identity is the new bytes' hash."""
    from cg3d.models.clip import weights_identity

    weights = tmp_path / "vit.pt"
    weights.write_bytes(b"a" * 64)
    before = os.stat(weights)
    first = weights_identity(str(weights))["sha256"]
    with open(weights, "r+b") as file:
        file.write(b"b" * 64)
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert weights_identity(str(weights))["sha256"] == files.file_sha256(weights) != first

"""A full disk mid-stage, then a rerun once there is room (issue t70b): the stage stops at the
first write refused (one error naming the file, never a failure row per object: the disk is
not the objects' fault), and the rerun resumes to the very bytes of a run that never failed.
The disk is simulated where the stage reads each object (no mount needed), and once for real
on a small tmpfs (root only; skipped elsewhere)."""

import errno
import os
import shutil

import pytest

from cg3d.formats.failures import read_failures
from cg3d.params import SampleConfig
from cg3d.pipeline import sample
from cg3d.pipeline.sample import sample_points
from tests.pipeline.disks import cg3d, mounted, stage_files
from tests.pipeline.meshes import SMALL, make_meshes, shapes


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS])
def test_a_full_disk_stops_the_stage_and_a_rerun_gives_an_uninterrupted_runs_bytes(
    tmp_path, monkeypatch, code
):
    meshes_dir = make_meshes(tmp_path, shapes(4))
    config = SampleConfig(**SMALL, chunk_size=1)
    sample_points(meshes_dir, tmp_path / "whole", config)

    real_read = sample.PointsReader.__call__
    calls = []

    def full_from_the_third(self, path, *args, **kwargs):
        calls.append(path)
        if len(calls) >= 3:  # the scratch copy of the third object finds the disk full
            raise OSError(code, os.strerror(code), str(tmp_path / "copy.obj"))
        return real_read(self, path, *args, **kwargs)

    monkeypatch.setattr(sample.PointsReader, "__call__", full_from_the_third)
    out = tmp_path / "points"
    with pytest.raises(OSError) as raised:
        sample_points(meshes_dir, out, config)
    assert raised.value.errno == code
    assert raised.value.filename == str(tmp_path / "copy.obj")
    assert len(calls) == 3  # it stopped there: the fourth object was never tried
    # no object was blamed for the disk: the failure tables written hold no row
    failure_parts = sorted((out / "_failures").glob("*.parquet"))
    assert len(failure_parts) == 2
    assert [read_failures(part, "sample") for part in failure_parts] == [[], []]
    assert not (out / "failures.parquet").exists()  # not a finished run

    monkeypatch.setattr(sample.PointsReader, "__call__", real_read)
    summary = sample_points(meshes_dir, out, config)
    assert (summary.chunks_run, summary.chunks_total) == (2, 4)  # the two it had not written
    assert stage_files(out) == stage_files(tmp_path / "whole")


def test_a_real_full_disk_then_room_resumes_to_the_same_bytes(tmp_path):
    meshes_dir = make_meshes(tmp_path, shapes(4))
    args = ["--points", 2048, "--chunk-size", 1, "--workers", 1]  # parts of 24 KiB
    whole = tmp_path / "whole"
    assert cg3d("sample", "--meshes", meshes_dir, "--out", whole, *args).returncode == 0
    with mounted(tmp_path / "disk", "size=64k") as disk:
        result = cg3d("sample", "--meshes", meshes_dir, "--out", disk / "points", *args)
        # room again: the folder moved to a disk that has it, as a user would copy it
        shutil.copytree(disk / "points", tmp_path / "points", symlinks=True)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.endswith("No space left on device (ENOSPC)"), line
    parts_before = sorted(path.name for path in (tmp_path / "points").glob("part-*"))
    assert 0 < len(parts_before) < 4  # it failed mid-stage, with some parts written
    resumed = cg3d("sample", "--meshes", meshes_dir, "--out", tmp_path / "points", *args)
    assert resumed.returncode == 0, resumed.stderr
    assert stage_files(tmp_path / "points") == stage_files(whole)


def test_a_ray_tasks_full_disk_is_its_own_os_error():
    """Ray hands back a task's exception wrapped: an instance that passes for an OSError but has
    no errno nor file name, and whose text is the remote traceback (the stage's "one line" was
    that whole traceback). `raise_task_cause` raises the task's own exception."""
    from cg3d.files import os_error_line
    from cg3d.pipeline.chunks import raise_task_cause

    RayTaskError = pytest.importorskip("ray.exceptions").RayTaskError  # noqa: N806
    cause = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/out/part-00003.parquet")
    wrapped = RayTaskError("_on_node", "Traceback ...\nOSError: ...", cause).as_instanceof_cause()
    assert isinstance(wrapped, OSError) and wrapped.errno is None  # what main() was given
    with pytest.raises(OSError) as raised:
        raise_task_cause(wrapped)
    assert (
        os_error_line(raised.value) == "/out/part-00003.parquet: No space left on device (ENOSPC)"
    )


@pytest.mark.slow  # starts a local Ray
def test_the_ray_executor_on_a_full_disk_is_one_line(tmp_path):
    pytest.importorskip("ray")
    meshes_dir = make_meshes(tmp_path, shapes(4))
    args = ["--points", 2048, "--chunk-size", 1, "--workers", 2, "--executor", "ray"]
    with mounted(tmp_path / "disk", "size=64k") as disk:
        result = cg3d("sample", "--meshes", meshes_dir, "--out", disk / "points", *args)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].endswith("No space left on device (ENOSPC)"), errors
    assert "Traceback" not in result.stderr and "Unhandled error" not in result.stderr


@pytest.mark.slow  # starts a local Ray twice
def test_a_failed_ray_stage_stops_its_tasks_by_leaving_its_ray_never_by_cancel(monkeypatch):
    """CI's flake of the test above: Ray aborted the driver ("task_manager.cc: Check failed:
    Tried to complete task that was not pending") when the stage's `ray.cancel` of the other
    chunks met one's reply (ray-project/ray#54738; four tasks failing together, the rest
    cancelled at the first error, hit it within seconds of rounds). A failed stage leaves the
    Ray it started instead, which ends its tasks; a Ray the program started itself is left
    up."""
    ray = pytest.importorskip("ray")
    from cg3d.pipeline.chunks import run_chunks

    cancelled = []
    monkeypatch.setattr(ray, "cancel", lambda ref, **kwargs: cancelled.append(ref))
    jobs = [(f"/nonexistent/part-{i}",) for i in range(6)]  # os.stat: FileNotFoundError each
    try:
        with pytest.raises(FileNotFoundError):
            run_chunks(os.stat, jobs, [1] * 6, workers=2, executor="ray")
        assert cancelled == []
        assert not ray.is_initialized()  # the stage's own Ray: shut down with its tasks

        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        with pytest.raises(FileNotFoundError):
            run_chunks(os.stat, jobs, [1] * 6, workers=2, executor="ray")
        assert cancelled == []
        assert ray.is_initialized()  # the program's own Ray stays up
    finally:
        ray.shutdown()


def test_a_refused_write_whose_errno_is_in_its_message_only_keeps_that_errno():
    """The render worker's reply on a refused write names the errno found: one in the message
    only (pyarrow's "[errno 122]", Rust's "(os error 30)") was reported as ENOSPC, "No space
    left on device", for a quota or a read-only disk too."""
    from cg3d.files import os_error_line, out_of_room

    quota = OSError("write /out/part-00001.parquet failed: [errno 122] Disk quota exceeded")
    read_only = OSError("I/O error: Read-only file system (os error 30)")
    assert out_of_room(quota) == errno.EDQUOT
    assert out_of_room(read_only) == errno.EROFS
    assert out_of_room(OSError(errno.ENOSPC, "No space left on device")) == errno.ENOSPC
    assert out_of_room(OSError("not found [errno 2]")) is None  # not the disk's refusal
    assert out_of_room(ValueError("[errno 28]")) is None
    # the supervisor's line from the worker's errno (`BlenderWorker._ask_once`)
    line = os_error_line(OSError(out_of_room(quota), os.strerror(out_of_room(quota)), "/out/a"))
    assert line == "/out/a: Disk quota exceeded (EDQUOT)"


def test_rays_unhandled_error_reports_are_off_during_a_stages_ray_loop_only(monkeypatch):
    """A program calling a stage from Python keeps Ray's own behaviour after it: raising a
    task's cause left RAY_IGNORE_UNHANDLED_ERRORS set for the rest of the process."""
    from cg3d.pipeline.chunks import raise_task_cause, ray_echoes_quiet

    RayTaskError = pytest.importorskip("ray.exceptions").RayTaskError  # noqa: N806
    monkeypatch.delenv("RAY_IGNORE_UNHANDLED_ERRORS", raising=False)
    cause = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/out/part-00003.parquet")
    wrapped = RayTaskError("_on_node", "Traceback ...", cause).as_instanceof_cause()
    with pytest.raises(OSError), ray_echoes_quiet():
        assert os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] == "1"  # the echoes of this error
        raise_task_cause(wrapped)
    assert "RAY_IGNORE_UNHANDLED_ERRORS" not in os.environ
    monkeypatch.setenv("RAY_IGNORE_UNHANDLED_ERRORS", "yes")  # the user's own choice stays
    with ray_echoes_quiet():
        pass
    assert os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] == "yes"

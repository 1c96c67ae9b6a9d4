"""A chunked stage with pool workers (`cg3d sample --workers 2`) stopped by SIGTERM, SIGHUP or
SIGUSR1 mid-work, as `kill PID`, `scancel`, a dropped ssh session or `sbatch --signal` stop it: one line, exit 128 + the
signal's number, no process left behind, no lock or temp file left, and a rerun that ends in
the bytes of a run never stopped.

Before: the process died where it stood (exit -15, nothing of ours printed), its pool workers
and resource tracker were orphaned, the tracker warned of 5 leaked semaphores, and the folder
kept its .cg3d.lock."""

import resource
import signal
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
import trimesh

from tests.pipeline.meshes import make_meshes
from tests.stopping import stop_command, tree_bytes

OBJECTS = 24
OPTIONS = ["--workers", "2", "--chunk-size", "1", "--points", "20000"]


@pytest.fixture(scope="module")
def meshes(tmp_path_factory):
    root = tmp_path_factory.mktemp("meshes")
    spheres = {f"s{i:02d}": trimesh.creation.icosphere(3, 1.0 + i / 100) for i in range(OBJECTS)}
    return make_meshes(root, spheres)


def sample(meshes, out) -> list[str]:
    return ["sample", "--meshes", str(meshes), "--out", str(out), *OPTIONS]


@pytest.fixture(scope="module")
def unbroken(meshes, tmp_path_factory):
    out = tmp_path_factory.mktemp("unbroken") / "points"
    cg3d = [sys.executable, "-m", "cg3d", *sample(meshes, out)]
    subprocess.run(cg3d, check=True, capture_output=True, timeout=600)
    return tree_bytes(out)


@pytest.mark.parametrize(
    "signum,whom,line",
    [
        (signal.SIGTERM, "process", "error: terminated (SIGTERM)"),  # kill PID, docker stop
        (signal.SIGTERM, "group", "error: terminated (SIGTERM)"),  # scancel, a time limit
        (signal.SIGHUP, "group", "error: terminated (SIGHUP)"),  # a dropped ssh session
        # Slurm's `sbatch --signal=USR1@90`, ahead of a time limit: it killed the command where
        # it stood (-10, nothing printed), the .cg3d.lock, a part's temp file and the workers
        # left (and a group's USR1 killed the resource tracker too)
        (signal.SIGUSR1, "group", "error: terminated (SIGUSR1)"),
        (signal.SIGUSR2, "process", "error: terminated (SIGUSR2)"),
    ],
    ids=["sigterm-process", "sigterm-group", "sighup-group", "sigusr1-group", "sigusr2-process"],
)
def test_a_stopped_sample_stage_cleans_up_and_resumes_to_the_same_bytes(
    meshes, unbroken, tmp_path, signum, whom, line
):
    out = tmp_path / "points"
    # two chunks written: the pool is up and the others are being worked on
    stopped = stop_command(sample(meshes, out), out / "part-00001.parquet", signum, whom)
    assert stopped.signalled, f"it ended before the signal:\n{stopped.stderr[-2000:]}"
    assert stopped.code == 128 + signum, stopped.stderr[-2000:]
    assert stopped.last_line == line
    assert "Traceback" not in stopped.stderr and "leaked" not in stopped.stderr
    assert stopped.left == []  # no pool worker, no resource tracker
    hidden = {path.name for path in out.iterdir() if path.name.startswith(".")}
    assert hidden <= {".plan.json", ".code.json"}  # no .cg3d.lock, no part's temp file
    assert len(list(out.glob("part-*.parquet"))) < OBJECTS

    rerun = subprocess.run(
        [sys.executable, "-m", "cg3d", *sample(meshes, out)], capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "0 already done" not in rerun.stderr  # it resumed: the finished chunks were kept
    assert tree_bytes(out) == unbroken


@pytest.mark.slow  # starts a local Ray
def test_a_ray_stage_stopped_by_sigterm_is_one_line_and_leaves_no_ray(meshes, unbroken, tmp_path):
    """`kill PID` of a stage on the Ray executor, chunks in flight. Before: Ray's driver had put
    its crash handler on SIGTERM ("*** SIGTERM received", then abort: exit -6), so no cleanup
    ran and no line of ours was printed; now cg3d's stop handler runs, as with the pool."""
    pytest.importorskip("ray")
    out = tmp_path / "points"
    command = [*sample(meshes, out), "--executor", "ray"]
    stopped = stop_command(command, out / "part-00001.parquet", signal.SIGTERM, "process")
    assert stopped.signalled, f"it ended before the signal:\n{stopped.stderr[-2000:]}"
    assert stopped.code == 128 + signal.SIGTERM, stopped.stderr[-2000:]
    assert stopped.last_line == "error: terminated (SIGTERM)"
    assert "SIGTERM received" not in stopped.stderr and "Traceback" not in stopped.stderr
    # no raylet, GCS or Ray worker still running: those the shutdown orphaned as it ended have
    # ended too (a zombie the subreaper had not reaped yet)
    assert [process for process in stopped.left if " zombie " not in process] == []
    hidden = {path.name for path in out.iterdir() if path.name.startswith(".")}
    # no .cg3d.lock; a part a Ray worker was writing when its Ray shut down may leave its temp
    # file, which the rerun removes (its bytes below hold none)
    assert {name for name in hidden if not name.endswith(".tmp")} <= {".plan.json", ".code.json"}

    rerun = subprocess.run([sys.executable, "-m", "cg3d", *command], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert tree_bytes(out) == unbroken


def test_a_sample_stage_at_the_soft_cpu_time_limit_stops_cleanly_and_resumes(meshes, tmp_path):
    """`ulimit -S -t` below the hard limit: the kernel sends SIGXCPU, which killed the command
    where it stood (Python's default: exit -24, nothing printed, the folder's .cg3d.lock and a
    part's temp file left). Now a stop like SIGTERM's, and a rerun resumes: every object once."""
    out = tmp_path / "points"
    command = [sys.executable, "-m", "cg3d", "sample", "--meshes", str(meshes), "--out", str(out)]
    command += ["--workers", "1", "--chunk-size", "1", "--points", "50000"]
    limited = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        # in the process itself (--workers 1): its imports take 1-3 CPU seconds, its objects 18
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CPU, (5, 600)),
    )
    assert limited.returncode == 128 + signal.SIGXCPU, limited.stderr[-2000:]
    line = limited.stderr.strip().splitlines()[-1]
    assert line.startswith("error: stopped at the CPU time limit") and "`ulimit -t`" in line
    assert "Traceback" not in limited.stderr
    hidden = {path.name for path in out.iterdir() if path.name.startswith(".")}
    assert hidden <= {".plan.json", ".code.json"}  # no .cg3d.lock, no part's temp file
    assert len(list(out.glob("part-*.parquet"))) < OBJECTS

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    parts = sorted(out.glob("part-*.parquet"))
    ids = [id for part in parts for id in pq.read_table(part, columns=["id"])["id"].to_pylist()]
    assert sorted(ids) == sorted(f"s{i:02d}" for i in range(OBJECTS))

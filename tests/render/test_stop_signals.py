"""`cg3d render` (two Blender workers) stopped by SIGTERM mid-work, sent to the command alone
(`kill PID`) or to every process of the job (`scancel`, a SLURM time limit: Blender gets it
too): one line, exit 143, no Blender left running, no temp folder left, and a rerun that ends
in the bytes of a run never stopped.

Before: the process died where it stood, its Blender workers were orphaned and their temp
folders left under .workers/; a Ctrl-C (which reaches Blender too) could also let a driving
thread take its killed Blender for a crash and write a failure row for the object."""

import signal
import subprocess
import sys

import pytest
import trimesh

from tests.pipeline.meshes import make_meshes
from tests.stopping import stop_command, tree_bytes

pytestmark = pytest.mark.blender

OBJECTS = 48  # 24 chunks: a stop sent at the second part lands mid-work even on a loaded machine
OPTIONS = ["--workers", "2", "--chunk-size", "2", "--views", "2", "--resolution", "32"]


@pytest.fixture(scope="module")
def meshes(tmp_path_factory):
    root = tmp_path_factory.mktemp("meshes")
    spheres = {f"s{i:02d}": trimesh.creation.icosphere(2, 1.0 + i / 100) for i in range(OBJECTS)}
    return make_meshes(root, spheres)


def render(meshes, out) -> list[str]:
    return ["render", "--meshes", str(meshes), "--out", str(out), "--engine", "workbench"] + (
        OPTIONS
    )


@pytest.fixture(scope="module")
def unbroken(meshes, tmp_path_factory):
    out = tmp_path_factory.mktemp("unbroken") / "views"
    cg3d = [sys.executable, "-m", "cg3d", *render(meshes, out)]
    subprocess.run(cg3d, check=True, capture_output=True, timeout=600)
    return tree_bytes(out)


@pytest.mark.parametrize(
    "signum,whom",
    [
        (signal.SIGTERM, "process"),
        (signal.SIGTERM, "group"),
        # `sbatch --signal=USR1@90`: Blender dies of it too, which is no crash of its object
        (signal.SIGUSR1, "group"),
    ],
    ids=["sigterm-process", "sigterm-group", "sigusr1-group"],
)
def test_a_stopped_render_stops_its_blenders_and_resumes_to_the_same_bytes(
    meshes, unbroken, tmp_path, signum, whom
):
    out = tmp_path / "views"
    stopped = stop_command(render(meshes, out), out / "part-00001.tar", signum, whom)
    assert stopped.signalled, f"it ended before the signal:\n{stopped.stderr[-2000:]}"
    assert stopped.code == 128 + signum, stopped.stderr[-2000:]
    assert stopped.last_line == f"error: terminated ({signal.Signals(signum).name})"
    assert "Traceback" not in stopped.stderr
    assert stopped.left == []  # no Blender orphaned
    assert not (out / ".cg3d.lock").exists()
    assert [path for path in (out / ".workers").rglob("*")] == []  # temp folders removed
    assert len(list(out.glob("part-*.tar"))) < OBJECTS // 2

    rerun = subprocess.run(
        [sys.executable, "-m", "cg3d", *render(meshes, out)], capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    # the same parts and failure tables: no object of a stopped chunk became a failure row
    assert tree_bytes(out) == unbroken


def test_a_blender_stopped_while_it_starts_renders_no_object(tmp_path, monkeypatch):
    """`stop` landing while a Blender starts (no process yet to kill) let it start and render
    the object whole, the stage waiting for it."""
    from cg3d.params import RenderConfig
    from cg3d.render.cameras import cameras_of
    from cg3d.render.supervisor import BlenderWorker, WorkerStopped
    from tests.render.helpers import write_meshes

    write_meshes(tmp_path / "meshes")
    config = RenderConfig(views=1, resolution=32)
    views = [cameras_of(config, "lshape")["views"][0]]
    start = BlenderWorker.start

    def stopped_then_started(worker):
        worker.stop()  # as the main thread does, before `start` has a process
        start(worker)

    monkeypatch.setattr(BlenderWorker, "start", stopped_then_started)
    with BlenderWorker(config.worker_settings(), timeout_s=60) as worker:
        with pytest.raises(WorkerStopped):
            worker.render("lshape", tmp_path / "meshes" / "lshape.obj", "y", views)
        assert worker.process is None  # killed, not left to run
        assert not list(worker.out_dir.glob("lshape*"))  # no view of the object


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1], ids=["sigterm", "sigusr1"])
def test_a_blender_killed_by_a_stop_signal_as_it_starts_is_a_stop(tmp_path, monkeypatch, signum):
    """One killed in its start-up by the group's signal was a "Blender did not start" crash,
    not a stop; Slurm's `--signal=USR1@90` reaches every process of the job, Blender too,
    which dies of it: a stop as well."""
    from cg3d.params import RenderConfig
    from cg3d.render.cameras import cameras_of
    from cg3d.render.supervisor import BlenderWorker, WorkerStopped
    from tests.render.helpers import write_meshes

    write_meshes(tmp_path / "meshes")
    config = RenderConfig(views=1, resolution=32)
    views = [cameras_of(config, "lshape")["views"][0]]
    start = BlenderWorker.start

    def killed_starting(worker):
        start(worker)  # (a start that fails is the one the signal kills)
        worker.process.send_signal(signum)
        worker.process.wait()
        worker._read(5, "start-up")  # what start's own read of the dead process raises

    monkeypatch.setattr(BlenderWorker, "start", killed_starting)
    with (
        BlenderWorker(config.worker_settings(), timeout_s=60) as worker,
        pytest.raises(WorkerStopped),
    ):
        worker.render("lshape", tmp_path / "meshes" / "lshape.obj", "y", views)

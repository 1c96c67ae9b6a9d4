"""Worker supervision: crashes and hangs stay with their object, kills resume, memory stays flat."""

import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from cg3d.formats.failures import read_failures
from cg3d.params import RenderConfig
from cg3d.render.cameras import cameras_of
from cg3d.render.stage import render_meshes
from cg3d.render.supervisor import BlenderWorker
from cg3d.render.worker import FAULTS_ENV
from tests.render.helpers import write_meshes

pytestmark = pytest.mark.blender


def tar_names(path):
    with tarfile.open(path) as tar:
        return tar.getnames()


def test_a_crash_and_a_hang_fail_only_their_objects(tmp_path, monkeypatch):
    # Test hook: the worker exits on "cylinder" and sleeps on "box" (see worker.FAULTS_ENV).
    monkeypatch.setenv(FAULTS_ENV, json.dumps({"cylinder": "crash", "box": "hang"}))
    write_meshes(tmp_path / "meshes")
    # The hang costs the whole timeout, but the good object after it gets a restarted Blender's
    # first render (its warm-up), which took over 5 s on a loaded CI machine
    config = RenderConfig(views=2, resolution=32, chunk_size=3, workers=1, timeout=20)
    summary = render_meshes(tmp_path / "meshes", tmp_path / "out", config)
    reasons = {r["id"]: r["reason"] for r in read_failures(tmp_path / "out" / "failures.parquet")}
    assert reasons["cylinder"].startswith("crash: Blender exited with code 3")
    assert reasons["box"].startswith("timeout")
    # Sorted ids: box (hangs), cone, cylinder (crashes); the good object between them is kept.
    assert summary.rendered == 2  # cone, and lshape in the next chunk
    assert "cone.view_01.png" in tar_names(tmp_path / "out" / "part-00000.tar")


def test_a_killed_run_resumes_with_the_missing_chunks_only(tmp_path):
    write_meshes(tmp_path / "meshes")
    out = tmp_path / "out"
    command = [
        sys.executable, "-m", "cg3d", "render", "--meshes", str(tmp_path / "meshes"),
        "--out", str(out), "--views", "1", "--resolution", "32", "--chunk-size", "1",
        "--workers", "1", "--timeout", "600",
    ]  # fmt: skip
    # Sorted ids: box, cone, cylinder, lshape; the last one hangs, so the run is killed mid-way.
    env = {**os.environ, FAULTS_ENV: json.dumps({"lshape": "hang"})}
    run = subprocess.Popen(command, env=env, start_new_session=True)
    deadline = time.monotonic() + 60
    while not (out / "part-00002.tar").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert sorted(p.name for p in out.glob("part-*.tar")) == [f"part-0000{i}.tar" for i in range(3)]
    # The killed Blender's temp folder is in the stage's folder (not /tmp, where no later run
    # could tell it from a live one), and the resumed run, holding the folder's lock, removes it.
    [left] = (out / ".workers").iterdir()
    assert left.name.startswith("cg3d-render-") and (left / "blender.log").exists()
    done = (out / "part-00000.tar").read_bytes()
    resumed = subprocess.run(command, capture_output=True, text=True, check=True)
    assert "1 of 4 chunks computed" in resumed.stdout
    assert not (out / ".workers").exists()
    assert (out / "part-00000.tar").read_bytes() == done
    assert tar_names(out / "part-00003.tar") == ["lshape.cameras.json", "lshape.view_00.png"]
    assert read_failures(out / "failures.parquet") == []


def test_a_killed_worker_leaves_nothing_in_tmpdir(tmp_path, monkeypatch):
    """Blender makes its own temp folder (`blender_XXXXXX`) at start-up, in TMPDIR: each
    worker killed (a timeout, its memory limit, the stage stopped) left one there for good."""
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(system_tmp))
    worker = BlenderWorker(RenderConfig().worker_settings(), 60.0, tmp_root=tmp_path / "scratch")
    worker.start()
    worker.kill()
    assert list(system_tmp.iterdir()) == []
    assert [p.name for p in worker.blender_tmp.iterdir() if p.name.startswith("blender_")]
    worker.close()
    assert list((tmp_path / "scratch").iterdir()) == []


@pytest.mark.slow
def test_worker_memory_stays_flat_over_many_objects(tmp_path):
    write_meshes(tmp_path / "meshes")
    config = RenderConfig(views=1, resolution=32)
    views = [cameras_of(config, "lshape")["views"][0]]
    rss = []
    with BlenderWorker(config.worker_settings(), timeout_s=60) as worker:
        for i in range(150):
            name = ("lshape.obj", "cylinder.glb", "box.ply", "cone.off")[i % 4]
            up = "z" if name.endswith("glb") else "y"
            assert worker.render("lshape", tmp_path / "meshes" / name, up, views) is None
            rss.append(worker.last_rss_mb)
    # Imports leave nothing behind: after warming up, memory grows by less than 10 MiB.
    assert rss[-1] - rss[30] < 10, rss[::10]


@pytest.mark.slow
def test_ray_actors_render_the_same_chunks(tmp_path, monkeypatch):
    import ray

    write_meshes(tmp_path / "meshes")
    config = RenderConfig(views=1, resolution=32, chunk_size=2, workers=1)
    render_meshes(tmp_path / "meshes", tmp_path / "local", config)
    # The stage starts its own private one-CPU Ray (`connect_ray`), whatever else runs here.
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    try:
        config.executor = "ray"
        summary = render_meshes(tmp_path / "meshes", tmp_path / "ray", config)
    finally:
        ray.shutdown()
    assert summary.rendered == 4
    for name in ("part-00000.tar", "part-00001.tar"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()

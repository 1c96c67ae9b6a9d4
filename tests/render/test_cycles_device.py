"""`render.cycles_device`: CPU Cycles as before, a GPU device that is not there stops the stage at
its start with one line naming the param (deleting nothing), and workbench ignores it."""

import dataclasses
import shutil
import subprocess
import sys

import pytest

from cg3d.errors import UsageError
from cg3d.formats.failures import read_failures
from cg3d.params import RenderConfig
from cg3d.render.stage import render_meshes
from tests.render.helpers import render_views, write_meshes

pytestmark = pytest.mark.blender

no_gpu = pytest.mark.skipif(
    shutil.which("nvidia-smi") is not None, reason="this machine may have a CUDA device"
)


def test_cpu_cycles_renders_a_shaded_object(tmp_path):
    write_meshes(tmp_path)
    config = RenderConfig(views=1, resolution=32, engine="cycles", samples=2, cycles_device="cpu")
    views, _ = render_views(tmp_path / "box.ply", "y", config)
    alpha = next(iter(views.values()))[..., 3]
    assert 0.05 < (alpha > 0).mean() < 0.95  # the box in the middle, transparent around it


@no_gpu
def test_a_missing_cuda_device_stops_the_stage_at_start_naming_the_param(tmp_path):
    write_meshes(tmp_path / "meshes")
    on_cpu = RenderConfig(views=1, resolution=32, engine="cycles", samples=2, chunk_size=2)
    assert render_meshes(tmp_path / "meshes", tmp_path / "out", on_cpu).rendered == 4
    kept = (tmp_path / "out" / "part-00000.tar").read_bytes()
    (tmp_path / "out" / "part-00001.tar").unlink()  # a chunk left to render
    on_gpu = dataclasses.replace(on_cpu, cycles_device="cuda")
    with pytest.raises(UsageError, match=r"^render\.cycles_device: no CUDA device"):
        render_meshes(tmp_path / "meshes", tmp_path / "out", on_gpu)
    # The device is not part of the plan: the CPU's part is kept, and no object failed.
    assert (tmp_path / "out" / "part-00000.tar").read_bytes() == kept
    tables = [tmp_path / "out" / "failures.parquet", *(tmp_path / "out").glob("_failures/*")]
    assert not [row for table in tables for row in read_failures(table)]


@no_gpu
def test_the_command_says_so_in_one_line(tmp_path):
    write_meshes(tmp_path / "meshes")
    result = subprocess.run(
        [sys.executable, "-m", "cg3d", "render", "--meshes", tmp_path / "meshes"]
        + ["--out", tmp_path / "out", "--engine", "cycles", "--cycles-device", "optix"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "render.cycles_device: no OPTIX device" in lines[0], result.stderr


def test_workbench_ignores_the_device_and_keeps_its_plan(tmp_path):
    write_meshes(tmp_path / "meshes")
    config = RenderConfig(views=1, resolution=32, workers=1)
    first = render_meshes(tmp_path / "meshes", tmp_path / "out", config)
    assert first.rendered == 4
    part = (tmp_path / "out" / "part-00000.tar").read_bytes()
    on_gpu = RenderConfig(views=1, resolution=32, workers=1, cycles_device="cuda")
    again = render_meshes(tmp_path / "meshes", tmp_path / "out", on_gpu)
    assert again.chunks_run == 0  # the same plan: nothing to redo
    assert (tmp_path / "out" / "part-00000.tar").read_bytes() == part
    assert first.failures == again.failures == []


@no_gpu
def test_ray_actors_say_it_in_the_same_line(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    write_meshes(tmp_path / "meshes")
    config = RenderConfig(views=1, engine="cycles", cycles_device="cuda", workers=1, executor="ray")
    # The stage starts its own private one-CPU Ray (`connect_ray`), whatever else runs here.
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    try:
        with pytest.raises(UsageError) as raised:
            render_meshes(tmp_path / "meshes", tmp_path / "out", config)
    finally:
        ray.shutdown()
    assert str(raised.value).startswith("render.cycles_device: no CUDA device")
    assert "\n" not in str(raised.value)

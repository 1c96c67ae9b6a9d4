"""The data stages on a real Ray cluster: two nodes of one CPU each (`ray.cluster_utils`),
joined through RAY_ADDRESS as a user's cluster is. Sample tasks and Blender render actors land on
both nodes and write the local executor's bytes; a node killed mid-stage loses no part and
duplicates none, and the stage does not hang."""

import logging
import threading
import time
from pathlib import Path

import pytest

from cg3d.formats.points import iter_points
from cg3d.formats.renders import PART_SUFFIX as RENDER_SUFFIX
from cg3d.formats.tar import tar_members
from cg3d.params import MeshesConfig, RenderConfig, SampleConfig
from cg3d.pipeline.sample import sample_points
from cg3d.pipeline.sources import build_manifest
from cg3d.render.stage import render_meshes

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")

SAMPLE = dict(points=64, seed=0, chunk_size=1)
RENDER = dict(views=1, resolution=64, chunk_size=1, workers=2)


@pytest.fixture(scope="module")
def meshes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cluster") / "meshes"
    build_manifest(MeshesConfig(source="synthetic", per_class=1), out)  # 10 objects
    return out


@pytest.fixture
def cluster(monkeypatch):
    from ray.cluster_utils import Cluster

    # Every node and the driver on 127.0.0.1: Ray otherwise binds its services to the machine's
    # outward address, and a test sends nothing beyond loopback. (Ray's switch for this is the
    # one it has for laptops: it reads the constant at call time, the nodes read the variable.)
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    monkeypatch.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
    loopback = {"num_cpus": 1}
    cluster = Cluster(initialize_head=True, head_node_args=loopback | {"include_dashboard": False})
    worker_node = cluster.add_node(**loopback)
    cluster.wait_for_nodes()
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster, worker_node
    ray.shutdown()
    cluster.shutdown()


def part_bytes(folder: Path, suffix: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob(f"part-*{suffix}"))}


def nodes_logged(caplog) -> int:
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ray: ")]
    assert lines, "the Ray executor logs where its chunks ran"
    return int(lines[-1].split(" nodes ")[0].rsplit(" ", 1)[1])


def test_both_nodes_work_and_write_the_local_bytes(cluster, meshes, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    sample_points(meshes, tmp_path / "points_local", SampleConfig(**SAMPLE, workers=1))
    render_meshes(meshes, tmp_path / "renders_local", RenderConfig(**RENDER, executor="local"))
    sample_points(meshes, tmp_path / "points", SampleConfig(**SAMPLE, executor="ray"))
    assert nodes_logged(caplog) == 2
    render_meshes(meshes, tmp_path / "renders", RenderConfig(**RENDER, executor="ray"))
    assert nodes_logged(caplog) == 2
    points = part_bytes(tmp_path / "points", ".parquet")
    assert len(points) == 10 and points == part_bytes(tmp_path / "points_local", ".parquet")
    renders = part_bytes(tmp_path / "renders", RENDER_SUFFIX)
    assert len(renders) == 10 and renders == part_bytes(tmp_path / "renders_local", RENDER_SUFFIX)


def kill_when_first_part(cluster, folder: Path, suffix: str, stage) -> int:
    """Run `stage` in a thread; remove the worker node once the first part is written. The
    parts written by then (fewer than all: the kill is mid-stage)."""
    head, worker_node = cluster
    errors: list[BaseException] = []

    def run() -> None:
        try:
            stage()
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while not list(folder.glob(f"part-*{suffix}")) and time.monotonic() < deadline:
        time.sleep(0.05)
    written = len(list(folder.glob(f"part-*{suffix}")))
    head.remove_node(worker_node)
    thread.join(timeout=600)
    assert not thread.is_alive(), "the stage hangs after losing a node"
    assert not errors, errors
    return written


def test_a_node_killed_mid_sample_loses_and_duplicates_nothing(cluster, meshes, tmp_path):
    out = tmp_path / "points"
    written = kill_when_first_part(
        cluster,
        out,
        ".parquet",
        lambda: sample_points(meshes, out, SampleConfig(**SAMPLE, executor="ray")),
    )
    assert 1 <= written < 10  # the node went mid-stage
    ids = [key for key, _ in iter_points(out)]
    assert len(ids) == len(set(ids)) == 10


def test_a_node_killed_mid_render_loses_and_duplicates_nothing(cluster, meshes, tmp_path):
    out = tmp_path / "renders"
    written = kill_when_first_part(
        cluster,
        out,
        RENDER_SUFFIX,
        lambda: render_meshes(meshes, out, RenderConfig(**RENDER, executor="ray")),
    )
    assert 1 <= written < 10  # the node went mid-stage
    views = []
    for part in out.glob(f"part-*{RENDER_SUFFIX}"):
        with open(part, "rb") as stream:
            views += [name for name, _ in tar_members(stream, read_data=False)]
    views = [name for name in views if name.endswith(".png")]
    assert len(views) == len(set(views)) == 10

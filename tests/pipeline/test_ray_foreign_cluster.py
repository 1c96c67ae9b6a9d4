"""Ray on a machine that already runs a cluster (issue 25 §5): the stages join a cluster only
where RAY_ADDRESS names it; otherwise they start a private local Ray, which a foreign cluster
(`ray start --head`, someone else's) never captures. The foreign head is started by the `ray`
command, blocking, and stopped by its own process id: never `ray stop`, which stops every
Ray on the machine."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cg3d.params import MeshesConfig, SampleConfig
from cg3d.pipeline.chunks import connect_ray
from cg3d.pipeline.sample import sample_points
from cg3d.pipeline.sources import build_manifest

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def foreign_cluster(tmp_path_factory):
    """A head node started as a user would (`ray start --head`), found by a bare `ray.init()`
    through Ray's default temp folder; yields its address on loopback."""
    port = free_port()
    log = tmp_path_factory.mktemp("foreign") / "ray.log"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    command = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block"]
    command += [f"--port={port}", "--num-cpus=1", "--include-dashboard=false"]
    command += ["--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while b"Ray runtime started" not in log.read_bytes():
            assert process.poll() is None, log.read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "the foreign head did not start"
            time.sleep(0.5)
        yield address
    finally:
        # Its own session: the head and the services it started, no other process.
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def gcs_port() -> int:
    """The GCS port of the cluster this driver joined (its host is whatever Ray advertises)."""
    return int(ray.get_runtime_context().gcs_address.rsplit(":", 1)[1])


def test_a_bare_ray_init_would_join_the_foreign_cluster(foreign_cluster, monkeypatch):
    """The hazard the rule guards against, shown: without an address, Ray attaches to it."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray.init(log_to_driver=False)
    try:
        assert gcs_port() == port_of(foreign_cluster)
    finally:
        ray.shutdown()


def test_without_ray_address_the_stage_runs_on_a_private_ray(foreign_cluster, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    connect_ray(1)
    try:
        assert gcs_port() != port_of(foreign_cluster)
        assert ray.cluster_resources().get("CPU") == 1

        @ray.remote
        def square(x: int) -> int:
            return x * x

        assert ray.get([square.remote(i) for i in range(4)]) == [0, 1, 4, 9]
    finally:
        ray.shutdown()


def test_a_ray_stage_runs_beside_a_foreign_cluster(foreign_cluster, monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    meshes = tmp_path / "meshes"
    build_manifest(MeshesConfig(source="synthetic", per_class=1), meshes)  # 10 objects
    config = dict(points=32, chunk_size=5, workers=1)
    local = sample_points(meshes, tmp_path / "local", SampleConfig(**config))
    try:
        remote = sample_points(meshes, tmp_path / "ray", SampleConfig(**config, executor="ray"))
    finally:
        ray.shutdown()
    assert remote.sampled == local.sampled == 10
    for part in sorted((tmp_path / "local").glob("part-*")):
        assert (tmp_path / "ray" / part.name).read_bytes() == part.read_bytes()


def test_ray_address_joins_the_cluster_it_names(foreign_cluster, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", foreign_cluster)
    connect_ray(8)  # a joined cluster keeps its own CPUs: no num_cpus is sent
    try:
        assert gcs_port() == port_of(foreign_cluster)
    finally:
        ray.shutdown()

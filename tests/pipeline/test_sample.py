import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import trimesh

from cg3d.errors import UsageError
from cg3d.files import LOCK_NAME, file_sha256
from cg3d.formats.failures import read_failures
from cg3d.formats.manifest import MeshRecord, write_manifest
from cg3d.formats.points import find_points, iter_points
from cg3d.geometry.sampling import object_rng, sample_object, sample_surface
from cg3d.params import SampleConfig
from cg3d.pipeline import sample as sample_module
from cg3d.pipeline.sample import plan_fingerprint, sample_points
from cg3d.pipeline.sources import MeshesConfig, build_manifest
from tests.pipeline.meshes import SMALL, make_meshes, shapes


def read_all(points_dir: Path) -> dict[str, np.ndarray]:
    return dict(iter_points(points_dir))


def test_surface_samples_lie_on_the_faces_in_proportion_to_area():
    # A flat 4×1×0.1 box: each pair of opposite faces gets points in proportion to its area.
    box = trimesh.creation.box(extents=[4.0, 1.0, 0.1])
    points = sample_surface(box.vertices, box.faces, 20_000, np.random.default_rng(0), normals=True)
    xyz, normals = points[:, :3], points[:, 3:]
    half = np.array([2.0, 0.5, 0.05])
    on_face = np.isclose(np.abs(xyz), half, atol=1e-9)
    assert on_face.any(axis=1).all()
    areas = np.array([1.0 * 0.1, 4.0 * 0.1, 4.0 * 1.0])  # faces normal to x, y, z
    fractions = np.bincount(np.abs(normals).argmax(axis=1), minlength=3) / len(points)
    np.testing.assert_allclose(fractions, areas / areas.sum(), atol=0.01)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0)


def test_points_are_centred_and_scaled_into_the_unit_sphere_by_the_mesh_frame():
    box = trimesh.creation.box(extents=[2.0, 6.0, 4.0])
    box.apply_translation([5.0, -7.0, 1.0])
    points = sample_object(
        box.vertices, box.faces, SampleConfig(points=1024), np.random.default_rng(0)
    )
    assert points.shape == (1024, 3) and points.dtype == np.float32
    radius = np.linalg.norm(points, axis=1)
    assert radius.max() <= 1.0 + 1e-6
    assert radius.max() > 0.97  # FPS reaches the corners, which the frame puts on the sphere
    # Bounding-box centre at the origin: the extents are symmetric.
    np.testing.assert_allclose(points.min(axis=0), -points.max(axis=0), atol=0.03)
    # Scale is 1 / half the box diagonal, so the half-extents are (1, 3, 2) / sqrt(14).
    np.testing.assert_allclose(points.max(axis=0), np.array([1, 3, 2]) / np.sqrt(14), atol=0.02)


def test_z_up_files_are_turned_y_up(tmp_path):
    tall = trimesh.creation.box(extents=[1.0, 1.0, 8.0])  # tall along the file's z axis
    meshes_dir = make_meshes(tmp_path, {"tower": tall}, up_axis="z")
    sample_points(meshes_dir, tmp_path / "points", SampleConfig(**SMALL))
    points = read_all(tmp_path / "points")["tower"]
    extent = points.max(axis=0) - points.min(axis=0)
    assert extent.argmax() == 1  # now tall along y


@pytest.mark.parametrize("n", [1024, 10_000])
def test_large_point_counts_with_normals(n):
    sphere = trimesh.creation.icosphere(subdivisions=3)
    config = SampleConfig(points=n, normals=True)
    points = sample_object(sphere.vertices, sphere.faces, config, np.random.default_rng(1))
    assert points.shape == (n, 6)
    assert len(np.unique(points[:, :3], axis=0)) == n
    np.testing.assert_allclose(np.linalg.norm(points[:, 3:], axis=1), 1.0, atol=1e-5)


def test_stage_writes_parts_in_the_documented_layout(tmp_path):
    meshes_dir = make_meshes(tmp_path, shapes(5))
    summary = sample_points(meshes_dir, tmp_path / "points", SampleConfig(**SMALL, chunk_size=2))
    assert (summary.sampled, summary.chunks_total, summary.failures) == (5, 3, [])
    parts = sorted(p.name for p in (tmp_path / "points").glob("part-*.parquet"))
    assert parts == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    table = pq.read_table(tmp_path / "points" / "part-00000.parquet")
    assert table.column_names == ["id", "points", "n_points", "has_color"]
    assert table.schema.metadata[b"channels"] == b"x,y,z"
    assert table["has_color"].to_pylist() == [False, False]
    assert pa.types.is_list(table.schema.field("points").type)
    assert table.schema.field("points").type.value_type == pa.float32()
    assert table["n_points"].to_pylist() == [64, 64]
    assert len(table["points"][0]) == 64 * 3
    assert read_failures(tmp_path / "points" / "failures.parquet") == []


def test_points_depend_on_seed_and_id_not_on_chunking_or_workers(tmp_path):
    meshes_dir = make_meshes(tmp_path, shapes(4))
    sample_points(meshes_dir, tmp_path / "a", SampleConfig(**SMALL, chunk_size=1))
    sample_points(meshes_dir, tmp_path / "b", SampleConfig(**{**SMALL, "workers": 2}, chunk_size=3))
    sample_points(meshes_dir, tmp_path / "c", SampleConfig(**{**SMALL, "seed": 1}, chunk_size=3))
    a, b, c = (read_all(tmp_path / name) for name in "abc")
    assert sorted(a) == sorted(b) == sorted(c) == [f"obj{i:02d}" for i in range(4)]
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        assert not np.array_equal(a[key], c[key])
    assert not np.array_equal(object_rng(0, "x").random(3), object_rng(0, "y").random(3))


def test_bad_meshes_become_failure_rows_and_the_chunk_goes_on(tmp_path):
    meshes_dir = make_meshes(tmp_path, shapes(2))
    (meshes_dir / "garbage.obj").write_bytes(b"\x00\xffnot a mesh at all\x00" * 10)
    flat = trimesh.Trimesh(
        vertices=[[0, 0, 0], [1, 1, 1], [2, 2, 2]], faces=[[0, 1, 2]], process=False
    )
    flat.export(meshes_dir / "flat.obj")
    records = [
        MeshRecord(id=name, source="test", path=f"{name}.obj", class_name="thing", split="train")
        for name in ("obj00", "garbage", "flat", "obj01", "missing")
    ]
    records.append(
        MeshRecord(
            id="upstream",
            source="test",
            path="x.obj",
            class_name="thing",
            split="train",
            status="empty",
            error="empty: no faces",
        )
    )
    write_manifest(records, meshes_dir)
    summary = sample_points(meshes_dir, tmp_path / "points", SampleConfig(**SMALL, chunk_size=10))
    assert (summary.objects, summary.sampled, summary.skipped_upstream) == (5, 2, 1)
    assert sorted(read_all(tmp_path / "points")) == ["obj00", "obj01"]
    rows = read_failures(tmp_path / "points" / "failures.parquet")
    assert [r["id"] for r in rows] == ["flat", "garbage", "missing"]
    assert {r["stage"] for r in rows} == {"sample"}
    assert all(r["reason"] for r in rows)
    assert rows[0]["reason"].startswith("degenerate")


def test_rerun_after_an_interrupted_run_redoes_only_missing_chunks(tmp_path, monkeypatch):
    meshes_dir = make_meshes(tmp_path, shapes(6))
    out = tmp_path / "points"
    config = SampleConfig(**SMALL, chunk_size=2)
    reference = tmp_path / "reference"
    sample_points(meshes_dir, reference, config)

    real = sample_module.PointsReader.__call__

    def killed_at_obj03(self, path, up_axis, object_id, *checks):
        if object_id == "obj03":
            raise KeyboardInterrupt  # like a kill in the middle of chunk 1
        return real(self, path, up_axis, object_id, *checks)

    monkeypatch.setattr(sample_module.PointsReader, "__call__", killed_at_obj03)
    with pytest.raises(KeyboardInterrupt):
        sample_points(meshes_dir, out, config)
    assert sorted(p.name for p in out.glob("part-*")) == ["part-00000.parquet"]
    assert not list(out.rglob("*.tmp"))
    finished = (out / "part-00000.parquet").stat().st_mtime_ns
    (out / ".part-00001.parquet.4242.tmp").write_bytes(b"half a file from a killed worker")

    monkeypatch.setattr(sample_module.PointsReader, "__call__", real)
    summary = sample_points(meshes_dir, out, config)
    assert (summary.chunks_run, summary.chunks_total, summary.sampled) == (2, 3, 6)
    assert (out / "part-00000.parquet").stat().st_mtime_ns == finished
    assert not list(out.rglob("*.tmp"))
    expected, got = read_all(reference), read_all(out)
    assert sorted(got) == sorted(expected)
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])

    # Different params: a new plan, every chunk redone.
    summary = sample_points(meshes_dir, out, SampleConfig(**{**SMALL, "points": 32}, chunk_size=2))
    assert summary.chunks_run == 3
    assert {len(p) for p in read_all(out).values()} == {32}


@pytest.mark.slow
def test_ray_executor_gives_the_local_result(tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    meshes_dir = make_meshes(tmp_path, shapes(3))
    sample_points(meshes_dir, tmp_path / "local", SampleConfig(**SMALL, chunk_size=2))
    # Ray 2.60 removed local_mode: the stage's private one-CPU Ray (`connect_ray`) stands in
    # for a cluster, whatever other cluster runs on this machine.
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    try:
        summary = sample_points(
            meshes_dir, tmp_path / "ray", SampleConfig(**SMALL, chunk_size=2, executor="ray")
        )
    finally:
        ray.shutdown()
    assert (summary.sampled, summary.chunks_run) == (3, 2)
    local, remote = read_all(tmp_path / "local"), read_all(tmp_path / "ray")
    assert sorted(local) == sorted(remote)
    for key in local:
        np.testing.assert_array_equal(local[key], remote[key])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("points", 0),
        ("chunk_size", 0),
        ("chunk_size", 10**6),
        ("workers", -1),
        ("executor", "dask"),
    ],
)
def test_wrong_parameters_are_usage_errors_naming_the_param(tmp_path, field, value):
    with pytest.raises(UsageError, match=f"sample.{field}"):
        sample_points(tmp_path, tmp_path / "out", SampleConfig(**{field: value}))


def test_cli_reports_a_bad_option_in_one_line_and_samples_with_good_ones(tmp_path):
    meshes_dir = make_meshes(tmp_path, shapes(2))
    command = [
        sys.executable,
        "-m",
        "cg3d",
        "sample",
        "--meshes",
        str(meshes_dir),
        "--out",
        str(tmp_path / "p"),
    ]
    bad = subprocess.run([*command, "--points", "0"], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "sample.points" in bad.stderr
    good = subprocess.run(
        [*command, "--points", "16", "--normals", "--workers", "1"],
        capture_output=True,
        text=True,
    )
    assert good.returncode == 0, good.stderr
    assert "sampled 2/2" in good.stdout
    assert {p.shape for p in read_all(tmp_path / "p").values()} == {(16, 6)}


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_to_the_same_result(tmp_path):
    meshes_dir = make_meshes(tmp_path, shapes(40))
    out = tmp_path / "points"
    command = [sys.executable, "-m", "cg3d", "sample", "--meshes", str(meshes_dir)]
    command += ["--points", "2048", "--chunk-size", "1", "--workers", "2"]
    run = subprocess.Popen([*command, "--out", str(out)], stdout=subprocess.DEVNULL)
    workers = []
    while run.poll() is None and not list(out.glob("part-*.parquet")):
        workers = psutil.Process(run.pid).children() or workers
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.wait()
    done_at_kill = len(list(out.glob("part-*.parquet")))
    assert 1 <= done_at_kill < 40
    # Pool workers notice that their parent is gone and exit instead of waiting forever.
    assert workers
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert not [w for w in alive if w.status() != psutil.STATUS_ZOMBIE]

    subprocess.run([*command, "--out", str(out)], check=True, capture_output=True)
    subprocess.run([*command, "--out", str(tmp_path / "clean")], check=True, capture_output=True)
    resumed, clean = read_all(out), read_all(tmp_path / "clean")
    assert sorted(resumed) == sorted(clean) and len(clean) == 40
    for key in clean:
        np.testing.assert_array_equal(resumed[key], clean[key])


PAUSED_RUN = """
import sys
from pathlib import Path
from cg3d.pipeline import sample

real_chunk = sample.sample_chunk

def chunk_then_pause(meshes_dir, output, index, records, config):
    if index == 1:  # part 0 is written: wait for the test
        print("paused", flush=True)
        sys.stdin.readline()
    return real_chunk(meshes_dir, output, index, records, config)

sample.sample_chunk = chunk_then_pause
config = sample.SampleConfig(points=int(sys.argv[3]), chunk_size=2, workers=1)
summary = sample.sample_points(Path(sys.argv[1]), Path(sys.argv[2]), config)
print("sampled", summary.sampled, flush=True)
"""


def paused_run(meshes_dir: Path, out: Path, points: int) -> subprocess.Popen:
    """A real `sample` run in another process, stopped after its first part until told to go."""
    run = subprocess.Popen(
        [sys.executable, "-c", PAUSED_RUN, str(meshes_dir), str(out), str(points)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    # off a terminal the stage's progress lines come first (one a tenth)
    lines = iter(run.stdout.readline, "")
    assert "paused" in (line.strip() for line in lines)
    assert [p.name for p in out.glob("part-*")] == ["part-00000.parquet"]
    return run


def cli_sample(meshes_dir: Path, out: Path, points: int) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "cg3d", "sample", "--meshes", str(meshes_dir)]
    command += ["--out", str(out), "--points", str(points), "--chunk-size", "2", "--workers", "1"]
    return subprocess.run(command, capture_output=True, text=True)


def test_a_second_run_into_a_folder_in_use_fails_at_once_and_mixes_nothing(tmp_path):
    meshes_dir = make_meshes(tmp_path, shapes(6))
    out = tmp_path / "points"
    first = paused_run(meshes_dir, out, points=64)
    try:
        second = cli_sample(meshes_dir, out, points=32)
    finally:
        first.stdin.write("go\n")
        first.stdin.close()
    assert first.wait(timeout=120) == 0 and first.stdout.read().endswith("sampled 6\n")
    assert second.returncode == 2
    message = second.stderr.strip()
    assert "\n" not in message and str(out) in message and "another run" in message
    assert {p.shape for p in read_all(out).values()} == {(64, 3)} and len(read_all(out)) == 6

    # Once the first run is done, the second one runs: a new plan, every part redone.
    again = cli_sample(meshes_dir, out, points=32)
    assert again.returncode == 0, again.stderr
    assert {p.shape for p in read_all(out).values()} == {(32, 3)} and len(read_all(out)) == 6


def test_a_killed_run_leaves_no_lock_and_its_parts_are_not_taken_for_other_params(tmp_path):
    meshes_dir = make_meshes(tmp_path, shapes(6))
    out = tmp_path / "points"
    killed = paused_run(meshes_dir, out, points=64)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert (out / LOCK_NAME).is_file()  # left behind, but its flock died with the process

    resumed = cli_sample(meshes_dir, out, points=32)
    assert resumed.returncode == 0, resumed.stderr
    assert "3 chunks computed" in " ".join(resumed.stdout.split())  # part 0 of 64 points too
    assert {p.shape for p in read_all(out).values()} == {(32, 3)} and len(read_all(out)) == 6
    assert not (out / LOCK_NAME).exists()


@pytest.mark.parametrize("field", ["points", "chunk_size", "normals", "seed"])
def test_every_param_that_changes_points_is_in_the_resume_plan(field):
    base = SampleConfig()
    changed = SampleConfig(**{field: not base.normals if field == "normals" else 7})
    assert plan_fingerprint(changed) != plan_fingerprint(base)
    # how many processes run the chunks, and where, does not change them
    faster = SampleConfig(workers=7, executor="ray")
    assert plan_fingerprint(faster) == plan_fingerprint(base)


def test_fixture_points_are_the_same_in_every_python_process(tmp_path):
    """The fake points stage of tests/pipeline/fakes.py: str hashes differ per process."""
    script = (
        "import sys; from pathlib import Path; from tests.pipeline.fakes import fake_points\n"
        "fake_points(Path(sys.argv[1]), ['chair_0000', 'lamp_0003'], n=8)\n"
    )
    root = Path(__file__).resolve().parents[2]
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(root)}
        folder = tmp_path / hash_seed
        subprocess.run([sys.executable, "-c", script, folder], check=True, env=env, cwd=root)
    first, second = read_all(tmp_path / "1"), read_all(tmp_path / "2")
    assert sorted(first) == ["chair_0000", "lamp_0003"]
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])


def uid_named(shapes_by_name: dict) -> dict:
    """The shapes under uid-like names: an object added later lands anywhere in id order."""
    return {f"{object_rng(0, k).integers(2**32):08x}": v for k, v in shapes_by_name.items()}


def test_a_grown_manifest_recomputes_only_the_new_chunk_and_matches_a_clean_run(tmp_path):
    everything = uid_named(shapes(202))
    first = dict(list(everything.items())[:200])
    added = sorted(set(everything) - set(first))
    assert sorted(everything).index(added[0]) < 199  # inside the id range, not appended
    config = SampleConfig(**SMALL, chunk_size=2)
    out = tmp_path / "points"
    assert sample_points(make_meshes(tmp_path, first), out, config).chunks_run == 100
    grown = sample_points(make_meshes(tmp_path, everything), out, config)
    assert (grown.chunks_run, grown.chunks_total) == (1, 101)  # 1 % more objects, 1 % of chunks

    clean = sample_points(make_meshes(tmp_path / "c", everything), tmp_path / "clean", config)
    resumed, fresh = read_all(out), read_all(tmp_path / "clean")
    assert clean.chunks_run == 101 and sorted(resumed) == sorted(fresh) == sorted(everything)
    for key in fresh:
        np.testing.assert_array_equal(resumed[key], fresh[key])
    # the parts now overlap in id range: lookups still find old and new objects
    for key in (added[0], sorted(first)[100]):
        np.testing.assert_array_equal(find_points(out, key), fresh[key])


def test_a_removed_or_changed_object_recomputes_only_its_chunk(tmp_path):
    objects = uid_named(shapes(40))
    config = SampleConfig(**SMALL, chunk_size=4)
    out = tmp_path / "points"
    sample_points(make_meshes(tmp_path, objects, hashed=True), out, config)
    gone = sorted(objects)[9]
    fewer = {k: v for k, v in objects.items() if k != gone}
    summary = sample_points(make_meshes(tmp_path, fewer, hashed=True), out, config)
    assert (summary.chunks_run, summary.chunks_total, summary.sampled) == (1, 10, 39)
    assert gone not in read_all(out)
    moved = sorted(fewer)[20]
    fewer[moved] = trimesh.creation.box(extents=[5, 1, 1])  # a new file under the same id
    summary = sample_points(make_meshes(tmp_path, fewer, hashed=True), out, config)
    assert summary.chunks_run == 1
    assert np.ptp(read_all(out)[moved][:, 0]) > 3 * np.ptp(read_all(out)[moved][:, 1])


def textured_boxes(root: Path, red: dict[str, bool]) -> None:
    """`root/box/{name}.obj`, each a different tetrahedron naming its own MTL, red or green
    (the same size either way), every file with mtime 0 (as `touch -d @0` and archives make)."""
    (root / "box").mkdir(parents=True, exist_ok=True)
    for number, (name, is_red) in enumerate(sorted(red.items())):
        obj, mtl = root / "box" / f"{name}.obj", root / "box" / f"{name}.mtl"
        corners = f"v 0 0 0\nv {number + 1} 0 0\nv 0 1 0\nv 0 0 1\n"
        faces = "usemtl m\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n"
        obj.write_text(f"mtllib {name}.mtl\n{corners}{faces}")
        mtl.write_text("newmtl m\nKd 1 0 0\n" if is_red else "newmtl m\nKd 0 1 0\n")
        for file in (obj, mtl):
            os.utime(file, (0, 0))


@pytest.mark.parametrize("colors", [False, pytest.param(True, marks=pytest.mark.blender)])
def test_an_mtl_rewritten_under_the_same_mesh_size_and_mtime_recomputes_its_chunk(tmp_path, colors):
    """A chunk's content key covers the files a mesh references, by content: an MTL (or
    texture) rewritten at the same size and mtime (`cp -p`, `rsync -t`) under an unchanged OBJ
    kept its chunk, and with colours its old colour. The other object's chunk stays."""
    root, meshes, out = tmp_path / "src", tmp_path / "meshes", tmp_path / "points"
    config = SampleConfig(**SMALL, chunk_size=1, colors=colors)
    textured_boxes(root, {"a": True, "b": True})
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), meshes)
    assert sample_points(meshes, out, config).chunks_run == 2
    textured_boxes(root, {"a": False, "b": True})
    build_manifest(MeshesConfig(source="folder", root=str(root), workers=1), meshes)
    assert sample_points(meshes, out, config).chunks_run == 1
    if colors:
        (key,) = [key for key in read_all(out) if "box_a" in key]
        np.testing.assert_array_equal(read_all(out)[key][:, 3:6].max(0), [0, 1, 0])


def test_the_fast_path_checks_the_file_when_it_opens_it(tmp_path):
    """Check, then use: the sample stage opens a listed file only if it still resolves inside
    the root and has the listed bytes; a lone file (classify) may be a link to another folder."""
    from cg3d.geometry.meshio import MeshError
    from cg3d.pipeline.sample import PointsReader

    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    trimesh.creation.box().export(root / "a.obj")
    trimesh.creation.icosphere().export(elsewhere / "b.obj")
    listed = file_sha256(root / "a.obj")
    read = PointsReader(SampleConfig(points=64))
    assert read(root / "a.obj", "y", "a", root, listed)[0].shape == (64, 3)
    (root / "a.obj").unlink()
    os.symlink(elsewhere / "b.obj", root / "a.obj")
    with pytest.raises(MeshError, match="^changed_since_listed: .* outside the source root"):
        read(root / "a.obj", "y", "a", root, listed)
    (root / "a.obj").unlink()
    trimesh.creation.icosphere().export(root / "a.obj")
    with pytest.raises(MeshError, match="^changed_since_listed: .* not the file the manifest"):
        read(root / "a.obj", "y", "a", root, listed)
    assert read(root / "a.obj", "y", "a")[0].shape == (64, 3)  # unlisted: no hash to compare
    os.symlink(elsewhere / "b.obj", tmp_path / "link.obj")
    assert read(tmp_path / "link.obj", "y", "link")[0].shape == (64, 3)

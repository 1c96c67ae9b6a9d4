"""Benchmark readers open nothing outside --root (issue 18 §1): whatever path an index file
names (absolute, `../`, a symlink out), the shape is refused, counted, and its file never read;
with --allow-pickle, a pickle outside the root never runs. Bad index files are one line."""

import json
from pathlib import Path

import pytest

from cg3d.errors import UsageError
from cg3d.eval.readers import open_benchmark
from cg3d.files import OutsideRoot, confined_path

from .files import write_modelnet, write_openshape, write_outside, write_shapenet55


@pytest.fixture
def outside(tmp_path) -> Path:
    """Files beside the root that a reader must never open (`write_outside`)."""
    return write_outside(tmp_path / "outside")


def test_confined_path_follows_symlinks_and_dotdots(tmp_path, outside):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "link").symlink_to(outside / "shape.npy")
    assert confined_path(root, root / "sub", "../sub/./x.npy") == (root / "sub/x.npy").resolve()
    for reference in ("../../outside/shape.npy", str(outside / "shape.npy"), "link", "../../.."):
        with pytest.raises(OutsideRoot, match="resolves outside"):
            confined_path(root, root / "sub", reference)


def test_openshape_data_paths_outside_the_root_are_refused_and_counted(tmp_path, outside):
    root = write_openshape(tmp_path / "openshape", ["mug", "chair"])
    (root / "objaverse-processed" / "link.npy").symlink_to(outside / "shape.npy")
    entries = json.loads((root / "lvis.json").read_text())
    escapes = [
        str(outside / "evil.npy"),  # absolute, outside
        "../outside/evil.npy",  # up and out
        "objaverse-processed/../../outside/evil.npy",  # out through a real folder
        "objaverse-processed/link.npy",  # a symlink inside that points out
        str(outside / "shape.npy"),  # a good shape, but outside
    ]
    entries += [{"category": "mug", "uid": f"x{i}", "data_path": p} for i, p in enumerate(escapes)]
    (root / "lvis.json").write_text(json.dumps(entries))
    benchmark = open_benchmark("objaverse-lvis", root, allow_pickle=True)
    shapes = list(benchmark.shapes())
    assert sorted(shape.key for shape in shapes) == ["000000aa", "000100aa"]  # the inside ones
    assert benchmark.refused() == len(escapes) and benchmark.skipped() == len(escapes)
    assert not (outside / "PICKLE_RAN").exists()  # --allow-pickle trusts the set, not its paths


def test_openshape_still_finds_files_under_the_authors_mount_points(tmp_path):
    root = write_openshape(tmp_path / "openshape", ["mug"])
    entries = json.loads((root / "lvis.json").read_text())
    inside = root / "objaverse-processed" / "000-001" / "000000aa.npy"
    entries.append({"category": "mug", "uid": "abs", "data_path": str(inside)})  # absolute, in
    entries.append({"category": "mug", "uid": "gone", "data_path": "/mnt/data/gone.npy"})
    (root / "lvis.json").write_text(json.dumps(entries))
    benchmark = open_benchmark("objaverse-lvis", root, allow_pickle=True)
    assert [shape.key for shape in benchmark.shapes()] == ["000000aa", "abs"]
    assert benchmark.skipped() == 1 and benchmark.refused() == 1  # /mnt is outside: not probed


@pytest.mark.parametrize(
    "text, reason",
    [
        ('[{"category": "mug", "data_path": "a.npy"}, {"categ', "not a readable LVIS split"),
        ("", "not a readable LVIS split"),
        ('{"category": "mug"}', "expected a list of shapes, got a dict"),
        ('[{"category": "mug", "data_path": 7}]', "entry 0 is not an object"),
        ('[{"category": "mug", "data_path": ["a"]}]', "entry 0 is not an object"),
        ('[{"category": null, "data_path": "a.npy"}]', "entry 0 is not an object"),
        ('[{"category": "mug", "data_path": ""}]', "entry 0 is not an object"),
        ('["a.npy"]', "entry 0 is not an object"),
    ],
)
def test_a_bad_lvis_split_is_one_line(tmp_path, text, reason):
    (tmp_path / "lvis.json").write_text(text)
    with pytest.raises(UsageError, match=reason):
        open_benchmark("objaverse-lvis", tmp_path, allow_pickle=True)


def test_lvis_split_that_is_not_utf8_is_one_line(tmp_path):
    (tmp_path / "lvis.json").write_bytes(b"\xff\xfe[")
    with pytest.raises(UsageError, match="not a readable LVIS split"):
        open_benchmark("objaverse-lvis", tmp_path, allow_pickle=True)


def test_modelnet_list_naming_files_outside_is_refused(tmp_path, outside):
    root = tmp_path / "mn"
    ids = write_modelnet(root, 40)
    (root / "airplane" / "airplane_9999.txt").symlink_to(outside / "cloud.txt")
    escapes = ["airplane_/../../../outside/cloud", "airplane_9999"]
    (root / "modelnet40_test.txt").write_text("\n".join(ids + escapes) + "\n")
    benchmark = open_benchmark("modelnet40", root)
    assert [shape.key for shape in benchmark.shapes()] == ids
    assert benchmark.refused() == benchmark.skipped() == 2


def test_modelnet_lists_that_are_symlinks_out_are_refused(tmp_path, outside):
    root = tmp_path / "mn"
    write_modelnet(root, 40)
    (outside / "list.txt").write_text("airplane_0001\n")
    (root / "modelnet40_test.txt").unlink()
    (root / "modelnet40_test.txt").symlink_to(outside / "list.txt")
    with pytest.raises(UsageError, match="--root: .*resolves outside"):
        open_benchmark("modelnet40", root)


def test_shapenet55_list_naming_files_outside_is_refused(tmp_path, outside):
    root = tmp_path / "sn"
    write_shapenet55(root, ["02691156-a1b2.npy"])
    (root / "shapenet_pc" / "02691156-link.npy").symlink_to(outside / "cloud.npy")
    escapes = [str(outside / "cloud.npy"), "../../outside/cloud.npy", "02691156-link.npy"]
    (root / "test.txt").write_text("\n".join(["02691156-a1b2.npy", *escapes]) + "\n")
    benchmark = open_benchmark("shapenet55", root)
    assert [shape.key for shape in benchmark.shapes()] == ["02691156-a1b2"]
    assert benchmark.refused() == benchmark.skipped() == 3


def test_ulip_pickle_behind_a_symlink_out_is_refused(tmp_path, outside):
    root = tmp_path / "ulip"
    root.mkdir()
    (root / "modelnet40_test_8192pts_fps.dat").symlink_to(outside / "evil.npy")
    with pytest.raises(UsageError, match="resolves outside"):
        open_benchmark("ulip_modelnet40", root, allow_pickle=True)
    assert not (outside / "PICKLE_RAN").exists()


def test_zeroshot_metrics_count_the_refused(tmp_path, outside, tiny_checkpoint):
    from cg3d.eval.zeroshot import ZeroShotConfig, zeroshot

    root = write_openshape(tmp_path / "openshape", ["mug", "chair"])
    entries = json.loads((root / "lvis.json").read_text())
    entries.append({"category": "mug", "uid": "out", "data_path": str(outside / "evil.npy")})
    (root / "lvis.json").write_text(json.dumps(entries))
    config = ZeroShotConfig(
        dataset="objaverse-lvis", root=str(root), allow_pickle=True, batch_size=4, text_cache=""
    )
    metrics = zeroshot(tiny_checkpoint, tmp_path / "out", config)
    assert metrics["n_shapes"] == 2
    assert metrics["refused_outside_root"] == 1 and metrics["skipped_samples"] == 1
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["refused_outside_root"] == 1
    assert not (outside / "PICKLE_RAN").exists()

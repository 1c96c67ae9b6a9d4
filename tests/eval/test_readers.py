import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from cg3d.errors import UsageError
from cg3d.eval.readers import SCANOBJECTNN_FILES, open_benchmark, prepare_points
from cg3d.protocol import class_names
from tests.eval.files import (
    cube,
    write_modelnet,
    write_scanobjectnn,
    write_shapenet55,
    write_ulip_dat,
)


def test_prepare_points_normalises_samples_and_pads():
    rng = np.random.default_rng(0)
    raw = cube(500, rng, scale=(4, 2, 1), offset=(10, -3, 5))
    points = prepare_points(raw, 128)
    assert points.shape == (128, 3) and points.dtype == np.float32
    radius = np.linalg.norm(points, axis=1)
    assert radius.max() <= 1.0 + 1e-5 and radius.max() > 0.9
    # FPS keeps the corners, so the bounding box of the picks stays centred on the origin
    assert np.allclose((points.min(0) + points.max(0)) / 2, 0, atol=0.05)
    padded = prepare_points(raw[:10], 32)
    assert padded.shape == (32, 3)
    assert len(np.unique(padded, axis=0)) == 10


def test_prepare_points_keeps_an_existing_frame_when_asked():
    rng = np.random.default_rng(0)
    inside = cube(300, rng, scale=(0.5, 0.3, 0.2), offset=(0.1, 0, 0))
    kept = prepare_points(inside, 100, normalise=False)
    distance_to_input = np.linalg.norm(kept[:, None] - inside[None], axis=2).min(axis=1)
    assert distance_to_input.max() < 1e-6  # a subset of the input points, unmoved
    assert np.linalg.norm(kept, axis=1).max() < 0.75  # not blown up to the unit sphere


def test_prepare_points_rotates_z_up_into_y_up():
    tall_in_z = np.array([[0, 0, 0], [0, 0, 2.0], [0.1, 0, 1], [-0.1, 0, 1]])
    points = prepare_points(tall_in_z, 4, up_axis="z")
    assert np.ptp(points[:, 1]) > np.ptp(points[:, 2])


def test_modelnet40_reader(tmp_path):
    ids = write_modelnet(tmp_path, 40, per_class=2)
    bench = open_benchmark("modelnet40", tmp_path)
    shapes = list(bench.shapes())
    assert bench.size == len(ids) == len(shapes) == 6
    assert bench.classes == class_names("modelnet40")
    assert [s.label for s in shapes] == [0, 0, 1, 1, 2, 2]
    assert shapes[0].points.shape == (50, 6)
    assert shapes[0].key == "airplane_0001"


def test_modelnet10_reader_handles_underscored_classes(tmp_path):
    write_modelnet(tmp_path, 10)
    names = (tmp_path / "modelnet10_shape_names.txt").read_text().split()
    (tmp_path / "night_stand").mkdir()
    np.savetxt(tmp_path / "night_stand" / "night_stand_0001.txt", np.ones((5, 6)), delimiter=",")
    (tmp_path / "modelnet10_test.txt").write_text("night_stand_0001\n")
    shapes = list(open_benchmark("modelnet10", tmp_path).shapes())
    assert shapes[0].label == names.index("night_stand")


def test_modelnet_with_foreign_class_list_is_refused(tmp_path):
    write_modelnet(tmp_path, 40)
    (tmp_path / "modelnet40_shape_names.txt").write_text("chair\nairplane\n")
    with pytest.raises(UsageError, match="class names differ"):
        open_benchmark("modelnet40", tmp_path)


def test_ulip_pickle_needs_explicit_permission(tmp_path):
    path = tmp_path / "modelnet40_test_8192pts_fps.dat"
    write_ulip_dat(path)
    with pytest.raises(UsageError, match="--allow-pickle"):
        open_benchmark("ulip_modelnet40", path)
    bench = open_benchmark("ulip_modelnet40", tmp_path, allow_pickle=True)
    shapes = list(bench.shapes())
    assert [s.label for s in shapes] == [0, 1, 2]
    assert shapes[0].points.shape == (80, 6)


def test_ulip_pickle_with_mismatched_lengths_is_an_error(tmp_path):
    path = tmp_path / "bad.dat"
    with path.open("wb") as handle:
        pickle.dump([[np.zeros((4, 6))], [1, 2]], handle)
    with pytest.raises(UsageError, match="1 point sets but 2 labels"):
        open_benchmark("ulip_modelnet40", path, allow_pickle=True)


ULIP_DAMAGE = {
    "cut short": lambda data: data[: len(data) // 2],
    "not a pickle": lambda data: b"PK\x03\x04 a zip, not a pickle",
    "a pickle of one array": lambda data: pickle.dumps(np.zeros(3)),
    "a pickle of an int": lambda data: pickle.dumps(7),
    "a pickle of three lists": lambda data: pickle.dumps([[], [], []]),
}


@pytest.mark.parametrize("case", sorted(ULIP_DAMAGE))
def test_a_damaged_ulip_pickle_is_one_line_naming_it(tmp_path, case):
    """Before: EOFError, UnpicklingError, ValueError or TypeError tracebacks."""
    path = tmp_path / "modelnet40_test_8192pts_fps.dat"
    write_ulip_dat(path)
    path.write_bytes(ULIP_DAMAGE[case](path.read_bytes()))
    with pytest.raises(UsageError, match=r"modelnet40_test_8192pts_fps\.dat: not ULIP's pickle"):
        open_benchmark("ulip_modelnet40", tmp_path, allow_pickle=True)


def test_a_ulip_file_far_larger_than_ulips_is_refused_unread(tmp_path, monkeypatch):
    path = tmp_path / "modelnet40_test_8192pts_fps.dat"
    with path.open("wb") as handle:  # sparse: 5 GiB of nothing
        handle.truncate(5 << 30)
    loads = []
    monkeypatch.setattr(pickle, "load", lambda *args: loads.append(args))
    with pytest.raises(UsageError, match=r"5,368,709,120 bytes, more than ULIP's file"):
        open_benchmark("ulip_modelnet40", tmp_path, allow_pickle=True)
    assert loads == []


@pytest.mark.parametrize("variant", sorted(SCANOBJECTNN_FILES))
def test_scanobjectnn_variants(tmp_path, variant):
    write_scanobjectnn(tmp_path, SCANOBJECTNN_FILES[variant].format(split="test"), count=5)
    bench = open_benchmark("scanobjectnn", tmp_path, variant=variant)
    shapes = list(bench.shapes())
    assert bench.variant == variant and bench.size == 5
    assert [s.label for s in shapes] == [0, 1, 2, 3, 4]
    assert shapes[0].points.shape == (2048, 3)
    assert bench.classes == class_names("scanobjectnn")


@pytest.mark.parametrize("variant", sorted(SCANOBJECTNN_FILES))
def test_scanobjectnn_root_may_be_the_variant_folder(tmp_path, variant):
    relative = SCANOBJECTNN_FILES[variant].format(split="test")
    write_scanobjectnn(tmp_path / "h5_files", relative, count=3)
    variant_folder = tmp_path / "h5_files" / relative.split("/")[0]
    bench = open_benchmark("scanobjectnn", variant_folder, variant=variant)
    assert bench.size == 3 and [s.label for s in bench.shapes()] == [0, 1, 2]


@pytest.mark.parametrize("variant", sorted(SCANOBJECTNN_FILES))
def test_scanobjectnn_root_may_be_the_folder_holding_h5_files(tmp_path, variant):
    """Where the download's h5_files.zip was unpacked: it said "missing file"."""
    relative = SCANOBJECTNN_FILES[variant].format(split="test")
    write_scanobjectnn(tmp_path / "ScanObjectNN" / "h5_files", relative, count=3)
    bench = open_benchmark("scanobjectnn", tmp_path / "ScanObjectNN", variant=variant)
    assert bench.size == 3 and [s.label for s in bench.shapes()] == [0, 1, 2]


def test_scanobjectnn_variant_folder_of_another_variant_is_refused(tmp_path):
    # obj_bg's file has the name obj_only's has, in main_split instead of main_split_nobg
    write_scanobjectnn(tmp_path, SCANOBJECTNN_FILES["obj_bg"].format(split="test"), count=3)
    with pytest.raises(UsageError, match="missing file .*main_split_nobg"):
        open_benchmark("scanobjectnn", tmp_path / "main_split", variant="obj_only")


def test_scanobjectnn_wrong_variant_and_missing_file(tmp_path):
    with pytest.raises(UsageError, match="--variant"):
        open_benchmark("scanobjectnn", tmp_path, variant="hardest")
    with pytest.raises(UsageError, match="missing file"):
        open_benchmark("scanobjectnn", tmp_path, variant="obj_bg")


# A hostile h5 (issue: the ScanObjectNN reader trusted every shape in the file): each was a
# traceback (MemoryError, zip's ValueError, IndexError, TypeError) or a message naming no file.
CLOUDS = np.zeros((5, 2048, 3), np.float32)
HOSTILE_H5 = {
    # a chunked dataset of fill values: 12 KB on disk, 56 GiB for one slice of it
    "absurd": (
        lambda h5: h5.create_dataset("data", shape=(5, 10**9, 3), dtype="f4", chunks=(1, 1024, 3)),
        np.arange(5),
        r"'data' declares shape \(5, 1000000000, 3\), over the bounds",
    ),
    "fewer clouds": (lambda h5: h5.create_dataset("data", data=CLOUDS[:3]), np.arange(5), "not 3"),
    "label 99": (
        lambda h5: h5.create_dataset("data", data=CLOUDS),
        np.array([0, 1, 99, 2, 3]),
        "label 99 of cloud 2 is not a class",
    ),
    "label -1": (
        lambda h5: h5.create_dataset("data", data=CLOUDS),
        np.array([0, -1, 1, 2, 3]),
        "label -1 of cloud 1",
    ),
    "float labels": (
        lambda h5: h5.create_dataset("data", data=CLOUDS),
        np.full(5, np.nan),
        "'label' is float64",
    ),
    "2-d data": (
        lambda h5: h5.create_dataset("data", data=CLOUDS[:, :, 0]),
        np.arange(5),
        r"'data' is float32 \(5, 2048\), not \(N, points, 3\+\)",
    ),
    "a group": (lambda h5: h5.create_group("data"), np.arange(5), "needs datasets"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_H5))
def test_a_hostile_scanobjectnn_file_is_one_line_naming_it(tmp_path, case):
    import h5py

    write_data, labels, message = HOSTILE_H5[case]
    path = tmp_path / SCANOBJECTNN_FILES["obj_only"].format(split="test")
    path.parent.mkdir(parents=True)
    with h5py.File(path, "w") as h5:
        write_data(h5)
        h5["label"] = labels
    with pytest.raises(UsageError, match=message) as caught:
        list(open_benchmark("scanobjectnn", tmp_path, variant="obj_only").shapes())
    assert str(caught.value).startswith(f"{path}: ")


def test_a_scanobjectnn_file_that_is_not_hdf5_is_one_line_naming_it(tmp_path):
    path = tmp_path / SCANOBJECTNN_FILES["obj_only"].format(split="test")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an h5 file" * 10)
    with pytest.raises(UsageError, match=f"{path}: not a readable HDF5 file"):
        open_benchmark("scanobjectnn", tmp_path, variant="obj_only")


def test_shapenet55_maps_synsets_through_cg3d_renames(tmp_path):
    files = ["02691156-a1b2.npy", "03211117-c3d4.npy", "04530566-e5f6.npy", "02747177-0000.npy"]
    write_shapenet55(tmp_path, files)
    bench = open_benchmark("shapenet55", tmp_path)
    names = class_names("shapenet55")
    labels = [s.label for s in bench.shapes()]
    assert [names[i] for i in labels] == ["airplane", "monitor", "ship", "trashcan"]


def test_shapenet55_unknown_synset(tmp_path):
    write_shapenet55(tmp_path, ["09999999-x.npy"])
    with pytest.raises(UsageError, match="unknown synset"):
        list(open_benchmark("shapenet55", tmp_path).shapes())


def test_wrong_dataset_name_and_missing_root(tmp_path):
    with pytest.raises(UsageError, match="--dataset must be one of"):
        open_benchmark("modelnet41", tmp_path)
    with pytest.raises(UsageError, match="^--root: no such file or folder"):
        open_benchmark("modelnet40", tmp_path / "absent")
    # our shards are given as --shards: the message names that option, not --root
    with pytest.raises(UsageError, match="^--shards: no such file or folder"):
        open_benchmark("shards", tmp_path / "absent")
    with pytest.raises(UsageError, match="missing file"):
        open_benchmark("modelnet40", tmp_path)


# Colour: rgb where the benchmark has it, NO_COLOR (0.5) where it has none, said in the metrics.


def test_prepare_points_carries_each_points_rgb_through_fps_and_padding():
    rng = np.random.default_rng(4)
    raw = cube(400, rng, scale=(3, 1, 1), offset=(5, 0, 0))
    red = (raw[:, 0] - 2) / 6  # x spans 2..8: red grows along x from 0 to 1
    rgb = np.column_stack([red, np.full(400, 0.5), np.full(400, 0.25)])
    points = prepare_points(raw, 64, colors=rgb, point_channels=6)
    assert points.shape == (64, 6)
    # each kept point keeps its own colour: red is a function of its (normalised) x
    order = np.argsort(points[:, 0])
    assert np.all(np.diff(points[order, 3]) >= -1e-6)
    assert np.allclose(points[:, 4], 0.5) and np.allclose(points[:, 5], 0.25)
    padded = prepare_points(raw[:5], 16, colors=rgb[:5], point_channels=6)
    np.testing.assert_allclose(np.unique(padded[:, 3]), np.sort(rgb[:5, 0]), atol=1e-6)
    grey = prepare_points(raw, 32, point_channels=6)
    np.testing.assert_array_equal(grey[:, 3:], np.full((32, 3), 0.5, np.float32))
    assert prepare_points(raw, 32, colors=rgb).shape == (32, 3)  # an xyz model: no colour fed


def test_benchmarks_without_colour_say_so_and_count_every_shape(tmp_path):
    from cg3d.eval.readers import COLOR_CONSTANT, color_summary

    write_modelnet(tmp_path / "mn", 40)
    write_ulip_dat(tmp_path / "modelnet40_test_8192pts_fps.dat")
    write_scanobjectnn(tmp_path / "so", SCANOBJECTNN_FILES["obj_only"].format(split="test"))
    write_shapenet55(tmp_path / "sn", ["02691156-a.npy"])
    (tmp_path / "sn" / "test.txt").write_text("02691156-a.npy\n")
    sets = [
        open_benchmark("modelnet40", tmp_path / "mn"),
        open_benchmark("ulip_modelnet40", tmp_path, allow_pickle=True),
        open_benchmark("scanobjectnn", tmp_path / "so", "obj_only"),
        open_benchmark("shapenet55", tmp_path / "sn"),
    ]
    for bench in sets:
        shapes = list(bench.shapes())
        assert all(shape.colors is None for shape in shapes), bench.name
        summary = color_summary(6, bench.color, bench.uncolored)
        assert summary == ({"shapes_without_color": len(shapes)}, {"color": COLOR_CONSTANT})
        xyz_only = color_summary(3, bench.color, bench.uncolored)
        assert xyz_only == ({}, {"color": "not fed (the model takes xyz)"})
    # ModelNet's columns 3:6 are normals: never taken for colour
    assert sets[0].shapes().__next__().points.shape[1] == 6


def test_openshape_rgb_is_kept_scaled_from_0_255_and_a_file_without_it_is_counted(tmp_path):
    import json

    from cg3d.eval.readers import COLOR_FROM_BENCHMARK, color_summary

    rng = np.random.default_rng(6)
    xyz = cube(30, rng).astype(np.float32)
    files = {
        "unit": {"xyz": xyz, "rgb": np.full((30, 3), 0.25, np.float32)},
        "bytes": {"xyz": xyz, "rgb": np.full((30, 3), 51.0, np.float32)},
        "none": {"xyz": xyz},
    }
    for uid, data in files.items():
        np.save(tmp_path / f"{uid}.npy", data, allow_pickle=True)
    entries = [{"category": "mug", "uid": u, "data_path": f"{u}.npy"} for u in files]
    (tmp_path / "lvis.json").write_text(json.dumps(entries))
    bench = open_benchmark("objaverse-lvis", tmp_path, allow_pickle=True)
    colors = {shape.key: shape.colors for shape in bench.shapes()}
    np.testing.assert_allclose(colors["unit"], 0.25)
    np.testing.assert_allclose(colors["bytes"], 0.2)  # 51 / 255
    assert colors["none"] is None  # prepare_points gives it NO_COLOR, not OpenShape's 0.4
    summary = color_summary(6, bench.color, bench.uncolored)
    assert summary == ({"shapes_without_color": 1}, {"color": COLOR_FROM_BENCHMARK})


def _outside_file(h5py, folder: Path) -> Path:
    """An h5 file outside the benchmark's root holding clouds the reader must never see."""
    folder.mkdir()
    with h5py.File(folder / "other.h5", "w") as h5:
        h5["data"] = np.full((5, 2048, 3), 7.0, np.float32)
        h5["label"] = np.arange(5)
    np.full((5, 2048, 3), 7.0, np.float32).tofile(folder / "raw.bin")
    return folder


# HDF5 lets a dataset's values live in another file, and h5py follows each way silently.
ELSEWHERE = {
    "external link": (
        lambda h5py, h5, out: h5.__setitem__("data", h5py.ExternalLink(out / "other.h5", "/data")),
        "'data' links to .*other.h5, another file",
    ),
    "external raw storage": (
        lambda h5py, h5, out: h5.create_dataset(
            "data", (5, 2048, 3), "f4", external=[(str(out / "raw.bin"), 0, h5py.h5f.UNLIMITED)]
        ),
        "'data' keeps its values in .*raw.bin, outside the file",
    ),
    "virtual dataset": (
        lambda h5py, h5, out: h5.create_virtual_dataset("data", _virtual(h5py, out)),
        "'data' keeps its values in other files",
    ),
    "soft link": (
        lambda h5py, h5, out: (
            h5.__setitem__("real", CLOUDS),
            h5.__setitem__("data", h5py.SoftLink("/real")),
        ),
        r"'data' is a soft link \(to /real\)",
    ),
}


def _virtual(h5py, out: Path):
    layout = h5py.VirtualLayout(shape=(5, 2048, 3), dtype="f4")
    layout[:] = h5py.VirtualSource(str(out / "other.h5"), "data", shape=(5, 2048, 3))
    return layout


@pytest.mark.parametrize("case", sorted(ELSEWHERE))
def test_a_scanobjectnn_dataset_stored_in_another_file_is_refused_unread(tmp_path, case):
    import h5py

    outside = _outside_file(h5py, tmp_path / "outside")
    write_data, message = ELSEWHERE[case]
    path = tmp_path / "root" / SCANOBJECTNN_FILES["obj_only"].format(split="test")
    path.parent.mkdir(parents=True)
    with h5py.File(path, "w") as h5:
        write_data(h5py, h5, outside)
        h5["label"] = np.arange(5)
    with pytest.raises(UsageError, match=message) as caught:
        list(open_benchmark("scanobjectnn", tmp_path / "root", variant="obj_only").shapes())
    assert str(caught.value).startswith(f"{path}: ")


def test_scanobjectnn_labels_linked_from_another_file_are_refused(tmp_path):
    import h5py

    outside = _outside_file(h5py, tmp_path / "outside")
    path = tmp_path / "root" / SCANOBJECTNN_FILES["obj_only"].format(split="test")
    path.parent.mkdir(parents=True)
    with h5py.File(path, "w") as h5:
        h5["data"] = CLOUDS
        h5["label"] = h5py.ExternalLink(str(outside / "other.h5"), "/label")
    with pytest.raises(UsageError, match="'label' links to .*other.h5, another file"):
        open_benchmark("scanobjectnn", tmp_path / "root", variant="obj_only")


def _bed_file_replaced(root: Path, how: str) -> None:
    """The list's `bed_0001` made into something that is no file to read."""
    path = root / "bed" / "bed_0001.txt"
    path.unlink()
    if how == "symlink loop":
        path.symlink_to("bed_0001.txt")
    elif how == "fifo":
        os.mkfifo(path)  # opening it to read would block the pass forever
    elif how == "folder":
        path.mkdir()


NOT_A_FILE = {
    "symlink loop": "is a symlink loop",
    "fifo": "is a FIFO, not a file",
    "folder": "is a folder, not a file",
}


@pytest.mark.parametrize("how", sorted(NOT_A_FILE))
def test_a_listed_modelnet_shape_that_is_no_file_says_what_it_is(tmp_path, how):
    write_modelnet(tmp_path)
    _bed_file_replaced(tmp_path, how)
    with pytest.raises(UsageError, match=f"bed_0001.txt' {NOT_A_FILE[how]}"):
        list(open_benchmark("modelnet40", tmp_path).shapes())


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bed_00\x0001", "holds a NUL byte: it names no file"),
        ("bed_" + "9" * 5000, r" characters\) names no file to read \(File name too long"),
    ],
    ids=["nul", "too long"],
)
def test_a_modelnet_list_line_that_can_name_no_file_is_one_line(tmp_path, name, message):
    write_modelnet(tmp_path)
    test_list = tmp_path / "modelnet40_test.txt"
    test_list.write_text(test_list.read_text().replace("bed_0001", name))
    with pytest.raises(UsageError, match=message) as caught:
        list(open_benchmark("modelnet40", tmp_path).shapes())
    assert len(str(caught.value)) < 300


def test_a_shapenet55_cloud_that_is_a_folder_is_named_so(tmp_path):
    write_shapenet55(tmp_path, ["02691156-a.npy"])
    (tmp_path / "shapenet_pc" / "02691156-b.npy").mkdir()
    (tmp_path / "test.txt").write_text("02691156-a.npy\n02691156-b.npy\n")
    with pytest.raises(UsageError, match="02691156-b.npy' is a folder, not a file"):
        list(open_benchmark("shapenet55", tmp_path).shapes())


@pytest.mark.parametrize(
    "dataset,name",
    [
        ("modelnet40", "modelnet40_shape_names.txt"),
        ("modelnet40", "modelnet40_test.txt"),
        ("shapenet55", "test.txt"),
    ],
)
def test_a_benchmark_list_that_is_not_utf8_is_one_line_naming_it(tmp_path, dataset, name):
    """Before: a UnicodeDecodeError traceback from the reader."""
    if dataset == "modelnet40":
        write_modelnet(tmp_path, 40)
    else:
        write_shapenet55(tmp_path, ["02691156-a1.npy"])
    with (tmp_path / name).open("ab") as handle:
        handle.write(b"\xff\xfe\n")
    size = (tmp_path / name).stat().st_size
    with pytest.raises(UsageError) as caught:
        open_benchmark(dataset, tmp_path)
    assert str(caught.value) == (
        f"--root: {tmp_path / name} is not UTF-8 text (byte {size - 3}: invalid start byte)"
    )

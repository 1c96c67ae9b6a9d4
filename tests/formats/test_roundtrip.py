"""Each artifact written by its writer and read back by its reader, in cg3d.formats."""

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from cg3d.errors import UsageError
from cg3d.formats.captions import CaptionsFile, captions_writer, read_captions
from cg3d.formats.failures import read_failures, write_failures
from cg3d.formats.manifest import (
    MeshRecord,
    manifest_rows,
    read_classes,
    read_manifest,
    write_classes,
    write_manifest,
)
from cg3d.formats.points import find_points, iter_points, part_ids, write_points_part
from cg3d.formats.renders import (
    Rendered,
    find_rendered,
    read_render_part,
    render_parts,
    write_render_part,
)
from cg3d.formats.renders import part_ids as render_part_ids
from cg3d.formats.shards import (
    SHARD_PATTERN,
    Skipped,
    decode_points,
    decode_sample,
    iter_samples,
    location,
    npy_bytes,
    read_index,
    sample_members,
    shard_url,
    split_entry_of,
    write_index,
    write_shard,
)
from cg3d.formats.tar import FormatError, tar_members, tar_samples, write_tar
from tests.pipeline.fakes import png_bytes, rewrite_tar, transparent_view


def records() -> list[MeshRecord]:
    return [
        MeshRecord("b-2", "folder", "b.obj", "lamp", "test", synonyms=["light"], sha256="ab"),
        MeshRecord("a-1", "folder", "/abs/a.ply", "chair", "train", name="a wooden chair"),
        MeshRecord("c-3", "folder", "c.off", "chair", "train", status="empty", error="no faces"),
    ]


def test_manifest_round_trip_sorted_by_id_and_ok_only(tmp_path):
    write_manifest(records(), tmp_path)
    assert read_manifest(tmp_path) == sorted(records(), key=lambda r: r.id)
    assert [r.id for r in read_manifest(tmp_path, ok_only=True)] == ["a-1", "b-2"]
    assert list(manifest_rows(tmp_path, ["id", "status"]))[2] == {"id": "c-3", "status": "empty"}


def test_classes_round_trip_and_fall_back_to_the_good_objects(tmp_path):
    write_manifest(records(), tmp_path)
    assert read_classes(tmp_path) == ["chair", "lamp"]  # no classes.json: from the ok rows
    write_classes(["lamp", "chair", "sofa"], tmp_path)
    assert read_classes(tmp_path) == ["lamp", "chair", "sofa"]


def test_a_missing_manifest_names_the_file_before_reading(tmp_path):
    with pytest.raises(UsageError, match="^no manifest at .*manifest.parquet: run `cg3d meshes`"):
        manifest_rows(tmp_path)


def test_failures_round_trip_sorted_by_id(tmp_path):
    rows = [
        {"id": "z", "stage": "sample", "reason": "empty: x"},
        {"id": "a", "stage": "render", "reason": "timeout"},
    ]
    write_failures(rows, tmp_path / "failures.parquet")
    assert read_failures(tmp_path / "failures.parquet") == [rows[1], rows[0]]
    assert read_failures(tmp_path / "none.parquet") == []


@pytest.mark.parametrize("channels", [3, 6])
def test_points_round_trip(tmp_path, channels):
    rng = np.random.default_rng(0)
    clouds = {"a": rng.normal(size=(5, channels)), "b": rng.normal(size=(7, channels))}
    write_points_part(tmp_path / "part-00000.parquet", list(clouds), list(clouds.values()))
    write_points_part(tmp_path / "part-00001.parquet", ["c"], [np.ones((2, channels))])
    read = dict(iter_points(tmp_path))
    assert list(read) == ["a", "b", "c"]
    for key, cloud in clouds.items():
        assert read[key].dtype == np.float32 and np.array_equal(read[key], cloud.astype(np.float32))
    assert part_ids(tmp_path / "part-00001.parquet") == ["c"]
    assert np.array_equal(find_points(tmp_path, "b"), read["b"])
    assert find_points(tmp_path, "nope") is None


def rendered(seed: int) -> Rendered:
    return Rendered({"view_00": png_bytes(seed), "view_01": png_bytes(seed + 1)}, b'{"views": 2}')


def test_render_part_round_trip(tmp_path):
    objects = {"obj-b": rendered(2), "obj-a": rendered(0)}
    write_render_part(tmp_path / "part-00000.tar", objects)
    read = dict(read_render_part(tmp_path / "part-00000.tar"))
    assert read == objects
    assert render_part_ids(tmp_path / "part-00000.tar") == ["obj-a", "obj-b"]
    assert find_rendered(render_parts(tmp_path), "obj-b") == objects["obj-b"]
    assert find_rendered(render_parts(tmp_path), "obj-c") is None


def test_a_render_member_without_a_dot_is_an_error_naming_it(tmp_path):
    part = tmp_path / "part-00000.tar"
    write_render_part(part, {"obj-a": rendered(0)})
    rewrite_tar(
        part, lambda name, data: ("obj-a_view_00_png", data) if "view_00" in name else (name, data)
    )
    with pytest.raises(FormatError, match="'obj-a_view_00_png'.*<object id>.<suffix>"):
        dict(read_render_part(part))
    with pytest.raises(FormatError, match="obj-a_view_00_png"):
        render_part_ids(part)


def test_captions_round_trip_one_row_group_per_batch(tmp_path):
    with captions_writer(tmp_path) as writer:
        writer.write(["a", "b"], [["a chair", "a seat"], ["a lamp"]])
        writer.write([], [])
        writer.write(["c"], [["ünïcode"]])
    assert read_captions(tmp_path) == {
        "a": ["a chair", "a seat"],
        "b": ["a lamp"],
        "c": ["ünïcode"],
    }
    assert CaptionsFile(tmp_path).groups == 2 and CaptionsFile(tmp_path).group_ids(1) == ["c"]


def test_a_failed_captions_write_leaves_no_file(tmp_path):
    with pytest.raises(RuntimeError), captions_writer(tmp_path) as writer:
        writer.write(["a"], [["x"]])
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def write_split(folder, samples: dict, shard_size: int) -> dict:
    (folder / "train").mkdir(parents=True)
    members = [
        (key, sample_members(points, views, b"{}", captions, cls, {"id": key}))
        for key, (points, views, captions, cls) in samples.items()
    ]
    counts, sha256 = [], []
    for start in range(0, len(members), shard_size):
        name = SHARD_PATTERN.format(len(counts))
        count, digest = write_shard(folder / "train" / name, members[start : start + shard_size])
        counts.append(count)
        sha256.append(digest)
    index = {
        "format": 1,
        "classes": ["x", "y"],
        "splits": {"train": split_entry_of("train", counts, sha256)},
    }
    write_index(folder, index)
    return index


def test_shards_round_trip_through_writer_index_and_reader(tmp_path):
    rng = np.random.default_rng(1)
    samples = {
        f"k{i}": (
            rng.normal(size=(8, 3)).astype(np.float32),
            {"view_00": png_bytes(i)},
            [f"c{i}"],
            i % 2,
        )
        for i in range(5)
    }
    index = write_split(tmp_path, samples, shard_size=2)
    assert read_index(tmp_path) == index
    assert index["splits"]["train"]["counts"] == [2, 2, 1]
    read = list(iter_samples(tmp_path, "train"))
    assert [s["key"] for s in read] == list(samples)
    for sample in read:
        points, views, captions, cls = samples[sample["key"]]
        assert np.array_equal(sample["points"], points)
        assert sample["captions"] == captions and sample["cls"] == cls
        assert sample["meta"] == {"id": sample["key"]} and sample["views"][0].size == (32, 32)


def test_decode_sample_puts_a_transparent_view_on_white_and_keeps_an_opaque_one():
    buffer = io.BytesIO()
    transparent_view(32).save(buffer, format="PNG")
    opaque = png_bytes(5)
    views = {"view_00": buffer.getvalue(), "view_01": opaque}
    members = sample_members(np.zeros((4, 3)), views, None, ["a chair"], 0, {})
    decoded = decode_sample({"__key__": "a-1", **dict(members)})["views"]
    transparent = np.asarray(decoded[0])
    assert decoded[0].mode == "RGB" and (transparent[0, 0] == 255).all()
    assert transparent[16, 16].tolist() == [200, 30, 30]
    assert np.array_equal(np.asarray(decoded[1]), np.asarray(Image.open(io.BytesIO(opaque))))


def test_decode_points_fast_path_agrees_with_np_load_and_falls_back():
    cloud = np.random.default_rng(2).normal(size=(9, 6)).astype(np.float32)
    assert np.array_equal(decode_points(npy_bytes(cloud)), cloud)
    buffer = io.BytesIO()
    np.save(buffer, cloud.astype(np.float64).T.copy().T)  # float64, Fortran order: np.load's way
    assert np.allclose(decode_points(buffer.getvalue()), cloud)
    with pytest.raises(ValueError, match="pickled"):
        decode_points(b"\x80\x04pickled bytes")


def test_the_tar_walk_reads_long_names_as_tarfile_writes_them(tmp_path):
    long = "k" * 120 + ".points.npy"
    for fmt in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        path = tmp_path / f"{fmt}.tar"
        with tarfile.open(path, "w", format=fmt) as tar:
            for name, data in ((long, b"abc"), ("short.cls", b"1")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        with open(path, "rb") as stream:
            assert list(tar_members(stream)) == [(long, b"abc"), ("short.cls", b"1")]


def test_a_member_without_a_dot_is_its_own_bad_sample(tmp_path):
    path = tmp_path / "x.tar"
    write_tar(path, {"a.cls": b"0", "a.points.npy": b"p", "b": b"?", "c.cls": b"1"})
    with open(path, "rb") as stream:
        samples = list(tar_samples(stream))
    assert samples == [
        {"__key__": "a", "cls": b"0", "points.npy": b"p"},
        {"__key__": "b", "__error__": "tar member 'b' is not named <object id>.<suffix>"},
        {"__key__": "c", "cls": b"1"},
    ]


@pytest.mark.parametrize("cut", [1000, 2540])  # inside the data, inside its padding
def test_a_truncated_tar_is_a_format_error(tmp_path, cut):
    path = tmp_path / "x.tar"
    write_tar(path, {"a.cls": b"0" * 2000})  # header 512 + data 2000 + padding to 2560
    path.write_bytes(path.read_bytes()[:cut])
    with open(path, "rb") as stream, pytest.raises(FormatError, match="truncated"):
        list(tar_members(stream))
    with open(path, "rb") as stream, pytest.raises(FormatError, match="truncated"):
        list(tar_members(stream, read_data=False))


def test_urls_that_went_through_path_get_their_slashes_back():
    from pathlib import Path

    assert (
        location(Path("http://127.0.0.1:8000/data/shards")) == "http://127.0.0.1:8000/data/shards"
    )
    assert location(Path("pipe:aws s3 cp s3://b/x/{} -")) == "pipe:aws s3 cp s3://b/x/{} -"
    assert shard_url("http://h/s/", "train/a.tar") == "http://h/s/train/a.tar"
    assert shard_url("pipe:cat /d/{}", "index.json") == "pipe:cat /d/index.json"
    assert shard_url("/d", "index.json") == "/d/index.json"


def test_skipped_counts_by_reason_and_into_a_shared_value():
    import multiprocessing

    shared = multiprocessing.get_context("spawn").Value("q", 0)
    skipped = Skipped(shared)
    skipped.add("sample a", "member cls is missing")
    skipped.add("shard s", "unreadable shard (x)", 3)
    skipped.add("shard t", "unreadable shard (y)", 0)
    assert skipped.total == 4 and shared.value == 4
    assert skipped.reasons == {"member cls is missing": 1, "unreadable shard (x)": 3}

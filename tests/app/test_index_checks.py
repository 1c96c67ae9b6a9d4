"""An index is checked when it is opened, and a build counts what it lost (issue 25 §3).

The rule: `open_index` trusts no file of the folder alone. objects.parquet, points.npy,
views.npy and view_object.npy must agree with each other and with retrieval.json (rows,
width, dtype, plain arrays); anything else, whichever file is damaged and however, is one
line naming that file, never an answer from part of the objects nor a traceback.
"""

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from cg3d.app.index import build_index, open_index
from cg3d.errors import UsageError
from cg3d.params import IndexConfig


def _cut_rows(name: str, keep: int) -> Callable[[Path], None]:
    def damage(index: Path) -> None:
        array = np.load(index / name)
        np.save(index / name, array[:keep])  # a valid .npy, of fewer rows

    return damage


def _pickled(name: str) -> Callable[[Path], None]:
    def damage(index: Path) -> None:
        array = np.load(index / name)
        np.save(index / name, np.array([row for row in array] + [None], dtype=object))

    return damage


def _truncated(name: str, fraction: float = 0.5) -> Callable[[Path], None]:
    def damage(index: Path) -> None:
        data = (index / name).read_bytes()
        (index / name).write_bytes(data[: int(len(data) * fraction)])

    return damage


def _retyped(name: str, dtype: str) -> Callable[[Path], None]:
    def damage(index: Path) -> None:
        np.save(index / name, np.load(index / name).astype(dtype))

    return damage


def _view_owner_out_of_range(index: Path) -> None:
    owner = np.load(index / "view_object.npy")
    owner[-1] = len(np.load(index / "points.npy")) + 5
    np.save(index / "view_object.npy", owner)


def _view_owner_unordered(index: Path) -> None:
    np.save(index / "view_object.npy", np.load(index / "view_object.npy")[::-1].copy())


def _objects_without(column: str) -> Callable[[Path], None]:
    def damage(index: Path) -> None:
        table = pq.read_table(index / "objects.parquet")
        pq.write_table(table.drop_columns([column]), index / "objects.parquet")

    return damage


def _objects_cut(index: Path) -> None:
    table = pq.read_table(index / "objects.parquet")
    pq.write_table(table.slice(0, 4), index / "objects.parquet")


def _descriptor(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(index: Path) -> None:
        descriptor = json.loads((index / "retrieval.json").read_text())
        changed = change(descriptor)
        (index / "retrieval.json").write_text(
            json.dumps(descriptor if changed is None else changed)
        )

    return damage


def _text(name: str, text: bytes) -> Callable[[Path], None]:
    def damage(index: Path) -> None:
        (index / name).write_bytes(text)

    return damage


def _fifo(name: str) -> Callable[[Path], None]:
    def damage(index: Path) -> None:  # before: the search blocked in open() for ever
        (index / name).unlink()
        os.mkfifo(index / name)

    return damage


# damage → the file the one line must name
DAMAGES = {
    "points a FIFO": (_fifo("points.npy"), "points.npy"),
    "view owners a FIFO": (_fifo("view_object.npy"), "view_object.npy"),
    "objects a FIFO": (_fifo("objects.parquet"), "objects.parquet"),
    "points cut to 4 rows": (_cut_rows("points.npy", 4), "points.npy"),
    "views cut to 3 rows": (_cut_rows("views.npy", 3), "views.npy"),
    "view owners cut": (_cut_rows("view_object.npy", 5), "view_object.npy"),
    "points pickled": (_pickled("points.npy"), "points.npy"),
    "views pickled": (_pickled("views.npy"), "views.npy"),
    "points truncated bytes": (_truncated("points.npy"), "points.npy"),
    "points header only": (_truncated("points.npy", 0.05), "points.npy"),
    "points float64": (_retyped("points.npy", "float64"), "points.npy"),
    "view owners int32": (_retyped("view_object.npy", "int32"), "view_object.npy"),
    "view owner out of range": (_view_owner_out_of_range, "view_object.npy"),
    "view owners unordered": (_view_owner_unordered, "view_object.npy"),
    "points not npy": (_text("points.npy", b"hello"), "points.npy"),
    "objects truncated": (_truncated("objects.parquet"), "objects.parquet"),
    "objects empty file": (_text("objects.parquet", b""), "objects.parquet"),
    "objects cut to 4 rows": (_objects_cut, "objects.parquet"),
    "objects without part": (_objects_without("part"), "objects.parquet"),
    "retrieval.json cut": (_truncated("retrieval.json"), "retrieval.json"),
    "retrieval.json not utf-8": (_text("retrieval.json", b"\xff\xfe{"), "retrieval.json"),
    "retrieval.json no dim": (_descriptor(lambda d: d.pop("dim")), "retrieval.json"),
    "retrieval.json dim text": (_descriptor(lambda d: d.update(dim="64")), "retrieval.json"),
    "retrieval.json dim true": (_descriptor(lambda d: d.update(dim=True)), "retrieval.json"),
    "retrieval.json objects -1": (_descriptor(lambda d: d.update(objects=-1)), "retrieval.json"),
    "retrieval.json more objects": (
        _descriptor(lambda d: d.update(objects=d["objects"] + 1)),
        "objects.parquet",
    ),
    "retrieval.json model text": (_descriptor(lambda d: d.update(model="x")), "retrieval.json"),
    "retrieval.json no sha256": (
        _descriptor(lambda d: d["model"].pop("checkpoint_sha256")),
        "retrieval.json",
    ),
    "retrieval.json no clip weights": (
        _descriptor(lambda d: d["model"].pop("clip_weights")),
        "retrieval.json",
    ),
}


@pytest.mark.timeout(120)  # a FIFO blocked the reader for ever
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_index_is_one_line_naming_the_file(tiny_index, tmp_path, damage):
    index = tmp_path / "index"
    shutil.copytree(tiny_index, index)
    spoil, named = DAMAGES[damage]
    spoil(index)
    with pytest.raises(UsageError) as raised:
        open_index(index).search(embedding=np.ones(64), top=3)
    (line,) = str(raised.value).splitlines()
    assert line.startswith(f"{index / named}: "), line


def test_an_intact_index_opens(tiny_index):
    assert len(open_index(tiny_index).search(embedding=np.ones(64), top=100)) == 12


class RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.mark.parametrize("name", ["points.npy", "views.npy", "view_object.npy"])
def test_a_pickle_in_an_index_never_runs(tiny_index, tmp_path, name):
    index = tmp_path / "index"
    shutil.copytree(tiny_index, index)
    marker = tmp_path / "PICKLE_RAN"
    np.save(index / name, np.array([RunsCode(marker)], dtype=object), allow_pickle=True)
    with pytest.raises(UsageError, match=name):
        open_index(index)
    assert not marker.exists()


def test_search_command_on_a_damaged_index_is_one_line(tiny_index, tmp_path):
    index = tmp_path / "index"
    shutil.copytree(tiny_index, index)
    _cut_rows("points.npy", 4)(index)
    np.save(tmp_path / "q.npy", np.ones(64, dtype=np.float32))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cg3d",
            "search",
            str(index),
            "--embedding",
            str(tmp_path / "q.npy"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {index / 'points.npy'}: a damaged index file (float32 (4, 64), retrieval.json "
        "says float32 (12, 64)); rebuild the index"
    ]


@pytest.mark.parametrize("cut", [0.15, 0.35])
def test_a_build_counts_the_samples_lost_not_the_failure_rows(
    tiny_checkpoint, tiny_shards, tmp_path, cut
):
    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards, shards)
    index = json.loads((shards / "index.json").read_text())
    shard = shards / index["splits"]["test"]["shards"][0]
    data = shard.read_bytes()
    shard.write_bytes(data[: int(len(data) * cut)])  # the shard ends mid-way: samples lost
    planned = sum(index["splits"]["test"]["counts"])
    built = build_index(tiny_checkpoint, shards, tmp_path / "index", IndexConfig(splits="test"))
    rows = pq.read_table(tmp_path / "index" / "failures.parquet").num_rows
    assert built["lost"] == planned - built["objects"] >= 2
    assert built["lost"] > rows  # one row stood for several samples
    assert len(open_index(tmp_path / "index")) == built["objects"]


@pytest.mark.timeout(120)  # a FIFO blocked the reader for ever
@pytest.mark.parametrize("damage", ["removed", "truncated", "not parquet", "a FIFO"])
def test_a_part_damaged_after_the_build_is_one_line_when_a_thumbnail_is_read(
    tiny_index, tmp_path, damage
):
    index = tmp_path / "index"
    shutil.copytree(tiny_index, index)
    part = index / "part-00000.parquet"
    if damage == "removed":
        part.unlink()
    elif damage == "a FIFO":
        part.unlink()
        os.mkfifo(part)
    else:
        data = part.read_bytes()
        part.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"hello")
    opened = open_index(index)
    row = next(i for i in range(len(opened)) if opened.objects["part"][i].as_py() == 0)
    hit = opened.hit(row, 1.0)
    with pytest.raises(UsageError, match=f"^{part}: a damaged index file"):
        opened.thumbnail(hit)


# `cg3d inspect` of an index folder. Before: its part-*.parquet made it a points folder, and
# inspect said "part-00000.parquet is damaged (its points column holds fixed_size_list...):
# rerun `cg3d sample`" of a whole index.


def test_inspect_names_an_indexs_objects_classes_and_splits(tiny_index):
    from collections import Counter

    from cg3d.pipeline.inspect import inspect_folder

    objects = pq.read_table(tiny_index / "objects.parquet").to_pylist()
    found = inspect_folder(tiny_index)
    assert found.kind == "index"
    assert found.ids == [row["id"] for row in objects] and len(found.ids) == 12
    assert found.classes == Counter(row["class_name"] for row in objects)
    assert found.splits == Counter(row["split"] for row in objects)
    assert found.details["embeddings"] == "12 objects, 24 views, 64-d"
    result = subprocess.run(
        [sys.executable, "-m", "cg3d", "inspect", str(tiny_index)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{tiny_index}: index, 12 ids, 0 failures")


@pytest.mark.parametrize("damage", ["points cut to 4 rows", "view owner out of range"])
def test_inspect_of_a_damaged_index_is_the_line_search_gives(tiny_index, tmp_path, damage):
    from cg3d.pipeline.inspect import inspect_folder

    index = tmp_path / "index"
    shutil.copytree(tiny_index, index)
    DAMAGES[damage][0](index)
    with pytest.raises(UsageError) as searched:
        open_index(index)
    with pytest.raises(UsageError) as inspected:
        inspect_folder(index)
    assert str(inspected.value) == str(searched.value)


def test_inspect_of_a_killed_build_says_it_is_unfinished(tiny_index, tmp_path):
    from cg3d.pipeline.inspect import inspect_folder

    index = tmp_path / "index"
    shutil.copytree(tiny_index, index)
    # as the build leaves it when killed embedding its last shard (a part per shard)
    for name in ("retrieval.json", "objects.parquet", "points.npy", "views.npy"):
        (index / name).unlink()
    parts = sorted(index.glob("part-*.parquet"))
    parts[-1].unlink()
    found = inspect_folder(index)
    assert found.kind == "index" and found.ids == []
    built = f"{len(parts) - 1} of {len(parts)} parts built, no retrieval.json"
    assert found.details["unfinished"].startswith(built)


@pytest.mark.parametrize("plan", [b"{cut", b"[" * 100_000], ids=["cut", "deep"])
def test_inspect_of_a_killed_build_with_a_damaged_plan_names_the_plan(tiny_index, tmp_path, plan):
    """`inspect` reads an index build's plan as every stage reads its own (`read_plan`: a
    damaged one is no plan), then the killed build's parts are those of a points folder; the
    plan, read before them, is still the line, not "part-00000.parquet is damaged ... rerun
    `cg3d sample`"."""
    from cg3d.pipeline.inspect import inspect_folder

    index = tmp_path / "index"
    shutil.copytree(tiny_index, index)
    for name in ("retrieval.json", "objects.parquet", "points.npy", "views.npy"):
        (index / name).unlink()
    (index / ".plan.json").write_bytes(plan)
    with pytest.raises(UsageError) as raised:
        inspect_folder(index)
    assert str(raised.value).startswith(f"{index / '.plan.json'}: not valid JSON")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["FIFO", "folder", "socket"])
def test_inspect_of_a_killed_build_whose_plan_is_no_file_names_the_plan(
    tiny_index, tmp_path, monkeypatch, kind
):
    """A FIFO, a folder or a socket in place of a killed build's .plan.json is named as what it
    is. Before, the folder read as points: "part-00000.parquet is damaged ...: rerun `cg3d
    sample`", which sent the user to a stage that never wrote it."""
    import socket

    from cg3d.pipeline.inspect import inspect_folder

    index = tmp_path / "index"
    shutil.copytree(tiny_index, index)
    for name in ("retrieval.json", "objects.parquet", "points.npy", "views.npy"):
        (index / name).unlink()
    (index / ".plan.json").unlink()
    monkeypatch.chdir(index)  # a socket's path must be short: bind its name in the folder
    if kind == "FIFO":
        os.mkfifo(".plan.json")
    elif kind == "folder":
        os.mkdir(".plan.json")
    else:
        listening = socket.socket(socket.AF_UNIX)
        listening.bind(".plan.json")
    with pytest.raises(UsageError) as raised:
        inspect_folder(index)
    assert str(raised.value) == f"{index / '.plan.json'} is a {kind}, not a file"

"""The bookkeeping around the per-object work at real scale (600k shards, 100k-1M objects):
each pinned by what it does per row (calls counted, rows held), never by a time."""

import bisect
import os
import posixpath

import numpy as np
import pytest

from cg3d.eval.metrics import classification_metrics
from cg3d.eval.zeroshot import top_confusions
from cg3d.formats.points import PointsLookup, write_points_part
from cg3d.formats.shards import shard_outside

SHARDS = 2000


def big_index(names: list[str]) -> dict:
    return {"splits": {"train": {"shards": names}}}


@pytest.fixture
def counted_realpath(monkeypatch):
    """Every `os.path.realpath` (what `Path.resolve` and `files.real_path` call), counted."""
    calls = []
    real = posixpath.realpath

    def counting(path, *args, **kwargs):
        calls.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os.path, "realpath", counting)
    return calls


def test_shard_outside_resolves_each_folder_once_not_each_shard(tmp_path, counted_realpath):
    """Before: every shard's whole path and the root resolved again, 80 s for 600k shards."""
    (tmp_path / "train").mkdir()
    names = [f"train/shard-{i:06d}.tar" for i in range(SHARDS)]
    for name in names[:10]:
        (tmp_path / name).write_bytes(b"")
    assert shard_outside(tmp_path, big_index(names)) is None
    assert len(counted_realpath) <= 4  # the root and the one folder, not 2 per shard


def test_shard_outside_still_follows_a_symlinked_shard_or_folder(tmp_path):
    outside = tmp_path / "elsewhere"
    (outside / "train").mkdir(parents=True)
    (outside / "train" / "x.tar").write_bytes(b"")
    shards = tmp_path / "shards"
    (shards / "train").mkdir(parents=True)
    names = [f"train/shard-{i:06d}.tar" for i in range(SHARDS)]
    (shards / names[-1]).symlink_to(outside / "train" / "x.tar")
    found = shard_outside(shards, big_index(names))
    assert found == f"shard {names[-1]} resolves outside {shards}"
    # a link that stays inside is a shard like any other
    (shards / names[-1]).unlink()
    (shards / names[-1]).symlink_to(shards / "train" / "shard-000000.tar")
    assert shard_outside(shards, big_index(names)) is None
    # a folder of the names that leads out: its every shard is outside
    (shards / "test").symlink_to(outside / "train")
    index = big_index(names)
    index["splits"]["test"] = {"shards": ["test/x.tar"]}
    assert shard_outside(shards, index) == f"shard test/x.tar resolves outside {shards}"
    # a `.` in a name is read as the system reads it
    assert shard_outside(shards, big_index(["train/./shard-000001.tar"])) is None


def test_classification_metrics_keep_the_confusion_an_array():
    """Before: the (C, C) matrix came back as Python lists (100M objects for 10k classes: 3 GB
    and 15 s more per evaluation, and per epoch of a fine-tune) for callers that took it back
    into NumPy."""
    classes = [f"c{i}" for i in range(300)]
    scores = np.eye(300, dtype=np.float32)[[0, 1, 2, 2]]
    metrics = classification_metrics(scores, np.array([0, 1, 2, 0]), classes)
    confusion = metrics["confusion"]
    assert isinstance(confusion, np.ndarray) and confusion.shape == (300, 300)
    assert confusion[0, 2] == 1 and confusion.sum() == 4


def test_top_confusions_sorts_the_mistakes_not_every_cell(monkeypatch):
    """Before: a stable sort of all C² cells (18 s, 1.6 GB for 10k classes); now of the cells
    that hold a mistake, in the same order: most first, ties in (actual, predicted) order."""
    classes = [f"c{i}" for i in range(400)]
    confusion = np.zeros((400, 400), dtype=np.int64)
    confusion[7, 3] = confusion[2, 9] = confusion[2, 1] = 2  # a tie: row, then column order
    confusion[399, 0] = 5
    confusion[5, 5] = 9  # right, not a mistake
    confusion[1, 4] = 1
    sorted_sizes = []
    argsort = np.argsort

    def counting(values, *args, **kwargs):
        sorted_sizes.append(np.size(values))
        return argsort(values, *args, **kwargs)

    monkeypatch.setattr(np, "argsort", counting)
    rows = top_confusions(confusion, classes, top=4)
    assert [(r["actual"], r["predicted"], r["count"]) for r in rows] == [
        ("c399", "c0", 5),
        ("c2", "c1", 2),
        ("c2", "c9", 2),
        ("c7", "c3", 2),
    ]
    assert rows[1]["share_of_actual"] == 50.0
    assert max(sorted_sizes) <= 5  # the five mistaken cells, not 160,000


def test_points_lookup_looks_only_at_the_groups_near_the_ids(tmp_path, monkeypatch):
    """Before: every `get_many` (one a pack shard) bisected its ids against every row group of
    the points folder, O(objects²) a pack: 100k to 400k objects took 1.5 to 8.5 s."""
    parts, per_part = 300, 3
    ids = [f"obj{i:06d}" for i in range(parts * per_part)]
    cloud = np.zeros((2, 3), np.float32)
    for p in range(parts):
        chunk = ids[p * per_part : (p + 1) * per_part]
        write_points_part(tmp_path / f"part-{p:05d}.parquet", chunk, [cloud] * per_part)
    lookup = PointsLookup(tmp_path)
    bisects = []
    bisect_left = bisect.bisect_left

    def counting(*args, **kwargs):
        bisects.append(args)
        return bisect_left(*args, **kwargs)

    monkeypatch.setattr(bisect, "bisect_left", counting)
    asked = ids[10:14]  # a shard's ids: consecutive in their split, in parts 3 and 4
    assert sorted(lookup.get_many(asked)) == asked
    assert len(bisects) <= 3  # the groups whose range meets [obj000010, obj000013]: not 300
    # ids far apart: every group between them is looked at, and each found
    asked = [ids[0], ids[600], ids[-1]]
    assert sorted(lookup.get_many(asked)) == asked
    assert lookup.get_many([]) == {} and lookup.get_many(["nothere"]) == {}

"""The bookkeeping around the per-object work at real scale (600k shards, 100k-1M objects):
each pinned by what it does per row (calls counted, rows held), never by a time."""

import os
import posixpath

import pytest

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

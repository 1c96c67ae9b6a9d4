"""Outputs that DVC checks out from a cache on another filesystem still read.

DVC links a checked-out output to its cache by the first of `cache.type` that works: a hardlink
fails across filesystems (a cache on another disk, `dvc cache dir /mnt/...`), and a symlink
points outside the output's folder, which every reader of ours refuses (a reader reads nothing
outside its root: `cg3d.files.confined_path`). So the project's .dvc/config lists no symlink:
such a checkout copies.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from cg3d.formats.shards import read_index, shard_outside
from tests.dvc_runs import dvc
from tests.pipeline.fakes import fake_pipeline

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def other_filesystem(tmp_path: Path) -> Path:
    """A fresh folder on a filesystem other than tmp_path's (a tmpfs), or skip."""
    for base in (Path("/dev/shm"), Path("/run/user") / str(os.getuid())):
        usable = base.is_dir() and os.access(base, os.W_OK)
        if usable and base.stat().st_dev != tmp_path.stat().st_dev:
            return Path(tempfile.mkdtemp(prefix="cg3d-cache.", dir=base))
    pytest.skip("no writable folder on another filesystem")


def test_shards_checked_out_from_a_cache_on_another_filesystem_read(tmp_path):
    cache = other_filesystem(tmp_path)
    try:
        project = tmp_path / "project"
        fake_pipeline(project / "data", per_class=4, shard_size=3, views=2, n=64)
        dvc(project, "init", "--no-scm", "-q")
        shutil.copy(ROOT / ".dvc" / "config", project / ".dvc" / "config")  # its cache.type
        dvc(project, "config", "core.no_scm", "true")  # as `init --no-scm` had set
        dvc(project, "cache", "dir", str(cache))
        dvc(project, "add", "-q", "data/shards")
        shutil.rmtree(project / "data" / "shards")
        dvc(project, "checkout", "-q")  # as `dvc pull`, `dvc exp apply` or a restore check out

        shards = project / "data" / "shards"
        index = read_index(shards)  # refused when index.json links into the cache
        assert shard_outside(shards, index) is None
        assert not any(path.is_symlink() for path in shards.rglob("*"))
    finally:
        shutil.rmtree(cache, ignore_errors=True)

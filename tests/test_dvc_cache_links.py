"""Outputs that DVC checks out from a cache on another filesystem still read.

DVC links a checked-out output to its cache by the first of `cache.type` that works: a hardlink
fails across filesystems (a cache on another disk, `dvc cache dir /mnt/...`), and a symlink
points outside the output's folder, which every reader of ours refuses (a reader reads nothing
outside its root: `cg3d.files.confined_path`). So the project's .dvc/config lists no symlink:
such a checkout copies.

On one filesystem without reflink the checkout hardlinks each file to the cache's own (0444):
a stage rerun into such a folder must replace the files, never write through them.
"""

import hashlib
import os
import shutil
import subprocess
import sys
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


def cache_files_changed(cache: Path) -> list[str]:
    """The files of a DVC cache whose bytes no longer hash to their name."""
    changed = []
    for path in (cache / "files" / "md5").glob("*/*"):
        name = path.parent.name + path.name.removesuffix(".dir")
        if hashlib.md5(path.read_bytes()).hexdigest() != name:
            changed.append(str(path))
    return changed


def test_stages_rerun_into_hardlinked_checkouts_leave_the_cache(tmp_path):
    project = tmp_path / "project"
    data = project / "data"
    fake_pipeline(data, per_class=4, shard_size=3, views=2, n=64)
    dvc(project, "init", "--no-scm", "-q")
    dvc(project, "config", "cache.type", "hardlink")  # as on ext4, XFS without reflink, NFS
    dvc(project, "add", "-q", "data/captions", "data/shards")
    dvc(project, "checkout", "-q", "--relink")
    index = data / "shards" / "index.json"
    if index.stat().st_nlink < 2:
        pytest.skip("this file system makes no hardlinks")
    assert not os.access(index, os.W_OK) or os.getuid() == 0  # DVC's 0444 (root ignores it)

    def cg3d(*args: str) -> None:
        done = subprocess.run([sys.executable, "-m", "cg3d", *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    cg3d("caption", "--meshes", f"{data}/meshes", "--out", f"{data}/captions", "--seed", "1")
    folders = [f"--{name}={data}/{name}" for name in ("meshes", "points", "renders", "captions")]
    cg3d("pack", *folders, "--out", f"{data}/shards", "--shard-size", "2")

    assert cache_files_changed(project / ".dvc" / "cache") == []
    assert "modified" in dvc(project, "status")  # the reruns wrote new files in their place
    assert read_index(data / "shards")["splits"]

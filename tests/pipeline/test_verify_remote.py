"""`cg3d verify` on shards served over HTTP and through a `pipe:` command: the same checks,
checksums included (each shard is hashed as it streams)."""

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.pipeline.verify import verify_shards
from tests.formats.server import serve
from tests.pipeline.fakes import fake_pipeline


def flip_a_points_byte(shards):
    shard = shards / "train" / "shard-000000.tar"
    data = bytearray(shard.read_bytes())
    data[data.index(b"\x93NUMPY") + 1] ^= 0xFF
    shard.write_bytes(bytes(data))


def test_verify_over_http_passes_good_shards_and_catches_a_flipped_byte(tmp_path):
    fake_pipeline(tmp_path)
    shards = tmp_path / "shards"
    with serve(shards) as url:
        result = CliRunner().invoke(app, ["verify", url])  # through typer's Path argument
        assert result.exit_code == 0, result.output
        local = verify_shards(shards)
        assert "ok:" in result.output and f"{local.samples} samples" in result.output
        flip_a_points_byte(shards)
        report = verify_shards(url)
    assert any("train/shard-000000.tar: sha256 differs" in p for p in report.problems)
    assert any("synthetic-chair-000" in p and "points.npy" in p for p in report.problems)


def test_verify_through_a_pipe_command_and_a_missing_remote_shard(tmp_path):
    fake_pipeline(tmp_path)
    shards = tmp_path / "shards"
    assert verify_shards(f"pipe:cat {shards}/{{}}").problems == []
    (shards / "test" / "shard-000000.tar").unlink()
    problems = verify_shards(f"pipe:cat {shards}/{{}}").problems
    assert any(p.startswith("test/shard-000000.tar: unreadable") for p in problems)
    with serve(shards) as url:
        problems = verify_shards(url).problems
    assert any(p.startswith("test/shard-000000.tar: unreadable") for p in problems)


def test_an_unreachable_index_is_one_line(tmp_path):
    with serve(tmp_path) as url:
        done = subprocess.run(
            [sys.executable, "-m", "cg3d", "verify", f"{url}/nothing"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"cannot read {url}/nothing/index.json" in done.stderr


def test_an_index_that_never_ends_is_read_no_further_than_its_bound(monkeypatch):
    """Before: `pipe:cat /dev/zero` as the index took 16 GB of memory in 20 s (read whole).
    With the bound at 1 MiB, a 3 MB stream stops at the bound with one line."""
    from cg3d.errors import UsageError
    from cg3d.formats import shards as shards_module

    monkeypatch.setattr(shards_module, "MAX_INDEX_BYTES", 1 << 20)
    with pytest.raises(UsageError, match=r"index.json: more than 1 MiB: not a `cg3d pack` index$"):
        verify_shards("pipe:head -c 3000000 /dev/zero # {}")

import json

from typer.testing import CliRunner

from cg3d.cli import app
from tests.pipeline.fakes import fake_pipeline, rewrite_tar


def test_verify_passes_good_shards(tmp_path):
    fake_pipeline(tmp_path)
    result = CliRunner().invoke(app, ["verify", str(tmp_path / "shards")])
    assert result.exit_code == 0, result.output
    assert "ok:" in result.output


def test_verify_catches_a_truncated_shard(tmp_path):
    fake_pipeline(tmp_path)
    shard = tmp_path / "shards" / "train" / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:1500])
    result = CliRunner().invoke(app, ["verify", str(tmp_path / "shards")])
    assert result.exit_code == 1
    assert "shard-000001.tar" in result.output and "shard-000000.tar" not in result.output


def test_verify_catches_a_flipped_byte_and_names_the_key(tmp_path):
    fake_pipeline(tmp_path)
    shard = tmp_path / "shards" / "train" / "shard-000000.tar"
    data = bytearray(shard.read_bytes())
    start = data.index(b"\x93NUMPY")  # the first sample's points.npy
    data[start + 1] ^= 0xFF
    shard.write_bytes(bytes(data))
    result = CliRunner().invoke(app, ["verify", str(tmp_path / "shards")])
    assert result.exit_code == 1
    assert "sha256" in result.output
    assert "synthetic-chair-000" in result.output and "points" in result.output


def test_verify_catches_a_count_that_differs_from_the_index(tmp_path):
    fake_pipeline(tmp_path)
    index_path = tmp_path / "shards" / "index.json"
    index = json.loads(index_path.read_text())
    index["splits"]["train"]["counts"][0] += 1
    index["splits"]["train"]["samples"] += 1
    index_path.write_text(json.dumps(index))
    result = CliRunner().invoke(app, ["verify", str(tmp_path / "shards")])
    assert result.exit_code == 1 and "index says 4" in result.output


def test_verify_names_a_member_without_a_dot(tmp_path):
    fake_pipeline(tmp_path)
    shard = tmp_path / "shards" / "train" / "shard-000000.tar"
    rewrite_tar(shard, lambda name, data: (name.replace(".cls", "_cls"), data))
    result = CliRunner().invoke(app, ["verify", str(tmp_path / "shards")])
    assert result.exit_code == 1
    assert "tar member 'synthetic-chair-000_cls' is not named" in result.output

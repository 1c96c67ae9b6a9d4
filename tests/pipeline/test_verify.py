import io
import json
import subprocess
import sys
import tarfile

import pytest
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.formats.tar import tar_members
from tests.pipeline.fakes import CAMERA_EDITS, edited_cameras, fake_pipeline, rewrite_tar


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


def test_verify_names_every_object_a_copied_shard_holds_twice(tmp_path):
    """A test shard copied into train under a new name, the index edited to match (its count
    and sha256 right): every check of the shard passed and verify said "ok", though each of
    its objects would be trained on and tested on."""
    fake_pipeline(tmp_path)
    shards = tmp_path / "shards"
    index = json.loads((shards / "index.json").read_text())
    test, train = index["splits"]["test"], index["splits"]["train"]
    copy = "train/shard-000099.tar"
    (shards / copy).write_bytes((shards / test["shards"][0]).read_bytes())
    train["shards"].append(copy)
    train["counts"].append(test["counts"][0])
    train["sha256"].append(test["sha256"][0])
    train["samples"] += test["counts"][0]
    (shards / "index.json").write_text(json.dumps(index))
    with tarfile.open(shards / copy) as tar:  # tarfile's own reading of the copy's keys
        keys = {name.split(".")[0] for name in tar.getnames()}
    result = CliRunner().invoke(app, ["verify", str(shards)])
    assert result.exit_code == 1, result.output
    twice = [line for line in result.output.splitlines() if "also in" in line]
    # One line for the pair of shards (it was one per key: 120 for a real shard), naming the
    # count, the shard read first (train's copy) and one of the keys as an example.
    assert len(twice) == 1, result.output
    assert len(keys) == test["counts"][0] > 1
    assert f"{test['shards'][0]}: {len(keys)} key(s) also in {copy}, first " in twice[0]
    assert twice[0].rsplit("first ", 1)[1] in keys


def test_verify_names_a_key_a_shard_holds_twice_in_one_line(tmp_path):
    """The first sample's members appended again at the end of its own shard."""
    fake_pipeline(tmp_path)
    shard = tmp_path / "shards" / "train" / "shard-000000.tar"
    with tarfile.open(shard) as tar:
        names = tar.getnames()
        first = names[0].split(".")[0]
        members = [(n, tar.extractfile(n).read()) for n in names if n.split(".")[0] == first]
    with tarfile.open(shard, "a") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    result = CliRunner().invoke(app, ["verify", str(tmp_path / "shards")])
    assert result.exit_code == 1, result.output
    twice = [line for line in result.output.splitlines() if "earlier in this shard" in line]
    assert twice == [f"bad train/shard-000000.tar: 1 key(s) earlier in this shard, first {first}"]


def test_verify_names_a_member_without_a_dot(tmp_path):
    fake_pipeline(tmp_path)
    shard = tmp_path / "shards" / "train" / "shard-000000.tar"
    rewrite_tar(shard, lambda name, data: (name.replace(".cls", "_cls"), data))
    result = CliRunner().invoke(app, ["verify", str(tmp_path / "shards")])
    assert result.exit_code == 1
    assert "tar member 'synthetic-chair-000_cls' is not named" in result.output


@pytest.mark.parametrize("edit", sorted(CAMERA_EDITS))
def test_verify_decodes_every_cameras_json(tmp_path, edit):
    """Before: verify never decoded cameras.json, so a hand edit passed as "ok"."""
    fake_pipeline(tmp_path)
    shard = tmp_path / "shards" / "train" / "shard-000000.tar"
    with open(shard, "rb") as stream:
        names = [name for name, _ in tar_members(stream, read_data=False)]
    target = [name for name in names if name.endswith(".cameras.json")][1]  # the second sample's
    key = target.removesuffix(".cameras.json")
    rewrite_tar(
        shard, lambda name, data: (name, edited_cameras(data, edit) if name == target else data)
    )
    result = CliRunner().invoke(app, ["verify", str(tmp_path / "shards")])
    assert result.exit_code == 1, result.output
    damaged = [line for line in result.output.splitlines() if "cameras.json" in line]
    assert len(damaged) == 1, result.output  # the one sample edited, no other
    assert f"key {key}: cameras.json does not decode" in damaged[0]
    assert CAMERA_EDITS[edit] in damaged[0]


def with_shard_captions_edited(shard, edit) -> str:
    """The shard's second sample's captions.json rewritten by hand to `edit(captions)`.
    Returns the sample's key."""
    with open(shard, "rb") as stream:
        names = [name for name, _ in tar_members(stream, read_data=False)]
    target = [name for name in names if name.endswith(".captions.json")][1]

    def change(name: str, data: bytes) -> tuple[str, bytes]:
        if name != target:
            return name, data
        return name, json.dumps(edit(json.loads(data))).encode()

    rewrite_tar(shard, change)
    return target.removesuffix(".captions.json")


def with_shard_caption_of_length(shard, length: int) -> str:
    """Its first caption made `length` 'x's."""
    return with_shard_captions_edited(shard, lambda captions: ["x" * length, *captions[1:]])


def test_a_shard_sample_with_more_captions_than_the_bound_is_damaged(tmp_path):
    from cg3d.formats.shards import Skipped, iter_samples

    fake_pipeline(tmp_path)
    shard = tmp_path / "shards" / "train" / "shard-000000.tar"
    key = with_shard_captions_edited(shard, lambda _: ["a chair"] * 8193)
    result = CliRunner().invoke(app, ["verify", str(tmp_path / "shards")])
    (line,) = [line for line in result.output.splitlines() if "captions.json" in line]
    assert f"key {key}: captions.json does not decode" in line
    assert "8193 captions, more than 8192" in line
    skipped = Skipped()
    read = [sample["key"] for sample in iter_samples(tmp_path / "shards", "train", skipped)]
    assert key not in read and skipped.total == 1


@pytest.mark.parametrize("length", [4096, 4097])
def test_a_shard_caption_over_the_bound_is_a_damaged_sample(tmp_path, length):
    """Before: a captions.json holding a 50 MB caption passed verify, and the loaders carried
    it on to the tokeniser. Pack never writes one over 4096 characters."""
    from cg3d.formats.shards import Skipped, iter_samples

    fake_pipeline(tmp_path)
    key = with_shard_caption_of_length(tmp_path / "shards" / "train" / "shard-000000.tar", length)
    result = CliRunner().invoke(app, ["verify", str(tmp_path / "shards")])
    damaged = [line for line in result.output.splitlines() if "captions.json" in line]
    skipped = Skipped()
    read = [sample["key"] for sample in iter_samples(tmp_path / "shards", "train", skipped)]
    if length == 4096:
        assert damaged == [] and key in read and skipped.total == 0
        return
    (line,) = damaged
    assert f"key {key}: captions.json does not decode" in line
    assert "caption 0 has 4097 characters, more than 4096" in line
    assert key not in read and skipped.total == 1  # the loaders skip it, counted


# `cg3d inspect` and `verify` of a local pack output, in a fresh process: which of torch and
# webdataset they imported (webdataset imports torch).
IMPORTED = """
import atexit, sys
atexit.register(lambda: print(sorted({"torch", "webdataset"} & set(sys.modules))))
sys.argv = ["cg3d", *sys.argv[1:]]
from cg3d.__main__ import run
run()
"""


@pytest.mark.parametrize("command", ["inspect", "verify"])
def test_local_shards_are_read_without_torch(tmp_path, command):
    """Before: every index and shard read went through webdataset's gopen, which imports
    torch: 3-8 s and 400 MiB more for `cg3d inspect` or `verify` of a local folder."""
    fake_pipeline(tmp_path)
    run = subprocess.run(
        [sys.executable, "-c", IMPORTED, command, str(tmp_path / "shards")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "[]"


def test_a_local_folder_with_a_colon_in_its_name_is_a_path(tmp_path, monkeypatch):
    """Before: webdataset's gopen took `v1:shards/index.json` for a URL of scheme `v1`, and
    the index was 'damaged (no gopen handler defined): rerun `cg3d pack`'."""
    fake_pipeline(tmp_path)
    (tmp_path / "shards").rename(tmp_path / "v1:shards")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["verify", "v1:shards"])
    assert result.exit_code == 0, result.output
    assert "ok: " in result.output

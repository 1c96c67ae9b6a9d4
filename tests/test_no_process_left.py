"""A command that starts processes (a process pool, a training's loader workers, and with them
multiprocessing's resource tracker) leaves none of them once it has ended. Before, the
resource tracker of `cg3d train` and `cg3d eval zeroshot` outlived the command (Python leaves
it to end after its parent), a zombie under a subreaper; the chunk pools (meshes, sample,
pack) already stopped theirs."""

import pytest

from tests.pipeline.fakes import fake_pipeline
from tests.stopping import run_to_its_end
from tests.train.helpers import params_file

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    fake_pipeline(root, per_class=6, shard_size=3, views=2, n=64)
    return root


def commands(data, checkpoint, out) -> dict[str, list[str]]:
    inputs = [f"--{name}={data / name}" for name in ("meshes", "points", "renders", "captions")]
    train = ["--params", str(params_file(out, epochs=1, workers=1))]
    return {
        "train": ["train", "--shards", str(data / "shards"), "--out", str(out / "run"), *train],
        "zeroshot": ["eval", "zeroshot", "--checkpoint", str(checkpoint), "--workers", "2"]
        + ["--shards", str(data / "shards"), "--out", str(out / "zeroshot")],
        "meshes": ["meshes", "--source", "synthetic", "--per-class", "2", "--workers", "2"]
        + ["--chunk-size", "1", "--out", str(out / "meshes")],
        "pack": ["pack", *inputs, "--shard-size", "1", "--workers", "2"]
        + ["--out", str(out / "shards")],
        "index": ["index", "--checkpoint", str(checkpoint), "--shards", str(data / "shards")]
        + ["--out", str(out / "index")],
    }


@pytest.mark.parametrize("name", ["train", "zeroshot", "meshes", "pack", "index"])
def test_a_finished_command_leaves_no_process_behind(data, tiny_checkpoint, tmp_path, name):
    ended = run_to_its_end(commands(data, tiny_checkpoint, tmp_path)[name])
    assert ended.code == 0, ended.stderr[-2000:]
    assert ended.left == []  # the tracker showed as "<pid> zombie"
    assert "leaked" not in ended.stderr and "Traceback" not in ended.stderr

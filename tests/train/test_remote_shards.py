"""`cg3d train` on shards served over HTTP and through a `pipe:` command."""

import json

import pytest
from typer.testing import CliRunner

from cg3d.cli import app
from tests.formats.server import serve
from tests.train.helpers import params_file

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::cg3d.models.clip.RandomClipWarning"),
]


def train(shards: str, out, params) -> dict:
    args = ["train", "--shards", shards, "--out", str(out), "--params", str(params)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads((out / "metrics.json").read_text())


def test_train_reads_shards_over_http_and_through_a_pipe(shards, tmp_path):
    params = params_file(tmp_path, epochs=1)
    with serve(shards) as url:
        over_http = train(url, tmp_path / "http", params)
    through_pipe = train(f"pipe:cat {shards}/{{}}", tmp_path / "pipe", params)
    local = train(str(shards), tmp_path / "local", params)
    for metrics in (over_http, through_pipe):
        assert metrics["epoch"] == 1 and metrics["skipped_samples"] == 0
        assert metrics["train_loss"] == pytest.approx(local["train_loss"], rel=1e-5)

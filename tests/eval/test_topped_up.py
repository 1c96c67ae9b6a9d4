"""A shape with fewer points than the model is fed is topped up by repeating points (as the public
protocols do, cg3d/eval/protocols.py): every eval counts such shapes in metrics.json
(`topped_up_shapes`) and says so once per run, in one log line."""

import json
import logging

import numpy as np
import pytest
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.eval.finetune import FinetuneConfig, finetune
from cg3d.eval.retrieval import RetrievalConfig, retrieval
from cg3d.eval.zeroshot import ZeroShotConfig, zeroshot
from tests.eval.files import write_modelnet_shapes, write_shards

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
FED = 64  # the tiny checkpoint's n_points (tests/conftest.py)
# Points per shape, by class. Below 64, so topped up: 63, 10 and 40; exactly 64 is not.
SIZES = {"airplane": [100, 64, 63], "bathtub": [10, 200], "bed": [40]}
TOPPED_UP = 3


def short_benchmark(root) -> list[str]:
    rng = np.random.default_rng(3)
    clouds = {
        folder: [rng.normal(size=(n, 6)) * (1 + label) for n in sizes]
        for label, (folder, sizes) in enumerate(SIZES.items())
    }
    return write_modelnet_shapes(root, clouds)


def topped_up_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "topped up" in r.getMessage()]


@pytest.mark.parametrize("protocol", ["cg3d", "cg3d-public"])
def test_zeroshot_counts_and_logs_the_shapes_it_topped_up(
    tmp_path, tiny_checkpoint, caplog, protocol
):
    short_benchmark(tmp_path / "mn")
    config = ZeroShotConfig(
        dataset="modelnet40", root=str(tmp_path / "mn"), protocol=protocol, text_cache=""
    )
    with caplog.at_level(logging.WARNING, logger="cg3d.eval.readers"):
        zeroshot(tiny_checkpoint, tmp_path / "out", config)
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["n_shapes"] == 6 and saved["topped_up_shapes"] == TOPPED_UP
    (line,) = topped_up_lines(caplog)  # one line for the run, not one per shape
    assert "3 of 6 shapes" in line and f"fewer than {FED} points" in line


def test_a_benchmark_without_short_shapes_says_nothing(tmp_path, tiny_checkpoint, caplog):
    rng = np.random.default_rng(5)
    write_modelnet_shapes(tmp_path / "mn", {"airplane": [rng.normal(size=(FED, 6))] * 2})
    config = ZeroShotConfig(dataset="modelnet40", root=str(tmp_path / "mn"), text_cache="")
    with caplog.at_level(logging.WARNING, logger="cg3d.eval.readers"):
        zeroshot(tiny_checkpoint, tmp_path / "out", config)
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["topped_up_shapes"] == 0
    assert topped_up_lines(caplog) == []


def test_finetune_counts_both_splits(tmp_path, tiny_checkpoint):
    short_benchmark(tmp_path / "mn")  # its train and test lists both name the 6 shapes
    config = FinetuneConfig(dataset="modelnet40", root=str(tmp_path / "mn"), mode="linear")
    finetune(tiny_checkpoint, tmp_path / "out", config)
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["topped_up_shapes"] == 2 * TOPPED_UP


def test_the_benchmark_result_counts_them_and_its_line_names_the_model(
    tmp_path, tiny_checkpoint, caplog
):
    short_benchmark(tmp_path / "mn")
    args = ["benchmark", "--models", f"ours={tiny_checkpoint}", "--datasets", "modelnet40"]
    args += ["--roots", f"modelnet40={tmp_path / 'mn'}", "--out", str(tmp_path / "bench")]
    with caplog.at_level(logging.WARNING, logger="cg3d.eval.readers"):
        result = CliRunner().invoke(app, [*args, "--text-cache", ""])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "bench" / "ours__modelnet40.json").read_text())
    assert saved["topped_up_shapes"] == TOPPED_UP
    (line,) = topped_up_lines(caplog)  # several models score one dataset: the line says which
    assert line.startswith("ours on modelnet40: 3 of 6 shapes"), line


@pytest.mark.parametrize("points, topped_up", [(16, 4), (FED, 0)])
def test_retrieval_counts_objects_with_fewer_points_than_fed(
    tmp_path, tiny_checkpoint, caplog, points, topped_up
):
    write_shards(tmp_path / "shards", per_class=2, n=points)  # 4 test objects
    config = RetrievalConfig(batch_size=4, grid_queries=0)
    with caplog.at_level(logging.WARNING, logger="cg3d.eval.readers"):
        retrieval(tiny_checkpoint, tmp_path / "shards", tmp_path / "out", config)
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["n_objects"] == 4 and saved["topped_up_shapes"] == topped_up
    assert len(topped_up_lines(caplog)) == (1 if topped_up else 0)


def counted_benchmark(sizes: list[int], live: list[int]):
    """A benchmark of clouds of `sizes` points (the first one also with a NaN row: three
    finite points fewer); `live[0]` counts its Shapes not yet freed."""
    import weakref

    from cg3d.eval.readers import Benchmark, Shape

    def shapes():
        rng = np.random.default_rng(0)
        for index, n in enumerate(sizes):
            points = rng.normal(size=(n, 3))
            if index == 0:
                points[:3] = np.nan
            shape = Shape(key=f"s{index}", points=points, label=index % 2)
            live[0] += 1
            weakref.finalize(shape, lambda: live.__setitem__(0, live[0] - 1))
            yield shape

    return Benchmark("counted", "test", ["a", "b"], len(sizes), shapes)


@pytest.mark.parametrize("workers", [1, 2])
def test_zero_shots_pool_counts_topped_up_shapes_and_holds_no_whole_shape(workers):
    from cg3d.eval.zeroshot import prepared_shapes

    # FED + 2 points, three of them NaN: FED - 1 finite, topped up; then 40 above, 24 short
    sizes = [FED + 2] + [FED + 8] * 40 + [FED - 1] * 24
    live = [0]
    bench = counted_benchmark(sizes, live)
    most_alive, got = 0, []
    for points, label, key in prepared_shapes(bench, FED, workers=workers):
        most_alive = max(most_alive, live[0])
        assert points.shape == (FED, 3) and np.isfinite(points).all()
        got.append((key, label))
    assert got == [(f"s{i}", i % 2) for i in range(len(sizes))]  # in order, none skipped
    assert bench.topped_up == 1 + 24
    # the window of 8 × workers shapes in flight keeps their (future, label, key), not the
    # Shapes with their raw clouds: at most the one being handed to the pool is alive
    assert most_alive <= 1

"""Zero-shot, retrieval and fine-tuning on our own shards, read through helper D's loader."""

import json

import pytest

from cg3d.eval.finetune import FinetuneConfig, finetune
from cg3d.eval.retrieval import RetrievalConfig, retrieval
from cg3d.eval.zeroshot import ZeroShotConfig, zeroshot

from .conftest import write_shards

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    write_shards(root, per_class=3, views=2)
    return root


def test_zeroshot_on_shards(shards, tmp_path, tiny_checkpoint):
    metrics = zeroshot(
        tiny_checkpoint, tmp_path, ZeroShotConfig(dataset="shards", root=str(shards), batch_size=4)
    )
    assert metrics["dataset"] == "shards" and metrics["variant"] == "test"
    assert metrics["n_shapes"] == 6 and set(metrics["per_class"]) == {"box", "plank"}


def test_retrieval_on_shards(shards, tmp_path, tiny_checkpoint):
    metrics = retrieval(
        tiny_checkpoint, shards, tmp_path, RetrievalConfig(batch_size=4, grid_queries=2)
    )
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["n_objects"] == 6
    assert saved["point_to_image"]["queries"] == 6 and saved["point_to_image"]["gallery"] == 12
    assert saved["image_to_point"]["queries"] == 12
    # 4 distinct captions (2 per class); each class-level query has 2 relevant captions
    assert saved["point_to_text"]["gallery"] == 4 and saved["text_to_point"]["gallery"] == 6
    for direction in ("point_to_text", "text_to_point", "point_to_image", "image_to_point"):
        m = metrics[direction]
        assert 0 <= m["R@1"] <= m["R@5"] <= m["R@10"] <= 100 and 0 < m["mAP"] <= 100
    assert metrics["point_to_text"]["R@5"] == 100.0  # only 4 captions, 2 of them relevant
    assert (tmp_path / "retrieval_grid.png").stat().st_size > 5000


def test_finetune_on_shards(shards, tmp_path, tiny_checkpoint):
    config = FinetuneConfig(
        dataset="shards", root=str(shards), mode="linear", epochs=2, lr=0.1, batch_size=4
    )
    metrics = finetune(tiny_checkpoint, tmp_path, config)
    assert metrics["n_train"] == 6 and metrics["dataset"] == "shards"

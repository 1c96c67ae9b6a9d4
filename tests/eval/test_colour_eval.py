"""A colour model (point_channels 6) through zero-shot, retrieval and fine-tuning: the model's
`point_channels` decides what is fed, and every metrics file says where the rgb came from."""

import warnings

import numpy as np
import pytest
import torch

from cg3d.eval.finetune import finetune
from cg3d.eval.readers import COLOR_CONSTANT, COLOR_FROM_SHARDS, COLOR_NOT_SAMPLED
from cg3d.eval.retrieval import retrieval
from cg3d.eval.zeroshot import zeroshot
from cg3d.params import FinetuneConfig, RetrievalConfig, ZeroShotConfig
from tests.eval.files import write_modelnet
from tests.pipeline.fakes import CLASSES, fake_pipeline

pytestmark = pytest.mark.filterwarnings("ignore::cg3d.models.clip.RandomClipWarning")
LAYOUT = ["x", "y", "z", "r", "g", "b", "nx", "ny", "nz"]


@pytest.fixture(scope="module")
def colour_checkpoint(tmp_path_factory):
    from cg3d.models.checkpoint import save_checkpoint
    from cg3d.models.model import build_model
    from tests.models.helpers import tiny_model_config

    path = tmp_path_factory.mktemp("ckpt") / "colour.pt"
    with warnings.catch_warnings(), torch.random.fork_rng():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        config = tiny_model_config(n_points=32, classes=CLASSES, point_channels=6)
        save_checkpoint(path, build_model(config))
    return path


@pytest.fixture(scope="module")
def coloured_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("coloured")
    fake_pipeline(root, per_class=4, shard_size=3, views=1, n=48, channels=LAYOUT, uncolored=1)
    return root / "shards"


def test_zeroshot_on_our_shards_feeds_their_rgb_and_counts_the_uncoloured(
    colour_checkpoint, coloured_shards, tmp_path
):
    root = str(coloured_shards)
    config = ZeroShotConfig(dataset="shards", root=root, split="train", text_cache="")
    metrics = zeroshot(colour_checkpoint, tmp_path, config)
    assert metrics["color"] == COLOR_FROM_SHARDS
    assert metrics["shapes_without_color"] == 1  # synthetic-chair-000, sampled without colour


def test_zeroshot_on_modelnet_says_the_constant_for_every_shape(colour_checkpoint, tmp_path):
    write_modelnet(tmp_path / "mn", 40)
    config = ZeroShotConfig(dataset="modelnet40", root=str(tmp_path / "mn"), text_cache="")
    metrics = zeroshot(colour_checkpoint, tmp_path / "out", config)
    assert metrics["color"] == COLOR_CONSTANT
    assert metrics["shapes_without_color"] == metrics["n_shapes"] == 3


def test_retrieval_and_finetune_feed_six_channels_and_say_so(
    colour_checkpoint, coloured_shards, tmp_path
):
    config = RetrievalConfig(split="train", batch_size=4, grid_queries=0)
    metrics = retrieval(colour_checkpoint, coloured_shards, tmp_path / "r", config)
    assert metrics["color"] == COLOR_FROM_SHARDS and metrics["shapes_without_color"] == 1
    tune = FinetuneConfig(
        root=str(coloured_shards), mode="linear", epochs=1, batch_size=4, clip_pretrained=""
    )
    result = finetune(colour_checkpoint, tmp_path / "f", tune)
    assert result["color"] == COLOR_FROM_SHARDS
    assert result["shapes_without_color"] == 0  # the test split: every object had colour


def test_retrieval_of_a_colour_model_on_xyz_shards_says_the_constant_for_every_object(
    colour_checkpoint, tmp_path
):
    fake_pipeline(tmp_path, per_class=2, shard_size=3, views=1, n=48)  # xyz: no rgb sampled
    config = RetrievalConfig(split="train", batch_size=4, grid_queries=0)
    metrics = retrieval(colour_checkpoint, tmp_path / "shards", tmp_path / "r", config)
    assert metrics["color"] == COLOR_NOT_SAMPLED
    assert metrics["shapes_without_color"] == metrics["n_objects"] > 0


def test_scene_query_runs_a_colour_model_on_an_xyz_scene(colour_checkpoint, tmp_path):
    from cg3d.eval.scene import scene_query
    from cg3d.params import SceneConfig

    scene = np.random.default_rng(0).uniform(-1, 1, (600, 3))
    np.savetxt(tmp_path / "scene.txt", scene)
    best = scene_query(
        tmp_path / "scene.txt",
        "a chair",
        colour_checkpoint,
        tmp_path / "out",
        SceneConfig(regions=4, region_points=64, top=2),
    )
    assert len(best) == 2 and best[0]["score"] >= best[1]["score"]

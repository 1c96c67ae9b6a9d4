import json

import numpy as np
import pytest
import torch

from cg3d.errors import UsageError
from cg3d.eval.prompts import class_text_features, prompt_templates
from cg3d.eval.readers import SCANOBJECTNN_FILES
from cg3d.eval.zeroshot import ZeroShotConfig, zeroshot
from cg3d.models.checkpoint import load_model

from .conftest import write_modelnet, write_scanobjectnn


class FakeTextModel:
    """encode_text: a fixed unit vector per distinct prompt (enough to check the ensembling)."""

    def __init__(self):
        self.seen = []

    def encode_text(self, prompts):
        self.seen += prompts
        rows = [torch.tensor([1.0, float(len(p) % 7), float(p.count("a"))]) for p in prompts]
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


def test_prompt_ensemble_averages_normalised_prompts():
    model = FakeTextModel()
    features = class_text_features(
        model, ["night_stand", "cup"], ["a {}.", "the {} here"], batch_size=3
    )
    assert model.seen == ["a night stand.", "the night stand here", "a cup.", "the cup here"]
    expected = FakeTextModel().encode_text(model.seen).view(2, 2, 3).mean(1)
    assert torch.allclose(features, torch.nn.functional.normalize(expected, dim=-1))
    assert torch.allclose(features.norm(dim=-1), torch.ones(2))


def test_prompt_templates():
    assert len(prompt_templates()) == 64
    assert prompt_templates("This is a {}") == ["This is a {}"]
    with pytest.raises(UsageError, match="--single-prompt"):
        prompt_templates("no placeholder")


def test_zeroshot_on_modelnet_writes_metrics_and_plots(tmp_path, tiny_checkpoint):
    write_modelnet(tmp_path / "mn", 40, per_class=2)
    config = ZeroShotConfig(dataset="modelnet40", root=str(tmp_path / "mn"), batch_size=4)
    metrics = zeroshot(tiny_checkpoint, tmp_path / "out", config)
    saved = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert saved["n_shapes"] == 6 and saved["dataset"] == "modelnet40"
    for key in (
        "top1",
        "top5",
        "class_mean",
        "per_class",
        "variant",
        "checkpoint",
        "clip_pretrained",
    ):
        assert key in saved
    assert saved["clip_pretrained"] is False and "random" in saved["clip_weights"]
    assert len(saved["per_class"]) == 40 and 0 <= metrics["top1"] <= metrics["top5"] <= 100
    rows = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    assert (
        rows[0] == "key,actual,predicted"
        and len(rows) == 7
        and rows[1].startswith("airplane_0001,airplane,")
    )
    assert (tmp_path / "out" / "confusion.png").stat().st_size > 1000


def test_zeroshot_scores_match_a_direct_computation(tmp_path, tiny_checkpoint):
    """The batched, streamed scores equal encode_points · class features computed by hand."""
    from cg3d.eval.readers import open_benchmark, prepare_points
    from cg3d.eval.zeroshot import score_benchmark

    write_scanobjectnn(
        tmp_path, SCANOBJECTNN_FILES["obj_only"].format(split="test"), count=5, n=100
    )
    bench = open_benchmark("scanobjectnn", tmp_path, variant="obj_only")
    model = load_model(tiny_checkpoint)
    config = ZeroShotConfig(batch_size=2, single_prompt="This is a {}")
    scores, labels, keys = score_benchmark(model, bench, config)
    text = class_text_features(model, bench.classes, ["This is a {}"])
    with torch.no_grad():
        for index, shape in enumerate(bench.shapes()):
            points = torch.from_numpy(prepare_points(shape.points, 64, seed=index))[None]
            expected = (model.encode_points(points) @ text.T).numpy()[0]
            assert np.allclose(scores[index], expected, atol=1e-5)
    assert labels.tolist() == [0, 1, 2, 3, 4] and len(keys) == 5
    # preparing shapes in worker processes changes nothing but the speed
    pooled, pooled_labels, pooled_keys = score_benchmark(
        model, bench, ZeroShotConfig(batch_size=3, single_prompt="This is a {}", workers=2)
    )
    assert np.allclose(pooled, scores, atol=1e-6) and pooled_keys == keys


def test_zeroshot_limit_and_bad_batch_size(tmp_path, tiny_checkpoint):
    write_modelnet(tmp_path / "mn", 40, per_class=2)
    metrics = zeroshot(
        tiny_checkpoint,
        tmp_path / "o",
        ZeroShotConfig(dataset="modelnet40", root=str(tmp_path / "mn"), limit=3),
    )
    assert metrics["n_shapes"] == 3
    with pytest.raises(UsageError, match="eval.zeroshot.batch_size"):
        zeroshot(tiny_checkpoint, tmp_path / "o", ZeroShotConfig(batch_size=0))


def test_foreign_or_mismatched_checkpoint_is_a_usage_error(tmp_path, tiny_checkpoint):
    write_modelnet(tmp_path / "mn", 40)
    config = ZeroShotConfig(dataset="modelnet40", root=str(tmp_path / "mn"))
    bad = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, bad)
    with pytest.raises(UsageError, match="not a CG3D checkpoint"):
        zeroshot(bad, tmp_path / "o", config)
    # a checkpoint whose config names another encoder than its weights were trained as
    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["config"]["encoder"], payload["config"]["encoder_params"] = "pointnet2", {}
    other = tmp_path / "other_encoder.pt"
    torch.save(payload, other)
    with pytest.raises(UsageError, match="do not fit"):
        zeroshot(other, tmp_path / "o", config)
    with pytest.raises(UsageError, match="no checkpoint"):
        zeroshot(tmp_path / "absent.pt", tmp_path / "o", config)

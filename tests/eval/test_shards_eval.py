"""Zero-shot, retrieval and fine-tuning on our own shards, read through helper D's loader."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.eval.finetune import FinetuneConfig, finetune
from cg3d.eval.retrieval import RetrievalConfig, retrieval
from cg3d.eval.zeroshot import ZeroShotConfig, zeroshot
from tests.eval.files import write_shards

from .fakes import A_PHOTO_OF, FakeModel, elongation, one_hot, use_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    write_shards(root, per_class=3, views=2)
    return root


# The fake model for write_shards' objects: a box (as tall as wide) or a plank (4 times
# taller), two views each (red 0 and 20 for a box, 60 and 80 for a plank), captions
# "a photo of a box", "a box", "a photo of a plank", "a plank" (that order of first sight).
BOX, PLANK = one_hot(0, 4), one_hot(1, 4)
CAPTIONS = {
    "a box": BOX,
    "a plank": PLANK,
    "a photo of a box": np.array([0.0, 0.8, 0.6, 0.0]),  # looks more like a plank than a box
    "a photo of a plank": one_hot(2, 4),  # like nothing
}


def shards_model() -> FakeModel:
    return FakeModel(
        point_features=lambda points: PLANK if elongation(points, 1, 0) > 2.5 else BOX,
        texts=CAPTIONS,
        image_features=lambda pixel: BOX if pixel[0] < 50 else PLANK,
    )


def test_zeroshot_on_shards(shards, tmp_path, monkeypatch, caplog):
    use_model(monkeypatch, shards_model())
    config = ZeroShotConfig(
        dataset="shards", root=str(shards), batch_size=4, protocol=A_PHOTO_OF.name
    )
    metrics = zeroshot(tmp_path / "fake.pt", tmp_path, config)
    assert metrics["dataset"] == "shards" and metrics["variant"] == "test"
    # boxes score 0 for both classes (the tie goes to box, the first class): right; planks
    # score 0.8 for "a photo of a box" and 0 for "a photo of a plank": wrong
    assert metrics["n_shapes"] == 6 and metrics["per_class"] == {"box": 100.0, "plank": 0.0}
    assert (metrics["top1"], metrics["class_mean"]) == (50.0, 50.0)
    assert "top3" not in metrics and "top5" not in metrics  # 2 classes: always in the top k
    # the 3 boxes' tie is counted and said: torch.topk (the public codes) may break it otherwise
    assert json.loads((tmp_path / "metrics.json").read_text())["tied_top1"] == 3
    assert "3 shapes score highest for two classes at once" in caplog.text


def test_retrieval_logs_its_progress_each_tenth_to_a_log_file(
    shards, tmp_path, monkeypatch, capsys
):
    """Its bar had no total: in a job's log file (no terminal) it wrote nothing until the
    metrics; `limit` is the total when it is smaller."""
    use_model(monkeypatch, shards_model())
    for limit, shown in [(0, ["1/6 (16%)", "2/6 (33%)", "3/6 (50%)", "4/6 (66%)", "5/6 (83%)"]),
                         (3, ["1/3 (33%)", "2/3 (66%)"])]:  # fmt: skip
        config = RetrievalConfig(batch_size=4, grid_queries=2, limit=limit)
        retrieval(tmp_path / "fake.pt", shards, tmp_path / str(limit), config)
        lines = capsys.readouterr().err.splitlines()
        logged = [line for line in lines if line.startswith("retrieval: encoding: ")]
        assert [line.removeprefix("retrieval: encoding: ") for line in logged] == shown


def test_retrieval_on_shards(shards, tmp_path, monkeypatch):
    use_model(monkeypatch, shards_model())
    metrics = retrieval(
        tmp_path / "fake.pt", shards, tmp_path, RetrievalConfig(batch_size=4, grid_queries=2)
    )
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["n_objects"] == 6
    # point→text, gallery [photo box, box, photo plank, plank]: a box finds "a box" then
    # (ties in gallery order) "a photo of a box": AP 1; a plank finds "a plank" then
    # "a photo of a box", and "a photo of a plank" last: AP (1 + 2/4) / 2
    # (R@5 and R@10 of a 4-caption gallery, R@10 of a 6-object one: not reported)
    assert saved["point_to_text"] == {
        "R@1": 100.0,
        "mAP": pytest.approx(100 * (3 + 3 * 0.75) / 6),
    }
    # text→point, gallery [3 boxes, 3 planks]: "a box" and "a plank" find their class first
    # (AP 1); both photo captions see the 3 other objects first: AP (1/4 + 2/5 + 3/6) / 3
    photo_ap = (1 / 4 + 2 / 5 + 3 / 6) / 3
    assert saved["text_to_point"] == {
        "R@1": 50.0,
        "R@5": 100.0,
        "mAP": pytest.approx(100 * (2 + 2 * photo_ap) / 4),
    }
    # point→image, 12 views: all views of a class look alike, so the i-th object of a class
    # finds its own views at ranks 2i+1 and 2i+2: AP 1, (1/3 + 2/4) / 2, (1/5 + 2/6) / 2
    view_ap = 1 + (1 / 3 + 2 / 4) / 2 + (1 / 5 + 2 / 6) / 2
    assert saved["point_to_image"] == {
        "R@1": pytest.approx(100 / 3),
        "R@5": 100.0,
        "R@10": 100.0,
        "mAP": pytest.approx(100 * view_ap / 3),
    }
    # image→point: a view of the i-th object of a class finds it at rank i+1
    assert saved["image_to_point"] == {
        "R@1": pytest.approx(100 / 3),
        "R@5": 100.0,
        "mAP": pytest.approx(100 * (1 + 1 / 2 + 1 / 3) / 3),
    }
    details = json.loads((tmp_path / "details.json").read_text())
    assert details["point_to_image"] == {"queries": 6, "gallery": 12}
    assert details["text_to_point"] == {"queries": 4, "gallery": 6}
    assert set(details["relevance"]) == {"point_image", "point_text"}
    assert metrics["point_to_text"]["gallery"] == 4  # the returned dict keeps everything
    assert (tmp_path / "retrieval_grid.png").stat().st_size > 5000


def test_retrieval_command_prints_a_dash_for_an_unreported_recall(shards, tmp_path, monkeypatch):
    """R@K at or above a gallery's size is not in metrics.json: the table says "—" (it read
    the key and failed); a 4-caption gallery has neither R@5 nor R@10."""
    use_model(monkeypatch, shards_model())
    (tmp_path / "fake.pt").write_bytes(b"")
    args = ["eval", "retrieval", "--checkpoint", str(tmp_path / "fake.pt"), "--shards"]
    result = CliRunner().invoke(app, [*args, str(shards), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    [row] = [line for line in result.output.splitlines() if "point_to_text" in line]
    assert row.count("—") == 2


def test_finetune_on_shards(shards, tmp_path, tiny_checkpoint):
    config = FinetuneConfig(
        dataset="shards", root=str(shards), mode="linear", epochs=2, lr=0.1, batch_size=4
    )
    metrics = finetune(tiny_checkpoint, tmp_path, config)
    assert metrics["n_train"] == 6 and metrics["dataset"] == "shards"

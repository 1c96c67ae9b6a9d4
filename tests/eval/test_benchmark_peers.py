"""`cg3d benchmark` over two converted peer models (ULIP-2 and OpenShape files in their released
layouts, converted by `convert_peer`) and two benchmark folders, with no teacher tower anywhere:
each pair under its card's protocol, scored from class-feature files (issue 23, "Done means")."""

import csv
import hashlib
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.eval.readers import SCANOBJECTNN_FILES, open_benchmark
from cg3d.eval.zeroshot import zeroshot
from cg3d.formats.textfeatures import write_text_features
from cg3d.models import checkpoint as checkpoint_module
from cg3d.models.peers import convert_peer
from cg3d.params import ZeroShotConfig
from tests.eval.files import write_modelnet, write_scanobjectnn
from tests.models.peer_networks import ppat_layout, random_state, ulip_layout

ULIP2_SMALL = {"depth": 2, "groups": 32}
OPENSHAPE_SMALL = {"width": 64, "depth": 2, "heads": 2, "head_dim": 32, "mlp": 96, "patches": 48}
OPENSHAPE_SMALL |= {"radius": 0.5, "group_size": 16}
DATASETS = {"modelnet40": ("mn", ""), "scanobjectnn-obj_only": ("sonn", "obj_only")}


def refuse(*args, **kwargs):
    raise AssertionError("a teacher tower was constructed")


@pytest.fixture
def converted(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint_module, "load_clip", refuse)
    ulip2 = tmp_path / "ulip2-released.pt"
    torch.save({"state_dict": random_state(ulip_layout(2, 6, 1280), seed=1)}, ulip2)
    convert_peer("ulip2-pointbert", ulip2, tmp_path / "ulip2.pt", encoder_params=ULIP2_SMALL)
    openshape = tmp_path / "openshape-released.pt"
    layout = ppat_layout(width=64, depth=2, mlp=96, heads=2, head_dim=32)
    torch.save({"state_dict": random_state(layout, seed=2)}, openshape)
    convert_peer(
        "openshape-pointbert", openshape, tmp_path / "openshape.pt", encoder_params=OPENSHAPE_SMALL
    )
    write_modelnet(tmp_path / "mn", 40, per_class=2)
    relative = SCANOBJECTNN_FILES["obj_only"].format(split="test")
    write_scanobjectnn(tmp_path / "sonn", relative, count=6, n=120)
    rng = np.random.default_rng(7)
    for model in ("ulip2", "openshape"):
        for key, (folder, variant) in DATASETS.items():
            name = key.split("-")[0]
            classes = open_benchmark(name, tmp_path / folder, variant).classes
            rows = rng.normal(size=(len(classes), 1280))
            rows /= np.linalg.norm(rows, axis=1, keepdims=True)
            write_text_features(tmp_path / "text" / f"{model}__{key}.npy", rows, classes)
    return tmp_path


def test_two_converted_models_on_two_benchmarks_under_their_protocols(converted):
    tmp_path = converted
    models = f"ulip2={tmp_path / 'ulip2.pt'},openshape={tmp_path / 'openshape.pt'},uni3d-g"
    args = ["benchmark", "--models", models, "--datasets", "modelnet40,scanobjectnn:obj_only"]
    args += ["--roots", f"modelnet40={tmp_path / 'mn'},scanobjectnn={tmp_path / 'sonn'}"]
    args += ["--text-features", str(tmp_path / "text"), "--out", str(tmp_path / "bench")]
    result = CliRunner().invoke(app, [*args, "--text-cache", "", "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    with (tmp_path / "bench" / "results.csv").open() as handle:
        rows = {(row["model"], row["dataset"]): row for row in csv.DictReader(handle)}
    assert len(rows) == 6
    top5s = []
    for model, card, protocol in (
        ("ulip2", "ulip2-pointbert", "ulip2"),
        ("openshape", "openshape-pointbert", "openshape"),
    ):
        for key, (folder, variant) in DATASETS.items():
            row = rows[(model, key)]
            assert row["status"] == "done" and row["protocol"] == protocol
            saved = json.loads((tmp_path / "bench" / f"{model}__{key}.json").read_text())
            assert saved["card"] == card and saved["teacher"]["model"] == "ViT-bigG-14"
            # the class features' file by name and hash (their sidecars say nothing more)
            file = tmp_path / "text" / f"{model}__{key}.npy"
            digest = hashlib.sha256(file.read_bytes()).hexdigest()
            assert saved["settings"]["text_features"] == {"file": file.name, "sha256": digest}
            # the same pair through `cg3d eval zeroshot --protocol P --text-features F`
            config = ZeroShotConfig(
                dataset=key.split("-")[0],
                root=str(tmp_path / folder),
                variant=variant,
                protocol=protocol,
                text_cache="",
            )
            out = tmp_path / "z" / model / key
            file = tmp_path / "text" / f"{model}__{key}.npy"
            zeroshot(tmp_path / f"{model}.pt", out, config, text_features=file)
            with (out / "predictions.csv").open() as handle:
                predictions = list(csv.DictReader(handle))
            hits = [p["actual"] == p["predicted"] for p in predictions]
            assert float(row["acc1"]) == pytest.approx(100 * sum(hits) / len(hits), abs=0.01)
            assert saved["n_shapes"] == len(predictions)
            top5 = json.loads((out / "metrics.json").read_text())["top5"]
            assert float(row["acc5"]) == pytest.approx(top5, abs=0.01)
            top5s.append(top5)
    assert any(top5s)  # the random class features still rank some shapes' classes in the top 5
    published = rows[("ulip2", "modelnet40")]
    assert float(published["published_acc1"]) == 84.7
    difference = float(published["acc1"]) - 84.7
    assert float(published["difference"]) == pytest.approx(difference, abs=0.01)
    assert rows[("openshape", "modelnet40")]["published_acc1"] == "84.4"
    missing = rows[("uni3d-g", "modelnet40")]
    assert missing["status"] == "missing weights" and missing["published_acc1"] == "88.2"

"""`cg3d benchmark`: models × benchmark folders in the real formats → one JSON per pair in
clip_benchmark's shape and the table beside the cards' numbers; resumes; a missing model is a
row (issue 23 §3)."""

import csv
import hashlib
import json
import os
import warnings

import pytest
import torch
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.errors import UsageError
from cg3d.eval import benchmark as benchmark_module
from cg3d.eval.benchmark import DatasetEntry, ModelEntry, check_result_names
from cg3d.eval.readers import SCANOBJECTNN_FILES
from cg3d.eval.zeroshot import zeroshot
from cg3d.models import cards
from cg3d.models.cards import ModelCard
from cg3d.models.checkpoint import save_checkpoint
from cg3d.models.hub import export_hub
from cg3d.models.model import build_model
from cg3d.params import ZeroShotConfig
from tests.eval.files import write_modelnet, write_scanobjectnn
from tests.models.helpers import save_fell_back_checkpoint, tiny_model_config

pytestmark = pytest.mark.filterwarnings("ignore::cg3d.models.clip.RandomClipWarning")

TINY_CARD = ModelCard(
    name="tiny-card",
    description="a test card",
    encoder="pointtransformer-micro",
    n_points=64,
    point_channels=3,
    up_axis="y",
    normalisation="bbox",
    protocol="cg3d",
    teacher_model="CG3D-ViT-Micro-32",
    teacher_pretrained="none",
    embed_dim=64,
    published={"modelnet40": {"acc1": 50.0}, "scanobjectnn-obj_only": {"acc1": 20.0}},
)


@pytest.fixture
def setup(tmp_path, tiny_checkpoint, monkeypatch):
    """Two models (a .pt and a hub folder under a card's name), two benchmark folders."""
    monkeypatch.setitem(cards._CARDS, TINY_CARD.name, TINY_CARD)
    with warnings.catch_warnings(), torch.random.fork_rng():
        warnings.simplefilter("ignore")
        torch.manual_seed(1)
        other = build_model(tiny_model_config(n_points=64, classes=["cube"]))
    save_checkpoint(tmp_path / "other.pt", other)
    export_hub(tmp_path / "other.pt", tmp_path / "other-hub")
    write_modelnet(tmp_path / "mn", 40, per_class=2)
    relative = SCANOBJECTNN_FILES["obj_only"].format(split="test")
    write_scanobjectnn(tmp_path / "sonn", relative, count=7, n=100)
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    models = {
        "ours": tiny_checkpoint,
        "tiny-card": tmp_path / "other-hub",
        "cg3d-release": None,  # a card, no weights
        "ghost": tmp_path / "nope.pt",
        "broken": tmp_path / "broken.pt",
    }
    spec = ",".join(name if path is None else f"{name}={path}" for name, path in models.items())
    args = ["benchmark", "--models", spec, "--datasets", "modelnet40,scanobjectnn:obj_only"]
    args += ["--roots", f"modelnet40={tmp_path / 'mn'},scanobjectnn={tmp_path / 'sonn'}"]
    args += ["--out", str(tmp_path / "bench"), "--text-cache", "", "--batch-size", "4"]
    return args, models, tmp_path


def run(args) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output


def table(out) -> list[dict]:
    with (out / "results.csv").open() as handle:
        return list(csv.DictReader(handle))


def by_hand(checkpoint, dataset, root, variant, out) -> tuple[float, float]:
    """Top-1 and mean per-class recall (%) counted from `cg3d eval zeroshot`'s predictions."""
    config = ZeroShotConfig(dataset=dataset, root=str(root), variant=variant, text_cache="")
    zeroshot(checkpoint, out, config)
    with (out / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    hits = [row["actual"] == row["predicted"] for row in rows]
    recalls = []
    for name in {row["actual"] for row in rows}:
        mine = [row["actual"] == row["predicted"] for row in rows if row["actual"] == name]
        recalls.append(sum(mine) / len(mine))
    return 100 * sum(hits) / len(hits), 100 * sum(recalls) / len(recalls)


def test_the_table_has_a_row_per_model_and_dataset_beside_the_cards(setup):
    args, models, tmp_path = setup
    run(args)
    out = tmp_path / "bench"
    rows = table(out)
    keys = ("modelnet40", "scanobjectnn-obj_only")
    assert [(r["model"], r["dataset"]) for r in rows] == [(m, d) for m in models for d in keys]
    found = {(r["model"], r["dataset"]): r for r in rows}
    for name in ("ours", "tiny-card"):
        for dataset, root, variant in (
            ("modelnet40", "mn", ""),
            ("scanobjectnn", "sonn", "obj_only"),
        ):
            key = f"{dataset}-{variant}" if variant else dataset
            top1, recall = by_hand(models[name], dataset, tmp_path / root, variant, tmp_path / "z")
            row = found[(name, key)]
            assert row["status"] == "done"
            assert float(row["acc1"]) == pytest.approx(top1, abs=0.01)
            assert float(row["mean_per_class_recall"]) == pytest.approx(recall, abs=0.01)
            result = json.loads((out / f"{name}__{key}.json").read_text())
            assert result["dataset"] == key and result["model"] == name
            assert result["task"] == "zeroshot_classification" and result["protocol"] == "cg3d"
            assert result["pretrained"] == str(models[name])
            assert set(result["metrics"]) == {"acc1", "acc3", "acc5", "mean_per_class_recall"}
            assert (
                result["metrics"]["acc1"] <= result["metrics"]["acc3"] <= result["metrics"]["acc5"]
            )
            assert result["skipped_samples"] == 0 and result["audit"] == "none"
    # the card's published number beside ours, and the difference
    row = found[("tiny-card", "modelnet40")]
    assert float(row["published_acc1"]) == 50.0
    assert float(row["difference"]) == pytest.approx(float(row["acc1"]) - 50.0, abs=0.01)
    assert found[("ours", "modelnet40")]["published_acc1"] == ""
    # a card without weights, a path that is not there, a broken file: rows, not a crash
    missing = found[("cg3d-release", "modelnet40")]
    assert missing["status"] == "missing weights" and float(missing["published_acc1"]) == 48.7
    assert missing["acc1"] == "" and missing["protocol"] == "cg3d-public"
    assert found[("ghost", "modelnet40")]["status"] == f"missing weights: no {models['ghost']}"
    assert found[("broken", "scanobjectnn-obj_only")]["status"].startswith("failed: ")
    assert "broken.pt" in found[("broken", "modelnet40")]["status"]
    markdown = (out / "results.md").read_text()
    assert markdown.count("\n") == 2 + len(rows)
    assert "| cg3d-release | modelnet40 | cg3d-public | – | 48.7 | – |" in markdown


def pairs_evaluated(monkeypatch) -> list[tuple[str, str]]:
    """The (model, dataset) pairs the benchmark evaluates from now on, in order: the list
    fills as it runs (a pair taken from an earlier run's JSON is not evaluated)."""
    calls: list[tuple[str, str]] = []
    real = benchmark_module.evaluate_pair

    def counted(model, entry, dataset, *rest):
        calls.append((entry.name, dataset.key))
        return real(model, entry, dataset, *rest)

    monkeypatch.setattr(benchmark_module, "evaluate_pair", counted)
    return calls


def test_a_killed_run_resumes_with_the_pairs_it_had_not_finished(setup, monkeypatch):
    args, _, tmp_path = setup
    run(args)
    out = tmp_path / "bench"
    before = {(r["model"], r["dataset"]): r for r in table(out)}
    # killed while on ours × ScanObjectNN: that JSON was never written (atomic writes)
    (out / "ours__scanobjectnn-obj_only.json").unlink()
    (out / ".ours__scanobjectnn-obj_only.json.999.tmp").write_text('{"half": ')
    calls = pairs_evaluated(monkeypatch)
    run(args)
    assert calls == [("ours", "scanobjectnn-obj_only")]
    after = {(r["model"], r["dataset"]): r for r in table(out)}
    assert after.keys() == before.keys()
    for key, row in after.items():
        assert row["acc1"] == before[key]["acc1"]
        if key == ("ours", "scanobjectnn-obj_only"):
            assert row["status"] == "done"
        elif before[key]["status"] == "done":
            assert row["status"] == "done (earlier run)"
    # other weights under the same name are computed again, not taken from the earlier run
    calls.clear()
    weights = tmp_path / "other-hub" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    # as an export of those weights records them (else the hub is refused as damaged)
    config_file = tmp_path / "other-hub" / "config.json"
    config = json.loads(config_file.read_text())
    config["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    config_file.write_text(json.dumps(config))
    run(args)
    assert calls == [("tiny-card", "modelnet40"), ("tiny-card", "scanobjectnn-obj_only")]


HAND_EDITS = {
    "no metrics": lambda r: r.pop("metrics"),
    "metrics a string": lambda r: r.update(metrics="x"),
    "top-1 a string": lambda r: r["metrics"].update(acc1="abc"),
    "top-1 null": lambda r: r["metrics"].update(acc1=None),
    "top-1 of 1e308": lambda r: r["metrics"].update(acc1=1e308),
    "top-5 a string": lambda r: r["metrics"].update(acc5="abc"),
    "no shape count": lambda r: r.pop("n_shapes"),
    "skipped a float": lambda r: r.update(skipped_samples=1.5),
}


@pytest.mark.parametrize("edit", HAND_EDITS)
def test_a_pair_result_edited_by_hand_is_recomputed(setup, monkeypatch, edit):
    """A pair JSON with the right weights and settings but edited numbers: the rerun's table
    was a KeyError or TypeError traceback, or a top-1 of "inf"."""
    args, _, tmp_path = setup
    args = [*args[:2], "ours=" + str(setup[1]["ours"]), *args[3:]]
    run(args)
    out = tmp_path / "bench"
    pair = out / "ours__modelnet40.json"
    written, before = pair.read_bytes(), table(out)
    edited = json.loads(written)
    HAND_EDITS[edit](edited)
    pair.write_text(json.dumps(edited))
    calls = pairs_evaluated(monkeypatch)
    run(args)
    assert calls == [("ours", "modelnet40")]  # that pair only; the other kept
    assert pair.read_bytes() == written
    after = table(out)
    assert [row["acc1"] for row in after] == [row["acc1"] for row in before]


@pytest.mark.parametrize(
    "models, datasets, roots, message",
    [
        ("a=x.pt,a=y.pt", "modelnet40", "modelnet40=d", "given twice"),
        # one result file on macOS, exFAT, a Windows share: the second replaced the first
        ("Ours=x.pt,ours=y.pt", "modelnet40", "modelnet40=d", "'Ours' and 'ours' differ only"),
        ("caf\u00e9,cafe\u0301", "modelnet40", "modelnet40=d", "'caf\\xe9' and 'cafe\\u0301'"),
        ("a=", "modelnet40", "modelnet40=d", "not NAME or NAME=WEIGHTS"),
        ("a", "modelnet41", "modelnet40=d", "'modelnet41' is not one of"),
        ("a", "modelnet40,scanobjectnn", "modelnet40=d", "no folder for scanobjectnn"),
        # the second root silently won: a benchmark of files other than the ones named first
        ("a", "modelnet40", "modelnet40=d,modelnet40=/etc", "--roots: modelnet40 is given twice"),
    ],
)
def test_bad_lists_are_one_line(tmp_path, models, datasets, roots, message):
    args = ["benchmark", "--models", models, "--datasets", datasets, "--roots", roots]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and message in str(result.exception)


def test_a_bigg_teacher_model_is_scored_from_a_text_feature_file_and_fails_as_a_row_without(
    tmp_path, monkeypatch
):
    """No bigG tower here: with a class-feature file the pair is scored (its top-1 counted by
    hand from the stored encoder); without one it is a failure row naming the weights."""
    import numpy as np
    import torch.nn.functional as F

    from cg3d.eval.readers import open_benchmark, prepare_points
    from cg3d.formats.textfeatures import write_text_features
    from cg3d.models import checkpoint as checkpoint_module
    from cg3d.models.encoders import build_encoder
    from tests.models.helpers import BIGG_DIM, N_POINTS, write_converted_bigg

    def unavailable(*args, **kwargs):
        from cg3d.errors import UsageError

        raise UsageError(
            "--clip-pretrained: the weights ViT-bigG-14/laion2b_s39b_b160k cannot be had here"
        )

    monkeypatch.setattr(checkpoint_module, "load_clip", unavailable)
    state = write_converted_bigg(tmp_path / "bigg.pt", seed=3)
    write_modelnet(tmp_path / "mn", 40, per_class=3)
    benchmark = open_benchmark("modelnet40", tmp_path / "mn")
    # by hand: the stored encoder on each prepared shape
    encoder = build_encoder("pointtransformer-micro", BIGG_DIM, {"in_channels": 6})
    encoder.load_state_dict({k.removeprefix("point_encoder."): v for k, v in state.items()})
    features, labels = [], []
    for index, shape in enumerate(benchmark.shapes()):
        points = prepare_points(shape.points, N_POINTS, seed=index, point_channels=6)
        with torch.no_grad():
            features.append(F.normalize(encoder.eval()(torch.from_numpy(points)[None]), dim=-1)[0])
        labels.append(shape.label)
    features, labels = torch.stack(features).numpy(), np.array(labels)
    # random class features, but each class present its shapes' mean: a non-trivial top-1
    text = np.random.default_rng(5).normal(size=(len(benchmark.classes), BIGG_DIM))
    for label in set(labels):
        text[label] = features[labels == label].mean(axis=0)
    unit = text / np.linalg.norm(text, axis=1, keepdims=True)  # stored as the file gives them
    write_text_features(tmp_path / "text" / "bigg__modelnet40.npy", unit, benchmark.classes)
    expected = 100 * float(np.mean(np.argmax(features @ unit.T, axis=1) == labels))
    assert expected > 0
    args = ["benchmark", "--models", f"bigg={tmp_path / 'bigg.pt'}", "--datasets", "modelnet40"]
    args += ["--roots", f"modelnet40={tmp_path / 'mn'}", "--text-cache", ""]
    run([*args, "--out", str(tmp_path / "without")])
    (failed,) = table(tmp_path / "without")
    assert failed["status"].startswith("failed: ") and "laion2b_s39b_b160k" in failed["status"]
    run([*args, "--out", str(tmp_path / "with"), "--text-features", str(tmp_path / "text")])
    (row,) = table(tmp_path / "with")
    assert row["status"] == "done"
    assert float(row["acc1"]) == pytest.approx(expected, abs=0.01)
    # a FIFO by the file's name is a failed pair saying what it is: before, it was passed over
    # for the teacher's tower (here: the row naming the unavailable weights)
    fifo = tmp_path / "fifo" / "bigg__modelnet40.npy"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    run([*args, "--out", str(tmp_path / "fifo-out"), "--text-features", str(fifo.parent)])
    (row,) = table(tmp_path / "fifo-out")
    assert row["status"] == f"failed: --text-features: {fifo}: not a regular file"


def test_the_readme_tables_of_released_models_and_protocols_are_the_registries():
    """What `python -m cg3d.eval.benchmark` prints, in a fresh process (other tests register
    protocols of their own in this one), is the README's block."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    printed = subprocess.run(
        [sys.executable, "-m", "cg3d.eval.benchmark"],
        capture_output=True,
        text=True,
        check=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    ).stdout
    readme = (root / "README.md").read_text()
    assert printed.strip() in readme, (
        f"README's tables are stale; paste `python -m cg3d.eval.benchmark`:\n{printed}"
    )
    assert "| `ulip2-pointbert` |" in printed and "| `cg3d-public` |" in printed


def test_a_set_of_few_classes_reports_no_top_k_at_or_above_its_class_count():
    # 3 classes, 4 shapes: shape 0 right at rank 1, shape 1 at rank 2, shapes 2 and 3 at rank 3
    scores = torch.tensor(
        [[0.9, 0.1, 0.0], [0.5, 0.1, 0.4], [0.5, 0.4, 0.1], [0.1, 0.5, 0.4]]
    ).numpy()
    labels = torch.tensor([0, 2, 2, 0]).numpy()
    metrics = benchmark_module.pair_metrics(scores, labels, ["a", "b", "c"])
    assert metrics["acc1"] == 0.25
    assert metrics["acc3"] is None and metrics["acc5"] is None  # every label is in a top 3


def test_the_teacher_of_a_model_whose_clip_fell_back_to_random_is_no_tag(tmp_path):
    """A run that asked for "openai" and fell back to a random CLIP: the result names no
    OpenAI teacher (it used to name the tag it never loaded), in about.json's spelling."""
    checkpoint = save_fell_back_checkpoint(tmp_path / "fell-back.pt")
    write_modelnet(tmp_path / "mn", 40, per_class=1)
    args = ["benchmark", "--models", f"fell-back={checkpoint}", "--datasets", "modelnet40"]
    args += ["--roots", f"modelnet40={tmp_path / 'mn'}", "--out", str(tmp_path / "bench")]
    run([*args, "--text-cache", "", "--batch-size", "8"])
    result = json.loads((tmp_path / "bench" / "fell-back__modelnet40.json").read_text())
    assert result["teacher"] == {"model": "CG3D-ViT-Micro-32", "pretrained": "none (random init)"}
    assert result["pretrained"] == str(checkpoint)  # clip_benchmark's field: the weights scored
    # a result written before, naming the tag asked for: recomputed, not kept as it was
    stale = result | {"teacher": {"model": "CG3D-ViT-Micro-32", "pretrained": "openai"}}
    (tmp_path / "bench" / "fell-back__modelnet40.json").write_text(json.dumps(stale))
    run([*args, "--text-cache", "", "--batch-size", "8"])
    assert table(tmp_path / "bench")[0]["status"] == "done"  # not "done (earlier run)"
    result = json.loads((tmp_path / "bench" / "fell-back__modelnet40.json").read_text())
    assert result["teacher"]["pretrained"] == "none (random init)"


def test_a_pair_that_lost_more_than_max_lost_is_a_failed_row_kept_for_a_larger_one(
    tmp_path, tiny_checkpoint, monkeypatch
):
    """Before: a pair that read 2 of its 6 shapes was a "done" row with a top-1 over the two,
    the 4 lost only in the skipped column; `cg3d eval zeroshot` refuses such a run
    (eval.zeroshot.max_lost). The benchmark's rule is the same, as a row: the table goes on."""
    ids = write_modelnet(tmp_path / "mn", 40, per_class=2)
    for shape_id in ids[:4]:  # listed, but not a point file
        folder = shape_id.rsplit("_", 1)[0]
        (tmp_path / "mn" / folder / f"{shape_id}.txt").write_text("not, numbers\n")
    args = ["benchmark", "--models", f"ours={tiny_checkpoint}", "--datasets", "modelnet40"]
    args += ["--roots", f"modelnet40={tmp_path / 'mn'}", "--out", str(tmp_path / "bench")]
    args += ["--text-cache", ""]
    run(args)
    [row] = table(tmp_path / "bench")
    assert row["status"].startswith(
        "failed: ours on modelnet40: 4 of 6 samples lost (66.7%), more than --max-lost (0.5);"
    )
    assert row["acc1"] == "" and row["shapes"] == ""  # no number to copy into a paper
    evaluated = pairs_evaluated(monkeypatch)
    run([*args, "--max-lost", "1"])
    [row] = table(tmp_path / "bench")
    assert evaluated == []  # the pair's JSON was kept: read, not scored again
    assert row["status"] == "done (earlier run)"
    assert (row["shapes"], row["skipped"]) == ("2", "4") and row["acc1"] != ""
    result = CliRunner().invoke(app, [*args, "--max-lost", "1.5"])
    # click's usage error leaves the app as ours: `cg3d.cli.main` prints it, exit 2
    assert isinstance(result.exception, UsageError) and "'--max-lost'" in str(result.exception)


def test_a_model_name_too_long_for_its_result_file_is_refused_before_any_model_loads(
    tmp_path, tiny_checkpoint, monkeypatch
):
    """Before: the pair was scored, then writing `NAME__modelnet40.json` (267 bytes) failed
    "File name too long"."""
    import cg3d.models.checkpoint

    def no_load(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(cg3d.models.checkpoint, "load_model", no_load)
    write_modelnet(tmp_path / "mn", 40, per_class=1)
    args = ["benchmark", "--models", f"{'m' * 250}={tiny_checkpoint}"]
    args += ["--datasets", "modelnet40", "--roots", f"modelnet40={tmp_path / 'mn'}"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, UsageError), result.output
    message = str(result.exception)
    assert message.startswith(
        f"--models: the name {'m' * 20 + '…' + 'm' * 40!r} (250 characters) is too long"
    )
    assert "a name of 267 bytes, more than the 255" in message
    assert not (tmp_path / "o").exists()
    # 255 bytes is a name a file may have: taken
    check_result_names([ModelEntry("m" * 238, None)], [DatasetEntry("modelnet40", "", tmp_path)])

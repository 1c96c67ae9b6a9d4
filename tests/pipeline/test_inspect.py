"""Issue 26: `cg3d inspect DIR` says what a stage output, a shard set or a run holds, and what
made it; `cg3d show` takes a unique prefix or part of an id."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.errors import UsageError
from cg3d.formats.metrics import write_metrics
from cg3d.formats.renders import Rendered, write_render_part
from cg3d.pipeline.inspect import inspect_folder
from cg3d.render.show import resolve_id
from tests.pipeline.fakes import CLASSES, fake_pipeline

pytestmark = pytest.mark.filterwarnings("ignore::cg3d.models.clip.RandomClipWarning")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    records, _ = fake_pipeline(root, per_class=4, shard_size=3, views=2, n=64)
    return root, records


def test_meshes_ids_classes_and_failures_are_the_manifests(data):
    root, records = data
    found = inspect_folder(root / "meshes")
    ok = [r for r in records if r.status == "ok"]
    assert found.kind == "meshes" and found.ids == [r.id for r in ok]
    assert dict(found.classes) == {name: 4 for name in CLASSES}
    assert sum(found.splits.values()) == len(ok)
    failed = [r for r in records if r.status != "ok"]
    assert [f["id"] for f in found.failures] == [r.id for r in failed]
    assert all(
        f["reason"].startswith(r.status) for f, r in zip(found.failures, failed, strict=True)
    )
    assert found.made_by["cg3d"]


def test_points_and_renders_name_their_ids_classes_and_failures(data):
    root, records = data
    ids = [r.id for r in records if r.status == "ok"]
    points = inspect_folder(root / "points")
    assert points.kind == "points" and sorted(points.ids) == sorted(set(ids) - {ids[1]})
    assert [f["id"] for f in points.failures] == [ids[1]] and points.failures[0]["reason"]
    assert sum(points.classes.values()) == len(ids) - 1  # from the meshes folder beside it
    renders = inspect_folder(root / "renders")
    assert renders.kind == "render" and ids[2] not in renders.ids
    assert [f["id"] for f in renders.failures] == [ids[2]]


def test_shards_count_every_sample_by_class_and_split(data):
    root, _ = data
    found = inspect_folder(root / "shards")
    index = json.loads((root / "shards" / "index.json").read_text())
    assert found.kind == "shards"
    for split, entry in index["splits"].items():
        assert found.splits[split] == sum(entry["counts"])
    assert sum(found.classes.values()) == len(found.ids) == len(set(found.ids))
    assert set(found.classes) <= set(index["classes"])
    assert found.made_by["params"]["points"] == [64]


def test_inspect_command_prints_ids_and_failures(data):
    root, records = data
    result = CliRunner().invoke(app, ["inspect", str(root / "meshes")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    failed = next(r for r in records if r.status != "ok")
    assert "meshes," in text and failed.id in text and "chair 4" in text
    listed = CliRunner().invoke(app, ["inspect", str(root / "renders"), "--ids"])
    assert listed.output.split() == inspect_folder(root / "renders").ids
    as_json = json.loads(
        CliRunner().invoke(app, ["inspect", str(root / "points"), "--json"]).output
    )
    assert as_json["kind"] == "points" and as_json["failures"]


def test_inspect_a_training_run(tmp_path, tiny_checkpoint):
    import shutil

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_checkpoint, run / "last.pt")
    (run / "params.yaml").write_text("train:\n  epochs: 3\n")
    # as a finished run publishes them: the numbers, and what was trained beside them
    write_metrics(run, {"epoch": 3}, {"clip_model": "CG3D-ViT-Micro-32", "schedule": "paper"})
    found = inspect_folder(run)
    assert found.kind == "run" and found.ids == ["cube", "sphere", "cone"]
    assert found.made_by["params"] == {"train": {"epochs": 3}}
    assert found.details["metrics"] == {"epoch": 3}
    assert found.details["about"] == {"clip_model": "CG3D-ViT-Micro-32", "schedule": "paper"}
    shown = CliRunner().invoke(app, ["inspect", str(run)])
    assert shown.exit_code == 0 and '"schedule": "paper"' in shown.output


def test_inspect_evaluation_results(tmp_path):
    results = tmp_path / "zeroshot"
    about = {"checkpoint": "runs/train/last.pt", "protocol": "cg3d", "templates": "ulip64 (64)"}
    write_metrics(results, {"top1": 91.5, "n_shapes": 120}, about)
    (results / "per_class.csv").write_text("class,shapes,top1\nchair,120,91.5\n")
    found = inspect_folder(results)
    assert found.kind == "results"
    assert found.details["metrics"] == {"top1": 91.5, "n_shapes": 120}
    assert found.details["about"] == about
    shown = CliRunner().invoke(app, ["inspect", str(results)])
    assert shown.exit_code == 0 and "results" in shown.output
    assert '"checkpoint": "runs/train/last.pt"' in shown.output


def test_a_folder_of_nothing_known_is_one_line(tmp_path):
    with pytest.raises(UsageError, match="not a stage output"):
        inspect_folder(tmp_path)


def test_show_takes_a_unique_prefix_or_part_of_an_id(tmp_path):
    renders = tmp_path / "renders"
    renders.mkdir()
    rendered = Rendered({"view_00": b"png"}, b"{}")
    ids = ["modelnet-bench-0012", "modelnet-chair-0012", "modelnet-chair-0013"]
    write_render_part(renders / "part-00000.tar", {i: rendered for i in ids})
    assert resolve_id(renders, "modelnet-chair-0013") == "modelnet-chair-0013"
    assert resolve_id(renders, "modelnet-b") == "modelnet-bench-0012"  # a unique prefix
    assert resolve_id(renders, "chair-0012") == "modelnet-chair-0012"  # a name inside the id
    with pytest.raises(UsageError, match="'modelnet-chair' matches 2 objects"):
        resolve_id(renders, "modelnet-chair")
    with pytest.raises(UsageError, match="cg3d inspect .* --ids"):
        resolve_id(renders, "sofa")


def test_the_pack_bar_knows_its_total(tmp_path, capsys):
    """Issue 26: pack's progress bar read "600/?"."""
    fake_pipeline(tmp_path, per_class=4, shard_size=3)
    out = capsys.readouterr().out
    index = json.loads((tmp_path / "shards" / "index.json").read_text())
    packed = sum(sum(entry["counts"]) for entry in index["splits"].values())
    assert f"{packed}/{packed}" in out and "/?" not in out


def test_show_lists_the_render_parts_once(tmp_path, monkeypatch):
    renders = tmp_path / "renders"
    renders.mkdir()
    rendered = Rendered({"view_00": b"png"}, b"{}")
    for number, ids in enumerate([["a-chair-1"], ["a-sofa-2", "a-sofa-3"]]):
        write_render_part(renders / f"part-{number:05d}.tar", {i: rendered for i in ids})
    globs = []
    real = Path.glob
    monkeypatch.setattr(
        Path, "glob", lambda self, pattern: globs.append(pattern) or real(self, pattern)
    )
    assert resolve_id(renders, "sofa-3") == "a-sofa-3"  # found in the second part
    assert len(globs) == 1
    with pytest.raises(UsageError, match="no part-"):
        resolve_id(tmp_path, "sofa-3")
    assert len(globs) == 2

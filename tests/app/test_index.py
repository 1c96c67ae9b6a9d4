"""The retrieval index: build, search by text / image / points / embedding, resume, stale."""

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import cg3d
from cg3d.app.index import build_index, open_index
from cg3d.errors import UsageError
from cg3d.formats.shards import iter_samples
from cg3d.params import IndexConfig
from cg3d.pipeline.inspect import inspect_folder

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return cg3d.load(tiny_checkpoint)


def shard_objects(shards):
    """(split, sample) of every object, in the index's order (splits sorted, then shard order)."""
    return [(split, s) for split in ("test", "train") for s in iter_samples(shards, split)]


def test_the_index_holds_every_object_once_with_its_class_and_embeddings(
    tiny_index, tiny_shards, model
):
    objects = shard_objects(tiny_shards)
    index = open_index(tiny_index, model)
    assert len(index) == len(objects) == 12
    table = pq.read_table(tiny_index / "objects.parquet").to_pylist()
    assert [(r["id"], r["split"], r["class_name"]) for r in table] == [
        (s["key"], split, s["meta"]["class_name"]) for split, s in objects
    ]
    manifest = json.loads((tiny_index / "retrieval.json").read_text())
    assert manifest["objects"] == 12 and manifest["views"] == 24 and manifest["dim"] == 64
    assert manifest["model"]["checkpoint_sha256"] == model.sha256
    # row i of points.npy is object i's point embedding: searching by it finds that object
    points = np.load(tiny_index / "points.npy")
    assert np.allclose(np.linalg.norm(points, axis=1), 1.0, atol=1e-5)
    for row in (0, 7, 11):
        best = index.search(embedding=points[row], top=1)[0]
        assert best.row == row and best.id == objects[row][1]["key"]
        assert best.score == pytest.approx(1.0, abs=1e-5)


def test_an_image_query_finds_the_objects_it_was_rendered_from(tiny_index, tiny_shards, model):
    objects = shard_objects(tiny_shards)
    split, sample = objects[4]
    index = open_index(tiny_index, model)
    hits = index.search(image=sample["views"][1], top=12)  # image queries compare with views
    # the fixture paints the views of a class alike: exactly that class's objects score 1
    same_views = {s["key"] for _, s in objects if s["cls"] == sample["cls"]}
    assert {h.id for h in hits if h.score > 1 - 1e-4} == same_views
    assert hits[0].id in same_views and hits[len(same_views)].score < 0.999
    thumbnail = index.thumbnail(hits[0])
    assert thumbnail.size == (16, 16)  # the first view, shrunk to `thumbnail` pixels
    original = np.asarray(sample["views"][0].resize((16, 16)), dtype=float)
    assert np.abs(np.asarray(thumbnail, dtype=float) - original).mean() < 8


def test_text_and_point_queries_rank_by_cosine(tiny_index, model):
    index = open_index(tiny_index, model)
    points = np.load(tiny_index / "points.npy")
    hits = index.search(text="a photo of a plank", top=5)
    expected = points @ model.embed_text(["a photo of a plank"])[0]
    assert [h.row for h in hits] == list(np.argsort(-expected, kind="stable")[:5])
    assert [h.score for h in hits] == pytest.approx(sorted(expected, reverse=True)[:5], abs=1e-5)
    shape = np.random.default_rng(0).uniform(-1, 1, (200, 3))
    by_points = index.search(points=shape, top=12)
    assert len(by_points) == 12 and by_points[0].score >= by_points[-1].score
    both = index.search(text="a photo of a plank", points=shape, top=12)
    mean = {h.row: h.score for h in index.search(text="a photo of a plank", top=12)}
    assert both[0].score == pytest.approx(
        (mean[both[0].row] + by_points_score(by_points, both[0].row)) / 2, abs=1e-5
    )


def by_points_score(hits, row):
    return next(h.score for h in hits if h.row == row)


def test_search_errors_are_one_line(tiny_index, model, tmp_path):
    index = open_index(tiny_index, model)
    with pytest.raises(UsageError, match="give a text, an image"):
        index.search()
    with pytest.raises(UsageError, match="text query is empty"):
        index.search(text="  ")
    with pytest.raises(UsageError, match="a 3-d query against a 64-d index"):
        index.search(embedding=np.ones(3))
    with pytest.raises(UsageError, match="against must be one of points, views"):
        index.search(text="a box", against="captions")
    with pytest.raises(UsageError, match="not a CG3D index"):
        open_index(tmp_path)


@pytest.mark.parametrize(
    "words,line",
    [
        (["--top", "0"], "--top must be an integer ≥ 1, got 0"),
        (["--against", "captions"], "--against must be one of points, views, got 'captions'"),
        (["--image", "FOLDER"], "--image: FOLDER: not a regular file"),
        (["--points", "FOLDER"], "--points: FOLDER: not a regular file"),
        (["--image", "FOLDER/absent.png"], "--image: no such file FOLDER/absent.png"),
    ],
)
def test_cg3d_search_names_each_bad_option_before_the_model_loads(
    tiny_index, tmp_path, monkeypatch, words, line
):
    """Before: "top must be…" and "against must be…" (no option) and "FOLDER: not a regular
    file" (which of --image or --points?), each after the index's model had loaded."""
    from typer.testing import CliRunner

    import cg3d.app.index as index_module
    from cg3d.cli import app

    opened = []
    monkeypatch.setattr(index_module, "open_index", lambda *args: opened.append(args))
    words = [word.replace("FOLDER", str(tmp_path)) for word in words]
    result = CliRunner().invoke(app, ["search", str(tiny_index), "--text", "a box", *words])
    assert isinstance(result.exception, UsageError), result.output
    assert str(result.exception) == line.replace("FOLDER", str(tmp_path))
    assert opened == []


def test_another_checkpoint_is_a_stale_index(tiny_index, tmp_path):
    from cg3d.models import build_model, save_checkpoint
    from tests.models.helpers import tiny_model_config

    with warnings.catch_warnings(), torch.random.fork_rng():
        warnings.simplefilter("ignore")
        torch.manual_seed(1)
        save_checkpoint(
            tmp_path / "other.pt",
            build_model(tiny_model_config(n_points=64, classes=["cube", "sphere", "cone"])),
        )
    other = cg3d.load(tmp_path / "other.pt")
    with pytest.raises(UsageError, match="stale index: built with checkpoint") as error:
        open_index(tiny_index, other)
    assert "\n" not in str(error.value) and "cg3d index --checkpoint" in str(error.value)
    result = subprocess.run(
        [sys.executable, "-m", "cg3d", "search", str(tiny_index), "--text", "a box"]
        + ["--checkpoint", str(tmp_path / "other.pt")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2  # the random CLIP's warnings aside, one line says why
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "stale index" in line and "rebuild it: cg3d index --checkpoint" in line


def test_without_a_model_the_recorded_checkpoint_answers(tiny_index, tiny_checkpoint, tmp_path):
    index = open_index(tiny_index)
    assert index.search(text="a box", top=2)[0].score <= 1.0
    moved = tmp_path / "moved"
    shutil.copytree(tiny_index, moved)
    manifest = json.loads((moved / "retrieval.json").read_text())
    manifest["model"]["checkpoint"] = str(tmp_path / "gone.pt")
    (moved / "retrieval.json").write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match="checkpoint .*gone.pt is not there"):
        open_index(moved).search(text="a box")
    assert len(open_index(moved).search(embedding=np.ones(64), top=3)) == 3  # needs no model


def project_with_index(tmp_path: Path, checkpoint: Path, shards: Path) -> Path:
    """A project (a .git folder) holding runs/last.pt and runs/index built of it."""
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / "runs").mkdir()
    shutil.copyfile(checkpoint, project / "runs" / "last.pt")
    config = IndexConfig(batch_size=4, thumbnail=16)
    build_index(project / "runs" / "last.pt", shards, project / "runs" / "index", config)
    return project


def test_a_moved_project_s_index_loads_the_moved_checkpoint(tiny_checkpoint, tiny_shards, tmp_path):
    """`cp -a`/`rsync -a`/tar of a project elsewhere: its index recorded the checkpoint's
    absolute path, so it loaded the old place's (or, that gone, no) checkpoint."""
    project = project_with_index(tmp_path, tiny_checkpoint, tiny_shards)
    moved = tmp_path / "elsewhere" / "project"
    moved.parent.mkdir()
    project.rename(moved)  # the old place is gone: reading it fails
    index = open_index(moved / "runs" / "index")
    assert index.model.checkpoint.resolve() == (moved / "runs" / "last.pt").resolve()
    assert index.search(text="a box", top=2)[0].score <= 1.0
    # `cg3d inspect` names the moved checkpoint too, never the old place
    shown = inspect_folder(moved / "runs" / "index").details["model"]["checkpoint"]
    assert Path(shown).resolve() == (moved / "runs" / "last.pt").resolve()


def test_an_index_moved_out_of_its_project_says_so_and_takes_its_model_given(
    tiny_checkpoint, tiny_shards, tmp_path
):
    """The checkpoint is spelled from the index folder within one project: an index copied
    alone finds none there, and said only "not there"."""
    project = project_with_index(tmp_path, tiny_checkpoint, tiny_shards)
    alone = shutil.copytree(project / "runs" / "index", tmp_path / "shared" / "index")
    with pytest.raises(UsageError, match=r"not there \(an index moved out of its project\?\)"):
        open_index(alone).model  # noqa: B018 - the load is what is tested
    model = cg3d.load(project / "runs" / "last.pt")
    assert open_index(alone, model).search(text="a box", top=2)[0].score <= 1.0


def test_an_index_takes_its_clip_file_read_from_a_moved_project_and_refuses_other_weights():
    """A moved project's model reads its CLIP file at the new place: the index, built at the
    old one, was refused as stale for the path alone."""
    from types import SimpleNamespace

    from cg3d.app.index import check_model

    weights = {"kind": "file", "name": "clip.pt", "sha256": "ab" * 32, "path": "/old/clip.pt"}
    manifest = {"model": {"checkpoint_sha256": "cd" * 32, "clip_weights": weights}, "shards": "s"}
    moved = {**weights, "path": "/new/clip.pt", "relative": "../models/clip.pt"}
    model = SimpleNamespace(
        sha256="cd" * 32, checkpoint=Path("last.pt"), identity={"clip_weights": moved}
    )
    check_model(manifest, model, Path("index"))
    model.identity = {"clip_weights": {**moved, "sha256": "ef" * 32}}
    with pytest.raises(UsageError, match="stale index: built with CLIP weights clip.pt"):
        check_model(manifest, model, Path("index"))


def test_an_index_built_before_the_rename_still_opens(tiny_index, tmp_path):
    """retrieval.json was index.json, the name the shard index has too; old builds still open."""
    old = tmp_path / "old"
    shutil.copytree(tiny_index, old)
    (old / "retrieval.json").rename(old / "index.json")
    assert len(open_index(old).search(embedding=np.ones(64), top=3)) == 3


def test_a_killed_build_resumes_with_the_missing_parts(tiny_checkpoint, tiny_shards, tmp_path):
    out = tmp_path / "index"
    config = IndexConfig(batch_size=4, thumbnail=0)
    build_index(tiny_checkpoint, tiny_shards, out, config)
    points = np.load(out / "points.npy")
    kept = os.stat(out / "part-00000.parquet").st_mtime_ns
    (out / "part-00001.parquet").unlink()  # as if killed while embedding the second shard
    (out / "retrieval.json").unlink()
    build_index(tiny_checkpoint, tiny_shards, out, config)
    assert os.stat(out / "part-00000.parquet").st_mtime_ns == kept
    assert np.allclose(np.load(out / "points.npy"), points, atol=1e-6)
    assert not list(out.glob(".*.tmp"))


def test_a_killed_build_moved_with_its_project_resumes_with_a_clip_file(tiny_shards, tmp_path):
    """The resume fingerprint held the CLIP file's absolute path: a killed build of a model
    with a weights file, its project moved, computed every part again."""
    from cg3d.models.checkpoint import save_checkpoint
    from cg3d.models.model import build_model
    from tests.models.helpers import save_random_clip, tiny_model_config

    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / "models").mkdir()
    weights = save_random_clip(project / "models" / "clip.pt", seed=1)
    model = build_model(tiny_model_config(clip_pretrained=str(weights)))
    save_checkpoint(project / "last.pt", model)
    config = IndexConfig(batch_size=4, thumbnail=0)
    build_index(project / "last.pt", tiny_shards, project / "index", config)
    (project / "index" / "part-00001.parquet").unlink()  # as if killed in the second shard
    (project / "index" / "retrieval.json").unlink()
    moved = tmp_path / "elsewhere"
    project.rename(moved)
    kept = os.stat(moved / "index" / "part-00000.parquet")
    build_index(moved / "last.pt", tiny_shards, moved / "index", config)
    again = os.stat(moved / "index" / "part-00000.parquet")
    assert (again.st_ino, again.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)
    assert (moved / "index" / "part-00001.parquet").is_file()


def test_a_killed_build_moved_with_its_project_and_its_shards_resumes(
    tiny_checkpoint, tiny_shards, tmp_path
):
    """The resume fingerprint held `--shards` as given: an absolute path (or one relative to
    another cwd) named the old place, and a killed build, its project moved, started over."""
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    shutil.copytree(tiny_shards, project / "shards")
    shutil.copy(tiny_checkpoint, project / "last.pt")
    config = IndexConfig(batch_size=4, thumbnail=0)
    build_index(project / "last.pt", project / "shards", project / "index", config)
    (project / "index" / "part-00001.parquet").unlink()  # as if killed in the second shard
    (project / "index" / "retrieval.json").unlink()
    moved = tmp_path / "elsewhere"
    project.rename(moved)
    kept = os.stat(moved / "index" / "part-00000.parquet")
    build_index(moved / "last.pt", moved / "shards", moved / "index", config)
    again = os.stat(moved / "index" / "part-00000.parquet")
    assert (again.st_ino, again.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)
    assert (moved / "index" / "part-00001.parquet").is_file()


@pytest.mark.parametrize("column", ["points", "views"])
@pytest.mark.parametrize("edit", ["scaled", "nan"])
def test_a_part_edited_since_its_build_is_recomputed_not_merged_again(
    tiny_checkpoint, tiny_shards, tmp_path, column, edit
):
    """Before: a part whose embeddings were edited (a row scaled, a NaN) was reused by every
    rebuild, so the index it merged into was refused on open however often it was rebuilt."""
    import pyarrow as pa

    out = tmp_path / "index"
    config = IndexConfig(batch_size=4, thumbnail=0)
    build_index(tiny_checkpoint, tiny_shards, out, config)
    part = out / "part-00000.parquet"
    whole, points = part.read_bytes(), np.load(out / "points.npy")
    table = pq.read_table(part)
    rows = table[column].to_pylist()
    if column == "views":
        rows[1][0] = [v * 100 if edit == "scaled" else float("nan") for v in rows[1][0]]
    else:
        rows[1] = [v * 100 if edit == "scaled" else float("nan") for v in rows[1]]
    field = table.schema.get_field_index(column)
    table = table.set_column(field, column, pa.array(rows, table.schema.field(column).type))
    pq.write_table(table, part)
    (out / "retrieval.json").unlink()
    build_index(tiny_checkpoint, tiny_shards, out, config)
    assert part.read_bytes() == whole  # computed again, the same bytes
    assert np.array_equal(np.load(out / "points.npy"), points)
    assert len(open_index(out).search(embedding=np.ones(64), top=3)) == 3


def test_a_broken_sample_is_a_failure_row_and_the_rest_is_indexed(
    tiny_checkpoint, tiny_shards, tmp_path
):
    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards, shards)
    with tarfile.open(shards / "test" / "shard-000000.tar", "a") as tar:
        for name, data in (("bad.points.npy", b"not an array"), ("bad.cls", b"0")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    built = build_index(tiny_checkpoint, shards, tmp_path / "index", IndexConfig(splits="test"))
    assert built["objects"] == 6 and built["splits"] == ["test"] and built["failures"] == 1
    failures = pq.read_table(tmp_path / "index" / "failures.parquet").to_pylist()
    assert failures[0]["id"] == "bad" and "points.npy" in failures[0]["reason"]


def test_index_and_search_commands(tiny_checkpoint, tiny_shards, tmp_path):
    out = tmp_path / "index"
    command = [sys.executable, "-m", "cg3d"]
    result = subprocess.run(
        [*command, "index", "--checkpoint", str(tiny_checkpoint), "--shards", str(tiny_shards)]
        + ["--out", str(out), "--splits", "train", "--batch-size", "5"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "6 objects, 12 views, 64-d" in result.stdout
    result = subprocess.run(
        [*command, "search", str(out), "--text", "a box", "--top", "3"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert sum(line.count("train_") for line in result.stdout.splitlines()) == 3
    result = subprocess.run(
        [*command, "index", "--checkpoint", str(tiny_checkpoint), "--shards", str(tiny_shards)]
        + ["--out", str(out), "--splits", "val"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "no split 'val'" in result.stderr


def test_view_scores_are_each_objects_best_view_and_none_without_views(tmp_path):
    from cg3d.app.index import Index
    from cg3d.formats.retrieval import merge_index_parts, write_index_part

    unit = np.eye(4, dtype=np.float32)
    rows = [
        dict(id="a", views=[unit[0], 0.6 * unit[1] + 0.8 * unit[2]], points=unit[3]),
        dict(id="b", views=[], points=unit[3]),
        dict(id="c", views=[unit[1]], points=unit[0]),
    ]
    for row in rows:
        row |= dict(class_name="x", source="", split="test", n_views=len(row["views"]))
        row["thumbnail"] = b""
    write_index_part(tmp_path / "part-00000.parquet", rows)
    counts = merge_index_parts(tmp_path, [tmp_path / "part-00000.parquet"])
    manifest = {"format": "cg3d-index-1", "model": {}, "shards": "", **counts}
    index = Index(tmp_path, manifest)
    hits = index.search(embedding=np.array([0, 1, 0, 0]), against="views", top=3)
    assert [(h.id, round(h.score, 6)) for h in hits] == [("c", 1.0), ("a", 0.6), ("b", -np.inf)]
    hits = index.search(embedding=np.array([1, 0, 0, 0]), top=3)  # against the points
    assert [(h.id, round(h.score, 6)) for h in hits] == [("c", 1.0), ("a", 0.0), ("b", 0.0)]


def test_an_index_into_its_own_shards_folder_is_refused_and_the_set_kept(
    tiny_checkpoint, tiny_shards, tmp_path
):
    """Before: `--out` the `--shards` folder built the index there, removing the set's
    index.json (an index's descriptor before the rename had that name) and overwriting its
    .plan.json: `cg3d verify` then said "no index.json", and the next pack started over."""
    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards, shards)
    before = {p: p.read_bytes() for p in shards.rglob("*") if p.is_file()}
    with pytest.raises(UsageError, match=r"holds the output of `cg3d pack`; `cg3d index`"):
        build_index(tiny_checkpoint, shards, shards, IndexConfig(batch_size=4, thumbnail=0))
    assert {p: p.read_bytes() for p in shards.rglob("*") if p.is_file()} == before


def test_top_k_takes_the_lower_index_among_tied_scores():
    """Duplicates (Objaverse holds many) have identical embeddings: among the objects tied with
    the k-th best score, argpartition kept any, not the lowest indices the rule says (and
    another for another k). The best k are those of a stable sort, every time."""
    from cg3d.app.index import top_k

    rng = np.random.default_rng(0)
    for _ in range(200):
        scores = rng.integers(0, 3, 50).astype(np.float32)  # many exact ties
        k = int(rng.integers(1, 50))
        expected = np.argsort(-scores, kind="stable")[:k]
        assert top_k(scores, k).tolist() == expected.tolist(), k

"""Issue 26: `cg3d classify` / `cg3d embed` over a folder or a list, one model load, results
to CSV / Parquet / .npy with failures as rows; the content seed; checks before the model."""

import csv
import logging
import os
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import trimesh
from typer.testing import CliRunner

import cg3d.app.api as api
from cg3d.app.api import check_shape_file, input_points, load
from cg3d.app.batch import list_shapes
from cg3d.cli import app
from cg3d.errors import UsageError
from tests.pipeline.sources.helpers import nested_past_path_max

pytestmark = pytest.mark.filterwarnings("ignore::cg3d.models.clip.RandomClipWarning")


def cube_points(scale: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    points = rng.uniform(-1, 1, (300, 3))
    points[np.arange(300), rng.integers(0, 3, 300)] = rng.choice([-1.0, 1.0], 300)
    return (points * [scale, 1, 1]).astype(np.float32)


@pytest.fixture
def shapes(tmp_path):
    folder = tmp_path / "shapes"
    (folder / "sub").mkdir(parents=True)
    np.save(folder / "a.npy", cube_points(1.0, 0))
    np.save(folder / "sub" / "b.npy", cube_points(3.0, 1))
    (folder / "empty.obj").write_bytes(b"")
    (folder / "flat.obj").write_text("v 0 0 0\nv 0 0 0\nv 0 0 0\nf 1 2 3\n")
    (folder / "notes.md").write_text("not a shape")
    return folder


def counting_loads(monkeypatch) -> list[str]:
    calls, original = [], api.load

    def counted(*args, **kwargs):
        calls.append(str(args[0]))
        return original(*args, **kwargs)

    monkeypatch.setattr(api, "load", counted)
    return calls


def test_classify_a_folder_loads_once_and_writes_failures_as_rows(
    shapes, tmp_path, tiny_checkpoint, monkeypatch
):
    loads = counting_loads(monkeypatch)
    out = tmp_path / "results.csv"
    args = ["classify", str(shapes), "--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    args += ["--top", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert loads == [str(tiny_checkpoint)]
    rows = list(csv.DictReader(out.open()))
    by_name = {row["path"].rsplit("/", 1)[-1]: row for row in rows}
    assert sorted(by_name) == ["a.npy", "b.npy", "empty.obj", "flat.obj"]  # notes.md skipped
    assert by_name["empty.obj"]["status"] == "failed" and "empty" in by_name["empty.obj"]["error"]
    assert by_name["flat.obj"]["status"] == "failed" and by_name["flat.obj"]["error"]
    # each ok row says what classifying the file alone says
    model = load(tiny_checkpoint)
    for name in ("a.npy", "b.npy"):
        row = by_name[name]
        alone = model.classify(row["path"], None, 2)
        assert row["status"] == "ok" and row["error"] == ""
        assert [row["label_1"], row["label_2"]] == [p.label for p in alone]
        assert float(row["score_1"]) == pytest.approx(alone[0].score, abs=1e-6)


def test_classify_a_list_file_to_parquet(shapes, tmp_path, tiny_checkpoint):
    listing = tmp_path / "shapes.txt"
    listing.write_text("# my shapes\nshapes/a.npy\n\nshapes/missing.npy\n")
    out = tmp_path / "results.parquet"
    args = ["classify", str(listing), "--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--labels", "cube,sphere"])
    assert result.exit_code == 0, result.output
    table = pq.read_table(out).to_pylist()
    assert [row["status"] for row in table] == ["ok", "failed"]
    assert "no such file" in table[1]["error"]
    assert {table[0]["label_1"], table[0]["label_2"]} == {"cube", "sphere"}


def test_a_list_of_paths_from_another_folder_is_a_row_per_missing_path(
    shapes, tmp_path, tiny_checkpoint
):
    """Paths written relative to the working folder, not the list's: before, the .txt was read
    as a point cloud, one row "unreadable point file (could not convert string 'shapes/a.npy'
    to float64 ...)" that named no path looked for."""
    listing = tmp_path / "lists" / "shapes.txt"
    listing.parent.mkdir()
    listing.write_text("shapes/a.npy\nshapes/sub/b.npy\n")
    out = tmp_path / "results.csv"
    args = ["classify", str(listing), "--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    looked_for = [tmp_path / "lists" / "shapes" / "a.npy", tmp_path / "lists/shapes/sub/b.npy"]
    assert [row["path"] for row in rows] == [str(path) for path in looked_for]
    assert [row["error"] for row in rows] == [f"no such file {path}" for path in looked_for]


def test_a_fifo_or_device_named_like_a_shape_in_a_folder_is_a_failed_row(
    shapes, tmp_path, tiny_checkpoint
):
    """Before: the folder walk kept regular files only, so these were left out with no row (a
    folder of 3 shapes gave 2 rows and "0 failed")."""
    os.mkfifo(shapes / "pipe.npy")
    (shapes / "zeros.ply").symlink_to("/dev/zero")
    (shapes / "gone.obj").symlink_to(tmp_path / "nowhere.obj")
    out = tmp_path / "results.csv"
    args = ["classify", str(shapes), "--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    errors = {row["path"].rsplit("/", 1)[-1]: row["error"] for row in csv.DictReader(out.open())}
    assert errors["pipe.npy"] == f"{shapes / 'pipe.npy'}: not a regular file"
    assert errors["zeros.ply"] == f"{shapes / 'zeros.ply'}: not a regular file"
    # a name `ls` lists: "no such file" sent one looking for a typo
    assert errors["gone.obj"] == (
        f"'{shapes / 'gone.obj'}' is a broken symlink (to '{tmp_path / 'nowhere.obj'}')"
    )


def test_embed_a_folder_to_npy_with_its_paths(shapes, tmp_path, tiny_checkpoint):
    out = tmp_path / "emb.npy"
    args = ["embed", str(shapes), "--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    array = np.load(out)
    rows = list(csv.DictReader(out.with_suffix(".csv").open()))
    ok = [row for row in rows if row["status"] == "ok"]
    assert len(rows) == 4 and array.shape[0] == len(ok) == 2
    model = load(tiny_checkpoint)
    for row in ok:
        alone = model.embed_points(row["path"])[0]
        np.testing.assert_allclose(array[int(row["row"])], alone, atol=1e-5)
    assert all(row["row"] == "-1" for row in rows if row["status"] == "failed")


def test_embed_of_shapes_that_all_fail_writes_no_rows_of_the_models_width(
    shapes, tmp_path, tiny_checkpoint
):
    """Every shape failed: the .npy is (0, D) of the model's embedding width, so that it stacks
    with another run's (N, D); it was (0, 0)."""
    for good in ("a.npy", "sub/b.npy"):
        (shapes / good).unlink()
    out = tmp_path / "emb.npy"
    args = ["embed", str(shapes), "--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    width = len(load(tiny_checkpoint).embed_points(cube_points(1.0, 0))[0])
    assert np.load(out).shape == (0, width) and width > 0


def test_embed_to_parquet_and_bad_out_before_loading(shapes, tmp_path, tiny_checkpoint):
    out = tmp_path / "emb.parquet"
    args = ["embed", str(shapes / "a.npy"), "--checkpoint", str(tiny_checkpoint)]
    assert CliRunner().invoke(app, [*args, "--out", str(out)]).exit_code == 0
    (row,) = pq.read_table(out).to_pylist()
    assert row["status"] == "ok" and len(row["embedding"]) > 0
    bad = CliRunner().invoke(
        app, ["embed", str(shapes), "--checkpoint", "nowhere.pt", "--out", "x.csv"]
    )
    assert bad.exit_code != 0 and "--out" in str(bad.exception)


@pytest.mark.parametrize("command", ["embed", "classify"])
def test_an_out_whose_folder_is_a_file_is_one_line_before_the_model_loads(
    shapes, tmp_path, command
):
    (tmp_path / "taken").write_text("not a folder")
    out = tmp_path / "taken" / "rows.parquet"
    args = [command, str(shapes / "a.npy"), "--checkpoint", "no-such-checkpoint.pt"]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code != 0
    assert str(result.exception) == f"--out: {tmp_path / 'taken'} is a file, not a folder"


def test_an_empty_file_is_said_before_the_model_loads(shapes):
    result = CliRunner().invoke(
        app, ["classify", str(shapes / "empty.obj"), "--checkpoint", "no-such-checkpoint.pt"]
    )
    assert result.exit_code != 0
    assert "empty" in str(result.exception) and "checkpoint" not in str(result.exception)


def test_the_classify_table_keeps_a_long_path_on_one_line(tmp_path, tiny_checkpoint):
    folder = tmp_path / ("a-rather-long-folder-name-" * 4)
    folder.mkdir()
    np.save(folder / "chair.npy", cube_points(1.0, 0))
    path = str(folder / "chair.npy")
    result = CliRunner().invoke(app, ["classify", path, "--checkpoint", str(tiny_checkpoint)])
    assert result.exit_code == 0, result.output
    assert path in result.output.splitlines()


def test_the_sampling_seed_comes_from_the_content_not_the_name(tmp_path):
    box = trimesh.creation.box(extents=(1.0, 2.0, 0.5))
    box.export(tmp_path / "chair.obj")
    (tmp_path / "my_chair.obj").write_bytes((tmp_path / "chair.obj").read_bytes())
    first = input_points(tmp_path / "chair.obj", 128)
    np.testing.assert_array_equal(first, input_points(tmp_path / "my_chair.obj", 128))
    other = trimesh.creation.box(extents=(1.0, 2.0, 0.6))
    other.export(tmp_path / "chair.obj")  # other bytes under the same name: other samples
    assert not np.array_equal(first, input_points(tmp_path / "chair.obj", 128))


def test_loading_a_checkpoint_logs_no_open_clip_weights_line(tiny_checkpoint, caplog):
    with caplog.at_level(logging.WARNING):
        load(tiny_checkpoint).embed_text(["a chair"])  # CLIP is built on first use of text
    assert not [r for r in caplog.records if "No pretrained weights" in r.getMessage()]


def test_a_batch_of_meshes_shares_one_points_reader(tmp_path, tiny_checkpoint, monkeypatch):
    from cg3d.app.batch import embed_rows
    from cg3d.pipeline import sample

    folder = tmp_path / "meshes"
    folder.mkdir()
    for index in range(3):
        trimesh.creation.box(extents=(1 + index, 1, 1)).export(folder / f"box{index}.obj")
    opened, original = [], sample.PointsReader.__init__

    def counted(self, config):
        opened.append(config)
        original(self, config)

    monkeypatch.setattr(sample.PointsReader, "__init__", counted)
    model = load(tiny_checkpoint)
    rows, vectors = embed_rows(model, sorted(folder.glob("*.obj")))
    assert [row["status"] for row in rows] == ["ok"] * 3 and len(opened) == 1
    # the same features as each file read alone (a reader of its own)
    alone = np.concatenate([model.embed_points(row["path"]) for row in rows])
    np.testing.assert_allclose(vectors, alone, atol=1e-6)
    assert len(opened) == 4


def test_a_points_reader_kept_open_serves_its_own_thread_only(
    tmp_path, tiny_checkpoint, monkeypatch
):
    """One model serves a service's threads: while one thread's batch keeps its reader open
    (`reading_shapes`), another thread's shape went through that reader too (a Blender worker
    two threads talked to at once), or through one the batch closed under it."""
    from concurrent.futures import ThreadPoolExecutor

    from cg3d.pipeline import sample

    trimesh.creation.box(extents=(2, 1, 1)).export(tmp_path / "box.obj")
    opened, original = [], sample.PointsReader.__init__

    def counted(self, config):
        opened.append(threading.get_ident())
        original(self, config)

    monkeypatch.setattr(sample.PointsReader, "__init__", counted)
    model = load(tiny_checkpoint)
    alone = model.embed_points(tmp_path / "box.obj")
    opened.clear()
    with model.reading_shapes(), ThreadPoolExecutor(1) as other:
        elsewhere = other.submit(model.embed_points, tmp_path / "box.obj").result()
        assert model.embed_points(tmp_path / "box.obj") is not None  # the block's own reader
    assert opened[0] == threading.get_ident() and len(opened) == 2  # the other thread's own
    assert opened[1] != threading.get_ident()
    np.testing.assert_allclose(elsewhere, alone, atol=1e-6)


def test_a_folder_entry_that_is_no_file_is_a_failed_row_not_left_out(shapes, tmp_path):
    """A FIFO, a symlink loop or a broken link named like a shape: a row saying what it is,
    never opened (reading the FIFO would block); a folder named `x.obj` is entered instead."""
    os.mkfifo(shapes / "pipe.npy")
    (shapes / "loop.npy").symlink_to("loop.npy")
    (shapes / "broken.ply").symlink_to("gone.ply")
    (shapes / "folder.obj").mkdir()
    np.save(shapes / "folder.obj" / "c.npy", cube_points(2.0, 2))
    rows = {path.name: path for path in list_shapes(shapes)}
    assert sorted(rows) == [
        "a.npy", "b.npy", "broken.ply", "c.npy", "empty.obj", "flat.obj", "loop.npy", "pipe.npy"
    ]  # fmt: skip
    expected = {
        "pipe.npy": "pipe.npy: not a regular file",
        "loop.npy": "loop.npy' is a symlink loop",
        "broken.ply": "broken.ply' is a broken symlink (to 'gone.ply')",
    }
    for name, words in expected.items():
        with pytest.raises(UsageError) as caught:
            check_shape_file(rows[name])
        assert words in str(caught.value), (name, str(caught.value))


def test_macos_companion_files_and_hidden_folders_in_a_folder_are_no_shapes(shapes):
    """Before: on an exFAT drive written by a Mac every shape `a.npy` has a `._a.npy` beside it
    (4 KB of AppleDouble): each was a failed row, as many as the shapes. The sources skip
    names starting with `.`; so does a folder of classify/embed."""
    (shapes / "._a.npy").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X" + bytes(4066))
    (shapes / ".Trashes").mkdir()
    np.save(shapes / ".Trashes" / "old.npy", cube_points(1.0, 3))
    assert sorted(path.name for path in list_shapes(shapes)) == [
        "a.npy", "b.npy", "empty.obj", "flat.obj"
    ]  # fmt: skip


@pytest.mark.parametrize(
    "source,out",
    [
        ("a.npy", "a.npy"),  # the shape itself
        ("a.npy", "sub/../a.npy"),  # spelt another way
        ("link.npy", "a.npy"),  # through a symlink
        ("hard.npy", "a.npy"),  # one file, two names: `A.npy` and `a.npy` on macOS or exFAT
        ("list.txt", "a.npy"),  # listed
        ("shapes", "shapes/b.npy"),  # in the folder
    ],
)
def test_embed_into_a_shape_it_reads_is_refused_and_the_shape_kept(
    tmp_path, monkeypatch, source, out
):
    """Before: `cg3d embed a.npy --out a.npy` replaced the points with their embedding."""
    monkeypatch.chdir(tmp_path)
    points = cube_points(1.0, 0)
    np.save("a.npy", points)
    os.symlink("a.npy", "link.npy")
    os.link("a.npy", "hard.npy")  # names that differ but the system says are one file
    (tmp_path / "list.txt").write_text("a.npy\n")
    (tmp_path / "shapes").mkdir()
    np.save("shapes/b.npy", points)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.npy")}
    result = CliRunner().invoke(app, ["embed", source, "--checkpoint", "absent.pt", "--out", out])
    assert isinstance(result.exception, UsageError), result.output
    assert str(result.exception) == f"--out: {out} is a shape this run reads; choose another file"
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.npy")} == before


def test_embeddings_into_the_folder_of_the_shapes_spelt_another_case_are_refused(
    tmp_path, monkeypatch
):
    """Before: on macOS `cg3d embed shapes --out Shapes/e.npy` wrote into the folder read (its
    real path keeps the spelling given, so `Shapes` was not inside `shapes`). Simulated: a
    link `Shapes` to `shapes`, and a real_path that, as macOS's for a case twin, keeps it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shapes").mkdir()
    np.save("shapes/b.npy", cube_points(1.0, 0))
    os.symlink("shapes", "Shapes")
    kept_spelling = lambda path: Path(os.path.abspath(path))  # noqa: E731
    monkeypatch.setattr("cg3d.files.real_path", kept_spelling)
    monkeypatch.setattr("cg3d.app.batch.real_path", kept_spelling, raising=False)
    command = ["embed", "shapes", "--checkpoint", "absent.pt", "--out", "Shapes/deeper/e.npy"]
    result = CliRunner().invoke(app, command)
    assert isinstance(result.exception, UsageError), result.output
    assert str(result.exception).startswith("--out: Shapes/deeper/e.npy is inside shapes, whose")
    assert not (tmp_path / "shapes" / "deeper").exists()


def test_embeddings_into_the_folder_of_the_shapes_are_refused(tmp_path, monkeypatch):
    """Before: `cg3d embed shapes --out shapes/e.npy` wrote there, and the next run over the
    folder read the embeddings as a shape (a failed row)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shapes").mkdir()
    np.save("shapes/b.npy", cube_points(1.0, 0))
    command = ["embed", "shapes", "--checkpoint", "absent.pt", "--out"]
    result = CliRunner().invoke(app, [*command, "shapes/deeper/e.npy"])
    assert isinstance(result.exception, UsageError), result.output
    assert str(result.exception) == (
        "--out: shapes/deeper/e.npy is inside shapes, whose .npy files are the shapes read: a "
        "later run over it would read this file as a shape; choose another folder"
    )
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["b.npy", "shapes"]
    # a .parquet there is no shape: only the missing checkpoint stops this one
    result = CliRunner().invoke(app, [*command, "shapes/e.parquet"])
    assert str(result.exception) == "no checkpoint at absent.pt"


def test_shapes_nested_past_path_max_in_a_folder_are_failed_rows(shapes, tmp_path, tiny_checkpoint):
    """A folder nested until its path passes PATH_MAX, and a file whose path does in a folder
    that does not: a failed row each, naming the path cut. Before: the walk (`rglob`, then a
    file's `is_dir`) raised ENAMETOOLONG and the whole run ended in one line with no table."""
    deep_file = nested_past_path_max(shapes / "sub", "x" * 200 + ".npy", b"", length=4000)
    (shapes / "deep").mkdir()
    deep_folder = nested_past_path_max(shapes / "deep", "c.obj", b"")
    too_deep = next(  # the first of deep_folder's folders whose path is over the limit
        p for p in [deep_folder, *deep_folder.parents] if len(os.fsencode(p.parent)) < 4096
    )
    out = tmp_path / "results.csv"
    args = ["classify", str(shapes), "--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = {row["path"]: row for row in csv.DictReader(out.open())}
    assert rows[str(shapes / "a.npy")]["status"] == "ok"
    failed = {path: row["error"] for path, row in rows.items() if len(path) >= 4096}
    assert sorted(failed) == sorted([str(too_deep), str(deep_file)])
    for error in failed.values():
        assert "characters) names no file to read (File name too long)" in error
        assert len(error) < 300


@pytest.mark.parametrize(("command", "suffix"), [("embed", ".parquet"), ("classify", ".csv")])
def test_a_name_that_is_not_utf8_in_a_folder_is_a_failed_row(
    shapes, tmp_path, tiny_checkpoint, command, suffix
):
    """One file named `m\\xff.npy` among good ones: its surrogate ended `embed` when the table
    was written (exit 2, every result lost), and `classify` gave it a UnicodeEncodeError as
    its reason. It is a failed row with the meshes stage's words, spelled as its manifest."""
    np.save(shapes / os.fsdecode(b"m\xff.npy"), cube_points(2.0, 2))
    out = tmp_path / f"results{suffix}"
    args = [command, str(shapes), "--checkpoint", str(tiny_checkpoint), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = (
        pq.read_table(out).to_pylist() if suffix == ".parquet" else list(csv.DictReader(out.open()))
    )
    by_name = {row["path"].rpartition("/")[2]: row for row in rows}
    bad = by_name["m\\xff.npy"]  # the byte as \xff: the results file is UTF-8
    assert (bad["status"], bad["error"]) == ("failed", "the file name is not UTF-8; rename it")
    assert by_name["a.npy"]["status"] == by_name["b.npy"]["status"] == "ok"


@pytest.mark.parametrize("command", ["classify", "embed"])
def test_a_parquet_of_failed_shapes_keeps_its_column_types(shapes, tmp_path, command):
    """Every shape failed: the columns were inferred from the values, so scores and embeddings
    were type null (duckdb's "NULL"[], pandas' object), and a failed score was NaN, a number to
    duckdb and polars (their mean of score_1 over a mixed table was NaN). Now float64 scores and
    float32 embeddings (the .npy's type), null where a shape failed, as the CSV's empty cell."""
    import pyarrow as pa

    from cg3d.app.batch import write_embeddings, write_table

    out = tmp_path / f"{command}.parquet"
    if command == "classify":
        nan = float("nan")
        rows = [
            {"path": "x.obj", "status": "failed", "error": "empty", "label_1": "", "score_1": nan}
        ]
        write_table(rows, out)
        table = pq.read_table(out)
        assert table.schema.field("score_1").type == pa.float64()
        assert table.column("score_1").null_count == 1
    else:
        rows = [{"path": "x.obj", "status": "failed", "error": "empty", "row": -1}]
        write_embeddings(rows, np.zeros((0, 0), np.float32), out)
        table = pq.read_table(out)
        assert table.schema.field("embedding").type == pa.list_(pa.float32())
        assert table.column("embedding").null_count == 1
    assert table.schema.field("path").type == pa.string()


def test_a_parquet_of_embeddings_holds_the_npy_float32s(shapes, tmp_path, tiny_checkpoint):
    args = ["embed", str(shapes), "--checkpoint", str(tiny_checkpoint), "--out"]
    assert CliRunner().invoke(app, [*args, str(tmp_path / "e.parquet")]).exit_code == 0
    assert CliRunner().invoke(app, [*args, str(tmp_path / "e.npy")]).exit_code == 0
    table = pq.read_table(tmp_path / "e.parquet")
    rows = [r for r in table.to_pylist() if r["status"] == "ok"]
    np.testing.assert_array_equal(
        np.array([r["embedding"] for r in rows], np.float32), np.load(tmp_path / "e.npy")
    )
    failed = [r for r in table.to_pylist() if r["status"] == "failed"]
    assert failed and all(r["embedding"] is None for r in failed)

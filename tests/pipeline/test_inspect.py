"""Issue 26: `cg3d inspect DIR` says what a stage output, a shard set or a run holds, and what
made it; `cg3d show` takes a unique prefix or part of an id."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.errors import UsageError
from cg3d.files import LOCK_NAME
from cg3d.formats.metrics import write_metrics
from cg3d.formats.renders import Rendered, write_render_part
from cg3d.pipeline.inspect import inspect_folder
from cg3d.render.show import locate
from tests.pipeline.fakes import CLASSES, count_shard_reads, fake_pipeline

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


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_stdout_that_cannot_encode_a_character_shows_it_escaped(data, encoding):
    """PYTHONIOENCODING=ascii (or a latin-1 locale) on a cluster node: the id list's `…` was
    a UnicodeEncodeError traceback half way through the output, exit 1."""
    root, _ = data
    env = {**os.environ, "PYTHONIOENCODING": encoding}
    run = subprocess.run(
        [sys.executable, "-m", "cg3d", "inspect", str(root / "meshes")],
        capture_output=True, env=env, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0 and run.stderr == b""
    assert b"synthetic-chair-002, \\u2026, synthetic-table-003" in run.stdout


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
    # a results folder holds numbers, not ids: before, its first line said "0 ids, 0 failures"
    assert shown.output.splitlines()[0] == f"{results}: results, 2 numbers in metrics.json"


def test_the_first_line_of_nested_results_counts_every_number(tmp_path):
    """Retrieval's metrics group their numbers per direction; text is no number."""
    results = tmp_path / "retrieval"
    metrics = {
        "point_to_text": {"R@1": 90.8, "R@5": 100.0, "mAP": 60.9},
        "text_to_point": {"R@1": 62.4, "R@5": 75.4, "mAP": 65.1},
        "n_objects": 120,
    }
    write_metrics(results, metrics, {"protocol": "cg3d"})
    shown = CliRunner().invoke(app, ["inspect", str(results)])
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[0] == f"{results}: results, 7 numbers in metrics.json"
    assert " ids" not in shown.output


def test_inspect_a_benchmark_output(tmp_path):
    """Before: "not a stage output, a shard set, a training run or results" of the folder
    `cg3d benchmark` wrote (results.csv, results.md and a JSON per finished pair)."""
    from cg3d.eval.benchmark import parse_datasets, parse_models, run_benchmark
    from cg3d.params import ZeroShotConfig

    out = tmp_path / "bench"
    models = parse_models("ulip2-pointbert,openshape-pointbert")  # cards without weights
    run_benchmark(models, parse_datasets("modelnet40", "modelnet40=x"), out, ZeroShotConfig())
    found = inspect_folder(out)
    assert found.kind == "results"
    assert found.details["benchmark"] == [
        f"{name} on modelnet40: top-1 – %, missing weights"
        for name in ("ulip2-pointbert", "openshape-pointbert")
    ]
    shown = CliRunner().invoke(app, ["inspect", str(out)])
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[0] == f"{out}: results, 2 benchmark pairs in results.csv"
    (out / "results.csv").write_text("name,value\nx,1\n")  # another program's table
    with pytest.raises(UsageError, match=r"results\.csv: not a `cg3d benchmark` table"):
        inspect_folder(out)


def test_inspect_an_audit_output(tmp_path):
    from cg3d.eval.audit import audit
    from tests.eval.files import write_shards

    write_shards(tmp_path / "shards", per_class=1, n=32, views=1)
    audit(str(tmp_path / "shards"), tmp_path / "audit", test_shards=str(tmp_path / "shards"))
    written = json.loads((tmp_path / "audit" / "audit.json").read_text())
    found = inspect_folder(tmp_path / "audit")
    assert found.kind == "results"
    assert found.details["audit"]["pairs"] == written["pairs"]
    leaked = written["leaked_test_shapes"]
    assert found.headline() == (
        f"{tmp_path / 'audit'}: results, an audit ({leaked} test shapes with a training twin)"
    )
    (tmp_path / "audit" / "audit.json").write_text("[")
    with pytest.raises(UsageError, match=r"^\S*audit\.json does not read"):
        inspect_folder(tmp_path / "audit")


def test_a_folder_of_nothing_known_is_one_line(tmp_path):
    with pytest.raises(UsageError, match="not a stage output"):
        inspect_folder(tmp_path)


def test_a_lone_owner_mark_is_nothing_yet_and_a_killed_run_is_unfinished(tmp_path):
    """Before: a folder emptied with `rm out/*` (which keeps the hidden .owner.json) was
    "results, unfinished", though the mark alone claims nothing."""
    out = tmp_path / "zeroshot"
    out.mkdir()
    (out / ".owner.json").write_text(json.dumps({"command": "eval zeroshot"}))
    (out / LOCK_NAME).write_text("")  # a lock file is not one of the command's files either
    found = inspect_folder(out)
    assert found.kind == "empty"
    shown = CliRunner().invoke(app, ["inspect", str(out)])
    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines()[0] == (
        f"{out}: empty, nothing yet (only the .owner.json mark of a `cg3d eval zeroshot` run: "
        "none of its files, killed before its first or removed since; any command may write here)"
    )
    assert "unfinished" not in shown.output
    (out / "predictions.csv").write_text("id,label\n")  # a run killed before its numbers
    killed = inspect_folder(out)
    assert killed.kind == "results"
    assert killed.headline() == (
        f"{out}: results, unfinished: no metrics.json: a `cg3d eval zeroshot` run was killed "
        "or failed before it; rerun it"
    )


def test_show_takes_a_unique_prefix_or_part_of_an_id(tmp_path):
    renders = tmp_path / "renders"
    renders.mkdir()
    rendered = Rendered({"view_00": b"png"}, b"{}")
    ids = ["modelnet-bench-0012", "modelnet-chair-0012", "modelnet-chair-0013"]
    write_render_part(renders / "part-00000.tar", {i: rendered for i in ids})
    assert locate(renders, "modelnet-chair-0013")[0] == "modelnet-chair-0013"
    assert locate(renders, "modelnet-b")[0] == "modelnet-bench-0012"  # a unique prefix
    assert locate(renders, "chair-0012")[0] == "modelnet-chair-0012"  # a name inside the id
    with pytest.raises(UsageError, match="'modelnet-chair' matches 2 objects"):
        locate(renders, "modelnet-chair")
    with pytest.raises(UsageError, match="cg3d inspect .* --ids"):
        locate(renders, "sofa")


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
    assert locate(renders, "sofa-3") == ("a-sofa-3", [renders / "part-00001.tar"])
    assert len(globs) == 1
    with pytest.raises(UsageError, match="no part-"):
        locate(tmp_path, "sofa-3")
    assert len(globs) == 2


def copy_of(data, tmp_path: Path, folder: str) -> Path:
    import shutil

    shutil.copytree(data[0] / folder, tmp_path / folder)
    return tmp_path / folder


def edit_index(folder: Path, edit) -> None:
    index = json.loads((folder / "index.json").read_text())
    edit(index)
    (folder / "index.json").write_text(json.dumps(index))


@pytest.mark.parametrize(
    "case, folder, edit, line",
    [
        (".plan.json not JSON", "points", (".plan.json", b"{bad"), ".plan.json: not valid JSON"),
        (
            ".plan.json nested deep",
            "renders",
            (".plan.json", b"[" * 100_000),
            ".plan.json: not valid JSON (the JSON nests too deep)",
        ),
        ("metrics.json cut", "run", ("metrics.json", b'{"a": '), "metrics.json: not valid JSON"),
        ("run.json nested", "run", ("run.json", b"[" * 100_000), "run.json: not valid JSON"),
        ("a render part cut short", "renders", None, "truncated tar"),
    ],
)
def test_a_damaged_file_beside_an_output_is_one_line(data, tmp_path, case, folder, edit, line):
    """Before: JSONDecodeError, RecursionError and FormatError tracebacks."""
    if folder == "run":
        target = tmp_path / "run"
        target.mkdir()
        (target / "last.pt").write_bytes(b"")  # named only: the JSON files are read first
    else:
        target = copy_of(data, tmp_path, folder)
    if edit is None:
        part = sorted(target.glob("part-*.tar"))[0]
        part.write_bytes(part.read_bytes()[:700])
    else:
        (target / edit[0]).write_bytes(edit[1])
    result = CliRunner().invoke(app, ["inspect", str(target)])
    assert isinstance(result.exception, UsageError), result.exception
    assert line in str(result.exception) and "\n" not in str(result.exception)


def test_a_sample_label_outside_the_class_list_is_counted_as_such(data, tmp_path):
    """Before: an IndexError traceback (index.json's classes cut to 2 of 3)."""
    shards = copy_of(data, tmp_path, "shards")
    edit_index(shards, lambda index: index.__setitem__("classes", index["classes"][:2]))
    found = inspect_folder(shards)
    unknown = "(label '2': not in index.json's classes)"
    assert found.classes[unknown] == 4 and sum(found.classes.values()) == len(found.ids)


def test_an_index_count_beyond_any_shard_is_one_line_not_a_hang(data, tmp_path):
    """Before: 10^12 in `counts` looped over every missing position in `raw_samples` (inspect hung; the loaders read through it too)."""
    shards = copy_of(data, tmp_path, "shards")
    edit_index(shards, lambda index: index["splits"]["train"]["counts"].__setitem__(0, 10**12))
    with pytest.raises(UsageError, match="a shard count over 1,000,000 samples"):
        inspect_folder(shards)


def test_samples_a_damaged_shard_did_not_give_are_failures(data, tmp_path):
    """Before: inspect read what it could and said "0 failures" (a warning on stderr only) of
    a shard whose second sample's header claims 8 GiB: every sample after it was gone."""
    import tarfile

    shards = copy_of(data, tmp_path, "shards")
    entry = json.loads((shards / "index.json").read_text())["splits"]["train"]
    shard = shards / entry["shards"][0]
    with tarfile.open(shard) as tar:  # tarfile's own reading: where the second sample starts
        members = tar.getmembers()
    first_key = members[0].name.split(".")[0]
    second = next(m for m in members if m.name.split(".")[0] != first_key)
    data_bytes = bytearray(shard.read_bytes())
    header = second.offset
    data_bytes[header + 124 : header + 136] = b"77777777777\0"  # size: 8 GiB
    data_bytes[header + 148 : header + 156] = b" " * 8  # the checksum is over spaces here
    checksum = sum(data_bytes[header : header + 512])
    data_bytes[header + 148 : header + 156] = b"%06o\0 " % checksum
    shard.write_bytes(bytes(data_bytes))
    found = inspect_folder(shards)
    assert found.splits["train"] == sum(entry["counts"]) - (entry["counts"][0] - 1)
    (failure,) = [f for f in found.failures if f["id"] == "(train split)"]
    assert failure["reason"].startswith(f"{entry['counts'][0] - 1} not read: unreadable shard")
    assert "8589934591" in failure["reason"]


@pytest.mark.parametrize("name", ["../x.points.npy", "/abs/x.points.npy", "x/y.points.npy"])
def test_a_shard_member_named_outside_any_id_is_a_failure_not_an_id(data, tmp_path, name):
    """Before: `../x` was listed (and counted) as an id, which `--ids` printed for `show`."""
    from tests.pipeline.fakes import rewrite_tar

    shards = copy_of(data, tmp_path, "shards")
    shard = sorted((shards / "train").glob("*.tar"))[0]
    before = inspect_folder(shards)
    first = []

    def rename(member: str, data: bytes) -> tuple[str, bytes]:
        first.append(member)
        return (name if len(first) == 1 else member), data

    rewrite_tar(shard, rename)
    found = inspect_folder(shards)
    assert name.rsplit(".", 2)[0] not in found.ids and "x" not in found.ids
    assert set(found.ids) <= set(before.ids)
    bad = [f for f in found.failures if f["stage"] == "shards"]
    assert bad and all(f["reason"].startswith("damaged sample:") for f in bad)


@pytest.mark.parametrize("folder, suffix", [("points", ".parquet"), ("renders", ".tar")])
def test_a_part_copied_twice_counts_its_ids_once_and_says_so(data, tmp_path, folder, suffix):
    """Before: a points part copied by hand doubled the ids and the per-class counts."""
    import shutil

    from cg3d.formats import points, renders

    copy = copy_of(data, tmp_path, folder)
    before = inspect_folder(copy)
    first = sorted(copy.glob(f"part-*{suffix}"))[0]
    shutil.copy(first, copy / f"part-99999{suffix}")
    found = inspect_folder(copy)
    assert found.ids == before.ids and found.classes == before.classes
    copied = sorted((points if folder == "points" else renders).part_ids(first))
    assert found.details["ids listed twice"].startswith(f"{len(copied)} ({copied[0]}")


def _replaced_by_fifo(path: Path) -> Path:
    path.unlink()
    os.mkfifo(path)  # opening it to read blocks until a writer comes: never, here
    return path


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("folder", "pattern"),
    [("points", "part-*.parquet"), ("renders", "part-*.tar")],
)
def test_a_part_that_is_a_fifo_is_one_line_not_a_hang(data, tmp_path, folder, pattern):
    """Before: `cg3d inspect` blocked forever opening it."""
    target = copy_of(data, tmp_path, folder)
    part = _replaced_by_fifo(sorted(target.glob(pattern))[0])
    result = CliRunner().invoke(app, ["inspect", str(target)])
    assert isinstance(result.exception, UsageError), result.exception
    line = str(result.exception)
    assert line.startswith(str(part)) and "is a FIFO, not a file" in line
    assert "\n" not in line


@pytest.mark.timeout(60)
def test_a_shard_that_is_a_fifo_is_lost_with_its_reason_not_a_hang(data, tmp_path, caplog):
    """Before: `cg3d inspect`, the eval reader and the training loader blocked forever."""
    from cg3d.eval.readers import open_benchmark
    from cg3d.pipeline.verify import verify_shards

    target = copy_of(data, tmp_path, "shards")
    shard = _replaced_by_fifo(sorted(target.glob("test/*.tar"))[0])
    found = inspect_folder(target)
    assert "test" not in found.splits or found.splits["test"] < 3
    assert f"{shard}: not a regular file" in caplog.text
    benchmark = open_benchmark("shards", target)
    assert len(list(benchmark.shapes())) < benchmark.size and benchmark.skipped() > 0
    problems = verify_shards(target).problems
    assert f"{shard.relative_to(target)}: is a FIFO, not a file" in problems


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("name", "beside", "noun"),
    [
        ("manifest.parquet", [], "file"),
        ("index.json", [], "file"),
        ("last.pt", ["metrics.json", "params.yaml"], "file"),  # was read as results
        (".resume", ["metrics.json"], "folder"),
        ("captions.parquet", [], "file"),
        (".plan.json", ["captions.parquet"], "file"),  # its params were left out unsaid
        ("retrieval.json", ["part-00000.parquet"], "file"),  # was "rerun `cg3d sample`"
        ("metrics.json", [], "file"),
        ("results.csv", [], "file"),
        ("audit.json", [], "file"),
        (".owner.json", ["predictions.csv"], "file"),
    ],
)
def test_a_file_inspect_knows_a_folder_by_that_is_a_fifo_is_named(tmp_path, name, beside, noun):
    """Before, a FIFO in place of the file a folder's kind is told by read as absent: the
    folder was "not a stage output (none of ...)" though the name is there, or another kind."""
    for other in beside:
        (tmp_path / other).write_bytes(b"{}")
    os.mkfifo(tmp_path / name)
    with pytest.raises(UsageError) as raised:
        inspect_folder(tmp_path)
    assert str(raised.value) == f"{tmp_path / name} is a FIFO, not a {noun}"


def test_a_broken_link_in_place_of_a_file_inspect_knows_a_folder_by_is_named(tmp_path):
    """It read "does not exist" of a name `ls` lists."""
    (tmp_path / "manifest.parquet").symlink_to("moved/manifest.parquet")
    with pytest.raises(UsageError) as raised:
        inspect_folder(tmp_path)
    assert str(raised.value) == (
        f"{tmp_path / 'manifest.parquet'} is a broken symlink (to 'moved/manifest.parquet')"
    )


def test_a_stage_killed_before_its_first_part_is_nothing_yet_or_its_damaged_plan(tmp_path):
    """A stage killed before its first part leaves its .plan.json alone. It was "not a stage
    output (none of ...)", whole or damaged; the damaged one is the line again (as it was before
    `_index_plan` read plans as the stages do, and as it is beside parts)."""
    out = tmp_path / "points"
    out.mkdir()
    (out / ".plan.json").write_text(json.dumps({"digest": "d", "plan": {"stage": "sample"}}))
    found = inspect_folder(out)
    assert found.kind == "empty"
    assert found.headline() == (
        f"{out}: empty, nothing yet (only the .plan.json of a `cg3d sample` run: none of its "
        "parts, killed before its first or removed since; the same command goes on from it)"
    )
    (out / ".plan.json").write_bytes(b'{"digest": "d", "pl')
    with pytest.raises(UsageError) as raised:
        inspect_folder(out)
    assert str(raised.value).startswith(f"{out / '.plan.json'}: not valid JSON")


@pytest.mark.parametrize(
    "lock",
    [
        # 9 levels of 9 aliases: 600 bytes that are 387 million strings once printed (it hung)
        "x:\n"
        + "\n".join(
            f"  a{i}: &a{i} [" + ",".join([f"*a{i - 1}" if i else '"lol"'] * 9) + "]"
            for i in range(9)
        )
        + "\nstages: {ev: {cmd: c, params: {params.yaml: {k: *a8}}, outs: [{path: runs/ev}]}}",
        "stages: [1]",  # an AttributeError traceback
        "stages: {ev: 3}",
        "stages: {ev: {outs: [3, {path: 5}], params: [1]}}",
    ],
)
def test_a_hostile_dvc_lock_is_passed_over(tmp_path, lock):
    (tmp_path / "dvc.lock").write_text(lock + "\n")
    write_metrics(tmp_path / "runs" / "ev", {"acc1": 0.5}, {})
    found = inspect_folder(tmp_path / "runs" / "ev")
    assert "dvc stage" not in found.made_by and found.made_by["cg3d"]


def test_the_dvc_stage_of_a_folder_is_found(tmp_path):
    lock = "stages: {ev: {cmd: c, params: {params.yaml: {k: 1e-4}}, outs: [{path: runs/ev}]}}"
    (tmp_path / "dvc.lock").write_text(lock + "\n")
    write_metrics(tmp_path / "runs" / "ev", {"acc1": 0.5}, {})
    found = inspect_folder(tmp_path / "runs" / "ev")
    assert found.made_by["dvc stage"] == "ev" and found.made_by["dvc params"] == {"k": 0.0001}


def test_inspect_json_is_strict_json(tmp_path):
    run = tmp_path / "run"
    (run / ".resume").mkdir(parents=True)
    (run / "params.yaml").write_text("train: {encoder_lr: .nan, warmup_epochs: -.inf}\n")
    result = CliRunner().invoke(app, ["inspect", str(run), "--json"])
    assert result.exit_code == 0, result.output

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    found = json.loads(result.output, parse_constant=refuse)
    assert found["made_by"]["params"]["train"] == {"encoder_lr": None, "warmup_epochs": None}


def test_shards_are_counted_from_their_headers_and_labels(tmp_path, monkeypatch):
    """An Objaverse shard set is hundreds of GB of points and views: inspect read every byte
    of it to count ids and classes. It reads the tar headers and the `cls` members only, and
    seeks over the rest."""
    fake_pipeline(tmp_path, per_class=4, shard_size=3, views=2, n=4096)  # 48 kB of points each
    read = count_shard_reads(monkeypatch)
    found = inspect_folder(tmp_path / "shards")
    index = json.loads((tmp_path / "shards" / "index.json").read_text())
    assert sum(found.splits.values()) == sum(e["samples"] for e in index["splits"].values())
    assert sum(found.classes.values()) == len(found.ids) and set(found.classes) <= set(CLASSES)
    size = sum(p.stat().st_size for p in (tmp_path / "shards").rglob("*.tar"))
    assert 0 < sum(read) < size / 5, (sum(read), size)


def test_classes_of_a_stage_folder_hold_no_python_row_per_object(tmp_path):
    """Objaverse: the classes of a points, renders or captions folder came from a dict of
    every manifest row (some 450 bytes of Python objects an object, 360 MB for 800k). They
    are joined in Arrow: what Python allocates no longer grows with the objects."""
    import tracemalloc

    from cg3d.formats.manifest import MeshRecord, write_manifest
    from cg3d.pipeline.inspect import Inspection, classes_from_manifest

    n = 20_000
    records = [
        MeshRecord(f"obj-{i:06d}", "folder", f"c{i % 7}/{i}.obj", f"c{i % 7}", "train")
        for i in range(n)
    ]
    (tmp_path / "meshes").mkdir()
    write_manifest(records, tmp_path / "meshes")
    found = Inspection(tmp_path / "points", "points", ids=[r.id for r in records[1:]])
    tracemalloc.start()
    try:
        classes_from_manifest(found, tmp_path / "meshes")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found.classes == {f"c{k}": n // 7 + (k < n % 7) - (k == 0) for k in range(7)}
    assert found.splits == {"train": n - 1}
    assert peak < 100 * n, peak

"""A results folder is one command's from its first file, and one run's set of files: an
evaluation killed before its numbers left a folder with no owner (any command took it) and
with the earlier run's per_class.csv beside this run's predictions; audit, benchmark,
scene-query and export wrote into any other command's folder."""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cg3d.errors import UsageError
from cg3d.files import output_lock
from cg3d.pipeline.chunks import ChunkedOutput

from .files import write_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    write_shards(root, per_class=1, n=32, views=1)
    return root


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


class Killed(BaseException):
    """SIGKILL's stand-in: nothing after it runs (no `except Exception` catches it)."""


def kill(*args, **kwargs):
    raise Killed


def refused_by(owner: str, command: str, harm: str, folder: Path) -> str:
    return (
        f"--out: {folder} holds the output of `cg3d {owner}`; `cg3d {command}` {harm}: "
        "choose another folder"
    )


RESULTS_HARM = "would write its metrics.json, about.json and run.json there"


def test_a_zeroshot_killed_before_its_numbers_owns_its_folder_and_leaves_one_runs_files(
    shards, tiny_checkpoint, tmp_path, monkeypatch
):
    from cg3d.eval.finetune import finetune
    from cg3d.eval.retrieval import retrieval
    from cg3d.eval.zeroshot import zeroshot
    from cg3d.params import FinetuneConfig, RetrievalConfig, TrainConfig, ZeroShotConfig
    from cg3d.pipeline.inspect import inspect_folder
    from cg3d.train.loop import train_stage

    out = tmp_path / "zeroshot"
    config = ZeroShotConfig(root=str(shards), text_cache="")
    zeroshot(tiny_checkpoint, out, config)
    assert (out / "per_class.csv").is_file()
    monkeypatch.setattr("cg3d.eval.plots.confusion_plot", kill)  # after predictions.csv
    with pytest.raises(Killed):
        zeroshot(tiny_checkpoint, out, config)
    monkeypatch.undo()
    left = {p.name for p in out.iterdir()}
    # this run's first files only: the earlier per_class.csv would pass for this run's
    assert "predictions.csv" in left
    assert not left & {"metrics.json", "about.json", "per_class.csv"}

    absent = tmp_path / "absent.pt"
    before = files_of(out)
    others = {
        "eval retrieval": lambda: retrieval(absent, shards, out, RetrievalConfig()),
        "finetune": lambda: finetune(absent, out, FinetuneConfig(root=str(shards))),
        "train": lambda: train_stage(shards, out, TrainConfig()),
    }
    for command, run in others.items():
        with pytest.raises(UsageError) as refused:
            run()
        harm = (
            "would write its checkpoint, metrics.json and about.json there"
            if command == "train"
            else RESULTS_HARM
        )
        assert str(refused.value) == refused_by("eval zeroshot", command, harm, out)
    with (
        pytest.raises(UsageError, match="holds the output of `cg3d eval zeroshot`"),
        output_lock(out),
    ):
        ChunkedOutput(out, ".parquet", "sample", {"stage": "sample"}).prepare()
    assert files_of(out) == before

    unfinished = inspect_folder(out)
    assert unfinished.kind == "results"
    assert unfinished.details["unfinished"] == (
        "no metrics.json: a `cg3d eval zeroshot` run was killed or failed before it; rerun it"
    )
    zeroshot(tiny_checkpoint, out, config)  # its own command reruns into it
    assert {"metrics.json", "about.json", "per_class.csv"} <= {p.name for p in out.iterdir()}
    assert "unfinished" not in inspect_folder(out).details


def test_a_training_killed_before_it_published_owns_its_folder(shards, tmp_path):
    """Before: a run folder holding only .resume/ (no last.pt yet) had no owner, so an
    evaluation wrote its metrics.json there, which the resumed run then replaced."""
    from cg3d.eval.zeroshot import zeroshot
    from cg3d.params import ZeroShotConfig

    out = tmp_path / "run"
    (out / ".resume").mkdir(parents=True)
    (out / ".resume" / "last.pt").write_bytes(b"unfinished")
    with pytest.raises(UsageError) as refused:
        zeroshot(tmp_path / "absent.pt", out, ZeroShotConfig(root=str(shards)))
    assert str(refused.value) == refused_by("train", "eval zeroshot", RESULTS_HARM, out)
    assert {p.name for p in out.iterdir()} == {".resume"}


def test_a_training_killed_before_its_resume_folder_owns_its_folder(shards, tmp_path, monkeypatch):
    """Before: `cg3d train` killed after params.yaml, before .resume/ existed, left a folder of
    params.yaml alone, which told no owner: an evaluation then wrote its numbers beside it."""
    import cg3d.train.loop as loop
    from cg3d.cli import app
    from cg3d.eval.zeroshot import zeroshot
    from cg3d.params import ZeroShotConfig

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the stage's first step: nothing of its own written yet

    monkeypatch.setattr(loop, "train_stage", killed)
    out = tmp_path / "run"
    words = ["train", "--shards", str(shards), "--out", str(out)]
    result = CliRunner().invoke(app, words)
    assert result.exit_code == 130, (result.output, result.exception)  # typer's Ctrl-C exit
    assert {p.name for p in out.iterdir()} == {"params.yaml", ".owner.json"}
    with pytest.raises(UsageError) as refused:
        zeroshot(tmp_path / "absent.pt", out, ZeroShotConfig(root=str(shards)))
    assert str(refused.value) == refused_by("train", "eval zeroshot", RESULTS_HARM, out)
    assert {p.name for p in out.iterdir()} == {"params.yaml", ".owner.json"}
    # the rerun (resume auto, as the DVC stage) is the same command: not refused
    rerun = CliRunner().invoke(app, [*words, "--resume", "auto"])
    assert rerun.exit_code == 130, (rerun.output, rerun.exception)  # killed again, not refused


def another_commands_folder(owner: str, folder: Path, tiny_checkpoint: Path) -> None:
    if owner == "sample":
        with output_lock(folder):
            ChunkedOutput(folder, ".parquet", "sample", {"stage": "sample"}).prepare()
        return
    folder.mkdir(parents=True)
    names = {
        "train": ["last.pt", "metrics.json", "about.json"],
        "eval zeroshot": ["metrics.json", "about.json", "predictions.csv", "per_class.csv"],
    }[owner]
    for name in names:
        (folder / name).write_text("{}\n")
    if owner == "train":
        shutil.copy(tiny_checkpoint, folder / "last.pt")


# Each command with its harm, run as its library function on inputs that do not exist: past
# the owner check, it fails on them (so a command allowed into its own folder is told apart).
def run_output_command(command: str, out: Path, tmp_path: Path) -> None:
    from cg3d.eval.audit import audit_lists
    from cg3d.eval.benchmark import DatasetEntry, ModelEntry, run_benchmark
    from cg3d.eval.scene import scene_query
    from cg3d.models.hub import export_hub
    from cg3d.params import SceneConfig, ZeroShotConfig

    if command == "audit":
        for name in ("train.txt", "test.txt"):
            (tmp_path / name).write_text("03001627-aaa.npy\n")
        audit_lists(tmp_path / "train.txt", tmp_path / "test.txt", out)
    elif command == "benchmark":  # a model without weights: a row, nothing loaded
        datasets = [DatasetEntry("modelnet40", "", tmp_path / "modelnet40")]
        run_benchmark([ModelEntry("ours", None)], datasets, out, ZeroShotConfig())
    elif command == "scene-query":
        scene_query(tmp_path / "absent.ply", "a chair", tmp_path / "absent.pt", out, SceneConfig())
    else:
        export_hub(tmp_path / "absent.pt", out)


HARMS = {
    "audit": "would write its pairs.csv and audit.json there",
    "benchmark": "would write its pair JSONs, results.md and results.csv there",
    "scene-query": "would write its heat map and regions.json there",
    "export": "would write its config.json, model.safetensors and README.md there",
}


@pytest.mark.parametrize("owner", ["train", "sample", "eval zeroshot"])
@pytest.mark.parametrize("command", list(HARMS))
def test_an_output_command_into_another_commands_folder_is_refused_and_kept(
    tiny_checkpoint, tmp_path, owner, command
):
    """Before: each wrote its files among a training run's, an evaluation's, or a stage's (a
    DVC output, whose hash then changed); export's README.md and config.json beside last.pt."""
    out = tmp_path / "out"
    another_commands_folder(owner, out, tiny_checkpoint)
    before = files_of(out)
    with pytest.raises(UsageError) as refused:
        run_output_command(command, out, tmp_path)
    assert str(refused.value) == refused_by(owner, command, HARMS[command], out)
    assert files_of(out) == before


@pytest.mark.parametrize("command", list(HARMS))
def test_an_output_command_reruns_into_its_own_folder(tmp_path, command):
    out = tmp_path / "out"
    out.mkdir()
    own = {
        "audit": "audit.json",
        "benchmark": "results.csv",
        "scene-query": "regions.json",
        "export": "model.safetensors",
    }[command]
    (out / own).write_text("{}\n")
    try:
        run_output_command(command, out, tmp_path)
    except UsageError as error:  # past the owner check: the absent inputs
        assert "holds the output of" not in str(error)
        assert "absent" in str(error)


def test_a_benchmark_rerun_killed_leaves_no_earlier_table(tmp_path, monkeypatch):
    """Before: the earlier run's results.md and results.csv stayed beside the pair JSONs of a
    rerun killed part way, a table of another run read as this one's."""
    from cg3d.eval import benchmark
    from cg3d.pipeline.inspect import inspect_folder

    out = tmp_path / "bench"
    run_output_command("benchmark", out, tmp_path)
    assert (out / "results.md").is_file() and (out / "results.csv").is_file()
    monkeypatch.setattr(benchmark, "_benchmark_model", kill)
    with pytest.raises(Killed):
        run_output_command("benchmark", out, tmp_path)
    assert not (out / "results.md").exists() and not (out / "results.csv").exists()
    # killed before its first pair: the mark alone, which claims nothing (`inspect`: nothing yet)
    assert sorted(p.name for p in out.iterdir()) == [".owner.json"]
    assert inspect_folder(out).headline() == (
        f"{out}: empty, nothing yet (only the .owner.json mark of a `cg3d benchmark` run: none "
        "of its files, killed before its first or removed since; any command may write here)"
    )


def test_an_audit_rerun_killed_leaves_no_earlier_counts(tmp_path, monkeypatch):
    """Before: a rerun killed after pairs.csv left the earlier audit.json, whose counts an
    evaluation's --audit then copied for this run's pairs."""
    from cg3d.eval import audit

    out = tmp_path / "audit"
    run_output_command("audit", out, tmp_path)
    assert json.loads((out / "audit.json").read_text())["pairs"]["same_id"] == 1
    monkeypatch.setattr(audit, "write_json", kill)  # audit.json is its last file
    with pytest.raises(Killed):
        run_output_command("audit", out, tmp_path)
    assert (out / "pairs.csv").is_file() and not (out / "audit.json").exists()


def test_a_folder_holding_only_its_owner_mark_is_free_to_any_command(shards, tmp_path):
    """`rm out/*` keeps the hidden .owner.json: a folder that `ls` shows empty, holding nothing
    to protect, was refused as another command's (before the mark, any command took it)."""
    from cg3d.eval.retrieval import retrieval
    from cg3d.formats.owner import check_owner, folder_owner
    from cg3d.params import RetrievalConfig

    out = tmp_path / "results"
    out.mkdir()
    (out / ".owner.json").write_text('{"command": "eval zeroshot"}')
    (out / "predictions.csv").write_text("key,actual,predicted,protocol\n")
    assert folder_owner(out) == "eval zeroshot"  # a file of the claimed run: still its folder
    (out / "predictions.csv").unlink()
    (out / ".cg3d.lock").touch()  # a lock left by a kill is no output either
    assert folder_owner(out) is None
    check_owner(out, "eval retrieval")
    # the command goes on to its own input, past the owner check
    with pytest.raises(UsageError, match="absent.pt"):
        retrieval(tmp_path / "absent.pt", shards, out, RetrievalConfig())


@pytest.mark.parametrize(
    "command,names",
    [
        ("benchmark", ("results.csv", "results.md")),
        ("audit", ("audit.json", "pairs.csv")),
        ("scene-query", ("regions.json", "heatmap.ply")),
        ("export", ("model.safetensors", "config.json")),
    ],
)
def test_a_folder_is_an_output_commands_by_its_set_not_one_common_name(tmp_path, command, names):
    """A folder written before the mark is told by the files its command writes together. One
    common name alone (a user's results.csv, or `cg3d classify … --out exp/results.csv`) made
    the folder `cg3d benchmark`'s, and an evaluation into it was refused, naming a command
    that never ran there."""
    from cg3d.formats.owner import folder_owner

    out = tmp_path / "exp"
    out.mkdir()
    (out / names[0]).write_text("path,label_1\n")
    assert folder_owner(out) is None
    (out / names[1]).write_text("{}\n")
    assert folder_owner(out) == command


def _strict_json(text: str) -> object:
    """json.loads as jq or JavaScript read: NaN and Infinity are no JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_a_diverged_runs_numbers_are_strict_json_and_empty_cells(tmp_path):
    """details.json and history.csv held `NaN` (Python's json writes it; jq, JavaScript and
    most parsers refuse the file): every JSON and CSV file writes no number, null or empty."""
    from cg3d.eval.results import write_results

    nan, inf = float("nan"), float("inf")
    write_results(
        tmp_path,
        {"top1": nan},
        {"checkpoint": "last.pt"},
        details={"probe": {"loss": nan, "losses": [1.0, inf]}},
        history=[{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": nan}],
    )
    assert _strict_json((tmp_path / "metrics.json").read_text()) == {"top1": None}
    details = _strict_json((tmp_path / "details.json").read_text())
    assert details == {"probe": {"loss": None, "losses": [1.0, None]}}
    assert (tmp_path / "history.csv").read_text().splitlines() == ["epoch,loss", "1,0.5", "2,"]

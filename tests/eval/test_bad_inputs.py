"""Bad files handed to the eval side (issue 18 §4): a shard index of the wrong shape, or one
naming shards outside its folder, and a broken audit.json are one line naming the file."""

import json
import os
import shutil
import stat
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.errors import UsageError
from cg3d.eval.audit import audit, read_audit
from cg3d.files import atomic_path
from cg3d.formats.shards import read_index

from .files import write_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    write_shards(root, per_class=1, n=32, views=1)
    return root


def good_index(shards) -> dict:
    return json.loads((shards / "index.json").read_text())


def with_train(folder, **changes) -> dict:
    index = good_index(folder)
    index["splits"]["train"] |= changes
    return index


BAD_INDEXES = {
    "a list": lambda s: [],
    "a number": lambda s: 3,
    "no splits": lambda s: {"classes": ["box"]},
    "splits a list": lambda s: good_index(s) | {"splits": []},
    "classes a string": lambda s: good_index(s) | {"classes": "box"},
    "split a string": lambda s: good_index(s) | {"splits": {"train": "x"}},
    "shards a number": lambda s: with_train(s, shards=5),
    "counts of strings": lambda s: with_train(s, counts=["1"]),
    "negative count": lambda s: with_train(s, counts=[-1]),
    "counts too short": lambda s: with_train(s, counts=[]),
    "no sha256": lambda s: {
        **good_index(s),
        "splits": {
            "train": {k: v for k, v in good_index(s)["splits"]["train"].items() if k != "sha256"}
        },
    },
    "samples a string": lambda s: with_train(s, samples="2"),
    "shard up and out": lambda s: with_train(s, shards=["../../outside.tar"]),
    "shard absolute": lambda s: with_train(s, shards=["/etc/passwd"]),
    "shard shell syntax": lambda s: with_train(s, shards=["x.tar; touch PWNED"]),
    "shard in a subshell": lambda s: with_train(s, shards=["$(touch PWNED)"]),
}


def _listed_twice(shards, split: str, name: str) -> dict:
    """The index with shard `name` (of its own split) appended to `split` once more, its count
    and hash with it: an index every other check passes."""
    index = good_index(shards)
    home = next(e for e in index["splits"].values() if name.replace("./", "") in e["shards"])
    at = home["shards"].index(name.replace("./", ""))
    entry = index["splits"][split]
    entry["shards"].append(name)
    entry["counts"].append(home["counts"][at])
    entry["sha256"].append(home["sha256"][at])
    entry["samples"] += home["counts"][at]
    return index


# Indexes of the right shape that would read a shard twice, or split a label's scores between
# two names: before, `cg3d verify` said "ok" and train, eval and index read them as written.
DOUBLED_INDEXES = {
    "a shard twice in a split": (
        lambda s: _listed_twice(s, "train", "train/shard-000000.tar"),
        "shard train/shard-000000.tar is listed twice (split 'train')",
    ),
    "a shard twice, through a ./": (
        lambda s: _listed_twice(s, "train", "train/./shard-000000.tar"),
        "shard train/./shard-000000.tar is listed twice (split 'train')",
    ),
    "a test shard in train": (
        lambda s: _listed_twice(s, "train", "test/shard-000000.tar"),
        "shard test/shard-000000.tar is listed twice (split 'test' and 'train')",
    ),
    "a class twice": (
        lambda s: good_index(s) | {"classes": ["box", "box"]},
        "'classes' names 'box' twice",
    ),
}


@pytest.mark.parametrize("case", sorted(DOUBLED_INDEXES))
def test_an_index_that_reads_a_shard_twice_is_one_line_for_every_command(shards, tmp_path, case):
    edit, reason = DOUBLED_INDEXES[case]
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    (copy / "index.json").write_text(json.dumps(edit(shards)))
    with pytest.raises(UsageError) as error:
        read_index(copy)
    assert str(error.value) == f"{copy / 'index.json'}: not a `cg3d pack` index ({reason})"
    result = CliRunner().invoke(app, ["verify", str(copy)])  # main() makes it exit 2
    assert isinstance(result.exception, UsageError) and reason in str(result.exception)


@pytest.mark.parametrize("case", sorted(BAD_INDEXES))
def test_an_index_of_the_wrong_shape_is_one_line(shards, tmp_path, case):
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    (copy / "index.json").write_text(json.dumps(BAD_INDEXES[case](shards)))
    with pytest.raises(UsageError, match=r"index.json: not a `cg3d pack` index \(") as error:
        audit(str(copy), tmp_path / "out", test_shards=str(copy))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out" / "audit.json").exists()


def test_a_shard_behind_a_symlink_out_of_the_folder_is_refused(shards, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    shard = copy / good_index(shards)["splits"]["train"]["shards"][0]
    outside = tmp_path / "elsewhere.tar"
    shard.rename(outside)
    shard.symlink_to(outside)
    with pytest.raises(UsageError, match="resolves outside"):
        read_index(copy)


def test_audit_cli_on_a_bad_index_is_one_line_exit_2(shards, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    (copy / "index.json").write_text('{"splits": {"train": {"shards": 5}}}')
    result = subprocess.run(
        [sys.executable, "-m", "cg3d", "audit", "--train", copy, "--test", copy, "--out",
         tmp_path / "out"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert (
        len(result.stderr.strip().splitlines()) == 1 and "not a `cg3d pack` index" in result.stderr
    )


@pytest.mark.parametrize("text", ["", "{", "[1, 2]", '"text"'])
def test_a_broken_audit_json_is_one_line(tmp_path, text):
    (tmp_path / "audit.json").write_text(text)
    with pytest.raises(UsageError, match="audit.json"):
        read_audit(tmp_path)


AUDIT = {
    "train": "shards a (train)",
    "test": "shards b (test)",
    "threshold": 0.04,
    "pairs": {"same_file": 1, "same_uid": 0, "same_shape": 2},
    "leaked_test_shapes": 3,
}


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        ({"pairs": "many"}, "pairs is not a count per kind"),
        ({"pairs": {"same_file": -1}}, "pairs is not a count per kind"),
        ({"leaked_test_shapes": [1, 2]}, "leaked_test_shapes is not a count"),
        ({"leaked_test_shapes": True}, "leaked_test_shapes is not a count"),
        ({"threshold": "t" * 100_000}, "threshold is 'tttt"),
        ({"threshold": float("nan")}, "threshold is 'nan'"),
        ({"train": 5}, "train is not the name of its shapes"),
        ({"test": "x" * 100_000}, "test is not the name of its shapes"),
    ],
)
def test_an_audit_json_edited_by_hand_is_one_line_not_copied_into_the_eval(tmp_path, edit, named):
    """Before: whatever the keys held went into the eval's about.json as the audit's counts."""
    (tmp_path / "audit.json").write_text(json.dumps(AUDIT))
    assert read_audit(tmp_path) == {"folder": str(tmp_path), **AUDIT}
    (tmp_path / "audit.json").write_text(json.dumps(AUDIT | edit))
    with pytest.raises(UsageError) as refused:
        read_audit(tmp_path)
    message = str(refused.value)
    assert "audit.json is not an audit summary (" in message and named in message
    assert len(message) < 300


@pytest.mark.parametrize(
    "options, message",
    [
        (["--encoder", "pointnet2-ssg", "--n-points", "256"], "needs at least 512 points"),
        (["--encoder", "pointtransformer-micro", "--n-points", "7"], "needs at least 8 points"),
        (
            [
                "--encoder",
                "pointtransformer-micro",
                "--n-points",
                "512",
                "--set",
                "train.encoder_params.groups=900",
            ],  # fmt: skip
            "needs at least 900 points",
        ),
    ],
)
def test_train_checks_an_encoders_needs_against_n_points_first(shards, tmp_path, options, message):
    """Was "cannot sample 512 centres" from inside the first forward pass."""
    result = subprocess.run(
        [sys.executable, "-m", "cg3d", "train", "--shards", shards, "--out", tmp_path / "run",
         "--set", "train.clip_model=CG3D-ViT-Micro-32", *options],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
    assert not (tmp_path / "run" / "last.pt").exists()


def test_export_to_an_existing_folder_is_one_line(tiny_checkpoint, tmp_path):
    (tmp_path / "models").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "cg3d", "export", "--checkpoint", tiny_checkpoint,
         "--out", tmp_path / "models"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: --out: {tmp_path / 'models'} is a folder; name the file to write, e.g. "
        f"{tmp_path / 'models'}/model.pt"
    ]
    assert list((tmp_path / "models").iterdir()) == []  # no temp file left behind


def test_export_to_a_fifo_or_device_is_one_line_and_leaves_the_node(tiny_checkpoint, tmp_path):
    """The rename at the end replaced the node: as root, `--out /dev/full` made /dev/full a
    regular file (exit 0). A FIFO stands in for the device here: never replace a real one."""
    fifo = tmp_path / "model.pt"
    os.mkfifo(fifo)
    result = CliRunner().invoke(
        app, ["export", "--checkpoint", str(tiny_checkpoint), "--out", str(fifo)]
    )
    assert isinstance(result.exception, UsageError), result.output
    assert str(result.exception) == f"--out: {fifo} is a FIFO, not a file to write"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    refused = pytest.raises(UsageError, match="is a FIFO, not a file to write")
    with refused, atomic_path(fifo) as tmp:  # every writer
        tmp.write_text("x")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and sorted(tmp_path.iterdir()) == [fifo]


def test_export_onto_its_own_checkpoint_is_one_line_and_keeps_it(tiny_checkpoint, tmp_path):
    """It rewrote the file without its training state (exit 0): a run's resume, lost."""
    run = tmp_path / "last.pt"
    shutil.copy(tiny_checkpoint, run)
    before = run.read_bytes()
    for out in (run, tmp_path / "." / "last.pt"):
        result = CliRunner().invoke(app, ["export", "--checkpoint", str(run), "--out", str(out)])
        assert isinstance(result.exception, UsageError), result.output
        assert (
            str(result.exception)
            == f"--out: {out} is the --checkpoint itself; export writes another file"
        )
    assert run.read_bytes() == before


# The files each command leaves in its --out (what `folder_owner` tells them by).
RESULT_FOLDERS = {
    "train": ["last.pt", "metrics.json", "about.json", "params.yaml"],
    "eval zeroshot": ["metrics.json", "about.json", "predictions.csv", "per_class.csv"],
    "eval retrieval": ["metrics.json", "about.json", "details.json", "retrieval_grid.png"],
    "finetune": ["metrics.json", "about.json", "details.json", "per_class.csv"],
}


def run_command(command: str, shards, out, checkpoint) -> None:
    """`command` as its library function, on `checkpoint` (absent: the owner check comes first)."""
    from cg3d.eval.finetune import finetune
    from cg3d.eval.retrieval import retrieval
    from cg3d.eval.zeroshot import zeroshot
    from cg3d.params import FinetuneConfig, RetrievalConfig, TrainConfig, ZeroShotConfig
    from cg3d.train.loop import train_stage

    if command == "eval zeroshot":
        zeroshot(checkpoint, out, ZeroShotConfig(root=str(shards)))
    elif command == "eval retrieval":
        retrieval(checkpoint, shards, out, RetrievalConfig())
    elif command == "finetune":
        finetune(checkpoint, out, FinetuneConfig(root=str(shards)))
    else:
        train_stage(shards, out, TrainConfig())


@pytest.mark.parametrize(
    ("owner", "command"),
    [
        (owner, command)
        for owner in RESULT_FOLDERS
        for command in RESULT_FOLDERS
        if owner != command
    ],
)
def test_a_results_folder_of_another_command_is_refused_and_kept(shards, tmp_path, owner, command):
    """Before: `cg3d eval zeroshot --out runs/train` replaced the training run's metrics.json
    and about.json; `cg3d eval retrieval` into a zero-shot folder left predictions.csv and
    confusion.png beside its own numbers, as if one run had made them all."""
    out = tmp_path / "out"
    out.mkdir()
    for number, name in enumerate(RESULT_FOLDERS[owner]):
        (out / name).write_text(f"{owner} {number}\n")
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    with pytest.raises(UsageError) as refused:
        run_command(command, shards, out, tmp_path / "absent.pt")
    harm = (
        "would write its checkpoint, metrics.json and about.json there"
        if command == "train"
        else "would write its metrics.json, about.json and run.json there"
    )
    expected = f"--out: {out} holds the output of `cg3d {owner}`; `cg3d {command}` {harm}"
    assert str(refused.value) == expected + ": choose another folder"
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


@pytest.mark.parametrize("stage", ["sample", "render"])
def test_a_training_into_a_stage_output_folder_is_refused_and_kept(shards, tmp_path, stage):
    """Before: `cg3d train` asked only whether --out held an evaluation's results, so
    `cg3d train --out data/points` wrote its checkpoint and metrics among the sampled points
    (a DVC output: its hash changed). It now asks the one owner rule every command asks."""
    from cg3d.files import output_lock
    from cg3d.pipeline.chunks import ChunkedOutput

    out = tmp_path / "points"
    with output_lock(out):  # the stage's plan: the folder is its
        ChunkedOutput(out, ".parquet", stage, {"stage": stage}).prepare()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(UsageError) as refused:
        run_command("train", shards, out, tmp_path / "absent.pt")
    assert str(refused.value) == (
        f"--out: {out} holds the output of `cg3d {stage}`; `cg3d train` would write its "
        "checkpoint, metrics.json and about.json there: choose another folder"
    )
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_a_refused_cg3d_train_writes_no_params_file(shards, tmp_path):
    """Before: the command wrote OUT/params.yaml, then the stage refused OUT: into data/points
    (a DVC output: its hash changed), and into a new folder left behind when --shards was a
    FIFO."""
    from cg3d.files import output_lock
    from cg3d.pipeline.chunks import ChunkedOutput

    points = tmp_path / "points"
    with output_lock(points):
        ChunkedOutput(points, ".parquet", "sample", {"stage": "sample"}).prepare()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = CliRunner().invoke(app, ["train", "--shards", str(shards), "--out", str(points)])
    assert "holds the output of `cg3d sample`" in str(result.exception)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    os.mkfifo(tmp_path / "fifo")
    words = ["train", "--shards", str(tmp_path / "fifo"), "--out", str(tmp_path / "new")]
    result = CliRunner().invoke(app, words)
    assert str(result.exception) == f"--shards: {tmp_path / 'fifo'} is a FIFO, not a folder"
    assert not (tmp_path / "new").exists()


def test_cg3d_train_asks_the_owner_of_its_folder_once_before_its_first_file(
    shards, tmp_path, monkeypatch
):
    """Before: the command asked before its lock, again when it marked the folder, and the
    stage a third time. Once now, under the lock, before params.yaml."""
    from cg3d.formats import owner
    from cg3d.train import loop

    asked, seen_at_ask = [], []
    real_owner = owner.folder_owner

    def counted(folder):
        asked.append(folder)
        seen_at_ask.append(sorted(p.name for p in folder.iterdir()) if folder.exists() else [])
        return real_owner(folder)

    monkeypatch.setattr(owner, "folder_owner", counted)
    monkeypatch.setattr(loop, "_train_stage", lambda *args: {})
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "--shards", str(shards), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert asked == [out]
    assert "params.yaml" not in seen_at_ask[0]
    assert sorted(p.name for p in out.iterdir()) == [".owner.json", "params.yaml"]


@pytest.mark.parametrize("command", ["eval zeroshot", "eval retrieval", "finetune"])
def test_an_evaluation_reruns_into_its_own_results_folder(shards, tmp_path, command):
    out = tmp_path / "out"
    out.mkdir()
    for name in RESULT_FOLDERS[command]:
        (out / name).write_text("{}\n")
    with pytest.raises(UsageError, match="absent.pt"):  # past the owner check, to the model
        run_command(command, shards, out, tmp_path / "absent.pt")


@pytest.mark.parametrize("command", ["eval zeroshot", "eval retrieval"])
def test_weights_that_overflow_the_encoder_are_one_line_not_chance_numbers(
    shards, tiny_checkpoint, tmp_path, command
):
    """Finite weights scaled by 1e38: the features' lengths overflowed, normalising gave rows
    of zeros (or NaN), every class scored 0 and the first won: zero-shot reported chance-level
    accuracy with exit 0."""
    import torch

    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["model"]["point_encoder.proj.weight"] = (
        payload["model"]["point_encoder.proj.weight"] * 1e38
    )
    assert torch.isfinite(payload["model"]["point_encoder.proj.weight"]).all()
    scaled = tmp_path / "scaled.pt"
    torch.save(payload, scaled)
    with pytest.raises(UsageError, match="the point encoder: .* are not unit vectors"):
        run_command(command, shards, tmp_path / "out", scaled)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_a_rerun_into_its_folder_leaves_no_picture_of_the_earlier_run(
    shards, tiny_checkpoint, tmp_path, monkeypatch
):
    """Before: a zero-shot rerun of more classes than the plot takes wrote top_confusions.csv
    beside the earlier run's confusion.png (and the reverse), and a retrieval rerun with
    grid_queries 0 kept the earlier grid: pictures of another run beside the new numbers."""
    from cg3d.eval import zeroshot as zeroshot_module
    from cg3d.eval.retrieval import retrieval
    from cg3d.params import RetrievalConfig, ZeroShotConfig

    out = tmp_path / "zeroshot"
    config = ZeroShotConfig(root=str(shards), text_cache="")
    zeroshot_module.zeroshot(tiny_checkpoint, out, config)
    assert (out / "confusion.png").is_file() and not (out / "top_confusions.csv").exists()
    monkeypatch.setattr(zeroshot_module, "CONFUSION_PLOT_CLASSES", 0)  # as if 1,156 classes
    zeroshot_module.zeroshot(tiny_checkpoint, out, config)
    assert (out / "top_confusions.csv").is_file() and not (out / "confusion.png").exists()
    monkeypatch.undo()
    zeroshot_module.zeroshot(tiny_checkpoint, out, config)
    assert (out / "confusion.png").is_file() and not (out / "top_confusions.csv").exists()

    out = tmp_path / "retrieval"
    retrieval(tiny_checkpoint, shards, out, RetrievalConfig())
    assert (out / "retrieval_grid.png").is_file()
    retrieval(tiny_checkpoint, shards, out, RetrievalConfig(grid_queries=0))
    assert not (out / "retrieval_grid.png").exists()


def test_a_rerun_that_fails_while_writing_leaves_no_earlier_numbers(
    shards, tiny_checkpoint, tmp_path, monkeypatch
):
    """Before: metrics.json and about.json were written first; a rerun killed (or failing)
    while writing predictions.csv or the plot left the earlier run's numbers beside this
    run's predictions. Now the numbers come last: such a folder has none."""
    from cg3d.eval import zeroshot as zeroshot_module
    from cg3d.params import ZeroShotConfig

    out = tmp_path / "zeroshot"
    config = ZeroShotConfig(root=str(shards), text_cache="")
    zeroshot_module.zeroshot(tiny_checkpoint, out, config)
    assert (out / "metrics.json").is_file() and (out / "predictions.csv").is_file()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("cg3d.eval.plots.confusion_plot", full_disk)
    with pytest.raises(OSError):
        zeroshot_module.zeroshot(tiny_checkpoint, out, config)
    assert not (out / "metrics.json").exists() and not (out / "about.json").exists()


@pytest.mark.parametrize("command", ["zeroshot", "retrieval", "finetune"])
def test_results_into_a_training_run_or_a_shard_set_are_refused_before_any_work(
    shards, tmp_path, tiny_checkpoint, command
):
    """Before: `cg3d eval zeroshot --out runs/train` replaced the run's own metrics.json,
    about.json and run.json (the same names) with the evaluation's."""
    from cg3d.eval.finetune import finetune
    from cg3d.eval.retrieval import retrieval
    from cg3d.eval.zeroshot import zeroshot
    from cg3d.params import FinetuneConfig, RetrievalConfig, ZeroShotConfig

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_checkpoint, run / "last.pt")
    for name in ("metrics.json", "about.json", "run.json"):
        (run / name).write_text('{"train/loss": 1.5}\n')
    runs = {
        "zeroshot": lambda out: zeroshot(run / "last.pt", out, ZeroShotConfig(root=str(shards))),
        "retrieval": lambda out: retrieval(run / "last.pt", shards, out, RetrievalConfig()),
        "finetune": lambda out: finetune(
            run / "last.pt", out, FinetuneConfig(root=str(shards), mode="linear")
        ),
    }
    name = {"zeroshot": "eval zeroshot", "retrieval": "eval retrieval", "finetune": "finetune"}
    for folder, owner in [(run, "train"), (shards, "pack")]:
        before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
        with pytest.raises(UsageError) as caught:
            runs[command](folder)
        assert str(caught.value) == (
            f"--out: {folder} holds the output of `cg3d {owner}`; `cg3d {name[command]}` would "
            "write its metrics.json, about.json and run.json there: choose another folder"
        )
        assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before

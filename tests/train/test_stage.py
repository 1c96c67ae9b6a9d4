"""The `cg3d train` command end to end on tiny shards written by the fake pipeline."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cg3d.cli import app
from cg3d.models.checkpoint import load_model
from cg3d.train.loop import TRACKED_METRICS
from tests.train.helpers import params_file

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::cg3d.models.clip.RandomClipWarning"),
]


def test_train_command_writes_checkpoint_metrics_and_curves(shards, tmp_path):
    out = tmp_path / "run"
    args = [
        "train",
        "--shards",
        str(shards),
        "--out",
        str(out),
        "--params",
        str(params_file(tmp_path)),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    about = json.loads((out / "about.json").read_text())
    assert metrics["epoch"] == 2 and about["clip_pretrained"] is False
    assert metrics["skipped_samples"] == 0 and about["held_out_templates"] == "cg3d (63)"
    assert about["encoder"] == "pointnet2"
    assert 0.0 <= metrics["test_point_text_acc"] <= 100.0  # in %, as eval's top1
    assert (out / "dvclive/plots/metrics/train/loss.tsv").is_file()
    assert not (out / "dvclive/plots/metrics/train/samples_per_s.tsv").exists()  # untracked
    assert json.loads((out / "run.json").read_text())["train_samples_per_s"] > 0
    # issue 26: the tracked metrics hold a few headline numbers, none of them a timing
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved) <= set(TRACKED_METRICS) and len(saved) <= 10
    assert all(type(value) in (int, float) for value in saved.values())  # numbers only
    assert not any("per_s" in key or "second" in key for key in saved)
    model = load_model(out / "last.pt")
    assert model.config["encoder"] == "pointnet2" and model.config["classes"]


def test_missing_shards_and_require_pretrained_are_usage_errors(shards, tmp_path):
    params = str(params_file(tmp_path))
    missing = CliRunner().invoke(
        app,
        [
            "train",
            "--shards",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "o"),
            "--params",
            params,
        ],
    )
    assert missing.exit_code != 0 and "nowhere" in str(missing.exception)
    strict = CliRunner().invoke(
        app,
        [
            "train",
            "--shards",
            str(shards),
            "--out",
            str(tmp_path / "o"),
            "--params",
            params,
            "--require-pretrained",
        ],
    )
    assert "--require-pretrained" in str(strict.exception)


def test_a_truncated_shard_stops_training_before_it_starts_naming_the_file(shards, tmp_path):
    import shutil

    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    bad = copy / "train" / "shard-000000.tar"
    bad.write_bytes(bad.read_bytes()[:1500])
    result = CliRunner().invoke(
        app,
        ["train", "--shards", str(copy), "--out", str(tmp_path / "o")]
        + ["--params", str(params_file(tmp_path))],
    )
    assert result.exit_code != 0
    message = str(result.exception)
    assert str(bad) in message and "does not decode" in message and "\n" not in message
    assert not (tmp_path / "o" / "last.pt").exists()


def test_a_colour_model_on_shards_without_rgb_stops_before_training(shards, tmp_path):
    out = tmp_path / "o"
    args = ["train", "--shards", str(shards), "--out", str(out)]
    args += ["--params", str(params_file(tmp_path, point_channels=6))]
    result = CliRunner().invoke(app, args)
    message = str(result.exception)
    assert result.exit_code != 0 and "train.point_channels" in message and str(shards) in message
    assert not (out / "last.pt").exists()


def test_auto_resume_continues_an_unfinished_run_and_retrains_otherwise(shards, tmp_path, capsys):
    import dataclasses

    import torch

    from cg3d.params import TrainConfig, load_section
    from cg3d.train.loop import train_stage

    config = load_section(TrainConfig, "train", params_file(tmp_path, epochs=2))
    out = tmp_path / "run"
    train_stage(shards, out, config, resume="auto")
    # as a run killed after its first epoch: the checkpoint says epoch 1 of 2
    payload = torch.load(out / "last.pt", weights_only=True)
    payload["training"]["epoch"] = 1
    torch.save(payload, out / "last.pt")
    resumed = train_stage(shards, out, dataclasses.replace(config, workers=1), "auto")
    assert resumed["epoch"] == 2 and "not resuming" not in capsys.readouterr().err
    # a finished run is rerun by DVC only when something else changed (code, -f): retrain
    first = train_stage(shards, out, config, resume="auto")
    assert "is a finished run (epoch 2 of 2)" in " ".join(capsys.readouterr().err.split())
    assert first["epoch"] == 2
    config = dataclasses.replace(config, epochs=1)
    train_stage(shards, out, config, resume="never")
    checkpoint = (out / "last.pt").read_bytes()
    changed = train_stage(shards, out, dataclasses.replace(config, prompt_lr=0.5), "auto")
    assert changed["epoch"] == 1 and (out / "last.pt").read_bytes() != checkpoint


def test_a_run_records_its_loader_workers_and_a_requeue_on_other_cpus_resumes_with_them(
    shards, tmp_path, capsys, monkeypatch
):
    """`train.workers` above the CPUs: the loader starts one a CPU, and 2 or more deal other
    batches than the count asked, so the checkpoint records the count started. A job requeued
    on a node with fewer CPUs (Slurm's requeue) must go on with that count, not train the
    whole run again: `--resume auto` bound the count anew and said "not resuming: a different
    'workers'". A changed param still starts over, with a fresh run's count."""
    import dataclasses

    import torch

    import cg3d.params
    from cg3d.params import TrainConfig, load_section
    from cg3d.train.loop import train_stage

    config = load_section(TrainConfig, "train", params_file(tmp_path, epochs=2, workers=3))
    out = tmp_path / "run"
    monkeypatch.setattr(cg3d.params, "cpu_count", lambda: 2)
    train_stage(shards, out, config, resume="auto")
    said = " ".join(capsys.readouterr().err.split())
    assert "train.workers is 3, but this process may use 2 CPUs: 2 loader workers" in said
    payload = torch.load(out / "last.pt", weights_only=True)
    assert payload["training"]["run"]["config"]["workers"] == 2
    payload["training"]["epoch"] = 1  # as a run killed after its first epoch
    torch.save(payload, out / "last.pt")
    monkeypatch.setattr(cg3d.params, "cpu_count", lambda: 1)  # requeued on a smaller node
    resumed = train_stage(shards, out, config, resume="auto")
    said = " ".join(capsys.readouterr().err.split())
    assert "not resuming" not in said
    assert "resuming with the 2 loader workers the checkpoint was trained with" in said
    assert resumed["epoch"] == 2
    payload = torch.load(out / "last.pt", weights_only=True)
    assert payload["training"]["run"]["config"]["workers"] == 2

    changed = dataclasses.replace(config, prompt_lr=0.5)  # another run: from scratch
    train_stage(shards, out, changed, resume="auto")
    said = " ".join(capsys.readouterr().err.split())
    assert "not resuming" in said
    payload = torch.load(out / "last.pt", weights_only=True)
    assert payload["training"]["run"]["config"]["workers"] == 1


def test_a_run_asked_for_more_loader_workers_does_not_resume_with_its_checkpoints_fewer(
    shards, tmp_path, capsys, monkeypatch
):
    """The checkpoint's count is kept on a requeue (the same `train.workers`, fewer CPUs), not
    when `train.workers` itself changed: a killed run's params.yaml raised from 2 to 3 went on
    with 2 loader workers, where a fresh run (and the dvc.lock's params) trains with 3."""
    import dataclasses

    import torch

    import cg3d.params
    from cg3d.params import TrainConfig, load_section
    from cg3d.train.loop import train_stage

    config = load_section(TrainConfig, "train", params_file(tmp_path, epochs=2, workers=2))
    out = tmp_path / "run"
    monkeypatch.setattr(cg3d.params, "cpu_count", lambda: 3)
    train_stage(shards, out, config, resume="auto")
    payload = torch.load(out / "last.pt", weights_only=True)
    payload["training"]["epoch"] = 1  # as a run killed after its first epoch
    torch.save(payload, out / "last.pt")
    capsys.readouterr()
    train_stage(shards, out, dataclasses.replace(config, workers=3), resume="auto")
    said = " ".join(capsys.readouterr().err.split())
    assert "not resuming" in said and "a different 'workers' (2, now 3)" in said
    payload = torch.load(out / "last.pt", weights_only=True)
    assert payload["training"]["run"]["config"]["workers"] == 3
    assert payload["training"]["run"]["workers_asked"] == 3


@pytest.mark.parametrize("moved", [False, True], ids=["before-publish", "mid-publish"])
def test_a_run_stopped_after_its_last_save_publishes_on_resume_without_training_again(
    shards, tmp_path, capsys, moved
):
    """A job's time limit (SIGKILL) after the last epoch's save, before `publish` ended: the
    checkpoint of the last epoch in `.resume/` (or, `moved`, already in OUT, `.resume/` holding
    its numbers). `--resume auto` took it for a finished run and trained the whole run again
    from scratch; it now publishes what the stopped run had finished."""
    import shutil

    from cg3d.params import TrainConfig, load_section
    from cg3d.train.loop import train_stage

    config = load_section(TrainConfig, "train", params_file(tmp_path, epochs=1))
    out = tmp_path / "run"
    train_stage(shards, out, config, resume="auto")
    names = ("last.pt", "metrics.json", "about.json")  # run.json (untracked) has timings
    published = {name: (out / name).read_bytes() for name in names}
    capsys.readouterr()
    folder = out / ".resume"  # as the stopped run left it
    folder.mkdir()
    shutil.move(out / "run.json", folder / "run.json")
    (out / "metrics.json").unlink()
    (out / "about.json").unlink()
    if not moved:
        shutil.move(out / "last.pt", folder / "last.pt")
    train_stage(shards, out, config, resume="auto")
    said = " ".join(capsys.readouterr().err.split())
    assert "not resuming" not in said and "training from scratch" not in said
    assert not folder.exists()
    assert {name: (out / name).read_bytes() for name in names} == published


def test_a_kill_while_publish_removes_the_resume_folder_keeps_the_published_curves(
    shards, tmp_path, capsys, monkeypatch
):
    """A SIGKILL part way through removing `.resume/` at the end of `publish` left some of its
    curves there; the rerun took the folder for an unpublished run and published those few
    over the whole curves (a loop of SIGKILLs found the test curves gone)."""
    import shutil

    import cg3d.train.loop
    from cg3d.params import TrainConfig, load_section
    from cg3d.train.loop import train_stage

    config = load_section(TrainConfig, "train", params_file(tmp_path, epochs=1))
    out = tmp_path / "run"
    real_rmtree = shutil.rmtree

    def killed_part_way(path, *args, **kwargs):
        if Path(path).name.startswith(".resume") and (Path(path) / "dvclive").is_dir():
            real_rmtree(Path(path) / "dvclive" / "plots" / "metrics" / "test")
            raise KeyboardInterrupt  # as the kill: the rest of the folder stays
        real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(cg3d.train.loop.shutil, "rmtree", killed_part_way)
    with pytest.raises(KeyboardInterrupt):
        train_stage(shards, out, config, resume="auto")
    monkeypatch.setattr(cg3d.train.loop.shutil, "rmtree", real_rmtree)
    curves = sorted(p.relative_to(out) for p in (out / "dvclive").rglob("*.tsv"))
    assert any(path.parts[-2] == "test" for path in curves)
    train_stage(shards, out, config, resume="auto")
    assert sorted(p.relative_to(out) for p in (out / "dvclive").rglob("*.tsv")) == curves
    assert not (out / ".resume").exists() and not list(out.glob(".resume.removed*"))


def test_a_resume_folder_removal_that_could_not_be_cleared_does_not_stop_the_next_publish(
    shards, tmp_path
):
    """`publish` renamed `.resume/` to one fixed name, cleared first: what stayed there (a file
    an NFS client keeps busy after the last removal; here a file of that name) made every
    publish fail after last.pt was moved, and every rerun with it."""
    from cg3d.params import TrainConfig, load_section
    from cg3d.train.loop import train_stage

    config = load_section(TrainConfig, "train", params_file(tmp_path, epochs=1))
    out = tmp_path / "run"
    out.mkdir()
    (out / ".resume.removed").write_text("not removable by rmtree")
    result = train_stage(shards, out, config, resume="auto")
    assert result["epoch"] == 1
    assert (out / "last.pt").is_file() and (out / "metrics.json").is_file()
    assert not (out / ".resume").exists()


def test_a_second_training_into_the_same_folder_fails_at_once(shards, tmp_path):
    """Issue 18: two `cg3d train` into one --out both ran and interleaved their curves."""
    import subprocess
    import sys

    out = tmp_path / "run"
    holder = (
        "import time\nfrom cg3d.files import output_lock\n"
        f"with output_lock({str(out)!r}):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(600)\n"
    )
    # a first run, still writing: another process that holds the folder's lock
    first = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "locked"
        args = ["train", "--shards", str(shards), "--out", str(out)]
        result = CliRunner().invoke(app, [*args, "--params", str(params_file(tmp_path))])
    finally:
        first.kill()
        first.wait()
    assert result.exit_code != 0 and "another run is writing into" in str(result.exception)
    assert not (out / "params.yaml").exists() and not (out / "dvclive").exists()


def test_two_identical_runs_write_the_same_checkpoint_bytes(shards, tmp_path):
    """Issue 18: the zip records were named after the temp file (`.last.pt.<pid>.tmp/…`), so
    two runs (two processes) of one config gave different last.pt files."""
    import subprocess
    import sys
    import zipfile

    params = params_file(tmp_path, epochs=1)
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        command = [sys.executable, "-m", "cg3d", "train", "--shards", str(shards)]
        command += ["--out", str(out), "--params", str(params)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    first, second = ((out / "last.pt").read_bytes() for out in outs)
    assert first == second
    names = zipfile.ZipFile(outs[0] / "last.pt").namelist()
    assert all(name.startswith("archive/") for name in names), names


def test_a_read_only_run_folder_is_one_line_before_training(shards, tmp_path):
    from cg3d.errors import UsageError

    (tmp_path / "taken").write_text("a file where the run folder should be")
    args = ["train", "--shards", str(shards), "--out", str(tmp_path / "taken" / "run")]
    args += ["--params", str(params_file(tmp_path))]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, UsageError)
    assert str(result.exception).startswith(f"--out: cannot write into {tmp_path / 'taken'}")


def test_an_out_folder_too_deep_for_the_run_files_is_refused_before_training(shards, tmp_path):
    """Before: an --out of 4,000 bytes trained a whole epoch, then the first metrics file
    (`.resume/dvclive/plots/metrics/train/…`, past PATH_MAX) failed "File name too long"."""
    out = tmp_path.resolve()
    while (room := 4000 - len(str(out)) - 1) > 0:
        out = out / ("d" * min(200, room))
    args = ["train", "--shards", str(shards), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--params", str(params_file(tmp_path))])
    assert type(result.exception).__name__ == "UsageError", result.output
    assert "is a path of 4000 bytes, which leaves less than the 255" in str(result.exception)
    assert "epoch" not in result.output  # refused before the first

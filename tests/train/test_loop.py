import gc
import json
import os
import re
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from dvclive import Live

from cg3d.errors import UsageError
from cg3d.models.checkpoint import read_checkpoint
from cg3d.params import AugmentConfig
from cg3d.train import loop
from cg3d.train.loop import TrainConfig, Trainer, fit, prepare_model
from cg3d.train.resume import MAY_DIFFER, MAY_DIFFER_WHEN_ASKED
from tests.descriptors import open_files
from tests.train.helpers import CLASSES, make_batches, tiny_train_config

pytestmark = pytest.mark.filterwarnings("ignore::cg3d.models.clip.RandomClipWarning")


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def changed(before, model) -> set[str]:
    """The top-level groups of weights that differ from `before`."""
    after = model.state_dict()
    names = {name for name in before if not torch.equal(before[name], after[name])}
    return {"encoder" if n.startswith("point_encoder.") else n for n in names}


def make_trainer(tmp_path, updates=4, **overrides):
    config = tiny_train_config(**overrides)
    model, _ = prepare_model(config, CLASSES, tmp_path)
    model.train()
    return model, Trainer(model, config, updates_per_epoch=updates, device=torch.device("cpu"))


def test_alternating_schedule_trains_the_encoder_then_only_the_prompts(tmp_path):
    model, trainer = make_trainer(tmp_path, schedule="alternating")
    batch = next(iter(make_batches(1, 8)))
    before = snapshot(model)
    logged = trainer.update([batch], step=0)
    assert changed(before, model) == {"encoder"}
    assert set(logged) == {"loss", "loss_point_text", "loss_point_image"}
    before = snapshot(model)
    logged = trainer.update([batch], step=1)
    assert changed(before, model) == {"visual.prompts"}
    assert set(logged) == {"loss", "loss_image_text"}


def test_joint_step_changes_only_the_prompts_and_the_encoder(tmp_path):
    model, trainer = make_trainer(tmp_path, schedule="joint")
    before = snapshot(model)
    trainer.update(list(make_batches(2, 8)), step=0)  # two accumulated batches
    assert changed(before, model) == {"encoder", "visual.prompts"}


def test_a_joint_update_encodes_each_image_once(tmp_path):
    model, trainer = make_trainer(tmp_path, schedule="joint")
    calls = []
    model.visual.register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
    trainer.update(list(make_batches(2, 8)), step=0)
    assert calls == [8, 8]


def test_a_learned_temperature_moves_and_stays_within_clips_range(tmp_path):
    model, trainer = make_trainer(tmp_path, train_logit_scale=True, encoder_lr=5.0)
    batch = next(iter(make_batches(1, 8)))
    before = model.logit_scale.item()
    scales = []
    for step in range(4):
        trainer.update([batch], step=2 * step)  # encoder updates: the temperature trains
        scales.append(model.logit_scale.item())
    assert scales[0] != before
    assert all(1.0 <= scale <= 100.0 + 1e-3 for scale in scales)


def test_class_prototype_targets_ignore_the_caption_template(tmp_path):
    batch = next(iter(make_batches(1, 8)))
    reworded = batch | {"caption": [f"there is a {c} here" for c in batch["caption"]]}
    losses = {}
    for targets in ("captions", "class_prototypes"):
        model, trainer = make_trainer(tmp_path, text_targets=targets)
        losses[targets] = [trainer.losses(b, "joint")[1]["loss"] for b in (batch, reworded)]
    assert losses["class_prototypes"][0] == losses["class_prototypes"][1]
    assert losses["captions"][0] != losses["captions"][1]
    with pytest.raises(UsageError, match="text_targets"):
        tiny_train_config(text_targets="labels")


def test_loss_falls_on_a_tiny_overfit_set(tmp_path):
    model, trainer = make_trainer(
        tmp_path, updates=25, epochs=1, schedule="joint", warmup_epochs=0.0
    )
    batch = next(iter(make_batches(1, 8)))  # eight objects, eight distinct captions
    losses = [trainer.update([batch], step)["loss_point_text"] for step in range(25)]
    assert losses[-1] < 0.5 * losses[0]


class KilledAfterFirstEpoch:
    """Batches that die like a killed process when the second epoch starts."""

    def __init__(self, batches):
        self.batches, self.num_batches = batches, batches.num_batches

    def set_epoch(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        self.batches.set_epoch(epoch)

    def __iter__(self):
        return iter(self.batches)


@pytest.mark.slow
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    config = tiny_train_config(epochs=2)
    test_batches = make_batches(1, 8, seed=9)
    whole = tmp_path / "whole"
    model, _ = prepare_model(config, CLASSES, whole)
    fit(config, whole, model, make_batches(4, 8), test_batches)

    killed = tmp_path / "killed"
    model, _ = prepare_model(config, CLASSES, killed)
    with pytest.raises(KeyboardInterrupt):
        fit(config, killed, model, KilledAfterFirstEpoch(make_batches(4, 8)), test_batches)
    # the killed run left its checkpoint in the resume folder, none among its outputs
    assert read_checkpoint(killed / ".resume/last.pt")["training"]["epoch"] == 1
    assert not (killed / "last.pt").exists()
    model, training = prepare_model(config, CLASSES, killed, resume="always")
    metrics = fit(config, killed, model, make_batches(4, 8), test_batches, training)

    expected, got = read_checkpoint(whole / "last.pt"), read_checkpoint(killed / "last.pt")
    for name, tensor in expected["model"].items():
        assert torch.equal(tensor, got["model"][name]), name
    assert metrics["epoch"] == 2 and metrics["clip_pretrained"] is False
    saved = json.loads((killed / "metrics.json").read_text())
    assert json.loads((killed / "about.json").read_text())["clip_pretrained"] is False
    assert (
        saved["test_point_text_acc"]
        == json.loads((whole / "metrics.json").read_text())["test_point_text_acc"]
    )
    # dvclive logged one row per epoch across the kill
    rows = (killed / "dvclive/plots/metrics/test/point_text_acc.tsv").read_text().splitlines()
    assert len(rows) == 1 + 2


def test_resume_rejects_a_corrupt_or_mismatched_checkpoint(tmp_path):
    config = tiny_train_config()
    (tmp_path / "last.pt").write_bytes(b"\x00garbage")
    with pytest.raises(UsageError, match="last.pt"):
        prepare_model(config, CLASSES, tmp_path, resume="always")
    model, _ = prepare_model(config, CLASSES, tmp_path / "run")
    fit(
        tiny_train_config(epochs=1), tmp_path / "run", model, make_batches(2, 8), make_batches(1, 8)
    )
    with pytest.raises(UsageError, match="prompts"):
        prepare_model(tiny_train_config(prompts=3), CLASSES, tmp_path / "run", resume="always")


def kill_on_call(monkeypatch, target, name: str, call: int) -> None:
    """`target.name` raises KeyboardInterrupt (as a killed process stops) on its `call`-th call."""
    original, calls = getattr(target, name), []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, dying)


# Where epoch 2 of 3 is killed, and the epoch its checkpoint then holds; an alternating epoch
# logs 9 curves (7 train/, 2 test/). The checkpoint is written before metrics.json.
KILL_POINTS = {
    "amid the curve rows": (Live, "log_metric", 9 + 4, 1),
    "after the curves, before the checkpoint": (loop, "save_checkpoint", 2, 1),
    "after the checkpoint, before metrics.json": (loop, "write_json", 2, 2),  # run.json
}


def curve(out, name: str) -> list[str]:
    return (out / f"dvclive/plots/metrics/{name}.tsv").read_text().splitlines()


def test_a_run_extended_from_read_only_published_curves_appends_to_writable_copies(tmp_path):
    # As DVC checks its outputs out: each file a read-only hardlink into its cache.
    out, cache = tmp_path / "run", tmp_path / "cache"
    published = out / "dvclive/plots/metrics/train/loss.tsv"
    published.parent.mkdir(parents=True)
    cache.write_text("step\tloss\n0\t3.5\n")
    os.link(cache, published)
    cache.chmod(0o444)

    live = loop.open_curves(out, first_epoch=1, classes=3)
    live.log_metric("train/loss", 2.5)
    live.next_step()

    copy = loop.resume_folder(out) / "dvclive/plots/metrics/train/loss.tsv"
    assert copy.stat().st_mode & stat.S_IWUSR  # copied 0444, dvclive's append was EACCES
    assert copy.read_text().splitlines()[1:] == ["0\t3.5", "1\t2.5"]
    assert cache.read_text() == "step\tloss\n0\t3.5\n"


def test_a_run_started_in_a_dvc_repository_of_no_commit_yet_trains(tmp_path, monkeypatch):
    """dvclive stopped it before the first epoch: "scmrepo.exceptions.SCMError: Empty git
    repo", a traceback."""
    (tmp_path / "project").mkdir()
    git(tmp_path / "project", "init", "-q")
    subprocess.run(
        [sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path / "project", check=True
    )
    monkeypatch.chdir(tmp_path / "project")
    live = loop.open_curves(tmp_path / "run", first_epoch=0, classes=3)
    live.log_metric("train/loss", 2.5)
    live.next_step()
    assert curve(loop.resume_folder(tmp_path / "run"), "train/loss")[1:] == ["0\t2.5"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    config = tiny_train_config(epochs=3)
    model, _ = prepare_model(config, CLASSES, out)
    fit(config, out, model, make_batches(4, 8), make_batches(1, 8, seed=9))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("kill", KILL_POINTS)
def test_curves_agree_with_the_checkpoint_after_a_kill_anywhere(
    uninterrupted, tmp_path, monkeypatch, kill
):
    config = tiny_train_config(epochs=3)
    *where, saved = KILL_POINTS[kill]
    with monkeypatch.context() as patch:
        kill_on_call(patch, *where)
        model, _ = prepare_model(config, CLASSES, tmp_path)
        with pytest.raises(KeyboardInterrupt):
            fit(config, tmp_path, model, make_batches(4, 8), make_batches(1, 8, seed=9))
    model, training = prepare_model(config, CLASSES, tmp_path, resume="always")
    assert training["epoch"] == saved
    fit(config, tmp_path, model, make_batches(4, 8), make_batches(1, 8, seed=9), training)
    for metric in ("train/loss", "train/lr_encoder", "test/point_text_acc"):
        rows = curve(tmp_path, metric)
        assert [row.split("\t")[0] for row in rows] == ["step", "0", "1", "2"]
        assert rows == curve(uninterrupted, metric)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    about = json.loads((tmp_path / "about.json").read_text())
    assert metrics["epoch"] == 3 and about["held_out_templates"] == "cg3d (63)"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A one-epoch run on the data set whose index fingerprint is "index-a"."""
    out = tmp_path_factory.mktemp("run")
    config = tiny_train_config(epochs=1)
    model, _ = prepare_model(config, CLASSES, out, data="index-a")
    fit(config, out, model, make_batches(2, 8), make_batches(1, 8), data="index-a")
    return out


def test_auto_resume_continues_its_own_unfinished_run_only(finished_run, tmp_path):
    _, training = prepare_model(tiny_train_config(), CLASSES, tmp_path, "auto", "index-a")
    assert training is None  # no checkpoint yet
    # the finished run's checkpoint, as if it had been asked for 2 epochs and killed after one
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    payload = torch.load(finished_run / "last.pt", weights_only=True)
    payload["training"]["run"]["config"]["epochs"] = 2
    torch.save(payload, unfinished / "last.pt")
    same_run = tiny_train_config(epochs=2, text_cache=False)
    _, training = prepare_model(same_run, CLASSES, unfinished, "auto", "index-a")
    assert training is not None and training["epoch"] == 1
    # 0 and 1 loader workers make the same batches: the same run
    payload["training"]["run"]["config"]["workers"] = 0
    torch.save(payload, unfinished / "last.pt")
    one_worker = tiny_train_config(epochs=2, text_cache=False, workers=1)
    _, training = prepare_model(one_worker, CLASSES, unfinished, "auto", "index-a")
    assert training is not None and training["epoch"] == 1
    # 2 or more deal other batches: a fresh run's result, not the old batches then the new
    two_workers = tiny_train_config(epochs=2, text_cache=False, workers=2)
    _, training = prepare_model(two_workers, CLASSES, unfinished, "auto", "index-a")
    assert training is None
    _, training = prepare_model(two_workers, CLASSES, unfinished, "always", "index-a")
    assert training is not None  # asked for: the user's call
    # finished: DVC reruns it only when its code changed or with -f, so it trains afresh
    _, training = prepare_model(
        tiny_train_config(epochs=1), CLASSES, finished_run, "auto", "index-a"
    )
    assert training is None
    for changes, data in [
        (dict(prompt_lr=0.5), "index-a"),
        (dict(augment=AugmentConfig(jitter_sigma=0.02)), "index-a"),
        (dict(epochs=2), "index-a"),  # a stage whose params changed gives a fresh run's result
        ({}, "index-b"),
    ]:
        config = tiny_train_config(**{"epochs": 1} | changes)
        _, training = prepare_model(config, CLASSES, finished_run, "auto", data)
        assert training is None, (changes, data)


def test_an_explicit_resume_may_extend_a_run_but_refuses_another_one(finished_run):
    _, training = prepare_model(
        tiny_train_config(epochs=4), CLASSES, finished_run, "always", "index-a"
    )
    assert training["epoch"] == 1
    with pytest.raises(UsageError, match="'prompt_lr' \\(0.01, now 0.5\\)"):
        prepare_model(tiny_train_config(prompt_lr=0.5), CLASSES, finished_run, "always", "index-a")
    with pytest.raises(UsageError, match="other shards"):
        prepare_model(tiny_train_config(epochs=1), CLASSES, finished_run, "always", "index-b")
    with pytest.raises(UsageError, match="resume must be one of"):
        prepare_model(tiny_train_config(), CLASSES, finished_run, "sometimes")


def test_a_resume_refused_for_other_augment_settings_names_only_those(finished_run, tmp_path):
    # an older cg3d's checkpoint: its augment section lacks the 90° turn; and jitter differs.
    # The message held both whole dicts (17 settings each) on one line of ~900 characters.
    payload = torch.load(finished_run / "last.pt", weights_only=True)
    for name in ("rotate_90", "rotate_90_prob"):
        del payload["training"]["run"]["config"]["augment"][name]
    (tmp_path / "last.pt").write_bytes(b"")
    torch.save(payload, tmp_path / "last.pt")
    config = tiny_train_config(epochs=1, augment=AugmentConfig(jitter_sigma=0.02))
    with pytest.raises(UsageError) as raised:
        prepare_model(config, CLASSES, tmp_path, "always", "index-a")
    assert str(raised.value).splitlines()[1:] == [
        "  rotate_90: (absent) → False; rotate_90_prob: (absent) → 1.0;",
        "  jitter_sigma: 0.01 → 0.02",
    ]
    assert str(raised.value).splitlines()[0].endswith("was trained with a different 'augment':")


def test_a_resume_refused_for_a_param_the_old_run_lacks_says_absent(finished_run, tmp_path):
    # a run of an older cg3d, from before train.point_normalisation, asked to go on with it
    # set: the refusal said "(None, now 'centroid')", as if the old run had set it to None
    payload = torch.load(finished_run / "last.pt", weights_only=True)
    del payload["training"]["run"]["config"]["point_normalisation"]
    torch.save(payload, tmp_path / "last.pt")
    config = tiny_train_config(epochs=1, point_normalisation="centroid")
    with pytest.raises(UsageError) as raised:
        prepare_model(config, CLASSES, tmp_path, "always", "index-a")
    assert str(raised.value).endswith(
        "was trained with a different 'point_normalisation' (absent, now 'centroid')"
    )


def test_a_run_of_an_older_cg3d_resumes_where_a_new_param_keeps_its_default(finished_run, tmp_path):
    """A param added since the run started, left at its default (the behaviour before it):
    upgrading cg3d mid-run refused the resume, and `--resume auto` retrained from scratch."""
    payload = torch.load(finished_run / "last.pt", weights_only=True)
    del payload["training"]["run"]["config"]["point_normalisation"]
    torch.save(payload, tmp_path / "last.pt")
    _, training = prepare_model(tiny_train_config(epochs=1), CLASSES, tmp_path, "always", "index-a")
    assert training is not None and training["epoch"] == payload["training"]["epoch"]


def test_an_explicit_resume_refuses_to_shorten_a_run(uninterrupted):
    with pytest.raises(UsageError, match="is at epoch 3, past epochs: 2"):
        prepare_model(tiny_train_config(epochs=2), CLASSES, uninterrupted, "always")


def test_the_fields_a_resumed_run_may_change_are_config_fields():
    import dataclasses

    names = {field.name for field in dataclasses.fields(TrainConfig)}
    assert set(MAY_DIFFER) | set(MAY_DIFFER_WHEN_ASKED) <= names


def test_wrong_train_parameters_are_named():
    with pytest.raises(UsageError, match="schedule"):
        tiny_train_config(schedule="sometimes")
    with pytest.raises(UsageError, match="train.batch_size"):
        tiny_train_config(batch_size=0)


def test_every_epoch_shows_a_progress_bar_with_rate_and_time_left(tmp_path, capsys):
    config = tiny_train_config(epochs=2)
    model, _ = prepare_model(config, CLASSES, tmp_path)
    fit(config, tmp_path, model, make_batches(3, 8), make_batches(1, 8, seed=9))
    shown = capsys.readouterr().out  # a terminal redraws it; a log gets each bar once, finished
    for epoch in ("epoch 1/2", "epoch 2/2"):  # (and a line each tenth before: "epoch 1/2: 1/3")
        (bar,) = [line for line in shown.splitlines() if line.startswith(f"{epoch} ")]
        assert re.search(r" 3/3 +\d+\.\d samples/s +\d+:\d\d:\d\d$", bar.rstrip()), bar


def test_a_diverged_epoch_stops_the_run_and_saves_nothing_of_it(tmp_path):
    """A NaN loss used to train on to exit 0, saving NaN weights every loader then refuses."""
    config = tiny_train_config(epochs=2)
    model, _ = prepare_model(config, CLASSES, tmp_path)
    batches = make_batches(2, 8)
    for batch in batches:
        batch["points"][0, 0, 0] = float("nan")  # one bad coordinate: a NaN loss
    with pytest.raises(UsageError, match=r"epoch 1: the training diverged \(train/loss") as caught:
        fit(config, tmp_path, model, batches, make_batches(1, 8, seed=9))
    assert "train.encoder_lr" in str(caught.value) and "\n" not in str(caught.value)
    assert not (tmp_path / "last.pt").exists() and not (tmp_path / ".resume/last.pt").exists()


@pytest.mark.parametrize(
    "asked, loaded, said",
    [
        ("none", False, "none (random init)"),
        # asked for weights this machine could not fetch: CLIP fell back to a random init
        ("openai", False, "none (random init)"),
        ("openai", True, "openai"),
    ],
)
def test_about_json_names_the_clip_weights_loaded_as_every_eval_does(asked, loaded, said):
    """Training said `clip_weights: "none"` (the param), evals "none (random init)" (what was
    loaded); a fallback to random weights was named by the tag it failed to fetch."""
    from types import SimpleNamespace

    from cg3d.eval.zeroshot import model_identity

    config = {"clip_model": "CG3D-ViT-Micro-32", "clip_pretrained": asked, "encoder": "pointnet2"}
    model = SimpleNamespace(config=config | {"clip_pretrained_loaded": loaded})
    trained = loop.run_about(TrainConfig(clip_pretrained=asked), model, "cg3d (63)")
    measured = model_identity(model, Path("last.pt"))
    for about in (trained, measured):
        assert (about["clip_weights"], about["clip_pretrained"]) == (said, loaded)


def test_the_curves_leave_no_thread_nor_file_behind(tmp_path, monkeypatch):
    """dvclive's first step started a thread to post to DVC Studio (without Studio too) that
    waited for good, holding its Live, and the Live its DVC repository (that of the working
    folder: a project's): each in-process `cg3d train` (a sweep, a notebook, the test run) left
    a thread and ~22 descriptors open (DVC's cache databases, git's pack indexes), and CI's test
    run held descriptors past 1024."""
    for variable in ("DVC_STUDIO_TOKEN", "STUDIO_TOKEN", "DVC_STUDIO_REPO_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # the project: a DVC repository
    # earlier tests' garbage first: SQLite keeps a closed connection's descriptors while another
    # connection of the process has the same database open (a Live not yet collected)
    gc.collect()
    threads, files = threading.active_count(), len(open_files())
    for run in range(3):
        live = loop.open_curves(tmp_path / f"run{run}", first_epoch=0, classes=2)
        live.log_metric("loss", 1.0)
        live.next_step()
        loop.close_curves(live)
    assert (threading.active_count(), len(open_files())) == (threads, files)


def test_a_stopped_run_leaves_no_file_of_its_curves_open(tmp_path, monkeypatch):
    """A run stopped mid-way (Ctrl-C in a notebook, an error) kept its Live, and the Live its
    DVC repository's files, as long as the traceback lived (a notebook keeps the last one)."""
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # the project: a DVC repository
    config = tiny_train_config(epochs=2)
    gc.collect()  # earlier tests' garbage first (above)
    files = len(open_files())
    stops = []
    for run in range(2):
        model, _ = prepare_model(config, CLASSES, tmp_path / f"run{run}")
        with pytest.raises(KeyboardInterrupt) as stopped:
            batches = KilledAfterFirstEpoch(make_batches(2, 8))
            fit(config, tmp_path / f"run{run}", model, batches, make_batches(1, 8, seed=9))
        stops.append(stopped)  # as a notebook's last traceback, or pytest's report, keeps it
    assert len(open_files()) == files


def git(folder: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(folder), *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


@pytest.mark.parametrize("commits", [0, 1])
def test_the_curves_leave_a_users_git_repository_as_it_was(tmp_path, monkeypatch, commits):
    """`cg3d train` run from a git checkout without DVC (a researcher's own code): dvclive ran
    `dvc init` there (`.dvc/`, `.dvcignore`, staged in the user's index), and in a repository
    with no commit yet the run ended in a traceback ("Empty git repo")."""
    repository = tmp_path / "code"
    repository.mkdir()
    git(repository, "init", "-q")
    if commits:
        (repository / "train.py").write_text("print()\n")
        git(repository, "add", "train.py")
        git(repository, "commit", "-q", "-m", "code")
    monkeypatch.chdir(repository)
    for out in (repository / "run", tmp_path / "elsewhere"):
        live = loop.open_curves(out, first_epoch=0, classes=2)
        live.log_metric("loss", 1.0)
        live.next_step()
        loop.close_curves(live)
        assert (out / ".resume/dvclive/plots/metrics/loss.tsv").is_file()
    assert not (repository / ".dvc").exists() and not (repository / ".dvcignore").exists()
    assert git(repository, "status", "--porcelain") == "?? run/\n"


class BareLive:
    """A logger with dvclive's public methods only (a dvclive that renamed its private parts)."""

    def __init__(self, folder: str, **options) -> None:
        self.folder, self.step, self.rows = folder, 0, []

    def log_metric(self, name: str, value: float) -> None:
        self.rows.append((self.step, name, value))

    def next_step(self) -> None:
        self.step += 1

    def end(self) -> None:
        self.rows.append("end")


def test_the_curves_need_none_of_dvclives_private_parts(tmp_path, monkeypatch):
    """open_curves and close_curves reach into dvclive's private attributes (its Studio events,
    its repository, its repository lookup): a dvclive without them must still train, not end in
    an AttributeError."""
    import dvclive.live

    monkeypatch.setattr(dvclive.live, "Live", BareLive)
    monkeypatch.delattr(dvclive.live, "get_dvc_repo")
    live = loop.open_curves(tmp_path / "run", first_epoch=0, classes=2)
    live.log_metric("loss", 1.0)
    live.next_step()
    loop.close_curves(live)
    assert live.rows == [(0, "loss", 1.0), "end"]
    assert not hasattr(dvclive.live, "get_dvc_repo")  # the patch took nothing away nor left

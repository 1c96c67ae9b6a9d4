"""The training stage: align a point encoder with a prompt-tuned, frozen CLIP.

`train_stage(shards, out, config)` is what `cg3d train` and the DVC `train` stage run; it
builds the shard loaders and calls `fit`, which takes any iterable of batches
({"points" (B,N,3), "image" (B,3,S,S) preprocessed float or uint8 pixels (the loader's,
normalised on the device), "caption" list[str], "cls" (B,)}), so tests and benchmarks can feed
tensors from memory (`BatchList`). The model's inputs are copied to the device one batch ahead
(`data.prefetch`) and the losses read back only every `train.log_every` updates (`LossSums`):
an update itself never waits for the GPU.

`fit` runs epochs (`train_epoch`: updates while every process has a batch group), evaluates
held-out accuracy, and writes the epoch (`write_epoch`: curves, then the checkpoint with model,
optimisers, schedulers, RNG states, position and the epoch's metrics, then those metrics) into
`OUT/.resume/`; at the end `publish` moves them into OUT: `last.pt`, `metrics.json`,
`about.json`, `dvclive/plots/metrics/`. The parts live beside it:
`trainer` (one update of either schedule), `optim` (optimisers, schedules), `evaluate`
(held-out accuracy), `resume` (when a run continues, from `OUT/.resume/`), `distributed`.

What is tracked (git, `dvc.lock`) is what the same params and data give on any machine:
`metrics.json` holds a few headline numbers only (`TRACKED_METRICS`, so `dvc metrics show` stays
readable) and `about.json` what was trained (`run_about`: CLIP model and weights, encoder,
schedule, held-out templates; `cg3d.formats.metrics`), the curves hold no timing. Timings, the
world size and the other numbers go to the untracked `OUT/run.json` (gitignored).
"""

import dataclasses
import itertools
import math
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from cg3d import terminal
from cg3d.errors import UsageError
from cg3d.files import holds_lock, loads_json, output_lock, require_folder, write_json
from cg3d.formats.metrics import METRICS_NAME, write_metrics
from cg3d.formats.owner import check_owner, mark
from cg3d.models.checkpoint import save_checkpoint
from cg3d.models.clip import clip_about
from cg3d.models.model import CG3D, model_config
from cg3d.params import TrainConfig, batch_problem, bound_workers
from cg3d.pipeline.chunks import progress_bar
from cg3d.protocol import index_classes
from cg3d.stopping import Stopwatch
from cg3d.train.distributed import (
    barrier,
    every_rank,
    gather_to_first,
    init_distributed,
    pick_device,
    smallest,
    summed,
    world,
)
from cg3d.train.evaluate import evaluate, held_out_prototypes
from cg3d.train.resume import (
    CURVES_IN_PERCENT,
    curves_in_percent,
    data_fingerprint,
    in_fractions,
    metrics_in_percent,
    prepare_model,
    recorded_workers,
    resume_folder,
    run_identity,
    seed_everything,
    truncate_curves,
)
from cg3d.train.rng import rng_state, set_rng_state
from cg3d.train.trainer import Trainer

# Trainer and seed_everything are imported from here by the benchmarks
__all__ = ["BatchList", "TrainConfig", "Trainer", "fit", "prepare_model", "seed_everything"]
__all__ += ["train_stage"]

console = terminal.console(stderr=True)

# The keys of the tracked `OUT/metrics.json`, numbers only: same params and data, same values
# on any machine (what was trained goes to `about.json`, `run_about`). Accuracies and chance
# are in %, as eval's top1 and R@K beside them in `dvc metrics show`.
TRACKED_METRICS = (
    "epoch",
    "train_loss",
    "test_point_text_acc",
    "test_point_image_acc",
    "chance_point_text",
    "held_out_samples",
    "skipped_samples",
    "train_samples_without_color",  # a colour model's samples fed NO_COLOR (6 channels only)
)
# Logged per epoch but machine-dependent: kept out of the tracked curves and metrics
TIMING_KEYS = ("train/samples_per_s", "train/seconds")
RUN_INFO = "run.json"  # untracked: timings, world size, every number of the last epoch


class BatchList:
    """An in-memory loader: a list of batches, reordered per epoch by `set_epoch` (seeded)."""

    def __init__(self, batches: list[dict[str, Any]], seed: int = 0):
        self.batches, self.seed, self.order = batches, seed, list(range(len(batches)))

    @property
    def num_batches(self) -> int:
        return len(self.batches)

    def set_epoch(self, epoch: int) -> None:
        self.order = random.Random(self.seed + epoch).sample(
            range(len(self.batches)), len(self.batches)
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self.batches[index] for index in self.order)


def num_updates(num_batches: int, accum: int) -> int:
    """Updates an epoch plans for (the LR schedule's length): whole groups of `accum` batches
    on the process with the fewest. An epoch may hold fewer (see `groups_in_step`)."""
    count = smallest(num_batches // accum)
    if count < 1:
        raise UsageError(
            f"only {num_batches} whole batches of train.batch_size per epoch, fewer than "
            f"train.grad_accum {accum}: lower train.batch_size or train.grad_accum"
        )
    return count


def groups_in_step(batches: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    """Groups of `size` consecutive batches, for as long as every process still has one.

    A loader can end before the batch count its index promised (samples that fail to decode
    are skipped), on one process and not another. Before each update the processes agree
    (an all-reduce of a flag), so the epoch ends for all when one runs out and none waits in
    a collective the others have left.
    """
    iterator = iter(batches)
    while True:
        group = list(itertools.islice(iterator, size))
        if not every_rank(len(group) == size):
            return
        yield group


@contextmanager
def epoch_progress(
    epoch: int, epochs: int, updates: int
) -> Iterator[Callable[[int, float | None], None]]:
    """The data stages' progress bar over one epoch's updates, with samples/s, the running
    loss and time left, on the first process only; `advance(samples so far, loss or None)`
    after each update (the loss when it was read back, see `LossSums`)."""
    if world()[0] != 0:
        yield lambda samples, loss=None: None
        return
    clock = Stopwatch()
    with progress_bar() as progress:
        task = progress.add_task(f"epoch {epoch + 1}/{epochs}", total=updates, rate="")
        shown = ""

        def advance(samples: int, loss: float | None = None) -> None:
            nonlocal shown
            rate = samples / clock.seconds()
            shown = f", loss {loss:.4g}" if loss is not None else shown
            progress.update(task, advance=1, rate=f"{rate:.1f} samples/s{shown}")

        yield advance


class LossSums:
    """The epoch's losses, summed on the device: an update's losses are never read back on
    their own (a read waits for the GPU to finish everything queued), only the running sums,
    every `every` updates and at the epoch's end, in one transfer."""

    def __init__(self, every: int):
        self.every, self.updates = every, 0
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}  # updates that logged each loss (phases differ)

    def add(self, logged: dict[str, torch.Tensor]) -> float | None:
        """Add one update's losses; every `every`-th update, the running mean loss."""
        for key, value in logged.items():
            # float64 sums: the mean of Python floats the loop took before, to the bit
            value = torch.as_tensor(value, dtype=torch.float64)
            self.sums[key] = self.sums[key] + value if key in self.sums else value
            self.counts[key] = self.counts.get(key, 0) + 1
        self.updates += 1
        if self.updates % self.every or "loss" not in self.sums:
            return None
        return float(self.sums["loss"]) / self.counts["loss"]

    def means(self) -> dict[str, float]:
        """The epoch's mean of each loss (one read of all of them)."""
        keys = list(self.sums)
        if not keys:
            return {}
        values = torch.stack([self.sums[key] for key in keys]).tolist()
        return {key: value / self.counts[key] for key, value in zip(keys, values, strict=True)}


def train_epoch(
    trainer: Trainer, batches: Iterable[dict[str, Any]], epoch: int, step: int, updates: int
) -> tuple[dict[str, float], int, int]:
    """One epoch from update `step`, at most `updates` updates: its curves (mean losses,
    samples/s, LRs), the samples skipped as undecodable (all processes) and the next step."""
    if hasattr(batches, "set_epoch"):
        batches.set_epoch(epoch)
    trainer.begin_epoch(epoch, step)
    skipped_before = getattr(batches, "skipped", 0)
    losses = LossSums(trainer.config.log_every)
    samples, clock, without_color = 0, Stopwatch(), 0
    feed = batches
    if trainer.levers.prefetch:
        from cg3d.train.data import prefetch  # the loader's module, imported when used

        feed = prefetch(feed, trainer.device)
    groups = itertools.islice(groups_in_step(feed, trainer.config.grad_accum), updates)
    with epoch_progress(epoch, trainer.config.epochs, updates) as advance:
        for group in groups:
            running = losses.add(trainer.update(group, step))
            samples += sum(len(batch["caption"]) for batch in group)
            # has_color stays on the host (data.DEVICE_KEYS): counting it waits for nothing
            without_color += sum(int((~b["has_color"]).sum()) for b in group if "has_color" in b)
            step += 1
            advance(samples, running)
    means = losses.means()
    seconds = clock.seconds()
    samples, skipped = summed([samples, getattr(batches, "skipped", 0) - skipped_before])
    if not means:
        raise UsageError(
            f"epoch {epoch + 1}: no whole batch to train on ({skipped} samples did not decode)"
        )
    diverged = [f"train/{key} {value}" for key, value in means.items() if not math.isfinite(value)]
    if diverged:  # NaN weights would be saved, and every loader refuses them: stop here
        config = trainer.config
        raise UsageError(
            f"epoch {epoch + 1}: the training diverged ({', '.join(diverged)}); nothing of this "
            f"epoch was saved: lower train.encoder_lr ({config.encoder_lr}), train.prompt_lr "
            f"({config.prompt_lr}) or the loss weights"
        )
    record = {f"train/{key}": value for key, value in means.items()}
    record |= {
        "train/samples_per_s": samples / seconds,
        "train/seconds": seconds,
        "train/lr_encoder": trainer.schedulers["encoder"].get_last_lr()[0],
        "train/lr_prompts": trainer.schedulers["prompts"].get_last_lr()[0],
    }
    if trainer.config.point_channels == 6:
        # samples of this rank fed the constant NO_COLOR (no colour of their own)
        record["train/samples_without_color"] = without_color
    return record, skipped, step


def metrics_record(
    config: TrainConfig, model: CG3D, position: dict[str, int], record: dict[str, float], **extra
) -> dict[str, Any]:
    """The untracked `OUT/run.json`: the run's position, what was trained (`run_about`),
    `extra` and the epoch's numbers; `publish` takes `metrics.json` (`TRACKED_METRICS`) from
    it."""
    return {
        **position,
        **run_about(config, model, extra.get("held_out_templates", "")),
        "world_size": world()[1],
        **extra,
        "chance_point_text": 100 / len(model.config["classes"]),  # in %, as the accuracies
        **{key.replace("/", "_"): value for key, value in record.items()},
    }


def run_about(config: TrainConfig, model: CG3D, held_out_templates: str) -> dict[str, Any]:
    """`OUT/about.json`: what was trained, from the params and the model (the same on any
    machine); `metrics_record` repeats it for the untracked run.json."""
    return {
        **clip_about(model.config),  # what was loaded, as every eval's about.json says it
        "encoder": config.encoder,
        "schedule": config.schedule,
        "held_out_templates": held_out_templates,
    }


def open_curves(out: Path, first_epoch: int, classes: int):
    """dvclive's logger for the run's curves in `OUT/.resume/dvclive`, at step `first_epoch`
    (one step per epoch).

    On a resumed run the rows of epochs after the checkpoint's are dropped first, and the step
    is set from the checkpoint: dvclive's own resume counts from its summary file, which a
    kill can leave an epoch ahead of the checkpoint (and which restarts at 0 after one step).
    A finished run extended with `--resume` continues the curves it published. Curves of an
    older cg3d, accuracies as fractions, are converted to % (a model of `classes` classes:
    `in_fractions`), once (`curves_in_percent`).
    """
    folder = resume_folder(out) / "dvclive"
    plots, staged = folder / "plots", folder / "plots.staged"
    published = Path(out) / "dvclive" / "plots"
    mark = resume_folder(out) / CURVES_IN_PERCENT
    _finish_staged(staged, plots, mark)
    extended = first_epoch and not plots.is_dir() and published.is_dir()
    if extended:
        older = in_fractions(read_metrics(out, unfinished=False), classes)  # the published run's
    else:
        older = not mark.exists()  # an unfinished run's curves without it: an older cg3d's
    if extended or (first_epoch and older and plots.is_dir()):
        # Copied or converted in a staged copy that the mark makes the run's: converted in
        # place, a kill between the two files and the mark converted the first one twice.
        mark.unlink(missing_ok=True)  # (an extension's folder may hold one of before)
        shutil.rmtree(staged, ignore_errors=True)
        # The bytes, not the modes: curves DVC checked out are read-only (0444, hardlinks into
        # its cache), and dvclive appends to the copies: with copy2's modes every extension
        # of the run stopped at its first epoch's end with EACCES, and so did each rerun.
        shutil.copytree(published if extended else plots, staged, copy_function=shutil.copyfile)
        truncate_curves(staged, first_epoch)
        if older:
            curves_in_percent(staged)
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()
        _finish_staged(staged, plots, mark)
    elif first_epoch:
        truncate_curves(plots, first_epoch)
    mark.parent.mkdir(parents=True, exist_ok=True)
    mark.touch()
    live = live_without_repository(folder, resume=first_epoch > 0)
    live.step = first_epoch
    # dvclive's first step starts a thread to post to DVC Studio, Studio or not, that waits on
    # its queue for good (holding the Live): each in-process `cg3d train` (a sweep, a notebook,
    # the test run) left one more thread. Without Studio, dvclive posts nothing anyway.
    # A private attribute (no public switch): a dvclive without it leaves the thread, no error.
    if "data" in getattr(live, "_studio_events_to_skip", ()):
        live.post_data_to_studio = lambda: None
    return live


def live_without_repository(folder: Path, resume: bool):
    """dvclive's `Live` writing into `folder`, as outside any DVC or git repository.

    `Live` opens the DVC repository of the working folder, and in a git repository without DVC
    (a researcher's own checkout) it ran `dvc init` there: `.dvc/` and `.dvcignore` created and
    staged in the user's git index, and in a repository with no commit yet `cg3d train` ended in
    a traceback ("Empty git repo"). The curves need no repository (no experiment saved, no
    dvc.yaml written), and an open one held ~22 descriptors (DVC's caches, git's pack files).
    dvclive has no argument for it: its repository lookup answers "none" while `Live` starts
    (patched for that call only; a dvclive that renamed it still trains, as before this fix)."""
    from unittest import mock

    import dvclive.live

    with mock.patch.object(dvclive.live, "get_dvc_repo", lambda: None, create=True):
        return dvclive.live.Live(str(folder), resume=resume, save_dvc_exp=False, dvcyaml=None)


def close_curves(live, end: bool = True) -> None:
    """End the run's curves (`end`) and close a DVC repository dvclive opened for them anyway
    (`live_without_repository` keeps it from opening one: a dvclive that renamed its lookup):
    its cache databases and git's pack files, ~22 descriptors, stayed open until the garbage
    collector freed the Live, or for good where a traceback kept it (a stopped run)."""
    if end:
        live.end()
    repository = getattr(live, "_dvc_repo", None)  # private: a dvclive without it, no error
    if repository is not None:
        repository.close()


def _finish_staged(staged: Path, plots: Path, mark: Path) -> None:
    """Curves `staged` by `open_curves` made the run's `plots` when their mark was written (a
    kill after it left them staged), else dropped (a kill while they were copied or converted)."""
    if not staged.is_dir():
        return
    if mark.exists():
        shutil.rmtree(plots, ignore_errors=True)
        staged.rename(plots)
    else:
        shutil.rmtree(staged)


def write_epoch(
    out: Path, live, record: dict[str, float], metrics: dict[str, Any], model: CG3D, state: dict
) -> None:
    """An epoch's curve rows, the checkpoint, then the epoch's numbers, into `OUT/.resume/`,
    in that order: the checkpoint commits the epoch (a resume drops the curve rows written after
    it), and the numbers, which claim its epoch, are written only once it exists. The
    checkpoint carries them too, so that a run stopped between the two (a full disk, a kill)
    writes them again on resume (`resumed_metrics`). A failed save is an OSError naming the
    file."""
    for key, value in record.items():
        if key not in TIMING_KEYS:
            live.log_metric(key, value)
    live.next_step()
    folder = resume_folder(out)
    # the same params and data give the same checkpoint bytes: no timing in it
    steady = {key: metrics[key] for key in TRACKED_METRICS if key in metrics}
    save_checkpoint(folder / "last.pt", model, state | {"metrics": steady})
    write_run_info(folder, metrics)


def earlier_metrics(out: Path, training: dict[str, Any] | None) -> dict[str, Any]:
    """The numbers of the checkpoint a run resumes from (older checkpoints: the files'), as
    they were written; none for a fresh run."""
    return (training.get("metrics") or read_metrics(out)) if training else {}


def write_run_info(folder: Path, metrics: dict[str, Any]) -> None:
    write_json(folder / RUN_INFO, metrics)


def resumed_metrics(out: Path, metrics: dict[str, Any], classes: int) -> dict[str, Any]:
    """The numbers of the checkpoint a run resumes from (`earlier_metrics`), accuracies in %
    (`metrics_in_percent`), written again into `OUT/.resume/` (the run stopped after its save,
    before its numbers)."""
    metrics = metrics_in_percent(metrics, classes)
    if metrics and world()[0] == 0:
        resume_folder(out).mkdir(parents=True, exist_ok=True)
        write_run_info(resume_folder(out), metrics)
    return metrics


# `.resume/` being removed by `publish`: the prefix of its new name (.gitignore)
REMOVED_RESUME = ".resume.removed"


def publish(out: Path, about: dict[str, Any]) -> None:
    """Move a finished run from `OUT/.resume/` into OUT: `last.pt` first, then the numbers
    that claim it (`about.json`, what was trained, and `metrics.json`, its `TRACKED_METRICS`;
    `run.json`, untracked), then the curves; then remove the folder. Each file is replaced
    whole; a kill in between leaves the folder, and a rerun publishes again from the
    checkpoint it finds."""
    out, folder = Path(out), resume_folder(out)
    if (folder / "last.pt").is_file():
        os.replace(folder / "last.pt", out / "last.pt")
    if (folder / RUN_INFO).is_file():
        info = loads_json((folder / RUN_INFO).read_bytes())
        # a null in run.json is a NaN (write_json's strict JSON): a number, written null again
        numbers = {key: info[key] for key in TRACKED_METRICS if key in info}
        numbers = {key: math.nan if value is None else value for key, value in numbers.items()}
        write_metrics(out, numbers, about)
        os.replace(folder / RUN_INFO, out / RUN_INFO)
    if (folder / "dvclive" / "plots").is_dir():
        target = out / "dvclive" / "plots"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(folder / "dvclive" / "plots", target)
    # Out of the way in one rename, then removed: a kill part way through removing `.resume/`
    # itself left some of its curves, which the rerun took for an unpublished run and
    # published over the whole ones (`prepare_model` resumes while `.resume/` exists)
    # Under a fresh name: one fixed name that an earlier removal could not clear (a file an NFS
    # client keeps busy, or anything else there) made the rename fail, and every rerun with it
    for earlier in out.glob(f"{REMOVED_RESUME}*"):  # an earlier kill's
        shutil.rmtree(earlier, ignore_errors=True)
    removed = tempfile.mkdtemp(prefix=f"{REMOVED_RESUME}.", dir=out)
    os.replace(folder, removed)
    shutil.rmtree(removed, ignore_errors=True)


def restore(trainer: Trainer, training: dict[str, Any] | None, seed: int) -> tuple[int, int]:
    """(first epoch, step) of the run: a checkpoint's position, or 0 with fresh seeds `seed`.

    Each process resumes its own RNG states and caption cache (`rank_state`), which the
    checkpoint holds for every process (`other_ranks`): the processes draw from RNGs seeded
    `train.seed + rank`, so restoring rank 0's on every rank made a resumed run of several
    processes go other than an unbroken one. A process the checkpoint holds none for (a run
    resumed on more processes; a checkpoint of an older cg3d) starts from fresh seeds and an
    empty cache."""
    if training is None:
        seed_everything(seed)
        return 0, 0
    rank, size = world()
    others = training.get("other_ranks", [])
    if rank == 0 and len(others) + 1 != size:
        console.print(
            f"resuming {size} process(es) from the checkpoint of {len(others) + 1}: those "
            "without a saved random state start from fresh seeds (the run goes on, but not "
            "as an unbroken run of either size would)",
            soft_wrap=True,  # one line in a log, which is no terminal (rich wraps at 80)
        )
    own = training if rank == 0 else (others[rank - 1] if rank <= len(others) else None)
    empty_cache = {"captions": [], "features": torch.zeros(0)}
    trainer.load_state(training | {"text_cache": own["text_cache"] if own else empty_cache})
    if own is None:
        seed_everything(seed)
    else:
        set_rng_state(own["rng"])
    return training["epoch"], training["step"]


def rank_state(trainer: Trainer) -> dict[str, Any]:
    """What each process holds of its own and a resume needs: its RNG states and its caption
    cache (each caches the captions of its own batches)."""
    return {"rng": rng_state(), "text_cache": trainer.texts.state()}


def fit(
    config: TrainConfig,
    out: Path,
    model: CG3D,
    train_batches: Iterable[dict[str, Any]],
    test_batches: Iterable[dict[str, Any]],
    training: dict[str, Any] | None = None,
    data: str = "",
    workers_asked: int | None = None,
) -> dict[str, Any]:
    """Train `model` for `config.epochs`, evaluating and checkpointing every epoch.

    `train_batches` needs `num_batches` (or `len`) and may have `set_epoch(epoch)` and
    `skipped` (samples it could not decode); `training` is the state `prepare_model` read for
    a resumed run; `data` identifies the shards (`data_fingerprint`); `workers_asked`, the
    `train.workers` asked for, is recorded beside (`run_identity`). Only rank 0 writes
    `out/.resume/` each epoch and `out/last.pt`, `out/metrics.json`, `out/about.json`,
    `out/run.json` and the curves `out/dvclive/plots/` at the end (`publish`). Returns the
    last epoch's numbers.
    """
    out = Path(out)
    rank, _ = world()
    model.to(pick_device(config.device)).train()
    total_batches = getattr(train_batches, "num_batches", None) or len(train_batches)
    updates = num_updates(total_batches, config.grad_accum)
    trainer = Trainer(model, config, updates, model.device())
    prototypes, label = held_out_prototypes(model, config.eval_templates)
    identity = run_identity(config, data, workers_asked)  # what the checkpoint says made it
    first_epoch, step = restore(trainer, training, config.seed + rank)
    if rank == 0:
        resume_folder(out).mkdir(parents=True, exist_ok=True)
    earlier, classes = earlier_metrics(out, training), len(model.config["classes"])
    live = open_curves(out, first_epoch, classes) if rank == 0 else None
    metrics = resumed_metrics(out, earlier, classes) if training else {}
    try:
        for epoch in range(first_epoch, config.epochs):
            record, skipped, step = train_epoch(trainer, train_batches, epoch, step, updates)
            held_out = (
                evaluate(model, test_batches, prototypes, trainer.autocast, trainer.images)
                if rank == 0
                else {}
            )
            # only rank 0 writes the checkpoint: it takes every process's own state with it
            ranks = gather_to_first(rank_state(trainer))
            if rank == 0:
                record |= {
                    f"test/{key}": held_out[key] for key in ("point_text_acc", "point_image_acc")
                }
                position = {"epoch": epoch + 1, "step": step}
                extra = {"held_out_samples": held_out["samples"], "held_out_templates": label}
                extra["skipped_samples"] = skipped  # this epoch's, on every process
                metrics = metrics_record(config, model, position, record, **extra)
                state = trainer.state() | position | {"rng": ranks[0]["rng"]}
                if len(ranks) > 1:
                    state["other_ranks"] = ranks[1:]
                write_epoch(out, live, record, metrics, model, state | {"run": identity})
                console.print(
                    f"epoch {epoch + 1}/{config.epochs}: "
                    + ", ".join(f"{key} {value:.4g}" for key, value in record.items())
                )
            barrier()
    except BaseException:  # a failed or stopped run: its curves stay as a kill leaves them
        if live is not None:
            close_curves(live, end=False)
        raise
    if live is not None:
        close_curves(live)
    if rank == 0:
        publish(out, run_about(config, model, label))
    barrier()
    return metrics


def read_metrics(out: Path, unfinished: bool = True) -> dict[str, Any]:
    """The numbers of the run's last epoch (what `fit` returns when no epoch is left to train):
    the `unfinished` run's, else the published `run.json`, else `metrics.json`; a file cut
    short by hand counts as none."""
    for path in (resume_folder(out) / RUN_INFO, Path(out) / RUN_INFO, Path(out) / METRICS_NAME):
        if path.is_file() and (unfinished or path.parent != resume_folder(out)):
            try:
                return loads_json(path.read_bytes())
            except ValueError:  # nested too deep included
                continue
    return {}


def train_stage(
    shards: Path, out: Path, config: TrainConfig, resume: str = "never"
) -> dict[str, Any]:
    """The `train` stage: shards in `shards/{train,test}` → `out/last.pt`, `out/metrics.json`,
    `out/about.json`.

    `resume`: "never", "auto" or "always" (see cg3d.train.resume). The run holds `out`'s
    output lock (the one the data stages take): a second training into the same folder fails
    at once instead of interleaving its curves and checkpoints with the first's. Under torchrun
    rank 0 holds it (the ranks of one run share the folder).
    """
    config.validate()
    with open_run(shards, out):
        return _train_stage(shards, Path(out), config, resume)


# what `cg3d train` would do in another command's folder (`check_owner`, `claim`)
TRAIN_HARM = "would write its checkpoint, metrics.json and about.json there"


_open_runs: set[Path] = set()  # the run folders this process has taken (`open_run`)


@contextmanager
def open_run(shards: str | Path, out: Path) -> Iterator[None]:
    """Take the run folder `out` before anything is written there (`cg3d train` writes
    params.yaml first): lock it (`run_lock`), then, once and under the lock, refuse it when it
    is another command's folder (data/points, an evaluation's numbers: a refused run wrote
    params.yaml into data/points, changing a DVC output) or a local `shards` is no folder, and
    mark it train's (a run killed before .resume/ exists left only params.yaml, which told no
    owner, so another command could take the folder). A refused run leaves nothing behind
    (`output_lock`). Entered again inside (the CLI's, around `train_stage`), it does nothing."""
    from cg3d.formats.shards import is_remote

    taken = Path(out).resolve()
    if taken in _open_runs:
        yield
        return
    with run_lock(out):
        check_owner(Path(out), "train", TRAIN_HARM)
        if not is_remote(shards):  # URLs and `pipe:` stream
            require_folder(shards, "--shards")
        mark(Path(out), "train")
        _open_runs.add(taken)
        try:
            yield
        finally:
            _open_runs.discard(taken)


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """`out`'s output lock (`cg3d.files.output_lock`, the one the data stages take), held by
    rank 0: the ranks of one run share the folder. Its rank is the process group's, or
    torchrun's (RANK) before the group is joined. Held already (by `cg3d train` around the
    stage), it is not taken twice."""
    rank, size = world()
    if (rank if size > 1 else int(os.environ.get("RANK", "0"))) != 0 or holds_lock(out):
        yield
        return
    with output_lock(Path(out)):
        yield


def check_sizes(shards: Path, index: dict[str, Any], config: TrainConfig, processes: int) -> None:
    """Before a model is built, from the shard index: the shards hold at least train.n_points
    points a shape (a cloud is never filled up with repeated points), and the train split at
    least one update's samples (`batch_problem`). One line naming the param and the fix. The
    config's own checks (an encoder's points: `model_config`) come first."""
    # eval's rules for an index's classes: "" or "Box" beside "box" made held-out prototypes
    # of nothing or one text, and the held-out accuracy counted either's shapes for the first;
    # none at all skipped every sample
    classes = index_classes(index, shards)
    model_config(config, classes)
    stored = index.get("params", {}).get("points") or []
    if stored and min(stored) < config.n_points:
        raise UsageError(
            f"train.n_points is {config.n_points}, but the shards in {shards} hold "
            f"{min(stored)} points a shape: set train.n_points to {min(stored)} or less, or "
            f"sample and pack again with sample.points {config.n_points} (points are never "
            "repeated to fill a cloud)"
        )
    samples = sum(index["splits"]["train"]["counts"])
    problem = batch_problem(config, samples, f"the train split of {shards}", processes)
    if problem:
        raise UsageError(problem)


def loader_workers(
    config: TrainConfig, resumed: int | None = None, asked: int | None = None
) -> int:
    """The loader workers a run starts: at most the CPUs this process may use
    (`bound_workers`; the other bound, the shards, is the data's). Two or more deal the batches
    among them, so their count is what trained: the checkpoint records it.

    `resumed`: the count the checkpoint a resume reads records (`recorded_workers`). A job
    requeued on a node with other CPUs (Slurm's requeue, a preemption) keeps it when it is
    within what `train.workers` asks: it is then this very run's count, bound by the CPUs of
    the node it began on, and the run goes on with the same batches (its loader workers share
    fewer CPUs, or leave some idle). Bound again on the new node, `--resume auto` saw "a
    different 'workers'" and trained the whole run again from its first epoch. `asked`: the
    `train.workers` the checkpoint's run asked for (None: not recorded); another ask is
    another run (a `workers: 2` raised to 8 went on with 2, where a fresh run trains with 8)."""
    same_ask = asked is None or asked == config.workers
    if resumed is not None and config.workers > 1 and resumed <= config.workers and same_ask:
        return resumed
    return bound_workers(config.workers) if config.workers > 1 else config.workers


def say_loader_workers(config: TrainConfig, workers: int, resumed: bool) -> TrainConfig:
    """`config` with `workers` loader workers, said when they are not the count asked
    (configs/paper.yaml asks for 8) or, resumed, not this process's CPUs; said by rank 0
    only, which speaks for the run (every rank printing it showed it once per GPU)."""
    cpus = bound_workers(0)
    if world()[0] != 0:
        return dataclasses.replace(config, workers=workers)
    if resumed and config.workers > 1 and bound_workers(config.workers) != workers:
        console.print(
            f"train.workers: resuming with the {workers} loader workers the checkpoint was "
            f"trained with (this process may use {cpus} CPUs), so that the run goes on with "
            "the batches it began with"
        )
    elif workers != config.workers:
        console.print(
            f"train.workers is {config.workers}, but this process may use {workers} CPUs: "
            f"{workers} loader workers, whose batches differ from {config.workers}'s"
        )
    return dataclasses.replace(config, workers=workers)


def _train_stage(shards: Path, out: Path, config: TrainConfig, resume: str) -> dict[str, Any]:
    from cg3d.formats.shards import check_shards, read_index
    from cg3d.train.data import ClipPreprocess, LoaderConfig, check_point_channels, make_loader

    init_distributed()
    rank, size = world()
    index = read_index(shards)
    for split in ("train", "test"):
        check_shards(shards, split)
    check_point_channels(shards, config.point_channels)
    check_sizes(shards, index, config, size)
    data = data_fingerprint(index)
    kept = loader_workers(config, *(recorded_workers(out) if resume != "never" else ()))
    model, training = prepare_model(
        dataclasses.replace(config, workers=kept), list(index["classes"]), out, resume, data
    )
    # not resumed (another param changed): a fresh run's count, as in an empty folder
    workers = kept if training is not None else loader_workers(config)
    asked = config.workers
    config = say_loader_workers(config, workers, training is not None)
    preprocess = ClipPreprocess.of_model(model.clip.visual)
    loader_config = LoaderConfig.of_params(config, preprocess.image_size)
    train_batches = make_loader(shards, "train", loader_config, preprocess, True, rank, size)
    test_batches = make_loader(shards, "test", loader_config, preprocess, False)
    return fit(config, out, model, train_batches, test_batches, training, data, asked)

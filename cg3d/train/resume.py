"""Resuming a run: when it may, and making the curves agree with it.

While a run trains, its per-epoch checkpoint and curves live in `OUT/.resume/` (`resume_folder`),
not in the run's outputs: DVC's run cache refuses a stage with `persist: true` outputs, and a
stage whose outputs are never half-written needs none. `fit` moves the finished checkpoint and
curves into OUT at the end (`cg3d.train.loop.publish`) and removes the folder. A killed run
leaves it, and `--resume auto` continues from it.

`resume` is one of
  never   start from scratch (the default of `cg3d train`);
  always  continue from OUT/.resume/last.pt, else OUT/last.pt (`--resume`); a checkpoint without training state or made
          by another run (config or shards, see `run_identity`) is a UsageError naming the
          difference; no checkpoint yet: start from scratch;
  auto    continue from that checkpoint when it is an unfinished checkpoint of this very run, else
          start from scratch, saying why (what the DVC stage uses: a killed `dvc repro` picks up
          where it stopped; a changed param or data set, or a rerun of a finished run because
          its code changed or `dvc repro -f`, retrains).
A run is identified by its whole training config (`dataclasses.asdict`, never a hand-kept
list) and the shard index it trains on; `MAY_DIFFER` lists the fields that may change.
"""

import csv
import dataclasses
import hashlib
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cg3d import terminal
from cg3d.errors import UsageError
from cg3d.models.checkpoint import model_from_checkpoint, read_checkpoint
from cg3d.models.model import CG3D, build_model, model_config
from cg3d.params import TrainConfig
from cg3d.train.distributed import world
from cg3d.train.optim import init_prompts

console = terminal.console(stderr=True)
RESUME_MODES = ("never", "auto", "always")

# Config fields a resumed run may change, and why: none changes what the run optimises.
MAY_DIFFER = {
    "device": "where the run computes (a GPU run may continue on a CPU), the same to rounding",
    "require_pretrained": "a check made when the model is first built, not a setting",
    "text_cache": "whether caption features are kept between steps, not their values",
    "read_timeout": "how long a remote read waits for data, not what the data is",
}
# With an explicit --resume the epochs may change too: that is how a run is extended (the
# cosine schedule then stretches over the new total from where it stands). `auto` keeps
# them: a stage whose params changed must give what a fresh run gives.
MAY_DIFFER_WHEN_ASKED = {
    "epochs": "extending a run is what --resume is for",
    # Two or more loader workers each deal themselves shards and draw from their own stream,
    # so another count trains on other batches: an epoch still holds every sample once, but
    # `auto` must give what a fresh run with the new count gives (0 and 1 alike: `_alike`).
    "workers": "loader processes: an epoch still holds every sample once (in another order, "
    "with other augmentation draws)",
}


RESUME_FOLDER = ".resume"  # gitignored; outside every DVC output


def resume_folder(out: Path) -> Path:
    """Where a run keeps its unfinished checkpoint and curves (see the module docstring)."""
    return Path(out) / RESUME_FOLDER


def resume_checkpoint(out: Path) -> Path:
    """The checkpoint a resume reads: the unfinished run's, else the finished run's."""
    unfinished = resume_folder(out) / "last.pt"
    return unfinished if unfinished.exists() else Path(out) / "last.pt"


def recorded_workers(out: Path) -> tuple[int | None, int | None]:
    """(the loader workers started, the `train.workers` asked: `WORKERS_ASKED`) of the run
    whose checkpoint a resume reads (`resume_checkpoint`), read without its weights (the
    pickle alone, its tensors memory-mapped); None for what it does not record (a checkpoint
    made before the asked count was, or none: `prepare_model` then reads the file whole and
    says what is wrong)."""
    path = resume_checkpoint(out)
    try:
        if not path.is_file():  # a FIFO would block the read
            return None, None
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        run = payload["training"]["run"]
        workers, asked = run["config"]["workers"], run.get(WORKERS_ASKED)
    except Exception:  # noqa: BLE001 - any failure here is prepare_model's to say
        return None, None
    return _count_or_none(workers), _count_or_none(asked)


def _count_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def data_fingerprint(index: dict[str, Any]) -> str:
    """sha256 of the shard index (which lists every shard's sha256): which data a run saw."""
    return hashlib.sha256(json.dumps(index, sort_keys=True).encode()).hexdigest()


# Beside a run's identity, the `train.workers` asked for, which `config.workers` (the count
# started, bound by the CPUs) is not: a requeue keeps the started count only for the same ask
WORKERS_ASKED = "workers_asked"


def run_identity(config, data: str, workers_asked: int | None = None) -> dict[str, Any]:
    """What a checkpoint records to say which run made it: the whole config and the data
    (and, not compared, the `train.workers` asked for: `WORKERS_ASKED`)."""
    identity = {"config": dataclasses.asdict(config), "data": data}
    return identity if workers_asked is None else identity | {WORKERS_ASKED: workers_asked}


def identity_difference(stored: dict[str, Any], wanted: dict[str, Any], mode: str) -> str:
    """'' when a checkpoint of run `stored` may continue as run `wanted`; else what differs."""
    may_differ = set(MAY_DIFFER) | (set(MAY_DIFFER_WHEN_ASKED) if mode == "always" else set())
    if stored.get("data") != wanted["data"]:
        return "other shards (index.json differs)"
    old, new = stored.get("config", {}), wanted["config"]
    # A param an older cg3d's checkpoint lacks trained as its default does (a new param's
    # default is the behaviour before it): a run started before an upgrade resumes after it
    defaults = dataclasses.asdict(TrainConfig())
    for key in sorted(set(old) | set(new)):
        was = old[key] if key in old else defaults.get(key, ABSENT)
        if key not in may_differ and not _alike(key, was, new.get(key)):
            return _field_difference(key, old, new)
    return ""


ABSENT = "(absent)"  # a setting one side's config lacks (an older cg3d's checkpoint)


def _field_difference(key: str, configs: dict[str, Any], wanted: dict[str, Any]) -> str:
    """How the field `key` of two configs differs; a field one of them lacks (a param newer
    than an older cg3d's checkpoint) is `absent`, not None. A section (`augment`: 17
    settings) names only the settings that differ, `name: old → new`, wrapped at the log width
    (`_filled`): its two whole dicts were one line of 900 characters, the difference somewhere
    inside."""
    old, new = configs.get(key), wanted.get(key)
    if not (isinstance(old, dict) and isinstance(new, dict)):
        was, now = (repr(c[key]) if key in c else "absent" for c in (configs, wanted))
        return f"a different {key!r} ({was}, now {now})"
    changes = [
        f"{name}: {_shown(old, name)} → {_shown(new, name)}"
        for name in [*new, *(name for name in old if name not in new)]  # today's order
        if name not in old or name not in new or old[name] != new[name]
    ]
    settings = _filled(changes, terminal.LOG_WIDTH)
    return f"a different {key!r}:\n{settings}"


def _filled(items: list[str], width: int) -> str:
    """`items` joined by "; " on lines indented by 2, broken between items only (a setting's
    `name: old → new` stays whole), each line within `width` unless one item is longer."""
    lines = [""]
    for item in items:
        joined = f"{lines[-1]}; {item}" if lines[-1] else item
        if len(joined) + 3 <= width or not lines[-1]:  # the indent, and a ";" if broken after
            lines[-1] = joined
        else:
            lines[-1] += ";"
            lines.append(item)
    return "\n".join("  " + line for line in lines)


def _shown(settings: dict[str, Any], name: str) -> str:
    return repr(settings[name]) if name in settings else ABSENT


def _alike(key: str, old: Any, new: Any) -> bool:
    """Whether two values of a config field train alike: equal, or 0 and 1 `workers` (the
    batches made in the training process, or in one loader process: the same batches)."""
    if key == "workers" and isinstance(old, int) and isinstance(new, int):
        return max(old, 1) == max(new, 1)
    return old == new


def prepare_model(
    config, classes: list[str], out: Path, resume: str = "never", data: str = ""
) -> tuple[CG3D, dict[str, Any] | None]:
    """The model to train and, when `resume` allows (see the module docstring), the training
    state of `resume_checkpoint(out)`. `data` is the shard index's fingerprint (`data_fingerprint`).

    A corrupt `out/last.pt` is a UsageError naming it, in every mode but `never`.
    """
    resume = {True: "always", False: "never"}.get(resume, resume)  # the former bool flag
    if resume not in RESUME_MODES:
        raise UsageError(f"resume must be one of {', '.join(RESUME_MODES)}, not {resume!r}")
    wanted_config = model_config(config, classes)
    seed_everything(config.seed)  # the same initial weights on every process
    path = resume_checkpoint(out)
    payload = read_checkpoint(path) if resume != "never" and path.exists() else None
    if payload is not None:
        # `.resume/` is removed last when a run publishes: while it is there (a run stopped
        # after its last epoch's save, or part way through publishing) the run is unfinished
        published = not resume_folder(out).exists()
        problem = _resume_problem(payload, run_identity(config, data), resume, published)
        if problem and resume == "always":
            raise UsageError(f"--resume: {path} {problem}")
        if not problem:
            # training needs CLIP's towers: built here, as for a fresh model, not on first use
            return model_from_checkpoint(payload, path).open_towers(), payload["training"]
        _say(f"not resuming: {path} {problem}; training from scratch")
    elif resume == "always":
        _say(f"--resume: no checkpoint at {path} yet, starting from scratch")
    model = build_model(wanted_config)
    init_prompts(model, config.prompt_init)  # a fresh model only: a resumed one has its own
    return model, None


def _say(line: str) -> None:
    """`line`, said by rank 0 only: every rank reads the one `out` folder and takes the same
    branch of `prepare_model` (nothing is saved before the ranks' first step together), and
    each rank said it, once per GPU."""
    if world()[0] == 0:
        console.print(line)


def _resume_problem(
    payload: dict[str, Any], wanted: dict[str, Any], mode: str, published: bool = True
) -> str:
    """Why the checkpoint `payload` cannot continue as run `wanted` ('' when it can). A run at
    its last epoch that is not `published` (`fit`'s `publish` did not finish: a job's time
    limit struck after the last save) continues with no epoch left: it publishes."""
    if "training" not in payload:
        return "holds no training state"
    stored = payload["training"].get("run")
    if stored is None:
        return "records no run config (written by an older cg3d)"
    difference = identity_difference(stored, wanted, mode)
    if difference:
        return f"was trained with {difference}"
    epoch, epochs = payload["training"]["epoch"], wanted["config"]["epochs"]
    if epoch > epochs:
        return f"is at epoch {epoch}, past epochs: {epochs}"
    if mode == "auto" and epoch == epochs and published:
        # DVC reruns a finished stage only when something else changed (its code, or -f):
        # only an unfinished run is continued
        return f"is a finished run (epoch {epoch} of {epochs})"
    return ""


def truncate_curves(folder: Path, steps: int) -> None:
    """Keep only the rows of steps < `steps` in dvclive's metric files under `folder`.

    A run killed after logging an epoch but before its checkpoint logged one row too many;
    resuming from the checkpoint redoes that epoch, which would log it twice.
    """
    for path in sorted(Path(folder).rglob("*.tsv")):
        rows = _curve_rows(path)
        if not rows:
            continue
        step = rows[0].index("step")
        kept = [rows[0]] + [row for row in rows[1:] if len(row) > step and int(row[step]) < steps]
        if len(kept) < len(rows):
            _write_curve_rows(path, kept)


def _curve_rows(path: Path) -> list[list[str]]:
    with path.open(newline="") as handle:
        return list(csv.reader(handle, delimiter="\t"))


def _write_curve_rows(path: Path, rows: list[list[str]]) -> None:
    tmp = path.with_suffix(".tsv.tmp")
    with tmp.open("w", newline="") as handle:
        csv.writer(handle, delimiter="\t", lineterminator="\n").writerows(rows)
    tmp.replace(path)


# The held-out accuracies and chance were fractions before cg3d gave them in %, as eval's top1
# (t89d). A run resumed from a checkpoint of before is converted: its curves jumped from 0.9 to
# 91 at the resumed epoch, and a run with no epoch left published fractions. Its chance tells
# it (1 / classes, not 100 / classes), where an accuracy cannot (0.9 % or 0.9?).
PERCENT_METRICS = ("test_point_text_acc", "test_point_image_acc", "chance_point_text")
PERCENT_CURVES = ("metrics/test/point_text_acc.tsv", "metrics/test/point_image_acc.tsv")
# In OUT/.resume/: its curves are in % (this cg3d's, or converted): a second resume from the
# same older checkpoint (a kill before the next epoch's) converts nothing twice
CURVES_IN_PERCENT = "curves_in_percent"


def in_fractions(metrics: dict[str, Any], classes: int) -> bool:
    """Whether a run's numbers (`metrics`, of a model of `classes` classes) give its held-out
    accuracies as fractions, as cg3d did before they were in %."""
    chance = metrics.get("chance_point_text")
    return _number(chance) and math.isclose(chance, 1 / classes)


def metrics_in_percent(metrics: dict[str, Any], classes: int) -> dict[str, Any]:
    """`metrics` with its accuracies and chance in % (`in_fractions`: as they are when they are)."""
    if not in_fractions(metrics, classes):
        return metrics
    scaled = {key: 100 * metrics[key] for key in PERCENT_METRICS if _number(metrics.get(key))}
    return metrics | scaled


def curves_in_percent(plots: Path) -> None:
    """The accuracy curves under `plots` (`OUT/.resume/dvclive/plots`), fractions, in %."""
    for name in PERCENT_CURVES:
        path = Path(plots) / name
        rows = _curve_rows(path) if path.is_file() else []
        if rows:
            column = rows[0].index(path.stem)
            for row in rows[1:]:
                if len(row) > column:  # a row cut short by a kill: as truncate_curves found it
                    row[column] = repr(100 * float(row[column]))
            _write_curve_rows(path, rows)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)

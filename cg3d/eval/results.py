"""The files an evaluation writes: headline numbers apart from the details.

`dvc metrics show` prints one row per metrics file with a column per value, so `metrics.json`
holds only the headline numbers, and `about.json` what produced them (dataset, checkpoint, CLIP
weights, protocol...), both written by `cg3d.formats.metrics.write_metrics`. The details sit
beside them, for a person or `dvc plots`:
  per_class.csv   class, shapes, top1 (%; empty for a class without shapes)
  history.csv     one row per epoch (fine-tuning)
  details.json    the rest: definitions (retrieval relevance), gallery sizes, the
                  test-selected epoch of fine-tuning
Each file is written atomically; a run first claims the folder (`cg3d.formats.owner.claim`) and
removes the earlier run's set (`begin_results`), and writes metrics.json last, so a killed run
leaves a folder without metrics.json (unfinished) holding only its own files.
"""

from pathlib import Path

import numpy as np

from cg3d.errors import UsageError
from cg3d.files import write_json
from cg3d.formats.metrics import ABOUT_NAME, METRICS_NAME, write_metrics
from cg3d.formats.owner import check_owner, claim
from cg3d.formats.tables import write_csv

DETAILS_NAME = "details.json"
PER_CLASS_NAME = "per_class.csv"
HISTORY_NAME = "history.csv"


RESULTS_HARM = "would write its metrics.json, about.json and run.json there"


def check_results_out(out: Path, command: str) -> None:
    """Refuse, before any work, an --out that holds another command's output (`check_owner`):
    the results' metrics.json, about.json and run.json are the names a training run and every
    other evaluation write too, so `cg3d eval zeroshot --out runs/train` replaced the run's own
    metrics, and a retrieval into a zero-shot folder left its predictions beside other numbers."""
    check_owner(out, command, RESULTS_HARM)


def check_lost(lost: int, kept: int, max_lost: float, key: str, what: str) -> None:
    """UsageError (after the results are written, with the count) when an evaluation lost
    more than the share `max_lost` of the samples it tried: a shard set that lost 119 of its
    120 test samples reported top-1 over the one left and exited 0, so a pipeline took it for
    the model's score. `key` is the param that allows more; `what` names the set."""
    problem = lost_problem(lost, kept, max_lost, key, what)
    if problem:
        raise UsageError(problem)


def lost_problem(lost: int, kept: int, max_lost: float, key: str, what: str) -> str | None:
    """Why `lost` of `lost + kept` samples is too many (`check_lost`; a benchmark's row says
    it), or None."""
    tried = lost + kept
    if not tried or lost <= max_lost * tried:
        return None
    return (
        f"{what}: {lost} of {tried} samples lost ({100 * lost / tried:.1f}%), more than "
        f"{key} ({max_lost}); the metrics written are over the {kept} left (the warnings "
        f"above say why the others were lost; {key}=1 accepts it)"
    )


def per_class_rows(per_class: dict[str, float | None], confusion: np.ndarray) -> list[dict]:
    """Rows of per_class.csv from classification_metrics' `per_class` and confusion matrix."""
    shapes = np.asarray(confusion).sum(axis=1)
    return [
        {"class": name, "shapes": int(count), "top1": accuracy}
        for (name, accuracy), count in zip(per_class.items(), shapes, strict=True)
    ]


# Every file of one evaluation's set (zeroshot, retrieval, finetune). metrics.json is the mark
# of a finished set: written last, and removed with the rest before a run writes its first.
RESULT_SET = (
    METRICS_NAME,
    ABOUT_NAME,
    "run.json",
    DETAILS_NAME,
    PER_CLASS_NAME,
    HISTORY_NAME,
    "predictions.csv",
    "confusion.png",
    "top_confusions.csv",
    "retrieval_grid.png",
)


def begin_results(out: Path, command: str) -> None:
    """Before an evaluation writes any file into `out`: claim it for `command` (`claim`: a run
    killed before its numbers still owns the folder, so no other command takes it), then
    remove the earlier run's whole set, metrics.json first. A run killed part way leaves a
    folder without metrics.json (unfinished) and only this run's files: an earlier run's
    per_class.csv or details.json stayed beside this run's predictions."""
    out = Path(out)
    claim(out, command, RESULTS_HARM)
    for name in RESULT_SET:
        (out / name).unlink(missing_ok=True)


def write_results(
    out: Path,
    headline: dict,
    about: dict,
    details: dict | None = None,
    per_class: list[dict] | None = None,
    history: list[dict] | None = None,
) -> None:
    """metrics.json (`headline`, numbers only), about.json (`about`: what was measured) and,
    where given, details.json, per_class.csv, history.csv, after `begin_results`, which removed
    the earlier run's whole set: one not given here is absent (a full fine-tuning's history.csv
    never stands under a linear probe's numbers). metrics.json and about.json come last."""
    out = Path(out)
    if details is not None:
        write_json(out / DETAILS_NAME, details)
    for name, rows in ((PER_CLASS_NAME, per_class), (HISTORY_NAME, history)):
        if rows is not None:
            write_rows(out / name, rows)
    write_metrics(out, headline, about)


def write_rows(path: Path, rows: list[dict]) -> None:
    """A CSV with a header from the first row's keys (None, NaN and infinity become an empty
    cell: no number, as `write_json`'s null), by the one CSV writer (`write_csv`)."""
    write_csv(path, rows)

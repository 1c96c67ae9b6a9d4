"""`cg3d benchmark`: every model on every benchmark, one JSON per pair, one table.

    cg3d benchmark --models ulip2-pointbert=ulip2.pt,ours=runs/train/last.pt,openshape-pointbert \\
        --datasets modelnet40,objaverse-lvis,scanobjectnn:obj_only \\
        --roots modelnet40=data/modelnet40,objaverse-lvis=data/lvis,scanobjectnn=data/sonn --out DIR

A model is `NAME=WEIGHTS` (a checkpoint file, a converted model, or a hub folder) or a bare
`NAME`: a model card (`cg3d.models.cards`) whose weights are not here, shown as a "missing
weights" row with its published numbers, as is a WEIGHTS path that does not exist. A dataset is a
`cg3d eval zeroshot --dataset` name, `NAME:VARIANT` for ScanObjectNN's variants; its key in
file names and in the cards' published numbers is NAME or NAME-VARIANT.

For each model and dataset, OUT/<model>__<dataset>.json in clip_benchmark's shape (dataset,
model, pretrained, task, metrics{acc1, acc3, acc5, mean_per_class_recall} as fractions, as
clip_benchmark writes them) plus the protocol, the teacher, the card's published numbers, the
audit, the skip counts and `topped_up_shapes` (shapes with fewer points than fed): the scores
in `metrics`, what was measured around them (eval's metrics.json / about.json split, kept in one
file, clip_benchmark's). OUT/results.md and OUT/results.csv: one row per model and dataset, our
top-1 beside the card's and the difference, in %. A pair whose JSON was written for the same
weights (sha256) and settings is not recomputed: a killed run resumes. A pair that fails (its
teacher's weights not to be had, a broken file) is a row with the reason; the others go on. So is
a pair that lost more than `--max-lost` of its samples (zero-shot's rule, `results.lost_problem`).
With `--text-features DIR`, a pair with a class-feature file DIR/<model>__<dataset>.npy
(`cg3d eval text-features`, or a released one) uses it instead of the teacher's text tower.

Scoring is `cg3d.eval.zeroshot.score_benchmark`, the code `cg3d eval zeroshot` runs.
"""

import dataclasses
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cg3d import terminal
from cg3d.errors import UsageError
from cg3d.eval.metrics import classification_metrics, topk_accuracies
from cg3d.eval.results import lost_problem, write_rows
from cg3d.files import (
    NAME_MAX,
    check_name_allowed,
    loads_json,
    one_file_on_some_disks,
    require_folder,
    shown_name,
    write_json,
)
from cg3d.formats.owner import claim
from cg3d.formats.tables import markdown_text
from cg3d.params import ZeroShotConfig

console = terminal.console(stderr=True)
TASK = "zeroshot_classification"
RESULT_FORMAT = "cg3d-benchmark-1"
MISSING = "missing weights"
RESULTS_CSV, RESULTS_MD = "results.csv", "results.md"  # written last, the table's md after csv


@dataclass(frozen=True)
class ModelEntry:
    name: str  # a card's name, or the user's own label
    weights: Path | None  # None: a bare card name, no weights given


@dataclass(frozen=True)
class DatasetEntry:
    name: str  # a benchmark reader name
    variant: str
    root: Path
    audit: str = ""  # the `cg3d audit` folder of this test set against the training data

    @property
    def key(self) -> str:
        """How files and the cards' published numbers name this dataset."""
        return f"{self.name}-{self.variant}" if self.variant else self.name


def _pairs(text: str, option: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise UsageError(f"{option}: nothing given")
    return items


def parse_models(text: str) -> list[ModelEntry]:
    """`NAME=WEIGHTS,NAME,...` as model entries; a name twice is an error."""
    entries = []
    for item in _pairs(text, "--models"):
        name, _, weights = item.partition("=")
        if not name.strip() or "/" in name or (_ and not weights.strip()):
            raise UsageError(f"--models: {item!r} is not NAME or NAME=WEIGHTS")
        entries.append(ModelEntry(name.strip(), Path(weights.strip()) if weights else None))
    names = [entry.name for entry in entries]
    if len(set(names)) != len(names):
        raise UsageError("--models: a model name is given twice")
    if alike := one_file_on_some_disks(names):
        # their result files NAME__DATASET.json: on macOS, exFAT or a Windows share the second
        # replaced the first (and a resume read one model's result as the other's)
        shown = ascii if len({unicodedata.normalize("NFC", n) for n in alike}) == 1 else repr
        first, second = (shown(name)[:60] for name in alike)
        raise UsageError(
            f"--models: {first} and {second} differ only in case or Unicode form: their "
            "result files would be one file on a case-insensitive disk (macOS, exFAT, a "
            "Windows share); give names that differ otherwise"
        )
    return entries


def _folders(text: str, option: str) -> dict[str, str]:
    folders = {}
    for item in _pairs(text, option) if text else []:
        name, sep, folder = item.partition("=")
        if not sep or not folder.strip():
            raise UsageError(f"{option}: {item!r} is not DATASET=DIR")
        if name.strip() in folders:  # the last one silently won: a benchmark of other files
            raise UsageError(f"{option}: {name.strip()} is given twice")
        folders[name.strip()] = folder.strip()
    return folders


def parse_datasets(datasets: str, roots: str, audits: str = "") -> list[DatasetEntry]:
    """`--datasets a,b:variant` with `--roots a=DIR,b=DIR` (one root per dataset name) and
    optionally `--audits a=DIR` (by dataset name, or NAME-VARIANT)."""
    from cg3d.eval.audit import read_audit
    from cg3d.eval.readers import BENCHMARKS

    if not roots:
        raise UsageError("--roots: nothing given")
    folders = _folders(roots, "--roots")
    audited = _folders(audits, "--audits")
    entries = []
    for item in _pairs(datasets, "--datasets"):
        name, _, variant = item.partition(":")
        if name not in BENCHMARKS:
            raise UsageError(f"--datasets: {name!r} is not one of {', '.join(BENCHMARKS)}")
        if name not in folders:
            raise UsageError(f"--roots: no folder for {name} (give {name}=DIR)")
        entry = DatasetEntry(name, variant, Path(folders[name]))
        audit = audited.get(entry.key, audited.get(name, ""))
        if audit:  # read now: a wrong folder is one line, not a failed row after the scoring
            read_audit(Path(audit), "--audits")
        entries.append(dataclasses.replace(entry, audit=audit))
    if len({entry.key for entry in entries}) != len(entries):
        raise UsageError("--datasets: a dataset is given twice")
    return entries


def result_path(out: Path, model: ModelEntry, dataset: DatasetEntry) -> Path:
    return Path(out) / f"{model.name}__{dataset.key}.json"


def check_result_names(models: list[ModelEntry], datasets: list[DatasetEntry]) -> None:
    """UsageError, before any model is loaded, when a model's NAME makes the name of a result
    file (`result_path`; its text features' `NAME__DATASET.npy` is no longer) longer than a
    file name may be: the write failed "File name too long" after the pair was scored."""
    for model in models:
        for dataset in datasets:
            name = result_path(Path(), model, dataset).name
            if len(os.fsencode(name)) > NAME_MAX:
                raise UsageError(
                    f"--models: the name {shown_name(model.name, 60)} is too long: its result "
                    f"file on {dataset.key} would have a name of {len(os.fsencode(name))} bytes, "
                    f"more than the {NAME_MAX} a file name may hold; give a shorter NAME"
                )


def check_result_files(out: Path, models: list[ModelEntry], datasets: list[DatasetEntry]) -> None:
    """UsageError, before any model is loaded, when the disk of `out` refuses the name of a
    result file (`a:b__modelnet40.json` on an exFAT drive or a Windows share): its write
    failed "Invalid argument" after the pair was scored."""
    for model in models:
        for dataset in datasets:
            check_name_allowed(result_path(out, model, dataset), "--models")


def _card(name: str):
    from cg3d.models.cards import card_names, get_card

    return get_card(name) if name and name in card_names() else None


def _published(card, dataset: DatasetEntry) -> dict[str, float]:
    return dict(card.published.get(dataset.key, {})) if card is not None else {}


def _settings(config: ZeroShotConfig) -> dict[str, Any]:
    """What, besides the weights and protocol, changes a pair's numbers (a resume compares it)."""
    return {"limit": config.limit}


def _finished(path: Path, sha256: str, protocol: str, settings: dict, teacher: dict) -> dict | None:
    """The pair's result when an earlier run wrote it for these weights and settings, naming
    the same `teacher` (one written before the teacher named the CLIP weights loaded, not the
    tag asked for, is recomputed rather than kept with a teacher never loaded)."""
    try:
        result = loads_json(path.read_bytes())
    except (OSError, ValueError):
        return None  # not there, or not ours: recomputed (it is written atomically)
    same = (
        isinstance(result, dict)
        and result.get("format") == RESULT_FORMAT
        and result.get("checkpoint_sha256") == sha256
        and result.get("protocol") == protocol
        and result.get("settings") == settings
        and result.get("teacher") == teacher
    )
    return result if same and _readable(result) else None


def _readable(result: dict) -> bool:
    """Whether a pair's result holds what the table reads from it (`_row`), in range: a file
    edited by hand (no metrics, a top-1 of "abc" or 1e308, NaN) is recomputed, where it was a
    traceback or "inf" in the table."""
    metrics = result.get("metrics")

    def fraction(value: Any, required: bool) -> bool:
        if value is None:
            return not required
        return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1

    def count(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    return (
        isinstance(metrics, dict)
        and fraction(metrics.get("acc1"), True)
        and all(fraction(metrics.get(k), False) for k in ("acc3", "acc5", "mean_per_class_recall"))
        and count(result.get("n_shapes"))
        and count(result.get("skipped_samples"))
    )


def pair_metrics(
    scores: np.ndarray, labels: np.ndarray, classes: list[str]
) -> dict[str, float | None]:
    """clip_benchmark's zero-shot metrics, as fractions: acc1, acc3, acc5, mean_per_class_recall;
    a top-k with k classes or fewer says nothing and is None (`topk_accuracies`)."""
    found = classification_metrics(scores, labels, classes)
    found |= topk_accuracies(scores, labels, len(classes), (3,))
    return {
        "acc1": found["top1"] / 100.0,
        "acc3": found["top3"] / 100.0 if "top3" in found else None,
        "acc5": found["top5"] / 100.0 if "top5" in found else None,
        "mean_per_class_recall": found["class_mean"] / 100.0,
    }


def evaluate_pair(
    model, entry: ModelEntry, dataset: DatasetEntry, config, card, about, text_features=None
) -> dict:
    """Score one model on one dataset and return its result record (clip_benchmark's shape).

    `text_features`: class text features (`read_text_features`) to use instead of the
    teacher's text tower."""
    from cg3d.eval.readers import color_summary, open_benchmark
    from cg3d.eval.zeroshot import (
        audit_summary,
        file_text_features,
        score_benchmark,
    )

    benchmark = open_benchmark(
        dataset.name, dataset.root, dataset.variant, "test", config.allow_pickle
    )
    text = file_text_features(model, benchmark.classes, text_features)
    label = f"{entry.name} on {dataset.key}"  # several models score one dataset
    scores, labels, _ = score_benchmark(model, benchmark, config, text, label)
    channels = int(model.config["point_channels"])
    colour_numbers, colour_about = color_summary(channels, benchmark.color, benchmark.uncolored)
    return {
        "format": RESULT_FORMAT,
        "dataset": dataset.key,
        "model": entry.name,
        "pretrained": str(entry.weights),
        "task": TASK,
        "metrics": pair_metrics(scores, labels, benchmark.classes),
        **about,
        "n_shapes": int(len(labels)),
        "skipped_samples": benchmark.skipped(),
        "refused_outside_root": benchmark.refused(),
        "topped_up_shapes": benchmark.topped_up,
        **colour_about,
        **colour_numbers,
        "audit": audit_summary(config.audit),
        "published": _published(card, dataset),
    }


def _row(entry: ModelEntry, dataset: DatasetEntry, card, status: str, result=None) -> dict:
    """One line of the table: our top-1 beside the published one (in %), and the difference."""
    published = _published(card, dataset).get("acc1")
    ours = result["metrics"]["acc1"] * 100.0 if result else None
    metrics = result["metrics"] if result else {}

    def percent(value):
        return None if value is None else round(100.0 * value, 2)

    return {
        "model": entry.name,
        "dataset": dataset.key,
        "protocol": result["protocol"] if result else (card.protocol if card else ""),
        "status": status,
        "shapes": result["n_shapes"] if result else None,
        "acc1": None if ours is None else round(ours, 2),
        "published_acc1": published,
        "difference": None if ours is None or published is None else round(ours - published, 2),
        "acc5": percent(metrics.get("acc5")),
        "mean_per_class_recall": percent(metrics.get("mean_per_class_recall")),
        "skipped": result["skipped_samples"] if result else None,
    }


def _done_row(
    entry: ModelEntry, dataset: DatasetEntry, card, status: str, result: dict, config
) -> dict:
    """The row of a scored pair; a failed row, without numbers, when it lost more than the
    share `config.max_lost` of its samples (`results.lost_problem`, zero-shot's rule): a table
    showed the top-1 over the one shape of 120 that was read, as the model's score. Its JSON
    is kept: a rerun with a larger --max-lost reads it, not the dataset again."""
    kept, lost = result["n_shapes"], result["skipped_samples"]
    what = f"{entry.name} on {dataset.key}"
    problem = lost_problem(lost, kept, config.max_lost, "--max-lost", what)
    if problem:
        return _row(entry, dataset, card, f"failed: {problem}")
    return _row(entry, dataset, card, status, result)


def _benchmark_model(
    entry: ModelEntry,
    datasets: list[DatasetEntry],
    out: Path,
    config: ZeroShotConfig,
    text_features: Path | None = None,
) -> list[dict]:
    """The rows of one model over every dataset (its weights loaded once, its towers lazily)."""
    from cg3d.formats.textfeatures import features_about, read_text_features
    from cg3d.models.checkpoint import load_model
    from cg3d.models.clip import loaded_weights_name
    from cg3d.models.hub import model_sha256

    card = _card(entry.name)
    if entry.weights is None or not entry.weights.exists():
        status = MISSING if entry.weights is None else f"{MISSING}: no {entry.weights}"
        return [_row(entry, dataset, card, status) for dataset in datasets]
    try:
        sha256 = model_sha256(entry.weights)
        model = load_model(entry.weights)
    except (UsageError, OSError) as error:
        return [_row(entry, dataset, card, f"failed: {error}") for dataset in datasets]
    card = card or _card(model.config.get("card", ""))
    protocol = model.config.get("protocol") or (card.protocol if card else "")
    protocol = protocol or config.protocol
    about = {
        "protocol": protocol,
        "card": card.name if card else "",
        "encoder": model.config["encoder"],
        "teacher": {
            "model": model.config["clip_model"],
            "pretrained": loaded_weights_name(model.config),
        },
        "checkpoint_sha256": sha256,
    }
    rows = []
    for dataset in datasets:
        path = result_path(out, entry, dataset)
        text_file = Path(text_features or "") / f"{entry.name}__{dataset.key}.npy"
        # anything by that name is read, so that a FIFO or a folder is a failed pair saying
        # so (`read_text_features`), not the teacher's features in silence
        text_file = text_file if text_features is not None and os.path.lexists(text_file) else None
        try:  # read once: its record here, its rows for the pair (`evaluate_pair`)
            found = read_text_features(text_file) if text_file else None
            made_by = features_about(found) if found else ""
        except UsageError as error:
            rows.append(_row(entry, dataset, card, f"failed: {error}"))
            continue
        settings = _settings(config) | {"text_features": made_by}
        result = _finished(path, sha256, protocol, settings, about["teacher"])
        if result is not None:
            rows.append(_done_row(entry, dataset, card, "done (earlier run)", result, config))
            continue
        try:
            pair_config = dataclasses.replace(config, audit=dataset.audit, protocol=protocol)
            pair_about = about | {"settings": settings}
            result = evaluate_pair(model, entry, dataset, pair_config, card, pair_about, found)
        except (UsageError, OSError) as error:
            rows.append(_row(entry, dataset, card, f"failed: {error}"))
            continue
        write_json(path, result)
        rows.append(_done_row(entry, dataset, card, "done", result, config))
        console.print(
            f"{entry.name} on {dataset.key}: top-1 {100 * result['metrics']['acc1']:.2f}%",
        )
    return rows


def _cell(value: Any) -> str:
    """A value of results.md, shown as it is on one line (`markdown_text`): a model named
    `a|b` or holding a newline split its row, `<b>` or `_x_` rendered."""
    if value is None or value == "":
        return "–"
    # a number as written (-1.3 starts no list inside a cell); a name as it is
    return str(value) if isinstance(value, int | float) else markdown_text(str(value))


def markdown_table(rows: list[dict]) -> str:
    """results.md: the rows as a Markdown table, accuracies in %."""
    header = [
        "model",
        "dataset",
        "protocol",
        "top-1",
        "published",
        "difference",
        "top-5",
        "class mean",
        "shapes",
        "skipped",
        "status",
    ]
    keys = [
        "model",
        "dataset",
        "protocol",
        "acc1",
        "published_acc1",
        "difference",
        "acc5",
        "mean_per_class_recall",
        "shapes",
        "skipped",
        "status",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[key]) for key in keys) + " |")
    return "\n".join(lines) + "\n"


def run_benchmark(
    models: list[ModelEntry],
    datasets: list[DatasetEntry],
    out: Path,
    config: ZeroShotConfig,
    text_features: Path | None = None,
) -> list[dict]:
    """Every model on every dataset (see the module docstring); writes the JSONs and tables.

    `text_features`: a folder of class-feature files `<model>__<dataset>.npy` (with their .json,
    cg3d.formats.textfeatures), used for the pairs that have one instead of the teacher's tower.
    """
    from cg3d.eval.zeroshot import check_text_cache
    from cg3d.files import atomic_path

    if text_features is not None:
        # a file or a typo was no folder of features: every pair used the teacher's, unsaid
        require_folder(text_features, "--text-features")
    check_text_cache(config.text_cache, "--text-cache")
    out = Path(out)
    claim(out, "benchmark", "would write its pair JSONs, results.md and results.csv there")
    # the tables are the mark of a finished run: an earlier run's would stand for this run's
    # pairs if this one is killed (its pair JSONs stay: they resume it)
    for name in (RESULTS_CSV, RESULTS_MD):
        (out / name).unlink(missing_ok=True)
    rows = []
    for entry in models:
        rows += _benchmark_model(entry, datasets, out, config, text_features)
    write_rows(out / RESULTS_CSV, rows)
    with atomic_path(out / RESULTS_MD) as tmp:
        tmp.write_text(markdown_table(rows), encoding="utf-8")
    return rows


README_START, README_END = "<!-- cards table: start -->", "<!-- cards table: end -->"


def readme_tables() -> str:
    """The README's tables of released models (from the model cards) and of the protocols
    (from the registry). A test checks the README holds exactly this: after adding a card or a
    protocol, paste what `python -m cg3d.eval.benchmark` prints."""
    from cg3d.eval.protocols import get_protocol, protocol_names
    from cg3d.models.cards import card_names, get_card

    lines = [
        "| model | point encoder | input | teacher | protocol | published zero-shot top-1 |",
        "|---|---|---|---|---|---|",
    ]
    for name in card_names():
        card = get_card(name)
        numbers = ", ".join(
            f"{dataset} {values['acc1']:.1f}"
            for dataset, values in sorted(card.published.items())
            if "acc1" in values
        )
        lines.append(
            f"| `{name}` | `{card.encoder}` | {card.n_points} × {card.point_channels}, "
            f"{card.up_axis} up | {card.teacher_model} `{card.teacher_pretrained}` | "
            f"`{card.protocol}` | {numbers or '–'} |"
        )
    lines += ["", "| protocol | what it does |", "|---|---|"]
    lines += [f"| `{name}` | {get_protocol(name).description} |" for name in protocol_names()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(README_START + "\n" + readme_tables() + README_END)

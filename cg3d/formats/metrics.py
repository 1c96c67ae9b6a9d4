"""A run's results on disk: the numbers, and beside them what was measured.

    OUT/metrics.json   numbers only (int or float, or an object of them: retrieval's
                       directions); what `dvc metrics show` and `dvc metrics diff` print,
                       one column per number
    OUT/about.json     what made those numbers: checkpoint, CLIP model and weights, encoder,
                       dataset, variant, split, protocol, templates, points fed, colour
                       handling, the leakage audit, a run's schedule...

`dvc metrics show` prints every key of a metrics file as a column, so a string there (a
checkpoint path, "none (random init)") is a column of its own in every row and a `dvc metrics
diff` between two runs drowns in them: descriptions go to `about.json`, which every result has
beside it. Both are written by `write_metrics`, each file atomically; the old `metrics.json` is
removed, then `about.json` written first, so a `metrics.json` is never newer than the
description of what it measured, nor older. Training writes these
too (`cg3d.train.loop.publish`); an untracked, machine-dependent `run.json` (timings) may sit
beside them.
"""

from pathlib import Path
from typing import Any

from cg3d.files import loads_json, write_json

METRICS_NAME = "metrics.json"
ABOUT_NAME = "about.json"


def number_problem(values: Any, key: str = "") -> str | None:
    """Why `values` is not numbers only (a bool is a description, not a number), or None."""
    if isinstance(values, dict):
        for name, value in values.items():
            problem = number_problem(value, f"{key}.{name}" if key else str(name))
            if problem:
                return problem
        return None
    if isinstance(values, bool) or not isinstance(values, int | float):
        return f"{key} is {values!r}, not a number: it belongs in {ABOUT_NAME}"
    return None  # NaN included: a diverged training run still publishes them (as null)


def write_metrics(out: Path, numbers: dict[str, Any], about: dict[str, Any]) -> None:
    """OUT/about.json (`about`), then OUT/metrics.json (`numbers`); ValueError, before
    anything is written, when `numbers` holds anything but numbers."""
    problem = number_problem(numbers)
    if problem:
        raise ValueError(f"{METRICS_NAME}: {problem}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    # An earlier run's numbers never stay beside this run's description: a kill or a full disk
    # between the two writes left the old metrics.json under the new about.json (another
    # checkpoint's numbers, described as this one's).
    (out / METRICS_NAME).unlink(missing_ok=True)
    write_json(out / ABOUT_NAME, about)
    write_json(out / METRICS_NAME, numbers)


def read_metrics(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(numbers, about) of a result folder; a file that is missing is {}, one that does not
    read as a JSON object (cut short, edited) a ValueError naming it. Folders written before
    the split kept both in `metrics.json`: their descriptions come back among the numbers."""
    return _read_object(Path(folder) / METRICS_NAME), _read_object(Path(folder) / ABOUT_NAME)


def _read_object(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        values = loads_json(path.read_bytes())
    except ValueError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: not a JSON object")
    return values

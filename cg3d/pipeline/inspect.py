"""`cg3d inspect DIR`: what a stage output, a shard set or a training run holds, and what made it.

`inspect_folder(folder)` recognises the folder by its files (docs/formats.md):
  meshes    manifest.parquet          ids, classes and splits of the manifest; failed rows; ok
                                      rows naming an MTL or texture the source lacks
  points    part-*.parquet            ids of the parts; failures.parquet
  render    part-*.tar                ids of the parts (tar headers only); failures.parquet
  captions  captions.parquet          ids; failures.parquet
  shards    index.json                ids and classes of every sample; failures by stage
  run       last.pt, or .resume/      classes, epoch, the run's params, metrics and about.json
  results   metrics.json              an evaluation's numbers and about.json (what was measured:
                                      checkpoint, CLIP weights, protocol, dataset...)
            results.csv, audit.json   a benchmark's table (every model on every dataset), a
                                      leakage audit's counts
  index     retrieval.json, or an     ids, classes and splits of the indexed objects, the model
            index's .plan.json        and sizes; failures.parquet; a killed build as unfinished
  empty     .owner.json alone         nothing yet: a command's mark and none of its files (a
                                      folder emptied with `rm out/*`); with some of them (and no
                                      metrics.json), results, unfinished: a run killed part way
            .plan.json alone          nothing yet: a chunked stage (or pack) killed before its
                                      first part
and says what made it: the params it records (a chunked stage's `.plan.json`, the shard
index's `params`, a run's `params.yaml`), the DVC stage of `dvc.lock` whose output it is, and
the code (cg3d's version and the git commit of the working tree, when there is one).
Classes of points, renders and captions come from a `meshes` folder beside the folder
(`--meshes` to name another).
"""

import os
import subprocess
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cg3d.errors import UsageError
from cg3d.files import (
    loads_json,
    require_folder,
    why_a_broken_link,
    why_not_a_file,
    why_not_a_folder,
)
from cg3d.formats.failures import FAILURES_NAME, read_failures
from cg3d.formats.owner import OWNER_MARK, PLAN_NAME, holds_an_output, read_plan
from cg3d.formats.retrieval import FORMAT as INDEX_FORMAT
from cg3d.formats.retrieval import INDEX_ONLY, RETRIEVAL_NAME, retrieval_file

# An evaluation's, a `cg3d benchmark`'s, a `cg3d audit`'s
RESULT_FILES = ("metrics.json", "results.csv", "audit.json")
KINDS = ("meshes", "points", "render", "captions", "shards", "run", "results", "index", "empty")


@dataclass
class Inspection:
    """What `inspect_folder` found: `ids` in the folder's order, `classes` and `splits`
    (counts; empty when the folder does not say), `failures` (id, stage, reason) and
    `made_by` (params, DVC stage, code)."""

    folder: Path
    kind: str
    ids: list[str] = field(default_factory=list)
    classes: Counter = field(default_factory=Counter)
    splits: Counter = field(default_factory=Counter)
    failures: list[dict[str, str]] = field(default_factory=list)
    # a meshes folder's ok objects read without a file they name (id, missing: the names)
    lacking: list[dict[str, str]] = field(default_factory=list)
    made_by: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def headline(self) -> str:
        """The first line `cg3d inspect` prints: the kind and what it counts. A results folder
        holds numbers, not ids ("0 ids" would say something was lost)."""
        if self.kind == "results":
            held = []
            if "metrics" in self.details:  # a metrics.json, if only an empty one
                held.append(f"{count_numbers(self.details['metrics'])} numbers in metrics.json")
            if "benchmark" in self.details:
                held.append(f"{len(self.details['benchmark'])} benchmark pairs in results.csv")
            if "audit" in self.details:
                leaked = self.details["audit"].get("leaked_test_shapes")
                held.append(f"an audit ({leaked} test shapes with a training twin)")
            if "unfinished" in self.details:
                held.append(f"unfinished: {self.details['unfinished']}")
            return f"{self.folder}: results, {', '.join(held)}"
        if self.kind == "empty":
            return f"{self.folder}: empty, nothing yet ({self.details['mark']})"
        noun = "classes" if self.kind == "run" else "ids"
        return f"{self.folder}: {self.kind}, {len(self.ids)} {noun}, {len(self.failures)} failures"

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (`dataclasses.asdict` would turn a Counter's items into
        keys)."""
        return {
            "folder": str(self.folder),
            "kind": self.kind,
            "ids": self.ids,
            "classes": dict(self.classes),
            "splits": dict(self.splits),
            "failures": self.failures,
            "lacking": self.lacking,
            "made_by": self.made_by,
            "details": self.details,
        }


def folder_kind(folder: Path) -> str:
    """Which of `KINDS` the folder is, from its files; UsageError naming it otherwise, or
    naming the file it keys on when that is no file (`_holds`)."""
    require_folder(folder)
    if _holds(folder, "manifest.parquet"):
        return "meshes"
    if _holds(folder, "index.json"):
        # an index built before its index.json became retrieval.json is an index still
        return "index" if _holds(folder, INDEX_ONLY) else "shards"
    if _holds(folder, "last.pt") or _holds(folder, ".resume", why_not_a_folder):
        return "run"
    if _holds(folder, "captions.parquet"):
        return "captions"
    if _holds(folder, RETRIEVAL_NAME) or _index_plan(folder) is not None:
        return "index"  # before points: an index's parts are part-*.parquet too
    if any(folder.glob("part-*.parquet")):
        return "points"
    if any(folder.glob("part-*.tar")):
        return "render"
    if any(_holds(folder, name) for name in RESULT_FILES):
        return "results"
    if _holds(folder, PLAN_NAME):
        # a stage killed before its first part: its plan alone, read now so that a damaged one
        # is the line, as beside parts (before, "not a stage output")
        read_json(folder / PLAN_NAME)
        return "empty"
    if _holds(folder, OWNER_MARK):
        # the mark and some of the command's files: a run killed before its numbers
        # (`read_results` says unfinished); the mark alone (`rm out/*` keeps it) claims nothing
        return "results" if holds_an_output(folder) else "empty"
    raise UsageError(
        f"{folder} is not a stage output, a shard set, a training run or results (none of "
        "manifest.parquet, part-*.parquet, part-*.tar, captions.parquet, index.json, last.pt, "
        f"{', '.join(RESULT_FILES)}, {RETRIEVAL_NAME})"
    )


def inspect_folder(folder: Path, meshes: Path | None = None) -> Inspection:
    """What `folder` holds (see the module docstring)."""
    from cg3d.formats.manifest import manifest_path

    folder = Path(folder)
    kind = folder_kind(folder)
    found = Inspection(folder, kind)
    if kind in ("points", "render", "captions") and _holds(folder, PLAN_NAME):
        # before the parts: a damaged plan is the line (an index build's, killed, has index
        # parts that `read_points` would call damaged points)
        found.made_by["params"] = read_json(folder / PLAN_NAME)
    READERS[kind](found)
    if kind in ("points", "render", "captions"):
        if meshes is not None:  # named by the user: a typo, a file or a FIFO is said, not skipped
            try:
                manifest_path(meshes)
            except UsageError as error:
                raise UsageError(f"--meshes: {error}") from None
        classes_from_manifest(found, meshes if meshes is not None else folder.parent / "meshes")
        found.failures = read_failures(folder / FAILURES_NAME)
    found.made_by |= dvc_stage(folder) | code_version(folder)
    return found


def _holds(folder: Path, name: str, why_not: Callable[[Path], str] = why_not_a_file) -> bool:
    """Whether `folder` holds `name`, a file (or, with `why_not_a_folder`, a folder) `inspect`
    tells a folder's kind by. One there that is not (a FIFO, a socket, a folder in place of a
    killed index build's .plan.json, of last.pt) is the line, naming it: read as absent, the
    folder was another kind ("rerun `cg3d sample`" for an index's parts, results for a run)."""
    path = folder / name
    if not os.path.lexists(path):
        return False
    why = why_not(path)
    if why == "does not exist":  # yet a name is there: a link that leads nowhere (`ls` lists it)
        why = why_a_broken_link(path) or why
    if why:
        raise UsageError(f"{path} {why}")
    return True


def _index_plan(folder: Path) -> dict | None:
    """The plan of a `cg3d index` build in `folder` (its .plan.json, read as every stage reads
    its own: `read_plan`), or None."""
    if not _holds(folder, PLAN_NAME):
        return None
    plan = read_plan(folder / PLAN_NAME).get("plan")
    return plan if isinstance(plan, dict) and plan.get("format") == INDEX_FORMAT else None


def read_json(path: Path) -> Any:
    """A JSON file a stage wrote beside its output; one that does not parse (cut short, edited,
    nested 100,000 deep) is one line naming it, not a traceback."""
    try:
        return loads_json(path.read_bytes())
    except ValueError as error:
        raise UsageError(f"{path}: not valid JSON ({error})") from None


def read_meshes(found: Inspection) -> None:
    from cg3d.formats.manifest import OK, failure_reason, manifest_rows

    columns = ["id", "class_name", "split", "status", "error", "missing"]
    for row in manifest_rows(found.folder, columns):
        if row["status"] == OK:
            found.ids.append(row["id"])
            found.classes[row["class_name"]] += 1
            found.splits[row["split"]] += 1
            if row["missing"]:
                found.lacking.append({"id": row["id"], "missing": ", ".join(row["missing"])})
        else:
            reason = failure_reason(row)
            found.failures.append({"id": row["id"], "stage": "meshes", "reason": reason})


def read_points(found: Inspection) -> None:
    from cg3d.formats.points import part_ids, points_parts

    once_each(found, [i for part in points_parts(found.folder) for i in part_ids(part)])


def once_each(found: Inspection, ids: list[str]) -> None:
    """`ids` into `found`, each once: an id in two parts (a part copied by hand) is one
    object, not two, and is named under "ids listed twice" (a stage writes each id once)."""
    found.ids = list(dict.fromkeys(ids))
    if len(found.ids) < len(ids):
        seen: set[str] = set()
        twice = sorted({i for i in ids if i in seen or seen.add(i)})
        found.details["ids listed twice"] = (
            f"{len(twice)} ({', '.join(twice[:3])}{', …' * (len(twice) > 3)})"
        )


def read_renders(found: Inspection) -> None:
    from cg3d.formats.renders import part_ids, render_parts
    from cg3d.formats.tar import FormatError

    try:
        once_each(found, [i for part in render_parts(found.folder) for i in part_ids(part)])
    except FormatError as error:  # it names the part and the stage that rebuilds it
        raise UsageError(str(error)) from None


def read_captions(found: Inspection) -> None:
    from cg3d.formats.captions import CaptionsFile

    captions = CaptionsFile(found.folder)
    found.ids = [i for group in range(captions.groups) for i in captions.group_ids(group)]


def read_shards(found: Inspection) -> None:
    from cg3d.formats.shards import Skipped, raw_samples, read_index

    index = read_index(found.folder)
    classes = index["classes"]
    for split, entry in index["splits"].items():
        skipped = Skipped()
        order = range(len(entry["shards"]))
        # the keys and classes only: points and views are seeked over (a shard set of
        # Objaverse is hundreds of GB, which were all read to count the samples)
        samples = raw_samples(
            found.folder, entry["shards"], entry["counts"], order, skipped, read_data=_is_cls
        )
        for sample in samples:
            if "__error__" in sample:  # a member named `../x.points.npy`: no id, a failure
                reason = f"damaged sample: {sample['__error__']}"
                found.failures.append(
                    {"id": sample["__key__"], "stage": "shards", "reason": reason}
                )
                continue
            found.ids.append(sample["__key__"])
            found.classes[class_of(sample, classes)] += 1
            found.splits[split] += 1
        # Samples index.json counts that no shard gave (a shard cut short or unreadable): no
        # id to name, but a failure each reason, as eval and `cg3d index` count them.
        for reason, count in sorted(skipped.reasons.items()):
            found.failures.append(
                {
                    "id": f"({split} split)",
                    "stage": "shards",
                    "reason": f"{count} not read: {reason}",
                }
            )
    found.failures += read_failures(found.folder / FAILURES_NAME)
    found.details["failures by stage"] = index.get("failures", {}).get("by_stage", {})
    found.made_by["params"] = index.get("params", {})


def _is_cls(member: str) -> bool:
    """Whether a shard member is a sample's class label (`<id>.cls`)."""
    return member.endswith(".cls")


def read_results(found: Inspection) -> None:
    """The numbers and what was measured or trained (`cg3d.formats.metrics`), and the
    untracked timings (run.json); a file cut short or edited is one line naming it."""
    from cg3d.formats.metrics import read_metrics

    try:
        numbers, about = read_metrics(found.folder)
    except ValueError as error:
        raise UsageError(str(error)) from None
    found.details |= {key: v for key, v in (("metrics", numbers), ("about", about)) if v}
    if (found.folder / "metrics.json").is_file():
        found.details.setdefault("metrics", {})
    unfinished = unfinished_results(found.folder)
    if unfinished:
        found.details["unfinished"] = unfinished
    if (found.folder / "run.json").is_file():
        found.details["this machine"] = read_json(found.folder / "run.json")
    if (found.folder / "results.csv").is_file():
        found.details["benchmark"] = benchmark_pairs(found.folder / "results.csv")
    if (found.folder / "audit.json").is_file():
        from cg3d.eval.audit import read_audit  # the reader evals take --audit with

        try:
            summary = read_audit(found.folder)
        except UsageError as error:  # it names the eval's option: here the folder was given
            raise UsageError(str(error).removeprefix("--audit: ")) from None
        found.details["audit"] = {k: v for k, v in summary.items() if k != "folder"}


# The file a results command writes last, the mark of its finished set (one earlier file, or
# none, is what a run killed part way leaves; they are removed before it writes its first)
FINISHED_BY = {"benchmark": "results.csv", "audit": "audit.json"}


def unfinished_results(folder: Path) -> str | None:
    """Why the results in `folder` are not a finished set, or None: the command that claimed
    it (`cg3d.formats.owner.claim`) did not write the file it writes last."""
    command = read_plan(Path(folder) / OWNER_MARK).get("command")
    if not isinstance(command, str):
        return None
    last = FINISHED_BY.get(command, "metrics.json")
    if (Path(folder) / last).is_file():
        return None
    return f"no {last}: a `cg3d {command}` run was killed or failed before it; rerun it"


def benchmark_pairs(path: Path) -> list[str]:
    """results.csv of `cg3d benchmark`: a line per model and dataset, its top-1 and status; a
    file that is not such a table is one line naming it."""
    import csv

    from cg3d.formats.tables import read_csv

    try:
        names, rows = read_csv(path)
        columns = set(names)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UsageError(f"{path}: not a readable CSV ({error})") from None
    if not {"model", "dataset", "acc1", "status"} <= columns:
        raise UsageError(f"{path}: not a `cg3d benchmark` table (no model, dataset, acc1, status)")
    return [
        f"{row['model']} on {row['dataset']}: top-1 {row['acc1'] or '–'} %, {row['status']}"
        for row in rows
    ]


def count_numbers(value: Any) -> int:
    """How many numbers `value` (a metrics.json document) holds, nested objects and lists
    included (retrieval's metrics are grouped per direction); true/false and text are not."""
    if isinstance(value, dict):
        return sum(count_numbers(v) for v in value.values())
    if isinstance(value, list):
        return sum(count_numbers(v) for v in value)
    return int(isinstance(value, int | float) and not isinstance(value, bool))


def class_of(sample: dict, classes: list[str]) -> str:
    """A sample's class name; a label index.json does not name is counted as such (`cg3d
    verify` says which sample), not an IndexError."""
    label = sample.get("cls", b"").strip()
    if label.isdigit() and int(label) < len(classes):
        return classes[int(label)]
    return f"(label {label.decode('ascii', 'replace')[:20]!r}: not in index.json's classes)"


def read_run(found: Inspection) -> None:
    from cg3d.models.checkpoint import read_checkpoint

    folder = found.folder
    read_results(found)
    checkpoint = folder / "last.pt"
    unfinished = folder / ".resume" / "last.pt"
    if unfinished.is_file():
        training = read_checkpoint(unfinished).get("training", {})
        found.details["unfinished"] = (
            f"{unfinished} at epoch {training.get('epoch')} (`cg3d train --resume auto` continues it)"
        )
    if checkpoint.is_file():
        payload = read_checkpoint(checkpoint)
        config = payload.get("config", {})
        found.ids = list(config.get("classes", []))  # a run's "ids": the classes it knows
        found.details["model"] = {
            key: config.get(key) for key in ("encoder", "clip_model", "clip_weights", "n_points")
        }
        found.details["epoch"] = payload.get("training", {}).get("epoch")
    if (folder / "params.yaml").is_file():
        from cg3d.params import read_yaml  # the bounded reading of every params file

        found.made_by["params"] = read_yaml(folder / "params.yaml")


def read_retrieval_index(found: Inspection) -> None:
    """A `cg3d index` folder, through the checks `cg3d search` opens it with (a damaged file is
    the same one line); a build killed before retrieval.json is said to be unfinished."""
    from cg3d.formats.retrieval import read_arrays, read_retrieval

    folder = found.folder
    plan = _index_plan(folder)
    if plan is not None:
        found.made_by["params"] = {k: plan.get(k) for k in ("shards", "thumbnail", "model")}
    if retrieval_file(folder) is None:
        planned = plan.get("plan") if plan else None
        of = f" of {len(planned)}" if isinstance(planned, list) else ""
        parts = len(list(folder.glob("part-*.parquet")))
        found.details["unfinished"] = (
            f"{parts}{of} parts built, no {RETRIEVAL_NAME} (a killed build: the same "
            "`cg3d index` command finishes it)"
        )
        return
    manifest = read_retrieval(folder)
    objects, _, _, _ = read_arrays(folder, manifest)
    for row in objects.select(["id", "class_name", "split"]).to_pylist():
        found.ids.append(row["id"])
        found.classes[row["class_name"]] += 1
        found.splits[row["split"]] += 1
    found.failures = read_failures(folder / FAILURES_NAME)
    model = manifest["model"]
    # the checkpoint as `cg3d search` finds it: recorded relative to the index folder within
    # one project (so that a moved project's index names its own), shown from here
    checkpoint = str(folder / model["checkpoint"]) if model.get("checkpoint") else None
    found.details |= {
        "model": {"checkpoint": checkpoint, "checkpoint_sha256": model.get("checkpoint_sha256")},
        "embeddings": f"{manifest['objects']} objects, {manifest['views']} views, "
        f"{manifest['dim']}-d",
        "shards": manifest["shards"],
        # an index built before `lost` was recorded (its failures.parquet lists them)
        "samples lost": manifest.get("lost", "not recorded (an index of an older cg3d)"),
    }


def read_empty(found: Inspection) -> None:
    """A folder that holds only an owner mark (`cg3d.formats.owner`): a command claimed it and
    was killed before its first file, or its files were removed since; it claims nothing. Or
    one that holds only a stage's .plan.json: the stage was killed before its first part; its
    plan claims the folder (`folder_owner`)."""
    if _holds(found.folder, PLAN_NAME):
        plan = read_plan(found.folder / PLAN_NAME).get("plan")
        stage = plan.get("stage") if isinstance(plan, dict) else None
        by = f"a `cg3d {stage}` run" if isinstance(stage, str) else "a run"
        found.details["mark"] = (
            f"only the {PLAN_NAME} of {by}: none of its parts, killed before its first or "
            "removed since; the same command goes on from it"
        )
        return
    command = read_plan(found.folder / OWNER_MARK).get("command")
    by = f"a `cg3d {command}` run" if isinstance(command, str) else "a run"
    found.details["mark"] = (
        f"only the {OWNER_MARK} mark of {by}: none of its files, killed before its first or "
        "removed since; any command may write here"
    )


READERS = {
    "meshes": read_meshes,
    "points": read_points,
    "render": read_renders,
    "captions": read_captions,
    "shards": read_shards,
    "run": read_run,
    "results": read_results,
    "index": read_retrieval_index,
    "empty": read_empty,
}


def classes_from_manifest(found: Inspection, meshes: Path) -> None:
    """Per-class and per-split counts of `found.ids` from the manifest in `meshes`, if any."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from cg3d.formats.manifest import manifest_tables

    if not (meshes / "manifest.parquet").is_file():
        return
    # One join in Arrow: a dict of every manifest row (as before) was some 450 bytes an object
    # in Python, 360 MB for Objaverse's 800k, on top of the ids.
    manifest = pa.concat_tables(manifest_tables(meshes, ["id", "class_name", "split"]))
    ids = pa.table({"id": pa.array(found.ids, pa.string())})
    matched = ids.join(manifest, "id", join_type="inner")
    for column, counter in (("class_name", found.classes), ("split", found.splits)):
        counts = pc.value_counts(matched[column]).to_pylist()
        for entry in sorted(counts, key=lambda entry: entry["values"]):
            counter[entry["values"]] += entry["counts"]
    found.details["classes from"] = str(meshes)


def dvc_stage(folder: Path) -> dict[str, Any]:
    """The `dvc.lock` stage (of the nearest project above `folder`) with `folder`, or a file
    in it, among its outputs: its name, command and params."""
    folder = folder.resolve()
    for root in (folder, *folder.parents):
        lock = root / "dvc.lock"
        if lock.is_file():
            break
    else:
        return {}
    from cg3d.params import parse_yaml

    try:  # the params reading: a few-hundred-byte alias bomb expanded to billions of values
        # when its params were printed (DVC writes no aliases), so aliases are refused there
        lock_tree = parse_yaml(lock.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return {}
    stages = lock_tree.get("stages") if isinstance(lock_tree, dict) else None
    relative = folder.relative_to(root).as_posix()
    for name, stage in (stages if isinstance(stages, dict) else {}).items():
        if not isinstance(stage, dict):  # not DVC's: nothing to say about it
            continue
        outs = [out.get("path", "") for out in _listed(stage.get("outs")) if isinstance(out, dict)]
        if any(out == relative or f"{out}".startswith(f"{relative}/") for out in outs):
            files = stage.get("params")
            params = {
                k: v
                for values in (files.values() if isinstance(files, dict) else ())
                if isinstance(values, dict)
                for k, v in values.items()
            }
            return {"dvc stage": name, "command": stage.get("cmd", ""), "dvc params": params}
    return {}


def _listed(value: Any) -> list:
    return value if isinstance(value, list) else []


def code_version(folder: Path) -> dict[str, str]:
    """cg3d's version, and the commit of the git working tree around `folder` (with "+
    changes" when it has uncommitted ones): the code that made the folder, if it was made
    here and since."""
    import cg3d

    found = {"cg3d": cg3d.__version__}
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "describe", "--always", "--dirty=+changes"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return found
    if commit.returncode == 0 and commit.stdout.strip():
        found["git"] = commit.stdout.strip()
    return found

"""Whose folder is this: the one rule the stages, `cg3d index`, `cg3d show`, `cg3d train` and
the evaluations (zeroshot, retrieval, finetune) apply to their --out before any work.

A folder belongs to the command that wrote it, told by what it holds:
  .plan.json         the stage it records (every chunked stage and `cg3d index` write one)
  .owner.json        the command that claimed it (`claim`): the evaluations, finetune, train,
                     audit and benchmark write it before their first file, so a run killed
                     before its numbers still has an owner; alone in a folder (`rm out/*`
                     keeps it) it claims nothing
  OWNER_FILES        a file only one command writes at the top of its folder
  OWNER_SETS         files one command writes together (its common names alone prove nothing)
  RESULT_FILES       beside metrics.json, the files only one results command writes
A command writing into another's folder replaced or mixed its files: `cg3d index --out
data/points` removed the sampled points, `cg3d eval zeroshot --out runs/train` replaced the
training run's metrics.json, `cg3d show --out data/render` changed a DVC output's hash.
It lives under formats/ (it reads files only) so that the stages, the evaluations, the trainer
and `cg3d show` all ask it, and none of them imports another.
"""

import os
from pathlib import Path

from cg3d.errors import UsageError
from cg3d.files import LOCK_NAME, is_nfs_leftover, loads_json, why_not_a_file, write_json
from cg3d.formats.metrics import METRICS_NAME

PLAN_NAME = ".plan.json"
OWNER_MARK = ".owner.json"

# Files that tell a folder's command where OWNER_FILES would name another: a retrieval index
# built before its index.json became retrieval.json (formats.retrieval.LEGACY_NAME, still read).
BEFORE_RENAMES = [(("index.json", "view_object.npy"), "index")]
# A file only one command writes at the top of its --out, for a folder whose .plan.json does not
# name its stage (or that has none); in this order.
OWNER_FILES = {
    "manifest.parquet": "meshes",
    "captions.parquet": "caption",
    "index.json": "pack",
    "retrieval.json": "index",
    "last.pt": "train",
    ".resume": "train",  # a run killed before it published last.pt (cg3d.train.resume)
}
# Files a command writes together, all present: the folders these wrote before they marked
# theirs (`claim`), or that they never mark. One of these names alone is no proof (a user's
# results.csv, `cg3d classify --out exp/results.csv`), and it claimed the folder.
OWNER_SETS = [
    (("config.json", "model.safetensors"), "export"),  # a hub folder (cg3d.models.hub)
    (("regions.json", "heatmap.ply"), "scene-query"),  # written together (cg3d.eval.scene)
    (("audit.json", "pairs.csv"), "audit"),
    (("results.csv", "results.md"), "benchmark"),
]
# Beside metrics.json (an evaluation writes no file of its own name before it): (the files, all
# present, the command), first match wins. Finetune writes history.csv (full) or details.json
# and per_class.csv (linear probe); retrieval details.json alone.
RESULT_FILES = [
    (("predictions.csv",), "eval zeroshot"),
    (("history.csv",), "finetune"),
    (("details.json", "per_class.csv"), "finetune"),
    (("details.json",), "eval retrieval"),
]


def read_plan(plan_file: Path) -> dict:
    """What a previous run left in `plan_file` (`.plan.json`): {"digest", "plan"}, or {} when
    there is none, it does not parse (cut short), or it is no file: a FIFO there is never
    opened (reading one waits for a writer for ever, and `cg3d sample` hung so)."""
    if why_not_a_file(plan_file):
        return {}
    try:
        recorded = loads_json(Path(plan_file).read_bytes())
    except (OSError, ValueError):
        return {}
    return recorded if isinstance(recorded, dict) else {}


def folder_owner(folder: Path) -> str | None:
    """The command whose output `folder` holds (as `cg3d` spells it: "sample", "eval
    zeroshot"); None for a new folder or one no command of ours wrote."""
    folder = Path(folder)
    plan = read_plan(folder / PLAN_NAME).get("plan")  # none, or cut short: the files say
    if isinstance(plan, dict) and isinstance(plan.get("stage"), str):
        return plan["stage"]
    marked = read_plan(folder / OWNER_MARK).get("command")  # read as a plan: a FIFO is no mark
    if isinstance(marked, str) and holds_an_output(folder):
        return marked
    for names, command in BEFORE_RENAMES:
        if all((folder / name).exists() for name in names):
            return command
    for name, command in OWNER_FILES.items():
        if (folder / name).exists():
            return command
    for names, command in OWNER_SETS:
        if all((folder / name).exists() for name in names):
            return command
    if not (folder / METRICS_NAME).exists():
        return None
    for names, command in RESULT_FILES:
        if all((folder / name).exists() for name in names):
            return command
    return None


def holds_an_output(folder: Path) -> bool:
    """Whether `folder` holds anything besides its owner mark and lock files (and the files an
    NFS client keeps of removed ones): `rm out/*` keeps the hidden mark, and a folder that shows
    empty has nothing of its claimant's to protect."""
    try:
        with os.scandir(folder) as entries:
            return any(
                entry.name != OWNER_MARK
                and not entry.name.endswith(LOCK_NAME)
                and not is_nfs_leftover(entry.name)  # a removed file an NFS client keeps
                for entry in entries
            )
    except OSError:  # unlisted: trust the mark
        return True


def check_owner(folder: Path, command: str, harm: str = "would replace its files") -> None:
    """Refuse `--out` `folder`, before anything is written, when it holds the output of a
    command other than `command`; `harm` says what `command` would do there."""
    owner = folder_owner(folder)
    if owner is not None and owner != command:
        raise UsageError(
            f"--out: {folder} holds the output of `cg3d {owner}`; `cg3d {command}` {harm}: "
            "choose another folder"
        )


def claim(folder: Path, command: str, harm: str = "would replace its files") -> None:
    """`check_owner`, then mark `folder` as `command`'s (OWNER_MARK) before its first file: an
    evaluation killed before its metrics.json left a folder that told no owner, which any
    other command then took. Called where the command starts writing (never by a run refused
    before that: a refused run leaves no folder claimed)."""
    check_owner(folder, command, harm)
    mark(folder, command)


def mark(folder: Path, command: str) -> None:
    """Mark `folder` as `command`'s (OWNER_MARK), its owner checked already (`claim`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if read_plan(folder / OWNER_MARK).get("command") != command:  # a rerun finds its own
        write_json(folder / OWNER_MARK, {"command": command})

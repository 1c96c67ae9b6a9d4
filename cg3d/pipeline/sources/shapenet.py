"""ShapeNetCore v2: `ROOT/<synsetId>/<modelId>/models/model_normalized.obj`, Y-up.

Class names come from `ROOT/taxonomy.json`: the first of the comma-separated names, with
CG3D's renames (display→monitor, vessel→ship, ashcan→trashcan); the other names are kept
as `synonyms`. classes.json is the ShapeNet55 list in CG3D's order when every synset is in it.

Split, from `--split-file` when given:
- a `.csv` like ShapeNet's all.csv (columns id, synsetId, subSynsetId, modelId, split;
  `val` rows join train), or
- a folder with Point-BERT's ShapeNet-55 lists `train.txt` and `test.txt`
  (lines `<synsetId>-<modelId>.npy`).
Models in neither list are left out (counted in the stage's output). Without a split file,
a seeded, disjoint split per class.
"""

import csv
import io
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

from cg3d.errors import UsageError
from cg3d.files import read_small_text, shown_name, sorted_entries, why_not_a_file, why_unlisted
from cg3d.formats.manifest import MeshRecord
from cg3d.pipeline.ids import object_id
from cg3d.pipeline.sources import (
    Listing,
    MeshesConfig,
    cap_per_class,
    read_json,
    root_file,
    seeded_split,
    stored_path,
)
from cg3d.protocol import class_names, shapenet_renames

MODEL_FILE = Path("models") / "model_normalized.obj"


def listing(config: MeshesConfig, out_dir: Path) -> Listing:
    root = Path(config.root)
    taxonomy = read_taxonomy(root)
    synsets = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name in taxonomy)
    if not synsets:
        raise UsageError(f"--root: no synset folders named in {root / 'taxonomy.json'}")
    splits = read_split_file(Path(config.split_file)) if config.split_file else None
    found = sorted({taxonomy[synset][0] for synset in synsets})
    benchmark = class_names("shapenet55")
    classes = benchmark if set(found) <= set(benchmark) else found
    return Listing(classes, _records(root, synsets, taxonomy, splits, config, out_dir))


def _records(
    root, synsets, taxonomy, splits, config: MeshesConfig, out_dir: Path
) -> Iterator[MeshRecord]:
    for synset in synsets:
        class_name, synonyms = taxonomy[synset]
        entries = sorted_entries(root / synset)
        if entries is None:  # its models are no rows: the folder is one
            yield MeshRecord(
                id=object_id("shapenet", synset),
                source="shapenet",
                path=(root / synset).as_posix(),
                class_name=class_name,
                synonyms=synonyms,
                split="train",
                status="unreadable",
                error=why_unlisted(root / synset),
            )
            continue
        models = [entry.name for entry in entries if entry.is_dir()]
        if splits is not None:
            models = [m for m in models if (synset, m) in splits]
        models = cap_per_class(models, config.per_class, config.seed)
        split_of = (
            seeded_split(models, config.seed, config.test_fraction)
            if splits is None
            else {m: splits[(synset, m)] for m in models}
        )
        for model in models:
            relpath = f"{synset}/{model}/{MODEL_FILE.as_posix()}"
            lacking = _lacking_model_file(root / synset / model)
            yield MeshRecord(
                id=object_id("shapenet", relpath),
                source="shapenet",
                path=stored_path(root / relpath, out_dir),
                class_name=class_name,
                synonyms=synonyms,
                split=split_of[model],
                up_axis="y",
                status="missing_file" if lacking else "ok",
                error=lacking,
            )


def _lacking_model_file(model_dir: Path) -> str:
    """ "" when the model folder holds `models/model_normalized.obj` (or a link there: the
    meshes stage checks where it leads), else why not, for its failure row: ShapeNetCore v1's
    layout (`<id>/model.obj`, not read here), or a model folder without its mesh (a partial
    download). Its row said "cannot open the file: No such file or directory"."""
    if os.path.lexists(model_dir / MODEL_FILE):
        return ""
    if os.path.lexists(model_dir / "model.obj"):
        return (
            "ShapeNetCore v1's layout (<model>/model.obj): this source reads ShapeNetCore v2 "
            "(<model>/models/model_normalized.obj); download v2, or use the folder source"
        )
    return f"the model folder holds no {MODEL_FILE.as_posix()} (an unfinished download?)"


def read_taxonomy(root: Path) -> dict[str, tuple[str, list[str]]]:
    """{synsetId: (class name, synonyms)} from ShapeNet's taxonomy.json."""
    path = root / "taxonomy.json"
    if not path.is_file():
        raise UsageError(f"--root: no taxonomy.json in {root} (ShapeNetCore v2 layout)")
    entries = read_json(root_file(root, "taxonomy.json", "--root"), "--root")
    renames = shapenet_renames()
    taxonomy = {}
    for number, entry in enumerate(entries if isinstance(entries, list) else [entries]):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("synsetId"), str)
            and isinstance(entry.get("name"), str)
            and entry["name"].strip(", ")
        ):
            raise UsageError(
                f"--root: {path}: entry {number} is not an object with string synsetId and name"
            )
        names = [n.strip() for n in entry["name"].split(",") if n.strip()]
        taxonomy[entry["synsetId"]] = (renames.get(names[0], names[0]), names[1:])
    return taxonomy


def read_split_file(path: Path) -> dict[tuple[str, str], str]:
    """{(synsetId, modelId): "train" | "test"} from all.csv or Point-BERT's train/test lists;
    a file that is not text, or a list line that is no `<synsetId>-<modelId>`, is one line
    naming it (they were UnicodeDecodeError and ValueError tracebacks). Each file is read
    whole, at most files.MAX_LIST_BYTES (ShapeNet's all.csv is 3.6 MB)."""
    try:
        return _read_split_file(path)
    except (OSError, csv.Error) as error:  # not UTF-8: `read_small_text`'s one line
        raise UsageError(f"--split-file: {path} does not read ({error})") from None


def _read_split_file(path: Path) -> dict[tuple[str, str], str]:
    lists = [path / "train.txt", path / "test.txt"] if path.is_dir() else [path]
    for file in lists:  # a FIFO, a folder, a link loop: named as what it is, never opened
        why = why_not_a_file(file)
        if why and not (path.is_dir() and why == "does not exist"):
            raise UsageError(f"--split-file: {shown_name(file)} {why}")
    if path.is_file() and path.suffix.lower() == ".csv":
        return _read_csv(path)
    if path.is_dir() and all(file.is_file() for file in lists):
        splits: dict[tuple[str, str], str] = {}
        twice: dict[tuple[str, str], str] = {}
        for split, file in zip(("train", "test"), lists, strict=True):
            for line in read_small_text(file, "--split-file").split():
                synset, dash, model = line.removesuffix(".npy").partition("-")
                if not (dash and synset and model):
                    raise UsageError(
                        f"--split-file: {file} lists {shown_name(line)}, not <synsetId>-<modelId>"
                    )
                if splits.get((synset, model), split) != split:
                    twice.setdefault((synset, model), f"{shown_name(line)} (in both lists)")
                splits[(synset, model)] = split  # test.txt is read last: test wins
        _warn_twice(path, twice)
        return splits
    raise UsageError(
        f"--split-file: {path} is neither a .csv nor a folder with train.txt and test.txt"
    )


def _warn_twice(path: Path, twice: dict[tuple[str, str], str]) -> None:
    """One warning for the models a split file gives both splits (`twice`: how each is named)."""
    if twice:
        first = next(iter(twice.values()))
        warnings.warn(
            f"--split-file: {path} gives {len(twice)} model(s) both a train and a test split, "
            f"first {first}: each is taken as test, so no test model is trained on",
            stacklevel=2,
        )


def _read_csv(path: Path) -> dict[tuple[str, str], str]:
    """all.csv's splits. ShapeNet writes synsetId as a number (2691156 for 02691156): padded.
    A model listed twice (all.csv lists one per sub-synset) with one split is kept once (val
    and train are one here); with both train and test it is test, and a warning names it (the
    last row won silently: a test model could train). The file is ShapeNet's, not the user's
    to fix, so it is not refused."""
    text = read_small_text(path, "--split-file")
    rows = csv.DictReader(io.StringIO(text, newline=""))
    missing = {"synsetId", "modelId", "split"} - set(rows.fieldnames or [])
    if missing:
        raise UsageError(f"--split-file: {path} lacks the columns {', '.join(sorted(missing))}")
    splits: dict[tuple[str, str], str] = {}
    lines: dict[tuple[str, str], int] = {}
    twice: dict[tuple[str, str], str] = {}
    for row in rows:
        # val joins train; anything else (a typo, a short row's None) was train unsaid
        if row["split"] not in ("train", "val", "test") or not row["modelId"]:
            raise UsageError(
                f"--split-file: {path} line {rows.line_num}: split "
                f"{shown_name(str(row['split']))} of model {shown_name(str(row['modelId']))}"
                " is not train, val or test"
            )
        key = (row["synsetId"].zfill(8), row["modelId"])
        split = "test" if row["split"] == "test" else "train"
        if splits.get(key, split) != split:
            twice.setdefault(
                key,
                f"model {shown_name(key[1])} of synset {shown_name(key[0])} (lines "
                f"{lines[key]} and {rows.line_num})",
            )
            split = "test"
        splits[key] = split
        lines.setdefault(key, rows.line_num)
    _warn_twice(path, twice)
    return splits

"""The meshes stage: list a source's objects, validate every mesh, write the manifest.

A source (one module each) turns its on-disk layout into a class list and a stream of
`MeshRecord`s (path, class, split, up axis), without opening the meshes. This module then
validates every mesh in parallel chunks (load, check, content hash), marks content duplicates
(a file with the same sha256 as an ok object earlier in id order) and writes
`manifest.parquet`, `classes.json` and `failures.parquet` into the output folder.

Memory stays flat at any size: the listing is streamed to listing parts on disk, each chunk
is validated by one worker into its own part file (resume after a kill redoes only missing
parts), and the parts are merged by an external sort (`merge.py`): the manifest and failures
are written row group by row group, never held whole.
"""

import functools
import hashlib
import importlib
import json
import os
import random
import stat
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cg3d.errors import UsageError
from cg3d.files import (
    ARCHIVES,
    NOT_UTF8_NAME,
    PATH_MAX,
    OutsideRoot,
    annex_link,
    atomic_path,
    check_utf8_path,
    file_sha256,
    inside_root,
    loads_json,
    locks_out_dir,
    packed_format,
    path_too_long,
    read_small_file,
    real_path,
    remove_tree,
    require_folder,
    resolved_root,
    shown_name,
    sorted_entries,
    stopping_error,
    utf8_name,
    why_unlisted,
)
from cg3d.formats.manifest import OK, SCHEMA, MeshRecord, stored_spelling, write_classes
from cg3d.formats.owner import check_owner
from cg3d.geometry.meshio import (
    BYTES_ONLY_SUFFIXES,
    MeshError,
    check_geometry,
    validate_file,
)
from cg3d.params import MeshesConfig
from cg3d.pipeline.chunks import ChunkedOutput, bound_workers, run_chunks
from cg3d.pipeline.sources.merge import merge_parts
from cg3d.protocol import class_name_problem, same_text_classes

STAGE = "meshes"
WORK_DIR = ".validate"  # listing and validation parts while the stage runs; removed at the end


@dataclass
class Listing:
    """What a source found: the ordered class list and its objects (not yet validated)."""

    classes: list[str]
    records: Iterable[MeshRecord]


@dataclass
class Summary:
    objects: int
    counts: dict[str, int]  # by status, "ok" included
    classes: list[str]
    chunks_run: int
    chunks_total: int
    excluded: int = 0  # objects `meshes.exclude` named, left out before any work
    lacking: int = 0  # ok objects whose mesh names a file the source lacks (`missing`)


def source_listing(name: str) -> Callable[[MeshesConfig, Path], Listing]:
    """The registry: each name of `cg3d.params.SOURCES` is a module of this package with
    `listing(config, out_dir) -> Listing`."""
    return importlib.import_module(f"{__name__}.{name}").listing


def check_config(config: MeshesConfig) -> None:
    """One-line UsageErrors naming the option, before any work."""
    if config.source != "synthetic":
        root = Path(config.root) if config.root else None
        missing = f"meshes.root: the {config.source} source needs an existing folder, got "
        if root is None:
            raise UsageError(f"{missing}{config.root!r}")
        check_utf8_path(root, "meshes.root")  # the manifest holds it: a surrogate ended the stage
        if archive := archive_root(root):
            raise UsageError(archive)
        require_folder(root, "meshes.root", missing=f"{missing}{config.root!r}")
        if not any(root.iterdir()):
            raise UsageError(f"meshes.root: the folder {root} is empty")


# How to extract a dataset downloaded as an archive (`files.packed_format`): a compressed
# stream given as a root is a compressed tar (ModelNet40.tar.gz).
EXTRACT = {
    "zip": "unzip {path} -d FOLDER",
    "7-Zip": "7z x {path} -oFOLDER",
    "RAR": "unrar x {path} FOLDER/",
    "tar": "tar -xf {path} -C FOLDER",
    "gzip": "tar -xzf {path} -C FOLDER",
    "xz": "tar -xJf {path} -C FOLDER",
    "zstd": "tar --zstd -xf {path} -C FOLDER",
    "bzip2": "tar -xjf {path} -C FOLDER",
}


def archive_root(root: Path) -> str:
    """The one-line error for a root that is an archive file, "" otherwise. An archive is not
    read in place: every later stage (sampling, Blender's importers, classify) opens a mesh
    and the MTL and textures it names by path, so its members would have to be written out
    somewhere anyway (and a zip's member names are paths from whoever made it: `../`,
    absolute, duplicates); the user extracts it once, with a tool they trust, into a folder
    they choose."""
    try:
        if not stat.S_ISREG(os.stat(root).st_mode):  # a FIFO is never opened: it would block
            return ""  # a folder, or what `require_folder` names
        with open(root, "rb") as handle:
            head = handle.read(512)
    except (OSError, ValueError):
        return ""  # what `require_folder` names
    packed = packed_format(head)
    if not packed:
        return ""
    what = f"a {packed} archive" if packed in ARCHIVES else f"a {packed}-compressed archive"
    return (
        f"meshes.root: {shown_name(root)} is {what}, not a folder: extract it "
        f"(`{EXTRACT[packed].format(path=root)}`) and point meshes.root at the folder (an "
        "archive is not read in place: every stage opens meshes and their textures by path)"
    )


@locks_out_dir
def build_manifest(config: MeshesConfig, out_dir: Path) -> Summary:
    """Run the meshes stage into `out_dir` (manifest.parquet, classes.json, failures.parquet)."""
    check_config(config)
    if config.source != "synthetic":  # the edge: every later check uses this one spelling
        config = replace(config, root=str(resolved_root(config.root)))
    out_dir = Path(out_dir)
    exclude = read_exclude(config.exclude) if config.exclude else None  # before any work
    check_owner(out_dir, STAGE)
    out_dir.mkdir(parents=True, exist_ok=True)
    listing = source_listing(config.source)(config, out_dir)
    for name in listing.classes:
        problem = class_name_problem(name)
        if problem:
            raise UsageError(
                f"--root: the class name {utf8_name(name)!r} (a folder's, or from "
                f"--annotations) {problem}; rename it"
            )
    if alike := same_text_classes(listing.classes):
        first, second = (_told_apart(name, alike) for name in alike)
        raise UsageError(
            f"--root: the class names {first} and {second} (folders', or from --annotations) "
            "are one text to CLIP (they differ in case, Unicode normalisation, underscores or "
            "spaces only), so nothing would tell the classes apart; merge or rename them"
        )
    excluded = Excluded(exclude, out_dir) if exclude is not None else None
    records = excluded.filter(listing.records) if excluded else listing.records
    work = out_dir / WORK_DIR
    work.mkdir(exist_ok=True)
    records = with_utf8_names(with_up_axis(records, config.up_axis))
    listing_parts, digest = _write_listing(records, work, config.chunk_size)
    output = ChunkedOutput(
        work / "parts",
        ".parquet",
        STAGE,
        fingerprint={"config": _plan_params(config), "listing": digest},
        code=__name__,
    )
    output.prepare()
    pending = output.pending(len(listing_parts))
    sizes = [pq.read_metadata(listing_parts[i]).num_rows for i in pending]
    root = str(source_root(config, out_dir))
    jobs = [(str(out_dir), root, str(listing_parts[i]), str(output.part(i))) for i in pending]
    workers = bound_workers(config.workers, config.executor)
    run_chunks(
        validate_chunk,
        jobs,
        sizes,
        workers=workers,
        executor=config.executor,
        description="validating meshes",
    )
    parts = [output.part(i) for i in range(len(listing_parts))]
    counts, lacking = merge_parts(parts, work / "merge", out_dir, STAGE, Path(root))
    write_classes(listing.classes, out_dir)
    remove_tree(work)
    return Summary(
        sum(counts.values()),
        dict(counts),
        listing.classes,
        len(pending),
        len(listing_parts),
        excluded.count if excluded else 0,
        lacking,
    )


def _plan_params(config: MeshesConfig) -> dict:
    """The params that change the rows (how many processes run them does not)."""
    return {k: v for k, v in asdict(config).items() if k not in ("workers", "executor")}


def _write_listing(
    records: Iterable[MeshRecord], work: Path, chunk_size: int
) -> tuple[list[Path], str]:
    """Stream records into listing parts of `chunk_size` rows; return the parts and a digest."""
    for stale in work.glob("listing-*.parquet"):
        stale.unlink()
    digest = hashlib.sha256()
    parts: list[Path] = []
    batch: list[dict] = []

    def flush() -> None:
        part = work / f"listing-{len(parts):05d}.parquet"
        with atomic_path(part) as tmp:  # a full disk: an error naming the part, no half file
            pq.write_table(pa.Table.from_pylist(batch, schema=SCHEMA), tmp)
        parts.append(part)
        batch.clear()

    for record in records:
        row = dict(vars(record))  # flat fields: no deep copy (asdict's) needed
        digest.update(json.dumps(row, sort_keys=True).encode())
        batch.append(row)
        if len(batch) == chunk_size:
            flush()
    if batch:
        flush()
    return parts, digest.hexdigest()


def source_root(config: MeshesConfig, out_dir: Path) -> Path:
    """The folder a source may read, resolved: its root (the synthetic source: the output
    folder). Workers get it absolute, whatever their current folder."""
    return resolved_root(config.root if config.source != "synthetic" else out_dir)


def with_up_axis(records: Iterable[MeshRecord], up_axis: str) -> Iterator[MeshRecord]:
    """The records with `meshes.up_axis` when it is set (not "auto"), the source's otherwise."""
    for record in records:
        if up_axis != "auto":
            record.up_axis = up_axis
        yield record


def _told_apart(name: str, names: tuple[str, str]) -> str:
    """`name` quoted so that it reads apart from the other of `names`: as ASCII escapes when
    the two print alike (`café` in NFC and in NFD: 'caf\\xe9' and 'cafe\\u0301')."""
    first, second = (unicodedata.normalize("NFC", n) for n in names)
    return ascii(utf8_name(name)) if first == second else repr(utf8_name(name))


def with_utf8_names(records: Iterable[MeshRecord]) -> Iterator[MeshRecord]:
    """The records; one whose path is not UTF-8 (a file named `b\\xffd.obj`) becomes a failure
    row holding the name escaped, since no later stage could name or open it from the
    manifest (before: a UnicodeEncodeError traceback ended the stage)."""
    for record in records:
        record.name = utf8_name(record.name)  # a free-text name: kept, escaped
        path = utf8_name(record.path)
        if path != record.path:
            record.path, record.status = path, "unreadable"
            record.error = NOT_UTF8_NAME
        yield record


def validate_chunk(out_dir: str, root: str, listing_part: str, part: str) -> int:
    """Check every mesh of one listing part (`meshio.validate_file`: inside `root`, what it
    references too, a surface); write the rows with status and hash. A file outside the root is
    never read, not even hashed."""
    rows = pq.read_table(listing_part).to_pylist()
    # (sha256, suffix) of the files whose geometry passed in this chunk: a copy of the same
    # bytes in a format read from its own bytes only passes too, unread (duplicates are common;
    # failures are not remembered, their reasons may name the file).
    passed: set[tuple[str, str]] = set()
    for row in rows:
        if row["status"] != OK:  # the source already knew (e.g. unsupported format)
            continue
        path = Path(row["path"])
        path = path if path.is_absolute() else Path(out_dir) / path
        try:
            # refuses what lies outside unread; an MTL or texture it lacks is only listed
            row["missing"], row["references_sha256"] = validate_file(
                path, Path(root), geometry=False
            )
            content = (file_sha256(path), path.suffix.lower())
            if content not in passed:
                check_geometry(path)
                if content[1] in BYTES_ONLY_SUFFIXES:
                    passed.add(content)
            row["sha256"] = content[0]
        except (MeshError, OSError) as error:
            if stop := stopping_error(error):  # a network disk's: the file may be whole
                raise stop from None
            if isinstance(error, MeshError):
                row["status"], row["error"] = error.kind, error.reason
            else:
                row["status"], row["error"] = "unreadable", f"cannot read the file: {error}"
    with atomic_path(Path(part)) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), tmp)
    return len(rows)


def read_exclude(path: str) -> set[str]:
    """The names in a `meshes.exclude` file: one a line (blank lines and `#` comments skipped),
    or a JSON list, or objaverse's `{category: [uids]}` (every uid of every category)."""
    file = Path(path)
    if not file.is_file():
        what = "not a regular file" if file.exists() else "no such file"  # a folder, a FIFO
        raise UsageError(f"meshes.exclude: {what}: {path}")
    if file.suffix.lower() == ".json":
        data = read_json(file, "meshes.exclude")
        values = data.values() if isinstance(data, dict) else [data]
        names = {str(n) for v in values for n in (v if isinstance(v, list) else [v])}
    else:
        text = read_small_file(file, "meshes.exclude").decode("utf-8", errors="replace")
        names = {line.split("#", 1)[0].strip() for line in text.splitlines()}
    return {name for name in names if name}


# The sources whose listed `ok` rows hold `stored_path`'s form: every link followed, relative to
# the resolved output folder (`../` where one repository holds both) or absolute. Resolving
# such a path again gives it back, so `Excluded` skips that resolve (an lstat per component
# and a stat, for every listed file).
# Synthetic is not among them: its paths are spelled by the generator, not by `stored_path`.
STORED_PATH_SOURCES = frozenset({"folder", "objaverse", "modelnet", "shapenet"})


class Excluded:
    """Drops the records whose id, path (as stored, absolute, or with every link followed),
    file stem (an Objaverse uid, a ModelNet name) or ShapeNet model folder is among `names`,
    counting them."""

    def __init__(self, names: set[str], out_dir: Path):
        self.names, self.out_dir, self.count = names, Path(out_dir), 0
        self.real_out_dir = _resolved(out_dir)  # once, as `stored_path` does

    def keys(self, record: MeshRecord) -> set[str]:
        path = Path(record.path)
        absolute = path if path.is_absolute() else self.out_dir / path
        if record.status == OK and record.source in STORED_PATH_SOURCES:
            # the stored path is resolved already (`/` keeps an absolute one as it is), and a
            # `../` in it was taken between resolved folders: lexical normalising is exact
            real = Path(os.path.normpath(self.real_out_dir / path))
        else:  # a failure row keeps a link's own path (its target is the reason): resolve it
            real = real_path(absolute)
        keys = {record.id, record.path, str(absolute), str(real), path.stem}
        if path.stem in ("model", "model_normalized"):  # ShapeNet v1 / v2: the model's folder
            keys.add(path.parent.parent.name if path.parent.name == "models" else path.parent.name)
        return keys

    def filter(self, records: Iterable[MeshRecord]) -> Iterator[MeshRecord]:
        for record in records:
            if self.keys(record) & self.names:
                self.count += 1
            else:
                yield record


# Helpers the sources share.


def form_free_order(key: str) -> tuple[str, str]:
    """A sort key alike for a name in NFC and in NFD (macOS's HFS+ lists `café` as NFD, and so
    does a zip made on a Mac when unpacked here): sorted by code points, the two forms took
    other places among their neighbours, and the same files and seed split otherwise."""
    return unicodedata.normalize("NFC", key), key


def seeded_split(keys: list[str], seed: int, test_fraction: float) -> dict[str, str]:
    """A disjoint train/test split of one class's objects, the same for the same seed (and
    for the same names in another Unicode form: `form_free_order`)."""
    order = sorted(keys, key=form_free_order)
    random.Random(f"{seed}").shuffle(order)
    n_test = round(len(order) * test_fraction)
    if test_fraction > 0 and len(order) > 1:
        n_test = max(1, n_test)  # every class has a test object when it has two or more
    return {key: ("test" if i < n_test else "train") for i, key in enumerate(order)}


def cap_per_class(keys: list[str], per_class: int, seed: int) -> list[str]:
    """At most `per_class` of `keys` (a seeded choice), all when per_class is 0; sorted (the
    same choice for the same names in another Unicode form: `form_free_order`)."""
    keys = sorted(keys, key=form_free_order)
    if per_class and len(keys) > per_class:
        keys = sorted(random.Random(f"cap-{seed}").sample(keys, per_class), key=form_free_order)
    return keys


def root_file(root: Path, name: str, option: str) -> Path:
    """The file `name` of a source's own layout under `root` (taxonomy.json, annotations.json),
    if it lies inside `root` after symlinks are followed: a UsageError naming `option`
    otherwise, as for every other file a source reads."""
    try:
        return inside_root(root, Path(root) / name)
    except OutsideRoot as error:
        raise UsageError(f"{option}: {error}") from None


def read_json(path: Path, option: str, unique_keys: bool = False) -> Any:
    """A JSON file the user points at; one that does not parse is a UsageError naming `option`.
    With `unique_keys`, so is an object that names a key twice (json keeps the last silently)."""

    def pairs(items: list[tuple[str, Any]]) -> dict:
        seen: set[str] = set()
        for key, _ in items:
            if key in seen:
                raise UsageError(f"{option}: {path} names the key {key!r} twice in one object")
            seen.add(key)
        return dict(items)

    data = read_small_file(path, option)
    try:
        return loads_json(data.decode("utf-8"), object_pairs_hook=pairs if unique_keys else None)
    except ValueError as error:  # not UTF-8, not JSON, or `[[[[…` 100,000 deep
        raise UsageError(f"{option}: {path} is not valid JSON: {error}") from None


@functools.lru_cache(maxsize=8)
def _resolved(folder: Path) -> Path:
    """A folder resolved once per run, not once per file (it is asked per object)."""
    return Path(folder).resolve()


def stored_path(path: Path, out_dir: Path, resolved: bool = False) -> str:
    """How the manifest spells a listed file: symlinks followed, relative to the output folder
    when the file lies under it or both lie in one repository (`stored_spelling`: a project
    cloned elsewhere gives the same manifest), else absolute.

    `resolved`: the caller knows that resolving `path` would return it unchanged: an absolute
    path from a resolved root (`resolved_root`, once per listing) through folders the walk
    entered without following a link (`iter_sorted_entries`), to an entry that is no symlink
    itself (`DirEntry.is_symlink`, free). Then it is not resolved again: that costs an lstat
    per path component and a stat, for every file (some 8 system calls each, millions for
    Objaverse). Confinement does not rest on it: the validation resolves every path before it
    opens the file (`meshio.validate_file`)."""
    if not resolved:
        path = real_path(path)  # a symlink loop stays itself (Path.resolve raised): a row later
    return stored_spelling(path, _resolved(out_dir))


def match_protocol_names(folders: Iterable[str]) -> tuple[dict[str, str], list[str]] | None:
    """Map folder names onto a benchmark list (ModelNet10 first, then ModelNet40), if all match.

    Returns ({folder: benchmark name}, benchmark class list in benchmark order) or None.
    Folder names use underscores where the benchmark lists use spaces (night_stand).
    """
    from cg3d.protocol import class_names

    folders = list(folders)
    for dataset in ("modelnet10", "modelnet40"):
        names = class_names(dataset)
        by_key = {name.replace(" ", "_").lower(): name for name in names}
        mapping = {f: by_key.get(f.replace(" ", "_").lower()) for f in folders}
        if folders and all(mapping.values()):
            return mapping, names
    return None


def iter_sorted_entries(folder: Path) -> Iterator[os.DirEntry]:
    """The entries under `folder` that are not folders, recursively, in a stable order (by path
    components, as sorting the paths gives), hidden ones skipped; walked one folder at a time,
    never all listed at once. Entries, not paths: `not_a_file` asks an entry whether it is a
    file at no cost (the type `os.scandir` read with the name), where a path costs a `stat`
    per file (800k of them for Objaverse).

    Symlinked folders are not entered (a link to a folder inside the root would list its files
    twice, one outside would list files the stage may not read) but yielded, as are broken
    links and other entries that are not files: a source gives each a failure row
    (`not_a_file`), so that nothing under the root is left out silently. So is a folder that
    cannot be listed (no permission, or nested past PATH_MAX)."""
    yield from _walk(Path(folder), None)


def _walk(folder: Path, entry: os.DirEntry | None) -> Iterator[os.DirEntry]:
    """`iter_sorted_entries` of `folder`, whose own entry is `entry` (None: the walk's top)."""
    entries = sorted_entries(folder)
    if entries is None:  # yielded, for its row (`why_unlisted`)
        entry = entry if entry is not None else _entry_of(folder)
        if entry is not None:  # else the top was removed since its parent was listed
            yield entry
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if entry.is_dir(follow_symlinks=False) and not path_too_long(entry.path):
            yield from _walk(Path(entry.path), entry)
        else:  # a folder whose path is too long to list is yielded: a row (`not_a_file`)
            yield entry


def _entry_of(folder: Path) -> os.DirEntry | None:
    """The entry of `folder` in its parent's listing; None when it is not there (removed) or
    the parent cannot be listed (next() raised StopIteration in the walk: a RuntimeError)."""
    try:
        with os.scandir(folder.parent) as listing:
            return next((entry for entry in listing if entry.name == folder.name), None)
    except OSError:
        return None


def is_file(entry: os.DirEntry | Path) -> bool:
    """Whether `entry` is a file, symlinks followed; False for a symlink loop, of which
    `DirEntry.is_file` raises ELOOP (a link to itself in a source ended the meshes stage)."""
    try:
        return entry.is_file()
    except OSError:
        return False


def _unentered_folder(entry: os.DirEntry | Path) -> bool:
    """Whether `entry` is a folder, not a link to one (Python 3.11's Path.is_dir takes no
    `follow_symlinks`: a root-level link given as a Path raised TypeError)."""
    if isinstance(entry, os.DirEntry):
        return entry.is_dir(follow_symlinks=False)
    try:
        return stat.S_ISDIR(os.lstat(entry).st_mode)
    except OSError:  # a path too long to ask about
        return False


def not_a_file(entry: os.DirEntry | Path, root: Path) -> MeshError | None:
    """Why an entry `iter_sorted_entries` yielded (or a path) is no object (its failure row),
    or None for a file (a symlink to one included: the meshes stage checks where it leads): a
    symlinked folder (`outside_root` when it leads out of `root`), a broken link, or something
    else that is not a file (a socket, a FIFO). A plain file's entry costs no system call;
    a symlink's costs what following it does. A file or folder whose path is longer than the
    system takes (nested folders past PATH_MAX) is `unreadable`: no call can open it by name,
    and the walk ended on it (an ENAMETOOLONG OSError for the whole stage)."""
    if path_too_long(entry.path if isinstance(entry, os.DirEntry) else entry):
        size = len(os.fsencode(entry.path if isinstance(entry, os.DirEntry) else entry))
        what = "folder" if _unentered_folder(entry) else "file"
        return MeshError(
            "unreadable",
            f"a {what} whose path is {size} bytes, more than the {PATH_MAX - 1} the system "
            "opens: move it nearer the root or shorten its folders' names",
        )
    if _unentered_folder(entry):  # yielded, not entered: it cannot be listed
        return MeshError(
            "unreadable", why_unlisted(entry.path if isinstance(entry, os.DirEntry) else entry)
        )
    if is_file(entry):
        return None
    if entry.is_symlink():
        target = real_path(entry)
        if annex_link(target) and not target.exists():
            return MeshError(
                "missing_file",
                f"a git-annex link to {shown_name(target.name, 60)}, whose content was never "
                "fetched: run `git annex get` in the clone",
            )
        if not target.is_relative_to(resolved_root(root)):
            return MeshError("outside_root", f"a symlink to {target}, outside the source root")
        if target.is_dir():
            return MeshError(
                "duplicate",
                f"a symlinked folder (to {target}, inside the source root): not entered, so that "
                "no file is listed twice",
            )
        if target.is_symlink():  # still a link once resolved: it leads round in a loop
            return MeshError("missing_file", f"a symlink loop (through {target})")
        return MeshError("missing_file", f"a broken symlink (to {target})")
    return MeshError("unsupported_format", "not a file nor a folder")

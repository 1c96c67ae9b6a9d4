"""The pack stage's output: WebDataset shards and their index.

`{split}/shard-XXXXXX.tar` holds, per object (key = object id, members in this order):
`points.npy` (N×3|6|9 float32: xyz, rgb, normals as meta.json's `channels` says), `view_XX.png` (one per rendered view), `cameras.json` (the
render stage's cameras, as written), `captions.json` (list of strings), `cls` (class index as
decimal text) and `meta.json`. `index.json` lists the classes and, per split, the shards with
their sample counts and sha256; `_shards/{split}-XXXXXX.json` records a finished shard (count,
sha256, failures, point shapes) while the pack stage runs, which builds the index from them.

Where the shards are: `shards` is the pack output folder, or a URL / `pipe:` prefix to which
`index.json` and the shard names are appended (`http://host/shards` gives
`http://host/shards/train/shard-000000.tar`; `pipe:aws s3 cp s3://b/x` gives
`pipe:aws s3 cp s3://b/x/train/shard-000000.tar`). A prefix holding `{}` has the name put
there instead (`pipe:aws s3 cp s3://b/x/{} -`). Remote streams are opened by webdataset's
`gopen` (curl for URLs, a shell for `pipe:`).

Readers never stop at a bad sample: an undecodable or incomplete sample, a badly named member
or the rest of an unreadable shard is skipped and counted in a `Skipped` with its reason.
"""

import contextlib
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import select
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from cg3d.errors import UsageError
from cg3d.files import (
    STAND_IN_PROBE,
    FileTooLarge,
    OutsideRoot,
    atomic_path,
    confined_path,
    file_sha256,
    json_text,
    loads_json,
    real_path,
    require_folder,
    require_regular_file,
    resolved_root,
    stand_in,
    stopping_error,
    write_json,
)
from cg3d.formats.captions import MAX_CAPTION_CHARS, MAX_CAPTIONS_PER_OBJECT
from cg3d.formats.images import open_image
from cg3d.formats.intact import damaged
from cg3d.formats.npy import read_npy
from cg3d.formats.points import NO_COLOR, channel_names
from cg3d.formats.tar import (
    FormatError,
    open_tar_writer,
    stream_length,
    tar_members,
    tar_samples,
)
from cg3d.formats.versions import version_problem
from cg3d.params import MAX_SHARD_SAMPLES
from cg3d.stopping import AwakeTimer

log = logging.getLogger(__name__)
INDEX_NAME = "index.json"
# index.json's `format` is a number (1 since the first `cg3d pack`), checked as the tag
# `cg3d-shards-<number>` by the one version check (`versions.version_problem`)
INDEX_VERSION = 1
INDEX_FORMAT = f"cg3d-shards-{INDEX_VERSION}"
SHARD_PATTERN = "shard-{:06d}.tar"
REMOTE_PREFIXES = ("pipe:", "http://", "https://", "s3://", "gs://")
# Seconds a remote read waits for data before the shard counts as failed (`train.read_timeout`).
READ_TIMEOUT = 60.0


# Where the shards are.


def location(shards: str | Path) -> str:
    """The shards' place as text. A URL that went through `Path` (typer's Path options do
    that) lost one slash of `scheme://`; it is put back, so `--shards http://…` works."""
    text = str(shards)
    if isinstance(shards, Path):
        text = re.sub(r"\b(https?|s3|gs):/(?=[^/])", r"\1://", text)
    return text


def is_remote(shards: str | Path) -> bool:
    return location(shards).startswith(REMOTE_PREFIXES)


def shard_url(shards: str | Path, name: str) -> str:
    """Where `name` (relative to the pack output) lives under a folder, URL or pipe prefix."""
    base = location(shards)
    if "{}" in base:
        return base.replace("{}", name)
    if is_remote(base):
        return f"{base.rstrip('/')}/{name}"
    return str(Path(base) / name)


@contextlib.contextmanager
def open_shard(url: str, timeout: float = READ_TIMEOUT) -> Iterator[BinaryIO]:
    """The byte stream of a shard (or the index) at `url`. Closing checks the exit status of
    curl or the pipe command, so a failed download is an OSError when the block ends normally;
    a block that ends early (an error, a reader that stops) stops the download and closes
    quietly. A remote stream that sends nothing for `timeout` seconds raises TimeoutError (a
    server that stalls without closing would otherwise hang the reader forever).

    A local file is opened as one: webdataset (which imports torch: 3-8 s and 400 MiB for
    `cg3d inspect` or `verify`) only for a URL or pipe, and a local name holding a `:` is a
    path, not a scheme that webdataset's `gopen` would take it for."""
    local_special_file(url)
    if not is_remote(url):
        with open(url, "rb") as file:
            yield file
        return
    from webdataset.gopen import gopen

    stream = gopen(url, "rb")
    process = getattr(stream, "proc", None)  # curl or the pipe command; None for a file
    try:
        yield TimedReader(stream.stream, timeout) if process is not None else stream
    except BaseException:
        if process is not None:  # not waiting for it: it may be the one that stalled
            with contextlib.suppress(OSError):
                process.kill()
        with contextlib.suppress(Exception):
            stream.close()
        raise
    stream.close()


def local_special_file(url: str) -> None:
    """UsageError when local `url` is a FIFO, device or folder (an absent one is left to the
    opener's FileNotFoundError): a FIFO among the shards blocked every reader's open() for
    ever (eval, train, index, inspect), a device read on without end."""
    if not is_remote(url) and os.path.exists(url):
        require_regular_file(Path(url), f"no file {url}")


class TimedReader:
    """Reads a pipe's file descriptor, waiting at most `timeout` seconds for each piece of
    data (poll, then os.read: nothing is buffered where poll cannot see it). poll, not
    select: select() refuses a descriptor numbered 1024 or more ("filedescriptor out of range"),
    which a process with many open files (`params.open_files_raised` lifts the limit to 65536)
    hands out, and every shard and index read through curl or a pipe failed as damaged."""

    def __init__(self, pipe: BinaryIO, timeout: float, block: int = 1 << 16):
        self.fd = pipe.fileno()
        self.timeout = timeout
        self.block = block
        self.buffer = b""
        self.offset = 0

    def read(self, size: int = -1) -> bytes:
        pieces = []
        wanted = size
        while wanted != 0:
            if self.offset == len(self.buffer) and not self._fill():
                break
            end = len(self.buffer) if wanted < 0 else min(len(self.buffer), self.offset + wanted)
            pieces.append(self.buffer[self.offset : end])
            if wanted > 0:
                wanted -= end - self.offset
            self.offset = end
        return b"".join(pieces)

    def _fill(self) -> bool:
        """The next piece of the pipe into the buffer; False at its end. The time this
        process spends stopped (Ctrl-Z, a Slurm suspend) does not count (`AwakeTimer`): one
        wait for the whole timeout kept that only while no handled signal came; a SIGCHLD
        at the SIGCONT (the pipe command going on), handled in every loader worker started
        after torch put its handler in the main process (the held-out loader's), interrupted
        it, and Python, retrying, counted the pause: a timeout, and the shard was skipped."""
        timer = AwakeTimer(self.timeout)
        poll = select.poll()
        poll.register(self.fd, select.POLLIN)
        while (wait := timer.wait_s()) > 0:
            if poll.poll(wait * 1000):
                self.buffer, self.offset = os.read(self.fd, self.block), 0
                return bool(self.buffer)
        raise TimeoutError(f"no data for {self.timeout:g} s (the source stopped sending)")

    def seekable(self) -> bool:
        return False


def read_error_reason(error: BaseException) -> str:
    """A short reason for a failed read: webdataset's pipe errors hold the whole command
    line; what matters is its exit status (curl's 22: an HTTP error such as 404)."""
    match = re.search(r"exit (-?\d+) \(read\)", str(error))
    if match:
        return f"the fetch command exited with status {match[1]}"
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        # the shard it names is in the line already: an index naming a shard of 5,000
        # characters (ENAMETOOLONG) gave a line of 10,000
        return f"{type(error).__name__}: {error.strerror}"
    return f"{type(error).__name__}: {error}"


# An index.json lists ~110 bytes a shard: 600,000 shards fit. Read no more than this, so that a
# server or pipe that never stops sending (`pipe:cat /dev/zero`: 16 GB of memory in 20 s)
# cannot fill the machine. `write_index` holds the pack to it too.
MAX_INDEX_BYTES = 64 << 20


def read_index(shards: str | Path) -> dict:
    """The parsed `index.json` (classes; per split: shards, counts, sha256, samples)."""
    url = shard_url(shards, INDEX_NAME)
    if not is_remote(shards):
        missing = f"no {INDEX_NAME} in {location(shards)}: not a `cg3d pack` output"
        require_folder(location(shards), missing=missing)  # a file or FIFO is named as such
        require_regular_file(Path(url), missing)  # a FIFO would block the read
    if not is_remote(shards):  # checked before it is read: nothing outside the folder is
        try:
            confined_path(location(shards), location(shards), INDEX_NAME)
        except OutsideRoot as error:
            raise UsageError(f"{url}: {error}") from None
    try:
        with open_shard(url) as stream:
            data = stream.read(MAX_INDEX_BYTES + 1)
            if len(data) > MAX_INDEX_BYTES:  # leaving the block stops the download
                raise UsageError(
                    f"{url}: more than {MAX_INDEX_BYTES >> 20} MiB: not a `cg3d pack` index"
                )
        if said := stand_in(data[:STAND_IN_PROBE]):  # was "damaged: rerun cg3d pack"
            raise UsageError(f"{url}: {said}")
        index = loads_json(data)  # after the close, which reports a failed download
    except ValueError as error:  # cut short or not JSON: the pack stage writes it again
        raise damaged(url, read_error_reason(error), "pack") from None
    except OSError as error:
        raise UsageError(f"cannot read {url}: {read_error_reason(error)}") from None
    found = index.get("format", INDEX_VERSION) if isinstance(index, dict) else None
    tag = f"cg3d-shards-{found}" if type(found) is int else found  # bool is no number
    if problem := version_problem(tag, INDEX_FORMAT, "rerun `cg3d pack` with this cg3d"):
        raise UsageError(f"{url}: {problem}")  # a newer pack's index was read as ours
    problem = index_problem(index)
    if problem is None and not is_remote(shards):
        problem = shard_outside(shards, index)
    if problem is not None:
        raise UsageError(f"{url}: not a `cg3d pack` index ({problem})")
    return index


# A shard name is a relative path of plain names: nothing that climbs out of the shards'
# folder or URL, and nothing a `pipe:` prefix's shell would read as syntax.
SHARD_NAME = re.compile(r"[\w.-]+(/[\w.-]+)*")


def index_problem(index: Any) -> str | None:
    """What is wrong with the shape of a parsed index.json, or None."""
    if not isinstance(index, dict):
        return f"a {type(index).__name__}, not an object"
    found = index.get("format", INDEX_VERSION)  # none: a hand-made index, read as ours
    if type(found) is not int or found != INDEX_VERSION:
        return f"'format' is {json.dumps(found)[:40]}, not {INDEX_VERSION}"
    classes, splits = index.get("classes"), index.get("splits")
    if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes):
        return "'classes' is not a list of names"
    twice = _first_repeat(classes)
    if twice is not None:  # its label's scores would be split between two names
        return f"'classes' names {twice!r} twice"
    if not isinstance(splits, dict):
        return "'splits' is not an object"
    listed: dict[str, str] = {}  # shard name → the split that lists it
    for split, entry in splits.items():
        if not isinstance(entry, dict):
            return f"split {split!r} is not an object"
        names, counts = entry.get("shards"), entry.get("counts")
        sha256, samples = entry.get("sha256"), entry.get("samples")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return f"split {split!r}: 'shards' is not a list of names"
        bad = next((n for n in names if not SHARD_NAME.fullmatch(n) or ".." in n.split("/")), None)
        if bad is not None:
            return f"split {split!r}: shard name {bad!r} is not a relative path of plain names"
        # A shard listed twice is read twice: its samples counted, trained on or indexed
        # twice, or (in two splits) a test object that was trained on.
        for name in names:
            file = posixpath.normpath(name)  # `train/./a.tar` is `train/a.tar`
            if file in listed:
                where = sorted({listed[file], split})
                return f"shard {name} is listed twice (split {' and '.join(map(repr, where))})"
            listed[file] = split
        if not isinstance(counts, list) or not all(_count(c) for c in counts):
            return f"split {split!r}: 'counts' is not a list of sample counts"
        if any(c > MAX_SHARD_SAMPLES for c in counts):
            return f"split {split!r}: a shard count over {MAX_SHARD_SAMPLES:,} samples"
        if not isinstance(sha256, list) or not all(isinstance(h, str) for h in sha256):
            return f"split {split!r}: 'sha256' is not a list of hashes"
        if not len(names) == len(counts) == len(sha256):
            return (
                f"split {split!r}: {len(names)} shards, {len(counts)} counts, {len(sha256)} hashes"
            )
        if not _count(samples):  # whether it is their sum, `cg3d verify` reports
            return f"split {split!r}: 'samples' is not a sample count"
        if samples > MAX_SHARD_SAMPLES * max(len(names), 1):
            return f"split {split!r}: {samples} samples, more than {len(names)} shards hold"
    return None


def _first_repeat(values: list[str]) -> str | None:
    seen: set[str] = set()
    return next((v for v in values if v in seen or seen.add(v)), None)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def shard_outside(shards: str | Path, index: dict) -> str | None:
    """The first shard of a local index that a symlink takes outside the shards' folder.

    What `confined_path` decides for each name, with the root and each folder resolved once:
    per shard it resolved the root and every folder of the name again (some 9 `lstat`s and
    two realpaths), 80 s for an index of 600k shards; now one `lstat` a shard (`islink`),
    and a shard that is a symlink is followed whole."""
    base = Path(location(shards))
    root = resolved_root(base)
    # a name's folder → (its real path, whether it lies in the root): a few for any index
    folders: dict[str, tuple[str, bool]] = {}
    for entry in index["splits"].values():
        for name in entry["shards"]:
            folder, _, file = posixpath.normpath(name).rpartition("/")
            if folder not in folders:
                real = real_path(base / folder)
                folders[folder] = (str(real), real.is_relative_to(root))
            real_folder, inside = folders[folder]
            path = os.path.join(real_folder, file)  # strings: pathlib was most of the time
            if not inside or (os.path.islink(path) and not real_path(path).is_relative_to(root)):
                return f"shard {name} resolves outside {base}"
    return None


def split_entry(index: dict, split: str) -> dict:
    if split not in index.get("splits", {}):
        raise UsageError(f"no split {split!r} in the shard index (has {sorted(index['splits'])})")
    return index["splits"][split]


def check_shards(shards: str | Path, split: str) -> None:
    """Before training: every local shard of `split` exists and its tar headers read to the end.

    A truncated or missing shard is then a one-line UsageError naming the file, not a run that
    dies (or silently shrinks) hours in. The walk seeks over member data, so this costs little;
    remote shards (URLs, `pipe:`) are not fetched twice: they are checked as they stream.
    """
    if is_remote(shards) or "{}" in location(shards):
        return
    for name in split_entry(read_index(shards), split)["shards"]:
        path = shard_url(shards, name)
        try:
            local_special_file(path)
            with open(path, "rb") as stream:
                for _ in tar_members(stream, read_data=False):
                    pass
        except (OSError, FormatError) as error:
            raise UsageError(f"shard {path} does not decode: {error}") from None


# Writing.


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def sample_members(
    points: np.ndarray,
    views: dict[str, bytes],
    cameras: bytes | None,
    captions: list[str],
    cls: int,
    meta: dict,
) -> list[tuple[str, bytes]]:
    """The members of one sample, in the shard order: points, views by name, cameras,
    captions, class, meta (`views` maps `view_XX` to PNG bytes)."""
    members = [("points.npy", npy_bytes(points))]
    members += [(f"{name}.png", views[name]) for name in sorted(views)]
    if cameras is not None:
        members.append(("cameras.json", cameras))
    members += [
        ("captions.json", json_text(captions, ensure_ascii=False).encode()),
        ("cls", str(cls).encode()),
        ("meta.json", json_text(meta, sort_keys=True, ensure_ascii=False).encode()),
    ]
    return members


def write_shard(
    path: Path, samples: Iterable[tuple[str, list[tuple[str, bytes]]]]
) -> tuple[int, str]:
    """Write one shard atomically: each (key, members) sample in the given order, members named
    `<key>.<suffix>`. Returns (samples written, sha256 of the file)."""
    count = 0
    with atomic_path(Path(path)) as tmp:
        with open_tar_writer(tmp) as tar:
            for key, members in samples:
                for suffix, data in members:
                    tar.add(f"{key}.{suffix}", data)
                count += 1
        digest = file_sha256(tmp)
    return count, digest


def split_entry_of(split: str, counts: list[int], sha256: list[str]) -> dict:
    """A split's entry of the index, for shards `shard-000000.tar`, … in order."""
    return {
        "shards": [f"{split}/{SHARD_PATTERN.format(i)}" for i in range(len(counts))],
        "counts": counts,
        "sha256": sha256,
        "samples": sum(counts),
    }


SHARD_RECORDS = "_shards"  # per finished shard: count, sha256, failures, point shapes


def shard_record_path(out_dir: Path, split: str, index: int) -> Path:
    """Where the pack stage records shard `index` of `split` as finished."""
    return Path(out_dir) / SHARD_RECORDS / f"{split}-{index:06d}.json"


def shard_path(out_dir: Path, split: str, index: int) -> Path:
    """Shard `index` of `split` in a pack output folder."""
    return Path(out_dir) / split / SHARD_PATTERN.format(index)


def write_shard_record(out_dir: Path, split: str, index: int, record: dict) -> None:
    """A finished shard's record ({count, size, sha256, failures, shapes}), written after its
    rename."""
    with atomic_path(shard_record_path(out_dir, split, index)) as tmp:
        tmp.write_text(json_text(record), encoding="utf-8")


# A shard record's fields (`pack_shard` writes them): the index is built from them.
RECORD_FIELDS = {"count": int, "size": int, "sha256": str, "failures": list, "shapes": list}


def read_shard_record(out_dir: Path, split: str, index: int) -> dict:
    """The record `write_shard_record` wrote; ValueError when it does not parse or lacks a
    field the index is built from (cut short, edited to "[]", nested too deep)."""
    record = loads_json(shard_record_path(out_dir, split, index).read_bytes())
    if not isinstance(record, dict) or any(
        type(record.get(key)) is not kind for key, kind in RECORD_FIELDS.items()
    ):
        raise ValueError("not a whole shard record")
    failure_fields = {"id", "stage", "reason"}
    if not all(
        isinstance(row, dict) and failure_fields <= row.keys() for row in record["failures"]
    ):
        raise ValueError("not a whole shard record")
    return record


def shard_index(
    classes: list[str], records: dict[str, list[dict]], failures: list[dict], params: dict
) -> dict:
    """The contents of index.json: classes, per split the shards (from their records, in
    order), counts and checksums, the failures by stage, the pack params and point shapes."""
    shapes = {tuple(shape) for split in records.values() for r in split for shape in r["shapes"]}
    splits = {
        split: split_entry_of(split, [r["count"] for r in rs], [r["sha256"] for r in rs])
        for split, rs in records.items()
    }
    return {
        "format": INDEX_VERSION,
        "classes": classes,
        "splits": splits,
        "failures": {
            "total": len(failures),
            "by_stage": dict(sorted(Counter(r["stage"] for r in failures).items())),
        },
        "params": {
            **params,
            "points": sorted({n for n, _ in shapes}),
            "channels": sorted({c for _, c in shapes}),
        },
    }


def write_index(out_dir: Path, index: dict) -> None:
    """Atomically write `out_dir/index.json` (the last file of a pack: no index, no set).
    FileTooLarge, and no index, when it would be more than `read_index` takes
    (`MAX_INDEX_BYTES`, some 620k shards): a pack wrote an index that its readers refused."""
    write_json(Path(out_dir) / INDEX_NAME, index, indent=1, max_bytes=MAX_INDEX_BYTES)


# The fewest bytes one shard adds to index.json (`write_index`, indent=1): its name, sha256 and
# count, each on a line of its own four levels deep: `    "test/shard-000000.tar",`,
# `    "<64 hex digits>",` and `    1,`, 29 + 72 + 7 bytes, less the commas a list's last
# item lacks. The split's other fields are not counted: a lower bound.
LEAST_INDEX_BYTES_PER_SHARD = 100


def check_index_fits(shards: int) -> None:
    """FileTooLarge when an index of `shards` shards is over `MAX_INDEX_BYTES` whatever the
    shards hold: known from the plan alone, before any shard is written (`write_index` keeps
    the exact check, once they are)."""
    least = shards * LEAST_INDEX_BYTES_PER_SHARD
    if least > MAX_INDEX_BYTES:
        raise FileTooLarge(
            f"{INDEX_NAME} would be at least {least:,} bytes, over the {MAX_INDEX_BYTES:,} read"
        )


# Reading.


class Skipped:
    """Samples a reader left out: counts by reason, a log line each. `shared` (a
    multiprocessing Value) also receives the counts, for readers in worker processes."""

    def __init__(self, shared: Any = None):
        self.reasons: Counter = Counter()
        self.shared = shared

    def add(self, what: str, reason: str, count: int = 1) -> None:
        if count < 1:
            return
        log.warning("skipping %s: %s", what, reason)
        self.reasons[reason] += count
        if self.shared is not None:
            with self.shared.get_lock():
                self.shared.value += count

    @property
    def total(self) -> int:
        return sum(self.reasons.values())


def raw_samples(
    shards: str | Path,
    names: list[str],
    counts: list[int],
    order: Sequence[int],
    skipped: Skipped,
    keep: Callable[[int], bool] = lambda position: True,
    timeout: float = READ_TIMEOUT,
    read_data: Callable[[str], bool] | bool = True,
) -> Iterator[dict]:
    """Undecoded samples ({"__key__": id, suffix: bytes}) of the shards `order` (indices into
    `names`/`counts`), those whose position `keep` accepts; only the members `read_data`
    accepts (by name) are read, the others come as b"" (`tar_members`). A position is a sample's index in
    the stream those shards give, as the index counts it. An unreadable shard counts its
    remaining kept positions as skipped; positions go on from the index, so the other readers'
    shares stay the same. A remote shard that sends nothing for `timeout` seconds is such an
    unreadable shard (TimeoutError)."""
    position = -1
    for shard in order:
        url = shard_url(shards, names[shard])
        end = position + counts[shard]
        try:
            with open_shard(url, timeout) as stream:
                for sample in tar_samples(stream, read_data):
                    position += 1
                    if keep(position):
                        yield sample
        except Exception as error:  # noqa: BLE001 - one bad shard must not end the epoch
            if stopping_error(error):  # a network disk's (ESTALE): not the shard's, stop
                raise  # skipped, an epoch (or a held-out metric) lost a whole shard (t86a)
            lost = sum(1 for p in range(position + 1, end + 1) if keep(p))
            skipped.add(
                f"the rest of shard {url}", f"unreadable shard ({read_error_reason(error)})", lost
            )
        else:
            # What was read against what the index counts: a shard that reads cleanly but
            # holds fewer samples (rewritten, or cut where a tar reader cannot tell) loses the
            # rest with a count, never silently. (More samples than counted are read: nothing
            # is lost; `cg3d verify` reports the shard.)
            read = counts[shard] - (end - position)
            lost = sum(1 for p in range(position + 1, end + 1) if keep(p))
            reason = (
                f"short shard (it holds {read} of the {counts[shard]} samples index.json counts)"
            )
            skipped.add(f"the rest of shard {url}", reason, lost)
        position = end


NPY_HEADER = re.compile(rb"'descr': '<f4', 'fortran_order': False, 'shape': \((\d+), (\d+)\)")


def decode_points(data: bytes) -> np.ndarray:
    """A (N, C) float32 .npy. The header `cg3d pack` writes is matched directly: np.load
    parses it with `ast`, which cost as much as the array itself."""
    if data[:8] == b"\x93NUMPY\x01\x00":
        header_end = 10 + int.from_bytes(data[8:10], "little")
        match = NPY_HEADER.search(data, 10, header_end)
        if match:
            shape = (int(match[1]), int(match[2]))
            flat = np.frombuffer(data, np.float32, shape[0] * shape[1], header_end)
            return flat.reshape(shape).copy()  # writable, like np.load's
    if not data:
        raise ValueError("it is empty (0 bytes)")
    if data[:1] == b"\x80":  # a pickle's protocol opcode: never unpickled from a shard
        raise ValueError("it is pickled data, which is never loaded (allow_pickle=False)")
    if not data.startswith(b"\x93NUMPY"):
        # np.load takes anything else for a pickle and blames allow_pickle: name the real cause
        raise ValueError(f"not an .npy array (it starts with {data[:8]!r}, not the NPY magic)")
    array = read_npy(data)
    if array.dtype.kind not in "fiu":
        raise ValueError(f"it holds {array.dtype} values, not numbers")
    return array.astype(np.float32, copy=False)


def decode_image(data: bytes) -> Image.Image:
    """An encoded view as RGB, a transparent one on white (`rgb_on_white`)."""
    with open_image(data, "view") as image:
        return rgb_on_white(image)


def rgb_on_white(image: Image.Image) -> Image.Image:
    """`image` as RGB; where it is transparent (`render.background: transparent`), on white as
    the render stage composites its default views: convert("RGB") would keep the colour under
    alpha 0, black."""
    if not image.has_transparency_data:
        return image.convert("RGB")
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def view_names(sample: dict) -> list[str]:
    return sorted(k for k in sample if is_view(k))


def is_view(suffix: str) -> bool:
    """Whether a sample's member (its suffix, `view_00.png`) is a rendered view."""
    return suffix.startswith("view_") and suffix.endswith(".png")


def not_a_view(member: str) -> bool:
    """Whether a shard member (`<id>.<suffix>`) is other than a view: the `read_data` of
    readers that never decode the views (`raw_samples`), which are most of a shard's bytes."""
    return not is_view(member.partition(".")[2])


def decode_member(raw: dict, suffix: str, decode: Callable[[bytes], Any]) -> Any:
    """One member decoded; FormatError naming it when it is missing or does not decode."""
    if "__error__" in raw:
        raise FormatError(raw["__error__"])
    if suffix not in raw:
        raise FormatError(f"member {suffix} is missing")
    try:
        return decode(raw[suffix])
    except Exception as error:  # any decoding failure names the member
        raise FormatError(f"{suffix} does not decode ({type(error).__name__}: {error})") from None


def decode_cloud(data: bytes) -> np.ndarray:
    """`decode_points` of a cloud with at least one point of xyz (and rgb, normals: the layout
    is meta.json's `channels`)."""
    points = decode_points(data)
    if points.ndim != 2 or points.shape[1] not in (3, 6, 9) or len(points) == 0:
        raise ValueError(f"shape {points.shape} is not (N, 3), (N, 6) or (N, 9)")
    if not np.isfinite(points).all():  # NaN would reach the loss and the metrics silently
        raise ValueError("it holds NaN or infinite values")
    return points


def decode_meta(data: bytes) -> dict:
    """meta.json: a JSON object (a list or a number is not, whatever else it holds)."""
    meta = json.loads(data)
    if not isinstance(meta, dict):
        raise ValueError(f"it is a JSON {type(meta).__name__}, not an object")
    return meta


def decode_captions(data: bytes) -> list[str]:
    """captions.json: a JSON list of at most MAX_CAPTIONS_PER_OBJECT strings, none longer than
    MAX_CAPTION_CHARS (pack never writes more: a sample past either is damaged, not carried
    into tokenisation)."""
    captions = json.loads(data)
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise ValueError("it is not a list of strings")
    if len(captions) > MAX_CAPTIONS_PER_OBJECT:
        raise ValueError(f"{len(captions)} captions, more than {MAX_CAPTIONS_PER_OBJECT}")
    for number, caption in enumerate(captions):
        if len(caption) > MAX_CAPTION_CHARS:
            raise ValueError(
                f"caption {number} has {len(caption)} characters, more than {MAX_CAPTION_CHARS}"
            )
    return captions


# The layout of shards packed before meta.json named it: xyz, or xyz and normals (colours came
# with the layout); by the column count.
LEGACY_LAYOUTS = {3: channel_names(False, False), 6: channel_names(False, True)}
RGB = ("r", "g", "b")


def sample_channels(meta: dict, width: int) -> list[str]:
    """The names of a sample's point columns: meta.json's `channels`, or for shards packed
    before it was recorded, xyz (3 columns) or xyz and normals (6). ValueError when the two
    disagree, or a cloud without a recorded layout has a width no legacy layout has
    (FormatError, a ValueError: the sample is skipped and counted like any undecodable one)."""
    channels = meta.get("channels")
    if channels is None:
        if width not in LEGACY_LAYOUTS:
            raise FormatError(f"points.npy has {width} columns and meta.json names no channels")
        return list(LEGACY_LAYOUTS[width])
    if len(channels) != width or list(channels[:3]) != ["x", "y", "z"]:
        raise FormatError(f"meta.json's channels {channels} do not name the {width} point columns")
    return list(channels)


def sample_has_color(meta: dict, channels: list[str]) -> bool:
    """Whether a sample's points carry colour of their own: an rgb column, and the object had
    a texture, vertex colour or material (else its rgb is the constant `NO_COLOR`)."""
    return "r" in channels and bool(meta.get("has_color", True))


def model_columns(points: np.ndarray, channels: list[str], point_channels: int) -> np.ndarray:
    """(N, point_channels) float32 columns an encoder takes, picked by name, never by position:
    xyz, then rgb when `point_channels` is 6 (the constant `NO_COLOR` when the layout has no
    rgb column). Normals are never fed."""
    xyz = points[:, :3]
    if point_channels == 3:
        return np.ascontiguousarray(xyz, dtype=np.float32)
    if "r" in channels:
        start = channels.index("r")
        rgb = points[:, start : start + 3]
    else:
        rgb = np.broadcast_to(np.asarray(NO_COLOR, dtype=np.float32), xyz.shape)
    return np.concatenate([xyz, rgb], axis=1).astype(np.float32, copy=False)


def label_problem(label: int, classes: list[str]) -> str:
    """Why a sample's class `label` names none of the index's `classes`, or "": eval skips
    such a sample and counts it, and so does training (its held-out accuracy never counted it
    right, and a class-text target was an IndexError)."""
    if 0 <= label < len(classes):
        return ""
    return f"class index {label} outside the index's {len(classes)} classes"


def decode_sample(raw: dict, views: bool = True) -> dict:
    """A sample, the one decoder of its members: key, points, captions, cls, meta, `channels`
    (the names of the point columns, `sample_channels`), `view_names` and, with `views`, the
    views as RGB images in name order. Without, the views stay encoded (the loader decodes
    only the one it feeds, its own way; the audit none). FormatError naming a bad member."""
    points = decode_member(raw, "points.npy", decode_cloud)
    meta = decode_member(raw, "meta.json", decode_meta)
    names = view_names(raw)
    sample = {
        "key": raw["__key__"],
        "points": points,
        "captions": decode_member(raw, "captions.json", decode_captions),
        "cls": decode_member(raw, "cls", int),
        "meta": meta,
        "channels": sample_channels(meta, points.shape[1]),
        "view_names": names,
    }
    if views:
        sample["views"] = [decode_member(raw, name, decode_image) for name in names]
    return sample


def split_channels(shards: str | Path, split: str) -> list[str] | None:
    """The point layout of `split` (that of its first decodable sample: a pack writes one
    layout for all), or None when no sample decodes. Reads one sample, not the split."""
    entry = split_entry(read_index(shards), split)
    order = range(len(entry["shards"]))
    for raw in raw_samples(shards, entry["shards"], entry["counts"], order, Skipped()):
        try:
            return decode_sample(raw, views=False)["channels"]
        except FormatError:
            continue
    return None


def iter_samples(shards: str | Path, split: str, skipped: Skipped | None = None) -> Iterator[dict]:
    """Every decodable sample of `split`, in shard order (`decode_sample`'s dicts); the others
    are counted in `skipped` with their reason."""
    skipped = skipped if skipped is not None else Skipped()
    entry = split_entry(read_index(shards), split)
    order = range(len(entry["shards"]))
    for raw in raw_samples(shards, entry["shards"], entry["counts"], order, skipped):
        try:
            yield decode_sample(raw)
        except FormatError as error:
            skipped.add(f"sample {raw['__key__']}", str(error))


class HashingReader:
    """A stream that hashes what is read through it (checksums of shards that stream)."""

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.digest.update(data)
        return data

    def seekable(self) -> bool:
        return False

    @property
    def length(self) -> int | None:
        """Bytes left to read, when the stream beneath can tell (a local file): the tar
        reader checks each member's declared size against it."""
        return stream_length(self.stream)

    def hexdigest_to_end(self) -> str:
        """The sha256 of the whole stream, reading what is left (the tar's end padding)."""
        while self.read(1 << 20):
            pass
        return self.digest.hexdigest()

"""`cg3d verify`: re-read every shard against `index.json` and decode every sample.

Works on local folders and on shards served over HTTP or through a `pipe:` command
(`cg3d.formats.shards`): each shard is read once, as a stream, and hashed as it is read.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cg3d.formats.intact import not_a_file
from cg3d.formats.renders import CAMERAS, loads_cameras
from cg3d.formats.shards import (
    HashingReader,
    decode_member,
    decode_sample,
    is_remote,
    open_shard,
    read_error_reason,
    read_index,
    shard_url,
)
from cg3d.formats.tar import FormatError, tar_samples


@dataclass
class VerifyReport:
    shards: int = 0
    samples: int = 0
    problems: list[str] = field(default_factory=list)


def check_sample(raw: dict, n_classes: int) -> str:
    """ "" when the sample decodes and matches the schema, else the member and what is wrong."""
    try:
        sample = decode_sample(raw)
    except FormatError as error:
        return str(error)
    if not np.isfinite(sample["points"]).all():
        return "points.npy has non-finite values"
    if not sample["views"]:
        return "no view_XX.png"
    captions = sample["captions"]
    if not isinstance(captions, list) or not captions:
        return "captions.json is empty or not a list"
    if not all(isinstance(c, str) and c for c in captions):
        return "captions.json is empty or holds a non-string"
    if not 0 <= sample["cls"] < n_classes:
        return f"cls {sample['cls']} is outside 0..{n_classes - 1}"
    if CAMERAS in raw:  # pack copies it as rendered; the loaders never read it, so check here
        try:
            decode_member(raw, CAMERAS, loads_cameras)
        except FormatError as error:
            return str(error)
    return ""


def check_shard(
    url: str, name: str, count: int, digest: str, n_classes: int, seen: dict[str, str]
) -> tuple[int, list[str]]:
    """(samples read, problems) of one shard: its samples, count and checksum. `seen` maps
    each key read so far, in every shard, to its shard: a key found again is a problem (an
    object twice in a split, or in train and test: a shard copied under another name). Keys
    found again are one line per shard they came from, with the count and the first key: a
    copied shard is one line, not one per object."""
    problems: list[str] = []
    samples = 0
    again: dict[str, list[str]] = {}  # shard first holding a key -> keys of this one found there
    try:
        with open_shard(url) as stream:
            hashing = HashingReader(stream)
            for raw in tar_samples(hashing):
                samples += 1
                key = raw["__key__"]
                problem = check_sample(raw, n_classes)
                if problem:
                    problems.append(f"{name} key {key}: {problem}")
                if key in seen:
                    again.setdefault(seen[key], []).append(key)
                seen.setdefault(key, name)
            if hashing.hexdigest_to_end() != digest:
                problems.append(f"{name}: sha256 differs from the index")
    except (FormatError, OSError, EOFError) as error:
        problems.append(f"{name}: unreadable tar ({read_error_reason(error)})")
    for first, keys in again.items():
        where = "earlier in this shard" if first == name else f"also in {first}"
        problems.append(f"{name}: {len(keys)} key(s) {where}, first {keys[0]}")
    if samples != count:
        problems.append(f"{name}: {samples} samples, index says {count}")
    return samples, problems


def verify_shards(shards: str | Path) -> VerifyReport:
    """Checksums and counts against the index, and every sample decoded."""
    index = read_index(shards)
    n_classes = len(index["classes"])
    report = VerifyReport()
    seen: dict[str, str] = {}
    for split, entry in index["splits"].items():
        if sum(entry["counts"]) != entry["samples"]:
            report.problems.append(f"{split}: shard counts do not add up to {entry['samples']}")
        for name, count, digest in zip(
            entry["shards"], entry["counts"], entry["sha256"], strict=True
        ):
            url = shard_url(shards, name)
            report.shards += 1
            if not is_remote(shards) and not Path(url).is_file():
                problem = not_a_file(Path(url)) or "missing"  # a FIFO there is named so
                report.problems.append(f"{name}: {problem}")
                continue
            samples, problems = check_shard(url, name, count, digest, n_classes, seen)
            report.samples += samples
            report.problems += problems
    return report

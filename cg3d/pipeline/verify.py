"""`cg3d verify`: re-read every shard against `index.json` and decode every sample."""

import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cg3d.pipeline.ids import file_sha256
from cg3d.pipeline.pack import INDEX_NAME


@dataclass
class VerifyReport:
    shards: int = 0
    samples: int = 0
    problems: list[str] = field(default_factory=list)


def check_sample(members: dict[str, bytes], n_classes: int) -> str:
    """ "" when the sample decodes and matches the schema, else the member and what is wrong."""
    member = "points.npy"
    try:
        points = np.load(io.BytesIO(members[member]), allow_pickle=False)
        if points.ndim != 2 or points.shape[1] not in (3, 6) or points.shape[0] < 1:
            return f"{member} has shape {points.shape}"
        if not np.isfinite(points).all():
            return f"{member} has non-finite values"
        views = sorted(name for name in members if name.startswith("view_"))
        if not views:
            return "no view_XX.png"
        for member in views:
            with Image.open(io.BytesIO(members[member])) as image:
                image.load()
        member = "captions.json"
        captions = json.loads(members[member])
        if not captions or not all(isinstance(c, str) and c for c in captions):
            return f"{member} is empty or holds a non-string"
        member = "cls"
        cls = int(members[member])
        if not 0 <= cls < n_classes:
            return f"cls {cls} is outside 0..{n_classes - 1}"
        member = "meta.json"
        json.loads(members[member])
    except KeyError:
        return f"member {member} is missing"
    except Exception as error:  # any decoding failure is a finding, not a crash
        return f"{member} does not decode ({type(error).__name__}: {error})"
    return ""


def check_shard(path: Path, expected_count: int, n_classes: int) -> tuple[int, list[str]]:
    """(samples read, problems) of one shard; its checksum is checked by the caller."""
    problems: list[str] = []
    samples: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(path) as tar:
            for info in tar:
                if info.isfile():
                    key, suffix = info.name.split(".", 1)
                    samples.setdefault(key, {})[suffix] = tar.extractfile(info).read()
    except (tarfile.TarError, OSError, EOFError) as error:
        problems.append(f"{path.name}: unreadable tar ({error})")
    for key, members in samples.items():
        problem = check_sample(members, n_classes)
        if problem:
            problems.append(f"{path.name} key {key}: {problem}")
    if len(samples) != expected_count:
        problems.append(f"{path.name}: {len(samples)} samples, index says {expected_count}")
    return len(samples), problems


def verify_shards(shards_dir: Path) -> VerifyReport:
    """Checksums and counts against the index, and every sample decoded."""
    shards_dir = Path(shards_dir)
    index_path = shards_dir / INDEX_NAME
    if not index_path.is_file():
        raise FileNotFoundError(f"no {INDEX_NAME} in {shards_dir}: run `cg3d pack` first")
    index = json.loads(index_path.read_text())
    n_classes = len(index["classes"])
    report = VerifyReport()
    for split, entry in index["splits"].items():
        if sum(entry["counts"]) != entry["samples"]:
            report.problems.append(f"{split}: shard counts do not add up to {entry['samples']}")
        for name, count, digest in zip(
            entry["shards"], entry["counts"], entry["sha256"], strict=True
        ):
            path = shards_dir / name
            report.shards += 1
            if not path.is_file():
                report.problems.append(f"{name}: missing")
                continue
            if file_sha256(path) != digest:
                report.problems.append(f"{name}: sha256 differs from the index")
            samples, problems = check_shard(path, count, n_classes)
            report.samples += samples
            report.problems += [f"{split}/{problem}" for problem in problems]
    return report

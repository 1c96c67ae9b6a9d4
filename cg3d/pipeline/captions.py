"""The caption stage: class names (synonyms with `caption.synonyms`, free-text names) in templates.

Output: `captions.parquet` (id, captions list<string>) in manifest (id) order, and
`failures.parquet` carrying the manifest's failures forward.
"""

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from cg3d.errors import UsageError
from cg3d.files import locks_out_dir
from cg3d.formats.captions import MAX_CAPTION_CHARS, captions_writer
from cg3d.formats.failures import FAILURES_NAME, write_failures
from cg3d.formats.manifest import OK, failure_reason, manifest_batches
from cg3d.formats.owner import check_owner
from cg3d.params import CaptionConfig
from cg3d.protocol import fill_template, shapenet_renames, templates

TEMPLATE_SETS = ("cg3d", "ulip64")
# Bounds on what a source's annotations put into captions (a name or synonym list is free text
# from a file): each caption is cut at MAX_CAPTION_CHARS (its format's bound, where the readers
# refuse a longer one; a 100 MB Objaverse name made a 100 MB caption, 1.2 GB of memory here
# and in every loader).
# The class name and its synonyms: ShapeNet's longest list has a handful; each name becomes a
# caption per template, so a list of 2 million would be 10^8 captions for one object.
MAX_NAMES = 64
BATCH_ROWS = 4096
COLUMNS = ["id", "source", "class_name", "synonyms", "name", "status", "error"]


@dataclass
class CaptionSummary:
    objects: int
    captioned: int
    failures: int  # rows of failures.parquet: carried from the meshes stage, and `refused`
    refused: int = 0  # objects this stage failed (more synonyms than MAX_NAMES)


def display_names(class_name: str, synonyms: list[str], source: str) -> list[str]:
    """The class name as text (underscores as spaces, CG3D's ShapeNet renames), then synonyms."""
    renames = shapenet_renames() if source == "shapenet" else {}
    names = []
    for name in [renames.get(class_name, class_name), *synonyms]:
        text = " ".join(name.replace("_", " ").split())
        if text and text not in names:
            names.append(text)
    return names


def object_captions(
    object_id: str, names: list[str], free_text: str, template_set: list[str], seed: int
) -> list[str]:
    """Every template over every name, plus the free-text name; shuffled by (seed, id)."""
    captions = [
        fill_template(template, name)[:MAX_CAPTION_CHARS]
        for name in names
        for template in template_set
    ]
    if free_text.strip():
        captions.append(free_text.strip()[:MAX_CAPTION_CHARS])
    digest = hashlib.sha256(f"{seed}:{object_id}".encode()).digest()
    random.Random(int.from_bytes(digest[:8], "little")).shuffle(captions)
    return captions


@locks_out_dir
def caption_objects(meshes_dir: Path, out_dir: Path, config: CaptionConfig) -> CaptionSummary:
    """Run the caption stage, streaming the manifest in batches (memory flat in objects)."""
    if config.templates not in TEMPLATE_SETS:
        raise UsageError(f"--templates must be one of {', '.join(TEMPLATE_SETS)}")
    template_set = templates(config.templates)
    batches = manifest_batches(meshes_dir, COLUMNS, BATCH_ROWS)
    out_dir = Path(out_dir)
    check_owner(out_dir, "caption")
    out_dir.mkdir(parents=True, exist_ok=True)
    failures: list[dict] = []
    objects = 0
    with captions_writer(out_dir) as writer:
        for batch in batches:  # one row group per batch
            ids, lists = [], []
            for row in batch:
                objects += 1
                if row["status"] != OK:
                    failures.append(
                        {"id": row["id"], "stage": "meshes", "reason": failure_reason(row)}
                    )
                    continue
                # the paper captions with the class name only: ShapeNet's synonyms ("cell",
                # "file", ...) would outnumber it and name other things
                synonyms = (row["synonyms"] or []) if config.synonyms else []
                if len(synonyms) >= MAX_NAMES:
                    reason = f"{len(synonyms)} synonyms, more than the {MAX_NAMES - 1} captioned"
                    failures.append({"id": row["id"], "stage": "caption", "reason": reason})
                    continue
                names = display_names(row["class_name"], synonyms, row["source"])
                ids.append(row["id"])
                lists.append(
                    object_captions(row["id"], names, row["name"] or "", template_set, config.seed)
                )
            writer.write(ids, lists)
    captioned = writer.rows
    write_failures(failures, out_dir / FAILURES_NAME)
    refused = sum(1 for failure in failures if failure["stage"] == "caption")
    return CaptionSummary(objects, captioned, len(failures), refused)

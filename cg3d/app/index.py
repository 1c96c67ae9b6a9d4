"""The retrieval index: every object of a shard set embedded once, then searched by text, image
or points without encoding the set again.

`cg3d index --checkpoint FILE --shards DIR --out DIR` (`build_index`) writes OUT/ in the format
of `cg3d.formats.retrieval`: a Parquet part per shard, the merged arrays, retrieval.json last.

Every embedding is L2-normalised, so a score is a cosine similarity. A rebuild with another
checkpoint or other shards starts over; a killed build resumes with the missing parts.
`open_index(OUT, model)` refuses an index that another checkpoint built (one line, saying how
to rebuild it): its embeddings would not be comparable with the model's queries.
"""

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cg3d.app.api import ImageInput, Model, ShapeInput, check_finite, check_top, load
from cg3d.errors import UsageError
from cg3d.eval.readers import sample_shape
from cg3d.files import locks_folder, stored_spelling
from cg3d.formats.owner import check_owner
from cg3d.formats.retrieval import (
    FORMAT,
    merge_index_parts,
    part_embeddings_problem,
    read_arrays,
    read_retrieval,
    read_thumbnail,
    remove_retrieval,
    write_index_part,
    write_retrieval,
)
from cg3d.formats.shards import (
    Skipped,
    decode_image,
    decode_sample,
    is_remote,
    location,
    raw_samples,
    read_index,
    split_entry,
)
from cg3d.formats.tar import FormatError
from cg3d.models.model import check_cuda
from cg3d.params import IndexConfig
from cg3d.pipeline.chunks import ChunkedOutput, progress_bar

log = logging.getLogger(__name__)

SEARCH_TARGETS = ("points", "views")  # what a query is compared with (`against`)


def check_against(against: str | None, name: str = "against") -> None:
    """UsageError naming `name` unless `against` is None or one of SEARCH_TARGETS (`cg3d
    search --against` asks before the model loads, `Index.search` for every other caller)."""
    if against is not None and against not in SEARCH_TARGETS:
        raise UsageError(f"{name} must be one of {', '.join(SEARCH_TARGETS)}, got {against!r}")


@dataclass(frozen=True)
class Hit:
    """One search result: an object of the index and its cosine similarity to the query."""

    id: str
    class_name: str
    source: str
    split: str
    score: float
    row: int  # the object's row in the index


# --- building --------------------------------------------------------------------------------


@locks_folder("out")  # a second build into the same folder fails at once
def build_index(checkpoint: Path, shards: str | Path, out: Path, config: IndexConfig) -> dict:
    """`cg3d index`: embed every object of the chosen splits of `shards` into `out`."""
    config.validate()
    check_owner(out, "index")  # before the model loads
    planned = planned_shards(shards, config.splits)  # so are the shards: a typo costs no load
    check_cuda(config.device, "index.device")  # before the model loads
    model = load(checkpoint, config.device, config.clip_pretrained or None)
    return index_shards(model, shards, Path(out), config, planned)


def planned_shards(shards: str | Path, splits: str) -> tuple[list[tuple[str, str, int]], dict]:
    """[(split, shard name, samples)] of the chosen splits (all when `splits` is empty), and
    the shards' index."""
    source = read_index(shards)
    chosen = [s.strip() for s in splits.split(",") if s.strip()] or sorted(source["splits"])
    plan = []
    for split in chosen:
        entry = split_entry(source, split)
        plan += [
            (split, name, int(n)) for name, n in zip(entry["shards"], entry["counts"], strict=True)
        ]
    if not plan:
        raise UsageError(
            f"--shards: no shards in the splits {', '.join(chosen)} of {location(shards)}"
        )
    return plan, source


def index_shards(
    model: Model,
    shards: str | Path,
    out: Path,
    config: IndexConfig,
    planned: tuple[list[tuple[str, str, int]], dict] | None = None,
) -> dict:
    """Embed the planned shards part by part (resuming), then merge them and write retrieval.json.

    `planned`: `planned_shards`' answer when the caller read it already (before its model load).
    """
    from cg3d.models.clip import weights_content

    plan, source = planned or planned_shards(shards, config.splits)
    identity = {
        **model.identity,
        # relative to the index when both lie in one project, so that a project moved or
        # copied elsewhere (`cp -a`, `rsync -a`, a tar on another cluster) loads its own
        # checkpoint, never the one at the old place
        "checkpoint": stored_spelling(model.checkpoint.resolve(), Path(out).resolve()),
        "config": model.network.config,
    }
    checksums = {split: entry.get("sha256") for split, entry in source["splits"].items()}
    # local shards relative to the index within one project (`stored_spelling`): an absolute
    # --shards, or one relative to another cwd, made a moved project's killed build start over
    shards_place = (
        location(shards)
        if is_remote(shards)
        else stored_spelling(Path(shards).resolve(), Path(out).resolve())
    )
    fingerprint = {
        "stage": "index",  # whose folder this is (`check_owner`), as every stage's plan
        "format": FORMAT,
        # what the model is, not where its CLIP file lies: a moved project's build resumes
        "model": {
            **model.identity,
            "clip_weights": weights_content(model.identity["clip_weights"]),
        },
        "shards": shards_place,
        "plan": plan,
        "checksums": checksums,
        "thumbnail": config.thumbnail,
    }
    remove_retrieval(out)  # the old index is gone until this one is whole
    output = ChunkedOutput(out, ".parquet", "index", fingerprint, code=__name__)
    output.prepare()
    classes = list(source.get("classes") or [])
    pending = output.pending(len(plan))
    for i in sorted(set(range(len(plan))) - set(pending)):  # reused: as if computed now
        problem = part_embeddings_problem(output.part(i))
        if problem:
            log.warning("%s: %s: recomputing it", output.part(i), problem)
            output.drop(i)
            pending.append(i)
    pending.sort()
    with progress_bar("objects") as progress:
        task = progress.add_task("indexing", total=sum(plan[i][2] for i in pending), rate="")
        for i in pending:
            split, name, count = plan[i]
            rows, failures = embed_shard(model, shards, split, name, count, classes, config)
            output.write_chunk_failures(i, failures)
            write_index_part(output.part(i), rows)
            progress.advance(task, count)
    failures = output.finalize(len(plan))
    counts = merge_index_parts(out, [output.part(i) for i in range(len(plan))])
    planned = sum(count for _, _, count in plan)
    manifest = {
        "format": FORMAT,
        "model": identity,
        "shards": location(shards),
        "splits": sorted({split for split, _, _ in plan}),
        "parts": len(plan),
        **counts,
        "failures": len(failures),  # rows: a row may stand for many samples (a shard cut short)
        # samples the shards' index promised that are not in the index: what a user lost
        "lost": max(planned - counts["objects"], 0),
    }
    write_retrieval(out, manifest)
    return manifest


def embed_shard(
    model: Model,
    shards: str | Path,
    split: str,
    name: str,
    count: int,
    classes: list[str],
    config: IndexConfig,
) -> tuple[list[dict], list[dict]]:
    """The rows of one shard's objects, and a failure row per sample that did not decode."""
    skipped = Skipped()
    rows: list[dict] = []
    failures: list[dict] = []
    batch: list[dict] = []
    for raw in raw_samples(shards, [name], [count], [0], skipped):
        try:
            batch.append(decode_sample(raw))
        except FormatError as error:
            failures.append({"id": raw["__key__"], "reason": str(error)})
        if len(batch) == config.batch_size:
            rows += embed_batch(model, batch, split, classes, config)
            batch = []
    if batch:
        rows += embed_batch(model, batch, split, classes, config)
    for reason, lost in skipped.reasons.items():
        failures.append({"id": f"{split}/{name}", "reason": f"{lost} samples lost: {reason}"})
    return rows, failures


def embed_batch(
    model: Model, batch: list[dict], split: str, classes: list[str], config: IndexConfig
) -> list[dict]:
    """Point and view embeddings and a thumbnail per object of a decoded batch."""
    shapes = [sample_shape(sample) for sample in batch]  # xyz, and rgb by the sample's layout
    prepared = [model.prepare(s.points, normalise=False, colors=s.colors) for s in shapes]
    points = model.embed_prepared(np.stack(prepared), config.batch_size)
    views = [view for sample in batch for view in sample["views"]]
    view_features = model.embed_images(views, config.batch_size) if views else np.zeros((0, 0))
    rows, start = [], 0
    for sample, feature in zip(batch, points, strict=True):
        meta = sample["meta"] if isinstance(sample["meta"], dict) else {}
        cls = sample["cls"]
        n_views = len(sample["views"])
        rows.append(
            {
                "id": sample["key"],
                "class_name": str(
                    meta.get("class_name") or (classes[cls] if 0 <= cls < len(classes) else cls)
                ),
                "source": str(meta.get("source", "")),
                "split": split,
                "points": feature,
                "n_views": n_views,
                "views": list(view_features[start : start + n_views]),
                "thumbnail": thumbnail_png(sample["views"][0], config.thumbnail)
                if n_views
                else b"",
            }
        )
        start += n_views
    return rows


def thumbnail_png(view: Image.Image, size: int) -> bytes:
    """The view shrunk to fit `size` pixels, as PNG bytes (empty when size is 0)."""
    if size == 0:
        return b""
    image = view.copy()
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# --- searching -------------------------------------------------------------------------------


def recorded_checkpoint(index: Path, manifest: dict) -> Path:
    """The checkpoint an index was built with, as `stored_spelling` wrote it: relative to the
    index folder (within one project), or absolute (an older index, or one outside)."""
    return Path(index) / manifest["model"]["checkpoint"]


def check_model(manifest: dict, model: Model, path: Path) -> None:
    """A model whose embeddings are not the index's (another checkpoint or CLIP) is refused."""
    from cg3d.models.clip import describe_weights, same_weights

    built = manifest["model"]
    rebuild = (
        f"rebuild it: cg3d index --checkpoint {model.checkpoint} --shards {manifest['shards']} "
        f"--out {path}"
    )
    if built["checkpoint_sha256"] != model.sha256:
        raise UsageError(
            f"{path}: stale index: built with checkpoint {built['checkpoint']} (sha256 "
            f"{built['checkpoint_sha256'][:12]}), not {model.checkpoint} (sha256 "
            f"{model.sha256[:12]}); {rebuild}"
        )
    if not same_weights(built["clip_weights"], model.identity["clip_weights"]):
        raise UsageError(
            f"{path}: stale index: built with CLIP weights {describe_weights(built['clip_weights'])}"
            f", not {describe_weights(model.identity['clip_weights'])}; {rebuild}"
        )


class Index:
    """A built index: `search` by text, image, points or an embedding; `thumbnail` of a hit."""

    def __init__(self, path: Path, manifest: dict, model: Model | None = None, device: str = "cpu"):
        self.path = Path(path)
        self.manifest = manifest
        self._model = model
        self.device = device
        self.objects, self.points, self.views, self.view_object = read_arrays(self.path, manifest)
        changes = np.flatnonzero(self.view_object[1:] != self.view_object[:-1]) + 1
        self.view_starts = np.concatenate([[0], changes]) if len(self.view_object) else changes

    def __len__(self) -> int:
        return self.objects.num_rows

    @property
    def model(self) -> Model:
        """The model that answers text, image and point queries: the one given to
        `open_index`, else the checkpoint the index was built with (loaded on first use)."""
        if self._model is None:
            checkpoint = recorded_checkpoint(self.path, self.manifest)
            if not checkpoint.exists():  # a file, or an exported hub folder
                # spelled from the index folder within one project: an index copied alone
                spelled = Path(self.manifest["model"]["checkpoint"])
                alone = "" if spelled.is_absolute() else " (an index moved out of its project?)"
                raise UsageError(
                    f"{self.path}: the index's checkpoint {checkpoint} is not there{alone}; give "
                    "the model: open_index(path, model) or --checkpoint"
                )
            model = load(checkpoint, self.device)
            check_model(self.manifest, model, self.path)
            self._model = model
        return self._model

    def search(
        self,
        text: str | None = None,
        image: ImageInput | None = None,
        points: ShapeInput | None = None,
        *,
        embedding: np.ndarray | None = None,
        top: int = 10,
        against: str | None = None,
        up_axis: str = "y",
    ) -> list[Hit]:
        """The `top` objects most similar to the query, best first.

        Queries: `text` (a caption, encoded as written), `image` (a picture: PIL image, file or
        array), `points` (a mesh or point file, or an (N, 3+) array, prepared as
        `Model.classify` does) or `embedding` (a (D,) vector in CLIP's space). Given several,
        an object's score is the mean of its scores for each. `against`: "points" compares
        with the objects' point embeddings, "views" with their rendered views (an object
        scores its best view); by default views for an image, points for the others.
        """
        top = check_top(top)
        check_against(against)
        queries = self.queries(text, image, points, embedding, up_axis)
        scores = np.mean(
            [
                self.scores(query, against or ("views" if kind == "image" else "points"))
                for kind, query in queries
            ],
            axis=0,
        )
        return [self.hit(int(row), float(scores[row])) for row in top_k(scores, top)]

    def queries(
        self,
        text: str | None,
        image: ImageInput | None,
        points: ShapeInput | None,
        embedding: np.ndarray | None,
        up_axis: str,
    ) -> list[tuple[str, np.ndarray]]:
        """(kind, (D,) unit vector) of each query given; none given is a UsageError."""
        if text is not None and not str(text).strip():
            raise UsageError("search: the text query is empty")
        queries = []
        if text is not None:
            queries.append(("text", self.model.embed_text([str(text)])[0]))
        if image is not None:
            queries.append(("image", self.model.embed_images([image])[0]))
        if points is not None:
            queries.append(("points", self.model.embed_points([points], up_axis)[0]))
        if embedding is not None:
            vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
            check_finite(vector, "search: the embedding")
            wide = vector.astype(np.float64)  # float32 squares of 1e-30 underflow to 0
            norm = float(np.linalg.norm(wide))
            if norm == 0.0:  # no direction: every score would be 0, a ranking of nothing
                raise UsageError("search: the embedding is all zeros (no direction to search)")
            queries.append(("embedding", (wide / norm).astype(np.float32)))
        if not queries:
            raise UsageError("search: give a text, an image, points or an embedding")
        for _, query in queries:
            if len(query) != self.manifest["dim"]:
                raise UsageError(
                    f"search: a {len(query)}-d query against a {self.manifest['dim']}-d index"
                )
        return queries

    def scores(self, query: np.ndarray, against: str) -> np.ndarray:
        """(N,) cosine similarity of every object (with "views": of its best view)."""
        if against == "points":
            return self.points @ query
        best = np.full(len(self), -np.inf, dtype=np.float32)
        if len(self.view_starts):  # an object's views are consecutive rows: reduce each run
            best[self.view_object[self.view_starts]] = np.maximum.reduceat(
                self.views @ query, self.view_starts
            )
        return best

    def hit(self, row: int, score: float) -> Hit:
        record = self.objects.slice(row, 1).to_pylist()[0]
        return Hit(
            record["id"], record["class_name"], record["source"], record["split"], score, row
        )

    def thumbnail(self, hit: Hit) -> Image.Image | None:
        """The hit's first rendered view (as kept at build time), or None without one."""
        record = self.objects.slice(hit.row, 1).to_pylist()[0]
        data = read_thumbnail(self.path, record["part"], record["row"])
        return decode_image(data) if data else None


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best scores, best first (ties: the lower index first)."""
    k = min(k, len(scores))
    if k == len(scores):
        return np.argsort(-scores, kind="stable")
    # The k-th best score; of the objects that tie with it, argpartition keeps any (not the
    # lowest indices): duplicates (Objaverse has many) have identical embeddings, and a search
    # returned another copy than the rule says, or a different one per k.
    kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
    above = np.flatnonzero(scores > kth)
    chosen = np.concatenate([above, np.flatnonzero(scores == kth)[: k - len(above)]])
    return chosen[np.lexsort((chosen, -scores[chosen]))]


def open_index(path: str | Path, model: Model | None = None, device: str = "cpu") -> Index:
    """The index built by `cg3d index` in `path`.

    `model` answers the text, image and point queries and must be the one the index was built
    with (else a one-line "stale index" error); without one, the recorded checkpoint is loaded
    on the first such query. Queries by `embedding` need no model.
    """
    path = Path(path)
    manifest = read_retrieval(path)
    if model is not None:
        check_model(manifest, model, path)
    return Index(path, manifest, model, device)

"""Cross-modal retrieval on labelled shards: point↔text and point↔image.

`retrieval(checkpoint, out, config)` is what `cg3d eval retrieval` and the DVC `eval_retrieval`
stage run. One streaming pass over the split encodes every object's points, every rendered
view and every caption; the features (a few KB per object) stay in memory, the pixels do not.

Galleries and relevance (the public CG3D code had no retrieval; these are our definitions):
  point → image, image → point   instance level: every view of an object is a gallery image;
                                 an image is relevant to exactly the object it was rendered from.
  point → text,  text → point    class level: the text gallery is the distinct caption strings
                                 of the split; a caption is relevant to a point when some object
                                 of the point's class carries it (captions describe the class,
                                 e.g. "a photo of a chair", so many objects share one caption).
Metrics (cg3d.eval.metrics): R@1, R@5, R@10 (a relevant item in the top K; each only below
the direction's gallery size, where it says something) and mAP, in %.
Outputs (cg3d.eval.results): OUT/metrics.json (numbers only: R@K and mAP of each direction,
the objects, skipped and topped-up ones), OUT/about.json (the shards and split, points fed,
colour and the model: checkpoint, CLIP weights), OUT/details.json (the relevance definitions,
query and gallery sizes) and OUT/retrieval_grid.png (top-5 results for a few point and text
queries; relevant results framed green, others red), from a second pass that only decodes the
handful of objects the grid shows.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cg3d import terminal
from cg3d.errors import UsageError
from cg3d.eval.metrics import blocked_retrieval_metrics, row_blocks
from cg3d.eval.readers import (
    COLOR_FROM_SHARDS,
    COLOR_NOT_SAMPLED,
    color_summary,
    log_topped_up,
    prepare_counted,
    sample_shape,
)
from cg3d.eval.results import begin_results, check_lost, check_results_out, write_results
from cg3d.eval.zeroshot import unit_features
from cg3d.files import require_folder
from cg3d.formats.shards import Skipped, is_remote, iter_samples, read_index, split_entry
from cg3d.params import RetrievalConfig

console = terminal.console(stderr=True)


@dataclass
class Features:
    points: np.ndarray  # (N, D)
    images: np.ndarray  # (V, D)
    image_object: np.ndarray  # (V,) the object each view belongs to
    texts: np.ndarray  # (T, D), one per distinct caption
    captions: list[str]  # (T,)
    caption_classes: np.ndarray  # (T, C) bool: some object of class c carries caption t
    labels: np.ndarray  # (N,) class of each object
    keys: list[str]
    skipped: int = 0  # samples of the split left out as undecodable
    uncolored: int = 0  # objects without colour of their own (a colour model got NO_COLOR)
    # where a colour model's rgb came from: the split's layout (its first sample's: a pack
    # writes one layout for all), as the shards benchmark says it
    color: str = COLOR_NOT_SAMPLED
    topped_up: int = 0  # objects with fewer points than fed (`readers.prepare_counted`)


@torch.no_grad()
def encode_split(model, shards: str | Path, config: RetrievalConfig) -> Features:
    """One streaming pass: features of all points, views and distinct captions of the split
    (a folder, URL or `pipe:` prefix); undecodable samples are skipped and counted."""
    skipped = Skipped()
    device = model.device()
    n_points, channels = int(model.config["n_points"]), int(model.config["point_channels"])
    uncolored = topped_up = 0
    color = COLOR_NOT_SAMPLED
    point_features, image_features, image_object, labels, keys = [], [], [], [], []
    caption_index: dict[str, int] = {}
    caption_pairs: set[tuple[int, int]] = set()
    pending_points, pending_images = [], []

    def flush() -> None:
        if pending_points:
            batch = torch.from_numpy(np.stack(pending_points)).to(device)
            point_features.append(
                unit_features(model.encode_points(batch), "the point encoder").cpu()
            )
            pending_points.clear()
        if pending_images:
            images = model.encode_image(torch.stack(pending_images).to(device))
            image_features.append(unit_features(images, "the image tower").cpu())
            pending_images.clear()

    # the split's count from its index (read once more: a small file), so that a log file
    # gets a line each tenth: with no total it got nothing until the metrics
    total = sum(split_entry(read_index(shards), config.split)["counts"])
    total = min(total, config.limit) if config.limit else total
    with terminal.LoggedProgress(console=console, transient=True) as progress:
        task = progress.add_task("retrieval: encoding", total=total)
        for index, sample in enumerate(iter_samples(shards, config.split, skipped)):
            if config.limit and index >= config.limit:
                break
            shape = sample_shape(sample)  # xyz and rgb by the sample's layout
            if index == 0 and "r" in sample["channels"]:
                color = COLOR_FROM_SHARDS
            uncolored += shape.colors is None
            prepared, topped = prepare_counted(
                shape.points,
                n_points,
                seed=index,
                normalise=False,
                colors=shape.colors,
                point_channels=channels,
            )
            topped_up += topped
            pending_points.append(prepared)
            for view in sample["views"]:
                pending_images.append(model.preprocess(view.convert("RGB")))
                image_object.append(index)
            for caption in sample["captions"]:
                position = caption_index.setdefault(caption, len(caption_index))
                caption_pairs.add((position, int(sample["cls"])))
            labels.append(int(sample["cls"]))
            keys.append(sample["key"])
            if len(pending_points) >= config.batch_size:
                flush()
            progress.advance(task)
        flush()
    if not keys:
        raise UsageError(f"{shards}: no samples in split {config.split!r}")
    if not image_features or not caption_index:
        raise UsageError(f"{shards}: retrieval needs rendered views and captions in the shards")
    captions = list(caption_index)
    texts = torch.cat(
        [model.encode_text(captions[i : i + 256]) for i in range(0, len(captions), 256)]
    )
    # a dead text tower's captions are rows of zeros (or NaN): every text ranked alike
    texts = unit_features(texts, "the text tower")
    n_classes = max(labels) + 1
    caption_classes = np.zeros((len(captions), n_classes), dtype=bool)
    for position, cls in caption_pairs:
        caption_classes[position, cls] = True
    return Features(
        points=torch.cat(point_features).numpy(),
        images=torch.cat(image_features).numpy(),
        image_object=np.array(image_object),
        texts=texts.cpu().numpy(),
        captions=captions,
        caption_classes=caption_classes,
        labels=np.array(labels),
        keys=keys,
        skipped=skipped.total,
        uncolored=uncolored,
        topped_up=topped_up,
        color=color,
    )


# query side, gallery side, and whether the similarity is the transpose of the other
# direction's (computed as that product's columns, so that both read the same numbers)
DIRECTIONS = {
    "point_to_text": ("points", "texts", False),
    "text_to_point": ("texts", "points", True),
    "point_to_image": ("points", "images", False),
    "image_to_point": ("images", "points", True),
}


def relevance_rows(features: Features, direction: str, rows: slice) -> np.ndarray:
    """(queries × gallery) bool relevance of the query `rows` of one direction (see the
    module docstring)."""
    objects = np.arange(len(features.labels))
    if direction == "point_to_text":
        return features.caption_classes[:, features.labels[rows]].T
    if direction == "text_to_point":
        return features.caption_classes[rows][:, features.labels]
    if direction == "point_to_image":
        return features.image_object[None, :] == objects[rows, None]
    return features.image_object[rows, None] == objects[None, :]


def relevance(features: Features) -> dict[str, np.ndarray]:
    """(queries × gallery) bool relevance of the four directions, whole (small sets)."""
    return {name: relevance_rows(features, name, slice(None)) for name in DIRECTIONS}


def all_metrics(features: Features) -> dict[str, dict]:
    """Each direction's metrics, a block of query rows at a time: the (queries × gallery)
    similarities and relevance are never whole (20k objects x 5 views: 8 GiB of similarities
    per direction and as much again for its sort)."""
    metrics = {}
    for name, (query_side, gallery_side, transposed) in DIRECTIONS.items():
        queries, gallery = getattr(features, query_side), getattr(features, gallery_side)

        def blocks(queries=queries, gallery=gallery, transposed=transposed, name=name):
            for rows in row_blocks(len(queries), len(gallery)):
                similarity = (
                    (gallery @ queries[rows].T).T if transposed else queries[rows] @ gallery.T
                )
                yield similarity, relevance_rows(features, name, rows)

        metrics[name] = blocked_retrieval_metrics(blocks(), len(gallery))
    return metrics


RELEVANCE = {
    "point_image": "instance: a view is relevant only to the object it was rendered from",
    "point_text": "class: a caption is relevant to every object of a class that carries it",
}
HEADLINE_SCORES = ("R@1", "R@5", "R@10", "mAP")


def headline_and_details(metrics: dict) -> tuple[dict, dict]:
    """metrics.json: each direction's scores and the counts; details.json: the relevance
    definitions and each direction's query and gallery sizes."""
    headline, details = {}, {"relevance": metrics["relevance"]}
    for name, value in metrics.items():
        if name == "relevance":
            continue
        if isinstance(value, dict):  # a direction
            # R@K only below the gallery size (`retrieval_metrics`)
            headline[name] = {k: value[k] for k in HEADLINE_SCORES if k in value}
            details[name] = {k: v for k, v in value.items() if k not in HEADLINE_SCORES}
        else:
            headline[name] = value
    return headline, details


def grid_rows(model, shards: str | Path, features: Features, config: RetrievalConfig) -> list[dict]:
    """Rows of the picture grid: point→image for the first queries, then text→point (object
    indices are those of `encode_split`: the same samples are skipped on this pass)."""
    n_queries = min(config.grid_queries, len(features.keys))
    point_queries = np.linspace(0, len(features.keys) - 1, n_queries).astype(int).tolist()
    top_images = {
        q: np.argsort(-(features.images @ features.points[q]), kind="stable")[:5]
        for q in point_queries
    }
    text_queries = np.linspace(
        0, len(features.captions) - 1, min(n_queries, len(features.captions))
    ).astype(int)
    top_points = {
        t: np.argsort(-(features.points @ features.texts[t]), kind="stable")[:5]
        for t in text_queries
    }
    needed_objects = set(point_queries) | {
        int(features.image_object[g]) for g in np.concatenate(list(top_images.values()))
    }
    needed_objects |= (
        {int(p) for p in np.concatenate(list(top_points.values()))} if top_points else set()
    )
    points, views = {}, {}
    for index, sample in enumerate(iter_samples(shards, config.split)):
        if index > max(needed_objects):
            break
        if index in needed_objects:
            points[index] = np.asarray(sample["points"])[:, :3][
                :: max(1, len(sample["points"]) // 1024)
            ]
            views[index] = [view.convert("RGB").resize((112, 112)) for view in sample["views"]]
    first_view = {}
    for g, obj in enumerate(features.image_object):
        first_view.setdefault(int(obj), g)
    rows = []
    for q in point_queries:
        results = []
        for g in top_images[q]:
            obj = int(features.image_object[g])
            results.append((views[obj][g - first_view[obj]], obj == q, features.keys[obj][:18]))
        rows.append(
            {"query": points[q], "title": f"point: {features.keys[q][:18]}", "results": results}
        )
    for t in text_queries:
        results = [
            (
                points[int(p)],
                bool(features.caption_classes[t, features.labels[p]]),
                features.keys[p][:18],
            )
            for p in top_points[t]
        ]
        rows.append({"query": features.captions[t], "title": "text query", "results": results})
    return rows


def retrieval(checkpoint: Path, shards: str | Path, out: Path, config: RetrievalConfig) -> dict:
    """Evaluate `checkpoint` on the split's retrieval tasks; write OUT/metrics.json,
    OUT/about.json, OUT/details.json and a grid; return all their keys."""
    from cg3d.eval.plots import retrieval_grid
    from cg3d.eval.zeroshot import model_identity
    from cg3d.models.checkpoint import load_model

    config.validate()
    check_results_out(out, "eval retrieval")
    if not is_remote(shards):  # URLs and `pipe:` stream
        require_folder(shards, "--shards")
    split_entry(read_index(shards), config.split)  # no such split: one line before the model
    model = load_model(Path(checkpoint), clip_pretrained=config.clip_pretrained or None)
    features = encode_split(model, shards, config)
    n_points = int(model.config["n_points"])
    log_topped_up(f"retrieval on {config.split}", features.topped_up, len(features.keys), n_points)
    channels = int(model.config["point_channels"])
    colour_numbers, colour_about = color_summary(channels, features.color, features.uncolored)
    metrics = all_metrics(features) | {
        "relevance": RELEVANCE,
        "n_objects": len(features.keys),
        "skipped_samples": features.skipped,
        "topped_up_shapes": features.topped_up,
        **colour_numbers,
    }
    about = {
        "shards": str(shards),
        "split": config.split,
        "n_points": n_points,
        **colour_about,
        **model_identity(model, Path(checkpoint)),
    }
    out = Path(out)
    headline, details = headline_and_details(metrics)
    begin_results(out, "eval retrieval")
    if config.grid_queries:
        retrieval_grid(grid_rows(model, shards, features, config), out / "retrieval_grid.png")
    else:  # an earlier run's grid would stand for this run's
        (out / "retrieval_grid.png").unlink(missing_ok=True)
    write_results(out, headline, about, details)  # the numbers last
    where = f"shards {shards}, split {config.split}"
    kept = len(features.keys)
    check_lost(features.skipped, kept, config.max_lost, "eval.retrieval.max_lost", where)
    return metrics | about

"""The retrieval index: build rate (objects/s) and query latency at 10k and 100k objects.

    python bench/bench_index.py [--build-objects 1000] [--sizes 10000,100000] [--queries 100]

Model: the default `train` section of params.yaml (pointtransformer-tiny, 2048 points,
CG3D-ViT-Tiny-64 CLIP at random init, 256-d), saved as a checkpoint.

Build: `build_index` (what `cg3d index` runs) over synthetic shards written in the pack format:
objects of 2048 points and 4 views of 224 px (PNG), shards of 250. Rows: batched (the default
batch of 32) against one object at a time (batch 1), the naive way.

Query: indexes of 10k and 100k objects written by the index's own writer (`write_index_part`,
`merge_index_parts`) with random unit embeddings (4 views per object), as encoding 100k objects for real
would take hours on this CPU; the search path does not care where the vectors came from. Timed:
opening the index, an embedding query against the points and against the views (median and 95th
percentile over --queries random queries), a text query end to end (text tower + search), and
the thumbnails of an 8-object gallery. The naive way, re-encoding the set for every query (what
a search without an index must do), is the set's size divided by the measured build rate.
"""

import argparse
import io
import json
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cg3d.app.api import load
from cg3d.app.index import build_index, open_index
from cg3d.formats.retrieval import RETRIEVAL_NAME, merge_index_parts, write_index_part
from cg3d.formats.shards import ShardWriter, sample_members, write_index
from cg3d.models.checkpoint import save_checkpoint
from cg3d.models.model import build_model, model_config
from cg3d.params import IndexConfig, TrainConfig, load_section

CLASSES = ["chair", "table", "lamp", "sofa", "bed"]
ROOT = Path(__file__).resolve().parents[1]


def write_checkpoint(path: Path) -> Path:
    config = load_section(TrainConfig, "train", ROOT / "params.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        save_checkpoint(path, build_model(model_config(config, CLASSES)))
    return path


def png(rng: np.random.Generator, size: int = 224) -> bytes:
    """A blocky random picture (compresses like a render, unlike pure noise)."""
    blocks = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(blocks).resize((size, size), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_shards(root: Path, objects: int, n_points: int = 2048, views: int = 4) -> Path:
    """`objects` synthetic samples in the pack layout (split test, shards of 250)."""
    rng = np.random.default_rng(0)
    (root / "test").mkdir(parents=True)
    writer = ShardWriter(root / "test", 250)
    pictures = [png(rng) for _ in range(16)]
    for i in range(objects):
        points = rng.normal(size=(n_points, 3)).astype(np.float32)
        points /= np.linalg.norm(points, axis=1).max()
        cls = i % len(CLASSES)
        view_bytes = {f"view_{v:02d}": pictures[(i + v) % len(pictures)] for v in range(views)}
        meta = {"class_name": CLASSES[cls], "source": "bench", "split": "test"}
        members = sample_members(points, view_bytes, None, [f"a {CLASSES[cls]}"], cls, meta)
        writer.write(f"obj_{i:06d}", members)
    writer.close()
    write_index(root, {"classes": CLASSES, "splits": {"test": writer.entry("test")}})
    return root


def time_build(checkpoint: Path, shards: Path, out: Path, batch_size: int) -> float:
    """Seconds of `build_index` into a fresh folder."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    build_index(checkpoint, shards, out, IndexConfig(batch_size=batch_size))
    return time.perf_counter() - start


def synthetic_index(out: Path, model, objects: int, dim: int, views: int = 4) -> Path:
    """An index of `objects` random unit embeddings, through the index's own writer."""
    rng = np.random.default_rng(1)
    thumbnail = png(rng, 128)
    parts = []
    for number, start in enumerate(range(0, objects, 1000)):
        count = min(1000, objects - start)
        vectors = rng.normal(size=(count * (1 + views), dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        rows = [
            {
                "id": f"obj_{start + i:06d}",
                "class_name": CLASSES[(start + i) % len(CLASSES)],
                "source": "bench",
                "split": "test",
                "points": vectors[i],
                "n_views": views,
                "views": list(vectors[count + i * views : count + (i + 1) * views]),
                "thumbnail": thumbnail,
            }
            for i in range(count)
        ]
        parts.append(out / f"part-{number:05d}.parquet")
        write_index_part(parts[-1], rows)
    counts = merge_index_parts(out, parts)
    identity = {**model.identity, "checkpoint": str(model.checkpoint), "config": {}}
    manifest = {"format": "cg3d-index-1", "model": identity, "shards": "synthetic"}
    manifest |= {"splits": ["test"], "parts": len(parts), **counts, "failures": 0}
    (out / RETRIEVAL_NAME).write_text(json.dumps(manifest))
    return out


def latencies_ms(run, queries: int) -> tuple[float, float]:
    """Median and 95th percentile of `run()` in milliseconds (after one warm-up call)."""
    run()
    times = []
    for _ in range(queries):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), float(np.percentile(times, 95))


def query_rows(
    model, model_dim: int, root: Path, objects: int, dim: int, queries: int, rate: float
) -> list[str]:
    """Table rows of one synthetic index (`dim` = the model's: text queries too)."""
    out = root / f"index_{objects}_{dim}"
    out.mkdir()
    start = time.perf_counter()
    synthetic_index(out, model, objects, dim)
    written = time.perf_counter() - start
    start = time.perf_counter()
    index = open_index(out, model if dim == model_dim else None)
    opened = (time.perf_counter() - start) * 1000
    rng = np.random.default_rng(2)
    rows = [
        f"| {objects:,} | {dim} | write synthetic index (merge of {objects // 1000} parts) | "
        f"{written * 1000:.0f} | |",
        f"| {objects:,} | {dim} | open_index | {opened:.1f} | |",
    ]
    for against in ("points", "views"):
        median, p95 = latencies_ms(
            lambda against=against: index.search(
                embedding=rng.normal(size=dim), top=8, against=against
            ),
            queries // 2,
        )
        rows.append(
            f"| {objects:,} | {dim} | search by embedding vs {against} | {median:.1f} | {p95:.1f} |"
        )
    if dim == model_dim:
        median, p95 = latencies_ms(lambda: index.search(text="a wooden chair", top=8), queries // 4)
        rows.append(f"| {objects:,} | {dim} | text query end to end | {median:.1f} | {p95:.1f} |")
    hits = index.search(embedding=rng.normal(size=dim), top=8)
    median, p95 = latencies_ms(lambda: [index.thumbnail(hit) for hit in hits], 10)
    rows.append(f"| {objects:,} | {dim} | 8 gallery thumbnails | {median:.1f} | {p95:.1f} |")
    naive_s = objects / rate
    rows.append(
        f"| {objects:,} | {dim} | naive: re-encode the set per query (size / build rate) | {naive_s * 1000:.0f} | |"
    )
    shutil.rmtree(out)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build-objects", type=int, default=1000)
    parser.add_argument("--naive-objects", type=int, default=200)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cg3d-bench-index-") as tmp:
        root = Path(tmp)
        checkpoint = write_checkpoint(root / "model.pt")
        print("| objects | way | seconds | objects/s | vs naive |\n|---:|---|---:|---:|---:|")
        naive_shards = write_shards(root / "naive_shards", args.naive_objects)
        naive = args.naive_objects / time_build(checkpoint, naive_shards, root / "naive", 1)
        print(
            f"| {args.naive_objects:,} | naive: one object at a time (batch 1) | "
            f"{args.naive_objects / naive:.1f} | {naive:.1f} | 1.0× |"
        )
        shards = write_shards(root / "shards", args.build_objects)
        seconds = time_build(checkpoint, shards, root / "index", 32)
        rate = args.build_objects / seconds
        print(
            f"| {args.build_objects:,} | cg3d index (batch 32) | {seconds:.1f} | {rate:.1f} | "
            f"{rate / naive:.1f}× |\n"
        )
        model = load(checkpoint)
        model_dim = int(model.embed_text("x").shape[1])
        print("| objects | dim | step | median ms | p95 ms |\n|---:|---:|---|---:|---:|")
        for objects in (int(n) for n in args.sizes.split(",")):
            for dim in (model_dim, 512):
                for row in query_rows(model, model_dim, root, objects, dim, args.queries, rate):
                    print(row, flush=True)


if __name__ == "__main__":
    main()

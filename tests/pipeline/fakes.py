"""Small stage outputs in the formats of DESIGN.md, written by the tests themselves."""

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from cg3d.pipeline.chunks import write_tar
from cg3d.pipeline.failures import FAILURES_NAME, write_failures
from cg3d.pipeline.manifest import CLASSES_NAME, MeshRecord, write_manifest
from cg3d.pipeline.sample import object_rng

CLASSES = ["chair", "table", "lamp"]


def fake_meshes(root: Path, per_class: int = 4, broken: int = 1) -> list[MeshRecord]:
    """A manifest over CLASSES (one in four objects in test) with `broken` failed rows."""
    records = []
    for c, name in enumerate(CLASSES):
        for i in range(per_class):
            records.append(
                MeshRecord(
                    id=f"synthetic-{name}-{i:03d}",
                    source="synthetic",
                    path=f"{name}/{i}.obj",
                    class_name=name,
                    split="test" if i % 4 == 3 else "train",
                    synonyms=["seat"] if name == "chair" else [],
                    name="a wooden thing" if (c, i) == (1, 0) else "",
                    sha256=f"{c}{i}",
                )
            )
    for i in range(broken):
        records.append(
            MeshRecord(
                id=f"synthetic-broken-{i:03d}",
                source="synthetic",
                path=f"broken/{i}.obj",
                class_name="chair",
                split="train",
                status="empty",
                error="no faces",
            )
        )
    root.mkdir(parents=True, exist_ok=True)
    write_manifest(records, root)
    (root / CLASSES_NAME).write_text(json.dumps(CLASSES))
    return sorted(records, key=lambda r: r.id)


def ok_ids(records: list[MeshRecord]) -> list[str]:
    return [r.id for r in records if r.status == "ok"]


def fake_points(
    root: Path, ids: list[str], n: int = 64, chunk: int = 5, failed: tuple = ()
) -> None:
    """part-XXXXX.parquet (id, points flattened, n_points) in chunks; `failed` ids as failures."""
    root.mkdir(parents=True, exist_ok=True)
    good = [i for i in ids if i not in failed]
    for part, start in enumerate(range(0, len(good), chunk)):
        chunk_ids = good[start : start + chunk]
        # object_rng seeds from a digest of the id: the same in every run (hash() is salted)
        clouds = [object_rng(0, i).uniform(-0.5, 0.5, (n, 3)).astype(np.float32) for i in chunk_ids]
        table = pa.table(
            {
                "id": pa.array(chunk_ids),
                "points": pa.array([c.ravel() for c in clouds], type=pa.list_(pa.float32())),
                "n_points": pa.array([n] * len(chunk_ids), type=pa.int32()),
            }
        )
        pq.write_table(table, root / f"part-{part:05d}.parquet")
    write_failures(
        [{"id": i, "stage": "sample", "reason": "degenerate: flat"} for i in failed],
        root / FAILURES_NAME,
    )


def png_bytes(seed: int, size: int = 32) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def fake_renders(
    root: Path, ids: list[str], views: int = 2, chunk: int = 4, failed: tuple = ()
) -> None:
    """part-XXXXX.tar with <id>.view_XX.png and <id>.cameras.json; `failed` ids as failures."""
    root.mkdir(parents=True, exist_ok=True)
    good = [i for i in ids if i not in failed]
    for part, start in enumerate(range(0, len(good), chunk)):
        members = {}
        for k, object_id in enumerate(good[start : start + chunk]):
            for v in range(views):
                members[f"{object_id}.view_{v:02d}.png"] = png_bytes(start * 10 + k * views + v)
            members[f"{object_id}.cameras.json"] = json.dumps(
                [{"view": v} for v in range(views)]
            ).encode()
        write_tar(root / f"part-{part:05d}.tar", members)
    write_failures(
        [{"id": i, "stage": "render", "reason": "timeout: 120 s"} for i in failed],
        root / FAILURES_NAME,
    )


def fake_pipeline(root: Path, per_class: int = 4, shard_size: int = 3, views: int = 2, n: int = 64):
    """meshes → points (one failure) → renders (one failure) → captions → shards under root."""
    from cg3d.pipeline.captions import CaptionConfig, caption_objects
    from cg3d.pipeline.pack import PackConfig, pack_shards

    records = fake_meshes(root / "meshes", per_class)
    ids = ok_ids(records)
    fake_points(root / "points", ids, n=n, failed=(ids[1],))
    fake_renders(root / "renders", ids, views=views, failed=(ids[2],))
    caption_objects(root / "meshes", root / "captions", CaptionConfig())
    summary = pack_shards(
        root / "meshes",
        root / "points",
        root / "renders",
        root / "captions",
        root / "shards",
        PackConfig(shard_size=shard_size),
    )
    return records, summary

"""Small stage outputs in the formats of docs/design.md, written by the tests themselves."""

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from cg3d.formats.failures import FAILURES_NAME, write_failures
from cg3d.formats.manifest import MeshRecord, write_classes, write_manifest
from cg3d.formats.points import NO_COLOR, XYZ, write_points_part
from cg3d.formats.renders import Rendered, dumps_cameras, write_render_part
from cg3d.formats.tar import open_tar_writer, tar_members
from cg3d.geometry.sampling import object_rng
from cg3d.params import RenderConfig
from cg3d.render.cameras import cameras_of

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
    write_classes(CLASSES, root)
    return sorted(records, key=lambda r: r.id)


def ok_ids(records: list[MeshRecord]) -> list[str]:
    return [r.id for r in records if r.status == "ok"]


def fake_cloud(object_id: str, n: int, channels: list[str], colored: bool) -> np.ndarray:
    """xyz uniform in a cube, then by `channels`: rgb (`fake_rgb` of the id, or NO_COLOR when
    not `colored`) and normals (0, -1, 0), a value no colour can take."""
    # object_rng seeds from a digest of the id: the same in every run (hash() is salted)
    columns = [object_rng(0, object_id).uniform(-0.5, 0.5, (n, 3))]
    if "r" in channels:
        columns.append(np.tile(fake_rgb(object_id) if colored else NO_COLOR, (n, 1)))
    if "nx" in channels:
        columns.append(np.tile((0.0, -1.0, 0.0), (n, 1)))
    return np.concatenate(columns, axis=1).astype(np.float32)


def fake_rgb(object_id: str) -> tuple[float, float, float]:
    """A colour of its own for each object, away from NO_COLOR's grey."""
    red = object_rng(1, object_id).uniform(0.05, 0.35)
    return (red, 0.9, 0.2)


def fake_points(
    root: Path,
    ids: list[str],
    n: int = 64,
    chunk: int = 5,
    failed: tuple = (),
    channels: list[str] = XYZ,
    uncolored: tuple = (),
) -> None:
    """part-XXXXX.parquet (id, points flattened, n_points) in chunks; `failed` ids as failures;
    columns as `channels` names them (`fake_cloud`), `uncolored` ids without colour."""
    root.mkdir(parents=True, exist_ok=True)
    good = [i for i in ids if i not in failed]
    for part, start in enumerate(range(0, len(good), chunk)):
        chunk_ids = good[start : start + chunk]
        colored = [i not in uncolored for i in chunk_ids]
        clouds = [fake_cloud(i, n, channels, c) for i, c in zip(chunk_ids, colored, strict=True)]
        path = root / f"part-{part:05d}.parquet"
        write_points_part(path, chunk_ids, clouds, channels, colored if "r" in channels else None)
    write_failures(
        [{"id": i, "stage": "sample", "reason": "degenerate: flat"} for i in failed],
        root / FAILURES_NAME,
    )


def png_bytes(seed: int, size: int = 32) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def transparent_view(size: int = 32) -> Image.Image:
    """An RGBA render as `render.background: transparent` writes it: a red object in the
    middle with a half-transparent rim, and fully transparent black all around."""
    pixels = np.zeros((size, size, 4), dtype=np.uint8)
    quarter = size // 4
    pixels[quarter : size - quarter, quarter : size - quarter] = (200, 30, 30, 128)  # the rim
    pixels[quarter + 1 : size - quarter - 1, quarter + 1 : size - quarter - 1, 3] = 255
    return Image.fromarray(pixels, "RGBA")


def fake_renders(
    root: Path, ids: list[str], views: int = 2, chunk: int = 4, failed: tuple = ()
) -> None:
    """part-XXXXX.tar with <id>.view_XX.png and <id>.cameras.json; `failed` ids as failures."""
    root.mkdir(parents=True, exist_ok=True)
    good = [i for i in ids if i not in failed]
    for part, start in enumerate(range(0, len(good), chunk)):
        objects = {}
        for k, object_id in enumerate(good[start : start + chunk]):
            pngs = {f"view_{v:02d}": png_bytes(start * 10 + k * views + v) for v in range(views)}
            cameras = cameras_of(RenderConfig(views=views, resolution=32), object_id)
            objects[object_id] = Rendered(pngs, dumps_cameras(cameras))
        write_render_part(root / f"part-{part:05d}.tar", objects)
    write_failures(
        [{"id": i, "stage": "render", "reason": "timeout: 120 s"} for i in failed],
        root / FAILURES_NAME,
    )


def fake_pipeline(
    root: Path,
    per_class: int = 4,
    shard_size: int = 3,
    views: int = 2,
    n: int = 64,
    channels: list[str] = XYZ,
    uncolored: int = 0,
):
    """meshes → points (one failure) → renders (one failure) → captions → shards under root;
    points with `channels`, the first `uncolored` objects without colour."""
    from cg3d.pipeline.captions import CaptionConfig, caption_objects
    from cg3d.pipeline.pack import PackConfig, pack_shards

    records = fake_meshes(root / "meshes", per_class)
    ids = ok_ids(records)
    fake_points(
        root / "points",
        ids,
        n=n,
        failed=(ids[1],),
        channels=channels,
        uncolored=tuple(ids[:uncolored]),
    )
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


def rewrite_tar(path: Path, change: Callable[[str, bytes], tuple[str, bytes] | None]) -> None:
    """Rewrite a tar member by member: `change(name, data)` gives the new (name, data), or
    None to drop the member (damaged shards and parts, made on purpose)."""
    with open(path, "rb") as stream:
        members = [change(name, data) for name, data in tar_members(stream)]
    with open_tar_writer(path) as tar:  # in the original order
        for member in members:
            if member is not None:
                tar.add(*member)


def edited_cameras(data: bytes, edit: str) -> bytes:
    """A cameras.json `dumps_cameras` wrote, hand-edited as `edit` says."""
    if edit == "not JSON":
        return data[: len(data) // 2]
    cameras = json.loads(data)
    if edit == "views not a list":
        cameras["views"] = "x"
    elif edit == "a width of 10^6":
        cameras["width"] = 10**6
    elif edit == "a NaN in K":
        cameras["views"][0]["K"][0][0] = float("nan")
    return json.dumps(cameras).encode()


CAMERA_EDITS = {
    "not JSON": "not JSON",
    "views not a list": "'views' is not a list",
    "a width of 10^6": "width 1000000 is not a size",
    "a NaN in K": "view 0: K is not a finite 3×3",
}


def count_shard_reads(monkeypatch) -> list[int]:
    """The sizes of every read from a shard from now on (`open_shard`'s streams), in a list
    that grows: what a reader reads of a shard set, counted."""
    import contextlib

    import cg3d.formats.shards as shards

    read: list[int] = []
    opened = shards.open_shard

    class Counted:
        def __init__(self, stream):
            self.stream = stream

        def read(self, size=-1):
            data = self.stream.read(size)
            read.append(len(data))
            return data

        def __getattr__(self, name):
            return getattr(self.stream, name)

    @contextlib.contextmanager
    def counted(url, *args, **kwargs):
        with opened(url, *args, **kwargs) as stream:
            yield Counted(stream)

    monkeypatch.setattr(shards, "open_shard", counted)
    return read

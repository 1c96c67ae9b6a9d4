"""The shard loader against the public CG3D way (one .npy + one PNG file per sample), one run.

    python bench/bench_loader.py [--objects 2000] [--points 8192] [--views 4] [--workers 2]
                                 [--epochs 3]
    python bench/bench_loader.py --read-only [--objects 2000] [--epochs 3]
    python bench/bench_loader.py --objects 2000 --workers 1 --json OUT.json

With --json: the loader (`make_loader`, --workers workers) against the bare decode of the
same shards in the main process (tar read, `np.load` of the points, PNG decode of one view; no
augmentation, no batching), per core; views are generated 224 px PNGs (no Blender).

With --read-only: only the shard reading, undecoded, by the hand-written tar walk of
`cg3d.formats` against webdataset's own stages (`tarfile_samples`: url_opener,
tar_file_expander, group_by_keys) and plain `tarfile`, on shards of --objects samples whose
views are 15.7 KB of random bytes (the mean size of real renders; nothing is decoded).

Makes stage outputs for --objects objects (points parts of --points points; render tars of
--views 224 px PNGs drawn from a pool of real WORKBENCH renders of the synthetic data set, made
by the render stage), runs the caption and pack stages (timed), and writes the same data as one
points .npy and one view PNG per object. Both loaders then read --epochs epochs with --workers
persistent DataLoader workers, batches of 32, the same augmentation, resampling to --points and
CLIP preprocessing at 224 px. The first epoch includes starting the workers; the steady rate is
over the later epochs.
"""

import argparse
import functools
import gc
import json
import os
import resource
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from cg3d.formats.manifest import CLASSES_NAME, MeshRecord, write_manifest
from cg3d.formats.points import write_points_part
from cg3d.formats.renders import dumps_cameras
from cg3d.formats.shards import iter_samples
from cg3d.formats.tar import write_tar
from cg3d.params import RenderConfig, TrainConfig
from cg3d.pipeline.captions import CaptionConfig, caption_objects
from cg3d.pipeline.pack import PackConfig, pack_shards
from cg3d.pipeline.sources import MeshesConfig, build_manifest
from cg3d.render.cameras import cameras_of
from cg3d.render.stage import render_meshes
from cg3d.train.augment import AugmentConfig, augment_points
from cg3d.train.data import ClipPreprocess, LoaderConfig, make_loader, resample

CLASSES = [
    "chair",
    "table",
    "lamp",
    "sofa",
    "bed",
    "desk",
    "monitor",
    "bathtub",
    "toilet",
    "dresser",
]
CHUNK = 200


def rendered_pngs(root: Path, per_class: int = 4) -> list[bytes]:
    """Real views: the render stage's WORKBENCH PNGs of `per_class` synthetic objects a class."""
    build_manifest(MeshesConfig(source="synthetic", per_class=per_class), root / "pool")
    render_meshes(root / "pool", root / "pool_renders", RenderConfig(views=4, resolution=224))
    pngs = []
    for part in sorted((root / "pool_renders").glob("part-*.tar")):
        with tarfile.open(part) as tar:
            pngs += [tar.extractfile(m).read() for m in tar if m.name.endswith(".png")]
    return pngs


def make_inputs(root: Path, objects: int, points: int, views: int) -> list[str]:
    pngs = rendered_pngs(root)
    records = [
        MeshRecord(
            id=f"bench-{i:06d}",
            source="synthetic",
            path=f"{i}.obj",
            class_name=CLASSES[i % len(CLASSES)],
            split="test" if i % 5 == 4 else "train",
        )
        for i in range(objects)
    ]
    (root / "meshes").mkdir(parents=True)
    write_manifest(records, root / "meshes")
    (root / "meshes" / CLASSES_NAME).write_text(json.dumps(CLASSES))
    ids = sorted(r.id for r in records)
    rng = np.random.default_rng(0)
    (root / "points").mkdir()
    (root / "renders").mkdir()
    for part, start in enumerate(range(0, objects, CHUNK)):
        chunk = ids[start : start + CHUNK]
        clouds = rng.normal(0, 0.3, (len(chunk), points * 3)).astype(np.float32)
        table = pa.table(
            {
                "id": chunk,
                "points": pa.array(list(clouds), type=pa.list_(pa.float32())),
                "n_points": pa.array([points] * len(chunk), type=pa.int32()),
            }
        )
        pq.write_table(table, root / "points" / f"part-{part:05d}.parquet")
        members = {}
        for k, key in enumerate(chunk):
            members[f"{key}.cameras.json"] = bench_cameras(views)
            for v in range(views):
                members[f"{key}.view_{v:02d}.png"] = pngs[(k + v) % len(pngs)]
        write_tar(root / "renders" / f"part-{part:05d}.tar", members)
    return ids


def write_per_file(shards: Path, out: Path) -> list[tuple[Path, Path, int]]:
    """The public code's layout: <id>.npy and <id>.png (one view), from the packed train split."""
    out.mkdir()
    items = []
    for sample in iter_samples(shards, "train"):
        points_file, image_file = out / f"{sample['key']}.npy", out / f"{sample['key']}.png"
        np.save(points_file, sample["points"])
        sample["views"][0].save(image_file)
        items.append((points_file, image_file, sample["cls"]))
    return items


class PerFileDataset(torch.utils.data.Dataset):
    """np.load of one .npy and PIL open of one PNG per sample, then the same decoding work."""

    def __init__(self, items, n_points: int):
        self.items, self.n_points = items, n_points
        self.preprocess, self.augment = ClipPreprocess(224), AugmentConfig()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        points_file, image_file, cls = self.items[index]
        rng = np.random.default_rng(index)
        points = augment_points(np.load(points_file), self.augment, rng)
        points = resample(points, self.n_points, rng)
        with Image.open(image_file) as image:
            pixels = self.preprocess(image.convert("RGB"))
        return {"points": torch.from_numpy(points), "image": pixels, "cls": cls}


def epoch_rates(loader, epochs: int) -> tuple[list[float], int]:
    """Samples/s of each of `epochs` epochs (the loader's workers persist), and the samples."""
    rates = []
    for epoch in range(epochs):
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        start, count = time.perf_counter(), 0
        for batch in loader:
            count += len(batch["cls"])
        rates.append(count / (time.perf_counter() - start))
    return rates, count


def random_inputs(
    root: Path,
    objects: int,
    points: int,
    views: int,
    view_bytes: Callable[[np.random.Generator], bytes] = lambda rng: rng.bytes(16_000),
) -> None:
    """Stage inputs for the pack stage without Blender: views are `view_bytes(rng)`, by default
    random 15.7 KB blobs (the mean size of a real render; nothing decodes them)."""
    records = [
        MeshRecord(f"bench-{i:06d}", "synthetic", f"{i}.obj", CLASSES[i % len(CLASSES)], "train")
        for i in range(objects)
    ]
    (root / "meshes").mkdir(parents=True)
    write_manifest(records, root / "meshes")
    (root / "meshes" / CLASSES_NAME).write_text(json.dumps(CLASSES))
    rng = np.random.default_rng(0)
    (root / "points").mkdir()
    (root / "renders").mkdir()
    ids = [r.id for r in records]
    for part, start in enumerate(range(0, objects, CHUNK)):
        chunk = ids[start : start + CHUNK]
        clouds = [rng.normal(0, 0.3, (points, 3)).astype(np.float32) for _ in chunk]
        write_points_part(root / "points" / f"part-{part:05d}.parquet", chunk, clouds)
        members = {f"{key}.cameras.json": bench_cameras(views) for key in chunk}
        for key in chunk:
            for v in range(views):
                members[f"{key}.view_{v:02d}.png"] = view_bytes(rng)
        write_tar(root / "renders" / f"part-{part:05d}.tar", members)


@functools.cache
def bench_cameras(views: int) -> bytes:
    """A cameras.json that pack's check passes, one for every object (pack compares no id)."""
    return dumps_cameras(cameras_of(RenderConfig(views=views, resolution=224), "bench"))


def view_png(rng: np.random.Generator, size: int = 224) -> bytes:
    """A smooth 224 px RGB PNG of about a real render's size (a shaded blob on white)."""
    import io

    y, x = np.mgrid[0:size, 0:size] / size
    cx, cy, r = rng.uniform(0.3, 0.7, 3)
    inside = ((x - cx) ** 2 + (y - cy) ** 2) < (r / 2) ** 2
    shade = (rng.uniform(60, 200, 3) * (1 - 0.5 * y[..., None])).astype(np.uint8)
    pixels = np.where(inside[..., None], shade, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def bare_decode(
    shards: Path, decode_png: Callable[[bytes], torch.Tensor], augment: AugmentConfig | None = None
) -> int:
    """The train split's shards decoded with nothing around it: each tar read member by
    member, each sample's points by `np.load` and its first view by `decode_png` (the
    loader's PNG decoder); with `augment`, the points also augmented as the loader does
    (`augment_points`). Returns the samples."""
    import io

    from cg3d.formats.shards import read_index

    rng = np.random.default_rng(0)
    count = 0
    for name in read_index(shards)["splits"]["train"]["shards"]:
        with tarfile.open(shards / name) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                if member.name.endswith(".points.npy"):
                    points = np.load(io.BytesIO(tar.extractfile(member).read()))
                    if augment is not None:
                        augment_points(points, augment, rng)
                    count += 1
                elif member.name.endswith(".view_00.png"):
                    decode_png(tar.extractfile(member).read())
                else:
                    tar.extractfile(member).read()
    return count


def loader_against_decode(args: argparse.Namespace) -> dict[str, float]:
    """Samples/s of `make_loader` with --workers workers against the bare decode of the same
    shards in this process (one core), in one run: --epochs passes each, the first (worker
    start, page cache) left out."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        random_inputs(root, args.objects, args.points, args.views, view_bytes=view_png)
        caption_objects(root / "meshes", root / "captions", CaptionConfig())
        pack_shards(
            root / "meshes", root / "points", root / "renders", root / "captions",
            root / "shards", PackConfig(shard_size=200),
        )  # fmt: skip
        os.sync()
        config = LoaderConfig.of_params(
            TrainConfig(n_points=args.points, batch_size=32, workers=args.workers), 224
        )
        preprocess = ClipPreprocess(224)
        children, main = cpu_seconds(resource.RUSAGE_CHILDREN), time.process_time()
        loader = make_loader(root / "shards", "train", config)
        loader_rates, per_epoch = epoch_rates(loader, args.epochs)
        main = time.process_time() - main
        del loader  # its workers exit and are joined: their CPU time is counted as children's
        gc.collect()
        workers = cpu_seconds(resource.RUSAGE_CHILDREN) - children
        decode_rates, augmented_rates, decode_cpu = [], [], 0.0
        for _ in range(args.epochs):
            for rates, augment in ((decode_rates, None), (augmented_rates, AugmentConfig())):
                start, cpu = time.perf_counter(), time.process_time()
                count = bare_decode(root / "shards", preprocess.decode, augment)
                rates.append(count / (time.perf_counter() - start))
                decode_cpu += (time.process_time() - cpu) if augment is None else 0.0
    later = max(1, len(loader_rates) - 1)
    result = {
        "loader_samples_per_s": round(sum(loader_rates[1:] or loader_rates) / later, 1),
        "decode_samples_per_s": round(sum(decode_rates[1:] or decode_rates) / later, 1),
        # the bare decode plus the loader's point augmentation: work the loader must do
        "decode_augment_samples_per_s": round(
            sum(augmented_rates[1:] or augmented_rates) / later, 1
        ),
        # CPU time per sample over every epoch (the first included): the loader's workers
        # together, its main process, and the bare decode (in this process)
        "worker_cpu_us_per_sample": round(workers / (per_epoch * args.epochs) * 1e6),
        "main_cpu_us_per_sample": round(main / (per_epoch * args.epochs) * 1e6),
        "decode_cpu_us_per_sample": round(decode_cpu / (count * args.epochs) * 1e6),
        "workers": args.workers,
        "objects": args.objects,
        "points": args.points,
        "load_average": os.getloadavg()[0],
    }
    result["ratio"] = round(result["loader_samples_per_s"] / result["decode_samples_per_s"], 3)
    result["ratio_to_decode_augment"] = round(
        result["loader_samples_per_s"] / result["decode_augment_samples_per_s"], 3
    )
    return result


def cpu_seconds(who: int) -> float:
    """User + system CPU seconds of `who` (resource.RUSAGE_SELF or RUSAGE_CHILDREN: the
    children that have exited and been waited for)."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def read_rates(shards: Path, epochs: int) -> dict[str, list[float]]:
    """Samples/s of reading the train split's shards, undecoded, three ways."""
    import webdataset as wds

    from cg3d.formats.shards import Skipped, raw_samples, read_index

    entry = read_index(shards)["splits"]["train"]
    urls = [str(shards / name) for name in entry["shards"]]

    def formats_walk() -> int:
        order = range(len(urls))
        return sum(
            1 for _ in raw_samples(shards, entry["shards"], entry["counts"], order, Skipped())
        )

    def webdataset_stages() -> int:
        return sum(1 for _ in wds.tariterators.tarfile_samples([{"url": u} for u in urls]))

    def plain_tarfile() -> int:
        count = 0
        for url in urls:
            with tarfile.open(url) as tar:
                for member in tar:
                    if member.isfile():
                        tar.extractfile(member).read()
                        count += member.name.endswith(".cls")
        return count

    rates: dict[str, list[float]] = {}
    for name, read in (
        ("cg3d.formats tar walk", formats_walk),
        ("webdataset tarfile_samples", webdataset_stages),
        ("tarfile members", plain_tarfile),
    ):
        for _ in range(epochs):
            start = time.perf_counter()
            count = read()
            rates.setdefault(name, []).append(count / (time.perf_counter() - start))
    return rates


def read_only(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        random_inputs(root, args.objects, args.points, args.views)
        caption_objects(root / "meshes", root / "captions", CaptionConfig())
        pack_shards(
            root / "meshes", root / "points", root / "renders", root / "captions",
            root / "shards", PackConfig(shard_size=200),
        )  # fmt: skip
        size = sum(p.stat().st_size for p in (root / "shards").rglob("*.tar"))
        rates = read_rates(root / "shards", args.epochs)
    print(f"{args.objects} samples, {size / 2**20:.0f} MiB of shards, {os.cpu_count()} CPUs, "
          f"page cache warm after the first pass")  # fmt: skip
    print(f"{'reader':<30}" + "".join(f"{f'pass {i + 1}':>10}" for i in range(args.epochs)))
    for name, values in rates.items():
        print(f"{name:<30}" + "".join(f"{v:>10.0f}" for v in values) + "  samples/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--points", type=int, default=8192)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--read-only", action="store_true", help="time the shard tar readers")
    parser.add_argument(
        "--json",
        type=Path,
        help="the loader against the bare decode of the same shards (issue 24): writes "
        '{"loader_samples_per_s": …, "decode_samples_per_s": …} here (no Blender needed)',
    )
    args = parser.parse_args()
    if args.read_only:
        read_only(args)
        return
    if args.json:
        torch.set_num_threads(1)
        result = loader_against_decode(args)
        args.json.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result))
        return
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        make_inputs(root, args.objects, args.points, args.views)
        start = time.perf_counter()
        caption_objects(root / "meshes", root / "captions", CaptionConfig())
        caption_seconds = time.perf_counter() - start
        start = time.perf_counter()
        summary = pack_shards(
            root / "meshes", root / "points", root / "renders", root / "captions",
            root / "shards", PackConfig(shard_size=200),
        )  # fmt: skip
        pack_seconds = time.perf_counter() - start
        items = write_per_file(root / "shards", root / "per_file")
        os.sync()  # the disk writeback of what was just written must not run during the timing
        config = LoaderConfig.of_params(
            TrainConfig(n_points=args.points, batch_size=32, workers=args.workers), 224
        )
        shards = make_loader(root / "shards", "train", config)
        per_file = torch.utils.data.DataLoader(
            PerFileDataset(items, args.points), batch_size=32, shuffle=True,
            num_workers=args.workers, drop_last=True, prefetch_factor=4 if args.workers else None,
            persistent_workers=args.workers > 0,
        )  # fmt: skip
        rates = {
            "shards (cg3d.train.data)": epoch_rates(shards, args.epochs),
            "per-file npy + png (public code)": epoch_rates(per_file, args.epochs),
        }
        shard_bytes = sum(p.stat().st_size for p in (root / "shards").rglob("*.tar"))

    print(f"{args.objects} objects, {args.points} points, {args.views} views of 224 px; "
          f"{args.workers} workers, batch 32, {os.cpu_count()} CPUs")  # fmt: skip
    print(f"caption stage: {caption_seconds:.2f} s; pack stage: {pack_seconds:.2f} s "
          f"({sum(summary.samples.values())} samples, {shard_bytes / 2**20:.0f} MiB of shards)")  # fmt: skip
    print(
        f"{'loader':<34}{'samples/epoch':>14}{'first epoch':>13}{'later epochs':>14}  (samples/s)"
    )
    steady = {}
    for name, (epoch_rate, count) in rates.items():
        later = epoch_rate[1:] or epoch_rate
        steady[name] = sum(later) / len(later)
        print(f"{name:<34}{count:>14}{epoch_rate[0]:>13.0f}{steady[name]:>14.0f}")
    first = [epoch_rate[0] for epoch_rate, _ in rates.values()]
    later = list(steady.values())
    print(f"ratio shards / per-file: first epoch {first[0] / first[1]:.2f}x, "
          f"later epochs {later[0] / later[1]:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
